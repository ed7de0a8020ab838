//! Instrument signature removal (DMS-REQ-0069): a raw exposure of one CCD becomes a
//! calibrated image in electrons with mask and variance planes. Per amplifier, the serial
//! overscan is subtracted row by row (smoothed along the readout) and crosstalk from the
//! other amplifiers removed in readout order; the segments are assembled and scaled by their
//! gains; saturated pixels are masked; then the bias residual, the dark current (scaled by
//! the dark time), the flat field, the illumination correction and the fringe pattern (its
//! amplitude fitted) are removed, and known defects masked. The variance plane comes from
//! the signal and the read noise before flat-fielding. The two snaps of a visit are combined
//! with cosmic rays rejected where they disagree; remaining cosmic rays are found by their
//! sharpness, and defects, saturated pixels and cosmic rays are interpolated over.
use crate::camera::PRESCAN;
use crate::image::{Exposure, HeaderValue, Image, Mask, MaskPlane};
use crate::raw::{ObservationInfo, RawExposure};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IsrError {
    #[error("{step}: the {calibration} calibration is missing")]
    MissingCalibration {
        step: &'static str,
        calibration: &'static str,
    },
    #[error("{step}: the {calibration} calibration is {got}, the CCD needs {expected}")]
    Shape {
        step: &'static str,
        calibration: &'static str,
        got: String,
        expected: String,
    },
    #[error("{step}: {message}")]
    Invalid { step: &'static str, message: String },
}

/// Which steps run, and their parameters (DMS-REQ-0305: configurable without recompiling;
/// the pipeline definition sets them).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IsrConfig {
    pub overscan: bool,
    /// Rows on each side averaged into each row's overscan level.
    pub overscan_smoothing: usize,
    pub crosstalk: bool,
    pub bias: bool,
    pub dark: bool,
    pub flat: bool,
    pub illumination: bool,
    pub fringe: bool,
    pub defects: bool,
    pub saturation: bool,
    /// Significance of a snap difference (or of a sharp peak) that marks a cosmic ray.
    pub cosmic_ray_threshold: f64,
    pub cosmic_rays: bool,
    /// Interpolate over BAD, SAT and CR pixels (marking them INTRP).
    pub interpolate: bool,
}

impl Default for IsrConfig {
    /// Everything on: science exposures.
    fn default() -> Self {
        Self {
            overscan: true,
            overscan_smoothing: 8,
            crosstalk: true,
            bias: true,
            dark: true,
            flat: true,
            illumination: true,
            fringe: true,
            defects: true,
            saturation: true,
            cosmic_ray_threshold: 5.0,
            cosmic_rays: true,
            interpolate: true,
        }
    }
}

impl IsrConfig {
    /// Checks the parameters' ranges.
    pub fn validate(&self) -> Result<(), String> {
        if self.overscan_smoothing > 500 {
            return Err(format!(
                "overscan_smoothing {} is over 500 rows",
                self.overscan_smoothing
            ));
        }
        if !(self.cosmic_ray_threshold.is_finite() && self.cosmic_ray_threshold >= 2.0) {
            return Err(format!(
                "cosmic_ray_threshold {} must be at least 2 (sigma)",
                self.cosmic_ray_threshold
            ));
        }
        Ok(())
    }

    /// Overscan subtraction, assembly, gains and saturation only: where building each
    /// calibration product starts, switching on the products that already exist.
    pub fn overscan_only() -> Self {
        Self {
            crosstalk: false,
            bias: false,
            dark: false,
            flat: false,
            illumination: false,
            fringe: false,
            defects: false,
            cosmic_rays: false,
            interpolate: false,
            ..Self::default()
        }
    }
}

/// An image calibration and, when known, the variance of its pixels: the noise a
/// calibration frame carries goes into every image corrected with it.
#[derive(Debug, Clone, Copy)]
pub struct CalibPlane<'a> {
    pub image: &'a Image<f32>,
    pub variance: Option<&'a Image<f32>>,
}

