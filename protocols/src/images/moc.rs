//! MOC coverage (DMS-REQ-0326) of one dataset or of a whole collection, as IVOA MOC 2.0
//! FITS (the default) or JSON (`?format=json`); and depth maps per band: how many images
//! cover each cell, as counts or as the MOC of the area covered at least N times.
use aster_archive::registry::coverage::{INDEX_DEPTH, MOC_DEPTH, Moc, footprint_moc};
use aster_archive::registry::{DatasetFilter, Registry};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ImageServices, text_error};

#[derive(serde::Deserialize)]
pub(super) struct MocParams {
    format: Option<String>,
}

#[derive(serde::Deserialize)]
pub(super) struct DepthParams {
    format: Option<String>,
    min: Option<u32>,
}

/// `GET /moc/depth/{collection}/{band}[?min=N&format=fits|json|counts]`: the area the
/// collection's images of the band cover at least `min` times (default 1) as a MOC, or
/// (`format=counts`) the number of images over each order-10 cell.
pub(super) async fn depth_map(
    State(s): State<ImageServices>,
    Path((collection, band)): Path<(String, String)>,
    Query(p): Query<DepthParams>,
) -> Response {
    let (c, b) = (collection.clone(), band.clone());
    let counts = match s.blocking(move |r| r.depth_map(&c, &b)).await {
        Ok(v) => v,
        Err(e) => return text_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if counts.is_empty() {
        return text_error(
            StatusCode::NOT_FOUND,
            format!("no images of band {band} in collection {collection}"),
        );
    }
    if p.format.as_deref() == Some("counts") {
        return axum::Json(serde_json::json!({
            "collection": collection,
            "band": band,
            "order": INDEX_DEPTH,
            "max_depth": counts.iter().map(|c| c.1).max(),
            "cells": counts.iter().map(|(cell, n)| [*cell, u64::from(*n)]).collect::<Vec<_>>(),
        }))
        .into_response();
    }
    let min = p.min.unwrap_or(1).max(1);
    let cells: Vec<u64> = counts
        .iter()
        .filter(|(_, n)| *n >= min)
        .map(|(c, _)| *c)
        .collect();
    respond(
        Moc::from_cells(INDEX_DEPTH, &cells),
        &format!("{collection}-{band}-depth{min}"),
        p.format.as_deref(),
    )
}

fn respond(moc: Moc, name: &str, format: Option<&str>) -> Response {
    match format.map(str::to_ascii_lowercase).as_deref() {
        None | Some("fits") | Some("application/fits") => (
            [
                (header::CONTENT_TYPE, "application/fits".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("inline; filename=\"{name}.moc.fits\""),
                ),
            ],
            moc.to_fits(),
        )
            .into_response(),
        Some("json") | Some("application/json") => axum::Json(moc.to_json()).into_response(),
        Some(other) => text_error(
            StatusCode::BAD_REQUEST,
            format!("format {other}: expected fits or json"),
        ),
    }
}

/// `GET /moc/datasets/{id}`: the footprint of one image.
pub(super) async fn dataset_moc(
    State(s): State<ImageServices>,
    Path(id): Path<String>,
    Query(p): Query<MocParams>,
) -> Response {
    let d = match s.dataset(&id).await {
        Ok(d) => d,
        Err(e) => return text_error(e.status(), e.message().to_string()),
    };
    let Some(bmoc) = d
        .observation
        .as_ref()
        .and_then(|o| footprint_moc(&o.footprint, MOC_DEPTH))
    else {
        return text_error(
            StatusCode::NOT_FOUND,
            format!("{} has no footprint on the sky", d.id),
        );
    };
    respond(Moc::from_bmoc(&bmoc), &d.id, p.format.as_deref())
}

fn collection_coverage(r: &Registry, name: &str) -> Result<Option<Moc>, String> {
    let all = r
        .list(&DatasetFilter {
            collections: vec![name.to_string()],
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
    if all.is_empty() {
        return Ok(None);
    }
    let mocs: Vec<_> = all
        .iter()
        .filter_map(|d| footprint_moc(&d.observation.as_ref()?.footprint, MOC_DEPTH))
        .collect();
    Ok(Some(Moc::union(MOC_DEPTH, &mocs)))
}

/// `GET /moc/collections/{name}`: the union of a collection's footprints.
pub(super) async fn collection_moc(
    State(s): State<ImageServices>,
    Path(name): Path<String>,
    Query(p): Query<MocParams>,
) -> Response {
    let key = name.clone();
    match s.blocking(move |r| collection_coverage(r, &key)).await {
        Ok(Some(moc)) => respond(moc, &name, p.format.as_deref()),
        Ok(None) => text_error(StatusCode::NOT_FOUND, format!("no collection {name}")),
        Err(e) => text_error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
