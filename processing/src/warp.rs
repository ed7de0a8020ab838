//! Warping: resampling an exposure onto another pixel grid (a sky-map patch) with a
//! Lanczos-3 kernel. The pixel mapping is computed exactly through both WCSs on a coarse
//! grid of nodes and interpolated bilinearly between them, as the mapping is smooth and
//! the exact transform at every pixel would cost more than the resampling. Values keep
//! surface brightness per unit of sky and are scaled by the local ratio of pixel areas, so
//! fluxes summed over the warp equal fluxes on the input; variance is propagated with the
//! squared kernel weights (the covariance it creates is not kept); a pixel takes the mask
//! bits of the input pixels it lies between, and is NO_DATA where the kernel leaves the
//! input.
use crate::image::{Exposure, Image, Mask, MaskPlane};
use crate::skymap::PixelGrid;
use crate::wcs::PixelPosition;

/// The kernel's half-width in pixels (Lanczos-3: six taps an axis).
const TAPS: usize = 6;
const HALF: i64 = 3;
/// Samples of the kernel per pixel in its lookup table.
const TABLE_STEPS: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WarpError {
    #[error("the exposure has no WCS to warp with")]
    NoWcs,
    #[error("the interpolation length must be at least 1 pixel")]
    BadInterpolationLength,
}

/// How to warp.
#[derive(Debug, Clone, PartialEq)]
pub struct WarpConfig {
    /// Spacing in pixels of the nodes where the mapping is computed exactly.
    pub interp_length: usize,
}

impl Default for WarpConfig {
    fn default() -> Self {
        Self { interp_length: 16 }
    }
}

/// An exposure resampled onto part of a grid: its pixel (0, 0) is the grid's (`x0`, `y0`),
/// and its WCS is the grid's shifted there.
#[derive(Debug, Clone)]
pub struct Warp {
    pub x0: usize,
    pub y0: usize,
    pub exposure: Exposure,
}

/// The Lanczos-3 kernel's six weights, normalised to sum to one (so a flat image stays
/// flat), tabulated for fractional offsets in steps of 1/`TABLE_STEPS`: a sample costs a
/// lookup, not six kernel evaluations and a division.
struct Kernel {
    table: Vec<[f32; TAPS]>,
}

impl Kernel {
    fn new() -> Self {
        let table = (0..=TABLE_STEPS)
            .map(|i| {
                let f = i as f64 / TABLE_STEPS as f64;
                let mut w = [0f32; TAPS];
                for (k, wk) in w.iter_mut().enumerate() {
                    *wk = lanczos3(f - (k as f64 - 2.0)) as f32;
                }
                let sum: f32 = w.iter().sum();
                w.map(|x| x / sum)
            })
            .collect();
        Self { table }
    }

    /// The six weights for a sample at fractional offset `f` in [0, 1) past tap 2.
    fn weights(&self, f: f64) -> [f32; TAPS] {
        // f >= 0: adding a half and truncating rounds, without a call to `round`.
        let i = (f * TABLE_STEPS as f64 + 0.5) as usize;
        self.table[i.min(TABLE_STEPS)]
    }
}

/// sinc(t) sinc(t / 3) for |t| < 3, else 0.
pub fn lanczos3(t: f64) -> f64 {
    let t = t.abs();
    if t < 1e-12 {
        1.0
    } else if t >= 3.0 {
        0.0
    } else {
        let pt = std::f64::consts::PI * t;
        3.0 * pt.sin() * (pt / 3.0).sin() / (pt * pt)
    }
}

/// The mapping from grid pixels to input pixels on a lattice of nodes.
struct Mapping {
    step: usize,
    nx: usize,
    /// Input pixel position at each node (NaN where it has none), row-major.
    nodes: Vec<(f64, f64)>,
}

impl Mapping {
    fn at(&self, i: usize, j: usize) -> (f64, f64) {
        self.nodes[j * self.nx + i]
    }

