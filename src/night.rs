//! `aster night run`: alert production over a simulated night (DMS-REQ-0004, 0010, 0269 to
//! 0272, 0280, 0285, 0312, 0317, 0324). A field of stars, galaxies, periodic variables,
//! injected transients (half of them in a galaxy) and asteroids is observed by a run of
//! visits; each visit's calibrated CCD image (rendered by the simulator: the raw-to-calexp
//! steps are `aster pipeline run`'s) goes through the Level 1 chain as it arrives:
//! background, template (a coadd of the field's exposures from the epoch window before it,
//! on which the field's Objects were measured before the night: [`field`]), Alard-Lupton
//! difference, DIASources (and faint ones under the threshold: at the known asteroids'
//! predicted places, and a sample of the rest), association to the known asteroids'
//! predicted places ([`solar_system`]) and then into DIAObjects, forced photometry of every
//! DIAObject on the difference and the visit image, the nearby Objects of each new
//! DIAObject and of every DIASource, the rows of `ap.DiaSource`, `ap.DiaObject` (a new
//! version of each updated object, dated by `validityStartMjdTai`, as Rubin's APDB keeps
//! them), `ap.DiaForcedSource`, `ap.SSSource`, `ap.FaintDiaSource` and the two match tables,
//! queryable in TAP when the visit is done, and an alert per DIASource (Avro, Rubin's schema
//! 11.1, with the object's history and cutouts) into the alert archive, from which the
//! server distributes them.
//!
//! Beside the tables, the run directory keeps what the figures script
//! (`tests/alert_figures.py`) measures the chain with: the truth of every changing object on
//! every visit with its true difference-image SNR, every DIASource, and each visit's latency
//! per stage.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use arrow::array::{Array, Int64Array, RecordBatch};
use aster_archive::alerts::cutout::Cutouts;
use aster_archive::alerts::{AlertArchive, AlertParts, AlertSchema, AlertTable, Host, NewAlert};
use aster_archive::catalog::{CatalogStore, DEFAULT_MAX_ROWS};
use aster_archive::query::QueryEngine;
use aster_archive::schema::builtin_schemas;
use aster_processing::association::astrometry::Motion;
use aster_processing::association::nearby::ObjectKind;
use aster_processing::association::periodogram::{PeriodSearch, Periodicity};
use aster_processing::association::solar_system::{
    SsSummary, associate_solar_system, search_radius,
};
use aster_processing::association::{AssociationConfig, Associator, DiaObject, HISTORY_DAYS};
use aster_processing::background::Background;
use aster_processing::dia::{self, DiaConfig, DiaSource, FaintDiaSource, Watch};
use aster_processing::diffim::{DiffimConfig, stamp_stars, subtract_with_stars};
use aster_processing::image::Exposure;
use aster_processing::image::HeaderValue;
use aster_processing::measurement::fit_psf_fluxes;
use aster_processing::render::{PIXEL_SCALE, Trail, render_scene};
use aster_processing::sky::{BANDS, SimObject, SimVisit, Variability, mag_to_njy};
use aster_processing::skymap::PixelGrid;
use aster_processing::template::{TemplateConfig, TemplateInput, build_template};
use aster_processing::wcs::{PixelPosition, SkyCoord, TanSipWcs};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

use crate::tables::Columns;

mod field;
mod previous;
mod raw;
mod solar_system;
use raw::Instrument;
use solar_system::{FIRST_SS_OBJECT, SimAsteroid, SsDetection};

/// What night to simulate.
#[derive(Debug, Clone)]
pub struct NightSpec {
    pub seed: u64,
    /// Which night of the season (from 0): its date, visit numbers and ids follow from it.
    /// It continues the nights before it that the Level 1 database holds.
    pub night: u32,
    /// The night of the season the field's asteroids cross it and its transients peak
    /// around; the same for every night of a season, whose population is one.
    pub epoch: u32,
    /// Science visits of the night.
    pub visits: usize,
    /// CCD side, pixels.
    pub size: usize,
    pub stars: usize,
    /// Galaxies of the field, besides the hosts of half the transients.
    pub galaxies: usize,
    pub variables: usize,
    pub transients: usize,
    /// Asteroids crossing the field, most of them in the orbit catalogue.
    pub asteroids: usize,
    /// Exposures of the field in the year before, for the template.
    pub template_visits: usize,
    /// Start from raw exposures (ISR and characterization in the chain) rather than from
    /// the calibrated images the simulator renders.
    pub from_raw: bool,
    /// Where the run's records go.
    pub out: PathBuf,
}

impl Default for NightSpec {
    fn default() -> Self {
        Self {
            seed: 2026,
            night: 0,
            epoch: 0,
            visits: 6,
            size: 1024,
            stars: 600,
            galaxies: 150,
            variables: 40,
            transients: 80,
            asteroids: 12,
            template_visits: 4,
            from_raw: false,
            out: PathBuf::from("night"),
        }
    }
}

/// The field's centre: outside the demo release's footprint (2 degrees around RA 62,
/// Dec -37), so the Objects of `dp.Object` there are the field's own, measured on its
/// template ([`field`]).
const FIELD: (f64, f64) = (57.0, -40.5);
/// The season's first night's first visit starts at this MJD; each later night a day later.
const NIGHT_MJD: f64 = 61_010.1;
/// Visit numbers of the season's first night, apart from the demo release's; each later
/// night's follow, this many apart.
const FIRST_VISIT: i64 = 9_000_000;
const VISITS_PER_NIGHT: i64 = 1_000;
/// DIAObject ids of the night, apart from the demo release's.
const FIRST_DIA_OBJECT: i64 = 3_000_000_000_000;
/// Object ids of injected transients and variables (for the truth tables).
const FIRST_GALAXY: i64 = 7_000_000_000;
const FIRST_VARIABLE: i64 = 8_000_000_000;
const FIRST_TRANSIENT: i64 = 9_000_000_000;

/// Within this distance of a catalogued asteroid's predicted place a DIASource is its,
/// arcsec (or three times the prediction's uncertainty, when that is more).
const SS_RADIUS_ARCSEC: f64 = 1.0;

/// The field's population.
struct Population {
    objects: Vec<SimObject>,
    asteroids: Vec<SimAsteroid>,
    /// Each hosted transient's galaxy.
    hosts: HashMap<i64, i64>,
}

