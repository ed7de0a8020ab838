//! The survey camera as the simulator builds it and the pipelines describe it: a focal plane
//! of square CCDs, each read out through amplifiers whose raw segments carry prescan and
//! serial and parallel overscan; the electronics of every amplifier (gain, read noise, bias
//! level and structure, full well, crosstalk into the others); and the detector's own
//! signature (pixel response across wavelength, defects, dark current, fringing, the
//! illumination of dome flats and of the sky, the optical distortion). Every property is a
//! deterministic function of the camera seed, so the simulator and the tests that check
//! calibration products against it agree without storing anything.
use crate::wcs::{PixelPosition, SkyCoord, TanSipWcs};

/// Why a camera cannot be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CameraError {
    #[error("CCD size {0} must be a multiple of 64 between 256 and 8192 pixels")]
    CcdSize(usize),
    #[error("{0} detectors: the focal plane holds 1 to 9")]
    Detectors(usize),
}

/// Amplifiers per CCD: 4 across, 2 down, each reading out from its outer corner.
pub const AMPS_X: usize = 4;
pub const AMPS_Y: usize = 2;
/// Raw segment columns read before the data (prescan) and after it (serial overscan), and
/// rows read after it (parallel overscan).
pub const PRESCAN: usize = 3;
pub const SERIAL_OVERSCAN: usize = 32;
pub const PARALLEL_OVERSCAN: usize = 16;
/// Largest value of the 16-bit analogue-to-digital converter.
pub const ADC_MAX: f64 = 65_535.0;
/// Pixel scale at the centre of the field, arcsec per pixel.
pub const PIXEL_SCALE: f64 = 0.2;
/// Gap between neighbouring CCDs, pixels.
pub const CCD_GAP: f64 = 200.0;

/// Where an amplifier's pixels lie in the assembled CCD and how its raw segment is read.
#[derive(Debug, Clone, PartialEq)]
pub struct AmpLayout {
    /// C00..C13 (row, column of the amplifier grid), as written in raw headers.
    pub name: String,
    pub index: usize,
    /// The data section in the assembled CCD: first column and row, width and height.
    pub x0: usize,
    pub y0: usize,
    pub width: usize,
    pub height: usize,
    /// The amplifier reads from the high-x (high-y) end of its section, so assembly flips it.
    pub flip_x: bool,
    pub flip_y: bool,
}

impl AmpLayout {
    /// Columns and rows of the raw segment.
    pub fn raw_width(&self) -> usize {
        PRESCAN + self.width + SERIAL_OVERSCAN
    }
    pub fn raw_height(&self) -> usize {
        self.height + PARALLEL_OVERSCAN
    }
    /// The raw-segment pixel of assembled-CCD pixel (x, y), which must be in the section.
    pub fn to_raw(&self, x: usize, y: usize) -> (usize, usize) {
        let (dx, dy) = (x - self.x0, y - self.y0);
        let rx = if self.flip_x { self.width - 1 - dx } else { dx };
        let ry = if self.flip_y {
            self.height - 1 - dy
        } else {
            dy
        };
        (PRESCAN + rx, ry)
    }
    /// The assembled-CCD pixel of raw data pixel (rx, ry), None in prescan or overscan.
    pub fn to_ccd(&self, rx: usize, ry: usize) -> Option<(usize, usize)> {
        if rx < PRESCAN || rx >= PRESCAN + self.width || ry >= self.height {
            return None;
        }
        let dx = rx - PRESCAN;
        let x = if self.flip_x { self.width - 1 - dx } else { dx };
        let y = if self.flip_y {
            self.height - 1 - ry
        } else {
            ry
        };
        Some((self.x0 + x, self.y0 + y))
    }
    /// FITS section strings of the raw segment (1-based, inclusive): data and overscan.
    pub fn datasec(&self) -> String {
        format!(
            "[{}:{},1:{}]",
            PRESCAN + 1,
            PRESCAN + self.width,
            self.height
        )
    }
    pub fn biassec(&self) -> String {
        format!(
            "[{}:{},1:{}]",
            PRESCAN + self.width + 1,
            self.raw_width(),
            self.height
        )
    }
    /// Where the data lands in the assembled CCD, with the flips as reversed ranges.
    pub fn detsec(&self) -> String {
        let (a, b) = (self.x0 + 1, self.x0 + self.width);
        let (c, d) = (self.y0 + 1, self.y0 + self.height);
        let (a, b) = if self.flip_x { (b, a) } else { (a, b) };
        let (c, d) = if self.flip_y { (d, c) } else { (c, d) };
        format!("[{a}:{b},{c}:{d}]")
    }
}

