//! A commit to tables of one schema: creates, appends, replacements and drops that readers
//! see together or not at all. Data files are written as the commit goes; at the end each
//! changed table gets a new manifest, which no reader looks at until the schema's next head
//! names it. A commit dropped before [`Commit::commit`] leaves only files nothing refers to.
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use object_store::ObjectStoreExt;
use tokio::sync::OwnedMutexGuard;

use super::head::{self, Head};
use super::{CatalogError, CatalogStore, Manifest, Result, child_path, hats, manifest};
use crate::schema::FelisTable;

/// A commit in progress; see the module documentation.
pub struct Commit {
    store: CatalogStore,
    schema: String,
    /// The head the commit builds on.
    base: Head,
    staged: Vec<Staged>,
    /// Commits to this schema from this process take turns.
    _turn: OwnedMutexGuard<()>,
}

struct Staged {
    table: String,
    /// The table's committed version the change builds on (none for a new table).
    base: Option<u64>,
    change: Change,
}

enum Change {
    /// The table's new manifest (its version assigned when committed), and data files of
    /// the old one that it no longer refers to (a replacement's), deleted once committed.
    Write {
        manifest: Box<Manifest>,
        obsolete: Vec<String>,
    },
    Drop,
}

impl CatalogStore {
    /// Begins a commit to tables of `schema`.
    pub async fn begin(&self, schema: &str) -> Result<Commit> {
        let lock = self
            .inner
            .write_locks
            .lock()
            .map_err(|_| CatalogError::BadData("write lock poisoned".into()))?
            .entry(schema.to_string())
            .or_default()
            .clone();
        let turn = lock.lock_owned().await;
        let base = self.committed(schema).await?;
        Ok(Commit {
            store: self.clone(),
            schema: schema.to_string(),
            base,
            staged: Vec::new(),
            _turn: turn,
        })
    }
}

impl Commit {
    fn qualified(&self, table: &str) -> String {
        format!("{}.{table}", self.schema)
    }

    fn staged(&self, table: &str) -> Option<usize> {
        self.staged.iter().position(|s| s.table == table)
    }

    /// Creates an empty table. Tables with sky positions are HEALPix-partitioned.
    pub fn create(&mut self, table: &FelisTable, max_rows: u64) -> Result<()> {
        self.once(&table.name)?;
        if self.base.tables.contains_key(&table.name) {
            return Err(CatalogError::TableExists(self.qualified(&table.name)));
        }
        let manifest = self.empty(table, max_rows);
        self.staged.push(Staged {
            table: table.name.clone(),
            base: None,
            change: Change::Write {
                manifest,
                obsolete: Vec::new(),
            },
        });
        Ok(())
    }

    /// A table is created, replaced or dropped at most once in a commit, and before any
    /// append to it (appends may repeat, and may follow a create).
    fn once(&self, table: &str) -> Result<()> {
        match self.staged(table) {
            Some(_) => Err(CatalogError::BadData(format!(
                "{} is changed twice in one commit",
                self.qualified(table)
            ))),
            None => Ok(()),
        }
    }

    fn empty(&self, table: &FelisTable, max_rows: u64) -> Box<Manifest> {
        Box::new(Manifest {
            version: 0,
            schema: self.schema.clone(),
            table: table.clone(),
            position: table.position_columns(),
            max_rows: max_rows.max(1),
            partitions: vec![],
        })
    }

    /// Appends rows. Columns are matched to the table's by name (case-insensitively) and
    /// cast to its types; missing nullable columns are filled with nulls.
    pub async fn append(&mut self, table: &str, batches: &[RecordBatch]) -> Result<()> {
        // No rows change nothing: the table keeps its version.
        if batches.iter().all(|b| b.num_rows() == 0) {
            return match self.staged(table) {
                Some(i) if matches!(self.staged[i].change, Change::Drop) => {
                    Err(CatalogError::NoSuchTable(self.qualified(table)))
                }
                Some(_) => Ok(()),
                None if self.base.tables.contains_key(table) => Ok(()),
                None => Err(CatalogError::NoSuchTable(self.qualified(table))),
            };
        }
        let i = match self.staged(table) {
            Some(i) => i,
            None => {
                let version = *self
                    .base
                    .tables
                    .get(table)
                    .ok_or_else(|| CatalogError::NoSuchTable(self.qualified(table)))?;
                let current = self
                    .store
                    .load_manifest(&self.schema, table, version)
                    .await?;
                self.staged.push(Staged {
                    table: table.to_string(),
                    base: Some(version),
                    change: Change::Write {
                        manifest: Box::new((*current).clone()),
                        obsolete: Vec::new(),
                    },
                });
                self.staged.len() - 1
            }
        };
        let Change::Write { manifest, .. } = &mut self.staged[i].change else {
            return Err(CatalogError::NoSuchTable(self.qualified(table)));
        };
        self.store.write_rows(manifest, batches).await
    }

