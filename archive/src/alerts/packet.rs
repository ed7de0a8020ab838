//! The alert packet (DMS-REQ-0274): Rubin's published Avro schema, version 11.1
//! (`schemas/alert/11.1`, from PyPI lsst-alert-packet, built in), and alerts assembled from
//! rows already encoded under its diaSource, diaForcedSource, diaObject, ssSource and
//! mpc_orbits records, with cutouts. On Kafka an alert travels in the Confluent wire format: a zero byte and the
//! schema's registry id (1101 for 11.1, as lsst-alert-packet numbers them) before the body.
use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;

use super::avro::{
    AvroError, AvroType, Names, RecordSchema, RowEncoder, branch, write_bytes, write_long,
    write_null_branch,
};

/// The schema files, in dependency order (records before the records that use them).
const FILES: [&str; 6] = [
    include_str!("../../../schemas/alert/11.1/lsst.v11_1.diaSource.avsc"),
    include_str!("../../../schemas/alert/11.1/lsst.v11_1.diaForcedSource.avsc"),
    include_str!("../../../schemas/alert/11.1/lsst.v11_1.diaObject.avsc"),
    include_str!("../../../schemas/alert/11.1/lsst.v11_1.ssSource.avsc"),
    include_str!("../../../schemas/alert/11.1/lsst.v11_1.mpc_orbits.avsc"),
    include_str!("../../../schemas/alert/11.1/lsst.v11_1.alert.avsc"),
];

/// Which table a row comes from, and so which record it is encoded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertTable {
    DiaSource,
    DiaForcedSource,
    DiaObject,
    SsSource,
    MpcOrbits,
}

/// The parsed alert schema.
#[derive(Debug)]
pub struct AlertSchema {
    alert: Arc<RecordSchema>,
    dia_source: Arc<RecordSchema>,
    dia_forced_source: Arc<RecordSchema>,
    dia_object: Arc<RecordSchema>,
    ss_source: Arc<RecordSchema>,
    mpc_orbits: Arc<RecordSchema>,
    json: String,
}

/// What one alert holds; rows are encoded already (see [`AlertSchema::encode_rows`]).
#[derive(Debug, Default)]
pub struct AlertParts<'a> {
    pub dia_source_id: i64,
    pub dia_source: &'a [u8],
    pub prv_dia_sources: Vec<&'a [u8]>,
    pub prv_dia_forced_sources: Vec<&'a [u8]>,
    pub dia_object: Option<&'a [u8]>,
    /// For a DIASource of a known solar system object: its ephemeris and orbit.
    pub ss_source: Option<&'a [u8]>,
    pub mpc_orbits: Option<&'a [u8]>,
    pub cutout_difference: Option<&'a [u8]>,
    pub cutout_science: Option<&'a [u8]>,
    pub cutout_template: Option<&'a [u8]>,
}

