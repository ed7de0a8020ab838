//! Scratch directories for the crate's unit tests.
use std::path::{Path, PathBuf};

/// A fresh directory, removed with everything in it when dropped.
pub(crate) struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A new directory under the system's temporary directory, its name starting with `prefix`.
pub(crate) fn tempdir(prefix: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("aster-{prefix}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}
