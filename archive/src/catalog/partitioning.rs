//! Adaptive HEALPix partitioning (the HATS scheme): cells are split until each holds at most
//! a target number of rows, so dense sky gets small partitions and sparse sky large ones.
use super::manifest::Cell;

/// The deepest order partitions are split to.
pub const MAX_ORDER: u8 = 13;

/// Assigns rows, given by their sorted order-29 indices, to partition cells. Existing
/// partitions keep their cells: rows inside one go to it, and new cells never overlap one.
/// Returns (cell, start..end) slices into `sorted29`.
pub fn plan(
    sorted29: &[u64],
    existing: &[Cell],
    max_rows: u64,
) -> Vec<(Cell, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    for pixel in 0..12 {
        split(
            Cell { order: 0, pixel },
            sorted29,
            existing,
            max_rows,
            &mut out,
        );
    }
    out
}

fn split(
    cell: Cell,
    sorted29: &[u64],
    existing: &[Cell],
    max_rows: u64,
    out: &mut Vec<(Cell, std::ops::Range<usize>)>,
) {
    let range = cell.range29();
    let start = sorted29.partition_point(|&h| h < range.start);
    let end = sorted29.partition_point(|&h| h < range.end);
    if start == end {
        return;
    }
    // Inside an existing partition: the rows join it.
    if existing.iter().any(|e| e.contains(&cell)) {
        out.push((cell, start..end));
        return;
    }
    let has_existing_inside = existing.iter().any(|e| cell.contains(e));
    let small_enough = (end - start) as u64 <= max_rows;
    if (!has_existing_inside && small_enough) || cell.order >= MAX_ORDER {
        if let Some(owner) = existing
            .iter()
            .find(|e| e.contains(&cell) || cell.contains(e))
        {
            // At the deepest order, an overlapping existing cell still owns the rows.
            out.push((*owner, start..end));
        } else {
            out.push((cell, start..end));
        }
        return;
    }
    for child in 0..4 {
        split(
            Cell {
                order: cell.order + 1,
                pixel: cell.pixel * 4 + child,
            },
            sorted29,
            existing,
            max_rows,
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_cells_split_and_every_row_is_placed_once() {
        let dense = Cell { order: 0, pixel: 4 }.range29().start;
        let mut rows: Vec<u64> = (0..1000).map(|i| dense + i * (1 << 40)).collect();
        rows.push(Cell { order: 0, pixel: 7 }.range29().start + 5);
        let plan = plan(&rows, &[], 100);
        let placed: usize = plan.iter().map(|(_, r)| r.len()).sum();
        assert_eq!(placed, rows.len());
        assert!(plan.iter().all(|(_, r)| r.len() <= 100));
        assert!(plan.iter().any(|(c, _)| c.order == 0 && c.pixel == 7));
    }

    #[test]
    fn appends_respect_existing_partitions() {
        let existing = [Cell {
            order: 1,
            pixel: 17,
        }];
        let inside = Cell {
            order: 3,
            pixel: 17 * 16,
        }
        .range29()
        .start;
        let outside = Cell {
            order: 1,
            pixel: 18,
        }
        .range29()
        .start;
        let rows = vec![inside, inside + 1, outside];
        let plan = plan(&rows, &existing, 10);
        assert!(plan.contains(&(existing[0], 0..2)));
        let other = plan.iter().find(|(c, _)| *c != existing[0]).unwrap();
        assert!(!other.0.contains(&existing[0]) && !existing[0].contains(&other.0));
    }
}
