//! Measurement of detected sources (DMS-REQ-0267, 0052): a PSF-weighted centroid with
//! propagated errors, the maximum-likelihood PSF flux at that centroid with its error, and
//! fluxes in circular apertures, each with flags; fluxes in nJy when the exposure is
//! calibrated.
use crate::detection::Peak;
use crate::image::{Exposure, MaskPlane, PhotoCalib};
use crate::psf::GaussianPsf;

/// Flags of one measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// Part of the kernel or aperture fell off the image.
    pub edge: bool,
    /// A pixel used was saturated, bad, a cosmic ray or without data (and was left out).
    pub masked: bool,
    /// The centroid did not converge; the peak position was used.
    pub centroid_failed: bool,
    /// The adaptive moments did not converge (no shape).
    pub shape_failed: bool,
}

/// Adaptive second moments (pixels²) with their 1-sigma errors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub ixx: f64,
    pub iyy: f64,
    pub ixy: f64,
    pub ixx_err: f64,
    pub iyy_err: f64,
    pub ixy_err: f64,
}

/// A flux and its 1-sigma error, in counts or nJy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flux {
    pub value: f64,
    pub err: f64,
}

/// What is measured of one source.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub x: f64,
    pub y: f64,
    pub x_err: f64,
    pub y_err: f64,
    pub psf_flux: Flux,
    /// Pixels the PSF flux was fitted on.
    pub psf_pixels: usize,
    /// Chi-squared of the PSF model at its fitted flux over those pixels, and the natural
    /// log of the model's likelihood (Gaussian pixel noise of the variance plane); NaN
    /// when nothing was fitted. DIASources carry both (DMS-REQ-0269's PSF likelihood).
    pub psf_chi2: f64,
    pub psf_ln_l: f64,
    /// (radius in pixels, flux).
    pub aperture_fluxes: Vec<(f64, Flux)>,
    /// Adaptive moments (DMS-REQ-0267's shape), None when they did not converge.
    pub shape: Option<Shape>,
    /// 1 for a source resolved beyond the PSF, 0 for a point source, None without a shape.
    pub extendedness: Option<f64>,
    /// Kron radius (pixels, circularised) and the flux within 2.5 of it, None without a shape.
    pub kron: Option<(f64, Flux)>,
    /// Petrosian radius (pixels) and the flux within twice it.
    pub petrosian: Option<(f64, Flux)>,
    /// True when the fluxes are in nJy (the exposure had a calibration), else counts.
    pub calibrated: bool,
    pub flags: Flags,
}

/// Aperture radii in pixels.
pub const APERTURE_RADII: [f64; 4] = [3.0, 6.0, 9.0, 12.0];

/// Pixels measurement leaves out. Cosmic-ray pixels repaired from the other snap are good
/// data (with their variance); those that could not be are interpolated, hence INTRP.
const UNUSABLE: [MaskPlane; 4] = [
    MaskPlane::Sat,
    MaskPlane::Bad,
    MaskPlane::Intrp,
    MaskPlane::NoData,
];

/// One pixel as measurement sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Px {
    /// Outside the image.
    Off,
    /// Inside, but unusable: masked, not finite, or without a positive variance.
    Masked,
    /// Value and variance.
    Good(f64, f64),
}

/// The exposure's planes read directly, with the unusable planes as one bit mask: the
/// measurement loops touch each pixel many times, and bounds-checked lookups of three
/// planes with a plane list folded each time dominated their cost.
pub(crate) struct Pixels<'a> {
    image: &'a [f32],
    variance: &'a [f32],
    mask: &'a [i32],
    width: i64,
    height: i64,
    unusable: i32,
    /// A deblended child's own light, replacing the image where it is given.
    child: Option<&'a ChildLight>,
}

/// One child of a deblended footprint: its share of the light at each pixel of the
/// footprint (NaN outside it, where the image itself is used), over the footprint's
/// bounding box.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildLight {
    pub x0: i64,
    pub y0: i64,
    pub width: i64,
    pub height: i64,
    pub values: Vec<f32>,
}

impl ChildLight {
    #[inline]
    fn at(&self, x: i64, y: i64) -> Option<f32> {
        let (i, j) = (x - self.x0, y - self.y0);
        if i < 0 || j < 0 || i >= self.width || j >= self.height {
            return None;
        }
        let v = self.values[(j * self.width + i) as usize];
        (!v.is_nan()).then_some(v)
    }
}

impl<'a> Pixels<'a> {
    pub(crate) fn of(exposure: &'a Exposure) -> Self {
        Self {
            image: exposure.image().data(),
            variance: exposure.variance().data(),
            mask: exposure.mask().bits().data(),
            width: exposure.width() as i64,
            height: exposure.height() as i64,
            unusable: UNUSABLE.iter().fold(0, |m, p| m | p.bit()),
            child: None,
        }
    }

    fn with_child(exposure: &'a Exposure, child: Option<&'a ChildLight>) -> Self {
        Self {
            child,
            ..Self::of(exposure)
        }
    }

