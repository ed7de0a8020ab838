//! The VOSpace service's shared state, its faults as HTTP answers, and the VOSI documents
//! (capabilities, availability).
use std::sync::Arc;

use aster_archive::identity::{IdentityStore, Principal, UserName};
use aster_archive::jobs::JobStore;
use aster_protocols::auth::{SECURITY_COOKIE, SECURITY_TOKEN};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::node::Node;
use crate::path::{NodePath, PathError};
use crate::store::{NodeStore, StoreError};
use crate::xml::{Naming, Space};

/// What every VOSpace handler shares.
#[derive(Clone)]
pub struct VoSpace {
    pub(crate) store: NodeStore,
    pub(crate) identity: IdentityStore,
    pub(crate) jobs: JobStore,
    pub(crate) naming: Arc<Naming>,
    public_url: Option<String>,
    links_base: String,
}

impl VoSpace {
    /// `authority`: how node URIs name this service (`vos://<authority>/...`), e.g.
    /// `aster.example!vospace`; `links_base`: the archive's address for work done apart
    /// from a request (asynchronous transfers).
    pub fn new(
        store: NodeStore,
        identity: IdentityStore,
        jobs: JobStore,
        authority: &str,
        public_url: Option<String>,
        links_base: String,
    ) -> Self {
        Self {
            store,
            identity,
            jobs,
            naming: Arc::new(Naming {
                authority: authority.to_string(),
            }),
            public_url,
            links_base,
        }
    }

    pub(crate) fn links_base(&self) -> &str {
        self.links_base.trim_end_matches('/')
    }

    pub(crate) fn base(&self, headers: &HeaderMap) -> String {
        aster_protocols::request_base(self.public_url.as_deref(), headers)
    }

    /// Runs store calls off the async threads.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&NodeStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Fault> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Fault::Internal(e.to_string()))?
            .map_err(Fault::from)
    }

    /// The node at `path`, if the caller may read it: 404 when there is none, 401/403 when
    /// it is not theirs to read.
    pub(crate) async fn readable(
        &self,
        path: &NodePath,
        p: Option<&Principal>,
    ) -> Result<Node, Fault> {
        let node = self
            .blocking({
                let path = path.clone();
                move |s| s.require(&path)
            })
            .await?;
        if !node.can_read(p) {
            return Err(Fault::refuse(p, format!("read {path}")));
        }
        Ok(node)
    }

    /// The signed-in caller's home exists from their first request on.
    pub(crate) async fn ensure_home(&self, p: Option<&Principal>) -> Result<(), Fault> {
        if let Some(p) = p {
            let user = p.user.to_string();
            self.blocking(move |s| s.ensure_home(&user).map(|_| ()))
                .await?;
        }
        Ok(())
    }

    /// Quota and free space, for a home container.
    pub(crate) async fn space(&self, node: &Node) -> Result<Option<Space>, Fault> {
        if node.path.segments().len() != 1 {
            return Ok(None);
        }
        let home = node.path.name().to_string();
        let quota = self.store.quota(&home);
        let used = self.blocking(move |s| s.usage(&home)).await?;
        Ok(Some(Space {
            quota,
            available: quota.saturating_sub(used),
        }))
    }

    /// The principal of a job's owner, as the identity store has them now.
    pub(crate) fn principal_of(&self, owner: Option<&str>) -> Result<Option<Principal>, String> {
        let Some(o) = owner else { return Ok(None) };
        let user = UserName::new(o).map_err(|e| e.to_string())?;
        self.identity
            .principal(&user)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// A VOSpace fault: the status, and a plain-text body that starts with the fault's name
/// (clients such as CADC's map it to an error number).
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("PermissionDenied {0}")]
    Denied(String),
    /// Anonymous callers are told to authenticate (401, with the SSO challenges).
    #[error("PermissionDenied sign in or send a bearer token to {0}")]
    Anonymous(String),
    #[error("InvalidArgument {0}")]
    Invalid(String),
    #[error("NotFound {0}")]
    NotFound(String),
    #[error("{0}")]
    Doc(#[from] crate::xml::DocError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Fault {
    /// Refusal of `what` for the caller: 401 when anonymous, 403 otherwise.
    pub(crate) fn refuse(p: Option<&Principal>, what: String) -> Fault {
        match p {
            None => Fault::Anonymous(what),
            Some(_) => Fault::Denied(what),
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Fault::Store(StoreError::NotFound(_) | StoreError::ContainerNotFound(_)) => {
                StatusCode::NOT_FOUND
            }
            Fault::Store(StoreError::Duplicate(_)) => StatusCode::CONFLICT,
            Fault::Store(StoreError::InvalidArgument(_) | StoreError::Upload(_)) => {
                StatusCode::BAD_REQUEST
            }
            Fault::Store(StoreError::Quota { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            Fault::Store(StoreError::Checksum) => StatusCode::PRECONDITION_FAILED,
            Fault::Store(_) | Fault::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Fault::Path(_) | Fault::Invalid(_) | Fault::Doc(_) => StatusCode::BAD_REQUEST,
            Fault::NotFound(_) => StatusCode::NOT_FOUND,
            Fault::Denied(_) => StatusCode::FORBIDDEN,
            Fault::Anonymous(_) => StatusCode::UNAUTHORIZED,
        }
    }
}

/// The authentication layer's refusals, in VOSpace's words: 401 for anonymous callers,
/// 403 for credentials that cannot do what was asked.
impl From<aster_protocols::auth::Denied> for Fault {
    fn from(d: aster_protocols::auth::Denied) -> Self {
        match d {
            aster_protocols::auth::Denied::Anonymous(what) => Fault::Anonymous(what.to_string()),
            aster_protocols::auth::Denied::Forbidden(why) => Fault::Denied(why),
        }
    }
}

impl IntoResponse for Fault {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "vospace");
            "InternalFault the service failed; the error is logged".to_string()
        } else {
            self.to_string()
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

/// The capabilities: every interface anonymously and with a token or session cookie, one
/// interface per security method, as SSO clients expect.
pub(crate) async fn capabilities(State(v): State<VoSpace>, headers: HeaderMap) -> Response {
    let base = v.base(&headers);
    let caps: [(&str, String, &str); 12] = [
        (
            "ivo://ivoa.net/std/VOSI#capabilities",
            format!("{base}/vospace/capabilities"),
            "full",
        ),
        (
            "ivo://ivoa.net/std/VOSI#availability",
            format!("{base}/vospace/availability"),
            "full",
        ),
        (
            "ivo://ivoa.net/std/VOSpace/v2.0#nodes",
            format!("{base}/vospace/nodes"),
            "base",
        ),
        (
            "ivo://ivoa.net/std/VOSpace/v2.0#transfers",
            format!("{base}/vospace/transfers"),
            "full",
        ),
        (
            "ivo://ivoa.net/std/VOSpace/v2.0#sync",
            format!("{base}/vospace/synctrans"),
            "full",
        ),
        (
            "ivo://ivoa.net/std/VOSpace#sync-2.1",
            format!("{base}/vospace/synctrans"),
            "full",
        ),
        (
            "ivo://ivoa.net/std/VOSpace#files-proto",
            format!("{base}/vospace/files"),
            "base",
        ),
        (
            "ivo://ivoa.net/std/VOSpace#recursive-delete-proto",
            format!("{base}/vospace/recursiveDelete"),
            "full",
        ),
        (
            "ivo://ivoa.net/std/VOSpace#recursive-nodeprops-proto",
            format!("{base}/vospace/recursiveProps"),
            "full",
        ),
        (
            "ivo://ivoa.net/std/VOSpace/v2.0#protocols",
            format!("{base}/vospace/protocols"),
            "full",
        ),
        (
            "ivo://ivoa.net/std/VOSpace/v2.0#views",
            format!("{base}/vospace/views"),
            "full",
        ),
        (
            "ivo://ivoa.net/std/VOSpace/v2.0#properties",
            format!("{base}/vospace/properties"),
            "full",
        ),
    ];
    let mut out = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0" xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
"#,
    );
    for (id, url, using) in caps {
        out.push_str(&format!("  <capability standardID=\"{id}\">\n"));
        for method in [None, Some(SECURITY_TOKEN), Some(SECURITY_COOKIE)] {
            out.push_str(&format!(
                "    <interface xsi:type=\"vs:ParamHTTP\" role=\"std\">\n      <accessURL use=\"{using}\">{url}</accessURL>\n"
            ));
            if let Some(m) = method {
                out.push_str(&format!("      <securityMethod standardID=\"{m}\"/>\n"));
            }
            out.push_str("    </interface>\n");
        }
        out.push_str("  </capability>\n");
    }
    out.push_str("</vosi:capabilities>\n");
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], out).into_response()
}