/// The electronics of one amplifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Amplifier {
    pub layout: AmpLayout,
    /// Electrons per ADU.
    pub gain: f64,
    /// Read noise, electrons.
    pub read_noise: f64,
    /// Mean bias level, ADU.
    pub bias_level: f64,
    /// Charge a pixel holds before it spills along its column, electrons.
    pub full_well: f64,
}

impl Amplifier {
    /// The raw value (ADU) at or above which a pixel is saturated.
    pub fn saturation_adu(&self) -> f64 {
        (self.full_well / self.gain + self.bias_level).min(ADC_MAX)
    }
}

/// One CCD of the focal plane.
#[derive(Debug, Clone, PartialEq)]
pub struct Detector {
    pub id: i64,
    /// R<row><column>, its place in the 3 x 3 focal plane.
    pub name: String,
    pub size: usize,
    pub amps: Vec<Amplifier>,
    /// Crosstalk coefficients, `crosstalk[victim * n + source]`: the fraction of the
    /// source amplifier's signal (ADU) that appears in the victim at the same readout pixel.
    pub crosstalk: Vec<f64>,
    /// Centre of the CCD in the focal plane, pixels from the boresight.
    pub centre: (f64, f64),
    seed: u64,
}

/// A defect of a pixel, as the bad pixel map records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// Dark current far above the rest.
    Hot,
    /// Responds to light much less than its neighbours.
    Dead,
    /// Part of a column whose charge transfer is broken.
    BadColumn,
}

impl Detector {
    pub fn amp_at(&self, x: usize, y: usize) -> &Amplifier {
        let w = self.size / AMPS_X;
        let h = self.size / AMPS_Y;
        &self.amps[(y / h) * AMPS_X + x / w]
    }

    fn hash(&self, tag: u64, x: usize, y: usize) -> u64 {
        splitmix(self.seed ^ tag.wrapping_mul(0x9e37_79b9) ^ ((y as u64) << 32) ^ x as u64)
    }

