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
use crate::detection::{DetectionConfig, Footprint, detect};
use crate::image::{Exposure, Image, Mask, MaskPlane};
use crate::psf::{FieldPolynomial, GaussianPsf};

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
        let mut t = Vec::new();
        poly_terms(
            self.background_order(),
            scaled(x, self.width),
            scaled(y, self.height),
            &mut t,
        );
        self.background.iter().zip(&t).map(|(a, b)| a * b).sum()
    }

    fn background_order(&self) -> usize {
        (0..=4)
            .find(|o| n_poly(*o) == self.background.len())
            .unwrap_or(0)
    }
}

/// The row pass of a separable convolution: `f` along each row, centred; NaN where it
/// reaches past the edge. Each tap is added across a whole row at once (single precision:
/// the images are), which the compiler turns into vector instructions.
fn row_pass(src: &[f32], w: usize, f: &[f64]) -> Vec<f32> {
    let half = f.len() / 2;
    let f: Vec<f32> = f.iter().map(|v| *v as f32).collect();
    let mut rows = vec![f32::NAN; src.len()];
    if w > 2 * half {
        let n = w - 2 * half;
        crate::image::for_rows(&mut rows, w, |y, out| {
            let line = &src[y * w..(y + 1) * w];
            let dst = &mut out[half..half + n];
            dst.fill(0.0);
            for (k, f) in f.iter().enumerate() {
                for (d, v) in dst.iter_mut().zip(&line[k..k + n]) {
                    *d += f * v;
                }
            }
        });
    }
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
        o.fill(0.0);
        for (k, f) in f.iter().enumerate() {
            let r = &src[(y + k - half) * w..(y + k - half + 1) * w];
            for (a, v) in o.iter_mut().zip(r) {
                *a += f * v;
            }
        }
    });
    out
}

/// Separable convolution of `src` (w x h) by `fx` along rows then `fy` along columns;
/// pixels whose kernel reaches past the edge, or touches a non-finite pixel, are NaN.
fn convolve_separable(src: &[f32], w: usize, h: usize, fx: &[f64], fy: &[f64]) -> Vec<f32> {
    column_pass(&row_pass(src, w, fx), w, h, fy)
}

/// The reference convolved with the spatially varying kernel: the sum over basis functions
/// of their weight at each pixel (a polynomial in u and v) times the reference convolved
/// with them. A weight's powers of u vary along rows only, so they commute with the column
/// pass: per basis width, one row pass per x-factor, and per y-factor one column pass per
/// power of v, instead of a full separable convolution per basis function.
fn convolve_varying(
    src: &[f32],
    w: usize,
    h: usize,
    fns: &[BasisFn],
    weights: &[Vec<f64>],
    order: usize,
) -> Vec<f32> {
    // (power of u, power of v) of each spatial term, in the weights' order.
    let terms: Vec<(usize, usize)> = (0..=order)
        .flat_map(|d| (0..=d).map(move |b| (d - b, b)))
        .collect();
    let upow: Vec<Vec<f32>> = (0..=order)
        .map(|a| {
            (0..w)
                .map(|x| scaled(x as f64, w).powi(a as i32) as f32)
                .collect()
        })
        .collect();
    let mut matched = vec![0.0f32; w * h];
    let mut start = 0;
    while start < fns.len() {
        let sigma = fns[start].term.sigma;
        let end = (start..fns.len())
            .find(|&k| fns[k].term.sigma != sigma)
            .unwrap_or(fns.len());
        let group = start..end;
        let degree = group
            .clone()
            .map(|k| fns[k].term.i + fns[k].term.j)
            .max()
            .unwrap_or(0);
        // The x-factor of power i is that of the function (i, 0); the y-factor of power j,
        // that of (0, j).
        let factor = |i: usize, j: usize| {
            group
                .clone()
                .find(|&k| fns[k].term.i == i && fns[k].term.j == j)
        };
        let rows: Vec<Vec<f32>> = (0..=degree)
            .map(|i| row_pass(src, w, &fns[factor(i, 0).expect("every x power")].fx))
            .collect();
        for j in 0..=degree {
            let fy = &fns[factor(0, j).expect("every y power")].fy;
            for b in 0..=order {
                let mut acc = vec![0.0f32; w * h];
                let mut any = false;
                for k in group.clone().filter(|&k| fns[k].term.j == j) {
                    let coeffs: Vec<(usize, f32)> = terms
                        .iter()
                        .zip(&weights[k])
                        .filter(|((_, tb), c)| *tb == b && **c != 0.0)
                        .map(|((a, _), c)| (*a, *c as f32))
                        .collect();
                    if coeffs.is_empty() {
                        continue;
                    }
                    any = true;
                    let r = &rows[fns[k].term.i];
                    crate::image::for_rows(&mut acc, w, |y, out| {
                        let row = &r[y * w..(y + 1) * w];
                        for &(a, c) in &coeffs {
                            for ((o, v), p) in out.iter_mut().zip(row).zip(&upow[a]) {
                                *o += c * p * v;
                            }
                        }
                    });
                }
                if !any {
                    continue;
                }
                let col = column_pass(&acc, w, h, fy);
                crate::image::for_rows(&mut matched, w, |y, out| {
                    let vb = scaled(y as f64, h).powi(b as i32) as f32;
                    for (o, c) in out.iter_mut().zip(&col[y * w..(y + 1) * w]) {
                        *o += vb * c;
                    }
                });
            }
        }
        start = end;
    }
    matched
}

