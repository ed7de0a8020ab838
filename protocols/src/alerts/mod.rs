//! Alerts over HTTP (DMS-REQ-0094, 0274): the alert archive queried by time, DIAObject and
//! solar system object (`GET /api/alerts?since=&until=&diaObjectId=&ssObjectId=&limit=`) and by id
//! (`GET /api/alerts/{alertId}`), and where the live streams are (`GET /api/alerts/streams`);
//! alerts are answered as an Avro object container file with
//! Rubin's alert schema in its header, streamed block by block from the archive's files.
//!
//! `distribute.rs` follows the archive for each distribution sink: `kafka.rs` (Kafka
//! topics in the Confluent wire format) and `voevent.rs` (VOEvent 2.0 over VTP).
//! `filter.rs` is the filtering service's engine and `stream.rs` its HTTP side (filters,
//! Server-Sent Events).
pub mod distribute;
pub mod filter;
pub mod kafka;
mod stream;
pub mod voevent;
use aster_archive::alerts::avro::{container_block, container_header};
use aster_archive::alerts::{AlertArchive, AlertQuery, AlertRef, AlertSchema};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;

/// Alerts a listing returns when no limit is given, and the most it may ask for.
const DEFAULT_LIMIT: usize = 1_000;
const MAX_LIMIT: usize = 100_000;
/// Alerts per container block in a listing.
const BLOCK: usize = 32;
pub const AVRO_CONTENT_TYPE: &str = "application/avro";

#[derive(Clone)]
pub struct AlertService {
    archive: AlertArchive,
    /// Where the alert streams are (Kafka brokers and topic, VOEvent broker), for clients.
    streams: std::sync::Arc<serde_json::Value>,
    hub: Option<filter::FilterHub>,
}

impl AlertService {
    pub fn new(archive: AlertArchive) -> Self {
        Self {
            archive,
            streams: Default::default(),
            hub: None,
        }
    }

    /// Runs the filtering service on the archive (needs a Tokio runtime).
    pub fn with_filtering(mut self) -> Result<Self, aster_archive::alerts::AlertArchiveError> {
        self.hub = Some(filter::FilterHub::start(self.archive.clone())?);
        Ok(self)
    }

    pub fn with_streams(mut self, streams: serde_json::Value) -> Self {
        self.streams = std::sync::Arc::new(streams);
        self
    }
}

pub fn router(s: AlertService) -> Router {
    Router::new()
        .route("/api/alerts", get(list))
        .route("/api/alerts/streams", get(streams))
        .route("/api/alerts/stream", get(stream::ad_hoc))
        .route("/api/filters", get(stream::list).post(stream::create))
        .route("/api/filters/{id}", axum::routing::delete(stream::delete))
        .route("/api/filters/{id}/stream", get(stream::saved_stream))
        .route("/api/alerts/{alert_id}", get(one))
        .with_state(s)
}

/// The alert streams a client can follow, and the schema their alerts carry.
async fn streams(State(s): State<AlertService>) -> Response {
    let mut doc = serde_json::json!({
        "schema": {
            "name": "lsst.v11_1.alert",
            "version": AlertSchema::VERSION,
            "id": AlertSchema::SCHEMA_ID,
        },
        "archive": "/api/alerts",
        "filters": "/api/filters",
        "sse": "/api/alerts/stream?filter=<ADQL condition>",
    });
    if let Some(d) = doc.as_object_mut() {
        if let Some(streams) = s.streams.as_object() {
            d.extend(streams.clone());
        }
        if let Some(hub) = &s.hub {
            d.insert("subscribers".into(), hub.subscribers().into());
        }
    }
    axum::Json(doc).into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    text(StatusCode::BAD_REQUEST, message)
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "alert archive");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the alert archive failed: {e}"),
    )
}

