//! The bytes of data nodes: `PUT /vospace/data/{path}` streams an upload into the object
//! store (checked against a `Digest: md5=` sent with it, answered with the stored digest),
//! `GET`/`HEAD` stream a download with its length, digest and byte-range support (resume),
//! and `GET /vospace/files/{path}` redirects to them.
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use futures::TryStreamExt;

use crate::node::{Kind, Node};
use crate::nodes::{Caller, path_of};
use crate::path::NodePath;
use crate::service::{Fault, VoSpace};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The MD5 of an RFC 3230 `Digest` header (`md5=<base64>`), or of `Content-MD5`.
fn md5_sent(headers: &HeaderMap) -> Result<Option<[u8; 16]>, Fault> {
    let from = |v: &str| -> Result<[u8; 16], Fault> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .map_err(|_| Fault::Invalid("the MD5 digest sent is not base64".into()))?;
        raw.try_into()
            .map_err(|_| Fault::Invalid("the MD5 digest sent is not 16 bytes".into()))
    };
    if let Some(d) = headers.get("digest").and_then(|v| v.to_str().ok()) {
        for part in d.split(',') {
            if let Some((alg, value)) = part.trim().split_once('=')
                && alg.eq_ignore_ascii_case("md5")
            {
                return from(value).map(Some);
            }
        }
    }
    match headers.get("content-md5").and_then(|v| v.to_str().ok()) {
        Some(v) => from(v).map(Some),
        None => Ok(None),
    }
}

fn hex_to_b64(hex: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    bytes.filter(|b| b.len() == 16).map(|b| b64(&b))
}

/// `PUT /vospace/data/{path}`: creates or replaces the data node with the body.
pub(crate) async fn put_data(
    State(v): State<VoSpace>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Fault> {
    let p = caller.as_deref();
    let path = path_of(&uri, "data")?;
    let Some(principal) = p else {
        return Err(Fault::refuse(p, format!("write {path}")));
    };
    v.ensure_home(p).await?;
    // Writing needs the right to write the node, or, for a new one, its container.
    let (existing, parent) = v
        .blocking({
            let path = path.clone();
            move |s| {
                let parent = match path.parent() {
                    Some(pp) => s.get(&pp)?,
                    None => None,
                };
                Ok((s.get(&path)?, parent))
            }
        })
        .await?;
    let allowed = match (&existing, &parent) {
        (Some(n), _) => n.can_write(p),
        (None, Some(parent)) => parent.path.is_root() || parent.can_write(p),
        (None, None) => true,
    };
    if !allowed {
        return Err(Fault::refuse(p, format!("write {path}")));
    }
    let expected_md5 = md5_sent(&headers)?;
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|t| t.len() < 256)
        .map(String::from);
    let upload = v
        .blocking({
            let path = path.clone();
            move |s| s.begin_upload(&path, length)
        })
        .await?;
    let owner = principal.user.to_string();
    let (node, digest) = v
        .store
        .finish_upload(
            upload,
            &owner,
            content_type,
            expected_md5,
            body.into_data_stream(),
        )
        .await?;
    let mut resp = (
        if existing.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("stored {} bytes at {}\n", node.length, node.path),
    )
        .into_response();
    if let Ok(d) = HeaderValue::from_str(&format!("md5={}", b64(&digest))) {
        resp.headers_mut().insert("digest", d);
    }
    Ok(resp)
}

/// A single byte range of a `Range` header, against a length: `None` for the whole.
fn range(headers: &HeaderMap, len: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
    let Some(r) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let spec = r.strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        // Several ranges are allowed to be answered whole.
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            (len.saturating_sub(n), len)
        }
        (s, "") => (s.parse().map_err(|_| ())?, len),
        (s, e) => (
            s.parse().map_err(|_| ())?,
            e.parse::<u64>().map_err(|_| ())?.saturating_add(1).min(len),
        ),
    };
    if start >= len || start >= end {
        return Err(());
    }
    Ok(Some(start..end))
}

