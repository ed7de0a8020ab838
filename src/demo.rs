//! The demo data release: a deterministic synthetic survey (the processing crate's sky and
//! cadence) measured into the survey's catalogs (`dp`: Object, Source, ForcedSource, Visit,
//! CcdVisit; `ap`: DiaObject, DiaSource, DiaForcedSource, SSObject) in the catalog store;
//! and simulated raws with their calibrations, processed by the single-visit pipeline into
//! the image archive (raws, calibration products, PVIs, backgrounds, source tables).
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use aster_archive::catalog::{CatalogStore, DEFAULT_MAX_ROWS};
use aster_archive::schema::builtin_schemas;
use aster_processing::sky::{
    self, BANDS, COADD_DEPTH, DETECTORS, Footprint, SimObject, SimVisit, detector_center,
    detector_of, measure, noise_rng,
};
use rand::Rng;

use crate::tables::Columns;

#[derive(Debug, Clone, Copy)]
pub struct DemoSpec {
    pub objects: u64,
    pub visits: u64,
    pub seed: u64,
}

fn mjd_to_unix_us(mjd: f64) -> i64 {
    ((mjd - 40_587.0) * 86_400.0 * 1e6) as i64
}

/// Name of a per-band column, e.g. `r_psfFlux`.
fn band_col(band: usize, suffix: &str) -> String {
    format!("{}_{suffix}", BANDS[band])
}