/// The field: stars, galaxies, periodic variables, transients peaking within days of the
/// night (half of them in a galaxy, the others with no host to see), and asteroids
/// crossing it, the changing ones apart from each other by 4 arcsec.
fn population(spec: &NightSpec) -> Result<Population> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed);
    let epoch_mjd = night_start(spec.epoch);
    let half = spec.size as f64 * PIXEL_SCALE / 3600.0 / 2.0 * 0.95;
    let cosd = FIELD.1.to_radians().cos();
    let object = SimObject::star;
    let place = |rng: &mut rand_chacha::ChaCha8Rng| {
        (
            FIELD.0 + rng.random_range(-half..half) / cosd,
            FIELD.1 + rng.random_range(-half..half),
        )
    };
    let mut out = Vec::new();
    for i in 0..spec.stars {
        let (ra, dec) = place(&mut rng);
        out.push(object(
            i as i64 + 1,
            ra,
            dec,
            rng.random_range(17.0..24.0),
            None,
        ));
    }
    let mut changing: Vec<(f64, f64)> = Vec::new();
    let mut apart = |rng: &mut rand_chacha::ChaCha8Rng| loop {
        let (ra, dec) = place(rng);
        let far = changing
            .iter()
            .all(|(r, d)| ((r - ra) * cosd).hypot(d - dec) * 3600.0 > 4.0);
        if far {
            changing.push((ra, dec));
            return (ra, dec);
        }
    };
    for i in 0..spec.variables {
        let (ra, dec) = apart(&mut rng);
        let v = Variability::Periodic {
            period: rng.random_range(0.2..10.0),
            amplitude: rng.random_range(0.1..0.5),
            phase: rng.random_range(0.0..std::f64::consts::TAU),
        };
        out.push(object(
            FIRST_VARIABLE + i as i64,
            ra,
            dec,
            rng.random_range(18.0..22.0),
            Some(v),
        ));
    }
    let mut transients = Vec::with_capacity(spec.transients);
    for i in 0..spec.transients {
        let (ra, dec) = apart(&mut rng);
        transients.push((FIRST_TRANSIENT + i as i64, ra, dec));
        let v = Variability::Transient {
            peak_mjd: epoch_mjd + rng.random_range(-5.0..5.0),
            peak_flux: mag_to_njy(rng.random_range(20.0..25.0)),
            rise: 5.0,
            fall: 20.0,
        };
        // A point of 29th magnitude at most times: what changes is the transient.
        out.push(object(FIRST_TRANSIENT + i as i64, ra, dec, 29.0, Some(v)));
    }
    let asteroids = solar_system::asteroids(spec.asteroids, epoch_mjd, &mut rng, &mut apart)?;
    // The galaxies come last, so the rest of the field is as it was without them.
    let galaxy = |id: i64, ra: f64, dec: f64, mag: f64, size: f64| SimObject {
        is_star: false,
        size,
        ..object(id, ra, dec, mag, None)
    };
    for i in 0..spec.galaxies {
        let (ra, dec) = place(&mut rng);
        let mag = rng.random_range(18.0..23.5);
        let size = rng.random_range(0.3..2.0);
        out.push(galaxy(FIRST_GALAXY + i as i64, ra, dec, mag, size));
    }
    // Every other transient sits in a galaxy, within 0.8 half-light radii of its centre.
    let mut hosts = HashMap::new();
    for (k, &(transient, ra, dec)) in transients.iter().enumerate().step_by(2) {
        let id = FIRST_GALAXY + (spec.galaxies + k) as i64;
        let size = rng.random_range(0.4..1.5);
        let offset = size * rng.random_range(0.0..0.8) / 3600.0;
        let angle = rng.random_range(0.0..std::f64::consts::TAU);
        let mag = rng.random_range(19.0..22.5);
        out.push(galaxy(
            id,
            ra + offset * angle.cos() / cosd,
            dec + offset * angle.sin(),
            mag,
            size,
        ));
        hosts.insert(transient, id);
    }
    Ok(Population {
        objects: out,
        asteroids,
        hosts,
    })
}

fn visit(id: i64, mjd: f64, band: usize, seeing: f64, depth_offset: f64, airmass: f64) -> SimVisit {
    SimVisit {
        visit: id,
        band,
        ra: FIELD.0,
        dec: FIELD.1,
        sky_rotation: 0.0,
        mjd_start: mjd,
        exp_time: 30.0,
        airmass,
        seeing,
        depth_offset,
        altitude: (1.0 / airmass).asin().to_degrees(),
        azimuth: 180.0,
    }
}

