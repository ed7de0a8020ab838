//! UWS 1.1 job interface (routes, job XML) over the job store.
//!
//! This module owns the HTTP side of asynchronous jobs, shared by every service that has them
//! (TAP `/async`, SODA async): the REST binding of UWS 1.1 (job list with `PHASE`/`AFTER`/`LAST`
//! filters, job creation, phase changes, `WAIT` blocking, execution duration, destruction,
//! parameters, results, error, quote, owner), the UWS XML documents, the DALI error VOTable of
//! `/error`, parameter reading (url-encoded and multipart bodies with uploaded files), the
//! service limits on execution duration and destruction, and the background reaper.
//!
//! The work itself belongs to a [`JobRunner`]; the job records to the
//! [`JobStore`](aster_archive::jobs::JobStore).
//!
//! Choices where the standards leave room:
//! - A job is created whatever its parameters (TAP 1.1/DALI let the error surface when the job
//!   runs): [`JobRunner::validate`] is asked when the job is asked to run, and a refusal puts the
//!   job in ERROR with the message at `/error`, instead of failing the HTTP request.
//! - `PHASE=RUN` on a job already QUEUED or EXECUTING changes nothing; on a finished job it is a
//!   409 Conflict. `PHASE=ABORT` on an ABORTED job changes nothing; on a COMPLETED or ERROR job it
//!   is a 409. Changing parameters or execution duration after PENDING is a 409.
//! - `AFTER` and `LAST` look at the creation time; with `LAST` the list comes most recent first,
//!   otherwise oldest first. ARCHIVED jobs are listed only when `PHASE` asks for them (this
//!   service deletes jobs at destruction rather than archiving them).
//! - A job that exceeds its execution duration is ABORTED (UWS: as if the client aborted it),
//!   with the reason as its error message.
//! - A request with an [`Owner`] extension (put there by an authentication layer) creates jobs
//!   owned by that identity, lists only them, and gets 403 on other identities' jobs (unless
//!   it is an administrator's); anonymous requests list the anonymous jobs.

mod params;
mod scheduler;
pub use params::XML_PARAMETER;
pub use scheduler::{Scheduler, Usage};
#[cfg(test)]
mod tests;
mod xml;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use aster_archive::jobs::{Job, JobStore, JobStoreError, NewJob, Phase, PhaseChange};
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequestParts, OriginalUri, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// What runs the jobs of one service (TAP implements it).
///
/// The routes call [`JobRunner::run`] when a job enters QUEUED; the runner then moves it along
/// with `JobStore::start` and `complete` or `fail`, writing result files at
/// `JobStore::result_path`. Store calls made after the job was aborted or deleted fail with
/// `InvalidTransition` or `NotFound`, which the runner takes as "stop". The runner must not
/// create the job's folder (it exists while the job does).
pub trait JobRunner: Send + Sync + 'static {
    /// Checks a job's parameters (and uploaded files) when it is asked to run. An `Err` message
    /// puts the job in ERROR instead, shown to the client at `/error`.
    fn validate(&self, job: &Job) -> Result<(), String>;

    /// Starts the work of a QUEUED job and returns at once (spawn the work). Called within the
    /// Tokio runtime.
    fn run(&self, job: Job);

    /// Cancels the work of job `job_id`, if any is running or queued. Called after the store
    /// recorded the abort (or before it deletes the job).
    fn abort(&self, job_id: &str);
}

/// The work of a service's running jobs, for [`JobRunner`]s: each job's future is spawned
/// with its outcome recorded (an `Err` message puts the job in ERROR), and can be aborted.
#[derive(Default)]
pub struct RunningJobs {
    tasks: std::sync::Mutex<std::collections::HashMap<String, tokio::task::AbortHandle>>,
}

impl RunningJobs {
    /// Spawns the work of `job` on `jobs`' store.
    pub fn spawn(
        &self,
        jobs: JobStore,
        job_id: String,
        work: impl std::future::Future<Output = Result<(), String>> + Send + 'static,
    ) {
        let id = job_id.clone();
        let handle = tokio::spawn(async move {
            if let Err(message) = work.await
                && let Err(e) = jobs.fail(&job_id, &message)
            {
                tracing::debug!(job = %job_id, error = %e, "job ended before it could fail");
            }
        });
        if let Ok(mut r) = self.tasks.lock() {
            r.retain(|_, h| !h.is_finished());
            r.insert(id, handle.abort_handle());
        }
    }