/// Builds the whole demo release into `store`, replacing any tables of the same names.
pub async fn build(store: &CatalogStore, spec: DemoSpec) -> Result<()> {
    let schemas = builtin_schemas();
    for s in &schemas {
        for t in &s.tables {
            store.drop_table(&s.name, &t.name).await?;
            store
                .create_table(&s.name, t, DEFAULT_MAX_ROWS)
                .await
                .with_context(|| format!("creating {}.{}", s.name, t.name))?;
        }
    }
    let footprint = Footprint::for_objects(spec.objects);
    let visits = sky::cadence(spec.seed, spec.visits, footprint);
    write_visits(store, &visits).await?;

    // Objects are generated and written in chunks so a 10M-object release stays in bounded memory.
    const CHUNK: usize = 1_000_000;
    let mut generator = sky::objects(spec.seed, spec.objects, footprint);
    let mut variables: Vec<SimObject> = Vec::new();
    let mut chunk_no = 0u64;
    loop {
        let chunk: Vec<SimObject> = generator.by_ref().take(CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        tracing::info!(objects = chunk.len(), chunk = chunk_no, "writing dp.Object");
        store
            .append("dp", "Object", &[objects_batch(&chunk, spec.seed)?])
            .await?;
        if !visits.is_empty() {
            let (src, forced) = visit_measurements(&chunk, &visits, spec.seed, chunk_no)?;
            store.append("dp", "Source", &[src]).await?;
            store.append("dp", "ForcedSource", &[forced]).await?;
        }
        variables.extend(chunk.into_iter().filter(|o| o.variability.is_some()));
        chunk_no += 1;
    }
    if !visits.is_empty() {
        write_dia(store, &variables, &visits, spec.seed).await?;
        write_solar_system(store, &visits, footprint, spec.seed).await?;
    }
    Ok(())
}

async fn write_visits(store: &CatalogStore, visits: &[SimVisit]) -> Result<()> {
    if visits.is_empty() {
        return Ok(());
    }
    let mut c = Columns::default();
    c.i64("visit", visits.iter().map(|v| Some(v.visit)).collect())
        .str(
            "physical_filter",
            visits
                .iter()
                .map(|v| Some(format!("{}_aster", BANDS[v.band])))
                .collect(),
        )
        .str(
            "band",
            visits
                .iter()
                .map(|v| Some(BANDS[v.band].to_string()))
                .collect(),
        )
        .f64("ra", visits.iter().map(|v| Some(v.ra)).collect())
        .f64("decl", visits.iter().map(|v| Some(v.dec)).collect())
        .f64(
            "skyRotation",
            visits.iter().map(|v| Some(v.sky_rotation)).collect(),
        )
        .f64("azimuth", visits.iter().map(|v| Some(v.azimuth)).collect())
        .f64(
            "altitude",
            visits.iter().map(|v| Some(v.altitude)).collect(),
        )
        .f64(
            "zenithDistance",
            visits.iter().map(|v| Some(90.0 - v.altitude)).collect(),
        )
        .f64("airmass", visits.iter().map(|v| Some(v.airmass)).collect())
        .f64("expTime", visits.iter().map(|v| Some(v.exp_time)).collect())
        .ts(
            "expMidpt",
            visits
                .iter()
                .map(|v| Some(mjd_to_unix_us(v.mjd_mid())))
                .collect(),
        )
        .f64(
            "expMidptMJD",
            visits.iter().map(|v| Some(v.mjd_mid())).collect(),
        )
        .ts(
            "obsStart",
            visits
                .iter()
                .map(|v| Some(mjd_to_unix_us(v.mjd_start)))
                .collect(),
        )
        .f64(
            "obsStartMJD",
            visits.iter().map(|v| Some(v.mjd_start)).collect(),
        );
    store.append("dp", "Visit", &[c.batch()?]).await?;

    let ccds: Vec<(&SimVisit, i64)> = visits
        .iter()
        .flat_map(|v| (0..DETECTORS).map(move |d| (v, d)))
        .collect();
    let mut rng = noise_rng(0, 77);
    let mut c = Columns::default();
    c.i64(
        "ccdVisitId",
        ccds.iter().map(|(v, d)| Some(v.visit + d)).collect(),
    )
    .i64("visitId", ccds.iter().map(|(v, _)| Some(v.visit)).collect())
    .str(
        "physical_filter",
        ccds.iter()
            .map(|(v, _)| Some(format!("{}_aster", BANDS[v.band])))
            .collect(),
    )
    .str(
        "band",
        ccds.iter()
            .map(|(v, _)| Some(BANDS[v.band].to_string()))
            .collect(),
    )
    .f64(
        "ra",
        ccds.iter()
            .map(|(v, d)| Some(detector_center(v, *d).0))
            .collect(),
    )
    .f64(
        "decl",
        ccds.iter()
            .map(|(v, d)| Some(detector_center(v, *d).1))
            .collect(),
    )
    .f64(
        "zenithDistance",
        ccds.iter().map(|(v, _)| Some(90.0 - v.altitude)).collect(),
    )
    .f32(
        "zeroPoint",
        ccds.iter()
            .map(|_| Some(31.0 + rng.random_range(-0.05..0.05)))
            .collect(),
    )
    .f32(
        "psfSigma",
        ccds.iter()
            .map(|(v, _)| Some((v.seeing / 2.355 / 0.2) as f32))
            .collect(),
    )
    .f32(
        "skyBg",
        ccds.iter()
            .map(|(v, _)| Some((800.0 * v.airmass) as f32))
            .collect(),
    )
    .f32(
        "skyNoise",
        ccds.iter()
            .map(|(v, _)| Some((28.0 * v.airmass.sqrt()) as f32))
            .collect(),
    )
    .i64("detector", ccds.iter().map(|(_, d)| Some(*d)).collect())
    .f32(
        "seeing",
        ccds.iter().map(|(v, _)| Some(v.seeing as f32)).collect(),
    )
    .f64(
        "expMidptMJD",
        ccds.iter().map(|(v, _)| Some(v.mjd_mid())).collect(),
    )
    .f64(
        "expTime",
        ccds.iter().map(|(v, _)| Some(v.exp_time)).collect(),
    )
    .f64(
        "obsStartMJD",
        ccds.iter().map(|(v, _)| Some(v.mjd_start)).collect(),
    )
    .i64("xSize", ccds.iter().map(|_| Some(4000)).collect())
    .i64("ySize", ccds.iter().map(|_| Some(4000)).collect());
    store.append("dp", "CcdVisit", &[c.batch()?]).await?;
    Ok(())
}

/// The release's tract (a HEALPix cell of order 6) and patch (one of the 64 cells of order
/// 9 within it) of a position.
pub fn tract_patch(ra: f64, dec: f64) -> (i64, i64) {
    let (lon, lat) = (ra.to_radians(), dec.to_radians());
    (
        cdshealpix::nested::hash(6, lon, lat) as i64,
        (cdshealpix::nested::hash(9, lon, lat) % 64) as i64,
    )
}

fn objects_batch(objs: &[SimObject], seed: u64) -> Result<RecordBatch> {
    let first = objs.first().map(|o| o.id as u64).unwrap_or(0);
    let mut rng = noise_rng(seed, 1 << 40 | first);
    let n = objs.len();
    let mut c = Columns::default();
    c.i64("objectId", objs.iter().map(|o| Some(o.id)).collect())
        .f64("coord_ra", objs.iter().map(|o| Some(o.ra)).collect())
        .f64("coord_dec", objs.iter().map(|o| Some(o.dec)).collect())
        .i64("parentObjectId", vec![Some(0); n])
        .bool("detect_isPrimary", vec![Some(true); n])
        .f64(
            "refExtendedness",
            objs.iter()
                .map(|o| Some(if o.is_star { 0.0 } else { 1.0 }))
                .collect(),
        )
        .str("refBand", vec![Some("i".to_string()); n])
        .i64(
            "tract",
            objs.iter()
                .map(|o| Some(tract_patch(o.ra, o.dec).0))
                .collect(),
        )
        .i64(
            "patch",
            objs.iter()
                .map(|o| Some(tract_patch(o.ra, o.dec).1))
                .collect(),
        );
    let (mut xx, mut yy, mut xy) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for o in objs {
        // Second moments in pixel² (0.2"/px): PSF of 0.7" plus the galaxy's size.
        let psf = (0.7 / 2.355 / 0.2f64).powi(2);
        let gal = (o.size / 0.2).powi(2);
        let e: f64 = if o.is_star {
            0.0
        } else {
            rng.random_range(-0.3..0.3)
        };
        xx.push(Some(psf + gal * (1.0 + e)));
        yy.push(Some(psf + gal * (1.0 - e)));
        xy.push(Some(gal * rng.random_range(-0.2..0.2)));
    }
    c.f64("shape_xx", xx)
        .f64("shape_yy", yy)
        .f64("shape_xy", xy);
    for (b, &depth) in COADD_DEPTH.iter().enumerate() {
        let mut psf = Vec::with_capacity(n);
        let mut psf_err = Vec::with_capacity(n);
        let mut cm = Vec::with_capacity(n);
        let mut cm_err = Vec::with_capacity(n);
        for o in objs {
            let (f, e) = measure(&mut rng, o.flux[b], depth);
            // PSF photometry misses a galaxy's extended light; the model flux recovers it.
            let loss = if o.is_star {
                1.0
            } else {
                1.0 / (1.0 + (o.size / 0.7).powi(2))
            };
            psf.push(Some(f * loss));
            psf_err.push(Some(e));
            let (fc, ec) = measure(&mut rng, o.flux[b], depth - 0.2);
            cm.push(Some(fc));
            cm_err.push(Some(ec));
        }
        c.f64(band_col(b, "psfFlux"), psf)
            .f64(band_col(b, "psfFluxErr"), psf_err)
            .f64(band_col(b, "cModelFlux"), cm)
            .f64(band_col(b, "cModelFluxErr"), cm_err)
            .f64(
                band_col(b, "extendedness"),
                objs.iter()
                    .map(|o| Some(if o.is_star { 0.0 } else { 1.0 }))
                    .collect(),
            );
    }
    c.batch()
}

/// Source (detections at SNR ≥ 5) and ForcedSource (every object in every visit) rows.
fn visit_measurements(
    objs: &[SimObject],
    visits: &[SimVisit],
    seed: u64,
    chunk: u64,
) -> Result<(RecordBatch, RecordBatch)> {
    let mut rng = noise_rng(seed, 2 << 40 | chunk);
    let mut s = SourceRows::default();
    let mut f = ForcedRows::default();
    for v in visits {
        let depth = v.depth();
        for o in objs {
            let Some((det, x, y)) = detector_of(v, o.ra, o.dec) else {
                continue;
            };
            let ccd = v.visit + det;
            let truth = o.flux_at(v.band, v.mjd_mid());
            let (flux, err) = measure(&mut rng, truth, depth);
            f.id.push(Some(ccd * 10_000_000 + o.id % 10_000_000));
            f.object.push(Some(o.id));
            f.ra.push(Some(o.ra));
            f.dec.push(Some(o.dec));
            f.ccd.push(Some(ccd));
            f.band.push(Some(BANDS[v.band].to_string()));
            f.flux.push(Some(flux));
            f.err.push(Some(err));
            f.diff.push(Some(flux - o.flux[v.band]));
            if flux / err >= 5.0 {
                // Astrometric scatter: seeing over SNR, in degrees.
                let sig = v.seeing / (flux / err) / 3600.0;
                let dra = sig * sky::gaussian(&mut rng) / o.dec.to_radians().cos();
                let ddec = sig * sky::gaussian(&mut rng);
                s.id.push(Some(ccd * 10_000_000 + s.id.len() as i64 % 10_000_000));
                s.ra.push(Some((o.ra + dra).rem_euclid(360.0)));
                s.dec.push(Some(o.dec + ddec));
                s.ccd.push(Some(ccd));
                s.visit.push(Some(v.visit));
                s.det.push(Some(det));
                s.band.push(Some(BANDS[v.band].to_string()));
                s.x.push(Some(x));
                s.y.push(Some(y));
                s.flux.push(Some(flux));
                s.err.push(Some(err));
                s.ext.push(Some(if o.is_star { 0.0 } else { 1.0 }));
            }
        }
    }
    let mut c = Columns::default();
    c.i64("sourceId", s.id)
        .f64("coord_ra", s.ra.clone())
        .f64("coord_dec", s.dec.clone())
        .i64("ccdVisitId", s.ccd)
        .i64("visit", s.visit)
        .i64("detector", s.det)
        .str("band", s.band)
        .f64("ra", s.ra)
        .f64("decl", s.dec)
        .f64("x", s.x)
        .f64("y", s.y)
        .f64("psfFlux", s.flux.clone())
        .f64("psfFluxErr", s.err.clone())
        .f64("calibFlux", s.flux)
        .f64("calibFluxErr", s.err)
        .f64("extendedness", s.ext);
    let sources = c.batch()?;
    let mut c = Columns::default();
    c.i64("forcedSourceId", f.id)
        .i64("objectId", f.object)
        .f64("coord_ra", f.ra)
        .f64("coord_dec", f.dec)
        .i64("ccdVisitId", f.ccd)
        .str("band", f.band)
        .f64("psfFlux", f.flux)
        .f64("psfFluxErr", f.err.clone())
        .f64("psfDiffFlux", f.diff)
        .f64("psfDiffFluxErr", f.err);
    Ok((sources, c.batch()?))
}

#[derive(Default)]
struct SourceRows {
    id: Vec<Option<i64>>,
    ra: Vec<Option<f64>>,
    dec: Vec<Option<f64>>,
    ccd: Vec<Option<i64>>,
    visit: Vec<Option<i64>>,
    det: Vec<Option<i64>>,
    band: Vec<Option<String>>,
    x: Vec<Option<f64>>,
    y: Vec<Option<f64>>,
    flux: Vec<Option<f64>>,
    err: Vec<Option<f64>>,
    ext: Vec<Option<f64>>,
}

#[derive(Default)]
struct ForcedRows {
    id: Vec<Option<i64>>,
    object: Vec<Option<i64>>,
    ra: Vec<Option<f64>>,
    dec: Vec<Option<f64>>,
    ccd: Vec<Option<i64>>,
    band: Vec<Option<String>>,
    flux: Vec<Option<f64>>,
    err: Vec<Option<f64>>,
    diff: Vec<Option<f64>>,
}

/// One detection on a difference image.
struct DiaDetection<'a> {
    id: i64,
    object: Option<i64>,
    ss_object: Option<i64>,
    visit: &'a SimVisit,
    det: i64,
    ra: f64,
    dec: f64,
    x: f64,
    y: f64,
    diff: f64,
    err: f64,
    science: f64,
}

