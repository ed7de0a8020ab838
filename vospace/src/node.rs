//! The node model: containers, data nodes and links, their access settings and their
//! properties (the standard ones computed from the record, the rest kept as given).
use std::collections::BTreeMap;

use aster_archive::identity::{GroupName, Principal};

use crate::path::NodePath;

pub const PROP_DATE: &str = "ivo://ivoa.net/vospace/core#date";
pub const PROP_CTIME: &str = "ivo://ivoa.net/vospace/core#ctime";
pub const PROP_LENGTH: &str = "ivo://ivoa.net/vospace/core#length";
pub const PROP_CREATOR: &str = "ivo://ivoa.net/vospace/core#creator";
pub const PROP_MD5: &str = "ivo://ivoa.net/vospace/core#MD5";
pub const PROP_TYPE: &str = "ivo://ivoa.net/vospace/core#type";
pub const PROP_GROUPREAD: &str = "ivo://ivoa.net/vospace/core#groupread";
pub const PROP_GROUPWRITE: &str = "ivo://ivoa.net/vospace/core#groupwrite";
/// The standard's name for public read access, and CADC's (which its client sends).
pub const PROP_PUBLICREAD: &str = "ivo://ivoa.net/vospace/core#publicread";
pub const PROP_ISPUBLIC: &str = "ivo://ivoa.net/vospace/core#ispublic";
pub const PROP_QUOTA: &str = "ivo://ivoa.net/vospace/core#quota";
pub const PROP_AVAILABLE: &str = "ivo://ivoa.net/vospace/core#availableSpace";
/// How CADC's client names a group in `groupread`/`groupwrite`: `ivo://cadc.nrc.ca/gms?name`.
pub const GROUP_URI_PREFIXES: [&str; 2] = ["ivo://cadc.nrc.ca/gms?", "ivo://aster/gms?"];

/// Properties computed from the record: a client may send them back (the CADC client does)
/// but cannot set them.
pub const READ_ONLY: [&str; 7] = [
    PROP_DATE,
    PROP_CTIME,
    PROP_LENGTH,
    PROP_CREATOR,
    PROP_MD5,
    PROP_QUOTA,
    PROP_AVAILABLE,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Container,
    Data,
    Link { target: String },
}

impl Kind {
    pub fn xsi_type(&self) -> &'static str {
        match self {
            Kind::Container => "vos:ContainerNode",
            Kind::Data => "vos:DataNode",
            Kind::Link { .. } => "vos:LinkNode",
        }
    }

    pub(crate) fn code(&self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Data => "data",
            Kind::Link { .. } => "link",
        }
    }
}

/// Who may do what with a node (DMS-REQ-0340): its owner and administrators always; groups
/// to read or write; everyone to read when public. The owner of a home container also has
/// every right over what others put in it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Access {
    pub public: bool,
    pub group_read: Vec<GroupName>,
    pub group_write: Vec<GroupName>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub path: NodePath,
    pub kind: Kind,
    /// None for the root.
    pub owner: Option<String>,
    pub created: String,
    pub modified: String,
    /// Bytes of a data node; of everything below a container.
    pub length: u64,
    pub md5: Option<String>,
    pub content_type: Option<String>,
    pub access: Access,
    /// Other properties, as clients set them.
    pub props: BTreeMap<String, String>,
    /// Where a data node's bytes are in the object store.
    pub(crate) object: Option<String>,
}

impl Node {
    fn owns_tree(&self, p: &Principal) -> bool {
        p.admin
            || self.owner.as_deref() == Some(p.user.as_str())
            || self.path.home() == Some(p.user.as_str())
    }

    pub fn can_read(&self, p: Option<&Principal>) -> bool {
        if self.access.public {
            return true;
        }
        let Some(p) = p else { return false };
        self.owns_tree(p)
            || self
                .access
                .group_read
                .iter()
                .any(|g| p.in_group(g.as_str()))
    }

