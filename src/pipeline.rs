//! `aster simulate ccd` and `aster pipeline single-frame`: a calibrated CCD of the demo sky
//! with its truth, and single-frame measurement of an exposure file into a Source table
//! (Parquet, fluxes in nJy) beside the processed image.
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use aster_archive::exposure_file::{read_exposure, write_exposure};
use aster_processing::detection::DetectionConfig;
use aster_processing::render::{TruthEntry, render};
use aster_processing::single_frame::{Source, process};
use aster_processing::sky::{self, Footprint, SimVisit};

use crate::tables::write_parquet;

/// Renders `size` x `size` pixels of the demo sky (seed `seed`) at its centre as seen by
/// the demo cadence's first visit in `band`, writing the exposure and its truth table.
pub fn simulate_ccd(
    output: &Path,
    size: usize,
    seed: u64,
    band: usize,
    objects: u64,
) -> Result<()> {
    if !(64..=8192).contains(&size) {
        bail!("--size must be between 64 and 8192 pixels");
    }
    let footprint = Footprint::for_objects(objects);
    let visit = sky::cadence(seed, 12, footprint)
        .into_iter()
        .find(|v| v.band == band)
        .context("no visit in that band")?;
    // Objects within the CCD's reach of the footprint centre.
    let half_deg = size as f64 * aster_processing::render::PIXEL_SCALE / 3600.0 / 2.0 * 1.5;
    let near: Vec<_> = sky::objects(seed, objects, footprint)
        .filter(|o| {
            sky::tangent_plane(footprint.ra, footprint.dec, o.ra, o.dec)
                .is_some_and(|(x, y)| x.abs() < half_deg && y.abs() < half_deg)
        })
        .collect();
    let (exposure, truth) = render(&visit, footprint.ra, footprint.dec, size, &near, seed);
    write_exposure(output, &exposure)?;
    let truth_path = output.with_extension("truth.parquet");
    write_parquet(&truth_path, &[truth_batch(&truth, &visit)?])?;
    println!(
        "wrote {} ({} x {} px, visit {}, band {}) and {} ({} objects)",
        output.display(),
        size,
        size,
        visit.visit,
        sky::BANDS[visit.band],
        truth_path.display(),
        truth.len()
    );
    Ok(())
}

/// Measures the exposure file `image` and writes `<stem>.calexp.fits` (background
/// subtracted, DETECTED plane set) and `<stem>.sources.parquet` into `output`.
pub fn single_frame(image: &Path, output: &Path) -> Result<()> {
    let mut exposure = read_exposure(image)?;
    let (sources, _background) = process(&mut exposure, &DetectionConfig::default())
        .with_context(|| format!("{}: single-frame processing", image.display()))?;
    std::fs::create_dir_all(output).with_context(|| format!("creating {}", output.display()))?;
    let stem = image
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("image")
        .to_string();
    let calexp = output.join(format!("{stem}.calexp.fits"));
    write_exposure(&calexp, &exposure)?;
    let table = output.join(format!("{stem}.sources.parquet"));
    write_parquet(&table, &[sources_batch(&sources)?])?;
    println!(
        "{} sources -> {}, {}",
        sources.len(),
        table.display(),
        calexp.display()
    );
    Ok(())
}

fn f64_col(values: impl Iterator<Item = f64>) -> ArrayRef {
    Arc::new(values.collect::<Float64Array>())
}

fn field(name: &str, dt: DataType, unit: &str, description: &str) -> Field {
    let mut meta =
        std::collections::HashMap::from([("description".to_string(), description.to_string())]);
    if !unit.is_empty() {
        meta.insert("unit".into(), unit.into());
    }
    Field::new(name, dt, true).with_metadata(meta)
}

