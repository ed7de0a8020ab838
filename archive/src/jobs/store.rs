//! The SQLite-backed [`JobStore`] and the staging of uploaded files ([`Uploads`]).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::{Type, Value};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use tokio::sync::broadcast;

use super::{Job, JobFile, JobRef, JobResult, JobStoreError, NewJob, Phase, PhaseChange};

/// Bumped when the table layout changes; `open` refuses a database from a newer layout.
const SCHEMA_VERSION: i64 = 1;

/// How long a writer waits for another process holding the database lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Phase changes kept for slow subscribers; one that falls further behind sees
/// `RecvError::Lagged` and must re-read the jobs it watches.
const CHANGE_CAPACITY: usize = 1024;

/// Folder under the jobs folder where uploads wait for their job (job ids never start with '.').
const INCOMING_DIR: &str = ".incoming";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY NOT NULL,
    service TEXT NOT NULL,
    run_id TEXT,
    owner TEXT,
    phase TEXT NOT NULL,
    creation_time INTEGER NOT NULL,
    start_time INTEGER,
    end_time INTEGER,
    execution_duration INTEGER NOT NULL,
    destruction INTEGER NOT NULL,
    quote INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_service_creation ON jobs (service, creation_time);
CREATE INDEX IF NOT EXISTS jobs_by_destruction ON jobs (destruction);
CREATE TABLE IF NOT EXISTS job_parameters (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (job_id, position)
);
CREATE TABLE IF NOT EXISTS job_files (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    file_name TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (job_id, position)
);
CREATE TABLE IF NOT EXISTS job_results (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    result_id TEXT NOT NULL,
    file_name TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    rows INTEGER,
    PRIMARY KEY (job_id, position)
);
";

const JOB_COLUMNS: &str = "id, service, run_id, owner, phase, creation_time, start_time, end_time, \
     execution_duration, destruction, quote, error";

/// The job store: a cheap-to-clone, thread-safe handle on one SQLite database and the folder of
/// job files beside it.
///
/// Calls block on SQLite (and, for deletions and uploads, on the file system); async callers run
/// them with `tokio::task::spawn_blocking`. Every phase change is published to the receivers of
/// [`JobStore::subscribe`].
#[derive(Clone)]
pub struct JobStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    jobs_dir: PathBuf,
    changes: broadcast::Sender<PhaseChange>,
}

impl fmt::Debug for JobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobStore")
            .field("jobs_dir", &self.inner.jobs_dir)
            .finish_non_exhaustive()
    }
}

impl JobStore {
    /// Opens (creating if needed) the database at `path` and the jobs folder `jobs/` beside it.
    /// Uploads left staged by a previous process are removed.
    pub fn open(path: &Path) -> Result<Self, JobStoreError> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let jobs_dir = dir.join("jobs");
        std::fs::create_dir_all(&jobs_dir).map_err(|source| JobStoreError::Io {
            path: jobs_dir.clone(),
            source,
        })?;
        let incoming = jobs_dir.join(INCOMING_DIR);
        remove_dir_if_present(&incoming)?;

        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL lets readers (job list, WAIT polls) proceed while a runner writes.
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(JobStoreError::Corrupt(format!(
                "database schema version {version} is newer than this program's {SCHEMA_VERSION}"
            )));
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;

