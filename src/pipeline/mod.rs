//! The science pipelines of the `aster` command: `aster pipeline run` executes a pipeline
//! definition ([`definition`]) over the raws of a data directory ([`run`]); `aster pipeline
//! single-frame` characterizes and measures one calibrated image, Aster's or another
//! camera's, into a Source table (Parquet and FITS) beside the processed image; `aster simulate ccd` renders a calibrated CCD of the
//! demo sky with its truth.
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use aster_archive::exposure_file::{
    is_exposure_file, read_exposure, read_plain_image, write_exposure,
};
use aster_processing::plain_image::exposure_from_plain;
use aster_processing::render::{TruthEntry, render};
use aster_processing::single_frame::{Source, process};
use aster_processing::sky::{self, Footprint, SimVisit};

use crate::tables::{Columns, write_fits_table, write_parquet};

pub mod definition;
pub mod refcat;
pub mod run;

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

/// What `aster pipeline single-frame` is given besides the image.
pub struct SingleFrameOptions<'a> {
    /// Reference catalogue to refit the WCS and the zeropoint against.
    pub refcat: Option<&'a Path>,
    /// The image's band (one of ugrizy), when its FILTER card does not say.
    pub band: Option<usize>,
    /// Task settings: label.key=value, as for `aster pipeline run`.
    pub overrides: &'a [String],
}

/// Processes one calibrated image: an Aster exposure file, or a plain FITS image from any
/// camera with a TAN, TAN-SIP or TPV WCS (DMS-REQ-0296). The PSF is modelled on the image
/// (unless it has one); with a reference catalogue the WCS is refitted and the zeropoint
/// measured (DMS-REQ-0029, 0030); then sources are detected and measured. Writes
/// `<stem>.calexp.fits` (the processed image) and the Source table as
/// `<stem>.sources.parquet` and `<stem>.sources.fits` into `output`.
pub fn single_frame(image: &Path, output: &Path, options: &SingleFrameOptions) -> Result<()> {
    use aster_processing::characterize::{characterize, model_psf};
    // Settings are validated before any pixel is read.
    let pipeline = definition::parse(
        include_str!("../../pipelines/single-visit.yaml"),
        options.overrides,
    )?;
    let char_config = pipeline.characterize().context("the characterize task")?;
    let detection = pipeline.measure().context("the measure task")?;
    let context = |step: &str| format!("{}: {step}", image.display());
    let (mut exposure, band, mjd) = if is_exposure_file(image) {
        let e = read_exposure(image)?;
        let band = match e.metadata.get("FILTER") {
            Some(aster_processing::image::HeaderValue::Text(f)) => sky::band_index(f),
            _ => None,
        };
        let float = |k: &str| match e.metadata.get(k) {
            Some(aster_processing::image::HeaderValue::Float(m)) => Some(*m),
            _ => None,
        };
        // Aster's images carry shutter open and close (TAI); others MJD-OBS.
        let mjd = match (float("MJD-BEG"), float("MJD-END")) {
            (Some(a), Some(b)) => Some((a + b) / 2.0),
            _ => float("MJD-OBS"),
        };
        (e, band, mjd)
    } else {
        let plain = read_plain_image(image)?;
        let (e, obs) = exposure_from_plain(plain.image, &plain.cards)
            .with_context(|| context(&format!("HDU {}", plain.hdu)))?;
        println!(
            "{}: HDU {}, {} x {} px, sky noise {:.3} counts{}",
            image.display(),
            plain.hdu,
            e.width(),
            e.height(),
            obs.sky_noise,
            match obs.gain {
                Some(g) => format!(", gain {g} e-/count"),
                None => ", no GAIN: the variance is the sky's alone".into(),
            }
        );
        (e, obs.band, obs.mjd)
    };
    let band = options.band.or(band);
    if let Some(refcat) = options.refcat {
        let band = band.with_context(|| {
            context("the image's band is unknown (no FILTER card naming u, g, r, i, z or y); give --band")
        })?;
        let refs = refcat::read_refcat(refcat, Some(band))?;
        let mjd = match mjd {
            Some(m) => m,
            None => {
                println!(
                    "{}: no MJD-OBS or DATE-OBS; reference stars are placed at their catalogue epoch",
                    image.display()
                );
                refs[0].epoch
            }
        };
        let report = characterize(&mut exposure, &refs, band, mjd, char_config)
            .with_context(|| context("characterize"))?;
        println!(
            "PSF from {} stars, FWHM {:.2}\"; WCS order {} from {} stars, RMS {:.1} mas; \
             zeropoint {:.4} ± {:.4} from {} stars",
            report.psf_stars,
            report.seeing,
            report.astrometry_order,
            report.astrometry_matches,
            report.astrometry_rms,
            report.zero_point,
            report.zero_point_err,
            report.photometry_matches
        );
    } else if exposure.psf.is_none() {
        let (stars, seeing) =
            model_psf(&mut exposure, char_config).with_context(|| context("PSF model"))?;
        println!("PSF from {stars} stars, FWHM {seeing:.2}\"; WCS and calibration as given");
    }
    let (sources, background) =
        process(&mut exposure, detection).with_context(|| context("single-frame processing"))?;
    std::fs::create_dir_all(output).with_context(|| format!("creating {}", output.display()))?;
    let stem = image
        .file_name()
        .and_then(|s| s.to_str())
        .map(|s| s.trim_end_matches(".fz").trim_end_matches(".gz"))
        .map(|s| s.rsplit_once('.').map_or(s, |(stem, _)| stem))
        .unwrap_or("image")
        .to_string();
    let calexp = output.join(format!("{stem}.calexp.fits"));
    write_exposure(&calexp, &exposure)?;
    let mut batch = sources_batch(&sources, None, Some(&background), exposure.photo_calib)?;
    if exposure.photo_calib.is_none() {
        batch = in_counts(batch)?;
    }
    let parquet = output.join(format!("{stem}.sources.parquet"));
    write_parquet(&parquet, std::slice::from_ref(&batch))?;
    let fits = output.join(format!("{stem}.sources.fits"));
    write_fits_table(&fits, "SOURCE", &[batch])?;
    println!(
        "{} sources -> {}, {}; image -> {}",
        sources.len(),
        parquet.display(),
        fits.display(),
        calexp.display()
    );
    Ok(())
}