    #[inline]
    pub(crate) fn at(&self, x: i64, y: i64) -> Px {
        if x < 0 || y < 0 || x >= self.width || y >= self.height {
            return Px::Off;
        }
        let i = (y * self.width + x) as usize;
        let v = match self.child.and_then(|c| c.at(x, y)) {
            Some(own) => own,
            None => self.image[i],
        };
        let s = self.variance[i];
        if self.mask[i] & self.unusable != 0 || !v.is_finite() || !(s.is_finite() && s > 0.0) {
            Px::Masked
        } else {
            Px::Good(f64::from(v), f64::from(s))
        }
    }
}

/// Measures the source at `peak` on a background-subtracted exposure.
pub fn measure(exposure: &Exposure, psf: &GaussianPsf, peak: &Peak) -> Measurement {
    measure_child(exposure, None, psf, peak)
}

/// What a point source needs measured (DIASources, PSF and astrometry candidates): all of
/// [`measure`] but the extended-source fluxes (Kron and Petrosian, left `None`), which mean
/// nothing on a difference image or a star and cost most of the time, the Petrosian search
/// reaching out to 60 pixels.
pub fn measure_point(exposure: &Exposure, psf: &GaussianPsf, peak: &Peak) -> Measurement {
    measure_with(exposure, None, psf, peak, false)
}

/// Measures the source at `peak`, seeing only `child`'s share of the light inside its
/// deblended footprint when given.
pub fn measure_child(
    exposure: &Exposure,
    child: Option<&ChildLight>,
    psf: &GaussianPsf,
    peak: &Peak,
) -> Measurement {
    measure_with(exposure, child, psf, peak, true)
}

