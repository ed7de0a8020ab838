//! Coaddition (DMS-REQ-0278, 0279, 0281): warps of calibrated exposures on one patch grid
//! combined into one deeper image. Each warp is put in nJy through its photometric
//! calibration; residual backgrounds are matched to the best-covered warp by a plane fitted
//! to binned differences (medians of 64-pixel boxes away from detected sources); pixels
//! that are bad, saturated, cosmic rays or without data are left out; what remains is
//! averaged with one weight per warp, the inverse of its typical variance (weights per pixel
//! would favour faint noise over bright sources), rejecting outliers: transients, asteroids
//! and artefacts seen in one visit only. The result carries the number of inputs at every
//! pixel: the depth map of the coadd. Band coadds combine the same way into an all-band
//! coadd (without clipping: colours differ).
use crate::image::{AB_NJY_ZERO_POINT, Exposure, Image, Mask, MaskPlane, PhotoCalib};
use crate::skymap::PixelGrid;
use crate::warp::Warp;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CoaddError {
    #[error("nothing to coadd: no inputs")]
    NoInputs,
    #[error("input {0} has no photometric calibration")]
    Uncalibrated(usize),
    #[error("input {0} does not lie on the patch grid")]
    OffGrid(usize),
    #[error("{0}")]
    Config(String),
}

/// How to combine.
#[derive(Debug, Clone, PartialEq)]
pub struct CoaddConfig {
    /// Reject a value more than this many sigma from the mean of the others.
    pub clip_sigma: f64,
    /// At most this many values rejected per pixel.
    pub clip_iterations: usize,
    /// Fraction of the mean added in quadrature to each value's error when clipping: the
    /// PSF differs between visits, and a star's core must not be clipped for it.
    pub psf_tolerance: f64,
    /// Match each warp's residual background to the reference warp's.
    pub match_backgrounds: bool,
    /// Side in pixels of the boxes the background difference is measured in.
    pub background_bin: usize,
    /// Mask planes whose pixels are left out.
    pub bad_planes: Vec<MaskPlane>,
}

impl Default for CoaddConfig {
    fn default() -> Self {
        Self {
            clip_sigma: 3.0,
            clip_iterations: 2,
            psf_tolerance: 0.1,
            match_backgrounds: true,
            background_bin: 64,
            bad_planes: vec![
                MaskPlane::Bad,
                MaskPlane::Sat,
                MaskPlane::Cr,
                MaskPlane::NoData,
                MaskPlane::Edge,
            ],
        }
    }
}

