//! Deblending of footprints with several peaks by symmetric templates (Lupton's SDSS
//! deblender, which the survey's own descends from): a galaxy is nearly symmetric about its
//! centre and its neighbours' light is not, so each peak's template is, at every pixel of
//! the footprint, the smaller of the pixel and its mirror image through the peak; each
//! pixel's light is then shared out among the peaks in proportion to their templates.
//! Every child is measured on its own share ([`ChildLight`]) so its centroid, moments and
//! Kron, Petrosian and aperture fluxes are not its neighbours'.
use crate::detection::Footprint;
use crate::image::Exposure;
use crate::measurement::ChildLight;

/// More peaks than this in one footprint and it is left to the joint PSF fit alone: the
/// templates' cost grows with the footprint's area times the peaks.
pub const MAX_CHILDREN: usize = 32;

/// The children of `footprint`, one per peak in order, or None when it has one peak or
/// more than [`MAX_CHILDREN`].
pub fn deblend(exposure: &Exposure, footprint: &Footprint) -> Option<Vec<ChildLight>> {
    let n = footprint.peaks.len();
    if !(2..=MAX_CHILDREN).contains(&n) {
        return None;
    }
    let (x0, y0, x1, y1) = footprint.bbox;
    let (w, h) = (x1 - x0, y1 - y0);
    // The footprint's pixels over its bounding box (NaN outside it).
    let mut light = vec![f32::NAN; w * h];
    let image = exposure.image();
    for &(y, a, b) in &footprint.spans {
        for x in a..b {
            light[(y - y0) * w + (x - x0)] =
                image.get(x, y).filter(|v| v.is_finite()).unwrap_or(0.0);
        }
    }
    let inside = |x: i64, y: i64| -> Option<f32> {
        if x < x0 as i64 || y < y0 as i64 || x >= x1 as i64 || y >= y1 as i64 {
            return None;
        }
        let v = light[(y as usize - y0) * w + (x as usize - x0)];
        (!v.is_nan()).then_some(v)
    };
    // Templates: min(pixel, mirror), not below zero; nothing where the mirror falls
    // outside the footprint.
    let templates: Vec<Vec<f32>> = footprint
        .peaks
        .iter()
        .map(|p| {
            let mut t = vec![0.0f32; w * h];
            for &(y, a, b) in &footprint.spans {
                for x in a..b {
                    let (mx, my) = (2 * p.x as i64 - x as i64, 2 * p.y as i64 - y as i64);
                    let here = light[(y - y0) * w + (x - x0)];
                    if let Some(mirror) = inside(mx, my) {
                        t[(y - y0) * w + (x - x0)] = here.min(mirror).max(0.0);
                    }
                }
            }
            t
        })
        .collect();
    let mut children: Vec<Vec<f32>> = vec![vec![f32::NAN; w * h]; n];
    for &(y, a, b) in &footprint.spans {
        for x in a..b {
            let k = (y - y0) * w + (x - x0);
            let total: f32 = templates.iter().map(|t| t[k]).sum();
            for (i, child) in children.iter_mut().enumerate() {
                child[k] = if total > 0.0 {
                    light[k] * templates[i][k] / total
                } else {
                    // No template claims the pixel (noise below zero, or beyond every
                    // mirror): it goes to the nearest peak, so no light is lost or
                    // counted twice.
                    let nearest = nearest_peak(footprint, x, y);
                    if nearest == i { light[k] } else { 0.0 }
                };
            }
        }
    }
    Some(
        children
            .into_iter()
            .map(|values| ChildLight {
                x0: x0 as i64,
                y0: y0 as i64,
                width: w as i64,
                height: h as i64,
                values,
            })
            .collect(),
    )
}

