//! HiPS tiles (IVOA HiPS 1.0): the geometry of a tile's pixels on the sky, sampling an
//! image into the deepest tiles, averaging four tiles into their parent, and packing the
//! tiles of a low order into one Allsky mosaic. Tiles are square, `2^w` pixels a side;
//! pixel (x, y), with y counted from the top of the picture as displayed, is the HEALPix
//! cell of order `k + w` whose nested index is the tile's index followed by the bits of y
//! (even) and x (odd) interleaved: the top-left corner of a tile is its southern corner,
//! top-right west, bottom-left east and bottom-right north. Values here are in display
//! order (top row first); FITS writers flip the rows, as FITS rows run bottom up.
use crate::wcs::SkyCoord;

/// The deepest HiPS order there is room for in a 64-bit nested index at tile width 512.
pub const MAX_ORDER: u8 = 20;

/// A tile: its order and nested index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    pub order: u8,
    pub npix: u64,
}

impl Tile {
    /// None unless the order is at most [`MAX_ORDER`] and the index is a cell of it.
    pub fn new(order: u8, npix: u64) -> Option<Self> {
        (order <= MAX_ORDER && npix < cdshealpix::n_hash(order)).then_some(Self { order, npix })
    }
    pub fn parent(self) -> Option<Self> {
        (self.order > 0).then(|| Self {
            order: self.order - 1,
            npix: self.npix >> 2,
        })
    }
    pub fn children(self) -> [Self; 4] {
        [0, 1, 2, 3].map(|q| Self {
            order: self.order + 1,
            npix: (self.npix << 2) | q,
        })
    }
    /// `NorderK/DirD/NpixN.<ext>`, D = N rounded down to a multiple of 10 000.
    pub fn path(self, ext: &str) -> String {
        format!(
            "Norder{}/Dir{}/Npix{}.{ext}",
            self.order,
            self.npix / 10_000 * 10_000,
            self.npix
        )
    }
}

