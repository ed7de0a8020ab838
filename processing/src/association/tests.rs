use rand::{Rng, SeedableRng};

use super::*;
use crate::dia::{DiaFlags, DiaSource};
use crate::measurement::Flux;
use crate::sky::gaussian;

fn source(ra: f64, dec: f64, err_arcsec: f64, flux: f64) -> DiaSource {
    let e = err_arcsec / 3600.0;
    DiaSource {
        x: 0.0,
        y: 0.0,
        x_err: 0.1,
        y_err: 0.1,
        ra,
        dec,
        ra_err: e,
        dec_err: e,
        snr: 10.0,
        is_negative: flux < 0.0,
        psf_flux: Flux {
            value: flux,
            err: 100.0,
        },
        ap_flux: Flux {
            value: flux,
            err: 100.0,
        },
        shape: None,
        extendedness: None,
        science_flux: Flux {
            value: flux,
            err: 100.0,
        },
        template_flux: Flux {
            value: 0.0,
            err: 100.0,
        },
        spuriousness: 0.0,
        flags: DiaFlags::default(),
        psf_ndata: 81,
        psf_chi2: 80.0,
        psf_ln_l: -200.0,
        bbox_size: 5,
        psf_moments: crate::psf::Moments {
            ixx: 2.0,
            iyy: 2.0,
            ixy: 0.0,
        },
        trail: None,
        dipole: None,
    }
}

/// Isolated variables seen on 20 visits with centroid errors of 0.1 arcsec, a fifth of
/// them missed on each visit: every source lands on its own variable's DIAObject.
#[test]
fn isolated_variables_associate_purely() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    // 400 variables at least 5 arcsec apart, across RA 0.
    let mut truth: Vec<(f64, f64)> = Vec::new();
    while truth.len() < 400 {
        let p = (
            rng.random_range(-0.1..0.1f64).rem_euclid(360.0),
            rng.random_range(-0.1..0.1),
        );
        let far = truth.iter().all(|q| {
            SkyCoord::new(q.0, q.1)
                .unwrap()
                .separation(&SkyCoord::new(p.0, p.1).unwrap())
                * 3600.0
                > 5.0
        });
        if far {
            truth.push(p);
        }
    }
    let mut a = Associator::new(AssociationConfig::default());
    let mut next = 0;
    let mut owner: HashMap<i64, Vec<usize>> = HashMap::new();
    let mut total = 0;
    for visit in 0..20 {
        let mjd = 60_000.0 + visit as f64;
        let seen: Vec<usize> = (0..truth.len()).filter(|_| rng.random_bool(0.8)).collect();
        let sources: Vec<DiaSource> = seen
            .iter()
            .map(|&t| {
                let (ra, dec) = truth[t];
                let s = 0.1 / 3600.0;
                source(
                    (ra + s * gaussian(&mut rng) / dec.to_radians().cos()).rem_euclid(360.0),
                    dec + s * gaussian(&mut rng),
                    0.1,
                    if visit % 2 == 0 { 1000.0 } else { -1000.0 },
                )
            })
            .collect();
        let assoc = a.associate(&sources, visit % 6, mjd, || {
            next += 1;
            next
        });
        for (t, s) in seen.iter().zip(&assoc) {
            owner.entry(s.dia_object_id).or_default().push(*t);
            total += 1;
        }
    }
    // Purity: the sources of each DIAObject come from one variable.
    let mixed: usize = owner
        .values()
        .map(|ts| ts.iter().filter(|t| **t != ts[0]).count())
        .sum();
    let purity = 1.0 - mixed as f64 / total as f64;
    assert!(purity >= 0.99, "purity {purity}");
    // Nor is any variable split over several DIAObjects.
    assert_eq!(a.objects().len(), truth.len());
    // The summaries: every object has its sources counted and a mean near its true place.
    for o in a.objects() {
        let ts = &owner[&o.id];
        assert_eq!(o.n_dia_sources as usize, ts.len());
        let (ra, dec) = truth[ts[0]];
        let d = SkyCoord::new(ra, dec)
            .unwrap()
            .separation(&SkyCoord::new(o.ra, o.dec).unwrap())
            * 3600.0;
        assert!(
            d < 5.0 * 0.1 / (ts.len() as f64).sqrt() + 0.01,
            "{d} arcsec"
        );
        assert!(o.first_mjd <= o.last_mjd);
    }
}

