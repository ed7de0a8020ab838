//! The Exposure catalog (DMS-REQ-0266, 0068): one row per raw exposure and CCD the archive
//! holds, with the metadata ingest extracted from its header (times in TAI, pointing and
//! telescope state, site conditions, camera state), published in TAP as
//! `archive.Exposure` beside `ivoa.ObsCore`.
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::{Dataset, DatasetType};
use crate::schema::meta;
use crate::tap_schema::{ColumnDesc, SchemaDesc, TableDesc};

pub const SCHEMA: &str = "archive";
pub const TABLE: &str = "Exposure";

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Long,
    Double,
}

/// (column, header card, kind, unit, UCD, description)
const COLUMNS: &[(&str, &str, Kind, &str, &str, &str)] = &[
    (
        "dataset_id",
        "",
        Kind::Text,
        "",
        "meta.id;meta.main",
        "The raw's dataset ID (DataLink ID, /files/{dataset_id})",
    ),
    (
        "obs_id",
        "OBSID",
        Kind::Text,
        "",
        "meta.id;obs",
        "Exposure name (all CCDs share it)",
    ),
    (
        "exposure",
        "EXPID",
        Kind::Long,
        "",
        "meta.id;obs",
        "Exposure number",
    ),
    (
        "img_type",
        "IMGTYPE",
        Kind::Text,
        "",
        "meta.code;obs",
        "BIAS, DARK, FLAT, SCIENCE, SKYFLAT or SPOT",
    ),
    (
        "visit",
        "VISIT",
        Kind::Long,
        "",
        "meta.id;obs",
        "Visit of a science exposure",
    ),
    (
        "snap",
        "SNAP",
        Kind::Long,
        "",
        "meta.number",
        "Snap within the visit (0 or 1)",
    ),
    (
        "detector",
        "DETECTOR",
        Kind::Long,
        "",
        "meta.id;instr.det",
        "CCD number",
    ),
    (
        "detector_name",
        "DETNAME",
        Kind::Text,
        "",
        "meta.id;instr.det",
        "CCD name",
    ),
    (
        "band",
        "FILTER",
        Kind::Text,
        "",
        "instr.bandpass",
        "Filter band",
    ),
    (
        "wavelength",
        "WAVELEN",
        Kind::Double,
        "nm",
        "em.wl",
        "Monochromator wavelength (monochromatic flats)",
    ),
    (
        "date_beg",
        "DATE-BEG",
        Kind::Text,
        "",
        "time.start;obs.exposure",
        "Shutter open (ISO 8601, TAI)",
    ),
    (
        "mjd_beg",
        "MJD-BEG",
        Kind::Double,
        "d",
        "time.start;obs.exposure",
        "Shutter open (MJD, TAI)",
    ),
    (
        "mjd_end",
        "MJD-END",
        Kind::Double,
        "d",
        "time.end;obs.exposure",
        "Shutter close (MJD, TAI)",
    ),
    (
        "exp_time",
        "EXPTIME",
        Kind::Double,
        "s",
        "time.duration;obs.exposure",
        "Exposure time",
    ),
    (
        "dark_time",
        "DARKTIME",
        Kind::Double,
        "s",
        "time.duration",
        "Dark time",
    ),
    (
        "dut1",
        "DUT1",
        Kind::Double,
        "s",
        "time.interval",
        "UT1 - UTC",
    ),
    (
        "tai_utc",
        "TAI-UTC",
        Kind::Double,
        "s",
        "time.interval",
        "TAI - UTC",
    ),
    (
        "ra",
        "RA",
        Kind::Double,
        "deg",
        "pos.eq.ra;instr.tel",
        "Telescope pointing as reported, right ascension",
    ),
    (
        "dec",
        "DEC",
        Kind::Double,
        "deg",
        "pos.eq.dec;instr.tel",
        "Telescope pointing as reported, declination",
    ),
    (
        "rot_pa",
        "ROTPA",
        Kind::Double,
        "deg",
        "pos.posAng;instr.tel",
        "Camera position angle",
    ),
    (
        "altitude",
        "ALTITUDE",
        Kind::Double,
        "deg",
        "pos.az.alt",
        "Telescope altitude",
    ),
    (
        "azimuth",
        "AZIMUTH",
        Kind::Double,
        "deg",
        "pos.az.azi",
        "Telescope azimuth",
    ),
    (
        "airmass",
        "AIRMASS",
        Kind::Double,
        "",
        "obs.airMass",
        "Airmass",
    ),
    (
        "focus_z",
        "FOCUSZ",
        Kind::Double,
        "um",
        "instr.param",
        "Camera hexapod focus offset",
    ),
    (
        "m1_temp",
        "M1TEMP",
        Kind::Double,
        "deg_C",
        "phys.temperature;instr.tel",
        "Primary mirror temperature",
    ),
    (
        "dome_az",
        "DOMEAZ",
        Kind::Double,
        "deg",
        "pos.az.azi;instr.tel",
        "Dome azimuth",
    ),
    (
        "seeing",
        "SEEING",
        Kind::Double,
        "arcsec",
        "instr.obsty.seeing",
        "Site seeing at zenith, 500 nm",
    ),
    (
        "transparency",
        "TRANSPAR",
        Kind::Double,
        "",
        "obs.atmos",
        "Sky transparency (0 to 1)",
    ),
    (
        "air_temp",
        "AIRTEMP",
        Kind::Double,
        "deg_C",
        "phys.temperature;obs.atmos",
        "Air temperature",
    ),
    (
        "pressure",
        "PRESSURE",
        Kind::Double,
        "hPa",
        "phys.pressure;obs.atmos",
        "Air pressure",
    ),
    (
        "humidity",
        "HUMIDITY",
        Kind::Double,
        "%",
        "obs.atmos",
        "Relative humidity",
    ),
    (
        "wind_speed",
        "WINDSPD",
        Kind::Double,
        "m/s",
        "obs.atmos",
        "Wind speed",
    ),
    (
        "wind_dir",
        "WINDDIR",
        Kind::Double,
        "deg",
        "obs.atmos",
        "Wind direction",
    ),
    (
        "ccd_temp",
        "CCDTEMP",
        Kind::Double,
        "deg_C",
        "phys.temperature;instr.det",
        "CCD temperature",
    ),
    (
        "cryo_temp",
        "CRYOTEMP",
        Kind::Double,
        "deg_C",
        "phys.temperature;instr",
        "Cryostat temperature",
    ),
    (
        "shutter_motion",
        "SHUTMOTN",
        Kind::Double,
        "s",
        "time.duration;instr",
        "Shutter blade travel time",
    ),
    (
        "file_size",
        "",
        Kind::Long,
        "byte",
        "phys.size;meta.file",
        "Size of the raw file",
    ),
    (
        "sha256",
        "",
        Kind::Text,
        "",
        "meta.checksum",
        "SHA-256 of the raw file",
    ),
];

