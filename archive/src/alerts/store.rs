//! The alert archive (DMS-REQ-0094, 0274): every alert kept as it was sent, findable by its
//! id (the DIASource's), its DIAObject and its time.
//!
//! Each archived visit is one Avro object container file under `<dir>/files/` (any Avro
//! reader opens it: one alert a block), and a SQLite index (`<dir>/alerts.sqlite3`) holds
//! where each alert's bytes are, with a sequence number in archive order. Alerts already
//! archived are never written again, so re-running a visit adds nothing twice. The file is
//! complete and renamed into place before its alerts are indexed, in one transaction: an
//! alert is either fully archived or not at all.
//!
//! Users' saved alert filters are kept here too.
//!
//! Distribution reads from here: each sink (Kafka, VOEvent, the filter service) keeps a
//! cursor, the sequence number of the last alert it delivered, so alerts archived while a
//! sink is down are delivered when it comes back, in order.
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use super::avro::{container_block, container_header};
use super::packet::AlertSchema;

#[derive(Debug, thiserror::Error)]
pub enum AlertArchiveError {
    #[error("alert archive: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("alert archive: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("alert archive: {0}")]
    Schema(#[from] super::avro::AvroError),
    #[error("alert archive lock poisoned")]
    Poisoned,
}

/// An alert to archive: its body is the Avro datum (no framing).
#[derive(Debug, Clone, Copy)]
pub struct NewAlert<'a> {
    pub alert_id: i64,
    pub dia_object_id: Option<i64>,
    /// For a DIASource of a known solar system object, that object.
    pub ss_object_id: Option<i64>,
    /// The DIASource's midpoint, MJD (TAI).
    pub mjd: f64,
    /// The galaxy most likely the DIASource's host, if any is near.
    pub host: Option<Host>,
    pub body: &'a [u8],
}

/// Of the galaxies near a DIASource (the Objects of the data release matched to it), the
/// one most likely the same object: for filters over where on a galaxy a change is, which
/// the alert schema does not carry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Host {
    pub object_id: i64,
    /// From the DIASource to the galaxy's centre, arcsec.
    pub dist: f64,
    /// ln of the probability that the DIASource is that galaxy's.
    pub ln_p: f64,
}

/// Where an archived alert is.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRef {
    pub seq: i64,
    pub alert_id: i64,
    pub dia_object_id: Option<i64>,
    pub ss_object_id: Option<i64>,
    pub visit: i64,
    pub mjd: f64,
    /// When it was archived, Unix seconds.
    pub archived_at: f64,
    pub host: Option<Host>,
    file: String,
    offset: u64,
    length: u64,
}

/// Which alerts to list, oldest first.
#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    pub since_mjd: Option<f64>,
    pub until_mjd: Option<f64>,
    pub dia_object_id: Option<i64>,
    pub ss_object_id: Option<i64>,
    /// Only alerts archived after this sequence number.
    pub after_seq: Option<i64>,
    pub limit: usize,
}

