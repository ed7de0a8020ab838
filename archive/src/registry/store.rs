//! The registry in SQLite (`<data dir>/registry.sqlite3`): one row a dataset with its
//! data ID, location, checksum, observation and provenance, the input edges of the
//! provenance graph, and the HEALPix index cells of every footprint.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aster_adql::geometry::{Polygon, SkyPosition, SkyRegion};
use rusqlite::{Connection, OptionalExtension, Row, params};
use sha2::{Digest, Sha256};

use super::coverage::{INDEX_DEPTH, flat_cells, footprint_moc, region_moc};
use super::{DataId, Dataset, DatasetType, NewDataset, Observation, Provenance};

const SCHEMA_VERSION: i64 = 1;
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
pub const REGISTRY_FILE: &str = "registry.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dataset (
    id TEXT PRIMARY KEY NOT NULL,
    dataset_type TEXT NOT NULL,
    collection TEXT NOT NULL,
    instrument TEXT NOT NULL,
    exposure INTEGER,
    visit INTEGER,
    detector INTEGER,
    detector_name TEXT,
    band TEXT,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    format TEXT NOT NULL,
    stored INTEGER NOT NULL,
    created TEXT NOT NULL,
    metadata TEXT,
    task TEXT,
    run TEXT,
    config TEXT,
    software TEXT,
    obs_id TEXT,
    target_name TEXT,
    footprint TEXT,
    resolution REAL,
    xel1 INTEGER,
    xel2 INTEGER,
    t_min REAL,
    t_max REAL,
    exptime REAL,
    em_min REAL,
    em_max REAL
);
CREATE INDEX IF NOT EXISTS dataset_type_collection ON dataset(dataset_type, collection);
CREATE INDEX IF NOT EXISTS dataset_checksum ON dataset(checksum);
CREATE INDEX IF NOT EXISTS dataset_visit ON dataset(visit, detector);
CREATE TABLE IF NOT EXISTS dataset_input (
    dataset TEXT NOT NULL REFERENCES dataset(id) ON DELETE CASCADE,
    input TEXT NOT NULL REFERENCES dataset(id),
    PRIMARY KEY (dataset, input)
);
CREATE INDEX IF NOT EXISTS dataset_input_input ON dataset_input(input);
CREATE TABLE IF NOT EXISTS dataset_cell (
    cell INTEGER NOT NULL,
    dataset TEXT NOT NULL REFERENCES dataset(id) ON DELETE CASCADE,
    PRIMARY KEY (cell, dataset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS registry_version (version INTEGER NOT NULL);
";

const COLUMNS: &str = "id, dataset_type, collection, instrument, exposure, visit, detector, \
    detector_name, band, path, size, checksum, format, stored, created, metadata, task, run, \
    config, software, obs_id, target_name, footprint, resolution, xel1, xel2, t_min, t_max, \
    exptime, em_min, em_max";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dataset {id} is already registered: {reason}")]
    Conflict { id: String, reason: String },
    #[error("no dataset {0}")]
    NotFound(String),
    #[error(
        "dataset {id}: {path} is corrupt: its SHA-256 is {found}, the registry recorded {expected}"
    )]
    Checksum {
        id: String,
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("dataset {id}: {path} is not in the store")]
    Missing { id: String, path: PathBuf },
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, RegistryError>;

/// Which datasets a listing returns; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct DatasetFilter {
    pub types: Vec<DatasetType>,
    pub collections: Vec<String>,
    pub visit: Option<(i64, i64)>,
    pub detector: Option<i64>,
    pub band: Option<String>,
}

/// The registry of one data directory.
pub struct Registry {
    root: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("root", &self.root)
            .finish()
    }
}

