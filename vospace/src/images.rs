//! Users' own images for SODA (DMS-REQ-0340): a `vos://` ID names an exposure file in
//! VOSpace, which SODA cuts like an archive image when the caller may read the node.
use aster_protocols::images::{PrivateFile, PrivateImages};
use axum::http::StatusCode;

use crate::node::Kind;
use crate::path::NodePath;
use crate::service::VoSpace;

pub struct VoSpaceImages {
    v: VoSpace,
}

impl VoSpaceImages {
    pub fn new(v: VoSpace) -> Self {
        Self { v }
    }
}

#[async_trait::async_trait]
impl PrivateImages for VoSpaceImages {
    async fn local_file(
        &self,
        id: &str,
        user: Option<&str>,
    ) -> Result<PrivateFile, (StatusCode, String)> {
        let path = NodePath::from_uri(id).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        let v = self.v.clone();
        let owner = user.map(String::from);
        let (principal, node) = tokio::task::spawn_blocking(move || {
            let p = v.principal_of(owner.as_deref())?;
            let n = v.store.get(&path).map_err(|e| e.to_string())?;
            Ok::<_, String>((p, n))
        })
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))?;
        let Some(node) = node else {
            return Err((StatusCode::NOT_FOUND, format!("NodeNotFound {id}")));
        };
        if !node.can_read(principal.as_ref()) {
            return Err(match principal {
                None => (
                    StatusCode::UNAUTHORIZED,
                    format!("PermissionDenied sign in to read {id}"),
                ),
                Some(_) => (StatusCode::FORBIDDEN, format!("PermissionDenied read {id}")),
            });
        }
        if node.kind != Kind::Data {
            return Err((StatusCode::BAD_REQUEST, format!("{id} is not a file")));
        }
        let (path, temporary) = self
            .v
            .store
            .local_file(&node)
            .await
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        Ok(PrivateFile { path, temporary })
    }
}