/// Interleaves the bits of `i` (even positions) and `j` (odd positions).
fn interleave(i: u32, j: u32) -> u64 {
    let spread = |v: u32| {
        let mut v = u64::from(v);
        v = (v | (v << 16)) & 0x0000_FFFF_0000_FFFF;
        v = (v | (v << 8)) & 0x00FF_00FF_00FF_00FF;
        v = (v | (v << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
        v = (v | (v << 2)) & 0x3333_3333_3333_3333;
        (v | (v << 1)) & 0x5555_5555_5555_5555
    };
    spread(i) | (spread(j) << 1)
}

/// The tile pixel layout for tiles `2^width_order` pixels wide: the offset inside the tile
/// of each pixel's cell, in display order.
#[derive(Debug, Clone)]
pub struct TileLayout {
    width_order: u8,
    offsets: Vec<u64>,
}

impl TileLayout {
    pub fn new(width_order: u8) -> Self {
        let w = 1u32 << width_order;
        let offsets = (0..w)
            .flat_map(|y| (0..w).map(move |x| interleave(y, x)))
            .collect();
        Self {
            width_order,
            offsets,
        }
    }
    pub fn width(&self) -> usize {
        1 << self.width_order
    }
    pub fn width_order(&self) -> u8 {
        self.width_order
    }
    /// Order of the cells a tile of `order` is made of.
    pub fn pixel_order(&self, order: u8) -> u8 {
        order + self.width_order
    }
    /// Nested index, at the pixel order, of the cell of pixel (x, y) of `tile`.
    pub fn cell(&self, tile: Tile, x: usize, y: usize) -> u64 {
        (tile.npix << (2 * self.width_order)) | self.offsets[y * self.width() + x]
    }
    /// The sky position of the centre of pixel (x, y) of `tile`.
    pub fn centre(&self, tile: Tile, x: usize, y: usize) -> SkyCoord {
        let (lon, lat) =
            cdshealpix::nested::center(self.pixel_order(tile.order), self.cell(tile, x, y));
        SkyCoord::new(lon.to_degrees(), lat.to_degrees().clamp(-90.0, 90.0))
            .expect("HEALPix centres are on the sky")
    }
    /// The tile's pixels, each `value(cell, centre)` (NaN for none), in display order, the
    /// rows shared among `threads`.
    pub fn sample(&self, tile: Tile, value: impl Fn(u64, SkyCoord) -> f32 + Sync) -> Vec<f32> {
        let w = self.width();
        let mut out = vec![f32::NAN; w * w];
        crate::image::for_rows(&mut out, w, |y, row| {
            for (x, v) in row.iter_mut().enumerate() {
                *v = value(self.cell(tile, x, y), self.centre(tile, x, y));
            }
        });
        out
    }
}

impl TileLayout {
    /// The display pixel (x, y) of a cell of the pixel order within its tile.
    pub fn pixel_of(&self, cell: u64) -> (usize, usize) {
        let sub = cell & ((1u64 << (2 * self.width_order)) - 1);
        let (mut y, mut x) = (0usize, 0usize);
        for b in 0..self.width_order {
            y |= (((sub >> (2 * b)) & 1) as usize) << b;
            x |= (((sub >> (2 * b + 1)) & 1) as usize) << b;
        }
        (x, y)
    }

    /// The cell of the pixel order at each pixel of `grid` (row by row, the grid's own
    /// row order), for rendering a HiPS of `order` onto it.
    pub fn cells_of_grid(&self, grid: &crate::skymap::PixelGrid, order: u8) -> Vec<u64> {
        let depth = self.pixel_order(order);
        let mut out = vec![0u64; grid.width() * grid.height()];
        crate::image::for_rows(&mut out, grid.width(), |y, row| {
            for (x, c) in row.iter_mut().enumerate() {
                let p = grid.wcs().pixel_to_sky(crate::wcs::PixelPosition {
                    x: x as f64,
                    y: y as f64,
                });
                *c = cdshealpix::nested::hash(depth, p.ra().to_radians(), p.dec().to_radians());
            }
        });
        out
    }

    /// The value at each cell (nearest HiPS pixel) from the tiles that hold them, keyed by
    /// tile index; NaN where a tile is missing.
    pub fn values_at(
        &self,
        cells: &[u64],
        tiles: &std::collections::HashMap<u64, Vec<f32>>,
    ) -> Vec<f32> {
        let w = self.width();
        cells
            .iter()
            .map(|&c| {
                tiles
                    .get(&(c >> (2 * self.width_order)))
                    .map_or(f32::NAN, |t| {
                        let (x, y) = self.pixel_of(c);
                        t[y * w + x]
                    })
            })
            .collect()
    }
}

/// An image to sample tiles from: its pixels and WCS.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub image: &'a crate::image::Image<f32>,
    pub wcs: &'a crate::wcs::TanSipWcs,
}

impl TileLayout {
    /// A tile sampled from images each covering a set of cells: the image for a pixel is
    /// the one keyed by its cell's index shifted right by `shift` bits (the enclosing cell
    /// of a coarser order, e.g. a sky-map patch); bilinear values, NaN where none covers.
    pub fn sample_sources(
        &self,
        tile: Tile,
        shift: u32,
        sources: &std::collections::HashMap<u64, Source<'_>>,
    ) -> Vec<f32> {
        self.sample(tile, |cell, sky| {
            sources.get(&(cell >> shift)).map_or(f32::NAN, |s| {
                s.wcs
                    .sky_to_pixel(sky)
                    .map_or(f32::NAN, |p| bilinear(s.image, p))
            })
        })
    }
}

/// The parent tile from its four children (any may be missing), each pixel the mean of
/// the finite values of the 2 x 2 child pixels under it. Child `q` (index `4N + q`) fills
/// the parent's top-left (0), bottom-left (1), top-right (2) or bottom-right (3) quarter.
pub fn parent_tile(width: usize, children: [Option<&[f32]>; 4]) -> Vec<f32> {
    let half = width / 2;
    let mut out = vec![f32::NAN; width * width];
    for (q, child) in children.iter().enumerate() {
        let Some(child) = child else { continue };
        let (ox, oy) = (
            if q >= 2 { half } else { 0 },
            if q % 2 == 1 { half } else { 0 },
        );
        for y in 0..half {
            for x in 0..half {
                let (mut sum, mut n) = (0f32, 0u32);
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let v = child[(2 * y + dy) * width + 2 * x + dx];
                    if v.is_finite() {
                        sum += v;
                        n += 1;
                    }
                }
                if n > 0 {
                    out[(oy + y) * width + ox + x] = sum / n as f32;
                }
            }
        }
    }
    out
}

