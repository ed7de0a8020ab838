//! The instrument chain against the simulator's truth: calibration exposures of a simulated
//! CCD become calibration products that match the camera they came from, and ISR with
//! them turns raw science snaps into a flat, clean image.
use aster_processing::calib::{
    CalibImage, DefectBit, Stamp, build_bias, build_dark, build_defects, build_flat, build_fringe,
    build_illumination, build_mono_flat_cube, measure_crosstalk,
};
use aster_processing::camera::{Camera, Defect, FRINGE_AMPLITUDE};
use aster_processing::camsim::{ExposureSpec, Light, SNAP_TIME, Simulated, simulate};
use aster_processing::characterize::{CharacterizeConfig, ReferenceStar, characterize};
use aster_processing::image::MaskPlane;
use aster_processing::isr::{IsrCalibrations, IsrConfig, IsrError, process_visit};
use aster_processing::raw::{ObsType, RawExposure};
use aster_processing::sky::{Footprint, SimVisit, cadence, objects};
use aster_processing::wcs::SkyCoord;

const SIZE: usize = 256;

fn stamp() -> Stamp {
    Stamp {
        software: "aster test".into(),
        created: "2026-11-25T00:00:00".into(),
    }
}

fn expose(cam: &Camera, light: Light, kind: ObsType, id: i64, t: f64) -> Simulated {
    let spec = ExposureSpec {
        light,
        obs_type: kind,
        obs_id: format!("AS_C_{id:06}"),
        exposure_id: id,
        snap: 0,
        tai_start: 60_600.0 + id as f64 * 0.001,
        exposure_time: t,
    };
    simulate(cam, &cam.detectors[0], &spec, 77)
}

fn raws(sims: &[Simulated]) -> Vec<&RawExposure> {
    sims.iter().map(|s| &s.raw).collect()
}

/// Pearson correlation of two series.
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// Sky visits at dithered pointings in `band`, each with the objects around it.
fn sky_visits(band: usize, n: usize) -> Vec<SimVisit> {
    let f = Footprint::for_objects(2000);
    cadence(5, 60, f)
        .into_iter()
        .filter(|v| v.band == band)
        .take(n)
        .collect()
}

struct Products {
    bias: CalibImage,
    dark: CalibImage,
    flat: CalibImage,
    crosstalk: aster_processing::calib::CrosstalkMatrix,
    defects: aster_processing::calib::DefectMap,
}

fn products(cam: &Camera) -> Products {
    let bias: Vec<_> = (0..5)
        .map(|i| expose(cam, Light::Closed, ObsType::Bias, 100 + i, 0.0))
        .collect();
    let bias = build_bias(&raws(&bias), &stamp()).unwrap();
    let dark: Vec<_> = (0..5)
        .map(|i| expose(cam, Light::Closed, ObsType::Dark, 200 + i, 60.0))
        .collect();
    let dark = build_dark(&raws(&dark), &bias, &stamp()).unwrap();
    let spots: Vec<_> = (0..4)
        .map(|i| {
            let light = Light::Spots {
                count: 24,
                level: 250_000.0,
                radius: 6.0,
            };
            expose(cam, light, ObsType::Spot, 300 + i, 5.0)
        })
        .collect();
    let crosstalk = measure_crosstalk(&raws(&spots), &bias, &stamp()).unwrap();
    let flats: Vec<_> = (0..5)
        .map(|i| {
            let light = Light::Dome {
                band: Some(2),
                wavelength: 622.0,
                level: 30_000.0,
            };
            expose(cam, light, ObsType::Flat, 400 + i, 10.0)
        })
        .collect();
    let flat = build_flat(&raws(&flats), &bias, &dark, Some(&crosstalk), &stamp()).unwrap();
    let defects = build_defects(&dark, &flat, &stamp()).unwrap();
    Products {
        bias,
        dark,
        flat,
        crosstalk,
        defects,
    }
}

