//! Model fits to a difference image's pixels around a DIASource (DMS-REQ-0269): a trailed
//! source (a point that moved during the exposure: the PSF swept along a segment, fitted for
//! centre, length, angle and flux) and a dipole (a positive and a negative PSF side by side,
//! what a misregistered or slightly moved star leaves: both positions and both fluxes).
//!
//! The PSF is the image's elliptical Gaussian at the source, widened by a pixel's own second
//! moment (1/12 pixel² on each axis) because pixels integrate the light and the models are
//! evaluated at pixel centres; swept along a segment it has a closed form in error functions
//! (Vereš et al. 2012, PASP 124, 1197). Both are fitted by Levenberg-Marquardt on the
//! inverse-variance weighted residuals of the unmasked pixels; errors come from the inverse
//! of the normal matrix at the solution. Positions are pixels, fluxes the image's counts.
use crate::image::Exposure;
use crate::measurement::{Pixels, Px, invert};
use crate::psf::Moments;

/// Accepted steps before a fit gives up.
const MAX_ITERATIONS: usize = 30;
/// A step lowering chi-squared by less than this (or promising less) ends the fit: the
/// parameters have moved by a tenth of their errors or less.
const CONVERGED_CHI2: f64 = 1e-2;
/// Pixels fitted lie within this many pixels of the source: trails longer than about 70
/// pixels (a fast near-Earth object) are not measured.
const MAX_RADIUS: f64 = 40.0;
/// Damping beyond which no step is worth trying.
const MAX_DAMPING: f64 = 1e6;

/// A trailed-source fit, pixel frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrailFit {
    pub x: f64,
    pub y: f64,
    pub x_err: f64,
    pub y_err: f64,
    /// Length of the segment the PSF was swept along, pixels.
    pub length: f64,
    pub length_err: f64,
    /// Direction of the segment from the +x axis towards +y, radians in [0, π).
    pub angle: f64,
    pub angle_err: f64,
    /// Total flux, counts.
    pub flux: f64,
    pub flux_err: f64,
    pub chi2: f64,
    /// Pixels fitted.
    pub ndata: usize,
    /// The trail, widened by two PSF sigmas, reaches past the image's edge.
    pub edge: bool,
}

/// A dipole fit, pixel frame: a positive lobe minus a negative one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DipoleFit {
    pub positive: (f64, f64),
    pub negative: (f64, f64),
    /// Fluxes (counts) of the lobes, each positive where the lobe is what it is named.
    pub positive_flux: f64,
    pub negative_flux: f64,
    pub positive_flux_err: f64,
    pub negative_flux_err: f64,
    /// Errors of the lobes' mean flux and of their difference, with the fluxes' correlation.
    pub mean_flux_err: f64,
    pub flux_diff_err: f64,
    pub chi2: f64,
    pub ndata: usize,
}

impl DipoleFit {
    /// Mean of the lobes' absolute fluxes.
    pub fn mean_flux(&self) -> f64 {
        0.5 * (self.positive_flux + self.negative_flux)
    }
    /// Positive minus negative absolute flux.
    pub fn flux_diff(&self) -> f64 {
        self.positive_flux - self.negative_flux
    }
    /// Separation of the lobes, pixels.
    pub fn length(&self) -> f64 {
        (self.positive.0 - self.negative.0).hypot(self.positive.1 - self.negative.1)
    }
}

/// An elliptical Gaussian of unit integral: exp(-(a x² + 2 b x y + c y²) / 2) · norm.
#[derive(Debug, Clone, Copy)]
struct Gauss {
    a: f64,
    b: f64,
    c: f64,
    norm: f64,
    /// Sigma along its major axis, pixels.
    sigma_max: f64,
}

impl Gauss {
    /// The PSF of `moments` as pixel centres see it (widened by the pixel's 1/12 pixel²).
    fn pixelated(moments: Moments) -> Option<Self> {
        let m = Moments {
            ixx: moments.ixx + 1.0 / 12.0,
            iyy: moments.iyy + 1.0 / 12.0,
            ixy: moments.ixy,
        };
        if !m.is_valid() {
            return None;
        }
        let det = m.ixx * m.iyy - m.ixy * m.ixy;
        let half_trace = 0.5 * (m.ixx + m.iyy);
        let major = half_trace + (half_trace * half_trace - det).max(0.0).sqrt();
        Some(Self {
            a: m.iyy / det,
            b: -m.ixy / det,
            c: m.ixx / det,
            norm: 1.0 / (std::f64::consts::TAU * det.sqrt()),
            sigma_max: major.sqrt(),
        })
    }