impl<'a> CalibPlane<'a> {
    /// A calibration whose noise is unknown (or negligible).
    pub fn image_only(image: &'a Image<f32>) -> Self {
        Self {
            image,
            variance: None,
        }
    }
    fn width(&self) -> usize {
        self.image.width()
    }
    fn height(&self) -> usize {
        self.image.height()
    }
    fn data(&self) -> &'a [f32] {
        self.image.data()
    }
    /// The variance at pixel `i`, zero when unknown.
    fn var(&self, i: usize) -> f32 {
        self.variance
            .and_then(|v| v.data().get(i).copied())
            .filter(|v| v.is_finite())
            .unwrap_or(0.0)
    }
}

/// The calibration products ISR uses, each for this CCD (and filter).
#[derive(Debug, Clone, Copy, Default)]
pub struct IsrCalibrations<'a> {
    /// `crosstalk[victim * n + source]` for the n amplifiers.
    pub crosstalk: Option<&'a [f64]>,
    /// Bias residual after overscan, electrons.
    pub bias: Option<CalibPlane<'a>>,
    /// Dark current, electrons per second.
    pub dark: Option<CalibPlane<'a>>,
    /// Flat field, mean 1.
    pub flat: Option<CalibPlane<'a>>,
    /// Illumination correction (sky over dome), mean 1.
    pub illumination: Option<CalibPlane<'a>>,
    /// Fringe pattern, as a fraction of the sky level.
    pub fringe: Option<CalibPlane<'a>>,
    /// Bad pixel map: non-zero bits mark defects.
    pub defects: Option<&'a Image<i32>>,
}