#[test]
fn calibration_products_match_the_camera() {
    let cam = Camera::new(11, SIZE, 1).unwrap();
    let d = &cam.detectors[0];
    let p = products(&cam);

    // Bias: each column's residual follows the camera's column structure (in electrons).
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for x in 0..SIZE {
        let a = d.amp_at(x, 0);
        let rows = 40..a.layout.height;
        let (rx, _) = a.layout.to_raw(x, 0);
        got.push(
            rows.clone()
                .map(|y| p.bias.image.get(x, y).unwrap() as f64)
                .sum::<f64>()
                / rows.len() as f64,
        );
        want.push(
            rows.clone()
                .map(|ry| a.gain * d.bias_structure(a.layout.index, rx, ry))
                .sum::<f64>()
                / rows.len() as f64,
        );
    }
    let r = correlation(&got, &want);
    assert!(r > 0.9, "bias columns correlate {r}");

    // Dark: hot pixels at their rates, the rest near zero.
    let mut normal = Vec::new();
    for y in 0..SIZE {
        for x in 0..SIZE {
            let (rate, got) = (d.dark_current(x, y), p.dark.image.get(x, y).unwrap() as f64);
            if rate > 1.0 {
                assert!(
                    (got - rate).abs() < 0.15 * rate + 0.3,
                    "hot ({x}, {y}): {got} vs {rate}"
                );
            } else {
                normal.push(got);
            }
        }
    }
    normal.sort_by(f64::total_cmp);
    assert!(
        normal[normal.len() / 2].abs() < 0.05,
        "median dark {}",
        normal[normal.len() / 2]
    );

    // Flat: the response times vignetting and dome illumination, normalised.
    let truth: Vec<f64> = (0..SIZE * SIZE)
        .map(|i| {
            let (x, y) = (i % SIZE, i / SIZE);
            let (fx, fy) = d.focal_plane(x as f64, y as f64);
            d.response(x, y, 622.0) * cam.vignetting(fx, fy) * cam.dome_illumination(fx, fy)
        })
        .collect();
    let mean = truth.iter().filter(|v| **v > 0.2).sum::<f64>()
        / truth.iter().filter(|v| **v > 0.2).count() as f64;
    let ratios: Vec<f64> = truth
        .iter()
        .zip(p.flat.image.data())
        .filter(|(t, _)| **t > 0.5)
        .map(|(t, f)| *f as f64 / (t / mean))
        .collect();
    let m = ratios.iter().sum::<f64>() / ratios.len() as f64;
    let sd = (ratios.iter().map(|r| (r - m).powi(2)).sum::<f64>() / ratios.len() as f64).sqrt();
    assert!(
        (m - 1.0).abs() < 0.002 && sd < 0.006,
        "flat / truth: mean {m}, sd {sd}"
    );

    // Crosstalk: every coefficient within 3 sigma of the camera's, plus 5e-6 for the
    // overscan and bias-residual noise under the ghosts (a ghost error under 0.4 ADU even
    // from a saturated source).
    for v in 0..8 {
        for s in 0..8 {
            if v == s {
                continue;
            }
            let (got, want, err) = (
                p.crosstalk.coefficients[v * 8 + s],
                d.crosstalk[v * 8 + s],
                p.crosstalk.errors[v * 8 + s],
            );
            assert!(
                (got - want).abs() < 3.0 * err + 5e-6,
                "crosstalk {v}<-{s}: {got:e} vs {want:e} ± {err:e}"
            );
        }
    }

    // Defects: every hot, dead and bad-column pixel found, almost nothing else.
    let (mut missed, mut extra) = (0, 0);
    for y in 0..SIZE {
        for x in 0..SIZE {
            let bits = p.defects.bits.get(x, y).unwrap();
            let expected = match d.defect(x, y) {
                Some(Defect::Hot) => DefectBit::Hot.bit(),
                Some(Defect::Dead) => DefectBit::Dead.bit(),
                Some(Defect::BadColumn) => DefectBit::BadColumn.bit(),
                None => 0,
            };
            missed += usize::from(expected != 0 && bits & expected == 0);
            extra += usize::from(expected == 0 && bits != 0);
        }
    }
    assert_eq!(missed, 0);
    assert!(extra < 5, "{extra} pixels flagged that have no defect");

    // Provenance names the inputs and the products used.
    let prov = &p.flat.provenance;
    assert_eq!(prov.inputs.len(), 5);
    assert_eq!(prov.band, Some(2));
    assert!(prov.input_dates.0 < prov.input_dates.1);
    let cards = prov.to_cards().into_iter().collect();
    assert_eq!(
        &aster_processing::calib::Provenance::from_cards(&cards).unwrap(),
        prov
    );
}