    fn quadratic(&self, dx: f64, dy: f64) -> f64 {
        self.a * dx * dx + 2.0 * self.b * dx * dy + self.c * dy * dy
    }

    fn at(&self, dx: f64, dy: f64) -> f64 {
        self.norm * (-0.5 * self.quadratic(dx, dy)).exp()
    }
}

/// The PSF swept uniformly along a segment of `length` in direction `angle` centred on the
/// origin (unit integral): what depends on the segment alone is computed once, so a pixel
/// costs three exponentials (two inside the error functions) for its value and its
/// derivatives together.
struct Segment {
    g: Gauss,
    length: f64,
    half: f64,
    /// P u and P u', P the Gaussian's inverse covariance, u the segment's direction and u'
    /// its perpendicular (the direction u turns to as the angle grows).
    pu: (f64, f64),
    pv: (f64, f64),
    /// uᵀ P u, its derivative in the angle (2 u'ᵀ P u), and sqrt(alpha / 2).
    alpha: f64,
    alpha_angle: f64,
    s: f64,
    /// norm · sqrt(π) / (2 s length): the integral along the segment over its length.
    scale: f64,
}

/// 2 / sqrt(π), the derivative of erf at 0.
const TWO_OVER_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;

/// erfc(|z|) and exp(-z²) (Abramowitz & Stegun 7.1.26: absolute error under 1.5e-7),
/// sharing the one exponential the error function needs and its derivative uses.
fn erfc_abs(z: f64) -> (f64, f64) {
    let x = z.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let gauss = (-x * x).exp();
    (poly * gauss, gauss)
}

impl Segment {
    fn new(g: Gauss, length: f64, angle: f64) -> Self {
        let (uy, ux) = angle.sin_cos();
        let (vx, vy) = (-uy, ux);
        let alpha = g.quadratic(ux, uy);
        let pu = (g.a * ux + g.b * uy, g.b * ux + g.c * uy);
        let s = (0.5 * alpha).sqrt();
        Self {
            g,
            length,
            half: 0.5 * length,
            pu,
            pv: (g.a * vx + g.b * vy, g.b * vx + g.c * vy),
            alpha,
            alpha_angle: 2.0 * (pu.0 * vx + pu.1 * vy),
            s,
            scale: g.norm * std::f64::consts::PI.sqrt() / (2.0 * s * length),
        }
    }

    /// The value at offset (dx, dy) from the segment's centre, and its derivatives in the
    /// centre (x0, y0), the length and the angle.
    fn at(&self, dx: f64, dy: f64) -> (f64, [f64; 4]) {
        let g = &self.g;
        // Along the segment the exponent is a parabola in the position t on it:
        // -(alpha (t - t0)² + q - beta t0) / 2.
        let (qx, qy) = (g.a * dx + g.b * dy, g.b * dx + g.c * dy);
        let q = qx * dx + qy * dy;
        let beta = self.pu.0 * dx + self.pu.1 * dy;
        let t0 = beta / self.alpha;
        let across = (-0.5 * (q - beta * t0)).exp();
        let (z1, z2) = (self.s * (-self.half - t0), self.s * (self.half - t0));
        if z2 - z1 < 1e-2 {
            // A point (the segment's mean differs from its middle by (z2 - z1)² / 12, under
            // 1e-5): the Gaussian itself, whose length and angle do not matter.
            let v = g.norm * (-0.5 * q).exp();
            return (v, [v * qx, v * qy, 0.0, 0.0]);
        }
        // erf(z2) - erf(z1), each side of the parabola's peak in complementary error
        // functions so that a trail's far end keeps its precision.
        let ((c1, e1), (c2, e2)) = (erfc_abs(z1), erfc_abs(z2));
        let span = if z1 >= 0.0 {
            c1 - c2
        } else if z2 <= 0.0 {
            c2 - c1
        } else {
            2.0 - c1 - c2
        };
        let v = self.scale * across * span;
        let edge = self.scale * across * TWO_OVER_SQRT_PI;
        // Through beta (t0 moves both ends of the span; the exponent across holds beta t0)
        // and q, then the chain to the parameters.
        let root = (2.0 * self.alpha).sqrt();
        let d_beta = v * t0 - edge * (e2 - e1) / root;
        let d_q = -0.5 * v;
        let d_alpha = -0.5 * v * t0 * t0 - 0.5 * v / self.alpha
            + edge * (e2 * (self.half + t0) - e1 * (t0 - self.half)) / (2.0 * root);
        let d_length = -v / self.length + edge * (e2 + e1) * 0.5 * self.s;
        (
            v,
            [
                -(2.0 * d_q * qx + d_beta * self.pu.0),
                -(2.0 * d_q * qy + d_beta * self.pu.1),
                d_length,
                d_alpha * self.alpha_angle + d_beta * (self.pv.0 * dx + self.pv.1 * dy),
            ],
        )
    }
}

