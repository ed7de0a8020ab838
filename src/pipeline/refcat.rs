//! Reference catalogues for astrometric and photometric calibration, from any table file
//! Aster reads (Parquet, CSV, FITS binary table, VOTable). Columns are found by name,
//! in any case:
//! - `ra`, `dec` (degrees; also `ra_icrs`/`raj2000`, `dec_icrs`/`dej2000`), required;
//! - `id` or `source_id`, else the row number;
//! - `epoch` or `ref_epoch`, Julian years (2016.0 for Gaia DR3), else 2000.0;
//! - `pm_ra`/`pmra` (mas/yr, times cos dec), `pm_dec`/`pmdec`, `parallax` (mas), else 0;
//! - magnitudes: `<band>_mag` and `<band>_mag_err` for each of ugrizy (the simulator's
//!   catalogue), or a single `mag` with `mag_err`/`e_mag` in the band of the image.
use std::path::Path;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use aster_archive::formats::read_any;
use aster_processing::characterize::ReferenceStar;
use aster_processing::sky::BANDS;

/// Reads the reference catalogue at `path`. `band` is the band of the image being
/// calibrated, which a catalogue with a single `mag` column is taken to be in; None when
/// several bands are calibrated (then per-band columns are needed).
pub fn read_refcat(path: &Path, band: Option<usize>) -> Result<Vec<ReferenceStar>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let table = read_any(name, bytes.into())
        .with_context(|| format!("{}: reading the reference catalogue", path.display()))?;
    let mut out = Vec::new();
    for batch in &table.batches {
        stars(batch, band, out.len(), &mut out)
            .with_context(|| format!("{}: reference catalogue", path.display()))?;
    }
    if out.is_empty() {
        bail!("{}: the reference catalogue has no rows", path.display());
    }
    Ok(out)
}

/// A column by any of `names` (case-insensitive), as doubles.
fn column(batch: &RecordBatch, names: &[&str]) -> Result<Option<ArrayRef>> {
    let schema = batch.schema();
    let Some(index) = schema
        .fields()
        .iter()
        .position(|f| names.iter().any(|n| f.name().eq_ignore_ascii_case(n)))
    else {
        return Ok(None);
    };
    let field = schema.field(index);
    let cast =
        arrow::compute::cast(batch.column(index), &DataType::Float64).with_context(|| {
            format!(
                "column {} ({}) is not numeric",
                field.name(),
                field.data_type()
            )
        })?;
    Ok(Some(cast))
}