        let (changes, _) = broadcast::channel(CHANGE_CAPACITY);
        Ok(JobStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                jobs_dir,
                changes,
            }),
        })
    }

    /// The folder holding one sub-folder per job.
    pub fn jobs_dir(&self) -> &Path {
        &self.inner.jobs_dir
    }

    /// The folder of job `id` (created with the job, removed with it).
    pub fn job_dir(&self, id: &str) -> Result<PathBuf, JobStoreError> {
        check_name(id)?;
        Ok(self.inner.jobs_dir.join(id))
    }

    /// Where the runner writes result file `file_name` of job `id`. The name must be a plain file
    /// name: no path separators, no leading '.'.
    pub fn result_path(&self, id: &str, file_name: &str) -> Result<PathBuf, JobStoreError> {
        check_name(file_name)?;
        Ok(self.job_dir(id)?.join(file_name))
    }

    /// Where the bytes of an uploaded file of job `id` are.
    pub fn file_path(&self, id: &str, file: &JobFile) -> Result<PathBuf, JobStoreError> {
        self.result_path(id, &file.file_name)
    }

    /// A receiver of every phase change (and deletion) made through this store from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<PhaseChange> {
        self.inner.changes.subscribe()
    }

    /// An empty staging area for files arriving before their job exists or may take them. The
    /// folder is only created when the caller writes the first file into it.
    pub fn uploads(&self) -> Uploads {
        let dir = self
            .inner
            .jobs_dir
            .join(INCOMING_DIR)
            .join(uuid::Uuid::new_v4().simple().to_string());
        Uploads {
            dir,
            files: Vec::new(),
        }
    }

    /// Creates a PENDING job, its folder, and moves the uploaded files into it.
    pub fn create(&self, new: NewJob) -> Result<Job, JobStoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = self.job_dir(&id)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO jobs (id, service, run_id, owner, phase, creation_time, \
             execution_duration, destruction) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                id,
                new.service,
                new.run_id,
                new.owner,
                Phase::Pending.as_str(),
                Utc::now().timestamp_micros(),
                to_i64(new.execution_duration),
                new.destruction.timestamp_micros(),
            ],
        )?;
        insert_parameters(&tx, &id, 0, &new.parameters)?;
        std::fs::create_dir_all(&dir).map_err(|source| JobStoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let adopted = new
            .uploads
            .map_or(Ok(()), |uploads| adopt_uploads(&tx, &id, &dir, 0, uploads))
            .and_then(|()| Ok(tx.commit()?));
        if let Err(e) = adopted {
            // The job row was rolled back with the transaction; its folder goes too.
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        read_job(&conn, &id)?.ok_or(JobStoreError::NotFound(id))
    }

    /// The job `id`, if it exists.
    pub fn get(&self, id: &str) -> Result<Option<Job>, JobStoreError> {
        read_job(&self.conn(), id)
    }

    /// The jobs of `service` owned by `owner` (`None`: the anonymous jobs), as UWS 1.1 filters
    /// them: `phases` keeps jobs in any of those phases (empty: every phase but ARCHIVED),
    /// `after` keeps jobs created strictly later, and `last` keeps the `last` most recently
    /// created. Jobs come oldest first, except with `last` where they come most recent first.
    pub fn list(
        &self,
        service: &str,
        owner: Option<&str>,
        phases: &[Phase],
        after: Option<DateTime<Utc>>,
        last: Option<usize>,
    ) -> Result<Vec<JobRef>, JobStoreError> {
        let mut sql = String::from(
            "SELECT id, run_id, owner, phase, creation_time FROM jobs WHERE service = ?",
        );
        let mut values = vec![Value::Text(service.to_owned())];
        match owner {
            Some(owner) => {
                sql.push_str(" AND owner = ?");
                values.push(Value::Text(owner.to_owned()));
            }
            None => sql.push_str(" AND owner IS NULL"),
        }
        if phases.is_empty() {
            sql.push_str(" AND phase <> ?");
            values.push(Value::Text(Phase::Archived.as_str().to_owned()));
        } else {
            let marks = vec!["?"; phases.len()].join(", ");
            sql.push_str(&format!(" AND phase IN ({marks})"));
            values.extend(phases.iter().map(|p| Value::Text(p.as_str().to_owned())));
        }
        if let Some(after) = after {
            sql.push_str(" AND creation_time > ?");
            values.push(Value::Integer(after.timestamp_micros()));
        }
        match last {
            Some(last) => {
                sql.push_str(" ORDER BY creation_time DESC, rowid DESC LIMIT ?");
                values.push(Value::Integer(i64::try_from(last).unwrap_or(i64::MAX)));
            }
            None => sql.push_str(" ORDER BY creation_time, rowid"),
        }
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(values), |row| {
            Ok(JobRef {
                id: row.get(0)?,
                run_id: row.get(1)?,
                owner: row.get(2)?,
                phase: phase_column(row, 3)?,
                creation_time: time_column(row, 4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Moves job `id` to phase `to` if its current phase allows it ([`Phase::can_become`]),
    /// stamping the start time on first entering EXECUTING and the end time on entering a final
    /// phase.
    pub fn set_phase(&self, id: &str, to: Phase) -> Result<Job, JobStoreError> {
        self.change_phase(id, to, None, &[])
    }

    /// Marks job `id` as EXECUTING (from QUEUED, or SUSPENDED when resuming).
    pub fn start(&self, id: &str) -> Result<Job, JobStoreError> {
        self.change_phase(id, Phase::Executing, None, &[])
    }

    /// Marks job `id` as COMPLETED with `results` (files already written with
    /// [`JobStore::result_path`]).
    pub fn complete(&self, id: &str, results: Vec<JobResult>) -> Result<Job, JobStoreError> {
        self.change_phase(id, Phase::Completed, None, &results)
    }

    /// Marks job `id` as ERROR with `message`, shown to the client as the error summary.
    pub fn fail(&self, id: &str, message: &str) -> Result<Job, JobStoreError> {
        self.change_phase(id, Phase::Error, Some(message), &[])
    }

    /// Marks job `id` as ABORTED; `reason` says why when the service, not the client, aborts
    /// (e.g. execution duration exceeded). The caller cancels the running work.
    pub fn abort(&self, id: &str, reason: Option<&str>) -> Result<Job, JobStoreError> {
        self.change_phase(id, Phase::Aborted, reason, &[])
    }

    fn change_phase(
        &self,
        id: &str,
        to: Phase,
        error: Option<&str>,
        results: &[JobResult],
    ) -> Result<Job, JobStoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (from, service) = current_phase(&tx, id)?;
        if !from.can_become(to) {
            return Err(JobStoreError::InvalidTransition {
                id: id.to_owned(),
                from,
                to,
            });
        }
        let now = Utc::now().timestamp_micros();
        tx.execute(
            "UPDATE jobs SET phase = ?2, \
             start_time = CASE WHEN ?3 AND start_time IS NULL THEN ?5 ELSE start_time END, \
             end_time = CASE WHEN ?4 THEN ?5 ELSE end_time END, \
             error = COALESCE(?6, error) \
             WHERE id = ?1",
            params![
                id,
                to.as_str(),
                to == Phase::Executing,
                to.is_final(),
                now,
                error
            ],
        )?;
        let first = next_position(&tx, "job_results", id)?;
        for (position, result) in (first..).zip(results) {
            tx.execute(
                "INSERT INTO job_results (job_id, position, result_id, file_name, media_type, \
                 size, rows) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id,
                    position,
                    result.id,
                    result.file_name,
                    result.media_type,
                    to_i64(result.size),
                    result.rows.map(to_i64),
                ],
            )?;
        }
        tx.commit()?;
        let job = read_job(&conn, id)?.ok_or_else(|| JobStoreError::NotFound(id.to_owned()))?;
        drop(conn);
        self.publish(id, service, Some(to));
        Ok(job)
    }

    /// Adds parameters and uploaded files to PENDING job `id`. A parameter name given here
    /// replaces every earlier value of that name (compared case-insensitively); an uploaded
    /// file replaces an earlier file of the same part name.
    pub fn update_parameters(
        &self,
        id: &str,
        parameters: Vec<(String, String)>,
        uploads: Option<Uploads>,
    ) -> Result<Job, JobStoreError> {
        let dir = self.job_dir(id)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (phase, _) = current_phase(&tx, id)?;
        if phase != Phase::Pending {
            return Err(JobStoreError::NotPending {
                id: id.to_owned(),
                phase,
            });
        }
        let names: HashSet<String> = parameters
            .iter()
            .map(|(name, _)| name.to_lowercase())
            .collect();
        for name in &names {
            tx.execute(
                "DELETE FROM job_parameters WHERE job_id = ?1 AND name = ?2",
                params![id, name],
            )?;
        }
        let first = next_position(&tx, "job_parameters", id)?;
        insert_parameters(&tx, id, first, &parameters)?;

        let mut replaced = Vec::new();
        if let Some(uploads) = uploads {
            // Numbered before the replaced rows go, so that a new file never takes the name of
            // one about to be removed.
            let first = next_position(&tx, "job_files", id)?;
            let mut stmt = tx.prepare(
                "DELETE FROM job_files WHERE job_id = ?1 AND name = ?2 RETURNING file_name",
            )?;
            for staged in &uploads.files {
                let old =
                    stmt.query_map(params![id, staged.name], |row| row.get::<_, String>(0))?;
                for file_name in old {
                    replaced.push(file_name?);
                }
            }
            drop(stmt);
            adopt_uploads(&tx, id, &dir, first, uploads)?;
        }
        tx.commit()?;
        for file_name in replaced {
            // Only the row matters to the job; a file left behind goes with the job's folder.
            let _ = std::fs::remove_file(dir.join(file_name));
        }
        read_job(&conn, id)?.ok_or_else(|| JobStoreError::NotFound(id.to_owned()))
    }

    /// Sets the execution duration (seconds, 0 = unlimited) of PENDING job `id`: a runner reads
    /// it when the job starts, so a later change would not take effect.
    pub fn set_execution_duration(&self, id: &str, seconds: u64) -> Result<Job, JobStoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (phase, _) = current_phase(&tx, id)?;
        if phase != Phase::Pending {
            return Err(JobStoreError::NotPending {
                id: id.to_owned(),
                phase,
            });
        }
        tx.execute(
            "UPDATE jobs SET execution_duration = ?2 WHERE id = ?1",
            params![id, to_i64(seconds)],
        )?;
        tx.commit()?;
        read_job(&conn, id)?.ok_or_else(|| JobStoreError::NotFound(id.to_owned()))
    }

    /// Sets when job `id` is to be destroyed.
    pub fn set_destruction(&self, id: &str, when: DateTime<Utc>) -> Result<Job, JobStoreError> {
        self.update_column(id, "destruction", Some(when))
    }

    /// Sets the predicted completion time of job `id` (`None`: don't know).
    pub fn set_quote(&self, id: &str, quote: Option<DateTime<Utc>>) -> Result<Job, JobStoreError> {
        self.update_column(id, "quote", quote)
    }

    fn update_column(
        &self,
        id: &str,
        column: &'static str,
        time: Option<DateTime<Utc>>,
    ) -> Result<Job, JobStoreError> {
        let conn = self.conn();
        let changed = conn.execute(
            &format!("UPDATE jobs SET {column} = ?2 WHERE id = ?1"),
            params![id, time.map(|t| t.timestamp_micros())],
        )?;
        if changed == 0 {
            return Err(JobStoreError::NotFound(id.to_owned()));
        }
        read_job(&conn, id)?.ok_or_else(|| JobStoreError::NotFound(id.to_owned()))
    }

    /// Deletes job `id` with its folder; returns whether it existed. The caller cancels any
    /// running work first.
    pub fn delete(&self, id: &str) -> Result<bool, JobStoreError> {
        let dir = self.job_dir(id)?;
        let service: Option<String> = self
            .conn()
            .query_row(
                "DELETE FROM jobs WHERE id = ?1 RETURNING service",
                [id],
                |row| row.get(0),
            )
            .optional()?;
        remove_dir_if_present(&dir)?;
        match service {
            Some(service) => {
                self.publish(id, service, None);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The jobs of `service` whose destruction time is `now` or earlier.
    pub fn expired(&self, service: &str, now: DateTime<Utc>) -> Result<Vec<String>, JobStoreError> {
        self.ids(
            "SELECT id FROM jobs WHERE service = ?1 AND destruction <= ?2 ORDER BY destruction",
            service,
            now,
        )
    }

    /// The EXECUTING jobs of `service` that have run longer than their execution duration.
    pub fn overrun(&self, service: &str, now: DateTime<Utc>) -> Result<Vec<String>, JobStoreError> {
        self.ids(
            "SELECT id FROM jobs WHERE service = ?1 AND phase = 'EXECUTING' \
             AND execution_duration > 0 AND start_time + execution_duration * 1000000 < ?2 \
             ORDER BY start_time",
            service,
            now,
        )
    }

    fn ids(
        &self,
        sql: &str,
        service: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, JobStoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map(params![service, now.timestamp_micros()], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// After a restart, puts the jobs of `service` that a dead process left QUEUED or EXECUTING
    /// back to QUEUED (forgetting their start time) and returns their ids, oldest first, for
    /// the service to run again.
    pub fn recover_after_restart(&self, service: &str) -> Result<Vec<String>, JobStoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut ordered: Vec<(i64, String)> = {
            let mut stmt = tx.prepare(
                "UPDATE jobs SET phase = 'QUEUED', start_time = NULL \
                 WHERE service = ?1 AND phase IN ('QUEUED', 'EXECUTING') \
                 RETURNING creation_time, id",
            )?;
            let rows = stmt.query_map([service], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        tx.commit()?;
        drop(conn);
        // RETURNING gives no order guarantee; the oldest job has waited longest.
        ordered.sort();
        let ids: Vec<String> = ordered.into_iter().map(|(_, id)| id).collect();
        for id in &ids {
            self.publish(id, service.to_owned(), Some(Phase::Queued));
        }
        Ok(ids)
    }

    fn publish(&self, id: &str, service: String, phase: Option<Phase>) {
        // Sending fails only when nobody listens, which is the usual case.
        let _ = self.inner.changes.send(PhaseChange {
            job_id: id.to_owned(),
            service,
            phase,
        });
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back on drop), so a poisoned lock is still usable.
        self.inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Files received with a request (multipart parts with a file name), staged in a private folder
/// under the jobs folder until [`JobStore::create`] or [`JobStore::update_parameters`] moves them
/// into a job's folder. Whatever is left is deleted when this value is dropped.
#[derive(Debug)]
pub struct Uploads {
    dir: PathBuf,
    files: Vec<StagedFile>,
}

#[derive(Debug)]
struct StagedFile {
    name: String,
    media_type: String,
    size: u64,
    path: PathBuf,
}

impl Uploads {
    /// The staging folder; the caller creates it before writing the first file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where to write the next file, to be registered with [`Uploads::add`] once written.
    pub fn next_path(&self) -> PathBuf {
        self.dir.join(format!("part_{}", self.files.len()))
    }

    /// Registers the file just written at [`Uploads::next_path`], received as multipart part
    /// `name` with `media_type`.
    pub fn add(&mut self, name: String, media_type: String, size: u64) {
        let path = self.next_path();
        self.files.push(StagedFile {
            name,
            media_type,
            size,
            path,
        });
    }
}

impl Drop for Uploads {
    fn drop(&mut self) {
        // Best effort: a leftover folder is removed at the next `JobStore::open`.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Moves staged files into the job folder `dir`, naming them `upload_<position>`, and records
/// them. On error the caller's transaction rolls back.
fn adopt_uploads(
    tx: &Transaction<'_>,
    id: &str,
    dir: &Path,
    first: i64,
    uploads: Uploads,
) -> Result<(), JobStoreError> {
    for (position, staged) in (first..).zip(&uploads.files) {
        let file_name = format!("upload_{position}");
        let target = dir.join(&file_name);
        std::fs::rename(&staged.path, &target).map_err(|source| JobStoreError::Io {
            path: target.clone(),
            source,
        })?;
        tx.execute(
            "INSERT INTO job_files (job_id, position, name, file_name, media_type, size) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                position,
                staged.name,
                file_name,
                staged.media_type,
                to_i64(staged.size)
            ],
        )?;
    }
    Ok(())
}

fn insert_parameters(
    tx: &Transaction<'_>,
    id: &str,
    first: i64,
    parameters: &[(String, String)],
) -> Result<(), JobStoreError> {
    let mut stmt = tx.prepare(
        "INSERT INTO job_parameters (job_id, position, name, value) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (position, (name, value)) in (first..).zip(parameters) {
        stmt.execute(params![id, position, name.to_lowercase(), value])?;
    }
    Ok(())
}

/// The position after the last row of job `id` in `table` (one of the job_* tables).
fn next_position(
    tx: &Transaction<'_>,
    table: &'static str,
    id: &str,
) -> Result<i64, JobStoreError> {
    Ok(tx.query_row(
        &format!("SELECT COALESCE(MAX(position) + 1, 0) FROM {table} WHERE job_id = ?1"),
        [id],
        |row| row.get(0),
    )?)
}

fn current_phase(tx: &Transaction<'_>, id: &str) -> Result<(Phase, String), JobStoreError> {
    tx.query_row(
        "SELECT phase, service FROM jobs WHERE id = ?1",
        [id],
        |row| Ok((phase_column(row, 0)?, row.get(1)?)),
    )
    .optional()?
    .ok_or_else(|| JobStoreError::NotFound(id.to_owned()))
}

fn read_job(conn: &Connection, id: &str) -> Result<Option<Job>, JobStoreError> {
    let job = conn
        .query_row(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
            [id],
            |row| {
                Ok(Job {
                    id: row.get(0)?,
                    service: row.get(1)?,
                    run_id: row.get(2)?,
                    owner: row.get(3)?,
                    phase: phase_column(row, 4)?,
                    creation_time: time_column(row, 5)?,
                    start_time: optional_time_column(row, 6)?,
                    end_time: optional_time_column(row, 7)?,
                    execution_duration: to_u64(row.get(8)?),
                    destruction: time_column(row, 9)?,
                    quote: optional_time_column(row, 10)?,
                    error: row.get(11)?,
                    parameters: Vec::new(),
                    files: Vec::new(),
                    results: Vec::new(),
                })
            },
        )
        .optional()?;
    let Some(mut job) = job else {
        return Ok(None);
    };

    let mut stmt =
        conn.prepare("SELECT name, value FROM job_parameters WHERE job_id = ?1 ORDER BY position")?;
    job.parameters = stmt
        .query_map([id], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;

    let mut stmt = conn.prepare(
        "SELECT name, file_name, media_type, size FROM job_files WHERE job_id = ?1 \
         ORDER BY position",
    )?;
    job.files = stmt
        .query_map([id], |row| {
            Ok(JobFile {
                name: row.get(0)?,
                file_name: row.get(1)?,
                media_type: row.get(2)?,
                size: to_u64(row.get(3)?),
            })
        })?
        .collect::<Result<_, _>>()?;

    let mut stmt = conn.prepare(
        "SELECT result_id, file_name, media_type, size, rows FROM job_results WHERE job_id = ?1 \
         ORDER BY position",
    )?;
    job.results = stmt
        .query_map([id], |row| {
            Ok(JobResult {
                id: row.get(0)?,
                file_name: row.get(1)?,
                media_type: row.get(2)?,
                size: to_u64(row.get(3)?),
                rows: row.get::<_, Option<i64>>(4)?.map(to_u64),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(job))
}

fn phase_column(row: &Row<'_>, index: usize) -> rusqlite::Result<Phase> {
    let text: String = row.get(index)?;
    text.parse()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(e)))
}

fn time_column(row: &Row<'_>, index: usize) -> rusqlite::Result<DateTime<Utc>> {
    micros_to_time(index, row.get(index)?)
}

fn optional_time_column(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    row.get::<_, Option<i64>>(index)?
        .map(|micros| micros_to_time(index, micros))
        .transpose()
}

fn micros_to_time(index: usize, micros: i64) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            Type::Integer,
            format!("timestamp {micros} µs is out of range").into(),
        )
    })
}

/// SQLite integers are signed; counts beyond i64 do not occur, so saturate rather than fail.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Accepts a plain file or folder name (job ids, result and upload file names), so that names
/// coming from URLs can never reach outside the jobs folder.
fn check_name(name: &str) -> Result<(), JobStoreError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(JobStoreError::InvalidName(name.to_owned()))
    }
}

fn remove_dir_if_present(dir: &Path) -> Result<(), JobStoreError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(JobStoreError::Io {
            path: dir.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}
