//! The predicted visit schedule (DMS-REQ-0353) over HTTP: `GET /api/schedule` (the next
//! visit and those after it, JSON), `POST /api/schedule` (the observatory control system
//! publishes a new schedule with a bearer token; validated whole, every problem returned)
//! and `/schedule`, a page for people.
use std::sync::Arc;

use aster_archive::schedule::{PlannedVisit, Schedule, ScheduleError, ScheduleStore};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::xml::escape;

#[derive(Clone)]
pub struct ScheduleService {
    store: ScheduleStore,
    /// The bearer token that may POST a schedule; none disables publishing over HTTP.
    token: Option<Arc<str>>,
}

impl ScheduleService {
    pub fn new(store: ScheduleStore, token: Option<String>) -> Self {
        Self {
            store,
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
        }
    }
}

/// Now as MJD in TAI (37 s ahead of UTC since 2017).
fn now_mjd_tai() -> f64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    (unix + 37.0) / 86_400.0 + 40_587.0
}

/// MJD (TAI) as ISO 8601 UTC, to the second.
fn iso(mjd_tai: f64) -> String {
    let unix = (mjd_tai - 40_587.0) * 86_400.0 - 37.0;
    chrono::DateTime::from_timestamp(unix.floor() as i64, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn visit_json(v: &PlannedVisit) -> serde_json::Value {
    serde_json::json!({
        "mjd": v.mjd,
        "start_utc": iso(v.mjd),
        "ra": v.ra,
        "dec": v.dec,
        "band": v.band,
        "exptime": v.exptime,
        "rotation": v.rotation,
        "target": v.target,
    })
}

#[derive(serde::Deserialize)]
pub struct ScheduleParams {
    limit: Option<usize>,
}

fn json_error(status: StatusCode, errors: Vec<String>) -> Response {
    (status, axum::Json(serde_json::json!({"errors": errors}))).into_response()
}

async fn current(s: &ScheduleService) -> Result<Option<Schedule>, Response> {
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || store.current())
        .await
        .expect("schedule task panicked")
        .map_err(|e| json_error(StatusCode::INTERNAL_SERVER_ERROR, vec![e.to_string()]))
}

async fn get_schedule(
    State(s): State<ScheduleService>,
    Query(p): Query<ScheduleParams>,
) -> Response {
    let limit = p
        .limit
        .unwrap_or(100)
        .min(aster_archive::schedule::MAX_VISITS);
    let now = now_mjd_tai();
    match current(&s).await {
        Err(r) => r,
        Ok(None) => json_error(
            StatusCode::NOT_FOUND,
            vec!["no schedule has been published".into()],
        ),
        Ok(Some(sched)) => {
            let upcoming = sched.upcoming(now, limit);
            axum::Json(serde_json::json!({
                "source": sched.source,
                "published": sched.published,
                "now_mjd": now,
                "next": upcoming.first().map(|v| visit_json(v)),
                "visits": upcoming.iter().map(|v| visit_json(v)).collect::<Vec<_>>(),
            }))
            .into_response()
        }
    }
}

async fn post_schedule(
    State(s): State<ScheduleService>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = &s.token else {
        return json_error(
            StatusCode::FORBIDDEN,
            vec!["publishing by POST is not enabled: set schedule_token, or run `aster schedule publish`".into()],
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given != Some(token.as_ref()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({"errors": ["a valid bearer token is required"]})),
        )
            .into_response();
    }
    let parsed = match Schedule::parse(&body) {
        Ok(p) => p,
        Err(ScheduleError::Invalid(problems)) => {
            return json_error(StatusCode::BAD_REQUEST, problems);
        }
        Err(e) => return json_error(StatusCode::BAD_REQUEST, vec![e.to_string()]),
    };
    let store = s.store.clone();
    match tokio::task::spawn_blocking(move || store.publish(parsed))
        .await
        .expect("schedule task panicked")
    {
        Ok(sched) => (
            StatusCode::CREATED,
            axum::Json(serde_json::json!({
                "published": sched.published,
                "visits": sched.visits.len(),
            })),
        )
            .into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, vec![e.to_string()]),
    }
}

async fn page(State(s): State<ScheduleService>) -> Response {
    let now = now_mjd_tai();
    let sched = match current(&s).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut html = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"60\"><title>Aster: predicted visits</title>\
         <style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{padding:.25em .75em;border-bottom:1px solid #ddd;text-align:right}\
         tr.next{background:#fff6d5}</style></head><body><h1>Predicted visit schedule</h1>",
    );
    match sched {
        None => html.push_str("<p>No schedule has been published yet.</p>"),
        Some(sched) => {
            let upcoming = sched.upcoming(now, 200);
            html.push_str(&format!(
                "<p>From {}, published {}. Now: {} (MJD {:.5} TAI). {} visits ahead.</p>",
                escape(&sched.source),
                escape(sched.published.as_deref().unwrap_or("-")),
                iso(now),
                now,
                upcoming.len()
            ));
            html.push_str("<table><thead><tr><th>start (UTC)</th><th>MJD (TAI)</th><th>RA</th><th>Dec</th><th>band</th><th>exposure (s)</th><th>target</th></tr></thead><tbody>");
            for (i, v) in upcoming.iter().enumerate() {
                html.push_str(&format!(
                    "<tr{}><td>{}</td><td>{:.5}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    if i == 0 { " class=\"next\"" } else { "" },
                    iso(v.mjd),
                    v.mjd,
                    v.ra,
                    v.dec,
                    escape(&v.band),
                    v.exptime,
                    escape(v.target.as_deref().unwrap_or(""))
                ));
            }
            html.push_str("</tbody></table>");
        }
    }
    html.push_str("<p><a href=\"/api/schedule\">JSON</a></p></body></html>");
    Html(html).into_response()
}

pub fn router(s: ScheduleService) -> Router {
    Router::new()
        .route("/api/schedule", get(get_schedule).post(post_schedule))
        .route("/schedule", get(page))
        .with_state(s)
}
