//! Running one TAP query: DALI parameters in, an encoded result stream out, with MAXREC
//! overflow, uploads, the query log and metrics. Shared by /sync and the async job runner.
use std::collections::HashMap;
use std::time::Instant;

use std::sync::Arc;

use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use aster_archive::formats::read_any;
use aster_archive::query::{QueryEngine, QueryError, Upload};
use aster_archive::querylog::{NewEntry, QueryLog};
use bytes::Bytes;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;

use crate::formats::{OutputFormat, QueryStatus, ResultInfo, TableEncoder, encoder};
use crate::metrics;

/// Limits of the TAP service.
#[derive(Debug, Clone)]
pub struct TapLimits {
    pub default_maxrec: u64,
    pub max_maxrec: u64,
    pub sync_timeout: std::time::Duration,
}

/// A TAP request's parameters, names upper-cased (DALI names are case-insensitive), and
/// the files that came with it as multipart parts.
#[derive(Debug, Default, Clone)]
pub struct TapParams {
    pub params: Vec<(String, String)>,
    pub files: HashMap<String, Bytes>,
}

impl TapParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A checked query, ready to run.
pub struct QueryRequest {
    pub query: String,
    pub format: OutputFormat,
    pub maxrec: u64,
    pub uploads: Vec<Upload>,
}

/// A problem with the request itself: answered as an error document (HTTP 400).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// Checks DALI/TAP parameters: LANG, QUERY, MAXREC, RESPONSEFORMAT, UPLOAD.
pub fn check_request(p: &TapParams, limits: &TapLimits) -> Result<QueryRequest, BadRequest> {
    if let Some(req) = p.get("REQUEST")
        && !req.eq_ignore_ascii_case("doQuery")
    {
        return Err(BadRequest(format!(
            "REQUEST={req} is not supported; use doQuery"
        )));
    }
    match p.get("LANG") {
        None => {
            return Err(BadRequest(
                "LANG is missing: this service takes LANG=ADQL".into(),
            ));
        }
        Some(l)
            if ["ADQL", "ADQL-2.0", "ADQL-2.1"]
                .iter()
                .any(|a| a.eq_ignore_ascii_case(l.trim())) => {}
        Some(l) => {
            return Err(BadRequest(format!(
                "LANG={l} is not supported; use LANG=ADQL"
            )));
        }
    }
    let query = p
        .get("QUERY")
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| BadRequest("QUERY is missing".into()))?
        .to_string();
    let maxrec = match p.get("MAXREC") {
        None => limits.default_maxrec,
        Some(m) => {
            let n: i64 = m
                .trim()
                .parse()
                .map_err(|_| BadRequest(format!("MAXREC={m} is not a non-negative integer")))?;
            if n < 0 {
                return Err(BadRequest(format!(
                    "MAXREC={m} is not a non-negative integer"
                )));
            }
            (n as u64).min(limits.max_maxrec)
        }
    };
    let format = match p.get("RESPONSEFORMAT").or_else(|| p.get("FORMAT")) {
        None => OutputFormat::VotableBinary2,
        Some(f) => OutputFormat::from_param(f)
            .ok_or_else(|| BadRequest(format!("RESPONSEFORMAT={f} is not supported")))?,
    };
    let mut uploads = Vec::new();
    for spec in p.all("UPLOAD") {
        for item in spec.split(';').filter(|s| !s.trim().is_empty()) {
            let (name, uri) = item
                .split_once(',')
                .ok_or_else(|| BadRequest(format!("UPLOAD={item}: expected name,param:part")))?;
            let name = name.trim();
            if name.is_empty()
                || !name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(BadRequest(format!(
                    "UPLOAD table name '{name}' is not a valid ADQL identifier"
                )));
            }
            let part = uri.trim().strip_prefix("param:").ok_or_else(|| {
                BadRequest(format!(
                    "UPLOAD {name}: only inline uploads (param:<part>) are accepted; this service does not fetch URLs"
                ))
            })?;
            let bytes = p.files.get(part).ok_or_else(|| {
                BadRequest(format!("UPLOAD {name}: no multipart part named '{part}'"))
            })?;
            let t = read_any(part, bytes.clone())
                .map_err(|e| BadRequest(format!("UPLOAD {name}: {e}")))?;
            let (schema, batches) = typed_timestamps(t.schema, t.batches);
            uploads.push(Upload {
                name: name.to_string(),
                schema,
                batches,
            });
        }
    }
    Ok(QueryRequest {
        query,
        format,
        maxrec,
        uploads,
    })
}

/// Uploaded text columns marked as DALI timestamps become timestamp columns, so queries
/// compare them as times and results declare them as timestamps again. Columns whose
/// values do not parse stay text.
fn typed_timestamps(schema: SchemaRef, batches: Vec<RecordBatch>) -> (SchemaRef, Vec<RecordBatch>) {
    let target = DataType::Timestamp(TimeUnit::Microsecond, None);
    let candidates: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            matches!(
                f.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) && f
                .metadata()
                .get("xtype")
                .is_some_and(|x| x.eq_ignore_ascii_case("timestamp"))
        })
        .map(|(i, _)| i)
        .collect();
    let convertible: Vec<usize> = candidates
        .into_iter()
        .filter(|&i| batches.iter().all(|b| cast(b.column(i), &target).is_ok()))
        .collect();
    if convertible.is_empty() {
        return (schema, batches);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if convertible.contains(&i) {
                f.as_ref().clone().with_data_type(target.clone())
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let new_schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let mut out = Vec::with_capacity(batches.len());
    for b in &batches {
        let cols: Result<Vec<_>, _> = b
            .columns()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if convertible.contains(&i) {
                    cast(c, &target)
                } else {
                    Ok(c.clone())
                }
            })
            .collect();
        match cols.and_then(|c| RecordBatch::try_new(new_schema.clone(), c)) {
            Ok(nb) => out.push(nb),
            Err(_) => return (schema, batches),
        }
    }
    (new_schema, out)
}