/// Forced photometry of a variable on one visit's difference image.
struct ForcedDia<'a> {
    id: i64,
    dia_object: i64,
    ra: f64,
    dec: f64,
    visit: &'a SimVisit,
    det: i64,
    diff: f64,
    err: f64,
    science: f64,
}

async fn write_dia(
    store: &CatalogStore,
    variables: &[SimObject],
    visits: &[SimVisit],
    seed: u64,
) -> Result<()> {
    let mut rng = noise_rng(seed, 3 << 40);
    let mut detections: Vec<DiaDetection> = Vec::new();
    let mut forced: Vec<ForcedDia> = Vec::new();
    let mut detected: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for o in variables {
        // DIAObject ids live in their own range, apart from Object ids.
        let dia_id = 1_000_000_000_000 + o.id;
        for v in visits {
            let Some((det, x, y)) = detector_of(v, o.ra, o.dec) else {
                continue;
            };
            let truth = o.flux_at(v.band, v.mjd_mid());
            // The template holds the quiescent flux: the mean for variables, the host for transients.
            let template = o.flux[v.band];
            let (science, err) = measure(&mut rng, truth, v.depth());
            let diff = science - template;
            if (diff / err).abs() >= 5.0 {
                detected.entry(dia_id).or_default().push(detections.len());
                detections.push(DiaDetection {
                    id: (v.visit + det) * 100_000 + detections.len() as i64 % 100_000,
                    object: Some(dia_id),
                    ss_object: None,
                    visit: v,
                    det,
                    ra: o.ra,
                    dec: o.dec,
                    x,
                    y,
                    diff,
                    err,
                    science,
                });
            }
            forced.push(ForcedDia {
                id: (v.visit + det) * 10_000_000 + o.id % 10_000_000,
                dia_object: dia_id,
                ra: o.ra,
                dec: o.dec,
                visit: v,
                det,
                diff,
                err,
                science,
            });
        }
    }
    // Forced photometry is kept only for DIAObjects that exist, i.e. were detected at least once.
    forced.retain(|f| detected.contains_key(&f.dia_object));
    let mut fc = Columns::default();
    fc.i64(
        "diaForcedSourceId",
        forced.iter().map(|f| Some(f.id)).collect(),
    )
    .i64(
        "diaObjectId",
        forced.iter().map(|f| Some(f.dia_object)).collect(),
    )
    .f64("ra", forced.iter().map(|f| Some(f.ra)).collect())
    .f64("dec", forced.iter().map(|f| Some(f.dec)).collect())
    .i64(
        "visit",
        forced.iter().map(|f| Some(f.visit.visit)).collect(),
    )
    .i32(
        "detector",
        forced.iter().map(|f| Some(f.det as i32)).collect(),
    )
    .f32(
        "psfFlux",
        forced.iter().map(|f| Some(f.diff as f32)).collect(),
    )
    .f32(
        "psfFluxErr",
        forced.iter().map(|f| Some(f.err as f32)).collect(),
    )
    .f64(
        "midpointMjdTai",
        forced.iter().map(|f| Some(f.visit.mjd_mid())).collect(),
    )
    .f32(
        "scienceFlux",
        forced.iter().map(|f| Some(f.science as f32)).collect(),
    )
    .str(
        "band",
        forced
            .iter()
            .map(|f| Some(BANDS[f.visit.band].to_string()))
            .collect(),
    );

    // DIAObject summaries from their detections.
    let mut c = Columns::default();
    let ids: Vec<i64> = detected.keys().copied().collect();
    let pick =
        |id: &i64| -> Vec<&DiaDetection> { detected[id].iter().map(|&i| &detections[i]).collect() };
    c.i64("diaObjectId", ids.iter().map(|i| Some(*i)).collect())
        .f64(
            "validityStartMjdTai",
            ids.iter()
                .map(|i| pick(i).iter().map(|d| d.visit.mjd_mid()).reduce(f64::min))
                .collect(),
        )
        .f64("ra", ids.iter().map(|i| Some(pick(i)[0].ra)).collect())
        .f64("dec", ids.iter().map(|i| Some(pick(i)[0].dec)).collect())
        .i32(
            "nDiaSources",
            ids.iter().map(|i| Some(pick(i).len() as i32)).collect(),
        )
        .f64(
            "firstDiaSourceMjdTai",
            ids.iter()
                .map(|i| pick(i).iter().map(|d| d.visit.mjd_mid()).reduce(f64::min))
                .collect(),
        )
        .f64(
            "lastDiaSourceMjdTai",
            ids.iter()
                .map(|i| pick(i).iter().map(|d| d.visit.mjd_mid()).reduce(f64::max))
                .collect(),
        );
    for b in 0..6 {
        let mut mean = vec![];
        let mut mean_err = vec![];
        let mut sigma = vec![];
        let mut ndata = vec![];
        for id in &ids {
            let ds: Vec<&DiaDetection> =
                pick(id).into_iter().filter(|d| d.visit.band == b).collect();
            let n = ds.len();
            ndata.push(Some(n as i32));
            if n == 0 {
                mean.push(None);
                mean_err.push(None);
                sigma.push(None);
                continue;
            }
            let m = ds.iter().map(|d| d.diff).sum::<f64>() / n as f64;
            let var = ds.iter().map(|d| (d.diff - m).powi(2)).sum::<f64>() / n as f64;
            let e = (ds.iter().map(|d| d.err * d.err).sum::<f64>()).sqrt() / n as f64;
            mean.push(Some(m as f32));
            mean_err.push(Some(e as f32));
            sigma.push(Some(var.sqrt() as f32));
        }
        c.f32(band_col(b, "psfFluxMean"), mean)
            .f32(band_col(b, "psfFluxMeanErr"), mean_err)
            .f32(band_col(b, "psfFluxSigma"), sigma)
            .i32(band_col(b, "psfFluxNdata"), ndata);
    }
    store.append("ap", "DiaObject", &[c.batch()?]).await?;
    store
        .append("ap", "DiaForcedSource", &[fc.batch()?])
        .await?;
    store
        .append("ap", "DiaSource", &[dia_sources_batch(&detections)?])
        .await?;
    Ok(())
}

