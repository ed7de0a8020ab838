//! `aster calib build`: the calibration products of every CCD in the data directory, from
//! its raw calibration exposures, in the order each needs the others: bias, dark, crosstalk
//! (projector spots), dome flats per filter, the monochromatic flat cube, the bad pixel
//! map, illumination corrections per filter and fringe frames for z and y (sky flats).
//! Products go to `calib/<type>/<detector>[_<band>].fits` with their provenance; a product
//! already there is kept, so an interrupted run resumes where it stopped.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use aster_archive::calib_file::{read_calibration, write_calibration};
use aster_archive::raw_file::{read_raw, read_raw_info};
use aster_archive::registry::Registry;
use aster_processing::calib::{
    CalibImage, CalibProduct, CalibType, CrosstalkMatrix, DefectMap, Stamp, build_bias, build_dark,
    build_defects, build_flat, build_fringe, build_illumination, build_mono_flat_cube,
    measure_crosstalk,
};
use aster_processing::camera::FRINGE_AMPLITUDE;
use aster_processing::isr::IsrCalibrations;
use aster_processing::raw::{ObsType, ObservationInfo, RawExposure, mjd_to_iso};
use aster_processing::sky::BANDS;

/// Every raw file under `raw/` with its metadata.
pub fn scan_raws(data_dir: &Path) -> Result<Vec<(PathBuf, ObservationInfo)>> {
    let root = data_dir.join("raw");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if dir == root && e.kind() == std::io::ErrorKind::NotFound => {
                bail!(
                    "{} holds no raw files: run `aster simulate` or ingest raws first",
                    root.display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "fits") {
                let info = read_raw_info(&path)?;
                out.push((path, info));
            }
        }
    }
    out.sort_by(|a, b| a.1.tai_start.total_cmp(&b.1.tai_start).then(a.0.cmp(&b.0)));
    Ok(out)
}

/// Where a product of `detector` (and `band`) lives.
pub fn product_path(
    data_dir: &Path,
    kind: CalibType,
    detector: &str,
    band: Option<usize>,
) -> PathBuf {
    let name = match band {
        Some(b) => format!("{detector}_{}.fits", BANDS[b]),
        None => format!("{detector}.fits"),
    };
    data_dir.join("calib").join(kind.name()).join(name)
}

/// Now, as ISO 8601 (UTC).
pub fn now_iso() -> String {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    mjd_to_iso(unix / 86_400.0 + 40_587.0)
}

pub fn stamp() -> Stamp {
    Stamp {
        software: format!("aster {}", env!("CARGO_PKG_VERSION")),
        created: now_iso(),
    }
}

/// Builds every missing product of every CCD, and records them in the registry with the
/// raws they came from (raws under raw/ not yet recorded are recorded first).
pub fn build_all(data_dir: &Path, registry: &Registry) -> Result<()> {
    let started = std::time::Instant::now();
    let raws = scan_raws(data_dir)?;
    crate::datasets::register_raws_in_place(registry, &raws)?;
    let mut detectors: BTreeMap<String, Vec<&(PathBuf, ObservationInfo)>> = BTreeMap::new();
    for r in &raws {
        if r.1.obs_type != ObsType::Science {
            detectors
                .entry(r.1.detector_name.clone())
                .or_default()
                .push(r);
        }
    }
    if detectors.is_empty() {
        bail!(
            "no calibration exposures under {}",
            data_dir.join("raw").display()
        );
    }
    let mut used = 0;
    let mut built = 0;
    for (name, files) in &detectors {
        let (n, b) = build_detector(data_dir, name, files)?;
        used += n;
        built += b;
    }
    println!(
        "{built} calibration products from {used} calibration exposures of {} CCDs in {:.1} s",
        detectors.len(),
        started.elapsed().as_secs_f64()
    );
    let (recorded, problems) = crate::datasets::register_calibrations(registry, data_dir)?;
    if !problems.is_empty() {
        bail!(
            "calibration products that cannot be recorded:\n{}",
            problems.join("\n")
        );
    }
    println!("{recorded} calibration products recorded in the dataset registry");
    Ok(())
}

/// Loads the raws of `files` that match.
fn load(
    files: &[&(PathBuf, ObservationInfo)],
    pick: impl Fn(&ObservationInfo) -> bool,
) -> Result<Vec<RawExposure>> {
    files
        .iter()
        .filter(|(_, i)| pick(i))
        .map(|(p, _)| read_raw(p).map_err(anyhow::Error::from))
        .collect()
}

/// Reads the product at `path` or builds and writes it. Returns it and whether it is new.
fn product(
    path: &Path,
    build: impl FnOnce() -> Result<CalibProduct>,
) -> Result<(CalibProduct, bool)> {
    if path.exists() {
        return Ok((read_calibration(path)?, false));
    }
    let p = build().with_context(|| format!("building {}", path.display()))?;
    std::fs::create_dir_all(path.parent().expect("calib/<type>"))?;
    write_calibration(path, &p)?;
    println!("  wrote {}", path.display());
    Ok((p, true))
}

fn refs(v: &[RawExposure]) -> Vec<&RawExposure> {
    v.iter().collect()
}

fn image(p: CalibProduct) -> Result<CalibImage> {
    match p {
        CalibProduct::Image(i) => Ok(i),
        _ => bail!("expected an image product"),
    }
}

