//! Source detection (DMS-REQ-0033): the background-subtracted image is smoothed with the
//! PSF (a matched filter for point sources), divided by the smoothed noise, and pixels at or
//! above the threshold (5 sigma by default) form footprints: 8-connected regions, each with
//! its peaks (local maxima of the smoothed image), brightest first. Detected pixels get the
//! DETECTED mask plane (DETECTED_NEGATIVE for negative footprints, as on difference images).
//! The same smoothed image gives the footprints under the threshold down to a fainter one
//! ([`sub_threshold_footprints`]), for faint DIASources.
use crate::image::{Exposure, Image, MaskPlane};
use crate::psf::GaussianPsf;

/// Detection settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectionConfig {
    /// Threshold in units of the smoothed image's noise.
    pub threshold: f64,
    /// Also detect negative sources (difference images).
    pub negative: bool,
    /// Footprints smaller than this many pixels are dropped as noise.
    pub min_pixels: usize,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        Self {
            threshold: 5.0,
            negative: false,
            min_pixels: 3,
        }
    }
}

impl DetectionConfig {
    /// Checks the parameters' ranges.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(format!(
                "threshold {} must be positive (sigma)",
                self.threshold
            ));
        }
        if self.min_pixels == 0 {
            return Err("min_pixels must be at least 1".into());
        }
        Ok(())
    }
}

/// A local maximum of the smoothed image within a footprint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    pub x: usize,
    pub y: usize,
    /// Smoothed value over its noise at the peak.
    pub significance: f64,
}

/// A connected region above threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Footprint {
    /// Pixels as (y, x0, x1) spans, x1 exclusive, sorted by row.
    pub spans: Vec<(usize, usize, usize)>,
    /// Bounding box: (x0, y0, x1, y1), exclusive upper bounds.
    pub bbox: (usize, usize, usize, usize),
    /// Peaks, most significant first.
    pub peaks: Vec<Peak>,
    /// True for a negative footprint.
    pub negative: bool,
}