    /// Replaces the table (created if missing) by one holding only `batches`: readers see
    /// the old rows until the commit and the new ones after, never an empty table between.
    pub async fn replace(
        &mut self,
        table: &FelisTable,
        max_rows: u64,
        batches: &[RecordBatch],
    ) -> Result<()> {
        self.once(&table.name)?;
        let base = self.base.tables.get(&table.name).copied();
        let obsolete = match base {
            Some(v) => self
                .store
                .load_manifest(&self.schema, &table.name, v)
                .await?
                .partitions
                .iter()
                .flat_map(|p| p.files.iter().map(|f| f.path.clone()))
                .collect(),
            None => Vec::new(),
        };
        let mut manifest = self.empty(table, max_rows);
        self.store.write_rows(&mut manifest, batches).await?;
        self.staged.push(Staged {
            table: table.name.clone(),
            base,
            change: Change::Write { manifest, obsolete },
        });
        Ok(())
    }

    /// Drops the table and, once committed, deletes its files (nothing if there is no such
    /// table).
    pub fn drop(&mut self, table: &str) -> Result<()> {
        self.once(table)?;
        if let Some(&version) = self.base.tables.get(table) {
            self.staged.push(Staged {
                table: table.to_string(),
                base: Some(version),
                change: Change::Drop,
            });
        }
        Ok(())
    }

    /// `tables` with this commit's changes applied.
    fn apply(&self, mut tables: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        for s in &self.staged {
            match &s.change {
                Change::Write { manifest, .. } => {
                    tables.insert(s.table.clone(), manifest.version);
                }
                Change::Drop => {
                    tables.remove(&s.table);
                }
            }
        }
        tables
    }