#[test]
fn monochromatic_flats_see_the_red_thickness_pattern() {
    let cam = Camera::new(12, SIZE, 1).unwrap();
    let d = &cam.detectors[0];
    let p = products(&cam);
    let mut sims = Vec::new();
    for (k, nm) in [450.0, 700.0, 950.0].into_iter().enumerate() {
        for i in 0..3 {
            let light = Light::Dome {
                band: None,
                wavelength: nm,
                level: 30_000.0,
            };
            sims.push(expose(
                &cam,
                light,
                ObsType::Flat,
                500 + 10 * k as i64 + i,
                10.0,
            ));
        }
    }
    let cube =
        build_mono_flat_cube(&raws(&sims), &p.bias, &p.dark, Some(&p.crosstalk), &stamp()).unwrap();
    assert_eq!(cube.wavelengths, vec![450.0, 700.0, 950.0]);
    // The ratio of red to green flats follows the chromatic part of the response.
    let (red, green) = (&cube.planes[2], &cube.planes[0]);
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for y in (0..SIZE).step_by(3) {
        for x in (0..SIZE).step_by(3) {
            if d.defect(x, y).is_some() {
                continue;
            }
            got.push((red.get(x, y).unwrap() / green.get(x, y).unwrap()) as f64);
            want.push(d.response(x, y, 950.0) / d.response(x, y, 450.0));
        }
    }
    let r = correlation(&got, &want);
    assert!(r > 0.8, "red/green flat ratio correlates {r}");
    let mid = cube.at(825.0);
    let expect = (cube.planes[1].get(10, 10).unwrap() + cube.planes[2].get(10, 10).unwrap()) / 2.0;
    assert!((mid.get(10, 10).unwrap() - expect).abs() < 1e-6);
}

