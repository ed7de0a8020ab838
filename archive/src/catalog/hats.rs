//! The HATS metadata files beside a table's data (`properties`, `partition_info.csv`,
//! `dataset/_common_metadata`, `dataset/_metadata`), rewritten after each commit so the
//! `hats` and `lsdb` Python packages (and pyarrow datasets) open the table as a catalog.
//! They are derived from the manifest, which stays the record of what is committed.
use std::sync::Arc;

use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::{
    FileMetaData, ParquetMetaData, ParquetMetaDataReader, ParquetMetaDataWriter,
};

use super::{CatalogError, HEALPIX_COLUMN, Manifest, Result, child_path, with_healpix_field};

pub(super) async fn write_metadata(
    store: &Arc<dyn ObjectStore>,
    dir: &ObjPath,
    m: &Manifest,
) -> Result<()> {
    let Some((ra, dec)) = &m.position else {
        return Ok(());
    };
    let mut csv = String::from("Norder,Npix\n");
    for cell in m.partitions.iter().filter_map(|p| p.cell) {
        csv.push_str(&format!("{},{}\n", cell.order, cell.pixel));
    }
    store
        .put(&dir.clone().join("partition_info.csv"), csv.into())
        .await?;
    let max_order = m
        .partitions
        .iter()
        .filter_map(|p| p.cell.map(|c| c.order))
        .max()
        .unwrap_or(0);
    let props = format!(
        "#HATS catalog written by Aster\n\
         obs_collection={name}\n\
         dataproduct_type=object\n\
         hats_nrows={rows}\n\
         hats_col_ra={ra}\n\
         hats_col_dec={dec}\n\
         hats_col_healpix={HEALPIX_COLUMN}\n\
         hats_col_healpix_order=29\n\
         hats_npix_suffix=/\n\
         hats_max_rows={max_rows}\n\
         hats_order={max_order}\n\
         hats_builder=aster-{version}\n\
         hats_version=v1.0\n\
         hats_creation_date={date}\n",
        name = m.table.name,
        rows = m.rows(),
        max_rows = m.max_rows,
        version = env!("CARGO_PKG_VERSION"),
        date = chrono::Utc::now().format("%Y-%m-%dT%H:%M%Z"),
    );
    store
        .put(&dir.clone().join("properties"), props.into())
        .await?;
    // The schema-only Parquet file HATS readers take the catalog's columns from.
    let schema = with_healpix_field(&m.table.arrow_schema());
    let mut buf = Vec::new();
    ArrowWriter::try_new(&mut buf, schema, None)?.close()?;
    store
        .put(
            &dir.clone().join("dataset").join("_common_metadata"),
            buf.into(),
        )
        .await?;
    write_dataset_metadata(store, dir, m).await
}

/// `dataset/_metadata`: the footers of every data file in one Parquet footer, each column
/// chunk naming its file (relative to `dataset/`), so readers plan the whole table from one
/// file. Written only for tables with data.
async fn write_dataset_metadata(
    store: &Arc<dyn ObjectStore>,
    dir: &ObjPath,
    m: &Manifest,
) -> Result<()> {
    let mut row_groups = Vec::new();
    let mut first: Option<Arc<ParquetMetaData>> = None;
    for f in m.partitions.iter().flat_map(|p| &p.files) {
        let meta = read_footer(store.as_ref(), &child_path(dir, &f.path), f.size).await?;
        let rel = f.path.strip_prefix("dataset/").unwrap_or(&f.path);
        for rg in meta.row_groups() {
            let columns = rg
                .columns()
                .iter()
                .map(|c| {
                    c.clone()
                        .into_builder()
                        .set_file_path(rel.to_string())
                        .build()
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            row_groups.push(
                rg.clone()
                    .into_builder()
                    .set_column_metadata(columns)
                    .build()?,
            );
        }
        first.get_or_insert(Arc::new(meta));
    }
    let Some(first) = first else {
        return Ok(());
    };
    let fm = first.file_metadata();
    let file_meta = FileMetaData::new(
        fm.version(),
        row_groups.iter().map(|r| r.num_rows()).sum(),
        fm.created_by().map(str::to_string),
        fm.key_value_metadata().cloned(),
        fm.schema_descr_ptr(),
        fm.column_orders().cloned(),
    );
    let meta = ParquetMetaData::new(file_meta, row_groups);
    // A footer-only Parquet file, with the leading magic readers check for.
    let mut buf = b"PAR1".to_vec();
    ParquetMetaDataWriter::new(&mut buf, &meta).finish()?;
    store
        .put(&dir.clone().join("dataset").join("_metadata"), buf.into())
        .await?;
    Ok(())
}

/// The footer of the Parquet file at `path`, `size` bytes long: two ranged reads.
async fn read_footer(
    store: &dyn ObjectStore,
    path: &ObjPath,
    size: u64,
) -> Result<ParquetMetaData> {
    let bad = |m: &str| CatalogError::BadData(format!("{path}: {m}"));
    if size < 12 {
        return Err(bad("too short for a Parquet file"));
    }
    let tail = store.get_range(path, size - 8..size).await?;
    if &tail[4..8] != b"PAR1" {
        return Err(bad("not a Parquet file"));
    }
    let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if len + 12 > size {
        return Err(bad("footer longer than the file"));
    }
    let footer = store.get_range(path, size - 8 - len..size - 8).await?;
    Ok(ParquetMetaDataReader::decode_metadata(&footer)?)
}
