use rand::{Rng, SeedableRng};

use super::*;
use crate::detection::Peak;
use crate::diffim::{DiffimConfig, subtract};
use crate::measurement::measure;
use crate::render::{SKY_LEVEL, render};
use crate::sky::{SimObject, SimVisit, Variability};

const RA: f64 = 40.0;
const DEC: f64 = -10.0;
const SIZE: usize = 600;
const MJD0: f64 = 60_500.0;

fn visit(id: i64, mjd: f64, seeing: f64, depth_offset: f64) -> SimVisit {
    SimVisit {
        visit: id,
        band: 2,
        ra: RA,
        dec: DEC,
        sky_rotation: 0.0,
        mjd_start: mjd,
        exp_time: 30.0,
        airmass: 1.2,
        seeing,
        depth_offset,
        altitude: 55.0,
        azimuth: 90.0,
    }
}

/// Stars, periodic variables, and transients (ids from 10 000) peaking over the visits with
/// peak fluxes from invisible to bright.
fn sky() -> Vec<SimObject> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let half = SIZE as f64 * 0.2 / 3600.0 / 2.0;
    let place = |rng: &mut rand_chacha::ChaCha8Rng| {
        (
            RA + rng.random_range(-0.92..0.92) * half / DEC.to_radians().cos(),
            DEC + rng.random_range(-0.92..0.92) * half,
        )
    };
    let object = |id, (ra, dec): (f64, f64), mag, variability| {
        SimObject::star(id, ra, dec, mag, variability)
    };
    let mut out = Vec::new();
    for i in 0..200 {
        let p = place(&mut rng);
        out.push(object(i, p, rng.random_range(17.0..23.5), None));
    }
    for i in 0..20 {
        let p = place(&mut rng);
        let v = Variability::Periodic {
            period: rng.random_range(0.3..5.0),
            amplitude: 0.3,
            phase: rng.random_range(0.0..std::f64::consts::TAU),
        };
        out.push(object(5_000 + i, p, rng.random_range(19.0..21.0), Some(v)));
    }
    // Transients apart from each other (a blend of two is a deblending question).
    let mut placed: Vec<(f64, f64)> = Vec::new();
    for i in 0..60 {
        let p = loop {
            let p = place(&mut rng);
            if placed
                .iter()
                .all(|q| (q.0 - p.0).hypot(q.1 - p.1) * 3600.0 > 4.0)
            {
                break p;
            }
        };
        placed.push(p);
        let v = Variability::Transient {
            peak_mjd: MJD0 + rng.random_range(0.0..3.0),
            peak_flux: rng.random_range(200.0..8000.0),
            rise: 5.0,
            fall: 20.0,
        };
        out.push(object(10_000 + i, p, 30.0, Some(v)));
    }
    out
}

fn prepared(
    v: &SimVisit,
    objects: &[SimObject],
    seed: u64,
) -> (Exposure, Vec<crate::render::TruthEntry>) {
    let (mut e, truth) = render(v, RA, DEC, SIZE, objects, seed);
    let (img, _, _) = e.planes_mut();
    img.iter_mut().for_each(|p| *p -= SKY_LEVEL as f32);
    (e, truth)
}

