//! Groups, in the manner of IVOA GMS 1.0: `GET /gms/search[?group=G...]` answers, one per
//! line (CRLF), which of the named groups (all, without `group`) the caller belongs to; an
//! administrator may ask about someone else with `user=`. Groups are made and managed with
//! `POST /gms/groups`, `GET /gms/groups/{g}` and `PUT|DELETE /gms/groups/{g}/members/{user}`.
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};

use super::tokens::blocking;
use super::{Auth, Principal, may_write, signed_in};
use aster_archive::identity::{GroupName, UserName};

pub(super) fn router(auth: Auth) -> Router {
    Router::new()
        .route("/gms/search", get(search))
        .route("/gms/capabilities", get(capabilities))
        .route("/gms/groups", post(create))
        .route("/gms/groups/{group}", get(show))
        .route(
            "/gms/groups/{group}/members/{user}",
            put(add).delete(remove),
        )
        .with_state(auth)
}

fn bad(m: impl ToString) -> Response {
    (StatusCode::BAD_REQUEST, m.to_string()).into_response()
}

async fn search(
    State(auth): State<Auth>,
    p: Option<Extension<Principal>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let p = match signed_in(p.as_deref(), "group membership") {
        Ok(p) => p.clone(),
        Err(d) => return d.into_response(),
    };
    let mut asked = Vec::new();
    let mut about = None;
    for (k, v) in &q {
        match k.as_str() {
            "group" => match GroupName::new(v) {
                Ok(g) => asked.push(g),
                Err(e) => return bad(e),
            },
            "user" => match UserName::new(v) {
                Ok(u) => about = Some(u),
                Err(e) => return bad(e),
            },
            other => return bad(format!("unknown parameter '{other}': use group (and user)")),
        }
    }
    let who = match about {
        Some(u) if u != p.user && !p.admin => {
            return (
                StatusCode::FORBIDDEN,
                "only administrators may ask about other users",
            )
                .into_response();
        }
        Some(u) => u,
        None => p.user.clone(),
    };
    let store = auth.store.clone();
    let groups = match blocking(move || store.groups_of(&who)).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let body: String = groups
        .iter()
        .filter(|g| asked.is_empty() || asked.contains(g))
        .map(|g| format!("{g}\r\n"))
        .collect();
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn capabilities(State(auth): State<Auth>, headers: axum::http::HeaderMap) -> Response {
    let base = auth.base(&headers);
    // The standard's identifier, and the capitalised one CADC's clients compare against;
    // one interface per security method (GMS needs an authenticated caller).
    let search: String = [
        "ivo://ivoa.net/std/gms#search-1.0",
        "ivo://ivoa.net/std/GMS#search-1.0",
    ]
    .iter()
    .map(|id| {
        let interfaces: String = [super::SECURITY_TOKEN, super::SECURITY_COOKIE]
            .iter()
            .map(|m| {
                format!(
                    r#"    <interface xsi:type="vs:ParamHTTP" role="std">
      <accessURL use="base">{base}/gms/search</accessURL>
      <securityMethod standardID="{m}"/>
    </interface>
"#
                )
            })
            .collect();
        format!("  <capability standardID=\"{id}\">\n{interfaces}  </capability>\n")
    })
    .collect();
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0" xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <capability standardID="ivo://ivoa.net/std/VOSI#capabilities">
    <interface xsi:type="vs:ParamHTTP" role="std"><accessURL use="full">{base}/gms/capabilities</accessURL></interface>
  </capability>
{search}</vosi:capabilities>
"#,
    );
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct NewGroup {
    name: String,
    #[serde(default)]
    description: String,
}

async fn create(
    State(auth): State<Auth>,
    p: Option<Extension<Principal>>,
    Json(g): Json<NewGroup>,
) -> Response {
    let p = match may_write(p.as_deref(), "making groups") {
        Ok(p) => p.clone(),
        Err(d) => return d.into_response(),
    };
    let name = match GroupName::new(&g.name) {
        Ok(n) => n,
        Err(e) => return bad(e),
    };
    if g.description.len() > 2000 {
        return bad("description: at most 2000 characters");
    }
    let store = auth.store.clone();
    match blocking(move || store.create_group(&name, &p.user, &g.description)).await {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(r) => r,
    }
}

/// A group's owner and members, to its members and administrators. To anyone else it does
/// not exist (404), so listing names learns nothing.
async fn show(
    State(auth): State<Auth>,
    p: Option<Extension<Principal>>,
    Path(group): Path<String>,
) -> Response {
    let p = match signed_in(p.as_deref(), "groups") {
        Ok(p) => p.clone(),
        Err(d) => return d.into_response(),
    };
    let name = match GroupName::new(&group) {
        Ok(n) => n,
        Err(e) => return bad(e),
    };
    let store = auth.store.clone();
    match blocking(move || store.group(&name)).await {
        Ok(Some(g)) if p.admin || g.members.contains(&p.user) => Json(g).into_response(),
        Ok(_) => (StatusCode::NOT_FOUND, format!("no group '{group}'")).into_response(),
        Err(r) => r,
    }
}

async fn change(
    auth: Auth,
    p: Option<&Principal>,
    group: String,
    user: String,
    add: bool,
) -> Response {
    let p = match may_write(p, "changing groups") {
        Ok(p) => p.clone(),
        Err(d) => return d.into_response(),
    };
    let (g, u) = match (GroupName::new(&group), UserName::new(&user)) {
        (Ok(g), Ok(u)) => (g, u),
        (Err(e), _) => return bad(e),
        (_, Err(e)) => return bad(e),
    };
    let store = auth.store.clone();
    let r = blocking(move || {
        if add {
            store.add_member(&g, &u, &p)
        } else {
            store.remove_member(&g, &u, &p)
        }
    })
    .await;
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

async fn add(
    State(auth): State<Auth>,
    p: Option<Extension<Principal>>,
    Path((group, user)): Path<(String, String)>,
) -> Response {
    change(auth, p.as_deref(), group, user, true).await
}

async fn remove(
    State(auth): State<Auth>,
    p: Option<Extension<Principal>>,
    Path((group, user)): Path<(String, String)>,
) -> Response {
    change(auth, p.as_deref(), group, user, false).await
}
