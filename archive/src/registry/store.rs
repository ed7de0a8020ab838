//! The registry's tables (in SQLite at `<data dir>/registry.sqlite3`, or in PostgreSQL):
//! one row a dataset with its data ID, location, checksum, observation and provenance, the
//! input edges of the provenance graph, and the HEALPix index cells of every footprint.
use std::io::Read;
use std::path::{Path, PathBuf};

use aster_adql::geometry::{Polygon, SkyPosition, SkyRegion};
use sha2::{Digest, Sha256};

use super::coverage::{INDEX_DEPTH, flat_cells, footprint_moc, region_moc};
use super::db::{Db, DbError, Param, Row};
use super::{DataId, Dataset, DatasetType, NewDataset, Observation, Provenance};

/// 2 added the sky-map patch of coadds (`patch`).
const SCHEMA_VERSION: i64 = 2;
pub const REGISTRY_FILE: &str = "registry.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dataset (
    id TEXT PRIMARY KEY NOT NULL,
    dataset_type TEXT NOT NULL,
    collection TEXT NOT NULL,
    instrument TEXT NOT NULL,
    exposure BIGINT,
    visit BIGINT,
    detector BIGINT,
    detector_name TEXT,
    band TEXT,
    patch BIGINT,
    path TEXT NOT NULL,
    size BIGINT NOT NULL,
    checksum TEXT NOT NULL,
    format TEXT NOT NULL,
    stored BIGINT NOT NULL,
    created TEXT NOT NULL,
    metadata TEXT,
    task TEXT,
    run TEXT,
    config TEXT,
    software TEXT,
    obs_id TEXT,
    target_name TEXT,
    footprint TEXT,
    resolution DOUBLE PRECISION,
    xel1 BIGINT,
    xel2 BIGINT,
    t_min DOUBLE PRECISION,
    t_max DOUBLE PRECISION,
    exptime DOUBLE PRECISION,
    em_min DOUBLE PRECISION,
    em_max DOUBLE PRECISION
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
    cell BIGINT NOT NULL,
    dataset TEXT NOT NULL REFERENCES dataset(id) ON DELETE CASCADE,
    PRIMARY KEY (cell, dataset)
);
CREATE INDEX IF NOT EXISTS dataset_cell_dataset ON dataset_cell(dataset);
CREATE TABLE IF NOT EXISTS registry_version (version BIGINT NOT NULL);
";

