//! Running one TAP query: DALI parameters in, an encoded result stream out, with MAXREC
//! overflow, uploads, the query log and metrics. Shared by /sync and the async job runner.
use std::collections::HashMap;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use aster_archive::query::{QueryEngine, QueryError};
use aster_archive::querylog::{NewEntry, QueryLog};
use bytes::Bytes;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;

use super::upload::{self, PendingUpload, UploadSources};
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
    pub(super) fn all(&self, name: &str) -> impl Iterator<Item = &str> {
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
    pub uploads: Vec<PendingUpload>,
}

/// A problem with the request itself: answered as an error document (HTTP 400).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// Checks DALI/TAP parameters: LANG, QUERY, MAXREC, RESPONSEFORMAT, UPLOAD.
pub fn check_request(
    p: &TapParams,
    limits: &TapLimits,
    sources: &UploadSources,
) -> Result<QueryRequest, BadRequest> {
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
    let uploads = upload::parse(p, sources)?;
    Ok(QueryRequest {
        query,
        format,
        maxrec,
        uploads,
    })
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

/// Fetches the request's URL uploads, plans the query and begins its result document.
pub async fn start(
    engine: &QueryEngine,
    sources: &UploadSources,
    log: &QueryLog,
    who: Option<&crate::auth::Principal>,
    mode: &'static str,
    job_id: Option<&str>,
    req: QueryRequest,
) -> Result<(Encoding, Vec<u8>), QueryError> {
    let started = Instant::now();
    let log_id = log
        .start(NewEntry {
            owner: who.map(|p| p.user.as_str()),
            query: &req.query,
            mode,
            job_id,
        })
        .map_err(|e| tracing::warn!(error = %e, "query log"))
        .ok();
    // One row past MAXREC tells an overflow from an exact fit.
    let planned = match upload::resolve(req.uploads, sources).await {
        Ok(uploads) => {
            engine
                .execute(&req.query, uploads, Some(req.maxrec as usize + 1), who)
                .await
        }
        Err(e) => Err(QueryError::Execution(e)),
    };
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
