//! Authentication and identity over HTTP: the layer that turns a bearer token or a browser
//! session cookie into a [`Principal`] on the request, IVOA SSO 2.0 challenges on every 401
//! (`sso.rs`), browser sign-in through any OpenID Connect provider (`oidc.rs`), personal API
//! tokens (`tokens.rs`), group membership in the manner of IVOA GMS (`gms.rs`), and a local
//! OpenID provider for development and the demo (`dev_idp.rs`). Anonymous requests pass
//! through untouched: public data needs no sign-in.
mod dev_idp;
mod gms;
mod oidc;
mod sso;
mod tokens;

use std::sync::Arc;

use aster_archive::identity::{CredentialError, IdentityStore};
pub use aster_archive::identity::{Principal, UserName};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use dev_idp::DevIdp;
pub use oidc::OidcSettings;
pub use sso::{SECURITY_COOKIE, SECURITY_TOKEN, challenges};

use crate::uws::Owner;

/// The cookie that carries a browser session.
pub const SESSION_COOKIE: &str = "aster_session";

/// What the authentication layer and the `/auth` and `/gms` services share.
#[derive(Clone)]
pub struct Auth {
    store: IdentityStore,
    public_url: Option<String>,
    oidc: Option<Arc<oidc::Oidc>>,
    session_hours: i64,
    /// Paths whose endpoints check bearer credentials of their own (the observatory's
    /// schedule token): a token unknown here is theirs to judge.
    own_credentials: Arc<Vec<String>>,
}

impl Auth {
    /// `oidc`: the provider browsers sign in with; without one only tokens made on the
    /// command line authenticate.
    pub fn new(
        store: IdentityStore,
        public_url: Option<String>,
        oidc: Option<OidcSettings>,
    ) -> Self {
        Self {
            store,
            public_url,
            oidc: oidc.map(|s| Arc::new(oidc::Oidc::new(s))),
            session_hours: 12,
            own_credentials: Arc::new(Vec::new()),
        }
    }

    /// Leaves bearer tokens this store does not know, sent to `path`, to the endpoint there.
    pub fn with_own_credentials(mut self, path: &str) -> Self {
        Arc::make_mut(&mut self.own_credentials).push(path.to_string());
        self
    }

    pub fn store(&self) -> &IdentityStore {
        &self.store
    }

    fn base(&self, headers: &HeaderMap) -> String {
        crate::request_base(self.public_url.as_deref(), headers)
    }

    /// Resolves a credential off the async threads (SQLite).
    async fn resolve(&self, credential: Credential) -> Result<Option<Principal>, Refusal> {
        let store = self.store.clone();
        let outcome = tokio::task::spawn_blocking(move || match &credential {
            Credential::Bearer(t) => store.authenticate_token(t).map(|r| (r, true)),
            Credential::Session(s) => store.session(s).map(|r| (r, false)),
        })
        .await
        .map_err(|e| Refusal::Internal(e.to_string()))?
        .map_err(|e| Refusal::Internal(e.to_string()))?;
        match outcome {
            (Ok(p), _) => Ok(Some(p)),
            (Err(why), true) => Err(Refusal::Token(why)),
            // A stale cookie makes the browser anonymous again rather than locking it out.
            (Err(_), false) => Ok(None),
        }
    }
}

enum Credential {
    Bearer(String),
    Session(String),
}

enum Refusal {
    Token(CredentialError),
    Malformed,
    Internal(String),
}

/// The credential a request presents: `Authorization: Bearer`, else the session cookie.
fn credential(headers: &HeaderMap) -> Result<Option<Credential>, Refusal> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| Refusal::Malformed)?;
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        // Other schemes are not ours to judge: HTTP Basic is how OAuth clients authenticate
        // to the development provider's token endpoint.
        if scheme.eq_ignore_ascii_case("bearer") {
            let token = rest.trim();
            if token.is_empty() || token.len() > 256 {
                return Err(Refusal::Malformed);
            }
            return Ok(Some(Credential::Bearer(token.to_string())));
        }
    }
    Ok(cookie(headers, SESSION_COOKIE).map(Credential::Session))
}