    /// Makes every change visible at once; returns the changed tables' new manifests. Fails
    /// with a conflict, changing nothing readers see, if another process committed to one of
    /// the same tables since this commit began.
    pub async fn commit(mut self) -> Result<Vec<Arc<Manifest>>> {
        if self.staged.is_empty() {
            return Ok(Vec::new());
        }
        let store = self.store.clone();
        for s in &mut self.staged {
            let Change::Write { manifest, .. } = &mut s.change else {
                continue;
            };
            let dir = store.table_dir(&self.schema, &s.table);
            // Past any version an abandoned commit left behind.
            let newest = store.newest_version(&dir).await?.unwrap_or(0);
            manifest.version = newest.max(s.base.unwrap_or(0)) + 1;
            let path = child_path(&dir, &manifest::manifest_name(manifest.version));
            match store
                .put_new(&path, serde_json::to_vec_pretty(manifest)?)
                .await
            {
                Ok(()) => {}
                Err(object_store::Error::AlreadyExists { .. }) => {
                    return Err(CatalogError::Conflict(format!(
                        "{}.{}",
                        self.schema, s.table
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut head = Head {
            version: self.base.version + 1,
            tables: self.apply(self.base.tables.clone()),
        };
        let heads = store.heads_dir(&self.schema);
        loop {
            let path = child_path(&heads, &head::head_name(head.version));
            match store
                .put_new(&path, serde_json::to_vec_pretty(&head)?)
                .await
            {
                Ok(()) => break,
                Err(object_store::Error::AlreadyExists { .. }) => {
                    // Another process committed first: merge unless it changed our tables.
                    let newer = store.committed(&self.schema).await?;
                    if let Some(s) = self
                        .staged
                        .iter()
                        .find(|s| newer.tables.get(&s.table).copied() != s.base)
                    {
                        return Err(CatalogError::Conflict(self.qualified(&s.table)));
                    }
                    head = Head {
                        version: newer.version + 1,
                        tables: self.apply(newer.tables),
                    };
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Committed; what follows tidies up and derives files from what is committed.
        if head.version > head::KEPT {
            let old = child_path(&heads, &head::head_name(head.version - head::KEPT));
            match store.inner.store.delete(&old).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut written = Vec::new();
        for s in self.staged.drain(..) {
            let dir = store.table_dir(&self.schema, &s.table);
            match s.change {
                Change::Write { manifest, obsolete } => {
                    hats::write_metadata(&store.inner.store, &dir, &manifest).await?;
                    for rel in obsolete {
                        match store.inner.store.delete(&child_path(&dir, &rel)).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    written.push(Arc::from(manifest));
                }
                Change::Drop => store.delete_all(&dir).await?,
            }
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::catalog::Snapshot;
    use crate::schema::felis_from_arrow;
    use crate::testdir::tempdir;

    fn rows(ids: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ra", DataType::Float64, false),
            Field::new("dec", DataType::Float64, false),
        ]));
        let n = ids.end - ids.start;
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(ids.clone())),
                Arc::new(Float64Array::from_iter_values(
                    ids.map(|i| (i as f64 * 7.3).rem_euclid(360.0)),
                )),
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| i as f64 * 0.1 - 40.0),
                )),
            ],
        )
        .unwrap()
    }

    fn table(name: &str) -> FelisTable {
        felis_from_arrow(name, &rows(0..1).schema(), None, None).unwrap()
    }

    async fn count(store: &CatalogStore, table: &str) -> Option<u64> {
        store.manifest("ap", table).await.unwrap().map(|m| m.rows())
    }

    /// A store with empty tables ap.a and ap.b.
    async fn two_tables(store: &CatalogStore) {
        let mut c = store.begin("ap").await.unwrap();
        c.create(&table("a"), 1000).unwrap();
        c.create(&table("b"), 1000).unwrap();
        c.commit().await.unwrap();
    }

    #[tokio::test]
    async fn readers_see_a_commit_to_two_tables_whole() {
        let dir = tempdir("commit-whole");
        let store = CatalogStore::open(dir.to_str().unwrap()).unwrap();
        two_tables(&store).await;
        let mut c = store.begin("ap").await.unwrap();
        c.append("a", &[rows(0..10)]).await.unwrap();
        c.append("b", &[rows(100..103)]).await.unwrap();
        c.append("a", &[rows(10..15)]).await.unwrap();
        // Written but not committed: nothing to see.
        assert_eq!(count(&store, "a").await, Some(0));
        assert_eq!(count(&store, "b").await, Some(0));
        // A query that read table a before the commit reads table b as it was then too.
        let snapshot = Snapshot::new(store.clone());
        let a = snapshot.manifest("ap", "a").await.unwrap().unwrap();
        let written = c.commit().await.unwrap();
        assert_eq!(written.len(), 2);
        let b = snapshot.manifest("ap", "b").await.unwrap().unwrap();
        assert_eq!((a.rows(), b.rows()), (0, 0));
        assert_eq!(count(&store, "a").await, Some(15));
        assert_eq!(count(&store, "b").await, Some(3));
        let fresh = Snapshot::new(store.clone());
        assert_eq!(fresh.manifest("ap", "b").await.unwrap().unwrap().rows(), 3);
    }

    #[tokio::test]
    async fn an_abandoned_commit_is_never_seen() {
        let dir = tempdir("commit-abandoned");
        let store = CatalogStore::open(dir.to_str().unwrap()).unwrap();
        two_tables(&store).await;
        store.append("ap", "a", &[rows(0..4)]).await.unwrap();
        // A writer that wrote data and its manifest, then died before the head.
        let mut c = store.begin("ap").await.unwrap();
        c.append("a", &[rows(4..9)]).await.unwrap();
        let Change::Write { manifest, .. } = &mut c.staged[0].change else {
            unreachable!()
        };
        let current = count(&store, "a").await.unwrap();
        let m = store.manifest("ap", "a").await.unwrap().unwrap();
        manifest.version = m.version + 1;
        let path = child_path(
            &store.table_dir("ap", "a"),
            &manifest::manifest_name(manifest.version),
        );
        store
            .put_new(&path, serde_json::to_vec(manifest).unwrap())
            .await
            .unwrap();
        let abandoned = manifest.version;
        drop(c);
        assert_eq!(count(&store, "a").await, Some(current));
        // The next commit goes past the abandoned version and builds on the committed one.
        let m = store.append("ap", "a", &[rows(9..11)]).await.unwrap();
        assert_eq!(m.version, abandoned + 1);
        assert_eq!(count(&store, "a").await, Some(6));
    }

    #[tokio::test]
    async fn writers_in_two_processes_merge_unless_they_share_a_table() {
        let dir = tempdir("commit-race");
        let first = CatalogStore::open(dir.to_str().unwrap()).unwrap();
        // Its own handle: its own locks, as another process has.
        let second = CatalogStore::open(dir.to_str().unwrap()).unwrap();
        two_tables(&first).await;
        let mut c1 = first.begin("ap").await.unwrap();
        let mut c2 = second.begin("ap").await.unwrap();
        c1.append("a", &[rows(0..5)]).await.unwrap();
        c2.append("b", &[rows(0..7)]).await.unwrap();
        c1.commit().await.unwrap();
        c2.commit().await.unwrap();
        assert_eq!(count(&first, "a").await, Some(5));
        assert_eq!(count(&first, "b").await, Some(7));

        let mut c1 = first.begin("ap").await.unwrap();
        let mut c2 = second.begin("ap").await.unwrap();
        c1.append("a", &[rows(5..8)]).await.unwrap();
        c2.append("a", &[rows(100..200)]).await.unwrap();
        c2.append("b", &[rows(100..200)]).await.unwrap();
        c1.commit().await.unwrap();
        assert!(matches!(c2.commit().await, Err(CatalogError::Conflict(_))));
        assert_eq!(count(&first, "a").await, Some(8));
        assert_eq!(count(&first, "b").await, Some(7));
    }

    #[tokio::test]
    async fn replace_and_drop_are_atomic_and_tidy() {
        let dir = tempdir("commit-replace");
        let store = CatalogStore::open(dir.to_str().unwrap()).unwrap();
        two_tables(&store).await;
        store.append("ap", "a", &[rows(0..50)]).await.unwrap();
        let old = store.manifest("ap", "a").await.unwrap().unwrap();
        let mut c = store.begin("ap").await.unwrap();
        c.replace(&table("a"), 1000, &[rows(1000..1003)])
            .await
            .unwrap();
        assert_eq!(count(&store, "a").await, Some(50));
        c.commit().await.unwrap();
        assert_eq!(count(&store, "a").await, Some(3));
        for f in old.partitions.iter().flat_map(|p| &p.files) {
            assert!(!dir.join("ap/a").join(&f.path).exists(), "{} kept", f.path);
        }
        let mut c = store.begin("ap").await.unwrap();
        c.drop("a").unwrap();
        assert!(c.append("a", &[rows(0..1)]).await.is_err());
        c.commit().await.unwrap();
        assert_eq!(count(&store, "a").await, None);
        assert_eq!(files_under(&dir.join("ap/a")), 0);
        let names: Vec<String> = store
            .tables()
            .await
            .unwrap()
            .iter()
            .map(|m| m.table.name.clone())
            .collect();
        assert_eq!(names, ["b"]);
        // Appending no rows is no change: no new version.
        let before = store.manifest("ap", "b").await.unwrap().unwrap().version;
        let mut c = store.begin("ap").await.unwrap();
        c.append("b", &[rows(0..0)]).await.unwrap();
        assert!(c.append("nosuch", &[]).await.is_err());
        assert!(c.commit().await.unwrap().is_empty());
        assert_eq!(
            store.manifest("ap", "b").await.unwrap().unwrap().version,
            before
        );
        // Changing a table twice in one commit is refused.
        let mut c = store.begin("ap").await.unwrap();
        c.append("b", &[rows(0..1)]).await.unwrap();
        assert!(c.drop("b").is_err());
        assert!(matches!(
            c.create(&table("b"), 10),
            Err(CatalogError::BadData(_))
        ));
    }

    fn files_under(path: &std::path::Path) -> usize {
        match std::fs::read_dir(path) {
            Ok(entries) => entries
                .map(|e| {
                    let p = e.unwrap().path();
                    if p.is_dir() { files_under(&p) } else { 1 }
                })
                .sum(),
            Err(_) => 0,
        }
    }

    #[tokio::test]
    async fn a_schema_without_a_head_is_read_by_its_manifests_until_its_first_commit() {
        let dir = tempdir("commit-legacy");
        let store = CatalogStore::open(dir.to_str().unwrap()).unwrap();
        two_tables(&store).await;
        store.append("ap", "a", &[rows(0..4)]).await.unwrap();
        // As an Aster from before heads left it.
        std::fs::remove_dir_all(dir.join("ap/_aster")).unwrap();
        assert_eq!(count(&store, "a").await, Some(4));
        assert_eq!(count(&store, "b").await, Some(0));
        store.append("ap", "b", &[rows(0..2)]).await.unwrap();
        assert!(dir.join("ap/_aster").join(head::head_name(1)).exists());
        assert_eq!(count(&store, "a").await, Some(4));
        assert_eq!(count(&store, "b").await, Some(2));
    }

    #[tokio::test]
    async fn old_heads_are_pruned() {
        let dir = tempdir("commit-prune");
        let store = CatalogStore::open(dir.to_str().unwrap()).unwrap();
        two_tables(&store).await;
        for i in 0..(head::KEPT as i64 + 5) {
            store.append("ap", "a", &[rows(i..i + 1)]).await.unwrap();
        }
        let heads = std::fs::read_dir(dir.join("ap/_aster")).unwrap().count() as u64;
        assert_eq!(heads, head::KEPT);
        assert_eq!(count(&store, "a").await, Some(head::KEPT + 5));
    }
}
