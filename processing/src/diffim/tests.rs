use rand::{Rng, SeedableRng};

use super::*;
use crate::detection::Peak;
use crate::measurement::measure;
use crate::render::{SKY_LEVEL, render};
use crate::sky::{SimObject, SimVisit, Variability, mag_to_njy};

const RA: f64 = 150.0;
const DEC: f64 = 2.0;
const SIZE: usize = 512;
const PEAK_MJD: f64 = 60_400.0;

fn visit(id: i64, mjd: f64, seeing: f64, depth_offset: f64) -> SimVisit {
    SimVisit {
        visit: id,
        band: 2,
        ra: RA,
        dec: DEC,
        sky_rotation: 0.0,
        mjd_start: mjd,
        exp_time: 30.0,
        airmass: 1.1,
        seeing,
        depth_offset,
        altitude: 60.0,
        azimuth: 0.0,
    }
}

/// Stars at random places, one transient at the centre peaking at `PEAK_MJD`.
fn sky() -> Vec<SimObject> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let half = SIZE as f64 * 0.2 / 3600.0 / 2.0;
    let star = SimObject::star;
    let mut out: Vec<SimObject> = (0..160)
        .map(|i| {
            let ra = RA + rng.random_range(-0.95..0.95) * half / DEC.to_radians().cos();
            let dec = DEC + rng.random_range(-0.95..0.95) * half;
            star(i, ra, dec, rng.random_range(17.0..23.0), None)
        })
        .collect();
    // A faint host that brightens by 5000 nJy (21.65 mag) at peak.
    out.push(star(
        1000,
        RA + 3.0 / 3600.0,
        DEC + 2.0 / 3600.0,
        26.0,
        Some(Variability::Transient {
            peak_mjd: PEAK_MJD,
            peak_flux: 5000.0,
            rise: 10.0,
            fall: 30.0,
        }),
    ));
    out
}

/// Renders a visit, sky subtracted. The noise seed is mixed with the visit number, so
/// callers give each image a seed of its own.
fn prepared(v: &SimVisit, seed: u64) -> (Exposure, Vec<crate::render::TruthEntry>) {
    let (mut e, truth) = render(v, RA, DEC, SIZE, &sky(), seed);
    let (img, _, _) = e.planes_mut();
    img.iter_mut().for_each(|p| *p -= SKY_LEVEL as f32);
    (e, truth)
}

fn transient_flux(d: &Difference, truth: &[crate::render::TruthEntry]) -> (f64, f64) {
    let t = truth
        .iter()
        .find(|t| t.id == 1000)
        .expect("the transient is on the image");
    let psf = d.exposure.psf.as_ref().unwrap();
    let m = measure(
        &d.exposure,
        psf,
        &Peak {
            x: t.x.round() as usize,
            y: t.y.round() as usize,
            significance: 10.0,
        },
    );
    assert!(m.calibrated);
    (m.psf_flux.value, m.psf_flux.err)
}

/// The spread of the difference over its stated noise, away from sources.
fn normalised_spread(d: &Difference) -> f64 {
    let (img, var) = (d.exposure.image().data(), d.exposure.variance().data());
    let nodata = MaskPlane::NoData.bit();
    let mask = d.exposure.mask().bits().data();
    let mut z: Vec<f64> = (0..img.len())
        .filter(|i| mask[*i] & nodata == 0 && var[*i] > 0.0)
        .map(|i| img[i] as f64 / (var[i] as f64).sqrt())
        .collect();
    // Robust: the interquartile range of a unit normal is 1.349.
    z.sort_by(f64::total_cmp);
    (z[3 * z.len() / 4] - z[z.len() / 4]) / 1.349
}

#[test]
fn subtracts_a_sharper_template_and_keeps_the_transient() {
    let template_visit = visit(1, PEAK_MJD - 200.0, 0.6, 1.5);
    let science_visit = visit(2, PEAK_MJD, 0.95, 0.0);
    let (template, _) = prepared(&template_visit, 100);
    let (science, truth) = prepared(&science_visit, 200);
    let d = subtract(&science, &template, &DiffimConfig::default()).unwrap();
    assert_eq!(d.direction, Direction::ConvolveTemplate);
    assert!(d.stamps_used >= 9, "{} stamps", d.stamps_used);
    // Same calibration on both sides: the kernel conserves flux.
    assert!(
        (d.kernel.sum() - 1.0).abs() < 0.01,
        "kernel sum {}",
        d.kernel.sum()
    );
    // White noise of the stated size: decorrelation restored it.
    let spread = normalised_spread(&d);
    assert!((0.9..1.1).contains(&spread), "normalised spread {spread}");
    let (flux, err) = transient_flux(&d, &truth);
    let injected = truth.iter().find(|t| t.id == 1000).unwrap().flux_njy - mag_to_njy(26.0);
    assert!(
        (flux - injected).abs() < 4.0 * err,
        "transient {flux} ± {err} nJy, injected {injected}"
    );
    // Static stars leave nothing above the noise: the brightest's residual is within 5 sigma
    // and under half a per cent of its flux.
    let brightest = truth
        .iter()
        .filter(|t| t.id != 1000 && t.x > 30.0 && t.y > 30.0 && t.x < 480.0 && t.y < 480.0)
        .max_by(|a, b| a.flux_njy.total_cmp(&b.flux_njy))
        .unwrap();
    let m = measure(
        &d.exposure,
        d.exposure.psf.as_ref().unwrap(),
        &Peak {
            x: brightest.x.round() as usize,
            y: brightest.y.round() as usize,
            significance: 10.0,
        },
    );
    let residual = m.psf_flux.value;
    assert!(
        residual.abs() < (5.0 * m.psf_flux.err).max(0.005 * brightest.flux_njy),
        "residual {residual} of a {} nJy star",
        brightest.flux_njy
    );
}