#[test]
fn one_source_per_object_per_visit_nearest_first() {
    let mut a = Associator::new(AssociationConfig::default());
    let mut id = 100;
    let mut new_id = || {
        id += 1;
        id
    };
    let first = a.associate(&[source(10.0, 20.0, 0.1, 500.0)], 2, 1.0, &mut new_id);
    assert!(first[0].created);
    // Two sources of one visit near the same object: the nearer takes it, the other starts
    // an object of its own.
    let second = a.associate(
        &[
            source(10.0, 20.0 + 0.6 / 3600.0, 0.1, 500.0),
            source(10.0, 20.0 + 0.2 / 3600.0, 0.1, 700.0),
        ],
        2,
        2.0,
        &mut new_id,
    );
    assert!(second[0].created);
    assert_eq!(second[1].dia_object_id, first[0].dia_object_id);
    assert!((second[1].distance_arcsec - 0.2).abs() < 1e-6);
    let o = a.get(first[0].dia_object_id).unwrap();
    assert_eq!(o.n_dia_sources, 2);
    let r = o.fluxes[2];
    assert_eq!(r.n, 2);
    assert!((r.mean().unwrap() - 600.0).abs() < 1e-9);
    assert!((r.sigma().unwrap() - 200f64.sqrt() * 10.0).abs() < 1e-6);
    // Chi-square about the mean: (100² + 100²) / 100².
    assert!((r.chi2().unwrap() - 2.0).abs() < 1e-9);
    // 500 then 700 a day later.
    assert_eq!((r.min(), r.max()), (Some(500.0), Some(700.0)));
    assert!((r.max_slope().unwrap() - 200.0).abs() < 1e-9);
    assert!((r.err_mean().unwrap() - 100.0).abs() < 1e-9);
    assert_eq!(o.fluxes[1].min(), None);
    // Too short a span for a proper motion.
    assert_eq!(o.astrometry.motion(), None);
    // Forced photometry of each visit: weighted means of both images' fluxes.
    let id = first[0].dia_object_id;
    for (mjd, diff, sci) in [(1.0, 100.0, 1100.0), (2.0, 300.0, 1300.0)] {
        let f = |v| Flux {
            value: v,
            err: 50.0,
        };
        assert!(a.add_forced(id, 2, mjd, f(diff), f(sci)));
    }
    let o = a.get(id).unwrap();
    assert!((o.forced[2].mean().unwrap() - 200.0).abs() < 1e-9);
    assert!((o.science[2].mean().unwrap() - 1200.0).abs() < 1e-9);
    assert!((o.science[2].mean_err().unwrap() - 50.0 / 2f64.sqrt()).abs() < 1e-9);
    assert!(!a.add_forced(
        999_999,
        2,
        3.0,
        Flux {
            value: 1.0,
            err: 1.0
        },
        Flux {
            value: 1.0,
            err: 1.0
        }
    ));
    // Beyond the radius: a new object.
    let far = a.associate(
        &[source(10.0, 20.0 + 3.0 / 3600.0, 0.1, 1.0)],
        2,
        3.0,
        &mut new_id,
    );
    assert!(far[0].created);
}

/// A night that starts from the DIASources and forced sources of the nights before, replayed,
/// carries on as if it had seen them: the same summaries, the next source on the same
/// object, and a period once the light curve spans enough nights.
#[test]
fn a_night_continues_from_replayed_history() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let (ra, dec, period) = (150.0, -30.0, 1.7);
    let flux_at = |mjd: f64| 2000.0 * (std::f64::consts::TAU * mjd / period).sin();
    let mut whole = Associator::new(AssociationConfig::default());
    let mut next = 0;
    let mut new_id = || {
        next += 1;
        next
    };
    // What the Level 1 database keeps: each DIASource with its object, each forced flux.
    let mut kept_sources = Vec::new();
    let mut kept_forced = Vec::new();
    for night in 0..30 {
        for k in 0..2 {
            let mjd = 61_000.0 + night as f64 + 0.02 * k as f64 + rng.random_range(0.0..0.2);
            let s = source(
                ra + gaussian(&mut rng) * 0.1 / 3600.0,
                dec + gaussian(&mut rng) * 0.1 / 3600.0,
                0.1,
                flux_at(mjd) + gaussian(&mut rng) * 100.0,
            );
            let a = whole.associate(std::slice::from_ref(&s), 2, mjd, &mut new_id);
            let id = a[0].dia_object_id;
            kept_sources.push((id, Detection::from(&s), mjd));
            let diff = Flux {
                value: flux_at(mjd) + gaussian(&mut rng) * 100.0,
                err: 100.0,
            };
            let sci = Flux {
                value: 5000.0 + diff.value,
                err: 100.0,
            };
            whole.add_forced(id, 2, mjd, diff, sci);
            kept_forced.push((id, mjd, diff, sci));
        }
    }
    assert_eq!(whole.objects().len(), 1);
    let mut replayed = Associator::new(AssociationConfig::default());
    for (id, d, mjd) in &kept_sources {
        replayed.add_earlier(*id, d, 2, *mjd);
    }
    for (id, mjd, diff, sci) in &kept_forced {
        assert!(replayed.add_forced(*id, 2, *mjd, *diff, *sci));
    }
    let (a, b) = (&whole.objects()[0], &replayed.objects()[0]);
    assert_eq!(a.n_dia_sources, b.n_dia_sources);
    assert!((a.ra - b.ra).abs() < 1e-12 && (a.dec - b.dec).abs() < 1e-12);
    assert_eq!(a.fluxes, b.fluxes);
    assert_eq!(a.forced, b.forced);
    assert_eq!(a.light_curve, b.light_curve);
    // The next night's source finds the replayed object.
    let s = source(ra, dec + 0.1 / 3600.0, 0.1, 1500.0);
    let id = a.id;
    let later = replayed.associate(&[s], 2, 61_031.0, || unreachable!("no new object"));
    assert_eq!(later[0].dia_object_id, id);
    assert!(replayed.update_periodicity(id, &PeriodSearch::default()));
    let p = replayed.get(id).unwrap().periodicity.unwrap();
    assert!((p.period - period).abs() / period < 0.01, "{p:?}");
    assert!(!replayed.update_periodicity(-1, &PeriodSearch::default()));
}

