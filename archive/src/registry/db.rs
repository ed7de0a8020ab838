//! The registry's database: SQLite in the data directory by default, PostgreSQL by
//! configuration. Statements are written once, with `?N` placeholders (turned into `$N`
//! for PostgreSQL) and portable SQL; values cross as [`Param`] and [`Cell`].
//!
//! The `postgres` client blocks on a runtime of its own, which must not happen on a Tokio
//! worker: every PostgreSQL call runs on one dedicated thread that owns the connection.
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::types::{Value, ValueRef};

/// A value bound to a statement; the type travels with a NULL (PostgreSQL checks it).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Param {
    Text(Option<String>),
    Int(Option<i64>),
    Real(Option<f64>),
}

impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Param::Text(Some(v.to_string()))
    }
}
impl From<String> for Param {
    fn from(v: String) -> Self {
        Param::Text(Some(v))
    }
}
impl From<Option<String>> for Param {
    fn from(v: Option<String>) -> Self {
        Param::Text(v)
    }
}
impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Param::Int(Some(v))
    }
}
impl From<Option<i64>> for Param {
    fn from(v: Option<i64>) -> Self {
        Param::Int(v)
    }
}
impl From<Option<f64>> for Param {
    fn from(v: Option<f64>) -> Self {
        Param::Real(v)
    }
}

/// A value read back.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Null,
    Text(String),
    Int(i64),
    Real(f64),
}

/// A row read back, with typed accessors that take NULL as None.
#[derive(Debug, Clone)]
pub(super) struct Row(pub Vec<Cell>);

impl Row {
    pub fn text(&self, i: usize) -> Option<String> {
        match &self.0[i] {
            Cell::Text(t) => Some(t.clone()),
            _ => None,
        }
    }
    pub fn int(&self, i: usize) -> Option<i64> {
        match self.0[i] {
            Cell::Int(v) => Some(v),
            _ => None,
        }
    }
    pub fn real(&self, i: usize) -> Option<f64> {
        match self.0[i] {
            Cell::Real(v) => Some(v),
            Cell::Int(v) => Some(v as f64),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DbError(pub String);

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError(format!("SQLite: {e}"))
    }
}
impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> Self {
        DbError(format!("PostgreSQL: {e}"))
    }
}

type Job = Box<dyn FnOnce(&mut postgres::Client) + Send>;

pub(super) enum Db {
    Sqlite(Mutex<Connection>),
    Postgres(Mutex<mpsc::Sender<Job>>),
}

/// `?N` placeholders as PostgreSQL's `$N`.
fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

fn sqlite_value(p: &Param) -> Value {
    match p {
        Param::Text(Some(t)) => Value::Text(t.clone()),
        Param::Int(Some(i)) => Value::Integer(*i),
        Param::Real(Some(x)) => Value::Real(*x),
        _ => Value::Null,
    }
}

fn pg_params(ps: &[Param]) -> Vec<Box<dyn postgres::types::ToSql + Sync + Send>> {
    ps.iter()
        .map(|p| -> Box<dyn postgres::types::ToSql + Sync + Send> {
            match p {
                Param::Text(v) => Box::new(v.clone()),
                Param::Int(v) => Box::new(*v),
                Param::Real(v) => Box::new(*v),
            }
        })
        .collect()
}

fn pg_row(row: &postgres::Row) -> Result<Row, DbError> {
    use postgres::types::Type;
    let mut cells = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let t = col.type_();
        let cell = if *t == Type::TEXT || *t == Type::VARCHAR {
            row.try_get::<_, Option<String>>(i)?
                .map_or(Cell::Null, Cell::Text)
        } else if *t == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?
                .map_or(Cell::Null, Cell::Int)
        } else if *t == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)?
                .map_or(Cell::Null, |v| Cell::Int(v.into()))
        } else if *t == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(i)?
                .map_or(Cell::Null, Cell::Real)
        } else {
            return Err(DbError(format!(
                "column {} has type {t}, which the registry does not use",
                col.name()
            )));
        };
        cells.push(cell);
    }
    Ok(Row(cells))
}

