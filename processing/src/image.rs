//! The image model of processed data: 2-D pixel arrays, the mask with named bit planes, and
//! the Exposure that carries image, mask and variance with its world coordinates and
//! photometric calibration (DMS-REQ-0069, 0072, 0029, 0030). Pixel (x, y) is column x,
//! row y, 0-based; rows are stored one after another (y varies slowest, as in FITS).
use std::collections::BTreeMap;

use crate::psf::GaussianPsf;
use crate::wcs::TanSipWcs;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImageError {
    #[error("{what}: expected {expected_w} x {expected_h} pixels, got {got_w} x {got_h}")]
    ShapeMismatch {
        what: &'static str,
        expected_w: usize,
        expected_h: usize,
        got_w: usize,
        got_h: usize,
    },
    #[error("{0} x {1} pixels given {2} values")]
    WrongLength(usize, usize, usize),
    #[error("unknown mask plane '{0}'")]
    UnknownPlane(String),
}

/// A 2-D array of pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Image<T> {
    width: usize,
    height: usize,
    data: Vec<T>,
}

impl<T: Copy> Image<T> {
    /// An image of `width` x `height` pixels, all `value`.
    pub fn filled(width: usize, height: usize, value: T) -> Self {
        Self {
            width,
            height,
            data: vec![value; width * height],
        }
    }

    /// An image from its rows, concatenated.
    pub fn from_vec(width: usize, height: usize, data: Vec<T>) -> Result<Self, ImageError> {
        if width.checked_mul(height) != Some(data.len()) {
            return Err(ImageError::WrongLength(width, height, data.len()));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }
    pub fn height(&self) -> usize {
        self.height
    }
    /// The pixels, row after row.
    pub fn data(&self) -> &[T] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }
    /// One row.
    pub fn row(&self, y: usize) -> &[T] {
        &self.data[y * self.width..(y + 1) * self.width]
    }

    /// The pixel at (x, y), or None outside the image.
    pub fn get(&self, x: usize, y: usize) -> Option<T> {
        (x < self.width && y < self.height).then(|| self.data[y * self.width + x])
    }

    /// Sets the pixel at (x, y); false (and nothing changed) outside the image.
    pub fn set(&mut self, x: usize, y: usize, value: T) -> bool {
        if x < self.width && y < self.height {
            self.data[y * self.width + x] = value;
            true
        } else {
            false
        }
    }

    fn same_shape<U>(&self, other: &Image<U>, what: &'static str) -> Result<(), ImageError> {
        if self.width == other.width && self.height == other.height {
            Ok(())
        } else {
            Err(ImageError::ShapeMismatch {
                what,
                expected_w: self.width,
                expected_h: self.height,
                got_w: other.width,
                got_h: other.height,
            })
        }
    }
}

/// The named bit planes of a mask (the bit each one sets in the 32-bit mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MaskPlane {
    /// A defective pixel (bad pixel map: hot, dead, bad column).
    Bad = 0,
    /// Saturated, or part of a bleed trail.
    Sat = 1,
    /// Interpolated over.
    Intrp = 2,
    /// Hit by a cosmic ray.
    Cr = 3,
    /// Too close to the edge for a full measurement or convolution.
    Edge = 4,
    /// Part of a detected source footprint (positive).
    Detected = 5,
    /// Part of a detected negative footprint (difference images).
    DetectedNegative = 6,
    /// Doubtful: non-linear response, near a defect.
    Suspect = 7,
    /// No data was recorded or propagated here.
    NoData = 8,
    /// Corrected for crosstalk from a bright source on another amplifier.
    Crosstalk = 9,
    /// Not used in a coadd because it was rejected as an outlier there.
    Rejected = 10,
}

impl MaskPlane {
    pub const ALL: [MaskPlane; 11] = [
        Self::Bad,
        Self::Sat,
        Self::Intrp,
        Self::Cr,
        Self::Edge,
        Self::Detected,
        Self::DetectedNegative,
        Self::Suspect,
        Self::NoData,
        Self::Crosstalk,
        Self::Rejected,
    ];

    pub fn bit(self) -> i32 {
        1 << (self as u32)
    }

    /// The name written in headers (`MP_<NAME> = bit`), as the LSST stack writes them.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bad => "BAD",
            Self::Sat => "SAT",
            Self::Intrp => "INTRP",
            Self::Cr => "CR",
            Self::Edge => "EDGE",
            Self::Detected => "DETECTED",
            Self::DetectedNegative => "DETECTED_NEGATIVE",
            Self::Suspect => "SUSPECT",
            Self::NoData => "NO_DATA",
            Self::Crosstalk => "CROSSTALK",
            Self::Rejected => "REJECTED",
        }
    }

    pub fn from_name(name: &str) -> Result<Self, ImageError> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| ImageError::UnknownPlane(name.to_string()))
    }
}