/// A planned, running query whose rows are being encoded.
pub struct Encoding {
    stream: SendableRecordBatchStream,
    encoder: Box<dyn TableEncoder>,
    maxrec: u64,
    rows: u64,
    log: QueryLog,
    log_id: Option<i64>,
    started: Instant,
    mode: &'static str,
    finished: bool,
    tail: bool,
    overflow: bool,
}

pub async fn start(
    engine: &QueryEngine,
    log: &QueryLog,
    owner: Option<&str>,
    mode: &'static str,
    job_id: Option<&str>,
    req: QueryRequest,
) -> Result<(Encoding, Vec<u8>), QueryError> {
    let started = Instant::now();
    let log_id = log
        .start(NewEntry {
            owner,
            query: &req.query,
            mode,
            job_id,
        })
        .map_err(|e| tracing::warn!(error = %e, "query log"))
        .ok();
    // One row past MAXREC tells an overflow from an exact fit.
    let planned = engine
        .execute(&req.query, req.uploads, Some(req.maxrec as usize + 1))
        .await;
    let stream = match planned {
        Ok(s) => s,
        Err(e) => {
            if let Some(id) = log_id {
                let _ = log.finish(
                    id,
                    started.elapsed().as_millis() as i64,
                    None,
                    "error",
                    Some(&e.to_string()),
                );
            }
            metrics::query_done(mode, "error", started.elapsed());
            return Err(e);
        }
    };
    let mut enc = encoder(req.format);
    let mut head = Vec::new();
    let info = ResultInfo {
        query: Some(req.query.clone()),
        table_name: "result".into(),
        extra_infos: vec![("request".into(), "doQuery".into())],
    };
    enc.begin(&stream.schema(), &info, &mut head)
        .map_err(|e| QueryError::Execution(e.to_string()))?;
    Ok((
        Encoding {
            stream,
            encoder: enc,
            maxrec: req.maxrec,
            rows: 0,
            log: log.clone(),
            log_id,
            started,
            mode,
            finished: false,
            tail: false,
            overflow: false,
        },
        head,
    ))
}

impl Encoding {
    /// The next chunk of encoded bytes, or None at the end. An error means the document
    /// cannot be completed (e.g. a CSV cannot carry a query error): the caller must not let
    /// what was sent pass for a whole result.
    pub async fn next_chunk(&mut self) -> Option<Result<Vec<u8>, String>> {
        let mut out = Vec::new();
        if self.tail {
            return match self.encoder.drain_tail(&mut out) {
                Ok(more) => (more || !out.is_empty()).then_some(Ok(out)),
                Err(e) => {
                    self.tail = false;
                    Some(Err(e.to_string()))
                }
            };
        }
        if self.finished {
            return None;
        }
        let status = match self.stream.next().await {
            Some(Ok(batch)) => {
                let encoded = match self.take(batch) {
                    Some(b) => self.encoder.batch(&b, &mut out).map_err(|e| e.to_string()),
                    None => Ok(()),
                };
                match encoded {
                    Err(e) => QueryStatus::Error(e),
                    Ok(()) if self.overflow => QueryStatus::Overflow,
                    Ok(()) => return Some(Ok(out)),
                }
            }
            Some(Err(e)) => QueryStatus::Error(QueryError::from(e).to_string()),
            None => QueryStatus::Ok,
        };
        Some(self.finish(&status, &mut out).map(|()| out))
    }

    /// Cuts a batch at MAXREC, noting the overflow; None when none of it fits.
    fn take(&mut self, batch: RecordBatch) -> Option<RecordBatch> {
        let n = batch.num_rows() as u64;
        let room = self.maxrec.saturating_sub(self.rows);
        if n <= room {
            self.rows += n;
            return Some(batch);
        }
        self.overflow = true;
        self.rows = self.maxrec;
        (room > 0).then(|| batch.slice(0, room as usize))
    }

    /// Ends the document with `status`, and records the outcome. Err when the format
    /// cannot end the document that way.
    pub fn finish(&mut self, status: &QueryStatus, out: &mut Vec<u8>) -> Result<(), String> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let ended = self.encoder.finish(status, out).map_err(|e| e.to_string());
        self.tail = ended.is_ok();
        let rows = self.rows;
        let (label, err) = match (status, &ended) {
            (QueryStatus::Error(e), _) => ("error", Some(e.as_str())),
            (_, Err(e)) => ("error", Some(e.as_str())),
            (QueryStatus::Ok, Ok(())) => ("ok", None),
            (QueryStatus::Overflow, Ok(())) => ("overflow", None),
        };
        if let Some(id) = self.log_id {
            let _ = self.log.finish(
                id,
                self.started.elapsed().as_millis() as i64,
                Some(rows as i64),
                label,
                err,
            );
        }
        metrics::query_done(self.mode, label, self.started.elapsed());
        ended
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }
}