/// A visit observed: its calibrated, background-subtracted image, the truth on it, and when
/// it arrived (the latency's start). From raw exposures when there is an instrument: then
/// the raws arrive, and ISR, characterization and the background are the chain's first
/// stages, timed into `stages`.
fn observe(
    instrument: Option<&Instrument>,
    v: &SimVisit,
    objects: &[SimObject],
    asteroids: &[SimAsteroid],
    spec: &NightSpec,
    stages: &mut Vec<(&'static str, f64)>,
) -> Result<(Exposure, Vec<aster_processing::render::TruthEntry>, Instant)> {
    match instrument {
        None => {
            let trails: Vec<Trail> = asteroids.iter().map(|a| a.trail(v)).collect();
            let (e, truth) = calexp(v, objects, &trails, spec.size, spec.seed)?;
            Ok((e, truth, Instant::now()))
        }
        Some(instrument) => {
            let tracks: Vec<_> = asteroids.iter().map(|a| a.track(v)).collect();
            let (id, truth) = instrument.expose(v, objects, &tracks)?;
            let arrived = Instant::now();
            let e = instrument.calexp(&id, stages)?;
            Ok((e, truth, arrived))
        }
    }
}

/// A rendered visit, background subtracted, with the truth on it.
fn calexp(
    v: &SimVisit,
    objects: &[SimObject],
    trails: &[Trail],
    size: usize,
    seed: u64,
) -> Result<(Exposure, Vec<aster_processing::render::TruthEntry>)> {
    let (mut e, truth) = render_scene(v, FIELD.0, FIELD.1, size, objects, trails, seed);
    let bg = Background::estimate(e.image(), e.mask(), 128).context("background")?;
    let (img, _, _) = e.planes_mut();
    bg.subtract_from(img).context("background")?;
    Ok((e, truth))
}

/// When night `night` of the season starts: each night at another hour of a 7-hour
/// observing window (spread by the golden ratio), as a field's visits do over a season;
/// starting at the same hour every night would leave periods near a day indistinguishable
/// from their aliases.
fn night_start(night: u32) -> f64 {
    NIGHT_MJD + f64::from(night) + (f64::from(night) * 0.618_034).fract() * 0.3
}

async fn ensure_ap_tables(store: &CatalogStore) -> Result<()> {
    let mut commit = store.begin("ap").await?;
    for s in builtin_schemas().iter().filter(|s| s.name == "ap") {
        for t in &s.tables {
            if store.manifest(&s.name, &t.name).await?.is_none() {
                commit.create(t, DEFAULT_MAX_ROWS)?;
            }
        }
    }
    commit.commit().await.context("creating the ap tables")?;
    Ok(())
}

/// What a run measured, for the command's summary.
#[derive(Debug, Default)]
pub struct NightSummary {
    pub visits: usize,
    pub dia_sources: usize,
    pub dia_objects: usize,
    /// DIASources matched to catalogued asteroids.
    pub ss_sources: usize,
    pub latencies: Vec<f64>,
    /// Each stage's seconds on every visit, in the chain's order.
    pub stages: Vec<(&'static str, Vec<f64>)>,
}

/// Runs the night: templates first, then each visit through the chain as it arrives.
pub async fn run(
    store: &CatalogStore,
    alerts: &AlertArchive,
    spec: &NightSpec,
) -> Result<NightSummary> {
    let alert_schema = AlertSchema::v11_1()?;
    anyhow::ensure!(
        spec.visits as i64 <= VISITS_PER_NIGHT,
        "at most {VISITS_PER_NIGHT} visits a night"
    );
    ensure_ap_tables(store).await?;
    let night_mjd = night_start(spec.night);
    let first_visit = FIRST_VISIT + i64::from(spec.night) * VISITS_PER_NIGHT;
    let engine = QueryEngine::new(store.clone());
    previous::refuse_rerun(&engine, first_visit..=first_visit + spec.visits as i64 - 1).await?;
    std::fs::create_dir_all(&spec.out)
        .with_context(|| format!("creating {}", spec.out.display()))?;
    let Population {
        objects,
        asteroids,
        hosts,
    } = population(spec)?;
    let orbit_rows = solar_system::orbits_batch(&asteroids, unix_micros_now())?;
    write_orbit_catalogue(store, &orbit_rows).await?;
    // The catalogue's orbits as alerts carry them, encoded once.
    let orbit_records: HashMap<i64, Vec<u8>> = asteroids
        .iter()
        .filter(|a| a.catalogued.is_some())
        .map(|a| a.ss_object_id)
        .zip(alert_schema.encode_rows(AlertTable::MpcOrbits, &orbit_rows)?)
        .collect();
    let listed: std::collections::HashSet<i64> = orbit_records.keys().copied().collect();
    // The night observes in r.
    let band = 2;
    let instrument = spec
        .from_raw
        .then(|| Instrument::prepare(&spec.out, spec.seed, spec.size, band, &objects, night_mjd))
        .transpose()?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed ^ 0xa11e);
    // The field's earlier exposures, from which each visit's template is coadded.
    let earlier: Vec<(SimVisit, Exposure)> = (0..spec.template_visits)
        .map(|k| {
            let v = visit(
                FIRST_VISIT - 1_000 + k as i64,
                NIGHT_MJD - 300.0 + 7.0 * k as f64,
                band,
                rng.random_range(0.6..0.75),
                rng.random_range(-0.1..0.2),
                rng.random_range(1.05..1.3),
            );
            observe(
                instrument.as_ref(),
                &v,
                &objects,
                &[],
                spec,
                &mut Vec::new(),
            )
            .map(|(e, _, _)| (v, e))
        })
        .collect::<Result<_>>()?;
    let template_truth: std::collections::HashMap<i64, f64> = {
        // The template's flux of each object: the mean over its inputs.
        let mut sum: std::collections::HashMap<i64, f64> = Default::default();
        for (v, _) in &earlier {
            for o in &objects {
                *sum.entry(o.id).or_default() += o.flux_at(v.band, v.mjd_mid());
            }
        }
        sum.into_iter()
            .map(|(k, s)| (k, s / earlier.len().max(1) as f64))
            .collect()
    };
    // The field's template, made ahead of the night as a survey's are: the coadd of its
    // exposures from the epoch window before the night, on the field's grid. Each visit
    // then takes it onto its own CCD's pixels.
    let field_wcs = earlier
        .first()
        .and_then(|(_, e)| e.wcs.clone())
        .context("no earlier exposures of the field for its template")?;
    let field_grid = PixelGrid::new(field_wcs, spec.size, spec.size);
    let inputs: Vec<TemplateInput> = earlier
        .iter()
        .map(|(ev, e)| TemplateInput {
            exposure: e,
            mjd: ev.mjd_mid(),
            airmass: ev.airmass,
            band: ev.band,
        })
        .collect();
    let field_template = build_template(
        &inputs,
        band,
        night_mjd,
        &field_grid,
        &TemplateConfig::default(),
    )?;
    // Its bright stars, found once, are where each visit's matching kernel is fitted.
    let diffim = DiffimConfig::default();
    let field_stars = stamp_stars(&field_template.exposure, &diffim)?;
    // The field's Objects, measured on the same coadd, for the nearby Objects of its
    // DIAObjects and DIASources.
    let field_objects = field::FieldObjects::measure(&field_template.exposure, band)?;
    field_objects.write(store, &engine).await?;
    write_population(&spec.out, &objects, &hosts, &field_objects)?;
    let mut nearby_out = csv(
        &spec.out.join("nearby.csv"),
        "diaObjectId,objectId,galaxy,dist,lnP",
    )?;
    let mut faint_out = csv(
        &spec.out.join("faint_sources.csv"),
        "visit,x,y,significance,snr,ssObjectId",
    )?;
    let mut associator = Associator::new(AssociationConfig::default());
    // The DIAObjects with a DIASource tonight.
    let mut tonight: std::collections::BTreeSet<i64> = std::collections::BTreeSet::new();
    // Each DIAObject's earlier DIASources and forced sources, encoded once, for the
    // `prvDiaSources` and `prvDiaForcedSources` of its later alerts.
    let mut history: HashMap<Owner, History> = HashMap::new();
    let mut next_object = FIRST_DIA_OBJECT;
    let mut truth_out = csv(
        &spec.out.join("truth.csv"),
        "visit,id,kind,x,y,delta_flux,snr,trail_arcsec",
    )?;
    let mut sources_out = csv(
        &spec.out.join("dia_sources.csv"),
        "visit,diaSourceId,diaObjectId,ssObjectId,x,y,ra,dec,snr,psfFlux,psfFluxErr,isNegative,spuriousness,dipole,trailLength,trailLengthErr,psfChi2Dof,scienceFlux,templateFlux,sizeRatio,masked,edge,bboxSize",
    )?;
    let mut latency_out = std::fs::File::create(spec.out.join("latency.jsonl"))?;
    let mut summary = NightSummary::default();
    // The known asteroids' summaries, updated with each visit and written after the night,
    // as the SSObject table is, once a day.
    let mut ss_summaries: std::collections::BTreeMap<i64, (&SimAsteroid, SsSummary)> =
        std::collections::BTreeMap::new();
    // The nights before: their DIAObjects, their alerts' history and the asteroids'
    // summaries go on from what the Level 1 database holds of the past year.
    // The CCD's corners, with room for the visits' pointing offsets.
    let radius = spec.size as f64 * PIXEL_SCALE / 3600.0 / 2.0 * std::f64::consts::SQRT_2 * 1.2;
    let earlier = previous::read(&engine, night_mjd - HISTORY_DAYS, FIELD, radius).await?;
    for b in &earlier.sources {
        let encoded = alert_schema.encode_rows(AlertTable::DiaSource, b)?;
        let owners = previous::int(b, "diaObjectId")?
            .into_iter()
            .zip(previous::int(b, "ssObjectId")?);
        for ((row, d), (o, s)) in encoded
            .into_iter()
            .zip(previous::detections(b)?)
            .zip(owners)
        {
            if let Some(d) = d {
                associator.add_earlier(d.object, &d.what, d.band, d.mjd);
            }
            if let Ok(owner) = Owner::of(o, s) {
                history.entry(owner).or_default().sources.push(row);
            }
        }
    }
    for b in &earlier.forced {
        let encoded = alert_schema.encode_rows(AlertTable::DiaForcedSource, b)?;
        for (row, f) in encoded.into_iter().zip(previous::forced(b)?) {
            if let Some(f) = f
                && associator.add_forced(f.object, f.band, f.mjd, f.what.0, f.what.1)
            {
                history
                    .entry(Owner::Dia(f.object))
                    .or_default()
                    .forced
                    .push(row);
            }
        }
    }
    for b in &earlier.ss {
        for seen in previous::ss_seen(b)?.into_iter().flatten() {
            if let Some(a) = asteroids.iter().find(|a| a.ss_object_id == seen.object) {
                let (flux, geometry) = seen.what;
                ss_summaries
                    .entry(seen.object)
                    .or_insert_with(|| (a, SsSummary::default()))
                    .1
                    .add_seen(seen.band, seen.mjd, flux, geometry, solar_system::G_SLOPE);
            }
        }
    }
    if let Some(last) = earlier.last_dia_object {
        next_object = next_object.max(last);
    }
    let search = PeriodSearch::default();
    let known: Vec<i64> = associator.objects().iter().map(|o| o.id).collect();
    for id in &known {
        associator.update_periodicity(*id, &search);
    }
    for k in 0..spec.visits {
        let v = visit(
            first_visit + k as i64,
            night_mjd + k as f64 * 40.0 / 86_400.0,
            band,
            rng.random_range(0.7..1.2),
            rng.random_range(-0.3..0.2),
            rng.random_range(1.05..1.4),
        );
        let mut stages: Vec<(&str, f64)> = Vec::new();
        // The visit "arrives" (its raws, or its rendered calibrated image): from then on the
        // latency counts.
        let (science, truth, readout) = observe(
            instrument.as_ref(),
            &v,
            &objects,
            &asteroids,
            spec,
            &mut stages,
        )?;
        let mut clock = Instant::now();
        let mut lap = |name: &'static str, stages: &mut Vec<(&str, f64)>| {
            stages.push((name, clock.elapsed().as_secs_f64()));
            clock = Instant::now();
        };
        let calib = science
            .photo_calib
            .context("the calexp has no calibration")?;
        let wcs = science.wcs.clone().context("the calexp has no WCS")?;
        let grid = PixelGrid::new(wcs.clone(), spec.size, spec.size);
        let template = field_template.warped_to(&grid)?.into_calibration(calib);
        lap("template", &mut stages);
        // The template's stars, taken from the field's pixels onto the visit's.
        let stars: Vec<PixelPosition> = field_stars
            .iter()
            .filter_map(|s| wcs.sky_to_pixel(field_grid.wcs().pixel_to_sky(*s)).ok())
            .collect();
        let diff = subtract_with_stars(&science, &template, &diffim, Some(&stars))?;
        lap("difference", &mut stages);
        // Faint DIASources are kept where catalogued asteroids are predicted, within the
        // radius their DIASources are matched in.
        let predicted = solar_system::predict(&asteroids, v.mjd_mid(), &grid);
        let watched: Vec<Watch> = predicted
            .iter()
            .filter_map(|p| {
                let at = wcs.sky_to_pixel(p.prediction.position).ok()?;
                let radius = search_radius(&p.prediction, SS_RADIUS_ARCSEC);
                Some(Watch {
                    x: at.x,
                    y: at.y,
                    radius: radius / wcs.pixel_scale_arcsec(),
                })
            })
            .collect();
        let (sources, faint) = dia::detect_dia_sources_and_faint(
            &diff.exposure,
            &science,
            &template,
            &DiaConfig::default(),
            &watched,
        )?;
        lap("detect_measure", &mut stages);
        // Known asteroids first: a DIASource at a catalogued orbit's predicted place is that
        // object's; the others go to DIAObjects.
        let ss_matches = associate_solar_system(
            &sources,
            &predicted.iter().map(|p| p.prediction).collect::<Vec<_>>(),
            SS_RADIUS_ARCSEC,
        );
        let unmatched: Vec<usize> = (0..sources.len())
            .filter(|i| ss_matches[*i].is_none())
            .collect();
        let assoc = associator.associate(
            &unmatched
                .iter()
                .map(|&i| sources[i].clone())
                .collect::<Vec<_>>(),
            band,
            v.mjd_mid(),
            || {
                next_object += 1;
                next_object
            },
        );
        let mut dia_object: Vec<Option<i64>> = vec![None; sources.len()];
        for (a, &i) in assoc.iter().zip(&unmatched) {
            dia_object[i] = Some(a.dia_object_id);
        }
        let ss_object: Vec<Option<i64>> = ss_matches
            .iter()
            .map(|m| m.map(|m| m.ss_object_id))
            .collect();
        lap("associate", &mut stages);
        // Forced photometry of every DIAObject on this image, on the difference and the
        // visit image.
        let psf = diff
            .exposure
            .psf
            .clone()
            .context("the difference has no PSF")?;
        let sci_psf = science.psf.clone().context("the calexp has no PSF")?;
        let mut forced = Vec::new();
        for o in associator.objects() {
            let Some(p) = SkyCoord::new(o.ra, o.dec).and_then(|s| wcs.sky_to_pixel(s).ok()) else {
                continue;
            };
            if p.x < 0.0 || p.y < 0.0 || p.x >= spec.size as f64 || p.y >= spec.size as f64 {
                continue;
            }
            let on_diff = fit_psf_fluxes(&diff.exposure, &psf, &[(p.x, p.y)]);
            let on_visit = fit_psf_fluxes(&science, &sci_psf, &[(p.x, p.y)]);
            if let (Some(d), Some(s)) = (on_diff, on_visit) {
                forced.push((o.id, o.ra, o.dec, d[0], s[0]));
            }
        }
        for (id, _, _, on_diff, on_visit) in &forced {
            associator.add_forced(*id, v.band, v.mjd_mid(), *on_diff, *on_visit);
        }
        lap("forced", &mut stages);
        let mjd = v.mjd_mid();
        let ids: Vec<i64> = (0..sources.len())
            .map(|i| v.visit * 100_000 + i as i64)
            .collect();
        let updated: Vec<i64> = assoc.iter().map(|a| a.dia_object_id).collect();
        // The nearby Objects of each new DIAObject, and of every DIASource.
        let mut object_matches = Vec::new();
        for a in assoc.iter().filter(|a| a.created) {
            let o = associator
                .get(a.dia_object_id)
                .context("a DIAObject just made")?;
            if let Some(p) = SkyCoord::new(o.ra, o.dec) {
                let err = o.ra_err.max(o.dec_err) * 3600.0;
                for n in field_objects.index.nearby(p, err) {
                    object_matches.push((o.id, n));
                }
            }
        }
        let mut source_matches = Vec::new();
        for (s, id) in sources.iter().zip(&ids) {
            if let Some(p) = SkyCoord::new(s.ra, s.dec) {
                for n in field_objects
                    .index
                    .nearby(p, s.ra_err.max(s.dec_err) * 3600.0)
                {
                    source_matches.push((*id, n));
                }
            }
        }
        lap("nearby", &mut stages);
        let processed = mjd_tai_now();
        let source_rows = dia_source_batch(
            &sources,
            &ids,
            (&dia_object, &ss_object),
            &v,
            processed,
            &wcs,
        )?;
        let object_rows = dia_object_batch(&associator, &updated, mjd)?;
        let forced_rows = forced_batch(&forced, &v, processed)?;
        // Faint DIASources' ids follow the visit's DIASources'.
        let faint_rows = faint_batch(
            &faint,
            v.visit * 100_000 + sources.len() as i64,
            &|w| predicted[w].asteroid.ss_object_id,
            &v,
            processed,
        )?;
        let detections: Vec<SsDetection> = ss_matches
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                m.map(|m| SsDetection {
                    dia_source_id: ids[i],
                    source: &sources[i],
                    predicted: &predicted[m.prediction],
                    matched: m,
                })
            })
            .collect();
        let ss_rows = solar_system::ss_source_batch(&detections)?;
        for d in &detections {
            let asteroid = d.predicted.asteroid;
            ss_summaries
                .entry(asteroid.ss_object_id)
                .or_insert_with(|| (asteroid, SsSummary::default()))
                .1
                .add(
                    v.band,
                    mjd,
                    d.source.psf_flux,
                    &d.predicted.ephemeris,
                    solar_system::G_SLOPE,
                );
        }
        // One commit: a TAP query sees all of a visit's rows in every table or none.
        let mut commit = store.begin("ap").await?;
        for (table, rows) in [
            ("DiaSource", source_rows.clone()),
            ("DiaObject", object_rows.clone()),
            ("DiaForcedSource", forced_rows.clone()),
            ("SSSource", ss_rows.clone()),
            ("FaintDiaSource", faint_rows),
            (
                "DiaObject_To_Object_Match",
                field::match_batch("diaObjectId", &object_matches)?,
            ),
            (
                "DiaSource_To_Object_Match",
                field::match_batch("diaSourceId", &source_matches)?,
            ),
        ] {
            commit.append(table, &[rows]).await?;
        }
        commit.commit().await?;
        lap("write", &mut stages);
        let made = alerts_of_visit(
            alert_schema,
            &AlertInputs {
                visit: &v,
                sources: &sources,
                ids: &ids,
                dia_objects: &dia_object,
                ss_objects: &ss_object,
                source_rows: &source_rows,
                object_rows: &object_rows,
                forced_rows: &forced_rows,
                ss_rows: &ss_rows,
                orbits: &orbit_records,
                difference: &diff.exposure,
                science: &science,
                template: &template,
            },
            &mut history,
        )?;
        // Each DIASource's likeliest host among its nearby galaxies, for the filters.
        let mut hosts: HashMap<i64, Host> = HashMap::new();
        for (id, n) in source_matches
            .iter()
            .filter(|(_, n)| n.kind == ObjectKind::Galaxy)
        {
            let h = Host {
                object_id: n.object_id,
                dist: n.distance_arcsec,
                ln_p: n.ln_p,
            };
            hosts
                .entry(*id)
                .and_modify(|best| {
                    if h.ln_p > best.ln_p {
                        *best = h;
                    }
                })
                .or_insert(h);
        }
        let archived = alerts.archive(
            v.visit,
            0,
            &made
                .iter()
                .map(|a| a.as_new(hosts.get(&a.id).copied()))
                .collect::<Vec<_>>(),
        )?;
        lap("alerts", &mut stages);
        let total = readout.elapsed().as_secs_f64();

        // The records the figures are made from (after the clock stopped).
        for t in &truth {
            let kind = if t.id >= FIRST_SS_OBJECT {
                if listed.contains(&t.id) {
                    "asteroid"
                } else {
                    "unlisted_asteroid"
                }
            } else if t.id >= FIRST_TRANSIENT {
                "transient"
            } else if t.id >= FIRST_VARIABLE {
                "variable"
            } else if t.id >= FIRST_GALAXY {
                "galaxy"
            } else {
                "star"
            };
            let delta = t.flux_njy - template_truth.get(&t.id).copied().unwrap_or(0.0);
            let err =
                fit_psf_fluxes(&diff.exposure, &psf, &[(t.x, t.y)]).map_or(f64::NAN, |f| f[0].err);
            // How far an asteroid moved while the shutter was open.
            let trail =
                asteroids
                    .iter()
                    .find(|a| a.ss_object_id == t.id)
                    .map_or(String::new(), |a| {
                        let tr = a.trail(&v);
                        format!("{:.4}", tr.start.separation(&tr.end) * 3600.0)
                    });
            writeln!(
                truth_out,
                "{},{},{kind},{:.3},{:.3},{:.3},{:.3},{trail}",
                v.visit,
                t.id,
                t.x,
                t.y,
                delta,
                delta / err
            )?;
        }
        for f in &faint {
            writeln!(
                faint_out,
                "{},{:.3},{:.3},{:.3},{:.3},{}",
                v.visit,
                f.source.x,
                f.source.y,
                f.significance,
                f.source.snr,
                f.watched.map_or(String::new(), |w| predicted[w]
                    .asteroid
                    .ss_object_id
                    .to_string())
            )?;
        }
        tonight.extend(dia_object.iter().flatten());
        let blank = |o: &Option<i64>| o.map_or(String::new(), |o| o.to_string());
        for (i, (s, id)) in sources.iter().zip(&ids).enumerate() {
            writeln!(
                sources_out,
                "{},{id},{},{},{:.3},{:.3},{:.8},{:.8},{:.3},{:.3},{:.3},{},{:.3},{},{},{},{:.3},{:.3},{:.3},{},{},{},{}",
                v.visit,
                blank(&dia_object[i]),
                blank(&ss_object[i]),
                s.x,
                s.y,
                s.ra,
                s.dec,
                s.snr,
                s.psf_flux.value,
                s.psf_flux.err,
                s.is_negative,
                s.spuriousness,
                s.flags.dipole,
                s.trail
                    .map_or(String::new(), |t| format!("{:.4}", t.length)),
                s.trail
                    .map_or(String::new(), |t| format!("{:.4}", t.length_err)),
                s.psf_chi2 / s.psf_ndata.max(1) as f64,
                s.science_flux.value,
                s.template_flux.value,
                s.shape.map_or(String::new(), |m| {
                    let p = s.psf_moments;
                    format!(
                        "{:.3}",
                        ((m.ixx * m.iyy - m.ixy * m.ixy) / (p.ixx * p.iyy - p.ixy * p.ixy)).sqrt()
                    )
                }),
                s.flags.masked,
                s.flags.edge,
                s.bbox_size,
            )?;
        }
        let record = serde_json::json!({
            "visit": v.visit,
            "detector": 0,
            "dia_sources": sources.len(),
            "alerts": archived,
            "stamps": diff.stamps_used,
            "direction": format!("{:?}", diff.direction),
            "seconds": total,
            "stages": stages.iter().map(|(n, s)| (n.to_string(), serde_json::json!(s))).collect::<serde_json::Map<_, _>>(),
        });
        writeln!(latency_out, "{record}")?;
        tracing::info!(
            visit = v.visit,
            dia_sources = sources.len(),
            seconds = format!("{total:.2}"),
            "visit processed"
        );
        summary.visits += 1;
        summary.dia_sources += sources.len();
        summary.ss_sources += detections.len();
        summary.latencies.push(total);
        for (name, seconds) in &stages {
            match summary.stages.iter_mut().find(|(n, _)| n == name) {
                Some((_, all)) => all.push(*seconds),
                None => summary.stages.push((name, vec![*seconds])),
            }
        }
    }
    truth_out.flush()?;
    sources_out.flush()?;
    // The nearby Objects of every DIAObject seen tonight, where it now is, for the figures
    // (its rows in ap.DiaObject_To_Object_Match are from where it was first seen).
    for id in &tonight {
        let Some(o) = associator.get(*id) else {
            continue;
        };
        let Some(p) = SkyCoord::new(o.ra, o.dec) else {
            continue;
        };
        for n in field_objects
            .index
            .nearby(p, o.ra_err.max(o.dec_err) * 3600.0)
        {
            writeln!(
                nearby_out,
                "{id},{},{},{:.4},{:.4}",
                n.object_id,
                n.kind == ObjectKind::Galaxy,
                n.distance_arcsec,
                n.ln_p
            )?;
        }
    }
    nearby_out.flush()?;
    faint_out.flush()?;
    // The daytime update, in one commit: each DIAObject's period over the past year, in a
    // new version of it, and the known asteroids' summaries over the past year.
    let ids: Vec<i64> = associator.objects().iter().map(|o| o.id).collect();
    for id in &ids {
        associator.update_periodicity(*id, &search);
    }
    let ss: Vec<_> = ss_summaries.into_values().collect();
    let ss_object_table = builtin_schemas()
        .into_iter()
        .filter(|s| s.name == "ap")
        .flat_map(|s| s.tables)
        .find(|t| t.name == "SSObject")
        .context("no ap.SSObject in the built-in schemas")?;
    let mut daytime = store.begin("ap").await?;
    daytime
        .append(
            "DiaObject",
            &[dia_object_batch(&associator, &ids, night_mjd + 0.5)?],
        )
        .await?;
    daytime
        .replace(
            &ss_object_table,
            DEFAULT_MAX_ROWS,
            &[solar_system::ss_object_batch(&ss)?],
        )
        .await?;
    daytime.commit().await?;
    write_periodic(&spec.out, &associator, &objects)?;
    let mut ss_out = csv(
        &spec.out.join("ss_objects.csv"),
        "ssObjectId,band,H,HErr,nH,trueH",
    )?;
    for (a, s) in &ss {
        for (band, name) in BANDS.iter().enumerate() {
            if let Some((h, err, n)) = s.h(band) {
                writeln!(
                    ss_out,
                    "{},{name},{h:.4},{err:.4},{n},{:.4}",
                    a.ss_object_id,
                    a.h_in(band)
                )?;
            }
        }
    }
    ss_out.flush()?;
    summary.dia_objects = associator.objects().len();
    Ok(summary)
}