fn stars(
    batch: &RecordBatch,
    band: Option<usize>,
    first_row: usize,
    out: &mut Vec<ReferenceStar>,
) -> Result<()> {
    let required = |names: &[&str]| -> Result<ArrayRef> {
        column(batch, names)?.with_context(|| format!("no column {}", names.join(" or ")))
    };
    let ra = required(&["ra", "ra_icrs", "raj2000"])?;
    let dec = required(&["dec", "dec_icrs", "dej2000"])?;
    let id = column(batch, &["id", "source_id"])?;
    let epoch = column(batch, &["epoch", "ref_epoch"])?;
    let pm_ra = column(batch, &["pm_ra", "pmra"])?;
    let pm_dec = column(batch, &["pm_dec", "pmdec"])?;
    let parallax = column(batch, &["parallax"])?;
    // Per-band magnitudes, or one magnitude in the image's band.
    let mut mags: Vec<(usize, ArrayRef, Option<ArrayRef>)> = Vec::new();
    for (b, name) in BANDS.iter().enumerate() {
        if let Some(m) = column(batch, &[&format!("{name}_mag")])? {
            mags.push((b, m, column(batch, &[&format!("{name}_mag_err")])?));
        }
    }
    if let Some(m) = column(batch, &["mag"])? {
        let Some(b) = band else {
            bail!(
                "a single 'mag' column needs the band of the image; give per-band columns \
                 (u_mag ... y_mag) to calibrate several bands"
            );
        };
        mags.retain(|(mb, _, _)| *mb != b);
        mags.push((b, m, column(batch, &["mag_err", "e_mag", "magerr"])?));
    }
    if mags.is_empty() {
        bail!("no magnitude column (mag, or u_mag ... y_mag)");
    }
    let get = |c: &ArrayRef, i: usize| -> Option<f64> {
        let c = c.as_primitive::<Float64Type>();
        (c.is_valid(i) && c.value(i).is_finite()).then(|| c.value(i))
    };
    let or_zero =
        |c: &Option<ArrayRef>, i: usize| c.as_ref().and_then(|c| get(c, i)).unwrap_or(0.0);
    for i in 0..batch.num_rows() {
        let (Some(r), Some(d)) = (get(&ra, i), get(&dec, i)) else {
            continue;
        };
        if !(-90.0..=90.0).contains(&d) {
            bail!("row {}: dec {d} is outside [-90, 90]", first_row + i + 1);
        }
        let mut m = [None; 6];
        for (b, mag, err) in &mags {
            if let Some(v) = get(mag, i) {
                m[*b] = Some((v, err.as_ref().and_then(|e| get(e, i)).unwrap_or(0.0)));
            }
        }
        let epoch_year = epoch.as_ref().and_then(|e| get(e, i)).unwrap_or(2000.0);
        out.push(ReferenceStar {
            id: id
                .as_ref()
                .and_then(|c| get(c, i))
                .map_or((first_row + i) as i64, |v| v as i64),
            ra: r.rem_euclid(360.0),
            dec: d,
            // Julian years to MJD.
            epoch: 51_544.5 + (epoch_year - 2000.0) * 365.25,
            pm_ra: or_zero(&pm_ra, i),
            pm_dec: or_zero(&pm_dec, i),
            parallax: or_zero(&parallax, i),
            mags: m,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(tag: &str, name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("aster-refcat-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_csv_with_one_magnitude_is_in_the_images_band() {
        let path = write(
            "one-mag",
            "ref.csv",
            "RA,Dec,pmra,pmdec,ref_epoch,mag,mag_err\n10.5,-5.25,3.0,-4.0,2016.0,18.5,0.01\n11.0,-5.0,,,2016.0,19.0,\n",
        );
        let stars = read_refcat(&path, Some(3)).unwrap();
        assert_eq!(stars.len(), 2);
        assert_eq!(stars[0].mags[3], Some((18.5, 0.01)));
        assert_eq!(stars[0].mags[2], None);
        assert_eq!(stars[1].mags[3], Some((19.0, 0.0)));
        assert_eq!((stars[0].pm_ra, stars[0].pm_dec), (3.0, -4.0));
        assert_eq!(stars[1].pm_ra, 0.0);
        assert!((stars[0].epoch - 57_388.5).abs() < 1e-9);
        // Several bands cannot be calibrated from one magnitude.
        let err = read_refcat(&path, None).unwrap_err();
        assert!(format!("{err:#}").contains("single 'mag'"), "{err:#}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_fits_table_with_per_band_magnitudes_calibrates_every_band() {
        use std::sync::Arc;

        use arrow::array::{Float32Array, Float64Array, Int64Array};
        use arrow::datatypes::{Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("SOURCE_ID", DataType::Int64, false),
            Field::new("RA", DataType::Float64, false),
            Field::new("DEC", DataType::Float64, false),
            Field::new("g_mag", DataType::Float32, true),
            Field::new("r_mag", DataType::Float32, true),
            Field::new("r_mag_err", DataType::Float32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![7, 8])),
                Arc::new(Float64Array::from(vec![150.25, 150.5])),
                Arc::new(Float64Array::from(vec![2.5, 2.75])),
                Arc::new(Float32Array::from(vec![Some(19.5), None])),
                Arc::new(Float32Array::from(vec![19.0, 20.0])),
                Arc::new(Float32Array::from(vec![0.01, 0.02])),
            ],
        )
        .unwrap();
        let path = write("fits", "ref.fits", "");
        crate::tables::write_fits_table(&path, "REFCAT", &[batch]).unwrap();
        let stars = read_refcat(&path, None).unwrap();
        assert_eq!(stars.len(), 2);
        assert_eq!((stars[0].id, stars[1].id), (7, 8));
        assert_eq!(stars[0].mags[1], Some((19.5, 0.0)));
        assert_eq!(stars[1].mags[1], None);
        let (mag, err) = stars[1].mags[2].unwrap();
        assert!((mag - 20.0).abs() < 1e-6 && (err - 0.02).abs() < 1e-6);
        // No epoch: J2000.
        assert_eq!(stars[0].epoch, 51_544.5);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn catalogues_without_positions_or_magnitudes_are_refused_by_name() {
        for (n, (text, wanted)) in [
            ("x,y,mag\n1,2,3\n", "no column ra"),
            ("ra,dec\n1,2\n", "no magnitude column"),
            ("ra,dec,mag\n1,95,3\n", "outside [-90, 90]"),
            ("ra,dec,mag\n", "no rows"),
        ]
        .into_iter()
        .enumerate()
        {
            let path = write(&format!("bad{n}"), "bad.csv", text);
            let err = format!("{:#}", read_refcat(&path, Some(2)).unwrap_err());
            assert!(err.contains(wanted) && err.contains("bad.csv"), "{err}");
            std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
        }
    }
}