fn dia_sources_batch(ds: &[DiaDetection]) -> Result<RecordBatch> {
    let mut c = Columns::default();
    c.i64("diaSourceId", ds.iter().map(|d| Some(d.id)).collect())
        .i64("visit", ds.iter().map(|d| Some(d.visit.visit)).collect())
        .i32("detector", ds.iter().map(|d| Some(d.det as i32)).collect())
        .i64("diaObjectId", ds.iter().map(|d| d.object).collect())
        .i64("ssObjectId", ds.iter().map(|d| d.ss_object).collect())
        .f64(
            "midpointMjdTai",
            ds.iter().map(|d| Some(d.visit.mjd_mid())).collect(),
        )
        .f64("ra", ds.iter().map(|d| Some(d.ra)).collect())
        .f64("dec", ds.iter().map(|d| Some(d.dec)).collect())
        .f32(
            "raErr",
            ds.iter()
                .map(|d| Some((d.visit.seeing / (d.diff / d.err).abs() / 3600.0) as f32))
                .collect(),
        )
        .f32(
            "decErr",
            ds.iter()
                .map(|d| Some((d.visit.seeing / (d.diff / d.err).abs() / 3600.0) as f32))
                .collect(),
        )
        .f32("x", ds.iter().map(|d| Some(d.x as f32)).collect())
        .f32("y", ds.iter().map(|d| Some(d.y as f32)).collect())
        .f32("apFlux", ds.iter().map(|d| Some(d.diff as f32)).collect())
        .f32("apFluxErr", ds.iter().map(|d| Some(d.err as f32)).collect())
        .f32(
            "snr",
            ds.iter()
                .map(|d| Some((d.diff / d.err).abs() as f32))
                .collect(),
        )
        .f32("psfFlux", ds.iter().map(|d| Some(d.diff as f32)).collect())
        .f32(
            "psfFluxErr",
            ds.iter().map(|d| Some(d.err as f32)).collect(),
        )
        .f32(
            "scienceFlux",
            ds.iter().map(|d| Some(d.science as f32)).collect(),
        )
        .f32(
            "scienceFluxErr",
            ds.iter().map(|d| Some(d.err as f32)).collect(),
        )
        .str(
            "band",
            ds.iter()
                .map(|d| Some(BANDS[d.visit.band].to_string()))
                .collect(),
        )
        .bool(
            "isNegative",
            ds.iter().map(|d| Some(d.diff < 0.0)).collect(),
        )
        .f32(
            "reliability",
            ds.iter()
                .map(|d| Some((1.0 - 1.0 / (d.diff / d.err).abs()).clamp(0.0, 1.0) as f32))
                .collect(),
        )
        .f32("extendedness", ds.iter().map(|_| Some(0.0)).collect());
    c.batch()
}

