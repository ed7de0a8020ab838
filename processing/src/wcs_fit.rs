//! Fitting TAN-SIP solutions: a weighted least-squares polynomial from pixel offsets about
//! CRPIX to tangent-plane coordinates about a tangent point, and its conversion into a
//! [`TanSipWcs`] (CD matrix, forward SIP and a fitted inverse SIP). The astrometric
//! calibration fits it to reference stars; other cameras' distortions (TPV) are converted
//! by fitting it to their own mapping.
use crate::linalg::solve;
use crate::wcs::{PixelPosition, Sip, SipPolynomial, SkyCoord, TanSipWcs, WcsError};

/// One constraint: a pixel offset (u, v) from CRPIX, where it lies on the tangent plane
/// (xi, eta, degrees), and the weight of the pair.
#[derive(Debug, Clone, Copy)]
pub struct TangentPoint {
    pub u: f64,
    pub v: f64,
    pub xi: f64,
    pub eta: f64,
    pub weight: f64,
}

/// xi and eta as polynomials of total degree `order` in (u/s, v/s), s being half the
/// larger image side so that every term is of order unity over the image.
#[derive(Debug, Clone)]
pub struct TangentPolynomial {
    order: usize,
    s: f64,
    powers: Vec<(usize, usize)>,
    cx: Vec<f64>,
    cy: Vec<f64>,
}

impl TangentPolynomial {
    /// Number of coefficients per axis at `order`.
    pub fn terms(order: usize) -> usize {
        (order + 1) * (order + 2) / 2
    }

    /// The weighted least-squares fit; None when the points do not determine it.
    pub fn fit(points: &[TangentPoint], order: usize, s: f64) -> Option<Self> {
        let powers: Vec<(usize, usize)> = (0..=order)
            .flat_map(|d| (0..=d).map(move |q| (d - q, q)))
            .collect();
        let n = powers.len();
        if points.len() < n {
            return None;
        }
        let mut a = vec![0.0; n * n];
        let (mut bx, mut by) = (vec![0.0; n], vec![0.0; n]);
        let mut row = vec![0.0; n];
        for p in points {
            basis(&powers, s, p.u, p.v, &mut row);
            for i in 0..n {
                bx[i] += p.weight * row[i] * p.xi;
                by[i] += p.weight * row[i] * p.eta;
                for j in 0..n {
                    a[i * n + j] += p.weight * row[i] * row[j];
                }
            }
        }
        let cx = solve(a.clone(), bx)?;
        let cy = solve(a, by)?;
        Some(Self {
            order,
            s,
            powers,
            cx,
            cy,
        })
    }

    pub fn order(&self) -> usize {
        self.order
    }

    /// (xi, eta) in degrees at pixel offset (u, v).
    pub fn eval(&self, u: f64, v: f64) -> (f64, f64) {
        let mut row = vec![0.0; self.powers.len()];
        basis(&self.powers, self.s, u, v, &mut row);
        let dot = |c: &[f64]| row.iter().zip(c).map(|(b, c)| b * c).sum::<f64>();
        (dot(&self.cx), dot(&self.cy))
    }

    /// The tangent-plane position of CRPIX (the constant terms), degrees.
    pub fn offset(&self) -> (f64, f64) {
        (self.cx[0], self.cy[0])
    }