mod solar_system_association {
    use super::source;
    use crate::association::solar_system::*;
    use crate::wcs::SkyCoord;

    fn predicted(id: i64, ra: f64, dec: f64, err: f64) -> SsPrediction {
        SsPrediction {
            ss_object_id: id,
            position: SkyCoord::new(ra, dec).unwrap(),
            error_arcsec: err,
        }
    }

    #[test]
    fn nearest_positive_source_within_the_radius_is_taken() {
        let arcsec = 1.0 / 3600.0;
        let sources = [
            source(10.0 + 0.4 * arcsec, 0.0, 0.05, 500.0),
            source(10.0 - 0.2 * arcsec, 0.0, 0.05, -500.0), // a decrease: never an asteroid
            source(10.0 + 1.5 * arcsec, 0.0, 0.05, 500.0),
            source(20.0, 5.0, 0.05, 500.0),
        ];
        let predictions = [predicted(7, 10.0, 0.0, 0.1), predicted(8, 30.0, 0.0, 0.1)];
        let m = associate_solar_system(&sources, &predictions, 2.0);
        let first = m[0].expect("the nearest positive source");
        assert_eq!(
            (first.ss_object_id, first.prediction, first.rank),
            (7, 0, 1)
        );
        assert!((first.distance_arcsec - 0.4).abs() < 1e-6);
        assert_eq!(m[1], None);
        assert_eq!(m[2], None, "one source per prediction");
        assert_eq!(m[3], None);
    }

    #[test]
    fn contested_sources_go_to_the_nearer_prediction_and_ranks_count_neighbours() {
        let arcsec = 1.0 / 3600.0;
        let sources = [
            source(10.0, 0.0, 0.05, 500.0),
            source(10.0 + 1.0 * arcsec, 0.0, 0.05, 500.0),
        ];
        // Both predictions are nearest to source 0; the closer one wins it and the other
        // takes source 1, which is its second nearest.
        let predictions = [
            predicted(1, 10.0 + 0.3 * arcsec, 0.0, 0.1),
            predicted(2, 10.0 + 0.1 * arcsec, 0.0, 0.1),
        ];
        let m = associate_solar_system(&sources, &predictions, 2.0);
        assert_eq!(m[0].unwrap().ss_object_id, 2);
        assert_eq!((m[1].unwrap().ss_object_id, m[1].unwrap().rank), (1, 2));
    }

    #[test]
    fn an_uncertain_prediction_searches_wider() {
        let arcsec = 1.0 / 3600.0;
        let sources = [source(10.0, 4.0 * arcsec, 0.05, 500.0)];
        let sure = [predicted(1, 10.0, 0.0, 0.1)];
        assert_eq!(associate_solar_system(&sources, &sure, 2.0)[0], None);
        let vague = [predicted(1, 10.0, 0.0, 1.5)];
        assert!(associate_solar_system(&sources, &vague, 2.0)[0].is_some());
        assert!((search_radius(&vague[0], 2.0) - 4.5).abs() < 1e-12);
    }

    #[test]
    fn a_summary_gives_the_absolute_magnitude_its_fluxes_imply() {
        use crate::measurement::Flux;
        use crate::orbits::{KeplerOrbit, ephemeris};
        use crate::sky::mag_to_njy;
        use crate::testkit::Normal;
        let orbit = KeplerOrbit::new(2.4, 0.12, 5.0, 80.0, 30.0, 200.0, 61_000.0).unwrap();
        let (h, g) = (17.3, 0.15);
        let mut noise = Normal(8);
        let mut s = SsSummary::default();
        // Two weeks of 2 % photometry in r, and one flux below zero (no H from it).
        for k in 0..30 {
            let mjd = 61_000.0 + k as f64 * 0.5;
            let eph = ephemeris(&orbit, mjd);
            let flux = mag_to_njy(eph.v_magnitude(h, g));
            let err = 0.02 * flux;
            let f = Flux {
                value: flux + err * noise.next(),
                err,
            };
            s.add(2, mjd, f, &eph, g);
        }
        let eph = ephemeris(&orbit, 61_020.0);
        s.add(
            2,
            61_020.0,
            Flux {
                value: -5.0,
                err: 10.0,
            },
            &eph,
            g,
        );
        assert_eq!(s.n_obs, 31);
        assert!((s.arc() - 20.0).abs() < 1e-12);
        let (fit, err, n) = s.h(2).unwrap();
        assert_eq!(n, 30);
        assert!((fit - h).abs() < 4.0 * err && err < 0.01, "{fit} {err}");
        assert_eq!(s.h(0), None);
        assert_eq!(s.h(9), None);
    }
}