/// Asteroids on straight tracks across the footprint: SSObjects and their DIASources.
async fn write_solar_system(
    store: &CatalogStore,
    visits: &[SimVisit],
    footprint: Footprint,
    seed: u64,
) -> Result<()> {
    let mut rng = noise_rng(seed, 4 << 40);
    let n = 200;
    let mut detections = Vec::new();
    let mut rows: Vec<(i64, String, i32, f64, f64, [f64; 3])> = Vec::new();
    let t0 = visits
        .iter()
        .map(|v| v.mjd_start)
        .fold(f64::INFINITY, f64::min);
    for k in 0..n {
        let id = 9_000_000_000 + k as i64;
        let ra0 = footprint.ra
            + rng.random_range(-footprint.radius..footprint.radius)
                / footprint.dec.to_radians().cos();
        let dec0 = footprint.dec + rng.random_range(-footprint.radius..footprint.radius);
        // Main-belt rates: ~0.25 deg/day near opposition.
        let (vra, vdec) = (rng.random_range(-0.3..0.3), rng.random_range(-0.1..0.1));
        let h_r: f64 = rng.random_range(15.0..19.0);
        let mag = h_r + 5.0;
        let mut first: Option<f64> = None;
        let mut last = 0.0;
        let mut count = 0;
        for v in visits {
            let dt = v.mjd_mid() - t0;
            let (ra, dec) = ((ra0 + vra * dt).rem_euclid(360.0), dec0 + vdec * dt);
            if !(-90.0..=90.0).contains(&dec) {
                continue;
            }
            let Some((det, x, y)) = detector_of(v, ra, dec) else {
                continue;
            };
            let (flux, err) = measure(
                &mut rng,
                sky::mag_to_njy(mag + 0.3 * (v.band as f64 - 2.0).abs()),
                v.depth(),
            );
            if flux / err < 5.0 {
                continue;
            }
            first.get_or_insert(v.mjd_mid());
            last = v.mjd_mid();
            count += 1;
            detections.push(DiaDetection {
                id: (v.visit + det) * 100_000 + 90_000 + detections.len() as i64 % 10_000,
                object: None,
                ss_object: Some(id),
                visit: v,
                det,
                ra,
                dec,
                x,
                y,
                diff: flux,
                err,
                science: flux,
            });
        }
        if let Some(f) = first {
            let name = format!(
                "2026 {}{}{}",
                (b'A' + (k % 24) as u8) as char,
                (b'A' + (k / 24 % 25) as u8) as char,
                k
            );
            rows.push((id, name, count, last - f, f, [h_r + 0.4, h_r, h_r - 0.2]));
        }
    }
    let mut c = Columns::default();
    c.i64("ssObjectId", rows.iter().map(|r| Some(r.0)).collect())
        .str(
            "designation",
            rows.iter().map(|r| Some(r.1.clone())).collect(),
        )
        .i32("nObs", rows.iter().map(|r| Some(r.2)).collect())
        .f32("arc", rows.iter().map(|r| Some(r.3 as f32)).collect())
        .f64(
            "firstObservationMjdTai",
            rows.iter().map(|r| Some(r.4)).collect(),
        );
    for (i, b) in [1usize, 2, 3].iter().enumerate() {
        c.f32(
            band_col(*b, "H"),
            rows.iter().map(|r| Some(r.5[i] as f32)).collect(),
        )
        .f32(
            band_col(*b, "G12"),
            rows.iter().map(|_| Some(0.15)).collect(),
        );
    }
    store.append("ap", "SSObject", &[c.batch()?]).await?;
    store
        .append("ap", "DiaSource", &[dia_sources_batch(&detections)?])
        .await?;
    Ok(())
}