    /// Milliarcseconds per pixel, from the linear terms.
    pub fn scale_mas(&self) -> f64 {
        let cd = self.cd();
        (cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0]).abs().sqrt() * 3.6e6
    }

    fn cd(&self) -> [[f64; 2]; 2] {
        let lin = |k: (usize, usize)| {
            self.powers
                .iter()
                .position(|&p| p == k)
                .expect("every order has the linear terms")
        };
        let (i10, i01) = (lin((1, 0)), lin((0, 1)));
        [
            [self.cx[i10] / self.s, self.cx[i01] / self.s],
            [self.cy[i10] / self.s, self.cy[i01] / self.s],
        ]
    }

    /// The TAN-SIP WCS of this fit about `tangent`, CRPIX at `crpix`, with an inverse SIP
    /// fitted over a `w` x `h` image. The constant terms are taken up by moving the
    /// tangent point, which is exact to first order in them; callers refit about the new
    /// point until they vanish.
    pub fn into_wcs(
        self,
        tangent: SkyCoord,
        crpix: PixelPosition,
        w: usize,
        h: usize,
    ) -> Result<TanSipWcs, WcsError> {
        let tangent = deproject(tangent, self.cx[0], self.cy[0]);
        let cd = self.cd();
        let det = cd[0][0] * cd[1][1] - cd[0][1] * cd[1][0];
        if !det.is_finite() || det == 0.0 {
            return Err(WcsError::Singular);
        }
        let inv = [
            [cd[1][1] / det, -cd[0][1] / det],
            [-cd[1][0] / det, cd[0][0] / det],
        ];
        let sip = if self.order >= 2 {
            let mut a_terms = Vec::new();
            let mut b_terms = Vec::new();
            for (k, &(p, q)) in self.powers.iter().enumerate() {
                if p + q < 2 {
                    continue;
                }
                let scale = self.s.powi((p + q) as i32);
                let (fx, fy) = (self.cx[k] / scale, self.cy[k] / scale);
                a_terms.push(((p, q), inv[0][0] * fx + inv[0][1] * fy));
                b_terms.push(((p, q), inv[1][0] * fx + inv[1][1] * fy));
            }
            let a = SipPolynomial::new(self.order, a_terms).ok_or(WcsError::Singular)?;
            let b = SipPolynomial::new(self.order, b_terms).ok_or(WcsError::Singular)?;
            let (ap, bp) = inverse_sip(&a, &b, w, h, crpix, self.order + 1);
            Some(Sip { a, b, ap, bp })
        } else {
            None
        };
        TanSipWcs::new(crpix, tangent, cd, sip)
    }
}

fn basis(powers: &[(usize, usize)], s: f64, u: f64, v: f64, row: &mut [f64]) {
    let (u, v) = (u / s, v / s);
    for (r, &(p, q)) in row.iter_mut().zip(powers) {
        *r = u.powi(p as i32) * v.powi(q as i32);
    }
}

/// The sky position at tangent-plane offset (xi, eta) degrees from `t` (the inverse
/// gnomonic projection, FITS TAN with LONPOLE = 180).
pub fn deproject(t: SkyCoord, xi: f64, eta: f64) -> SkyCoord {
    let (xi, eta) = (xi.to_radians(), eta.to_radians());
    let (a0, d0) = (t.ra().to_radians(), t.dec().to_radians());
    let denom = d0.cos() - eta * d0.sin();
    let ra = a0 + xi.atan2(denom);
    let dec = (d0.sin() + eta * d0.cos()).atan2((xi * xi + denom * denom).sqrt());
    SkyCoord::new(ra.to_degrees().rem_euclid(360.0), dec.to_degrees()).unwrap_or(t)
}

/// The inverse SIP polynomials (AP, BP) of `order`, fitted on a grid over the image, so
/// readers without an iterative inverse (and ours, as a start) map sky to pixels.
fn inverse_sip(
    a: &SipPolynomial,
    b: &SipPolynomial,
    w: usize,
    h: usize,
    crpix: PixelPosition,
    order: usize,
) -> (Option<SipPolynomial>, Option<SipPolynomial>) {
    let s = w.max(h) as f64 / 2.0;
    let powers: Vec<(usize, usize)> = (0..=order)
        .flat_map(|d| (0..=d).map(move |q| (d - q, q)))
        .collect();
    let n = powers.len();
    let mut m = vec![0.0; n * n];
    let (mut ru, mut rv) = (vec![0.0; n], vec![0.0; n]);
    let mut row = vec![0.0; n];
    for gy in 0..=20 {
        for gx in 0..=20 {
            let (u, v) = (
                (gx as f64 / 20.0) * (w as f64 + 40.0) - 20.0 - crpix.x,
                (gy as f64 / 20.0) * (h as f64 + 40.0) - 20.0 - crpix.y,
            );
            // Intermediate coordinates (U, V) = (u + A, v + B); the inverse maps them back.
            let (uu, vv) = (u + a.value(u, v), v + b.value(u, v));
            basis(&powers, s, uu, vv, &mut row);
            for i in 0..n {
                ru[i] += row[i] * (u - uu);
                rv[i] += row[i] * (v - vv);
                for j in 0..n {
                    m[i * n + j] += row[i] * row[j];
                }
            }
        }
    }
    let (Some(cu), Some(cv)) = (solve(m.clone(), ru), solve(m, rv)) else {
        return (None, None);
    };
    let poly = |c: &[f64]| {
        SipPolynomial::new(
            order,
            powers
                .iter()
                .zip(c)
                .map(|(&(p, q), &k)| ((p, q), k / s.powi((p + q) as i32))),
        )
    };
    (poly(&cu), poly(&cv))
}
