//! Users' own tables over HTTP (DMS-REQ-0290, 0122-0124, 0340): `/api/tables`.
//!
//! - `GET /api/tables`: the caller's tables, and those others share with them.
//! - `PUT /api/tables/{name}`: imports `user_<caller>.<name>` from a FITS binary table,
//!   VOTable, CSV (with an optional metadata sidecar) or Parquet file, sent as multipart
//!   parts `table` (and `metadata`), or named in VOSpace with `source=vos://...` (and
//!   `metadata=vos://...`); `ra`/`dec` name the position columns when they cannot be found.
//! - `PUT /api/tables/{name}/access` with `{"public": bool, "groups": [...]}`: who else may
//!   read it.
//! - `DELETE /api/tables/{name}`.
//!
//! Imported tables are catalog-store tables, HEALPix-partitioned when they have positions,
//! queried and joined with the releases in TAP by those allowed.
use aster_archive::formats::{ImportedTable, read_any};
use aster_archive::identity::Principal;
use aster_archive::query::QueryEngine;
use aster_archive::user_tables::{
    Sidecar, TableAccess, UserTableError, UserTables, import, owner_of, schema_of, valid_table_name,
};
use aster_protocols::auth::{may_write, signed_in};
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use bytes::Bytes;

use crate::node::Kind;
use crate::path::NodePath;
use crate::service::{Fault, VoSpace};

/// The largest table file imported (it is read whole to be converted).
pub const MAX_IMPORT: usize = 1 << 30;

#[derive(Clone)]
pub struct Tables {
    engine: QueryEngine,
    acl: UserTables,
    vospace: VoSpace,
}

impl Tables {
    pub fn new(engine: QueryEngine, acl: UserTables, vospace: VoSpace) -> Self {
        Self {
            engine,
            acl,
            vospace,
        }
    }
}

pub fn router(t: Tables) -> Router {
    Router::new()
        .route("/api/tables", get(list))
        .route("/api/tables/{name}", put(create).delete(drop_table))
        .route("/api/tables/{name}/access", put(set_access))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_IMPORT + (1 << 20)))
        .with_state(t)
}

fn table_fault(e: UserTableError) -> Fault {
    match e {
        UserTableError::Sqlite(_) | UserTableError::Poisoned | UserTableError::Catalog(_) => {
            Fault::Internal(e.to_string())
        }
        UserTableError::NoTable(n) => Fault::NotFound(format!("you have no table named {n}")),
        other => Fault::Invalid(other.to_string()),
    }
}

#[derive(serde::Serialize)]
struct Listed {
    table: String,
    owner: String,
    rows: u64,
    description: Option<String>,
    access: TableAccess,
}

async fn list(State(t): State<Tables>, p: Option<Extension<Principal>>) -> Result<Response, Fault> {
    let p = signed_in(p.as_deref(), "your tables")?;
    let tables = t
        .engine
        .store()
        .tables()
        .await
        .map_err(|e| Fault::Internal(e.to_string()))?;
    let acl = t.acl.all().map_err(table_fault)?;
    let mut out = Vec::new();
    for m in tables {
        let Some(owner) = owner_of(&m.schema) else {
            continue;
        };
        let access = acl
            .get(&(m.schema.clone(), m.table.name.clone()))
            .cloned()
            .unwrap_or_default();
        if !access.allows(&m.schema, Some(p)) {
            continue;
        }
        out.push(Listed {
            table: format!("{}.{}", m.schema, m.table.name),
            owner: owner.to_string(),
            rows: m.rows(),
            description: m.table.description.clone(),
            access,
        });
    }
    Ok(Json(out).into_response())
}

/// A file named in VOSpace, read whole, if the caller may read it.
async fn from_vospace(v: &VoSpace, p: &Principal, uri: &str) -> Result<(String, Bytes), Fault> {
    let path = if uri.starts_with("vos://") {
        NodePath::from_uri(uri)?
    } else {
        NodePath::from_raw(uri)?
    };
    let node = v.readable(&path, Some(p)).await?;
    if node.kind != Kind::Data {
        return Err(Fault::Invalid(format!("{path} is not a file")));
    }
    if node.length as usize > MAX_IMPORT {
        return Err(Fault::Invalid(format!(
            "{path} is larger than {MAX_IMPORT} bytes"
        )));
    }
    let bytes = if node.length == 0 {
        Bytes::new()
    } else {
        v.store.read_all(&node).await?
    };
    Ok((path.name().to_string(), bytes))
}

#[derive(Debug, serde::Deserialize, Default)]
struct Sources {
    source: Option<String>,
    metadata: Option<String>,
    ra: Option<String>,
    dec: Option<String>,
}