impl Db {
    pub fn sqlite(path: &std::path::Path) -> Result<Self, DbError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")?;
        Ok(Db::Sqlite(Mutex::new(conn)))
    }

    /// Connects to PostgreSQL (a `postgresql://` URL) on a thread of its own.
    pub fn postgres(url: &str) -> Result<Self, DbError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), DbError>>();
        let url = url.to_string();
        std::thread::Builder::new()
            .name("aster-registry-pg".into())
            .spawn(move || {
                let mut client = match postgres::Client::connect(&url, postgres::NoTls) {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    job(&mut client);
                }
            })
            .map_err(|e| DbError(format!("starting the PostgreSQL thread: {e}")))?;
        ready_rx
            .recv()
            .map_err(|_| DbError("the PostgreSQL thread stopped".into()))??;
        Ok(Db::Postgres(Mutex::new(tx)))
    }

    fn sqlite_conn(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with the PostgreSQL client on its thread and waits for the answer.
    fn on_pg<T: Send + 'static>(
        tx: &Mutex<mpsc::Sender<Job>>,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DbError> {
        let (rtx, rrx) = mpsc::channel();
        tx.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(Box::new(move |c| {
                let _ = rtx.send(f(c));
            }))
            .map_err(|_| DbError("the PostgreSQL thread stopped".into()))?;
        rrx.recv()
            .map_err(|_| DbError("the PostgreSQL thread stopped".into()))?
    }

    /// Statements separated by `;`, without parameters (the schema).
    pub fn batch(&self, sql: &str) -> Result<(), DbError> {
        match self {
            Db::Sqlite(c) => Ok(Self::sqlite_conn(c).execute_batch(sql)?),
            Db::Postgres(tx) => {
                let sql = sql.to_string();
                Self::on_pg(tx, move |c| Ok(c.batch_execute(&sql)?))
            }
        }
    }

    pub fn query(&self, sql: &str, params: Vec<Param>) -> Result<Vec<Row>, DbError> {
        match self {
            Db::Sqlite(c) => {
                let conn = Self::sqlite_conn(c);
                let mut stmt = conn.prepare_cached(sql)?;
                let n = stmt.column_count();
                let rows = stmt.query_map(
                    rusqlite::params_from_iter(params.iter().map(sqlite_value)),
                    |r| {
                        (0..n)
                            .map(|i| {
                                Ok(match r.get_ref(i)? {
                                    ValueRef::Null | ValueRef::Blob(_) => Cell::Null,
                                    ValueRef::Integer(v) => Cell::Int(v),
                                    ValueRef::Real(v) => Cell::Real(v),
                                    ValueRef::Text(t) => {
                                        Cell::Text(String::from_utf8_lossy(t).into_owned())
                                    }
                                })
                            })
                            .collect::<rusqlite::Result<Vec<_>>>()
                            .map(Row)
                    },
                )?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            }
            Db::Postgres(tx) => {
                let sql = pg_sql(sql);
                Self::on_pg(tx, move |c| {
                    let owned = pg_params(&params);
                    let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                        owned.iter().map(|b| b.as_ref() as _).collect();
                    c.query(sql.as_str(), &refs)?.iter().map(pg_row).collect()
                })
            }
        }
    }

    pub fn execute(&self, sql: &str, params: Vec<Param>) -> Result<u64, DbError> {
        self.transaction(vec![(sql.to_string(), params)])
            .map(|counts| counts[0])
    }

    /// Runs the statements in one transaction: all or none. Returns the rows each changed.
    pub fn transaction(&self, stmts: Vec<(String, Vec<Param>)>) -> Result<Vec<u64>, DbError> {
        match self {
            Db::Sqlite(c) => {
                let mut conn = Self::sqlite_conn(c);
                let tx = conn.transaction()?;
                let mut counts = Vec::with_capacity(stmts.len());
                for (sql, params) in &stmts {
                    let n = tx
                        .prepare_cached(sql)?
                        .execute(rusqlite::params_from_iter(params.iter().map(sqlite_value)))?;
                    counts.push(n as u64);
                }
                tx.commit()?;
                Ok(counts)
            }
            Db::Postgres(tx) => Self::on_pg(tx, move |c| {
                let mut t = c.transaction()?;
                let mut counts = Vec::with_capacity(stmts.len());
                for (sql, params) in &stmts {
                    let owned = pg_params(params);
                    let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                        owned.iter().map(|b| b.as_ref() as _).collect();
                    counts.push(t.execute(pg_sql(sql).as_str(), &refs)?);
                }
                t.commit()?;
                Ok(counts)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_outside_nothing_else() {
        assert_eq!(
            pg_sql("SELECT a FROM t WHERE b = ?1 AND c = ?12 AND d = '?'"),
            "SELECT a FROM t WHERE b = $1 AND c = $12 AND d = '?'"
        );
    }
}