/// Full 2-D convolution by a (2 half + 1)² kernel, NaN where it reaches past the edge.
/// Taps below 1e-4 of the largest are left out (the decorrelation filter is a spike with
/// faint wings; their far reaches change nothing a threshold sees).
fn convolve_2d(src: &[f32], w: usize, h: usize, k: &[f64], half: usize) -> Vec<f32> {
    let n = 2 * half + 1;
    let largest = k.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    // The kernel is applied flipped, as a convolution is.
    let taps: Vec<(usize, usize, f32)> = (0..n)
        .flat_map(|r| (0..n).map(move |c| (r, c)))
        .map(|(r, c)| (r, c, k[(n - 1 - r) * n + (n - 1 - c)]))
        .filter(|(_, _, v)| v.abs() > 1e-4 * largest)
        .map(|(r, c, v)| (r, c, v as f32))
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
        for &(r, c, kv) in &taps {
            let line = &src[(y + r - half) * w..(y + r - half + 1) * w];
            for (d, v) in dst.iter_mut().zip(&line[c..c + m]) {
                *d += kv * v;
            }
        }
    });
    out
}

/// One star the kernel is fitted on: the target's pixels and the convolution of the
/// reference by each basis function over the stamp.
struct Stamp {
    x: f64,
    y: f64,
    target: Vec<f64>,
    weight: Vec<f64>,
    pixels: Vec<(f64, f64)>,
    /// Per basis function, its convolution with the reference at each pixel.
    convolved: Vec<Vec<f64>>,
}

/// The bright stars of an image the kernel can be fitted on: footprints at
/// `stamp_threshold`. Found once on a template, they serve every visit subtracted on its
/// pixels (`subtract_with_stars`).
pub fn stamp_stars(image: &Exposure, config: &DiffimConfig) -> Result<Vec<Footprint>, DiffimError> {
    let psf = image.psf.as_ref().ok_or(DiffimError::NoPsf("image"))?;
    let mut probe = image.clone();
    Ok(detect(
        &mut probe,
        psf,
        &DetectionConfig {
            threshold: config.stamp_threshold,
            negative: false,
            min_pixels: 5,
        },
    )
    .unwrap_or_default())
}