/// The unmasked pixels of a disc around (cx, cy): offsets from it, values and inverse
/// variances.
struct Stamp {
    pixels: Vec<[f64; 4]>,
}

impl Stamp {
    fn around(exposure: &Exposure, cx: f64, cy: f64, radius: f64) -> Self {
        let pixels = Pixels::of(exposure);
        let r = radius.ceil() as i64;
        let (ix, iy) = (cx.round() as i64, cy.round() as i64);
        let mut out = Vec::with_capacity(((2 * r + 1) * (2 * r + 1)) as usize);
        for y in iy - r..=iy + r {
            for x in ix - r..=ix + r {
                let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                if dx * dx + dy * dy > radius * radius {
                    continue;
                }
                if let Px::Good(v, s) = pixels.at(x, y) {
                    out.push([dx, dy, v, 1.0 / s]);
                }
            }
        }
        Self { pixels: out }
    }

    /// The values of `basis` (and their derivatives) at every pixel, into `out`.
    fn sample<const P: usize, const A: usize>(
        &self,
        basis: impl Fn(f64, f64) -> Sample<P, A>,
        out: &mut Vec<Sample<P, A>>,
    ) {
        out.clear();
        out.extend(self.pixels.iter().map(|&[dx, dy, _, _]| basis(dx, dy)));
    }

    /// The amplitudes of the sampled basis that best explain the pixels (linear least
    /// squares), and the chi-squared they leave.
    fn project<const P: usize, const A: usize>(
        &self,
        basis: &[Sample<P, A>],
    ) -> Option<([f64; A], f64)> {
        let mut a = vec![vec![0.0; A]; A];
        let mut b = [0.0; A];
        for (&[_, _, v, w], (f, _)) in self.pixels.iter().zip(basis) {
            for i in 0..A {
                b[i] += w * f[i] * v;
                for j in 0..A {
                    a[i][j] += w * f[i] * f[j];
                }
            }
        }
        let inv = invert(a)?;
        let amplitudes: [f64; A] = std::array::from_fn(|i| (0..A).map(|j| inv[i][j] * b[j]).sum());
        let chi2 = self
            .pixels
            .iter()
            .zip(basis)
            .map(|(&[_, _, v, w], (f, _))| w * (v - dot(f, &amplitudes)).powi(2))
            .sum::<f64>();
        chi2.is_finite().then_some((amplitudes, chi2))
    }
}

/// A model's `A` basis functions at a pixel, and their derivatives in its `P` nonlinear
/// parameters.
type Sample<const P: usize, const A: usize> = ([f64; A], [[f64; P]; A]);

