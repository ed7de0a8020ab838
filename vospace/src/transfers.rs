//! Transfers: `/vospace/synctrans` (push and pull negotiated at once: the answer names the
//! endpoints to PUT or GET the bytes at), and the asynchronous UWS endpoints
//! `/vospace/transfers` (moveNode, copyNode, and push/pull), `/vospace/recursiveDelete`
//! and `/vospace/recursiveProps`, whose jobs the [`Runner`] carries out.
use std::collections::HashMap;
use std::sync::Arc;

use aster_archive::identity::Principal;
use aster_archive::jobs::{Job, JobResult, JobStore, NewJob, Phase};
use aster_protocols::uws::{JobRunner, RunningJobs, XML_PARAMETER};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::data::data_url;
use crate::node::Kind;
use crate::nodes::Caller;
use crate::path::NodePath;
use crate::service::{Fault, VoSpace};
use crate::xml::{PROTOCOLS, TransferDoc, parse_node, parse_transfer, transfer_document};

pub const SYNC_SERVICE: &str = "vospace-sync";
pub const TRANSFERS_SERVICE: &str = "vospace-transfers";
pub const DELETE_SERVICE: &str = "vospace-rdelete";
pub const PROPS_SERVICE: &str = "vospace-rprops";

const TRANSFER_DETAILS: &str = "transferDetails";

/// Checks that the caller may do a push or pull of `t`, and gives the endpoints, one per
/// protocol asked for (all, when none is named).
async fn negotiate(
    v: &VoSpace,
    p: Option<&Principal>,
    t: &TransferDoc,
    base: &str,
) -> Result<Vec<(String, String)>, Fault> {
    let path = NodePath::from_uri(&t.target)?;
    let (node, parent) = v
        .blocking({
            let path = path.clone();
            move |s| {
                Ok((
                    s.get(&path)?,
                    path.parent().map(|pp| s.get(&pp)).transpose()?.flatten(),
                ))
            }
        })
        .await?;
    let push = match t.direction.as_str() {
        "pushToVoSpace" => true,
        "pullFromVoSpace" => false,
        d if d.starts_with("vos://") => {
            return Err(Fault::Invalid(
                "moves and copies are asynchronous: POST them to /vospace/transfers".into(),
            ));
        }
        d => return Err(Fault::Invalid(format!("direction '{d}'"))),
    };
    if push {
        let ok = match (&node, &parent) {
            (Some(n), _) => n.kind == Kind::Data && n.can_write(p),
            (None, Some(parent)) => parent.kind == Kind::Container && parent.can_write(p),
            (None, None) => {
                return Err(Fault::Store(crate::store::StoreError::ContainerNotFound(
                    path.parent().unwrap_or_else(NodePath::root),
                )));
            }
        };
        if !ok {
            return Err(Fault::refuse(p, format!("write {path}")));
        }
    } else {
        let n =
            node.ok_or_else(|| Fault::Store(crate::store::StoreError::NotFound(path.clone())))?;
        if !n.can_read(p) {
            return Err(Fault::refuse(p, format!("read {path}")));
        }
        if n.kind != Kind::Data {
            return Err(Fault::Invalid(format!("{path} is not a data node")));
        }
    }
    let wanted: Vec<&str> = if t.protocols.is_empty() {
        PROTOCOLS
            .iter()
            .copied()
            .filter(|u| u.ends_with(if push { "put" } else { "get" }))
            .collect()
    } else {
        t.protocols.iter().map(String::as_str).collect()
    };
    let suffix = if push { "put" } else { "get" };
    let endpoints: Vec<(String, String)> = wanted
        .into_iter()
        .filter(|u| PROTOCOLS.contains(u) && u.ends_with(suffix))
        .map(|u| (u.to_string(), data_url(base, &path)))
        .collect();
    if endpoints.is_empty() {
        return Err(Fault::Invalid(format!(
            "none of the protocols asked for is offered for this direction (offered: {})",
            PROTOCOLS.join(", ")
        )));
    }
    Ok(endpoints)
}

