//! `aster simulate`: a simulated survey in a data directory, as the camera and the
//! observatory would deliver it (DMS-REQ-0009, 0296). Raw files of every CCD for the
//! calibration exposures of the night before (bias, dark, dome flats per filter,
//! monochromatic flats, projector spots for crosstalk, sky flats) and for each visit's two
//! snaps, under `raw/<dayobs>/<obsid>/<obsid>_<detector>.fits`; a reference catalogue of
//! stars (`refcat/refcat.parquet`: positions at epoch 2016.0, proper motions, parallaxes,
//! ugrizy magnitudes, with errors); and the truth (`truth/objects.parquet` for every
//! object, `truth/visits.parquet` for every visit and CCD with its expected zeropoint,
//! `truth/sources/<visit>_<detector>.parquet` for what each CCD saw, asteroids included,
//! and `truth/asteroids.parquet` for their tracks).
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use aster_archive::raw_file::write_raw;
use aster_processing::camera::{BAND_WAVELENGTH_NM, Camera};
use aster_processing::camsim::{
    DrawnObject, ExposureSpec, Light, READOUT_TIME, SNAP_TIME, combine_snaps, expected_zero_point,
    simulate, transparency,
};
use aster_processing::raw::{ObsType, mjd_to_iso};
use aster_processing::sky::{self, BANDS, Footprint, SimObject, SimVisit, gaussian, noise_rng};
use rand::Rng;

use crate::tables::{Columns, write_parquet};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SurveySpec {
    pub seed: u64,
    pub visits: usize,
    pub ccds: usize,
    pub ccd_size: usize,
    /// Objects per square degree.
    pub density: f64,
}

/// Centre of the simulated field.
pub const FIELD: (f64, f64) = (62.0, -37.0);

/// Calibration exposures of the night before the first visit.
struct CalibPlan {
    bias: usize,
    dark: usize,
    dark_time: f64,
    flats_per_band: usize,
    mono_wavelengths: &'static [f64],
    flats_per_wavelength: usize,
    spots: usize,
    sky_flats_per_band: usize,
}

const PLAN: CalibPlan = CalibPlan {
    bias: 5,
    dark: 5,
    dark_time: 60.0,
    flats_per_band: 3,
    mono_wavelengths: &[400.0, 550.0, 700.0, 850.0, 1000.0],
    flats_per_wavelength: 3,
    spots: 3,
    sky_flats_per_band: 4,
};

/// Asteroids per square degree at any moment: a few cross each CCD of a visit.
const ASTEROID_DENSITY: f64 = 200.0;

/// One exposure of the plan, before it is drawn on each CCD.
struct Planned<'a> {
    light: Light<'a>,
    obs_type: ObsType,
    tai_start: f64,
    exposure_time: f64,
    snap: u8,
    /// The visit and its truth, for science snaps.
    visit: Option<&'a SimVisit>,
}

/// The observing night (YYYYMMDD) of an MJD: the date twelve hours earlier, so one night
/// keeps one date.
fn day_obs(mjd: f64) -> String {
    mjd_to_iso(mjd - 0.5)[..10].replace('-', "")
}