/// `GET`/`HEAD /vospace/data/{path}`.
pub(crate) async fn get_data(
    State(v): State<VoSpace>,
    caller: Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Fault> {
    let p = caller.as_deref();
    let path = path_of(&uri, "data")?;
    let node = v.readable(&path, p).await?;
    if node.kind != Kind::Data {
        return Err(Fault::Invalid(format!("{path} is not a data node")));
    }
    let wanted = match range(&headers, node.length) {
        Ok(r) => r,
        Err(()) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{}", node.length))],
            )
                .into_response());
        }
    };
    let mut resp = if method == Method::HEAD || node.length == 0 {
        Response::new(Body::empty())
    } else {
        let got = v.store.read(&node, wanted.clone()).await?;
        Response::new(Body::from_stream(
            got.into_stream().map_err(std::io::Error::other),
        ))
    };
    let h = resp.headers_mut();
    let (status, len) = match &wanted {
        Some(r) => {
            if let Ok(v) =
                HeaderValue::from_str(&format!("bytes {}-{}/{}", r.start, r.end - 1, node.length))
            {
                h.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, r.end - r.start)
        }
        None => (StatusCode::OK, node.length),
    };
    *resp.status_mut() = status;
    describe(resp.headers_mut(), &node, len);
    Ok(resp)
}

fn describe(h: &mut HeaderMap, node: &Node, len: u64) {
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let ct = node
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    if let Ok(v) = HeaderValue::from_str(ct) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Some(m) = node.md5.as_deref() {
        if let Some(d) = hex_to_b64(m).and_then(|d| HeaderValue::from_str(&format!("md5={d}")).ok())
        {
            h.insert("digest", d);
        }
        if let Ok(e) = HeaderValue::from_str(&format!("\"{m}\"")) {
            h.insert(header::ETAG, e);
        }
    }
    // The name is sent plainly when it is simple ASCII, and RFC 5987-encoded otherwise.
    let name = node.path.name();
    let simple = name
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    let disp = if simple {
        format!("inline; filename=\"{name}\"")
    } else {
        format!(
            "inline; filename*=UTF-8''{}",
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
        )
    };
    if let Ok(d) = HeaderValue::from_str(&disp) {
        h.insert(header::CONTENT_DISPOSITION, d);
    }
}

/// The URL the bytes of `path` are read and written at.
pub(crate) fn data_url(base: &str, path: &NodePath) -> String {
    format!("{base}/vospace/data/{}", path.encoded())
}

/// `GET /vospace/files/{path}`: redirects to the bytes (following a link node).
pub(crate) async fn files(
    State(v): State<VoSpace>,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Fault> {
    let p = caller.as_deref();
    let path = path_of(&uri, "files")?;
    let node = v.readable(&path, p).await?;
    let base = v.base(&headers);
    let to = match &node.kind {
        Kind::Data => data_url(&base, &path),
        Kind::Link { target } if target.starts_with("vos://") => {
            data_url(&base, &NodePath::from_uri(target)?)
        }
        Kind::Link { target } => target.clone(),
        Kind::Container => return Err(Fault::Invalid(format!("{path} is a container"))),
    };
    Ok(Redirect::to(&to).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let h = |r: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::RANGE, HeaderValue::from_str(r).unwrap());
            m
        };
        assert_eq!(range(&h("bytes=5-"), 10), Ok(Some(5..10)));
        assert_eq!(range(&h("bytes=0-3"), 10), Ok(Some(0..4)));
        assert_eq!(range(&h("bytes=-4"), 10), Ok(Some(6..10)));
        assert_eq!(range(&h("bytes=2-100"), 10), Ok(Some(2..10)));
        assert_eq!(range(&h("bytes=10-"), 10), Err(()));
        assert_eq!(range(&h("items=1-2"), 10), Err(()));
        assert_eq!(range(&HeaderMap::new(), 10), Ok(None));
    }

    #[test]
    fn digests() {
        let mut m = HeaderMap::new();
        m.insert(
            "digest",
            HeaderValue::from_static("md5=sZRqySSS0jR8YjW00mERhA=="),
        );
        let d = md5_sent(&m).unwrap().unwrap();
        assert_eq!(
            d.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "b1946ac92492d2347c6235b4d2611184"
        );
        assert_eq!(
            hex_to_b64("b1946ac92492d2347c6235b4d2611184").unwrap(),
            "sZRqySSS0jR8YjW00mERhA=="
        );
        m.insert("digest", HeaderValue::from_static("md5=***"));
        assert!(md5_sent(&m).is_err());
    }
}
