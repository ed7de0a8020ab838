//! `aster bench pipeline`: one CCD of one visit from raw to Source catalog, seconds per
//! stage, and the same calibrated image through SExtractor (Debian source-extractor):
//! completeness of both against the simulator's truth and the time each takes to detect
//! and measure. Uses the survey in the data directory, simulating one (with calibration
//! products) when there is none.
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use aster_archive::exposure_file::write_plain_image;
use aster_archive::raw_file::read_raw;
use aster_processing::characterize::characterize;
use aster_processing::image::{Exposure, Image};
use aster_processing::isr::process_visit;
use aster_processing::single_frame::process;

use crate::pipeline::definition;
use crate::pipeline::refcat::read_refcat;
use crate::pipeline::run::{data_ids, isr_calibrations};

/// Runs of detection and measurement (Aster's and SExtractor's) of which the fastest counts.
const REPEATS: usize = 3;

/// A truth star's position on the image.
struct TruthStar {
    x: f64,
    y: f64,
}

pub fn pipeline(data_dir: &Path, ccd_size: usize) -> Result<()> {
    let registry = aster_archive::registry::Registry::open(data_dir)?;
    if !data_dir.join("simulation.json").exists() {
        println!(
            "simulating one visit of a {ccd_size} x {ccd_size} CCD with its calibrations into {}",
            data_dir.display()
        );
        crate::simulate::simulate_survey(
            data_dir,
            &registry,
            &crate::simulate::SurveySpec {
                seed: 2026,
                visits: 1,
                ccds: 1,
                ccd_size,
                density: 60_000.0,
            },
        )?;
    }
    if !data_dir.join("calib").exists() {
        crate::calibrate::build_all(data_dir, &registry)?;
    }
    let pipeline = definition::parse(include_str!("../pipelines/single-visit.yaml"), &[])?;
    let id = data_ids(data_dir)?
        .into_iter()
        .next()
        .context("no science visit")?;
    let refs = read_refcat(&data_dir.join("refcat").join("refcat.parquet"), None)?;
    let isr_config = pipeline.isr().context("isr task")?;

    let mut stages: Vec<(&str, f64)> = Vec::new();
    let t = Instant::now();
    let products = crate::pipeline::run::load_calibrations(data_dir, isr_config, &id)?;
    let raws = id
        .snaps
        .iter()
        .map(|(p, _)| read_raw(p).map_err(anyhow::Error::from))
        .collect::<Result<Vec<_>>>()?;
    stages.push(("read raws and calibrations", t.elapsed().as_secs_f64()));
    let t = Instant::now();
    let calibs = isr_calibrations(&products)?;
    let mut exposure = process_visit(&raws, &calibs, isr_config)?;
    stages.push(("ISR (2 snaps)", t.elapsed().as_secs_f64()));
    let t = Instant::now();
    let first = &id.snaps[0].1;
    let last = &id.snaps[id.snaps.len() - 1].1;
    let mid = (first.tai_start + last.tai_end) / 2.0;
    let report = characterize(
        &mut exposure,
        &refs,
        id.band,
        mid,
        pipeline.characterize().context("characterize task")?,
    )?;
    stages.push((
        "characterize (PSF, WCS, zeropoint)",
        t.elapsed().as_secs_f64(),
    ));
    let calibrated = exposure.clone();
    // Detection and measurement are timed as the best of a few runs, as SExtractor is
    // below: a single run on a shared machine measures its neighbours as much as itself.
    let mut aster_measure = f64::INFINITY;
    let mut sources = Vec::new();
    for _ in 0..REPEATS {
        exposure = calibrated.clone();
        let t = Instant::now();
        sources = process(&mut exposure, pipeline.measure().context("measure task")?)?.0;
        aster_measure = aster_measure.min(t.elapsed().as_secs_f64());
    }
    stages.push(("background, detection, measurement", aster_measure));
    let total: f64 = stages.iter().map(|s| s.1).sum();

    println!(
        "\nvisit {} {} ({} x {} px, band {}): raw to {} sources",
        id.visit,
        id.detector_name,
        exposure.width(),
        exposure.height(),
        aster_processing::sky::BANDS[id.band],
        sources.len()
    );
    for (name, s) in &stages {
        println!("  {name:38} {s:7.2} s");
    }
    println!("  {:38} {total:7.2} s", "total");

    // The same calibrated image through SExtractor.
    let truth = truth_stars(data_dir, &id, &calibrated, report.zero_point)?;
    let aster_found = completeness(
        &truth,
        sources.iter().map(|s| (s.measurement.x, s.measurement.y)),
    );
    let dir = data_dir.join("bench");
    std::fs::create_dir_all(&dir)?;
    let image = dir.join("calexp.fits");
    let variance = dir.join("variance.fits");
    write_plane(&image, calibrated.image(), &calibrated)?;
    write_plane(&variance, calibrated.variance(), &calibrated)?;
    let (sex_time, sex_positions) =
        match run_sextractor(&dir, &image, &variance, report.zero_point, report.seeing) {
            Ok(r) => r,
            Err(e) => {
                println!(
                    "\nSExtractor did not run ({e:#}); install Debian's source-extractor to compare"
                );
                println!(
                    "Aster: completeness {:.2}% of {} stars at true SNR >= 10",
                    100.0 * aster_found,
                    truth.len()
                );
                return Ok(());
            }
        };
    let sex_found = completeness(&truth, sex_positions.iter().copied());
    println!("\nstars at true SNR >= 10: {}", truth.len());
    println!(
        "  {:14} {:>12} {:>16} {:>10}",
        "", "completeness", "detect+measure", "sources"
    );
    println!(
        "  {:14} {:>11.2}% {:>14.2} s {:>10}",
        "Aster",
        100.0 * aster_found,
        aster_measure,
        sources.len()
    );
    println!(
        "  {:14} {:>11.2}% {:>14.2} s {:>10}",
        "SExtractor",
        100.0 * sex_found,
        sex_time,
        sex_positions.len()
    );
    Ok(())
}