impl AlertSchema {
    /// Version 11.1, parsed once.
    pub fn v11_1() -> Result<&'static AlertSchema, AvroError> {
        static SCHEMA: OnceLock<Result<AlertSchema, AvroError>> = OnceLock::new();
        SCHEMA
            .get_or_init(|| {
                let mut names = Names::default();
                for f in FILES {
                    names.parse(f)?;
                }
                let get = |n: &str| {
                    names
                        .record(&format!("lsst.v11_1.{n}"))
                        .ok_or_else(|| AvroError::Schema(format!("no record {n}")))
                };
                Ok(AlertSchema {
                    alert: get("alert")?,
                    dia_source: get("diaSource")?,
                    dia_forced_source: get("diaForcedSource")?,
                    dia_object: get("diaObject")?,
                    ss_source: get("ssSource")?,
                    mpc_orbits: get("mpc_orbits")?,
                    json: names.self_contained("lsst.v11_1.alert")?,
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The registry id of the schema in the Confluent wire format.
    pub const SCHEMA_ID: u32 = 1101;
    pub const VERSION: &'static str = "11.1";

    /// The alert schema as one self-contained JSON document (for container files).
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The alert record itself.
    pub fn alert_record(&self) -> &RecordSchema {
        &self.alert
    }

    pub fn record(&self, table: AlertTable) -> &RecordSchema {
        match table {
            AlertTable::DiaSource => &self.dia_source,
            AlertTable::DiaForcedSource => &self.dia_forced_source,
            AlertTable::DiaObject => &self.dia_object,
            AlertTable::SsSource => &self.ss_source,
            AlertTable::MpcOrbits => &self.mpc_orbits,
        }
    }

    /// Every row of `batch`, each encoded as a record of `table`'s kind.
    pub fn encode_rows(
        &self,
        table: AlertTable,
        batch: &RecordBatch,
    ) -> Result<Vec<Vec<u8>>, AvroError> {
        RowEncoder::new(self.record(table), batch)?.encode_all(batch.num_rows())
    }

    /// One alert's Avro body (no framing).
    pub fn encode_alert(&self, parts: &AlertParts) -> Result<Vec<u8>, AvroError> {
        let size = parts.dia_source.len() * (1 + parts.prv_dia_sources.len())
            + 128 * parts.prv_dia_forced_sources.len()
            + [
                parts.cutout_difference,
                parts.cutout_science,
                parts.cutout_template,
            ]
            .iter()
            .flatten()
            .map(|c| c.len() + 4)
            .sum::<usize>()
            + 1024;
        let mut out = Vec::with_capacity(size);
        for f in &self.alert.fields {
            let record = |out: &mut Vec<u8>, bytes: Option<&[u8]>, of: &RecordSchema| match bytes {
                None => write_null_branch(&f.ty, &f.name, out),
                Some(b) => {
                    let (i, _) = branch(
                        &f.ty,
                        &f.name,
                        |t| matches!(t, AvroType::Record(r) if r.name == of.name),
                    )?;
                    if let Some(i) = i {
                        write_long(out, i as i64);
                    }
                    out.extend_from_slice(b);
                    Ok(())
                }
            };
            let array = |out: &mut Vec<u8>, items: &[&[u8]], of: &RecordSchema| {
                let (i, _) = branch(
                    &f.ty,
                    &f.name,
                    |t| matches!(t, AvroType::Array(x) if matches!(&**x, AvroType::Record(r) if r.name == of.name)),
                )?;
                if let Some(i) = i {
                    write_long(out, i as i64);
                }
                if !items.is_empty() {
                    write_long(out, items.len() as i64);
                    items.iter().for_each(|b| out.extend_from_slice(b));
                }
                write_long(out, 0);
                Ok(())
            };
            let cutout = |out: &mut Vec<u8>, bytes: Option<&[u8]>| match bytes {
                None => write_null_branch(&f.ty, &f.name, out),
                Some(b) => {
                    let (i, _) = branch(&f.ty, &f.name, |t| *t == AvroType::Bytes)?;
                    if let Some(i) = i {
                        write_long(out, i as i64);
                    }
                    write_bytes(out, b);
                    Ok(())
                }
            };
            match f.name.as_str() {
                "diaSourceId" => {
                    branch(&f.ty, &f.name, |t| *t == AvroType::Long)?;
                    write_long(&mut out, parts.dia_source_id);
                }
                "diaSource" => record(&mut out, Some(parts.dia_source), &self.dia_source)?,
                "prvDiaSources" => array(&mut out, &parts.prv_dia_sources, &self.dia_source)?,
                "prvDiaForcedSources" => array(
                    &mut out,
                    &parts.prv_dia_forced_sources,
                    &self.dia_forced_source,
                )?,
                "diaObject" => record(&mut out, parts.dia_object, &self.dia_object)?,
                "ssSource" => record(&mut out, parts.ss_source, &self.ss_source)?,
                "mpc_orbits" => record(&mut out, parts.mpc_orbits, &self.mpc_orbits)?,
                "cutoutDifference" => cutout(&mut out, parts.cutout_difference)?,
                "cutoutScience" => cutout(&mut out, parts.cutout_science)?,
                "cutoutTemplate" => cutout(&mut out, parts.cutout_template)?,
                // What the chain does not produce (the scheduler's reason and target) is
                // null, which the schema must allow.
                _ => write_null_branch(&f.ty, &f.name, &mut out)?,
            }
        }
        Ok(out)
    }
}

/// The Confluent wire format of an alert body: magic byte 0 and the schema id, big-endian.
pub fn confluent_frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(0);
    out.extend_from_slice(&AlertSchema::SCHEMA_ID.to_be_bytes());
    out.extend_from_slice(body);
    out
}
