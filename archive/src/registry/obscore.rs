//! The registry's images as IVOA ObsCore 1.1 rows (`ivoa.ObsCore` in TAP, and the records
//! SIAv2 returns): every mandatory column with its UCD, utype and unit, the footprint as a
//! DALI polygon, and access_url pointing at DataLink.
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use aster_adql::geometry::SkyPosition;

use super::{Dataset, FACILITY};
use crate::schema::meta;
use crate::tap_schema::{ColumnDesc, SchemaDesc, TableDesc};

pub const SCHEMA: &str = "ivoa";
pub const TABLE: &str = "ObsCore";
/// MIME type of a DataLink links document (DataLink 1.1 section 3.3).
pub const DATALINK_FORMAT: &str = "application/x-votable+xml;content=datalink";

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
    Long,
    Double,
    /// An STC-S string (`Polygon ICRS ...`), as ObsCore 1.1 and taplint want s_region.
    Region,
}

/// (name, kind, unit, UCD, utype suffix after `obscore:`, description)
const COLUMNS: &[(&str, Kind, &str, &str, &str, &str)] = &[
    (
        "dataproduct_type",
        Kind::Text,
        "",
        "meta.code.class",
        "ObsDataset.dataProductType",
        "Data product type: image",
    ),
    (
        "dataproduct_subtype",
        Kind::Text,
        "",
        "meta.code.class",
        "ObsDataset.dataProductSubtype",
        "What image: raw, pvi, bias, dark, flat, illumination, fringe, defects, diffim, coadd",
    ),
    (
        "calib_level",
        Kind::Int,
        "",
        "meta.code;obs.calib",
        "ObsDataset.calibLevel",
        "Calibration level: 1 raw, 2 calibrated, 3 combined",
    ),
    (
        "obs_collection",
        Kind::Text,
        "",
        "meta.id",
        "DataID.collection",
        "Collection: raw, calib or the processing run",
    ),
    (
        "obs_id",
        Kind::Text,
        "",
        "meta.id",
        "DataID.observationID",
        "The exposure the data come from",
    ),
    (
        "obs_publisher_did",
        Kind::Text,
        "",
        "meta.ref.ivoid",
        "Curation.publisherDID",
        "Identifier of the dataset (IVOA URI)",
    ),
    (
        "access_url",
        Kind::Text,
        "",
        "meta.ref.url",
        "Access.reference",
        "DataLink document of the dataset",
    ),
    (
        "access_format",
        Kind::Text,
        "",
        "meta.code.mime",
        "Access.format",
        "Format of what access_url returns",
    ),
    (
        "access_estsize",
        Kind::Long,
        "kbyte",
        "phys.size;meta.file",
        "Access.size",
        "Size of the dataset's file",
    ),
    (
        "target_name",
        Kind::Text,
        "",
        "meta.id;src",
        "Target.name",
        "Target of the observation, if any",
    ),
    (
        "s_ra",
        Kind::Double,
        "deg",
        "pos.eq.ra",
        "Char.SpatialAxis.Coverage.Location.Coord.Position2D.Value2.C1",
        "Right ascension of the image centre (ICRS)",
    ),
    (
        "s_dec",
        Kind::Double,
        "deg",
        "pos.eq.dec",
        "Char.SpatialAxis.Coverage.Location.Coord.Position2D.Value2.C2",
        "Declination of the image centre (ICRS)",
    ),
    (
        "s_fov",
        Kind::Double,
        "deg",
        "phys.angSize;instr.fov",
        "Char.SpatialAxis.Coverage.Bounds.Extent.diameter",
        "Diameter of the circle about the centre that holds the image",
    ),
    (
        "s_region",
        Kind::Region,
        "",
        "pos.outline;obs.field",
        "Char.SpatialAxis.Coverage.Support.Area",
        "Footprint of the image (ICRS)",
    ),
    (
        "s_resolution",
        Kind::Double,
        "arcsec",
        "pos.angResolution",
        "Char.SpatialAxis.Resolution.Refval.value",
        "FWHM of the PSF",
    ),
    (
        "s_xel1",
        Kind::Long,
        "",
        "meta.number",
        "Char.SpatialAxis.numBins1",
        "Pixels along the first axis",
    ),
    (
        "s_xel2",
        Kind::Long,
        "",
        "meta.number",
        "Char.SpatialAxis.numBins2",
        "Pixels along the second axis",
    ),
    (
        "t_xel",
        Kind::Long,
        "",
        "meta.number",
        "Char.TimeAxis.numBins",
        "Samples along the time axis",
    ),
    (
        "t_min",
        Kind::Double,
        "d",
        "time.start;obs.exposure",
        "Char.TimeAxis.Coverage.Bounds.Limits.StartTime",
        "Start of the exposure (MJD)",
    ),
    (
        "t_max",
        Kind::Double,
        "d",
        "time.end;obs.exposure",
        "Char.TimeAxis.Coverage.Bounds.Limits.StopTime",
        "End of the exposure (MJD)",
    ),
    (
        "t_exptime",
        Kind::Double,
        "s",
        "time.duration;obs.exposure",
        "Char.TimeAxis.Coverage.Support.Extent",
        "Total exposure time",
    ),
    (
        "t_resolution",
        Kind::Double,
        "s",
        "time.resolution",
        "Char.TimeAxis.Resolution.Refval.value",
        "Time resolution (the exposure time)",
    ),
    (
        "em_xel",
        Kind::Long,
        "",
        "meta.number",
        "Char.SpectralAxis.numBins",
        "Samples along the spectral axis",
    ),
    (
        "em_min",
        Kind::Double,
        "m",
        "em.wl;stat.min",
        "Char.SpectralAxis.Coverage.Bounds.Limits.LoLimit",
        "Shortest wavelength of the filter",
    ),
    (
        "em_max",
        Kind::Double,
        "m",
        "em.wl;stat.max",
        "Char.SpectralAxis.Coverage.Bounds.Limits.HiLimit",
        "Longest wavelength of the filter",
    ),
    (
        "em_res_power",
        Kind::Double,
        "",
        "spect.resolution",
        "Char.SpectralAxis.Resolution.ResolPower.refVal",
        "Spectral resolving power of the filter",
    ),
    (
        "o_ucd",
        Kind::Text,
        "",
        "meta.ucd",
        "Char.ObservableAxis.ucd",
        "What the pixels measure",
    ),
    (
        "pol_xel",
        Kind::Long,
        "",
        "meta.number",
        "Char.PolarizationAxis.numBins",
        "Polarization states",
    ),
    (
        "pol_states",
        Kind::Text,
        "",
        "meta.code;phys.polarization",
        "Char.PolarizationAxis.stateList",
        "Polarization states (none)",
    ),
    (
        "facility_name",
        Kind::Text,
        "",
        "meta.id;instr.tel",
        "Provenance.ObsConfig.Facility.name",
        "The telescope",
    ),
    (
        "instrument_name",
        Kind::Text,
        "",
        "meta.id;instr",
        "Provenance.ObsConfig.Instrument.name",
        "The camera",
    ),
];

