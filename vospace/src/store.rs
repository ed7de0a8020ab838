//! The node store: node records in SQLite and data-node bytes in an object store (a local
//! directory by default, S3 by URL). Bytes are written once under a fresh key and never
//! changed; a node points at its current object, so a replaced or moved file is swapped in
//! one transaction and readers never see half a file. Moves and renames touch records only.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aster_archive::identity::GroupName;
use futures::StreamExt;
use md5::{Digest, Md5};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use rusqlite::{Connection, OptionalExtension, params};

use crate::node::{Access, Kind, Node};
use crate::path::NodePath;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("NodeNotFound {0}")]
    NotFound(NodePath),
    #[error("ContainerNotFound {0}")]
    ContainerNotFound(NodePath),
    #[error("DuplicateNode {0}")]
    Duplicate(NodePath),
    #[error("InvalidArgument {0}")]
    InvalidArgument(String),
    #[error("QuotaExceeded the home {home} would hold {would} bytes, beyond its quota of {quota}")]
    Quota {
        home: String,
        would: u64,
        quota: u64,
    },
    #[error("TransferFailed the bytes received do not match the MD5 digest sent")]
    Checksum,
    #[error("TransferFailed the upload stopped: {0}")]
    Upload(String),
    #[error("node store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("object store: {0}")]
    Object(#[from] object_store::Error),
    #[error("node store lock poisoned")]
    Poisoned,
}

/// How listings are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Name,
    Date,
    Length,
}

/// The object store at `location`: `s3://bucket/prefix` (credentials from the usual AWS
/// variables), or a local directory (made if missing).
pub fn objects_at(location: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let s3 = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()?;
        return Ok(Arc::new(object_store::prefix::PrefixStore::new(s3, prefix)));
    }
    let dir = location.strip_prefix("file://").unwrap_or(location);
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Upload(format!("{dir}: {e}")))?;
    Ok(Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(dir)?,
    ))
}

/// Bytes the home of a user may hold.
pub type QuotaOf = Arc<dyn Fn(&str) -> u64 + Send + Sync>;

#[derive(Clone)]
pub struct NodeStore {
    db: Arc<Mutex<Connection>>,
    objects: Arc<dyn ObjectStore>,
    quota: QuotaOf,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn join_groups(g: &[GroupName]) -> String {
    g.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(" ")
}

fn split_groups(s: &str) -> Vec<GroupName> {
    s.split(' ')
        .filter_map(|g| GroupName::new(g).ok())
        .collect()
}

const COLUMNS: &str = "path, kind, owner, created, modified, length, md5, content_type, object, \
                       target, public, group_read, group_write, props";

fn node_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Node> {
    let kind: String = r.get(1)?;
    let target: Option<String> = r.get(9)?;
    let props: String = r.get(13)?;
    Ok(Node {
        path: NodePath::from_key(&r.get::<_, String>(0)?),
        kind: match kind.as_str() {
            "container" => Kind::Container,
            "link" => Kind::Link {
                target: target.unwrap_or_default(),
            },
            _ => Kind::Data,
        },
        owner: r.get(2)?,
        created: r.get(3)?,
        modified: r.get(4)?,
        length: r.get::<_, i64>(5)?.max(0) as u64,
        md5: r.get(6)?,
        content_type: r.get(7)?,
        object: r.get(8)?,
        access: Access {
            public: r.get(10)?,
            group_read: split_groups(&r.get::<_, String>(11)?),
            group_write: split_groups(&r.get::<_, String>(12)?),
        },
        props: serde_json::from_str(&props).unwrap_or_default(),
    })
}

/// `substr(path, 1, n) = prefix` selects a subtree without LIKE, whose `%` and `_` could
/// appear in names.
fn subtree_clause() -> &'static str {
    "(path = ?1 OR substr(path, 1, length(?1) + 1) = ?1 || '/')"
}

/// A data node's bytes being written: the new object, its size and checksum so far.
pub struct Upload {
    pub path: NodePath,
    key: ObjectPath,
    /// Bytes the upload may bring, and the home's quota.
    limit: u64,
    quota: u64,
}

