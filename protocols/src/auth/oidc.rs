//! Browser sign-in through an OpenID Connect provider: discovery, the authorization-code
//! flow with PKCE (S256), state and nonce, and the ID token checked against the provider's
//! JWKS (signature, issuer, audience, expiry, nonce). A signed-in browser gets a session
//! cookie; `/auth/logout` ends it.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use serde::Deserialize;

use super::{Auth, SESSION_COOKIE, cookie};

/// How to reach the provider: its issuer URL (discovery is at
/// `<issuer>/.well-known/openid-configuration`) and this archive's client registration.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// Extra scopes beyond `openid profile email`.
    pub scopes: Vec<String>,
}

/// What the provider's discovery document says.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// The token endpoint's answer: the standard fields and the ID token.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
struct IdTokenField {
    id_token: String,
}
impl ExtraTokenFields for IdTokenField {}
type OidcTokenResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;
type Client = oauth2::Client<
    BasicErrorResponse,
    OidcTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// A sign-in under way, between the redirect to the provider and its callback.
struct Pending {
    verifier: PkceCodeVerifier,
    nonce: String,
    redirect_uri: String,
    then: String,
    started: Instant,
}

/// How long a browser may take at the provider.
const PENDING_LIFETIME: Duration = Duration::from_secs(600);
/// Sign-ins under way at once, at most (each is a few hundred bytes).
const MAX_PENDING: usize = 10_000;

