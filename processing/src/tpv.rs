//! The TPV projection (the TAN distortion of SCAMP and the NOAO pipelines, registered with
//! the FITS WCS conventions): polynomials of up to seventh degree, with odd radial terms,
//! in the intermediate world coordinates, coefficients PVi_0..PVi_39. Aster works in
//! TAN-SIP, so a TPV header is converted: the TAN-SIP polynomial is fitted to the TPV
//! mapping over the image, and the conversion is refused when it misses anywhere by more
//! than [`TOLERANCE_MAS`]. Polynomial TPV (all SCAMP writes) is a SIP of the same degree,
//! converted exactly; odd powers of r are not polynomials, and are followed to within the
//! tolerance only when they move stars by tenths of an arcsecond, not arcseconds.
use crate::sky::tangent_plane;
use crate::wcs::{PixelPosition, SkyCoord, TanSipWcs, WcsError};
use crate::wcs_fit::{TangentPoint, TangentPolynomial, deproject};

/// Largest difference allowed between the TPV mapping and its TAN-SIP conversion.
pub const TOLERANCE_MAS: f64 = 1.0;

/// Number of PV coefficients per axis.
const COEFFS: usize = 40;

/// One term of the TPV polynomial: x^p y^q, or r^d (r = sqrt(x² + y²), odd d).
#[derive(Debug, Clone, Copy)]
enum Term {
    Poly(i32, i32),
    Radial(i32),
}

/// The terms in PV index order: by degree, x^d first and y^d last, each odd degree followed
/// by its radial term.
fn terms() -> Vec<Term> {
    let mut out = Vec::with_capacity(COEFFS);
    for d in 0..=7 {
        for k in 0..=d {
            out.push(Term::Poly(d - k, k));
        }
        if d % 2 == 1 {
            out.push(Term::Radial(d));
        }
    }
    out
}

/// A TPV WCS: CRPIX (0-based), CRVAL, CD and the PV coefficients of both axes.
#[derive(Debug, Clone)]
pub struct Tpv {
    pub crpix: PixelPosition,
    pub crval: SkyCoord,
    pub cd: [[f64; 2]; 2],
    pub pv1: [f64; COEFFS],
    pub pv2: [f64; COEFFS],
}

impl Tpv {
    /// Reads the PV cards, with `number` returning a card's value. PVi_1 defaults to 1 and
    /// every other coefficient to 0, as the convention says.
    pub fn new(
        crpix: PixelPosition,
        crval: SkyCoord,
        cd: [[f64; 2]; 2],
        number: impl Fn(&str) -> Result<Option<f64>, WcsError>,
    ) -> Result<Self, WcsError> {
        let read = |axis: usize| -> Result<[f64; COEFFS], WcsError> {
            let mut pv = [0.0; COEFFS];
            pv[1] = 1.0;
            for (k, c) in pv.iter_mut().enumerate() {
                if let Some(v) = number(&format!("PV{axis}_{k}"))? {
                    *c = v;
                }
            }
            Ok(pv)
        };
        Ok(Self {
            crpix,
            crval,
            cd,
            pv1: read(1)?,
            pv2: read(2)?,
        })
    }

    /// Tangent-plane coordinates (degrees) of a pixel offset (u, v) from CRPIX.
    fn distort(&self, u: f64, v: f64) -> (f64, f64) {
        let x = self.cd[0][0] * u + self.cd[0][1] * v;
        let y = self.cd[1][0] * u + self.cd[1][1] * v;
        // The second axis's polynomial has x and y exchanged.
        let poly = |pv: &[f64; COEFFS], x: f64, y: f64| {
            let r = x.hypot(y);
            terms()
                .iter()
                .zip(pv)
                .filter(|(_, c)| **c != 0.0)
                .map(|(t, c)| match *t {
                    Term::Poly(p, q) => c * x.powi(p) * y.powi(q),
                    Term::Radial(d) => c * r.powi(d),
                })
                .sum::<f64>()
        };
        (poly(&self.pv1, x, y), poly(&self.pv2, y, x))
    }

    /// The sky position of a pixel.
    pub fn pixel_to_sky(&self, p: PixelPosition) -> SkyCoord {
        let (xi, eta) = self.distort(p.x - self.crpix.x, p.y - self.crpix.y);
        deproject(self.crval, xi, eta)
    }

    /// Highest degree with a non-zero coefficient, and whether a radial term is used.
    fn degree(&self) -> (usize, bool) {
        let mut degree = 1;
        let mut radial = false;
        for (t, (a, b)) in terms().iter().zip(self.pv1.iter().zip(&self.pv2)) {
            if *a == 0.0 && *b == 0.0 {
                continue;
            }
            match *t {
                Term::Poly(p, q) => degree = degree.max((p + q) as usize),
                Term::Radial(d) => {
                    degree = degree.max(d as usize);
                    radial = true;
                }
            }
        }
        (degree, radial)
    }

