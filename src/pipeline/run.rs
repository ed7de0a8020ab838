//! `aster pipeline run`: executes a pipeline definition over the data directory. The data
//! IDs are the (visit, detector) pairs of the science raws, narrowed by `--where`; each is
//! processed through ISR, characterization and measurement with its CCD's calibration
//! products, and its outputs written under `runs/<run>/` (`pvi/`, `background/`,
//! `sources/`, then `ccdvisit/` last, each file atomically), so a data ID whose record
//! exists is done and a rerun after a crash redoes only what is missing (DMS-REQ-0294).
//! The catalogs task then rebuilds the Source, Visit and CcdVisit tables of the catalog
//! store from every output of the run, which makes it idempotent too.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow::array::RecordBatch;
use aster_archive::calib_file::read_calibration;
use aster_archive::catalog::{CatalogStore, DEFAULT_MAX_ROWS};
use aster_archive::exposure_file::{write_background, write_exposure};
use aster_archive::raw_file::read_raw;
use aster_archive::registry::{
    DataId as RegDataId, DatasetType, INSTRUMENT, NewDataset, Observation, Provenance, Registry,
    formats,
};
use aster_archive::schema::builtin_schemas;
use aster_processing::background::Background;
use aster_processing::calib::{CalibProduct, CalibType};
use aster_processing::characterize::{ReferenceStar, characterize_with_background};
use aster_processing::image::Exposure;
use aster_processing::isr::{IsrCalibrations, process_visit};
use aster_processing::raw::{ObsType, ObservationInfo};
use aster_processing::single_frame::process;
use aster_processing::sky::{BAND_RANGE_NM, BANDS};
use aster_processing::wcs::PixelPosition;
use serde::{Deserialize, Serialize};

use super::definition::Pipeline;
use super::{SourceContext, sources_batch};
use crate::calibrate::{product_path, scan_raws};
use crate::tables::{Columns, write_parquet};

/// One unit of work: a visit seen by one CCD, with its snaps.
#[derive(Debug, Clone)]
pub struct DataId {
    pub visit: i64,
    pub detector: i64,
    pub detector_name: String,
    pub band: usize,
    pub snaps: Vec<(PathBuf, ObservationInfo)>,
}

impl DataId {
    pub fn ccd_visit(&self) -> i64 {
        self.visit * 10 + self.detector
    }
    fn stem(&self) -> String {
        format!("{}_{}", self.visit, self.detector_name)
    }
}

/// The CcdVisit record of a processed data ID: written last, so its presence means done.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CcdVisitRecord {
    pub ccd_visit: i64,
    pub visit: i64,
    pub detector: i64,
    pub detector_name: String,
    pub band: String,
    /// Centre of the CCD, and the visit's boresight.
    pub ra: f64,
    pub dec: f64,
    pub boresight_ra: f64,
    pub boresight_dec: f64,
    pub corners: [(f64, f64); 4],
    pub zenith_distance: f64,
    pub zero_point: f64,
    pub zero_point_err: f64,
    pub psf_sigma: f64,
    pub seeing: f64,
    pub sky_bg: f64,
    pub sky_noise: f64,
    pub exp_mid_mjd: f64,
    pub obs_start_mjd: f64,
    pub exp_time: f64,
    pub x_size: i64,
    pub y_size: i64,
    pub n_psf_star: i64,
    pub astrom_rms: f64,
    pub n_astrom_star: i64,
    pub n_photo_star: i64,
    pub n_source: i64,
    pub sky_rotation: f64,
    pub azimuth: f64,
    pub altitude: f64,
    pub airmass: f64,
}

/// Selects data IDs: `key=value` terms (visit, detector, band), comma-separated or
/// repeated, all of which must hold.
fn matches(id: &DataId, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(k, v)| match k.as_str() {
        "visit" => v.parse::<i64>().ok() == Some(id.visit),
        "detector" => *v == id.detector_name || v.parse::<i64>().ok() == Some(id.detector),
        "band" => aster_processing::sky::band_index(v) == Some(id.band),
        _ => false,
    })
}

fn parse_filters(terms: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for t in terms.iter().flat_map(|t| t.split(',')) {
        let (k, v) = t
            .split_once('=')
            .with_context(|| format!("--where {t}: expected key=value"))?;
        let k = k.trim();
        if !["visit", "detector", "band"].contains(&k) {
            bail!("--where {t}: '{k}' is not one of visit, detector, band");
        }
        out.push((k.to_string(), v.trim().to_string()));
    }
    Ok(out)
}