    /// Uniform in [0, 1) for a pixel and purpose.
    fn uniform(&self, tag: u64, x: usize, y: usize) -> f64 {
        (self.hash(tag, x, y) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The defect of pixel (x, y), if any.
    pub fn defect(&self, x: usize, y: usize) -> Option<Defect> {
        // One broken column segment on most CCDs.
        let col = self.uniform(11, 0, 0);
        if col < 0.7 {
            let bx = 16 + (self.uniform(12, 0, 0) * (self.size - 32) as f64) as usize;
            let by = (self.uniform(13, 0, 0) * self.size as f64 / 2.0) as usize;
            if x == bx && y >= by {
                return Some(Defect::BadColumn);
            }
        }
        let u = self.uniform(14, x, y);
        if u < 2e-4 {
            Some(Defect::Hot)
        } else if u < 3e-4 {
            Some(Defect::Dead)
        } else {
            None
        }
    }

    /// Smooth thickness variation of the silicon in [-1, 1]: tree rings about a centre
    /// off the CCD plus a broad tilt. Red light, absorbed deep, feels it most.
    fn thickness(&self, x: usize, y: usize) -> f64 {
        let s = self.size as f64;
        let (cx, cy) = (
            -0.3 * s + 0.2 * s * self.uniform(21, 0, 0),
            -0.2 * s + 0.2 * s * self.uniform(22, 0, 0),
        );
        let r = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
        // Rings about 180 pixels apart, whatever the CCD size (they come from the silicon).
        let rings = (std::f64::consts::TAU * r / 180.0).sin();
        let tilt = (x as f64 / s - 0.5) * (0.5 + self.uniform(23, 0, 0));
        (0.6 * rings + 0.4 * tilt).clamp(-1.0, 1.0)
    }

    /// Relative response of pixel (x, y) to light of wavelength `nm` (1 on average): pixel
    /// response non-uniformity, a chromatic term from the thickness and surface, defects.
    pub fn response(&self, x: usize, y: usize, nm: f64) -> f64 {
        let prnu = 1.0 + 0.01 * gaussian_of(self.hash(31, x, y));
        let red = 0.02 * ((nm - 600.0) / 400.0).max(0.0).powi(2) * 4.0;
        let blue = 0.01 * ((500.0 - nm) / 150.0).max(0.0);
        let surface = (std::f64::consts::TAU * (x as f64 + 0.7 * y as f64) / 97.0).sin();
        let chroma = 1.0 + red * self.thickness(x, y) + blue * surface;
        let defect = match self.defect(x, y) {
            Some(Defect::Dead) => 0.05,
            Some(Defect::BadColumn) => 0.3,
            _ => 1.0,
        };
        prnu * chroma * defect
    }

    /// Dark current of pixel (x, y), electrons per second.
    pub fn dark_current(&self, x: usize, y: usize) -> f64 {
        match self.defect(x, y) {
            Some(Defect::Hot) => 2.0 + 30.0 * self.uniform(41, x, y),
            _ => 0.004,
        }
    }

    /// The stable bias structure left after overscan subtraction at raw-segment pixel
    /// (rx, ry) of amplifier `amp`, ADU: a column pattern and a roll-off in the first rows.
    pub fn bias_structure(&self, amp: usize, rx: usize, ry: usize) -> f64 {
        let column = 1.2 * gaussian_of(self.hash(51 + amp as u64, rx, 0));
        let rolloff = 4.0 * (-(ry as f64) / 12.0).exp();
        column + rolloff
    }

    /// The fringe pattern in [-1, 1]: interference in the thin silicon under night-sky
    /// emission lines, following the thickness contours.
    pub fn fringe(&self, x: usize, y: usize) -> f64 {
        let t = self.thickness(x, y);
        let (sx, sy) = (x as f64 / self.size as f64, y as f64 / self.size as f64);
        (std::f64::consts::TAU * (2.5 * t + 3.0 * sx * sy + 1.3 * sx)).cos()
    }

    /// Focal-plane position (pixels from the boresight, undistorted) of CCD pixel (x, y).
    pub fn focal_plane(&self, x: f64, y: f64) -> (f64, f64) {
        let half = (self.size as f64 - 1.0) / 2.0;
        (self.centre.0 + x - half, self.centre.1 + y - half)
    }
}

/// The whole camera: its detectors and the optics in front of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Camera {
    pub detectors: Vec<Detector>,
    pub ccd_size: usize,
    /// Radial distortion: field radius = r (1 + k r²), r in pixels.
    pub distortion: f64,
}

/// Band effective wavelengths (nm) as the detector sees them.
pub use crate::sky::BAND_WAVELENGTH_NM;

/// AB magnitude giving 1 electron per second at airmass 0 (system throughput) per band.
pub const ZERO_POINT_1S: [f64; 6] = [26.9, 28.6, 28.4, 28.2, 27.8, 26.9];
/// Atmospheric extinction, magnitudes per airmass.
pub const EXTINCTION: [f64; 6] = [0.48, 0.21, 0.13, 0.10, 0.08, 0.17];
/// Dark-sky brightness at zenith, AB magnitudes per square arcsecond.
pub const SKY_BRIGHTNESS: [f64; 6] = [22.9, 22.3, 21.2, 20.5, 19.6, 18.6];
/// Fringe amplitude as a fraction of the sky level, per band.
pub const FRINGE_AMPLITUDE: [f64; 6] = [0.0, 0.0, 0.0, 0.003, 0.02, 0.035];

impl Camera {
    /// A camera of `detectors` CCDs of `ccd_size` pixels square, all drawn from `seed`.
    pub fn new(seed: u64, ccd_size: usize, detectors: usize) -> Result<Self, CameraError> {
        if !ccd_size.is_multiple_of(64) || !(256..=8192).contains(&ccd_size) {
            return Err(CameraError::CcdSize(ccd_size));
        }
        if !(1..=9).contains(&detectors) {
            return Err(CameraError::Detectors(detectors));
        }
        // Central CCD first, then the ring around it.
        const ORDER: [(i32, i32); 9] = [
            (0, 0),
            (-1, 0),
            (1, 0),
            (0, -1),
            (0, 1),
            (-1, -1),
            (1, -1),
            (-1, 1),
            (1, 1),
        ];
        let pitch = ccd_size as f64 + CCD_GAP;
        let detectors = ORDER[..detectors]
            .iter()
            .enumerate()
            .map(|(id, &(gx, gy))| {
                let dseed = splitmix(seed ^ (id as u64 + 1).wrapping_mul(0x51_7cc1_b727));
                build_detector(
                    id as i64,
                    format!("R{}{}", gy + 1, gx + 1),
                    ccd_size,
                    (gx as f64 * pitch, gy as f64 * pitch),
                    dseed,
                )
            })
            .collect();
        // 0.3 % stretch at the corner of a 3 x 3 focal plane.
        let corner = 1.5 * pitch * std::f64::consts::SQRT_2;
        Ok(Self {
            detectors,
            ccd_size,
            distortion: 0.003 / (corner * corner),
        })
    }