    /// Cancels a job's work, if it is running.
    pub fn abort(&self, job_id: &str) {
        if let Some(h) = self.tasks.lock().ok().and_then(|mut r| r.remove(job_id)) {
            h.abort();
        }
    }
}

/// Limits and defaults of one service's async endpoint.
#[derive(Debug, Clone)]
pub struct UwsConfig {
    /// The store's service name of the jobs, e.g. `tap`.
    pub service: String,
    /// Execution duration (seconds) of a new job; 0 means unlimited.
    pub default_execution_duration: u64,
    /// Largest execution duration (seconds) a client may ask for; 0 means no limit. A request
    /// beyond it, or for unlimited, gets this maximum.
    pub max_execution_duration: u64,
    /// Time from creation to destruction of a new job.
    pub default_destruction: chrono::Duration,
    /// Latest destruction a client may ask for, counted from the request.
    pub max_destruction: chrono::Duration,
    /// Longest a `WAIT` request blocks (`WAIT=-1` blocks this long).
    pub max_wait: StdDuration,
    /// Largest request body (parameters and uploads) in bytes.
    pub max_body_bytes: usize,
    /// `/error` as plain text (VOSpace, whose clients read the fault name) rather than a
    /// DALI error VOTable.
    pub plain_text_errors: bool,
    /// Who may run how many jobs, and for how long (shared by every service); without it
    /// every job runs as soon as it is asked to.
    pub scheduler: Option<Arc<Scheduler>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scheduler")
    }
}

impl UwsConfig {
    /// The defaults for service `service`: one hour of execution (at most four), destruction
    /// after a week (at most thirty days), `WAIT` up to a minute, bodies up to 256 MiB.
    pub fn new(service: impl Into<String>) -> Self {
        UwsConfig {
            service: service.into(),
            default_execution_duration: 3600,
            max_execution_duration: 4 * 3600,
            default_destruction: chrono::Duration::days(7),
            max_destruction: chrono::Duration::days(30),
            max_wait: StdDuration::from_secs(60),
            max_body_bytes: 256 * 1024 * 1024,
            plain_text_errors: false,
            scheduler: None,
        }
    }

    /// The execution duration granted to `owner` for a request of `requested` seconds
    /// (0 = unlimited): at most the service's limit and the owner's.
    fn grant_execution_duration(&self, requested: u64, owner: Option<&str>) -> u64 {
        let service_max = self.max_execution_duration;
        let owner_max = self
            .scheduler
            .as_ref()
            .map_or(0, |s| s.limits(owner).execution_secs);
        let max = match (service_max, owner_max) {
            (0, m) | (m, 0) => m,
            (a, b) => a.min(b),
        };
        if max > 0 && (requested == 0 || requested > max) {
            max
        } else {
            requested
        }
    }
}

/// The authenticated identity of a request, put in the request extensions by an authentication
/// layer. Without it the request is anonymous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(pub String);