#[test]
fn isr_flattens_science_snaps_and_removes_cosmic_rays() {
    let cam = Camera::new(13, SIZE, 1).unwrap();
    let d = &cam.detectors[0];
    let p = products(&cam);
    let sky_objects: Vec<_> = objects(5, 2000, Footprint::for_objects(2000)).collect();
    // Illumination from r-band sky exposures.
    let visits = sky_visits(2, 5);
    let sky: Vec<_> = visits
        .iter()
        .enumerate()
        .map(|(i, v)| {
            expose(
                &cam,
                Light::Sky {
                    visit: v,
                    objects: &sky_objects,
                    asteroids: &[],
                },
                ObsType::SkyFlat,
                600 + i as i64,
                SNAP_TIME,
            )
        })
        .collect();
    let base = IsrCalibrations {
        crosstalk: Some(&p.crosstalk.coefficients),
        bias: Some(p.bias.plane()),
        dark: Some(p.dark.plane()),
        flat: Some(p.flat.plane()),
        ..Default::default()
    };
    let illumination = build_illumination(&raws(&sky), &base, &stamp()).unwrap();
    // Its shape: the inverse of the dome's illumination, normalised.
    let truth: Vec<f64> = (0..SIZE * SIZE)
        .map(|i| {
            let (fx, fy) = d.focal_plane((i % SIZE) as f64, (i / SIZE) as f64);
            1.0 / cam.dome_illumination(fx, fy)
        })
        .collect();
    let tm = truth.iter().sum::<f64>() / truth.len() as f64;
    let worst = truth
        .iter()
        .zip(illumination.image.data())
        .map(|(t, g)| (t / tm - *g as f64).abs())
        .fold(0.0, f64::max);
    assert!(worst < 0.004, "illumination off by {worst}");

    // A science visit: two snaps.
    let visit = &sky_visits(2, 6)[5];
    let snaps: Vec<_> = (0..2)
        .map(|s| {
            let spec = ExposureSpec {
                light: Light::Sky {
                    visit,
                    objects: &sky_objects,
                    asteroids: &[],
                },
                obs_type: ObsType::Science,
                obs_id: format!("AS_O_{}_{s}", visit.visit),
                exposure_id: visit.visit * 10 + s,
                snap: s as u8,
                tai_start: visit.mjd_start + s as f64 * (SNAP_TIME + 2.0) / 86_400.0,
                exposure_time: SNAP_TIME,
            };
            simulate(&cam, d, &spec, 77)
        })
        .collect();
    let calibs = IsrCalibrations {
        illumination: Some(illumination.plane()),
        defects: Some(&p.defects.bits),
        ..base
    };
    let snap_raws: Vec<RawExposure> = snaps.iter().map(|s| s.raw.clone()).collect();
    let pvi = process_visit(
        &snap_raws,
        &calibs,
        &IsrConfig {
            fringe: false,
            ..IsrConfig::default()
        },
    )
    .unwrap();
    assert_eq!(
        pvi.metadata.get("EXPTIME"),
        Some(&aster_processing::image::HeaderValue::Float(
            2.0 * SNAP_TIME
        ))
    );
    assert!(pvi.wcs.is_some());

    // Cosmic rays of either snap are masked (and interpolated), almost all of them.
    let hits: Vec<(usize, usize)> = snaps
        .iter()
        .flat_map(|s| s.cosmic_ray_pixels.iter().copied())
        .collect();
    assert!(!hits.is_empty());
    let caught = hits
        .iter()
        .filter(|&&(x, y)| pvi.mask().any(x, y, &[MaskPlane::Cr, MaskPlane::Sat]))
        .count();
    assert!(
        caught as f64 >= 0.8 * hits.len() as f64,
        "{caught} of {} cosmic-ray pixels masked",
        hits.len()
    );
    // Defects are masked BAD and interpolated.
    for y in 0..SIZE {
        for x in 0..SIZE {
            if d.defect(x, y).is_some() {
                assert!(
                    pvi.mask().any(x, y, &[MaskPlane::Bad]),
                    "defect ({x}, {y}) unmasked"
                );
                assert!(pvi.mask().any(x, y, &[MaskPlane::Intrp]));
            }
        }
    }
    // The sky is flat: 16 x 16 blocks free of sources agree to the noise.
    let mut blocks = Vec::new();
    for by in 0..SIZE / 16 {
        for bx in 0..SIZE / 16 {
            let mut v: Vec<f32> = (0..256)
                .map(|i| pvi.image().get(bx * 16 + i % 16, by * 16 + i / 16).unwrap())
                .collect();
            v.sort_by(f32::total_cmp);
            blocks.push(v[128] as f64);
        }
    }
    blocks.sort_by(f64::total_cmp);
    let med = blocks[blocks.len() / 2];
    let (lo, hi) = (blocks[blocks.len() / 10], blocks[blocks.len() * 9 / 10]);
    // Per-block median noise: sqrt(sky) / 16 * 1.25; the 10-90% spread is ±1.28 of that.
    let noise = med.sqrt() / 16.0 * 1.25;
    assert!(
        hi - lo < 2.0 * 1.28 * noise * 1.5 + 0.002 * med,
        "blocks spread {lo}..{hi} around {med}"
    );
}

