//! The DataFusion table provider over a catalog-store table: at each scan it reads the
//! manifest committed in the query's snapshot (each schema's head read once per query, so
//! a join of a visit's DIASources with its DIAObjects sees both after the visit or both
//! before it), keeps only the partitions whose HEALPix cells meet the sky region the filters
//! ask for, and hands the remaining Parquet files to DataFusion's Parquet scan. Rows are
//! sorted by `_healpix_29` within each file, so the region also becomes ranges of that
//! column, which let the scan skip row groups and pages by their statistics; the query's
//! other filters prune by statistics and are evaluated while decoding, before the columns
//! they do not need.
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DFSchema;
use datafusion::common::stats::Precision;
use datafusion::common::{DataFusionError, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, col, lit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;

use aster_adql::crossmatch::order_for_radius;
use aster_adql::geometry::SkyRegion;
use aster_adql::region::region_of;

use super::{CatalogStore, HEALPIX_COLUMN, Head, Manifest, Partition, with_healpix_field};

/// One query's view of the catalog store, kept in its session's configuration: each
/// schema's head is read at the first scan of one of its tables and then held, so every
/// table of a schema the query reads is seen at the same commit.
#[derive(Debug)]
pub struct Snapshot {
    store: CatalogStore,
    heads: tokio::sync::Mutex<HashMap<String, Arc<Head>>>,
}

impl Snapshot {
    pub fn new(store: CatalogStore) -> Self {
        Self {
            store,
            heads: Default::default(),
        }
    }

    /// The manifest of `schema.table` this snapshot sees, if the table exists in it.
    pub async fn manifest(
        &self,
        schema: &str,
        table: &str,
    ) -> super::Result<Option<Arc<Manifest>>> {
        let head = {
            let mut heads = self.heads.lock().await;
            match heads.get(schema) {
                Some(h) => h.clone(),
                None => {
                    let h = Arc::new(self.store.committed(schema).await?);
                    heads.insert(schema.to_string(), h.clone());
                    h
                }
            }
        };
        match head.tables.get(table) {
            Some(v) => Ok(Some(self.store.load_manifest(schema, table, *v).await?)),
            None => Ok(None),
        }
    }
}

#[derive(Debug)]
pub struct CatalogTable {
    store: CatalogStore,
    schema_name: String,
    table_name: String,
    schema: SchemaRef,
    position: Option<(String, String)>,
}

impl std::fmt::Debug for CatalogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CatalogStore({})", self.inner.root)
    }
}

impl CatalogTable {
    pub fn new(store: CatalogStore, manifest: &Manifest) -> Self {
        Self {
            store,
            schema_name: manifest.schema.clone(),
            table_name: manifest.table.name.clone(),
            schema: manifest.table.arrow_schema(),
            position: manifest.position.clone(),
        }
    }

    /// Partitions that may hold rows of `region` (all of them without one).
    fn select<'m>(&self, m: &'m Manifest, region: Option<&SkyRegion>) -> Vec<&'m Partition> {
        let Some(region) = region else {
            return m.partitions.iter().collect();
        };
        let depth = m
            .partitions
            .iter()
            .filter_map(|p| p.cell.map(|c| c.order))
            .max()
            .unwrap_or(0)
            .max(3);
        let ranges = coverage29(region, depth);
        m.partitions
            .iter()
            .filter(|p| match p.cell {
                None => true,
                Some(c) => {
                    let r = c.range29();
                    ranges.iter().any(|q| q.start < r.end && r.start < q.end)
                }
            })
            .collect()
    }
}

/// The order whose cells are about a quarter of the region's radius: fine enough that the
/// covering ranges hug the region, coarse enough that there are few of them.
fn fine_depth(region: &SkyRegion) -> u8 {
    let radius = match region {
        SkyRegion::Circle(c) => c.radius,
        SkyRegion::Polygon(p) => {
            let c = p.centroid();
            p.vertices()
                .iter()
                .map(|v| c.distance(v))
                .fold(0.0, f64::max)
        }
    };
    order_for_radius(radius / 8.0).min(20)
}

/// `_healpix_29` within any of `ranges`: the region as a predicate Parquet statistics can
/// evaluate.
fn healpix_predicate(ranges: &[Range<u64>]) -> Option<Expr> {
    ranges
        .iter()
        .map(|r| {
            col(HEALPIX_COLUMN)
                .gt_eq(lit(r.start as i64))
                .and(col(HEALPIX_COLUMN).lt(lit(r.end as i64)))
        })
        .reduce(Expr::or)
}

/// Whether evaluating filters while decoding (so other columns are decoded only for rows
/// that pass) can save work: only when the scan reads columns the filters do not. Dynamic
/// filters (TOP-N thresholds) arrive later and count as such a filter.
fn late_materialization_pays(
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    schema: &arrow::datatypes::Schema,
) -> bool {
    let filtered: std::collections::HashSet<String> = filters
        .iter()
        .flat_map(|f| f.column_refs())
        .map(|c| c.name.clone())
        .collect();
    let read: Vec<&str> = match projection {
        Some(p) => p.iter().map(|&i| schema.field(i).name().as_str()).collect(),
        None => schema.fields().iter().map(|f| f.name().as_str()).collect(),
    };
    read.iter().any(|c| !filtered.contains(*c))
}

