//! Image differencing (DMS-REQ-0010, 0032, 0074) by the method of Alard & Lupton (1998): the
//! sharper of a science image and its template (already warped onto the science image's
//! pixels and scaled to its calibration) is convolved with a kernel that matches its PSF to
//! the other's, and subtracted. The kernel is a sum of basis functions (Gaussians of a few
//! widths times polynomials) whose coefficients vary as polynomials over the image; they are
//! fitted on stamps around bright isolated stars, with stamps that do not fit (variables,
//! transients, blends) clipped. The convolution leaves the noise of the difference
//! correlated, so the difference is then decorrelated (Kaiser's afterburner, as in Rubin's
//! `DecorrelateALKernelTask`): filtered so its noise power is flat again and the detection
//! threshold means what it says.
use crate::detection::{DetectionConfig, detect};
use crate::image::{Exposure, Image, Mask, MaskPlane};
use crate::psf::{FieldPolynomial, GaussianPsf};
use crate::wcs::PixelPosition;

/// How to match and subtract.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiffimConfig {
    /// Half-width of the matching kernel, pixels: it is (2 half + 1) pixels square.
    pub kernel_half: usize,
    /// Widths of the basis Gaussians as multiples of the matching width, the sigma of the
    /// Gaussian that would turn the sharper PSF into the broader (at least half a pixel).
    pub basis_sigmas: Vec<f64>,
    /// Degree of the polynomial multiplying each basis Gaussian (one per width).
    pub basis_degrees: Vec<usize>,
    /// Order of the polynomials over the image along which the kernel varies.
    pub spatial_order: usize,
    /// Order of the differential background fitted with the kernel.
    pub background_order: usize,
    /// Stars used to fit the kernel, brightest first.
    pub max_stamps: usize,
    /// Detection significance a star needs to be a stamp.
    pub stamp_threshold: f64,
    /// Stamps whose fit is worse than the median by this many robust sigma are dropped.
    pub clip_sigma: f64,
    /// Whiten the difference's noise after the convolution.
    pub decorrelate: bool,
}

impl Default for DiffimConfig {
    fn default() -> Self {
        Self {
            kernel_half: 10,
            basis_sigmas: vec![0.5, 1.0, 2.0],
            basis_degrees: vec![4, 2, 2],
            spatial_order: 1,
            background_order: 1,
            max_stamps: 150,
            stamp_threshold: 40.0,
            clip_sigma: 3.0,
            decorrelate: true,
        }
    }
}

