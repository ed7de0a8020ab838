//! World coordinates of images: the FITS gnomonic (TAN) projection with SIP distortion
//! polynomials (FITS WCS Paper II; Shupe et al. 2005), as DMS-REQ-0030 asks of every
//! processed image. Pixel positions are 0-based with integer values at pixel centres (the
//! first pixel's centre is (0, 0)); FITS CRPIX is 1-based, and the header cards carry it so.
use std::collections::BTreeMap;

/// A position on the image: column `x` and row `y`, 0-based, pixel centres at integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelPosition {
    pub x: f64,
    pub y: f64,
}

/// An ICRS position in degrees: right ascension in [0, 360), declination in [-90, 90].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SkyCoord {
    ra: f64,
    dec: f64,
}

impl SkyCoord {
    /// None unless both are finite and the declination lies in [-90, 90].
    pub fn new(ra: f64, dec: f64) -> Option<Self> {
        (ra.is_finite() && dec.is_finite() && (-90.0..=90.0).contains(&dec)).then(|| Self {
            ra: ra.rem_euclid(360.0),
            dec,
        })
    }
    pub fn ra(&self) -> f64 {
        self.ra
    }
    pub fn dec(&self) -> f64 {
        self.dec
    }
    /// Angular separation in degrees (haversine, accurate at small separations).
    pub fn separation(&self, other: &SkyCoord) -> f64 {
        let (d1, d2) = (self.dec.to_radians(), other.dec.to_radians());
        let dra = (other.ra - self.ra).to_radians();
        let h = ((d2 - d1) / 2.0).sin().powi(2) + d1.cos() * d2.cos() * (dra / 2.0).sin().powi(2);
        (2.0 * h.sqrt().min(1.0).asin()).to_degrees()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WcsError {
    #[error("WCS keyword {0} is missing")]
    Missing(String),
    #[error("WCS keyword {key}: {message}")]
    Invalid { key: String, message: String },
    #[error("the CD matrix is singular")]
    Singular,
    #[error("the position is on the far side of the tangent point and has no TAN pixel")]
    BehindTangentPoint,
    #[error("the SIP inverse did not converge at this position")]
    NoConvergence,
}

/// A real-valued card's value with all the precision of an f64.
fn card_number(x: f64) -> String {
    format!("{x:.17E}")
}

/// A SIP polynomial: coefficients of u^p v^q for 0 <= p + q <= order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SipPolynomial {
    order: usize,
    coeffs: BTreeMap<(usize, usize), f64>,
}

impl SipPolynomial {
    /// `terms` as ((p, q), coefficient); every p + q must be at most `order`.
    pub fn new(
        order: usize,
        terms: impl IntoIterator<Item = ((usize, usize), f64)>,
    ) -> Option<Self> {
        let coeffs: BTreeMap<_, _> = terms.into_iter().filter(|(_, c)| *c != 0.0).collect();
        coeffs
            .keys()
            .all(|(p, q)| p + q <= order)
            .then_some(Self { order, coeffs })
    }
    pub fn order(&self) -> usize {
        self.order
    }
    /// The polynomial's value at (u, v).
    pub fn value(&self, u: f64, v: f64) -> f64 {
        self.eval(u, v)
    }
    fn eval(&self, u: f64, v: f64) -> f64 {
        self.coeffs
            .iter()
            .map(|(&(p, q), c)| c * u.powi(p as i32) * v.powi(q as i32))
            .sum()
    }
    /// Partial derivatives (d/du, d/dv).
    fn gradient(&self, u: f64, v: f64) -> (f64, f64) {
        let mut du = 0.0;
        let mut dv = 0.0;
        for (&(p, q), c) in &self.coeffs {
            if p > 0 {
                du += c * p as f64 * u.powi(p as i32 - 1) * v.powi(q as i32);
            }
            if q > 0 {
                dv += c * q as f64 * u.powi(p as i32) * v.powi(q as i32 - 1);
            }
        }
        (du, dv)
    }
}

/// The forward (A, B) and optional inverse (AP, BP) SIP distortion.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sip {
    pub a: SipPolynomial,
    pub b: SipPolynomial,
    pub ap: Option<SipPolynomial>,
    pub bp: Option<SipPolynomial>,
}

/// A TAN or TAN-SIP world coordinate system.
#[derive(Debug, Clone, PartialEq)]
pub struct TanSipWcs {
    /// Reference pixel, 0-based.
    crpix: PixelPosition,
    /// Sky position of the reference pixel.
    crval: SkyCoord,
    /// Degrees per pixel: [[CD1_1, CD1_2], [CD2_1, CD2_2]].
    cd: [[f64; 2]; 2],
    cd_inv: [[f64; 2]; 2],
    sip: Option<Sip>,
}

