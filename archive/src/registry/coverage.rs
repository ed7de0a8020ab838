//! Sky coverage of datasets as HEALPix cells (DMS-REQ-0326): the index cells the registry
//! keeps per image so spatial searches touch only the images near a region, and MOCs
//! (IVOA MOC 2.0) of datasets and collections, written as FITS (NUNIQ) and JSON.
use std::collections::BTreeMap;

use aster_adql::geometry::{Polygon, SkyPosition, SkyRegion};
use cdshealpix::nested::bmoc::BMOC;

/// Depth of the registry's spatial index: cells of 3.4 arcmin, a few dozen per CCD.
pub const INDEX_DEPTH: u8 = 10;
/// Depth of served MOCs: cells of 13 arcsec.
pub const MOC_DEPTH: u8 = 14;

/// The cells at `depth` that a footprint (a polygon's corners) overlaps; None when the
/// corners do not make a polygon.
pub fn footprint_moc(footprint: &[SkyPosition], depth: u8) -> Option<BMOC> {
    let polygon = Polygon::new(footprint.to_vec())?;
    Some(region_moc(&SkyRegion::Polygon(polygon), depth))
}

/// The cells at `depth` a region overlaps (a superset: cdshealpix's approximate cone).
/// Shapes the coverage code cannot take (hemispheres, degenerate polygons) cover the
/// whole sky, which is always safe for a filter.
pub fn region_moc(region: &SkyRegion, depth: u8) -> BMOC {
    match region {
        SkyRegion::Circle(c) if c.radius >= 90.0 => BMOC::new_allsky(depth),
        SkyRegion::Circle(c) => cdshealpix::nested::cone_coverage_approx(
            depth,
            c.center.ra_rad(),
            c.center.dec_rad(),
            c.radius.max(1e-9).to_radians(),
        ),
        SkyRegion::Polygon(p) => {
            let v: Vec<(f64, f64)> = p
                .vertices()
                .iter()
                .map(|v| (v.ra_rad(), v.dec_rad()))
                .collect();
            // cdshealpix asserts on some degenerate polygons (repeated or collinear vertices).
            std::panic::catch_unwind(|| cdshealpix::nested::polygon_coverage(depth, &v, true))
                .unwrap_or_else(|_| BMOC::new_allsky(depth))
        }
    }
}

/// Every cell of `moc` at its deepest depth.
pub fn flat_cells(moc: &BMOC) -> Vec<u64> {
    moc.flat_iter().collect()
}

/// A MOC as (depth, cell) pairs, the form MOC files hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Moc {
    pub depth: u8,
    pub cells: Vec<(u8, u64)>,
}

impl Moc {
    pub fn from_bmoc(b: &BMOC) -> Self {
        let mut cells: Vec<(u8, u64)> = b
            .iter()
            .map(|&raw| {
                let c = b.from_raw_value(raw);
                (c.depth, c.hash)
            })
            .collect();
        cells.sort_by_key(|&(d, h)| uniq(d, h));
        Self {
            depth: b.get_depth_max(),
            cells,
        }
    }