/// Completeness above difference-image SNR 6, and DIASources matching nothing that changed.
#[test]
fn finds_the_transients_a_difference_shows() {
    let objects = sky();
    let template_mjd = MJD0 - 300.0;
    let (template, template_truth) = prepared(&visit(1, template_mjd, 0.65, 1.5), &objects, 1);
    let (mut found, mut expected, mut false_positives) = (0, 0, 0);
    for (k, (seeing, dt)) in [(0.8, 0.5), (1.0, 1.5), (0.9, 2.5)].into_iter().enumerate() {
        let v = visit(10 + k as i64, MJD0 + dt, seeing, 0.0);
        let (science, truth) = prepared(&v, &objects, 100 + k as u64);
        let d = subtract(&science, &template, &DiffimConfig::default()).unwrap();
        let sources =
            detect_dia_sources(&d.exposure, &science, &template, &DiaConfig::default()).unwrap();
        let psf = d.exposure.psf.clone().unwrap();
        // What changed since the template, and its true SNR on this difference: the true
        // change over the error of a PSF flux forced at the true place.
        let changed: Vec<(f64, f64, f64)> = truth
            .iter()
            .filter_map(|t| {
                let before = template_truth
                    .iter()
                    .find(|u| u.id == t.id)
                    .map_or(0.0, |u| u.flux_njy);
                let delta = t.flux_njy - before;
                if t.id < 5_000
                    || t.x < 15.0
                    || t.y < 15.0
                    || t.x > SIZE as f64 - 15.0
                    || t.y > SIZE as f64 - 15.0
                {
                    return None;
                }
                let forced = measure(
                    &d.exposure,
                    &psf,
                    &Peak {
                        x: t.x.round() as usize,
                        y: t.y.round() as usize,
                        significance: 0.0,
                    },
                );
                Some((t.x, t.y, delta / forced.psf_flux.err))
            })
            .collect();
        let near = |s: &DiaSource, x: f64, y: f64| (s.x - x).hypot(s.y - y) < 3.0;
        for &(x, y, snr) in &changed {
            if snr.abs() >= 6.0 {
                expected += 1;
                if sources
                    .iter()
                    .any(|s| near(s, x, y) && s.is_negative == (snr < 0.0))
                {
                    found += 1;
                }
            }
        }
        false_positives += sources
            .iter()
            .filter(|s| {
                !changed
                    .iter()
                    .any(|&(x, y, snr)| near(s, x, y) && snr.abs() > 2.0)
            })
            .count();
        // A found transient's flux agrees with the truth (blends of two changes left out).
        for s in sources.iter().filter(|s| s.snr > 20.0 && !s.flags.dipole) {
            let around: Vec<f64> = changed
                .iter()
                .filter(|c| (s.x - c.0).hypot(s.y - c.1) < 8.0)
                .map(|c| c.2)
                .collect();
            if let [snr] = around[..] {
                assert!(
                    (s.snr - snr.abs()).abs() < 0.25 * snr.abs() + 3.0,
                    "SNR {} against {snr}",
                    s.snr
                );
                assert!(s.spuriousness < 0.5, "{s:?}");
                // Nothing here moves: its trail's length is nothing but noise, and the
                // trail holds the PSF's flux.
                let t = s.trail.expect("a trail fitted");
                // (A trail fitted as a point has no length error: nothing constrains the
                // length there.)
                if t.length_err.is_finite() {
                    assert!(t.length < 4.0 * t.length_err, "{t:?}");
                } else {
                    assert!(t.length < 0.01, "{t:?}");
                }
                assert!(t.flux.err.is_finite() && t.ra_err.is_finite(), "{t:?}");
                assert!(
                    (t.flux.value - s.psf_flux.value).abs()
                        < 0.05 * s.psf_flux.value.abs() + 3.0 * s.psf_flux.err,
                    "{t:?} {s:?}"
                );
            }
        }
    }
    assert!(
        expected >= 40,
        "only {expected} changes above SNR 6 to find"
    );
    let completeness = found as f64 / expected as f64;
    assert!(completeness >= 0.95, "found {found} of {expected}");
    assert!(
        false_positives <= 3,
        "{false_positives} false DIASources in 3 visits"
    );
}

#[test]
fn needs_a_psf_and_one_shape() {
    let objects = sky();
    let (science, _) = prepared(&visit(1, MJD0, 0.8, 0.0), &objects, 1);
    let mut no_psf = science.clone();
    no_psf.psf = None;
    assert_eq!(
        detect_dia_sources(&no_psf, &science, &science, &DiaConfig::default()).unwrap_err(),
        DiaError::Missing("difference image", "PSF")
    );
    let small = Exposure::blank(10, 10);
    assert_eq!(
        detect_dia_sources(&science, &science, &small, &DiaConfig::default()).unwrap_err(),
        DiaError::Shape
    );
}