/// The demo's image archive: a simulated survey (raws, calibration exposures, reference
/// catalogue), its calibration products and the single-visit pipeline over every visit,
/// each step resuming where an earlier start stopped. The pipeline runs without its
/// catalogs task, so the synthetic catalog release stays whole.
pub async fn build_images(
    config: &crate::config::Config,
    store: &CatalogStore,
    registry: &aster_archive::registry::Registry,
) -> Result<()> {
    let dir = &config.data_dir;
    let d = &config.demo;
    if !dir.join("simulation.json").exists() {
        tracing::info!(
            visits = d.image_visits,
            ccds = d.image_ccds,
            "simulating the demo's raws"
        );
        crate::simulate::simulate_survey(
            dir,
            registry,
            &crate::simulate::SurveySpec {
                seed: d.seed,
                visits: d.image_visits,
                ccds: d.image_ccds,
                ccd_size: d.image_ccd_size,
                density: 60_000.0,
            },
        )?;
    }
    crate::calibrate::build_all(dir, registry)?;
    let mut pipeline =
        crate::pipeline::definition::parse(include_str!("../pipelines/single-visit.yaml"), &[])?;
    pipeline
        .tasks
        .retain(|(_, t)| !matches!(t, crate::pipeline::definition::Task::Catalogs(_)));
    crate::pipeline::run::run(dir, store, registry, &pipeline, &[], None).await?;
    let coadds = crate::coadd::build(registry, &crate::coadd::CoaddOptions::default())?;
    tracing::info!(
        built = coadds.built.len(),
        unchanged = coadds.unchanged,
        "the demo's coadds"
    );
    let hips = crate::hips::build(dir, registry, &crate::hips::HipsOptions::default())?;
    for (id, tiles) in hips.built {
        tracing::info!(hips = %id, tiles, "the demo's HiPS");
    }
    Ok(())
}