impl CoaddConfig {
    /// The same combination without clipping or background matching: for combining coadds
    /// of different bands.
    pub fn all_bands() -> Self {
        Self {
            clip_iterations: 0,
            match_backgrounds: false,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<(), CoaddError> {
        let positive = self.clip_sigma > 0.0 && self.psf_tolerance >= 0.0;
        if !positive || self.background_bin < 4 {
            return Err(CoaddError::Config(
                "clip_sigma must be positive, psf_tolerance at least 0 and background_bin at least 4"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// One input: a warp on the patch grid.
#[derive(Debug, Clone)]
pub struct CoaddInput {
    pub warp: Warp,
}

/// A coadd and what went into each pixel.
#[derive(Debug, Clone)]
pub struct Coadd {
    /// In nJy (zeropoint 31.4).
    pub exposure: Exposure,
    /// How many inputs each pixel combines: the depth map.
    pub depth: Image<u16>,
    /// The plane (a + b x + c y, nJy, warp pixels) subtracted from each input.
    pub backgrounds: Vec<[f64; 3]>,
    /// Values rejected as outliers.
    pub rejected: u64,
}

/// Combines warps on `grid` into its coadd.
pub fn coadd(
    grid: &PixelGrid,
    mut inputs: Vec<CoaddInput>,
    config: &CoaddConfig,
) -> Result<Coadd, CoaddError> {
    config.validate()?;
    if inputs.is_empty() {
        return Err(CoaddError::NoInputs);
    }
    for (k, input) in inputs.iter_mut().enumerate() {
        let e = &input.warp.exposure;
        if input.warp.x0 + e.width() > grid.width() || input.warp.y0 + e.height() > grid.height() {
            return Err(CoaddError::OffGrid(k));
        }
        let scale = e.photo_calib.ok_or(CoaddError::Uncalibrated(k))?.scale() as f32;
        let e = &mut input.warp.exposure;
        let (img, _, var) = e.planes_mut();
        img.iter_mut().for_each(|v| *v *= scale);
        var.iter_mut().for_each(|v| *v *= scale * scale);
        e.photo_calib = PhotoCalib::new(AB_NJY_ZERO_POINT, 0.0);
    }
    let bad = config.bad_planes.iter().fold(0, |m, p| m | p.bit());
    let backgrounds = if config.match_backgrounds {
        match_backgrounds(&mut inputs, bad, config.background_bin)
    } else {
        vec![[0.0; 3]; inputs.len()]
    };
    let weights: Vec<f64> = inputs
        .iter()
        .map(|i| {
            let v = median_variance(&i.warp.exposure, bad);
            if v > 0.0 { 1.0 / v } else { 0.0 }
        })
        .collect();
    let (w, h) = (grid.width(), grid.height());
    let mut rows: Vec<Row> = vec![Row::default(); h];
    crate::image::for_rows(&mut rows, 1, |y, row| {
        row[0] = combine_row(y, w, &inputs, &weights, bad, config);
    });
    let mut image = Vec::with_capacity(w * h);
    let mut variance = Vec::with_capacity(w * h);
    let mut mask = Vec::with_capacity(w * h);
    let mut depth = Vec::with_capacity(w * h);
    let mut rejected = 0;
    for r in rows {
        image.extend(r.image);
        variance.extend(r.variance);
        mask.extend(r.mask);
        depth.extend(r.depth);
        rejected += r.rejected;
    }
    let mut exposure = Exposure::new(
        Image::from_vec(w, h, image).expect("rows of the grid's width"),
        Mask::from_image(Image::from_vec(w, h, mask).expect("rows of the grid's width")),
        Image::from_vec(w, h, variance).expect("rows of the grid's width"),
    )
    .expect("planes of one shape");
    exposure.wcs = Some(grid.wcs().clone());
    exposure.photo_calib = PhotoCalib::new(AB_NJY_ZERO_POINT, 0.0);
    Ok(Coadd {
        exposure,
        depth: Image::from_vec(w, h, depth).expect("rows of the grid's width"),
        backgrounds,
        rejected,
    })
}

#[derive(Debug, Clone, Default)]
struct Row {
    image: Vec<f32>,
    variance: Vec<f32>,
    mask: Vec<i32>,
    depth: Vec<u16>,
    rejected: u64,
}

/// One output row: at each pixel the inputs that cover it, good ones only unless none is.
fn combine_row(
    y: usize,
    w: usize,
    inputs: &[CoaddInput],
    weights: &[f64],
    bad: i32,
    config: &CoaddConfig,
) -> Row {
    let mut row = Row {
        image: vec![f32::NAN; w],
        variance: vec![f32::NAN; w],
        mask: vec![MaskPlane::NoData.bit(); w],
        depth: vec![0; w],
        rejected: 0,
    };
    let covering: Vec<(usize, &CoaddInput)> = inputs
        .iter()
        .enumerate()
        .filter(|(_, i)| y >= i.warp.y0 && y < i.warp.y0 + i.warp.exposure.height())
        .collect();
    // (value, variance, weight, mask bits, kept)
    let mut values: Vec<(f64, f64, f64, i32, bool)> = Vec::with_capacity(covering.len());
    for x in 0..w {
        values.clear();
        let mut any_bits = 0;
        for &(k, input) in &covering {
            let e = &input.warp.exposure;
            if x < input.warp.x0 || x >= input.warp.x0 + e.width() {
                continue;
            }
            let (lx, ly) = (x - input.warp.x0, y - input.warp.y0);
            let v = e.image().get(lx, ly).unwrap_or(f32::NAN);
            let var = e.variance().get(lx, ly).unwrap_or(f32::NAN);
            let bits = e.mask().bits().get(lx, ly).unwrap_or(0);
            if !v.is_finite() || !var.is_finite() || bits & MaskPlane::NoData.bit() != 0 {
                continue;
            }
            any_bits |= bits;
            values.push((
                f64::from(v),
                f64::from(var),
                weights[k],
                bits,
                bits & bad == 0,
            ));
        }
        if values.is_empty() {
            continue;
        }
        // Where every input is flagged, use them all rather than leave a hole, and say so.
        let mut out_bits = 0;
        if !values.iter().any(|v| v.4) {
            values.iter_mut().for_each(|v| v.4 = true);
            out_bits |= any_bits & bad;
        }
        for _ in 0..config.clip_iterations {
            let kept: Vec<_> = values.iter().filter(|v| v.4).collect();
            if kept.len() < 3 {
                break;
            }
            // The value farthest from the mean of the others, in their combined sigma.
            let (sw, swv) = kept
                .iter()
                .fold((0.0, 0.0), |(a, b), v| (a + v.2, b + v.2 * v.0));
            let worst = values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.4)
                .map(|(i, v)| {
                    let mean = (swv - v.2 * v.0) / (sw - v.2);
                    let sigma = (v.1 + (config.psf_tolerance * mean).powi(2)).sqrt();
                    (i, ((v.0 - mean) / sigma).abs())
                })
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match worst {
                Some((i, chi)) if chi > config.clip_sigma => {
                    values[i].4 = false;
                    out_bits |= MaskPlane::Rejected.bit();
                    row.rejected += 1;
                }
                _ => break,
            }
        }
        let (mut sw, mut swv, mut sw2var, mut n) = (0.0, 0.0, 0.0, 0u16);
        for v in values.iter().filter(|v| v.4) {
            sw += v.2;
            swv += v.2 * v.0;
            sw2var += v.2 * v.2 * v.1;
            n += 1;
        }
        if sw <= 0.0 {
            continue;
        }
        row.image[x] = (swv / sw) as f32;
        row.variance[x] = (sw2var / (sw * sw)) as f32;
        row.mask[x] = out_bits;
        row.depth[x] = n;
    }
    row
}

/// The median variance of a warp's good pixels.
fn median_variance(e: &Exposure, bad: i32) -> f64 {
    let mut v: Vec<f32> = e
        .variance()
        .data()
        .iter()
        .zip(e.mask().bits().data())
        .filter(|(v, m)| v.is_finite() && **m & bad == 0)
        .map(|(v, _)| *v)
        .step_by(7)
        .collect();
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    f64::from(*v.select_nth_unstable_by(mid, f32::total_cmp).1)
}

/// Fits and subtracts, from every warp but the reference (the one covering most pixels),
/// the plane that best matches its background to the reference's where both have good,
/// source-free pixels. Returns each warp's plane in its own pixel coordinates.
fn match_backgrounds(inputs: &mut [CoaddInput], bad: i32, bin: usize) -> Vec<[f64; 3]> {
    let mut planes = vec![[0.0; 3]; inputs.len()];
    let good = |e: &Exposure, x: usize, y: usize| -> Option<f64> {
        let v = e.image().get(x, y)?;
        let m = e.mask().bits().get(x, y)?;
        (v.is_finite() && m & (bad | MaskPlane::Detected.bit()) == 0).then_some(f64::from(v))
    };
    let Some(reference) = (0..inputs.len()).max_by_key(|&k| {
        let e = &inputs[k].warp.exposure;
        e.image().data().iter().filter(|v| v.is_finite()).count()
    }) else {
        return planes;
    };
    for k in 0..inputs.len() {
        if k == reference {
            continue;
        }
        let (r, c) = (&inputs[reference].warp, &inputs[k].warp);
        // Boxes of the candidate warp; in each, the median difference to the reference.
        let mut samples: Vec<(f64, f64, f64, f64)> = Vec::new();
        let (cw, ch) = (c.exposure.width(), c.exposure.height());
        for by in (0..ch).step_by(bin) {
            for bx in (0..cw).step_by(bin) {
                let mut diffs = Vec::new();
                for y in by..(by + bin).min(ch) {
                    for x in bx..(bx + bin).min(cw) {
                        let (gx, gy) = (x + c.x0, y + c.y0);
                        if gx < r.x0 || gy < r.y0 {
                            continue;
                        }
                        let (Some(a), Some(b)) = (
                            good(&c.exposure, x, y),
                            good(&r.exposure, gx - r.x0, gy - r.y0),
                        ) else {
                            continue;
                        };
                        diffs.push(a - b);
                    }
                }
                if diffs.len() >= bin * bin / 4 {
                    let mid = diffs.len() / 2;
                    let m = *diffs.select_nth_unstable_by(mid, f64::total_cmp).1;
                    let cx = bx as f64 + bin as f64 / 2.0;
                    let cy = by as f64 + bin as f64 / 2.0;
                    samples.push((cx, cy, m, diffs.len() as f64));
                }
            }
        }
        let plane = fit_plane(&samples);
        planes[k] = plane;
        let e = &mut inputs[k].warp.exposure;
        let w = e.width();
        let (img, _, _) = e.planes_mut();
        for (i, v) in img.iter_mut().enumerate() {
            let (x, y) = ((i % w) as f64, (i / w) as f64);
            *v -= (plane[0] + plane[1] * x + plane[2] * y) as f32;
        }
    }
    planes
}

/// Weighted least-squares plane through (x, y, value, weight) samples; a constant when
/// there are too few to tilt it, zero when there are none.
fn fit_plane(samples: &[(f64, f64, f64, f64)]) -> [f64; 3] {
    let sw: f64 = samples.iter().map(|s| s.3).sum();
    if samples.is_empty() || sw <= 0.0 {
        return [0.0; 3];
    }
    let mean = samples.iter().map(|s| s.2 * s.3).sum::<f64>() / sw;
    if samples.len() < 6 {
        return [mean, 0.0, 0.0];
    }
    // Normal equations in centred coordinates.
    let (mx, my) = (
        samples.iter().map(|s| s.0 * s.3).sum::<f64>() / sw,
        samples.iter().map(|s| s.1 * s.3).sum::<f64>() / sw,
    );
    let (mut sxx, mut syy, mut sxy, mut sxv, mut syv) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(x, y, v, w) in samples {
        let (dx, dy, dv) = (x - mx, y - my, v - mean);
        sxx += w * dx * dx;
        syy += w * dy * dy;
        sxy += w * dx * dy;
        sxv += w * dx * dv;
        syv += w * dy * dv;
    }
    let det = sxx * syy - sxy * sxy;
    if det.abs() < 1e-12 * sxx.max(syy).max(1.0).powi(2) {
        return [mean, 0.0, 0.0];
    }
    let b = (sxv * syy - syv * sxy) / det;
    let c = (syv * sxx - sxv * sxy) / det;
    [mean - b * mx - c * my, b, c]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wcs::{PixelPosition, SkyCoord, TanSipWcs};

    fn grid(n: usize) -> PixelGrid {
        let s = 0.2 / 3600.0;
        let wcs = TanSipWcs::new(
            PixelPosition {
                x: n as f64 / 2.0,
                y: n as f64 / 2.0,
            },
            SkyCoord::new(62.0, -37.0).unwrap(),
            [[-s, 0.0], [0.0, s]],
            None,
        )
        .unwrap();
        PixelGrid::new(wcs, n, n)
    }

    /// A warp of `value` counts at zeropoint `zp` with `noise` variance, over part of the grid.
    fn input(
        grid: &PixelGrid,
        x0: usize,
        y0: usize,
        n: usize,
        value: f32,
        var: f32,
        zp: f64,
    ) -> CoaddInput {
        let mut e = Exposure::blank(n, n);
        {
            let (img, _, v) = e.planes_mut();
            img.iter_mut().for_each(|p| *p = value);
            v.iter_mut().for_each(|p| *p = var);
        }
        e.wcs = Some(grid.wcs().shifted(x0 as f64, y0 as f64));
        e.photo_calib = PhotoCalib::new(zp, 0.0);
        CoaddInput {
            warp: Warp {
                x0,
                y0,
                exposure: e,
            },
        }
    }

    #[test]
    fn inputs_at_different_zeropoints_combine_in_njy_with_inverse_variance_weights() {
        let g = grid(100);
        // 10 counts at zp 31.4 is 10 nJy; 1 count at zp 28.9 is also 10 nJy.
        let a = input(&g, 0, 0, 100, 10.0, 1.0, 31.4);
        let b = input(&g, 0, 0, 100, 1.0, 0.01, 28.9);
        let c = coadd(&g, vec![a, b], &CoaddConfig::default()).unwrap();
        let v = c.exposure.image().get(50, 50).unwrap();
        assert!((v - 10.0).abs() < 1e-3, "{v}");
        // Both variances are 1 nJy^2: equal weights, half the variance.
        let var = c.exposure.variance().get(50, 50).unwrap();
        assert!((var - 0.5).abs() < 1e-3, "{var}");
        assert_eq!(c.depth.get(50, 50), Some(2));
    }

    #[test]
    fn a_transient_in_one_visit_is_rejected_and_marked() {
        let g = grid(60);
        let mut inputs: Vec<CoaddInput> = (0..4)
            .map(|_| input(&g, 0, 0, 60, 100.0, 1.0, 31.4))
            .collect();
        let (img, _, _) = inputs[2].warp.exposure.planes_mut();
        img[30 * 60 + 30] = 500.0;
        let c = coadd(&g, inputs, &CoaddConfig::default()).unwrap();
        assert_eq!(c.exposure.image().get(30, 30), Some(100.0));
        assert_eq!(c.depth.get(30, 30), Some(3));
        assert!(c.exposure.mask().any(30, 30, &[MaskPlane::Rejected]));
        assert_eq!(c.rejected, 1);
        assert!(!c.exposure.mask().any(31, 30, &[MaskPlane::Rejected]));
    }

    #[test]
    fn backgrounds_are_matched_and_missing_pixels_are_no_data() {
        let g = grid(300);
        let a = input(&g, 0, 0, 300, 50.0, 1.0, 31.4);
        let mut b = input(&g, 100, 0, 200, 50.0, 1.0, 31.4);
        // A tilted residual background on b.
        let (img, _, _) = b.warp.exposure.planes_mut();
        for (i, v) in img.iter_mut().enumerate() {
            let (x, y) = ((i % 200) as f32, (i / 200) as f32);
            *v += 3.0 + 0.01 * x - 0.02 * y;
        }
        let c = coadd(&g, vec![a, b], &CoaddConfig::default()).unwrap();
        let bg = c.backgrounds[1];
        assert!(
            (bg[0] - 3.0).abs() < 0.05
                && (bg[1] - 0.01).abs() < 1e-3
                && (bg[2] + 0.02).abs() < 1e-3,
            "{bg:?}"
        );
        for (x, y) in [(150, 10), (290, 290), (10, 10)] {
            let v = c.exposure.image().get(x, y).unwrap();
            assert!((v - 50.0).abs() < 0.1, "({x}, {y}): {v}");
        }
        assert_eq!(c.depth.get(10, 10), Some(1));
        assert_eq!(c.depth.get(150, 10), Some(2));
    }

    #[test]
    fn bad_pixels_are_left_out_unless_every_input_is_bad() {
        let g = grid(20);
        let mut a = input(&g, 0, 0, 20, 10.0, 1.0, 31.4);
        let b = input(&g, 0, 0, 20, 20.0, 1.0, 31.4);
        a.warp.exposure.planes_mut().1.set(5, 5, MaskPlane::Sat);
        let c = coadd(&g, vec![a, b], &CoaddConfig::default()).unwrap();
        assert_eq!(c.exposure.image().get(5, 5), Some(20.0));
        assert_eq!(c.exposure.image().get(6, 5), Some(15.0));
        let mut a = input(&g, 0, 0, 20, 10.0, 1.0, 31.4);
        a.warp.exposure.planes_mut().1.set(5, 5, MaskPlane::Sat);
        let c = coadd(&g, vec![a], &CoaddConfig::default()).unwrap();
        assert_eq!(c.exposure.image().get(5, 5), Some(10.0));
        assert!(c.exposure.mask().any(5, 5, &[MaskPlane::Sat]));
        assert!(coadd(&g, vec![], &CoaddConfig::default()).is_err());
    }
}
