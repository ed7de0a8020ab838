//! The filtering service over HTTP (DMS-REQ-0342, 0343, 0348):
//! - `GET /api/alerts/stream?filter=<condition>` or `?predefined=<name>`: the alerts that
//!   pass, as Server-Sent Events (`event: alert`, `id:` the archive's sequence number,
//!   `data:` JSON with the Avro alert in base64); `Last-Event-ID` (or `after=`) resumes
//!   after an event, from the archive;
//! - `GET /api/filters`: the predefined filters, and the caller's own;
//! - `POST /api/filters` (`name`, and `filter` or `predefined`; JSON or form): saves a filter
//!   for the signed-in caller; `DELETE /api/filters/{id}`;
//! - `GET /api/filters/{id}/stream`: a saved filter's stream, for its owner.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use aster_archive::alerts::StoredFilter;
use aster_archive::identity::Principal;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::AlertService;
use super::filter::{Filter, PREDEFINED};
use crate::auth::{may_write, signed_in};
use crate::body::JsonOrForm;

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    super::text(status, message)
}

/// Where a stream resumes: `Last-Event-ID`, else `after`.
fn resume_point(headers: &HeaderMap, after: Option<&str>) -> Result<Option<i64>, String> {
    let given = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(after);
    match given.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .map(Some)
            .map_err(|_| format!("'{v}' is not an event id to resume after (an integer)")),
    }
}

/// The SSE stream of `filter`: what the archive holds after the resume point
/// (`Last-Event-ID`, else the `after` parameter) first, then live.
async fn stream(
    s: &AlertService,
    filter: Filter,
    headers: &HeaderMap,
    after: Option<&str>,
) -> Response {
    let Some(hub) = s.hub.clone() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the filtering service is not running",
        );
    };
    let after = match resume_point(headers, after) {
        Ok(a) => a,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    let filter = Arc::new(filter);
    let subscription = hub.subscribe(filter.clone());
    let position = subscription.position;
    let backlog = match after {
        Some(a) if a < position => match hub.backlog(&filter, a, position).await {
            Ok(b) => b,
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
        _ => Vec::new(),
    };
    let floor = after.unwrap_or(0).max(position);
    let live = futures::stream::unfold(subscription, |mut s| async move {
        s.queue.recv().await.map(|e| (e, s))
    })
    .filter(move |e| std::future::ready(e.alert.seq > floor));
    let events = futures::stream::iter(backlog)
        .chain(live)
        .map(|e| {
            SseEvent::default()
                .id(e.alert.seq.to_string())
                .event("alert")
                .data(&e.data)
        })
        // The live queue ends only when the hub cut this subscriber off for falling behind.
        .chain(futures::stream::once(async {
            SseEvent::default().event("error").data(
                "this stream fell too far behind and was ended: reconnect with Last-Event-ID to resume",
            )
        }))
        .map(Ok::<_, Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(serde::Deserialize)]
pub(super) struct StreamParams {
    filter: Option<String>,
    predefined: Option<String>,
    after: Option<String>,
}

async fn compiled(filter: Option<&str>, predefined: Option<&str>) -> Result<Filter, Response> {
    let r = match (filter, predefined) {
        (Some(f), None) => Filter::compile(f).await,
        (None, Some(p)) => Filter::predefined(p).await,
        _ => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "give one of filter (an ADQL condition over diaSource and diaObject) and predefined (a name from /api/filters)",
            ));
        }
    };
    r.map_err(|e| text(StatusCode::BAD_REQUEST, e.to_string()))
}