    /// Writing needs a credential with the write scope.
    pub fn can_write(&self, p: Option<&Principal>) -> bool {
        let Some(p) = p.filter(|p| p.scopes.write) else {
            return false;
        };
        self.owns_tree(p)
            || self
                .access
                .group_write
                .iter()
                .any(|g| p.in_group(g.as_str()))
    }

    /// Changing who may access a node is for its owner (and the home's owner, and
    /// administrators) only.
    pub fn can_share(&self, p: Option<&Principal>) -> bool {
        p.is_some_and(|p| p.scopes.write && self.owns_tree(p))
    }
}

/// A group named in a `groupread`/`groupwrite` value, in any of the forms clients send:
/// CADC's `ivo://cadc.nrc.ca/gms?g`, an `ivo://...?g` of another GMS, or a bare name.
pub fn parse_group(token: &str) -> Option<GroupName> {
    let name = match token.rsplit_once('?') {
        Some((uri, name)) if uri.starts_with("ivo://") => name,
        _ => token,
    };
    GroupName::new(name).ok()
}

/// A `groupread`/`groupwrite` value: group URIs separated by spaces (CADC) or commas (the
/// standard).
pub fn parse_groups(value: &str) -> Result<Vec<GroupName>, String> {
    value
        .split([' ', ','])
        .filter(|t| !t.is_empty())
        .map(|t| parse_group(t).ok_or_else(|| format!("'{t}' is not a group")))
        .collect()
}

/// Groups as the CADC client shows them.
pub fn format_groups(groups: &[GroupName]) -> String {
    groups
        .iter()
        .map(|g| format!("{}{g}", GROUP_URI_PREFIXES[0]))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aster_archive::identity::{Scopes, UserName};

    fn principal(user: &str, groups: &[&str], write: bool) -> Principal {
        Principal {
            user: UserName::new(user).unwrap(),
            groups: groups.iter().map(|g| GroupName::new(g).unwrap()).collect(),
            admin: false,
            scopes: Scopes { read: true, write },
        }
    }

    fn node(path: &str, owner: &str, access: Access) -> Node {
        Node {
            path: NodePath::from_raw(path).unwrap(),
            kind: Kind::Data,
            owner: Some(owner.into()),
            created: String::new(),
            modified: String::new(),
            length: 0,
            md5: None,
            content_type: None,
            access,
            props: BTreeMap::new(),
            object: None,
        }
    }

    #[test]
    fn access_rules() {
        let g = GroupName::new("wg").unwrap();
        let private = node("alice/x", "alice", Access::default());
        let shared = node(
            "alice/y",
            "alice",
            Access {
                public: false,
                group_read: vec![g.clone()],
                group_write: vec![],
            },
        );
        let alice = principal("alice", &[], true);
        let bob = principal("bob", &["wg"], true);
        let carol = principal("carol", &[], true);
        assert!(private.can_read(Some(&alice)) && private.can_write(Some(&alice)));
        assert!(!private.can_read(Some(&bob)) && !private.can_read(None));
        assert!(shared.can_read(Some(&bob)) && !shared.can_write(Some(&bob)));
        assert!(!shared.can_read(Some(&carol)));
        assert!(!shared.can_share(Some(&bob)));
        // A read-only token cannot write even its own nodes.
        assert!(!private.can_write(Some(&principal("alice", &[], false))));
        // What bob puts in alice's home is alice's to manage too.
        let bobs = node("alice/z", "bob", Access::default());
        assert!(bobs.can_read(Some(&alice)) && bobs.can_share(Some(&alice)));
    }

    #[test]
    fn group_values() {
        assert_eq!(
            parse_groups("ivo://cadc.nrc.ca/gms?g1 ivo://x.org/gms?g2,g3").unwrap(),
            ["g1", "g2", "g3"].map(|g| GroupName::new(g).unwrap())
        );
        assert!(parse_groups("ivo://cadc.nrc.ca/gms?bad/name").is_err());
        assert_eq!(
            format_groups(&[GroupName::new("g1").unwrap()]),
            "ivo://cadc.nrc.ca/gms?g1"
        );
    }
}