/// The Allsky mosaic of `order`: every tile of the order shrunk to `sub` pixels a side
/// (each the mean of a block) and laid left to right, top to bottom, in `floor(sqrt(n))`
/// columns. Returns its width, height and pixels in display order.
pub fn allsky<'a>(
    order: u8,
    tile_width: usize,
    sub: usize,
    tile: impl Fn(u64) -> Option<&'a [f32]>,
) -> (usize, usize, Vec<f32>) {
    let n = cdshealpix::n_hash(order);
    let cols = (n as f64).sqrt().floor() as u64;
    let rows = n.div_ceil(cols);
    let (w, h) = (cols as usize * sub, rows as usize * sub);
    let mut out = vec![f32::NAN; w * h];
    let bin = tile_width / sub;
    for npix in 0..n {
        let Some(pixels) = tile(npix) else { continue };
        let (cx, cy) = ((npix % cols) as usize * sub, (npix / cols) as usize * sub);
        for y in 0..sub {
            for x in 0..sub {
                let (mut sum, mut count) = (0f32, 0u32);
                for by in 0..bin {
                    for bx in 0..bin {
                        let v = pixels[(y * bin + by) * tile_width + x * bin + bx];
                        if v.is_finite() {
                            sum += v;
                            count += 1;
                        }
                    }
                }
                if count > 0 {
                    out[(cy + y) * w + cx + x] = sum / count as f32;
                }
            }
        }
    }
    (w, h, out)
}

/// The value of `image` at `p` by bilinear interpolation; where a neighbour has no data,
/// the nearest pixel's value; NaN off the image.
pub fn bilinear(image: &crate::image::Image<f32>, p: crate::wcs::PixelPosition) -> f32 {
    let (w, h) = (image.width() as f64, image.height() as f64);
    if !(p.x > -0.5 && p.y > -0.5 && p.x < w - 0.5 && p.y < h - 0.5) {
        return f32::NAN;
    }
    let (x0, y0) = (p.x.floor().max(0.0), p.y.floor().max(0.0));
    let (x1, y1) = ((x0 + 1.0).min(w - 1.0), (y0 + 1.0).min(h - 1.0));
    let (fx, fy) = (
        (p.x - x0).clamp(0.0, 1.0) as f32,
        (p.y - y0).clamp(0.0, 1.0) as f32,
    );
    let at = |x: f64, y: f64| image.get(x as usize, y as usize).unwrap_or(f32::NAN);
    let (a, b, c, d) = (at(x0, y0), at(x1, y0), at(x0, y1), at(x1, y1));
    let v = (a * (1.0 - fx) + b * fx) * (1.0 - fy) + (c * (1.0 - fx) + d * fx) * fy;
    if v.is_finite() {
        v
    } else {
        at(
            p.x.round().clamp(0.0, w - 1.0),
            p.y.round().clamp(0.0, h - 1.0),
        )
    }
}

/// The order whose pixels are nearest in size to `pixel_scale` arcsec, at tiles
/// `2^width_order` wide.
pub fn order_for_scale(pixel_scale: f64, width_order: u8) -> u8 {
    // A cell of order n spans sqrt(4 pi / (12 4^n)) radians.
    let n = ((std::f64::consts::PI / 3.0).sqrt().to_degrees() * 3600.0 / pixel_scale).log2();
    (n.round().max(f64::from(width_order)) as u8 - width_order).min(MAX_ORDER)
}