fn measure_with(
    exposure: &Exposure,
    child: Option<&ChildLight>,
    psf: &GaussianPsf,
    peak: &Peak,
    extended: bool,
) -> Measurement {
    let mut flags = Flags::default();
    let pixels = Pixels::with_child(exposure, child);

    // Centroid: first moments weighted by a Gaussian of the PSF's size, iterated from the
    // peak; the weighted estimator's error follows from the pixel variances.
    let m = psf.moments_at(peak.x as f64, peak.y as f64);
    let sigma = if m.is_valid() {
        m.determinant_radius()
    } else {
        2.0
    };
    let half = (4.0 * sigma).ceil() as i64;
    let (mut cx, mut cy) = (peak.x as f64, peak.y as f64);
    let mut errs = (f64::NAN, f64::NAN);
    let mut converged = false;
    let mut terms = Vec::new();
    let side = (2 * half + 1) as usize;
    let (mut wx, mut wy) = (vec![0.0; side], vec![0.0; side]);
    for _ in 0..30 {
        let (mut sw, mut sx, mut sy) = (0.0, 0.0, 0.0);
        terms.clear();
        // The round Gaussian weight is separable: one exp per row and column.
        let gauss = |d: f64| (-0.5 * d * d / (sigma * sigma)).exp();
        for k in 0..side {
            let offset = k as i64 - half;
            wx[k] = gauss((peak.x as i64 + offset) as f64 - cx);
            wy[k] = gauss((peak.y as i64 + offset) as f64 - cy);
        }
        // A fixed box around the peak: a box that followed the rounded centroid would jump
        // as it crossed pixel boundaries and keep the iteration from settling.
        for y in peak.y as i64 - half..=peak.y as i64 + half {
            for x in peak.x as i64 - half..=peak.x as i64 + half {
                let (v, s) = match pixels.at(x, y) {
                    Px::Good(v, s) => (v, s),
                    Px::Off => {
                        flags.edge = true;
                        continue;
                    }
                    Px::Masked => {
                        flags.masked = true;
                        continue;
                    }
                };
                let wgt = wx[(x - peak.x as i64 + half) as usize]
                    * wy[(y - peak.y as i64 + half) as usize];
                sw += wgt * v;
                sx += wgt * v * x as f64;
                sy += wgt * v * y as f64;
                terms.push((wgt, s, x as f64, y as f64));
            }
        }
        if sw <= 0.0 {
            break;
        }
        let (nx, ny) = (sx / sw, sy / sw);
        // The weighted first moment of a symmetric PSF is biased towards the window centre
        // by half the offset when window and PSF have the same width: step twice as far.
        let (nx, ny) = (cx + 2.0 * (nx - cx), cy + 2.0 * (ny - cy));
        let var_x: f64 = terms
            .iter()
            .map(|(wg, s, x, _)| wg * wg * s * (x - nx).powi(2))
            .sum();
        let var_y: f64 = terms
            .iter()
            .map(|(wg, s, _, y)| wg * wg * s * (y - ny).powi(2))
            .sum();
        errs = (2.0 * var_x.sqrt() / sw, 2.0 * var_y.sqrt() / sw);
        let moved = (nx - cx).hypot(ny - cy);
        if (nx - peak.x as f64).hypot(ny - peak.y as f64) > 2.0 * sigma || !moved.is_finite() {
            break;
        }
        cx = nx;
        cy = ny;
        if moved < 1e-4 {
            converged = true;
            break;
        }
    }
    if !converged {
        flags.centroid_failed = true;
        cx = peak.x as f64;
        cy = peak.y as f64;
    }

    // PSF flux: the amplitude of the PSF at the centroid that best fits the pixels,
    // weighted by inverse variance, with its error.
    let (mut num, mut den, mut psf_pixels) = (0.0, 0.0, 0);
    // Sums of v²/s and ln(2πs): with num and den they give the fit's chi-squared.
    let (mut data_chi2, mut ln_norm) = (0.0, 0.0);
    if let Ok(kernel) = psf.kernel_at(cx, cy, half as usize) {
        let (x0, y0) = (cx.round() as i64 - half, cy.round() as i64 - half);
        for j in 0..kernel.height() as i64 {
            for i in 0..kernel.width() as i64 {
                let p = f64::from(kernel.get(i as usize, j as usize).unwrap_or(0.0));
                match pixels.at(x0 + i, y0 + j) {
                    Px::Good(v, s) => {
                        num += p * v / s;
                        den += p * p / s;
                        data_chi2 += v * v / s;
                        ln_norm += (std::f64::consts::TAU * s).ln();
                        psf_pixels += 1;
                    }
                    Px::Masked => flags.masked = true,
                    Px::Off => flags.edge = true,
                }
            }
        }
    }
    // Chi-squared at the best amplitude num / den: sum of v²/s less num² / den.
    let (psf_chi2, psf_ln_l) = if den > 0.0 {
        let chi2 = (data_chi2 - num * num / den).max(0.0);
        (chi2, -0.5 * (chi2 + ln_norm))
    } else {
        (f64::NAN, f64::NAN)
    };
    let psf_flux = if den > 0.0 {
        Flux {
            value: num / den,
            err: (1.0 / den).sqrt(),
        }
    } else {
        Flux {
            value: f64::NAN,
            err: f64::NAN,
        }
    };

    // Apertures: pixels whose centres lie within the radius.
    let aperture_fluxes = APERTURE_RADII
        .iter()
        .map(|&r| {
            let (mut sum, mut var_sum) = (0.0, 0.0);
            let reach = r.ceil() as i64;
            for y in cy.round() as i64 - reach..=cy.round() as i64 + reach {
                for x in cx.round() as i64 - reach..=cx.round() as i64 + reach {
                    let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                    if dx * dx + dy * dy > r * r {
                        continue;
                    }
                    match pixels.at(x, y) {
                        Px::Good(v, s) => {
                            sum += v;
                            var_sum += s;
                        }
                        Px::Masked => flags.masked = true,
                        Px::Off => flags.edge = true,
                    }
                }
            }
            (
                r,
                Flux {
                    value: sum,
                    err: var_sum.sqrt(),
                },
            )
        })
        .collect::<Vec<_>>();

    let shape = moments_of(&pixels, cx, cy, sigma);
    flags.shape_failed = shape.is_none();
    let extendedness = shape.map(|s| {
        // A point source has the PSF's moments, plus a twelfth of a pixel² per axis from
        // integrating over pixels; a source 3 sigma larger is resolved if it is also
        // 40 % larger: a PSF model is good to a few per cent, not to a bright star's
        // errors, and on a coadd a variable star is the mixture of its inputs' PSFs
        // weighted by its flux in each (there one in seven bright stars looked resolved
        // without the floor).
        let psf_trace = if m.is_valid() {
            m.ixx + m.iyy
        } else {
            2.0 * sigma * sigma
        } + 2.0 / 12.0;
        let excess = s.ixx + s.iyy - psf_trace;
        if excess > (3.0 * s.ixx_err.hypot(s.iyy_err)).max(0.4 * psf_trace) {
            1.0
        } else {
            0.0
        }
    });

    let kron = shape
        .filter(|_| extended)
        .and_then(|s| kron_of(&pixels, cx, cy, &s));
    let petrosian = [16.0, 60.0]
        .into_iter()
        .filter(|_| extended)
        .find_map(|max| petrosian_within(&pixels, cx, cy, max));

    // Counts to nJy, the zeropoint's error included.
    let (psf_flux, aperture_fluxes, kron, petrosian, calibrated) = match exposure.photo_calib {
        Some(pc) => {
            let cal = |f: Flux| calibrated(&pc, f);
            (
                cal(psf_flux),
                aperture_fluxes
                    .into_iter()
                    .map(|(r, f)| (r, cal(f)))
                    .collect(),
                kron.map(|(r, f)| (r, cal(f))),
                petrosian.map(|(r, f)| (r, cal(f))),
                true,
            )
        }
        None => (psf_flux, aperture_fluxes, kron, petrosian, false),
    };
    Measurement {
        x: cx,
        y: cy,
        x_err: errs.0,
        y_err: errs.1,
        psf_flux,
        psf_pixels,
        psf_chi2,
        psf_ln_l,
        aperture_fluxes,
        shape,
        extendedness,
        kron,
        petrosian,
        calibrated,
        flags,
    }
}

/// The Petrosian ratio at which the radius is defined (SDSS's choice).
pub const PETROSIAN_RATIO: f64 = 0.2;

/// Petrosian radius and flux (Petrosian 1976, as SDSS measures them): the radius where the
/// mean surface brightness in the annulus 0.8 r..1.25 r falls to 0.2 of the mean within r,
/// and the flux within twice that radius. Circular apertures on the background-subtracted
/// image, summed in 0.25-pixel radial bins; None when the ratio never falls that low
/// within 60 pixels or the light is not positive.
pub fn petrosian(exposure: &Exposure, x: f64, y: f64) -> Option<(f64, Flux)> {
    let pixels = Pixels::of(exposure);
    // Most sources are small: look within 16 pixels first, then out to 60.
    [16.0, 60.0]
        .into_iter()
        .find_map(|max| petrosian_within(&pixels, x, y, max))
}