/// A time parameter: an MJD (TAI) number, or an ISO 8601 UTC date and time.
fn time(name: &str, v: &str) -> Result<f64, String> {
    if let Ok(mjd) = v.trim().parse::<f64>()
        && mjd.is_finite()
    {
        return Ok(mjd);
    }
    aster_processing::raw::iso_to_mjd(v)
        .map(|utc| utc + 37.0 / 86_400.0)
        .ok_or_else(|| {
            format!(
                "{name}: '{v}' is neither an MJD nor an ISO 8601 time (such as 2025-12-01T03:00:00Z)"
            )
        })
}

/// The listing's parameters; the error is the message of a 400.
fn parse_query(params: &[(String, String)]) -> Result<AlertQuery, String> {
    let mut q = AlertQuery {
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    let mut seen = std::collections::HashSet::new();
    for (k, v) in params {
        if !seen.insert(k.as_str()) {
            return Err(format!("{k} is given more than once"));
        }
        match k.as_str() {
            "since" => q.since_mjd = Some(time(k, v)?),
            "until" => q.until_mjd = Some(time(k, v)?),
            "diaObjectId" => {
                q.dia_object_id = Some(
                    v.trim()
                        .parse()
                        .map_err(|_| format!("diaObjectId: '{v}' is not an integer"))?,
                )
            }
            "ssObjectId" => {
                q.ss_object_id = Some(
                    v.trim()
                        .parse()
                        .map_err(|_| format!("ssObjectId: '{v}' is not an integer"))?,
                )
            }
            "limit" => {
                q.limit = match v.trim().parse::<usize>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                    _ => {
                        return Err(format!(
                            "limit: '{v}' is not a whole number from 1 to {MAX_LIMIT}"
                        ));
                    }
                }
            }
            _ => {
                return Err(format!(
                    "unknown parameter {k}: the parameters are since, until, diaObjectId, ssObjectId and limit"
                ));
            }
        }
    }
    if let (Some(a), Some(b)) = (q.since_mjd, q.until_mjd)
        && a >= b
    {
        return Err("since must be before until".into());
    }
    Ok(q)
}

async fn list(
    State(s): State<AlertService>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let q = match parse_query(&params) {
        Ok(q) => q,
        Err(m) => return bad_request(m),
    };
    let archive = s.archive.clone();
    match tokio::task::spawn_blocking(move || archive.find(&q)).await {
        Ok(Ok(refs)) => container(s.archive, refs, "alerts.avro"),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

async fn one(State(s): State<AlertService>, Path(id): Path<String>) -> Response {
    let Ok(alert_id) = id.parse::<i64>() else {
        return bad_request(format!("'{id}' is not an alert id (an integer)"));
    };
    let archive = s.archive.clone();
    match tokio::task::spawn_blocking(move || archive.get(alert_id)).await {
        Ok(Ok(Some(r))) => container(s.archive, vec![r], &format!("alert-{alert_id}.avro")),
        Ok(Ok(None)) => text(
            StatusCode::NOT_FOUND,
            format!("no alert {alert_id} in the archive"),
        ),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// An object container file of `refs`, streamed: the header, then blocks read from the
/// archive as the client takes them.
fn container(archive: AlertArchive, refs: Vec<AlertRef>, filename: &str) -> Response {
    let schema = match AlertSchema::v11_1() {
        Ok(s) => s,
        Err(e) => return internal(e),
    };
    let sync = *uuid::Uuid::new_v4().as_bytes();
    let header = Bytes::from(container_header(schema.json(), &sync));
    let chunks: Vec<Vec<AlertRef>> = refs.chunks(BLOCK).map(<[AlertRef]>::to_vec).collect();
    let blocks = futures::stream::iter(chunks).then(move |chunk| {
        let archive = archive.clone();
        async move {
            let bodies = tokio::task::spawn_blocking(move || {
                chunk
                    .iter()
                    .map(|r| archive.read(r))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)?;
            let mut out = Vec::new();
            container_block(bodies.iter().map(Vec::as_slice), &sync, &mut out);
            Ok::<_, std::io::Error>(Bytes::from(out))
        }
    });
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(header) }).chain(blocks);
    (
        [
            (header::CONTENT_TYPE, AVRO_CONTENT_TYPE.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
