//! VOSpace 2.1 (DMS-REQ-0340, 0290): each user's own storage beside the survey's data, with
//! access control on every node, served under `/vospace` so that standard clients (CADC's
//! `vos`, pyvo, browsers) work unchanged.
//!
//! - `path.rs`: node paths, validated segment by segment (no traversal, no encoded slashes).
//! - `node.rs`: the node model and who may read, write and share a node.
//! - `store.rs`: records in SQLite, bytes in an object store, quotas.
//! - `xml.rs`: node and transfer documents.
//! - `service.rs`, `nodes.rs`, `data.rs`, `transfers.rs`: the HTTP endpoints.
//! - `images.rs`: users' exposure files for SODA cutouts (`ID=vos://...`).
//! - `tables.rs`: users' own tables (`/api/tables`), imported from uploads or VOSpace into
//!   the catalog store and queryable in TAP by those allowed.
mod data;
mod images;
mod node;
mod nodes;
mod path;
mod service;
mod store;
mod tables;
mod transfers;
mod xml;

use std::sync::Arc;

use aster_archive::jobs::JobStore;
use aster_protocols::uws::{self, UwsConfig};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;

pub use images::VoSpaceImages;
pub use node::{Access, Kind, Node};
pub use path::NodePath;
pub use service::VoSpace;
pub use store::{NodeStore, QuotaOf, StoreError, objects_at};
pub use tables::{Tables, router as tables_router};
pub use transfers::{DELETE_SERVICE, PROPS_SERVICE, SYNC_SERVICE, TRANSFERS_SERVICE};

fn job_config(service: &str, scheduler: &Option<Arc<uws::Scheduler>>) -> UwsConfig {
    let mut c = UwsConfig::new(service);
    c.plain_text_errors = true;
    c.max_body_bytes = xml::MAX_DOCUMENT;
    c.scheduler = scheduler.clone();
    c
}

/// All of `/vospace`; its asynchronous jobs go through `scheduler` when there is one.
pub fn router(v: VoSpace, jobs: JobStore, scheduler: Option<Arc<uws::Scheduler>>) -> Router {
    let runner = transfers::Runner::new(v.clone());
    let nodes = get(nodes::get_node)
        .put(nodes::put_node)
        .post(nodes::post_node)
        .delete(nodes::delete_node);
    Router::new()
        .route("/vospace/capabilities", get(service::capabilities))
        .route("/vospace/availability", get(service::availability))
        .route("/vospace/protocols", get(service::protocols))
        .route("/vospace/views", get(service::views))
        .route("/vospace/properties", get(service::properties))
        .route("/vospace/nodes", nodes.clone())
        .route("/vospace/nodes/", nodes.clone())
        .route("/vospace/nodes/{*path}", nodes)
        .route(
            "/vospace/data/{*path}",
            get(data::get_data)
                .head(data::get_data)
                .put(data::put_data)
                // Uploads stream to the object store: the size limit is the quota.
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/vospace/files/{*path}", get(data::files))
        .route(
            "/vospace/synctrans",
            get(transfers::sync_get).post(transfers::sync_post),
        )
        .route("/vospace/synctrans/{id}", get(transfers::sync_job_doc))
        .route("/vospace/synctrans/{id}/phase", get(transfers::sync_phase))
        .route(
            "/vospace/synctrans/{id}/results/{result}",
            get(transfers::sync_details),
        )
        .with_state(v)
        .nest(
            "/vospace/transfers",
            uws::router(
                jobs.clone(),
                runner.clone(),
                job_config(TRANSFERS_SERVICE, &scheduler),
            ),
        )
        .nest(
            "/vospace/recursiveDelete",
            uws::router(
                jobs.clone(),
                runner.clone(),
                job_config(DELETE_SERVICE, &scheduler),
            ),
        )
        .nest(
            "/vospace/recursiveProps",
            uws::router(
                jobs,
                runner as Arc<dyn uws::JobRunner>,
                job_config(PROPS_SERVICE, &scheduler),
            ),
        )
}