fn petrosian_within(pixels: &Pixels, x: f64, y: f64, max_radius: f64) -> Option<(f64, Flux)> {
    // Light, variance and pixel counts in 0.25-pixel radial bins out to twice the largest
    // radius, accumulated: means within any radius and in any annulus follow.
    const STEP: f64 = 0.25;
    let reach = 2.0 * max_radius;
    let nbins = (reach / STEP).ceil() as usize + 1;
    let mut bins = vec![(0.0f64, 0.0f64, 0usize); nbins];
    let r_px = reach.ceil() as i64;
    for py in y.round() as i64 - r_px..=y.round() as i64 + r_px {
        let dy = py as f64 - y;
        for px in x.round() as i64 - r_px..=x.round() as i64 + r_px {
            let dx = px as f64 - x;
            let r2 = dx * dx + dy * dy;
            if r2 > reach * reach {
                continue;
            }
            if let Px::Good(v, s) = pixels.at(px, py) {
                let b = &mut bins[(r2.sqrt() / STEP) as usize];
                b.0 += v;
                b.1 += s;
                b.2 += 1;
            }
        }
    }
    let mut cum = Vec::with_capacity(nbins);
    let (mut light, mut var, mut n) = (0.0, 0.0, 0usize);
    for b in &bins {
        light += b.0;
        var += b.1;
        n += b.2;
        cum.push((light, var, n));
    }
    let within = |r: f64| cum[((r / STEP) as usize).min(nbins - 1)];
    let ratio = |r: f64| -> Option<f64> {
        let (inner, _, n_in) = within(r);
        let (a, _, na) = within(0.8 * r);
        let (b, _, nb) = within(1.25 * r);
        let annulus = nb.checked_sub(na).filter(|&n| n > 0)?;
        (inner > 0.0 && n_in > 0).then(|| ((b - a) / annulus as f64) / (inner / n_in as f64))
    };
    // Step out until the ratio crosses 0.2, then interpolate linearly in radius.
    let mut previous: Option<(f64, f64)> = None;
    let mut r = 1.5;
    while r <= max_radius {
        if let Some(eta) = ratio(r) {
            if eta <= PETROSIAN_RATIO {
                let radius = match previous {
                    Some((r0, e0)) if e0 > eta => {
                        r0 + (r - r0) * (e0 - PETROSIAN_RATIO) / (e0 - eta)
                    }
                    _ => r,
                };
                let (flux, variance, _) = within(2.0 * radius);
                return (flux > 0.0).then_some((
                    radius,
                    Flux {
                        value: flux,
                        err: variance.sqrt(),
                    },
                ));
            }
            previous = Some((r, eta));
        }
        r *= 1.1;
    }
    None
}

/// Adaptive moments (Bernstein & Jarvis 2002): second moments measured with an elliptical
/// Gaussian weight matched to the source, iterated until weight and source agree. For a
/// Gaussian source the matched weight halves the moments, so each step doubles them back.
/// Errors are propagated linearly from the pixel variances at the converged weight, times
/// two: the weight follows the moments, and at the matched fixed point that feedback doubles
/// their response to noise (d new/d old = 1/2).
pub fn adaptive_moments(exposure: &Exposure, x: f64, y: f64, sigma: f64) -> Option<Shape> {
    moments_of(&Pixels::of(exposure), x, y, sigma)
}

fn moments_of(pixels: &Pixels, x: f64, y: f64, sigma: f64) -> Option<Shape> {
    let (mut mx, mut my) = (x, y);
    let (mut ixx, mut iyy, mut ixy) = (sigma * sigma, sigma * sigma, 0.0);
    for _ in 0..50 {
        let det = ixx * iyy - ixy * ixy;
        if !(det > 0.0 && ixx > 0.0 && iyy > 0.0) || det > 1e6 {
            return None;
        }
        let (a, b, c) = (iyy / det, -ixy / det, ixx / det);
        let sums = weighted_moments(pixels, mx, my, ixx.max(iyy), (a, b, c));
        if sums.s0 <= 0.0 {
            return None;
        }
        let (nxx, nyy, nxy) = (
            2.0 * sums.sxx / sums.s0,
            2.0 * sums.syy / sums.s0,
            2.0 * sums.sxy / sums.s0,
        );
        // The doubled moments approach the fixed point geometrically with ratio 1/2 (the
        // derivative there, as above), so a step twice as long lands on it to first order:
        // a handful of iterations instead of twenty. Near the start, where that step can
        // overshoot into a non-positive ellipse, the plain step is taken.
        let (oxx, oyy, oxy) = (2.0 * nxx - ixx, 2.0 * nyy - iyy, 2.0 * nxy - ixy);
        let (nxx, nyy, nxy) = if oxx > 0.0 && oyy > 0.0 && oxx * oyy - oxy * oxy > 0.0 {
            (oxx, oyy, oxy)
        } else {
            (nxx, nyy, nxy)
        };
        let change = (nxx - ixx).abs() + (nyy - iyy).abs() + (nxy - ixy).abs();
        ixx = nxx;
        iyy = nyy;
        ixy = nxy;
        mx += 2.0 * sums.sx / sums.s0;
        my += 2.0 * sums.sy / sums.s0;
        if (mx - x).hypot(my - y) > 4.0 * sigma {
            return None;
        }
        if change < 1e-6 * (ixx + iyy) {
            // The errors at the weight of the last step: the fixed point to within the
            // tolerance.
            let det = ixx * iyy - ixy * ixy;
            let weight = (iyy / det, -ixy / det, ixx / det);
            let (ex, ey, exy) =
                moment_errors(pixels, mx, my, ixx.max(iyy), weight, (ixx, iyy, ixy));
            return Some(Shape {
                ixx,
                iyy,
                ixy,
                ixx_err: ex,
                iyy_err: ey,
                ixy_err: exy,
            });
        }
    }
    None
}