/// The field's truth for the nearby Objects' figures: every object's place and kind, each
/// hosted transient's galaxy; and the Objects measured on the template.
fn write_population(
    out: &Path,
    objects: &[SimObject],
    hosts: &HashMap<i64, i64>,
    field_objects: &field::FieldObjects,
) -> Result<()> {
    let mut p = csv(&out.join("population.csv"), "id,galaxy,ra,dec,host")?;
    for o in objects {
        let host = hosts.get(&o.id).map_or(String::new(), |h| h.to_string());
        writeln!(p, "{},{},{:.8},{:.8},{host}", o.id, !o.is_star, o.ra, o.dec)?;
    }
    p.flush()?;
    let mut f = csv(&out.join("objects.csv"), "objectId,galaxy,ra,dec,psfFlux")?;
    for s in &field_objects.sources {
        writeln!(
            f,
            "{},{},{:.8},{:.8},{:.3}",
            field::FIRST_OBJECT + s.id,
            field::kind_of(s) == ObjectKind::Galaxy,
            s.ra,
            s.dec,
            s.measurement.psf_flux.value
        )?;
    }
    f.flush()?;
    Ok(())
}

fn csv(path: &Path, header: &str) -> Result<std::io::BufWriter<std::fs::File>> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    writeln!(f, "{header}")?;
    Ok(f)
}

