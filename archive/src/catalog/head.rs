//! A schema's head: which manifest version of each of its tables readers see. A commit
//! writes its tables' new manifests first, where no reader looks, and then the next
//! numbered head naming them with a create-only write; so readers that go by the newest
//! head see a commit to several tables (a visit's DIASources, DIAObjects and forced
//! sources) whole or not at all, and of two writers that raced for one head number the
//! loser merges its tables into the winner's head and tries the next number.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// 0 for a schema written before heads existed, whose tables' newest manifests stand
    /// in for a head until its first commit writes one.
    pub version: u64,
    /// Each table's committed manifest version, by table name.
    pub tables: BTreeMap<String, u64>,
}

/// Heads kept after a commit. Readers need only the newest; the few before it serve a
/// reader that listed the heads just before a commit and reads one just after.
pub const KEPT: u64 = 16;

/// Object name of head `version` in its schema's `_aster` directory (table names start
/// with a letter, so that is no table's directory); zero-padded so names sort.
pub fn head_name(version: u64) -> String {
    format!("head.{version:010}.json")
}

pub fn parse_head_version(name: &str) -> Option<u64> {
    super::manifest::parse_numbered(name, "head.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_names_sort_and_parse() {
        assert_eq!(parse_head_version(&head_name(7)), Some(7));
        assert!(head_name(9) < head_name(10));
        assert_eq!(parse_head_version("_aster/manifest.0000000007.json"), None);
    }
}