/// Gaussian-weighted sums of the light and its first and second moments about (mx, my).
struct MomentSums {
    s0: f64,
    sx: f64,
    sy: f64,
    sxx: f64,
    syy: f64,
    sxy: f64,
}

/// Pixels within 5 sigma of the weight (whose inverse covariance is `(a, b, c)` and
/// largest variance `max_var`). The weight beyond is under 4e-6 of its peak: pixels
/// crossing the edge as the ellipse moves change the sums too little to set the iteration
/// oscillating, which a 4-sigma edge (3e-4) did.
fn weight_window(
    mx: f64,
    my: f64,
    max_var: f64,
    (a, b, c): (f64, f64, f64),
    mut each: impl FnMut(i64, i64, f64, f64, f64),
) {
    let reach = (5.0 * max_var.sqrt()).ceil() as i64 + 1;
    let first = mx.round() as i64 - reach;
    // Along a row the exponent is a quadratic in dx, so each weight is the previous one
    // times a factor that itself changes by exp(-a) a step: two exps where a row enters
    // the ellipse, not one a pixel. (Started outside it, far from the centre of a thin
    // ellipse, the factor could overflow; hence the start at the edge.)
    let step = (-a).exp();
    for py in my.round() as i64 - reach..=my.round() as i64 + reach {
        let dy = py as f64 - my;
        let dx0 = first as f64 - mx;
        let mut q = a * dx0 * dx0 + 2.0 * b * dx0 * dy + c * dy * dy;
        let (mut weight, mut factor) = (0.0, 0.0);
        let mut inside = false;
        for px in first..=mx.round() as i64 + reach {
            let dx = px as f64 - mx;
            let step_q = a * (2.0 * dx + 1.0) + 2.0 * b * dy;
            if q <= 25.0 {
                if !inside {
                    weight = (-0.5 * q).exp();
                    factor = (-0.5 * step_q).exp();
                    inside = true;
                }
                each(px, py, dx, dy, weight);
                weight *= factor;
                factor *= step;
            } else {
                inside = false;
            }
            q += step_q;
        }
    }
}

fn weighted_moments(
    pixels: &Pixels,
    mx: f64,
    my: f64,
    max_var: f64,
    weight: (f64, f64, f64),
) -> MomentSums {
    let mut m = MomentSums {
        s0: 0.0,
        sx: 0.0,
        sy: 0.0,
        sxx: 0.0,
        syy: 0.0,
        sxy: 0.0,
    };
    weight_window(mx, my, max_var, weight, |px, py, dx, dy, wt| {
        if let Px::Good(v, _) = pixels.at(px, py) {
            let wv = wt * v;
            m.s0 += wv;
            m.sx += wv * dx;
            m.sy += wv * dy;
            m.sxx += wv * dx * dx;
            m.syy += wv * dy * dy;
            m.sxy += wv * dx * dy;
        }
    });
    m
}

/// 1-sigma errors of the adaptive moments `(ixx, iyy, ixy)` under `weight`.
fn moment_errors(
    pixels: &Pixels,
    mx: f64,
    my: f64,
    max_var: f64,
    weight: (f64, f64, f64),
    (ixx, iyy, ixy): (f64, f64, f64),
) -> (f64, f64, f64) {
    let (mut s0, mut vxx, mut vyy, mut vxy) = (0.0, 0.0, 0.0, 0.0);
    weight_window(mx, my, max_var, weight, |px, py, dx, dy, wt| {
        if let Px::Good(v, s) = pixels.at(px, py) {
            s0 += wt * v;
            vxx += (wt * (2.0 * dx * dx - ixx)).powi(2) * s;
            vyy += (wt * (2.0 * dy * dy - iyy)).powi(2) * s;
            vxy += (wt * (2.0 * dx * dy - ixy)).powi(2) * s;
        }
    });
    let err = |v: f64| 2.0 * v.sqrt() / s0;
    (err(vxx), err(vyy), err(vxy))
}

/// Kron (1980) photometry in elliptical apertures shaped by the adaptive moments: the
/// first moment of the light's (circularised) radius within 6 moment radii, then the flux
/// within 2.5 times that radius (at least 3.5 moment radii), with its error. Counts; None
/// when nothing is there.
pub fn kron(exposure: &Exposure, x: f64, y: f64, shape: &Shape) -> Option<(f64, Flux)> {
    kron_of(&Pixels::of(exposure), x, y, shape)
}