/// The science data IDs of the data directory.
pub fn data_ids(data_dir: &Path) -> Result<Vec<DataId>> {
    data_ids_of(scan_raws(data_dir)?)
}

/// The science data IDs among scanned raws.
fn data_ids_of(raws: Vec<(PathBuf, ObservationInfo)>) -> Result<Vec<DataId>> {
    let mut ids: BTreeMap<(i64, i64), DataId> = BTreeMap::new();
    for (path, info) in raws {
        if info.obs_type != ObsType::Science {
            continue;
        }
        let (Some(visit), Some(band)) = (info.visit, info.band) else {
            bail!("{}: a science raw without VISIT or FILTER", path.display());
        };
        let id = ids.entry((visit, info.detector)).or_insert_with(|| DataId {
            visit,
            detector: info.detector,
            detector_name: info.detector_name.clone(),
            band,
            snaps: Vec::new(),
        });
        id.snaps.push((path, info));
    }
    let mut out: Vec<DataId> = ids.into_values().collect();
    for id in &mut out {
        id.snaps.sort_by_key(|(_, i)| i.snap);
    }
    Ok(out)
}

/// The science data IDs the registry holds (DMS-REQ-0293, 0120): each visit and CCD with
/// its snaps, taken only when complete (every recorded snap's file is in the store, the
/// snaps numbered from 0 without gaps) and consistent (one band, one exposure time). The
/// others come back as reasons. `scanned` are the headers of the files under raw/.
fn select_data_ids(
    registry: &Registry,
    scanned: Vec<(PathBuf, ObservationInfo)>,
) -> Result<(Vec<DataId>, Vec<String>)> {
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let mut headers: std::collections::HashMap<PathBuf, ObservationInfo> = scanned
        .into_iter()
        .map(|(p, i)| (canonical(&p), i))
        .collect();
    let raws = registry.list(&aster_archive::registry::DatasetFilter {
        types: vec![DatasetType::Raw],
        ..Default::default()
    })?;
    type Member = (String, Option<(PathBuf, ObservationInfo)>);
    let mut groups: BTreeMap<(i64, i64), Vec<Member>> = BTreeMap::new();
    for d in raws {
        let science = d
            .metadata
            .as_ref()
            .and_then(|m| m.get("IMGTYPE"))
            .and_then(|v| v.as_str())
            == Some(ObsType::Science.name());
        let (Some(visit), Some(detector)) = (d.data_id.visit, d.data_id.detector) else {
            continue;
        };
        if !science {
            continue;
        }
        let path = canonical(&registry.path_of(&d));
        let found = headers.remove(&path).map(|info| (path, info));
        groups
            .entry((visit, detector))
            .or_default()
            .push((d.id, found));
    }
    let (mut ids, mut refused) = (Vec::new(), Vec::new());
    for ((visit, detector), members) in groups {
        let what = format!("visit {visit} detector {detector}");
        if let Some((id, _)) = members.iter().find(|(_, f)| f.is_none()) {
            refused.push(format!(
                "{what}: {id} is recorded but its file is not in the store"
            ));
            continue;
        }
        let mut snaps: Vec<(PathBuf, ObservationInfo)> =
            members.into_iter().filter_map(|(_, f)| f).collect();
        snaps.sort_by_key(|(_, i)| i.snap);
        let numbers: Vec<u8> = snaps.iter().map(|(_, i)| i.snap).collect();
        if numbers
            .iter()
            .enumerate()
            .any(|(k, &n)| usize::from(n) != k)
        {
            refused.push(format!(
                "{what}: incomplete, its snaps {numbers:?} are not numbered from 0 without gaps"
            ));
            continue;
        }
        let first = snaps[0].1.clone();
        if snaps.iter().any(|(_, i)| {
            i.band != first.band || (i.exposure_time - first.exposure_time).abs() > 1e-6
        }) {
            refused.push(format!(
                "{what}: inconsistent, its snaps differ in band or exposure time"
            ));
            continue;
        }
        let Some(band) = first.band else {
            refused.push(format!("{what}: a science raw without a band"));
            continue;
        };
        ids.push(DataId {
            visit,
            detector,
            detector_name: first.detector_name.clone(),
            band,
            snaps,
        });
    }
    Ok((ids, refused))
}