    /// Vignetting seen by sky and stars alike at focal-plane position (fx, fy).
    pub fn vignetting(&self, fx: f64, fy: f64) -> f64 {
        let rmax = 1.5 * (self.ccd_size as f64 + CCD_GAP) * std::f64::consts::SQRT_2;
        1.0 - 0.08 * (fx * fx + fy * fy) / (rmax * rmax)
    }

    /// The dome lamp's illumination relative to the sky's: a tilt across the focal plane,
    /// which flats carry and science images do not (so the illumination correction exists).
    pub fn dome_illumination(&self, fx: f64, fy: f64) -> f64 {
        let rmax = 1.5 * (self.ccd_size as f64 + CCD_GAP);
        1.0 + 0.03 * fx / rmax - 0.015 * fy / rmax
    }

    /// The field position (tangent-plane pixels, distorted) of a focal-plane position.
    pub fn distort(&self, fx: f64, fy: f64) -> (f64, f64) {
        let f = 1.0 + self.distortion * (fx * fx + fy * fy);
        (fx * f, fy * f)
    }

    /// The focal-plane position whose distorted field position is (px, py).
    pub fn undistort(&self, px: f64, py: f64) -> (f64, f64) {
        let (mut fx, mut fy) = (px, py);
        for _ in 0..6 {
            let f = 1.0 + self.distortion * (fx * fx + fy * fy);
            fx = px / f;
            fy = py / f;
        }
        (fx, fy)
    }

    /// Where sky position `sky` falls on `detector` for a boresight at `boresight` with the
    /// camera rotated by `rotation` degrees (east of north): exact, including distortion.
    pub fn sky_to_pixel(
        &self,
        detector: &Detector,
        boresight: SkyCoord,
        rotation: f64,
        sky: SkyCoord,
    ) -> Option<PixelPosition> {
        let (xi, eta) =
            crate::sky::tangent_plane(boresight.ra(), boresight.dec(), sky.ra(), sky.dec())?;
        let s = PIXEL_SCALE / 3600.0;
        // Sky east is -x on the CCD (north up, east left at rotation 0).
        let (sn, cs) = rotation.to_radians().sin_cos();
        let (u, v) = (-xi / s, eta / s);
        let (px, py) = (u * cs + v * sn, -u * sn + v * cs);
        let (fx, fy) = self.undistort(px, py);
        let half = (detector.size as f64 - 1.0) / 2.0;
        Some(PixelPosition {
            x: fx - detector.centre.0 + half,
            y: fy - detector.centre.1 + half,
        })
    }