/// Writes one plane of `e` as a plain FITS image with the WCS, for SExtractor.
fn write_plane(path: &Path, plane: &Image<f32>, e: &Exposure) -> Result<()> {
    write_plain_image(path, plane, e.wcs.as_ref())?;
    Ok(())
}

/// Runs source-extractor on the image with the variance as its weight map;
/// returns its wall-clock time and the positions (0-based) it found.
fn run_sextractor(
    dir: &Path,
    image: &Path,
    variance: &Path,
    zero_point: f64,
    seeing: f64,
) -> Result<(f64, Vec<(f64, f64)>)> {
    let params = dir.join("sex.param");
    // What Aster measures, in SExtractor's terms: centroids with errors, iterated
    // Gaussian-windowed centroids and second moments (its counterpart of adaptive moments)
    // with errors, Kron and Petrosian radii and fluxes, four apertures, a star/galaxy
    // classifier for extendedness, and flags. SExtractor has no PSF flux without a PSFEx
    // model, which Aster fits itself.
    std::fs::write(
        &params,
        [
            "X_IMAGE",
            "Y_IMAGE",
            "ERRX2_IMAGE",
            "ERRY2_IMAGE",
            "XWIN_IMAGE",
            "YWIN_IMAGE",
            "ERRX2WIN_IMAGE",
            "ERRY2WIN_IMAGE",
            "X2WIN_IMAGE",
            "Y2WIN_IMAGE",
            "XY2WIN_IMAGE",
            "ERRXYWIN_IMAGE",
            "KRON_RADIUS",
            "FLUX_AUTO",
            "FLUXERR_AUTO",
            "PETRO_RADIUS",
            "FLUX_PETRO",
            "FLUXERR_PETRO",
            "FLUX_APER(4)",
            "FLUXERR_APER(4)",
            "CLASS_STAR",
            "FLAGS",
        ]
        .join("\n"),
    )?;
    let catalog = dir.join("sex.cat");
    let filter = [
        "/usr/share/source-extractor/gauss_2.5_5x5.conv",
        "/usr/share/source-extractor/default.conv",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .context("source-extractor's filters are not installed")?;
    let mut seconds = f64::INFINITY;
    for _ in 0..REPEATS {
        let t = Instant::now();
        let out = Command::new("source-extractor")
            .arg(image)
            .args(["-c", "/usr/share/source-extractor/default.sex"])
            .arg("-CATALOG_NAME")
            .arg(&catalog)
            .args(["-CATALOG_TYPE", "ASCII_HEAD"])
            .arg("-PARAMETERS_NAME")
            .arg(&params)
            .args(["-FILTER", "Y", "-FILTER_NAME", filter])
            .args([
                "-DETECT_THRESH",
                "1.5",
                "-ANALYSIS_THRESH",
                "1.5",
                "-DETECT_MINAREA",
                "3",
            ])
            .args(["-WEIGHT_TYPE", "MAP_VAR"])
            .arg("-WEIGHT_IMAGE")
            .arg(variance)
            .args(["-GAIN", "1.0", "-PHOT_APERTURES", "6,12,18,24"])
            .args(["-STARNNW_NAME", "/usr/share/source-extractor/default.nnw"])
            .args([
                "-SEEING_FWHM",
                &format!("{seeing:.3}"),
                "-PIXEL_SCALE",
                "0.2",
            ])
            .args(["-MAG_ZEROPOINT", &format!("{zero_point:.4}")])
            .args(["-BACK_SIZE", "128", "-VERBOSE_TYPE", "QUIET"])
            .output()
            .context("running source-extractor")?;
        seconds = seconds.min(t.elapsed().as_secs_f64());
        if !out.status.success() {
            bail!(
                "source-extractor failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let text = std::fs::read_to_string(&catalog)?;
    let positions = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            // SExtractor pixels are 1-based.
            Some((
                f.next()?.parse::<f64>().ok()? - 1.0,
                f.next()?.parse::<f64>().ok()? - 1.0,
            ))
        })
        .collect();
    Ok((seconds, positions))
}

/// Fraction of `truth` with a detection within 2 pixels.
fn completeness(truth: &[TruthStar], found: impl Iterator<Item = (f64, f64)>) -> f64 {
    let found: Vec<(f64, f64)> = found.collect();
    // A coarse grid makes the nearest-neighbour search cheap.
    let cell = 8.0;
    let mut grid: std::collections::HashMap<(i64, i64), Vec<(f64, f64)>> = Default::default();
    for &(x, y) in &found {
        grid.entry(((x / cell) as i64, (y / cell) as i64))
            .or_default()
            .push((x, y));
    }
    let hit = truth
        .iter()
        .filter(|t| {
            let (cx, cy) = ((t.x / cell) as i64, (t.y / cell) as i64);
            (cx - 1..=cx + 1).any(|gx| {
                (cy - 1..=cy + 1).any(|gy| {
                    grid.get(&(gx, gy))
                        .is_some_and(|v| v.iter().any(|(x, y)| (x - t.x).hypot(y - t.y) < 2.0))
                })
            })
        })
        .count();
    hit as f64 / truth.len().max(1) as f64
}

/// Stars of the truth at true SNR >= 10, away from edges and masked pixels.
fn truth_stars(
    data_dir: &Path,
    id: &crate::pipeline::run::DataId,
    e: &Exposure,
    zero_point: f64,
) -> Result<Vec<TruthStar>> {
    use arrow::array::AsArray;
    use arrow::datatypes::Float64Type;
    let path = data_dir
        .join("truth")
        .join("sources")
        .join(format!("{}_{}.parquet", id.visit, id.detector_name));
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let (w, h) = (e.width(), e.height());
    let psf = e
        .psf
        .as_ref()
        .context("no PSF")?
        .moments_at(w as f64 / 2.0, h as f64 / 2.0);
    let area = 4.0 * std::f64::consts::PI * psf.determinant_radius().powi(2);
    let mut sky: Vec<f32> = e.image().data().iter().step_by(97).copied().collect();
    sky.sort_by(f32::total_cmp);
    let sky = sky[sky.len() / 2] as f64;
    let bad = [
        aster_processing::image::MaskPlane::Bad,
        aster_processing::image::MaskPlane::Sat,
        aster_processing::image::MaskPlane::NoData,
    ];
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let f = |n: &str| {
            batch
                .column_by_name(n)
                .and_then(|c| c.as_primitive_opt::<Float64Type>())
                .cloned()
        };
        let (Some(x), Some(y), Some(flux)) = (f("x"), f("y"), f("flux")) else {
            bail!("{}: not a truth table", path.display());
        };
        let stars = batch
            .column_by_name("isStar")
            .map(|c| c.as_boolean().clone())
            .context("isStar")?;
        for i in 0..batch.num_rows() {
            let (xi, yi) = (x.value(i), y.value(i));
            if !stars.value(i)
                || xi < 10.0
                || yi < 10.0
                || xi > w as f64 - 10.0
                || yi > h as f64 - 10.0
            {
                continue;
            }
            if e.mask().any(xi.round() as usize, yi.round() as usize, &bad) {
                continue;
            }
            let counts = flux.value(i) * 10f64.powf(0.4 * (zero_point - 31.4));
            let snr = counts / (counts + area * sky.max(0.0)).sqrt();
            if snr >= 10.0 {
                out.push(TruthStar { x: xi, y: yi });
            }
        }
    }
    Ok(out)
}