    /// The TAN-SIP WCS that agrees with this one to within [`TOLERANCE_MAS`] over a
    /// `width` x `height` image (and a margin of 20 pixels around it).
    pub fn to_tan_sip(&self, width: usize, height: usize) -> Result<TanSipWcs, WcsError> {
        let (degree, radial) = self.degree();
        // A polynomial TPV is a SIP of the same degree exactly; radial terms (odd powers
        // of r) are not polynomials and need higher orders to follow.
        let orders: Vec<usize> = if radial {
            (degree..=9).collect()
        } else {
            vec![degree]
        };
        let grid = |n: usize| -> Vec<PixelPosition> {
            (0..=n)
                .flat_map(|j| {
                    (0..=n).map(move |i| PixelPosition {
                        x: i as f64 / n as f64 * (width as f64 + 40.0) - 20.0,
                        y: j as f64 / n as f64 * (height as f64 + 40.0) - 20.0,
                    })
                })
                .collect()
        };
        let fit_points = grid(30);
        let check_points = grid(47);
        let sky: Vec<SkyCoord> = fit_points.iter().map(|&p| self.pixel_to_sky(p)).collect();
        let s = width.max(height) as f64 / 2.0;
        let mut best: Option<(f64, TanSipWcs)> = None;
        for order in orders {
            // Refit about the tangent point the fit puts at CRPIX until its constant terms
            // (PVi_0, or a radial r term) are gone.
            let mut tangent = self.crval;
            let mut fit = None;
            for _ in 0..3 {
                let points: Vec<TangentPoint> = fit_points
                    .iter()
                    .zip(&sky)
                    .filter_map(|(p, s)| {
                        let (xi, eta) =
                            tangent_plane(tangent.ra(), tangent.dec(), s.ra(), s.dec())?;
                        Some(TangentPoint {
                            u: p.x - self.crpix.x,
                            v: p.y - self.crpix.y,
                            xi,
                            eta,
                            weight: 1.0,
                        })
                    })
                    .collect();
                let f = TangentPolynomial::fit(&points, order, s).ok_or(WcsError::Singular)?;
                let (xi, eta) = f.offset();
                fit = Some((tangent, f));
                tangent = deproject(tangent, xi, eta);
            }
            let (tangent, f) = fit.expect("three rounds ran");
            let wcs = f.into_wcs(tangent, self.crpix, width, height)?;
            let worst = check_points
                .iter()
                .map(|&p| wcs.pixel_to_sky(p).separation(&self.pixel_to_sky(p)) * 3.6e6)
                .fold(0.0, f64::max);
            if best.as_ref().is_none_or(|(w, _)| worst < *w) {
                best = Some((worst, wcs));
            }
            if worst <= TOLERANCE_MAS / 10.0 {
                break;
            }
        }
        match best {
            Some((worst, wcs)) if worst <= TOLERANCE_MAS => Ok(wcs),
            Some((worst, _)) => Err(WcsError::Invalid {
                key: "PV1_*/PV2_*".into(),
                message: format!(
                    "the TPV distortion differs from its best TAN-SIP by {worst:.2} mas; \
                     more than {TOLERANCE_MAS} mas"
                ),
            }),
            None => Err(WcsError::Singular),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tpv(radial: bool) -> Tpv {
        let s = 0.26 / 3600.0;
        let mut cards = std::collections::HashMap::new();
        // A DECam-like distortion: a few arcsec at the corners of a 2k x 4k CCD.
        cards.insert("PV1_0", -2e-5);
        cards.insert("PV1_1", 1.0008);
        cards.insert("PV1_2", 4e-4);
        cards.insert("PV1_4", -3e-3);
        cards.insert("PV1_5", 2e-3);
        cards.insert("PV1_7", 0.8);
        cards.insert("PV1_9", -0.5);
        cards.insert("PV2_0", 1e-5);
        cards.insert("PV2_1", 0.9995);
        cards.insert("PV2_6", 2e-3);
        cards.insert("PV2_8", 0.3);
        cards.insert("PV2_10", 0.6);
        if radial {
            cards.insert("PV1_11", 0.01);
            cards.insert("PV2_11", -0.008);
        }
        Tpv::new(
            PixelPosition {
                x: 1023.5,
                y: 2047.5,
            },
            SkyCoord::new(150.1, 2.2).unwrap(),
            [[-s, 1e-7], [2e-7, s]],
            |k| Ok(cards.get(k).copied()),
        )
        .unwrap()
    }

    #[test]
    fn polynomial_and_radial_tpv_convert_to_tan_sip_within_tolerance() {
        for radial in [false, true] {
            let t = tpv(radial);
            let wcs = t.to_tan_sip(2048, 4096).unwrap();
            let mut worst: f64 = 0.0;
            let mut distortion: f64 = 0.0;
            let linear = TanSipWcs::new(t.crpix, t.crval, t.cd, None).unwrap();
            for j in 0..=16 {
                for i in 0..=8 {
                    let p = PixelPosition {
                        x: i as f64 * 256.0 - 0.5,
                        y: j as f64 * 256.0 - 0.5,
                    };
                    let exact = t.pixel_to_sky(p);
                    worst = worst.max(wcs.pixel_to_sky(p).separation(&exact) * 3.6e6);
                    distortion = distortion.max(linear.pixel_to_sky(p).separation(&exact) * 3.6e3);
                    // And back.
                    let q = wcs.sky_to_pixel(exact).unwrap();
                    assert!((q.x - p.x).hypot(q.y - p.y) < 0.01, "{p:?} -> {q:?}");
                }
            }
            assert!(worst < TOLERANCE_MAS, "radial {radial}: {worst} mas");
            // The test distortion is real: arcseconds at the corners.
            assert!(distortion > 2.0, "{distortion} arcsec");
        }
    }

    #[test]
    fn a_distortion_no_sip_can_follow_is_refused() {
        let mut t = tpv(true);
        // A violent seventh-degree radial term: tens of arcminutes at the corners.
        t.pv1[39] = 5e6;
        let err = t.to_tan_sip(2048, 4096).unwrap_err();
        assert!(err.to_string().contains("mas"), "{err}");
    }
}