/// The DIASources' rows; each belongs to a DIAObject or to a solar system object.
fn dia_source_batch(
    s: &[DiaSource],
    ids: &[i64],
    (dia_objects, ss_objects): (&[Option<i64>], &[Option<i64>]),
    v: &SimVisit,
    processed: f64,
    wcs: &TanSipWcs,
) -> Result<arrow::array::RecordBatch> {
    let n = s.len();
    // Moments in arcsec², as the data model has them.
    let area = wcs.pixel_scale_arcsec().powi(2);
    let f32s = |g: &dyn Fn(&DiaSource) -> Option<f64>| {
        s.iter().map(|d| g(d).map(|x| x as f32)).collect::<Vec<_>>()
    };
    let flags = |g: &dyn Fn(&DiaSource) -> bool| s.iter().map(|d| Some(g(d))).collect::<Vec<_>>();
    // The models' values, null where there is no model or the value is not finite (the
    // errors of a trail's length and angle when it is fitted as a point).
    let trails = |g: &dyn Fn(&dia::Trail) -> f64| {
        f32s(&|d| d.trail.map(|t| g(&t)).filter(|v| v.is_finite()))
    };
    let dipoles = |g: &dyn Fn(&dia::Dipole) -> f64| {
        f32s(&|d| d.dipole.map(|p| g(&p)).filter(|v| v.is_finite()))
    };
    let mut c = Columns::default();
    c.i64("diaSourceId", ids.iter().map(|i| Some(*i)).collect())
        .i64("visit", vec![Some(v.visit); n])
        .i32("detector", vec![Some(0); n])
        .i64("diaObjectId", dia_objects.to_vec())
        .i64("ssObjectId", ss_objects.to_vec())
        .f64("midpointMjdTai", vec![Some(v.mjd_mid()); n])
        .f64("ra", s.iter().map(|d| Some(d.ra)).collect())
        .f64("dec", s.iter().map(|d| Some(d.dec)).collect())
        .f32("raErr", f32s(&|d| Some(d.ra_err)))
        .f32("decErr", f32s(&|d| Some(d.dec_err)))
        .f32("x", f32s(&|d| Some(d.x)))
        .f32("y", f32s(&|d| Some(d.y)))
        .f32("xErr", f32s(&|d| Some(d.x_err)))
        .f32("yErr", f32s(&|d| Some(d.y_err)))
        .bool("centroid_flag", flags(&|d| d.flags.centroid_failed))
        .f32("apFlux", f32s(&|d| Some(d.ap_flux.value)))
        .f32("apFluxErr", f32s(&|d| Some(d.ap_flux.err)))
        .f32("snr", f32s(&|d| Some(d.snr)))
        .f32("psfFlux", f32s(&|d| Some(d.psf_flux.value)))
        .f32("psfFluxErr", f32s(&|d| Some(d.psf_flux.err)))
        .f32("psfLnL", f32s(&|d| Some(d.psf_ln_l)))
        .f32("psfChi2", f32s(&|d| Some(d.psf_chi2)))
        .i32(
            "psfNdata",
            s.iter().map(|d| Some(d.psf_ndata as i32)).collect(),
        )
        .bool("psfFlux_flag_edge", flags(&|d| d.flags.edge))
        .f32("trailFlux", trails(&|t| t.flux.value))
        .f32("trailFluxErr", trails(&|t| t.flux.err))
        .f64("trailRa", s.iter().map(|d| d.trail.map(|t| t.ra)).collect())
        .f32("trailRaErr", trails(&|t| t.ra_err))
        .f64(
            "trailDec",
            s.iter().map(|d| d.trail.map(|t| t.dec)).collect(),
        )
        .f32("trailDecErr", trails(&|t| t.dec_err))
        .f32("trailLength", trails(&|t| t.length))
        .f32("trailLengthErr", trails(&|t| t.length_err))
        .f32("trailAngle", trails(&|t| t.angle))
        .f32("trailAngleErr", trails(&|t| t.angle_err))
        .f32("trailChi2", trails(&|t| t.chi2))
        .i32(
            "trailNdata",
            s.iter()
                .map(|d| Some(d.trail.map_or(0, |t| t.ndata as i32)))
                .collect(),
        )
        // Where the fit failed, whether its pixels reached the edge.
        .bool(
            "trail_flag_edge",
            flags(&|d| d.trail.map_or(d.flags.edge, |t| t.edge)),
        )
        .bool("trail_flag", flags(&|d| d.trail.is_none()))
        .f32("dipoleMeanFlux", dipoles(&|p| p.mean_flux.value))
        .f32("dipoleMeanFluxErr", dipoles(&|p| p.mean_flux.err))
        .f32("dipoleFluxDiff", dipoles(&|p| p.flux_diff.value))
        .f32("dipoleFluxDiffErr", dipoles(&|p| p.flux_diff.err))
        .f32("dipoleLength", dipoles(&|p| p.length))
        .f32("dipoleAngle", dipoles(&|p| p.angle))
        .f32("dipoleChi2", dipoles(&|p| p.chi2))
        .i32(
            "dipoleNdata",
            s.iter()
                .map(|d| Some(d.dipole.map_or(0, |p| p.ndata as i32)))
                .collect(),
        )
        .bool("dipoleFitAttempted", flags(&|d| d.flags.dipole))
        .f32("scienceFlux", f32s(&|d| Some(d.science_flux.value)))
        .f32("scienceFluxErr", f32s(&|d| Some(d.science_flux.err)))
        .f32("templateFlux", f32s(&|d| Some(d.template_flux.value)))
        .f32("templateFluxErr", f32s(&|d| Some(d.template_flux.err)))
        .f32("ixx", f32s(&|d| d.shape.map(|m| m.ixx * area)))
        .f32("iyy", f32s(&|d| d.shape.map(|m| m.iyy * area)))
        .f32("ixy", f32s(&|d| d.shape.map(|m| m.ixy * area)))
        .f32("ixxPSF", f32s(&|d| Some(d.psf_moments.ixx * area)))
        .f32("iyyPSF", f32s(&|d| Some(d.psf_moments.iyy * area)))
        .f32("ixyPSF", f32s(&|d| Some(d.psf_moments.ixy * area)))
        .bool("shape_flag", flags(&|d| d.flags.shape_failed))
        .str("band", vec![Some(BANDS[v.band].to_string()); n])
        .bool("isNegative", flags(&|d| d.is_negative))
        .bool("isDipole", flags(&|d| d.flags.dipole))
        .f32("reliability", f32s(&|d| Some(1.0 - d.spuriousness)))
        .f32("extendedness", f32s(&|d| d.extendedness))
        .f64("timeProcessedMjdTai", vec![Some(processed); n])
        .i32(
            "bboxSize",
            s.iter().map(|d| Some(d.bbox_size as i32)).collect(),
        )
        .bool("pixelFlags_edge", flags(&|d| d.flags.edge));
    c.batch()
}

