//! The image services over the dataset registry: SIAv2 (`/sia`), DataLink (`/datalink`),
//! SODA cutouts (`/soda`), dataset files with HTTP Range (`/files`), quick-look previews
//! (`/preview`), MOC coverage (`/moc`), the registry's REST view (`/api/datasets`) and
//! bulk download manifests (`/api/manifest`).
//! Datasets the archive does not keep are regenerated through a [`Regenerator`].
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use aster_archive::jobs::JobStore;
use aster_archive::query::QueryEngine;
use aster_archive::registry::{Dataset, Registry, RegistryError};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::uws::UwsConfig;

mod datalink;
pub(crate) mod files;
mod manifest;
mod moc;
mod params;
mod render;
mod sia;
mod soda;
mod soda_async;
mod vosi;

pub use params::Params;

/// Makes a dataset that the archive does not keep (or has lost) again from its
/// provenance (DMS-REQ-0311), returning where the regenerated file is.
#[async_trait::async_trait]
pub trait Regenerator: Send + Sync {
    async fn regenerate(&self, dataset: &Dataset) -> Result<PathBuf, String>;
}

/// Everything the image routes share.
#[derive(Clone)]
pub struct ImageServices {
    registry: Arc<Registry>,
    public_url: Option<String>,
    regenerator: Option<Arc<dyn Regenerator>>,
    /// For manifests selected by ADQL on ivoa.ObsCore.
    engine: Option<QueryEngine>,
    /// Files whose checksum was verified, by path, with the size and modification time
    /// seen then: a file is hashed again only when it changes.
    verified: Arc<Mutex<HashMap<PathBuf, (u64, std::time::SystemTime)>>>,
    /// SIAv2 rows returned when MAXREC is not given, and at most.
    default_maxrec: usize,
    max_maxrec: usize,
    /// Users' own images (`vos://` IDs), for SODA cutouts of private data.
    private: Option<Arc<dyn PrivateImages>>,
}

/// Where users' own images are (VOSpace): the local file a `vos://` ID names, if its owner's
/// access rules let `user` (None: anonymous) read it.
#[async_trait::async_trait]
pub trait PrivateImages: Send + Sync {
    async fn local_file(
        &self,
        id: &str,
        user: Option<&str>,
    ) -> Result<PrivateFile, (StatusCode, String)>;
}

/// A user's image as a local file; a temporary copy is removed when dropped.
pub struct PrivateFile {
    pub path: PathBuf,
    pub temporary: bool,
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl ImageServices {
    pub fn new(
        registry: Arc<Registry>,
        public_url: Option<String>,
        regenerator: Option<Arc<dyn Regenerator>>,
    ) -> Self {
        Self {
            registry,
            public_url,
            regenerator,
            engine: None,
            verified: Arc::default(),
            default_maxrec: 10_000,
            max_maxrec: 1_000_000,
            private: None,
        }
    }

    /// Lets SODA cut users' own images (`ID=vos://...`), with their access rules.
    pub fn with_private_images(mut self, private: Arc<dyn PrivateImages>) -> Self {
        self.private = Some(private);
        self
    }

    /// Lets manifests select datasets by ADQL on `ivoa.ObsCore`.
    pub fn with_engine(mut self, engine: QueryEngine) -> Self {
        self.engine = Some(engine);
        self
    }

    /// The archive's base URL as the client reached it (or as configured).
    fn base_url(&self, headers: &HeaderMap) -> String {
        crate::request_base(self.public_url.as_deref(), headers)
    }

    /// Runs blocking registry or file work off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Registry) -> T + Send + 'static,
    ) -> T {
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || f(&registry))
            .await
            .expect("blocking registry task panicked")
    }

    /// The dataset's file, its checksum verified; a dataset missing from the store is
    /// regenerated when it can be.
    async fn file_of(&self, d: &Dataset) -> Result<PathBuf, ServiceError> {
        let path = self.registry.path_of(d);
        let meta = tokio::fs::metadata(&path).await.ok();
        if let Some(m) = &meta {
            let seen = (m.len(), m.modified().unwrap_or(std::time::UNIX_EPOCH));
            if self.verified.lock().expect("lock").get(&path) == Some(&seen) {
                return Ok(path);
            }
        }
        let dataset = d.clone();
        match self
            .blocking(move |r| r.verified_path(&dataset).map(|p| (p, r.path_of(&dataset))))
            .await
        {
            Ok((p, _)) => {
                if let Some(m) = meta {
                    let seen = (m.len(), m.modified().unwrap_or(std::time::UNIX_EPOCH));
                    self.verified.lock().expect("lock").insert(p.clone(), seen);
                }
                Ok(p)
            }
            Err(RegistryError::Missing { .. }) if self.regenerator.is_some() => {
                let regenerator = self.regenerator.clone().expect("checked");
                regenerator
                    .regenerate(d)
                    .await
                    .map_err(|e| ServiceError::Failed(format!("regenerating {}: {e}", d.id)))
            }
            Err(e @ RegistryError::Missing { .. }) => Err(ServiceError::Gone(e.to_string())),
            Err(e) => Err(ServiceError::Failed(e.to_string())),
        }
    }

    async fn dataset(&self, id: &str) -> Result<Dataset, ServiceError> {
        let key = aster_archive::registry::id_from_did(id).to_string();
        match self.blocking(move |r| r.get(&key)).await {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err(ServiceError::NotFound(format!("no dataset {id}"))),
            Err(e) => Err(ServiceError::Failed(e.to_string())),
        }
    }
}