#[test]
fn fringes_are_measured_and_removed() {
    let cam = Camera::new(14, SIZE, 1).unwrap();
    let d = &cam.detectors[0];
    let p = products(&cam);
    let z = 4;
    assert!(FRINGE_AMPLITUDE[z] > 0.01);
    let sky_objects: Vec<_> = objects(5, 2000, Footprint::for_objects(2000)).collect();
    let flats: Vec<_> = (0..5)
        .map(|i| {
            expose(
                &cam,
                Light::Dome {
                    band: Some(z),
                    wavelength: 869.0,
                    level: 30_000.0,
                },
                ObsType::Flat,
                700 + i,
                10.0,
            )
        })
        .collect();
    let flat = build_flat(
        &raws(&flats),
        &p.bias,
        &p.dark,
        Some(&p.crosstalk),
        &stamp(),
    )
    .unwrap();
    let visits = sky_visits(z, 8);
    let sky: Vec<_> = visits
        .iter()
        .enumerate()
        .map(|(i, v)| {
            expose(
                &cam,
                Light::Sky {
                    visit: v,
                    objects: &sky_objects,
                    asteroids: &[],
                },
                ObsType::SkyFlat,
                800 + i as i64,
                60.0,
            )
        })
        .collect();
    let calibs = IsrCalibrations {
        crosstalk: Some(&p.crosstalk.coefficients),
        bias: Some(p.bias.plane()),
        dark: Some(p.dark.plane()),
        flat: Some(flat.plane()),
        ..Default::default()
    };
    let fringe = build_fringe(&raws(&sky), &calibs, &stamp()).unwrap();
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for y in (0..SIZE).step_by(2) {
        for x in (0..SIZE).step_by(2) {
            got.push(fringe.image.get(x, y).unwrap() as f64);
            want.push(d.fringe(x, y));
        }
    }
    let r = correlation(&got, &want);
    assert!(r > 0.8, "fringe frame correlates {r}");

    // ISR with the fringe frame leaves less of the pattern than without it.
    let one = [sky[0].raw.clone()];
    let residual = |with: bool| {
        let config = IsrConfig {
            fringe: with,
            illumination: false,
            cosmic_rays: false,
            ..IsrConfig::default()
        };
        let c = IsrCalibrations {
            fringe: Some(fringe.plane()),
            defects: Some(&p.defects.bits),
            ..calibs
        };
        let e = process_visit(&one, &c, &config).unwrap();
        let v: Vec<f64> = (0..SIZE * SIZE)
            .step_by(2)
            .map(|i| e.image().data()[i] as f64)
            .collect();
        let f: Vec<f64> = (0..SIZE * SIZE)
            .step_by(2)
            .map(|i| d.fringe(i % SIZE, i / SIZE))
            .collect();
        correlation(&v, &f)
    };
    let (before, after) = (residual(false), residual(true));
    assert!(
        after.abs() < before.abs() / 3.0,
        "fringe correlation {before} -> {after}"
    );
}

#[test]
fn missing_and_misshapen_calibrations_name_the_step() {
    let cam = Camera::new(15, SIZE, 1).unwrap();
    let bias = expose(&cam, Light::Closed, ObsType::Bias, 1, 0.0);
    let err = process_visit(
        std::slice::from_ref(&bias.raw),
        &IsrCalibrations::default(),
        &IsrConfig::default(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        IsrError::MissingCalibration {
            step: "crosstalk",
            calibration: "crosstalk matrix"
        }
    );
    let small = aster_processing::image::Image::filled(128, 128, 0.0f32);
    let calibs = IsrCalibrations {
        bias: Some(aster_processing::isr::CalibPlane::image_only(&small)),
        ..Default::default()
    };
    let config = IsrConfig {
        bias: true,
        ..IsrConfig::overscan_only()
    };
    let err = process_visit(std::slice::from_ref(&bias.raw), &calibs, &config).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("bias: the bias calibration is 128 x 128"),
        "{err}"
    );
    // Too few inputs, or the wrong kind, are refused by the builders.
    let err = build_bias(&[&bias.raw], &stamp()).unwrap_err();
    assert!(err.to_string().contains("at least 3"), "{err}");
    let dark = expose(&cam, Light::Closed, ObsType::Dark, 2, 30.0);
    let err = build_bias(&[&bias.raw, &bias.raw, &dark.raw], &stamp()).unwrap_err();
    assert!(err.to_string().contains("DARK exposure"), "{err}");
}

/// Reference stars as a catalogue would list them: the simulator's stars brighter than
/// r = 21 at epoch 2016.0 with their true motions and magnitudes.
fn refcat(objects: &[aster_processing::sky::SimObject]) -> Vec<ReferenceStar> {
    objects
        .iter()
        .filter(|o| o.is_star && aster_processing::sky::njy_to_mag(o.flux[2]) < 21.0)
        .map(|o| {
            let mut mags = [None; 6];
            for (b, m) in mags.iter_mut().enumerate() {
                *m = Some((aster_processing::sky::njy_to_mag(o.flux[b]), 0.005));
            }
            ReferenceStar {
                id: o.id,
                ra: o.ra,
                dec: o.dec,
                epoch: aster_processing::sky::REFERENCE_EPOCH_MJD,
                pm_ra: o.pm_ra,
                pm_dec: o.pm_dec,
                parallax: o.parallax,
                mags,
            }
        })
        .collect()
}