/// Removes the instrument signature from one raw exposure (one snap), leaving cosmic
/// rays and interpolation to [`combine_snaps`] and [`finish`].
pub fn isr_snap(
    raw: &RawExposure,
    calibs: &IsrCalibrations,
    config: &IsrConfig,
) -> Result<Exposure, IsrError> {
    raw.validate().map_err(|e| IsrError::Invalid {
        step: "assembly",
        message: e.to_string(),
    })?;
    let size = raw.info.ccd_size;
    let n = raw.amps.len();
    let (mut signal, ceilings) =
        overscan_subtracted(raw, config.overscan.then_some(config.overscan_smoothing));
    // Saturation, in raw ADU, before anything changes the values.
    let mut mask = Mask::new(size, size);
    if config.saturation {
        for a in &raw.amps {
            let l = &a.layout;
            for ry in 0..l.height {
                for (i, &v) in a.pixels.row(ry)[PRESCAN..PRESCAN + l.width]
                    .iter()
                    .enumerate()
                {
                    if v as f64 >= a.saturation - 1.0
                        && let Some((x, y)) = l.to_ccd(PRESCAN + i, ry)
                    {
                        mask.set(x, y, MaskPlane::Sat);
                    }
                }
            }
        }
    }
    if config.crosstalk {
        let c = calibs.crosstalk.ok_or(IsrError::MissingCalibration {
            step: "crosstalk",
            calibration: "crosstalk matrix",
        })?;
        if c.len() != n * n {
            return Err(IsrError::Shape {
                step: "crosstalk",
                calibration: "crosstalk matrix",
                got: format!("{} coefficients", c.len()),
                expected: format!("{n} x {n}"),
            });
        }
        crosstalk(&mut signal, &ceilings, c);
    }
    // Assemble into electrons, with the variance of the signal and read noise: each
    // readout row lands on one CCD row, reversed where the amplifier reads right to left.
    let mut image = Image::filled(size, size, 0.0f32);
    let mut variance = Image::filled(size, size, 0.0f32);
    for (a, s) in raw.amps.iter().zip(&signal) {
        let l = &a.layout;
        let (gain, rn2) = (a.gain as f32, (a.read_noise * a.read_noise) as f32);
        for (ry, readout) in s.chunks_exact(l.width).enumerate() {
            let (x, y) = l.to_ccd(PRESCAN, ry).expect("a data pixel");
            let x = if l.flip_x { x + 1 - l.width } else { x };
            let at = y * size + x..y * size + x + l.width;
            let (img, var) = (
                &mut image.data_mut()[at.clone()],
                &mut variance.data_mut()[at],
            );
            let put = |(i, v): (&mut f32, &mut f32), &adu: &f32| {
                let e = adu * gain;
                *i = e;
                *v = e.max(0.0) + rn2;
            };
            if l.flip_x {
                img.iter_mut()
                    .zip(var.iter_mut())
                    .rev()
                    .zip(readout)
                    .for_each(|(p, r)| put(p, r));
            } else {
                img.iter_mut()
                    .zip(var.iter_mut())
                    .zip(readout)
                    .for_each(|(p, r)| put(p, r));
            }
        }
    }
    let shape = |step: &'static str, calibration: &'static str, w: usize, h: usize| {
        if (w, h) == (size, size) {
            Ok(())
        } else {
            Err(IsrError::Shape {
                step,
                calibration,
                got: format!("{w} x {h}"),
                expected: format!("{size} x {size}"),
            })
        }
    };
    let pixels = image.data_mut();
    if config.bias {
        let b = calibs.bias.ok_or(IsrError::MissingCalibration {
            step: "bias",
            calibration: "bias",
        })?;
        shape("bias", "bias", b.width(), b.height())?;
        for (i, (p, &v)) in pixels.iter_mut().zip(b.data()).enumerate() {
            *p -= v;
            variance.data_mut()[i] += b.var(i);
        }
    }
    if config.dark {
        let d = calibs.dark.ok_or(IsrError::MissingCalibration {
            step: "dark",
            calibration: "dark",
        })?;
        shape("dark", "dark", d.width(), d.height())?;
        let t = raw.info.dark_time as f32;
        for (i, (p, &v)) in pixels.iter_mut().zip(d.data()).enumerate() {
            *p -= v * t;
            variance.data_mut()[i] += d.var(i) * t * t;
        }
    }
    // Dividing by a noisy calibration adds its relative variance times the signal².
    let mut divide = |step: &'static str, f: &CalibPlane| -> Result<(), IsrError> {
        shape(step, step, f.width(), f.height())?;
        for (i, ((p, var), &v)) in pixels
            .iter_mut()
            .zip(variance.data_mut().iter_mut())
            .zip(f.data())
            .enumerate()
        {
            if v > 0.05 && v.is_finite() {
                *p /= v;
                *var = *var / (v * v) + *p * *p * f.var(i) / (v * v);
            } else {
                *p = 0.0;
            }
        }
        Ok(())
    };
    if config.flat {
        let f = calibs.flat.ok_or(IsrError::MissingCalibration {
            step: "flat",
            calibration: "flat",
        })?;
        divide("flat", &f)?;
    }
    let on_sky = raw.info.telescope.is_some();
    if config.illumination && on_sky {
        let f = calibs.illumination.ok_or(IsrError::MissingCalibration {
            step: "illumination",
            calibration: "illumination correction",
        })?;
        divide("illumination", &f)?;
    }
    // Flat-field bad pixels (response near zero) carry no signal.
    if let Some(f) = calibs.flat.filter(|_| config.flat) {
        for (i, &v) in f.data().iter().enumerate() {
            if !(v > 0.05 && v.is_finite()) {
                mask.set(i % size, i / size, MaskPlane::Bad);
            }
        }
    }
    if config.defects {
        let d = calibs.defects.ok_or(IsrError::MissingCalibration {
            step: "defects",
            calibration: "bad pixel map",
        })?;
        shape("defects", "bad pixel map", d.width(), d.height())?;
        for (i, &bits) in d.data().iter().enumerate() {
            if bits != 0 {
                mask.set(i % size, i / size, MaskPlane::Bad);
            }
        }
    }
    let mut exposure = Exposure::new(image, mask, variance).expect("one shape");
    let fringe_band = raw
        .info
        .band
        .is_some_and(|b| crate::camera::FRINGE_AMPLITUDE[b] >= 0.01);
    if config.fringe && on_sky && fringe_band {
        let f = calibs.fringe.ok_or(IsrError::MissingCalibration {
            step: "fringe",
            calibration: "fringe frame",
        })?;
        shape("fringe", "fringe frame", f.width(), f.height())?;
        let amplitude = fit_fringe(&exposure, f.image);
        let (pixels, _, variance) = exposure.planes_mut();
        let a = amplitude as f32;
        for (i, (p, &v)) in pixels.iter_mut().zip(f.data()).enumerate() {
            *p -= a * v;
            variance[i] += a * a * f.var(i);
        }
        exposure
            .metadata
            .insert("FRNGAMP".into(), HeaderValue::Float(amplitude));
    }
    for (key, value, _) in raw.info.to_cards() {
        exposure.metadata.insert(key.to_string(), value);
    }
    exposure.wcs = raw.info.nominal_wcs();
    Ok(exposure)
}

