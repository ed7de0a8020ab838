//! A small OpenID Connect provider for development and the demo, so the real sign-in flow
//! (discovery, authorization code with PKCE, ES256-signed ID tokens, JWKS) runs end to end
//! without an outside provider. It asks no password: anyone who reaches it picks a user.
//! It is therefore only switched on by `[auth] dev_provider = true` or `serve --demo`, and
//! the server says so loudly when it is.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Form;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::xml::escape;

const CODE_LIFETIME: Duration = Duration::from_secs(60);
const ID_TOKEN_SECONDS: i64 = 300;

/// The provider: its issuer URL, the one client it knows, the users one can pick, and its
/// signing key (made at start, so ID tokens do not outlive a restart, which is all they
/// need: they are read once, at sign-in).
#[derive(Clone)]
pub struct DevIdp {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    client_id: String,
    client_secret: String,
    users: Vec<String>,
    /// Redirect URIs must start with one of these (the archive's own base URLs).
    redirect_prefixes: Vec<String>,
    key: EncodingKey,
    kid: String,
    x: String,
    y: String,
    codes: Mutex<HashMap<String, Grant>>,
}

struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    user: String,
    issued: Instant,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl DevIdp {
    pub fn new(
        issuer: &str,
        client_id: &str,
        client_secret: &str,
        users: Vec<String>,
        redirect_prefixes: Vec<String>,
    ) -> Result<Self, String> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| format!("making a signing key: {e}"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|e| format!("reading the signing key: {e}"))?;
        // An uncompressed P-256 point: 0x04, then x and y of 32 bytes each.
        let point = pair.public_key().as_ref();
        let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
        let kid = b64(&Sha256::digest(point)[..8]);
        Ok(Self {
            inner: Arc::new(Inner {
                issuer: issuer.trim_end_matches('/').to_string(),
                client_id: client_id.to_string(),
                client_secret: client_secret.to_string(),
                users,
                redirect_prefixes,
                key: EncodingKey::from_ec_der(pkcs8.as_ref()),
                kid,
                x,
                y,
                codes: Mutex::new(HashMap::new()),
            }),
        })
    }
}

pub(super) fn router(idp: DevIdp) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize_form).post(authorize))
        .route("/token", post(token))
        .with_state(idp)
}

async fn discovery(State(idp): State<DevIdp>) -> Response {
    let i = &idp.inner.issuer;
    axum::Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "scopes_supported": ["openid", "profile", "email"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code"],
    }))
    .into_response()
}

async fn jwks(State(idp): State<DevIdp>) -> Response {
    let i = &idp.inner;
    axum::Json(json!({"keys": [{
        "kty": "EC", "crv": "P-256", "x": i.x, "y": i.y,
        "kid": i.kid, "alg": "ES256", "use": "sig",
    }]}))
    .into_response()
}

/// The parameters of an authorization request, as the form carries them through.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    scope: Option<String>,
    /// Set by the sign-in form.
    user: Option<String>,
}

/// Checks an authorization request; errors that may not be sent back to the redirect URI
/// (a bad client or redirect) are shown here instead.
fn check(idp: &Inner, p: &AuthorizeParams) -> Result<(), (StatusCode, String)> {
    let bad = |m: &str| Err((StatusCode::BAD_REQUEST, m.to_string()));
    if p.client_id.as_deref() != Some(&idp.client_id) {
        return bad("unknown client_id");
    }
    let Some(r) = p.redirect_uri.as_deref() else {
        return bad("redirect_uri is required");
    };
    if !idp
        .redirect_prefixes
        .iter()
        .any(|pre| r.starts_with(pre.as_str()))
    {
        return bad("redirect_uri is not one of this archive's addresses");
    }
    if p.response_type.as_deref() != Some("code") {
        return bad("response_type must be code");
    }
    if p.code_challenge_method.as_deref() != Some("S256") || p.code_challenge.is_none() {
        return bad("PKCE with code_challenge_method=S256 is required");
    }
    if !p
        .scope
        .as_deref()
        .unwrap_or("")
        .split(' ')
        .any(|s| s == "openid")
    {
        return bad("scope must include openid");
    }
    Ok(())
}