    /// The sky position of `detector` pixel `p`: the inverse of [`Camera::sky_to_pixel`].
    pub fn pixel_to_sky(
        &self,
        detector: &Detector,
        boresight: SkyCoord,
        rotation: f64,
        p: PixelPosition,
    ) -> Option<SkyCoord> {
        let (fx, fy) = detector.focal_plane(p.x, p.y);
        let (px, py) = self.distort(fx, fy);
        let (sn, cs) = rotation.to_radians().sin_cos();
        let (u, v) = (px * cs - py * sn, px * sn + py * cs);
        let s = PIXEL_SCALE / 3600.0;
        let (xi, eta) = ((-u * s).to_radians(), (v * s).to_radians());
        let (a0, d0) = (boresight.ra().to_radians(), boresight.dec().to_radians());
        let rho = (xi * xi + eta * eta).sqrt();
        if rho == 0.0 {
            return Some(boresight);
        }
        let c = rho.atan();
        let dec = (c.cos() * d0.sin() + eta * c.sin() * d0.cos() / rho).asin();
        let ra = a0 + (xi * c.sin()).atan2(rho * d0.cos() * c.cos() - eta * d0.sin() * c.sin());
        SkyCoord::new(ra.to_degrees().rem_euclid(360.0), dec.to_degrees())
    }