impl DiffimConfig {
    /// Checks the parameters' ranges.
    pub fn validate(&self) -> Result<(), DiffimError> {
        let bad = |m: &str| Err(DiffimError::Config(m.into()));
        if !(2..=40).contains(&self.kernel_half) {
            return bad("kernel_half must be 2 to 40 pixels");
        }
        if self.basis_sigmas.is_empty() || self.basis_sigmas.len() != self.basis_degrees.len() {
            return bad("basis_sigmas and basis_degrees need one entry each per basis Gaussian");
        }
        if self
            .basis_sigmas
            .iter()
            .any(|s| !(s.is_finite() && *s > 0.0))
        {
            return bad("basis_sigmas must be positive");
        }
        if self.basis_degrees.iter().any(|d| *d > 8) || self.spatial_order > 4 {
            return bad("basis degrees go up to 8 and the spatial order up to 4");
        }
        if self.background_order > 4 {
            return bad("background_order goes up to 4");
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if self.max_stamps < 3 || !positive(self.stamp_threshold) || !positive(self.clip_sigma) {
            return bad("max_stamps must be at least 3; stamp_threshold and clip_sigma positive");
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DiffimError {
    #[error("difference imaging configuration: {0}")]
    Config(String),
    #[error("the science image and the template differ in size: {0}x{1} against {2}x{3}")]
    Shape(usize, usize, usize, usize),
    #[error("the {0} has no PSF")]
    NoPsf(&'static str),
    #[error("only {0} usable stars to fit the matching kernel with (at least {1} needed)")]
    TooFewStamps(usize, usize),
    #[error("the matching kernel's equations are singular")]
    Singular,
}

/// Which image was convolved: the sharper one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    /// The template was sharper: science - K * template.
    ConvolveTemplate,
    /// The science image was sharper: K * science - template.
    ConvolveScience,
}

/// One basis function before normalisation: x^i y^j exp(-(x² + y²) / 2 sigma²).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BasisTerm {
    pub sigma: f64,
    pub i: usize,
    pub j: usize,
}

/// The fitted, spatially varying matching kernel: what is stored with a Difference Exposure.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MatchingKernel {
    pub half: usize,
    pub width: usize,
    pub height: usize,
    pub basis: Vec<BasisTerm>,
    /// Per basis function, the coefficients of its spatial polynomial (the first basis
    /// function, which carries the kernel's sum, has a constant coefficient only).
    pub coefficients: Vec<Vec<f64>>,
    pub spatial_order: usize,
    /// The differential background a + b u + c v + ... (scaled coordinates).
    pub background: Vec<f64>,
}

/// A difference image and how it was made.
#[derive(Debug, Clone)]
pub struct Difference {
    /// Science minus the matched template, in the science image's calibration, with its WCS;
    /// its PSF is the broader input's, widened by the decorrelation.
    pub exposure: Exposure,
    pub kernel: MatchingKernel,
    pub direction: Direction,
    /// Stamps the kernel was fitted on, and how many were clipped.
    pub stamps_used: usize,
    pub stamps_rejected: usize,
    /// Mean reduced chi-square of the kept stamps' residuals.
    pub stamp_chi2: f64,
}

/// Samples of a normalised basis function on the kernel grid, row-major.
struct BasisFn {
    term: BasisTerm,
    /// Multiplies the raw separable Gaussian-polynomial.
    scale: f64,
    /// Times the first basis function subtracted, so that all but the first sum to zero.
    minus_first: f64,
    /// The separable factors along x and along y, unscaled.
    fx: Vec<f64>,
    fy: Vec<f64>,
}

fn basis_functions(half: usize, sigmas: &[f64], degrees: &[usize]) -> Vec<BasisFn> {
    let n = 2 * half + 1;
    let axis = |s: f64, p: usize| -> Vec<f64> {
        (0..n)
            .map(|k| {
                let u = k as f64 - half as f64;
                u.powi(p as i32) * (-0.5 * u * u / (s * s)).exp()
            })
            .collect()
    };
    let mut out: Vec<BasisFn> = Vec::new();
    for (&sigma, &deg) in sigmas.iter().zip(degrees) {
        for d in 0..=deg {
            for j in 0..=d {
                let i = d - j;
                let (fx, fy) = (axis(sigma, i), axis(sigma, j));
                let sum: f64 = fx.iter().sum::<f64>() * fy.iter().sum::<f64>();
                let norm2: f64 =
                    fx.iter().map(|v| v * v).sum::<f64>() * fy.iter().map(|v| v * v).sum::<f64>();
                let (scale, minus_first) = if out.is_empty() {
                    (1.0 / sum, 0.0)
                } else {
                    // Unit norm for the conditioning of the equations; the first function,
                    // which sums to one, takes over this one's sum.
                    let scale = 1.0 / norm2.sqrt();
                    (scale, sum * scale)
                };
                out.push(BasisFn {
                    term: BasisTerm { sigma, i, j },
                    scale,
                    minus_first,
                    fx,
                    fy,
                });
            }
        }
    }
    out
}

/// The terms u^a v^b (a + b <= order) of a polynomial over scaled coordinates.
fn poly_terms(order: usize, u: f64, v: f64, out: &mut Vec<f64>) {
    out.clear();
    for d in 0..=order {
        for b in 0..=d {
            out.push(u.powi((d - b) as i32) * v.powi(b as i32));
        }
    }
}

/// A polynomial with the coefficients of [`poly_terms`]' terms, at (u, v).
fn eval_poly(c: &[f64], order: usize, u: f64, v: f64) -> f64 {
    let mut s = 0.0;
    let mut at = 0;
    for d in 0..=order {
        for b in 0..=d {
            s += c[at] * u.powi((d - b) as i32) * v.powi(b as i32);
            at += 1;
        }
    }
    s
}

fn n_poly(order: usize) -> usize {
    (order + 1) * (order + 2) / 2
}

fn scaled(x: f64, n: usize) -> f64 {
    if n > 1 {
        2.0 * x / (n - 1) as f64 - 1.0
    } else {
        0.0
    }
}

impl MatchingKernel {
    fn basis_fns(&self) -> Vec<BasisFn> {
        // The basis is rebuilt from its terms: widths and degrees in order.
        let mut sigmas: Vec<f64> = Vec::new();
        let mut degrees: Vec<usize> = Vec::new();
        for t in &self.basis {
            if sigmas.last() != Some(&t.sigma) {
                sigmas.push(t.sigma);
                degrees.push(0);
            }
            let d = degrees.last_mut().expect("one per width");
            *d = (*d).max(t.i + t.j);
        }
        basis_functions(self.half, &sigmas, &degrees)
    }

    /// Each raw basis function's weight as a polynomial over the image (the spatial
    /// terms' coefficients), the first one's including what the others' zero sums took
    /// from it.
    fn weight_polynomials(&self, fns: &[BasisFn]) -> Vec<Vec<f64>> {
        let terms = n_poly(self.spatial_order);
        let mut first = vec![0.0; terms];
        first[0] = self.coefficients[0][0] * fns[0].scale;
        let mut out = vec![first];
        for (c, f) in self.coefficients.iter().zip(fns).skip(1) {
            for (s, a) in c.iter().enumerate() {
                out[0][s] -= a * f.minus_first * fns[0].scale;
            }
            out.push(c.iter().map(|a| a * f.scale).collect());
        }
        out
    }

    /// Each raw basis function's weight at pixel (x, y).
    fn weights_at(&self, fns: &[BasisFn], x: f64, y: f64) -> Vec<f64> {
        let (u, v) = (scaled(x, self.width), scaled(y, self.height));
        self.weight_polynomials(fns)
            .iter()
            .map(|p| eval_poly(p, self.spatial_order, u, v))
            .collect()
    }

    /// The kernel at pixel (x, y), (2 half + 1)² row-major.
    pub fn image_at(&self, x: f64, y: f64) -> Image<f32> {
        let fns = self.basis_fns();
        let w = self.weights_at(&fns, x, y);
        let n = 2 * self.half + 1;
        let mut k = vec![0.0f64; n * n];
        for (f, wk) in fns.iter().zip(&w) {
            for (r, fy) in f.fy.iter().enumerate() {
                for (c, fx) in f.fx.iter().enumerate() {
                    k[r * n + c] += wk * fx * fy;
                }
            }
        }
        Image::from_vec(n, n, k.into_iter().map(|v| v as f32).collect()).expect("n x n")
    }

    /// The kernel's sum (the photometric scaling between the images): constant by
    /// construction.
    pub fn sum(&self) -> f64 {
        self.coefficients[0][0]
    }

    /// The differential background at pixel (x, y).
    pub fn background_at(&self, x: f64, y: f64) -> f64 {
        eval_poly(
            &self.background,
            self.background_order(),
            scaled(x, self.width),
            scaled(y, self.height),
        )
    }

    fn background_order(&self) -> usize {
        (0..=4)
            .find(|o| n_poly(*o) == self.background.len())
            .unwrap_or(0)
    }
}

/// The row pass of a separable convolution: `f` along each row, centred, each output
/// pixel then multiplied by `scale` at its column if given; NaN where it reaches past the
/// edge. Each tap is added across a whole row at once (single precision: the images are),
/// which the compiler turns into vector instructions.
fn row_pass_into(dst: &mut [f32], src: &[f32], w: usize, f: &[f64], scale: Option<&[f32]>) {
    let half = f.len() / 2;
    let f: Vec<f32> = f.iter().map(|v| *v as f32).collect();
    crate::image::for_rows(dst, w, |y, out| {
        if w <= 2 * half {
            out.fill(f32::NAN);
            return;
        }
        let n = w - 2 * half;
        let line = &src[y * w..(y + 1) * w];
        out[..half].fill(f32::NAN);
        out[half + n..].fill(f32::NAN);
        let inner = &mut out[half..half + n];
        crate::convolve::correlate_line(inner, line, &f, false);
        if let Some(scale) = scale {
            for (d, s) in inner.iter_mut().zip(&scale[half..half + n]) {
                *d *= s;
            }
        }
    });
}

fn row_pass(src: &[f32], w: usize, f: &[f64]) -> Vec<f32> {
    let mut rows = vec![0.0f32; src.len()];
    row_pass_into(&mut rows, src, w, f, None);
    rows
}

/// The column pass: `f` along each column, centred; NaN where it reaches past the edge.
fn column_pass(src: &[f32], w: usize, h: usize, f: &[f64]) -> Vec<f32> {
    let half = f.len() / 2;
    let f: Vec<f32> = f.iter().map(|v| *v as f32).collect();
    let mut out = vec![f32::NAN; w * h];
    crate::image::for_rows(&mut out, w.max(1), |y, o| {
        if y < half || y + half >= h {
            return;
        }
        let lines: Vec<&[f32]> = (y - half..=y + half)
            .map(|r| &src[r * w..(r + 1) * w])
            .collect();
        crate::convolve::combine_lines(o, &lines, &f, false);
    });
    out
}

/// Separable convolution of `src` (w x h) by `fx` along rows then `fy` along columns;
/// pixels whose kernel reaches past the edge, or touches a non-finite pixel, are NaN.
fn convolve_separable(src: &[f32], w: usize, h: usize, fx: &[f64], fy: &[f64]) -> Vec<f32> {
    column_pass(&row_pass(src, w, fx), w, h, fy)
}

/// The reference convolved with the spatially varying kernel K = sum over the spatial
/// terms u^a v^b of u^a v^b K_ab, where K_ab is the basis functions weighted by their
/// coefficients of that term. Each K_ab is split by its singular value decomposition into
/// separable filters, and those that matter (singular values above 1e-5 of the largest) are
/// applied: a row pass times u^a (which varies along rows only, so commutes with the column
/// pass), then a column pass whose taps carry v^b (constant along a row), added straight
/// into the output. The basis functions' own separable factors would take a row pass per
/// x-factor and a column pass per y-factor and spatial term, about twice as many passes,
/// and a full image per pass.
fn convolve_varying(
    src: &[f32],
    w: usize,
    h: usize,
    fns: &[BasisFn],
    weights: &[Vec<f64>],
    order: usize,
) -> Vec<f32> {
    let half = fns.first().map_or(0, |f| f.fx.len() / 2);
    let n = 2 * half + 1;
    // (power of u, power of v) of each spatial term, in the weights' order.
    let terms: Vec<(usize, usize)> = (0..=order)
        .flat_map(|d| (0..=d).map(move |b| (d - b, b)))
        .collect();
    /// One separable filter of the term u^a v^b: sigma times along_y (outer) along_x.
    struct Filter {
        a: usize,
        b: usize,
        sigma: f64,
        along_x: Vec<f64>,
        along_y: Vec<f64>,
    }
    let mut filters: Vec<Filter> = Vec::new();
    for (t, &(a, b)) in terms.iter().enumerate() {
        // K_ab[row][column], rows along y.
        let mut k = vec![0.0f64; n * n];
        for (f, wk) in fns.iter().zip(weights) {
            let c = wk[t];
            if c == 0.0 {
                continue;
            }
            for (r, fy) in f.fy.iter().enumerate() {
                for (col, fx) in f.fx.iter().enumerate() {
                    k[r * n + col] += c * fy * fx;
                }
            }
        }
        for (sigma, along_y, along_x) in crate::linalg::svd(&k, n, n) {
            filters.push(Filter {
                a,
                b,
                sigma,
                along_x,
                along_y,
            });
        }
    }
    let largest = filters.iter().fold(0.0f64, |m, f| m.max(f.sigma));
    filters.retain(|f| f.sigma > 1e-5 * largest);
    let upow: Vec<Vec<f32>> = (0..=order)
        .map(|a| {
            (0..w)
                .map(|x| scaled(x as f64, w).powi(a as i32) as f32)
                .collect()
        })
        .collect();
    let mut matched = vec![0.0f32; w * h];
    let mut rows = vec![0.0f32; w * h];
    for f in &filters {
        let b = f.b;
        row_pass_into(
            &mut rows,
            src,
            w,
            &f.along_x,
            (f.a > 0).then(|| upow[f.a].as_slice()),
        );
        let fy: Vec<f32> = f.along_y.iter().map(|v| (f.sigma * v) as f32).collect();
        crate::image::for_rows(&mut matched, w, |y, out| {
            if y < half || y + half >= h {
                return;
            }
            let vb = scaled(y as f64, h).powi(b as i32) as f32;
            let taps: Vec<f32> = fy.iter().map(|f| vb * f).collect();
            let lines: Vec<&[f32]> = (y - half..=y + half)
                .map(|r| &rows[r * w..(r + 1) * w])
                .collect();
            crate::convolve::combine_lines(out, &lines, &taps, true);
        });
    }
    for y in (0..half.min(h)).chain(h.saturating_sub(half).max(half)..h) {
        matched[y * w..(y + 1) * w].fill(f32::NAN);
    }
    matched
}

/// Full 2-D convolution by a (2 half + 1)² kernel, NaN where it reaches past the edge:
/// each kernel row correlated with its image row. Rows whose taps are all below 1e-4 of
/// the largest are left out (the decorrelation filter is a spike with faint wings; their
/// far reaches change nothing a threshold sees).
fn convolve_2d(src: &[f32], w: usize, h: usize, k: &[f64], half: usize) -> Vec<f32> {
    let n = 2 * half + 1;
    let largest = k.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    // The kernel is applied flipped, as a convolution is: image row y + r - half meets
    // kernel row n - 1 - r, reversed.
    let rows: Vec<(usize, Vec<f32>)> = (0..n)
        .map(|r| {
            let taps: Vec<f32> = (0..n)
                .map(|c| k[(n - 1 - r) * n + (n - 1 - c)] as f32)
                .collect();
            (r, taps)
        })
        .filter(|(_, t)| t.iter().any(|v| f64::from(v.abs()) > 1e-4 * largest))
        .collect();
    let mut out = vec![f32::NAN; w * h];
    if w <= 2 * half {
        return out;
    }
    let m = w - 2 * half;
    crate::image::for_rows(&mut out, w, |y, o| {
        if y < half || y + half >= h {
            return;
        }
        let dst = &mut o[half..half + m];
        dst.fill(0.0);
        for (r, taps) in &rows {
            let line = &src[(y + r - half) * w..(y + r - half + 1) * w];
            crate::convolve::correlate_line(dst, line, taps, true);
        }
    });
    out
}

/// One star the kernel is fitted on, reduced to its normal equations over the stamp's
/// local columns (the reference convolved by each basis function, then the background
/// terms at each pixel): the spatial terms are constant over a stamp, so the full system's
/// share of it, and its chi-square under any solution, follow from these alone, and the
/// clipping refits never revisit its pixels.
struct Stamp {
    x: f64,
    y: f64,
    /// Sum over the pixels of w c cᵀ, the local columns' products (square, row-major).
    gram: Vec<f64>,
    /// Sum of w c t, with the target's pixels t.
    cross: Vec<f64>,
    /// Sum of w t².
    tt: f64,
    /// Pixels with a weight.
    pixels: usize,
}

/// The bright isolated stars of an image, brightest first: single-peaked footprints at
/// `stamp_threshold` with no other footprint within a stamp's reach. Found once on a
/// template, they serve every visit subtracted against it, taken onto the visit's pixels
/// (`subtract_with_stars`); finding them again on each warped template would cost a
/// detection pass over the CCD per visit.
pub fn stamp_stars(
    image: &Exposure,
    config: &DiffimConfig,
) -> Result<Vec<PixelPosition>, DiffimError> {
    let psf = image.psf.as_ref().ok_or(DiffimError::NoPsf("image"))?;
    let mut probe = image.clone();
    let found = detect(
        &mut probe,
        psf,
        &DetectionConfig {
            threshold: config.stamp_threshold,
            negative: false,
            min_pixels: 5,
        },
    )
    .unwrap_or_default();
    // A stamp and the kernel's reach around it.
    let reach = 2 * config.kernel_half;
    // Footprints by the row their boxes start on, so a star's neighbours are looked up
    // among the few rows around it rather than among all of them.
    let mut by_row: Vec<usize> = (0..found.len()).collect();
    by_row.sort_by_key(|&k| found[k].bbox.1);
    let tallest = found.iter().map(|f| f.bbox.3 - f.bbox.1).max().unwrap_or(0);
    Ok(found
        .iter()
        .enumerate()
        .filter(|(_, f)| f.peaks.len() == 1)
        .filter(|&(k, f)| {
            let (cx, cy) = (f.peaks[0].x, f.peaks[0].y);
            let lo = cy.saturating_sub(reach + tallest);
            let first = by_row.partition_point(|&g| found[g].bbox.1 < lo);
            !by_row[first..]
                .iter()
                .take_while(|&&g| found[g].bbox.1 < cy + reach)
                .any(|&g| {
                    let (x0, y0, x1, y1) = found[g].bbox;
                    g != k
                        && x1 + reach > cx
                        && x0 < cx + reach
                        && y1 + reach > cy
                        && y0 < cy + reach
                })
        })
        .map(|(_, f)| PixelPosition {
            x: f.peaks[0].x as f64,
            y: f.peaks[0].y as f64,
        })
        .collect())
}

fn stamps(
    reference: &Exposure,
    target: &Exposure,
    stars: &[PixelPosition],
    fns: &[BasisFn],
    layout: &Layout,
    config: &DiffimConfig,
) -> Vec<Stamp> {
    let (w, h) = (reference.width(), reference.height());
    let kh = config.kernel_half as i64;
    // The fit covers the star's core and wings, the kernel's reach around it.
    let sh = kh;
    let bad = MaskPlane::Bad.bit()
        | MaskPlane::Sat.bit()
        | MaskPlane::NoData.bit()
        | MaskPlane::Intrp.bit()
        | MaskPlane::Cr.bit()
        | MaskPlane::Edge.bit();
    let mut out = Vec::new();
    for star in stars {
        if out.len() >= config.max_stamps {
            break;
        }
        if !(star.x.is_finite() && star.y.is_finite()) {
            continue;
        }
        let (cx, cy) = (star.x.round() as i64, star.y.round() as i64);
        let reach = sh + kh;
        if cx < reach || cy < reach || cx + reach >= w as i64 || cy + reach >= h as i64 {
            continue;
        }
        let usable = |e: &Exposure, x: i64, y: i64| {
            let i = y as usize * w + x as usize;
            e.mask().bits().data()[i] & bad == 0
                && e.image().data()[i].is_finite()
                && e.variance().data()[i].is_finite()
        };
        let all_good = (cy - reach..=cy + reach).all(|y| {
            (cx - reach..=cx + reach).all(|x| usable(reference, x, y) && usable(target, x, y))
        });
        if !all_good {
            continue;
        }
        let rimg = reference.image().data();
        let (timg, tvar, rvar) = (
            target.image().data(),
            target.variance().data(),
            reference.variance().data(),
        );
        // The reference's pixels the stamp needs, convolved by each basis function.
        let rw = (2 * reach + 1) as usize;
        let patch: Vec<f32> = (cy - reach..=cy + reach)
            .flat_map(|y| (cx - reach..=cx + reach).map(move |x| (x, y)))
            .map(|(x, y)| rimg[y as usize * w + x as usize])
            .collect();
        let conv: Vec<Vec<f32>> = fns
            .iter()
            .map(|f| convolve_separable(&patch, rw, rw, &f.fx, &f.fy))
            .collect();
        let nl = layout.n_local();
        let mut st = Stamp {
            x: cx as f64,
            y: cy as f64,
            gram: vec![0.0; nl * nl],
            cross: vec![0.0; nl],
            tt: 0.0,
            pixels: 0,
        };
        let mut local = vec![0.0f64; nl];
        let mut bg = Vec::new();
        for y in cy - sh..=cy + sh {
            for x in cx - sh..=cx + sh {
                let i = y as usize * w + x as usize;
                let var = tvar[i] as f64 + rvar[i] as f64;
                if var <= 0.0 {
                    continue;
                }
                let wgt = 1.0 / var;
                let pi = (y - cy + reach) as usize * rw + (x - cx + reach) as usize;
                let first = conv[0][pi] as f64 * fns[0].scale;
                local[0] = first;
                for (k, f) in fns.iter().enumerate().skip(1) {
                    local[k] = conv[k][pi] as f64 * f.scale - f.minus_first * first;
                }
                poly_terms(
                    config.background_order,
                    scaled(x as f64, w),
                    scaled(y as f64, h),
                    &mut bg,
                );
                local[fns.len()..].copy_from_slice(&bg);
                let t = timg[i] as f64;
                for (a, la) in local.iter().enumerate() {
                    let wa = wgt * la;
                    st.cross[a] += wa * t;
                    for (g, lb) in st.gram[a * nl + a..(a + 1) * nl]
                        .iter_mut()
                        .zip(&local[a..])
                    {
                        *g += wa * lb;
                    }
                }
                st.tt += wgt * t * t;
                st.pixels += 1;
            }
        }
        for a in 0..nl {
            for b in 0..a {
                st.gram[a * nl + b] = st.gram[b * nl + a];
            }
        }
        out.push(st);
    }
    out
}

/// The unknowns: basis 0 constant; the other basis functions times each spatial term; then
/// the background terms.
struct Layout {
    n_basis: usize,
    n_spatial: usize,
    n_background: usize,
}

impl Layout {
    fn len(&self) -> usize {
        1 + (self.n_basis - 1) * self.n_spatial + self.n_background
    }

    /// A stamp's local columns: its basis convolutions, then the background terms.
    fn n_local(&self) -> usize {
        self.n_basis + self.n_background
    }

    /// Each unknown's local column (a stamp's basis convolution or background term) and the
    /// spatial term it is multiplied by, if any.
    fn columns(&self) -> Vec<(usize, Option<usize>)> {
        let mut out = vec![(0, None)];
        for k in 1..self.n_basis {
            out.extend((0..self.n_spatial).map(|a| (k, Some(a))));
        }
        out.extend((0..self.n_background).map(|m| (self.n_basis + m, None)));
        out
    }

    /// A solution's coefficients of a stamp's local columns, with the stamp's spatial terms.
    fn local(&self, x: &[f64], spatial: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; self.n_local()];
        for ((l, a), c) in self.columns().into_iter().zip(x) {
            y[l] += c * a.map_or(1.0, |a| spatial[a]);
        }
        y
    }
}

/// Fits the kernel on the stamps whose flags are set; returns the solution.
fn fit(
    stamps: &[Stamp],
    keep: &[bool],
    layout: &Layout,
    config: &DiffimConfig,
    dims: (usize, usize),
) -> Result<Vec<f64>, DiffimError> {
    let n = layout.len();
    let nl = layout.n_local();
    let columns = layout.columns();
    let mut ata = vec![0.0f64; n * n];
    let mut atb = vec![0.0f64; n];
    let mut spatial = Vec::new();
    for (s, _) in stamps.iter().zip(keep).filter(|(_, k)| **k) {
        poly_terms(
            config.spatial_order,
            scaled(s.x, dims.0),
            scaled(s.y, dims.1),
            &mut spatial,
        );
        let factor: Vec<f64> = columns
            .iter()
            .map(|(_, a)| a.map_or(1.0, |a| spatial[a]))
            .collect();
        for (p, &(lp, _)) in columns.iter().enumerate() {
            atb[p] += factor[p] * s.cross[lp];
            for (q, &(lq, _)) in columns.iter().enumerate().skip(p) {
                ata[p * n + q] += factor[p] * factor[q] * s.gram[lp * nl + lq];
            }
        }
    }
    for a in 0..n {
        for b in 0..a {
            ata[a * n + b] = ata[b * n + a];
        }
    }
    crate::linalg::solve(ata, atb).ok_or(DiffimError::Singular)
}

/// The reduced chi-square of each stamp under a solution: t'Wt - 2 y'c + y'Gy with the
/// solution's local coefficients y.
fn stamp_chi2(
    stamps: &[Stamp],
    x: &[f64],
    layout: &Layout,
    config: &DiffimConfig,
    dims: (usize, usize),
) -> Vec<f64> {
    let nl = layout.n_local();
    let mut spatial = Vec::new();
    stamps
        .iter()
        .map(|s| {
            poly_terms(
                config.spatial_order,
                scaled(s.x, dims.0),
                scaled(s.y, dims.1),
                &mut spatial,
            );
            let y = layout.local(x, &spatial);
            let mut chi2 = s.tt;
            for a in 0..nl {
                chi2 -= 2.0 * y[a] * s.cross[a];
                for b in 0..nl {
                    chi2 += y[a] * s.gram[a * nl + b] * y[b];
                }
            }
            chi2.max(0.0) / s.pixels.max(1) as f64
        })
        .collect()
}

/// The median, by selection (linear time: it runs over every pixel of a CCD).
fn median(v: &mut [f64]) -> f64 {
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    let (below, upper, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        upper
    } else {
        // The lower middle is the largest of the half below.
        let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        0.5 * (lower + upper)
    }
}

/// Subtracts `template` (warped onto `science`'s pixels, in its calibration) from `science`.
/// Both must be background-subtracted and carry PSFs.
pub fn subtract(
    science: &Exposure,
    template: &Exposure,
    config: &DiffimConfig,
) -> Result<Difference, DiffimError> {
    subtract_with_stars(science, template, config, None)
}

/// As [`subtract`], with the stars to fit the kernel on already found (by [`stamp_stars`],
/// on these pixels); `None` finds them on the image to be convolved.
pub fn subtract_with_stars(
    science: &Exposure,
    template: &Exposure,
    config: &DiffimConfig,
    stars: Option<&[PixelPosition]>,
) -> Result<Difference, DiffimError> {
    config.validate()?;
    let (w, h) = (science.width(), science.height());
    if (template.width(), template.height()) != (w, h) {
        return Err(DiffimError::Shape(
            w,
            h,
            template.width(),
            template.height(),
        ));
    }
    let sci_psf = science
        .psf
        .as_ref()
        .ok_or(DiffimError::NoPsf("science image"))?;
    let tpl_psf = template
        .psf
        .as_ref()
        .ok_or(DiffimError::NoPsf("template"))?;
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let (ms, mt) = (sci_psf.moments_at(cx, cy), tpl_psf.moments_at(cx, cy));
    let (ss, st) = (ms.determinant_radius(), mt.determinant_radius());
    // The sharper image is convolved: matching never deconvolves.
    let (direction, reference, target, broad_psf) = if ss >= st {
        (Direction::ConvolveTemplate, template, science, sci_psf)
    } else {
        (Direction::ConvolveScience, science, template, tpl_psf)
    };
    let matching = (ss * ss - st * st).abs().sqrt().max(0.5);
    let sigmas: Vec<f64> = config.basis_sigmas.iter().map(|f| f * matching).collect();
    let fns = basis_functions(config.kernel_half, &sigmas, &config.basis_degrees);
    let layout = Layout {
        n_basis: fns.len(),
        n_spatial: n_poly(config.spatial_order),
        n_background: n_poly(config.background_order),
    };
    let found = match stars {
        Some(f) => f.to_vec(),
        None => stamp_stars(reference, config)?,
    };
    let all = stamps(reference, target, &found, &fns, &layout, config);
    // A spatial fit needs the stars spread over the image; each stamp gives (2 half + 1)²
    // equations, so a few per spatial term suffice.
    let needed = 3 * layout.n_spatial.max(1);
    if all.len() < needed {
        return Err(DiffimError::TooFewStamps(all.len(), needed));
    }
    let mut keep = vec![true; all.len()];
    let mut x = fit(&all, &keep, &layout, config, (w, h))?;
    for _ in 0..3 {
        let chi2 = stamp_chi2(&all, &x, &layout, config, (w, h));
        let mut kept: Vec<f64> = chi2
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(c, _)| *c)
            .collect();
        let med = median(&mut kept);
        let mut dev: Vec<f64> = kept.iter().map(|c| (c - med).abs()).collect();
        let spread = 1.4826 * median(&mut dev);
        let limit = med + config.clip_sigma * spread.max(0.05 * med);
        let next: Vec<bool> = chi2.iter().map(|c| *c <= limit).collect();
        if next == keep || next.iter().filter(|k| **k).count() < needed {
            break;
        }
        keep = next;
        x = fit(&all, &keep, &layout, config, (w, h))?;
    }
    let chi2 = stamp_chi2(&all, &x, &layout, config, (w, h));
    let used = keep.iter().filter(|k| **k).count();
    let stamp_chi2 = chi2
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(c, _)| c)
        .sum::<f64>()
        / used as f64;

    let mut coefficients = vec![vec![x[0]]];
    let mut at = 1;
    for _ in 1..layout.n_basis {
        coefficients.push(x[at..at + layout.n_spatial].to_vec());
        at += layout.n_spatial;
    }
    let kernel = MatchingKernel {
        half: config.kernel_half,
        width: w,
        height: h,
        basis: fns.iter().map(|f| f.term).collect(),
        coefficients,
        spatial_order: config.spatial_order,
        background: x[at..].to_vec(),
    };

    // The convolved reference, the kernel varying over the image (`convolve_varying`).
    let rimg = reference.image().data();
    let mut diff = convolve_varying(
        rimg,
        w,
        h,
        &fns,
        &kernel.weight_polynomials(&fns),
        config.spatial_order,
    );
    let tvar = target.variance().data();
    let rvar = reference.variance().data();
    let k_centre: Vec<f64> = kernel
        .image_at(cx, cy)
        .data()
        .iter()
        .map(|v| *v as f64)
        .collect();
    let ksum = kernel.sum();
    // Target minus the matched reference and the differential background, in place of
    // the matched reference; the background, a polynomial in u and v, is one in u along a
    // row, evaluated by Horner's rule.
    let sign = if direction == Direction::ConvolveTemplate {
        1.0f32
    } else {
        -1.0
    };
    let order = kernel.background_order();
    let us: Vec<f32> = (0..w).map(|x| scaled(x as f64, w) as f32).collect();
    let timg = target.image().data();
    crate::image::for_rows(&mut diff, w, |y, out| {
        let v = scaled(y as f64, h);
        let mut by_u = vec![0.0f64; order + 1];
        let mut at = 0;
        for d in 0..=order {
            for b in 0..=d {
                by_u[d - b] += kernel.background[at] * v.powi(b as i32);
                at += 1;
            }
        }
        let by_u: Vec<f32> = by_u.iter().map(|c| *c as f32).collect();
        for ((o, t), u) in out.iter_mut().zip(&timg[y * w..(y + 1) * w]).zip(&us) {
            let bg = by_u.iter().rev().fold(0.0f32, |acc, c| acc * u + c);
            *o = sign * (t - *o - bg);
        }
    });
    let mut psf_moments = broad_psf.moments_at(cx, cy);
    let variance: Vec<f32> = if config.decorrelate {
        // The sky's variance: the median, since bright stars' pixels would weigh in a mean;
        // of every 7th pixel (a prime stride, so no pattern of the rows aliases), which
        // pins it far better than the filter needs at a seventh of the selection's work.
        let typical = |v: &[f32]| {
            let mut f: Vec<f64> = v
                .iter()
                .step_by(7)
                .filter(|x| x.is_finite())
                .map(|x| *x as f64)
                .collect();
            median(&mut f)
        };
        let d = decorrelation_kernel(&k_centre, config.kernel_half, typical(tvar), typical(rvar));
        diff = convolve_2d(&diff, w, h, &d, config.kernel_half);
        let (mut sxx, mut syy, mut sxy, mut s) = (0.0, 0.0, 0.0, 0.0);
        let n = 2 * config.kernel_half + 1;
        for (i, v) in d.iter().enumerate() {
            let (u, vv) = (
                (i % n) as f64 - config.kernel_half as f64,
                (i / n) as f64 - config.kernel_half as f64,
            );
            s += v;
            sxx += v * u * u;
            syy += v * vv * vv;
            sxy += v * u * vv;
        }
        if s > 0.0 {
            psf_moments.ixx += (sxx / s).max(0.0);
            psf_moments.iyy += (syy / s).max(0.0);
            psf_moments.ixy += sxy / s;
        }
        // Whitened: the noise of both images at their own resolution.
        tvar.iter()
            .zip(rvar)
            .map(|(t, r)| (*t as f64 + *r as f64 * ksum * ksum) as f32)
            .collect()
    } else {
        let k2: Vec<f64> = k_centre.iter().map(|v| v * v).collect();
        let rconv = convolve_2d(rvar, w, h, &k2, config.kernel_half);
        tvar.iter().zip(&rconv).map(|(t, r)| t + r).collect()
    };
    // The mask: either input's flags, and NO_DATA wherever the kernels reached past an edge
    // or a missing pixel.
    let (sm, tm) = (target.mask().bits().data(), reference.mask().bits().data());
    let detected = MaskPlane::Detected.bit() | MaskPlane::DetectedNegative.bit();
    let bits: Vec<i32> = (0..w * h)
        .map(|i| {
            let b = (sm[i] | tm[i]) & !detected;
            if diff[i].is_finite() && variance[i].is_finite() {
                b
            } else {
                b | MaskPlane::NoData.bit()
            }
        })
        .collect();
    let mask = Mask::from_image(Image::from_vec(w, h, bits).expect("w x h"));
    let mut exposure = Exposure::new(
        Image::from_vec(w, h, diff).expect("w x h"),
        mask,
        Image::from_vec(w, h, variance).expect("w x h"),
    )
    .expect("one shape");
    exposure.wcs = science.wcs.clone();
    exposure.photo_calib = science.photo_calib;
    exposure.metadata = science.metadata.clone();
    exposure.psf = Some(GaussianPsf::new(
        w,
        h,
        FieldPolynomial::constant(psf_moments.ixx),
        FieldPolynomial::constant(psf_moments.iyy),
        FieldPolynomial::constant(psf_moments.ixy),
    ));
    Ok(Difference {
        exposure,
        kernel,
        direction,
        stamps_used: used,
        stamps_rejected: all.len() - used,
        stamp_chi2,
    })
}