/// The router of one async endpoint, to be nested by the caller, e.g.
/// `Router::new().nest("/tap/async", uws::router(store, runner, config))`.
pub fn router(store: JobStore, runner: Arc<dyn JobRunner>, config: UwsConfig) -> Router {
    let body_limit = config.max_body_bytes;
    let state = Uws {
        store,
        runner,
        config: Arc::new(config),
    };
    Router::new()
        .route("/", get(list_jobs).post(create_job))
        .route("/{job_id}", get(get_job).post(post_job).delete(delete_job))
        .route("/{job_id}/phase", get(get_phase).post(post_phase))
        .route(
            "/{job_id}/executionduration",
            get(get_execution_duration).post(post_execution_duration),
        )
        .route(
            "/{job_id}/destruction",
            get(get_destruction).post(post_destruction),
        )
        .route("/{job_id}/error", get(get_error))
        .route("/{job_id}/quote", get(get_quote))
        .route("/{job_id}/owner", get(get_owner))
        .route("/{job_id}/results", get(get_results))
        .route("/{job_id}/results/{result_id}", get(get_result))
        .route(
            "/{job_id}/parameters",
            get(get_parameters).post(post_parameters),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// How often the reaper looks for expired and overrunning jobs.
const REAPER_PERIOD: StdDuration = StdDuration::from_secs(1);

/// Spawns the task that, every second, aborts the EXECUTING jobs of `service` that exceeded
/// their execution duration (UWS: as if the client aborted them, with the reason as error
/// message) and deletes the jobs past their destruction time, cancelling their work first.
pub fn spawn_reaper(
    store: JobStore,
    runner: Arc<dyn JobRunner>,
    service: impl Into<String>,
) -> JoinHandle<()> {
    let service = service.into();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(REAPER_PERIOD);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let (store, runner, service) = (store.clone(), runner.clone(), service.clone());
            let reaped =
                tokio::task::spawn_blocking(move || reap(&store, &*runner, &service, Utc::now()))
                    .await;
            match reaped {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "job reaper failed"),
                Err(e) => tracing::warn!(error = %e, "job reaper task failed"),
            }
        }
    })
}