/// A predicted schedule for the demo (DMS-REQ-0353), when none is published: a day of
/// visits to the survey's field from ten minutes from now, one every 40 s in blocks of g,
/// r, i and z with small dithers, so `/schedule` and `/api/schedule` have something ahead.
pub fn publish_schedule(data_dir: &std::path::Path) -> Result<()> {
    use aster_archive::schedule::{PlannedVisit, Schedule, ScheduleStore};
    let store = ScheduleStore::new(data_dir);
    if store.current()?.is_some() {
        return Ok(());
    }
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let start = ((unix + 37.0) / 60.0).ceil() * 60.0 + 600.0;
    let (ra0, dec0) = crate::simulate::FIELD;
    let visits = (0..2160)
        .map(|i| {
            let step = f64::from(i);
            PlannedVisit {
                mjd: (start + 40.0 * step) / 86_400.0 + 40_587.0,
                ra: ra0 + 0.1 * (0.7 * step).sin(),
                dec: dec0 + 0.1 * (1.3 * step).cos(),
                band: ["g", "r", "i", "z"][i as usize / 10 % 4].to_string(),
                exptime: 30.0,
                rotation: Some(0.0),
                target: Some("demo field".into()),
            }
        })
        .collect();
    store.publish(Schedule {
        source: format!("aster demo {}", env!("CARGO_PKG_VERSION")),
        published: None,
        visits,
    })?;
    Ok(())
}