pub fn simulate_survey(
    dir: &Path,
    registry: &aster_archive::registry::Registry,
    spec: &SurveySpec,
) -> Result<()> {
    if spec.visits == 0 || spec.visits > 1000 {
        bail!("--visits must be between 1 and 1000");
    }
    let camera = Camera::new(spec.seed, spec.ccd_size, spec.ccds)?;
    let started = std::time::Instant::now();
    // The sky around the field: everything the dithered focal plane can reach.
    let pitch_deg = (spec.ccd_size as f64 + aster_processing::camera::CCD_GAP)
        * aster_processing::camera::PIXEL_SCALE
        / 3600.0;
    let reach = 1.5 * pitch_deg * std::f64::consts::SQRT_2 + 0.05;
    let footprint = Footprint {
        ra: FIELD.0,
        dec: FIELD.1,
        radius: reach,
    };
    let area = std::f64::consts::PI * reach * reach;
    let n_objects = (spec.density * area).round() as u64;
    let objects: Vec<SimObject> = sky::objects(spec.seed, n_objects, footprint).collect();
    // Visits: the cadence's conditions, pointed at the field with small dithers.
    let mut rng = noise_rng(spec.seed, 0xd17e);
    let mut visits = sky::cadence(spec.seed, spec.visits as u64, Footprint::for_objects(1));
    for v in &mut visits {
        v.ra = FIELD.0 + rng.random_range(-0.02..0.02) / FIELD.1.to_radians().cos();
        v.dec = FIELD.1 + rng.random_range(-0.02..0.02);
        v.exp_time = 2.0 * SNAP_TIME;
    }
    visits.sort_by(|a, b| a.mjd_start.total_cmp(&b.mjd_start));
    // Asteroids crossing the field during the survey, a few on each CCD of a visit.
    let mjd0 = visits[0].mjd_start;
    let span = visits[visits.len() - 1].mjd_start - mjd0 + 1.0;
    let asteroids = sky::asteroids(spec.seed, ASTEROID_DENSITY, footprint, mjd0, span);
    // Sky flats: dithered night-sky pointings around the field in every band.
    let first_night = visits[0].mjd_start.floor() - 1.0;
    let sky_flat_visits: Vec<SimVisit> = (0..6)
        .flat_map(|band| (0..PLAN.sky_flats_per_band).map(move |i| (band, i)))
        .map(|(band, i)| SimVisit {
            visit: 0,
            band,
            ra: FIELD.0 + rng.random_range(-0.3..0.3),
            dec: FIELD.1 + rng.random_range(-0.3..0.3),
            sky_rotation: rng.random_range(0.0..360.0),
            mjd_start: first_night + 0.2 + 0.002 * (band * 10 + i) as f64,
            exp_time: 60.0,
            airmass: 1.1,
            seeing: 0.8,
            depth_offset: 0.0,
            altitude: 65.0,
            azimuth: 180.0,
        })
        .collect();

    let mut plan: Vec<Planned> = Vec::new();
    let mut t = first_night + 0.6; // calibrations in the afternoon (MJD fraction, UTC)
    let mut add = |plan: &mut Vec<Planned<'_>>, light, obs_type, exposure_time: f64| {
        plan.push(Planned {
            light,
            obs_type,
            tai_start: t,
            exposure_time,
            snap: 0,
            visit: None,
        });
        t += (exposure_time + READOUT_TIME + 1.0) / 86_400.0;
    };
    for _ in 0..PLAN.bias {
        add(&mut plan, Light::Closed, ObsType::Bias, 0.0);
    }
    for _ in 0..PLAN.dark {
        add(&mut plan, Light::Closed, ObsType::Dark, PLAN.dark_time);
    }
    for (band, &wavelength) in BAND_WAVELENGTH_NM.iter().enumerate() {
        for _ in 0..PLAN.flats_per_band {
            let light = Light::Dome {
                band: Some(band),
                wavelength,
                level: 30_000.0,
            };
            add(&mut plan, light, ObsType::Flat, 10.0);
        }
    }
    for &nm in PLAN.mono_wavelengths {
        for _ in 0..PLAN.flats_per_wavelength {
            let light = Light::Dome {
                band: None,
                wavelength: nm,
                level: 30_000.0,
            };
            add(&mut plan, light, ObsType::Flat, 20.0);
        }
    }
    // Enough spots that every amplifier of a CCD is lit many times over.
    let spot_count = (spec.ccd_size / 64).max(16);
    for _ in 0..PLAN.spots {
        let light = Light::Spots {
            count: spot_count,
            level: 250_000.0,
            radius: 6.0,
        };
        add(&mut plan, light, ObsType::Spot, 5.0);
    }
    for v in &sky_flat_visits {
        plan.push(Planned {
            light: Light::Sky {
                visit: v,
                objects: &objects,
                asteroids: &asteroids,
            },
            obs_type: ObsType::SkyFlat,
            tai_start: v.mjd_start,
            exposure_time: v.exp_time,
            snap: 0,
            visit: None,
        });
    }
    for v in &visits {
        for snap in 0..2u8 {
            plan.push(Planned {
                light: Light::Sky {
                    visit: v,
                    objects: &objects,
                    asteroids: &asteroids,
                },
                obs_type: ObsType::Science,
                tai_start: v.mjd_start + snap as f64 * (SNAP_TIME + READOUT_TIME) / 86_400.0,
                exposure_time: SNAP_TIME,
                snap,
                visit: Some(v),
            });
        }
    }

    // Exposure ids: the night and the sequence number within it.
    let mut seq: std::collections::BTreeMap<String, i64> = Default::default();
    // Each visit's objects per CCD, snap by snap, combined when its truth is written.
    let mut drawn: std::collections::BTreeMap<(i64, i64), Vec<Vec<DrawnObject>>> =
        Default::default();
    let mut visit_ids: Vec<(usize, i64)> = Vec::new();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let total = plan.len();
    for (i, p) in plan.iter().enumerate() {
        let night = day_obs(p.tai_start);
        let n = seq.entry(night.clone()).or_default();
        *n += 1;
        let exposure_id: i64 = night.parse::<i64>()? * 100_000 + *n;
        let kind = if p.obs_type == ObsType::Science {
            'O'
        } else {
            'C'
        };
        let obs_id = format!("AS_{kind}_{night}_{n:06}");
        let visit_id = match p.visit {
            Some(v) if p.snap == 0 => {
                let index = visits
                    .iter()
                    .position(|x| std::ptr::eq(x, v))
                    .expect("a planned visit");
                visit_ids.push((index, exposure_id));
                Some(exposure_id)
            }
            Some(v) => {
                let index = visits
                    .iter()
                    .position(|x| std::ptr::eq(x, v))
                    .expect("a planned visit");
                visit_ids
                    .iter()
                    .find(|(i, _)| *i == index)
                    .map(|(_, id)| *id)
            }
            None => None,
        };
        // Science snaps carry the survey's visit id (the first snap's exposure id).
        let visit_copy;
        let light = match (p.light, visit_id) {
            (
                Light::Sky {
                    visit,
                    objects,
                    asteroids,
                },
                Some(id),
            ) => {
                visit_copy = SimVisit {
                    visit: id,
                    ..visit.clone()
                };
                Light::Sky {
                    visit: &visit_copy,
                    objects,
                    asteroids,
                }
            }
            (light, _) => light,
        };
        let out_dir = dir.join("raw").join(&night).join(&obs_id);
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("creating {}", out_dir.display()))?;
        for detector in &camera.detectors {
            let exposure = ExposureSpec {
                light,
                obs_type: p.obs_type,
                obs_id: obs_id.clone(),
                exposure_id,
                snap: p.snap,
                tai_start: p.tai_start,
                exposure_time: p.exposure_time,
            };
            let sim = simulate(&camera, detector, &exposure, spec.seed);
            let path = out_dir.join(format!("{obs_id}_{}.fits", detector.name));
            write_raw(&path, &sim.raw)?;
            if let Some(v) = visit_id {
                drawn.entry((v, detector.id)).or_default().push(sim.objects);
            }
        }
        if (i + 1) % 10 == 0 || i + 1 == total {
            eprintln!(
                "simulated {}/{total} exposures x {} CCDs ({:.0} s)",
                i + 1,
                camera.detectors.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let truth = dir.join("truth");
    std::fs::create_dir_all(truth.join("sources"))?;
    write_parquet(&truth.join("objects.parquet"), &[objects_batch(&objects)?])?;
    write_parquet(
        &truth.join("asteroids.parquet"),
        &[asteroids_batch(&asteroids)?],
    )?;
    write_parquet(
        &dir.join("refcat").join_create()?.join("refcat.parquet"),
        &[refcat_batch(&objects, spec.seed)?],
    )?;
    let mut rows = Vec::new();
    for (index, id) in &visit_ids {
        // The visit as the snaps saw it: with its survey id, which seeds its clouds.
        let v = SimVisit {
            visit: *id,
            ..visits[*index].clone()
        };
        for d in &camera.detectors {
            let zp = expected_zero_point(&camera, d, &v, 2.0 * SNAP_TIME);
            rows.push((*id, v.clone(), d, zp));
            let objs = combine_snaps(drawn.remove(&(*id, d.id)).unwrap_or_default());
            write_parquet(
                &truth
                    .join("sources")
                    .join(format!("{id}_{}.parquet", d.name)),
                &[drawn_batch(&objs, *id, d.id)?],
            )?;
        }
    }
    write_parquet(&truth.join("visits.parquet"), &[visits_batch(&rows)?])?;
    let manifest = serde_json::json!({
        "software": format!("aster {}", env!("CARGO_PKG_VERSION")),
        "seed": spec.seed,
        "visits": spec.visits,
        "ccds": spec.ccds,
        "ccd_size": spec.ccd_size,
        "density_per_deg2": spec.density,
        "objects": objects.len(),
        "exposures": total,
        "field": {"ra": FIELD.0, "dec": FIELD.1},
    });
    std::fs::write(
        dir.join("simulation.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    // The raws and the reference catalogue become datasets of the archive.
    let raws = crate::calibrate::scan_raws(dir)?;
    crate::datasets::register_raws_in_place(registry, &raws)?;
    crate::datasets::register_refcat(registry, &dir.join("refcat").join("refcat.parquet"))?;
    println!(
        "simulated {total} exposures x {} CCDs ({} objects) into {} in {:.0} s",
        camera.detectors.len(),
        objects.len(),
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

trait JoinCreate {
    fn join_create(self) -> Result<PathBuf>;
}

impl JoinCreate for PathBuf {
    /// The directory, created if missing.
    fn join_create(self) -> Result<PathBuf> {
        std::fs::create_dir_all(&self).with_context(|| format!("creating {}", self.display()))?;
        Ok(self)
    }
}

fn objects_batch(objects: &[SimObject]) -> Result<arrow::array::RecordBatch> {
    let mut c = Columns::default();
    c.i64("objectId", objects.iter().map(|o| Some(o.id)).collect());
    c.f64("ra", objects.iter().map(|o| Some(o.ra)).collect())
        .described("deg", "Right ascension at epoch 2016.0");
    c.f64("dec", objects.iter().map(|o| Some(o.dec)).collect())
        .described("deg", "Declination at epoch 2016.0");
    c.bool("isStar", objects.iter().map(|o| Some(o.is_star)).collect());
    c.f64("pmRa", objects.iter().map(|o| Some(o.pm_ra)).collect())
        .described("mas/yr", "Proper motion in RA times cos(dec)");
    c.f64("pmDec", objects.iter().map(|o| Some(o.pm_dec)).collect())
        .described("mas/yr", "Proper motion in Dec");
    c.f64(
        "parallax",
        objects.iter().map(|o| Some(o.parallax)).collect(),
    )
    .described("mas", "Parallax");
    for (b, band) in BANDS.iter().enumerate() {
        c.f64(
            format!("{band}_flux"),
            objects.iter().map(|o| Some(o.flux[b])).collect(),
        )
        .described("nJy", "Mean flux");
    }
    c.f64(
        "halfLightRadius",
        objects.iter().map(|o| Some(o.size)).collect(),
    )
    .described("arcsec", "Disk half-light radius of galaxies");
    let morph = |f: fn(&aster_processing::galaxy::Morphology) -> f64| -> Vec<Option<f64>> {
        objects
            .iter()
            .map(|o| o.morphology(1.0).map(|m| f(&m)))
            .collect()
    };
    c.f64("bulgeFraction", morph(|m| m.bulge_fraction));
    c.f64("axisRatio", morph(|m| m.axis_ratio));
    c.f64("positionAngle", morph(|m| m.angle.to_degrees()))
        .described("deg", "Major axis from +x of the sky's east-west axis");
    c.str(
        "variability",
        objects
            .iter()
            .map(|o| {
                Some(match o.variability {
                    None => "none".to_string(),
                    Some(sky::Variability::Periodic { .. }) => "periodic".into(),
                    Some(sky::Variability::Transient { .. }) => "transient".into(),
                })
            })
            .collect(),
    );
    c.batch()
}

/// Stars brighter than r = 21, as an astrometric and photometric reference catalogue
/// would list them: positions (epoch 2016.0), proper motions and parallaxes with Gaia-like
/// errors, magnitudes with errors of a few millimagnitudes.
fn refcat_batch(objects: &[SimObject], seed: u64) -> Result<arrow::array::RecordBatch> {
    let mut rng = noise_rng(seed, 0x2ef);
    let stars: Vec<&SimObject> = objects
        .iter()
        .filter(|o| o.is_star && sky::njy_to_mag(o.flux[2]) < 21.0)
        .collect();
    let mut cols: Vec<Vec<Option<f64>>> = vec![Vec::new(); 10 + 12];
    let mut ids = Vec::new();
    for s in &stars {
        let r = sky::njy_to_mag(s.flux[2]);
        // Errors grow towards the faint end, as Gaia's do.
        let pos_err = 0.02 * 10f64.powf(0.2 * (r - 15.0)).max(1.0); // mas
        let pm_err = pos_err * 1.2;
        let mas = 1.0 / 3.6e6;
        let noisy = |rng: &mut _, v: f64, e: f64| v + e * gaussian(rng);
        ids.push(Some(s.id));
        let dec_r = s.dec.to_radians().cos();
        cols[0].push(Some(noisy(&mut rng, s.ra, pos_err * mas / dec_r)));
        cols[1].push(Some(noisy(&mut rng, s.dec, pos_err * mas)));
        cols[2].push(Some(pos_err));
        cols[3].push(Some(pos_err));
        cols[4].push(Some(noisy(&mut rng, s.pm_ra, pm_err)));
        cols[5].push(Some(noisy(&mut rng, s.pm_dec, pm_err)));
        cols[6].push(Some(pm_err));
        cols[7].push(Some(pm_err));
        cols[8].push(Some(noisy(&mut rng, s.parallax, pos_err)));
        cols[9].push(Some(pos_err));
        for b in 0..6 {
            let mag = sky::njy_to_mag(s.flux[b]);
            let err = 0.003 + 0.02 * 10f64.powf(0.4 * (mag - 21.0));
            cols[10 + 2 * b].push(Some(noisy(&mut rng, mag, err)));
            cols[11 + 2 * b].push(Some(err));
        }
    }
    let mut c = Columns::default();
    c.i64("id", ids)
        .described("", "Reference star (the simulator's object id)");
    let names = [
        ("ra", "deg", "Right ascension at epoch"),
        ("dec", "deg", "Declination at epoch"),
        ("ra_err", "mas", "Error of ra times cos(dec)"),
        ("dec_err", "mas", "Error of dec"),
        ("pm_ra", "mas/yr", "Proper motion in RA times cos(dec)"),
        ("pm_dec", "mas/yr", "Proper motion in Dec"),
        ("pm_ra_err", "mas/yr", "Error of pm_ra"),
        ("pm_dec_err", "mas/yr", "Error of pm_dec"),
        ("parallax", "mas", "Parallax"),
        ("parallax_err", "mas", "Error of the parallax"),
    ];
    let mut it = cols.into_iter();
    for (name, unit, desc) in names {
        c.f64(name, it.next().expect("a column"))
            .described(unit, desc);
    }
    for band in BANDS {
        c.f64(format!("{band}_mag"), it.next().expect("a column"))
            .described("mag", "AB magnitude");
        c.f64(format!("{band}_mag_err"), it.next().expect("a column"))
            .described("mag", "AB magnitude error");
    }
    c.f64("epoch", vec![Some(2016.0); stars.len()])
        .described("yr", "Julian year of the positions");
    c.batch()
}

fn asteroids_batch(asteroids: &[sky::Asteroid]) -> Result<arrow::array::RecordBatch> {
    let mut c = Columns::default();
    c.i64("ssObjectId", asteroids.iter().map(|a| Some(a.id)).collect());
    c.f64("ra", asteroids.iter().map(|a| Some(a.ra)).collect())
        .described("deg", "Right ascension at mjd0");
    c.f64("dec", asteroids.iter().map(|a| Some(a.dec)).collect())
        .described("deg", "Declination at mjd0");
    c.f64("mjd0", asteroids.iter().map(|a| Some(a.mjd0)).collect())
        .described("d", "Epoch of ra, dec (MJD)");
    c.f64(
        "rateRa",
        asteroids.iter().map(|a| Some(a.rate_ra)).collect(),
    )
    .described("deg/d", "Rate in right ascension times cos(dec)");
    c.f64(
        "rateDec",
        asteroids.iter().map(|a| Some(a.rate_dec)).collect(),
    )
    .described("deg/d", "Rate in declination");
    for (b, name) in BANDS.iter().enumerate() {
        c.f64(
            format!("{name}_mag"),
            asteroids
                .iter()
                .map(|a| Some(sky::njy_to_mag(a.flux[b])))
                .collect(),
        )
        .described("mag", &format!("AB magnitude in {name}"));
    }
    c.batch()
}

fn drawn_batch(
    objs: &[DrawnObject],
    visit: i64,
    detector: i64,
) -> Result<arrow::array::RecordBatch> {
    let mut c = Columns::default();
    c.i64("visit", vec![Some(visit); objs.len()]);
    c.i64("detector", vec![Some(detector); objs.len()]);
    c.i64("objectId", objs.iter().map(|o| Some(o.id)).collect());
    c.f64("ra", objs.iter().map(|o| Some(o.ra)).collect())
        .described("deg", "Apparent right ascension at mid-exposure");
    c.f64("dec", objs.iter().map(|o| Some(o.dec)).collect())
        .described("deg", "Apparent declination at mid-exposure");
    c.f64("x", objs.iter().map(|o| Some(o.x)).collect())
        .described("pixel", "True column, 0-based");
    c.f64("y", objs.iter().map(|o| Some(o.y)).collect())
        .described("pixel", "True row, 0-based");
    c.bool("isStar", objs.iter().map(|o| Some(o.is_star)).collect());
    c.bool("isMoving", objs.iter().map(|o| Some(o.moving)).collect())
        .described(
            "",
            "An asteroid, trailed on the image; its position is the visit's middle",
        );
    c.f64("flux", objs.iter().map(|o| Some(o.flux_njy)).collect())
        .described("nJy", "True flux at mid-exposure");
    c.f64(
        "electrons",
        objs.iter().map(|o| Some(o.electrons)).collect(),
    )
    .described("electron", "Photo-electrons collected over both snaps");
    c.batch()
}

fn visits_batch(
    rows: &[(i64, SimVisit, &aster_processing::camera::Detector, f64)],
) -> Result<arrow::array::RecordBatch> {
    let mut c = Columns::default();
    c.i64("visit", rows.iter().map(|r| Some(r.0)).collect());
    c.i64("detector", rows.iter().map(|r| Some(r.2.id)).collect());
    c.str(
        "band",
        rows.iter()
            .map(|r| Some(BANDS[r.1.band].to_string()))
            .collect(),
    );
    c.f64("ra", rows.iter().map(|r| Some(r.1.ra)).collect())
        .described("deg", "Boresight right ascension");
    c.f64("dec", rows.iter().map(|r| Some(r.1.dec)).collect())
        .described("deg", "Boresight declination");
    c.f64(
        "rotation",
        rows.iter().map(|r| Some(r.1.sky_rotation)).collect(),
    )
    .described("deg", "Sky position angle of the camera");
    c.f64(
        "mjdStart",
        rows.iter().map(|r| Some(r.1.mjd_start)).collect(),
    )
    .described("d", "Start of the first snap, MJD (TAI)");
    c.f64("airmass", rows.iter().map(|r| Some(r.1.airmass)).collect());
    c.f64("seeing", rows.iter().map(|r| Some(r.1.seeing)).collect())
        .described("arcsec", "PSF FWHM at the centre of the field");
    c.f64(
        "transparency",
        rows.iter().map(|r| Some(transparency(&r.1))).collect(),
    );
    c.f64("zeroPoint", rows.iter().map(|r| Some(r.3)).collect())
        .described(
            "mag",
            "AB magnitude of one count of the processed visit image",
        );
    c.batch()
}