pub(super) async fn ad_hoc(
    State(s): State<AlertService>,
    Query(p): Query<StreamParams>,
    headers: HeaderMap,
) -> Response {
    match compiled(p.filter.as_deref(), p.predefined.as_deref()).await {
        Ok(f) => stream(&s, f, &headers, p.after.as_deref()).await,
        Err(r) => r,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, aster_archive::alerts::AlertArchiveError> + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn described(f: &StoredFilter) -> serde_json::Value {
    serde_json::json!({
        "id": f.id,
        "name": f.name,
        "filter": f.expression,
        "created": f.created,
        "stream": format!("/api/filters/{}/stream", f.id),
    })
}

pub(super) async fn list(
    State(s): State<AlertService>,
    p: Option<Extension<Principal>>,
) -> Response {
    let predefined: Vec<serde_json::Value> = PREDEFINED
        .iter()
        .map(|(name, about, filter)| {
            serde_json::json!({
                "name": name,
                "description": about,
                "filter": filter,
                "stream": format!("/api/alerts/stream?predefined={name}"),
            })
        })
        .collect();
    let mine = match p {
        Some(Extension(p)) => {
            let archive = s.archive.clone();
            let user = p.user.to_string();
            match blocking(move || archive.filters(&user)).await {
                Ok(f) => f.iter().map(described).collect(),
                Err(r) => return r,
            }
        }
        None => Vec::new(),
    };
    axum::Json(serde_json::json!({ "predefined": predefined, "mine": mine })).into_response()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewFilter {
    name: Option<String>,
    filter: Option<String>,
    predefined: Option<String>,
}

pub(super) async fn create(
    State(s): State<AlertService>,
    p: Option<Extension<Principal>>,
    JsonOrForm(new): JsonOrForm<NewFilter>,
) -> Response {
    let p = match may_write(p.as_deref(), "saving alert filters") {
        Ok(p) => p.clone(),
        Err(d) => return d.into_response(),
    };
    let name = new.name.unwrap_or_default();
    let name = name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return text(
            StatusCode::BAD_REQUEST,
            "name: 1 to 64 letters, digits, '-', '_' or '.'",
        );
    }
    let filter = match compiled(new.filter.as_deref(), new.predefined.as_deref()).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let (archive, user, name_owned) = (s.archive.clone(), p.user.to_string(), name.to_string());
    match blocking(move || archive.add_filter(&user, &name_owned, &filter.expression)).await {
        Ok(Some(f)) => (StatusCode::CREATED, axum::Json(described(&f))).into_response(),
        Ok(None) => text(
            StatusCode::CONFLICT,
            format!("you have a filter named '{name}' already"),
        ),
        Err(r) => r,
    }
}

/// A form body's fields (name, filter, predefined).
/// The caller's saved filter `id`, or the answer why not.
async fn owned(
    s: &AlertService,
    p: Option<&Principal>,
    id: &str,
) -> Result<StoredFilter, Response> {
    let p = signed_in(p, "saved alert filters").map_err(IntoResponse::into_response)?;
    let Ok(id) = id.parse::<i64>() else {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!("'{id}' is not a filter id"),
        ));
    };
    let archive = s.archive.clone();
    match blocking(move || archive.filter(id)).await? {
        Some(f) if f.owner == p.user.as_str() => Ok(f),
        Some(_) => Err(text(
            StatusCode::FORBIDDEN,
            format!("filter {id} is not yours"),
        )),
        None => Err(text(StatusCode::NOT_FOUND, format!("no filter {id}"))),
    }
}

pub(super) async fn delete(
    State(s): State<AlertService>,
    p: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> Response {
    let f = match owned(&s, p.as_deref(), &id).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let (archive, owner) = (s.archive.clone(), f.owner.clone());
    match blocking(move || archive.delete_filter(&owner, f.id)).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

pub(super) async fn saved_stream(
    State(s): State<AlertService>,
    p: Option<Extension<Principal>>,
    Path(id): Path<String>,
    Query(q): Query<StreamParams>,
    headers: HeaderMap,
) -> Response {
    let f = match owned(&s, p.as_deref(), &id).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let filter = match Filter::compile(&f.expression).await {
        Ok(f) => f,
        Err(e) => {
            return text(
                StatusCode::CONFLICT,
                format!("the saved filter no longer compiles: {e}"),
            );
        }
    };
    stream(&s, filter, &headers, q.after.as_deref()).await
}