/// Removes each amplifier's crosstalk from the others (`c[victim * n + source]`, in
/// readout order, which every amplifier shares): a saturated source leaks only what it
/// held when it saturated. Done a few thousand pixels at a time, so the sources' clipped
/// values stay in cache while every victim takes them in one pass.
fn crosstalk(signal: &mut [Vec<f32>], ceilings: &[f32], c: &[f64]) {
    const CHUNK: usize = 4096;
    let n = signal.len();
    let lens: Vec<usize> = signal.iter().map(Vec::len).collect();
    let longest = lens.iter().copied().max().unwrap_or(0);
    let mut clipped = vec![vec![0f32; CHUNK]; n];
    for from in (0..longest).step_by(CHUNK) {
        for ((out, src), &ceiling) in clipped.iter_mut().zip(signal.iter()).zip(ceilings) {
            let part = src.get(from..(from + CHUNK).min(src.len())).unwrap_or(&[]);
            for (o, &v) in out.iter_mut().zip(part) {
                *o = v.min(ceiling);
            }
        }
        for (v, victim) in signal.iter_mut().enumerate() {
            let to = (from + CHUNK).min(victim.len());
            if from >= to {
                continue;
            }
            // Amplifiers of another shape (none on a well-formed CCD) cannot pair up.
            let (lines, weights): (Vec<&[f32]>, Vec<f32>) = (0..n)
                .filter(|&s| s != v && c[v * n + s] != 0.0 && lens[s] == lens[v])
                .map(|s| (&clipped[s][..to - from], -(c[v * n + s] as f32)))
                .unzip();
            crate::convolve::combine_lines(&mut victim[from..to], &lines, &weights, true);
        }
    }
}

/// Every amplifier's data section minus its overscan (when `smooth` is given: rows averaged
/// on each side), in readout order (ADU), and the signal at which each saturates.
pub fn overscan_subtracted(raw: &RawExposure, smooth: Option<usize>) -> (Vec<Vec<f32>>, Vec<f32>) {
    raw.amps
        .iter()
        .map(|a| {
            let l = &a.layout;
            let levels = match smooth {
                Some(smooth) => overscan_levels(a, smooth),
                None => vec![0.0; l.height],
            };
            let mut s = Vec::with_capacity(l.width * l.height);
            for (ry, level) in levels.iter().enumerate() {
                let row = &a.pixels.row(ry)[PRESCAN..PRESCAN + l.width];
                s.extend(row.iter().map(|&v| v as f32 - level));
            }
            let mean = levels.iter().sum::<f32>() / levels.len().max(1) as f32;
            (s, a.saturation as f32 - mean)
        })
        .unzip()
}