#[derive(Clone)]
pub struct AlertArchive {
    dir: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl AlertArchive {
    pub fn open(dir: &Path) -> Result<Self, AlertArchiveError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AlertArchiveError::Io { path, source }
        };
        std::fs::create_dir_all(dir.join("files")).map_err(io(dir))?;
        let conn = Connection::open(dir.join("alerts.sqlite3"))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS alert (
               seq INTEGER PRIMARY KEY AUTOINCREMENT,
               alert_id INTEGER NOT NULL UNIQUE,
               dia_object_id INTEGER,
               visit INTEGER NOT NULL,
               mjd REAL NOT NULL,
               file TEXT NOT NULL,
               offset INTEGER NOT NULL,
               length INTEGER NOT NULL,
               archived_at REAL NOT NULL);
             CREATE INDEX IF NOT EXISTS alert_object ON alert(dia_object_id, seq);
             CREATE INDEX IF NOT EXISTS alert_mjd ON alert(mjd);
             CREATE TABLE IF NOT EXISTS sink_cursor (
               sink TEXT PRIMARY KEY, seq INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS alert_filter (
               id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, name TEXT NOT NULL,
               expression TEXT NOT NULL, created TEXT NOT NULL, UNIQUE (owner, name));",
        )?;
        // Archives made before alerts were indexed by their solar system object, or had
        // their host, gain the columns (empty for the alerts already there). Another
        // process opening the same archive may add one first: then it is there, as wanted.
        for (column, kind) in [
            ("ss_object_id", "INTEGER"),
            ("host_object_id", "INTEGER"),
            ("host_dist", "REAL"),
            ("host_ln_p", "REAL"),
        ] {
            let has = conn
                .prepare("SELECT 1 FROM pragma_table_info('alert') WHERE name = ?1")?
                .exists([column])?;
            if !has
                && let Err(e) =
                    conn.execute_batch(&format!("ALTER TABLE alert ADD COLUMN {column} {kind};"))
                && !e.to_string().contains("duplicate column")
            {
                return Err(e.into());
            }
        }
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS alert_ss_object ON alert(ss_object_id, seq)
               WHERE ss_object_id IS NOT NULL;",
        )?;
        Ok(Self {
            dir: dir.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, AlertArchiveError> {
        self.conn.lock().map_err(|_| AlertArchiveError::Poisoned)
    }

    /// Archives a visit's alerts (those not archived already); returns how many were new.
    pub fn archive(
        &self,
        visit: i64,
        detector: i32,
        alerts: &[NewAlert],
    ) -> Result<usize, AlertArchiveError> {
        let fresh: Vec<&NewAlert> = {
            let conn = self.conn()?;
            let mut known = conn.prepare_cached("SELECT 1 FROM alert WHERE alert_id = ?1")?;
            let mut fresh = Vec::with_capacity(alerts.len());
            for a in alerts {
                if !known.exists([a.alert_id])? {
                    fresh.push(a);
                }
            }
            fresh
        };
        if fresh.is_empty() {
            return Ok(0);
        }
        let name = format!(
            "{visit}-{detector:03}-{}.avro",
            uuid::Uuid::new_v4().simple()
        );
        let path = self.dir.join("files").join(&name);
        let tmp = path.with_extension("avro.partial");
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| AlertArchiveError::Io { path: p, source }
        };
        let schema = AlertSchema::v11_1()?;
        let sync = *uuid::Uuid::new_v4().as_bytes();
        let mut offsets = Vec::with_capacity(fresh.len());
        {
            let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io(&tmp))?);
            let header = container_header(schema.json(), &sync);
            file.write_all(&header).map_err(io(&tmp))?;
            let mut at = header.len() as u64;
            let mut block = Vec::new();
            for a in &fresh {
                block.clear();
                container_block([a.body], &sync, &mut block);
                // The datum ends where the sync marker starts.
                let datum_start = at + (block.len() - 16 - a.body.len()) as u64;
                offsets.push((datum_start, a.body.len() as u64));
                file.write_all(&block).map_err(io(&tmp))?;
                at += block.len() as u64;
            }
            let file = file.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
            file.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let mut added = 0;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO alert (alert_id, dia_object_id, visit, mjd, file, offset, length, archived_at, ss_object_id, host_object_id, host_dist, host_ln_p)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for (a, (offset, length)) in fresh.iter().zip(&offsets) {
                added += insert.execute(params![
                    a.alert_id,
                    a.dia_object_id,
                    visit,
                    a.mjd,
                    name,
                    *offset as i64,
                    *length as i64,
                    now,
                    a.ss_object_id,
                    a.host.map(|h| h.object_id),
                    a.host.map(|h| h.dist),
                    a.host.map(|h| h.ln_p)
                ])?;
            }
        }
        tx.commit()?;
        Ok(added)
    }

    /// The alerts a query selects, oldest first (by archive order).
    pub fn find(&self, q: &AlertQuery) -> Result<Vec<AlertRef>, AlertArchiveError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT seq, alert_id, dia_object_id, visit, mjd, archived_at, file, offset, length, ss_object_id, host_object_id, host_dist, host_ln_p
             FROM alert
             WHERE (?1 IS NULL OR mjd >= ?1) AND (?2 IS NULL OR mjd < ?2)
               AND (?3 IS NULL OR dia_object_id = ?3) AND (?6 IS NULL OR ss_object_id = ?6)
               AND seq > coalesce(?4, 0)
             ORDER BY seq LIMIT ?5",
        )?;
        let rows = stmt.query_map(
            params![
                q.since_mjd,
                q.until_mjd,
                q.dia_object_id,
                q.after_seq,
                q.limit as i64,
                q.ss_object_id
            ],
            row_ref,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn get(&self, alert_id: i64) -> Result<Option<AlertRef>, AlertArchiveError> {
        let conn = self.conn()?;
        Ok(conn
            .prepare_cached(
                "SELECT seq, alert_id, dia_object_id, visit, mjd, archived_at, file, offset, length, ss_object_id, host_object_id, host_dist, host_ln_p
                 FROM alert WHERE alert_id = ?1",
            )?
            .query_row([alert_id], row_ref)
            .optional()?)
    }

    /// The bytes of an archived alert (its Avro datum).
    pub fn read(&self, a: &AlertRef) -> Result<Vec<u8>, AlertArchiveError> {
        let path = self.dir.join("files").join(&a.file);
        let io = |source| AlertArchiveError::Io {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::File::open(&path).map_err(io)?;
        f.seek(SeekFrom::Start(a.offset)).map_err(io)?;
        let mut body = vec![0; a.length as usize];
        f.read_exact(&mut body).map_err(io)?;
        Ok(body)
    }

    /// How many alerts are archived.
    pub fn count(&self) -> Result<i64, AlertArchiveError> {
        Ok(self
            .conn()?
            .query_row("SELECT count(*) FROM alert", [], |r| r.get(0))?)
    }

    /// The sequence number of the newest alert (0 when there is none).
    pub fn last_seq(&self) -> Result<i64, AlertArchiveError> {
        Ok(self
            .conn()?
            .query_row("SELECT coalesce(max(seq), 0) FROM alert", [], |r| r.get(0))?)
    }

    /// Saves a user's filter under a name of theirs; None when they have one by that name.
    pub fn add_filter(
        &self,
        owner: &str,
        name: &str,
        expression: &str,
    ) -> Result<Option<StoredFilter>, AlertArchiveError> {
        let conn = self.conn()?;
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let n = conn.execute(
            "INSERT OR IGNORE INTO alert_filter (owner, name, expression, created) VALUES (?1, ?2, ?3, ?4)",
            params![owner, name, expression, created],
        )?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(StoredFilter {
            id: conn.last_insert_rowid(),
            owner: owner.into(),
            name: name.into(),
            expression: expression.into(),
            created,
        }))
    }

    /// A user's filters, oldest first.
    pub fn filters(&self, owner: &str) -> Result<Vec<StoredFilter>, AlertArchiveError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, owner, name, expression, created FROM alert_filter WHERE owner = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([owner], stored_filter)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every user's filters, by id.
    pub fn all_filters(&self) -> Result<Vec<StoredFilter>, AlertArchiveError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, owner, name, expression, created FROM alert_filter ORDER BY id",
        )?;
        let rows = stmt.query_map([], stored_filter)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn filter(&self, id: i64) -> Result<Option<StoredFilter>, AlertArchiveError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT id, owner, name, expression, created FROM alert_filter WHERE id = ?1",
                [id],
                stored_filter,
            )
            .optional()?)
    }

    /// Deletes a user's filter; false when they have none with that id.
    pub fn delete_filter(&self, owner: &str, id: i64) -> Result<bool, AlertArchiveError> {
        Ok(self.conn()?.execute(
            "DELETE FROM alert_filter WHERE id = ?1 AND owner = ?2",
            params![id, owner],
        )? > 0)
    }

    /// The sequence number of the last alert `sink` delivered (0 before the first).
    pub fn cursor(&self, sink: &str) -> Result<i64, AlertArchiveError> {
        Ok(self
            .conn()?
            .query_row("SELECT seq FROM sink_cursor WHERE sink = ?1", [sink], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0))
    }

    /// Records that `sink` has delivered every alert up to `seq`.
    pub fn advance(&self, sink: &str, seq: i64) -> Result<(), AlertArchiveError> {
        self.conn()?.execute(
            "INSERT INTO sink_cursor (sink, seq) VALUES (?1, ?2)
             ON CONFLICT(sink) DO UPDATE SET seq = max(seq, excluded.seq)",
            params![sink, seq],
        )?;
        Ok(())
    }
}

/// A filter a user saved (DMS-REQ-0343), by name.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredFilter {
    pub id: i64,
    pub owner: String,
    pub name: String,
    pub expression: String,
    pub created: String,
}

fn stored_filter(r: &rusqlite::Row) -> rusqlite::Result<StoredFilter> {
    Ok(StoredFilter {
        id: r.get(0)?,
        owner: r.get(1)?,
        name: r.get(2)?,
        expression: r.get(3)?,
        created: r.get(4)?,
    })
}

fn row_ref(r: &rusqlite::Row) -> rusqlite::Result<AlertRef> {
    Ok(AlertRef {
        seq: r.get(0)?,
        alert_id: r.get(1)?,
        dia_object_id: r.get(2)?,
        ss_object_id: r.get(9)?,
        visit: r.get(3)?,
        mjd: r.get(4)?,
        archived_at: r.get(5)?,
        host: match (r.get(10)?, r.get(11)?, r.get(12)?) {
            (Some(object_id), Some(dist), Some(ln_p)) => Some(Host {
                object_id,
                dist,
                ln_p,
            }),
            _ => None,
        },
        file: r.get(6)?,
        offset: r.get::<_, i64>(7)? as u64,
        length: r.get::<_, i64>(8)? as u64,
    })
}
