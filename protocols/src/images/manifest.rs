//! Bulk download manifests (DMS-REQ-0300, 0346, 0126): the datasets a selection names, each
//! with its URL, size and SHA-256, for `aster download` (or wget and sha256sum) to fetch
//! and verify. A selection is a collection, dataset types and data ID ranges, explicit
//! IDs, or an ADQL query on `ivoa.ObsCore` whose `obs_publisher_did` column names them.
use aster_archive::registry::{Dataset, DatasetFilter, DatasetType, id_from_did};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::params::Params;
use super::{ImageServices, read_params};

/// The most datasets one manifest lists.
const MAX_DATASETS: usize = 1_000_000;

fn bad(m: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({"error": m.into()})),
    )
        .into_response()
}

/// `visit=N` or `visit=A..B`.
fn range(name: &str, v: &str) -> Result<(i64, i64), String> {
    let parse = |t: &str| {
        t.trim()
            .parse::<i64>()
            .map_err(|_| format!("{name}={v}: expected N or A..B"))
    };
    match v.split_once("..") {
        Some((a, b)) => Ok((parse(a)?, parse(b)?)),
        None => parse(v).map(|n| (n, n)),
    }
}

fn filter(p: &Params) -> Result<DatasetFilter, String> {
    let types = p
        .all("TYPE")
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(|t| {
            DatasetType::parse(t.trim()).ok_or_else(|| {
                let names: Vec<&str> = DatasetType::ALL.iter().map(|t| t.name()).collect();
                format!("type {t}: one of {}", names.join(", "))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(DatasetFilter {
        types,
        collections: p
            .all("COLLECTION")
            .into_iter()
            .map(str::to_string)
            .collect(),
        visit: p.single("VISIT")?.map(|v| range("visit", v)).transpose()?,
        detector: p
            .single("DETECTOR")?
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("detector={v}: expected a number"))
            })
            .transpose()?,
        band: p.single("BAND")?.map(str::to_string),
    })
}

/// The dataset IDs an ADQL query's `obs_publisher_did` column holds.
async fn ids_from_adql(s: &ImageServices, adql: &str) -> Result<Vec<String>, String> {
    let engine = s
        .engine
        .as_ref()
        .ok_or("this server has no query engine for ADQL selections")?;
    let mut stream = engine
        // ObsCore is public: the selection runs as an anonymous query.
        .execute(adql, Vec::new(), Some(MAX_DATASETS), None)
        .await
        .map_err(|e| format!("adql: {e}"))?;
    let mut ids = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| format!("adql: {e}"))?;
        let column = batch
            .column_by_name("obs_publisher_did")
            .ok_or("adql: the query must select obs_publisher_did (from ivoa.ObsCore)")?;
        let text = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8)
            .map_err(|e| e.to_string())?;
        let text = text
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .ok_or("obs_publisher_did is not text")?;
        ids.extend(text.iter().flatten().map(|d| id_from_did(d).to_string()));
    }
    Ok(ids)
}

/// `GET|POST /api/manifest`: `collection`, `type` (comma-separated), `visit` (N or A..B),
/// `detector`, `band`, `id` (repeated) or `adql`; `format=json` (default) or `txt`
/// (`sha256 size url` lines).
pub(super) async fn manifest(
    State(s): State<ImageServices>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let base = s.base_url(&headers);
    let p = match read_params(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let format = match p.single("FORMAT") {
        Ok(None) => "json".to_string(),
        Ok(Some(f)) if f == "json" || f == "txt" => f.to_string(),
        Ok(Some(f)) => return bad(format!("format={f}: json or txt")),
        Err(e) => return bad(e),
    };
    let mut ids: Vec<String> = p
        .all("ID")
        .into_iter()
        .map(|i| id_from_did(i).to_string())
        .collect();
    match p.single("ADQL") {
        Err(e) => return bad(e),
        Ok(Some(q)) => match ids_from_adql(&s, q).await {
            Ok(found) => ids.extend(found),
            Err(e) => return bad(e),
        },
        Ok(None) => {}
    }
    let by_filter = ids.is_empty() && p.all("ADQL").is_empty();
    let f = match filter(&p) {
        Ok(f) => f,
        Err(e) => return bad(e),
    };
    if by_filter && f.types.is_empty() && f.collections.is_empty() && f.visit.is_none() {
        return bad("select datasets by collection, type, visit, id or adql");
    }
    let chosen = s
        .blocking(move |r| -> Result<Vec<Dataset>, String> {
            let mut out = if by_filter {
                r.list(&f).map_err(|e| e.to_string())?
            } else {
                let mut v = Vec::new();
                for id in &ids {
                    match r.get(id).map_err(|e| e.to_string())? {
                        Some(d) => v.push(d),
                        None => return Err(format!("no dataset {id}")),
                    }
                }
                v
            };
            out.sort_by(|a, b| a.id.cmp(&b.id));
            out.dedup_by(|a, b| a.id == b.id);
            Ok(out)
        })
        .await;
    let chosen = match chosen {
        Ok(c) if c.len() > MAX_DATASETS => {
            return bad(format!(
                "{} datasets: a manifest lists at most {MAX_DATASETS}; narrow the selection",
                c.len()
            ));
        }
        Ok(c) => c,
        Err(e) => return bad(e),
    };
    let url = |d: &Dataset| format!("{base}/files/{}", d.id);
    if format == "txt" {
        let mut text = String::new();
        for d in &chosen {
            text.push_str(&format!("{}  {}  {}\n", d.checksum, d.size, url(d)));
        }
        return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response();
    }
    let total: u64 = chosen.iter().map(|d| d.size).sum();
    axum::Json(serde_json::json!({
        "archive": base,
        "count": chosen.len(),
        "bytes": total,
        "datasets": chosen.iter().map(|d| serde_json::json!({
            "id": d.id,
            "type": d.dataset_type.name(),
            "collection": d.collection,
            "path": d.path,
            "url": url(d),
            "size": d.size,
            "sha256": d.checksum,
        })).collect::<Vec<_>>(),
    }))
    .into_response()
}