fn kron_of(view: &Pixels, x: f64, y: f64, shape: &Shape) -> Option<(f64, Flux)> {
    let det = shape.ixx * shape.iyy - shape.ixy * shape.ixy;
    if det <= 0.0 || !det.is_finite() {
        return None;
    }
    // r² in units where the moment ellipse has the area of a circle of radius det^¼.
    let scale = det.sqrt();
    let (a, b, c) = (
        shape.iyy / det * scale,
        -shape.ixy / det * scale,
        shape.ixx / det * scale,
    );
    let sigma = det.sqrt().sqrt();
    let pixels = |limit: f64| {
        let reach = (limit * shape.ixx.max(shape.iyy).sqrt() / sigma).ceil() as i64 + 1;
        let mut out = Vec::new();
        for py in y.round() as i64 - reach..=y.round() as i64 + reach {
            for px in x.round() as i64 - reach..=x.round() as i64 + reach {
                let (dx, dy) = (px as f64 - x, py as f64 - y);
                let r2 = a * dx * dx + 2.0 * b * dx * dy + c * dy * dy;
                if r2 > limit * limit {
                    continue;
                }
                if let Px::Good(v, s) = view.at(px, py) {
                    out.push((r2.sqrt(), v, s));
                }
            }
        }
        out
    };
    let window = pixels(6.0 * sigma);
    let (sum_rv, sum_v) = window
        .iter()
        .fold((0.0, 0.0), |(rv, v), (r, val, _)| (rv + r * val, v + val));
    if sum_v <= 0.0 {
        return None;
    }
    let r1 = sum_rv / sum_v;
    // As in SExtractor, the aperture never shrinks below 3.5 moment radii: a noisy first
    // moment of a faint source would otherwise cut into its light.
    let aperture = pixels((2.5 * r1).max(3.5 * sigma));
    let flux: f64 = aperture.iter().map(|p| p.1).sum();
    let var: f64 = aperture.iter().map(|p| p.2).sum();
    Some((
        r1,
        Flux {
            value: flux,
            err: var.sqrt(),
        },
    ))
}

/// PSF fluxes of several sources fitted together at fixed positions (the point-source
/// deblender): the amplitudes that best explain the pixels of all their PSFs at once,
/// weighted by inverse variance, with errors from the inverse of the normal matrix. Fluxes
/// are in nJy when the exposure is calibrated. None when the fit is singular.
pub fn fit_psf_fluxes(
    exposure: &Exposure,
    psf: &GaussianPsf,
    positions: &[(f64, f64)],
) -> Option<Vec<Flux>> {
    let n = positions.len();
    if n == 0 || n > 64 {
        return None;
    }
    let kernels: Vec<(i64, i64, crate::image::Image<f32>)> = positions
        .iter()
        .map(|&(x, y)| {
            let m = psf.moments_at(x, y);
            let half = (4.0 * m.determinant_radius()).ceil().max(2.0) as usize;
            let k = psf.kernel_at(x, y, half).ok()?;
            Some((
                x.round() as i64 - half as i64,
                y.round() as i64 - half as i64,
                k,
            ))
        })
        .collect::<Option<_>>()?;
    let x0 = kernels.iter().map(|k| k.0).min()?;
    let y0 = kernels.iter().map(|k| k.1).min()?;
    let x1 = kernels.iter().map(|k| k.0 + k.2.width() as i64).max()?;
    let y1 = kernels.iter().map(|k| k.1 + k.2.height() as i64).max()?;
    let mut a = vec![vec![0.0f64; n]; n];
    let mut b = vec![0.0f64; n];
    let mut p = vec![0.0f64; n];
    let pixels = Pixels::of(exposure);
    for y in y0..y1 {
        for x in x0..x1 {
            let Px::Good(v, s) = pixels.at(x, y) else {
                continue;
            };
            for (i, (kx, ky, k)) in kernels.iter().enumerate() {
                p[i] = k
                    .get((x - kx) as usize, (y - ky) as usize)
                    .filter(|_| x >= *kx && y >= *ky)
                    .map_or(0.0, f64::from);
            }
            for i in 0..n {
                if p[i] == 0.0 {
                    continue;
                }
                b[i] += p[i] * v / s;
                for j in 0..n {
                    a[i][j] += p[i] * p[j] / s;
                }
            }
        }
    }
    let inverse = invert(a)?;
    let fluxes = (0..n).map(|i| {
        let value: f64 = (0..n).map(|j| inverse[i][j] * b[j]).sum();
        let err = inverse[i][i].max(0.0).sqrt();
        match exposure.photo_calib {
            Some(pc) => calibrated(&pc, Flux { value, err }),
            None => Flux { value, err },
        }
    });
    Some(fluxes.collect())
}

/// A flux in counts in nJy, the zeropoint's error included.
pub(crate) fn calibrated(calib: &PhotoCalib, counts: Flux) -> Flux {
    Flux {
        value: calib.to_njy(counts.value),
        err: calib.to_njy_err(counts.value, counts.err),
    }
}