/// The rows of `ap.FaintDiaSource`, numbered from `first_id`; `ss_object` names the
/// asteroid of a watched place.
fn faint_batch(
    faint: &[FaintDiaSource],
    first_id: i64,
    ss_object: &dyn Fn(usize) -> i64,
    v: &SimVisit,
    processed: f64,
) -> Result<arrow::array::RecordBatch> {
    let n = faint.len();
    let f32s = |g: &dyn Fn(&FaintDiaSource) -> Option<f64>| {
        faint
            .iter()
            .map(|f| g(f).filter(|x| x.is_finite()).map(|x| x as f32))
            .collect::<Vec<_>>()
    };
    let mut c = Columns::default();
    c.i64(
        "diaSourceId",
        (0..n as i64).map(|i| Some(first_id + i)).collect(),
    )
    .i64("visit", vec![Some(v.visit); n])
    .i32("detector", vec![Some(0); n])
    .i64(
        "ssObjectId",
        faint.iter().map(|f| f.watched.map(ss_object)).collect(),
    )
    .f64("midpointMjdTai", vec![Some(v.mjd_mid()); n])
    .f64("ra", faint.iter().map(|f| Some(f.source.ra)).collect())
    .f64("dec", faint.iter().map(|f| Some(f.source.dec)).collect())
    .f32("raErr", f32s(&|f| Some(f.source.ra_err)))
    .f32("decErr", f32s(&|f| Some(f.source.dec_err)))
    .f32("x", f32s(&|f| Some(f.source.x)))
    .f32("y", f32s(&|f| Some(f.source.y)))
    .f32("xErr", f32s(&|f| Some(f.source.x_err)))
    .f32("yErr", f32s(&|f| Some(f.source.y_err)))
    .f32("snr", f32s(&|f| Some(f.source.snr)))
    .f32("significance", f32s(&|f| Some(f.significance)))
    .f32("psfFlux", f32s(&|f| Some(f.source.psf_flux.value)))
    .f32("psfFluxErr", f32s(&|f| Some(f.source.psf_flux.err)))
    .f32("apFlux", f32s(&|f| Some(f.source.ap_flux.value)))
    .f32("apFluxErr", f32s(&|f| Some(f.source.ap_flux.err)))
    .f32("scienceFlux", f32s(&|f| Some(f.source.science_flux.value)))
    .f32("scienceFluxErr", f32s(&|f| Some(f.source.science_flux.err)))
    .f32(
        "templateFlux",
        f32s(&|f| Some(f.source.template_flux.value)),
    )
    .f32(
        "templateFluxErr",
        f32s(&|f| Some(f.source.template_flux.err)),
    )
    .str("band", vec![Some(BANDS[v.band].to_string()); n])
    .bool(
        "isNegative",
        faint.iter().map(|f| Some(f.source.is_negative)).collect(),
    )
    .f32("reliability", f32s(&|f| Some(1.0 - f.source.spuriousness)))
    .f32("trailLength", f32s(&|f| f.source.trail.map(|t| t.length)))
    .f32("trailAngle", f32s(&|f| f.source.trail.map(|t| t.angle)))
    .bool(
        "pixelFlags_edge",
        faint.iter().map(|f| Some(f.source.flags.edge)).collect(),
    )
    .f64("timeProcessedMjdTai", vec![Some(processed); n]);
    c.batch()
}

