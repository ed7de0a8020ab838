//! HiPS serving (IVOA HiPS 1.0, section 6): `/hips/list` (and `/hipslist`, the name HiPS
//! nodes conventionally use) lists every HiPS of the archive with its service URL;
//! `/hips/{id}/{file}` serves the files of one tree (`properties`, `Moc.fits`,
//! `metadata.xml`, `NorderK/Allsky.*`, `NorderK/DirD/NpixN.*`) with their media type, an
//! ETag and Last-Modified (answering conditional requests with 304) and cache lifetimes,
//! so Aladin Desktop, Aladin Lite and browsers cache tiles; CORS comes from the server.
//! Nothing outside a tree is reachable: paths are parsed, not joined.
use std::path::PathBuf;
use std::sync::Arc;

use aster_archive::hips::{HipsTree, Properties, hips_dir, hips_list, valid_id};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Where the trees are and how the archive is reached.
#[derive(Debug, Clone)]
pub struct HipsService {
    root: PathBuf,
    public_url: Option<String>,
}

impl HipsService {
    pub fn new(data_dir: &std::path::Path, public_url: Option<String>) -> Self {
        Self {
            root: hips_dir(data_dir),
            public_url,
        }
    }

    /// Every HiPS with valid properties, by ID.
    fn list(&self) -> Vec<(String, Properties)> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut out: Vec<(String, Properties)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let id = e.file_name().to_string_lossy().into_owned();
                if !valid_id(&id) {
                    return None;
                }
                let props = HipsTree::new(e.path()).read_properties().ok()??;
                props.validate().ok()?;
                Some((id, props))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

pub fn router(service: HipsService) -> Router {
    Router::new()
        .route("/hips", get(list))
        .route("/hips/", get(list))
        .route("/hips/list", get(list))
        .route("/hipslist", get(list))
        .route("/hips/{id}", get(tree_root))
        .route("/hips/{id}/", get(tree_root))
        .route("/hips/{id}/{*file}", get(file))
        .with_state(Arc::new(service))
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{what}\n"),
    )
        .into_response()
}

/// `GET /hips/list`: the HiPS list of this node.
async fn list(State(s): State<Arc<HipsService>>, headers: HeaderMap) -> Response {
    let base = crate::request_base(s.public_url.as_deref(), &headers);
    let entries: Vec<(Properties, String)> = s
        .list()
        .into_iter()
        .map(|(id, p)| (p, format!("{base}/hips/{id}")))
        .collect();
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        hips_list(&entries),
    )
        .into_response()
}

/// `GET /hips/{id}/`: what the HiPS is and where its files are, for a person.
async fn tree_root(State(s): State<Arc<HipsService>>, Path(id): Path<String>) -> Response {
    let Some((_, props)) = s.list().into_iter().find(|(i, _)| *i == id) else {
        return not_found(&format!("no HiPS {id}: /hips/list lists them"));
    };
    let esc = crate::xml::escape;
    let rows: String = props
        .entries()
        .iter()
        .map(|(k, v)| format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v)))
        .collect();
    let title = esc(props.get("obs_title").unwrap_or(&id));
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>A HiPS (IVOA HiPS 1.0): open this URL in Aladin, or \
         see it in the portal's sky view. Files: <a href=\"properties\">properties</a>, \
         <a href=\"Moc.fits\">Moc.fits</a>.</p><table>{rows}</table></body></html>"
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// A file of a tree that HiPS defines, or None.
fn hips_file(path: &str) -> Option<(&'static str, &'static str)> {
    const TILE_TYPES: [(&str, &str); 4] = [
        ("fits", "application/fits"),
        ("png", "image/png"),
        ("jpg", "image/jpeg"),
        ("tsv", "text/tab-separated-values; charset=utf-8"),
    ];
    let long = "public, max-age=86400";
    match path {
        "properties" => return Some(("text/plain; charset=utf-8", "public, max-age=60")),
        "Moc.fits" => return Some(("application/fits", "public, max-age=60")),
        "metadata.xml" | "Metadata.xml" => return Some(("application/x-votable+xml", long)),
        _ => {}
    }
    let parts: Vec<&str> = path.split('/').collect();
    let order: u8 = parts.first()?.strip_prefix("Norder")?.parse().ok()?;
    let (name, ext) = parts.last()?.rsplit_once('.')?;
    let media = TILE_TYPES.iter().find(|(e, _)| *e == ext)?.1;
    match parts.as_slice() {
        [_, _] if name == "Allsky" && order <= 3 => Some((media, "public, max-age=3600")),
        [_, dir, _] => {
            let npix: u64 = name.strip_prefix("Npix")?.parse().ok()?;
            let d: u64 = dir.strip_prefix("Dir")?.parse().ok()?;
            // Canonical names only: no leading zeros, the right directory.
            (d == npix / 10_000 * 10_000
                && format!("Npix{npix}") == name
                && format!("Dir{d}") == *dir
                && format!("Norder{order}") == parts[0]
                && aster_processing::hips::Tile::new(order, npix).is_some())
            .then_some((media, long))
        }
        _ => None,
    }
}