/// Each row's overscan level of one amplifier: the clipped mean of its serial overscan
/// (skipping the first columns, which trail charge), averaged over ±`smooth` rows.
fn overscan_levels(a: &crate::raw::RawAmp, smooth: usize) -> Vec<f32> {
    let l = &a.layout;
    let first = PRESCAN + l.width + 2;
    let rows: Vec<f32> = (0..l.height)
        .map(|ry| {
            let mut v: Vec<f32> = a.pixels.row(ry)[first..]
                .iter()
                .map(|&p| p as f32)
                .collect();
            if v.is_empty() {
                return 0.0;
            }
            let med = crate::background::median(&mut v.clone());
            let mut dev: Vec<f32> = v.iter().map(|x| (x - med).abs()).collect();
            let sigma = 1.4826 * crate::background::median(&mut dev).max(0.5);
            v.retain(|x| (x - med).abs() <= 4.0 * sigma);
            v.iter().sum::<f32>() / v.len().max(1) as f32
        })
        .collect();
    (0..rows.len())
        .map(|i| {
            let (lo, hi) = (i.saturating_sub(smooth), (i + smooth + 1).min(rows.len()));
            rows[lo..hi].iter().sum::<f32>() / (hi - lo) as f32
        })
        .collect()
}

/// The fringe amplitude (electrons per unit of the pattern) in `e`: least squares of the
/// image against the pattern with a plane for the sky, over unmasked pixels free of
/// sources (within 3 sigma of the median), on a sparse grid.
fn fit_fringe(e: &Exposure, fringe: &Image<f32>) -> f64 {
    let (w, h) = (e.width(), e.height());
    let mut sample: Vec<f32> = (0..h)
        .step_by(3)
        .flat_map(|y| (0..w).step_by(3).map(move |x| (x, y)))
        .filter_map(|(x, y)| e.image().get(x, y))
        .collect();
    let med = crate::background::median(&mut sample) as f64;
    let sigma = (med.max(1.0)).sqrt() * 1.5;
    // Normal equations of [1, x, y, fringe].
    let mut a = [0.0f64; 16];
    let mut b = [0.0f64; 4];
    let bad = MaskPlane::Bad.bit() | MaskPlane::Sat.bit();
    for y in (0..h).step_by(2) {
        for x in (0..w).step_by(2) {
            let v = e.image().get(x, y).unwrap_or(f32::NAN) as f64;
            if !v.is_finite() || (v - med).abs() > 3.0 * sigma + 0.1 * med {
                continue;
            }
            if e.mask().bits().get(x, y).unwrap_or(0) & bad != 0 {
                continue;
            }
            let row = [
                1.0,
                x as f64 / w as f64 - 0.5,
                y as f64 / h as f64 - 0.5,
                fringe.get(x, y).unwrap_or(0.0) as f64,
            ];
            for i in 0..4 {
                b[i] += row[i] * v;
                for j in 0..4 {
                    a[i * 4 + j] += row[i] * row[j];
                }
            }
        }
    }
    crate::linalg::solve(a.to_vec(), b.to_vec()).map_or(0.0, |s| s[3])
}

/// Combines the two snaps of a visit (DMS-REQ-0069): where they differ by more than
/// `threshold` sigma the higher one holds a cosmic ray, so twice the lower is used and the
/// pixel is marked CR; elsewhere the sum. Times and exposure time span both snaps.
pub fn combine_snaps(
    first: &Exposure,
    second: &Exposure,
    threshold: f64,
) -> Result<Exposure, IsrError> {
    if (first.width(), first.height()) != (second.width(), second.height()) {
        return Err(IsrError::Invalid {
            step: "snap combination",
            message: "the snaps have different shapes".into(),
        });
    }
    let mut out = first.clone();
    let (w, _) = (first.width(), first.height());
    let (pixels, mask, variance) = out.planes_mut();
    let (b, bm, bv) = (
        second.image().data(),
        second.mask().bits().data(),
        second.variance().data(),
    );
    let t = threshold as f32;
    for i in 0..pixels.len() {
        let (a, av) = (pixels[i], variance[i]);
        let diff = a - b[i];
        let sigma = (av + bv[i]).max(1e-6).sqrt();
        if diff.abs() > t * sigma + 0.05 * a.abs().min(b[i].abs()) {
            pixels[i] = 2.0 * a.min(b[i]);
            variance[i] = 4.0 * if a < b[i] { av } else { bv[i] };
            mask.set(i % w, i / w, MaskPlane::Cr);
        } else {
            pixels[i] = a + b[i];
            variance[i] = av + bv[i];
        }
    }
    for (i, &bits) in bm.iter().enumerate() {
        if bits != 0 {
            let x = mask.bits().get(i % w, i / w).unwrap_or(0) | bits;
            for p in MaskPlane::ALL {
                if x & p.bit() != 0 {
                    mask.set(i % w, i / w, p);
                }
            }
        }
    }
    if let (Ok(a), Ok(b)) = (
        ObservationInfo::from_cards(&first.metadata),
        ObservationInfo::from_cards(&second.metadata),
    ) {
        let m = &mut out.metadata;
        m.insert(
            "EXPTIME".into(),
            HeaderValue::Float(a.exposure_time + b.exposure_time),
        );
        m.insert(
            "DARKTIME".into(),
            HeaderValue::Float(a.dark_time + b.dark_time),
        );
        m.insert("MJD-END".into(), HeaderValue::Float(b.tai_end));
        m.insert(
            "DATE-END".into(),
            HeaderValue::Text(crate::raw::mjd_to_iso(b.tai_end)),
        );
    }
    out.metadata.insert("NSNAPS".into(), HeaderValue::Int(2));
    out.metadata.remove("SNAP");
    Ok(out)
}