    /// The WCS the telescope reports for `detector`: see [`nominal_wcs`].
    pub fn nominal_wcs(
        &self,
        detector: &Detector,
        boresight: SkyCoord,
        rotation: f64,
    ) -> Option<TanSipWcs> {
        nominal_wcs(detector.size, detector.centre, boresight, rotation)
    }
}

/// The WCS of a `size`-pixel CCD centred at `centre` (focal-plane pixels) from the
/// telescope's boresight and rotator angle alone: TAN about the boresight with the nominal
/// scale, without the optical distortion, so calibration must refine it.
pub fn nominal_wcs(
    size: usize,
    centre: (f64, f64),
    boresight: SkyCoord,
    rotation: f64,
) -> Option<TanSipWcs> {
    let s = PIXEL_SCALE / 3600.0;
    let (sn, cs) = rotation.to_radians().sin_cos();
    let half = (size as f64 - 1.0) / 2.0;
    // Pixel offsets (dx, dy) map to tangent-plane (xi, eta) = (-u s, v s) with
    // (u, v) = R(rotation) (dx, dy).
    let cd = [[-s * cs, s * sn], [s * sn, s * cs]];
    TanSipWcs::new(
        PixelPosition {
            x: half - centre.0,
            y: half - centre.1,
        },
        boresight,
        cd,
        None,
    )
    .ok()
}

fn build_detector(id: i64, name: String, size: usize, centre: (f64, f64), seed: u64) -> Detector {
    let (w, h) = (size / AMPS_X, size / AMPS_Y);
    let draw = |tag: u64| (splitmix(seed ^ tag) >> 11) as f64 / (1u64 << 53) as f64;
    let amps: Vec<Amplifier> = (0..AMPS_X * AMPS_Y)
        .map(|i| {
            let (ax, ay) = (i % AMPS_X, i / AMPS_X);
            let t = 1000 + 10 * i as u64;
            Amplifier {
                layout: AmpLayout {
                    name: format!("C{ay}{ax}"),
                    index: i,
                    x0: ax * w,
                    y0: ay * h,
                    width: w,
                    height: h,
                    flip_x: ax >= AMPS_X / 2,
                    flip_y: ay == 1,
                },
                gain: 1.4 + 0.4 * draw(t),
                read_noise: 4.5 + 3.0 * draw(t + 1),
                bias_level: 900.0 + 300.0 * draw(t + 2),
                full_well: 90_000.0 + 20_000.0 * draw(t + 3),
            }
        })
        .collect();
    let n = amps.len();
    let mut crosstalk = vec![0.0; n * n];
    for v in 0..n {
        for s in 0..n {
            if v == s {
                continue;
            }
            let neighbour = v / AMPS_X == s / AMPS_X && v.abs_diff(s) == 1;
            let base = if neighbour { 2e-4 } else { 3e-5 };
            crosstalk[v * n + s] = base * (0.5 + draw(5000 + (v * n + s) as u64));
        }
    }
    Detector {
        id,
        name,
        size,
        amps,
        crosstalk,
        centre,
        seed,
    }
}

/// SplitMix64: a fast, well-mixed hash for per-pixel properties.
pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An approximately standard normal value from a hash (sum of four uniforms, rescaled).
fn gaussian_of(h: u64) -> f64 {
    let s: f64 = (0..4)
        .map(|i| ((h >> (16 * i)) & 0xffff) as f64 / 65_536.0)
        .sum();
    (s - 2.0) * 3f64.sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amplifier_sections_tile_the_ccd_and_map_back() {
        let cam = Camera::new(1, 256, 1).unwrap();
        let d = &cam.detectors[0];
        let mut seen = vec![0u8; 256 * 256];
        for a in &d.amps {
            for ry in 0..a.layout.raw_height() {
                for rx in 0..a.layout.raw_width() {
                    if let Some((x, y)) = a.layout.to_ccd(rx, ry) {
                        seen[y * 256 + x] += 1;
                        assert_eq!(a.layout.to_raw(x, y), (rx, ry));
                        assert_eq!(d.amp_at(x, y).layout.index, a.layout.index);
                    }
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
        assert_eq!(d.amps[0].layout.detsec(), "[1:64,1:128]");
        assert_eq!(d.amps[7].layout.detsec(), "[256:193,256:129]");
        assert_eq!(d.amps[0].layout.datasec(), "[4:67,1:128]");
    }

    #[test]
    fn sky_and_pixels_round_trip_through_the_distortion() {
        let cam = Camera::new(3, 512, 9).unwrap();
        let bore = SkyCoord::new(62.0, -37.0).unwrap();
        for d in &cam.detectors {
            for &(x, y) in &[(0.0, 0.0), (255.5, 300.0), (511.0, 511.0)] {
                let p = PixelPosition { x, y };
                let sky = cam.pixel_to_sky(d, bore, 33.0, p).unwrap();
                let back = cam.sky_to_pixel(d, bore, 33.0, sky).unwrap();
                assert!((back.x - x).abs() < 1e-6 && (back.y - y).abs() < 1e-6);
                // The nominal WCS misses only the distortion, k r³ at focal radius r.
                let nominal = cam.nominal_wcs(d, bore, 33.0).unwrap();
                let q = nominal.sky_to_pixel(sky).unwrap();
                let (fx, fy) = d.focal_plane(x, y);
                let r = (fx * fx + fy * fy).sqrt();
                let miss = ((q.x - x).powi(2) + (q.y - y).powi(2)).sqrt();
                let expected = cam.distortion * r.powi(3);
                assert!(
                    (miss - expected).abs() < 0.01 * expected + 1e-3,
                    "{miss} {expected}"
                );
            }
        }
    }

    #[test]
    fn signature_is_deterministic_and_sensible() {
        let a = Camera::new(5, 256, 2).unwrap();
        let b = Camera::new(5, 256, 2).unwrap();
        assert_eq!(a, b);
        let d = &a.detectors[1];
        let mut sum = 0.0;
        let mut hot = 0;
        for y in 0..256 {
            for x in 0..256 {
                sum += d.response(x, y, 622.0);
                hot += usize::from(d.dark_current(x, y) > 1.0);
            }
        }
        let mean = sum / 65536.0;
        assert!((mean - 1.0).abs() < 0.02, "{mean}");
        assert!(hot < 60);
        // Red light varies more across the CCD than green.
        let spread = |nm: f64| {
            let v: Vec<f64> = (0..256).map(|x| d.response(x, 100, nm)).collect();
            v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min)
        };
        assert!(spread(971.0) > spread(500.0));
        for a in &d.amps {
            assert!(a.saturation_adu() <= ADC_MAX && a.saturation_adu() > 40_000.0);
        }
    }

    #[test]
    fn bad_geometry_is_refused() {
        assert_eq!(Camera::new(1, 100, 1), Err(CameraError::CcdSize(100)));
        assert_eq!(Camera::new(1, 256, 10), Err(CameraError::Detectors(10)));
    }
}