/// The inverse of a small symmetric positive-definite matrix (Gauss-Jordan with partial
/// pivoting); None when singular.
pub(crate) fn invert(mut a: Vec<Vec<f64>>) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    // Pivots this small relative to the matrix are rounding noise: the matrix is singular.
    let tiny = 1e-12 * (0..n).map(|i| a[i][i].abs()).fold(0.0, f64::max);
    let mut inv: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() <= tiny || !a[pivot][col].is_finite() {
            return None;
        }
        a.swap(col, pivot);
        inv.swap(col, pivot);
        let d = a[col][col];
        for j in 0..n {
            a[col][j] /= d;
            inv[col][j] /= d;
        }
        for i in 0..n {
            if i != col {
                let f = a[i][col];
                if f != 0.0 {
                    for j in 0..n {
                        a[i][j] -= f * a[col][j];
                        inv[i][j] -= f * inv[col][j];
                    }
                }
            }
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{Image, Mask, PhotoCalib};
    use crate::testkit::{Normal, star_field};

    const SIGMA: f64 = 1.8;
    const NOISE: f64 = 10.0;

    /// Isolated stars at random sub-pixel positions: (x, y, flux).
    fn scene(seed: u64) -> (Exposure, Vec<(f64, f64, f64)>) {
        let (w, h) = (240usize, 240usize);
        let mut rng = Normal(seed);
        let stars: Vec<(f64, f64, f64)> = (0..36)
            .map(|i| {
                let x = 20.0 + (i % 6) as f64 * 40.0 + rng.uniform();
                let y = 20.0 + (i / 6) as f64 * 40.0 + rng.uniform();
                (x, y, 2000.0 + 600.0 * i as f64)
            })
            .collect();
        let e = star_field((w, h), &stars, SIGMA, NOISE, &mut rng);
        (e, stars)
    }

    fn std(v: &[f64]) -> f64 {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
    }

    #[test]
    fn psf_flux_and_centroid_pulls_have_unit_width() {
        let psf = GaussianPsf::constant_fwhm(240, 240, SIGMA * 2.354_820_045_030_949);
        let (mut flux_pulls, mut x_pulls, mut y_pulls) = (Vec::new(), Vec::new(), Vec::new());
        let mut shape_pulls = Vec::new();
        let mut stars_called_point = 0;
        let (mut chi2, mut dof) = (0.0, 0.0);
        for seed in 1..=8 {
            let (e, stars) = scene(seed);
            for &(x, y, f) in &stars {
                let peak = Peak {
                    x: x.round() as usize,
                    y: y.round() as usize,
                    significance: 0.0,
                };
                let m = measure(&e, &psf, &peak);
                assert!(!m.flags.centroid_failed && !m.flags.edge && !m.flags.masked);
                let shape = m.shape.expect("stars have adaptive moments");
                stars_called_point += usize::from(m.extendedness == Some(0.0));
                let s2 = SIGMA * SIGMA + 1.0 / 12.0; // the star integrated over a pixel
                shape_pulls.push((shape.ixx - s2) / shape.ixx_err);
                shape_pulls.push((shape.iyy - s2) / shape.iyy_err);
                shape_pulls.push(shape.ixy / shape.ixy_err);
                flux_pulls.push((m.psf_flux.value - f) / m.psf_flux.err);
                // The PSF is the truth: its chi-squared is the noise's, one a pixel less
                // the three fitted parameters (flux and centroid), and the likelihood
                // is below the noise's own normalisation.
                chi2 += m.psf_chi2;
                dof += m.psf_pixels as f64 - 3.0;
                assert!(m.psf_ln_l < -0.5 * m.psf_chi2, "{}", m.psf_ln_l);
                x_pulls.push((m.x - x) / m.x_err);
                y_pulls.push((m.y - y) / m.y_err);
                // The largest aperture holds nearly all the light.
                let (_, ap) = m.aperture_fluxes[3];
                assert!((ap.value - f).abs() < 5.0 * ap.err, "{} vs {f}", ap.value);
            }
        }
        let mean = flux_pulls.iter().sum::<f64>() / flux_pulls.len() as f64;
        assert!(mean.abs() < 0.2, "PSF flux bias {mean}");
        assert!(
            (0.9..=1.1).contains(&(chi2 / dof)),
            "PSF chi-squared per degree of freedom {}",
            chi2 / dof
        );
        // At 3 sigma, nearly every star is a point source.
        assert!(
            stars_called_point as f64 >= 0.97 * flux_pulls.len() as f64,
            "{stars_called_point} of {} stars point-like",
            flux_pulls.len()
        );
        for (name, pulls) in [
            ("flux", &flux_pulls),
            ("x", &x_pulls),
            ("y", &y_pulls),
            ("shape", &shape_pulls),
        ] {
            let s = std(pulls);
            assert!((0.9..=1.1).contains(&s), "{name} pulls have width {s}");
        }
    }

    #[test]
    fn adaptive_moments_recover_an_elliptical_galaxy() {
        // A bright elliptical Gaussian: Ixx = 9, Iyy = 4, Ixy = 2.
        let (w, h) = (64usize, 64usize);
        let (ixx, iyy, ixy) = (9.0, 4.0, 2.0);
        let det: f64 = ixx * iyy - ixy * ixy;
        let mut data = vec![0.0f32; w * h];
        let mut rng = Normal(5);
        for (py, row) in data.chunks_mut(w).enumerate() {
            for (px, v) in row.iter_mut().enumerate() {
                let (dx, dy) = (px as f64 - 31.3, py as f64 - 32.6);
                let q = (iyy * dx * dx - 2.0 * ixy * dx * dy + ixx * dy * dy) / det;
                *v = (50_000.0 / (2.0 * std::f64::consts::PI * det.sqrt()) * (-0.5 * q).exp()
                    + 3.0 * rng.next()) as f32;
            }
        }
        let e = Exposure::new(
            Image::from_vec(w, h, data).unwrap(),
            Mask::new(w, h),
            Image::filled(w, h, 9.0),
        )
        .unwrap();
        let s = adaptive_moments(&e, 31.0, 33.0, 2.0).unwrap();
        // Kron: for a Gaussian, r1 = sqrt(pi/2) sigma, and the aperture (3.5 sigma, the
        // floor, above 2.5 r1) holds 99.8% of the light.
        let (r1, kf) = kron(&e, 31.3, 32.6, &s).unwrap();
        let sigma = det.sqrt().sqrt();
        assert!(
            (r1 / sigma - (std::f64::consts::PI / 2.0).sqrt()).abs() < 0.05,
            "{r1} {sigma}"
        );
        assert!((kf.value / 50_000.0 - 0.9978).abs() < 0.01, "{kf:?}");
        // Petrosian: a Gaussian's flux within twice its Petrosian radius is nearly all of it.
        let (rp, pf) = petrosian(&e, 31.3, 32.6).unwrap();
        assert!(rp > 1.5 * sigma && rp < 3.0 * sigma, "{rp} {sigma}");
        assert!((pf.value / 50_000.0 - 1.0).abs() < 0.02, "{pf:?}");
        // Larger than a 2-pixel PSF: resolved.
        let psf = GaussianPsf::constant_fwhm(w, h, 2.0 * 2.354_820_045_030_949);
        let m = measure(
            &e,
            &psf,
            &Peak {
                x: 31,
                y: 33,
                significance: 0.0,
            },
        );
        assert_eq!(m.extendedness, Some(1.0));
        for (got, want, err) in [
            (s.ixx, ixx, s.ixx_err),
            (s.iyy, iyy, s.iyy_err),
            (s.ixy, ixy, s.ixy_err),
        ] {
            assert!((got - want).abs() < 5.0 * err + 0.05, "{s:?}");
        }
        // Nothing there: no shape.
        let blank = Exposure::new(
            Image::filled(w, h, 0.0),
            Mask::new(w, h),
            Image::filled(w, h, 9.0),
        )
        .unwrap();
        assert!(adaptive_moments(&blank, 31.0, 33.0, 2.0).is_none());
    }

    #[test]
    fn blended_stars_are_fitted_together() {
        // Two stars 3 px apart: alone, each PSF flux takes the other's light; fitted
        // together, both come out right.
        let (w, h) = (64usize, 64usize);
        let stars = [(30.2, 31.6, 20_000.0), (33.1, 32.4, 8_000.0)];
        let e = star_field((w, h), &stars, SIGMA, NOISE, &mut Normal(17));
        let psf = GaussianPsf::constant_fwhm(w, h, SIGMA * 2.354_820_045_030_949);
        let fits = fit_psf_fluxes(&e, &psf, &[(30.2, 31.6), (33.1, 32.4)]).unwrap();
        for (fit, (_, _, f)) in fits.iter().zip(stars) {
            assert!((fit.value - f).abs() < 4.0 * fit.err, "{fit:?} vs {f}");
        }
        let alone = measure(
            &e,
            &psf,
            &Peak {
                x: 33,
                y: 32,
                significance: 0.0,
            },
        );
        assert!(alone.psf_flux.value > 8_000.0 + 10.0 * alone.psf_flux.err);
        assert!(fit_psf_fluxes(&e, &psf, &[]).is_none());
        // The same position twice cannot be told apart.
        assert!(fit_psf_fluxes(&e, &psf, &[(30.2, 31.6), (30.2, 31.6)]).is_none());
    }

    #[test]
    fn calibration_edges_and_masks_show_in_the_result() {
        let psf = GaussianPsf::constant_fwhm(240, 240, SIGMA * 2.354_820_045_030_949);
        let (mut e, stars) = scene(99);
        e.photo_calib = PhotoCalib::new(31.4 + 2.5, 0.0);
        let (x, y, f) = stars[7];
        let at = |x: f64, y: f64| Peak {
            x: x.round() as usize,
            y: y.round() as usize,
            significance: 0.0,
        };
        let m = measure(&e, &psf, &at(x, y));
        assert!(m.calibrated);
        // Zeropoint 2.5 mag above 31.4: a count is a tenth of a nJy.
        assert!((m.psf_flux.value - f / 10.0).abs() < 5.0 * m.psf_flux.err);
        let (_, mask, _) = e.planes_mut();
        mask.set(x.round() as usize, y.round() as usize, MaskPlane::Sat);
        assert!(measure(&e, &psf, &at(x, y)).flags.masked);
        assert!(measure(&e, &psf, &at(2.0, 100.0)).flags.edge);
    }
}
