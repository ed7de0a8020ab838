//! The portal (static/): its page at `/` and its assets at `/static/...`, built into the
//! binary so the archive serves them from anywhere, with no network at run time (Aladin
//! Lite is vendored under static/vendor/). Assets carry the build's version as ETag.
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// (path under static/, media type, bytes)
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/app.css"),
    ),
    (
        "vendor/aladin-lite/aladin.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/vendor/aladin-lite/aladin.js"),
    ),
    (
        "vendor/aladin-lite/LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../../static/vendor/aladin-lite/LICENSE"),
    ),
];

const INDEX: &str = include_str!("../../static/index.html");
const ETAG: &str = concat!("\"aster-", env!("CARGO_PKG_VERSION"), "\"");

pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/static/{*path}", get(asset))
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let Some((_, media, bytes)) = ASSETS.iter().find(|(p, _, _)| *p == path) else {
        return (StatusCode::NOT_FOUND, format!("no portal file {path}\n")).into_response();
    };
    // Rebuilt assets come with a new binary: revalidate, and reuse while the version holds.
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == ETAG))
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, ETAG)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, *media),
            (header::ETAG, ETAG),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_assets_that_are_served() {
        for cap in INDEX.split("static/").skip(1) {
            let name = cap.split('"').next().unwrap();
            assert!(ASSETS.iter().any(|(p, _, _)| *p == name), "{name}");
        }
        let app = std::str::from_utf8(ASSETS[0].2).unwrap();
        assert!(app.contains("./vendor/aladin-lite/aladin.js"));
    }
}
