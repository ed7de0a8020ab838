//! The query engine: DataFusion sessions over the catalog store and TAP_SCHEMA, with the ADQL
//! functions registered, turning ADQL into logical plans and running them as record-batch
//! streams. Uploaded tables join a query as `TAP_UPLOAD.<name>`; positional crossmatch joins
//! run as HEALPix-cell hash joins. `ivoa.ObsCore` and `archive.Exposure` are built from the
//! dataset registry at each refresh of the table list. Users' own tables (`user_<name>`
//! schemas) are in a query's session, and in the TAP_SCHEMA it sees, only when the caller
//! may read them.
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider,
};
use datafusion::datasource::MemTable;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use tokio::sync::RwLock;

use aster_adql::crossmatch::CrossmatchJoin;
use aster_adql::translate::{NameMap, translate};
use aster_adql::validate::AdqlError;

use crate::catalog::{CatalogStore, CatalogTable, Snapshot};
use crate::identity::Principal;
use crate::registry::{Registry, exposures, obscore};
use crate::tap_schema::{SchemaDesc, TableDesc, tap_schema_desc, tap_schema_tables_data};
use crate::user_tables::{TableAccess, UserTables, owner_of};

const CATALOG: &str = "aster";
pub const UPLOAD_SCHEMA: &str = "TAP_UPLOAD";
const TAP_SCHEMA: &str = "TAP_SCHEMA";

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query is not valid ADQL or names something that does not exist.
    #[error("{0}")]
    Adql(#[from] AdqlError),
    #[error("{0}")]
    Plan(String),
    #[error("{0}")]
    Execution(String),
    #[error("catalog: {0}")]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("dataset registry: {0}")]
    Registry(#[from] crate::registry::RegistryError),
    #[error("{0}")]
    UserTables(#[from] crate::user_tables::UserTableError),
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        match e {
            E::Plan(m) => QueryError::Plan(clean(&m)),
            E::SchemaError(err, _) => QueryError::Plan(clean(&err.to_string())),
            E::SQL(err, _) => QueryError::Plan(clean(&err.to_string())),
            E::NotImplemented(m) => QueryError::Plan(format!("not supported: {}", clean(&m))),
            E::Context(ctx, inner) => match QueryError::from(*inner) {
                QueryError::Plan(m) => QueryError::Plan(format!("{ctx}: {m}")),
                other => other,
            },
            other => QueryError::Execution(clean(&other.to_string())),
        }
    }
}

/// DataFusion messages name its internal catalog; users only know their schemas.
fn clean(m: &str) -> String {
    m.replace(&format!("{CATALOG}."), "")
}

/// A table uploaded with a query (TAP UPLOAD).
pub struct Upload {
    pub name: String,
    pub batches: Vec<RecordBatch>,
    pub schema: arrow::datatypes::SchemaRef,
}

/// A user's table, published to those its settings allow.
struct PrivateTable {
    schema: String,
    name: String,
    provider: Arc<dyn datafusion::catalog::TableProvider>,
    desc: TableDesc,
    access: TableAccess,
}

/// A snapshot of what the archive publishes: catalog tables and their TAP metadata.
struct Published {
    /// DataFusion schemas of the release tables and TAP_SCHEMA (of those tables).
    schemas: Vec<(String, Arc<dyn SchemaProvider>)>,
    /// Users' tables, for the sessions of those who may read them.
    private: Vec<PrivateTable>,
    /// Canonical spellings of every published name.
    names: NameMap,
    metadata: Vec<SchemaDesc>,
    loaded: Instant,
}

#[derive(Clone)]
pub struct QueryEngine {
    store: CatalogStore,
    /// The dataset registry whose images `ivoa.ObsCore` publishes, with the DataLink
    /// endpoint their access URLs point at.
    obscore: Option<(Arc<Registry>, String)>,
    /// Who may read users' tables; without it they are their owners' alone.
    user_tables: Option<UserTables>,
    published: Arc<RwLock<Option<Arc<Published>>>>,
    target_partitions: usize,
    /// Shared by every query's session: it knows the catalog's object store (local or S3)
    /// and caches Parquet footers and page indexes, which never change once written.
    runtime: Arc<RuntimeEnv>,
}

/// How long the list of tables is trusted before the store is listed again.
const REFRESH: Duration = Duration::from_secs(5);

impl QueryEngine {
    pub fn new(store: CatalogStore) -> Self {
        let runtime = Arc::new(RuntimeEnv::default());
        runtime.register_object_store(store.object_store_url().as_ref(), store.object_store());
        Self {
            runtime,
            store,
            obscore: None,
            user_tables: None,
            published: Arc::new(RwLock::new(None)),
            target_partitions: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        }
    }

    /// Publishes the registry's images as `ivoa.ObsCore`, their access URLs under
    /// `links_endpoint` (the DataLink service).
    pub fn with_obscore(mut self, registry: Arc<Registry>, links_endpoint: String) -> Self {
        self.obscore = Some((registry, links_endpoint));
        self
    }

    /// Reads who may see users' tables from `acl`.
    pub fn with_user_tables(mut self, acl: UserTables) -> Self {
        self.user_tables = Some(acl);
        self
    }

    pub fn user_tables(&self) -> Option<&UserTables> {
        self.user_tables.as_ref()
    }

    pub fn store(&self) -> &CatalogStore {
        &self.store
    }

    /// Forgets the cached table list (after a table is created or dropped).
    pub async fn invalidate(&self) {
        *self.published.write().await = None;
    }

    async fn published(&self) -> Result<Arc<Published>, QueryError> {
        if let Some(p) = self.published.read().await.as_ref()
            && p.loaded.elapsed() < REFRESH
        {
            return Ok(p.clone());
        }
        let tables = self.store.tables().await?;
        let builtin = crate::schema::builtin_schemas();
        let mut metadata: Vec<SchemaDesc> = Vec::new();
        let mut schemas: Vec<(String, Arc<dyn SchemaProvider>)> = Vec::new();
        let mut names = NameMap::default();
        let acl = match &self.user_tables {
            Some(u) => u.all()?,
            None => Default::default(),
        };
        let mut private = Vec::new();
        for m in &tables {
            let desc = TableDesc::from_felis(&m.schema, &m.table);
            names.insert_relation(&m.schema);
            names.insert_relation(&m.table.name);
            m.table.columns.iter().for_each(|c| names.insert(&c.name));
            if owner_of(&m.schema).is_some() {
                private.push(PrivateTable {
                    schema: m.schema.clone(),
                    name: m.table.name.clone(),
                    provider: Arc::new(CatalogTable::new(self.store.clone(), m)),
                    desc,
                    access: acl
                        .get(&(m.schema.clone(), m.table.name.clone()))
                        .cloned()
                        .unwrap_or_default(),
                });
                continue;
            }
            match metadata.iter_mut().find(|s| s.name == m.schema) {
                Some(s) => s.tables.push(desc),
                None => metadata.push(SchemaDesc {
                    name: m.schema.clone(),
                    description: builtin
                        .iter()
                        .find(|s| s.name == m.schema)
                        .and_then(|s| s.description.clone()),
                    tables: vec![desc],
                }),
            }
            let provider = match schemas.iter().find(|(n, _)| *n == m.schema) {
                Some((_, p)) => p.clone(),
                None => {
                    let p: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
                    schemas.push((m.schema.clone(), p.clone()));
                    p
                }
            };
            provider.register_table(
                m.table.name.clone(),
                Arc::new(CatalogTable::new(self.store.clone(), m)),
            )?;
        }
        if let Some((registry, links)) = &self.obscore {
            // One read of the registry feeds both tables: every raw has an observation.
            let rows = registry.observations()?;
            for (desc, table, batch) in [
                (
                    obscore::obscore_desc(),
                    obscore::TABLE,
                    obscore::obscore_batch(&rows, links),
                ),
                (
                    exposures::exposure_desc(),
                    exposures::TABLE,
                    exposures::exposure_batch(&rows),
                ),
            ] {
                let schema = batch.schema();
                let provider: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
                provider.register_table(
                    table.to_string(),
                    Arc::new(MemTable::try_new(schema.clone(), vec![vec![batch]])?),
                )?;
                names.insert_relation(&desc.name);
                names.insert_relation(table);
                schema.fields().iter().for_each(|f| names.insert(f.name()));
                schemas.push((desc.name.clone(), provider));
                metadata.push(desc);
            }
        }
        metadata.push(tap_schema_desc());
        let tap: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
        for (name, table) in tap_schema_tables_data(&metadata)? {
            names.insert_relation(&name);
            tap.register_table(name, table)?;
        }
        names.insert_relation(TAP_SCHEMA);
        schemas.push((TAP_SCHEMA.to_string(), tap));
        let p = Arc::new(Published {
            schemas,
            private,
            names,
            metadata,
            loaded: Instant::now(),
        });
        *self.published.write().await = Some(p.clone());
        Ok(p)
    }

    /// The schemas, tables and columns TAP publishes to `viewer` (for VOSI-tables): the
    /// releases, and the users' tables the viewer may read.
    pub async fn metadata(
        &self,
        viewer: Option<&Principal>,
    ) -> Result<Vec<SchemaDesc>, QueryError> {
        let published = self.published().await?;
        let visible = visible(&published, viewer);
        Ok(metadata_for(&published, &visible))
    }

    /// A session over the published schemas (built once per refresh and shared by every
    /// query), the users' tables `viewer` may read, and this query's uploads.
    async fn session(
        &self,
        uploads: Vec<Upload>,
        viewer: Option<&Principal>,
    ) -> Result<(SessionContext, NameMap), QueryError> {
        let published = self.published().await?;
        let mut config = SessionConfig::new()
            .with_extension(Arc::new(Snapshot::new(self.store.clone())))
            .with_default_catalog_and_schema(CATALOG, "public")
            .with_information_schema(false)
            .with_target_partitions(self.target_partitions);
        // A hash join's dynamic filter re-evaluates the probe side's key expression in the
        // scan; for crossmatches that key is a HEALPix index computed per row, so the filter
        // doubles the work while pruning nothing (catalog files are not sorted by any key a
        // join uses other than position).
        config
            .options_mut()
            .optimizer
            .enable_join_dynamic_filter_pushdown = false;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .with_optimizer_rule(Arc::new(CrossmatchJoin))
            .build();
        let ctx = SessionContext::new_with_state(state);
        for f in aster_adql::udf::all() {
            ctx.register_udf(f);
        }
        let catalog = Arc::new(MemoryCatalogProvider::new());
        let visible = visible(&published, viewer);
        for (name, schema) in &published.schemas {
            if name == TAP_SCHEMA && !visible.is_empty() {
                continue;
            }
            catalog.register_schema(name, schema.clone())?;
        }
        if !visible.is_empty() {
            for t in &visible {
                let schema = match catalog.schema(&t.schema) {
                    Some(s) => s,
                    None => {
                        let s: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
                        catalog.register_schema(&t.schema, s.clone())?;
                        s
                    }
                };
                schema.register_table(t.name.clone(), t.provider.clone())?;
            }
            // This viewer's TAP_SCHEMA: the releases' and the tables they may read.
            let tap: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
            for (name, table) in tap_schema_tables_data(&metadata_for(&published, &visible))? {
                tap.register_table(name, table)?;
            }
            catalog.register_schema(TAP_SCHEMA, tap)?;
        }
        let mut names = published.names.clone();
        if !uploads.is_empty() {
            let up: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
            for u in uploads {
                u.schema
                    .fields()
                    .iter()
                    .for_each(|f| names.insert(f.name()));
                names.insert_relation(&u.name);
                let t = MemTable::try_new(u.schema.clone(), vec![u.batches])?;
                up.register_table(u.name, Arc::new(t))?;
            }
            catalog.register_schema(UPLOAD_SCHEMA, up)?;
            names.insert_relation(UPLOAD_SCHEMA);
        }
        ctx.register_catalog(CATALOG, catalog);
        Ok((ctx, names))
    }

    /// Plans an ADQL query; errors name the line and column of the problem where known.
    pub async fn plan(
        &self,
        adql: &str,
        uploads: Vec<Upload>,
        viewer: Option<&Principal>,
    ) -> Result<(SessionContext, LogicalPlan), QueryError> {
        let (ctx, names) = self.session(uploads, viewer).await?;
        let stmt = translate(adql, &names)?;
        let plan = ctx
            .state()
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
                stmt,
            )))
            .await?;
        Ok((ctx, plan))
    }

    /// Runs an ADQL query for `viewer` (None: anonymous), returning its rows as a stream;
    /// `limit` caps the rows (MAXREC).
    pub async fn execute(
        &self,
        adql: &str,
        uploads: Vec<Upload>,
        limit: Option<usize>,
        viewer: Option<&Principal>,
    ) -> Result<SendableRecordBatchStream, QueryError> {
        let (ctx, plan) = self.plan(adql, uploads, viewer).await?;
        let mut df = ctx.execute_logical_plan(plan).await?;
        if let Some(n) = limit {
            df = df.limit(0, Some(n))?;
        }
        Ok(df.execute_stream().await?)
    }
}

/// The users' tables `viewer` may read.
fn visible<'a>(published: &'a Published, viewer: Option<&Principal>) -> Vec<&'a PrivateTable> {
    published
        .private
        .iter()
        .filter(|t| t.access.allows(&t.schema, viewer))
        .collect()
}

/// The releases' metadata with `visible` users' tables added (before TAP_SCHEMA, which
/// describes them all).
fn metadata_for(published: &Published, visible: &[&PrivateTable]) -> Vec<SchemaDesc> {
    let mut m = published.metadata.clone();
    if visible.is_empty() {
        return m;
    }
    let tap = m.pop();
    for t in visible {
        match m.iter_mut().find(|s| s.name == t.schema) {
            Some(s) => s.tables.push(t.desc.clone()),
            None => m.push(SchemaDesc {
                name: t.schema.clone(),
                description: owner_of(&t.schema).map(|o| format!("{o}'s own tables")),
                tables: vec![t.desc.clone()],
            }),
        }
    }
    m.extend(tap);
    m
}
