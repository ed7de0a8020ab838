//! A table's manifest: the list of its partitions and data files at one version. Each
//! commit writes new immutable files and then a new numbered manifest, which readers see
//! once their schema's head names it (see `head`): a table before or after a commit, never
//! half of one.
use serde::{Deserialize, Serialize};

use crate::schema::FelisTable;

/// A HEALPix cell at some order (nested scheme).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cell {
    pub order: u8,
    pub pixel: u64,
}

impl Cell {
    /// The cell's range of order-29 indices, the spatial index every row carries.
    pub fn range29(&self) -> std::ops::Range<u64> {
        let shift = 2 * (29 - u32::from(self.order));
        (self.pixel << shift)..((self.pixel + 1) << shift)
    }
    /// The `Dir` component of the HATS path: pixels grouped by ten thousands.
    pub fn dir(&self) -> u64 {
        self.pixel / 10_000 * 10_000
    }
    pub fn contains(&self, other: &Cell) -> bool {
        other.order >= self.order
            && (other.pixel >> (2 * u32::from(other.order - self.order))) == self.pixel
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataFile {
    /// Path relative to the table's directory.
    pub path: String,
    pub size: u64,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partition {
    /// None for tables without sky positions, stored unpartitioned.
    pub cell: Option<Cell>,
    pub files: Vec<DataFile>,
}

impl Partition {
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u64,
    pub schema: String,
    pub table: FelisTable,
    /// Position columns when the table is HEALPix-partitioned.
    pub position: Option<(String, String)>,
    /// Partition size target: a partition is split once it would hold more rows.
    pub max_rows: u64,
    pub partitions: Vec<Partition>,
}

impl Manifest {
    pub fn rows(&self) -> u64 {
        self.partitions.iter().map(Partition::rows).sum()
    }
}

/// Object name of manifest `version` under a table's directory; zero-padded so names sort.
pub fn manifest_name(version: u64) -> String {
    format!("_aster/manifest.{version:010}.json")
}

pub fn parse_manifest_version(name: &str) -> Option<u64> {
    parse_numbered(name, "manifest.")
}

/// The number of an object named `<prefix><number>.json` (at the end of a path), as
/// manifests and heads are.
pub(super) fn parse_numbered(name: &str, prefix: &str) -> Option<u64> {
    name.rsplit('/')
        .next()?
        .strip_prefix(prefix)?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_nest_and_name() {
        let c = Cell {
            order: 2,
            pixel: 37,
        };
        assert!(c.contains(&Cell {
            order: 4,
            pixel: 37 * 16 + 3
        }));
        assert!(!c.contains(&Cell {
            order: 4,
            pixel: 38 * 16
        }));
        assert_eq!(c.range29().end - c.range29().start, 1 << 54);
        assert_eq!(parse_manifest_version(&manifest_name(42)), Some(42));
        assert_eq!(
            Cell {
                order: 8,
                pixel: 123_456
            }
            .dir(),
            120_000
        );
    }
}