/// Finds cosmic rays left on `e` (hits in both snaps, or single exposures): pixels more
/// than `threshold` sigma above the local background whose excess is much larger than
/// their neighbours' (sharper than any PSF of `psf_sigma` pixels), grown to the adjacent
/// significant pixels. Returns the pixels (row-major indices) newly marked CR.
pub fn find_cosmic_rays(e: &mut Exposure, psf_sigma: f64, threshold: f64) -> Vec<usize> {
    let (w, h) = (e.width(), e.height());
    // A star's peak exceeds its 4-neighbour mean by exp(1 / (2 sigma²)) at most; demand
    // well over that, and at least 1.6.
    let sharpness = ((1.0 / (2.0 * psf_sigma * psf_sigma)).exp() * 1.25).max(1.6) as f32;
    let (img, mask, var) = e.planes_mut();
    let (img, var): (&[f32], &[f32]) = (img, var);
    let t = threshold as f32;
    let at = |x: usize, y: usize| img[y * w + x];
    // Core pixels with the background around them. Every pixel of the CCD is looked at,
    // so the test is plain arithmetic on the planes: the ring's median of four is the mean
    // of its middle two (sum less the extremes), and the significance is compared squared.
    let mut hits: Vec<(usize, usize, f32)> = Vec::new();
    for y in 1..h.saturating_sub(1) {
        let (up, down) = (y.saturating_sub(3), (y + 3).min(h - 1));
        for x in 1..w.saturating_sub(1) {
            let p = at(x, y);
            // Background from the ring at distance 3.
            let ring = [
                at(x.saturating_sub(3), y),
                at((x + 3).min(w - 1), y),
                at(x, up),
                at(x, down),
            ];
            let (lo, hi) = ring
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, u), v| {
                    (l.min(*v), u.max(*v))
                });
            let bkg = (ring.iter().sum::<f32>() - lo - hi) / 2.0;
            let excess = p - bkg;
            let v = var[y * w + x].max(1e-6);
            if !(excess >= 0.0 && excess * excess >= t * t * v) {
                continue;
            }
            let sigma = v.sqrt();
            let neighbours =
                (at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1)) / 4.0 - bkg;
            if excess > sharpness * neighbours.max(0.0) + t * sigma * 0.5 {
                hits.push((x, y, bkg));
            }
        }
    }
    let mut marked = Vec::new();
    let sat = MaskPlane::Sat.bit();
    for &(x, y, bkg) in &hits {
        for (dx, dy) in [(0i64, 0i64), (-1, 0), (1, 0), (0, -1), (0, 1)] {
            let (xx, yy) = (x as i64 + dx, y as i64 + dy);
            if xx < 0 || yy < 0 || xx >= w as i64 || yy >= h as i64 {
                continue;
            }
            let (xx, yy) = (xx as usize, yy as usize);
            let significant = (dx, dy) == (0, 0)
                || at(xx, yy) - bkg > 0.6 * t * var[yy * w + xx].max(1e-6).sqrt();
            if significant && mask.bits().get(xx, yy).unwrap_or(0) & sat == 0 {
                if !mask.any(xx, yy, &[MaskPlane::Cr]) {
                    marked.push(yy * w + xx);
                }
                mask.set(xx, yy, MaskPlane::Cr);
            }
        }
    }
    marked
}

