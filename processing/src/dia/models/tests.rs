use super::*;
use crate::image::MaskPlane;
use crate::testkit::{Normal, star_field};

const SIGMA: f64 = 1.6;
const NOISE: f64 = 10.0;

fn round_psf() -> Moments {
    Moments {
        ixx: SIGMA * SIGMA,
        iyy: SIGMA * SIGMA,
        ixy: 0.0,
    }
}

/// A trail drawn as a detector records it: the pixel-integrated PSF at 400 points along
/// the segment, each with its share of the flux.
fn trail_field((x, y): (f64, f64), length: f64, angle: f64, flux: f64, seed: u64) -> Exposure {
    let n = 400;
    let (sin, cos) = angle.sin_cos();
    let points: Vec<(f64, f64, f64)> = (0..n)
        .map(|i| {
            let t = length * ((i as f64 + 0.5) / n as f64 - 0.5);
            (x + t * cos, y + t * sin, flux / n as f64)
        })
        .collect();
    star_field((96, 96), &points, SIGMA, NOISE, &mut Normal(seed))
}

#[test]
fn a_trail_is_measured_for_length_angle_centre_and_flux() {
    let (length, angle, flux) = (14.0, 35f64.to_radians(), 60_000.0);
    let e = trail_field((47.3, 48.6), length, angle, flux, 3);
    // Seeded from the centroid a pixel off and from no shape at all, only the footprint's
    // size: the fit finds the trail.
    let t = fit_trail(&e, round_psf(), (48.0, 48.0), None, 20.0).expect("a fit");
    assert!(
        (t.x - 47.3).abs() < 0.1 && (t.y - 48.6).abs() < 0.1,
        "{t:?}"
    );
    assert!((t.length - length).abs() < 0.3, "{t:?}");
    assert!((t.angle - angle).abs() < 1f64.to_radians(), "{t:?}");
    assert!((t.flux / flux - 1.0).abs() < 0.02, "{t:?}");
    // Errors are those of the noise: the truth lies within a few of them.
    for (got, want, err) in [
        (t.length, length, t.length_err),
        (t.angle, angle, t.angle_err),
        (t.flux, flux, t.flux_err),
    ] {
        assert!(
            err > 0.0 && (got - want).abs() < 4.0 * err + 0.02 * want.abs().min(1.0),
            "{t:?}"
        );
    }
    // The chi-squared is that of the noise: about one per pixel fitted.
    let per_pixel = t.chi2 / t.ndata as f64;
    assert!((0.8..1.25).contains(&per_pixel), "{per_pixel} {t:?}");
    assert!(!t.edge);
}

#[test]
fn the_seed_from_the_shape_gives_the_same_trail() {
    let angle = 120f64.to_radians();
    let e = trail_field((50.0, 45.0), 9.0, angle, 40_000.0, 5);
    // A segment of length L adds L²/12 along it.
    let extra = 81.0 / 12.0;
    let (s, c) = angle.sin_cos();
    let shape = Moments {
        ixx: SIGMA * SIGMA + extra * c * c,
        iyy: SIGMA * SIGMA + extra * s * s,
        ixy: extra * s * c,
    };
    let t = fit_trail(&e, round_psf(), (50.0, 45.0), Some(shape), 0.0).expect("a fit");
    assert!((t.length - 9.0).abs() < 0.3, "{t:?}");
    assert!((t.angle - angle).abs() < 1.5f64.to_radians(), "{t:?}");
}

#[test]
fn a_point_source_has_a_short_trail_and_its_psf_flux() {
    let e = star_field(
        (64, 64),
        &[(31.4, 32.2, 30_000.0)],
        SIGMA,
        NOISE,
        &mut Normal(9),
    );
    let t = fit_trail(&e, round_psf(), (31.0, 32.0), Some(round_psf()), 5.0).expect("a fit");
    assert!(t.length < 1.5, "{t:?}");
    assert!((t.flux / 30_000.0 - 1.0).abs() < 0.02, "{t:?}");
    // A point: its centre and flux keep their errors, whatever its length's.
    for err in [t.x_err, t.y_err, t.flux_err] {
        assert!(err.is_finite() && err > 0.0, "{t:?}");
    }
    assert!(
        (t.x - 31.4).abs() < 0.05 && (t.y - 32.2).abs() < 0.05,
        "{t:?}"
    );
}