/// HEALPix cells at `depth` that overlap `region`, as ranges of order-29 indices. A
/// superset is always safe (filters still decide each row), so shapes the coverage code
/// cannot take (a zero radius, a hemisphere or more, a degenerate polygon) cover more.
fn coverage29(region: &SkyRegion, depth: u8) -> Vec<Range<u64>> {
    let bmoc = crate::registry::coverage::region_moc(region, depth);
    let shift = 2 * (29 - u32::from(depth));
    bmoc.to_ranges()
        .iter()
        .map(|r| (r.start << shift)..(r.end << shift))
        .collect()
}

#[async_trait]
impl TableProvider for CatalogTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::Base
    }
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        // Partition pruning only narrows the files; every filter is still applied to rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let m = match state.config().get_extension::<Snapshot>() {
            Some(snapshot) => snapshot.manifest(&self.schema_name, &self.table_name).await,
            None => {
                self.store
                    .manifest(&self.schema_name, &self.table_name)
                    .await
            }
        }
        .map_err(|e| DataFusionError::External(Box::new(e)))?
        .ok_or_else(|| {
            DataFusionError::Plan(format!(
                "table {}.{} no longer exists",
                self.schema_name, self.table_name
            ))
        })?;
        let region = self
            .position
            .as_ref()
            .and_then(|(ra, dec)| filters.iter().find_map(|f| region_of(f, ra, dec)));
        let partitions = self.select(&m, region.as_ref());
        let files: Vec<PartitionedFile> = partitions
            .iter()
            .flat_map(|p| p.files.iter())
            .map(|f| PartitionedFile::new(self.store.file_path(&m, &f.path).to_string(), f.size))
            .collect();
        let projected = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        if files.is_empty() {
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let rows: u64 = partitions.iter().map(|p| p.rows()).sum();
        let n_groups = state.config().target_partitions().max(1).min(files.len());
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); n_groups];
        for (i, f) in files.into_iter().enumerate() {
            groups[i % n_groups].push(f);
        }
        let exact = filters.is_empty() && region.is_none();
        let stats = Statistics::new_unknown(&self.schema).with_num_rows(if exact {
            Precision::Exact(rows as usize)
        } else {
            Precision::Inexact(rows as usize)
        });
        // Positioned tables' files also hold `_healpix_29`, after the table's columns, so
        // projections by index are unchanged when the scan reads it for pruning.
        let file_schema = match &self.position {
            Some(_) => with_healpix_field(&self.schema),
            None => self.schema.clone(),
        };
        let mut source = ParquetSource::new(file_schema.clone())
            .with_pushdown_filters(late_materialization_pays(projection, filters, &self.schema))
            .with_reorder_filters(true)
            .with_enable_page_index(true)
            .with_parquet_file_reader_factory(Arc::new(CachedParquetFileReaderFactory::new(
                self.store.object_store(),
                state.runtime_env().cache_manager.get_file_metadata_cache(),
            )));
        if let (Some(_), Some(region)) = (&self.position, &region)
            && let Some(predicate) = healpix_predicate(&coverage29(region, fine_depth(region)))
        {
            let df_schema = DFSchema::try_from(file_schema)?;
            source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
        }
        let source = Arc::new(source);
        let config = FileScanConfigBuilder::new(self.store.object_store_url().clone(), source)
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .with_statistics(stats)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

#[cfg(test)]
mod tests {
    use aster_adql::geometry::{Circle, Polygon, SkyPosition};

    use super::*;

    fn covers(ranges: &[Range<u64>], ra: f64, dec: f64) -> bool {
        let h = cdshealpix::nested::hash(29, ra.to_radians(), dec.to_radians());
        ranges.iter().any(|r| r.contains(&h))
    }

    #[test]
    fn degenerate_regions_cover_at_least_their_points() {
        let at = |ra, dec| SkyPosition::new(ra, dec).unwrap();
        for radius in [0.0, 1e-12, 0.1, 89.9, 90.0, 180.0] {
            let region = SkyRegion::Circle(Circle::new(at(12.0, -37.0), radius).unwrap());
            let depth = fine_depth(&region);
            assert!(
                covers(&coverage29(&region, depth), 12.0, -37.0),
                "radius {radius}"
            );
        }
        let same = Polygon::new(vec![at(1.0, 1.0), at(1.0, 1.0), at(1.0, 1.0)]).unwrap();
        let line = Polygon::new(vec![at(1.0, 1.0), at(2.0, 1.0), at(3.0, 1.0)]).unwrap();
        for p in [same, line] {
            let region = SkyRegion::Polygon(p);
            let depth = fine_depth(&region);
            assert!(covers(&coverage29(&region, depth), 1.0, 1.0));
        }
    }
}