pub(super) struct Oidc {
    settings: OidcSettings,
    http: reqwest::Client,
    discovery: tokio::sync::Mutex<Option<(Discovery, JwkSet, Instant)>>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// The claims of an ID token this archive reads.
#[derive(Debug, Deserialize)]
struct IdClaims {
    sub: String,
    nonce: Option<String>,
    preferred_username: Option<String>,
    email: Option<String>,
    name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum SignInError {
    #[error("the sign-in provider could not be reached or answered wrongly: {0}")]
    Provider(String),
    #[error("the sign-in expired or was not started here; please sign in again")]
    UnknownState,
    #[error("the provider's ID token was refused: {0}")]
    IdToken(String),
    #[error("the provider refused the sign-in: {0}")]
    Refused(String),
    #[error("identity store: {0}")]
    Store(String),
}

impl IntoResponse for SignInError {
    fn into_response(self) -> Response {
        let status = match self {
            SignInError::Provider(_) => StatusCode::BAD_GATEWAY,
            SignInError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

/// Discovery and keys are fetched again after this long (or when a token names a key the
/// cached set lacks), so a provider's key rotation is followed.
const DISCOVERY_LIFETIME: Duration = Duration::from_secs(3600);

impl Oidc {
    pub(super) fn new(settings: OidcSettings) -> Self {
        Self {
            settings,
            // Following redirects from the token endpoint would let a provider steer the
            // archive to arbitrary URLs.
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .build()
                .expect("a reqwest client with static settings"),
            discovery: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
        }
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<T, SignInError> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| SignInError::Provider(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(SignInError::Provider(format!(
                "{url}: HTTP {}",
                resp.status()
            )));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| SignInError::Provider(format!("{url}: {e}")))?;
        serde_json::from_slice(&body).map_err(|e| SignInError::Provider(format!("{url}: {e}")))
    }

    /// Discovery and keys, fetched when missing, old, or when `refresh` asks.
    async fn discovery(&self, refresh: bool) -> Result<(Discovery, JwkSet), SignInError> {
        let mut slot = self.discovery.lock().await;
        if let Some((d, k, at)) = slot.as_ref()
            && !refresh
            && at.elapsed() < DISCOVERY_LIFETIME
        {
            return Ok((d.clone(), k.clone()));
        }
        let issuer = self.settings.issuer.trim_end_matches('/');
        let d: Discovery = self
            .fetch_json(&format!("{issuer}/.well-known/openid-configuration"))
            .await?;
        if d.issuer.trim_end_matches('/') != issuer {
            return Err(SignInError::Provider(format!(
                "discovery names issuer {} instead of {issuer}",
                d.issuer
            )));
        }
        let keys: JwkSet = self.fetch_json(&d.jwks_uri).await?;
        *slot = Some((d.clone(), keys.clone(), Instant::now()));
        Ok((d, keys))
    }

    fn client(&self, d: &Discovery, redirect_uri: &str) -> Result<Client, SignInError> {
        let bad = |e: oauth2::url::ParseError| SignInError::Provider(e.to_string());
        let mut c = oauth2::Client::new(ClientId::new(self.settings.client_id.clone()))
            .set_auth_uri(AuthUrl::new(d.authorization_endpoint.clone()).map_err(bad)?)
            .set_token_uri(TokenUrl::new(d.token_endpoint.clone()).map_err(bad)?)
            .set_redirect_uri(RedirectUrl::new(redirect_uri.to_string()).map_err(bad)?);
        if let Some(s) = &self.settings.client_secret {
            c = c.set_client_secret(ClientSecret::new(s.clone()));
        }
        Ok(c)
    }

    /// Checks an ID token: signed by a key of the provider's set with the algorithm that key
    /// is for, issued by the provider to this client, unexpired, for this sign-in.
    async fn verify(&self, id_token: &str, nonce: &str) -> Result<IdClaims, SignInError> {
        let head = jsonwebtoken::decode_header(id_token)
            .map_err(|e| SignInError::IdToken(e.to_string()))?;
        let kid = head.kid.clone().unwrap_or_default();
        let (mut d, mut keys) = self.discovery(false).await?;
        if keys.find(&kid).is_none() {
            (d, keys) = self.discovery(true).await?;
        }
        let jwk = match keys.find(&kid) {
            Some(k) => k,
            // A set of one key need not name it.
            None if head.kid.is_none() && keys.keys.len() == 1 => &keys.keys[0],
            None => {
                return Err(SignInError::IdToken(format!(
                    "no key '{kid}' in the provider's set"
                )));
            }
        };
        let key_alg = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
        if key_alg.is_some_and(|a| a != head.alg) {
            return Err(SignInError::IdToken(format!(
                "signed with {:?}, but the key is for {:?}",
                head.alg, key_alg
            )));
        }
        if matches!(
            head.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(SignInError::IdToken(
                "symmetric signatures are not accepted".into(),
            ));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| SignInError::IdToken(e.to_string()))?;
        let mut v = Validation::new(head.alg);
        v.set_audience(&[&self.settings.client_id]);
        v.set_issuer(&[d.issuer.as_str(), d.issuer.trim_end_matches('/')]);
        v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        v.leeway = 60;
        let data = jsonwebtoken::decode::<IdClaims>(id_token, &key, &v)
            .map_err(|e| SignInError::IdToken(e.to_string()))?;
        if data.claims.nonce.as_deref() != Some(nonce) {
            return Err(SignInError::IdToken(
                "the nonce does not match this sign-in".into(),
            ));
        }
        Ok(data.claims)
    }
}

pub(super) fn router(auth: Auth) -> Router {
    Router::new()
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(logout).get(logout))
        .with_state(auth)
}

/// Where to go after signing in: a path on this site only (no open redirect).
fn local_path(then: Option<&String>) -> String {
    match then {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.clone(),
        _ => "/".to_string(),
    }
}

/// `GET /auth/login[?then=/path]`: off to the provider.
async fn login(
    State(auth): State<Auth>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(oidc) = auth.oidc.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "no sign-in provider is configured: use a personal API token (aster token create)",
        )
            .into_response();
    };
    let d = match oidc.discovery(false).await {
        Ok((d, _)) => d,
        Err(e) => return e.into_response(),
    };
    let redirect_uri = format!("{}/auth/callback", auth.base(&headers));
    let client = match oidc.client(&d, &redirect_uri) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = CsrfToken::new_random().secret().clone();
    let mut req = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("openid".into()))
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .add_extra_param("nonce", nonce.clone())
        .set_pkce_challenge(challenge);
    for s in &oidc.settings.scopes {
        req = req.add_scope(Scope::new(s.clone()));
    }
    let (url, state) = req.url();
    {
        let mut pending = oidc.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, p| p.started.elapsed() < PENDING_LIFETIME);
        if pending.len() >= MAX_PENDING {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many sign-ins under way; try again in a few minutes",
            )
                .into_response();
        }
        pending.insert(
            state.secret().clone(),
            Pending {
                verifier,
                nonce,
                redirect_uri,
                then: local_path(q.get("then")),
                started: Instant::now(),
            },
        );
    }
    Redirect::to(url.as_str()).into_response()
}

