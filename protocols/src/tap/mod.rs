//! The TAP 1.1 service: /sync (GET, POST, multipart uploads), /async (UWS 1.1 through
//! [`crate::uws`]), VOSI capabilities, availability and tables, and the caller's query
//! history. Errors are DALI error VOTables; results stream as they are produced.
mod run;
mod upload;
pub mod vosi;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aster_archive::jobs::{Job, JobResult, JobStore};
use aster_archive::query::QueryEngine;
use aster_archive::querylog::QueryLog;
use aster_archive::table_search::TableIndex;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::auth::Principal;
use crate::formats::{QueryStatus, error_votable};
use crate::uws::{self, JobRunner, UwsConfig};
pub use run::{TapLimits, TapParams};
pub use upload::UploadSources;

/// Everything the TAP routes share.
#[derive(Clone)]
pub struct TapService {
    engine: QueryEngine,
    log: QueryLog,
    limits: TapLimits,
    max_upload: usize,
    public_url: Option<String>,
    uploads: UploadSources,
    /// The full-text index of the published tables, with the fingerprint of the metadata
    /// it was built from (rebuilt when a refresh changes it).
    search: Arc<std::sync::Mutex<Option<CachedIndex>>>,
    /// Who the owners of async jobs are (their groups decide which users' tables their
    /// queries see); without it a job runs with its owner's name alone.
    identity: Option<aster_archive::identity::IdentityStore>,
    /// Async execution durations and job lifetime, as the UWS endpoint grants them.
    async_limits: AsyncLimits,
    /// Each caller's allocation, which can lower the execution duration they are granted.
    scheduler: Option<Arc<uws::Scheduler>>,
}

/// What `/async` grants: execution durations (seconds; 0 = unlimited) and how long jobs are
/// kept.
#[derive(Debug, Clone, Copy)]
pub struct AsyncLimits {
    pub default_duration: u64,
    pub max_duration: u64,
    pub retention: chrono::Duration,
}

/// A search index and the fingerprint of the metadata it holds.
type CachedIndex = (u64, Arc<TableIndex>);

impl TapService {
    pub fn new(
        engine: QueryEngine,
        log: QueryLog,
        limits: TapLimits,
        max_upload: usize,
        public_url: Option<String>,
        uploads: UploadSources,
    ) -> Self {
        Self {
            engine,
            log,
            limits,
            max_upload,
            public_url,
            uploads,
            search: Default::default(),
            identity: None,
            async_limits: AsyncLimits {
                default_duration: 3600,
                max_duration: 86_400,
                retention: chrono::Duration::days(7),
            },
            scheduler: None,
        }
    }

    /// Declares (in the capabilities) what the async endpoint grants, and who may have what.
    pub fn with_async_limits(
        mut self,
        limits: AsyncLimits,
        scheduler: Option<Arc<uws::Scheduler>>,
    ) -> Self {
        self.async_limits = limits;
        self.scheduler = scheduler;
        self
    }

    pub fn with_identity(mut self, identity: aster_archive::identity::IdentityStore) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The principal an async job of `owner` runs as.
    fn principal_of(&self, owner: Option<&str>) -> Option<Principal> {
        let user = aster_archive::identity::UserName::new(owner?).ok()?;
        let found = self.identity.as_ref().and_then(|i| i.principal(&user).ok());
        Some(found.unwrap_or(Principal {
            user,
            groups: Vec::new(),
            admin: false,
            scopes: aster_archive::identity::Scopes {
                read: true,
                write: false,
            },
        }))
    }

    fn base_url(&self, headers: &HeaderMap) -> String {
        format!(
            "{}/tap",
            crate::request_base(self.public_url.as_deref(), headers)
        )
    }
}

/// The /tap router; `jobs` holds the async jobs.
pub fn router(service: TapService, jobs: JobStore, uws_config: UwsConfig) -> Router {
    let runner = Arc::new(TapRunner {
        service: service.clone(),
        jobs: jobs.clone(),
        running: Default::default(),
    });
    match uws::resume_interrupted_jobs(&jobs, runner.as_ref(), &uws_config.service) {
        Ok(0) => {}
        Ok(n) => tracing::info!(jobs = n, "resumed TAP jobs interrupted by a restart"),
        Err(e) => tracing::warn!(error = %e, "could not resume interrupted TAP jobs"),
    }
    uws::spawn_reaper(jobs.clone(), runner.clone(), uws_config.service.clone());
    let body_limit = service.max_upload;
    Router::new()
        .route("/", get(landing))
        .route("/sync", get(sync_get).post(sync_post))
        .route("/capabilities", get(capabilities))
        .route("/availability", get(availability))
        .route("/tables", get(tables))
        .route("/tables/{name}", get(one_table))
        .route("/history", get(history))
        .route("/search", get(search_tables))
        .route(
            "/examples",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/xhtml+xml")],
                    vosi::examples(),
                )
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(service)
        .nest("/async", uws::router(jobs, runner, uws_config))
}