/// A mask: 32 bits a pixel, one per [`MaskPlane`].
#[derive(Debug, Clone, PartialEq)]
pub struct Mask(Image<i32>);

impl Mask {
    pub fn new(width: usize, height: usize) -> Self {
        Self(Image::filled(width, height, 0))
    }
    pub fn from_image(bits: Image<i32>) -> Self {
        Self(bits)
    }
    pub fn bits(&self) -> &Image<i32> {
        &self.0
    }
    /// Sets `plane` at (x, y); false outside the image.
    pub fn set(&mut self, x: usize, y: usize, plane: MaskPlane) -> bool {
        match self.0.get(x, y) {
            Some(v) => self.0.set(x, y, v | plane.bit()),
            None => false,
        }
    }
    /// Whether any of `planes` is set at (x, y) (false outside the image).
    pub fn any(&self, x: usize, y: usize, planes: &[MaskPlane]) -> bool {
        let want = planes.iter().fold(0, |m, p| m | p.bit());
        self.0.get(x, y).is_some_and(|v| v & want != 0)
    }
    /// Pixels with `plane` set.
    pub fn count(&self, plane: MaskPlane) -> usize {
        self.0
            .data()
            .iter()
            .filter(|&&v| v & plane.bit() != 0)
            .count()
    }
    /// Header cards naming the planes: (`MP_BAD`, bit number), ...
    pub fn plane_cards() -> Vec<(String, u32)> {
        MaskPlane::ALL
            .iter()
            .map(|p| (format!("MP_{}", p.name()), *p as u32))
            .collect()
    }
}

/// The photometric calibration of an image: counts (ADU after ISR) to nJy through a
/// zeropoint, the AB magnitude of one count per exposure (DMS-REQ-0029).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhotoCalib {
    zero_point: f64,
    zero_point_err: f64,
}

/// AB magnitude of 1 nJy.
pub const AB_NJY_ZERO_POINT: f64 = 31.4;

impl PhotoCalib {
    pub fn new(zero_point: f64, zero_point_err: f64) -> Option<Self> {
        (zero_point.is_finite() && zero_point_err.is_finite() && zero_point_err >= 0.0).then_some(
            Self {
                zero_point,
                zero_point_err,
            },
        )
    }
    pub fn zero_point(&self) -> f64 {
        self.zero_point
    }
    pub fn zero_point_err(&self) -> f64 {
        self.zero_point_err
    }
    /// nJy per count.
    pub fn scale(&self) -> f64 {
        10f64.powf(-0.4 * (self.zero_point - AB_NJY_ZERO_POINT))
    }
    /// A flux in counts as nJy.
    pub fn to_njy(&self, counts: f64) -> f64 {
        counts * self.scale()
    }
    /// A flux error in counts as nJy, with the zeropoint's uncertainty added in quadrature.
    pub fn to_njy_err(&self, counts: f64, counts_err: f64) -> f64 {
        let flux = self.to_njy(counts);
        let rel_zp = 0.4 * std::f64::consts::LN_10 * self.zero_point_err;
        ((counts_err * self.scale()).powi(2) + (flux * rel_zp).powi(2)).sqrt()
    }
}

/// Runs `f(row index, row)` over the rows of `data` on every core.
pub fn for_rows<T: Send>(data: &mut [T], width: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    // Asked once: the answer reads the affinity mask and the cgroup's quota each time.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let threads =
        *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rows = data.len() / width.max(1);
    // One core, or too few rows to repay starting threads (a stamp's 41): in line.
    if threads == 1 || rows < 64 {
        for (y, row) in data.chunks_mut(width.max(1)).enumerate() {
            f(y, row);
        }
        return;
    }
    let per = rows.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (chunk_index, chunk) in data.chunks_mut(per * width).enumerate() {
            let f = &f;
            s.spawn(move || {
                for (i, row) in chunk.chunks_mut(width).enumerate() {
                    f(chunk_index * per + i, row);
                }
            });
        }
    });
}

/// A header value.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

/// An image with its mask and variance planes, world coordinates, calibration and
/// metadata: raw exposures after assembly, processed visit images, difference images and
/// coadds are all Exposures.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposure {
    image: Image<f32>,
    mask: Mask,
    variance: Image<f32>,
    pub wcs: Option<TanSipWcs>,
    pub photo_calib: Option<PhotoCalib>,
    /// The PSF over this image (DMS-REQ-0070), once characterised.
    pub psf: Option<GaussianPsf>,
    /// Header keywords of the exposure (observation time, filter, pointing, ...).
    pub metadata: BTreeMap<String, HeaderValue>,
}

