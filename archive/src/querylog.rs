//! The query log (DMS-REQ-0345): every query with its owner, time, duration, row count,
//! status and error, kept in SQLite so users can read back their own history.
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum QueryLogError {
    #[error("query log: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("query log lock poisoned")]
    Poisoned,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogEntry {
    pub id: i64,
    /// None for anonymous callers.
    pub owner: Option<String>,
    /// ISO 8601 UTC start time.
    pub started: String,
    pub duration_ms: i64,
    pub rows: Option<i64>,
    /// "ok", "overflow", "error" or "aborted".
    pub status: String,
    pub error: Option<String>,
    pub query: String,
    pub mode: String,
    pub job_id: Option<String>,
}

#[derive(Clone)]
pub struct QueryLog {
    conn: Arc<Mutex<Connection>>,
}

/// A query about to run; `finish` records how it ended.
pub struct NewEntry<'a> {
    pub owner: Option<&'a str>,
    pub query: &'a str,
    pub mode: &'a str,
    pub job_id: Option<&'a str>,
}

impl QueryLog {
    pub fn open(path: &Path) -> Result<Self, QueryLogError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS query_log (
               id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT, started TEXT NOT NULL,
               duration_ms INTEGER NOT NULL DEFAULT 0, rows INTEGER, status TEXT NOT NULL,
               error TEXT, query TEXT NOT NULL, mode TEXT NOT NULL, job_id TEXT);
             CREATE INDEX IF NOT EXISTS query_log_owner ON query_log(owner, id);",
        )?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, QueryLogError> {
        self.conn.lock().map_err(|_| QueryLogError::Poisoned)
    }

    /// Records a query as running; returns its log id.
    pub fn start(&self, e: NewEntry<'_>) -> Result<i64, QueryLogError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO query_log (owner, started, status, query, mode, job_id) VALUES (?1, ?2, 'running', ?3, ?4, ?5)",
            params![e.owner, chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true), e.query, e.mode, e.job_id],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn finish(
        &self,
        id: i64,
        duration_ms: i64,
        rows: Option<i64>,
        status: &str,
        error: Option<&str>,
    ) -> Result<(), QueryLogError> {
        self.conn()?.execute(
            "UPDATE query_log SET duration_ms = ?2, rows = ?3, status = ?4, error = ?5 WHERE id = ?1",
            params![id, duration_ms, rows, status, error],
        )?;
        Ok(())
    }

    /// The newest `limit` entries, newest first: of one owner (`Some(None)`: the anonymous
    /// queries), or of everyone (`None`, for administrators).
    pub fn history(
        &self,
        owner: Option<Option<&str>>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, QueryLogError> {
        let conn = self.conn()?;
        let (filter, who) = match owner {
            Some(o) => ("WHERE owner IS ?1", o),
            None => ("WHERE ?1 IS NULL", None),
        };
        let mut stmt = conn.prepare(&format!(
            "SELECT id, owner, started, duration_ms, rows, status, error, query, mode, job_id
             FROM query_log {filter} ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![who, limit as i64], |r| {
            Ok(LogEntry {
                id: r.get(0)?,
                owner: r.get(1)?,
                started: r.get(2)?,
                duration_ms: r.get(3)?,
                rows: r.get(4)?,
                status: r.get(5)?,
                error: r.get(6)?,
                query: r.get(7)?,
                mode: r.get(8)?,
                job_id: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_per_owner_and_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("aster-qlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.sqlite");
        let log = QueryLog::open(&path).unwrap();
        let a = log
            .start(NewEntry {
                owner: Some("ann"),
                query: "SELECT 1",
                mode: "sync",
                job_id: None,
            })
            .unwrap();
        log.finish(a, 12, Some(1), "ok", None).unwrap();
        let b = log
            .start(NewEntry {
                owner: None,
                query: "SELECT x",
                mode: "sync",
                job_id: None,
            })
            .unwrap();
        log.finish(b, 3, None, "error", Some("no column x"))
            .unwrap();
        drop(log);
        let log = QueryLog::open(&path).unwrap();
        let ann = log.history(Some(Some("ann")), 10).unwrap();
        assert_eq!(ann.len(), 1);
        assert_eq!(ann[0].rows, Some(1));
        let anon = log.history(Some(None), 10).unwrap();
        assert_eq!(anon.len(), 1);
        assert_eq!(anon[0].error.as_deref(), Some("no column x"));
        assert_eq!(log.history(None, 10).unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