fn xml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml; charset=UTF-8")], body).into_response()
}

/// A DALI error document.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/x-votable+xml")],
        error_votable(message),
    )
        .into_response()
}

async fn landing(State(s): State<TapService>, headers: HeaderMap) -> Response {
    let base = s.base_url(&headers);
    let body = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Aster TAP</title></head><body>\
         <h1>Aster TAP service</h1><p>TAP 1.1 with ADQL 2.1. Base URL: <code>{b}</code></p><ul>\
         <li><a href=\"{b}/capabilities\">capabilities</a></li><li><a href=\"{b}/availability\">availability</a></li>\
         <li><a href=\"{b}/tables\">tables</a></li><li><a href=\"{b}/async\">async jobs</a></li>\
         <li><a href=\"{b}/sync?LANG=ADQL&amp;QUERY=SELECT+TOP+10+*+FROM+dp.Object\">example query</a></li></ul></body></html>",
        b = crate::xml::escape(&base)
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// `GET /tap/capabilities`: TAPRegExt's limits, the execution duration for this caller.
async fn capabilities(
    State(s): State<TapService>,
    who: Option<axum::Extension<Principal>>,
    headers: HeaderMap,
) -> Response {
    let a = s.async_limits;
    let own = s.scheduler.as_ref().map_or(0, |sch| {
        sch.limits(who.as_ref().map(|p| p.user.as_str()))
            .execution_secs
    });
    let hard = match (a.max_duration, own) {
        (0, m) | (m, 0) => m,
        (x, y) => x.min(y),
    };
    let default = if hard > 0 && (a.default_duration == 0 || a.default_duration > hard) {
        hard
    } else {
        a.default_duration
    };
    xml(vosi::capabilities(
        &s.base_url(&headers),
        vosi::DeclaredLimits {
            default_maxrec: s.limits.default_maxrec,
            max_maxrec: s.limits.max_maxrec,
            max_upload: s.max_upload,
            default_duration: default,
            hard_duration: hard,
            retention_secs: a.retention.num_seconds().max(0) as u64,
        },
    ))
}

async fn availability() -> Response {
    xml(vosi::availability("Aster TAP is accepting queries"))
}

async fn tables(
    State(s): State<TapService>,
    who: Option<axum::Extension<Principal>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let detail = match q
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("detail"))
        .map(|(_, v)| v.as_str())
    {
        None | Some("max") => true,
        Some("min") => false,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("detail={other}: expected min or max"),
            )
                .into_response();
        }
    };
    match s.engine.metadata(who.as_deref()).await {
        Ok(m) => xml(vosi::tableset(&m, detail)),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn one_table(
    State(s): State<TapService>,
    who: Option<axum::Extension<Principal>>,
    Path(name): Path<String>,
) -> Response {
    match s.engine.metadata(who.as_deref()).await {
        Ok(m) => match m
            .iter()
            .flat_map(|s| &s.tables)
            .find(|t| t.name.eq_ignore_ascii_case(&name))
        {
            Some(t) => xml(vosi::single_table(t)),
            None => (StatusCode::NOT_FOUND, format!("no table named {name}")).into_response(),
        },
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A fingerprint of what the search index holds: every name and description.
fn metadata_fingerprint(m: &[aster_archive::tap_schema::SchemaDesc]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for t in m.iter().flat_map(|s| &s.tables) {
        (&t.name, &t.description).hash(&mut h);
        for c in &t.columns {
            (&c.name, &c.description, &c.ucd, &c.unit).hash(&mut h);
        }
    }
    h.finish()
}

/// `GET /tap/search?q=...[&limit=50]`: tables and columns whose names, descriptions, units
/// or UCDs match, best first, as JSON (`aster_archive::table_search`).
async fn search_tables(
    State(s): State<TapService>,
    who: Option<axum::Extension<Principal>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(text) = q.get("q").filter(|t| t.len() <= 500) else {
        return (
            StatusCode::BAD_REQUEST,
            "q (at most 500 characters) is required",
        )
            .into_response();
    };
    let limit = match q.get("limit").map(|v| v.parse::<usize>()) {
        None => 50,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                "limit must be an integer from 1 to 1000",
            )
                .into_response();
        }
    };
    let metadata = match s.engine.metadata(who.as_deref()).await {
        Ok(m) => m,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let text = text.clone();
    let cache = s.search.clone();
    let found = tokio::task::spawn_blocking(move || {
        let fingerprint = metadata_fingerprint(&metadata);
        let index = {
            let mut slot = cache.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some((f, idx)) if *f == fingerprint => idx.clone(),
                _ => {
                    let idx = Arc::new(TableIndex::build(&metadata)?);
                    *slot = Some((fingerprint, idx.clone()));
                    idx
                }
            }
        };
        index.search(&text, limit)
    })
    .await;
    match found {
        Ok(Ok(hits)) => axum::Json(hits).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /tap/history[?limit=][&all=true]`: the caller's own queries, newest first, as
/// JSON (DMS-REQ-0345: nobody else's). Anonymous callers have no history to read; an
/// administrator reads everyone's with `all=true`.
async fn history(
    State(s): State<TapService>,
    principal: Option<axum::Extension<crate::auth::Principal>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let limit = match q.get("limit").map(|v| v.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if n > 0 && n <= 10_000 => n,
        Some(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "limit must be an integer from 1 to 10000",
            );
        }
    };
    let Some(p) = principal.map(|p| p.0) else {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "the query history is personal: sign in, or send a bearer token, to read yours",
        );
    };
    let all = match q.get("all").map(String::as_str) {
        None | Some("false") => false,
        Some("true") if p.admin => true,
        Some("true") => {
            return error_response(
                StatusCode::FORBIDDEN,
                "only administrators read everyone's queries",
            );
        }
        Some(_) => return error_response(StatusCode::BAD_REQUEST, "all must be true or false"),
    };
    let log = s.log.clone();
    let who = p.user.to_string();
    let found = tokio::task::spawn_blocking(move || {
        log.history(if all { None } else { Some(Some(&who)) }, limit)
    })
    .await;
    match found {
        Ok(Ok(entries)) => axum::Json(entries).into_response(),
        Ok(Err(e)) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn sync_get(
    State(s): State<TapService>,
    who: Option<axum::Extension<Principal>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let params = TapParams {
        params: q,
        files: HashMap::new(),
    };
    sync(s, who.map(|w| w.0), params).await
}

async fn sync_post(
    State(s): State<TapService>,
    who: Option<axum::Extension<Principal>>,
    req: Request,
) -> Response {
    let who = who.map(|w| w.0);
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    let params = if is_multipart {
        match read_multipart(req).await {
            Ok(p) => p,
            Err(e) => return error_response(StatusCode::BAD_REQUEST, &e),
        }
    } else {
        let query_params: Vec<(String, String)> = req
            .uri()
            .query()
            .map(|q| url_pairs(q.as_bytes()))
            .unwrap_or_default();
        match Bytes::from_request(req, &()).await {
            Ok(body) => {
                let mut params = query_params;
                params.extend(url_pairs(&body));
                TapParams {
                    params,
                    files: HashMap::new(),
                }
            }
            Err(e) => {
                return error_response(StatusCode::BAD_REQUEST, &format!("reading request: {e}"));
            }
        }
    };
    sync(s, who, params).await
}

fn url_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

async fn read_multipart(req: Request) -> Result<TapParams, String> {
    let mut mp = Multipart::from_request(req, &())
        .await
        .map_err(|e| e.to_string())?;
    let mut p = TapParams::default();
    while let Some(field) = mp
        .next_field()
        .await
        .map_err(|e| format!("multipart: {e}"))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let is_file = field.file_name().is_some();
        let data = field
            .bytes()
            .await
            .map_err(|e| format!("multipart part {name}: {e}"))?;
        if is_file {
            p.files.insert(name, data);
        } else {
            p.params
                .push((name, String::from_utf8_lossy(&data).into_owned()));
        }
    }
    Ok(p)
}

async fn sync(s: TapService, who: Option<Principal>, params: TapParams) -> Response {
    let req = match run::check_request(&params, &s.limits, &s.uploads) {
        Ok(r) => r,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &e.0),
    };
    let format = req.format;
    let timeout = s.limits.sync_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let started = tokio::time::timeout(
        timeout,
        run::start(
            &s.engine,
            &s.uploads,
            &s.log,
            who.as_ref(),
            "sync",
            None,
            req,
        ),
    )
    .await;
    let (mut enc, head) = match started {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return error_response(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!(
                    "the query did not finish within the synchronous limit of {} s; run it with /tap/async",
                    timeout.as_secs()
                ),
            );
        }
    };
    // The body streams from a task so memory holds one batch at a time; the task stops
    // when the client goes away (the channel closes) or the time limit passes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        if tx.send(Ok(Bytes::from(head))).await.is_err() {
            return;
        }
        loop {
            let next = tokio::time::timeout_at(deadline, enc.next_chunk()).await;
            let chunk = match next {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(_) => {
                    let mut out = Vec::new();
                    let limit = QueryStatus::Error(format!(
                        "the query exceeded the synchronous limit of {} s",
                        timeout.as_secs()
                    ));
                    enc.finish(&limit, &mut out).map(|()| out)
                }
            };
            // A document that cannot be completed must not look complete: failing the body
            // makes the server abort the response instead of ending it cleanly.
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "aborting a result that cannot be completed");
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    return;
                }
            };
            if !chunk.is_empty() && tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut resp = Response::new(Body::from_stream(stream));
    if let Ok(v) = HeaderValue::from_str(format.media_type()) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// Runs TAP async jobs: the query's result goes to a file in the job's folder.
struct TapRunner {
    service: TapService,
    jobs: JobStore,
    running: uws::RunningJobs,
}

impl JobRunner for TapRunner {
    fn validate(&self, job: &Job) -> Result<(), String> {
        self.params_of(job).and_then(|p| {
            run::check_request(&p, &self.service.limits, &self.service.uploads)
                .map(|_| ())
                .map_err(|e| e.0)
        })
    }

    fn run(&self, job: Job) {
        let service = self.service.clone();
        let jobs = self.jobs.clone();
        let params = self.params_of(&job);
        let id = job.id.clone();
        self.running.spawn(self.jobs.clone(), id, async move {
            run_job(&service, &jobs, &job, params).await
        });
    }

    fn abort(&self, job_id: &str) {
        self.running.abort(job_id);
    }
}

impl TapRunner {
    fn params_of(&self, job: &Job) -> Result<TapParams, String> {
        let mut files = HashMap::new();
        for f in &job.files {
            let path = self.jobs.file_path(&job.id, f).map_err(|e| e.to_string())?;
            let bytes = std::fs::read(&path).map_err(|e| format!("upload {}: {e}", f.name))?;
            files.insert(f.name.clone(), Bytes::from(bytes));
        }
        Ok(TapParams {
            params: job.parameters.clone(),
            files,
        })
    }
}

async fn run_job(
    service: &TapService,
    jobs: &JobStore,
    job: &Job,
    params: Result<TapParams, String>,
) -> Result<(), String> {
    let req = run::check_request(&params?, &service.limits, &service.uploads).map_err(|e| e.0)?;
    let format = req.format;
    jobs.start(&job.id).map_err(|e| e.to_string())?;
    let (mut enc, head) = run::start(
        &service.engine,
        &service.uploads,
        &service.log,
        service.principal_of(job.owner.as_deref()).as_ref(),
        "async",
        Some(&job.id),
        req,
    )
    .await
    .map_err(|e| e.to_string())?;
    let file_name = format!("result.{}", format.file_extension());
    let path = jobs
        .result_path(&job.id, &file_name)
        .map_err(|e| e.to_string())?;
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| format!("writing result: {e}"))?;
    file.write_all(&head).await.map_err(|e| e.to_string())?;
    while let Some(chunk) = enc.next_chunk().await {
        file.write_all(&chunk?)
            .await
            .map_err(|e| format!("writing result: {e}"))?;
    }
    file.flush().await.map_err(|e| e.to_string())?;
    let size = tokio::fs::metadata(&path)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    jobs.complete(
        &job.id,
        vec![JobResult {
            id: "result".into(),
            file_name,
            media_type: format.media_type().into(),
            size,
            rows: Some(enc.rows()),
        }],
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Default UWS limits for TAP from the service settings.
pub fn uws_config(
    default_duration: u64,
    max_duration: u64,
    lifetime: chrono::Duration,
    max_body: usize,
) -> UwsConfig {
    let mut c = UwsConfig::new("tap");
    c.default_execution_duration = default_duration;
    c.max_execution_duration = max_duration;
    c.default_destruction = lifetime;
    c.max_destruction = lifetime.max(chrono::Duration::days(30));
    c.max_wait = Duration::from_secs(600);
    c.max_body_bytes = max_body;
    c
}