pub fn exposure_schema() -> SchemaRef {
    Arc::new(Schema::new(
        COLUMNS
            .iter()
            .map(|&(name, _, kind, unit, ucd, description)| {
                let dt = match kind {
                    Kind::Text => DataType::Utf8,
                    Kind::Long => DataType::Int64,
                    Kind::Double => DataType::Float64,
                };
                let mut md = vec![
                    (meta::UCD.to_string(), ucd.to_string()),
                    (meta::DESCRIPTION.to_string(), description.to_string()),
                ];
                if !unit.is_empty() {
                    md.push((meta::UNIT.to_string(), unit.to_string()));
                }
                if matches!(kind, Kind::Text) {
                    md.push((meta::DATATYPE.to_string(), "char".to_string()));
                }
                Field::new(name, dt, name != "dataset_id").with_metadata(md.into_iter().collect())
            })
            .collect::<Vec<_>>(),
    ))
}

pub fn exposure_desc() -> SchemaDesc {
    let schema = exposure_schema();
    SchemaDesc {
        name: SCHEMA.into(),
        description: Some("The archive's holdings: raw exposures and their metadata".into()),
        tables: vec![TableDesc {
            name: format!("{SCHEMA}.{TABLE}"),
            description: Some(
                "Every raw exposure and CCD in the archive with the metadata of its header \
                 (DMS-REQ-0068): times in TAI, telescope pointing and state, site conditions, \
                 camera state; ivoa.ObsCore gives their footprints"
                    .into(),
            ),
            table_type: "table".into(),
            columns: schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| ColumnDesc::from_field(f, i < 12, f.name() == "dataset_id", false))
                .collect(),
            keys: Vec::new(),
        }],
    }
}

/// One row per raw among `datasets`.
pub fn exposure_batch(datasets: &[Dataset]) -> RecordBatch {
    let raws: Vec<&Dataset> = datasets
        .iter()
        .filter(|d| d.dataset_type == DatasetType::Raw)
        .collect();
    let card = |d: &Dataset, key: &str| -> Option<serde_json::Value> {
        d.metadata.as_ref()?.get(key).cloned()
    };
    let columns: Vec<ArrayRef> = COLUMNS
        .iter()
        .map(|&(name, key, kind, ..)| -> ArrayRef {
            match (name, kind) {
                ("dataset_id", _) => Arc::new(
                    raws.iter()
                        .map(|d| Some(d.id.clone()))
                        .collect::<StringArray>(),
                ),
                ("file_size", _) => Arc::new(
                    raws.iter()
                        .map(|d| Some(d.size as i64))
                        .collect::<Int64Array>(),
                ),
                ("sha256", _) => Arc::new(
                    raws.iter()
                        .map(|d| Some(d.checksum.clone()))
                        .collect::<StringArray>(),
                ),
                (_, Kind::Text) => Arc::new(
                    raws.iter()
                        .map(|d| card(d, key).and_then(|v| v.as_str().map(str::to_string)))
                        .collect::<StringArray>(),
                ),
                (_, Kind::Long) => Arc::new(
                    raws.iter()
                        .map(|d| card(d, key).and_then(|v| v.as_i64()))
                        .collect::<Int64Array>(),
                ),
                (_, Kind::Double) => Arc::new(
                    raws.iter()
                        .map(|d| card(d, key).and_then(|v| v.as_f64()))
                        .collect::<Float64Array>(),
                ),
            }
        })
        .collect();
    RecordBatch::try_new(exposure_schema(), columns).expect("columns follow the schema")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{DataId, formats};

    #[test]
    fn header_cards_fill_their_columns() {
        let d = Dataset {
            id: "raw.raw.7-R11".into(),
            dataset_type: DatasetType::Raw,
            collection: "raw".into(),
            data_id: DataId::default(),
            path: "raw/x.fits".into(),
            size: 10,
            checksum: "ab".into(),
            format: formats::FITS.into(),
            stored: true,
            created: String::new(),
            observation: None,
            provenance: None,
            metadata: Some(serde_json::json!({"EXPID": 7, "AIRMASS": 1.2, "IMGTYPE": "SCIENCE"})),
        };
        let b = exposure_batch(&[d]);
        assert_eq!(b.num_rows(), 1);
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        assert_eq!(
            col("exposure")
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0),
            7
        );
        assert_eq!(
            col("airmass")
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .value(0),
            1.2
        );
        assert!(col("visit").is_null(0));
        assert_eq!(exposure_desc().tables[0].columns.len(), COLUMNS.len());
    }
}