    /// Calls `f(i, sx, sy, area)` for the pixels i < `width` of the warp's row `dy`
    /// (counted from its first node): their input positions, interpolated bilinearly in
    /// the nodes' cells (stepped along the row, as a row crosses a cell on a straight
    /// line), and the ratio of pixel areas (input pixels per grid pixel) there. Inlined
    /// always, so `f` is compiled with the caller's target features (AVX2 and FMA).
    #[inline(always)]
    fn row(&self, dy: usize, width: usize, mut f: impl FnMut(usize, f64, f64, f64)) {
        let (j, fy) = (dy / self.step, (dy % self.step) as f64 / self.step as f64);
        let s = self.step as f64;
        for (cell, start) in (0..width).step_by(self.step).enumerate() {
            let (a, b, c, d) = (
                self.at(cell, j),
                self.at(cell + 1, j),
                self.at(cell, j + 1),
                self.at(cell + 1, j + 1),
            );
            let left = (a.0 + (c.0 - a.0) * fy, a.1 + (c.1 - a.1) * fy);
            let right = (b.0 + (d.0 - b.0) * fy, b.1 + (d.1 - b.1) * fy);
            let per = ((right.0 - left.0) / s, (right.1 - left.1) / s);
            // The Jacobian of the cell (constant over it at this precision).
            let (dxdx, dydx) = (
                ((b.0 - a.0) + (d.0 - c.0)) / (2.0 * s),
                ((b.1 - a.1) + (d.1 - c.1)) / (2.0 * s),
            );
            let (dxdy, dydy) = (
                ((c.0 - a.0) + (d.0 - b.0)) / (2.0 * s),
                ((c.1 - a.1) + (d.1 - b.1)) / (2.0 * s),
            );
            let area = (dxdx * dydy - dxdy * dydx).abs();
            for k in 0..self.step.min(width - start) {
                let t = k as f64;
                f(start + k, left.0 + per.0 * t, left.1 + per.1 * t, area);
            }
        }
    }
}

/// One row of the warp's output (image, variance, mask), every pixel written.
struct OutRow<'a> {
    image: &'a mut [f32],
    variance: &'a mut [f32],
    mask: &'a mut [i32],
}

