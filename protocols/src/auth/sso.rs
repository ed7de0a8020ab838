//! IVOA SSO challenges: what a 401 says so that clients (pyvo, TOPCAT, a browser) learn how
//! to authenticate here, and the security-method identifiers capabilities documents list.
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Bearer tokens (`Authorization: Bearer`), the personal API tokens of `/auth/tokens`.
pub const SECURITY_TOKEN: &str = "ivo://ivoa.net/sso#token";
/// A browser session cookie, obtained by signing in at `/auth/login`.
pub const SECURITY_COOKIE: &str = "ivo://ivoa.net/sso#cookie";
/// Signing in through an OpenID Connect provider.
const SECURITY_OPENID: &str = "ivo://ivoa.net/sso#OpenID";

/// The `WWW-Authenticate` challenges of this archive, one header line each: an RFC 6750
/// `Bearer` challenge (with `error` when a token was refused), and, with a sign-in provider,
/// `ivoa_bearer` and `ivoa_cookie` pointing at the sign-in page (where a browser gets its
/// session, and from it personal tokens at `/auth/tokens`).
pub fn challenges(base: &str, sign_in: bool, error: Option<&str>) -> Vec<HeaderValue> {
    let mut out = Vec::new();
    let bearer = match error {
        Some(e) => format!(r#"Bearer realm="{base}", error="{e}""#),
        None => format!(r#"Bearer realm="{base}""#),
    };
    out.push(bearer);
    if sign_in {
        for scheme in ["ivoa_bearer", "ivoa_cookie"] {
            out.push(format!(
                r#"{scheme} standard_id="{SECURITY_OPENID}", access_url="{base}/auth/login""#
            ));
        }
    }
    out.into_iter()
        .filter_map(|c| HeaderValue::from_str(&c).ok())
        .collect()
}

/// A 401 (or other) answer in the form of the service the path belongs to: a DALI error
/// VOTable under `/tap`, plain text elsewhere, with the challenges.
pub(super) fn unauthorized(
    path: &str,
    status: StatusCode,
    message: &str,
    base: &str,
    sign_in: bool,
) -> Response {
    let mut resp = if path.starts_with("/tap") {
        crate::tap::error_response(status, message)
    } else {
        (status, message.to_string()).into_response()
    };
    if status == StatusCode::UNAUTHORIZED {
        let error = Some("invalid_token");
        for c in challenges(base, sign_in, error) {
            resp.headers_mut().append(header::WWW_AUTHENTICATE, c);
        }
    }
    resp
}

/// The answer to a token that is unknown, expired, revoked or malformed: all alike, so a
/// guess learns nothing.
pub(super) fn invalid_token(path: &str, base: &str, sign_in: bool) -> Response {
    unauthorized(
        path,
        StatusCode::UNAUTHORIZED,
        "the credential sent is not valid (unknown, expired or revoked): send a valid token or none",
        base,
        sign_in,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_point_at_the_sign_in_page() {
        let c = challenges("http://h", true, Some("invalid_token"));
        let all: Vec<&str> = c.iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(all[0], r#"Bearer realm="http://h", error="invalid_token""#);
        assert_eq!(
            all[1],
            r#"ivoa_bearer standard_id="ivo://ivoa.net/sso#OpenID", access_url="http://h/auth/login""#
        );
        assert!(all[2].starts_with("ivoa_cookie "));
        assert_eq!(challenges("http://h", false, None).len(), 1);
    }
}