async fn authorize_form(State(idp): State<DevIdp>, Query(p): Query<AuthorizeParams>) -> Response {
    if let Err(e) = check(&idp.inner, &p) {
        return e.into_response();
    }
    let hidden: String = [
        ("response_type", &p.response_type),
        ("client_id", &p.client_id),
        ("redirect_uri", &p.redirect_uri),
        ("state", &p.state),
        ("nonce", &p.nonce),
        ("code_challenge", &p.code_challenge),
        ("code_challenge_method", &p.code_challenge_method),
        ("scope", &p.scope),
    ]
    .iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .map(|(k, v)| format!(r#"<input type="hidden" name="{k}" value="{}">"#, escape(v)))
    .collect();
    let buttons: String = idp
        .inner
        .users
        .iter()
        .map(|u| {
            let u = escape(u);
            format!(r#"<button type="submit" name="user" value="{u}" id="user-{u}">{u}</button> "#)
        })
        .collect();
    Html(format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Aster development sign-in</title></head>
<body><h1>Aster development sign-in</h1>
<p>This provider is for development and the demo only: it asks no password.</p>
<form method="post" action="authorize">{hidden}<p>Sign in as: {buttons}</p></form></body></html>"#
    ))
    .into_response()
}

async fn authorize(State(idp): State<DevIdp>, Form(p): Form<AuthorizeParams>) -> Response {
    let i = &idp.inner;
    if let Err(e) = check(i, &p) {
        return e.into_response();
    }
    let Some(user) = p.user.filter(|u| i.users.contains(u)) else {
        return (StatusCode::BAD_REQUEST, "pick one of the listed users").into_response();
    };
    let code = b64(&rand::random::<[u8; 24]>());
    let redirect_uri = p.redirect_uri.unwrap_or_default();
    {
        let mut codes = i.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.retain(|_, g| g.issued.elapsed() < CODE_LIFETIME);
        codes.insert(
            code.clone(),
            Grant {
                client_id: i.client_id.clone(),
                redirect_uri: redirect_uri.clone(),
                challenge: p.code_challenge.unwrap_or_default(),
                nonce: p.nonce,
                user,
                issued: Instant::now(),
            },
        );
    }
    let mut target = match url::Url::parse(&redirect_uri) {
        Ok(u) => u,
        Err(_) => return (StatusCode::BAD_REQUEST, "redirect_uri is not a URL").into_response(),
    };
    target.query_pairs_mut().append_pair("code", &code);
    if let Some(s) = &p.state {
        target.query_pairs_mut().append_pair("state", s);
    }
    Redirect::to(target.as_str()).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// The client's credentials: HTTP Basic, or client_id and client_secret in the form.
fn client_credentials(headers: &HeaderMap, form: &TokenRequest) -> Option<(String, String)> {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (id, secret) = s.split_once(':')?;
        // RFC 6749 2.3.1: both parts are form-urlencoded.
        let dec = |x: &str| {
            url::form_urlencoded::parse(format!("x={x}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        return Some((dec(id)?, dec(secret)?));
    }
    Some((form.client_id.clone()?, form.client_secret.clone()?))
}

async fn token(
    State(idp): State<DevIdp>,
    headers: HeaderMap,
    Form(f): Form<TokenRequest>,
) -> Response {
    let i = &idp.inner;
    match client_credentials(&headers, &f) {
        Some((id, secret)) if id == i.client_id && secret == i.client_secret => {}
        _ => {
            return token_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "unknown client or wrong secret",
            );
        }
    }
    if f.grant_type.as_deref() != Some("authorization_code") {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code",
        );
    }
    // A code is good once.
    let grant = f
        .code
        .as_ref()
        .and_then(|c| i.codes.lock().unwrap_or_else(|e| e.into_inner()).remove(c));
    let Some(g) = grant.filter(|g| g.issued.elapsed() < CODE_LIFETIME) else {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown, used or expired code",
        );
    };
    if g.client_id != i.client_id || f.redirect_uri.as_deref() != Some(&g.redirect_uri) {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri differs from the authorization request",
        );
    }
    let verified = f
        .code_verifier
        .as_deref()
        .is_some_and(|v| b64(&Sha256::digest(v.as_bytes())) == g.challenge);
    if !verified {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the PKCE code_verifier does not match",
        );
    }
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": i.issuer,
        "sub": format!("dev|{}", g.user),
        "aud": i.client_id,
        "iat": now,
        "exp": now + ID_TOKEN_SECONDS,
        "nonce": g.nonce,
        "preferred_username": g.user,
        "email": format!("{}@dev.aster.invalid", g.user),
        "name": g.user,
    });
    let mut head = Header::new(Algorithm::ES256);
    head.kid = Some(i.kid.clone());
    let id_token = match jsonwebtoken::encode(&head, &claims, &i.key) {
        Ok(t) => t,
        Err(e) => {
            return token_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &e.to_string(),
            );
        }
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({
            "access_token": b64(&rand::random::<[u8; 24]>()),
            "token_type": "Bearer",
            "expires_in": ID_TOKEN_SECONDS,
            "id_token": id_token,
            "scope": "openid profile email",
        })),
    )
        .into_response()
}