/// Resamples the warp's row `dy` into `out`, compiled for AVX2 and FMA where the CPU
/// has them (as [`crate::convolve`]'s loops): the 6 x 6 taps are summed as six 8-lane
/// rows, a third of the scalar cost.
fn warp_row(src: &Exposure, mapping: &Mapping, kernel: &Kernel, dy: usize, out: &mut OutRow) {
    #[cfg(target_arch = "x86_64")]
    if crate::convolve::fma_available() {
        // SAFETY: the CPU has AVX2 and FMA, which is all the function is compiled for.
        return unsafe { warp_row_fma(src, mapping, kernel, dy, out) };
    }
    warp_row_body::<false>(src, mapping, kernel, dy, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn warp_row_fma(src: &Exposure, mapping: &Mapping, kernel: &Kernel, dy: usize, out: &mut OutRow) {
    warp_row_body::<true>(src, mapping, kernel, dy, out)
}

#[inline(always)]
fn warp_row_body<const FUSED: bool>(
    src: &Exposure,
    mapping: &Mapping,
    kernel: &Kernel,
    dy: usize,
    out: &mut OutRow,
) {
    use crate::convolve::madd;
    let (image, variance, mask) = (
        src.image().data(),
        src.variance().data(),
        src.mask().bits().data(),
    );
    let width = src.width();
    let (sw, sh) = (width as i64, src.height() as i64);
    let no_data = MaskPlane::NoData.bit();
    mapping.row(dy, out.image.len(), |i, sx, sy, area| {
        // The taps' reach tested on the position itself, so NaN (no mapping) and
        // infinite positions fail before any integer conversion.
        if !(sx >= 2.0 && sy >= 2.0 && sx < (sw - HALF) as f64 && sy < (sh - HALF) as f64) {
            out.image[i] = f32::NAN;
            out.variance[i] = f32::NAN;
            out.mask[i] = no_data;
            return;
        }
        let (ix, iy) = (sx.floor() as i64, sy.floor() as i64);
        let wx = kernel.weights(sx - ix as f64);
        let wy = kernel.weights(sy - iy as f64);
        let wx2 = wx.map(|v| v * v);
        // Each tap row read as eight lanes (the last two unweighted) and summed down the
        // column: image with the weights, variance with their squares.
        let start = ((iy - 2) * sw + ix - 2) as usize;
        let (mut col_i, mut col_v) = ([0f32; 8], [0f32; 8]);
        for (ky, &wyk) in wy.iter().enumerate() {
            let s = start + ky * width;
            let (ri, rv) = (lanes(image, s), lanes(variance, s));
            let wyk2 = wyk * wyk;
            for l in 0..8 {
                col_i[l] = madd::<FUSED>(wyk, ri[l], col_i[l]);
                col_v[l] = madd::<FUSED>(wyk2, rv[l], col_v[l]);
            }
        }
        let dot = |w: &[f32; TAPS], c: &[f32; 8]| {
            madd::<FUSED>(w[0], c[0], w[1] * c[1])
                + madd::<FUSED>(w[2], c[2], w[3] * c[3])
                + madd::<FUSED>(w[4], c[4], w[5] * c[5])
        };
        // The input pixels the position lies between lend it their mask bits.
        let m = (iy * sw + ix) as usize;
        let bits = mask[m] | mask[m + 1] | mask[m + width] | mask[m + width + 1];
        let area = area as f32;
        out.image[i] = dot(&wx, &col_i) * area;
        out.variance[i] = dot(&wx2, &col_v) * area * area;
        out.mask[i] = bits;
    });
}

/// Eight values of `data` from `s` (zeros past its end: the last row's taps stop short
/// of the eighth lane).
#[inline(always)]
fn lanes(data: &[f32], s: usize) -> [f32; 8] {
    match data.get(s..s + 8) {
        Some(l) => l.try_into().expect("eight lanes"),
        None => {
            let mut l = [0f32; 8];
            let tail = &data[s..];
            l[..tail.len()].copy_from_slice(tail);
            l
        }
    }
}

/// Resamples `src` onto the part of `grid` it covers; None when it covers none of it.
pub fn warp(
    src: &Exposure,
    grid: &PixelGrid,
    config: &WarpConfig,
) -> Result<Option<Warp>, WarpError> {
    let src_wcs = src.wcs.as_ref().ok_or(WarpError::NoWcs)?;
    if config.interp_length == 0 {
        return Err(WarpError::BadInterpolationLength);
    }
    let Some((x0, y0, x1, y1)) = covered_box(src, grid) else {
        return Ok(None);
    };
    let step = config.interp_length;
    let (w, h) = (x1 - x0, y1 - y0);
    let (nx, ny) = (w.div_ceil(step) + 1, h.div_ceil(step) + 1);
    let nodes = (0..ny)
        .flat_map(|j| (0..nx).map(move |i| (i, j)))
        .map(|(i, j)| {
            let p = PixelPosition {
                x: (x0 + i * step) as f64,
                y: (y0 + j * step) as f64,
            };
            src_wcs
                .sky_to_pixel(grid.wcs().pixel_to_sky(p))
                .map_or((f64::NAN, f64::NAN), |q| (q.x, q.y))
        })
        .collect();
    let mapping = Mapping { step, nx, nodes };
    let kernel = Kernel::new();
    // Every output pixel is written, so the planes start as untouched zero pages.
    let (mut img, mut var, mut msk) = (vec![0f32; w * h], vec![0f32; w * h], vec![0i32; w * h]);
    let mut rows: Vec<OutRow> = img
        .chunks_mut(w)
        .zip(var.chunks_mut(w))
        .zip(msk.chunks_mut(w))
        .map(|((image, variance), mask)| OutRow {
            image,
            variance,
            mask,
        })
        .collect();
    // One row at a time on every core.
    crate::image::for_rows(&mut rows, 1, |j, row| {
        warp_row(src, &mapping, &kernel, j, &mut row[0]);
    });
    drop(rows);
    let image = Image::from_vec(w, h, img).expect("rows of the warp's width");
    let variance = Image::from_vec(w, h, var).expect("rows of the warp's width");
    let mask = Mask::from_image(Image::from_vec(w, h, msk).expect("rows of the warp's width"));
    let mut exposure = Exposure::new(image, mask, variance).expect("planes of one shape");
    exposure.wcs = Some(grid.wcs().shifted(x0 as f64, y0 as f64));
    exposure.photo_calib = src.photo_calib;
    exposure.metadata = src.metadata.clone();
    Ok(Some(Warp { x0, y0, exposure }))
}

/// The box of grid pixels (x0, y0, x1, y1; ends exclusive) the input's outline reaches.
fn covered_box(src: &Exposure, grid: &PixelGrid) -> Option<(usize, usize, usize, usize)> {
    let wcs = src.wcs.as_ref()?;
    let (w, h) = (src.width() as f64, src.height() as f64);
    let edge = |t: f64| {
        [
            (t * w, -0.5),
            (t * w, h - 0.5),
            (-0.5, t * h),
            (w - 0.5, t * h),
        ]
    };
    let (mut lo_x, mut lo_y, mut hi_x, mut hi_y) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for k in 0..=32 {
        for (x, y) in edge(k as f64 / 32.0) {
            let sky = wcs.pixel_to_sky(PixelPosition { x, y });
            if let Ok(p) = grid.wcs().sky_to_pixel(sky) {
                lo_x = lo_x.min(p.x);
                lo_y = lo_y.min(p.y);
                hi_x = hi_x.max(p.x);
                hi_y = hi_y.max(p.y);
            }
        }
    }
    let clamp = |v: f64, n: usize| v.clamp(0.0, n as f64) as usize;
    let (x0, x1) = (
        clamp(lo_x.floor(), grid.width()),
        clamp(hi_x.ceil() + 1.0, grid.width()),
    );
    let (y0, y1) = (
        clamp(lo_y.floor(), grid.height()),
        clamp(hi_y.ceil() + 1.0, grid.height()),
    );
    (x0 < x1 && y0 < y1).then_some((x0, y0, x1, y1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wcs::{SkyCoord, TanSipWcs};

    /// A smooth image: a wide Gaussian on a slope, as a function of sky position so the
    /// warp can be checked against the truth on the new grid.
    fn scene(p: SkyCoord) -> f64 {
        let (dx, dy) = (
            (p.ra() - 62.0) * 3600.0 * (37f64).to_radians().cos(),
            (p.dec() + 37.0) * 3600.0,
        );
        100.0 + 50.0 * (-(dx * dx + dy * dy) / (2.0 * 20.0 * 20.0)).exp()
    }

    fn exposure_of(wcs: TanSipWcs, n: usize) -> Exposure {
        let mut e = Exposure::blank(n, n);
        {
            let (img, _, var) = e.planes_mut();
            for y in 0..n {
                for x in 0..n {
                    let s = wcs.pixel_to_sky(PixelPosition {
                        x: x as f64,
                        y: y as f64,
                    });
                    img[y * n + x] = scene(s) as f32;
                    var[y * n + x] = 4.0;
                }
            }
        }
        e.wcs = Some(wcs);
        e
    }

    fn wcs(ra: f64, dec: f64, scale: f64, angle: f64, n: usize) -> TanSipWcs {
        let s = scale / 3600.0;
        let (sa, ca) = angle.to_radians().sin_cos();
        TanSipWcs::new(
            PixelPosition {
                x: n as f64 / 2.0,
                y: n as f64 / 2.0,
            },
            SkyCoord::new(ra, dec).unwrap(),
            [[-s * ca, s * sa], [s * sa, s * ca]],
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_rotated_shifted_smooth_image_is_resampled_to_its_values_on_the_new_grid() {
        let src = exposure_of(wcs(62.0, -37.0, 0.2, 17.0, 400), 400);
        let grid = PixelGrid::new(wcs(62.003, -36.998, 0.2, 0.0, 500), 500, 500);
        let warp = warp(&src, &grid, &WarpConfig::default()).unwrap().unwrap();
        let e = &warp.exposure;
        let mut checked = 0;
        for y in (0..e.height()).step_by(7) {
            for x in (0..e.width()).step_by(7) {
                let v = e.image().get(x, y).unwrap();
                if v.is_nan() {
                    assert!(e.mask().any(x, y, &[MaskPlane::NoData]));
                    continue;
                }
                let sky = e.wcs.as_ref().unwrap().pixel_to_sky(PixelPosition {
                    x: x as f64,
                    y: y as f64,
                });
                let truth = scene(sky);
                assert!(
                    (f64::from(v) - truth).abs() < 0.02,
                    "({x}, {y}): {v} vs {truth}"
                );
                // Variance shrinks under interpolation but stays positive and bounded.
                let var = e.variance().get(x, y).unwrap();
                assert!(var > 0.5 && var <= 4.01, "{var}");
                checked += 1;
            }
        }
        assert!(checked > 1500, "{checked}");
    }

    #[test]
    fn flux_is_conserved_when_the_pixels_change_size() {
        let src = exposure_of(wcs(62.0, -37.0, 0.2, 0.0, 300), 300);
        // Pixels of twice the side hold four times the flux each.
        let grid = PixelGrid::new(wcs(62.0, -37.0, 0.4, 0.0, 100), 100, 100);
        let w = warp(&src, &grid, &WarpConfig::default()).unwrap().unwrap();
        let v = w.exposure.image().get(50 - w.x0, 50 - w.y0).unwrap();
        let truth = 4.0 * scene(SkyCoord::new(62.0, -37.0).unwrap());
        assert!(
            (f64::from(v) - truth).abs() / truth < 1e-3,
            "{v} vs {truth}"
        );
    }

    #[test]
    fn an_image_elsewhere_covers_nothing_and_a_missing_wcs_is_an_error() {
        let src = exposure_of(wcs(62.0, -37.0, 0.2, 0.0, 100), 100);
        let far = PixelGrid::new(wcs(100.0, 10.0, 0.2, 0.0, 100), 100, 100);
        assert!(warp(&src, &far, &WarpConfig::default()).unwrap().is_none());
        let bare = Exposure::blank(10, 10);
        assert_eq!(
            warp(&bare, &far, &WarpConfig::default()).unwrap_err(),
            WarpError::NoWcs
        );
    }

    #[test]
    fn the_kernel_is_one_at_zero_and_vanishes_at_the_other_integers() {
        assert_eq!(lanczos3(0.0), 1.0);
        for t in [1.0, 2.0, 3.0, -1.0] {
            assert!(lanczos3(t).abs() < 1e-12);
        }
        let w = Kernel::new().weights(0.0);
        assert!((w[2] - 1.0).abs() < 1e-6 && w.iter().sum::<f32>() - 1.0 < 1e-6);
    }
}