pub(crate) async fn availability(State(v): State<VoSpace>) -> Response {
    let ok = v
        .blocking(|s| s.get(&NodePath::root()).map(|_| ()))
        .await
        .is_ok();
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<vosi:availability xmlns:vosi="http://www.ivoa.net/xml/VOSIAvailability/v1.0">
  <vosi:available>{ok}</vosi:available>
  <vosi:note>{}</vosi:note>
</vosi:availability>
"#,
        if ok {
            "VOSpace is accepting requests"
        } else {
            "the node store is not answering"
        }
    );
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

/// `GET /vospace/views`: the views data nodes accept and provide (their bytes as they are).
pub(crate) async fn views() -> Response {
    let v = format!("<vos:view uri=\"{}\"/>", crate::xml::VIEW_DEFAULT);
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<vos:views xmlns:vos="{}">
  <vos:accepts>{v}</vos:accepts>
  <vos:provides>{v}</vos:provides>
</vos:views>
"#,
        crate::xml::NS
    );
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

/// `GET /vospace/properties`: the properties clients may set (accepts), those the service
/// gives nodes (provides), and those in use (contains).
pub(crate) async fn properties() -> Response {
    use crate::node::*;
    let accepts = [
        PROP_GROUPREAD,
        PROP_GROUPWRITE,
        PROP_PUBLICREAD,
        PROP_ISPUBLIC,
        PROP_TYPE,
    ];
    let list = |uris: &[&str]| -> String {
        uris.iter()
            .map(|u| format!("    <vos:property uri=\"{u}\"/>\n"))
            .collect()
    };
    let provides: Vec<&str> = READ_ONLY.iter().chain(accepts.iter()).copied().collect();
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<vos:properties xmlns:vos="{}">
  <vos:accepts>
{}  </vos:accepts>
  <vos:provides>
{}  </vos:provides>
  <vos:contains>
{}  </vos:contains>
</vos:properties>
"#,
        crate::xml::NS,
        list(&accepts),
        list(&provides),
        list(&provides)
    );
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

/// `GET /vospace/protocols`: the transfer protocols this service offers.
pub(crate) async fn protocols() -> Response {
    let list: String = crate::xml::PROTOCOLS
        .iter()
        .map(|p| format!("    <vos:protocol uri=\"{p}\"/>\n"))
        .collect();
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<vos:protocols xmlns:vos="{}">
  <vos:accepts>
{list}  </vos:accepts>
  <vos:provides>
{list}  </vos:provides>
</vos:protocols>
"#,
        crate::xml::NS
    );
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}
