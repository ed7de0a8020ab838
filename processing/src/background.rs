//! The sky background of an image (DMS-REQ-0327): robust levels in a grid of bins, ignoring
//! masked and source pixels, interpolated bilinearly between bin centres. The model is kept
//! (its bin grid is small) so the background subtracted from a processed image can be
//! restored or re-evaluated.
use crate::image::{Image, Mask, MaskPlane};

/// Pixels never used to estimate the sky.
const IGNORED: [MaskPlane; 6] = [
    MaskPlane::Bad,
    MaskPlane::Sat,
    MaskPlane::Cr,
    MaskPlane::NoData,
    MaskPlane::Detected,
    MaskPlane::Edge,
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BackgroundError {
    #[error("bin size must be at least 8 pixels, got {0}")]
    BinTooSmall(usize),
    #[error("image and mask shapes differ")]
    ShapeMismatch,
    #[error("no usable pixels: every pixel is masked")]
    NoPixels,
}

/// A background model: levels at bin centres over a `width` x `height` image.
#[derive(Debug, Clone, PartialEq)]
pub struct Background {
    width: usize,
    height: usize,
    bin: usize,
    /// Levels, `nx` x `ny` bins, row after row.
    levels: Image<f32>,
}

impl Background {
    /// Estimates the background in `bin` x `bin` pixel cells: the 3-sigma-clipped median
    /// of the unmasked pixels of each cell. Cells without enough pixels take the mean of
    /// their valid neighbours (or the global level).
    pub fn estimate(image: &Image<f32>, mask: &Mask, bin: usize) -> Result<Self, BackgroundError> {
        if bin < 8 {
            return Err(BackgroundError::BinTooSmall(bin));
        }
        let (w, h) = (image.width(), image.height());
        if mask.bits().width() != w || mask.bits().height() != h {
            return Err(BackgroundError::ShapeMismatch);
        }
        let ignored = IGNORED.iter().fold(0, |m, p| m | p.bit());
        let (nx, ny) = (w.div_ceil(bin).max(1), h.div_ceil(bin).max(1));
        let mut levels = vec![f32::NAN; nx * ny];
        // Rows of bins are independent: estimate them on every core.
        crate::image::for_rows(&mut levels, nx, |by, out| {
            let mut values = Vec::with_capacity(bin * bin);
            for (bx, level) in out.iter_mut().enumerate() {
                values.clear();
                for y in by * bin..((by + 1) * bin).min(h) {
                    let row = image.row(y);
                    let mrow = mask.bits().row(y);
                    for x in bx * bin..((bx + 1) * bin).min(w) {
                        if mrow[x] & ignored == 0 && row[x].is_finite() {
                            values.push(row[x]);
                        }
                    }
                }
                if values.len() >= bin * bin / 10 {
                    *level = clipped_median(&mut values);
                }
            }
        });
        fill_gaps(&mut levels, nx, ny)?;
        Ok(Self {
            width: w,
            height: h,
            bin,
            levels: Image::from_vec(nx, ny, levels).expect("nx x ny levels"),
        })
    }

    /// A background from stored levels: `levels` must hold ceil(width / bin) x
    /// ceil(height / bin) cells.
    pub fn from_levels(
        width: usize,
        height: usize,
        bin: usize,
        levels: Image<f32>,
    ) -> Result<Self, BackgroundError> {
        if bin < 8 {
            return Err(BackgroundError::BinTooSmall(bin));
        }
        if (levels.width(), levels.height())
            != (width.div_ceil(bin).max(1), height.div_ceil(bin).max(1))
        {
            return Err(BackgroundError::ShapeMismatch);
        }
        Ok(Self {
            width,
            height,
            bin,
            levels,
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }
    pub fn height(&self) -> usize {
        self.height
    }

    pub fn bin_size(&self) -> usize {
        self.bin
    }
    /// The levels at the bin centres.
    pub fn levels(&self) -> &Image<f32> {
        &self.levels
    }

    /// The background at pixel (x, y), interpolated between bin centres (held constant
    /// beyond the outermost centres).
    pub fn at(&self, x: f64, y: f64) -> f64 {
        let (nx, ny) = (self.levels.width(), self.levels.height());
        let coord = |p: f64, n: usize| {
            let t = (p + 0.5) / self.bin as f64 - 0.5;
            let t = t.clamp(0.0, (n - 1) as f64);
            let i = (t.floor() as usize).min(n.saturating_sub(2));
            (i, t - i as f64)
        };
        let (ix, fx) = coord(x, nx);
        let (iy, fy) = coord(y, ny);
        let v = |i: usize, j: usize| {
            f64::from(
                self.levels
                    .get(i.min(nx - 1), j.min(ny - 1))
                    .expect("clamped index"),
            )
        };
        let top = v(ix, iy) * (1.0 - fx) + v(ix + 1, iy) * fx;
        let bottom = v(ix, iy + 1) * (1.0 - fx) + v(ix + 1, iy + 1) * fx;
        top * (1.0 - fy) + bottom * fy
    }

    /// The model as a full image.
    pub fn render(&self) -> Image<f32> {
        let mut out = Image::filled(self.width, self.height, 0.0f32);
        self.rows(out.data_mut(), |p, b| *p = b);
        out
    }

    /// Subtracts the model from the pixels of an image of the shape the model was estimated
    /// on, given row after row (as `Image::data_mut` and `Exposure::planes_mut` give them).
    pub fn subtract_from(&self, pixels: &mut [f32]) -> Result<(), BackgroundError> {
        if pixels.len() != self.width * self.height {
            return Err(BackgroundError::ShapeMismatch);
        }
        self.rows(pixels, |p, b| *p -= b);
        Ok(())
    }

    /// Applies `f(pixel, background)` to every pixel, row by row on every core: each row
    /// interpolates between the bin rows once, then along x (exactly what [`Self::at`]
    /// gives).
    fn rows(&self, pixels: &mut [f32], f: impl Fn(&mut f32, f32) + Sync) {
        let (nx, ny) = (self.levels.width(), self.levels.height());
        let bin = self.bin as f64;
        let coord = |p: f64, n: usize| {
            let t = ((p + 0.5) / bin - 0.5).clamp(0.0, (n - 1) as f64);
            let i = (t.floor() as usize).min(n.saturating_sub(2));
            (i, t - i as f64)
        };
        let xs: Vec<(usize, f64)> = (0..self.width).map(|x| coord(x as f64, nx)).collect();
        crate::image::for_rows(pixels, self.width, |y, row| {
            let (iy, fy) = coord(y as f64, ny);
            let level = |i: usize, j: usize| {
                f64::from(self.levels.data()[j.min(ny - 1) * nx + i.min(nx - 1)])
            };
            // This row's background at every bin column.
            let line: Vec<f64> = (0..nx)
                .map(|i| level(i, iy) * (1.0 - fy) + level(i, iy + 1) * fy)
                .collect();
            for (p, &(ix, fx)) in row.iter_mut().zip(&xs) {
                let b = line[ix.min(nx - 1)] * (1.0 - fx) + line[(ix + 1).min(nx - 1)] * fx;
                f(p, b as f32);
            }
        });
    }
}

/// Median after iteratively dropping values more than 3 sigma (from the MAD) from it.
pub(crate) fn clipped_median(values: &mut Vec<f32>) -> f32 {
    let mut med = median(values);
    for _ in 0..5 {
        let mut dev: Vec<f32> = values.iter().map(|v| (v - med).abs()).collect();
        let sigma = 1.4826 * median(&mut dev);
        if sigma <= 0.0 {
            break;
        }
        let before = values.len();
        values.retain(|v| (v - med).abs() <= 3.0 * sigma);
        med = median(values);
        if values.len() == before {
            break;
        }
    }
    med
}

pub(crate) fn median(values: &mut [f32]) -> f32 {
    let mid = values.len() / 2;
    let (_, m, _) = values.select_nth_unstable_by(mid, f32::total_cmp);
    *m
}

/// Gives empty cells the mean of their valid neighbours, repeatedly; all empty is an error.
fn fill_gaps(levels: &mut [f32], nx: usize, ny: usize) -> Result<(), BackgroundError> {
    if levels.iter().all(|v| v.is_nan()) {
        return Err(BackgroundError::NoPixels);
    }
    while levels.iter().any(|v| v.is_nan()) {
        let snapshot = levels.to_vec();
        for y in 0..ny {
            for x in 0..nx {
                if !snapshot[y * nx + x].is_nan() {
                    continue;
                }
                let mut sum = 0.0;
                let mut n = 0;
                for (dx, dy) in [(-1i64, 0i64), (1, 0), (0, -1), (0, 1)] {
                    let (xx, yy) = (x as i64 + dx, y as i64 + dy);
                    if xx >= 0 && yy >= 0 && (xx as usize) < nx && (yy as usize) < ny {
                        let v = snapshot[yy as usize * nx + xx as usize];
                        if !v.is_nan() {
                            sum += v;
                            n += 1;
                        }
                    }
                }
                if n > 0 {
                    levels[y * nx + x] = sum / n as f32;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sloping sky plus deterministic noise, with a few bright "stars" masked or not.
    fn sky(w: usize, h: usize) -> Image<f32> {
        let mut s = 12345u64;
        let mut data = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = ((s >> 40) as f64 / (1u64 << 24) as f64 - 0.5) * 20.0;
                data.push((1000.0 + 0.1 * x as f64 + 0.05 * y as f64 + noise) as f32);
            }
        }
        Image::from_vec(w, h, data).unwrap()
    }

    #[test]
    fn a_sloping_sky_is_recovered_despite_sources_and_masks() {
        let (w, h) = (400, 300);
        let mut im = sky(w, h);
        let mut mask = Mask::new(w, h);
        // Bright sources (unmasked: the clipping must reject them) and a masked bad column.
        for (cx, cy) in [(50usize, 60usize), (210, 150), (330, 40)] {
            for y in cy - 3..=cy + 3 {
                for x in cx - 3..=cx + 3 {
                    im.set(x, y, 60_000.0);
                }
            }
        }
        for y in 0..h {
            im.set(123, y, -5000.0);
            mask.set(123, y, MaskPlane::Bad);
        }
        // A whole masked region: its bins are filled from their neighbours.
        for y in 250..300 {
            for x in 350..400 {
                mask.set(x, y, MaskPlane::NoData);
            }
        }
        let bg = Background::estimate(&im, &mask, 50).unwrap();
        for &(x, y) in &[(25.0, 25.0), (200.0, 150.0), (375.0, 125.0), (100.0, 275.0)] {
            let truth = 1000.0 + 0.1 * x + 0.05 * y;
            assert!(
                (bg.at(x, y) - truth).abs() < 1.5,
                "({x}, {y}): {} vs {truth}",
                bg.at(x, y)
            );
        }
        let mut flat = sky(w, h);
        bg.subtract_from(flat.data_mut()).unwrap();
        let mean: f64 = flat.data().iter().map(|&v| f64::from(v)).sum::<f64>() / (w * h) as f64;
        assert!(mean.abs() < 1.0, "{mean}");
    }

    #[test]
    fn hopeless_inputs_are_errors() {
        let im = Image::filled(64, 64, 1.0f32);
        let mut mask = Mask::new(64, 64);
        assert_eq!(
            Background::estimate(&im, &mask, 4),
            Err(BackgroundError::BinTooSmall(4))
        );
        assert_eq!(
            Background::estimate(&im, &Mask::new(10, 10), 16),
            Err(BackgroundError::ShapeMismatch)
        );
        for y in 0..64 {
            for x in 0..64 {
                mask.set(x, y, MaskPlane::NoData);
            }
        }
        assert_eq!(
            Background::estimate(&im, &mask, 16),
            Err(BackgroundError::NoPixels)
        );
    }
}
