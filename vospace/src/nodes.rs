//! `/vospace/nodes/{path}`: read a node (a container with its children, paged and sorted),
//! create one (PUT), change its properties (POST), delete it (DELETE). Listings show each
//! caller only the children they may read.
use std::collections::BTreeMap;

use aster_archive::identity::Principal;
use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::node::{
    Access, Kind, Node, PROP_GROUPREAD, PROP_GROUPWRITE, PROP_ISPUBLIC, PROP_PUBLICREAD, READ_ONLY,
    parse_groups,
};
use crate::path::NodePath;
use crate::service::{Fault, VoSpace};
use crate::store::Sort;
use crate::xml::{Detail, MAX_DOCUMENT, node_document, parse_node};

/// The node path of a request under `/vospace/<endpoint>/`, from the raw (encoded) path.
pub(crate) fn path_of(uri: &Uri, endpoint: &str) -> Result<NodePath, Fault> {
    let raw = uri.path();
    let prefix = format!("/vospace/{endpoint}");
    let rest = raw
        .strip_prefix(&prefix)
        .ok_or_else(|| Fault::Invalid(format!("{raw} is not under {prefix}")))?;
    Ok(NodePath::from_raw(rest)?)
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

pub(crate) type Caller = Option<Extension<Principal>>;

#[derive(Debug, serde::Deserialize, Default)]
pub(crate) struct ListParams {
    limit: Option<String>,
    uri: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    detail: Option<String>,
}

/// `GET /vospace/nodes/{path}`.
pub(crate) async fn get_node(
    State(v): State<VoSpace>,
    caller: Caller,
    uri: Uri,
    Query(q): Query<ListParams>,
) -> Result<Response, Fault> {
    let p = caller.as_deref();
    let path = path_of(&uri, "nodes")?;
    v.ensure_home(p).await?;
    let node = v.readable(&path, p).await?;
    let limit = match q.limit.as_deref() {
        None => None,
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| Fault::Invalid(format!("limit: '{l}' is not a count")))?,
        ),
    };
    let sort = match q.sort.as_deref() {
        None | Some("") => Sort::Name,
        Some("ivo://ivoa.net/vospace/core#date") => Sort::Date,
        Some("ivo://ivoa.net/vospace/core#length") => Sort::Length,
        Some(other) => {
            return Err(Fault::Invalid(format!(
                "sort by {other}: sorting options not supported (use core#date or core#length)"
            )));
        }
    };
    let desc = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(o) => return Err(Fault::Invalid(format!("order: '{o}' is not asc or desc"))),
    };
    let detail = match q.detail.as_deref() {
        None | Some("max") | Some("properties") => Detail::Max,
        Some("min") => Detail::Min,
        Some(d) => {
            return Err(Fault::Invalid(format!(
                "detail: '{d}' is not min, max or properties"
            )));
        }
    };
    let after = match &q.uri {
        Some(u) => Some(NodePath::from_uri(u)?.name().to_string()),
        None => None,
    };
    let children = if node.kind == Kind::Container && limit != Some(0) {
        let path = path.clone();
        let all = v
            .blocking(move |s| s.children(&path, sort, desc, after.as_deref(), None))
            .await?;
        let mut readable: Vec<Node> = all.into_iter().filter(|c| c.can_read(p)).collect();
        if let Some(l) = limit {
            readable.truncate(l);
        }
        readable
    } else {
        Vec::new()
    };
    let space = v.space(&node).await?;
    Ok(xml(
        StatusCode::OK,
        node_document(&node, &v.naming, Some((&children, detail)), space.as_ref()),
    ))
}

/// Access settings and other properties a client sent, sorted out: `None` for access when
/// the client named no access property.
/// Property changes: a value to set, or None to remove.
pub(crate) type PropChanges = BTreeMap<String, Option<String>>;

fn split_props(
    current: &Access,
    props: &PropChanges,
) -> Result<(Option<Access>, PropChanges), Fault> {
    let mut access = current.clone();
    let mut touched = false;
    let mut other = BTreeMap::new();
    for (k, v) in props {
        match k.as_str() {
            PROP_ISPUBLIC | PROP_PUBLICREAD => {
                touched = true;
                access.public = match v.as_deref().map(str::trim) {
                    Some("true") => true,
                    Some("false") | Some("") | None => false,
                    Some(o) => {
                        return Err(Fault::Invalid(format!("{k}: '{o}' is not true or false")));
                    }
                };
            }
            PROP_GROUPREAD | PROP_GROUPWRITE => {
                touched = true;
                let groups = match v {
                    Some(v) => parse_groups(v).map_err(|e| Fault::Invalid(format!("{k}: {e}")))?,
                    None => Vec::new(),
                };
                if k == PROP_GROUPREAD {
                    access.group_read = groups;
                } else {
                    access.group_write = groups;
                }
            }
            // Computed properties are the service's: a client sending them back (the CADC
            // client does) changes nothing.
            k if READ_ONLY.contains(&k) => {}
            _ => {
                if k.len() > 1024 || v.as_ref().is_some_and(|v| v.len() > 64 * 1024) {
                    return Err(Fault::Invalid(format!("{k}: property too long")));
                }
                other.insert(k.clone(), v.clone());
            }
        }
    }
    Ok((touched.then_some(access), other))
}