impl Exposure {
    /// An exposure from its three planes, which must have one shape.
    pub fn new(image: Image<f32>, mask: Mask, variance: Image<f32>) -> Result<Self, ImageError> {
        image.same_shape(mask.bits(), "mask")?;
        image.same_shape(&variance, "variance")?;
        Ok(Self {
            image,
            mask,
            variance,
            wcs: None,
            photo_calib: None,
            psf: None,
            metadata: BTreeMap::new(),
        })
    }

    /// A blank exposure: zero pixels and variance, empty mask.
    pub fn blank(width: usize, height: usize) -> Self {
        Self {
            image: Image::filled(width, height, 0.0),
            mask: Mask::new(width, height),
            variance: Image::filled(width, height, 0.0),
            wcs: None,
            photo_calib: None,
            psf: None,
            metadata: BTreeMap::new(),
        }
    }

    pub fn width(&self) -> usize {
        self.image.width()
    }
    pub fn height(&self) -> usize {
        self.image.height()
    }
    pub fn image(&self) -> &Image<f32> {
        &self.image
    }
    pub fn mask(&self) -> &Mask {
        &self.mask
    }
    pub fn variance(&self) -> &Image<f32> {
        &self.variance
    }
    /// The three planes, mutably; their shapes cannot change through these borrows.
    pub fn planes_mut(&mut self) -> (&mut [f32], &mut Mask, &mut [f32]) {
        (
            self.image.data_mut(),
            &mut self.mask,
            self.variance.data_mut(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_index_by_column_and_row() {
        let mut im = Image::from_vec(3, 2, vec![0, 1, 2, 10, 11, 12]).unwrap();
        assert_eq!(im.get(2, 1), Some(12));
        assert_eq!(im.row(1), &[10, 11, 12]);
        assert_eq!(im.get(3, 0), None);
        assert!(im.set(0, 1, 7) && !im.set(0, 2, 7));
        assert_eq!(im.get(0, 1), Some(7));
        assert_eq!(
            Image::from_vec(3, 2, vec![0; 5]),
            Err(ImageError::WrongLength(3, 2, 5))
        );
    }

    #[test]
    fn mask_planes_are_distinct_bits_with_names() {
        let mut bits = 0;
        for p in MaskPlane::ALL {
            assert_eq!(bits & p.bit(), 0, "{p:?}");
            bits |= p.bit();
            assert_eq!(MaskPlane::from_name(p.name()), Ok(p));
        }
        assert!(MaskPlane::from_name("NOPE").is_err());
        let mut m = Mask::new(4, 4);
        assert!(m.set(1, 1, MaskPlane::Sat) && m.set(1, 1, MaskPlane::Cr));
        assert!(m.any(1, 1, &[MaskPlane::Cr]) && !m.any(1, 1, &[MaskPlane::Bad]));
        assert!(!m.set(4, 0, MaskPlane::Bad));
        assert_eq!((m.count(MaskPlane::Sat), m.count(MaskPlane::Bad)), (1, 0));
        assert!(Mask::plane_cards().contains(&("MP_NO_DATA".to_string(), 8)));
    }

    #[test]
    fn calibration_turns_counts_into_njy() {
        // Zeropoint 31.4: one count is one nJy.
        let unit = PhotoCalib::new(31.4, 0.0).unwrap();
        assert!((unit.to_njy(123.0) - 123.0).abs() < 1e-9);
        // Five magnitudes brighter zeropoint: a count is 100x fainter.
        let zp = PhotoCalib::new(36.4, 0.01).unwrap();
        assert!((zp.to_njy(100.0) - 1.0).abs() < 1e-12);
        let err = zp.to_njy_err(100.0, 10.0);
        assert!(err > 0.1 && err < 0.1 * 1.01, "{err}");
        assert!(PhotoCalib::new(f64::NAN, 0.0).is_none());
    }

    #[test]
    fn exposure_planes_share_one_shape() {
        let e = Exposure::new(
            Image::filled(4, 3, 1.0),
            Mask::new(4, 3),
            Image::filled(4, 2, 1.0),
        );
        assert!(matches!(
            e,
            Err(ImageError::ShapeMismatch {
                what: "variance",
                ..
            })
        ));
        let mut e = Exposure::blank(4, 3);
        let (pix, mask, var) = e.planes_mut();
        pix[0] = 5.0;
        var[0] = 2.0;
        mask.set(0, 0, MaskPlane::Bad);
        assert_eq!(e.image().get(0, 0), Some(5.0));
        assert!(e.mask().any(0, 0, &[MaskPlane::Bad]));
    }
}