impl NodeStore {
    /// Opens the store: records in `<dir>/nodes.sqlite`, bytes in `objects`.
    pub fn open(dir: &Path, objects: Arc<dyn ObjectStore>, quota: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Upload(e.to_string()))?;
        let conn = Connection::open(dir.join("nodes.sqlite"))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS nodes (
               path TEXT PRIMARY KEY, parent TEXT NOT NULL, kind TEXT NOT NULL, owner TEXT,
               created TEXT NOT NULL, modified TEXT NOT NULL, length INTEGER NOT NULL DEFAULT 0,
               md5 TEXT, content_type TEXT, object TEXT, target TEXT,
               public INTEGER NOT NULL DEFAULT 0, group_read TEXT NOT NULL DEFAULT '',
               group_write TEXT NOT NULL DEFAULT '', props TEXT NOT NULL DEFAULT '{}');
             CREATE INDEX IF NOT EXISTS nodes_parent ON nodes(parent, path);",
        )?;
        Ok(Self {
            db: Arc::new(Mutex::new(conn)),
            objects,
            quota: Arc::new(move |_| quota),
        })
    }

    /// Quotas per user (from the resource allocation policy) instead of one for all.
    pub fn with_quotas(mut self, quota: QuotaOf) -> Self {
        self.quota = quota;
        self
    }

    /// Bytes the home `/<home>` may hold.
    pub fn quota(&self, home: &str) -> u64 {
        (self.quota)(home)
    }

    fn db(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.db.lock().map_err(|_| StoreError::Poisoned)
    }

    /// The root: a container of everyone's homes, owned by no one, readable by all (its
    /// listing shows each caller only what they may read).
    fn root() -> Node {
        Node {
            path: NodePath::root(),
            kind: Kind::Container,
            owner: None,
            created: "2026-01-01T00:00:00.000Z".into(),
            modified: "2026-01-01T00:00:00.000Z".into(),
            length: 0,
            md5: None,
            content_type: None,
            access: Access {
                public: true,
                ..Access::default()
            },
            props: BTreeMap::new(),
            object: None,
        }
    }

    fn load(conn: &Connection, path: &NodePath) -> Result<Option<Node>, StoreError> {
        if path.is_root() {
            return Ok(Some(Self::root()));
        }
        let mut node = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM nodes WHERE path = ?1"),
                params![path.key()],
                node_from_row,
            )
            .optional()?;
        if let Some(n) = node.as_mut().filter(|n| n.kind == Kind::Container) {
            n.length = Self::subtree_bytes(conn, &n.path)?;
        }
        Ok(node)
    }

    fn subtree_bytes(conn: &Connection, path: &NodePath) -> Result<u64, StoreError> {
        let sum: i64 = conn.query_row(
            &format!(
                "SELECT coalesce(sum(length), 0) FROM nodes WHERE kind = 'data' AND {}",
                subtree_clause()
            ),
            params![path.key()],
            |r| r.get(0),
        )?;
        Ok(sum.max(0) as u64)
    }

    pub fn get(&self, path: &NodePath) -> Result<Option<Node>, StoreError> {
        let conn = self.db()?;
        Self::load(&conn, path)
    }

    pub fn require(&self, path: &NodePath) -> Result<Node, StoreError> {
        self.get(path)?
            .ok_or_else(|| StoreError::NotFound(path.clone()))
    }

    /// The user's home container `/<user>`, made private on first use.
    pub fn ensure_home(&self, user: &str) -> Result<Node, StoreError> {
        let path = NodePath::root()
            .child(user)
            .map_err(|e| StoreError::InvalidArgument(e.0))?;
        let conn = self.db()?;
        let t = now();
        conn.execute(
            "INSERT OR IGNORE INTO nodes (path, parent, kind, owner, created, modified)
             VALUES (?1, '/', 'container', ?2, ?3, ?3)",
            params![path.key(), user, t],
        )?;
        Self::load(&conn, &path)?.ok_or(StoreError::NotFound(path))
    }

    /// Bytes a home holds, and the quota.
    pub fn usage(&self, home: &str) -> Result<u64, StoreError> {
        let conn = self.db()?;
        let path = NodePath::from_key(&format!("/{home}"));
        Self::subtree_bytes(&conn, &path)
    }

    /// Children of a container, in `sort` order (`desc` reverses), starting after the
    /// child named `after`, at most `limit`.
    pub fn children(
        &self,
        path: &NodePath,
        sort: Sort,
        desc: bool,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<Node>, StoreError> {
        let conn = self.db()?;
        let order = match sort {
            Sort::Name => "path",
            Sort::Date => "modified",
            Sort::Length => "length",
        };
        let dir = if desc { "DESC" } else { "ASC" };
        let mut st = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM nodes WHERE parent = ?1 ORDER BY {order} {dir}, path {dir}"
        ))?;
        let rows = st.query_map(params![path.key()], node_from_row)?;
        let mut out = Vec::new();
        let mut started = after.is_none();
        for row in rows {
            let mut n = row?;
            if !started {
                // Paging by name: the CADC client resumes at (and including) the last child
                // it saw, and drops it itself.
                started = Some(n.path.name()) == after;
                if !started {
                    continue;
                }
            }
            if n.kind == Kind::Container {
                n.length = Self::subtree_bytes(&conn, &n.path)?;
            }
            out.push(n);
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
        Ok(out)
    }

    /// Makes a node below an existing container. It starts with its parent's access
    /// settings, so what is put in a shared or public folder is shared or public too.
    pub fn create(
        &self,
        path: &NodePath,
        kind: Kind,
        owner: &str,
        props: BTreeMap<String, String>,
        access: Option<Access>,
    ) -> Result<Node, StoreError> {
        let mut conn = self.db()?;
        let tx = conn.transaction()?;
        let node = Self::insert(&tx, path, kind, owner, props, access, None)?;
        tx.commit()?;
        Ok(node)
    }

    fn insert(
        conn: &Connection,
        path: &NodePath,
        kind: Kind,
        owner: &str,
        props: BTreeMap<String, String>,
        access: Option<Access>,
        data: Option<(&str, u64, &str)>,
    ) -> Result<Node, StoreError> {
        let parent_path = path
            .parent()
            .ok_or_else(|| StoreError::Duplicate(path.clone()))?;
        if parent_path.is_root() {
            return Err(StoreError::InvalidArgument(
                "nodes go inside a home container (/<user>/...)".into(),
            ));
        }
        let parent = Self::load(conn, &parent_path)?
            .filter(|p| p.kind == Kind::Container)
            .ok_or_else(|| StoreError::ContainerNotFound(parent_path.clone()))?;
        if Self::load(conn, path)?.is_some() {
            return Err(StoreError::Duplicate(path.clone()));
        }
        let access = access.unwrap_or(parent.access);
        let t = now();
        let target = match &kind {
            Kind::Link { target } => Some(target.clone()),
            _ => None,
        };
        let content_type = props.get(crate::node::PROP_TYPE).cloned();
        let (object, length, md5) = match data {
            Some((o, l, m)) => (Some(o), l as i64, Some(m)),
            None => (None, 0, None),
        };
        conn.execute(
            "INSERT INTO nodes (path, parent, kind, owner, created, modified, length, md5,
               content_type, object, target, public, group_read, group_write, props)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                path.key(),
                parent_path.key(),
                kind.code(),
                owner,
                t,
                length,
                md5,
                content_type,
                object,
                target,
                access.public,
                join_groups(&access.group_read),
                join_groups(&access.group_write),
                serde_json::to_string(&props).unwrap_or_else(|_| "{}".into()),
            ],
        )?;
        Self::load(conn, path)?.ok_or_else(|| StoreError::NotFound(path.clone()))
    }

    /// Sets a node's access and other properties (`None` removes one).
    pub fn update(
        &self,
        path: &NodePath,
        access: &Access,
        props: &BTreeMap<String, Option<String>>,
    ) -> Result<Node, StoreError> {
        let conn = self.db()?;
        let node = Self::load(&conn, path)?.ok_or_else(|| StoreError::NotFound(path.clone()))?;
        let mut kept = node.props.clone();
        let mut content_type = node.content_type.clone();
        for (k, v) in props {
            if k == crate::node::PROP_TYPE {
                content_type = v.clone();
            }
            match v {
                Some(v) => kept.insert(k.clone(), v.clone()),
                None => kept.remove(k),
            };
        }
        conn.execute(
            "UPDATE nodes SET public = ?2, group_read = ?3, group_write = ?4, props = ?5,
               content_type = ?6, modified = ?7 WHERE path = ?1",
            params![
                path.key(),
                access.public,
                join_groups(&access.group_read),
                join_groups(&access.group_write),
                serde_json::to_string(&kept).unwrap_or_else(|_| "{}".into()),
                content_type,
                now(),
            ],
        )?;
        Self::load(&conn, path)?.ok_or_else(|| StoreError::NotFound(path.clone()))
    }

    /// Every node of a subtree, the top first.
    pub fn subtree(&self, path: &NodePath) -> Result<Vec<Node>, StoreError> {
        let conn = self.db()?;
        let mut st = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM nodes WHERE {} ORDER BY length(path), path",
            subtree_clause()
        ))?;
        let rows = st.query_map(params![path.key()], node_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Deletes a node and everything below it; returns how many nodes went. Their bytes
    /// are removed after the records, so a failure leaves unreferenced objects at worst,
    /// never a node without bytes.
    pub async fn delete(&self, path: &NodePath) -> Result<usize, StoreError> {
        if path.segments().len() < 2 {
            return Err(StoreError::InvalidArgument(
                "the root and home containers cannot be deleted".into(),
            ));
        }
        let objects: Vec<String> = {
            let mut conn = self.db()?;
            let tx = conn.transaction()?;
            let objs: Vec<Option<String>> = {
                let mut st = tx.prepare(&format!(
                    "SELECT object FROM nodes WHERE {}",
                    subtree_clause()
                ))?;
                st.query_map(params![path.key()], |r| r.get(0))?
                    .collect::<Result<_, _>>()?
            };
            let n = tx.execute(
                &format!("DELETE FROM nodes WHERE {}", subtree_clause()),
                params![path.key()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(path.clone()));
            }
            tx.commit()?;
            objs.into_iter().flatten().collect()
        };
        let count = objects.len();
        for o in objects {
            if let Err(e) = self.objects.delete(&ObjectPath::from(o.as_str())).await {
                tracing::warn!(object = o, error = %e, "removing the bytes of a deleted node");
            }
        }
        Ok(count.max(1))
    }

    /// Moves a node (and its subtree) to `to`; when `to` is an existing container, into it.
    pub fn move_node(&self, from: &NodePath, to: &NodePath) -> Result<NodePath, StoreError> {
        let mut conn = self.db()?;
        let tx = conn.transaction()?;
        let dest = Self::destination(&tx, from, to)?;
        let (old, new) = (from.key(), dest.key());
        let parent = dest.parent().map(|p| p.key()).unwrap_or_else(|| "/".into());
        // Rewrites the prefix of every path (and parent) in the subtree.
        tx.execute(
            &format!(
                "UPDATE nodes SET parent = CASE WHEN path = ?1 THEN ?3 ELSE ?2 || substr(parent, length(?1) + 1) END,
                   path = ?2 || substr(path, length(?1) + 1) WHERE {}",
                subtree_clause()
            ),
            params![old, new, parent],
        )?;
        tx.execute(
            "UPDATE nodes SET modified = ?2 WHERE path = ?1",
            params![new, now()],
        )?;
        tx.commit()?;
        Ok(dest)
    }

    /// Where a move or copy of `from` to `to` lands, checked: not the root or a home, not
    /// into itself, not onto an existing node, into an existing container.
    fn destination(
        conn: &Connection,
        from: &NodePath,
        to: &NodePath,
    ) -> Result<NodePath, StoreError> {
        if from.segments().len() < 2 {
            return Err(StoreError::InvalidArgument(
                "the root and home containers cannot be moved".into(),
            ));
        }
        Self::load(conn, from)?.ok_or_else(|| StoreError::NotFound(from.clone()))?;
        let dest = match Self::load(conn, to)? {
            Some(n) if n.kind == Kind::Container => to
                .child(from.name())
                .map_err(|e| StoreError::InvalidArgument(e.0))?,
            Some(_) => return Err(StoreError::Duplicate(to.clone())),
            None => to.clone(),
        };
        if dest.within(from) {
            return Err(StoreError::InvalidArgument(format!(
                "{from} cannot go inside itself"
            )));
        }
        if Self::load(conn, &dest)?.is_some() {
            return Err(StoreError::Duplicate(dest));
        }
        let parent = dest.parent().unwrap_or_else(NodePath::root);
        if parent.is_root() {
            return Err(StoreError::InvalidArgument(
                "nodes go inside a home container (/<user>/...)".into(),
            ));
        }
        Self::load(conn, &parent)?
            .filter(|p| p.kind == Kind::Container)
            .ok_or(StoreError::ContainerNotFound(parent))?;
        Ok(dest)
    }

    /// Copies a node and its subtree to `to` (into it, when a container), owned by
    /// `owner`; bytes are copied in the object store.
    pub async fn copy_node(
        &self,
        from: &NodePath,
        to: &NodePath,
        owner: &str,
    ) -> Result<NodePath, StoreError> {
        let (dest, nodes) = {
            let conn = self.db()?;
            let dest = Self::destination(&conn, from, to)?;
            drop(conn);
            (dest, self.subtree(from)?)
        };
        let home = dest.home().unwrap_or_default().to_string();
        let bytes: u64 = nodes
            .iter()
            .filter(|n| n.kind == Kind::Data)
            .map(|n| n.length)
            .sum();
        self.check_quota(&home, bytes)?;
        let mut copies = Vec::new();
        for n in &nodes {
            let rel = &n.path.segments()[from.segments().len()..];
            let mut p = dest.clone();
            for s in rel {
                p = p.child(s).map_err(|e| StoreError::InvalidArgument(e.0))?;
            }
            let object = match &n.object {
                Some(o) => {
                    let key = ObjectPath::from(format!("objects/{}", uuid::Uuid::new_v4()));
                    self.objects
                        .copy(&ObjectPath::from(o.as_str()), &key)
                        .await?;
                    Some(key.to_string())
                }
                None => None,
            };
            copies.push((p, n.clone(), object));
        }
        let mut conn = self.db()?;
        let tx = conn.transaction()?;
        for (p, n, object) in &copies {
            let data = object
                .as_deref()
                .map(|o| (o, n.length, n.md5.as_deref().unwrap_or("")));
            Self::insert(
                &tx,
                p,
                n.kind.clone(),
                owner,
                n.props.clone(),
                Some(n.access.clone()),
                data,
            )?;
        }
        tx.commit()?;
        Ok(dest)
    }

    fn check_quota(&self, home: &str, adding: u64) -> Result<(), StoreError> {
        let used = self.usage(home)?;
        let quota = self.quota(home);
        if used.saturating_add(adding) > quota {
            return Err(StoreError::Quota {
                home: home.to_string(),
                would: used.saturating_add(adding),
                quota,
            });
        }
        Ok(())
    }

    /// Checks that bytes may be written at `path` (its parent is a container, it is not a
    /// container itself, the home has room for `expected` bytes) and returns the upload.
    pub fn begin_upload(
        &self,
        path: &NodePath,
        expected: Option<u64>,
    ) -> Result<Upload, StoreError> {
        let parent = path.parent().filter(|p| !p.is_root()).ok_or_else(|| {
            StoreError::InvalidArgument("files go inside a home container".into())
        })?;
        let existing = {
            let conn = self.db()?;
            Self::load(&conn, &parent)?
                .filter(|p| p.kind == Kind::Container)
                .ok_or_else(|| StoreError::ContainerNotFound(parent.clone()))?;
            Self::load(&conn, path)?
        };
        let replacing = match &existing {
            Some(n) if n.kind != Kind::Data => {
                return Err(StoreError::InvalidArgument(format!(
                    "{path} is not a data node"
                )));
            }
            Some(n) => n.length,
            None => 0,
        };
        let home = path.home().unwrap_or_default();
        let used = self.usage(home)?.saturating_sub(replacing);
        let quota = self.quota(home);
        let limit = quota.saturating_sub(used);
        if let Some(e) = expected
            && e > limit
        {
            return Err(StoreError::Quota {
                home: home.to_string(),
                would: used + e,
                quota,
            });
        }
        Ok(Upload {
            path: path.clone(),
            key: ObjectPath::from(format!("objects/{}", uuid::Uuid::new_v4())),
            limit,
            quota,
        })
    }

    /// Streams the body into a new object, computing its MD5; then creates or replaces the
    /// data node in one transaction. If `expected_md5` is given and differs, nothing changes.
    pub async fn finish_upload<S, E>(
        &self,
        up: Upload,
        owner: &str,
        content_type: Option<String>,
        expected_md5: Option<[u8; 16]>,
        mut body: S,
    ) -> Result<(Node, [u8; 16]), StoreError>
    where
        S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        // The MD5 is computed on a thread of its own, beside receiving and writing: on the
        // request's task it would cap uploads at the speed of one core's hashing.
        let (to_hasher, mut chunks) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
        let hasher = tokio::task::spawn_blocking(move || {
            let mut md5 = Md5::new();
            while let Some(c) = chunks.blocking_recv() {
                md5.update(&c);
            }
            <[u8; 16]>::from(md5.finalize())
        });
        let mut length: u64 = 0;
        let upload = self.objects.put_multipart(&up.key).await?;
        // Parts of 8 MiB are written while the next ones arrive.
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, 8 << 20);
        let outcome: Result<(), StoreError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| StoreError::Upload(e.to_string()))?;
                length += chunk.len() as u64;
                if length > up.limit {
                    return Err(StoreError::Quota {
                        home: up.path.home().unwrap_or_default().to_string(),
                        would: up.quota - up.limit + length,
                        quota: up.quota,
                    });
                }
                to_hasher
                    .send(chunk.clone())
                    .await
                    .map_err(|_| StoreError::Upload("the checksum thread stopped".into()))?;
                writer.wait_for_capacity(4).await?;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        drop(to_hasher);
        if let Err(e) = outcome {
            writer.abort().await.ok();
            return Err(e);
        }
        writer.finish().await?;
        let digest = hasher
            .await
            .map_err(|e| StoreError::Upload(format!("checksum: {e}")))?;
        if expected_md5.is_some_and(|m| m != digest) {
            self.objects.delete(&up.key).await.ok();
            return Err(StoreError::Checksum);
        }
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let committed = self.commit_upload(&up, owner, content_type, length, &hex);
        match committed {
            Ok((node, old)) => {
                if let Some(o) = old {
                    self.objects
                        .delete(&ObjectPath::from(o.as_str()))
                        .await
                        .ok();
                }
                Ok((node, digest))
            }
            Err(e) => {
                self.objects.delete(&up.key).await.ok();
                Err(e)
            }
        }
    }

    fn commit_upload(
        &self,
        up: &Upload,
        owner: &str,
        content_type: Option<String>,
        length: u64,
        md5: &str,
    ) -> Result<(Node, Option<String>), StoreError> {
        let mut conn = self.db()?;
        let tx = conn.transaction()?;
        let key = up.key.to_string();
        let old = match Self::load(&tx, &up.path)? {
            Some(n) if n.kind == Kind::Data => {
                tx.execute(
                    "UPDATE nodes SET object = ?2, length = ?3, md5 = ?4, modified = ?5,
                       content_type = coalesce(?6, content_type) WHERE path = ?1",
                    params![up.path.key(), key, length as i64, md5, now(), content_type],
                )?;
                n.object
            }
            Some(_) => {
                return Err(StoreError::InvalidArgument(format!(
                    "{} is not a data node",
                    up.path
                )));
            }
            None => {
                let mut props = BTreeMap::new();
                if let Some(t) = content_type {
                    props.insert(crate::node::PROP_TYPE.to_string(), t);
                }
                Self::insert(
                    &tx,
                    &up.path,
                    Kind::Data,
                    owner,
                    props,
                    None,
                    Some((&key, length, md5)),
                )?;
                None
            }
        };
        let node =
            Self::load(&tx, &up.path)?.ok_or_else(|| StoreError::NotFound(up.path.clone()))?;
        tx.commit()?;
        Ok((node, old))
    }

    /// The bytes of a data node, whole or a byte range, as a stream of chunks.
    pub async fn read(
        &self,
        node: &Node,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<futures::stream::BoxStream<'static, Result<bytes::Bytes, StoreError>>, StoreError>
    {
        let Some(o) = &node.object else {
            return Err(StoreError::NotFound(node.path.clone()));
        };
        let opts = object_store::GetOptions {
            range: range.map(object_store::GetRange::Bounded),
            ..Default::default()
        };
        let got = self
            .objects
            .get_opts(&ObjectPath::from(o.as_str()), opts)
            .await?;
        let span = got.range.clone();
        Ok(match got.payload {
            // A local file is read in large blocks: the object store's own stream reads 8 KiB
            // at a time, a task switch each, which caps downloads far below the disk's speed.
            object_store::GetResultPayload::File(file, _) => file_stream(file, span),
            object_store::GetResultPayload::Stream(s) => {
                s.map(|r| r.map_err(StoreError::from)).boxed()
            }
        })
    }

    /// A data node's bytes as a local file, for code that reads files (cfitsio): the object
    /// itself on a local store, else a temporary copy (`true`: the caller removes it).
    pub async fn local_file(&self, node: &Node) -> Result<(std::path::PathBuf, bool), StoreError> {
        let Some(o) = &node.object else {
            return Err(StoreError::NotFound(node.path.clone()));
        };
        let got = self
            .objects
            .get_opts(&ObjectPath::from(o.as_str()), Default::default())
            .await?;
        match got.payload {
            object_store::GetResultPayload::File(_, path) => Ok((path, false)),
            object_store::GetResultPayload::Stream(mut s) => {
                let tmp = std::env::temp_dir().join(format!("aster-vos-{}", uuid::Uuid::new_v4()));
                let mut f = tokio::fs::File::create(&tmp)
                    .await
                    .map_err(|e| StoreError::Upload(e.to_string()))?;
                use tokio::io::AsyncWriteExt;
                while let Some(chunk) = s.next().await {
                    let written = match chunk {
                        Ok(c) => f
                            .write_all(&c)
                            .await
                            .map_err(|e| StoreError::Upload(e.to_string())),
                        Err(e) => Err(StoreError::from(e)),
                    };
                    if let Err(e) = written {
                        let _ = tokio::fs::remove_file(&tmp).await;
                        return Err(e);
                    }
                }
                Ok((tmp, true))
            }
        }
    }

    /// The bytes of a data node, whole, in memory (for imports, which convert whole files).
    pub async fn read_all(&self, node: &Node) -> Result<bytes::Bytes, StoreError> {
        let mut out = bytes::BytesMut::with_capacity(node.length as usize);
        let mut s = self.read(node, None).await?;
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.freeze())
    }
}

/// Bytes `range` of a file, in blocks of 1 MiB read off the async threads.
fn file_stream(
    file: std::fs::File,
    range: std::ops::Range<u64>,
) -> futures::stream::BoxStream<'static, Result<bytes::Bytes, StoreError>> {
    const BLOCK: u64 = 1 << 20;
    futures::stream::try_unfold(
        (file, range.start, range.end),
        |(mut f, at, end)| async move {
            if at >= end {
                return Ok(None);
            }
            let want = (end - at).min(BLOCK) as usize;
            let (f, buf) = tokio::task::spawn_blocking(move || {
                use std::io::{Read, Seek, SeekFrom};
                f.seek(SeekFrom::Start(at))?;
                let mut buf = vec![0u8; want];
                f.read_exact(&mut buf)?;
                Ok::<_, std::io::Error>((f, buf))
            })
            .await
            .map_err(|e| StoreError::Upload(e.to_string()))?
            .map_err(|e| StoreError::Upload(format!("reading stored bytes: {e}")))?;
            Ok(Some((bytes::Bytes::from(buf), (f, at + want as u64, end))))
        },
    )
    .boxed()
}

#[cfg(test)]
mod tests;