fn stamps(
    reference: &Exposure,
    target: &Exposure,
    found: &[Footprint],
    fns: &[BasisFn],
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
    for f in found.iter().filter(|f| f.peaks.len() == 1) {
        if out.len() >= config.max_stamps {
            break;
        }
        let p = f.peaks[0];
        let (cx, cy) = (p.x as i64, p.y as i64);
        let reach = sh + kh;
        if cx < reach || cy < reach || cx + reach >= w as i64 || cy + reach >= h as i64 {
            continue;
        }
        // Isolated: no other footprint's box within the stamp.
        let crowded = found.iter().any(|g| {
            !std::ptr::eq(g, f) && {
                let (x0, y0, x1, y1) = g.bbox;
                (x1 as i64) > cx - reach
                    && (x0 as i64) < cx + reach
                    && (y1 as i64) > cy - reach
                    && (y0 as i64) < cy + reach
            }
        });
        if crowded {
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
        let side = (2 * sh + 1) as usize;
        let mut st = Stamp {
            x: cx as f64,
            y: cy as f64,
            target: Vec::with_capacity(side * side),
            weight: Vec::with_capacity(side * side),
            pixels: Vec::with_capacity(side * side),
            convolved: vec![Vec::with_capacity(side * side); fns.len()],
        };
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
        for y in cy - sh..=cy + sh {
            for x in cx - sh..=cx + sh {
                let i = y as usize * w + x as usize;
                let pi = (y - cy + reach) as usize * rw + (x - cx + reach) as usize;
                st.target.push(timg[i] as f64);
                let var = tvar[i] as f64 + rvar[i] as f64;
                st.weight.push(if var > 0.0 { 1.0 / var } else { 0.0 });
                st.pixels.push((x as f64, y as f64));
                for (k, f) in fns.iter().enumerate() {
                    let first = conv[0][pi] as f64 * fns[0].scale;
                    let v = if k == 0 {
                        first
                    } else {
                        conv[k][pi] as f64 * f.scale - f.minus_first * first
                    };
                    st.convolved[k].push(v);
                }
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
    let mut ata = vec![0.0f64; n * n];
    let mut atb = vec![0.0f64; n];
    let mut spatial = Vec::new();
    let mut bg = Vec::new();
    let mut row = vec![0.0f64; n];
    for (s, _) in stamps.iter().zip(keep).filter(|(_, k)| **k) {
        poly_terms(
            config.spatial_order,
            scaled(s.x, dims.0),
            scaled(s.y, dims.1),
            &mut spatial,
        );
        for p in 0..s.target.len() {
            let wgt = s.weight[p];
            if wgt == 0.0 {
                continue;
            }
            design_row(s, p, &spatial, layout, config, dims, &mut bg, &mut row);
            for a in 0..n {
                let ra = row[a] * wgt;
                if ra == 0.0 {
                    continue;
                }
                atb[a] += ra * s.target[p];
                for b in a..n {
                    ata[a * n + b] += ra * row[b];
                }
            }
        }
    }
    for a in 0..n {
        for b in 0..a {
            ata[a * n + b] = ata[b * n + a];
        }
    }
    crate::galaxy::solve(ata, atb).ok_or(DiffimError::Singular)
}

/// One pixel's row of the design matrix, in the unknowns' order: the stamp's convolutions
/// by the basis functions (all but the first times the spatial terms at the stamp), then the
/// background terms at the pixel.
#[allow(clippy::too_many_arguments)]
fn design_row(
    s: &Stamp,
    p: usize,
    spatial: &[f64],
    layout: &Layout,
    config: &DiffimConfig,
    dims: (usize, usize),
    bg: &mut Vec<f64>,
    row: &mut [f64],
) {
    row[0] = s.convolved[0][p];
    let mut at = 1;
    for k in 1..layout.n_basis {
        for t in spatial {
            row[at] = s.convolved[k][p] * t;
            at += 1;
        }
    }
    let (px, py) = s.pixels[p];
    poly_terms(
        config.background_order,
        scaled(px, dims.0),
        scaled(py, dims.1),
        bg,
    );
    row[at..at + bg.len()].copy_from_slice(bg);
}

/// The reduced chi-square of each stamp under a solution.
fn stamp_chi2(
    stamps: &[Stamp],
    x: &[f64],
    layout: &Layout,
    config: &DiffimConfig,
    dims: (usize, usize),
) -> Vec<f64> {
    let mut spatial = Vec::new();
    let mut bg = Vec::new();
    let mut row = vec![0.0f64; layout.len()];
    stamps
        .iter()
        .map(|s| {
            poly_terms(
                config.spatial_order,
                scaled(s.x, dims.0),
                scaled(s.y, dims.1),
                &mut spatial,
            );
            let mut chi2 = 0.0;
            let mut n = 0usize;
            for p in 0..s.target.len() {
                if s.weight[p] == 0.0 {
                    continue;
                }
                design_row(s, p, &spatial, layout, config, dims, &mut bg, &mut row);
                let model: f64 = row.iter().zip(x).map(|(r, c)| r * c).sum();
                chi2 += (s.target[p] - model).powi(2) * s.weight[p];
                n += 1;
            }
            chi2 / n.max(1) as f64
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
    stars: Option<&[Footprint]>,
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
    let all = stamps(reference, target, &found, &fns, config);
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

    // The convolved reference: each basis function's convolution once, weighted per pixel
    // by its spatial coefficient, so the kernel varies over the image at the cost of a
    // spatially constant one per basis function.
    let rimg = reference.image().data();
    let matched = convolve_varying(
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
    let mut diff: Vec<f32> = target
        .image()
        .data()
        .iter()
        .zip(&matched)
        .enumerate()
        .map(|(i, (t, m))| {
            let bg = kernel.background_at((i % w) as f64, (i / w) as f64);
            let d = *t as f64 - *m as f64 - bg;
            (if direction == Direction::ConvolveTemplate {
                d
            } else {
                -d
            }) as f32
        })
        .collect();
    let mut psf_moments = broad_psf.moments_at(cx, cy);
    let variance: Vec<f32> = if config.decorrelate {
        // The sky's variance: the median, since bright stars' pixels would weigh in a mean.
        let typical = |v: &[f32]| {
            let mut f: Vec<f64> = v
                .iter()
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