/// Size and hex SHA-256 of a file, read in blocks.
pub fn file_checksum(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn footprint_text(f: &[SkyPosition]) -> String {
    serde_json::to_string(&f.iter().flat_map(|p| [p.ra(), p.dec()]).collect::<Vec<_>>())
        .expect("numbers serialize")
}

fn footprint_of(text: &str) -> Option<Vec<SkyPosition>> {
    let v: Vec<f64> = serde_json::from_str(text).ok()?;
    v.chunks_exact(2)
        .map(|c| SkyPosition::new(c[0], c[1]))
        .collect()
}

fn dataset_of(row: &Row) -> rusqlite::Result<Dataset> {
    let type_name: String = row.get(1)?;
    let dataset_type = DatasetType::parse(&type_name).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Text,
            format!("unknown dataset type {type_name}").into(),
        )
    })?;
    let json = |i: usize| -> rusqlite::Result<Option<serde_json::Value>> {
        Ok(row
            .get::<_, Option<String>>(i)?
            .and_then(|t| serde_json::from_str(&t).ok()))
    };
    let task: Option<String> = row.get(16)?;
    let provenance = match task {
        Some(task) => Some(Provenance {
            task,
            run: row.get::<_, Option<String>>(17)?.unwrap_or_default(),
            config: json(18)?.unwrap_or(serde_json::Value::Null),
            software: row.get::<_, Option<String>>(19)?.unwrap_or_default(),
            inputs: Vec::new(),
        }),
        None => None,
    };
    let obs_id: Option<String> = row.get(20)?;
    let observation = match obs_id {
        Some(obs_id) => Some(Observation {
            obs_id,
            target_name: row.get(21)?,
            footprint: row
                .get::<_, Option<String>>(22)?
                .as_deref()
                .and_then(footprint_of)
                .unwrap_or_default(),
            resolution: row.get(23)?,
            pixels: (row.get(24)?, row.get(25)?),
            t_min: row.get(26)?,
            t_max: row.get(27)?,
            exptime: row.get(28)?,
            em_min: row.get(29)?,
            em_max: row.get(30)?,
        }),
        None => None,
    };
    Ok(Dataset {
        id: row.get(0)?,
        dataset_type,
        collection: row.get(2)?,
        data_id: DataId {
            instrument: row.get(3)?,
            exposure: row.get(4)?,
            visit: row.get(5)?,
            detector: row.get(6)?,
            detector_name: row.get(7)?,
            band: row.get(8)?,
        },
        path: row.get(9)?,
        size: row.get::<_, i64>(10)? as u64,
        checksum: row.get(11)?,
        format: row.get(12)?,
        stored: row.get::<_, i64>(13)? != 0,
        created: row.get(14)?,
        metadata: json(15)?,
        provenance,
        observation,
    })
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

