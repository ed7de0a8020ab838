//! The field's Object catalogue, as alert production matches against it (DMS-REQ-0271,
//! 0324). A survey's data release measures its Objects on the deep coadds its templates
//! are made of; the night's field has its template, so its Objects are the sources
//! measured on it (detection, deblending, PSF fluxes, shapes and extendedness as on any
//! calibrated image), written to `dp.Object` before the night starts. Each new DIAObject and
//! every DIASource is then matched to its nearby stars and galaxies
//! ([`aster_processing::association::nearby`]) into `ap.DiaObject_To_Object_Match` and
//! `ap.DiaSource_To_Object_Match`.
use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use aster_archive::catalog::{CatalogStore, DEFAULT_MAX_ROWS};
use aster_archive::query::QueryEngine;
use aster_archive::schema::builtin_schemas;
use aster_processing::association::nearby::{
    CatalogObject, NearbyConfig, NearbyObject, ObjectIndex, ObjectKind,
};
use aster_processing::detection::DetectionConfig;
use aster_processing::image::Exposure;
use aster_processing::single_frame::{Source, process};
use aster_processing::sky::BANDS;
use aster_processing::wcs::SkyCoord;
use futures::TryStreamExt;

use crate::tables::Columns;

/// Object ids of the night's field, apart from the demo release's.
pub const FIRST_OBJECT: i64 = 5_000_000_000_000;

/// The field's Objects and their index on the sky.
pub struct FieldObjects {
    pub sources: Vec<Source>,
    pub index: ObjectIndex,
    band: usize,
}

impl FieldObjects {
    /// Measures the Objects on `template`, the field's coadd in `band`.
    pub fn measure(template: &Exposure, band: usize) -> Result<Self> {
        let mut coadd = template.clone();
        let (sources, _) = process(&mut coadd, &DetectionConfig::default())
            .context("measuring the field's Objects on its template")?;
        let scale = template
            .wcs
            .as_ref()
            .context("the template has no WCS")?
            .pixel_scale_arcsec();
        let objects = sources
            .iter()
            .filter_map(|s| {
                Some(CatalogObject {
                    id: FIRST_OBJECT + s.id,
                    position: SkyCoord::new(s.ra, s.dec)?,
                    position_err: s.measurement.x_err.max(s.measurement.y_err) * scale,
                    kind: kind_of(s),
                })
            })
            .collect();
        Ok(Self {
            index: ObjectIndex::new(NearbyConfig::default(), objects)?,
            sources,
            band,
        })
    }

    /// Appends the Objects to `dp.Object` (created when the store has none), unless the
    /// field's are there already (the template, and so its Objects, are the same every
    /// night of a season).
    pub async fn write(&self, store: &CatalogStore, engine: &QueryEngine) -> Result<()> {
        if store.manifest("dp", "Object").await?.is_some() {
            let there: Vec<RecordBatch> = engine
                .execute(
                    &format!(
                        "SELECT TOP 1 objectId FROM dp.Object WHERE objectId >= {FIRST_OBJECT}"
                    ),
                    Vec::new(),
                    None,
                    None,
                )
                .await
                .context("looking for the field's Objects")?
                .try_collect()
                .await?;
            if there.iter().any(|b| b.num_rows() > 0) {
                return Ok(());
            }
        }
        if store.manifest("dp", "Object").await?.is_none() {
            let dp = builtin_schemas()
                .into_iter()
                .find(|s| s.name == "dp")
                .context("no dp schema")?;
            let table = dp.table("Object").context("no dp.Object")?;
            store
                .create_table("dp", table, DEFAULT_MAX_ROWS)
                .await
                .context("creating dp.Object")?;
        }
        store
            .append("dp", "Object", &[self.batch()?])
            .await
            .context("writing the field's Objects")?;
        Ok(())
    }

    fn batch(&self) -> Result<RecordBatch> {
        let s = &self.sources;
        let m = |f: fn(&Source) -> Option<f64>| s.iter().map(f).collect::<Vec<_>>();
        let band = BANDS[self.band];
        let ext = |s: &Source| {
            Some(if kind_of(s) == ObjectKind::Galaxy {
                1.0
            } else {
                0.0
            })
        };
        let mut c = Columns::default();
        c.i64(
            "objectId",
            s.iter().map(|s| Some(FIRST_OBJECT + s.id)).collect(),
        )
        .f64("coord_ra", m(|s| Some(s.ra)))
        .f64("coord_dec", m(|s| Some(s.dec)))
        .bool("detect_isPrimary", vec![Some(true); s.len()])
        .f64("refExtendedness", m(ext))
        .str("refBand", vec![Some(band.to_string()); s.len()]);
        let (tract, patch): (Vec<_>, Vec<_>) = s
            .iter()
            .map(|s| {
                let (t, p) = crate::demo::tract_patch(s.ra, s.dec);
                (Some(t), Some(p))
            })
            .unzip();
        c.i64("tract", tract)
            .i64("patch", patch)
            .f64("x", m(|s| Some(s.measurement.x)))
            .f64("y", m(|s| Some(s.measurement.y)))
            .f64("shape_xx", m(|s| s.measurement.shape.map(|h| h.ixx)))
            .f64("shape_yy", m(|s| s.measurement.shape.map(|h| h.iyy)))
            .f64("shape_xy", m(|s| s.measurement.shape.map(|h| h.ixy)))
            .f64(
                format!("{band}_psfFlux"),
                m(|s| Some(s.measurement.psf_flux.value)),
            )
            .f64(
                format!("{band}_psfFluxErr"),
                m(|s| Some(s.measurement.psf_flux.err)),
            )
            .f64(format!("{band}_extendedness"), m(ext));
        c.batch()
    }
}

/// A source is a galaxy when its measured size exceeds the PSF's; one whose shape could not
/// be measured (the faintest) counts as a point.
pub fn kind_of(s: &Source) -> ObjectKind {
    if s.measurement.extendedness == Some(1.0) {
        ObjectKind::Galaxy
    } else {
        ObjectKind::Star
    }
}

/// Rows of a match table: `id_column` (the DIAObject's or DIASource's id), objectId, dist
/// and lnP.
pub fn match_batch(id_column: &str, matches: &[(i64, NearbyObject)]) -> Result<RecordBatch> {
    let mut c = Columns::default();
    c.i64(id_column, matches.iter().map(|(id, _)| Some(*id)).collect())
        .i64(
            "objectId",
            matches.iter().map(|(_, n)| Some(n.object_id)).collect(),
        )
        .f32(
            "dist",
            matches
                .iter()
                .map(|(_, n)| Some(n.distance_arcsec as f32))
                .collect(),
        )
        .f32(
            "lnP",
            matches
                .iter()
                .map(|(_, n)| Some((n.ln_p as f32).max(f32::MIN)))
                .collect(),
        );
    c.batch()
}