/// Faint DIASources (DMS-REQ-0270): under the threshold, apart from the detected ones,
/// limited in number, and all of them at a watched place.
#[test]
fn faint_dia_sources_are_limited_and_watched_places_always_kept() {
    let objects = sky();
    let (template, _) = prepared(&visit(1, MJD0 - 300.0, 0.65, 1.5), &objects, 1);
    let (science, _) = prepared(&visit(10, MJD0 + 1.0, 0.9, 0.0), &objects, 100);
    let d = subtract(&science, &template, &DiffimConfig::default()).unwrap();
    let all = DiaConfig {
        faint_max: 10_000,
        ..DiaConfig::default()
    };
    let detected = detect_dia_sources(&d.exposure, &science, &template, &all).unwrap();
    let (sources, faint) =
        detect_dia_sources_and_faint(&d.exposure, &science, &template, &all, &[]).unwrap();
    // The detected ones are as without the faint tier (compared as text: NaN, an
    // unmeasured value, is not equal to itself).
    assert_eq!(format!("{sources:?}"), format!("{detected:?}"));
    assert!(faint.len() > 3, "{} faint DIASources", faint.len());
    for f in &faint {
        assert!(
            (4.0..5.0).contains(&f.significance.abs()),
            "{}",
            f.significance
        );
        assert_eq!(f.source.is_negative, f.significance < 0.0);
        assert!(f.watched.is_none());
        assert!(
            sources
                .iter()
                .all(|s| (s.x - f.source.x).hypot(s.y - f.source.y) > 1.0)
        );
    }
    // A limit of two: the two most significant.
    let two = DiaConfig {
        faint_max: 2,
        ..DiaConfig::default()
    };
    let (_, few) =
        detect_dia_sources_and_faint(&d.exposure, &science, &template, &two, &[]).unwrap();
    assert_eq!(few.len(), 2);
    let top = faint
        .iter()
        .map(|f| f.significance.abs())
        .fold(0.0, f64::max);
    assert_eq!(few[0].significance.abs(), top);
    // None in the sample, but a watched place keeps the (positive) faint source there.
    let target = &faint
        .iter()
        .rev()
        .find(|f| !f.source.is_negative)
        .expect("a positive faint DIASource")
        .source;
    let none = DiaConfig {
        faint_max: 0,
        ..DiaConfig::default()
    };
    // A watched place is matched on the peak's pixel: 1 arcsec around the centroid.
    let watch = Watch {
        x: target.x,
        y: target.y,
        radius: 5.0,
    };
    let (_, kept) =
        detect_dia_sources_and_faint(&d.exposure, &science, &template, &none, &[watch]).unwrap();
    assert!(!kept.is_empty());
    assert!(kept.iter().all(|f| f.watched == Some(0)));
    assert!(
        kept.iter()
            .any(|f| f.source.x == target.x && f.source.y == target.y)
    );
    let bad = DiaConfig {
        faint_threshold: 6.0,
        ..DiaConfig::default()
    };
    assert_eq!(
        detect_dia_sources_and_faint(&d.exposure, &science, &template, &bad, &[]).unwrap_err(),
        DiaError::FaintThreshold(6.0)
    );
}

/// A significance image of round Gaussian profiles (x, y, peak, sigma).
fn profiles(size: usize, blobs: &[(f64, f64, f64, f64)]) -> Image<f32> {
    let mut data = vec![0.0f32; size * size];
    for (i, v) in data.iter_mut().enumerate() {
        let (x, y) = ((i % size) as f64, (i / size) as f64);
        *v = blobs
            .iter()
            .map(|&(bx, by, peak, s)| {
                peak * (-((x - bx).powi(2) + (y - by).powi(2)) / (2.0 * s * s)).exp()
            })
            .sum::<f64>() as f32;
    }
    Image::from_vec(size, size, data).unwrap()
}

fn footprint_with(peaks: &[(usize, usize, f64)]) -> Footprint {
    Footprint {
        spans: vec![],
        bbox: (0, 0, 40, 40),
        peaks: peaks
            .iter()
            .map(|&(x, y, significance)| Peak { x, y, significance })
            .collect(),
        negative: false,
    }
}

#[test]
fn a_lump_on_a_bright_source_is_no_source_of_its_own_and_a_neighbour_is() {
    let config = DiaConfig::default();
    // A source of significance 70 with a lump of a few per cent 3 pixels out: its local
    // maximum barely rises out of the profile.
    let lumpy = profiles(40, &[(20.0, 20.0, 70.0, 2.5), (23.0, 20.0, 6.0, 1.0)]);
    let lump_peak = f64::from(lumpy.get(23, 20).unwrap());
    let f = distinct_peaks(
        footprint_with(&[(20, 20, 70.0), (23, 20, lump_peak)]),
        &lumpy,
        &config,
    );
    assert_eq!(f.peaks.len(), 1);
    assert_eq!((f.peaks[0].x, f.peaks[0].y), (20, 20));
    // Two sources 10 pixels apart, the fainter at a third of the other: a deep valley.
    let pair = profiles(40, &[(15.0, 20.0, 60.0, 2.5), (25.0, 20.0, 20.0, 2.5)]);
    let f = distinct_peaks(
        footprint_with(&[(15, 20, 60.0), (25, 20, 20.0)]),
        &pair,
        &config,
    );
    assert_eq!(f.peaks.len(), 2);
    // A negative footprint is read with its sign turned.
    let dip = profiles(40, &[(15.0, 20.0, -60.0, 2.5), (25.0, 20.0, -20.0, 2.5)]);
    let mut negative = footprint_with(&[(15, 20, -60.0), (25, 20, -20.0)]);
    negative.negative = true;
    assert_eq!(distinct_peaks(negative, &dip, &config).peaks.len(), 2);
}