/// A transfer given as query or form parameters (TARGET, DIRECTION, PROTOCOL, VIEW).
fn transfer_from_params(q: &HashMap<String, String>) -> Result<TransferDoc, Fault> {
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    Ok(TransferDoc {
        target: get("TARGET").ok_or_else(|| Fault::Invalid("TARGET is required".into()))?,
        direction: get("DIRECTION")
            .ok_or_else(|| Fault::Invalid("DIRECTION is required".into()))?,
        protocols: get("PROTOCOL").into_iter().collect(),
        keep_bytes: true,
        view: get("VIEW"),
    })
}

/// `GET /vospace/synctrans?TARGET=&DIRECTION=&PROTOCOL=[&REQUEST=redirect]`: the transfer
/// document with endpoints, or (REQUEST=redirect, pull) a redirect to the bytes.
pub(crate) async fn sync_get(
    State(v): State<VoSpace>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Fault> {
    let p = caller.as_deref();
    let t = transfer_from_params(&q)?;
    let base = v.base(&headers);
    let endpoints = negotiate(&v, p, &t, &base).await?;
    let redirect = q
        .iter()
        .any(|(k, val)| k.eq_ignore_ascii_case("REQUEST") && val == "redirect");
    if redirect && t.direction == "pullFromVoSpace" {
        return Ok(Redirect::to(&endpoints[0].1).into_response());
    }
    Ok((
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        transfer_document(&t, &endpoints),
    )
        .into_response())
}

/// `POST /vospace/synctrans` with a transfer document (or parameters): the negotiation is
/// recorded as a completed job whose `transferDetails` result the client is sent to.
pub(crate) async fn sync_post(
    State(v): State<VoSpace>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Body,
) -> Result<Response, Fault> {
    let p = caller.as_deref();
    let bytes = axum::body::to_bytes(body, crate::xml::MAX_DOCUMENT)
        .await
        .map_err(|_| Fault::Invalid("a transfer document is at most 1 MiB".into()))?;
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| Fault::Invalid("the document is not UTF-8".into()))?;
    let t = if text.trim_start().starts_with('<') {
        parse_transfer(&text)?
    } else {
        // A form body, or parameters in the query string.
        let mut all = q.clone();
        all.extend(url::form_urlencoded::parse(text.as_bytes()).into_owned());
        transfer_from_params(&all)?
    };
    let base = v.base(&headers);
    let endpoints = negotiate(&v, p, &t, &base).await?;
    let doc = transfer_document(&t, &endpoints);
    let owner = p.map(|p| p.user.to_string());
    let jobs = v.jobs.clone();
    let id = tokio::task::spawn_blocking(move || record_sync(&jobs, owner, &text, &doc))
        .await
        .map_err(|e| Fault::Internal(e.to_string()))?
        .map_err(Fault::Internal)?;
    Ok(Redirect::to(&format!(
        "{base}/vospace/synctrans/{id}/results/{TRANSFER_DETAILS}"
    ))
    .into_response())
}

fn record_sync(
    jobs: &JobStore,
    owner: Option<String>,
    request: &str,
    details: &str,
) -> Result<String, String> {
    let job = jobs
        .create(NewJob {
            service: SYNC_SERVICE.into(),
            owner,
            run_id: None,
            parameters: vec![(XML_PARAMETER.into(), request.to_string())],
            uploads: None,
            execution_duration: 0,
            destruction: chrono::Utc::now() + chrono::Duration::days(1),
        })
        .map_err(|e| e.to_string())?;
    write_details(jobs, &job.id, details)?;
    Ok(job.id)
}

/// Moves a new sync job to COMPLETED with its transfer document.
fn write_details(jobs: &JobStore, id: &str, details: &str) -> Result<(), String> {
    jobs.set_phase(id, Phase::Queued)
        .map_err(|e| e.to_string())?;
    jobs.start(id).map_err(|e| e.to_string())?;
    complete_with_details(jobs, id, details)
}