impl Footprint {
    pub fn area(&self) -> usize {
        self.spans.iter().map(|(_, a, b)| b - a).sum()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DetectionError {
    #[error("the threshold must be positive, got {0}")]
    BadThreshold(f64),
    #[error("the PSF has no valid shape at the image centre")]
    BadPsf,
}

/// A normalised 1-D Gaussian of the given sigma, out to 4 sigma.
fn gaussian_1d(sigma: f64) -> Vec<f64> {
    let half = (4.0 * sigma).ceil().max(1.0) as i64;
    let k: Vec<f64> = (-half..=half)
        .map(|i| (-0.5 * (i as f64 / sigma).powi(2)).exp())
        .collect();
    let sum: f64 = k.iter().sum();
    k.into_iter().map(|v| v / sum).collect()
}

/// The significance image: the PSF-smoothed image over its noise.
pub fn significance(exposure: &Exposure, psf: &GaussianPsf) -> Result<Image<f32>, DetectionError> {
    let (w, h) = (exposure.width(), exposure.height());
    let m = psf.moments_at(w as f64 / 2.0, h as f64 / 2.0);
    if !m.is_valid() {
        return Err(DetectionError::BadPsf);
    }
    // A round Gaussian of the PSF's size: separable, and within a few per cent of the
    // matched filter's signal-to-noise for the mildly elliptical PSFs of a survey.
    let sigma = m.determinant_radius();
    // Single precision: the sums of a few dozen terms lose nothing a threshold notices,
    // and half the memory traffic makes the pass twice as fast.
    let k: Vec<f32> = gaussian_1d(sigma).into_iter().map(|v| v as f32).collect();
    let k2: Vec<f32> = k.iter().map(|v| v * v).collect();
    // Interpolated pixels carry a huge variance on purpose (measurement ignores them);
    // left in, that variance would drown the significance of everything near them.
    let unusable = MaskPlane::Bad.bit()
        | MaskPlane::NoData.bit()
        | MaskPlane::Sat.bit()
        | MaskPlane::Intrp.bit();
    let mask = exposure.mask().bits().data();
    let (image, variance) = (exposure.image().data(), exposure.variance().data());
    let half = k.len() / 2;
    // Rows first: the smoothed signal and its noise, side by side in a row of twice the
    // width; unusable pixels count for nothing in either, and pixels beyond the edge count
    // as zero (the edge is masked).
    let mut rows = vec![0.0f32; 2 * w * h];
    crate::image::for_rows(&mut rows, 2 * w, |y, out| {
        let mut values = vec![0.0f32; w + 2 * half];
        let mut noise = vec![0.0f32; w + 2 * half];
        for x in 0..w {
            let i = y * w + x;
            let (v, n) = (image[i], variance[i]);
            if mask[i] & unusable == 0 && v.is_finite() && n.is_finite() {
                values[half + x] = v;
                noise[half + x] = n.max(0.0);
            }
        }
        let (s, n) = out.split_at_mut(w);
        crate::convolve::correlate_line(s, &values, &k, false);
        crate::convolve::correlate_line(n, &noise, &k2, false);
    });
    // Then columns, dividing as we go.
    let mut data = vec![0.0f32; w * h];
    crate::image::for_rows(&mut data, w, |y, out| {
        let (lo, hi) = (y.saturating_sub(half), (y + half + 1).min(h));
        let taps = &k[lo + half - y..hi + half - y];
        let taps2 = &k2[lo + half - y..hi + half - y];
        let signal: Vec<&[f32]> = (lo..hi)
            .map(|r| &rows[2 * r * w..(2 * r + 1) * w])
            .collect();
        let noise: Vec<&[f32]> = (lo..hi)
            .map(|r| &rows[(2 * r + 1) * w..(2 * r + 2) * w])
            .collect();
        let mut n = vec![0.0f32; w];
        crate::convolve::combine_lines(out, &signal, taps, false);
        crate::convolve::combine_lines(&mut n, &noise, taps2, false);
        for (o, n) in out.iter_mut().zip(n) {
            *o = if n > 0.0 { *o / n.sqrt() } else { 0.0 };
        }
    });
    Ok(Image::from_vec(w, h, data).expect("w x h values"))
}

/// Detects sources on a background-subtracted exposure, marks their pixels in its mask and
/// returns their footprints, largest significance first.
pub fn detect(
    exposure: &mut Exposure,
    psf: &GaussianPsf,
    config: &DetectionConfig,
) -> Result<Vec<Footprint>, DetectionError> {
    detect_keeping_significance(exposure, psf, config).map(|(f, _)| f)
}

/// [`detect`], also returning the significance image it thresholded, for a second look
/// below the threshold ([`sub_threshold_footprints`]) without smoothing the image again.
pub fn detect_keeping_significance(
    exposure: &mut Exposure,
    psf: &GaussianPsf,
    config: &DetectionConfig,
) -> Result<(Vec<Footprint>, Image<f32>), DetectionError> {
    if !(config.threshold.is_finite() && config.threshold > 0.0) {
        return Err(DetectionError::BadThreshold(config.threshold));
    }
    let sig = significance(exposure, psf)?;
    let mut footprints = find_footprints(&sig, config.threshold, false, config.min_pixels);
    if config.negative {
        footprints.extend(find_footprints(
            &sig,
            config.threshold,
            true,
            config.min_pixels,
        ));
    }
    let (_, mask, _) = exposure.planes_mut();
    for f in &footprints {
        let plane = if f.negative {
            MaskPlane::DetectedNegative
        } else {
            MaskPlane::Detected
        };
        for &(y, x0, x1) in &f.spans {
            for x in x0..x1 {
                mask.set(x, y, plane);
            }
        }
    }
    sort_by_significance(&mut footprints);
    Ok((footprints, sig))
}

fn sort_by_significance(footprints: &mut [Footprint]) {
    footprints.sort_by(|a, b| {
        let s = |f: &Footprint| f.peaks.first().map_or(0.0, |p| p.significance.abs());
        s(b).total_cmp(&s(a))
    });
}

/// The footprints of `sig` above `faint` (below `-faint` too when `negative`) whose every
/// pixel stays under `threshold` in absolute value: the sources too faint for detection at
/// `threshold`, apart from all it found. Most significant first.
pub fn sub_threshold_footprints(
    sig: &Image<f32>,
    faint: f64,
    threshold: f64,
    negative: bool,
    min_pixels: usize,
) -> Result<Vec<Footprint>, DetectionError> {
    if !(faint.is_finite() && faint > 0.0) {
        return Err(DetectionError::BadThreshold(faint));
    }
    let mut out = find_footprints(sig, faint, false, min_pixels);
    if negative {
        out.extend(find_footprints(sig, faint, true, min_pixels));
    }
    out.retain(|f| {
        f.spans.iter().all(|&(y, x0, x1)| {
            (x0..x1).all(|x| f64::from(sig.get(x, y).unwrap_or(0.0)).abs() < threshold)
        })
    });
    sort_by_significance(&mut out);
    Ok(out)
}

/// 8-connected regions of `sig >= t` (or `<= -t` when `negative`).
fn find_footprints(sig: &Image<f32>, t: f64, negative: bool, min_pixels: usize) -> Vec<Footprint> {
    let (w, h) = (sig.width(), sig.height());
    let value = |x: usize, y: usize| {
        let v = f64::from(sig.get(x, y).unwrap_or(0.0));
        if negative { -v } else { v }
    };
    let data = sig.data();
    let t32 = t as f32;
    let mut visited = vec![false; w * h];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        // Most pixels are below threshold: test them straight from the slice.
        let v = if negative { -data[start] } else { data[start] };
        if v < t32 || visited[start] {
            continue;
        }
        let (sx, sy) = (start % w, start / w);
        if value(sx, sy) < t {
            continue;
        }
        visited[start] = true;
        stack.push((sx, sy));
        let mut pixels = Vec::new();
        while let Some((x, y)) = stack.pop() {
            pixels.push((y, x));
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx as usize >= w || ny as usize >= h {
                        continue;
                    }
                    let (nx, ny) = (nx as usize, ny as usize);
                    if !visited[ny * w + nx] && value(nx, ny) >= t {
                        visited[ny * w + nx] = true;
                        stack.push((nx, ny));
                    }
                }
            }
        }
        pixels.sort_unstable();
        let mut spans: Vec<(usize, usize, usize)> = Vec::new();
        for &(y, x) in &pixels {
            match spans.last_mut() {
                Some(s) if s.0 == y && s.2 == x => s.2 = x + 1,
                _ => spans.push((y, x, x + 1)),
            }
        }
        let x0 = pixels.iter().map(|p| p.1).min().unwrap_or(0);
        let x1 = pixels.iter().map(|p| p.1).max().unwrap_or(0) + 1;
        let (y0, y1) = (pixels[0].0, pixels[pixels.len() - 1].0 + 1);
        let mut peaks: Vec<Peak> = pixels
            .iter()
            .filter(|&&(y, x)| {
                let v = value(x, y);
                (-1i64..=1).all(|dy| {
                    (-1i64..=1).all(|dx| {
                        let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                        (dx == 0 && dy == 0)
                            || nx < 0
                            || ny < 0
                            || nx as usize >= w
                            || ny as usize >= h
                            || value(nx as usize, ny as usize) < v
                    })
                })
            })
            .map(|&(y, x)| Peak {
                x,
                y,
                significance: f64::from(sig.get(x, y).unwrap_or(0.0)),
            })
            .collect();
        peaks.sort_by(|a, b| b.significance.abs().total_cmp(&a.significance.abs()));
        if pixels.len() >= min_pixels && !peaks.is_empty() {
            out.push(Footprint {
                spans,
                bbox: (x0, y0, x1, y1),
                peaks,
                negative,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{Normal, star_field};

    const SIGMA_PSF: f64 = 2.0;
    const NOISE: f64 = 10.0;

    /// Stars at known positions with PSF-optimal SNR from 3 to 60, on noise of 10 counts.
    fn scene(seed: u64) -> (Exposure, Vec<(f64, f64, f64)>) {
        let (w, h) = (300usize, 300usize);
        let mut rng = Normal(seed);
        let mut stars = Vec::new();
        for i in 0..64 {
            let x = 15.0 + (i % 8) as f64 * 36.0 + rng.uniform() * 4.0;
            let y = 15.0 + (i / 8) as f64 * 36.0 + rng.uniform() * 4.0;
            let snr = 3.0 + i as f64 * 57.0 / 63.0;
            stars.push((x, y, snr));
        }
        // PSF-optimal SNR of a Gaussian star: flux / (noise sqrt(4 pi) sigma).
        let fluxes: Vec<(f64, f64, f64)> = stars
            .iter()
            .map(|&(x, y, snr)| {
                (
                    x,
                    y,
                    snr * NOISE * (4.0 * std::f64::consts::PI).sqrt() * SIGMA_PSF,
                )
            })
            .collect();
        let e = star_field((w, h), &fluxes, SIGMA_PSF, NOISE, &mut rng);
        (e, stars)
    }

    #[test]
    fn point_sources_above_snr_10_are_all_found_near_their_positions() {
        let (mut e, stars) = scene(7);
        let psf = GaussianPsf::constant_fwhm(300, 300, SIGMA_PSF * 2.354_820_045);
        let found = detect(&mut e, &psf, &DetectionConfig::default()).unwrap();
        let peaks: Vec<Peak> = found.iter().flat_map(|f| f.peaks.iter().copied()).collect();
        let near = |x: f64, y: f64| {
            peaks
                .iter()
                .any(|p| (p.x as f64 - x).hypot(p.y as f64 - y) <= 1.5)
        };
        for &(x, y, snr) in stars.iter().filter(|s| s.2 >= 10.0) {
            assert!(
                near(x, y),
                "missed a star of SNR {snr:.1} at ({x:.1}, {y:.1})"
            );
        }
        // Every footprint is a star: no noise peaks at 5 sigma.
        for f in &found {
            let p = f.peaks[0];
            assert!(
                stars
                    .iter()
                    .any(|s| (p.x as f64 - s.0).hypot(p.y as f64 - s.1) <= 3.0),
                "spurious detection at ({}, {}) significance {:.1}",
                p.x,
                p.y,
                p.significance
            );
        }
        // The brightest star's significance is its true SNR, within the noise.
        assert!(
            (found[0].peaks[0].significance - 60.0).abs() < 6.0,
            "{}",
            found[0].peaks[0].significance
        );
        assert!(e.mask().count(MaskPlane::Detected) > 0);
        assert_eq!(e.mask().count(MaskPlane::DetectedNegative), 0);
    }

    #[test]
    fn sub_threshold_footprints_are_the_faint_stars_apart_from_the_detected() {
        let (mut e, stars) = scene(9);
        let psf = GaussianPsf::constant_fwhm(300, 300, SIGMA_PSF * 2.354_820_045);
        let (found, sig) =
            detect_keeping_significance(&mut e, &psf, &DetectionConfig::default()).unwrap();
        let faint = sub_threshold_footprints(&sig, 3.5, 5.0, true, 3).unwrap();
        assert!(!faint.is_empty());
        for f in &faint {
            let p = f.peaks[0];
            assert!(
                p.significance.abs() >= 3.5 && p.significance.abs() < 5.0,
                "{p:?}"
            );
            // None overlaps a footprint found at 5 sigma.
            assert!(found.iter().all(|g| {
                g.spans.iter().all(|gs| {
                    f.spans
                        .iter()
                        .all(|fs| gs.0 != fs.0 || gs.2 <= fs.1 || fs.2 <= gs.1)
                })
            }));
        }
        // The stars of SNR 3.5 to 4.5 are mostly among them.
        let faint_stars: Vec<_> = stars.iter().filter(|s| (3.5..4.5).contains(&s.2)).collect();
        let seen = faint_stars
            .iter()
            .filter(|s| {
                faint
                    .iter()
                    .any(|f| (f.peaks[0].x as f64 - s.0).hypot(f.peaks[0].y as f64 - s.1) <= 2.0)
            })
            .count();
        assert!(
            seen * 2 >= faint_stars.len(),
            "{seen} of {}",
            faint_stars.len()
        );
        assert_eq!(
            sub_threshold_footprints(&sig, 0.0, 5.0, false, 3).err(),
            Some(DetectionError::BadThreshold(0.0))
        );
    }

    #[test]
    fn negative_sources_are_found_when_asked_and_thresholds_are_checked() {
        let (mut e, _) = scene(8);
        let (pix, _, _) = e.planes_mut();
        for v in pix.iter_mut() {
            *v = -*v;
        }
        let psf = GaussianPsf::constant_fwhm(300, 300, SIGMA_PSF * 2.354_820_045);
        let positive = detect(&mut e.clone(), &psf, &DetectionConfig::default()).unwrap();
        assert!(
            positive.is_empty(),
            "{} positive footprints on a negative image",
            positive.len()
        );
        let config = DetectionConfig {
            negative: true,
            ..DetectionConfig::default()
        };
        let found = detect(&mut e, &psf, &config).unwrap();
        assert!(found.len() > 40 && found.iter().all(|f| f.negative));
        assert!(e.mask().count(MaskPlane::DetectedNegative) > 0);
        let bad = DetectionConfig {
            threshold: 0.0,
            ..DetectionConfig::default()
        };
        assert_eq!(
            detect(&mut e, &psf, &bad),
            Err(DetectionError::BadThreshold(0.0))
        );
    }
}