impl TanSipWcs {
    pub fn new(
        crpix: PixelPosition,
        crval: SkyCoord,
        cd: [[f64; 2]; 2],
        sip: Option<Sip>,
    ) -> Result<Self, WcsError> {
        let det = cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0];
        if !det.is_finite() || det == 0.0 || !crpix.x.is_finite() || !crpix.y.is_finite() {
            return Err(WcsError::Singular);
        }
        let cd_inv = [
            [cd[1][1] / det, -cd[0][1] / det],
            [-cd[1][0] / det, cd[0][0] / det],
        ];
        Ok(Self {
            crpix,
            crval,
            cd,
            cd_inv,
            sip,
        })
    }

    /// The WCS of a cutout whose pixel (0, 0) is this image's (`x0`, `y0`): the same
    /// mapping with the reference pixel moved (SIP terms are about it, so they stay).
    pub fn shifted(&self, x0: f64, y0: f64) -> Self {
        Self {
            crpix: PixelPosition {
                x: self.crpix.x - x0,
                y: self.crpix.y - y0,
            },
            ..self.clone()
        }
    }

    pub fn crval(&self) -> SkyCoord {
        self.crval
    }
    pub fn crpix(&self) -> PixelPosition {
        self.crpix
    }
    pub fn cd(&self) -> [[f64; 2]; 2] {
        self.cd
    }
    pub fn sip(&self) -> Option<&Sip> {
        self.sip.as_ref()
    }

    /// Mean pixel scale in arcseconds.
    pub fn pixel_scale_arcsec(&self) -> f64 {
        let det = self.cd[0][0] * self.cd[1][1] - self.cd[0][1] * self.cd[1][0];
        det.abs().sqrt() * 3600.0
    }

    /// The sky position of a pixel.
    pub fn pixel_to_sky(&self, p: PixelPosition) -> SkyCoord {
        let (u, v) = (p.x - self.crpix.x, p.y - self.crpix.y);
        let (u, v) = match &self.sip {
            Some(s) => (u + s.a.eval(u, v), v + s.b.eval(u, v)),
            None => (u, v),
        };
        let xi = self.cd[0][0] * u + self.cd[0][1] * v;
        let eta = self.cd[1][0] * u + self.cd[1][1] * v;
        crate::wcs_fit::deproject(self.crval, xi, eta)
    }

    /// The pixel of a sky position: exact to well below a thousandth of a pixel, the SIP
    /// inverse (AP/BP when given, as a first guess) refined by Newton's method on A/B.
    pub fn sky_to_pixel(&self, s: SkyCoord) -> Result<PixelPosition, WcsError> {
        let (a0, d0) = (self.crval.ra.to_radians(), self.crval.dec.to_radians());
        let (a, d) = (s.ra.to_radians(), s.dec.to_radians());
        let cos_c = d0.sin() * d.sin() + d0.cos() * d.cos() * (a - a0).cos();
        if cos_c <= 1e-12 {
            return Err(WcsError::BehindTangentPoint);
        }
        let xi = (d.cos() * (a - a0).sin() / cos_c).to_degrees();
        let eta = ((d0.cos() * d.sin() - d0.sin() * d.cos() * (a - a0).cos()) / cos_c).to_degrees();
        let up = self.cd_inv[0][0] * xi + self.cd_inv[0][1] * eta;
        let vp = self.cd_inv[1][0] * xi + self.cd_inv[1][1] * eta;
        let (u, v) = match &self.sip {
            None => (up, vp),
            Some(sip) => {
                let (mut u, mut v) = match (&sip.ap, &sip.bp) {
                    (Some(ap), Some(bp)) => (up + ap.eval(up, vp), vp + bp.eval(up, vp)),
                    _ => (up, vp),
                };
                // Solve u + A(u, v) = up, v + B(u, v) = vp.
                let mut converged = false;
                for _ in 0..50 {
                    let fu = u + sip.a.eval(u, v) - up;
                    let fv = v + sip.b.eval(u, v) - vp;
                    if fu.abs() < 1e-10 && fv.abs() < 1e-10 {
                        converged = true;
                        break;
                    }
                    let (au, av) = sip.a.gradient(u, v);
                    let (bu, bv) = sip.b.gradient(u, v);
                    let (j11, j12, j21, j22) = (1.0 + au, av, bu, 1.0 + bv);
                    let det = j11 * j22 - j12 * j21;
                    if det.abs() < 1e-12 || !det.is_finite() {
                        break;
                    }
                    u -= (j22 * fu - j12 * fv) / det;
                    v -= (-j21 * fu + j11 * fv) / det;
                }
                if !converged {
                    return Err(WcsError::NoConvergence);
                }
                (u, v)
            }
        };
        Ok(PixelPosition {
            x: u + self.crpix.x,
            y: v + self.crpix.y,
        })
    }

    /// The CRPIX1 and CRPIX2 cards of [`Self::to_cards`]: all that changes when the WCS
    /// is [`Self::shifted`] to a cutout.
    pub fn crpix_cards(&self) -> [(String, String); 2] {
        [
            ("CRPIX1".into(), card_number(self.crpix.x + 1.0)),
            ("CRPIX2".into(), card_number(self.crpix.y + 1.0)),
        ]
    }

    /// The FITS header cards of this WCS, as (keyword, value) with values in FITS form
    /// (strings quoted). CRPIX is written 1-based.
    pub fn to_cards(&self) -> Vec<(String, String)> {
        // A four-character axis name padded with '-', then '-' and the projection.
        let ctype = |axis: &str| {
            let proj = if self.sip.is_some() { "TAN-SIP" } else { "TAN" };
            format!("'{axis:-<4}-{proj}'")
        };
        let num = card_number;
        let [crpix1, crpix2] = self.crpix_cards();
        let mut cards = vec![
            ("WCSAXES".to_string(), "2".to_string()),
            ("CTYPE1".into(), ctype("RA")),
            ("CTYPE2".into(), ctype("DEC")),
            ("CUNIT1".into(), "'deg'".into()),
            ("CUNIT2".into(), "'deg'".into()),
            ("RADESYS".into(), "'ICRS'".into()),
            crpix1,
            crpix2,
            ("CRVAL1".into(), num(self.crval.ra)),
            ("CRVAL2".into(), num(self.crval.dec)),
            ("CD1_1".into(), num(self.cd[0][0])),
            ("CD1_2".into(), num(self.cd[0][1])),
            ("CD2_1".into(), num(self.cd[1][0])),
            ("CD2_2".into(), num(self.cd[1][1])),
        ];
        if let Some(sip) = &self.sip {
            let mut poly = |name: &str, p: &SipPolynomial| {
                cards.push((format!("{name}_ORDER"), p.order.to_string()));
                for (&(i, j), c) in &p.coeffs {
                    cards.push((format!("{name}_{i}_{j}"), num(*c)));
                }
            };
            poly("A", &sip.a);
            poly("B", &sip.b);
            if let (Some(ap), Some(bp)) = (&sip.ap, &sip.bp) {
                poly("AP", ap);
                poly("BP", bp);
            }
        }
        cards
    }

    /// Reads a TAN, TAN-SIP or TPV WCS from header cards (keyword → value as written in the
    /// header; strings may be quoted). PC + CDELT is accepted in place of CD.
    pub fn from_cards(get: impl Fn(&str) -> Option<String>) -> Result<Self, WcsError> {
        let text = |k: &str| get(k).map(|v| v.trim().trim_matches('\'').trim().to_string());
        let number = |k: &str| -> Result<Option<f64>, WcsError> {
            match get(k) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .replace(['D', 'd'], "E")
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .map(Some)
                    .ok_or_else(|| WcsError::Invalid {
                        key: k.into(),
                        message: format!("'{}' is not a number", v.trim()),
                    }),
            }
        };
        let required = |k: &str| number(k)?.ok_or_else(|| WcsError::Missing(k.into()));
        let ctype1 = text("CTYPE1").ok_or_else(|| WcsError::Missing("CTYPE1".into()))?;
        let ctype2 = text("CTYPE2").ok_or_else(|| WcsError::Missing("CTYPE2".into()))?;
        let has_sip = ctype1.ends_with("-SIP");
        let is_tpv = ctype1.ends_with("-TPV") && ctype2.ends_with("-TPV");
        let ok = |c: &str, axis: &str| {
            c.starts_with(axis)
                && (c.ends_with("-TAN") || c.ends_with("-TAN-SIP") || c.ends_with("-TPV"))
        };
        if !ok(&ctype1, "RA--") || !ok(&ctype2, "DEC-") || (ctype1.ends_with("-TPV") != is_tpv) {
            return Err(WcsError::Invalid {
                key: "CTYPE1/CTYPE2".into(),
                message: format!(
                    "'{ctype1}'/'{ctype2}': only RA---TAN(-SIP)/DEC--TAN(-SIP) and \
                     RA---TPV/DEC--TPV are supported"
                ),
            });
        }
        if let Some(sys) = text("RADESYS")
            && !matches!(sys.as_str(), "ICRS" | "FK5")
        {
            return Err(WcsError::Invalid {
                key: "RADESYS".into(),
                message: format!("'{sys}' is not supported; ICRS (or FK5 J2000) is"),
            });
        }
        let crpix = PixelPosition {
            x: required("CRPIX1")? - 1.0,
            y: required("CRPIX2")? - 1.0,
        };
        let crval = SkyCoord::new(required("CRVAL1")?, required("CRVAL2")?).ok_or_else(|| {
            WcsError::Invalid {
                key: "CRVAL2".into(),
                message: "declination outside [-90, 90]".into(),
            }
        })?;
        let cd = if number("CD1_1")?.is_some() || number("CD2_2")?.is_some() {
            [
                [
                    number("CD1_1")?.unwrap_or(0.0),
                    number("CD1_2")?.unwrap_or(0.0),
                ],
                [
                    number("CD2_1")?.unwrap_or(0.0),
                    number("CD2_2")?.unwrap_or(0.0),
                ],
            ]
        } else {
            let (c1, c2) = (required("CDELT1")?, required("CDELT2")?);
            let pc = |k: &str, default: f64| number(k).map(|v| v.unwrap_or(default));
            [
                [c1 * pc("PC1_1", 1.0)?, c1 * pc("PC1_2", 0.0)?],
                [c2 * pc("PC2_1", 0.0)?, c2 * pc("PC2_2", 1.0)?],
            ]
        };
        if is_tpv {
            // The conversion is fitted over the image, so its size must be known.
            let size = |k: &str| -> Result<usize, WcsError> {
                let n = required(k)?;
                (n >= 1.0 && n.fract() == 0.0 && n <= 1e6)
                    .then_some(n as usize)
                    .ok_or_else(|| WcsError::Invalid {
                        key: k.into(),
                        message: format!("{n} is not an image size"),
                    })
            };
            let (w, h) = (size("NAXIS1")?, size("NAXIS2")?);
            return crate::tpv::Tpv::new(crpix, crval, cd, number)?.to_tan_sip(w, h);
        }
        let sip = if has_sip {
            let poly = |name: &str| -> Result<Option<SipPolynomial>, WcsError> {
                let Some(order) = number(&format!("{name}_ORDER"))? else {
                    return Ok(None);
                };
                if !(0.0..=9.0).contains(&order) || order.fract() != 0.0 {
                    return Err(WcsError::Invalid {
                        key: format!("{name}_ORDER"),
                        message: "must be an integer from 0 to 9".into(),
                    });
                }
                let order = order as usize;
                let mut terms = Vec::new();
                for p in 0..=order {
                    for q in 0..=(order - p) {
                        if let Some(c) = number(&format!("{name}_{p}_{q}"))? {
                            terms.push(((p, q), c));
                        }
                    }
                }
                Ok(SipPolynomial::new(order, terms))
            };
            Some(Sip {
                a: poly("A")?.ok_or_else(|| WcsError::Missing("A_ORDER".into()))?,
                b: poly("B")?.ok_or_else(|| WcsError::Missing("B_ORDER".into()))?,
                ap: poly("AP")?,
                bp: poly("BP")?,
            })
        } else {
            None
        };
        Self::new(crpix, crval, cd, sip)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// 0.2 arcsec pixels, north up, east left, with a few-pixel SIP distortion at the edges
    /// of a 4k x 4k CCD.
    fn distorted(ra: f64, dec: f64) -> TanSipWcs {
        let s = 0.2 / 3600.0;
        let a = SipPolynomial::new(
            3,
            [
                ((2, 0), 2e-7),
                ((1, 1), -1.5e-7),
                ((0, 2), 3e-8),
                ((3, 0), 1e-11),
            ],
        )
        .unwrap();
        let b =
            SipPolynomial::new(3, [((2, 0), -4e-8), ((0, 2), 2.5e-7), ((1, 2), -2e-11)]).unwrap();
        TanSipWcs::new(
            PixelPosition {
                x: 2047.5,
                y: 2001.0,
            },
            SkyCoord::new(ra, dec).unwrap(),
            [[-s * 0.9998, s * 0.02], [s * 0.02, s * 0.9998]],
            Some(Sip {
                a,
                b,
                ap: None,
                bp: None,
            }),
        )
        .unwrap()
    }

    #[test]
    fn the_reference_pixel_is_the_reference_position() {
        let w = distorted(62.0, -37.0);
        let c = w.pixel_to_sky(w.crpix());
        assert!(c.separation(&w.crval()) < 1e-12);
    }

    #[test]
    fn pixels_round_trip_through_the_sky_everywhere_including_the_poles() {
        for (ra, dec) in [(62.0, -37.0), (0.0, 0.0), (359.9, 89.95), (180.0, -89.99)] {
            let w = distorted(ra, dec);
            for &(x, y) in &[
                (0.0, 0.0),
                (4095.0, 0.0),
                (0.0, 4095.0),
                (4095.0, 4095.0),
                (1000.3, 3000.7),
            ] {
                let p = PixelPosition { x, y };
                let back = w.sky_to_pixel(w.pixel_to_sky(p)).unwrap();
                assert!(
                    (back.x - x).abs() < 1e-6 && (back.y - y).abs() < 1e-6,
                    "{p:?} -> {back:?} at ({ra}, {dec})"
                );
            }
        }
    }

    #[test]
    fn a_plain_tan_has_the_pixel_scale_and_east_to_the_left() {
        let s = 0.2 / 3600.0;
        let w = TanSipWcs::new(
            PixelPosition { x: 100.0, y: 100.0 },
            SkyCoord::new(10.0, 0.0).unwrap(),
            [[-s, 0.0], [0.0, s]],
            None,
        )
        .unwrap();
        assert!((w.pixel_scale_arcsec() - 0.2).abs() < 1e-12);
        let right = w.pixel_to_sky(PixelPosition {
            x: 1100.0,
            y: 100.0,
        });
        assert!(right.ra() < 10.0, "x increases westward");
        assert!((right.separation(&w.crval()) * 3600.0 - 200.0).abs() < 1e-3);
        let up = w.pixel_to_sky(PixelPosition {
            x: 100.0,
            y: 1100.0,
        });
        assert!(up.dec() > 0.0);
        // The far hemisphere has no pixel.
        assert_eq!(
            w.sky_to_pixel(SkyCoord::new(190.0, 0.0).unwrap()),
            Err(WcsError::BehindTangentPoint)
        );
    }

    #[test]
    fn header_cards_round_trip_and_bad_headers_are_refused() {
        let w = distorted(62.0, -37.0);
        let cards: HashMap<String, String> = w.to_cards().into_iter().collect();
        assert_eq!(cards["CTYPE1"], "'RA---TAN-SIP'");
        assert_eq!(cards["CTYPE2"], "'DEC--TAN-SIP'");
        let back = TanSipWcs::from_cards(|k| cards.get(k).cloned()).unwrap();
        assert_eq!(back, w);

        let without = |key: &str| {
            let mut c = cards.clone();
            c.remove(key);
            TanSipWcs::from_cards(|k| c.get(k).cloned())
        };
        assert_eq!(without("CRVAL1"), Err(WcsError::Missing("CRVAL1".into())));
        assert_eq!(without("A_ORDER"), Err(WcsError::Missing("A_ORDER".into())));
        let with = |key: &str, value: &str| {
            let mut c = cards.clone();
            c.insert(key.into(), value.into());
            TanSipWcs::from_cards(|k| c.get(k).cloned())
        };
        assert!(matches!(
            with("CTYPE1", "'GLON-TAN'"),
            Err(WcsError::Invalid { .. })
        ));
        assert!(matches!(
            with("CRPIX1", "'x'"),
            Err(WcsError::Invalid { .. })
        ));
        let mut c = cards.clone();
        for k in ["CD1_1", "CD1_2"] {
            c.insert(k.into(), "0".into());
        }
        assert_eq!(
            TanSipWcs::from_cards(|k| c.get(k).cloned()),
            Err(WcsError::Singular)
        );
        // PC + CDELT, and Fortran exponents.
        let plain: HashMap<&str, &str> = [
            ("CTYPE1", "'RA---TAN'"),
            ("CTYPE2", "'DEC--TAN'"),
            ("CRPIX1", "1.0D2"),
            ("CRPIX2", "101"),
            ("CRVAL1", "10"),
            ("CRVAL2", "20"),
            ("CDELT1", "-5.5555555555555555E-05"),
            ("CDELT2", "5.5555555555555555E-05"),
        ]
        .into();
        let w = TanSipWcs::from_cards(|k| plain.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(w.crpix(), PixelPosition { x: 99.0, y: 100.0 });
        assert!((w.pixel_scale_arcsec() - 0.2).abs() < 1e-9);
    }
}