/// The value of cookie `name`.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The authentication layer: puts the caller's [`Principal`] (and the UWS [`Owner`]) on the
/// request, refuses bad tokens with 401, adds the SSO challenges to every 401 an endpoint
/// gives, and names the authenticated caller in `X-VO-Authenticated`.
pub async fn layer(State(auth): State<Auth>, mut req: Request, next: Next) -> Response {
    let base = auth.base(req.headers());
    let path = req.uri().path().to_string();
    let principal = match credential(req.headers()) {
        Ok(None) => None,
        Ok(Some(c)) => match auth.resolve(c).await {
            Ok(p) => p,
            Err(Refusal::Internal(e)) => {
                tracing::error!(error = %e, "identity store");
                return sso::unauthorized(
                    &path,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the identity store failed",
                    &base,
                    auth.oidc.is_some(),
                );
            }
            Err(Refusal::Token(CredentialError::Unknown))
                if auth.own_credentials.contains(&path) =>
            {
                None
            }
            Err(Refusal::Token(why)) => {
                tracing::info!(reason = %why, path, "refused a bearer token");
                return sso::invalid_token(&path, &base, auth.oidc.is_some());
            }
            Err(Refusal::Malformed) => {
                return sso::invalid_token(&path, &base, auth.oidc.is_some());
            }
        },
        Err(_) => return sso::invalid_token(&path, &base, auth.oidc.is_some()),
    };
    if let Some(p) = &principal {
        req.extensions_mut().insert(Owner(p.user.to_string()));
        req.extensions_mut().insert(p.clone());
    }
    let authenticated = principal.is_some();
    let mut resp = next.run(req).await;
    if let Some(p) = principal
        && let Ok(v) = HeaderValue::from_str(p.user.as_str())
    {
        resp.headers_mut().insert("x-vo-authenticated", v);
    }
    // 401s say how to authenticate; so do capabilities read anonymously, which is how SSO
    // clients learn that signing in is possible but optional.
    let anonymous_capabilities =
        !authenticated && resp.status().is_success() && path.ends_with("/capabilities");
    if (resp.status() == StatusCode::UNAUTHORIZED || anonymous_capabilities)
        && !resp.headers().contains_key(header::WWW_AUTHENTICATE)
    {
        for c in sso::challenges(&base, auth.oidc.is_some(), None) {
            resp.headers_mut().append(header::WWW_AUTHENTICATE, c);
        }
    }
    resp
}

/// Why an endpoint refuses the caller.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// No credential: 401 with the challenges.
    #[error("sign in, or send a bearer token, to use {0}")]
    Anonymous(&'static str),
    /// A credential that cannot do this: 403.
    #[error("{0}")]
    Forbidden(String),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let status = match self {
            Denied::Anonymous(_) => StatusCode::UNAUTHORIZED,
            Denied::Forbidden(_) => StatusCode::FORBIDDEN,
        };
        (status, self.to_string()).into_response()
    }
}

/// The caller, who must be signed in.
pub fn signed_in<'a>(
    p: Option<&'a Principal>,
    what: &'static str,
) -> Result<&'a Principal, Denied> {
    p.ok_or(Denied::Anonymous(what))
}

/// The caller, who must be signed in with a credential that may change things.
pub fn may_write<'a>(
    p: Option<&'a Principal>,
    what: &'static str,
) -> Result<&'a Principal, Denied> {
    let p = signed_in(p, what)?;
    if !p.scopes.write {
        return Err(Denied::Forbidden(format!(
            "this token is read-only: {what} needs a token with the write scope"
        )));
    }
    Ok(p)
}

/// `/auth/*` (sign-in, sign-out, who am I, tokens, limits) and `/gms/*`; with `dev_idp`,
/// also the development OpenID provider under `/dev-idp`.
pub fn router(
    auth: Auth,
    dev_idp: Option<DevIdp>,
    scheduler: Option<Arc<crate::uws::Scheduler>>,
) -> Router {
    let mut r = Router::new()
        .merge(oidc::router(auth.clone()))
        .merge(tokens::router(auth.clone()))
        .merge(gms::router(auth));
    if let Some(s) = scheduler {
        r = r.route(
            "/auth/limits",
            axum::routing::get(move |p: Option<axum::Extension<Principal>>| {
                let s = s.clone();
                async move {
                    let user = p.map(|p| p.user.to_string());
                    axum::Json(s.usage(user.as_deref()))
                }
            }),
        );
    }
    if let Some(idp) = dev_idp {
        r = r.nest("/dev-idp", dev_idp::router(idp));
    }
    r
}