/// Why a request for a dataset failed, before the protocol puts it in its own words.
#[derive(Debug)]
pub(crate) enum ServiceError {
    NotFound(String),
    Gone(String),
    Failed(String),
}

impl ServiceError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Gone(_) => StatusCode::GONE,
            Self::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
    fn message(&self) -> &str {
        match self {
            Self::NotFound(m) | Self::Gone(m) | Self::Failed(m) => m,
        }
    }
}

/// A plain-text error response.
fn text_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

/// The request's parameters from the query string and, for POST, a form body.
async fn read_params(req: Request) -> Result<Params, Response> {
    let mut pairs: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let body = Bytes::from_request(req, &())
        .await
        .map_err(|e| text_error(StatusCode::BAD_REQUEST, format!("reading request: {e}")))?;
    pairs.extend(url::form_urlencoded::parse(&body).into_owned());
    Ok(Params::new(pairs))
}

fn xml_response(content_type: &'static str, body: String) -> Response {
    ([(header::CONTENT_TYPE, content_type)], Body::from(body)).into_response()
}

/// The image routes, mounted at the root of the server; SODA's async jobs go to `jobs`.
pub fn router(s: ImageServices, jobs: JobStore, soda_jobs: UwsConfig) -> Router {
    let soda_async = soda_async::router(s.clone(), jobs, soda_jobs);
    Router::new()
        .route("/sia/query", get(sia::query).post(sia::query))
        .route("/sia/capabilities", get(vosi::sia_capabilities))
        .route("/sia/availability", get(vosi::availability))
        .route(
            "/datalink/links",
            get(datalink::links).post(datalink::links),
        )
        .route("/datalink/capabilities", get(vosi::datalink_capabilities))
        .route("/datalink/availability", get(vosi::availability))
        .route("/soda/sync", get(soda::sync).post(soda::sync))
        .route("/soda/capabilities", get(vosi::soda_capabilities))
        .route("/soda/availability", get(vosi::availability))
        .route("/files/{id}", get(files::download))
        .route("/preview/{id}", get(render::preview))
        .route("/moc/datasets/{id}", get(moc::dataset_moc))
        .route("/moc/collections/{name}", get(moc::collection_moc))
        .route("/moc/depth/{collection}/{band}", get(moc::depth_map))
        .route("/api/datasets/{id}", get(files::describe))
        .route(
            "/api/manifest",
            get(manifest::manifest).post(manifest::manifest),
        )
        .with_state(s)
        .nest("/soda/async", soda_async)
}