/// The demo's user space (DMS-REQ-0290, 0340): alice's target list, kept as a CSV with its
/// metadata sidecar in her VOSpace home and imported as her table `user_alice.targets`,
/// shared with her group demo-collab, so a new user sees Level 3 data beside the release.
pub async fn seed_user_space(
    engine: &aster_archive::query::QueryEngine,
    acl: &aster_archive::user_tables::UserTables,
    nodes: &aster_vospace::NodeStore,
) -> Result<()> {
    use aster_archive::identity::{GroupName, UserName};
    use aster_archive::user_tables::{Sidecar, TableAccess, import, schema_of};
    use futures::StreamExt;
    let alice = UserName::new("alice")?;
    if engine
        .store()
        .manifest(&schema_of(&alice), "targets")
        .await?
        .is_some()
    {
        return Ok(());
    }
    let mut rows = engine
        .execute(
            "SELECT TOP 200 objectId, coord_ra, coord_dec, r_psfFlux FROM dp.Object \
             WHERE r_psfFlux > 0 ORDER BY r_psfFlux DESC",
            Vec::new(),
            None,
            None,
        )
        .await?;
    let mut csv = Vec::new();
    {
        let mut w = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut csv);
        while let Some(b) = rows.next().await {
            w.write(&b?)?;
        }
    }
    let sidecar = "description: alice's follow-up targets, the brightest objects of the demo release\n\
                   ra: coord_ra\ndec: coord_dec\ncolumns:\n  \
                   r_psfFlux: {unit: nJy, ucd: phot.flux;em.opt.R, description: PSF flux in r}\n";
    nodes.ensure_home("alice")?;
    for (name, bytes) in [
        ("targets.csv", csv.clone()),
        ("targets.yaml", sidecar.as_bytes().to_vec()),
    ] {
        let path = aster_vospace::NodePath::from_raw(&format!("alice/{name}"))?;
        let up = nodes.begin_upload(&path, Some(bytes.len() as u64))?;
        let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes))]);
        nodes
            .finish_upload(up, "alice", Some("text/plain".into()), None, body)
            .await?;
    }
    let table = aster_archive::formats::read_any("targets.csv", csv.into())?;
    let (n, _) = import(
        engine.store(),
        &alice,
        "targets",
        table,
        Some(&Sidecar::parse(sidecar)?),
    )
    .await?;
    acl.set(
        &schema_of(&alice),
        "targets",
        &TableAccess {
            public: false,
            groups: vec![GroupName::new("demo-collab")?],
        },
    )?;
    engine.invalidate().await;
    tracing::info!(rows = n, "the demo's user table user_alice.targets");
    Ok(())
}
