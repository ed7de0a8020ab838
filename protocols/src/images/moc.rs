//! MOC coverage (DMS-REQ-0326) of one dataset or of a whole collection, as IVOA MOC 2.0
//! FITS (the default) or JSON (`?format=json`).
use aster_archive::registry::coverage::{MOC_DEPTH, Moc, footprint_moc};
use aster_archive::registry::{DatasetFilter, Registry};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ImageServices, text_error};

#[derive(serde::Deserialize)]
pub(super) struct MocParams {
    format: Option<String>,
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