/// A sync transfer's record, if it is the caller's.
async fn sync_job(v: &VoSpace, p: Option<&Principal>, id: String) -> Result<Job, Fault> {
    let jobs = v.jobs.clone();
    let job = tokio::task::spawn_blocking(move || jobs.get(&id))
        .await
        .map_err(|e| Fault::Internal(e.to_string()))?
        .map_err(|e| Fault::Internal(e.to_string()))?
        .filter(|j| j.service == SYNC_SERVICE)
        .ok_or_else(|| Fault::Invalid("no such transfer".into()))?;
    if job.owner.as_deref() != p.map(|p| p.user.as_str()) {
        return Err(Fault::refuse(p, "read another caller's transfer".into()));
    }
    Ok(job)
}

/// `GET /vospace/synctrans/{id}/results/transferDetails`.
pub(crate) async fn sync_details(
    State(v): State<VoSpace>,
    caller: Caller,
    Path((id, result)): Path<(String, String)>,
) -> Result<Response, Fault> {
    let job = sync_job(&v, caller.as_deref(), id).await?;
    let r = job
        .results
        .iter()
        .find(|r| r.id == result)
        .ok_or_else(|| Fault::Invalid(format!("no result {result}")))?;
    let path = v
        .jobs
        .result_path(&job.id, &r.file_name)
        .map_err(|e| Fault::Internal(e.to_string()))?;
    let body = tokio::fs::read_to_string(&path)
        .await
        .map_err(|e| Fault::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response())
}

/// `GET /vospace/synctrans/{id}/phase`: sync transfers are complete once negotiated.
pub(crate) async fn sync_phase(
    State(v): State<VoSpace>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Fault> {
    let job = sync_job(&v, caller.as_deref(), id).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain")],
        job.phase.to_string(),
    )
        .into_response())
}

/// `GET /vospace/synctrans/{id}`: the transfer's details.
pub(crate) async fn sync_job_doc(
    State(v): State<VoSpace>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Fault> {
    let job = sync_job(&v, caller.as_deref(), id).await?;
    let base = v.base(&headers);
    Ok(Redirect::to(&format!(
        "{base}/vospace/synctrans/{}/results/{TRANSFER_DETAILS}",
        job.id
    ))
    .into_response())
}

/// Runs the asynchronous VOSpace jobs of one endpoint.
pub struct Runner {
    v: VoSpace,
    running: RunningJobs,
}

impl Runner {
    pub fn new(v: VoSpace) -> Arc<Self> {
        Arc::new(Self {
            v,
            running: RunningJobs::default(),
        })
    }
}

fn param<'a>(job: &'a Job, name: &str) -> Option<&'a str> {
    job.parameters
        .iter()
        .rev()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl JobRunner for Runner {
    fn validate(&self, job: &Job) -> Result<(), String> {
        match job.service.as_str() {
            TRANSFERS_SERVICE => {
                let xml =
                    param(job, XML_PARAMETER).ok_or("InvalidArgument no transfer document")?;
                parse_transfer(xml).map(|_| ()).map_err(|e| e.to_string())
            }
            DELETE_SERVICE => {
                let t = param(job, "target").ok_or("InvalidArgument target is required")?;
                NodePath::from_uri(t).map(|_| ()).map_err(|e| e.to_string())
            }
            PROPS_SERVICE => {
                let xml = param(job, XML_PARAMETER).ok_or("InvalidArgument no node document")?;
                parse_node(xml).map(|_| ()).map_err(|e| e.to_string())
            }
            other => Err(format!("no VOSpace jobs of kind {other}")),
        }
    }

    fn run(&self, job: Job) {
        let v = self.v.clone();
        let jobs = v.jobs.clone();
        let id = job.id.clone();
        self.running.spawn(jobs.clone(), id.clone(), async move {
            let principal = {
                let v = v.clone();
                let owner = job.owner.clone();
                tokio::task::spawn_blocking(move || v.principal_of(owner.as_deref()))
                    .await
                    .map_err(|e| e.to_string())??
            };
            let j = jobs.clone();
            let i = id.clone();
            tokio::task::spawn_blocking(move || j.start(&i))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let details = execute(&v, principal.as_ref(), &job)
                .await
                .map_err(|e| e.to_string())?;
            tokio::task::spawn_blocking(move || match details {
                Some(d) => complete_with_details(&jobs, &id, &d),
                None => jobs
                    .complete(&id, Vec::new())
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            })
            .await
            .map_err(|e| e.to_string())?
        });
    }

    fn abort(&self, job_id: &str) {
        self.running.abort(job_id);
    }
}