/// Pixel size in degrees of a HiPS of `order` with tiles `2^width_order` wide.
pub fn pixel_size_deg(order: u8, width_order: u8) -> f64 {
    (std::f64::consts::PI / 3.0).sqrt().to_degrees()
        / f64::from(1u32 << (order + width_order).min(31))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_pixels_follow_the_nested_interleaving_with_the_south_corner_top_left() {
        let layout = TileLayout::new(1);
        let t = Tile::new(3, 100).unwrap();
        // Displayed 2 x 2: [0 2 / 1 3].
        assert_eq!(layout.cell(t, 0, 0), 400);
        assert_eq!(layout.cell(t, 1, 0), 402);
        assert_eq!(layout.cell(t, 0, 1), 401);
        assert_eq!(layout.cell(t, 1, 1), 403);
        let l4 = TileLayout::new(2);
        let row = |y| {
            (0..4)
                .map(|x| l4.cell(Tile::new(0, 0).unwrap(), x, y))
                .collect::<Vec<_>>()
        };
        assert_eq!(row(0), [0, 2, 8, 10]);
        assert_eq!(row(3), [5, 7, 13, 15]);
        // The top-left pixel's centre is near the tile's southern vertex, the bottom-right
        // near its northern one.
        let l = TileLayout::new(9);
        let t = Tile::new(5, 1234).unwrap();
        let [s, _e, n, _w] = cdshealpix::nested::vertices(5, 1234);
        let tl = l.centre(t, 0, 0);
        let br = l.centre(t, 511, 511);
        assert!((tl.dec() - s.1.to_degrees()).abs() < 0.01, "{tl:?} {s:?}");
        assert!((br.dec() - n.1.to_degrees()).abs() < 0.01, "{br:?} {n:?}");
        // Every pixel's cell lies in the tile.
        assert_eq!(l.cell(t, 511, 511) >> 18, 1234);
    }

    #[test]
    fn pixels_of_cells_invert_the_layout_and_regions_render_from_tiles() {
        let l = TileLayout::new(3);
        let t = Tile::new(7, 4242).unwrap();
        for (x, y) in [(0, 0), (7, 0), (3, 5), (7, 7)] {
            assert_eq!(l.pixel_of(l.cell(t, x, y)), (x, y));
        }
        // A tiny grid about a pixel centre reads that pixel's value.
        let centre = l.centre(t, 3, 5);
        let s = 1e-5;
        let wcs = crate::wcs::TanSipWcs::new(
            crate::wcs::PixelPosition { x: 1.0, y: 1.0 },
            centre,
            [[-s, 0.0], [0.0, s]],
            None,
        )
        .unwrap();
        let grid = crate::skymap::PixelGrid::new(wcs, 3, 3);
        let cells = l.cells_of_grid(&grid, 7);
        let values: Vec<f32> = (0..64).map(|v| v as f32).collect();
        let tiles = std::collections::HashMap::from([(4242u64, values)]);
        let out = l.values_at(&cells, &tiles);
        assert_eq!(out[4], (5 * 8 + 3) as f32);
        assert!(l.values_at(&cells, &Default::default())[0].is_nan());
    }

    #[test]
    fn parents_average_their_children_in_the_right_quarters() {
        let w = 4;
        let child = |v: f32| vec![v; w * w];
        let (a, b, d) = (child(1.0), child(2.0), child(4.0));
        let mut c = child(3.0);
        c[0] = f32::NAN;
        let p = parent_tile(w, [Some(&a), Some(&b), Some(&c), Some(&d)]);
        assert_eq!(p[0], 1.0); // top-left: child 0
        assert_eq!(p[3 * w], 2.0); // bottom-left: child 1
        assert_eq!(p[3], 3.0); // top-right: child 2
        assert_eq!(p[2], 3.0); // a NaN among four is left out of the mean
        assert_eq!(p[3 * w + 3], 4.0); // bottom-right: child 3
        let p = parent_tile(w, [None, None, None, Some(&d)]);
        assert!(p[0].is_nan() && p[15] == 4.0);
        // A pixel's children are the cells of its cell at the next order.
        let l = TileLayout::new(2);
        let parent = Tile::new(4, 77).unwrap();
        for q in 0..4u64 {
            let child = parent.children()[q as usize];
            let (ox, oy) = (if q >= 2 { 2 } else { 0 }, if q % 2 == 1 { 2 } else { 0 });
            for (x, y) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                assert_eq!(
                    l.cell(child, 2 * x, 2 * y) >> 2,
                    l.cell(parent, ox + x, oy + y)
                );
            }
        }
    }

    #[test]
    fn the_allsky_of_order_3_has_27_columns_and_29_rows() {
        let tile = vec![5.0f32; 16 * 16];
        let (w, h, px) = allsky(3, 16, 4, |n| (n == 28).then_some(tile.as_slice()));
        assert_eq!((w, h), (27 * 4, 29 * 4));
        // Tile 28 is the second of the second row.
        assert_eq!(px[4 * w + 4], 5.0);
        assert!(px[0].is_nan());
    }

    #[test]
    fn bilinear_interpolation_is_exact_on_a_plane_and_nan_off_the_image() {
        use crate::wcs::PixelPosition;
        let img = crate::image::Image::from_vec(
            3,
            3,
            (0..9).map(|i| (i % 3 + 10 * (i / 3)) as f32).collect(),
        )
        .unwrap();
        let v = bilinear(&img, PixelPosition { x: 0.25, y: 1.5 });
        assert!((v - 15.25).abs() < 1e-5, "{v}");
        assert!(bilinear(&img, PixelPosition { x: -0.6, y: 1.0 }).is_nan());
        let mut holed = img.clone();
        holed.set(1, 1, f32::NAN);
        assert_eq!(bilinear(&holed, PixelPosition { x: 0.2, y: 0.2 }), 0.0);
    }

    #[test]
    fn the_order_matches_the_pixel_scale() {
        assert_eq!(order_for_scale(0.2, 9), 11);
        assert!((pixel_size_deg(11, 9) * 3600.0 - 0.2013).abs() < 1e-3);
        assert_eq!(
            Tile::new(6, 10302).unwrap().path("fits"),
            "Norder6/Dir10000/Npix10302.fits"
        );
        assert!(Tile::new(0, 12).is_none());
        assert_eq!(Tile::new(1, 7).unwrap().parent(), Tile::new(0, 1));
    }
}