/// New versions of the DIAObjects a visit updated.
fn dia_object_batch(a: &Associator, ids: &[i64], mjd: f64) -> Result<arrow::array::RecordBatch> {
    let objects: Vec<_> = ids.iter().filter_map(|i| a.get(*i)).collect();
    let mut c = Columns::default();
    c.i64("diaObjectId", objects.iter().map(|o| Some(o.id)).collect())
        .f64("validityStartMjdTai", vec![Some(mjd); objects.len()])
        .f64("ra", objects.iter().map(|o| Some(o.ra)).collect())
        .f32(
            "raErr",
            objects.iter().map(|o| Some(o.ra_err as f32)).collect(),
        )
        .f64("dec", objects.iter().map(|o| Some(o.dec)).collect())
        .f32(
            "decErr",
            objects.iter().map(|o| Some(o.dec_err as f32)).collect(),
        )
        .f64(
            "firstDiaSourceMjdTai",
            objects.iter().map(|o| Some(o.first_mjd)).collect(),
        )
        .f64(
            "lastDiaSourceMjdTai",
            objects.iter().map(|o| Some(o.last_mjd)).collect(),
        )
        .i32(
            "nDiaSources",
            objects
                .iter()
                .map(|o| Some(o.n_dia_sources as i32))
                .collect(),
        );
    for (b, name) in BANDS.iter().enumerate() {
        let f = |g: &dyn Fn(&aster_processing::association::BandFluxes) -> Option<f64>| {
            objects
                .iter()
                .map(|o| g(&o.fluxes[b]).map(|v| v as f32))
                .collect::<Vec<_>>()
        };
        let forced = |g: &dyn Fn(&DiaObject) -> Option<f64>| {
            objects
                .iter()
                .map(|o| g(o).map(|v| v as f32))
                .collect::<Vec<_>>()
        };
        c.f32(format!("{name}_psfFluxMean"), f(&|x| x.mean()))
            .f32(format!("{name}_psfFluxMeanErr"), f(&|x| x.mean_err()))
            .f32(format!("{name}_psfFluxSigma"), f(&|x| x.sigma()))
            .i32(
                format!("{name}_psfFluxNdata"),
                objects.iter().map(|o| Some(o.fluxes[b].n as i32)).collect(),
            )
            .f32(
                format!("{name}_fpFluxMean"),
                forced(&|o| o.forced[b].mean()),
            )
            .f32(
                format!("{name}_fpFluxMeanErr"),
                forced(&|o| o.forced[b].mean_err()),
            )
            .f32(
                format!("{name}_scienceFluxMean"),
                forced(&|o| o.science[b].mean()),
            )
            .f32(
                format!("{name}_scienceFluxMeanErr"),
                forced(&|o| o.science[b].mean_err()),
            )
            .f32(format!("{name}_psfFluxMin"), f(&|x| x.min()))
            .f32(format!("{name}_psfFluxMax"), f(&|x| x.max()))
            .f32(format!("{name}_psfFluxMaxSlope"), f(&|x| x.max_slope()))
            .f32(format!("{name}_psfFluxErrMean"), f(&|x| x.err_mean()));
    }
    let motions: Vec<_> = objects.iter().map(|o| o.astrometry.motion()).collect();
    let motion = |g: &dyn Fn(&Motion) -> Option<f64>| {
        motions
            .iter()
            .map(|m| m.as_ref().and_then(g).map(|v| v as f32))
            .collect::<Vec<_>>()
    };
    let period = |g: &dyn Fn(&Periodicity) -> f64| {
        objects
            .iter()
            .map(|o| o.periodicity.as_ref().map(g))
            .collect::<Vec<_>>()
    };
    c.f64("lombScarglePeriod", period(&|p| p.period))
        .f32(
            "lombScarglePower",
            period(&|p| p.power)
                .into_iter()
                .map(|v| v.map(|v| v as f32))
                .collect(),
        )
        .f32(
            "lombScargleFalseAlarmProb",
            period(&|p| p.false_alarm_probability)
                .into_iter()
                .map(|v| v.map(|v| v as f32))
                .collect(),
        )
        .i32(
            "lombScargleNdata",
            objects
                .iter()
                .map(|o| o.periodicity.map(|p| p.n as i32))
                .collect(),
        );
    c.f32("pmRa", motion(&|m| Some(m.pm_ra)))
        .f32("pmRaErr", motion(&|m| Some(m.pm_ra_err)))
        .f32("pmDec", motion(&|m| Some(m.pm_dec)))
        .f32("pmDecErr", motion(&|m| Some(m.pm_dec_err)))
        .f32("parallax", motion(&|m| m.parallax.map(|p| p.0)))
        .f32("parallaxErr", motion(&|m| m.parallax.map(|p| p.1)))
        .f32("pmParallaxChi2", motion(&|m| Some(m.chi2)))
        .i32(
            "pmParallaxNdata",
            motions
                .iter()
                .map(|m| m.as_ref().map(|m| m.ndata as i32))
                .collect(),
        );
    c.batch()
}

/// `periodic.csv`: each DIAObject's period, beside the true one of the periodic variable
/// within 1 arcsec of it, if any.
fn write_periodic(out: &Path, a: &Associator, objects: &[SimObject]) -> Result<()> {
    let mut w = csv(
        &out.join("periodic.csv"),
        "diaObjectId,nForced,period,power,falseAlarmProb,variableId,truePeriod",
    )?;
    for o in a.objects() {
        let Some(p) = o.periodicity else {
            continue;
        };
        let here = SkyCoord::new(o.ra, o.dec);
        let truth = objects.iter().find_map(|s| match s.variability {
            Some(Variability::Periodic { period, .. })
                if here
                    .zip(SkyCoord::new(s.ra, s.dec))
                    .is_some_and(|(a, b)| a.separation(&b) * 3600.0 < 1.0) =>
            {
                Some((s.id, period))
            }
            _ => None,
        });
        writeln!(
            w,
            "{},{},{:.6},{:.4},{:.3e},{},{}",
            o.id,
            p.n,
            p.period,
            p.power,
            p.false_alarm_probability,
            truth.map_or(String::new(), |t| t.0.to_string()),
            truth.map_or(String::new(), |t| format!("{:.6}", t.1)),
        )?;
    }
    w.flush()?;
    Ok(())
}

type Forced = (
    i64,
    f64,
    f64,
    aster_processing::measurement::Flux,
    aster_processing::measurement::Flux,
);

fn forced_batch(f: &[Forced], v: &SimVisit, processed: f64) -> Result<arrow::array::RecordBatch> {
    let n = f.len();
    let mut c = Columns::default();
    c.i64(
        "diaForcedSourceId",
        f.iter()
            .enumerate()
            .map(|(i, _)| Some(v.visit * 1_000_000 + i as i64))
            .collect(),
    )
    .i64("diaObjectId", f.iter().map(|x| Some(x.0)).collect())
    .f64("ra", f.iter().map(|x| Some(x.1)).collect())
    .f64("dec", f.iter().map(|x| Some(x.2)).collect())
    .i64("visit", vec![Some(v.visit); n])
    .i32("detector", vec![Some(0); n])
    .f32(
        "psfFlux",
        f.iter().map(|x| Some(x.3.value as f32)).collect(),
    )
    .f32(
        "psfFluxErr",
        f.iter().map(|x| Some(x.3.err as f32)).collect(),
    )
    .f64("midpointMjdTai", vec![Some(v.mjd_mid()); n])
    .f32(
        "scienceFlux",
        f.iter().map(|x| Some(x.4.value as f32)).collect(),
    )
    .f32(
        "scienceFluxErr",
        f.iter().map(|x| Some(x.4.err as f32)).collect(),
    )
    .str("band", vec![Some(BANDS[v.band].to_string()); n])
    .f64("timeProcessedMjdTai", vec![Some(processed); n]);
    c.batch()
}

