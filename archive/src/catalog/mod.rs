//! The catalog store: every table a HEALPix-partitioned Parquet dataset in the HATS layout
//! (`dataset/Norder=K/Dir=D/Npix=N/*.parquet`, `partition_info.csv`, `properties`,
//! `_common_metadata`, a `_healpix_29` column) kept in an object store, with numbered
//! manifests and schema heads that make a commit to one or several tables atomic, and a
//! DataFusion table provider that prunes partitions by the sky region a query asks for.
mod commit;
mod hats;
mod head;
pub mod manifest;
pub mod partitioning;
mod provider;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, new_null_array};
use arrow::compute::{cast, concat_batches, sort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::object_store::ObjectStoreUrl;
use futures::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

pub use commit::Commit;
pub use head::Head;
pub use manifest::{Cell, DataFile, Manifest, Partition};
pub use provider::{CatalogTable, Snapshot};

use crate::schema::FelisTable;

/// Name of the spatial index column HATS requires: the nested HEALPix index at order 29.
pub const HEALPIX_COLUMN: &str = "_healpix_29";
/// Default partition size target.
pub const DEFAULT_MAX_ROWS: u64 = 500_000;
/// Rows per Parquet row group: small enough for statistics to skip most of a file.
const ROW_GROUP_ROWS: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("manifest: {0}")]
    Manifest(#[from] serde_json::Error),
    #[error("catalog location {0}: {1}")]
    Location(String, String),
    #[error("table {0} does not exist")]
    NoSuchTable(String),
    #[error("table {0} already exists")]
    TableExists(String),
    #[error("{0}")]
    BadData(String),
    #[error("table {0} was changed by another writer during this append; retry")]
    Conflict(String),
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// Handle on the catalog store; cheap to clone.
#[derive(Clone)]
pub struct CatalogStore {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    url: ObjectStoreUrl,
    root: ObjPath,
    /// Serialises commits to one schema within this process; across processes the
    /// create-only head write detects a concurrent writer.
    write_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl CatalogStore {
    /// Opens the store at `location`: a local directory path, a `file://` URL, or an
    /// `s3://bucket/prefix` URL (credentials and endpoint from the usual AWS_* variables).
    pub fn open(location: &str) -> Result<Self> {
        let loc_err = |e: String| CatalogError::Location(location.to_string(), e);
        let (store, url, root): (Arc<dyn ObjectStore>, ObjectStoreUrl, ObjPath) =
            if let Some(rest) = location.strip_prefix("s3://") {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let s3 = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| loc_err(e.to_string()))?;
                let url = ObjectStoreUrl::parse(format!("s3://{bucket}"))
                    .map_err(|e| loc_err(e.to_string()))?;
                (Arc::new(s3), url, ObjPath::from(prefix))
            } else {
                let dir = location.strip_prefix("file://").unwrap_or(location);
                std::fs::create_dir_all(dir).map_err(|e| loc_err(e.to_string()))?;
                let abs = std::fs::canonicalize(dir).map_err(|e| loc_err(e.to_string()))?;
                let root = ObjPath::from_absolute_path(&abs).map_err(|e| loc_err(e.to_string()))?;
                (
                    Arc::new(object_store::local::LocalFileSystem::new()),
                    ObjectStoreUrl::local_filesystem(),
                    root,
                )
            };
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                url,
                root,
                write_locks: Default::default(),
            }),
        })
    }

    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.store.clone()
    }
    pub fn object_store_url(&self) -> &ObjectStoreUrl {
        &self.inner.url
    }

    fn table_dir(&self, schema: &str, table: &str) -> ObjPath {
        self.inner.root.clone().join(schema).join(table)
    }

    fn heads_dir(&self, schema: &str) -> ObjPath {
        self.inner.root.clone().join(schema).join("_aster")
    }

    /// Every table's committed manifest, ordered by schema and table index.
    pub async fn tables(&self) -> Result<Vec<Arc<Manifest>>> {
        let store = &self.inner.store;
        let mut out = Vec::new();
        let schemas = store.list_with_delimiter(Some(&self.inner.root)).await?;
        for schema_dir in schemas.common_prefixes {
            let Some(schema) = schema_dir.filename() else {
                continue;
            };
            let head = self.committed(schema).await?;
            for (table, version) in &head.tables {
                out.push(self.load_manifest(schema, table, *version).await?);
            }
        }
        out.sort_by(|a, b| {
            (
                a.schema.as_str(),
                a.table.table_index.unwrap_or(i32::MAX),
                a.table.name.as_str(),
            )
                .cmp(&(
                    b.schema.as_str(),
                    b.table.table_index.unwrap_or(i32::MAX),
                    b.table.name.as_str(),
                ))
        });
        Ok(out)
    }

    /// The committed manifest of `schema.table`, if the table exists.
    pub async fn manifest(&self, schema: &str, table: &str) -> Result<Option<Arc<Manifest>>> {
        match self.committed(schema).await?.tables.get(table) {
            Some(v) => Ok(Some(self.load_manifest(schema, table, *v).await?)),
            None => Ok(None),
        }
    }

    /// What readers of `schema` see now: its newest head, or for a schema no commit has
    /// given a head yet (written by an older Aster), its tables' newest manifests.
    pub(crate) async fn committed(&self, schema: &str) -> Result<Head> {
        let dir = self.heads_dir(schema);
        // A head is deleted only after KEPT newer ones exist; if that happened between
        // listing and reading, the listing is stale and is taken again.
        for _ in 0..3 {
            let Some((_, location)) = self.newest(&dir, head::parse_head_version).await? else {
                return self.legacy_head(schema).await;
            };
            match self.inner.store.get(&location).await {
                Ok(r) => return Ok(serde_json::from_slice(&r.bytes().await?)?),
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CatalogError::Conflict(format!(
            "{schema} (its head kept changing while it was read)"
        )))
    }

    /// The head a schema without one stands for: each table's newest manifest.
    async fn legacy_head(&self, schema: &str) -> Result<Head> {
        let schema_dir = self.inner.root.clone().join(schema);
        let listing = self
            .inner
            .store
            .list_with_delimiter(Some(&schema_dir))
            .await?;
        let mut head = Head::default();
        for table_dir in listing.common_prefixes {
            if let Some(table) = table_dir.filename()
                && let Some(v) = self.newest_version(&table_dir).await?
            {
                head.tables.insert(table.to_string(), v);
            }
        }
        Ok(head)
    }

    /// The newest manifest version written under a table's directory, committed or not.
    async fn newest_version(&self, table_dir: &ObjPath) -> Result<Option<u64>> {
        let dir = table_dir.clone().join("_aster");
        let newest = self.newest(&dir, manifest::parse_manifest_version).await?;
        Ok(newest.map(|(v, _)| v))
    }

    /// The highest-numbered object directly in `dir`, by the number `parse` reads from its
    /// name (manifests, heads), with its location.
    async fn newest(
        &self,
        dir: &ObjPath,
        parse: fn(&str) -> Option<u64>,
    ) -> Result<Option<(u64, ObjPath)>> {
        let listing = self.inner.store.list_with_delimiter(Some(dir)).await?;
        Ok(listing
            .objects
            .into_iter()
            .filter_map(|o| parse(o.location.as_ref()).map(|v| (v, o.location)))
            .max_by_key(|(v, _)| *v))
    }

    async fn load_manifest(
        &self,
        schema: &str,
        table: &str,
        version: u64,
    ) -> Result<Arc<Manifest>> {
        let path = child_path(
            &self.table_dir(schema, table),
            &manifest::manifest_name(version),
        );
        let bytes = match self.inner.store.get(&path).await {
            Ok(r) => r.bytes().await?,
            // Dropped after the head that names it was read.
            Err(object_store::Error::NotFound { .. }) => {
                return Err(CatalogError::NoSuchTable(format!("{schema}.{table}")));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Arc::new(serde_json::from_slice(&bytes)?))
    }

    /// Writes `body` at `path` unless something is there already.
    async fn put_new(&self, path: &ObjPath, body: Vec<u8>) -> object_store::Result<()> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.inner
            .store
            .put_opts(path, PutPayload::from(body), opts)
            .await
            .map(|_| ())
    }

    /// Creates an empty table. Tables with sky positions are HEALPix-partitioned.
    pub async fn create_table(
        &self,
        schema: &str,
        table: &FelisTable,
        max_rows: u64,
    ) -> Result<Arc<Manifest>> {
        let mut commit = self.begin(schema).await?;
        commit.create(table, max_rows)?;
        commit
            .commit()
            .await?
            .pop()
            .ok_or_else(|| CatalogError::BadData("a create that wrote nothing".into()))
    }

    /// Appends rows atomically: readers see all of them or none. Columns are matched to the
    /// table's by name (case-insensitively) and cast to its types; missing nullable columns
    /// are filled with nulls. To append to several tables at once, see [`Self::begin`].
    pub async fn append(
        &self,
        schema: &str,
        table: &str,
        batches: &[RecordBatch],
    ) -> Result<Arc<Manifest>> {
        let mut commit = self.begin(schema).await?;
        commit.append(table, batches).await?;
        match commit.commit().await?.pop() {
            Some(m) => Ok(m),
            // Nothing to append: the table as it is.
            None => self
                .manifest(schema, table)
                .await?
                .ok_or_else(|| CatalogError::NoSuchTable(format!("{schema}.{table}"))),
        }
    }

    /// Writes `batches` as new data files of the table `m` describes and adds them to `m`
    /// (which is not written: the commit writes it).
    async fn write_rows(&self, m: &mut Manifest, batches: &[RecordBatch]) -> Result<()> {
        let target = m.table.arrow_schema();
        let conformed = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| conform(b, &target))
            .collect::<Result<Vec<_>>>()?;
        if conformed.is_empty() {
            return Ok(());
        }
        let dir = self.table_dir(&m.schema, &m.table.name);
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..16];
        match m.position.clone() {
            Some((ra, dec)) => {
                let all = concat_batches(&target, &conformed)?;
                let indexed = with_healpix(&all, &ra, &dec)?;
                let hp = indexed
                    .column(indexed.num_columns() - 1)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or_else(|| CatalogError::BadData("healpix column".into()))?
                    .values()
                    .iter()
                    .map(|&h| h as u64)
                    .collect::<Vec<u64>>();
                let existing: Vec<Cell> = m.partitions.iter().filter_map(|p| p.cell).collect();
                for (cell, range) in partitioning::plan(&hp, &existing, m.max_rows) {
                    let slice = indexed.slice(range.start, range.len());
                    let rel = format!(
                        "dataset/Norder={}/Dir={}/Npix={}/part-{tag}.parquet",
                        cell.order,
                        cell.dir(),
                        cell.pixel
                    );
                    let file = self.write_file(&dir, &rel, &[slice]).await?;
                    match m.partitions.iter_mut().find(|p| p.cell == Some(cell)) {
                        Some(p) => p.files.push(file),
                        None => m.partitions.push(Partition {
                            cell: Some(cell),
                            files: vec![file],
                        }),
                    }
                }
                m.partitions.sort_by_key(|p| p.cell);
            }
            None => {
                let file = self
                    .write_file(&dir, &format!("dataset/part-{tag}.parquet"), &conformed)
                    .await?;
                match m.partitions.first_mut() {
                    Some(p) => p.files.push(file),
                    None => m.partitions.push(Partition {
                        cell: None,
                        files: vec![file],
                    }),
                }
            }
        }
        Ok(())
    }

    async fn write_file(
        &self,
        dir: &ObjPath,
        rel: &str,
        batches: &[RecordBatch],
    ) -> Result<DataFile> {
        let path = child_path(dir, rel);
        let schema = batches
            .first()
            .map(|b| b.schema())
            .ok_or_else(|| CatalogError::BadData("nothing to write".into()))?;
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
        // Measured floats (fluxes, positions, shapes) are nearly all distinct: a row group's
        // dictionary would be as large as its data, and compression saves nothing while
        // costing every scan a pass. Such columns are stored plain and uncompressed; floats
        // that do repeat (a constant error, a flag-like value) keep dictionary and Snappy.
        for (i, f) in schema.fields().iter().enumerate() {
            if matches!(f.data_type(), DataType::Float32 | DataType::Float64)
                && mostly_distinct(batches.iter().map(|b| b.column(i)))
            {
                let column = ColumnPath::from(f.name().as_str());
                props = props
                    .set_column_dictionary_enabled(column.clone(), false)
                    .set_column_compression(column, Compression::UNCOMPRESSED);
            }
        }
        let props = props.build();
        let writer = BufWriter::new(self.inner.store.clone(), path.clone());
        let mut w = AsyncArrowWriter::try_new(writer, schema, Some(props))?;
        let mut rows = 0;
        for b in batches {
            w.write(b).await?;
            rows += b.num_rows() as u64;
        }
        w.close().await?;
        let size = self.inner.store.head(&path).await?.size;
        Ok(DataFile {
            path: rel.to_string(),
            size,
            rows,
        })
    }

    /// Deletes a table and all its files (nothing if there is no such table).
    pub async fn drop_table(&self, schema: &str, table: &str) -> Result<()> {
        let mut commit = self.begin(schema).await?;
        commit.drop(table)?;
        commit.commit().await?;
        Ok(())
    }

    /// Deletes every object under `dir`.
    async fn delete_all(&self, dir: &ObjPath) -> Result<()> {
        let paths: Vec<_> = self
            .inner
            .store
            .list(Some(dir))
            .map_ok(|o| o.location)
            .try_collect()
            .await?;
        for p in paths {
            self.inner.store.delete(&p).await?;
        }
        Ok(())
    }

    /// Full object-store path of a data file of a table.
    pub(crate) fn file_path(&self, m: &Manifest, rel: &str) -> ObjPath {
        child_path(&self.table_dir(&m.schema, &m.table.name), rel)
    }
}