#[test]
fn convolves_the_science_image_when_it_is_sharper() {
    let template_visit = visit(1, PEAK_MJD - 200.0, 1.0, 1.5);
    let science_visit = visit(2, PEAK_MJD, 0.6, 0.0);
    let (template, _) = prepared(&template_visit, 300);
    let (science, truth) = prepared(&science_visit, 400);
    let d = subtract(&science, &template, &DiffimConfig::default()).unwrap();
    assert_eq!(d.direction, Direction::ConvolveScience);
    let (flux, err) = transient_flux(&d, &truth);
    let injected = truth.iter().find(|t| t.id == 1000).unwrap().flux_njy - mag_to_njy(26.0);
    assert!(
        flux > 0.0,
        "science minus template is positive for a brightening"
    );
    assert!(
        (flux - injected).abs() < 4.0 * err,
        "transient {flux} ± {err} nJy, injected {injected}"
    );
}

#[test]
fn the_kernel_image_sums_to_the_fitted_scale() {
    let (template, _) = prepared(&visit(1, PEAK_MJD - 200.0, 0.6, 1.5), 500);
    let (mut science, _) = prepared(&visit(2, PEAK_MJD - 100.0, 0.9, 0.0), 600);
    // The science image twice as bright: the kernel must carry the factor 2.
    let (img, _, var) = science.planes_mut();
    img.iter_mut().for_each(|p| *p *= 2.0);
    var.iter_mut().for_each(|p| *p *= 4.0);
    let d = subtract(&science, &template, &DiffimConfig::default()).unwrap();
    assert!(
        (d.kernel.sum() - 2.0).abs() < 0.02,
        "kernel sum {}",
        d.kernel.sum()
    );
    let k = d.kernel.image_at(100.0, 400.0);
    let sum: f64 = k.data().iter().map(|v| *v as f64).sum();
    assert!((sum - d.kernel.sum()).abs() < 1e-3, "{sum}");
}

#[test]
fn refuses_bad_input() {
    let (template, _) = prepared(&visit(1, PEAK_MJD - 200.0, 0.6, 1.5), 5);
    let mut config = DiffimConfig::default();
    config.basis_degrees.pop();
    assert!(matches!(
        subtract(&template, &template, &config),
        Err(DiffimError::Config(_))
    ));
    let mut no_psf = template.clone();
    no_psf.psf = None;
    assert_eq!(
        subtract(&no_psf, &template, &DiffimConfig::default()).unwrap_err(),
        DiffimError::NoPsf("science image")
    );
    let blank = Exposure::blank(SIZE, SIZE);
    let mut blank = blank;
    blank.psf = template.psf.clone();
    assert!(matches!(
        subtract(&blank, &blank, &DiffimConfig::default()),
        Err(DiffimError::TooFewStamps(0, _))
    ));
}

#[test]
fn decorrelation_whitens_a_convolved_reference() {
    // K a normalised Gaussian of sigma 1.5; the reference 16 times less noisy per pixel.
    let half = 10;
    let n = 2 * half + 1;
    let mut k: Vec<f64> = (0..n * n)
        .map(|i| {
            let (u, v) = ((i % n) as f64 - 10.0, (i / n) as f64 - 10.0);
            (-(u * u + v * v) / (2.0 * 1.5 * 1.5)).exp()
        })
        .collect();
    let s: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    let d = decorrelation_kernel(&k, half, 1.0, 1.0 / 16.0);
    let sum: f64 = d.iter().sum();
    let power: f64 = d.iter().map(|v| v * v).sum();
    assert!((sum - 1.0).abs() < 1e-6, "sum {sum}");
    // The output's noise: sum over the kernel pair of D*D*(the input's covariance), which for
    // a nearly white input is about the sum of squares.
    assert!((1.0..1.07).contains(&power), "power {power}");
}

#[test]
fn the_median_is_the_middle_value_or_the_mean_of_the_two() {
    assert_eq!(super::median(&mut [5.0, 1.0, 3.0]), 3.0);
    assert_eq!(super::median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    assert!(super::median(&mut []).is_nan());
}
