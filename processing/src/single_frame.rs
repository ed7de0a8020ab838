//! Single-frame measurement of a calibrated image: the background is modelled and
//! subtracted, sources are detected with the image's PSF and measured, and positions are
//! put on the sky with its WCS. Every peak of a footprint becomes a source; footprints with
//! several peaks (flagged as blends) are deblended: each child is measured on its own share
//! of the light ([`crate::deblend`]), and the PSF fluxes of all peaks are fitted together,
//! so each keeps only its own light.
use crate::background::{Background, BackgroundError};
use crate::deblend::deblend;
use crate::detection::{DetectionConfig, DetectionError, detect};
use crate::image::Exposure;
use crate::measurement::{Measurement, fit_psf_fluxes, measure, measure_child};
use crate::wcs::PixelPosition;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SingleFrameError {
    #[error("the image has no PSF model")]
    NoPsf,
    #[error("the image has no WCS")]
    NoWcs,
    #[error("background: {0}")]
    Background(#[from] BackgroundError),
    #[error("detection: {0}")]
    Detection(#[from] DetectionError),
}

/// One measured source.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// Index within this image, from 1.
    pub id: i64,
    pub ra: f64,
    pub dec: f64,
    pub measurement: Measurement,
    /// Significance of the detection peak.
    pub significance: f64,
    /// The footprint had more than one peak.
    pub blended: bool,
    /// Index of the footprint (from 1) the source's peak belongs to.
    pub footprint: i64,
}

/// Background bin size, pixels.
pub const BACKGROUND_BIN: usize = 128;

/// Measures every source on `exposure`, which is left background-subtracted and with its
/// DETECTED plane set. Returns the sources, brightest detection first, and the background.
pub fn process(
    exposure: &mut Exposure,
    detection: &DetectionConfig,
) -> Result<(Vec<Source>, Background), SingleFrameError> {
    let psf = exposure.psf.clone().ok_or(SingleFrameError::NoPsf)?;
    let wcs = exposure.wcs.clone().ok_or(SingleFrameError::NoWcs)?;
    let bin = BACKGROUND_BIN
        .min(exposure.width().max(8))
        .min(exposure.height().max(8));
    let background = Background::estimate(exposure.image(), exposure.mask(), bin.max(8))?;
    let (pixels, _, _) = exposure.planes_mut();
    background.subtract_from(pixels)?;
    let footprints = detect(exposure, &psf, detection)?;
    // Footprints are measured independently: share them out over the cores, then number
    // the sources in footprint order.
    let positive: Vec<&crate::detection::Footprint> =
        footprints.iter().filter(|f| !f.negative).collect();
    let exposure: &Exposure = exposure;
    let measure_footprint = |f: &crate::detection::Footprint| -> Vec<Measurement> {
        // Blends: each child measured on its own share of the light (symmetric templates),
        // and the children's PSF fluxes fitted together.
        let mut children: Vec<Measurement> = match deblend(exposure, f) {
            Some(lights) => f
                .peaks
                .iter()
                .zip(&lights)
                .map(|(p, light)| measure_child(exposure, Some(light), &psf, p))
                .collect(),
            None => f.peaks.iter().map(|p| measure(exposure, &psf, p)).collect(),
        };
        if children.len() > 1 {
            let positions: Vec<(f64, f64)> = children.iter().map(|m| (m.x, m.y)).collect();
            if let Some(fluxes) = fit_psf_fluxes(exposure, &psf, &positions) {
                for (m, flux) in children.iter_mut().zip(fluxes) {
                    m.psf_flux = flux;
                }
            }
        }
        children
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = positive.len().div_ceil(threads).max(1);
    let measured: Vec<Vec<Measurement>> = std::thread::scope(|scope| {
        let handles: Vec<_> = positive
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|f| measure_footprint(f))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a measurement thread"))
            .collect()
    });
    let mut sources = Vec::new();
    for (i, (f, children)) in positive.iter().zip(measured).enumerate() {
        for (m, peak) in children.into_iter().zip(&f.peaks) {
            let sky = wcs.pixel_to_sky(PixelPosition { x: m.x, y: m.y });
            sources.push(Source {
                id: sources.len() as i64 + 1,
                ra: sky.ra(),
                dec: sky.dec(),
                measurement: m,
                significance: peak.significance,
                blended: f.peaks.len() > 1,
                footprint: i as i64 + 1,
            });
        }
    }
    Ok((sources, background))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{TruthEntry, render};
    use crate::sky::{Footprint, SimVisit, objects};
    use crate::wcs::SkyCoord;

    fn visit() -> SimVisit {
        SimVisit {
            visit: 2_026_000_100,
            band: 2,
            ra: 62.0,
            dec: -37.0,
            sky_rotation: 0.0,
            mjd_start: 60_700.1,
            exp_time: 30.0,
            airmass: 1.1,
            seeing: 0.7,
            depth_offset: 0.0,
            altitude: 65.0,
            azimuth: 120.0,
        }
    }

    /// A 1024-pixel CCD of the synthetic sky at the demo release's density (50 000 objects
    /// a square degree).
    fn ccd(seed: u64) -> (Exposure, Vec<TruthEntry>) {
        let footprint = Footprint {
            ra: 62.0,
            dec: -37.0,
            radius: 0.05,
        };
        let n = (50_000.0 * std::f64::consts::PI * 0.05f64.powi(2)) as u64;
        let sky: Vec<_> = objects(seed, n, footprint).collect();
        render(&visit(), 62.0, -37.0, 1024, &sky, 3)
    }

    #[test]
    fn isolated_stars_are_all_found_measured_and_placed_on_the_sky() {
        let mut pulls = Vec::new();
        for seed in [11, 14] {
            let (mut e, truth) = ccd(seed);
            let (sources, background) = process(&mut e, &DetectionConfig::default()).unwrap();
            assert!((background.at(500.0, 500.0) - crate::render::SKY_LEVEL).abs() < 2.0);
            let nearest = |t: &TruthEntry| {
                sources
                    .iter()
                    .map(|s| (s, (s.measurement.x - t.x).hypot(s.measurement.y - t.y)))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
            };
            // Point sources of true SNR >= 10, away from the edges, with no neighbour within
            // 15 px bright enough to matter. (Blends wait for the deblender.)
            let isolated: Vec<&TruthEntry> = truth
                .iter()
                .filter(|t| t.is_star && t.snr >= 10.0)
                .filter(|t| t.x > 20.0 && t.y > 20.0 && t.x < 1003.0 && t.y < 1003.0)
                .filter(|t| {
                    truth.iter().all(|o| {
                        o.id == t.id
                            || (o.x - t.x).hypot(o.y - t.y) > 15.0
                            || o.flux_njy < 0.05 * t.flux_njy
                    })
                })
                .collect();
            assert!(isolated.len() >= 5, "{} isolated stars", isolated.len());
            let wcs = e.wcs.clone().unwrap();
            for t in isolated {
                let (s, d) = nearest(t).expect("sources");
                assert!(
                    d < 1.5,
                    "missed a star of SNR {:.1} at ({:.1}, {:.1}): nearest source {d:.1} px away, {:?}",
                    t.snr,
                    t.x,
                    t.y,
                    s.measurement
                );
                let m = &s.measurement;
                assert!(m.calibrated);
                pulls.push((m.psf_flux.value - t.flux_njy) / m.psf_flux.err);
                // Centroid and WCS together put it where it is on the sky.
                let true_sky = wcs.pixel_to_sky(PixelPosition { x: t.x, y: t.y });
                let sep_px = SkyCoord::new(s.ra, s.dec).unwrap().separation(&true_sky) * 3600.0
                    / crate::render::PIXEL_SCALE;
                assert!(sep_px < 5.0 * m.x_err.hypot(m.y_err) + 0.01, "{sep_px} px");
            }
        }
        // PSF fluxes in nJy agree with the truth. Faint neighbours below the isolation cut
        // still add a little light (about half a sigma here) until deblending lands.
        let mean = pulls.iter().sum::<f64>() / pulls.len() as f64;
        assert!(
            mean.abs() < 1.0,
            "flux bias {mean} over {} stars",
            pulls.len()
        );
        assert!(pulls.iter().all(|p| p.abs() < 5.0), "{pulls:?}");
    }

    #[test]
    fn images_without_psf_or_wcs_are_refused() {
        let (mut e, _) = ccd(11);
        e.psf = None;
        assert_eq!(
            process(&mut e, &DetectionConfig::default()).unwrap_err(),
            SingleFrameError::NoPsf
        );
        let (mut e, _) = ccd(11);
        e.wcs = None;
        assert_eq!(
            process(&mut e, &DetectionConfig::default()).unwrap_err(),
            SingleFrameError::NoWcs
        );
    }
}