/// Runs `pipeline` over the data directory's visits that pass `filters`.
pub async fn run(
    data_dir: &Path,
    store: &CatalogStore,
    registry: &Registry,
    pipeline: &Pipeline,
    filters: &[String],
    refcat: Option<&Path>,
) -> Result<()> {
    let filters = parse_filters(filters)?;
    // Raws and calibration products put in place by hand are recorded first, so every
    // output's provenance can name them.
    let raws = scan_raws(data_dir)?;
    crate::datasets::register_raws_in_place(registry, &raws)?;
    // A product that cannot be recorded (its raws are not here) is reported; the data IDs
    // that use it fail when their outputs are recorded, the others go on.
    for problem in crate::datasets::register_calibrations(registry, data_dir)?.1 {
        eprintln!("warning: {problem}");
    }
    let (all, refused) = select_data_ids(registry, raws)?;
    for reason in &refused {
        eprintln!("skipped {reason}");
    }
    let ids: Vec<DataId> = all.into_iter().filter(|i| matches(i, &filters)).collect();
    if ids.is_empty() {
        bail!(
            "no science visits in {} match the selection",
            data_dir.join("raw").display()
        );
    }
    let refcat_path = refcat.map_or_else(
        || data_dir.join("refcat").join("refcat.parquet"),
        Path::to_path_buf,
    );
    let refs = super::refcat::read_refcat(&refcat_path, None)?;
    // The reference catalogue is an input of every calexp when the archive holds it.
    let refcat_id = refcat_path
        .starts_with(data_dir)
        .then(|| crate::datasets::register_refcat(registry, &refcat_path))
        .transpose()?;
    let inputs = RunInputs {
        registry,
        refcat: refcat_id.as_deref(),
    };
    let out = data_dir.join("runs").join(&pipeline.run);
    for d in ["pvi", "background", "sources", "ccdvisit"] {
        std::fs::create_dir_all(out.join(d))
            .with_context(|| format!("creating {}", out.join(d).display()))?;
    }
    let bar = indicatif::ProgressBar::new(ids.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed}] {msg}")
            .expect("a valid template"),
    );
    let started = Instant::now();
    let (mut done, mut skipped) = (0, 0);
    let mut failures: Vec<String> = Vec::new();
    for id in &ids {
        let record = out.join("ccdvisit").join(format!("{}.json", id.stem()));
        if record.exists() {
            skipped += 1;
            bar.inc(1);
            continue;
        }
        bar.set_message(format!("visit {} {}", id.visit, id.detector_name));
        // A data ID that fails is reported and left for a rerun; the others go on.
        let timings = match process_data_id(data_dir, &out, pipeline, id, &refs, &inputs) {
            Ok(t) => t,
            Err(e) => {
                let line = format!("visit {} {}: FAILED: {e:#}", id.visit, id.detector_name);
                bar.suspend(|| eprintln!("{line}"));
                failures.push(line);
                bar.inc(1);
                continue;
            }
        };
        let line = format!(
            "visit {} {} ({}): {}",
            id.visit,
            id.detector_name,
            BANDS[id.band],
            timings
                .iter()
                .map(|(step, s)| format!("{step} {s:.1} s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // Printed above the bar (and printed even when stderr is no terminal and the bar
        // is hidden).
        bar.suspend(|| println!("{line}"));
        done += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "{done} CCD visits processed, {skipped} already done, {} failed, in {:.1} s",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(c) = pipeline.catalogs() {
        let t = Instant::now();
        let rows = write_catalogs(store, &out, c).await?;
        println!(
            "{} sources, {} CCD visits and {} visits written to {}, {} and {} in {:.1} s",
            rows.0,
            rows.1,
            rows.2,
            c.source_table,
            c.ccd_visit_table,
            c.visit_table,
            t.elapsed().as_secs_f64()
        );
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} CCD visits failed:\n{}",
            failures.len(),
            ids.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

fn calibration(
    data_dir: &Path,
    kind: CalibType,
    det: &str,
    band: Option<usize>,
    step: &str,
) -> Result<CalibProduct> {
    let path = product_path(data_dir, kind, det, band);
    if !path.exists() {
        bail!(
            "{step}: the {} calibration {} is missing; run `aster calib build`",
            kind.name(),
            path.display()
        );
    }
    read_calibration(&path)
        .with_context(|| format!("{step}: reading the {} calibration", kind.name()))
}

fn image_of(p: &CalibProduct) -> Result<aster_processing::isr::CalibPlane<'_>> {
    match p {
        CalibProduct::Image(c) => Ok(c.plane()),
        _ => bail!("expected an image calibration"),
    }
}

/// The calibration products a data ID's ISR needs, read from calib/.
pub struct LoadedCalibrations {
    crosstalk: Option<CalibProduct>,
    bias: Option<CalibProduct>,
    dark: Option<CalibProduct>,
    flat: Option<CalibProduct>,
    illumination: Option<CalibProduct>,
    fringe: Option<CalibProduct>,
    defects: Option<CalibProduct>,
}

/// Reads the products `config` switches on for the CCD and band of `id`; a missing one is
/// an error naming the file and the step.
pub fn load_calibrations(
    data_dir: &Path,
    config: &aster_processing::isr::IsrConfig,
    id: &DataId,
) -> Result<LoadedCalibrations> {
    let det = id.detector_name.as_str();
    let band = Some(id.band);
    let get = |kind, band, on: bool| -> Result<Option<CalibProduct>> {
        on.then(|| calibration(data_dir, kind, det, band, "isr"))
            .transpose()
    };
    let fringe_band = aster_processing::camera::FRINGE_AMPLITUDE[id.band] >= 0.01;
    Ok(LoadedCalibrations {
        crosstalk: get(CalibType::Crosstalk, None, config.crosstalk)?,
        bias: get(CalibType::Bias, None, config.bias)?,
        dark: get(CalibType::Dark, None, config.dark)?,
        flat: get(CalibType::Flat, band, config.flat)?,
        illumination: get(CalibType::Illumination, band, config.illumination)?,
        fringe: get(CalibType::Fringe, band, config.fringe && fringe_band)?,
        defects: get(CalibType::Defects, None, config.defects)?,
    })
}

impl LoadedCalibrations {
    /// The registry IDs of the products loaded for `id`.
    pub fn dataset_ids(&self, id: &DataId) -> Vec<String> {
        let band = Some(id.band);
        [
            (&self.crosstalk, CalibType::Crosstalk, None),
            (&self.bias, CalibType::Bias, None),
            (&self.dark, CalibType::Dark, None),
            (&self.flat, CalibType::Flat, band),
            (&self.illumination, CalibType::Illumination, band),
            (&self.fringe, CalibType::Fringe, band),
            (&self.defects, CalibType::Defects, None),
        ]
        .into_iter()
        .filter(|(p, _, _)| p.is_some())
        .map(|(_, kind, band)| {
            crate::datasets::calib_id(kind, id.detector, &id.detector_name, band)
        })
        .collect()
    }
}

/// The loaded products as ISR takes them.
pub fn isr_calibrations(p: &LoadedCalibrations) -> Result<IsrCalibrations<'_>> {
    Ok(IsrCalibrations {
        crosstalk: match &p.crosstalk {
            Some(CalibProduct::Crosstalk(c)) => Some(c.coefficients.as_slice()),
            Some(_) => bail!("calib/crosstalk holds another kind of product"),
            None => None,
        },
        bias: p.bias.as_ref().map(image_of).transpose()?,
        dark: p.dark.as_ref().map(image_of).transpose()?,
        flat: p.flat.as_ref().map(image_of).transpose()?,
        illumination: p.illumination.as_ref().map(image_of).transpose()?,
        fringe: p.fringe.as_ref().map(image_of).transpose()?,
        defects: match &p.defects {
            Some(CalibProduct::Defects(d)) => Some(&d.bits),
            Some(_) => bail!("calib/defects holds another kind of product"),
            None => None,
        },
    })
}

/// Where a run records its outputs, and the inputs every data ID shares.
pub struct RunInputs<'a> {
    pub registry: &'a Registry,
    /// The reference catalogue's dataset, when the archive holds it.
    pub refcat: Option<&'a str>,
}

/// What single-visit processing makes of one data ID.
pub struct ProcessedVisit {
    pub exposure: Exposure,
    pub background: Background,
    pub sources: Vec<aster_processing::single_frame::Source>,
    pub report: aster_processing::characterize::CharacterizeReport,
    pub mid: f64,
    /// Dataset IDs of the calibration products used.
    pub calibrations: Vec<String>,
}

/// A data ID's raws made a calibrated exposure: ISR and characterization, before the
/// background and measurement.
pub struct Characterized {
    pub exposure: Exposure,
    pub report: aster_processing::characterize::CharacterizeReport,
    /// The sky background characterization measured (not subtracted from the exposure).
    pub background: Background,
    /// Mid-exposure of the visit, MJD (TAI).
    pub mid: f64,
    /// Dataset IDs of the calibration products used.
    pub calibrations: Vec<String>,
}

/// ISR of one data ID's raws with its CCD's calibration products, then characterization
/// (PSF, WCS, zeropoint) against `refs`; `timings` gets the seconds of each step. Alert
/// production starts from here too (`aster night run --from-raw`).
pub fn isr_and_characterize(
    data_dir: &Path,
    pipeline: &Pipeline,
    id: &DataId,
    refs: &[ReferenceStar],
    timings: &mut Vec<(&'static str, f64)>,
) -> Result<Characterized> {
    let t = Instant::now();
    let isr_config = pipeline.isr().context("the pipeline has no isr task")?;
    let products = load_calibrations(data_dir, isr_config, id)?;
    timings.push(("calibrations", t.elapsed().as_secs_f64()));
    isr_and_characterize_with(&products, pipeline, id, refs, timings)
}

/// [`isr_and_characterize`] with the CCD's calibration products loaded already (alert
/// production keeps them in memory through the night, as prompt processing does).
pub fn isr_and_characterize_with(
    products: &LoadedCalibrations,
    pipeline: &Pipeline,
    id: &DataId,
    refs: &[ReferenceStar],
    timings: &mut Vec<(&'static str, f64)>,
) -> Result<Characterized> {
    let t = Instant::now();
    let isr_config = pipeline.isr().context("the pipeline has no isr task")?;
    let calibrations = products.dataset_ids(id);
    let calibs = isr_calibrations(products)?;
    let raws = id
        .snaps
        .iter()
        .map(|(p, _)| read_raw(p).with_context(|| format!("isr: reading {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    let mut exposure = process_visit(&raws, &calibs, isr_config).context("isr")?;
    timings.push(("isr", t.elapsed().as_secs_f64()));

    let t = Instant::now();
    let info = &id.snaps[0].1;
    let last = &id.snaps[id.snaps.len() - 1].1;
    let mid = (info.tai_start + last.tai_end) / 2.0;
    let char_config = pipeline
        .characterize()
        .context("the pipeline has no characterize task")?;
    let (report, background) =
        characterize_with_background(&mut exposure, refs, id.band, mid, char_config)
            .context("characterize")?;
    timings.push(("characterize", t.elapsed().as_secs_f64()));
    Ok(Characterized {
        exposure,
        report,
        background,
        mid,
        calibrations,
    })
}

/// ISR, characterization and measurement of one data ID, in memory; `timings` gets the
/// seconds of each step. Also what regeneration runs (DMS-REQ-0311).
pub fn process_in_memory(
    data_dir: &Path,
    pipeline: &Pipeline,
    id: &DataId,
    refs: &[ReferenceStar],
    timings: &mut Vec<(&'static str, f64)>,
) -> Result<ProcessedVisit> {
    let Characterized {
        mut exposure,
        report,
        background: _,
        mid,
        calibrations,
    } = isr_and_characterize(data_dir, pipeline, id, refs, timings)?;
    let t = Instant::now();
    let detection = pipeline
        .measure()
        .context("the pipeline has no measure task")?;
    let (sources, background) = process(&mut exposure, detection).context("measure")?;
    timings.push(("measure", t.elapsed().as_secs_f64()));
    Ok(ProcessedVisit {
        exposure,
        background,
        sources,
        report,
        mid,
        calibrations,
    })
}

/// ISR, characterization and measurement of one data ID, its outputs written and
/// recorded in the registry. Returns the seconds each step took.
fn process_data_id(
    data_dir: &Path,
    out: &Path,
    pipeline: &Pipeline,
    id: &DataId,
    refs: &[ReferenceStar],
    inputs: &RunInputs,
) -> Result<Vec<(&'static str, f64)>> {
    let mut timings = Vec::new();
    let ProcessedVisit {
        exposure,
        background,
        sources,
        report,
        mid,
        calibrations,
    } = process_in_memory(data_dir, pipeline, id, refs, &mut timings)?;
    let info = &id.snaps[0].1;

    let t = Instant::now();
    let stem = id.stem();
    let pvi_path = out.join("pvi").join(format!("{stem}.fits"));
    let background_path = out.join("background").join(format!("{stem}.fits"));
    write_exposure(&pvi_path, &exposure)?;
    write_background(&background_path, &background)?;
    let context = SourceContext {
        ccd_visit: id.ccd_visit(),
        visit: id.visit,
        detector: id.detector,
        band: id.band,
    };
    let batch = sources_batch(
        &sources,
        Some(context),
        Some(&background),
        exposure.photo_calib,
    )?;
    let sources_path = out.join("sources").join(format!("{stem}.parquet"));
    write_parquet(&sources_path, &[batch])?;
    let wcs = exposure.wcs.as_ref().context("characterize left no WCS")?;
    let (w, h) = (exposure.width() as f64, exposure.height() as f64);
    let sky = |x: f64, y: f64| {
        let s = wcs.pixel_to_sky(PixelPosition { x, y });
        (s.ra(), s.dec())
    };
    let centre = sky((w - 1.0) / 2.0, (h - 1.0) / 2.0);
    let telescope = info
        .telescope
        .as_ref()
        .context("a science raw without pointing")?;
    let calib = exposure
        .photo_calib
        .context("characterize left no zeropoint")?;
    let psf_sigma = exposure.psf.as_ref().map_or(f64::NAN, |p| {
        p.moments_at((w - 1.0) / 2.0, (h - 1.0) / 2.0)
            .determinant_radius()
    });
    let record = CcdVisitRecord {
        ccd_visit: id.ccd_visit(),
        visit: id.visit,
        detector: id.detector,
        detector_name: id.detector_name.clone(),
        band: BANDS[id.band].to_string(),
        ra: centre.0,
        dec: centre.1,
        boresight_ra: telescope.boresight.ra(),
        boresight_dec: telescope.boresight.dec(),
        corners: [
            sky(0.0, 0.0),
            sky(0.0, h - 1.0),
            sky(w - 1.0, h - 1.0),
            sky(w - 1.0, 0.0),
        ],
        zenith_distance: 90.0 - telescope.altitude,
        zero_point: calib.zero_point(),
        zero_point_err: calib.zero_point_err(),
        psf_sigma,
        seeing: report.seeing,
        sky_bg: calib.to_njy(report.sky_level),
        sky_noise: calib.to_njy(report.sky_level.max(0.0).sqrt()),
        exp_mid_mjd: mid,
        obs_start_mjd: info.tai_start,
        exp_time: id.snaps.iter().map(|(_, i)| i.exposure_time).sum(),
        x_size: exposure.width() as i64,
        y_size: exposure.height() as i64,
        n_psf_star: report.psf_stars as i64,
        astrom_rms: report.astrometry_rms,
        n_astrom_star: report.astrometry_matches as i64,
        n_photo_star: report.photometry_matches as i64,
        n_source: sources.len() as i64,
        sky_rotation: telescope.rotation,
        azimuth: telescope.azimuth,
        altitude: telescope.altitude,
        airmass: telescope.airmass,
    };
    register_outputs(
        inputs,
        pipeline,
        id,
        &exposure,
        &record,
        calibrations,
        [&pvi_path, &background_path, &sources_path],
    )?;
    let path = out.join("ccdvisit").join(format!("{stem}.json"));
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&record)?)?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    timings.push(("write", t.elapsed().as_secs_f64()));
    Ok(timings)
}

/// The data ID of a run's outputs for one CCD visit.
pub fn output_data_id(id: &DataId) -> RegDataId {
    RegDataId {
        instrument: INSTRUMENT.into(),
        exposure: None,
        visit: Some(id.visit),
        detector: Some(id.detector),
        detector_name: Some(id.detector_name.clone()),
        band: Some(BANDS[id.band].to_string()),
        patch: None,
    }
}

/// Records a data ID's calexp (with the raws, calibrations, reference catalogue and
/// configuration that made it), and its background and source table as derived from it.
fn register_outputs(
    inputs: &RunInputs,
    pipeline: &Pipeline,
    id: &DataId,
    exposure: &Exposure,
    record: &CcdVisitRecord,
    calibrations: Vec<String>,
    [pvi, background, sources]: [&Path; 3],
) -> Result<()> {
    let registry = inputs.registry;
    let rel = |p: &Path| -> Result<String> {
        Ok(p.strip_prefix(registry.root())
            .with_context(|| format!("{} is outside the data directory", p.display()))?
            .to_string_lossy()
            .into_owned())
    };
    let wcs = exposure.wcs.as_ref().context("characterize left no WCS")?;
    let first = &id.snaps[0].1;
    let last = &id.snaps[id.snaps.len() - 1].1;
    let band = BAND_RANGE_NM[id.band];
    let mut used: Vec<String> = id
        .snaps
        .iter()
        .map(|(_, info)| crate::datasets::raw_id(info))
        .collect();
    used.extend(calibrations);
    used.extend(inputs.refcat.map(str::to_string));
    let provenance = |inputs: Vec<String>| Provenance {
        task: "isr+characterize+measure".into(),
        run: pipeline.run.clone(),
        config: pipeline.to_json(),
        software: crate::datasets::software(),
        inputs,
    };
    let data_id = output_data_id(id);
    let calexp = registry.replace(NewDataset {
        dataset_type: DatasetType::Calexp,
        collection: pipeline.run.clone(),
        data_id: data_id.clone(),
        path: rel(pvi)?,
        format: formats::FITS.into(),
        observation: Some(Observation {
            obs_id: format!("visit-{}", id.visit),
            target_name: None,
            footprint: Observation::oriented(crate::datasets::corners(
                wcs,
                exposure.width(),
                exposure.height(),
            )),
            resolution: Some(record.seeing),
            pixels: (exposure.width() as i64, exposure.height() as i64),
            t_min: first.tai_start,
            t_max: last.tai_end,
            exptime: record.exp_time,
            em_min: Some(band.0 / 1e9),
            em_max: Some(band.1 / 1e9),
        }),
        provenance: Some(provenance(used)),
        metadata: Some(serde_json::to_value(record)?),
    })?;
    if !pipeline.keep_calexps {
        // Recorded with everything needed to make it again: the file itself can go.
        std::fs::remove_file(pvi).with_context(|| format!("removing {}", pvi.display()))?;
        registry.set_stored(&calexp.id, false)?;
    }
    for (t, path, format) in [
        (DatasetType::Background, background, formats::FITS),
        (DatasetType::SourceTable, sources, formats::PARQUET),
    ] {
        registry.replace(NewDataset {
            dataset_type: t,
            collection: pipeline.run.clone(),
            data_id: data_id.clone(),
            path: rel(path)?,
            format: format.into(),
            observation: None,
            provenance: Some(provenance(vec![calexp.id.clone()])),
            metadata: None,
        })?;
    }
    Ok(())
}

/// Rebuilds the run's Source, CcdVisit and Visit tables in the catalog store from every
/// data ID it has processed. Returns the rows of each.
async fn write_catalogs(
    store: &CatalogStore,
    out: &Path,
    c: &super::definition::CatalogsConfig,
) -> Result<(usize, usize, usize)> {
    let mut records: Vec<CcdVisitRecord> = Vec::new();
    for entry in std::fs::read_dir(out.join("ccdvisit"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let bytes = std::fs::read(&path)?;
            records.push(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading {}", path.display()))?,
            );
        }
    }
    records.sort_by_key(|r| r.ccd_visit);
    let mut source_batches: Vec<RecordBatch> = Vec::new();
    for r in &records {
        let path = out
            .join("sources")
            .join(format!("{}_{}.parquet", r.visit, r.detector_name));
        let file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?
            .build()?;
        for b in reader {
            source_batches.push(b?);
        }
    }
    let sources: usize = source_batches.iter().map(|b| b.num_rows()).sum();
    replace_table(store, &c.source_table, &source_batches).await?;
    replace_table(store, &c.ccd_visit_table, &[ccd_visit_batch(&records)?]).await?;
    let mut visits: BTreeMap<i64, &CcdVisitRecord> = BTreeMap::new();
    for r in &records {
        visits.entry(r.visit).or_insert(r);
    }
    let visits: Vec<&CcdVisitRecord> = visits.into_values().collect();
    replace_table(store, &c.visit_table, &[visit_batch(&visits)?]).await?;
    Ok((sources, records.len(), visits.len()))
}

/// Replaces the rows of `qualified` (schema.table, a built-in table) by `batches`.
async fn replace_table(
    store: &CatalogStore,
    qualified: &str,
    batches: &[RecordBatch],
) -> Result<()> {
    let (schema, name) = qualified.split_once('.').context("schema.table")?;
    let schemas = builtin_schemas();
    let table = schemas
        .iter()
        .filter(|s| s.name == schema)
        .flat_map(|s| s.tables.iter())
        .find(|t| t.name == name)
        .with_context(|| format!("{qualified} is not a table of the built-in schemas"))?;
    // One commit: readers see the old rows or the new, never an empty table between.
    let mut commit = store.begin(schema).await?;
    commit
        .replace(table, DEFAULT_MAX_ROWS, batches)
        .await
        .with_context(|| format!("writing {qualified}"))?;
    commit
        .commit()
        .await
        .with_context(|| format!("committing {qualified}"))?;
    Ok(())
}

fn ccd_visit_batch(records: &[CcdVisitRecord]) -> Result<RecordBatch> {
    let mut c = Columns::default();
    let f =
        |g: &dyn Fn(&CcdVisitRecord) -> f64| records.iter().map(|r| Some(g(r))).collect::<Vec<_>>();
    let i =
        |g: &dyn Fn(&CcdVisitRecord) -> i64| records.iter().map(|r| Some(g(r))).collect::<Vec<_>>();
    c.i64("ccdVisitId", i(&|r| r.ccd_visit));
    c.i64("visitId", i(&|r| r.visit));
    c.str(
        "physical_filter",
        records
            .iter()
            .map(|r| Some(format!("{}_aster", r.band)))
            .collect(),
    );
    c.str(
        "band",
        records.iter().map(|r| Some(r.band.clone())).collect(),
    );
    c.f64("ra", f(&|r| r.ra));
    c.f64("decl", f(&|r| r.dec));
    c.f64("zenithDistance", f(&|r| r.zenith_distance));
    c.f64("zeroPoint", f(&|r| r.zero_point));
    c.f64("zeroPointErr", f(&|r| r.zero_point_err));
    c.f64("psfSigma", f(&|r| r.psf_sigma));
    c.f64("skyBg", f(&|r| r.sky_bg));
    c.f64("skyNoise", f(&|r| r.sky_noise));
    c.i64("detector", i(&|r| r.detector));
    c.f64("seeing", f(&|r| r.seeing));
    c.f64("expMidptMJD", f(&|r| r.exp_mid_mjd));
    c.f64("expTime", f(&|r| r.exp_time));
    c.f64("obsStartMJD", f(&|r| r.obs_start_mjd));
    c.i64("xSize", i(&|r| r.x_size));
    c.i64("ySize", i(&|r| r.y_size));
    c.i64("nPsfStar", i(&|r| r.n_psf_star));
    c.f64("astromRms", f(&|r| r.astrom_rms));
    c.i64("nAstromStar", i(&|r| r.n_astrom_star));
    c.i64("nPhotoStar", i(&|r| r.n_photo_star));
    c.i64("nSource", i(&|r| r.n_source));
    // Corners in the order the record keeps them: (0,0), (0,h), (w,h), (w,0).
    let names = [
        ("llcra", "llcdec"),
        ("ulcra", "ulcdec"),
        ("urcra", "urcdec"),
        ("lrcra", "lrcdec"),
    ];
    for (k, (ra, dec)) in names.into_iter().enumerate() {
        c.f64(ra, f(&|r| r.corners[k].0));
        c.f64(dec, f(&|r| r.corners[k].1));
    }
    c.batch()
}

fn visit_batch(records: &[&CcdVisitRecord]) -> Result<RecordBatch> {
    let mut c = Columns::default();
    let f =
        |g: &dyn Fn(&CcdVisitRecord) -> f64| records.iter().map(|r| Some(g(r))).collect::<Vec<_>>();
    let unix_us = |mjd: f64| ((mjd - 40_587.0) * 86_400e6).round() as i64;
    c.i64("visit", records.iter().map(|r| Some(r.visit)).collect());
    c.str(
        "physical_filter",
        records
            .iter()
            .map(|r| Some(format!("{}_aster", r.band)))
            .collect(),
    );
    c.str(
        "band",
        records.iter().map(|r| Some(r.band.clone())).collect(),
    );
    c.f64("ra", f(&|r| r.boresight_ra));
    c.f64("decl", f(&|r| r.boresight_dec));
    c.f64("skyRotation", f(&|r| r.sky_rotation));
    c.f64("azimuth", f(&|r| r.azimuth));
    c.f64("altitude", f(&|r| r.altitude));
    c.f64("zenithDistance", f(&|r| r.zenith_distance));
    c.f64("airmass", f(&|r| r.airmass));
    c.f64("expTime", f(&|r| r.exp_time));
    c.ts(
        "expMidpt",
        records
            .iter()
            .map(|r| Some(unix_us(r.exp_mid_mjd)))
            .collect(),
    );
    c.f64("expMidptMJD", f(&|r| r.exp_mid_mjd));
    c.ts(
        "obsStart",
        records
            .iter()
            .map(|r| Some(unix_us(r.obs_start_mjd)))
            .collect(),
    );
    c.f64("obsStartMJD", f(&|r| r.obs_start_mjd));
    c.batch()
}