/// Replaces pixels in the BAD and SAT planes, and the cosmic-ray pixels `also` (those no
/// other snap could repair), by linear interpolation along their row between the nearest
/// good pixels (defects and bleed trails run along columns), marking them INTRP and giving
/// them a large variance. Cosmic rays repaired from the other snap are data, not holes.
pub fn interpolate_masked(e: &mut Exposure, also: &[usize]) {
    let w = e.width();
    let bad = MaskPlane::Bad.bit() | MaskPlane::Sat.bit();
    // A private bit marks the extra pixels while rows are scanned.
    let extra = 1 << 31;
    let (pixels, mask, variance) = e.planes_mut();
    let mut bits = mask.bits().data().to_vec();
    for &i in also {
        if let Some(b) = bits.get_mut(i) {
            *b |= extra;
        }
    }
    let bad = bad | extra;
    let mut interpolated = Vec::new();
    for (y, row) in pixels.chunks_mut(w).enumerate() {
        let brow = &bits[y * w..(y + 1) * w];
        let mut x = 0;
        while x < w {
            if brow[x] & bad == 0 {
                x += 1;
                continue;
            }
            let start = x;
            while x < w && brow[x] & bad != 0 {
                x += 1;
            }
            let left = start.checked_sub(1).map(|i| row[i]);
            let right = (x < w).then(|| row[x]);
            for (j, pixel) in row[start..x].iter_mut().enumerate() {
                *pixel = match (left, right) {
                    (Some(l), Some(r)) => {
                        let f = (j + 1) as f32 / (x - start + 1) as f32;
                        l + f * (r - l)
                    }
                    (Some(v), None) | (None, Some(v)) => v,
                    (None, None) => 0.0,
                };
                interpolated.push(y * w + start + j);
            }
        }
    }
    for i in interpolated {
        mask.set(i % w, i / w, MaskPlane::Intrp);
        variance[i] = variance[i].max(1.0) * 1e4;
    }
}

/// A visit's processed image from its raw snaps (one or two) of one CCD: ISR of each,
/// snaps combined, remaining cosmic rays found, and masked pixels interpolated.
pub fn process_visit(
    snaps: &[RawExposure],
    calibs: &IsrCalibrations,
    config: &IsrConfig,
) -> Result<Exposure, IsrError> {
    let mut images = snaps
        .iter()
        .map(|r| isr_snap(r, calibs, config))
        .collect::<Result<Vec<_>, _>>()?;
    let mut e = match images.len() {
        1 => images.pop().expect("one"),
        2 => combine_snaps(&images[0], &images[1], config.cosmic_ray_threshold)?,
        n => {
            return Err(IsrError::Invalid {
                step: "snap combination",
                message: format!("{n} snaps; a visit has one or two"),
            });
        }
    };
    let mut unrepaired = Vec::new();
    if config.cosmic_rays {
        // Seeing from the site monitor sets how sharp a star can be.
        let seeing = match e.metadata.get("SEEING") {
            Some(HeaderValue::Float(s)) if *s > 0.0 => *s,
            _ => 0.6,
        };
        let sigma = seeing / crate::camera::PIXEL_SCALE / 2.3548;
        unrepaired = find_cosmic_rays(&mut e, sigma, config.cosmic_ray_threshold);
    }
    if config.interpolate {
        interpolate_masked(&mut e, &unrepaired);
    }
    Ok(e)
}
