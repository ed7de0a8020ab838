//! `/auth/whoami` and personal API tokens for scripts and TOPCAT: `GET /auth/tokens` lists
//! the caller's tokens, `POST /auth/tokens` (label, scopes, lifetime_days) makes one and
//! shows its secret once, `DELETE /auth/tokens/{id}` revokes one.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde::Deserialize;

use super::{Auth, Principal, may_write, signed_in};
use crate::body::JsonOrForm;
use aster_archive::identity::{IdentityError, Scopes};

pub(super) fn router(auth: Auth) -> Router {
    Router::new()
        .route("/auth/whoami", get(whoami))
        .route("/auth/tokens", get(list).post(create))
        .route("/auth/tokens/{id}", delete(revoke))
        .with_state(auth)
}

/// Identity errors as HTTP: the caller's mistakes are 4xx, the store's failures 500.
pub(super) fn identity_error(e: IdentityError) -> Response {
    let status = match &e {
        IdentityError::Sqlite(_) | IdentityError::Poisoned | IdentityError::Random(_) => {
            tracing::error!(error = %e, "identity store");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the identity store failed",
            )
                .into_response();
        }
        IdentityError::NoUser(_) | IdentityError::NoGroup(_) | IdentityError::NoToken(_) => {
            StatusCode::NOT_FOUND
        }
        IdentityError::GroupExists(_) => StatusCode::CONFLICT,
        IdentityError::NotGroupOwner(_) => StatusCode::FORBIDDEN,
        IdentityError::Name(_) | IdentityError::Scope(_) | IdentityError::Lifetime(_) => {
            StatusCode::BAD_REQUEST
        }
    };
    (status, e.to_string()).into_response()
}

/// Runs an identity-store call off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, IdentityError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(identity_error(e)),
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()),
    }
}

/// `GET /auth/whoami`: the caller's name, groups, role and scopes; `{"user": null}` when
/// anonymous (so a page can offer to sign in).
async fn whoami(p: Option<Extension<Principal>>) -> Response {
    match p {
        Some(Extension(p)) => Json(p).into_response(),
        None => Json(serde_json::json!({"user": null})).into_response(),
    }
}

async fn list(State(auth): State<Auth>, p: Option<Extension<Principal>>) -> Response {
    let p = match signed_in(p.as_deref(), "tokens") {
        Ok(p) => p.clone(),
        Err(d) => return d.into_response(),
    };
    let store = auth.store.clone();
    match blocking(move || store.tokens(&p.user)).await {
        Ok(t) => Json(t).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    label: Option<String>,
    scopes: Option<String>,
    lifetime_days: Option<i64>,
}

/// `POST /auth/tokens`, with a JSON or form body.
async fn create(
    State(auth): State<Auth>,
    p: Option<Extension<Principal>>,
    JsonOrForm(form): JsonOrForm<NewToken>,
) -> Response {
    let p = match may_write(p.as_deref(), "making tokens") {
        Ok(p) => p.clone(),
        Err(d) => return d.into_response(),
    };
    let label = form.label.unwrap_or_else(|| "token".into());
    if label.len() > 200 {
        return (StatusCode::BAD_REQUEST, "label: at most 200 characters").into_response();
    }
    let scopes = match Scopes::parse(form.scopes.as_deref().unwrap_or("read write")) {
        Ok(s) => s,
        Err(e) => return identity_error(e),
    };
    // A token cannot give more than the credential that makes it.
    if scopes.write && !p.scopes.write {
        return (
            StatusCode::FORBIDDEN,
            "a read-only token cannot make a write token",
        )
            .into_response();
    }
    let days = form.lifetime_days.unwrap_or(30);
    let store = auth.store.clone();
    match blocking(move || store.issue_token(&p.user, &label, scopes, days)).await {
        Ok(t) => (StatusCode::CREATED, Json(t)).into_response(),
        Err(r) => r,
    }
}

async fn revoke(
    State(auth): State<Auth>,
    p: Option<Extension<Principal>>,
    Path(id): Path<String>,
) -> Response {
    let p = match may_write(p.as_deref(), "revoking tokens") {
        Ok(p) => p.clone(),
        Err(d) => return d.into_response(),
    };
    let store = auth.store.clone();
    match blocking(move || store.revoke_token(&p.user, &id)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}
