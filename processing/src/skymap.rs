//! The sky map coadds are built on: the sky cut into patches, each one HEALPix cell of
//! order [`PATCH_ORDER`] (nested), with its own pixel grid, a gnomonic projection about the
//! cell's centre, north up and east left. Every sky position belongs to exactly one patch
//! (the cell that holds it), so products made per patch meet without seams or overlaps;
//! each grid reaches a margin beyond its cell so that resampling near the edge has pixels.
use crate::wcs::{PixelPosition, SkyCoord, TanSipWcs};

/// Patches are HEALPix cells of this order: diamonds about 3.4 arcmin on a side, held in
/// square grids of about 1700 pixels at 0.2 arcsec.
pub const PATCH_ORDER: u8 = 10;

/// One cell of the sky map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Patch(u64);

/// A pixel grid on the sky: the WCS of its pixels and its size.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelGrid {
    wcs: TanSipWcs,
    width: usize,
    height: usize,
}

impl PixelGrid {
    pub fn new(wcs: TanSipWcs, width: usize, height: usize) -> Self {
        Self { wcs, width, height }
    }
    pub fn wcs(&self) -> &TanSipWcs {
        &self.wcs
    }
    pub fn width(&self) -> usize {
        self.width
    }
    pub fn height(&self) -> usize {
        self.height
    }
}

impl Patch {
    /// The patch of that nested index, if there is one.
    pub fn new(index: u64) -> Option<Self> {
        (index < cdshealpix::n_hash(PATCH_ORDER)).then_some(Self(index))
    }

    /// The patch that holds a position.
    pub fn containing(p: SkyCoord) -> Self {
        Self(cdshealpix::nested::hash(
            PATCH_ORDER,
            p.ra().to_radians(),
            p.dec().to_radians(),
        ))
    }

    pub fn index(self) -> u64 {
        self.0
    }

    /// The centre of the patch's cell.
    pub fn centre(self) -> SkyCoord {
        let (lon, lat) = cdshealpix::nested::center(PATCH_ORDER, self.0);
        sky(lon, lat)
    }

    /// The four corners of the patch's cell (south, east, north, west).
    pub fn corners(self) -> [SkyCoord; 4] {
        cdshealpix::nested::vertices(PATCH_ORDER, self.0).map(|(lon, lat)| sky(lon, lat))
    }

    /// The patch's pixel grid at `pixel_scale` arcsec, reaching `margin` pixels beyond the
    /// cell on every side.
    pub fn grid(self, pixel_scale: f64, margin: usize) -> PixelGrid {
        let centre = self.centre();
        let scale = pixel_scale / 3600.0;
        // The cell's extent on the tangent plane, from its corners and edge midpoints.
        let mut half = 0f64;
        let corners = self.corners();
        for (i, c) in corners.iter().enumerate() {
            let next = corners[(i + 1) % 4];
            let mid = midpoint(*c, next);
            for p in [*c, mid] {
                let (xi, eta) = tangent_plane(centre, p);
                half = half.max(xi.abs()).max(eta.abs());
            }
        }
        let half_pixels = (half / scale).ceil() as usize + margin;
        let size = 2 * half_pixels + 1;
        let wcs = TanSipWcs::new(
            PixelPosition {
                x: half_pixels as f64,
                y: half_pixels as f64,
            },
            centre,
            [[-scale, 0.0], [0.0, scale]],
            None,
        )
        .expect("a non-singular grid");
        PixelGrid::new(wcs, size, size)
    }

    /// Whether a position lies in this patch's cell.
    pub fn contains(self, p: SkyCoord) -> bool {
        Self::containing(p) == self
    }
}