/// Completes a running job with its transfer document as the `transferDetails` result.
fn complete_with_details(jobs: &JobStore, id: &str, details: &str) -> Result<(), String> {
    let file = "transferDetails.xml";
    let path = jobs.result_path(id, file).map_err(|e| e.to_string())?;
    std::fs::write(&path, details).map_err(|e| format!("writing {}: {e}", path.display()))?;
    jobs.complete(
        id,
        vec![JobResult {
            id: TRANSFER_DETAILS.into(),
            file_name: file.into(),
            media_type: "text/xml".into(),
            size: details.len() as u64,
            rows: None,
        }],
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// Does a job's work; a push or pull gives its transfer document.
async fn execute(v: &VoSpace, p: Option<&Principal>, job: &Job) -> Result<Option<String>, Fault> {
    match job.service.as_str() {
        TRANSFERS_SERVICE => {
            let t = parse_transfer(param(job, XML_PARAMETER).unwrap_or_default())?;
            if t.direction.starts_with("vos://") {
                move_or_copy(v, p, &t).await?;
                Ok(None)
            } else {
                // A job runs apart from any request: endpoints use the archive's own address.
                let base = v.links_base().to_string();
                let endpoints = negotiate(v, p, &t, &base).await?;
                Ok(Some(transfer_document(&t, &endpoints)))
            }
        }
        DELETE_SERVICE => {
            let path = NodePath::from_uri(param(job, "target").unwrap_or_default())?;
            let node = v.readable(&path, p).await?;
            if !node.can_write(p) {
                return Err(Fault::refuse(p, format!("delete {path}")));
            }
            v.store.delete(&path).await?;
            Ok(None)
        }
        PROPS_SERVICE => {
            let doc = parse_node(param(job, XML_PARAMETER).unwrap_or_default())?;
            let top = NodePath::from_uri(doc.uri.as_deref().unwrap_or_default())?;
            let nodes = v.blocking(move |s| s.subtree(&top)).await?;
            for n in nodes {
                crate::nodes::change_props(v, n, &doc.props, p).await?;
            }
            Ok(None)
        }
        other => Err(Fault::Invalid(format!("no VOSpace jobs of kind {other}"))),
    }
}

/// moveNode and copyNode: the source must be the caller's to change (move) or read (copy),
/// and the destination's container theirs to write.
async fn move_or_copy(v: &VoSpace, p: Option<&Principal>, t: &TransferDoc) -> Result<(), Fault> {
    let from = NodePath::from_uri(&t.target)?;
    let to = NodePath::from_uri(&t.direction)?;
    let (src, dest, dest_parent) = v
        .blocking({
            let (from, to) = (from.clone(), to.clone());
            move |s| {
                let dest_parent = to.parent().map(|pp| s.get(&pp)).transpose()?.flatten();
                Ok((s.require(&from)?, s.get(&to)?, dest_parent))
            }
        })
        .await?;
    if !src.can_read(p) {
        return Err(Fault::refuse(p, format!("read {from}")));
    }
    if !t.keep_bytes && !src.can_write(p) {
        return Err(Fault::refuse(p, format!("move {from}")));
    }
    // Into an existing container, or next to it under a new name.
    let container = match dest {
        Some(d) if d.kind == Kind::Container => Some(d),
        _ => dest_parent,
    };
    match container {
        Some(c) if c.can_write(p) => {}
        Some(c) => return Err(Fault::refuse(p, format!("write in {}", c.path))),
        None => {
            return Err(Fault::Store(crate::store::StoreError::ContainerNotFound(
                to.parent().unwrap_or_else(NodePath::root),
            )));
        }
    }
    let owner = p.map(|p| p.user.to_string()).unwrap_or_default();
    if t.keep_bytes {
        v.store.copy_node(&from, &to, &owner).await?;
    } else {
        v.blocking(move |s| s.move_node(&from, &to).map(|_| ()))
            .await?;
    }
    Ok(())
}