impl Registry {
    /// Opens (creating if needed) the registry of the data directory `root`.
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|source| RegistryError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let conn = Connection::open(root.join(REGISTRY_FILE))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")?;
        conn.execute_batch(SCHEMA)?;
        let version: Option<i64> = conn
            .query_row("SELECT version FROM registry_version", [], |r| r.get(0))
            .optional()?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO registry_version (version) VALUES (?1)",
                    [SCHEMA_VERSION],
                )?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(RegistryError::Invalid(format!(
                    "{} has layout {v}, newer than this Aster ({SCHEMA_VERSION})",
                    root.join(REGISTRY_FILE).display()
                )));
            }
            Some(_) => {}
        }
        Ok(Self {
            root: root.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The data directory locations are relative to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of a dataset.
    pub fn path_of(&self, d: &Dataset) -> PathBuf {
        self.root.join(&d.path)
    }

    /// Records a dataset whose file is written, taking its size and checksum. Recording
    /// the same file again is a no-op (a rerun); another file under the same ID, or inputs
    /// the registry does not know, are refused.
    pub fn register(&self, new: NewDataset) -> Result<Dataset> {
        let id = new.id();
        if !valid_part(&new.collection) || !valid_part(&new.data_id.key()) {
            return Err(RegistryError::Invalid(format!(
                "dataset {id}: collections and data IDs take letters, digits, - and _"
            )));
        }
        let file = self.root.join(&new.path);
        let (size, checksum) = file_checksum(&file).map_err(|source| RegistryError::Io {
            path: file.clone(),
            source,
        })?;
        if let Some(old) = self.get(&id)? {
            if old.checksum == checksum {
                return Ok(old);
            }
            return Err(RegistryError::Conflict {
                id,
                reason: format!("{} differs from the file recorded", file.display()),
            });
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let prov = new.provenance.as_ref();
        let obs = new.observation.as_ref();
        tx.execute(
            &format!(
                "INSERT INTO dataset ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
                 ?10, ?11, ?12, ?13, 1, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, \
                 ?25, ?26, ?27, ?28, ?29, ?30)"
            ),
            params![
                id,
                new.dataset_type.name(),
                new.collection,
                new.data_id.instrument,
                new.data_id.exposure,
                new.data_id.visit,
                new.data_id.detector,
                new.data_id.detector_name,
                new.data_id.band,
                new.path,
                size as i64,
                checksum,
                new.format,
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                new.metadata.as_ref().map(|m| m.to_string()),
                prov.map(|p| p.task.clone()),
                prov.map(|p| p.run.clone()),
                prov.map(|p| p.config.to_string()),
                prov.map(|p| p.software.clone()),
                obs.map(|o| o.obs_id.clone()),
                obs.and_then(|o| o.target_name.clone()),
                obs.map(|o| footprint_text(&o.footprint)),
                obs.and_then(|o| o.resolution),
                obs.map(|o| o.pixels.0),
                obs.map(|o| o.pixels.1),
                obs.map(|o| o.t_min),
                obs.map(|o| o.t_max),
                obs.map(|o| o.exptime),
                obs.and_then(|o| o.em_min),
                obs.and_then(|o| o.em_max),
            ],
        )?;
        for input in prov.map(|p| p.inputs.as_slice()).unwrap_or_default() {
            let known: Option<i64> = tx
                .query_row("SELECT 1 FROM dataset WHERE id = ?1", [input], |r| r.get(0))
                .optional()?;
            if known.is_none() {
                return Err(RegistryError::Invalid(format!(
                    "dataset {id}: its input {input} is not registered"
                )));
            }
            tx.execute(
                "INSERT OR IGNORE INTO dataset_input (dataset, input) VALUES (?1, ?2)",
                params![id, input],
            )?;
        }
        if let Some(moc) = obs.and_then(|o| footprint_moc(&o.footprint, INDEX_DEPTH)) {
            let mut stmt =
                tx.prepare("INSERT OR IGNORE INTO dataset_cell (cell, dataset) VALUES (?1, ?2)")?;
            for cell in flat_cells(&moc) {
                stmt.execute(params![cell as i64, id])?;
            }
        }
        tx.commit()?;
        drop(conn);
        self.get(&id)?.ok_or(RegistryError::NotFound(id))
    }

    /// Records a dataset, replacing an earlier record of the same ID whose file has
    /// changed (a product remade after an interrupted run). A dataset other datasets were
    /// made from cannot be replaced.
    pub fn replace(&self, new: NewDataset) -> Result<Dataset> {
        let id = new.id();
        match self.register(new.clone()) {
            Err(RegistryError::Conflict { .. }) => {
                let used_by: Option<String> = self
                    .conn()
                    .query_row(
                        "SELECT dataset FROM dataset_input WHERE input = ?1 LIMIT 1",
                        [&id],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(user) = used_by {
                    return Err(RegistryError::Conflict {
                        id,
                        reason: format!("its file changed, and {user} was made from it"),
                    });
                }
                self.conn()
                    .execute("DELETE FROM dataset WHERE id = ?1", [&id])?;
                self.register(new)
            }
            other => other,
        }
    }

    /// A dataset by ID, with its provenance's inputs.
    pub fn get(&self, id: &str) -> Result<Option<Dataset>> {
        let conn = self.conn();
        let d = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM dataset WHERE id = ?1"),
                [id],
                dataset_of,
            )
            .optional()?;
        let Some(mut d) = d else {
            return Ok(None);
        };
        if let Some(p) = d.provenance.as_mut() {
            let mut stmt =
                conn.prepare("SELECT input FROM dataset_input WHERE dataset = ?1 ORDER BY input")?;
            p.inputs = stmt
                .query_map([id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
        }
        Ok(Some(d))
    }

    /// The dataset already holding a file with these bytes, if any.
    pub fn find_by_checksum(&self, checksum: &str) -> Result<Option<Dataset>> {
        let id: Option<String> = self
            .conn()
            .query_row(
                "SELECT id FROM dataset WHERE checksum = ?1 LIMIT 1",
                [checksum],
                |r| r.get(0),
            )
            .optional()?;
        id.map_or(Ok(None), |id| self.get(&id))
    }

    fn select(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Dataset>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map(args, dataset_of)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Datasets matching `filter`, in ID order (without their provenance's inputs).
    pub fn list(&self, filter: &DatasetFilter) -> Result<Vec<Dataset>> {
        let mut all = self.select(&format!("SELECT {COLUMNS} FROM dataset ORDER BY id"), &[])?;
        all.retain(|d| {
            (filter.types.is_empty() || filter.types.contains(&d.dataset_type))
                && (filter.collections.is_empty() || filter.collections.contains(&d.collection))
                && filter
                    .visit
                    .is_none_or(|(lo, hi)| d.data_id.visit.is_some_and(|v| v >= lo && v <= hi))
                && filter
                    .detector
                    .is_none_or(|det| d.data_id.detector == Some(det))
                && filter
                    .band
                    .as_ref()
                    .is_none_or(|b| d.data_id.band.as_ref() == Some(b))
        });
        Ok(all)
    }

    /// Every dataset with an observation (the images ObsCore and SIAv2 publish).
    pub fn observations(&self) -> Result<Vec<Dataset>> {
        self.select(
            &format!("SELECT {COLUMNS} FROM dataset WHERE obs_id IS NOT NULL ORDER BY id"),
            &[],
        )
    }

    /// The images whose footprint meets `region`: the index cells narrow the candidates,
    /// then each footprint is tested exactly.
    pub fn overlapping(&self, region: &SkyRegion) -> Result<Vec<Dataset>> {
        let cells = flat_cells(&region_moc(region, INDEX_DEPTH));
        let mut ids: Vec<String> = Vec::new();
        {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT DISTINCT dataset FROM dataset_cell WHERE cell BETWEEN ?1 AND ?2",
            )?;
            // Runs of consecutive cells are one range scan each.
            let mut i = 0;
            while i < cells.len() {
                let mut j = i;
                while j + 1 < cells.len() && cells[j + 1] == cells[j] + 1 {
                    j += 1;
                }
                let found = stmt.query_map(params![cells[i] as i64, cells[j] as i64], |r| {
                    r.get::<_, String>(0)
                })?;
                for id in found {
                    ids.push(id?);
                }
                i = j + 1;
            }
        }
        ids.sort();
        ids.dedup();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(d) = self.get(&id)? else { continue };
            let meets = d
                .observation
                .as_ref()
                .and_then(|o| Polygon::new(o.footprint.clone()))
                .is_some_and(|p| region.intersects(&p));
            if meets {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// The depth map of a collection's images of one band (DMS-REQ-0326): how many of
    /// them cover each HEALPix cell of the index (order [`INDEX_DEPTH`]), by cell.
    pub fn depth_map(&self, collection: &str, band: &str) -> Result<Vec<(u64, u32)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT c.cell, COUNT(*) FROM dataset_cell c JOIN dataset d ON d.id = c.dataset \
             WHERE d.collection = ?1 AND d.band = ?2 GROUP BY c.cell ORDER BY c.cell",
        )?;
        let rows = stmt.query_map(params![collection, band], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u32))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The datasets made from `id` (its derivations).
    pub fn outputs(&self, id: &str) -> Result<Vec<Dataset>> {
        self.select(
            &format!(
                "SELECT {COLUMNS} FROM dataset WHERE id IN \
                 (SELECT dataset FROM dataset_input WHERE input = ?1) ORDER BY id"
            ),
            &[&id],
        )
    }

    /// The collections and how many datasets each holds.
    pub fn collections(&self) -> Result<Vec<(String, u64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT collection, COUNT(*) FROM dataset GROUP BY collection ORDER BY collection",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The dataset's file after checking that its bytes are the ones recorded.
    pub fn verified_path(&self, d: &Dataset) -> Result<PathBuf> {
        let path = self.path_of(d);
        let (_, found) = match file_checksum(&path) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RegistryError::Missing {
                    id: d.id.clone(),
                    path,
                });
            }
            Err(source) => return Err(RegistryError::Io { path, source }),
        };
        if found != d.checksum {
            return Err(RegistryError::Checksum {
                id: d.id.clone(),
                path,
                expected: d.checksum.clone(),
                found,
            });
        }
        Ok(path)
    }

    /// Marks whether the archive keeps a dataset's file (regenerated on demand when not).
    pub fn set_stored(&self, id: &str, stored: bool) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE dataset SET stored = ?2 WHERE id = ?1",
            params![id, i64::from(stored)],
        )?;
        if n == 0 {
            return Err(RegistryError::NotFound(id.to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::formats;

    fn pos(ra: f64, dec: f64) -> SkyPosition {
        SkyPosition::new(ra, dec).unwrap()
    }

    fn new(t: DatasetType, collection: &str, visit: i64, path: &str) -> NewDataset {
        NewDataset {
            dataset_type: t,
            collection: collection.into(),
            data_id: DataId {
                instrument: "AsterCam".into(),
                visit: Some(visit),
                detector: Some(11),
                detector_name: Some("R11".into()),
                band: Some("r".into()),
                ..Default::default()
            },
            path: path.into(),
            format: formats::FITS.into(),
            observation: Some(Observation {
                obs_id: format!("v{visit}"),
                target_name: None,
                footprint: vec![
                    pos(10.0, 0.0),
                    pos(10.2, 0.0),
                    pos(10.2, 0.2),
                    pos(10.0, 0.2),
                ],
                resolution: Some(0.8),
                pixels: (100, 100),
                t_min: 61000.0,
                t_max: 61000.001,
                exptime: 30.0,
                em_min: Some(552e-9),
                em_max: Some(691e-9),
            }),
            provenance: None,
            metadata: None,
        }
    }

    #[test]
    fn datasets_round_trip_with_provenance_and_checksums() {
        let dir = tempdir();
        std::fs::write(dir.join("raw.fits"), b"raw bytes").unwrap();
        std::fs::write(dir.join("pvi.fits"), b"pvi bytes").unwrap();
        let reg = Registry::open(&dir).unwrap();
        let raw = reg
            .register(new(DatasetType::Raw, "raw", 7, "raw.fits"))
            .unwrap();
        assert_eq!(raw.id, "raw.raw.7-R11-r");
        assert_eq!(raw.size, 9);
        // Again, the same bytes: a no-op; other bytes under the same ID: refused.
        assert_eq!(
            reg.register(new(DatasetType::Raw, "raw", 7, "raw.fits"))
                .unwrap(),
            raw
        );
        let mut pvi = new(DatasetType::Calexp, "run1", 7, "pvi.fits");
        pvi.provenance = Some(Provenance {
            task: "isr+characterize+measure".into(),
            run: "run1".into(),
            config: serde_json::json!({"threshold": 5.0}),
            software: "aster 0.1.0".into(),
            inputs: vec![raw.id.clone()],
        });
        let mut unknown = pvi.clone();
        unknown.provenance.as_mut().unwrap().inputs = vec!["raw.raw.8-R11-r".into()];
        assert!(matches!(
            reg.register(unknown),
            Err(RegistryError::Invalid(_))
        ));
        let pvi = reg.register(pvi).unwrap();
        assert_eq!(
            pvi.provenance.as_ref().unwrap().inputs,
            vec![raw.id.clone()]
        );
        assert_eq!(reg.outputs(&raw.id).unwrap()[0].id, pvi.id);
        assert_eq!(
            reg.find_by_checksum(&raw.checksum).unwrap().unwrap().id,
            raw.id
        );
        std::fs::write(dir.join("raw.fits"), b"raw bytez").unwrap();
        assert!(matches!(
            reg.register(new(DatasetType::Raw, "raw", 7, "raw.fits")),
            Err(RegistryError::Conflict { .. })
        ));
        assert!(matches!(
            reg.verified_path(&raw),
            Err(RegistryError::Checksum { .. })
        ));
        std::fs::remove_file(dir.join("raw.fits")).unwrap();
        assert!(matches!(
            reg.verified_path(&raw),
            Err(RegistryError::Missing { .. })
        ));
        assert!(reg.verified_path(&pvi).is_ok());

        // Spatial search: the index finds both, the exact test keeps only overlaps.
        let circle = |ra: f64, r: f64| {
            SkyRegion::Circle(aster_adql::geometry::Circle::new(pos(ra, 0.1), r).unwrap())
        };
        assert_eq!(reg.overlapping(&circle(10.1, 0.01)).unwrap().len(), 2);
        assert_eq!(reg.overlapping(&circle(10.25, 0.06)).unwrap().len(), 2);
        assert!(reg.overlapping(&circle(10.25, 0.04)).unwrap().is_empty());
        assert!(reg.overlapping(&circle(30.0, 1.0)).unwrap().is_empty());
        drop(reg);
        let reg = Registry::open(&dir).unwrap();
        assert_eq!(reg.collections().unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("aster-registry-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