#[test]
fn visits_are_characterized_against_the_truth() {
    const BIG: usize = 768;
    let cam = Camera::new(16, BIG, 1).unwrap();
    let d = &cam.detectors[0];
    let p = products(&cam);
    // A dense field (a low galactic latitude): enough reference stars on a small CCD.
    let sky_objects: Vec<_> = objects(
        5,
        60_000,
        Footprint {
            ra: 62.0,
            dec: -37.0,
            radius: 0.2,
        },
    )
    .collect();
    let mut visit = sky_visits(2, 1)[0].clone();
    (visit.ra, visit.dec) = (62.0, -37.0);
    let snaps: Vec<RawExposure> = (0..2)
        .map(|s| {
            let spec = ExposureSpec {
                light: Light::Sky {
                    visit: &visit,
                    objects: &sky_objects,
                    asteroids: &[],
                },
                obs_type: ObsType::Science,
                obs_id: format!("AS_O_{}_{s}", visit.visit),
                exposure_id: visit.visit * 10 + s,
                snap: s as u8,
                tai_start: visit.mjd_start + s as f64 * (SNAP_TIME + 2.0) / 86_400.0,
                exposure_time: SNAP_TIME,
            };
            simulate(&cam, d, &spec, 77).raw
        })
        .collect();
    let calibs = IsrCalibrations {
        crosstalk: Some(&p.crosstalk.coefficients),
        bias: Some(p.bias.plane()),
        dark: Some(p.dark.plane()),
        flat: Some(p.flat.plane()),
        defects: Some(&p.defects.bits),
        ..Default::default()
    };
    let config = IsrConfig {
        illumination: false,
        fringe: false,
        ..IsrConfig::default()
    };
    let mut pvi = process_visit(&snaps, &calibs, &config).unwrap();
    let refs = refcat(&sky_objects);
    let mid = visit.mjd_start + SNAP_TIME / 86_400.0;
    let report = characterize(&mut pvi, &refs, 2, mid, &CharacterizeConfig::default()).unwrap();
    // The PSF: the seeing at this place in the field.
    let (fx, fy) = d.focal_plane(BIG as f64 / 2.0, BIG as f64 / 2.0);
    let truth = aster_processing::camsim::psf_moments(&cam, &visit, fx, fy);
    let got = pvi
        .psf
        .as_ref()
        .unwrap()
        .moments_at(BIG as f64 / 2.0, BIG as f64 / 2.0);
    assert!(
        (got.ixx / truth.ixx - 1.0).abs() < 0.05 && (got.iyy / truth.iyy - 1.0).abs() < 0.05,
        "{got:?} vs {truth:?}"
    );
    // The WCS puts pixels where the camera put the sky, to well under 50 mas.
    let wcs = pvi.wcs.as_ref().unwrap();
    let bore = SkyCoord::new(visit.ra, visit.dec).unwrap();
    let mut worst: f64 = 0.0;
    for (x, y) in [
        (50.0, 50.0),
        (384.0, 384.0),
        (700.0, 100.0),
        (100.0, 700.0),
        (720.0, 720.0),
    ] {
        let p = aster_processing::wcs::PixelPosition { x, y };
        let true_sky = cam.pixel_to_sky(d, bore, visit.sky_rotation, p).unwrap();
        worst = worst.max(wcs.pixel_to_sky(p).separation(&true_sky) * 3.6e6);
    }
    assert!(worst < 50.0, "WCS off by {worst} mas; {report:?}");
    assert!(report.astrometry_rms < 50.0 && report.astrometry_matches >= 5);
    // The zeropoint: what the simulated throughput and flat normalisation give.
    let expected = aster_processing::camsim::expected_zero_point(&cam, d, &visit, 2.0 * SNAP_TIME);
    assert!(
        (report.zero_point - expected).abs() < 0.01,
        "zeropoint {} vs {expected}",
        report.zero_point
    );
}
