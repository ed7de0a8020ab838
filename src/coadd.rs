//! `aster coadd build`: the coadds of a collection of calibrated exposures on the sky map
//! (DMS-REQ-0278, 0279, 0281). Every calexp is warped onto each patch it touches; per
//! patch and band the warps are combined (`aster_processing::coadd`), and the band coadds
//! of a patch into its all-band coadd. Each coadd is written under
//! `coadd/<collection>/<band|all>/p<patch>.fits` with its depth map, and recorded with its
//! footprint, time span, band and provenance: the exact calexps (or band coadds) and the
//! configuration (DMS-REQ-0106). A rerun remakes only the patches whose inputs changed.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use aster_archive::exposure_file::{read_exposure, write_coadd};
use aster_archive::registry::{
    DataId, Dataset, DatasetFilter, DatasetType, INSTRUMENT, NewDataset, Observation, Provenance,
    Registry, formats,
};
use aster_processing::coadd::{CoaddConfig, CoaddInput, coadd};
use aster_processing::image::HeaderValue;
use aster_processing::skymap::{Patch, patches_overlapping};
use aster_processing::warp::{WarpConfig, warp};
use aster_processing::wcs::{PixelPosition, SkyCoord};

/// What to coadd and how.
#[derive(Debug, Clone)]
pub struct CoaddOptions {
    /// Collections of calexps to take.
    pub inputs: Vec<String>,
    /// Collection of the coadds.
    pub output: String,
    /// Bands to coadd (all there are when empty).
    pub bands: Vec<String>,
    /// Pixel scale of the patch grids, arcsec.
    pub pixel_scale: f64,
    /// Margin of the patch grids beyond their cells, pixels.
    pub margin: usize,
    pub config: CoaddConfig,
    pub warp: WarpConfig,
}

impl Default for CoaddOptions {
    fn default() -> Self {
        Self {
            inputs: vec!["single-visit".into()],
            output: "deep".into(),
            bands: Vec::new(),
            pixel_scale: aster_processing::camera::PIXEL_SCALE,
            margin: 32,
            config: CoaddConfig::default(),
            warp: WarpConfig::default(),
        }
    }
}

/// What a build did.
#[derive(Debug, Default)]
pub struct CoaddSummary {
    pub built: Vec<String>,
    pub unchanged: usize,
}

