//! The UWS job store: jobs, their parameters, uploaded files, phases and results, persisted in
//! SQLite.
//!
//! This module owns the job record and its life cycle rules: which phase may follow which (a
//! finished job never runs again), when parameters may change (only while PENDING), where a job's
//! files live on disk (`<store dir>/jobs/<job id>/`), and the notification of every phase change
//! to in-process listeners (UWS `WAIT` blocking, synchronous facades). It knows nothing of HTTP:
//! the UWS routes live in `aster-protocols`.
//!
//! Several services (TAP, SODA) share one store; every job carries the name of the service that
//! created it and service-wide queries take that name.

mod store;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, Utc};

pub use store::{JobStore, Uploads};

/// The UWS 1.1 execution phase of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Created, not yet asked to run; parameters may still change.
    Pending,
    /// Asked to run, waiting for a worker.
    Queued,
    /// Running.
    Executing,
    /// Finished successfully; results may be fetched.
    Completed,
    /// Failed; the error message says why.
    Error,
    /// Stopped by the client or by the service (execution duration exceeded).
    Aborted,
    /// The service does not know the job's state.
    Unknown,
    /// Asked to run but held back by the service.
    Held,
    /// Stopped by the service during execution, to be resumed.
    Suspended,
    /// Destroyed, with only its metadata kept.
    Archived,
}

impl Phase {
    /// Every phase, in the order of the UWS schema enumeration.
    pub const ALL: [Phase; 10] = [
        Phase::Pending,
        Phase::Queued,
        Phase::Executing,
        Phase::Completed,
        Phase::Error,
        Phase::Aborted,
        Phase::Unknown,
        Phase::Held,
        Phase::Suspended,
        Phase::Archived,
    ];

    /// The UWS spelling, e.g. `EXECUTING`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "PENDING",
            Phase::Queued => "QUEUED",
            Phase::Executing => "EXECUTING",
            Phase::Completed => "COMPLETED",
            Phase::Error => "ERROR",
            Phase::Aborted => "ABORTED",
            Phase::Unknown => "UNKNOWN",
            Phase::Held => "HELD",
            Phase::Suspended => "SUSPENDED",
            Phase::Archived => "ARCHIVED",
        }
    }

    /// Whether the job is over: nothing more will run and no results will be added.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Phase::Completed | Phase::Error | Phase::Aborted | Phase::Archived
        )
    }

    /// Whether the job has been committed to run and has not finished yet, so that a runner may
    /// hold work for it.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            Phase::Queued | Phase::Executing | Phase::Held | Phase::Suspended
        )
    }

    /// Whether a job in this phase may move to `to`. The store refuses every other change, so
    /// that for instance a runner finishing late cannot resurrect an aborted job.
    pub fn can_become(self, to: Phase) -> bool {
        use Phase::*;
        match self {
            Pending => matches!(to, Queued | Held | Error | Aborted),
            Held => matches!(to, Queued | Error | Aborted),
            Queued => matches!(to, Executing | Held | Completed | Error | Aborted),
            Executing => matches!(to, Completed | Error | Aborted | Suspended),
            Suspended => matches!(to, Executing | Queued | Error | Aborted),
            Unknown => matches!(to, Error | Aborted | Archived),
            Completed | Error | Aborted => to == Archived,
            Archived => false,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the UWS phase names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown UWS phase {0:?}")]
pub struct UnknownPhase(pub String);

impl FromStr for Phase {
    type Err = UnknownPhase;

    /// Parses the exact UWS spelling: DALI makes parameter values case-sensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPhase(s.to_owned()))
    }
}

/// One result of a job: a file in the job's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    /// The UWS result id, e.g. `result` (the TAP standard name).
    pub id: String,
    /// The file name inside the job's folder (see [`JobStore::result_path`]).
    pub file_name: String,
    /// The media type served with the file.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Number of table rows, when the result is a table.
    pub rows: Option<u64>,
}

/// A file received with a job's parameters: a multipart/form-data part that carried a file name
/// (TAP inline `UPLOAD=name,param:<part>`). The bytes are in the job's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFile {
    /// The multipart part name, as sent (the `<part>` of `param:<part>`).
    pub name: String,
    /// The file name inside the job's folder, chosen by the store (see [`JobStore::file_path`]).
    pub file_name: String,
    /// The media type the client declared for the part, `application/octet-stream` if none.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
}

/// A UWS job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The identifier chosen by the store: 32 lower-case hex digits.
    pub id: String,
    /// The client's RUNID, returned as given.
    pub run_id: Option<String>,
    /// The authenticated creator; `None` for anonymous jobs.
    pub owner: Option<String>,
    pub phase: Phase,
    pub creation_time: DateTime<Utc>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    /// Allowed run time in seconds; 0 means unlimited.
    pub execution_duration: u64,
    /// When the job and its files are to be deleted.
    pub destruction: DateTime<Utc>,
    /// Predicted completion time; `None` means "don't know".
    pub quote: Option<DateTime<Utc>>,
    /// Parameters in the order received, names lower-cased (DALI names are case-insensitive);
    /// a name may repeat.
    pub parameters: Vec<(String, String)>,
    /// Files received with the parameters.
    pub files: Vec<JobFile>,
    pub results: Vec<JobResult>,
    /// Why the job failed (or was aborted by the service).
    pub error: Option<String>,
    /// The service owning the job, e.g. `tap`.
    pub service: String,
}

impl Job {
    /// The values of parameter `name` (compared case-insensitively), in the order received.
    pub fn parameter_values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        self.parameters
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The last value of parameter `name` (compared case-insensitively): when a single-valued
    /// parameter is repeated, the later value wins.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameter_values(name).last()
    }

    /// The uploaded file sent as multipart part `name` (compared exactly); the later one if the
    /// part was sent twice.
    pub fn file(&self, name: &str) -> Option<&JobFile> {
        self.files.iter().rev().find(|f| f.name == name)
    }
}

/// The short description of a job shown in a job list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef {
    pub id: String,
    pub run_id: Option<String>,
    pub owner: Option<String>,
    pub phase: Phase,
    pub creation_time: DateTime<Utc>,
}

/// What is needed to create a job. It starts PENDING.
#[derive(Debug)]
pub struct NewJob {
    pub service: String,
    pub owner: Option<String>,
    pub run_id: Option<String>,
    /// Names are lower-cased by the store.
    pub parameters: Vec<(String, String)>,
    /// Files received with the parameters; moved into the job's folder.
    pub uploads: Option<Uploads>,
    pub execution_duration: u64,
    pub destruction: DateTime<Utc>,
}

/// A phase change or deletion, published by the store to every [`JobStore::subscribe`] receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseChange {
    pub job_id: String,
    pub service: String,
    /// The new phase; `None` when the job was deleted.
    pub phase: Option<Phase>,
}

/// Why a job store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobStoreError {
    #[error("job database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("job file error at {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no job {0}")]
    NotFound(String),
    #[error("job {id} is {from}: it cannot become {to}")]
    InvalidTransition { id: String, from: Phase, to: Phase },
    #[error("job {id} is {phase}: only a PENDING job can be changed")]
    NotPending { id: String, phase: Phase },
    #[error("invalid name {0:?}: use letters, digits, '.', '_', '-', and no leading '.'")]
    InvalidName(String),
    #[error("corrupt job record: {0}")]
    Corrupt(String),
}