fn build_detector(
    data_dir: &Path,
    det: &str,
    files: &[&(PathBuf, ObservationInfo)],
) -> Result<(usize, usize)> {
    let stamp = stamp();
    let mut built = 0;
    let mut used = 0;
    let count = |kind: ObsType| files.iter().filter(|(_, i)| i.obs_type == kind).count();
    let mut track = |(p, new): (CalibProduct, bool), n: usize| {
        if new {
            built += 1;
            used += n;
        }
        p
    };

    let raws = load(files, |i| i.obs_type == ObsType::Bias)?;
    let bias = image(track(
        product(&product_path(data_dir, CalibType::Bias, det, None), || {
            Ok(CalibProduct::Image(build_bias(&refs(&raws), &stamp)?))
        })?,
        raws.len(),
    ))?;
    let raws = load(files, |i| i.obs_type == ObsType::Dark)?;
    let dark = image(track(
        product(&product_path(data_dir, CalibType::Dark, det, None), || {
            Ok(CalibProduct::Image(build_dark(
                &refs(&raws),
                &bias,
                &stamp,
            )?))
        })?,
        raws.len(),
    ))?;
    let crosstalk: Option<CrosstalkMatrix> = match count(ObsType::Spot) {
        0 => None,
        _ => {
            let raws = load(files, |i| i.obs_type == ObsType::Spot)?;
            match track(
                product(
                    &product_path(data_dir, CalibType::Crosstalk, det, None),
                    || {
                        Ok(CalibProduct::Crosstalk(measure_crosstalk(
                            &refs(&raws),
                            &bias,
                            &stamp,
                        )?))
                    },
                )?,
                raws.len(),
            ) {
                CalibProduct::Crosstalk(c) => Some(c),
                _ => bail!("calib/crosstalk holds another kind of product"),
            }
        }
    };
    let mut flats: BTreeMap<usize, CalibImage> = BTreeMap::new();
    for band in 0..BANDS.len() {
        let pick = |i: &ObservationInfo| i.obs_type == ObsType::Flat && i.band == Some(band);
        if !files.iter().any(|(_, i)| pick(i)) {
            continue;
        }
        let raws = load(files, pick)?;
        let flat = image(track(
            product(
                &product_path(data_dir, CalibType::Flat, det, Some(band)),
                || {
                    Ok(CalibProduct::Image(build_flat(
                        &refs(&raws),
                        &bias,
                        &dark,
                        crosstalk.as_ref(),
                        &stamp,
                    )?))
                },
            )?,
            raws.len(),
        ))?;
        flats.insert(band, flat);
    }
    let mono = |i: &ObservationInfo| i.obs_type == ObsType::Flat && i.wavelength.is_some();
    if files.iter().any(|(_, i)| mono(i)) {
        let raws = load(files, mono)?;
        track(
            product(
                &product_path(data_dir, CalibType::MonoFlat, det, None),
                || {
                    Ok(CalibProduct::Cube(build_mono_flat_cube(
                        &refs(&raws),
                        &bias,
                        &dark,
                        crosstalk.as_ref(),
                        &stamp,
                    )?))
                },
            )?,
            raws.len(),
        );
    }
    // The bad pixel map from the dark and the reddest-but-one flat at hand (r if present).
    let reference_flat = flats
        .get(&2)
        .or_else(|| flats.values().next())
        .context("no dome flats: the bad pixel map needs one")?;
    let defects: DefectMap = match track(
        product(
            &product_path(data_dir, CalibType::Defects, det, None),
            || {
                Ok(CalibProduct::Defects(build_defects(
                    &dark,
                    reference_flat,
                    &stamp,
                )?))
            },
        )?,
        0,
    ) {
        CalibProduct::Defects(d) => d,
        _ => bail!("calib/defects holds another kind of product"),
    };
    for (&band, flat) in &flats {
        let pick = |i: &ObservationInfo| i.obs_type == ObsType::SkyFlat && i.band == Some(band);
        if files.iter().filter(|(_, i)| pick(i)).count() < 3 {
            continue;
        }
        let raws = load(files, pick)?;
        let base = IsrCalibrations {
            crosstalk: crosstalk.as_ref().map(|c| c.coefficients.as_slice()),
            bias: Some(bias.plane()),
            dark: Some(dark.plane()),
            flat: Some(flat.plane()),
            defects: Some(&defects.bits),
            ..Default::default()
        };
        let illumination = image(track(
            product(
                &product_path(data_dir, CalibType::Illumination, det, Some(band)),
                || {
                    Ok(CalibProduct::Image(build_illumination(
                        &refs(&raws),
                        &base,
                        &stamp,
                    )?))
                },
            )?,
            raws.len(),
        ))?;
        if FRINGE_AMPLITUDE[band] >= 0.01 {
            let calibs = IsrCalibrations {
                illumination: Some(illumination.plane()),
                ..base
            };
            track(
                product(
                    &product_path(data_dir, CalibType::Fringe, det, Some(band)),
                    || {
                        Ok(CalibProduct::Image(build_fringe(
                            &refs(&raws),
                            &calibs,
                            &stamp,
                        )?))
                    },
                )?,
                0,
            );
        }
    }
    Ok((used, built))
}
