//! Aster's HTTP services (authentication: OIDC sign-in, tokens, groups, SSO challenges; TAP 1.1 with UWS 1.1 and VOSI, the query history, metrics; SIAv2,
//! DataLink, SODA, dataset downloads and MOCs over the dataset registry; the predicted visit
//! schedule, HiPS; the portal) and the table
//! writers they stream results with.
pub mod alerts;
pub mod auth;
mod body;
pub mod formats;
pub mod hips;
pub mod images;
pub mod metrics;
pub mod portal;
pub mod schedule;
pub mod tap;
pub mod uws;
mod xml;

/// The archive's base URL as the client reached it: the configured public URL, or the
/// scheme and host of the request (as a proxy forwarded them).
pub fn request_base(public_url: Option<&str>, headers: &axum::http::HeaderMap) -> String {
    use axum::http::header;
    if let Some(u) = public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("http");
    format!("{proto}://{host}")
}