/// The Source table of an uncalibrated image: its flux columns are in counts, not nJy.
fn in_counts(batch: RecordBatch) -> Result<RecordBatch> {
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let mut meta = f.metadata().clone();
            if meta.get("unit").map(String::as_str) == Some("nJy") {
                meta.insert("unit".into(), "count".into());
            }
            f.as_ref().clone().with_metadata(meta)
        })
        .collect();
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        batch.columns().to_vec(),
    )?)
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

/// Where a CCD's sources came from, for their ids and the Source table's context columns.
#[derive(Debug, Clone, Copy)]
pub struct SourceContext {
    pub ccd_visit: i64,
    pub visit: i64,
    pub detector: i64,
    pub band: usize,
}

/// The Source table of one image, with the survey's Source column names (dp.Source).
/// Source ids are `ccdVisitId * 100000 + n` when the context is known, else `n`.
pub fn sources_batch(
    sources: &[Source],
    context: Option<SourceContext>,
    background: Option<&aster_processing::background::Background>,
    calib: Option<aster_processing::image::PhotoCalib>,
) -> Result<RecordBatch> {
    if sources.len() >= 100_000 {
        bail!(
            "{} sources on one image: more than source ids allow",
            sources.len()
        );
    }
    let some = |f: &dyn Fn(&Source) -> f64| sources.iter().map(|s| Some(f(s))).collect::<Vec<_>>();
    let flag = |f: &dyn Fn(&Source) -> bool| sources.iter().map(|s| Some(f(s))).collect::<Vec<_>>();
    let mut c = Columns::default();
    c.i64(
        "sourceId",
        sources
            .iter()
            .map(|s| Some(context.map_or(0, |k| k.ccd_visit * 100_000) + s.id))
            .collect(),
    )
    .described("", "Unique id of the source");
    c.f64("coord_ra", some(&|s| s.ra))
        .described("deg", "Right ascension (ICRS)");
    c.f64("coord_dec", some(&|s| s.dec))
        .described("deg", "Declination (ICRS)");
    if let Some(k) = context {
        let n = sources.len();
        c.i64("ccdVisitId", vec![Some(k.ccd_visit); n]);
        c.i64("visit", vec![Some(k.visit); n]);
        c.i64("detector", vec![Some(k.detector); n]);
        c.str(
            "band",
            vec![Some(aster_processing::sky::BANDS[k.band].to_string()); n],
        );
    }
    c.f64("ra", some(&|s| s.ra))
        .described("deg", "Right ascension of the centroid (ICRS)");
    c.f64("decl", some(&|s| s.dec))
        .described("deg", "Declination of the centroid (ICRS)");
    let m = |f: &dyn Fn(&aster_processing::measurement::Measurement) -> f64| {
        sources
            .iter()
            .map(|s| Some(f(&s.measurement)))
            .collect::<Vec<_>>()
    };
    c.f64("x", m(&|m| m.x))
        .described("pixel", "Centroid column, 0-based");
    c.f64("y", m(&|m| m.y))
        .described("pixel", "Centroid row, 0-based");
    c.f64("xErr", m(&|m| m.x_err))
        .described("pixel", "Centroid column error");
    c.f64("yErr", m(&|m| m.y_err))
        .described("pixel", "Centroid row error");
    c.f64("psfFlux", m(&|m| m.psf_flux.value))
        .described("nJy", "PSF flux");
    c.f64("psfFluxErr", m(&|m| m.psf_flux.err))
        .described("nJy", "PSF flux error");
    for (i, r) in aster_processing::measurement::APERTURE_RADII
        .iter()
        .enumerate()
    {
        let r = *r as usize;
        c.f64(
            format!("ap{r:02}Flux"),
            m(&|m| m.aperture_fluxes[i].1.value),
        )
        .described("nJy", &format!("Flux within {r} pixels"));
        c.f64(
            format!("ap{r:02}FluxErr"),
            m(&|m| m.aperture_fluxes[i].1.err),
        )
        .described("nJy", &format!("Error of the flux within {r} pixels"));
    }
    // As the survey's pipelines do, the 12-pixel aperture is the calibration flux.
    c.f64("calibFlux", m(&|m| m.aperture_fluxes[3].1.value))
        .described("nJy", "Flux within 12 pixels");
    c.f64("calibFluxErr", m(&|m| m.aperture_fluxes[3].1.err))
        .described("nJy", "Error of calibFlux");
    let shape = |f: &dyn Fn(&aster_processing::measurement::Shape) -> f64| {
        sources
            .iter()
            .map(|s| Some(s.measurement.shape.as_ref().map_or(f64::NAN, f)))
            .collect::<Vec<_>>()
    };
    c.f64("ixx", shape(&|s| s.ixx))
        .described("pixel**2", "Adaptive second moment xx");
    c.f64("iyy", shape(&|s| s.iyy))
        .described("pixel**2", "Adaptive second moment yy");
    c.f64("ixy", shape(&|s| s.ixy))
        .described("pixel**2", "Adaptive second moment xy");
    c.f64("ixxErr", shape(&|s| s.ixx_err))
        .described("pixel**2", "Error of ixx");
    c.f64("iyyErr", shape(&|s| s.iyy_err))
        .described("pixel**2", "Error of iyy");
    c.f64("ixyErr", shape(&|s| s.ixy_err))
        .described("pixel**2", "Error of ixy");
    c.f64("kronRad", m(&|m| m.kron.map_or(f64::NAN, |k| k.0)))
        .described("pixel", "Kron radius (circularised)");
    c.f64("kronFlux", m(&|m| m.kron.map_or(f64::NAN, |k| k.1.value)))
        .described("nJy", "Flux within 2.5 Kron radii");
    c.f64("kronFluxErr", m(&|m| m.kron.map_or(f64::NAN, |k| k.1.err)))
        .described("nJy", "Kron flux error");
    c.f64("petroRad", m(&|m| m.petrosian.map_or(f64::NAN, |p| p.0)))
        .described("pixel", "Petrosian radius (ratio 0.2)");
    c.f64(
        "petroFlux",
        m(&|m| m.petrosian.map_or(f64::NAN, |p| p.1.value)),
    )
    .described("nJy", "Flux within 2 Petrosian radii");
    c.f64(
        "petroFluxErr",
        m(&|m| m.petrosian.map_or(f64::NAN, |p| p.1.err)),
    )
    .described("nJy", "Petrosian flux error");
    c.f64("extendedness", m(&|m| m.extendedness.unwrap_or(f64::NAN)))
        .described("", "1 if resolved beyond the PSF, 0 if point-like");
    c.f64(
        "sky",
        some(&|s| match (background, calib) {
            (Some(b), Some(pc)) => pc.to_njy(b.at(s.measurement.x, s.measurement.y)),
            _ => f64::NAN,
        }),
    )
    .described("nJy", "Background under the source, per pixel");
    c.f64("detect_significance", some(&|s| s.significance))
        .described("", "Detection significance (sigma)");
    c.bool("blended", flag(&|s| s.blended))
        .described("", "Footprint had several peaks");
    c.bool("pixelFlags_edge", flag(&|s| s.measurement.flags.edge))
        .described("", "Measurement reached the image edge");
    c.bool("pixelFlags_masked", flag(&|s| s.measurement.flags.masked))
        .described("", "Masked pixels were left out");
    c.bool(
        "centroid_flag",
        flag(&|s| s.measurement.flags.centroid_failed),
    )
    .described("", "Centroid failed; peak used");
    c.bool("shape_flag", flag(&|s| s.measurement.flags.shape_failed))
        .described("", "Adaptive moments failed");
    c.batch()
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
