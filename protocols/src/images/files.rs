//! Dataset files over HTTP (DMS-REQ-0300, 0346): streamed, checksum verified first,
//! resumable with single `Range` requests, named by `Content-Disposition`, with the
//! SHA-256 as ETag; and `/api/datasets/{id}`, a dataset's registry record as JSON.
use std::path::Path as FsPath;

use aster_archive::registry::Dataset;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{ImageServices, text_error};

const CHUNK: usize = 1 << 20;

/// A `Range: bytes=...` header's one range within a file of `len` bytes: `Ok(None)` for
/// no (or an unusable multi-range) header, `Err` when it lies outside the file.
fn byte_range(headers: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // several ranges: the whole file is a valid answer
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => (start, end.min(len.saturating_sub(1))),
        (Ok(start), Err(_)) if b.is_empty() => (start, len.saturating_sub(1)),
        (Err(_), Ok(suffix)) if a.is_empty() && suffix > 0 => {
            (len.saturating_sub(suffix), len.saturating_sub(1))
        }
        _ => return Ok(None),
    };
    if range.0 >= len {
        return Err(());
    }
    Ok(Some(range))
}

/// Streams `path` (or the requested range of it).
pub(super) async fn stream_file(
    path: &FsPath,
    headers: &HeaderMap,
    content_type: &str,
    filename: &str,
    etag: Option<&str>,
) -> Response {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => {
            return text_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("opening the file: {e}"),
            );
        }
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => {
            return text_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the file: {e}"),
            );
        }
    };
    let mut builder = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        )
        .header(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
                .unwrap_or(HeaderValue::from_static("attachment")),
        );
    if let Some(tag) = etag {
        builder = builder.header(header::ETAG, format!("\"{tag}\""));
        // Resume only from the same bytes: If-Range names them by ETag.
        if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
            && if_range.trim_matches('"') != tag
        {
            return stream_from(builder.status(StatusCode::OK), file, len);
        }
    }
    match byte_range(headers, len) {
        Err(()) => Response::builder()
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{len}"))
            .body(Body::empty())
            .expect("a valid response"),
        Ok(None) => stream_from(builder.status(StatusCode::OK), file, len),
        Ok(Some((start, end))) => {
            if let Err(e) = file.seek(std::io::SeekFrom::Start(start)).await {
                return text_error(StatusCode::INTERNAL_SERVER_ERROR, format!("seeking: {e}"));
            }
            stream_from(
                builder
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}")),
                file,
                end + 1 - start,
            )
        }
    }
}

/// Streams `count` bytes of `file` from where it stands.
pub(crate) fn stream_from(
    builder: axum::http::response::Builder,
    file: tokio::fs::File,
    count: u64,
) -> Response {
    let chunks = futures::stream::try_unfold((file, count), |(mut file, left)| async move {
        if left == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        let mut chunk = bytes::BytesMut::with_capacity(CHUNK.min(left as usize));
        let read = (&mut file).take(left).read_buf(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file ended early",
            ));
        }
        Ok(Some((chunk.freeze(), (file, left - read as u64))))
    });
    builder
        .header(header::CONTENT_LENGTH, count)
        .body(Body::from_stream(chunks))
        .expect("a valid response")
}

fn file_name(d: &Dataset) -> String {
    let ext = FsPath::new(&d.path)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("dat");
    format!("{}.{ext}", d.id)
}

/// `GET /files/{id}`: the dataset's file.
pub(super) async fn download(
    State(s): State<ImageServices>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let d = match s.dataset(&id).await {
        Ok(d) => d,
        Err(e) => return text_error(e.status(), e.message().to_string()),
    };
    let path = match s.file_of(&d).await {
        Ok(p) => p,
        Err(e) => return text_error(e.status(), e.message().to_string()),
    };
    // A regenerated file is not the archived bytes: it has no recorded checksum.
    let archived = path == s.registry.path_of(&d);
    stream_file(
        &path,
        &headers,
        &d.format,
        &file_name(&d),
        archived.then_some(d.checksum.as_str()),
    )
    .await
}

/// The registry record of a dataset as JSON.
pub(super) fn record_json(d: &Dataset, base: &str) -> serde_json::Value {
    let o = d.observation.as_ref();
    serde_json::json!({
        "id": d.id,
        "publisher_did": d.publisher_did(),
        "dataset_type": d.dataset_type.name(),
        "collection": d.collection,
        "data_id": d.data_id,
        "path": d.path,
        "url": format!("{base}/files/{}", d.id),
        "size": d.size,
        "sha256": d.checksum,
        "format": d.format,
        "stored": d.stored,
        "created": d.created,
        "observation": o.map(|o| serde_json::json!({
            "obs_id": o.obs_id,
            "footprint": o.footprint.iter().map(|p| [p.ra(), p.dec()]).collect::<Vec<_>>(),
            "resolution_arcsec": o.resolution,
            "pixels": [o.pixels.0, o.pixels.1],
            "t_min_mjd": o.t_min,
            "t_max_mjd": o.t_max,
            "exptime_s": o.exptime,
            "em_min_m": o.em_min,
            "em_max_m": o.em_max,
        })),
        "provenance": d.provenance.as_ref().map(|p| serde_json::json!({
            "task": p.task,
            "run": p.run,
            "config": p.config,
            "software": p.software,
            "inputs": p.inputs,
        })),
        "metadata": d.metadata,
    })
}

/// `GET /api/datasets/{id}`.
pub(super) async fn describe(
    State(s): State<ImageServices>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match s.dataset(&id).await {
        Ok(d) => axum::Json(record_json(&d, &s.base_url(&headers))).into_response(),
        Err(e) => (
            e.status(),
            axum::Json(serde_json::json!({"error": e.message()})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(h: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
        let mut m = HeaderMap::new();
        m.insert(header::RANGE, HeaderValue::from_str(h).unwrap());
        byte_range(&m, len)
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(range("bytes=0-99", 1000), Ok(Some((0, 99))));
        assert_eq!(range("bytes=500-", 1000), Ok(Some((500, 999))));
        assert_eq!(range("bytes=-100", 1000), Ok(Some((900, 999))));
        assert_eq!(range("bytes=900-5000", 1000), Ok(Some((900, 999))));
        assert_eq!(range("bytes=1000-", 1000), Err(()));
        assert_eq!(range("bytes=0-1,5-9", 1000), Ok(None));
        assert_eq!(range("bytes=9-1", 1000), Ok(None));
        assert_eq!(range("items=0-1", 1000), Ok(None));
    }
}