    /// The union of several coverages.
    pub fn union<'a>(depth: u8, mocs: impl IntoIterator<Item = &'a BMOC>) -> Self {
        let union = mocs
            .into_iter()
            .fold(BMOC::new_empty(depth), |acc, m| acc.or(m));
        Self::from_bmoc(&union)
    }

    /// The MOC of sorted cells all at `depth`, siblings merged into their parents.
    pub fn from_cells(depth: u8, cells: &[u64]) -> Self {
        let mut b = cdshealpix::nested::bmoc::BMOCBuilderFixedDepth::new(depth, true);
        for &c in cells {
            b.push(c);
        }
        b.to_bmoc().map_or(
            Self {
                depth,
                cells: Vec::new(),
            },
            |m| Self::from_bmoc(&m),
        )
    }

    /// Sky fraction covered.
    pub fn sky_fraction(&self) -> f64 {
        self.cells
            .iter()
            .map(|&(d, _)| 1.0 / (12.0 * 4f64.powi(i32::from(d))))
            .sum()
    }

    /// MOC JSON (MOC 2.0 section 4.3.2): `{"depth": [cells...], ...}`, the deepest depth
    /// always present so readers learn the MOC's order.
    pub fn to_json(&self) -> serde_json::Value {
        let mut by_depth: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
        by_depth.entry(self.depth).or_default();
        for &(d, h) in &self.cells {
            by_depth.entry(d).or_default().push(h);
        }
        serde_json::Value::Object(
            by_depth
                .into_iter()
                .map(|(d, cells)| (d.to_string(), serde_json::json!(cells)))
                .collect(),
        )
    }

    /// A MOC FITS file (MOC 2.0, NUNIQ): one binary-table column of 64-bit UNIQ values.
    pub fn to_fits(&self) -> Vec<u8> {
        let mut cards: Vec<String> = Vec::new();
        let mut card = |k: &str, v: String, c: &str| {
            // Fixed format: strings start in column 11, other values end in column 30.
            let mut s = if v.starts_with('\'') {
                format!("{k:<8}= {v:<20}")
            } else {
                format!("{k:<8}= {v:>20}")
            };
            if !c.is_empty() {
                s.push_str(" / ");
                s.push_str(c);
            }
            cards.push(s);
        };
        let q = |t: &str| format!("'{t:<8}'");
        let n = self.cells.len();
        let mut out = Vec::new();
        // Primary HDU: no data.
        let mut primary = vec![
            format!("{:<8}= {:>20}", "SIMPLE", "T"),
            format!("{:<8}= {:>20}", "BITPIX", "8"),
            format!("{:<8}= {:>20}", "NAXIS", "0"),
            format!("{:<8}= {:>20}", "EXTEND", "T"),
        ];
        primary.push("END".into());
        push_header(&mut out, &primary);
        card("XTENSION", q("BINTABLE"), "binary table extension");
        card("BITPIX", "8".into(), "");
        card("NAXIS", "2".into(), "");
        card("NAXIS1", "8".into(), "bytes per row");
        card("NAXIS2", n.to_string(), "cells");
        card("PCOUNT", "0".into(), "");
        card("GCOUNT", "1".into(), "");
        card("TFIELDS", "1".into(), "");
        card("TTYPE1", q("UNIQ"), "4 * 4^depth + cell index");
        card("TFORM1", q("1K"), "");
        card("MOCVERS", q("2.0"), "MOC version");
        card("MOCDIM", q("SPACE"), "spatial MOC");
        card("ORDERING", q("NUNIQ"), "");
        card("COORDSYS", q("C"), "ICRS");
        card("MOCORD_S", self.depth.to_string(), "deepest HEALPix order");
        card(
            "MOCORDER",
            self.depth.to_string(),
            "deepest order (MOC 1.x)",
        );
        card("PIXTYPE", q("HEALPIX"), "");
        card("MOCTOOL", q("aster"), "");
        cards.push("END".into());
        push_header(&mut out, &cards);
        let start = out.len();
        for &(d, h) in &self.cells {
            out.extend_from_slice(&(uniq(d, h) as i64).to_be_bytes());
        }
        let data = out.len() - start;
        out.resize(out.len() + (2880 - data % 2880) % 2880, 0);
        out
    }
}

fn uniq(depth: u8, hash: u64) -> u64 {
    4 * (1u64 << (2 * u32::from(depth))) + hash
}

/// Header cards padded to 80 characters, the block padded to 2880 bytes with spaces.
fn push_header(out: &mut Vec<u8>, cards: &[String]) {
    let start = out.len();
    for c in cards {
        out.extend_from_slice(format!("{c:<80}").as_bytes());
    }
    let len = out.len() - start;
    out.resize(out.len() + (2880 - len % 2880) % 2880, b' ');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ra: f64, dec: f64) -> SkyPosition {
        SkyPosition::new(ra, dec).unwrap()
    }

    #[test]
    fn a_footprint_covers_its_inside_and_the_fits_file_is_well_formed() {
        let square = [p(10.0, 10.0), p(10.2, 10.0), p(10.2, 10.2), p(10.0, 10.2)];
        let b = footprint_moc(&square, 12).unwrap();
        let inside = cdshealpix::nested::hash(12, 10.1f64.to_radians(), 10.1f64.to_radians());
        let outside = cdshealpix::nested::hash(12, 11.0f64.to_radians(), 10.1f64.to_radians());
        let cells = flat_cells(&b);
        assert!(cells.contains(&inside) && !cells.contains(&outside));
        let moc = Moc::from_bmoc(&b);
        // 0.04 square degrees of a 41253-square-degree sky, a little more at the edges.
        let area = moc.sky_fraction() * 41_252.96;
        assert!((0.04..0.06).contains(&area), "{area}");
        let fits = moc.to_fits();
        assert_eq!(fits.len() % 2880, 0);
        assert!(fits[2880..].starts_with(b"XTENSION= 'BINTABLE'"));
        let json = moc.to_json();
        let total: usize = json
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_array().unwrap().len())
            .sum();
        assert_eq!(total, moc.cells.len());
    }

    #[test]
    fn unions_merge_coverages() {
        let a = footprint_moc(&[p(0.0, 0.0), p(1.0, 0.0), p(1.0, 1.0), p(0.0, 1.0)], 10).unwrap();
        let b = footprint_moc(&[p(0.5, 0.0), p(1.5, 0.0), p(1.5, 1.0), p(0.5, 1.0)], 10).unwrap();
        let u = Moc::union(10, [&a, &b]);
        let fa = Moc::from_bmoc(&a).sky_fraction();
        let fb = Moc::from_bmoc(&b).sky_fraction();
        assert!(u.sky_fraction() > fa.max(fb) && u.sky_fraction() < fa + fb);
    }
}