async fn body_text(body: axum::body::Body) -> Result<String, Fault> {
    let bytes = axum::body::to_bytes(body, MAX_DOCUMENT)
        .await
        .map_err(|_| Fault::Invalid(format!("a node document is at most {MAX_DOCUMENT} bytes")))?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Fault::Invalid("the document is not UTF-8".into()))
}

/// `PUT /vospace/nodes/{path}`: creates a container, data or link node.
pub(crate) async fn put_node(
    State(v): State<VoSpace>,
    caller: Caller,
    uri: Uri,
    body: axum::body::Body,
) -> Result<Response, Fault> {
    let p = caller.as_deref();
    let path = path_of(&uri, "nodes")?;
    let Some(principal) = p else {
        return Err(Fault::refuse(p, format!("create {path}")));
    };
    v.ensure_home(p).await?;
    let doc = parse_node(&body_text(body).await?)?;
    if let Some(u) = &doc.uri
        && NodePath::from_uri(u)? != path
    {
        return Err(Fault::Invalid(format!(
            "the document's uri {u} is not {path}"
        )));
    }
    let kind = match doc.xsi_type.as_deref() {
        Some("ContainerNode") => Kind::Container,
        Some("DataNode" | "UnstructuredDataNode" | "StructuredDataNode") | None => Kind::Data,
        Some("LinkNode") => Kind::Link {
            target: doc
                .target
                .clone()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| Fault::Invalid("a LinkNode needs a target".into()))?,
        },
        Some(other) => return Err(Fault::Invalid(format!("unknown node type {other}"))),
    };
    if let Kind::Link { target } = &kind
        && !(target.starts_with("vos://")
            || target.starts_with("http://")
            || target.starts_with("https://"))
    {
        return Err(Fault::Invalid(format!(
            "link target {target}: use a vos:// or http(s) URI"
        )));
    }
    let parent_path = path
        .parent()
        .ok_or_else(|| Fault::Store(crate::store::StoreError::Duplicate(path.clone())))?;
    let parent = v
        .blocking({
            let pp = parent_path.clone();
            move |s| s.get(&pp)
        })
        .await?;
    match &parent {
        Some(parent) if !parent.path.is_root() && !parent.can_write(p) => {
            return Err(Fault::refuse(p, format!("write in {parent_path}")));
        }
        _ => {}
    }
    let (access, props) = split_props(&parent.map(|n| n.access).unwrap_or_default(), &doc.props)?;
    let props: BTreeMap<String, String> = props
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    let owner = principal.user.to_string();
    let node = v
        .blocking(move |s| s.create(&path, kind, &owner, props, access))
        .await?;
    Ok(xml(
        StatusCode::CREATED,
        node_document(&node, &v.naming, None, None),
    ))
}

/// `POST /vospace/nodes/{path}`: sets the properties the document names (`xsi:nil`
/// removes one); access properties only by those who may share the node.
pub(crate) async fn post_node(
    State(v): State<VoSpace>,
    caller: Caller,
    uri: Uri,
    body: axum::body::Body,
) -> Result<Response, Fault> {
    let p = caller.as_deref();
    let path = path_of(&uri, "nodes")?;
    let doc = parse_node(&body_text(body).await?)?;
    let node = v.readable(&path, p).await?;
    if path.segments().is_empty() {
        return Err(Fault::refuse(p, "change the root".into()));
    }
    let updated = change_props(&v, node, &doc.props, p).await?;
    Ok(xml(
        StatusCode::OK,
        node_document(&updated, &v.naming, None, None),
    ))
}

/// Applies a client's property changes to `node`: who may access it only by those who may
/// share it, other properties by those who may write it.
pub(crate) async fn change_props(
    v: &VoSpace,
    node: Node,
    changes: &PropChanges,
    p: Option<&Principal>,
) -> Result<Node, Fault> {
    let (access, props) = split_props(&node.access, changes)?;
    if access.as_ref().is_some_and(|a| *a != node.access) && !node.can_share(p) {
        return Err(Fault::refuse(
            p,
            format!("change who may access {}", node.path),
        ));
    }
    if !props.is_empty() && !node.can_write(p) {
        return Err(Fault::refuse(p, format!("change {}", node.path)));
    }
    let access = access.unwrap_or(node.access);
    let path = node.path;
    v.blocking(move |s| s.update(&path, &access, &props)).await
}

/// `DELETE /vospace/nodes/{path}`: removes the node and everything below it.
pub(crate) async fn delete_node(
    State(v): State<VoSpace>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, Fault> {
    let p = caller.as_deref();
    let path = path_of(&uri, "nodes")?;
    let node = v.readable(&path, p).await?;
    if !node.can_write(p) {
        return Err(Fault::refuse(p, format!("delete {path}")));
    }
    v.store.delete(&path).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