/// The Source table: names and units after the survey's Source schema where they exist.
fn sources_batch(sources: &[Source]) -> Result<RecordBatch> {
    let m = |f: fn(&Source) -> f64| f64_col(sources.iter().map(f));
    let ap = |i: usize| {
        f64_col(
            sources
                .iter()
                .map(move |s| s.measurement.aperture_fluxes[i].1.value),
        )
    };
    let shape = |f: fn(&aster_processing::measurement::Shape) -> f64| {
        f64_col(
            sources
                .iter()
                .map(move |s| s.measurement.shape.as_ref().map_or(f64::NAN, f)),
        )
    };
    let d = DataType::Float64;
    let schema = Schema::new(vec![
        field(
            "sourceId",
            DataType::Int64,
            "",
            "Source index within this image",
        ),
        field("coord_ra", d.clone(), "deg", "Right ascension (ICRS)"),
        field("coord_dec", d.clone(), "deg", "Declination (ICRS)"),
        field("x", d.clone(), "pixel", "Centroid column, 0-based"),
        field("y", d.clone(), "pixel", "Centroid row, 0-based"),
        field("xErr", d.clone(), "pixel", "Centroid column error"),
        field("yErr", d.clone(), "pixel", "Centroid row error"),
        field("psfFlux", d.clone(), "nJy", "PSF flux"),
        field("psfFluxErr", d.clone(), "nJy", "PSF flux error"),
        field("ap03Flux", d.clone(), "nJy", "Flux within 3 pixels"),
        field("ap06Flux", d.clone(), "nJy", "Flux within 6 pixels"),
        field("ap09Flux", d.clone(), "nJy", "Flux within 9 pixels"),
        field("ap12Flux", d.clone(), "nJy", "Flux within 12 pixels"),
        field("ixx", d.clone(), "pixel**2", "Adaptive second moment xx"),
        field("iyy", d.clone(), "pixel**2", "Adaptive second moment yy"),
        field("ixy", d.clone(), "pixel**2", "Adaptive second moment xy"),
        field("kronRad", d.clone(), "pixel", "Kron radius (circularised)"),
        field("kronFlux", d.clone(), "nJy", "Flux within 2.5 Kron radii"),
        field("kronFluxErr", d.clone(), "nJy", "Kron flux error"),
        field(
            "extendedness",
            d.clone(),
            "",
            "1 if resolved beyond the PSF, 0 if point-like",
        ),
        field("significance", d, "", "Detection significance (sigma)"),
        field(
            "blended",
            DataType::Boolean,
            "",
            "Footprint had several peaks",
        ),
        field(
            "flag_edge",
            DataType::Boolean,
            "",
            "Measurement reached the image edge",
        ),
        field(
            "flag_masked",
            DataType::Boolean,
            "",
            "Masked pixels were left out",
        ),
        field(
            "flag_centroid",
            DataType::Boolean,
            "",
            "Centroid failed; peak used",
        ),
    ]);
    let flag = |f: fn(&Source) -> bool| -> ArrayRef {
        Arc::new(sources.iter().map(|s| Some(f(s))).collect::<BooleanArray>())
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(sources.iter().map(|s| s.id).collect::<Int64Array>()),
        m(|s| s.ra),
        m(|s| s.dec),
        m(|s| s.measurement.x),
        m(|s| s.measurement.y),
        m(|s| s.measurement.x_err),
        m(|s| s.measurement.y_err),
        m(|s| s.measurement.psf_flux.value),
        m(|s| s.measurement.psf_flux.err),
        ap(0),
        ap(1),
        ap(2),
        ap(3),
        shape(|s| s.ixx),
        shape(|s| s.iyy),
        shape(|s| s.ixy),
        m(|s| s.measurement.kron.map_or(f64::NAN, |k| k.0)),
        m(|s| s.measurement.kron.map_or(f64::NAN, |k| k.1.value)),
        m(|s| s.measurement.kron.map_or(f64::NAN, |k| k.1.err)),
        m(|s| s.measurement.extendedness.unwrap_or(f64::NAN)),
        m(|s| s.significance),
        flag(|s| s.blended),
        flag(|s| s.measurement.flags.edge),
        flag(|s| s.measurement.flags.masked),
        flag(|s| s.measurement.flags.centroid_failed),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

fn truth_batch(truth: &[TruthEntry], visit: &SimVisit) -> Result<RecordBatch> {
    let d = DataType::Float64;
    let schema = Schema::new(vec![
        field("objectId", DataType::Int64, "", "Synthetic object"),
        field("x", d.clone(), "pixel", "True position, column"),
        field("y", d.clone(), "pixel", "True position, row"),
        field("flux", d.clone(), "nJy", "True flux at mid-exposure"),
        field("snr", d, "", "PSF-fit SNR on sky noise alone"),
        field("isStar", DataType::Boolean, "", "Point source"),
        field("visit", DataType::Int64, "", "Visit"),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(truth.iter().map(|t| t.id).collect::<Int64Array>()),
        f64_col(truth.iter().map(|t| t.x)),
        f64_col(truth.iter().map(|t| t.y)),
        f64_col(truth.iter().map(|t| t.flux_njy)),
        f64_col(truth.iter().map(|t| t.snr)),
        Arc::new(
            truth
                .iter()
                .map(|t| Some(t.is_star))
                .collect::<BooleanArray>(),
        ),
        Arc::new(truth.iter().map(|_| visit.visit).collect::<Int64Array>()),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}
