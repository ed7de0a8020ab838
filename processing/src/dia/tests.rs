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