const COLUMNS: &str = "id, dataset_type, collection, instrument, exposure, visit, detector, \
    detector_name, band, path, size, checksum, format, stored, created, metadata, task, run, \
    config, software, obs_id, target_name, footprint, resolution, xel1, xel2, t_min, t_max, \
    exptime, em_min, em_max, patch";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry database: {0}")]
    Database(#[from] DbError),
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
    db: Db,
    /// Where the tables are, for messages.
    location: String,
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

fn dataset_of(row: &Row) -> Result<Dataset> {
    let type_name = row.text(1).unwrap_or_default();
    let dataset_type = DatasetType::parse(&type_name)
        .ok_or_else(|| RegistryError::Invalid(format!("unknown dataset type {type_name}")))?;
    let json = |i: usize| row.text(i).and_then(|t| serde_json::from_str(&t).ok());
    let provenance = row.text(16).map(|task| Provenance {
        task,
        run: row.text(17).unwrap_or_default(),
        config: json(18).unwrap_or(serde_json::Value::Null),
        software: row.text(19).unwrap_or_default(),
        inputs: Vec::new(),
    });
    let observation = row.text(20).map(|obs_id| Observation {
        obs_id,
        target_name: row.text(21),
        footprint: row
            .text(22)
            .as_deref()
            .and_then(footprint_of)
            .unwrap_or_default(),
        resolution: row.real(23),
        pixels: (row.int(24).unwrap_or(0), row.int(25).unwrap_or(0)),
        t_min: row.real(26).unwrap_or(f64::NAN),
        t_max: row.real(27).unwrap_or(f64::NAN),
        exptime: row.real(28).unwrap_or(0.0),
        em_min: row.real(29),
        em_max: row.real(30),
    });
    Ok(Dataset {
        id: row.text(0).unwrap_or_default(),
        dataset_type,
        collection: row.text(2).unwrap_or_default(),
        data_id: DataId {
            instrument: row.text(3).unwrap_or_default(),
            exposure: row.int(4),
            visit: row.int(5),
            detector: row.int(6),
            detector_name: row.text(7),
            band: row.text(8),
            patch: row.int(31),
        },
        path: row.text(9).unwrap_or_default(),
        size: row.int(10).unwrap_or(0) as u64,
        checksum: row.text(11).unwrap_or_default(),
        format: row.text(12).unwrap_or_default(),
        stored: row.int(13) != Some(0),
        created: row.text(14).unwrap_or_default(),
        metadata: json(15),
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
    /// Opens (creating if needed) the registry of the data directory `root` in SQLite.
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|source| RegistryError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let file = root.join(REGISTRY_FILE);
        Self::with_db(root, Db::sqlite(&file)?, file.display().to_string())
    }

    /// The registry of the data directory `root` with its tables in PostgreSQL
    /// (`postgresql://user:password@host:port/database`), created if missing.
    pub fn connect(root: &Path, url: &str) -> Result<Self> {
        // The location named in messages leaves out any password.
        let shown = url::Url::parse(url)
            .map(|mut u| {
                let _ = u.set_password(None);
                u.to_string()
            })
            .unwrap_or_else(|_| "PostgreSQL".into());
        Self::with_db(root, Db::postgres(url)?, shown)
    }

    fn with_db(root: &Path, db: Db, location: String) -> Result<Self> {
        db.batch(SCHEMA)?;
        let version = db.query("SELECT version FROM registry_version", vec![])?;
        match version.first().and_then(|r| r.int(0)) {
            None => {
                db.execute(
                    "INSERT INTO registry_version (version) VALUES (?1)",
                    vec![SCHEMA_VERSION.into()],
                )?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(RegistryError::Invalid(format!(
                    "{location} has layout {v}, newer than this Aster ({SCHEMA_VERSION})"
                )));
            }
            Some(1) => {
                db.batch("ALTER TABLE dataset ADD COLUMN patch BIGINT")?;
                db.execute(
                    "UPDATE registry_version SET version = ?1",
                    vec![SCHEMA_VERSION.into()],
                )?;
            }
            Some(_) => {}
        }
        Ok(Self {
            root: root.to_path_buf(),
            db,
            location,
        })
    }

    /// Where the registry's tables are (a file or a database URL without password).
    pub fn location(&self) -> &str {
        &self.location
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
        let prov = new.provenance.as_ref();
        let obs = new.observation.as_ref();
        for input in prov.map(|p| p.inputs.as_slice()).unwrap_or_default() {
            if self.get(input)?.is_none() {
                return Err(RegistryError::Invalid(format!(
                    "dataset {id}: its input {input} is not registered"
                )));
            }
        }
        let mut stmts: Vec<(String, Vec<Param>)> = vec![(
            format!(
                "INSERT INTO dataset ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
                 ?10, ?11, ?12, ?13, 1, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, \
                 ?25, ?26, ?27, ?28, ?29, ?30, ?31)"
            ),
            vec![
                id.clone().into(),
                new.dataset_type.name().into(),
                new.collection.clone().into(),
                new.data_id.instrument.clone().into(),
                new.data_id.exposure.into(),
                new.data_id.visit.into(),
                new.data_id.detector.into(),
                new.data_id.detector_name.clone().into(),
                new.data_id.band.clone().into(),
                new.path.clone().into(),
                (size as i64).into(),
                checksum.into(),
                new.format.clone().into(),
                chrono::Utc::now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    .into(),
                new.metadata.as_ref().map(|m| m.to_string()).into(),
                prov.map(|p| p.task.clone()).into(),
                prov.map(|p| p.run.clone()).into(),
                prov.map(|p| p.config.to_string()).into(),
                prov.map(|p| p.software.clone()).into(),
                obs.map(|o| o.obs_id.clone()).into(),
                obs.and_then(|o| o.target_name.clone()).into(),
                obs.map(|o| footprint_text(&o.footprint)).into(),
                obs.and_then(|o| o.resolution).into(),
                obs.map(|o| o.pixels.0).into(),
                obs.map(|o| o.pixels.1).into(),
                obs.map(|o| o.t_min).into(),
                obs.map(|o| o.t_max).into(),
                obs.map(|o| o.exptime).into(),
                obs.and_then(|o| o.em_min).into(),
                obs.and_then(|o| o.em_max).into(),
                new.data_id.patch.into(),
            ],
        )];
        for input in prov.map(|p| p.inputs.as_slice()).unwrap_or_default() {
            stmts.push((
                "INSERT INTO dataset_input (dataset, input) VALUES (?1, ?2) \
                 ON CONFLICT DO NOTHING"
                    .into(),
                vec![id.clone().into(), input.clone().into()],
            ));
        }
        if let Some(moc) = obs.and_then(|o| footprint_moc(&o.footprint, INDEX_DEPTH)) {
            for cell in flat_cells(&moc) {
                stmts.push((
                    "INSERT INTO dataset_cell (cell, dataset) VALUES (?1, ?2) \
                     ON CONFLICT DO NOTHING"
                        .into(),
                    vec![(cell as i64).into(), id.clone().into()],
                ));
            }
        }
        self.db.transaction(stmts)?;
        self.get(&id)?.ok_or(RegistryError::NotFound(id))
    }

    /// Records a dataset, replacing an earlier record of the same ID whose file has
    /// changed (a product remade after an interrupted run). A dataset other datasets were
    /// made from cannot be replaced.
    pub fn replace(&self, new: NewDataset) -> Result<Dataset> {
        let id = new.id();
        match self.register(new.clone()) {
            Err(RegistryError::Conflict { .. }) => {
                let users = self.db.query(
                    "SELECT dataset FROM dataset_input WHERE input = ?1 LIMIT 1",
                    vec![id.clone().into()],
                )?;
                if let Some(user) = users.first().and_then(|r| r.text(0)) {
                    return Err(RegistryError::Conflict {
                        id,
                        reason: format!("its file changed, and {user} was made from it"),
                    });
                }
                self.db
                    .execute("DELETE FROM dataset WHERE id = ?1", vec![id.into()])?;
                self.register(new)
            }
            other => other,
        }
    }

    /// Forgets a dataset (its file stays), unless other datasets were made from it. Returns
    /// whether it was recorded.
    pub fn remove(&self, id: &str) -> Result<bool> {
        let users = self.db.query(
            "SELECT dataset FROM dataset_input WHERE input = ?1 LIMIT 1",
            vec![id.into()],
        )?;
        if let Some(user) = users.first().and_then(|r| r.text(0)) {
            return Err(RegistryError::Conflict {
                id: id.to_string(),
                reason: format!("{user} was made from it"),
            });
        }
        let existed = self.get(id)?.is_some();
        self.db
            .execute("DELETE FROM dataset WHERE id = ?1", vec![id.into()])?;
        Ok(existed)
    }

    fn select(&self, sql: &str, params: Vec<Param>) -> Result<Vec<Dataset>> {
        self.db.query(sql, params)?.iter().map(dataset_of).collect()
    }

    /// A dataset by ID, with its provenance's inputs.
    pub fn get(&self, id: &str) -> Result<Option<Dataset>> {
        let mut found = self.select(
            &format!("SELECT {COLUMNS} FROM dataset WHERE id = ?1"),
            vec![id.into()],
        )?;
        let Some(mut d) = found.pop() else {
            return Ok(None);
        };
        if let Some(p) = d.provenance.as_mut() {
            p.inputs = self
                .db
                .query(
                    "SELECT input FROM dataset_input WHERE dataset = ?1 ORDER BY input",
                    vec![id.into()],
                )?
                .iter()
                .filter_map(|r| r.text(0))
                .collect();
        }
        Ok(Some(d))
    }

    /// The dataset already holding a file with these bytes, if any.
    pub fn find_by_checksum(&self, checksum: &str) -> Result<Option<Dataset>> {
        let rows = self.db.query(
            "SELECT id FROM dataset WHERE checksum = ?1 ORDER BY id LIMIT 1",
            vec![checksum.into()],
        )?;
        match rows.first().and_then(|r| r.text(0)) {
            Some(id) => self.get(&id),
            None => Ok(None),
        }
    }

    /// Datasets matching `filter`, in ID order (without their provenance's inputs).
    pub fn list(&self, filter: &DatasetFilter) -> Result<Vec<Dataset>> {
        let mut all = self.select(
            &format!("SELECT {COLUMNS} FROM dataset ORDER BY id"),
            vec![],
        )?;
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
            vec![],
        )
    }

    /// The images whose footprint meets `region`: the index cells narrow the candidates,
    /// then each footprint is tested exactly.
    pub fn overlapping(&self, region: &SkyRegion) -> Result<Vec<Dataset>> {
        let cells = flat_cells(&region_moc(region, INDEX_DEPTH));
        let mut ids: Vec<String> = Vec::new();
        // Runs of consecutive cells are one range scan each.
        let mut i = 0;
        while i < cells.len() {
            let mut j = i;
            while j + 1 < cells.len() && cells[j + 1] == cells[j] + 1 {
                j += 1;
            }
            let found = self.db.query(
                "SELECT DISTINCT dataset FROM dataset_cell WHERE cell BETWEEN ?1 AND ?2",
                vec![(cells[i] as i64).into(), (cells[j] as i64).into()],
            )?;
            ids.extend(found.iter().filter_map(|r| r.text(0)));
            i = j + 1;
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
        Ok(self
            .db
            .query(
                "SELECT c.cell, COUNT(*) FROM dataset_cell c JOIN dataset d ON d.id = c.dataset \
                 WHERE d.collection = ?1 AND d.band = ?2 GROUP BY c.cell ORDER BY c.cell",
                vec![collection.into(), band.into()],
            )?
            .iter()
            .filter_map(|r| Some((r.int(0)? as u64, r.int(1)? as u32)))
            .collect())
    }

    /// The datasets made from `id` (its derivations).
    pub fn outputs(&self, id: &str) -> Result<Vec<Dataset>> {
        self.select(
            &format!(
                "SELECT {COLUMNS} FROM dataset WHERE id IN \
                 (SELECT dataset FROM dataset_input WHERE input = ?1) ORDER BY id"
            ),
            vec![id.into()],
        )
    }

    /// The collections and how many datasets each holds.
    pub fn collections(&self) -> Result<Vec<(String, u64)>> {
        Ok(self
            .db
            .query(
                "SELECT collection, COUNT(*) FROM dataset GROUP BY collection ORDER BY collection",
                vec![],
            )?
            .iter()
            .filter_map(|r| Some((r.text(0)?, r.int(1)? as u64)))
            .collect())
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
        let n = self.db.execute(
            "UPDATE dataset SET stored = ?2 WHERE id = ?1",
            vec![id.into(), i64::from(stored).into()],
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
        exercise(&dir, || Registry::open(&dir).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The same on PostgreSQL, in a schema of its own, when `ASTER_TEST_POSTGRES` names a
    /// server (scripts/test-all starts one).
    #[test]
    fn datasets_round_trip_on_postgresql() {
        let Ok(url) = std::env::var("ASTER_TEST_POSTGRES") else {
            eprintln!("ASTER_TEST_POSTGRES is not set: the PostgreSQL registry is not tested");
            return;
        };
        let schema = format!("t{}", uuid::Uuid::new_v4().simple());
        let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .unwrap();
        let scoped = format!(
            "{url}{}options=-csearch_path%3D{schema}",
            if url.contains('?') { "&" } else { "?" }
        );
        let dir = tempdir();
        exercise(&dir, || Registry::connect(&dir, &scoped).unwrap());
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn exercise(dir: &Path, open: impl Fn() -> Registry) {
        std::fs::write(dir.join("raw.fits"), b"raw bytes").unwrap();
        std::fs::write(dir.join("pvi.fits"), b"pvi bytes").unwrap();
        let reg = open();
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
        let depth = reg.depth_map("run1", "r").unwrap();
        assert!(!depth.is_empty() && depth.iter().all(|&(_, n)| n == 1));
        drop(reg);
        let reg = open();
        assert_eq!(reg.collections().unwrap().len(), 2);
        reg.set_stored(&pvi.id, false).unwrap();
        assert!(!reg.get(&pvi.id).unwrap().unwrap().stored);
        // A coadd is told apart by its patch; a dataset others were made from stays.
        std::fs::write(dir.join("coadd.fits"), b"coadd bytes").unwrap();
        let mut coadd = new(DatasetType::Coadd, "deep", 0, "coadd.fits");
        coadd.data_id = DataId {
            instrument: "AsterCam".into(),
            band: Some("r".into()),
            patch: Some(1_234_567),
            ..Default::default()
        };
        coadd.provenance = Some(Provenance {
            task: "coadd".into(),
            run: "deep".into(),
            config: serde_json::json!({}),
            software: "test".into(),
            inputs: vec![pvi.id.clone()],
        });
        let coadd = reg.register(coadd).unwrap();
        assert_eq!(coadd.id, "coadd.deep.p1234567-r");
        assert_eq!(
            reg.get(&coadd.id).unwrap().unwrap().data_id.patch,
            Some(1_234_567)
        );
        assert!(matches!(
            reg.remove(&pvi.id),
            Err(RegistryError::Conflict { .. })
        ));
        assert!(reg.remove(&coadd.id).unwrap());
        assert!(!reg.remove(&coadd.id).unwrap());
    }

    #[test]
    fn a_layout_1_registry_gains_the_patch_column() {
        let dir = tempdir();
        {
            let c = rusqlite::Connection::open(dir.join(REGISTRY_FILE)).unwrap();
            let old = SCHEMA.replace("    patch BIGINT,\n", "");
            c.execute_batch(&old).unwrap();
            c.execute_batch("INSERT INTO registry_version (version) VALUES (1)")
                .unwrap();
        }
        std::fs::write(dir.join("raw.fits"), b"raw bytes").unwrap();
        let reg = Registry::open(&dir).unwrap();
        let raw = reg
            .register(new(DatasetType::Raw, "raw", 7, "raw.fits"))
            .unwrap();
        assert_eq!(reg.get(&raw.id).unwrap().unwrap().data_id.patch, None);
        let v = reg
            .db
            .query("SELECT version FROM registry_version", vec![])
            .unwrap();
        assert_eq!(v[0].int(0), Some(SCHEMA_VERSION));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("aster-registry-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