fn nearest_peak(footprint: &Footprint, x: usize, y: usize) -> usize {
    footprint
        .peaks
        .iter()
        .enumerate()
        .min_by_key(|(_, p)| {
            let (dx, dy) = (p.x as i64 - x as i64, p.y as i64 - y as i64);
            dx * dx + dy * dy
        })
        .map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detection::{DetectionConfig, detect};
    use crate::galaxy::Morphology;
    use crate::image::{Image, Mask};
    use crate::measurement::{measure, measure_child};
    use crate::psf::GaussianPsf;
    use crate::scene::Canvas;

    /// Two overlapping galaxies of known flux on a noisy image.
    fn pair() -> (Exposure, GaussianPsf, [(f64, f64, f64); 2]) {
        let (w, h) = (160usize, 120usize);
        let sigma = 1.5;
        let psf = GaussianPsf::constant_fwhm(w, h, sigma * 2.354_820_045);
        let galaxies = [(62.0, 60.3, 60_000.0), (81.4, 58.7, 30_000.0)];
        let mut pixels = vec![0.0f64; w * h];
        let mut canvas = Canvas {
            pixels: &mut pixels,
            width: w,
            height: h,
        };
        for (i, &(x, y, f)) in galaxies.iter().enumerate() {
            let m = Morphology {
                disk_radius: 4.0,
                bulge_fraction: 0.3,
                axis_ratio: 0.7,
                angle: 0.4 + i as f64,
            };
            canvas.draw(x, y, f, Some(&m), psf.moments_at(x, y));
        }
        let noise = 3.0f64;
        let mut state = 99u64;
        let data: Vec<f32> = pixels
            .iter()
            .map(|v| {
                let s: f64 = (0..12)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        (state >> 11) as f64 / (1u64 << 53) as f64
                    })
                    .sum();
                (v + noise * (s - 6.0)) as f32
            })
            .collect();
        let mut e = Exposure::new(
            Image::from_vec(w, h, data).unwrap(),
            Mask::new(w, h),
            Image::filled(w, h, (noise * noise) as f32),
        )
        .unwrap();
        e.psf = Some(psf.clone());
        (e, psf, [galaxies[0], galaxies[1]])
    }

    #[test]
    fn a_blend_of_two_galaxies_gives_each_its_own_light() {
        let (mut e, psf, truth) = pair();
        let footprints = detect(&mut e, &psf, &DetectionConfig::default()).unwrap();
        let blend = footprints
            .iter()
            .find(|f| f.peaks.len() == 2)
            .expect("the pair is one footprint with two peaks");
        let children = deblend(&e, blend).unwrap();
        // The shares add up to the footprint's light.
        for &(y, a, b) in &blend.spans {
            for x in a..b {
                let sum: f32 = children
                    .iter()
                    .map(|c| c.values[((y as i64 - c.y0) * c.width + (x as i64 - c.x0)) as usize])
                    .sum();
                assert!((sum - e.image().get(x, y).unwrap()).abs() < 1e-3);
            }
        }
        for (peak, child) in blend.peaks.iter().zip(&children) {
            let (tx, ty, flux) = *truth
                .iter()
                .min_by(|a, b| {
                    let d = |t: &(f64, f64, f64)| (t.0 - peak.x as f64).hypot(t.1 - peak.y as f64);
                    d(a).total_cmp(&d(b))
                })
                .unwrap();
            let alone = measure_child(&e, Some(child), &psf, peak);
            let together = measure(&e, &psf, peak);
            let (_, kron) = alone.kron.unwrap();
            // Deblended: the child's centroid and Kron flux are its own, to a few per cent.
            assert!((alone.x - tx).hypot(alone.y - ty) < 0.5, "{alone:?}");
            assert!(
                (kron.value / flux - 1.0).abs() < 0.08,
                "{} vs {flux}",
                kron.value
            );
            // Without deblending the brighter neighbour's light leaks into the fainter
            // one's 12-pixel aperture.
            let (_, ap_alone) = alone.aperture_fluxes[3];
            let (_, ap_together) = together.aperture_fluxes[3];
            if flux < truth[0].2 {
                assert!(
                    ap_together.value > ap_alone.value + 0.05 * flux,
                    "{ap_together:?} vs {ap_alone:?}"
                );
            }
        }
    }

    #[test]
    fn single_peaks_and_crowds_beyond_the_limit_are_left_alone() {
        let (mut e, psf, _) = pair();
        let footprints = detect(&mut e, &psf, &DetectionConfig::default()).unwrap();
        let mut blend = footprints.into_iter().find(|f| f.peaks.len() == 2).unwrap();
        let one = Footprint {
            peaks: vec![blend.peaks[0]],
            ..blend.clone()
        };
        assert!(deblend(&e, &one).is_none());
        let p = blend.peaks[0];
        blend.peaks = vec![p; MAX_CHILDREN + 1];
        assert!(deblend(&e, &blend).is_none());
    }
}