/// Builds or updates the coadds of every (patch, band) the inputs reach.
pub fn build(registry: &Registry, opts: &CoaddOptions) -> Result<CoaddSummary> {
    if !(opts.pixel_scale > 0.0 && opts.pixel_scale < 10.0) {
        bail!("the pixel scale must be between 0 and 10 arcsec");
    }
    if opts.output.is_empty() || opts.inputs.contains(&opts.output) {
        bail!("the coadds need a collection of their own");
    }
    let calexps = registry.list(&DatasetFilter {
        types: vec![DatasetType::Calexp],
        collections: opts.inputs.clone(),
        ..Default::default()
    })?;
    if calexps.is_empty() {
        bail!(
            "no calexps in {}: run the single-visit pipeline first",
            opts.inputs.join(", ")
        );
    }
    // Which calexps reach each patch, per band.
    let mut work: BTreeMap<Patch, BTreeMap<String, Vec<Dataset>>> = BTreeMap::new();
    for c in calexps {
        let Some(band) = c.data_id.band.clone() else {
            continue;
        };
        if !opts.bands.is_empty() && !opts.bands.contains(&band) {
            continue;
        }
        if !c.stored {
            tracing::warn!(calexp = %c.id, "not stored: left out of the coadds");
            continue;
        }
        let Some(obs) = &c.observation else { continue };
        let corners: Vec<SkyCoord> = obs
            .footprint
            .iter()
            .filter_map(|p| SkyCoord::new(p.ra(), p.dec()))
            .collect();
        for patch in patches_overlapping(&corners) {
            work.entry(patch)
                .or_default()
                .entry(band.clone())
                .or_default()
                .push(c.clone());
        }
    }
    let mut summary = CoaddSummary::default();
    let bar = indicatif::ProgressBar::new(work.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("coadds {bar:30} {pos}/{len} patches {msg}")
            .expect("a valid template"),
    );
    for (patch, bands) in &work {
        bar.set_message(format!("p{}", patch.index()));
        build_patch(registry, opts, *patch, bands, &mut summary)
            .with_context(|| format!("coadding patch {}", patch.index()))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(summary)
}

/// The coadds of one patch: each band's, then the all-band one from them.
fn build_patch(
    registry: &Registry,
    opts: &CoaddOptions,
    patch: Patch,
    bands: &BTreeMap<String, Vec<Dataset>>,
    summary: &mut CoaddSummary,
) -> Result<()> {
    let grid = patch.grid(opts.pixel_scale, opts.margin);
    let config_json = config_json(opts);
    let mut band_coadds: Vec<Dataset> = Vec::new();
    let mut changed = false;
    let all_id = dataset_id(&opts.output, patch, None);
    for (band, calexps) in bands {
        let id = dataset_id(&opts.output, patch, Some(band));
        let inputs: BTreeSet<String> = calexps.iter().map(|c| c.id.clone()).collect();
        if let Some(old) = registry.get(&id)?
            && up_to_date(&old, &inputs, &config_json)
        {
            summary.unchanged += 1;
            band_coadds.push(old);
            continue;
        }
        let mut warps = Vec::new();
        for c in calexps {
            let path = registry.verified_path(c)?;
            let exposure = read_exposure(&path)?;
            if let Some(w) = warp(&exposure, &grid, &opts.warp)? {
                warps.push(CoaddInput { warp: w });
            }
        }
        if warps.is_empty() {
            continue;
        }
        let result = coadd(&grid, warps, &opts.config)?;
        if !covers_cell(&result.depth, &grid, patch) {
            continue;
        }
        // The band coadds are inputs of the all-band coadd: forget it before remaking them.
        registry.remove(&all_id)?;
        let dataset = write_and_register(
            registry,
            opts,
            patch,
            Some(band),
            result,
            calexps,
            &config_json,
        )?;
        summary.built.push(dataset.id.clone());
        band_coadds.push(dataset);
        changed = true;
    }
    if band_coadds.len() < 2 {
        return Ok(());
    }
    let inputs: BTreeSet<String> = band_coadds.iter().map(|c| c.id.clone()).collect();
    if !changed
        && let Some(old) = registry.get(&all_id)?
        && up_to_date(&old, &inputs, &config_json)
    {
        summary.unchanged += 1;
        return Ok(());
    }
    let mut warps = Vec::new();
    for c in &band_coadds {
        let mut exposure = read_exposure(&registry.verified_path(c)?)?;
        exposure.wcs = Some(grid.wcs().clone());
        warps.push(CoaddInput {
            warp: aster_processing::warp::Warp {
                x0: 0,
                y0: 0,
                exposure,
            },
        });
    }
    let result = coadd(&grid, warps, &CoaddConfig::all_bands())?;
    let dataset = write_and_register(
        registry,
        opts,
        patch,
        None,
        result,
        &band_coadds,
        &config_json,
    )?;
    summary.built.push(dataset.id);
    Ok(())
}

fn dataset_id(collection: &str, patch: Patch, band: Option<&str>) -> String {
    aster_archive::registry::dataset_id(DatasetType::Coadd, collection, &data_id(patch, band))
}

fn data_id(patch: Patch, band: Option<&str>) -> DataId {
    DataId {
        instrument: INSTRUMENT.into(),
        band: band.map(str::to_string),
        patch: Some(patch.index() as i64),
        ..Default::default()
    }
}

fn config_json(opts: &CoaddOptions) -> serde_json::Value {
    let c = &opts.config;
    serde_json::json!({
        "pixel_scale": opts.pixel_scale,
        "margin": opts.margin,
        "patch_order": aster_processing::skymap::PATCH_ORDER,
        "warp": {"kernel": "lanczos3", "interp_length": opts.warp.interp_length},
        "clip_sigma": c.clip_sigma,
        "clip_iterations": c.clip_iterations,
        "psf_tolerance": c.psf_tolerance,
        "match_backgrounds": c.match_backgrounds,
        "background_bin": c.background_bin,
        "bad_planes": c.bad_planes.iter().map(|p| p.name()).collect::<Vec<_>>(),
    })
}

/// Whether a recorded coadd was made from exactly these inputs with this configuration.
fn up_to_date(old: &Dataset, inputs: &BTreeSet<String>, config: &serde_json::Value) -> bool {
    old.provenance.as_ref().is_some_and(|p| {
        p.inputs.iter().cloned().collect::<BTreeSet<_>>() == *inputs && p.config == *config
    })
}

/// Whether any pixel inside the patch's own cell has data: a warp reaching only the margin
/// belongs to the neighbouring patch.
fn covers_cell(
    depth: &aster_processing::image::Image<u16>,
    grid: &aster_processing::skymap::PixelGrid,
    patch: Patch,
) -> bool {
    (0..depth.height()).step_by(4).any(|y| {
        (0..depth.width()).step_by(4).any(|x| {
            depth.get(x, y).is_some_and(|n| n > 0)
                && patch.contains(grid.wcs().pixel_to_sky(PixelPosition {
                    x: x as f64,
                    y: y as f64,
                }))
        })
    })
}

fn write_and_register(
    registry: &Registry,
    opts: &CoaddOptions,
    patch: Patch,
    band: Option<&str>,
    mut result: aster_processing::coadd::Coadd,
    inputs: &[Dataset],
    config: &serde_json::Value,
) -> Result<Dataset> {
    let rel: PathBuf = Path::new("coadd")
        .join(&opts.output)
        .join(band.unwrap_or("all"))
        .join(format!("p{}.fits", patch.index()));
    let path = registry.root().join(&rel);
    std::fs::create_dir_all(path.parent().expect("a parent"))?;
    let obs: Vec<&Observation> = inputs
        .iter()
        .filter_map(|d| d.observation.as_ref())
        .collect();
    let t_min = obs.iter().map(|o| o.t_min).fold(f64::INFINITY, f64::min);
    let t_max = obs
        .iter()
        .map(|o| o.t_max)
        .fold(f64::NEG_INFINITY, f64::max);
    let em_min = obs.iter().filter_map(|o| o.em_min).reduce(f64::min);
    let em_max = obs.iter().filter_map(|o| o.em_max).reduce(f64::max);
    // The depth of a band coadd is the number of its visits; of the all-band one, the
    // visits of its band coadds.
    let visits: f64 = if band.is_some() {
        inputs.len() as f64
    } else {
        inputs
            .iter()
            .filter_map(|d| d.metadata.as_ref()?.get("ninputs")?.as_f64())
            .sum()
    };
    let exptime: f64 = obs.iter().map(|o| o.exptime).sum();
    let seeing = obs
        .iter()
        .filter_map(|o| o.resolution)
        .fold(f64::NAN, f64::max);
    let meta = &mut result.exposure.metadata;
    meta.insert(
        "BAND".into(),
        HeaderValue::Text(band.unwrap_or("all").into()),
    );
    meta.insert(
        "SKYMAP".into(),
        HeaderValue::Text(format!("healpix{}", aster_processing::skymap::PATCH_ORDER)),
    );
    meta.insert("PATCH".into(), HeaderValue::Int(patch.index() as i64));
    meta.insert("NINPUTS".into(), HeaderValue::Int(inputs.len() as i64));
    meta.insert("BUNIT".into(), HeaderValue::Text("nJy".into()));
    meta.insert("EXPTIME".into(), HeaderValue::Float(exptime));
    meta.insert("MJD-BEG".into(), HeaderValue::Float(t_min));
    meta.insert("MJD-END".into(), HeaderValue::Float(t_max));
    write_coadd(&path, &result.exposure, &result.depth)?;
    let corners = patch
        .corners()
        .map(|c| aster_adql::geometry::SkyPosition::new(c.ra(), c.dec()).expect("a cell corner"));
    let dataset = registry.replace(NewDataset {
        dataset_type: DatasetType::Coadd,
        collection: opts.output.clone(),
        data_id: data_id(patch, band),
        path: rel.to_string_lossy().into_owned(),
        format: formats::FITS.into(),
        observation: Some(Observation {
            obs_id: format!("coadd-p{}-{}", patch.index(), band.unwrap_or("all")),
            target_name: None,
            footprint: Observation::oriented(corners.to_vec()),
            resolution: seeing.is_finite().then_some(seeing),
            pixels: (
                result.exposure.width() as i64,
                result.exposure.height() as i64,
            ),
            t_min,
            t_max,
            exptime,
            em_min,
            em_max,
        }),
        provenance: Some(Provenance {
            task: "coadd".into(),
            run: opts.output.clone(),
            config: config.clone(),
            software: crate::datasets::software(),
            inputs: inputs.iter().map(|d| d.id.clone()).collect(),
        }),
        metadata: Some(serde_json::json!({
            "ninputs": visits,
            "rejected": result.rejected,
            "backgrounds": result.backgrounds,
        })),
    })?;
    Ok(dataset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_needs_calexps_and_a_collection_of_its_own() {
        let dir = std::env::temp_dir().join(format!("aster-coadd-{}", std::process::id()));
        let registry = Registry::open(&dir).unwrap();
        let err = build(&registry, &CoaddOptions::default()).unwrap_err();
        assert!(err.to_string().contains("no calexps"), "{err}");
        let same = CoaddOptions {
            output: "single-visit".into(),
            ..Default::default()
        };
        assert!(build(&registry, &same).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