/// `PUT /api/tables/{name}`.
async fn create(
    State(t): State<Tables>,
    p: Option<Extension<Principal>>,
    Path(name): Path<String>,
    Query(q): Query<Sources>,
    multipart: Option<Multipart>,
) -> Result<Response, Fault> {
    let p = may_write(p.as_deref(), "making tables")?;
    valid_table_name(&name).map_err(table_fault)?;
    let mut file: Option<(String, Bytes)> = None;
    let mut sidecar_text: Option<String> = None;
    let (mut ra, mut dec) = (q.ra.clone(), q.dec.clone());
    if let Some(mut mp) = multipart {
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|e| Fault::Invalid(format!("multipart: {e}")))?
        {
            let part = field.name().unwrap_or_default().to_string();
            let file_name = field.file_name().unwrap_or("table").to_string();
            let data = field
                .bytes()
                .await
                .map_err(|e| Fault::Invalid(format!("part {part}: {e}")))?;
            match part.as_str() {
                "table" => file = Some((file_name, data)),
                "metadata" => {
                    sidecar_text =
                        Some(String::from_utf8(data.to_vec()).map_err(|_| {
                            Fault::Invalid("the metadata sidecar is not UTF-8".into())
                        })?)
                }
                "ra" => ra = Some(String::from_utf8_lossy(&data).into_owned()),
                "dec" => dec = Some(String::from_utf8_lossy(&data).into_owned()),
                other => {
                    return Err(Fault::Invalid(format!(
                        "unknown part '{other}': use table, metadata, ra, dec"
                    )));
                }
            }
        }
    }
    if let Some(src) = &q.source {
        if file.is_some() {
            return Err(Fault::Invalid(
                "send the table as a part or name a source, not both".into(),
            ));
        }
        file = Some(from_vospace(&t.vospace, p, src).await?);
    }
    if let Some(m) = &q.metadata {
        let (_, bytes) = from_vospace(&t.vospace, p, m).await?;
        sidecar_text = Some(
            String::from_utf8(bytes.to_vec())
                .map_err(|_| Fault::Invalid("the metadata sidecar is not UTF-8".into()))?,
        );
    }
    let (file_name, bytes) = file.ok_or_else(|| {
        Fault::Invalid(
            "no table: send a multipart part 'table' or name one with source=vos://...".into(),
        )
    })?;
    let mut sidecar = match &sidecar_text {
        Some(text) => Some(Sidecar::parse(text).map_err(table_fault)?),
        None => None,
    };
    if ra.is_some() || dec.is_some() {
        let s = sidecar.get_or_insert_with(Sidecar::default);
        s.ra = ra.or(s.ra.take());
        s.dec = dec.or(s.dec.take());
    }
    // Conversion is CPU work on untrusted bytes: off the async threads.
    let imported: ImportedTable = tokio::task::spawn_blocking(move || read_any(&file_name, bytes))
        .await
        .map_err(|e| Fault::Internal(e.to_string()))?
        .map_err(|e| Fault::Invalid(format!("reading the table: {e}")))?;
    let (rows, partitions) = import(t.engine.store(), &p.user, &name, imported, sidecar.as_ref())
        .await
        .map_err(table_fault)?;
    t.engine.invalidate().await;
    let table = format!("{}.{name}", schema_of(&p.user));
    tracing::info!(table, rows, "user table imported");
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"table": table, "rows": rows, "partitions": partitions})),
    )
        .into_response())
}

async fn owned(t: &Tables, p: &Principal, name: &str) -> Result<String, Fault> {
    valid_table_name(name).map_err(table_fault)?;
    let schema = schema_of(&p.user);
    let exists = t
        .engine
        .store()
        .manifest(&schema, name)
        .await
        .map_err(|e| Fault::Internal(e.to_string()))?
        .is_some();
    if !exists {
        return Err(Fault::NotFound(format!("you have no table named {name}")));
    }
    Ok(schema)
}

/// `DELETE /api/tables/{name}`.
async fn drop_table(
    State(t): State<Tables>,
    p: Option<Extension<Principal>>,
    Path(name): Path<String>,
) -> Result<Response, Fault> {
    let p = may_write(p.as_deref(), "dropping tables")?;
    let schema = owned(&t, p, &name).await?;
    t.engine
        .store()
        .drop_table(&schema, &name)
        .await
        .map_err(|e| Fault::Internal(e.to_string()))?;
    t.acl.remove(&schema, &name).map_err(table_fault)?;
    t.engine.invalidate().await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /api/tables/{name}/access`.
async fn set_access(
    State(t): State<Tables>,
    p: Option<Extension<Principal>>,
    Path(name): Path<String>,
    Json(access): Json<TableAccess>,
) -> Result<Response, Fault> {
    let p = may_write(p.as_deref(), "sharing tables")?;
    let schema = owned(&t, p, &name).await?;
    t.acl.set(&schema, &name, &access).map_err(table_fault)?;
    t.engine.invalidate().await;
    Ok(Json(access).into_response())
}