/// The filter that whitens a difference's noise: in Fourier space
/// sqrt((s_t² + s_r²) / (s_t² + s_r² |K|²)), where s_t² and s_r² are the target's and the
/// reference's pixel variances and K the matching kernel's transform, brought back to a
/// (2 half + 1)² real kernel (computed on a 4x larger grid so it does not wrap).
fn decorrelation_kernel(k: &[f64], half: usize, var_target: f64, var_reference: f64) -> Vec<f64> {
    let n = 2 * half + 1;
    let big = (4 * n).next_power_of_two();
    let tau = std::f64::consts::TAU;
    // e^{-2 pi i f u / big} for every frequency f and kernel offset u: the transforms are
    // separable, a row pass and a column pass.
    let e: Vec<Vec<(f64, f64)>> = (0..big)
        .map(|f| {
            (0..n)
                .map(|c| {
                    let phase = -tau * f as f64 * (c as f64 - half as f64) / big as f64;
                    (phase.cos(), phase.sin())
                })
                .collect()
        })
        .collect();
    let mul = |a: (f64, f64), b: (f64, f64)| (a.0 * b.0 - a.1 * b.1, a.0 * b.1 + a.1 * b.0);
    // Along rows: s[fx][r] = sum over c of k[r][c] e[fx][c].
    let s: Vec<Vec<(f64, f64)>> = (0..big)
        .map(|fx| {
            (0..n)
                .map(|r| {
                    (0..n).fold((0.0, 0.0), |acc, c| {
                        let v = k[r * n + c];
                        (acc.0 + v * e[fx][c].0, acc.1 + v * e[fx][c].1)
                    })
                })
                .collect()
        })
        .collect();
    let total = var_target + var_reference;
    let mut spectrum = vec![0.0f64; big * big];
    for ky in 0..big {
        for kx in 0..big {
            let (re, im) = (0..n).fold((0.0, 0.0), |acc, r| {
                let p = mul(s[kx][r], e[ky][r]);
                (acc.0 + p.0, acc.1 + p.1)
            });
            let k2 = re * re + im * im;
            spectrum[ky * big + kx] = (total / (var_target + var_reference * k2)).sqrt();
        }
    }
    // Back to real space, again separably (the conjugate phases): t[ky][c] sums over kx,
    // then each tap over ky; the spectrum is real and even, so the result is real.
    let t: Vec<Vec<(f64, f64)>> = (0..big)
        .map(|ky| {
            (0..n)
                .map(|c| {
                    (0..big).fold((0.0, 0.0), |acc, kx| {
                        let v = spectrum[ky * big + kx];
                        (acc.0 + v * e[kx][c].0, acc.1 - v * e[kx][c].1)
                    })
                })
                .collect()
        })
        .collect();
    let mut out = vec![0.0f64; n * n];
    for r in 0..n {
        for c in 0..n {
            let re = (0..big).fold(0.0, |acc, ky| {
                let conj = (e[ky][r].0, -e[ky][r].1);
                acc + mul(t[ky][c], conj).0
            });
            out[r * n + c] = re / (big * big) as f64;
        }
    }
    out
}

#[cfg(test)]
mod tests;
