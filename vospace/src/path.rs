//! Node paths: the only way a name from a request reaches the store. A path is a list of
//! validated segments, so `..`, `.`, empty segments, encoded slashes, NUL and other control
//! characters, and overlong names can never name anything outside the tree.
use std::fmt;

use percent_encoding::percent_decode_str;

/// The longest segment, and the deepest and longest path.
pub const MAX_SEGMENT: usize = 255;
pub const MAX_DEPTH: usize = 64;
pub const MAX_PATH: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("InvalidURI {0}")]
pub struct PathError(pub String);

/// A node's path below the root: `[]` is the root, `["alice", "x.fits"]` is `/alice/x.fits`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodePath(Vec<String>);

fn valid_segment(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty path segment".into());
    }
    if s == "." || s == ".." {
        return Err(format!("'{s}' is not a node name"));
    }
    if s.len() > MAX_SEGMENT {
        return Err(format!("a node name is at most {MAX_SEGMENT} bytes"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_control() || *c == '/' || *c == '\\')
    {
        return Err(format!("a node name may not contain {c:?}"));
    }
    Ok(())
}

impl NodePath {
    pub fn root() -> Self {
        NodePath(Vec::new())
    }

    /// From the raw (still percent-encoded) path of a request below an endpoint, e.g.
    /// `alice/my%20file.txt`. Each segment is decoded on its own, so `%2F` cannot make a
    /// separator and `%2E%2E` is refused like `..`.
    pub fn from_raw(raw: &str) -> Result<Self, PathError> {
        let bad = |m: String| PathError(format!("{raw}: {m}"));
        let trimmed = raw.trim_matches('/');
        if raw.len() > MAX_PATH * 3 {
            return Err(bad("the path is too long".into()));
        }
        if trimmed.is_empty() {
            return Ok(Self::root());
        }
        let mut segs = Vec::new();
        for seg in trimmed.split('/') {
            let decoded = percent_decode_str(seg)
                .decode_utf8()
                .map_err(|_| bad("not UTF-8".into()))?;
            valid_segment(&decoded).map_err(bad)?;
            segs.push(decoded.into_owned());
        }
        Self::checked(segs).map_err(bad)
    }

    /// From a `vos://authority/path` URI (any authority: the CADC client names this service
    /// `host!vospace`, `host~vospace` or `cadc.nrc.ca!vault`); the path part is still
    /// percent-encoded.
    pub fn from_uri(uri: &str) -> Result<Self, PathError> {
        let rest = uri
            .strip_prefix("vos://")
            .ok_or_else(|| PathError(format!("{uri}: not a vos:// URI")))?;
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        let path = path.split(['?', '#']).next().unwrap_or("");
        Self::from_raw(path)
    }

    fn checked(segs: Vec<String>) -> Result<Self, String> {
        if segs.len() > MAX_DEPTH {
            return Err(format!("paths are at most {MAX_DEPTH} levels deep"));
        }
        if segs.iter().map(|s| s.len() + 1).sum::<usize>() > MAX_PATH {
            return Err(format!("paths are at most {MAX_PATH} bytes"));
        }
        Ok(NodePath(segs))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// The first segment: the home container the node lies in.
    pub fn home(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }

    pub fn name(&self) -> &str {
        self.0.last().map_or("", String::as_str)
    }

    pub fn parent(&self) -> Option<NodePath> {
        if self.0.is_empty() {
            None
        } else {
            Some(NodePath(self.0[..self.0.len() - 1].to_vec()))
        }
    }

    pub fn child(&self, name: &str) -> Result<NodePath, PathError> {
        valid_segment(name).map_err(PathError)?;
        let mut segs = self.0.clone();
        segs.push(name.to_string());
        Self::checked(segs).map_err(PathError)
    }

    /// Whether `self` is `other` or lies below it.
    pub fn within(&self, other: &NodePath) -> bool {
        self.0.starts_with(&other.0)
    }

    /// The path as stored: `/a/b`, `/` for the root.
    pub fn key(&self) -> String {
        if self.0.is_empty() {
            "/".into()
        } else {
            self.0.iter().map(|s| format!("/{s}")).collect()
        }
    }

    /// From a stored key (written by [`NodePath::key`]).
    pub(crate) fn from_key(key: &str) -> NodePath {
        NodePath(
            key.split('/')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        )
    }

    /// The path percent-encoded for URLs, without a leading slash.
    pub fn encoded(&self) -> String {
        const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'_')
            .remove(b'.')
            .remove(b'~')
            .remove(b'!')
            .remove(b'=')
            .remove(b'+')
            .remove(b',')
            .remove(b';')
            .remove(b':')
            .remove(b'@')
            .remove(b'$');
        self.0
            .iter()
            .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
            .collect::<Vec<_>>()
            .join("/")
    }
}

impl fmt::Display for NodePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_odd_names_are_refused() {
        for bad in [
            "a/../b",
            "..",
            "a/./b",
            "a/%2e%2E/b",
            "a%2Fb",
            "a%5Cb",
            "a/b%00",
            "a\u{0}b",
            "a//b",
            "%ff",
        ] {
            assert!(NodePath::from_raw(bad).is_err(), "{bad}");
        }
        let long = "x".repeat(MAX_SEGMENT + 1);
        assert!(NodePath::from_raw(&long).is_err());
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        assert!(NodePath::from_raw(&deep).is_err());
    }

    #[test]
    fn paths_round_trip() {
        let p = NodePath::from_raw("/alice/my%20file.txt").unwrap();
        assert_eq!(p.segments(), ["alice", "my file.txt"]);
        assert_eq!(p.key(), "/alice/my file.txt");
        assert_eq!(p.encoded(), "alice/my%20file.txt");
        assert_eq!(NodePath::from_key(&p.key()), p);
        assert_eq!(p.home(), Some("alice"));
        assert_eq!(p.parent().unwrap().key(), "/alice");
        assert!(NodePath::from_raw("").unwrap().is_root());
        assert!(p.within(&NodePath::from_raw("alice").unwrap()));
        assert!(
            !NodePath::from_raw("alicex")
                .unwrap()
                .within(&p.parent().unwrap())
        );
    }

    #[test]
    fn uris_of_any_authority() {
        for u in [
            "vos://aster.example!vospace/alice/a",
            "vos://aster.example~vospace/alice/a",
            "vos://cadc.nrc.ca!vault/alice/a",
        ] {
            assert_eq!(NodePath::from_uri(u).unwrap().key(), "/alice/a");
        }
        assert!(
            NodePath::from_uri("vos://aster.example!vospace")
                .unwrap()
                .is_root()
        );
        assert!(NodePath::from_uri("http://x/alice").is_err());
        assert!(NodePath::from_uri("vos://a!b/alice/../../etc").is_err());
    }
}