fn dot<const N: usize>(a: &[f64; N], b: &[f64; N]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The model's derivatives in its nonlinear parameters at one pixel, the amplitudes held
/// (its derivatives in the amplitudes are the basis functions themselves).
fn nonlinear_row<const P: usize, const A: usize>(
    (_, grads): &Sample<P, A>,
    amplitudes: &[f64; A],
) -> [f64; P] {
    std::array::from_fn(|j| (0..A).map(|k| amplitudes[k] * grads[k][j]).sum())
}

/// A least-squares solution: `P` nonlinear parameters and `A` amplitudes, the covariance
/// of all of them in that order (None when the normal matrix is singular at the solution),
/// chi-squared.
struct Solution<const P: usize, const A: usize> {
    params: [f64; P],
    amplitudes: [f64; A],
    covariance: Option<Vec<Vec<f64>>>,
    chi2: f64,
}

impl<const P: usize, const A: usize> Solution<P, A> {
    /// Error of parameter `i` (amplitudes follow the nonlinear parameters).
    fn err(&self, i: usize) -> f64 {
        self.covariance.as_ref().map_or(f64::NAN, |c| root(c[i][i]))
    }
}

/// Levenberg-Marquardt over the nonlinear parameters of a model that is a sum of `A`
/// basis functions with free amplitudes (variable projection: at each parameter set the
/// amplitudes are solved exactly, so the search has only the nonlinear dimensions, with
/// Kaufman's Jacobian). `basis(params)` gives the functions of a pixel's offset with their
/// derivatives. None when it does not converge to a finite chi-squared.
fn fit<const P: usize, const A: usize, B: Fn(f64, f64) -> Sample<P, A>>(
    stamp: &Stamp,
    basis: impl Fn(&[f64; P]) -> B,
    start: [f64; P],
) -> Option<Solution<P, A>> {
    let n = stamp.pixels.len();
    if n <= P + A {
        return None;
    }
    let model = |p: &[f64; P], out: &mut Vec<Sample<P, A>>| {
        stamp.sample(basis(p), out);
        stamp.project(out)
    };
    let (mut current, mut trial) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut p = start;
    let (mut amplitudes, mut chi2) = model(&p, &mut current)?;
    let mut lambda = 1e-3;
    let mut converged = false;
    for _ in 0..MAX_ITERATIONS {
        let mut normal = [[0.0; P]; P];
        let mut gradient = [0.0; P];
        for (&[_, _, v, w], sample) in stamp.pixels.iter().zip(&current) {
            let r = v - dot(&sample.0, &amplitudes);
            let row = nonlinear_row(sample, &amplitudes);
            for i in 0..P {
                gradient[i] += w * row[i] * r;
                for j in 0..P {
                    normal[i][j] += w * row[i] * row[j];
                }
            }
        }
        // Parameters the pixels do not constrain (a point's trail angle) keep a floor of
        // damping so the step stays defined.
        let floor = 1e-9 * (0..P).map(|i| normal[i][i]).fold(0.0, f64::max);
        let step = loop {
            let damped: Vec<Vec<f64>> = (0..P)
                .map(|i| {
                    let mut row = normal[i].to_vec();
                    row[i] += lambda * normal[i][i].max(floor);
                    row
                })
                .collect();
            let delta: Option<[f64; P]> = invert(damped).map(|inv| {
                std::array::from_fn(|i| (0..P).map(|j| inv[i][j] * gradient[j]).sum::<f64>())
            });
            match delta {
                // A step that could not lower chi-squared by a hundredth: p is the minimum.
                Some(d) if dot(&d, &gradient) < CONVERGED_CHI2 => break None,
                Some(d) => {
                    let q: [f64; P] = std::array::from_fn(|i| p[i] + d[i]);
                    if let Some((a, c)) = model(&q, &mut trial)
                        && c <= chi2
                    {
                        lambda = (lambda / 10.0).max(1e-9);
                        break Some((q, a, c));
                    }
                }
                None => {}
            }
            lambda *= 10.0;
            if lambda > MAX_DAMPING {
                break None;
            }
        };
        let Some((q, a, c)) = step else {
            converged = true;
            break;
        };
        let small = chi2 - c < CONVERGED_CHI2;
        (p, amplitudes, chi2) = (q, a, c);
        std::mem::swap(&mut current, &mut trial);
        if small {
            converged = true;
            break;
        }
    }
    if !converged {
        return None;
    }
    // The covariance of all parameters at the solution, undamped.
    let mut normal = vec![vec![0.0; P + A]; P + A];
    for (&[_, _, _, w], sample) in stamp.pixels.iter().zip(&current) {
        let row: Vec<f64> = nonlinear_row(sample, &amplitudes)
            .into_iter()
            .chain(sample.0)
            .collect();
        for i in 0..P + A {
            for j in 0..P + A {
                normal[i][j] += w * row[i] * row[j];
            }
        }
    }
    Some(Solution {
        params: p,
        amplitudes,
        covariance: covariance(normal),
        chi2,
    })
}

/// The square root of a variance, rounding's negatives taken as zero; NaN stays NaN (a
/// parameter left out of the covariance).
fn root(variance: f64) -> f64 {
    if variance.is_nan() {
        f64::NAN
    } else {
        variance.max(0.0).sqrt()
    }
}

/// The inverse of a normal matrix, leaving out the parameters the pixels do not constrain
/// at all (a point's trail length and angle, whose derivatives vanish there): their rows
/// and columns are NaN, the others' covariance that of the parameters that remain. None
/// when even those are singular.
fn covariance(normal: Vec<Vec<f64>>) -> Option<Vec<Vec<f64>>> {
    let n = normal.len();
    let largest = (0..n).map(|i| normal[i][i]).fold(0.0, f64::max);
    let kept: Vec<usize> = (0..n).filter(|&i| normal[i][i] > 1e-12 * largest).collect();
    let inner: Vec<Vec<f64>> = kept
        .iter()
        .map(|&i| kept.iter().map(|&j| normal[i][j]).collect())
        .collect();
    let inverse = invert(inner)?;
    let mut out = vec![vec![f64::NAN; n]; n];
    for (a, &i) in kept.iter().enumerate() {
        for (b, &j) in kept.iter().enumerate() {
            out[i][j] = inverse[a][b];
        }
    }
    Some(out)
}

/// Fits a trailed source at (x, y) on `exposure` whose PSF there has `psf` moments;
/// `shape` (the source's adaptive moments, pixels²) seeds the length and angle: a segment
/// of length L adds L²/12 to the second moment along it. `extent` (the larger side of the
/// source's footprint, pixels) bounds the pixels fitted from below, for a trail whose
/// moments did not converge. None when the fit fails.
pub fn fit_trail(
    exposure: &Exposure,
    psf: Moments,
    (x, y): (f64, f64),
    shape: Option<Moments>,
    extent: f64,
) -> Option<TrailFit> {
    let g = Gauss::pixelated(psf)?;
    let (length0, angle0) = shape
        .map(|s| {
            let (dxx, dyy, dxy) = (s.ixx - psf.ixx, s.iyy - psf.iyy, s.ixy - psf.ixy);
            let half_trace = 0.5 * (dxx + dyy);
            let major = half_trace + (0.25 * (dxx - dyy).powi(2) + dxy * dxy).sqrt();
            let angle = 0.5 * (2.0 * dxy).atan2(dxx - dyy);
            ((12.0 * major.max(0.0)).sqrt(), angle)
        })
        .filter(|(l, a)| l.is_finite() && a.is_finite())
        .unwrap_or((0.0, 0.0));
    // Long enough to hold the seeded trail (the footprint where the moments failed) and
    // the PSF out to 3 sigma (99 % of its light). A trail found longer than its stamp can
    // hold is fitted again on a stamp that holds it, once.
    let seed_extent = if shape.is_some() { length0 } else { extent };
    let mut start = [0.0, 0.0, length0, angle0];
    if shape.is_none() {
        // No moments: a short trail along x, whose derivatives in length and angle exist
        // (at zero length they vanish and the fit would stay a point).
        start[2] = 0.5;
    }
    let mut radius = (0.5 * seed_extent + 3.0 * g.sigma_max + 0.5).min(MAX_RADIUS);
    let mut attempts = 0;
    let (s, stamp) = loop {
        attempts += 1;
        let stamp = Stamp::around(exposure, x, y, radius);
        let s = fit(
            &stamp,
            |p: &[f64; 4]| {
                // The length's sign is the fit's freedom; the model sees its size.
                let sign = if p[2] < 0.0 { -1.0 } else { 1.0 };
                let segment = Segment::new(g, p[2].abs(), p[3]);
                let (x0, y0) = (p[0], p[1]);
                move |dx: f64, dy: f64| {
                    let (v, mut d) = segment.at(dx - x0, dy - y0);
                    d[2] *= sign;
                    ([v], [d])
                }
            },
            start,
        )?;
        let [dx, dy, length, _] = s.params;
        let needed = 0.5 * length.abs() + dx.hypot(dy) + 3.0 * g.sigma_max + 0.5;
        if needed <= radius + 1.0 {
            break (s, stamp);
        }
        if attempts == 2 || radius >= MAX_RADIUS {
            return None;
        }
        start = s.params;
        radius = needed.min(MAX_RADIUS);
    };
    let [dx, dy, length, angle] = s.params;
    let [flux] = s.amplitudes;
    let length = length.abs();
    if !(length.is_finite() && flux.is_finite()) {
        return None;
    }
    let (cx, cy) = (x + dx, y + dy);
    // The segment's ends widened by two sigmas, against the image's bounds.
    let (sin, cos) = angle.sin_cos();
    let reach = 0.5 * length;
    let margin = 2.0 * g.sigma_max;
    let edge = [-reach, reach].iter().any(|t| {
        let (ex, ey) = (cx + t * cos, cy + t * sin);
        ex - margin < -0.5
            || ey - margin < -0.5
            || ex + margin > exposure.width() as f64 - 0.5
            || ey + margin > exposure.height() as f64 - 0.5
    });
    Some(TrailFit {
        x: cx,
        y: cy,
        x_err: s.err(0),
        y_err: s.err(1),
        length,
        length_err: s.err(2),
        angle: angle.rem_euclid(std::f64::consts::PI),
        angle_err: s.err(3),
        flux,
        flux_err: s.err(4),
        chi2: s.chi2,
        ndata: stamp.pixels.len(),
        edge,
    })
}

/// Fits a dipole: a positive PSF seeded at `positive` and a negative one at `negative`, on
/// `exposure` whose PSF between them has `psf` moments. None when the fit fails.
pub fn fit_dipole(
    exposure: &Exposure,
    psf: Moments,
    positive: (f64, f64),
    negative: (f64, f64),
) -> Option<DipoleFit> {
    let g = Gauss::pixelated(psf)?;
    let (cx, cy) = (
        0.5 * (positive.0 + negative.0),
        0.5 * (positive.1 + negative.1),
    );
    let half_sep = 0.5 * (positive.0 - negative.0).hypot(positive.1 - negative.1);
    let radius = (half_sep + 3.0 * g.sigma_max + 0.5).min(MAX_RADIUS);
    let stamp = Stamp::around(exposure, cx, cy, radius);
    let (px, py) = (positive.0 - cx, positive.1 - cy);
    let (nx, ny) = (negative.0 - cx, negative.1 - cy);
    let s = fit(
        &stamp,
        |p: &[f64; 4]| {
            let [px, py, nx, ny] = *p;
            move |dx: f64, dy: f64| {
                // A Gaussian's derivative in its own centre: itself times P d.
                let lobe = |dx: f64, dy: f64| {
                    let v = g.at(dx, dy);
                    (v, v * (g.a * dx + g.b * dy), v * (g.b * dx + g.c * dy))
                };
                let (vp, px_, py_) = lobe(dx - px, dy - py);
                let (vn, nx_, ny_) = lobe(dx - nx, dy - ny);
                ([vp, -vn], [[px_, py_, 0.0, 0.0], [0.0, 0.0, -nx_, -ny_]])
            }
        },
        [px, py, nx, ny],
    )?;
    let [px, py, nx, ny] = s.params;
    let [fp, fnn] = s.amplitudes;
    // A lobe that left the pixels fitted is not one.
    if px.hypot(py) > radius || nx.hypot(ny) > radius {
        return None;
    }
    let (mean_flux_err, flux_diff_err) = match &s.covariance {
        Some(c) => (
            0.5 * root(c[4][4] + c[5][5] + 2.0 * c[4][5]),
            root(c[4][4] + c[5][5] - 2.0 * c[4][5]),
        ),
        None => (f64::NAN, f64::NAN),
    };
    Some(DipoleFit {
        positive: (cx + px, cy + py),
        negative: (cx + nx, cy + ny),
        positive_flux: fp,
        negative_flux: fnn,
        positive_flux_err: s.err(4),
        negative_flux_err: s.err(5),
        mean_flux_err,
        flux_diff_err,
        chi2: s.chi2,
        ndata: stamp.pixels.len(),
    })
}

#[cfg(test)]
mod tests;