/// The patches a spherical polygon (corners in order) may touch: a superset, from the
/// HEALPix coverage of the polygon at the patch order.
pub fn patches_overlapping(corners: &[SkyCoord]) -> Vec<Patch> {
    if corners.len() < 3 {
        return Vec::new();
    }
    let vertices: Vec<(f64, f64)> = corners
        .iter()
        .map(|c| (c.ra().to_radians(), c.dec().to_radians()))
        .collect();
    let moc = cdshealpix::nested::polygon_coverage(PATCH_ORDER, &vertices, false);
    let mut patches: Vec<Patch> = moc.flat_iter().map(Patch).collect();
    // A polygon smaller than a cell may be reported by the cell only through a vertex.
    patches.extend(corners.iter().map(|c| Patch::containing(*c)));
    patches.sort_unstable();
    patches.dedup();
    patches
}

fn sky(lon: f64, lat: f64) -> SkyCoord {
    SkyCoord::new(lon.to_degrees(), lat.to_degrees().clamp(-90.0, 90.0)).expect("a finite cell")
}

fn unit(p: SkyCoord) -> [f64; 3] {
    let (sa, ca) = p.ra().to_radians().sin_cos();
    let (sd, cd) = p.dec().to_radians().sin_cos();
    [cd * ca, cd * sa, sd]
}

fn midpoint(a: SkyCoord, b: SkyCoord) -> SkyCoord {
    let (u, v) = (unit(a), unit(b));
    let m = [u[0] + v[0], u[1] + v[1], u[2] + v[2]];
    let n = (m[0] * m[0] + m[1] * m[1] + m[2] * m[2]).sqrt();
    let dec = (m[2] / n).clamp(-1.0, 1.0).asin().to_degrees();
    let ra = m[1].atan2(m[0]).to_degrees();
    SkyCoord::new(ra, dec).unwrap_or(a)
}

/// Gnomonic standard coordinates (degrees) of `p` about `centre`.
fn tangent_plane(centre: SkyCoord, p: SkyCoord) -> (f64, f64) {
    let (a0, d0) = (centre.ra().to_radians(), centre.dec().to_radians());
    let (a, d) = (p.ra().to_radians(), p.dec().to_radians());
    let cos_c = d0.sin() * d.sin() + d0.cos() * d.cos() * (a - a0).cos();
    let xi = d.cos() * (a - a0).sin() / cos_c;
    let eta = (d0.cos() * d.sin() - d0.sin() * d.cos() * (a - a0).cos()) / cos_c;
    (xi.to_degrees(), eta.to_degrees())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_grid_holds_its_whole_cell_with_the_margin() {
        let p = Patch::containing(SkyCoord::new(62.0, -37.0).unwrap());
        let grid = p.grid(0.2, 50);
        assert_eq!(grid.width(), grid.height());
        // The diamond of a 3.4 arcmin cell at 0.2 arcsec a pixel, plus the margins.
        assert!((1500..2000).contains(&grid.width()), "{}", grid.width());
        for c in p.corners() {
            let px = grid.wcs().sky_to_pixel(c).unwrap();
            for v in [px.x, px.y] {
                assert!(v >= 49.0 && v <= (grid.width() - 50) as f64, "{px:?}");
            }
        }
        assert!(p.contains(p.centre()));
        assert_eq!(Patch::new(p.index()), Some(p));
        assert_eq!(Patch::new(cdshealpix::n_hash(PATCH_ORDER)), None);
    }

    #[test]
    fn overlapping_patches_cover_a_small_polygon() {
        let corners: Vec<SkyCoord> = [
            (61.99, -37.01),
            (62.01, -37.01),
            (62.01, -36.99),
            (61.99, -36.99),
        ]
        .iter()
        .map(|&(a, d)| SkyCoord::new(a, d).unwrap())
        .collect();
        let patches = patches_overlapping(&corners);
        assert!(!patches.is_empty());
        for c in &corners {
            assert!(patches.contains(&Patch::containing(*c)));
        }
        // Every position inside lies in one of them.
        let inside = SkyCoord::new(62.0, -37.0).unwrap();
        assert!(patches.contains(&Patch::containing(inside)));
    }
}