/// One pass of the reaper at time `now`.
fn reap(
    store: &JobStore,
    runner: &dyn JobRunner,
    service: &str,
    now: DateTime<Utc>,
) -> Result<(), JobStoreError> {
    for id in store.overrun(service, now)? {
        let Some(job) = store.get(&id)? else { continue };
        let reason = format!(
            "the job ran longer than its execution duration of {} s",
            job.execution_duration
        );
        match store.abort(&id, Some(&reason)) {
            Ok(_) => runner.abort(&id),
            // It finished or went away meanwhile.
            Err(JobStoreError::InvalidTransition { .. } | JobStoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    for id in store.expired(service, now)? {
        let Some(job) = store.get(&id)? else { continue };
        if job.phase.is_running() {
            runner.abort(&id);
        }
        store.delete(&id)?;
        tracing::debug!(job = %id, "destroyed expired job");
    }
    Ok(())
}

/// Hands back to `runner` the jobs of `service` that a previous process left QUEUED or
/// EXECUTING (see `JobStore::recover_after_restart`); call once at start-up, within the Tokio
/// runtime. Returns how many jobs were resumed.
pub fn resume_interrupted_jobs(
    store: &JobStore,
    runner: &dyn JobRunner,
    service: &str,
) -> Result<usize, JobStoreError> {
    let mut resumed = 0;
    for id in store.recover_after_restart(service)? {
        if let Some(job) = store.get(&id)? {
            runner.run(job);
            resumed += 1;
        }
    }
    Ok(resumed)
}

/// The routes' shared state.
#[derive(Clone)]
struct Uws {
    store: JobStore,
    runner: Arc<dyn JobRunner>,
    config: Arc<UwsConfig>,
}

impl Uws {
    /// Runs a blocking store call off the async threads.
    async fn with_store<T, F>(&self, call: F) -> Result<T, UwsError>
    where
        T: Send + 'static,
        F: FnOnce(&JobStore) -> Result<T, JobStoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || call(&store))
            .await
            .map_err(|e| UwsError::Internal(format!("job store task failed: {e}")))?
            .map_err(UwsError::from)
    }

    /// Job `id` of this service, if the requester may see it.
    async fn job(&self, requester: &Requester, id: &str) -> Result<Job, UwsError> {
        let wanted = id.to_owned();
        let job = self
            .with_store(move |s| s.get(&wanted))
            .await?
            .filter(|job| job.service == self.config.service)
            .ok_or_else(|| UwsError::NotFound(id.to_owned()))?;
        match &job.owner {
            // Administrators may look after anyone's jobs.
            Some(owner) if Some(owner) != requester.owner.as_ref() && !requester.admin => {
                Err(UwsError::Forbidden(id.to_owned()))
            }
            _ => Ok(job),
        }
    }

    /// Asks for `job` to run: validation, QUEUED, hand-over to the runner.
    async fn run(&self, job: Job) -> Result<(), UwsError> {
        match job.phase {
            Phase::Pending | Phase::Held => {
                if let Some(s) = &self.config.scheduler {
                    s.check(job.owner.as_deref()).map_err(UwsError::TooMany)?;
                }
                let id = job.id.clone();
                let queued = match self.runner.validate(&job) {
                    Err(message) => {
                        self.with_store(move |s| s.fail(&id, &message)).await?;
                        return Ok(());
                    }
                    Ok(()) => {
                        self.with_store(move |s| s.set_phase(&id, Phase::Queued))
                            .await?
                    }
                };
                match &self.config.scheduler {
                    Some(s) => s.submit(queued, self.runner.clone()),
                    None => self.runner.run(queued),
                }
                Ok(())
            }
            // Already on its way: asking again changes nothing.
            phase if phase.is_running() => Ok(()),
            phase => Err(UwsError::Conflict(format!(
                "job {} is {phase}: only a PENDING job can be run",
                job.id
            ))),
        }
    }

    /// Aborts `job` at the client's request.
    async fn abort(&self, job: Job) -> Result<(), UwsError> {
        if job.phase == Phase::Aborted {
            return Ok(());
        }
        if !job.phase.can_become(Phase::Aborted) {
            return Err(UwsError::Conflict(format!(
                "job {} is {}: it has finished and cannot be aborted",
                job.id, job.phase
            )));
        }
        let id = job.id.clone();
        // Record the abort first so that the runner's late completion is refused.
        self.with_store(move |s| s.abort(&id, None)).await?;
        self.runner.abort(&job.id);
        if let Some(s) = &self.config.scheduler {
            s.finished(&job.id);
        }
        Ok(())
    }

    /// Destroys `job`: cancels its work, deletes its record and files.
    async fn destroy(&self, job: Job) -> Result<(), UwsError> {
        if job.phase.is_running() {
            self.runner.abort(&job.id);
        }
        let id = job.id;
        if let Some(s) = &self.config.scheduler {
            s.finished(&id);
        }
        self.with_store(move |s| s.delete(&id)).await?;
        Ok(())
    }
}

/// Who asks, and the absolute URL of the job list they address.
struct Requester {
    owner: Option<String>,
    admin: bool,
    /// e.g. `https://archive.example.org/tap/async`, without trailing slash.
    list_url: String,
}

impl Requester {
    fn job_url(&self, id: &str) -> String {
        format!("{}/{}", self.list_url, xml::path_segment(id))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Requester {
    type Rejection = UwsError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, UwsError> {
        let inner_path = parts.uri.path();
        let full_path = parts
            .extensions
            .get::<OriginalUri>()
            .map_or(inner_path, |original| original.0.path());
        let origin = origin(&parts.headers, &parts.uri)?;
        Ok(Requester {
            owner: parts.extensions.get::<Owner>().map(|o| o.0.clone()),
            admin: parts
                .extensions
                .get::<aster_archive::identity::Principal>()
                .is_some_and(|p| p.admin),
            list_url: format!("{origin}{}", list_path(full_path, inner_path)),
        })
    }
}

/// The path of the job list: the full request path less the part this router matched (the
/// router may be nested under any prefix).
fn list_path<'a>(full_path: &'a str, inner_path: &str) -> &'a str {
    let full = full_path.trim_end_matches('/');
    full.strip_suffix(inner_path.trim_end_matches('/'))
        .unwrap_or(full)
}

/// `scheme://host[:port]` as the client sees it: proxies' `X-Forwarded-Proto` and
/// `X-Forwarded-Host` win over the `Host` header.
fn origin(headers: &HeaderMap, uri: &Uri) -> Result<String, UwsError> {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let scheme = match first("x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(_) => "http",
        None => uri.scheme_str().unwrap_or("http"),
    };
    let host = first("x-forwarded-host")
        .or_else(|| first(header::HOST.as_str()))
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .ok_or_else(|| UwsError::BadRequest("the request has no Host header".into()))?;
    // The host goes into Location headers and XML: accept host names, IPv4/IPv6 and a port only.
    let valid = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'));
    if !valid {
        return Err(UwsError::BadRequest(format!("invalid host name {host:?}")));
    }
    Ok(format!("{scheme}://{host}"))
}

/// Why a UWS request failed; each becomes a status and a plain-text reason.
#[derive(Debug, thiserror::Error)]
enum UwsError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no job {0}")]
    NotFound(String),
    #[error("job {0} belongs to another user")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The owner's allocation of jobs is used up.
    #[error("{0}")]
    TooMany(String),
    /// A body the extractors refused, with their status (e.g. 413 when too large).
    #[error("{message}")]
    Body { status: StatusCode, message: String },
    #[error("job store failure: {0}")]
    Store(JobStoreError),
    #[error("{0}")]
    Internal(String),
}