/// `GET /hips/{id}/{file}`.
async fn file(
    State(s): State<Arc<HipsService>>,
    Path((id, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !valid_id(&id) {
        return not_found(&format!("no HiPS {id}"));
    }
    let Some((media, cache)) = hips_file(&path) else {
        return not_found(&format!("{path} is not a file of a HiPS"));
    };
    // The standard names the catalog metadata `metadata.xml`; Aladin asks for `Metadata.xml`.
    let path = if path == "Metadata.xml" {
        "metadata.xml".to_string()
    } else {
        path
    };
    let full = s.root.join(&id).join(&path);
    let file = match tokio::fs::File::open(&full).await {
        Ok(f) => f,
        Err(_) if !s.root.join(&id).join("properties").exists() => {
            return not_found(&format!("no HiPS {id}: /hips/list lists them"));
        }
        Err(_) => return not_found(&format!("HiPS {id} has no {path}")),
    };
    let meta = match file.metadata().await {
        Ok(m) => m,
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("{path}: {e}\n")).into_response();
        }
    };
    let modified = meta.modified().ok();
    let stamp = modified
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    // A tile is rewritten (renamed into place) whenever it changes: size and time name it.
    let etag = format!("\"{:x}-{:x}\"", meta.len(), stamp);
    let last_modified = modified.map(httpdate);
    let mut h = vec![
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, cache.to_string()),
    ];
    if let Some(lm) = &last_modified {
        h.push((header::LAST_MODIFIED, lm.clone()));
    }
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let unmodified = headers.get(header::IF_NONE_MATCH).is_none()
        && headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .zip(last_modified.as_deref())
            .is_some_and(|(since, lm)| since == lm);
    let mut resp = if matches || unmodified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        crate::images::files::stream_from(
            Response::builder().header(header::CONTENT_TYPE, media),
            file,
            meta.len(),
        )
    };
    for (k, v) in h {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

/// An HTTP date (RFC 9110, IMF-fixdate).
fn httpdate(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_hips_defines_are_served() {
        assert!(hips_file("properties").is_some());
        assert!(hips_file("Moc.fits").is_some());
        assert!(hips_file("Metadata.xml").is_some());
        assert!(hips_file("Norder2/Allsky.tsv").is_some());
        assert_eq!(hips_file("Norder3/Allsky.jpg").unwrap().0, "image/jpeg");
        assert_eq!(
            hips_file("Norder6/Dir10000/Npix10302.fits").unwrap().0,
            "application/fits"
        );
        for bad in [
            "../properties",
            "Norder6/Dir0/Npix10302.fits",
            "Norder6/Dir10000/Npix010302.fits",
            "Norder3/Dir0/Npix768.png",
            "Norder6/Dir10000/../../x.fits",
            "Norder5/Allsky.fits",
            "Norder3/Dir0/Npix1.exe",
            "build.json",
            "",
            "Norder3/Dir0/Npix1.fits/x",
        ] {
            assert!(hips_file(bad).is_none(), "{bad}");
        }
    }
}