/// `dir` joined with a relative path of `/`-separated parts.
fn child_path(dir: &ObjPath, rel: &str) -> ObjPath {
    rel.split('/').fold(dir.clone(), |p, part| p.join(part))
}

/// Whether a float column's values are mostly distinct, judged on its first few thousand
/// values (as bit patterns, so NaNs and signed zeros count as themselves).
fn mostly_distinct<'a>(columns: impl Iterator<Item = &'a ArrayRef>) -> bool {
    const SAMPLE: usize = 4096;
    let mut seen = std::collections::HashSet::with_capacity(SAMPLE);
    let mut n = 0;
    for c in columns {
        let c = match cast(c, &DataType::Float64) {
            Ok(c) => c,
            Err(_) => return false,
        };
        let Some(values) = c.as_any().downcast_ref::<Float64Array>() else {
            return false;
        };
        for v in values.iter().take(SAMPLE - n) {
            seen.insert(v.map(f64::to_bits));
            n += 1;
        }
        if n >= SAMPLE {
            break;
        }
    }
    n > 0 && seen.len() * 2 > n
}

/// `schema` with the HATS spatial index column appended, as every data file stores it.
fn with_healpix_field(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(HEALPIX_COLUMN, DataType::Int64, false));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Casts `batch` onto `target`'s columns, matched by name ignoring case.
fn conform(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
    let src = batch.schema();
    let columns = target
        .fields()
        .iter()
        .map(|f| {
            let found = src
                .fields()
                .iter()
                .position(|s| s.name().eq_ignore_ascii_case(f.name()));
            match found {
                Some(i) => cast(batch.column(i), f.data_type()).map_err(|e| {
                    CatalogError::BadData(format!(
                        "column {}: cannot convert to {}: {e}",
                        f.name(),
                        f.data_type()
                    ))
                }),
                None if f.is_nullable() => Ok(new_null_array(f.data_type(), batch.num_rows())),
                None => Err(CatalogError::BadData(format!(
                    "column {} is missing",
                    f.name()
                ))),
            }
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(target.clone(), columns)?)
}

/// Adds the `_healpix_29` column and sorts rows by it, so each partition's rows are
/// contiguous and row-group statistics on the index are tight.
fn with_healpix(batch: &RecordBatch, ra: &str, dec: &str) -> Result<RecordBatch> {
    let get = |name: &str| -> Result<Float64Array> {
        let col = batch
            .column_by_name(name)
            .ok_or_else(|| CatalogError::BadData(format!("position column {name} is missing")))?;
        let c = cast(col, &DataType::Float64)?;
        c.as_any()
            .downcast_ref::<Float64Array>()
            .cloned()
            .ok_or_else(|| CatalogError::BadData(format!("{name} is not numeric")))
    };
    let (ras, decs) = (get(ra)?, get(dec)?);
    let mut hp = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let (a, d) = (ras.value(i), decs.value(i));
        if ras.is_null(i) || decs.is_null(i) || !a.is_finite() || !(-90.0..=90.0).contains(&d) {
            return Err(CatalogError::BadData(format!(
                "row {i}: position ({ra}, {dec}) is missing or out of range; partitioned tables need a valid position on every row"
            )));
        }
        // Order-29 indices stay below 12·4^29 < 2^62, so they fit HATS's int64 column.
        hp.push(
            cdshealpix::nested::hash(29, a.rem_euclid(360.0).to_radians(), d.to_radians()) as i64,
        );
    }
    let hp_array = Arc::new(Int64Array::from(hp)) as ArrayRef;
    let mut columns = batch.columns().to_vec();
    columns.push(hp_array.clone());
    let with = RecordBatch::try_new(with_healpix_field(&batch.schema()), columns)?;
    let order = sort_to_indices(&hp_array, None, None)?;
    Ok(take_record_batch(&with, &order)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mostly_distinct_floats_skip_dictionaries() {
        let distinct: ArrayRef = Arc::new(Float64Array::from_iter_values(
            (0..10_000).map(|i| f64::from(i) * 0.37),
        ));
        let constant: ArrayRef = Arc::new(Float64Array::from(vec![12.5; 10_000]));
        let half_null: ArrayRef = Arc::new(Float64Array::from_iter(
            (0..10_000).map(|i| (i % 2 == 0).then_some(f64::from(i))),
        ));
        let repeating: ArrayRef = Arc::new(Float64Array::from_iter_values(
            (0..10_000).map(|i| f64::from(i % 16)),
        ));
        assert!(mostly_distinct([&distinct].into_iter()));
        assert!(!mostly_distinct([&constant].into_iter()));
        assert!(!mostly_distinct([&repeating].into_iter()));
        // Nulls cost nothing in plain encoding; the values present are all distinct.
        assert!(mostly_distinct([&half_null].into_iter()));
        assert!(!mostly_distinct(std::iter::empty()));
    }
}