impl From<JobStoreError> for UwsError {
    fn from(e: JobStoreError) -> Self {
        match e {
            JobStoreError::NotFound(id) => UwsError::NotFound(id),
            // Names come from URLs: one the store refuses cannot name an existing job.
            JobStoreError::InvalidName(name) => UwsError::NotFound(name),
            JobStoreError::InvalidTransition { .. } | JobStoreError::NotPending { .. } => {
                UwsError::Conflict(e.to_string())
            }
            e => UwsError::Store(e),
        }
    }
}

impl IntoResponse for UwsError {
    fn into_response(self) -> Response {
        let status = match &self {
            UwsError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UwsError::NotFound(_) => StatusCode::NOT_FOUND,
            UwsError::Forbidden(_) => StatusCode::FORBIDDEN,
            UwsError::Conflict(_) => StatusCode::CONFLICT,
            UwsError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            UwsError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            UwsError::Body { status, .. } => *status,
            UwsError::Store(_) | UwsError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            // Details (paths, SQL) stay in the log.
            tracing::error!(error = %self, "UWS request failed");
            "internal error in the job service".to_owned()
        } else {
            self.to_string()
        };
        plain_text(status, message)
    }
}

fn plain_text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn xml_document(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn see_other(location: &str) -> Result<Response, UwsError> {
    let location = HeaderValue::from_str(location)
        .map_err(|e| UwsError::Internal(format!("invalid Location {location:?}: {e}")))?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response())
}

