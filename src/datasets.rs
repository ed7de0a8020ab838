//! What each producer records in the dataset registry: raws as they are ingested
//! (`aster ingest raw`, and the simulator's), calibration products with the raws they
//! came from, and a pipeline's processed visit images, backgrounds and source tables with
//! the exact raws, calibrations and configuration that made them.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use aster_adql::geometry::SkyPosition;
use aster_archive::calib_file::read_calibration_provenance;
use aster_archive::raw_file::read_raw;
use aster_archive::registry::{
    DataId, Dataset, DatasetFilter, DatasetType, INSTRUMENT, NewDataset, Observation, Provenance,
    Registry, dataset_id, file_checksum, formats,
};
use aster_processing::calib::CalibType;
use aster_processing::image::HeaderValue;
use aster_processing::raw::{ObsType, ObservationInfo, mjd_to_iso};
use aster_processing::sky::{BAND_RANGE_NM, BANDS};
use aster_processing::wcs::{PixelPosition, TanSipWcs};

/// Collections: raws, calibration products, and one per processing run (its name).
pub const RAW_COLLECTION: &str = "raw";
pub const CALIB_COLLECTION: &str = "calib";
pub const REFCAT_COLLECTION: &str = "refcats";

pub fn software() -> String {
    format!("aster {}", env!("CARGO_PKG_VERSION"))
}

/// The corners of a `w` x `h` image through `wcs`.
pub fn corners(wcs: &TanSipWcs, w: usize, h: usize) -> Vec<SkyPosition> {
    let (w, h) = ((w as f64) - 0.5, (h as f64) - 0.5);
    [(-0.5, -0.5), (w, -0.5), (w, h), (-0.5, h)]
        .into_iter()
        .filter_map(|(x, y)| {
            let s = wcs.pixel_to_sky(PixelPosition { x, y });
            SkyPosition::new(s.ra(), s.dec())
        })
        .collect()
}

fn band_range(band: Option<usize>) -> (Option<f64>, Option<f64>) {
    band.map_or((None, None), |b| {
        (
            Some(BAND_RANGE_NM[b].0 / 1e9),
            Some(BAND_RANGE_NM[b].1 / 1e9),
        )
    })
}

fn header_json(info: &ObservationInfo) -> serde_json::Value {
    serde_json::Value::Object(
        info.to_cards()
            .into_iter()
            .map(|(k, v, _)| {
                let v = match v {
                    HeaderValue::Bool(b) => serde_json::json!(b),
                    HeaderValue::Int(i) => serde_json::json!(i),
                    HeaderValue::Float(x) if x.is_finite() => serde_json::json!(x),
                    HeaderValue::Float(_) => serde_json::Value::Null,
                    HeaderValue::Text(t) => serde_json::json!(t),
                };
                (k.to_string(), v)
            })
            .collect(),
    )
}

/// The data ID of a raw: its exposure and CCD.
pub fn raw_data_id(info: &ObservationInfo) -> DataId {
    DataId {
        instrument: INSTRUMENT.into(),
        exposure: Some(info.exposure_id),
        visit: info.visit,
        detector: Some(info.detector),
        detector_name: Some(info.detector_name.clone()),
        band: info.band.map(|b| BANDS[b].to_string()),
        patch: None,
    }
}

pub fn raw_id(info: &ObservationInfo) -> String {
    dataset_id(DatasetType::Raw, RAW_COLLECTION, &raw_data_id(info))
}

/// The registry record of a raw file at `path` (relative to the data directory).
pub fn raw_dataset(info: &ObservationInfo, path: String) -> NewDataset {
    let footprint = info
        .nominal_wcs()
        .filter(|_| info.obs_type == ObsType::Science || info.obs_type == ObsType::SkyFlat)
        .map(|w| Observation::oriented(corners(&w, info.ccd_size, info.ccd_size)))
        .unwrap_or_default();
    let (em_min, em_max) = match info.wavelength {
        Some(nm) => (Some((nm - 1.0) / 1e9), Some((nm + 1.0) / 1e9)),
        None => band_range(info.band),
    };
    NewDataset {
        dataset_type: DatasetType::Raw,
        collection: RAW_COLLECTION.into(),
        data_id: raw_data_id(info),
        path,
        format: formats::FITS.into(),
        observation: Some(Observation {
            obs_id: info.obs_id.clone(),
            target_name: None,
            footprint,
            resolution: info
                .telescope
                .map(|t| info.site.seeing * t.airmass.powf(0.6)),
            pixels: (info.ccd_size as i64, info.ccd_size as i64),
            t_min: info.tai_start,
            t_max: info.tai_end,
            exptime: info.exposure_time,
            em_min,
            em_max,
        }),
        provenance: None,
        metadata: Some(header_json(info)),
    }
}

