//! Reading UWS request parameters: query strings, url-encoded and multipart bodies (file parts
//! staged as job uploads), case-insensitive names (DALI), and DALI/ISO 8601 timestamps.

use aster_archive::jobs::{JobStore, Uploads};
use axum::Form;
use axum::extract::{FromRequest, Multipart, Query, Request};
use axum::http::{Uri, header};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use tokio::io::AsyncWriteExt;

use super::UwsError;

/// Parameters in the order received; names as sent.
pub(super) type Params = Vec<(String, String)>;

/// Media type recorded for an uploaded part that declares none.
const DEFAULT_UPLOAD_TYPE: &str = "application/octet-stream";

/// The parameters of a query string.
pub(super) fn query(uri: &Uri) -> Result<Params, UwsError> {
    Query::<Params>::try_from_uri(uri)
        .map(|Query(params)| params)
        .map_err(|e| UwsError::BadRequest(e.body_text()))
}

/// The parameter an XML job description (`text/xml` body) is kept in.
pub const XML_PARAMETER: &str = "xml";
const XML_BODY_LIMIT: usize = 1 << 20;

/// The parameters of a POST: the query string's, then the body's. A multipart body's parts with
/// a file name are written to staged uploads instead; an XML body is kept whole as
/// [`XML_PARAMETER`].
pub(super) async fn read(
    store: &JobStore,
    request: Request,
) -> Result<(Params, Option<Uploads>), UwsError> {
    let mut params = query(request.uri())?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or_default().to_ascii_lowercase());
    match content_type.as_deref() {
        Some(t) if t.starts_with("application/x-www-form-urlencoded") => {
            let Form(body) = Form::<Params>::from_request(request, &())
                .await
                .map_err(|e| UwsError::Body {
                    status: e.status(),
                    message: e.body_text(),
                })?;
            params.extend(body);
            Ok((params, None))
        }
        Some(t) if t.starts_with("multipart/form-data") => {
            let multipart =
                Multipart::from_request(request, &())
                    .await
                    .map_err(|e| UwsError::Body {
                        status: e.status(),
                        message: e.body_text(),
                    })?;
            let uploads = read_multipart(store, multipart, &mut params).await?;
            Ok((params, uploads))
        }
        // A job described by a document (a VOSpace transfer, a node) keeps it whole.
        Some(t) if t.starts_with("text/xml") || t.starts_with("application/xml") => {
            let body = axum::body::to_bytes(request.into_body(), XML_BODY_LIMIT)
                .await
                .map_err(|_| UwsError::Body {
                    status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    message: format!("an XML job description is at most {XML_BODY_LIMIT} bytes"),
                })?;
            let text = String::from_utf8(body.to_vec())
                .map_err(|_| UwsError::BadRequest("the XML job description is not UTF-8".into()))?;
            params.push((XML_PARAMETER.to_string(), text));
            Ok((params, None))
        }
        Some(other) => Err(UwsError::UnsupportedMediaType(format!(
            "parameters must be sent as application/x-www-form-urlencoded or \
             multipart/form-data, not {other}"
        ))),
        // No body type: only the query string carries parameters; a body that cannot be
        // read is refused rather than ignored.
        None => {
            axum::body::to_bytes(request.into_body(), 0)
                .await
                .map_err(|_| {
                    UwsError::UnsupportedMediaType(
                        "a request body needs a Content-Type: application/x-www-form-urlencoded \
                         or multipart/form-data"
                            .into(),
                    )
                })?;
            Ok((params, None))
        }
    }
}

/// Reads the parts of a multipart body: text parts into `params`, file parts (those with a file
/// name) into staged uploads.
async fn read_multipart(
    store: &JobStore,
    mut multipart: Multipart,
    params: &mut Params,
) -> Result<Option<Uploads>, UwsError> {
    let mut uploads: Option<Uploads> = None;
    let body_error = |e: axum::extract::multipart::MultipartError| UwsError::Body {
        status: e.status(),
        message: e.body_text(),
    };
    while let Some(mut field) = multipart.next_field().await.map_err(body_error)? {
        let Some(name) = field.name().filter(|n| !n.is_empty()).map(str::to_owned) else {
            return Err(UwsError::BadRequest(
                "a multipart/form-data part has no name".into(),
            ));
        };
        if field.file_name().is_none() {
            let value = field.text().await.map_err(body_error)?;
            params.push((name, value));
            continue;
        }
        let media_type = field
            .content_type()
            .unwrap_or(DEFAULT_UPLOAD_TYPE)
            .to_owned();
        let staged = uploads.get_or_insert_with(|| store.uploads());
        let io_error =
            |what: &str, e: std::io::Error| UwsError::Internal(format!("upload {what}: {e}"));
        tokio::fs::create_dir_all(staged.dir())
            .await
            .map_err(|e| io_error("folder", e))?;
        let path = staged.next_path();
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| io_error("create", e))?;
        let mut size = 0u64;
        while let Some(chunk) = field.chunk().await.map_err(body_error)? {
            file.write_all(&chunk)
                .await
                .map_err(|e| io_error("write", e))?;
            size += u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        }
        // Wait for the written bytes to reach the file before the store moves it.
        file.flush().await.map_err(|e| io_error("write", e))?;
        staged.add(name, media_type, size);
    }
    Ok(uploads)
}

/// Removes every value of parameter `name` (compared case-insensitively, as DALI wants) and
/// returns the last one.
pub(super) fn take(params: &mut Params, name: &str) -> Option<String> {
    let mut last = None;
    params.retain_mut(|(n, v)| {
        if n.eq_ignore_ascii_case(name) {
            last = Some(std::mem::take(v));
            false
        } else {
            true
        }
    });
    last
}

/// The values of parameter `name`, compared case-insensitively.
pub(super) fn values<'a>(params: &'a Params, name: &str) -> impl Iterator<Item = &'a str> {
    params
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The last value of parameter `name`, compared case-insensitively.
pub(super) fn last<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    values(params, name).last()
}

/// Parses a DALI timestamp (`YYYY-MM-DD['T'hh:mm[:ss[.fff]]]['Z']`, UTC), or an ISO 8601 time
/// with an explicit offset.
pub(super) fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.to_utc());
    }
    let naive = text.strip_suffix('Z').unwrap_or(text);
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(naive, format).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(naive, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .map(|t| t.and_utc())
}