/// `GET /`: the job list, filtered by `PHASE` (repeatable), `AFTER` and `LAST`.
async fn list_jobs(
    State(uws): State<Uws>,
    requester: Requester,
    uri: Uri,
) -> Result<Response, UwsError> {
    let query = params::query(&uri)?;
    let phases = params::values(&query, "PHASE")
        .map(|p| {
            p.parse::<Phase>()
                .map_err(|e| UwsError::BadRequest(format!("PHASE: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let after = params::last(&query, "AFTER")
        .map(|t| {
            params::parse_timestamp(t).ok_or_else(|| {
                UwsError::BadRequest(format!("AFTER: {t:?} is not an ISO 8601 timestamp"))
            })
        })
        .transpose()?;
    let last = params::last(&query, "LAST")
        .map(|n| {
            n.parse::<usize>().map_err(|_| {
                UwsError::BadRequest(format!("LAST: {n:?} is not a non-negative integer"))
            })
        })
        .transpose()?;
    let service = uws.config.service.clone();
    let owner = requester.owner.clone();
    let jobs = uws
        .with_store(move |s| s.list(&service, owner.as_deref(), &phases, after, last))
        .await?;
    Ok(xml_document(xml::job_list(&jobs, &requester.list_url)))
}

/// `POST /`: creates a job from the parameters; `PHASE=RUN` also runs it; `RUNID` names it.
async fn create_job(
    State(uws): State<Uws>,
    requester: Requester,
    request: Request,
) -> Result<Response, UwsError> {
    let (mut parameters, uploads) = params::read(&uws.store, request).await?;
    let run = match params::take(&mut parameters, "PHASE").as_deref() {
        None => false,
        Some("RUN") => true,
        Some(other) => {
            return Err(UwsError::BadRequest(format!(
                "PHASE: {other:?} cannot be asked at creation; use RUN or nothing"
            )));
        }
    };
    let new = NewJob {
        service: uws.config.service.clone(),
        owner: requester.owner.clone(),
        run_id: params::take(&mut parameters, "RUNID"),
        parameters,
        uploads,
        execution_duration: uws.config.grant_execution_duration(
            uws.config.default_execution_duration,
            requester.owner.as_deref(),
        ),
        destruction: Utc::now() + uws.config.default_destruction,
    };
    let job = uws.with_store(move |s| s.create(new)).await?;
    let location = requester.job_url(&job.id);
    if run {
        uws.run(job).await?;
    }
    see_other(&location)
}

/// `GET /{job}`: the job document; `WAIT=<seconds>` (optionally with `PHASE`) blocks while
/// the job is PENDING, QUEUED or EXECUTING, until its phase changes or the time is up.
async fn get_job(
    State(uws): State<Uws>,
    requester: Requester,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Response, UwsError> {
    let query = params::query(&uri)?;
    let wait = params::last(&query, "WAIT")
        .map(|w| match w.parse::<i64>() {
            Ok(-1) => Ok(uws.config.max_wait),
            Ok(secs) if secs >= 0 => Ok(uws
                .config
                .max_wait
                .min(StdDuration::from_secs(secs.unsigned_abs()))),
            _ => Err(UwsError::BadRequest(format!(
                "WAIT: {w:?} is not a number of seconds (or -1)"
            ))),
        })
        .transpose()?;
    let wait_phase = params::last(&query, "PHASE")
        .map(|p| {
            p.parse::<Phase>()
                .map_err(|e| UwsError::BadRequest(format!("PHASE: {e}")))
        })
        .transpose()?;

    // Subscribe before reading so that no change after the read is missed.
    let mut changes = uws.store.subscribe();
    let mut job = uws.job(&requester, &id).await?;
    if let Some(wait) = wait {
        let blocking = matches!(job.phase, Phase::Pending | Phase::Queued | Phase::Executing)
            && wait_phase.is_none_or(|p| p == job.phase);
        if blocking && !wait.is_zero() {
            let deadline = tokio::time::Instant::now() + wait;
            wait_for_change(&uws, &mut changes, &id, job.phase, deadline).await?;
            job = uws.job(&requester, &id).await?;
        }
    }
    Ok(xml_document(xml::job(&job, &requester.job_url(&job.id))))
}

/// Blocks until job `id` leaves phase `watched` (or is deleted), or until `deadline`.
async fn wait_for_change(
    uws: &Uws,
    changes: &mut Receiver<PhaseChange>,
    id: &str,
    watched: Phase,
    deadline: tokio::time::Instant,
) -> Result<(), UwsError> {
    loop {
        let recheck = match tokio::time::timeout_at(deadline, changes.recv()).await {
            // Time is up, or the store is gone.
            Err(_) | Ok(Err(RecvError::Closed)) => return Ok(()),
            // Changes were missed: look at the job itself.
            Ok(Err(RecvError::Lagged(_))) => true,
            Ok(Ok(change)) => change.job_id == id && change.phase != Some(watched),
        };
        if recheck {
            // The change may predate the caller's read; only the stored phase counts.
            let wanted = id.to_owned();
            let current = uws.with_store(move |s| s.get(&wanted)).await?;
            if current.is_none_or(|job| job.phase != watched) {
                return Ok(());
            }
        }
    }
}

/// `POST /{job}` with `ACTION=DELETE`: destroys the job (for clients that cannot send DELETE).
async fn post_job(
    State(uws): State<Uws>,
    requester: Requester,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, UwsError> {
    let (mut parameters, _uploads) = params::read(&uws.store, request).await?;
    match params::take(&mut parameters, "ACTION").as_deref() {
        Some("DELETE") => {
            let job = uws.job(&requester, &id).await?;
            uws.destroy(job).await?;
            see_other(&requester.list_url)
        }
        Some(other) => Err(UwsError::BadRequest(format!(
            "ACTION: {other:?} is not supported; use DELETE"
        ))),
        None => Err(UwsError::BadRequest(
            "POST to a job needs ACTION=DELETE; parameters go to <job>/parameters".into(),
        )),
    }
}

/// `DELETE /{job}`: destroys the job; see other: the job list.
async fn delete_job(
    State(uws): State<Uws>,
    requester: Requester,
    Path(id): Path<String>,
) -> Result<Response, UwsError> {
    let job = uws.job(&requester, &id).await?;
    uws.destroy(job).await?;
    see_other(&requester.list_url)
}

async fn get_phase(
    State(uws): State<Uws>,
    requester: Requester,
    Path(id): Path<String>,
) -> Result<Response, UwsError> {
    let job = uws.job(&requester, &id).await?;
    Ok(plain_text(StatusCode::OK, job.phase.to_string()))
}

/// `POST /{job}/phase` with `PHASE=RUN` or `PHASE=ABORT`.
async fn post_phase(
    State(uws): State<Uws>,
    requester: Requester,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, UwsError> {
    let (mut parameters, _uploads) = params::read(&uws.store, request).await?;
    let action = params::take(&mut parameters, "PHASE");
    let job = uws.job(&requester, &id).await?;
    match action.as_deref() {
        Some("RUN") => uws.run(job).await?,
        Some("ABORT") => uws.abort(job).await?,
        Some(other) => {
            return Err(UwsError::BadRequest(format!(
                "PHASE: {other:?} is not RUN or ABORT"
            )));
        }
        None => {
            return Err(UwsError::BadRequest(
                "PHASE (RUN or ABORT) is missing".into(),
            ));
        }
    }
    see_other(&requester.job_url(&id))
}

async fn get_execution_duration(
    State(uws): State<Uws>,
    requester: Requester,
    Path(id): Path<String>,
) -> Result<Response, UwsError> {
    let job = uws.job(&requester, &id).await?;
    Ok(plain_text(
        StatusCode::OK,
        job.execution_duration.to_string(),
    ))
}

/// `POST /{job}/executionduration` with `EXECUTIONDURATION=<seconds>`, granted up to the
/// service maximum.
async fn post_execution_duration(
    State(uws): State<Uws>,
    requester: Requester,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, UwsError> {
    let (mut parameters, _uploads) = params::read(&uws.store, request).await?;
    let requested = params::take(&mut parameters, "EXECUTIONDURATION")
        .ok_or_else(|| UwsError::BadRequest("EXECUTIONDURATION is missing".into()))?;
    let seconds = requested.trim().parse::<u64>().map_err(|_| {
        UwsError::BadRequest(format!(
            "EXECUTIONDURATION: {requested:?} is not a non-negative number of seconds"
        ))
    })?;
    let job = uws.job(&requester, &id).await?;
    let granted = uws
        .config
        .grant_execution_duration(seconds, job.owner.as_deref());
    uws.with_store(move |s| s.set_execution_duration(&job.id, granted))
        .await?;
    see_other(&requester.job_url(&id))
}

async fn get_destruction(
    State(uws): State<Uws>,
    requester: Requester,
    Path(id): Path<String>,
) -> Result<Response, UwsError> {
    let job = uws.job(&requester, &id).await?;
    Ok(plain_text(StatusCode::OK, xml::timestamp(job.destruction)))
}

/// `POST /{job}/destruction` with `DESTRUCTION=<ISO 8601 time>`, granted up to the service
/// maximum.
async fn post_destruction(
    State(uws): State<Uws>,
    requester: Requester,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, UwsError> {
    let (mut parameters, _uploads) = params::read(&uws.store, request).await?;
    let requested = params::take(&mut parameters, "DESTRUCTION")
        .ok_or_else(|| UwsError::BadRequest("DESTRUCTION is missing".into()))?;
    let when = params::parse_timestamp(&requested).ok_or_else(|| {
        UwsError::BadRequest(format!(
            "DESTRUCTION: {requested:?} is not an ISO 8601 timestamp"
        ))
    })?;
    let job = uws.job(&requester, &id).await?;
    let granted = when.min(Utc::now() + uws.config.max_destruction);
    uws.with_store(move |s| s.set_destruction(&job.id, granted))
        .await?;
    see_other(&requester.job_url(&id))
}

/// `GET /{job}/error`: the error message as a DALI error VOTable (or plain text, by
/// configuration).
async fn get_error(
    State(uws): State<Uws>,
    requester: Requester,
    Path(id): Path<String>,
) -> Result<Response, UwsError> {
    let job = uws.job(&requester, &id).await?;
    let message = job
        .error
        .ok_or_else(|| UwsError::NotFound(format!("{id} error: the job has no error")))?;
    if uws.config.plain_text_errors {
        return Ok(plain_text(StatusCode::OK, message));
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-votable+xml")],
        crate::formats::error_votable(&message),
    )
        .into_response())
}

/// `GET /{job}/quote`: the predicted completion time, empty when unknown.
async fn get_quote(
    State(uws): State<Uws>,
    requester: Requester,
    Path(id): Path<String>,
) -> Result<Response, UwsError> {
    let job = uws.job(&requester, &id).await?;
    let quote = job.quote.map(xml::timestamp).unwrap_or_default();
    Ok(plain_text(StatusCode::OK, quote))
}

/// `GET /{job}/owner`: the owner's identity, empty for an anonymous job.
async fn get_owner(
    State(uws): State<Uws>,
    requester: Requester,
    Path(id): Path<String>,
) -> Result<Response, UwsError> {
    let job = uws.job(&requester, &id).await?;
    Ok(plain_text(StatusCode::OK, job.owner.unwrap_or_default()))
}

async fn get_results(
    State(uws): State<Uws>,
    requester: Requester,
    Path(id): Path<String>,
) -> Result<Response, UwsError> {
    let job = uws.job(&requester, &id).await?;
    Ok(xml_document(xml::results_document(
        &job,
        &requester.job_url(&job.id),
    )))
}

/// Bytes read from a result file per body chunk.
const RESULT_CHUNK: usize = 64 * 1024;

/// `GET /{job}/results/{result}`: the result file, streamed, with its media type.
async fn get_result(
    State(uws): State<Uws>,
    requester: Requester,
    Path((id, result_id)): Path<(String, String)>,
) -> Result<Response, UwsError> {
    let job = uws.job(&requester, &id).await?;
    let result = job
        .results
        .iter()
        .find(|r| r.id == result_id)
        .ok_or_else(|| UwsError::NotFound(format!("{id} result {result_id:?}")))?;
    let path = uws.store.result_path(&job.id, &result.file_name)?;
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(UwsError::NotFound(format!(
                "{id} result {result_id:?}: the file is gone"
            )));
        }
        Err(e) => {
            return Err(UwsError::Internal(format!(
                "cannot open {}: {e}",
                path.display()
            )));
        }
    };
    let length = file
        .metadata()
        .await
        .map_err(|e| UwsError::Internal(format!("cannot stat {}: {e}", path.display())))?
        .len();
    let chunks = futures::stream::try_unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut chunk = bytes::BytesMut::with_capacity(RESULT_CHUNK);
        let read = file.read_buf(&mut chunk).await?;
        Ok::<_, std::io::Error>((read > 0).then(|| (chunk.freeze(), file)))
    });
    let media_type = HeaderValue::from_str(&result.media_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, media_type),
            (header::CONTENT_LENGTH, HeaderValue::from(length)),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

async fn get_parameters(
    State(uws): State<Uws>,
    requester: Requester,
    Path(id): Path<String>,
) -> Result<Response, UwsError> {
    let job = uws.job(&requester, &id).await?;
    Ok(xml_document(xml::parameters_document(&job)))
}

/// `POST /{job}/parameters`: adds or replaces parameters (and uploaded files) of a PENDING
/// job.
async fn post_parameters(
    State(uws): State<Uws>,
    requester: Requester,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, UwsError> {
    let (parameters, uploads) = params::read(&uws.store, request).await?;
    let job = uws.job(&requester, &id).await?;
    uws.with_store(move |s| s.update_parameters(&job.id, parameters, uploads))
        .await?;
    see_other(&requester.job_url(&id))
}