fn relative(root: &Path, path: &Path) -> Option<String> {
    let root = root.canonicalize().ok()?;
    let path = path.canonicalize().ok()?;
    path.strip_prefix(&root)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Where an ingested raw lives: `raw/<night>/<exposure>/<file>`.
fn raw_home(info: &ObservationInfo) -> PathBuf {
    let night = mjd_to_iso(info.tai_start - 0.5)
        .get(..10)
        .unwrap_or("unknown")
        .replace('-', "");
    PathBuf::from("raw")
        .join(night)
        .join(&info.obs_id)
        .join(format!("{}_{}.fits", info.obs_id, info.detector_name))
}

/// Ingests raw files (DMS-REQ-0068, 0266): each is read whole (checksums, structure and
/// metadata verified), copied under `raw/` unless it is already there, and recorded. A
/// corrupt file, or one whose exposure and CCD or whose bytes are already in the archive,
/// is refused with a message naming it; the others go on. Returns the ingested datasets
/// and the refusals.
pub fn ingest_raws(registry: &Registry, files: &[PathBuf]) -> (Vec<Dataset>, Vec<String>) {
    let mut done = Vec::new();
    let mut refused = Vec::new();
    for file in files {
        match ingest_raw(registry, file) {
            Ok(d) => done.push(d),
            Err(e) => refused.push(format!("{}: {e:#}", file.display())),
        }
    }
    (done, refused)
}

fn ingest_raw(registry: &Registry, file: &Path) -> Result<Dataset> {
    let raw = read_raw(file).context("not a valid raw file")?;
    let info = &raw.info;
    let id = raw_id(info);
    if let Some(old) = registry.get(&id)? {
        bail!(
            "exposure {} CCD {} is already ingested as {} ({})",
            info.obs_id,
            info.detector_name,
            old.id,
            old.path
        );
    }
    let (_, checksum) =
        file_checksum(file).with_context(|| format!("reading {}", file.display()))?;
    if let Some(old) = registry.find_by_checksum(&checksum)? {
        bail!("the same bytes are already ingested as {}", old.id);
    }
    let rel = match relative(registry.root(), file) {
        Some(r) => r,
        None => {
            let home = raw_home(info);
            let dest = registry.root().join(&home);
            if dest.exists() {
                bail!("{} already exists in the archive", dest.display());
            }
            std::fs::create_dir_all(dest.parent().expect("raw/<night>/<exposure>"))?;
            let tmp = dest.with_extension("fits.part");
            std::fs::copy(file, &tmp).with_context(|| format!("copying to {}", tmp.display()))?;
            std::fs::rename(&tmp, &dest)?;
            home.to_string_lossy().into_owned()
        }
    };
    Ok(registry.register(raw_dataset(info, rel))?)
}

/// Records raws already under the data directory (the simulator's), skipping those
/// recorded before.
pub fn register_raws_in_place(
    registry: &Registry,
    files: &[(PathBuf, ObservationInfo)],
) -> Result<usize> {
    let mut n = 0;
    for (path, info) in files {
        if registry.get(&raw_id(info))?.is_some() {
            continue;
        }
        let rel = relative(registry.root(), path)
            .with_context(|| format!("{} is outside the data directory", path.display()))?;
        registry.register(raw_dataset(info, rel))?;
        n += 1;
    }
    Ok(n)
}

fn calib_type(kind: CalibType) -> DatasetType {
    match kind {
        CalibType::Bias => DatasetType::Bias,
        CalibType::Dark => DatasetType::Dark,
        CalibType::Flat => DatasetType::Flat,
        CalibType::MonoFlat => DatasetType::MonoFlat,
        CalibType::Illumination => DatasetType::Illumination,
        CalibType::Fringe => DatasetType::Fringe,
        CalibType::Crosstalk => DatasetType::Crosstalk,
        CalibType::Defects => DatasetType::Defects,
    }
}

pub fn calib_data_id(detector: i64, detector_name: &str, band: Option<usize>) -> DataId {
    DataId {
        instrument: INSTRUMENT.into(),
        detector: Some(detector),
        detector_name: Some(detector_name.to_string()),
        band: band.map(|b| BANDS[b].to_string()),
        ..Default::default()
    }
}

pub fn calib_id(
    kind: CalibType,
    detector: i64,
    detector_name: &str,
    band: Option<usize>,
) -> String {
    dataset_id(
        calib_type(kind),
        CALIB_COLLECTION,
        &calib_data_id(detector, detector_name, band),
    )
}

/// Records every calibration product under `calib/` with its provenance: the raw
/// exposures it was made from (which must be registered) and the products it used.
/// Returns how many were new, and the products that could not be recorded, with why.
pub fn register_calibrations(registry: &Registry, data_dir: &Path) -> Result<(usize, Vec<String>)> {
    let mut problems = Vec::new();
    // Raw dataset IDs by (exposure name, CCD number).
    let raws: HashMap<(String, i64), (String, (i64, i64))> = registry
        .list(&DatasetFilter {
            types: vec![DatasetType::Raw],
            ..Default::default()
        })?
        .into_iter()
        .filter_map(|d| {
            let obs = d.observation.as_ref()?;
            Some((
                (obs.obs_id.clone(), d.data_id.detector?),
                (d.id, obs.pixels),
            ))
        })
        .collect();
    let mut n = 0;
    // Each product after those it is made with.
    for kind in [
        CalibType::Bias,
        CalibType::Dark,
        CalibType::Crosstalk,
        CalibType::Flat,
        CalibType::MonoFlat,
        CalibType::Defects,
        CalibType::Illumination,
        CalibType::Fringe,
    ] {
        let dir = data_dir.join("calib").join(kind.name());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "fits"))
            .collect();
        files.sort();
        for path in files {
            let recorded = (|| -> Result<bool> {
                let p = read_calibration_provenance(&path)?;
                let det_name = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.split('_').next())
                    .context("calibration file names start with the CCD")?
                    .to_string();
                let mut inputs: Vec<String> = Vec::new();
                let mut pixels = (0, 0);
                for obs in &p.inputs {
                    let (id, px) = raws.get(&(obs.clone(), p.detector)).with_context(|| {
                        format!(
                            "{}: its input exposure {obs} is not a registered raw",
                            path.display()
                        )
                    })?;
                    inputs.push(id.clone());
                    pixels = *px;
                }
                for used in &p.calibrations_used {
                    // A product is made with the same CCD's others, of its band when they have one.
                    // (the bad pixel map names the flat it was made with).
                    let flat_band = p
                        .parameters
                        .iter()
                        .find(|(k, _)| k == "flat_band")
                        .and_then(|(_, v)| aster_processing::sky::band_index(v));
                    let band = (matches!(used, CalibType::Flat | CalibType::Illumination))
                        .then_some(p.band.or(flat_band))
                        .flatten();
                    inputs.push(calib_id(*used, p.detector, &det_name, band));
                }
                let rel = relative(registry.root(), &path)
                    .with_context(|| format!("{} is outside the data directory", path.display()))?;
                let (em_min, em_max) = band_range(p.band);
                let new = NewDataset {
                    dataset_type: calib_type(p.calib_type),
                    collection: CALIB_COLLECTION.into(),
                    data_id: calib_data_id(p.detector, &det_name, p.band),
                    path: rel,
                    format: formats::FITS.into(),
                    observation: Some(Observation {
                        obs_id: format!(
                            "{}-{det_name}{}",
                            kind.name(),
                            p.band.map(|b| format!("-{}", BANDS[b])).unwrap_or_default()
                        ),
                        target_name: None,
                        footprint: Vec::new(),
                        resolution: None,
                        pixels,
                        t_min: p.input_dates.0,
                        t_max: p.input_dates.1,
                        exptime: 0.0,
                        em_min,
                        em_max,
                    }),
                    provenance: Some(Provenance {
                        task: format!("calib.{}", kind.name()),
                        run: CALIB_COLLECTION.into(),
                        config: serde_json::Value::Object(
                            p.parameters
                                .iter()
                                .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                                .collect(),
                        ),
                        software: p.stamp.software.clone(),
                        inputs,
                    }),
                    metadata: None,
                };
                let fresh = registry.get(&new.id())?.is_none();
                registry.replace(new)?;
                Ok(fresh)
            })();
            match recorded {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(e) => problems.push(format!("{}: {e:#}", path.display())),
            }
        }
    }
    Ok((n, problems))
}

/// Records a reference catalogue file under the data directory (its name is the data ID's
/// key), returning its dataset ID.
pub fn register_refcat(registry: &Registry, path: &Path) -> Result<String> {
    let rel = relative(registry.root(), path)
        .with_context(|| format!("{} is outside the data directory", path.display()))?;
    let new = NewDataset {
        dataset_type: DatasetType::RefCat,
        collection: REFCAT_COLLECTION.into(),
        data_id: DataId {
            instrument: INSTRUMENT.into(),
            ..Default::default()
        },
        path: rel,
        format: formats::PARQUET.into(),
        observation: None,
        provenance: None,
        metadata: None,
    };
    Ok(registry.replace(new)?.id)
}