#[test]
fn a_trail_off_the_image_is_flagged_at_the_edge() {
    // Its end two pixels from the edge: its light, two sigmas around it, reaches past.
    let e = trail_field((10.0, 50.0), 16.0, 0.0, 60_000.0, 4);
    let t = fit_trail(&e, round_psf(), (10.0, 50.0), None, 20.0).expect("a fit");
    assert!((t.length - 16.0).abs() < 0.3, "{t:?}");
    assert!(t.edge, "{t:?}");
    // Four pixels further in, it does not.
    let e = trail_field((14.0, 50.0), 16.0, 0.0, 60_000.0, 4);
    let t = fit_trail(&e, round_psf(), (14.0, 50.0), None, 20.0).expect("a fit");
    assert!(!t.edge, "{t:?}");
}

#[test]
fn nothing_to_fit_is_no_fit_and_no_panic() {
    let mut e = star_field((64, 64), &[], SIGMA, NOISE, &mut Normal(1));
    {
        let (_, mask, _) = e.planes_mut();
        for y in 0..64 {
            for x in 0..64 {
                mask.set(x, y, MaskPlane::NoData);
            }
        }
    }
    assert_eq!(fit_trail(&e, round_psf(), (30.0, 30.0), None, 5.0), None);
    assert_eq!(
        fit_dipole(&e, round_psf(), (30.0, 30.0), (33.0, 30.0)),
        None
    );
    // Off the image entirely, and with a PSF that is not an ellipse.
    assert_eq!(fit_trail(&e, round_psf(), (-500.0, 30.0), None, 5.0), None);
    let flat = Moments {
        ixx: -1.0,
        iyy: 1.0,
        ixy: 0.0,
    };
    assert_eq!(fit_trail(&e, flat, (30.0, 30.0), None, 5.0), None);
}

#[test]
fn a_dipole_is_measured_for_both_lobes() {
    let e = star_field(
        (64, 64),
        &[(30.2, 31.7, 25_000.0), (32.9, 30.4, -18_000.0)],
        SIGMA,
        NOISE,
        &mut Normal(21),
    );
    // Seeded at the lobes' peak pixels.
    let d = fit_dipole(&e, round_psf(), (30.0, 32.0), (33.0, 30.0)).expect("a fit");
    assert!(
        (d.positive.0 - 30.2).abs() < 0.05 && (d.positive.1 - 31.7).abs() < 0.05,
        "{d:?}"
    );
    assert!(
        (d.negative.0 - 32.9).abs() < 0.05 && (d.negative.1 - 30.4).abs() < 0.05,
        "{d:?}"
    );
    assert!((d.positive_flux / 25_000.0 - 1.0).abs() < 0.02, "{d:?}");
    assert!((d.negative_flux / 18_000.0 - 1.0).abs() < 0.02, "{d:?}");
    assert!(
        (d.mean_flux() - 21_500.0).abs() < 4.0 * d.mean_flux_err + 200.0,
        "{d:?}"
    );
    assert!(
        (d.flux_diff() - 7_000.0).abs() < 4.0 * d.flux_diff_err + 300.0,
        "{d:?}"
    );
    assert!((d.length() - 2.7f64.hypot(1.3)).abs() < 0.1, "{d:?}");
    let per_pixel = d.chi2 / d.ndata as f64;
    assert!((0.8..1.25).contains(&per_pixel), "{per_pixel} {d:?}");
}

#[test]
fn a_lone_positive_source_has_no_negative_lobe() {
    let e = star_field(
        (64, 64),
        &[(30.0, 30.0, 25_000.0)],
        SIGMA,
        NOISE,
        &mut Normal(2),
    );
    // Nothing holds the negative lobe: it wanders off the pixels and the fit fails.
    assert_eq!(
        fit_dipole(&e, round_psf(), (30.0, 30.0), (36.0, 30.0)),
        None
    );
}

#[test]
fn the_complementary_error_function_is_good_to_two_parts_in_ten_million() {
    // erfc at known points (Abramowitz & Stegun table 7.1), both signs of the argument.
    for (z, want) in [
        (0.0, 1.0),
        (0.5, 0.479_500_122_186_953_5),
        (1.0, 0.157_299_207_050_285_1),
        (2.0, 0.004_677_734_981_047_266),
        (3.0, 2.209_049_699_858_544e-5),
    ] {
        for z in [z, -z] {
            let (c, g) = erfc_abs(z);
            assert!((c - want).abs() < 2e-7, "erfc(|{z}|) = {c}, not {want}");
            assert_eq!(g, (-z * z).exp());
        }
    }
}