/// The ObsCore columns as Arrow fields carrying their TAP metadata.
pub fn obscore_schema() -> SchemaRef {
    let fields: Vec<Field> = COLUMNS
        .iter()
        .map(|&(name, kind, unit, ucd, utype, description)| {
            let dt = match kind {
                Kind::Text | Kind::Region => DataType::Utf8,
                Kind::Int => DataType::Int32,
                Kind::Long => DataType::Int64,
                Kind::Double => DataType::Float64,
            };
            let mut md = vec![
                (meta::UCD, ucd.to_string()),
                (meta::UTYPE, format!("obscore:{utype}")),
                (meta::DESCRIPTION, description.to_string()),
                (meta::STD, "1".to_string()),
                (meta::PRINCIPAL, "1".to_string()),
            ];
            if !unit.is_empty() {
                md.push((meta::UNIT, unit.to_string()));
            }
            if matches!(kind, Kind::Text | Kind::Region) {
                md.push((meta::DATATYPE, "char".to_string()));
            }
            let nullable = !matches!(
                name,
                "dataproduct_type"
                    | "calib_level"
                    | "obs_collection"
                    | "obs_id"
                    | "obs_publisher_did"
            );
            Field::new(name, dt, nullable)
                .with_metadata(md.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// TAP_SCHEMA's description of ivoa.ObsCore.
pub fn obscore_desc() -> SchemaDesc {
    let schema = obscore_schema();
    SchemaDesc {
        name: SCHEMA.into(),
        description: Some("IVOA data models: the ObsCore 1.1 table of every image".into()),
        tables: vec![TableDesc {
            name: format!("{SCHEMA}.{TABLE}"),
            description: Some(
                "Every image of the archive (raws, calibration products, processed visit \
                 images, difference images, coadds) described by the IVOA ObsCore 1.1 model; \
                 access_url gives the DataLink document of each"
                    .into(),
            ),
            table_type: "table".into(),
            columns: schema
                .fields()
                .iter()
                .map(|f| {
                    let indexed =
                        matches!(f.name().as_str(), "s_ra" | "s_dec" | "obs_publisher_did");
                    ColumnDesc::from_field(f, true, indexed, true)
                })
                .collect(),
            keys: Vec::new(),
        }],
    }
}

/// The DataLink URL of a dataset under `links_endpoint` (e.g. `https://host/datalink/links`).
pub fn datalink_url(links_endpoint: &str, d: &Dataset) -> String {
    format!(
        "{links_endpoint}?ID={}",
        url::form_urlencoded::byte_serialize(d.publisher_did().as_bytes()).collect::<String>()
    )
}

/// A footprint as STC-S (`Polygon ICRS ra1 dec1 ...`), the form ObsCore's s_region takes.
pub fn stc_s(footprint: &[SkyPosition]) -> Option<String> {
    (footprint.len() >= 3).then(|| {
        let mut s = String::from("Polygon ICRS");
        for p in footprint {
            s.push_str(&format!(" {:.7} {:.7}", p.ra(), p.dec()));
        }
        s
    })
}

/// ObsCore rows of the datasets that have an observation.
pub fn obscore_batch(datasets: &[Dataset], links_endpoint: &str) -> RecordBatch {
    let rows: Vec<&Dataset> = datasets
        .iter()
        .filter(|d| d.observation.is_some())
        .collect();
    let obs = |d: &Dataset| d.observation.clone().expect("filtered above");
    let text = |f: &dyn Fn(&Dataset) -> Option<String>| -> ArrayRef {
        Arc::new(rows.iter().map(|d| f(d)).collect::<StringArray>())
    };
    let double = |f: &dyn Fn(&Dataset) -> Option<f64>| -> ArrayRef {
        Arc::new(
            rows.iter()
                .map(|d| f(d).filter(|v| v.is_finite()))
                .collect::<Float64Array>(),
        )
    };
    let long = |f: &dyn Fn(&Dataset) -> Option<i64>| -> ArrayRef {
        Arc::new(rows.iter().map(|d| f(d)).collect::<Int64Array>())
    };
    let schema = obscore_schema();
    let columns: Vec<ArrayRef> = vec![
        text(&|_| Some("image".into())),
        text(&|d| Some(d.dataset_type.subtype().into())),
        Arc::new(
            rows.iter()
                .map(|d| Some(d.dataset_type.calib_level()))
                .collect::<Int32Array>(),
        ),
        text(&|d| Some(d.collection.clone())),
        text(&|d| Some(obs(d).obs_id)),
        text(&|d| Some(d.publisher_did())),
        text(&|d| Some(datalink_url(links_endpoint, d))),
        text(&|_| Some(DATALINK_FORMAT.into())),
        long(&|d| Some(d.size.div_ceil(1024) as i64)),
        text(&|d| obs(d).target_name),
        double(&|d| obs(d).centre().map(|c| c.ra())),
        double(&|d| obs(d).centre().map(|c| c.dec())),
        double(&|d| obs(d).fov()),
        text(&|d| stc_s(&obs(d).footprint)),
        double(&|d| obs(d).resolution),
        long(&|d| Some(obs(d).pixels.0)),
        long(&|d| Some(obs(d).pixels.1)),
        long(&|_| Some(1)),
        double(&|d| Some(obs(d).t_min)),
        double(&|d| Some(obs(d).t_max)),
        double(&|d| Some(obs(d).exptime)),
        double(&|d| Some(obs(d).exptime)),
        long(&|_| Some(1)),
        double(&|d| obs(d).em_min),
        double(&|d| obs(d).em_max),
        double(&|d| {
            let o = obs(d);
            Some((o.em_min? + o.em_max?) / 2.0 / (o.em_max? - o.em_min?))
        }),
        text(&|_| Some("phot.flux.density;em.opt".into())),
        long(&|_| Some(0)),
        text(&|_| None),
        text(&|_| Some(FACILITY.into())),
        text(&|d| Some(d.data_id.instrument.clone())),
    ];
    RecordBatch::try_new(schema, columns).expect("columns follow the schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_has_a_value_array_and_tap_metadata() {
        let b = obscore_batch(&[], "http://h/datalink/links");
        assert_eq!(b.num_columns(), COLUMNS.len());
        let desc = obscore_desc();
        let t = &desc.tables[0];
        let col = |n: &str| t.columns.iter().find(|c| c.name == n).unwrap();
        assert_eq!(col("s_region").datatype, "char");
        assert_eq!(col("s_region").unit, None);
        assert_eq!(
            col("obs_publisher_did").utype.as_deref(),
            Some("obscore:Curation.publisherDID")
        );
        assert_eq!(col("dataproduct_type").datatype, "char");
    }
}