/// `GET /auth/callback?code=&state=`: the provider sends the browser back here.
async fn callback(
    State(auth): State<Auth>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match finish_sign_in(&auth, &headers, &q).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "sign-in failed");
            e.into_response()
        }
    }
}

async fn finish_sign_in(
    auth: &Auth,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<Response, SignInError> {
    let oidc = auth
        .oidc
        .clone()
        .ok_or_else(|| SignInError::Provider("no provider is configured".into()))?;
    let pending = q
        .get("state")
        .and_then(|s| {
            oidc.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(s)
        })
        .filter(|p| p.started.elapsed() < PENDING_LIFETIME)
        .ok_or(SignInError::UnknownState)?;
    if let Some(e) = q.get("error") {
        let detail = q.get("error_description").map(String::as_str).unwrap_or("");
        return Err(SignInError::Refused(
            format!("{e} {detail}").trim().to_string(),
        ));
    }
    let code = q
        .get("code")
        .ok_or(SignInError::Refused("no code".into()))?;
    let (d, _) = oidc.discovery(false).await?;
    let client = oidc.client(&d, &pending.redirect_uri)?;
    let tokens = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(pending.verifier)
        .request_async(&oidc.http)
        .await
        .map_err(|e| SignInError::Provider(format!("token exchange: {e}")))?;
    let claims = oidc
        .verify(&tokens.extra_fields().id_token, &pending.nonce)
        .await?;
    let store = auth.store.clone();
    let issuer = d.issuer.clone();
    let hours = auth.session_hours;
    let (user, session) = tokio::task::spawn_blocking(move || {
        let hint = claims
            .preferred_username
            .as_deref()
            .or(claims.email.as_deref())
            .unwrap_or(&claims.sub);
        let user = store.oidc_user(
            &issuer,
            &claims.sub,
            hint,
            claims.email.as_deref(),
            claims.name.as_deref(),
        )?;
        let s = store.open_session(&user.name, chrono::Duration::hours(hours))?;
        Ok::<_, aster_archive::identity::IdentityError>((user, s))
    })
    .await
    .map_err(|e| SignInError::Store(e.to_string()))?
    .map_err(|e| SignInError::Store(e.to_string()))?;
    tracing::info!(user = %user.name, "signed in");
    let secure = auth.base(headers).starts_with("https:");
    let cookie = format!(
        "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        hours * 3600,
        if secure { "; Secure" } else { "" }
    );
    let mut resp = Redirect::to(&pending.then).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// `POST /auth/logout` (or GET): ends the session and clears the cookie.
async fn logout(State(auth): State<Auth>, headers: HeaderMap) -> Response {
    if let Some(s) = cookie(&headers, SESSION_COOKIE) {
        let store = auth.store.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.close_session(&s)).await {
            tracing::warn!(error = %e, "closing a session");
        }
    }
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("aster_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        let s = |x: &str| Some(x.to_string());
        assert_eq!(local_path(s("/#history").as_ref()), "/#history");
        for bad in ["//evil.example", "https://evil.example", "/\\evil", "x"] {
            assert_eq!(local_path(s(bad).as_ref()), "/", "{bad}");
        }
        assert_eq!(local_path(None), "/");
    }
}
