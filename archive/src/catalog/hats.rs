//! The HATS metadata files beside a table's data (`properties`, `partition_info.csv`,
//! `dataset/_common_metadata`), rewritten after each commit so the `hats` and `lsdb` Python
//! packages open the table as a catalog.
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;

use super::{HEALPIX_COLUMN, Manifest, Result, with_healpix_field};

pub(super) async fn write_metadata(
    store: &dyn ObjectStore,
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
    Ok(())
}