/// Now in microseconds since 1970 (UTC).
fn unix_micros_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The orbit catalogue the night predicts from, into `ap.mpc_orbits` when that table is
/// still empty (a night run again on the same data finds it there).
async fn write_orbit_catalogue(store: &CatalogStore, orbits: &RecordBatch) -> Result<()> {
    let rows = store
        .manifest("ap", "mpc_orbits")
        .await?
        .map_or(0, |m| m.partitions.iter().map(|p| p.rows()).sum::<u64>());
    if rows == 0 {
        store
            .append("ap", "mpc_orbits", std::slice::from_ref(orbits))
            .await?;
    }
    Ok(())
}

/// Now as an MJD in TAI (37 leap seconds ahead of UTC since 2017).
fn mjd_tai_now() -> f64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    40_587.0 + (unix + 37.0) / 86_400.0
}

/// What a DIASource belongs to: a DIAObject or a known solar system object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Owner {
    Dia(i64),
    Ss(i64),
}

impl Owner {
    fn of(dia_object: Option<i64>, ss_object: Option<i64>) -> Result<Self> {
        match (dia_object, ss_object) {
            (Some(d), None) => Ok(Owner::Dia(d)),
            (None, Some(s)) => Ok(Owner::Ss(s)),
            _ => anyhow::bail!("a DIASource must belong to one DIAObject or one SSObject"),
        }
    }
}

/// An object's earlier rows, encoded: DIASources, and for a DIAObject its forced sources.
#[derive(Default)]
struct History {
    sources: Vec<Vec<u8>>,
    forced: Vec<Vec<u8>>,
}

/// What a visit's alerts are made of.
struct AlertInputs<'a> {
    visit: &'a SimVisit,
    sources: &'a [DiaSource],
    ids: &'a [i64],
    /// The DIAObject or the SSObject of each DIASource.
    dia_objects: &'a [Option<i64>],
    ss_objects: &'a [Option<i64>],
    source_rows: &'a RecordBatch,
    object_rows: &'a RecordBatch,
    forced_rows: &'a RecordBatch,
    /// `ap.SSSource` rows of the DIASources of known asteroids.
    ss_rows: &'a RecordBatch,
    /// The catalogued orbits, encoded, by ssObjectId.
    orbits: &'a HashMap<i64, Vec<u8>>,
    difference: &'a Exposure,
    science: &'a Exposure,
    template: &'a Exposure,
}

struct MadeAlert {
    id: i64,
    object: Option<i64>,
    ss_object: Option<i64>,
    mjd: f64,
    body: Vec<u8>,
}

impl MadeAlert {
    fn as_new(&self, host: Option<Host>) -> NewAlert<'_> {
        NewAlert {
            alert_id: self.id,
            dia_object_id: self.object,
            ss_object_id: self.ss_object,
            mjd: self.mjd,
            host,
            body: &self.body,
        }
    }
}

/// One alert per DIASource of the visit (DMS-REQ-0274): the DIASource, its DIAObject as this
/// visit left it (or, for a known asteroid, its ssSource and orbit), the object's earlier
/// DIASources and forced sources, and cutouts of the difference, visit and template images.
/// The visit's rows then join the history.
fn alerts_of_visit(
    schema: &AlertSchema,
    inp: &AlertInputs,
    history: &mut HashMap<Owner, History>,
) -> Result<Vec<MadeAlert>> {
    let sources = schema.encode_rows(AlertTable::DiaSource, inp.source_rows)?;
    let objects = schema.encode_rows(AlertTable::DiaObject, inp.object_rows)?;
    let forced = schema.encode_rows(AlertTable::DiaForcedSource, inp.forced_rows)?;
    let ss_sources = schema.encode_rows(AlertTable::SsSource, inp.ss_rows)?;
    let ss_row: HashMap<i64, usize> = inp
        .ss_rows
        .column_by_name("diaSourceId")
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .context("no diaSourceId column")?
        .iter()
        .enumerate()
        .map(|(i, id)| (id.unwrap_or(0), i))
        .collect();
    let owners: Vec<Owner> = inp
        .dia_objects
        .iter()
        .zip(inp.ss_objects)
        .map(|(d, s)| Owner::of(*d, *s))
        .collect::<Result<_>>()?;
    let ids_of = |b: &RecordBatch| -> Result<Vec<i64>> {
        Ok(b.column_by_name("diaObjectId")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .context("no diaObjectId column")?
            .iter()
            .map(|v| v.unwrap_or(0))
            .collect())
    };
    let object_row: HashMap<i64, usize> = ids_of(inp.object_rows)?
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, i))
        .collect();
    let v = inp.visit;
    let mjd = v.mjd_mid();
    let empty = History::default();
    let (cut_difference, cut_science, cut_template) = (
        Cutouts::new(inp.difference)?,
        Cutouts::new(inp.science)?,
        Cutouts::new(inp.template)?,
    );
    let mut out = Vec::with_capacity(inp.sources.len());
    for (i, s) in inp.sources.iter().enumerate() {
        let owner = owners[i];
        let cards = |image: &str| {
            [
                ("DIASRCID", HeaderValue::Int(inp.ids[i])),
                match owner {
                    Owner::Dia(o) => ("DIAOBJID", HeaderValue::Int(o)),
                    Owner::Ss(o) => ("SSOBJID", HeaderValue::Int(o)),
                },
                ("VISIT", HeaderValue::Int(v.visit)),
                ("DETECTOR", HeaderValue::Int(0)),
                ("MJD-OBS", HeaderValue::Float(mjd)),
                ("FILTER", HeaderValue::Text(BANDS[v.band].to_string())),
                ("IMAGETYP", HeaderValue::Text(image.to_string())),
                ("BUNIT", HeaderValue::Text("nJy".to_string())),
            ]
        };
        let cut = |c: &Cutouts, what: &str| c.cutout(s.x, s.y, &cards(what));
        let difference = cut(&cut_difference, "difference")?;
        let science = cut(&cut_science, "science")?;
        let template = cut(&cut_template, "template")?;
        let h = history.get(&owner).unwrap_or(&empty);
        let (dia_object, ss_source, orbit) = match owner {
            Owner::Dia(o) => (
                object_row.get(&o).map(|&r| objects[r].as_slice()),
                None,
                None,
            ),
            Owner::Ss(o) => (
                None,
                ss_row.get(&inp.ids[i]).map(|&r| ss_sources[r].as_slice()),
                inp.orbits.get(&o).map(Vec::as_slice),
            ),
        };
        let body = schema.encode_alert(&AlertParts {
            dia_source_id: inp.ids[i],
            dia_source: &sources[i],
            prv_dia_sources: h.sources.iter().map(Vec::as_slice).collect(),
            prv_dia_forced_sources: h.forced.iter().map(Vec::as_slice).collect(),
            dia_object,
            ss_source,
            mpc_orbits: orbit,
            cutout_difference: Some(&difference),
            cutout_science: Some(&science),
            cutout_template: Some(&template),
        })?;
        out.push(MadeAlert {
            id: inp.ids[i],
            object: inp.dia_objects[i],
            ss_object: inp.ss_objects[i],
            mjd,
            body,
        });
    }
    for (row, owner) in sources.into_iter().zip(owners) {
        history.entry(owner).or_default().sources.push(row);
    }
    for (row, object) in forced.into_iter().zip(ids_of(inp.forced_rows)?) {
        history
            .entry(Owner::Dia(object))
            .or_default()
            .forced
            .push(row);
    }
    Ok(out)
}
