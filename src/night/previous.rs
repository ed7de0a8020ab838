//! What the Level 1 database remembers of the field when a night starts: the past year's
//! DIASources (with their DIAObject or known asteroid), forced sources and the asteroids'
//! geometry, read back through TAP's query engine, so the night continues the DIAObjects,
//! the alerts' history and the SSObject summaries of the nights before it instead of
//! starting over; and whether the night's visits are there already (a night is run once).
use std::ops::RangeInclusive;

use anyhow::{Context, Result, bail};
use arrow::array::{AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use aster_archive::query::QueryEngine;
use aster_processing::association::Detection;
use aster_processing::association::solar_system::Geometry;
use aster_processing::measurement::Flux;
use aster_processing::sky::BANDS;
use futures::TryStreamExt;

/// The field's Level 1 rows since some time, in time order.
pub struct Earlier {
    /// `ap.DiaSource` rows, all columns.
    pub sources: Vec<RecordBatch>,
    /// `ap.DiaForcedSource` rows, all columns.
    pub forced: Vec<RecordBatch>,
    /// Each known asteroid's DIASources: ssObjectId, band, midpointMjdTai, psfFlux,
    /// psfFluxErr, helioRange, topoRange, phaseAngle.
    pub ss: Vec<RecordBatch>,
    /// The largest DIAObject id ever given.
    pub last_dia_object: Option<i64>,
}

async fn rows(engine: &QueryEngine, adql: &str) -> Result<Vec<RecordBatch>> {
    let stream = engine
        .execute(adql, Vec::new(), None, None)
        .await
        .with_context(|| format!("reading the Level 1 database: {adql}"))?;
    Ok(stream.try_collect().await?)
}

/// Fails if any of `visits` is in the Level 1 database already.
pub async fn refuse_rerun(engine: &QueryEngine, visits: RangeInclusive<i64>) -> Result<()> {
    let (a, b) = (visits.start(), visits.end());
    for table in ["DiaSource", "DiaForcedSource"] {
        let found = rows(
            engine,
            &format!("SELECT TOP 1 visit FROM ap.{table} WHERE visit BETWEEN {a} AND {b}"),
        )
        .await?;
        if let Some(v) = found.iter().find(|b| b.num_rows() > 0) {
            let visit = int(v, "visit")?[0].unwrap_or(*a);
            bail!(
                "visit {visit} is in ap.{table} already: this night has been run (visits {a} to {b}); run another --night"
            );
        }
    }
    Ok(())
}

/// The rows from `since` (MJD) on within `radius` degrees of the field's centre `(ra, dec)`
/// (other fields' rows, such as the demo release's, are theirs).
pub async fn read(
    engine: &QueryEngine,
    since: f64,
    (ra, dec): (f64, f64),
    radius: f64,
) -> Result<Earlier> {
    let within = |table: &str| {
        format!(
            "CONTAINS(POINT('ICRS', {table}.ra, {table}.dec), CIRCLE('ICRS', {ra}, {dec}, {radius})) = 1"
        )
    };
    let sources = rows(
        engine,
        &format!(
            "SELECT * FROM ap.DiaSource AS d WHERE d.midpointMjdTai >= {since} AND {} \
             ORDER BY d.midpointMjdTai, d.diaSourceId",
            within("d")
        ),
    )
    .await?;
    let forced = rows(
        engine,
        &format!(
            "SELECT * FROM ap.DiaForcedSource AS f WHERE f.midpointMjdTai >= {since} AND {} \
             ORDER BY f.midpointMjdTai, f.diaForcedSourceId",
            within("f")
        ),
    )
    .await?;
    let ss = rows(
        engine,
        &format!(
            "SELECT s.ssObjectId, d.band, d.midpointMjdTai, d.psfFlux, d.psfFluxErr, \
             s.helioRange, s.topoRange, s.phaseAngle \
             FROM ap.SSSource AS s JOIN ap.DiaSource AS d ON s.diaSourceId = d.diaSourceId \
             WHERE d.midpointMjdTai >= {since} AND {} ORDER BY d.midpointMjdTai",
            within("d")
        ),
    )
    .await?;
    let last = rows(
        engine,
        "SELECT MAX(diaObjectId) AS newest FROM ap.DiaObject",
    )
    .await?;
    let last_dia_object = match last.iter().find(|b| b.num_rows() > 0) {
        Some(b) => int(b, "newest")?[0],
        None => None,
    };
    Ok(Earlier {
        sources,
        forced,
        ss,
        last_dia_object,
    })
}

/// A row read back: whose (a DIAObject or an SSObject), in which band, when, and what was
/// measured.
pub struct Seen<T> {
    pub object: i64,
    pub band: usize,
    pub mjd: f64,
    pub what: T,
}

/// A forced source's fluxes on the difference and the visit image.
pub type ForcedFluxes = (Flux, Flux);
/// An asteroid's DIASource flux and the geometry it was seen at.
pub type SeenFrom = (Flux, Geometry);

/// A column as 64-bit integers.
pub fn int(b: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>> {
    let c = column(b, name, &DataType::Int64)?;
    Ok(c.as_primitive::<Int64Type>().iter().collect())
}

/// A column as doubles.
pub fn float(b: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    let c = column(b, name, &DataType::Float64)?;
    Ok(c.as_primitive::<Float64Type>().iter().collect())
}

fn column(b: &RecordBatch, name: &str, to: &DataType) -> Result<arrow::array::ArrayRef> {
    let c = b
        .schema()
        .index_of(name)
        .ok()
        .or_else(|| {
            b.schema()
                .fields()
                .iter()
                .position(|f| f.name().eq_ignore_ascii_case(name))
        })
        .map(|i| b.column(i).clone())
        .with_context(|| format!("no column {name} in what the Level 1 database gave"))?;
    Ok(cast(&c, to)?)
}

/// Each row's band index (from the one-letter `band` column).
pub fn bands(b: &RecordBatch) -> Result<Vec<Option<usize>>> {
    let c = column(b, "band", &DataType::Utf8)?;
    Ok(c.as_string::<i32>()
        .iter()
        .map(|v| v.and_then(|v| BANDS.iter().position(|b| *b == v)))
        .collect())
}

/// Each row as a [`Seen`] of the object in `object` (none for a row without one, a band or
/// a time), what was measured made by `what` from the row's index.
fn seen<T>(
    b: &RecordBatch,
    object: &str,
    what: impl Fn(usize) -> Option<T>,
) -> Result<Vec<Option<Seen<T>>>> {
    let (id, band, mjd) = (int(b, object)?, bands(b)?, float(b, "midpointMjdTai")?);
    Ok((0..b.num_rows())
        .map(|i| {
            Some(Seen {
                object: id[i]?,
                band: band[i]?,
                mjd: mjd[i]?,
                what: what(i)?,
            })
        })
        .collect())
}

/// A flux with its error from two columns; NaN where a value is null.
fn fluxes(b: &RecordBatch, value: &str, err: &str) -> Result<Vec<Flux>> {
    Ok(float(b, value)?
        .into_iter()
        .zip(float(b, err)?)
        .map(|(v, e)| Flux {
            value: v.unwrap_or(f64::NAN),
            err: e.unwrap_or(f64::NAN),
        })
        .collect())
}

/// A DIASource row as association takes it; none for a row without a DIAObject (a known
/// asteroid's).
pub fn detections(b: &RecordBatch) -> Result<Vec<Option<Seen<Detection>>>> {
    let (ra, dec) = (float(b, "ra")?, float(b, "dec")?);
    let (ra_err, dec_err) = (float(b, "raErr")?, float(b, "decErr")?);
    let flux = fluxes(b, "psfFlux", "psfFluxErr")?;
    seen(b, "diaObjectId", |i| {
        Some(Detection {
            ra: ra[i]?,
            dec: dec[i]?,
            ra_err: ra_err[i].unwrap_or(f64::NAN),
            dec_err: dec_err[i].unwrap_or(f64::NAN),
            psf_flux: flux[i],
        })
    })
}

/// A forced-source row: its fluxes on the difference and the visit image.
pub fn forced(b: &RecordBatch) -> Result<Vec<Option<Seen<ForcedFluxes>>>> {
    let diff = fluxes(b, "psfFlux", "psfFluxErr")?;
    let sci = fluxes(b, "scienceFlux", "scienceFluxErr")?;
    seen(b, "diaObjectId", |i| Some((diff[i], sci[i])))
}

/// An asteroid's DIASource row: its flux and the geometry it was seen at; none where any of
/// them is missing.
pub fn ss_seen(b: &RecordBatch) -> Result<Vec<Option<Seen<SeenFrom>>>> {
    let (flux, flux_err) = (float(b, "psfFlux")?, float(b, "psfFluxErr")?);
    let (r, delta, phase) = (
        float(b, "helioRange")?,
        float(b, "topoRange")?,
        float(b, "phaseAngle")?,
    );
    seen(b, "ssObjectId", |i| {
        Some((
            Flux {
                value: flux[i]?,
                err: flux_err[i]?,
            },
            Geometry {
                r: r[i]?,
                delta: delta[i]?,
                phase_angle: phase[i]?,
            },
        ))
    })
}
