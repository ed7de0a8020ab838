//! Celestial reference frames: ICRS Cartesian vectors and positions, and their ecliptic
//! (J2000 mean obliquity) and galactic (Hipparcos' definition) coordinates, as solar
//! system sources carry them (DMS-REQ-0288 ephemerides; Rubin's SSSource).
use std::ops::{Add, Mul, Sub};

use crate::wcs::SkyCoord;

/// The mean obliquity of the ecliptic at J2000 (IAU 2006: 84381.406 arcsec), radians.
pub const OBLIQUITY_J2000: f64 = 84_381.406 / 3600.0 * std::f64::consts::PI / 180.0;

/// ICRS to galactic: the rows are the galactic x, y, z axes in ICRS (Hipparcos catalogue,
/// vol. 1, sect. 1.5.3).
const GALACTIC: [[f64; 3]; 3] = [
    [-0.054_875_560_4, -0.873_437_090_2, -0.483_835_015_5],
    [0.494_109_427_9, -0.444_829_630_0, 0.746_982_244_5],
    [-0.867_666_149_0, -0.198_076_373_4, 0.455_983_776_2],
];

/// A Cartesian vector (positions in au, velocities in au/day where it matters).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Vec3 {
    pub x: f64,
    pub y: f64,
    pub z: f64,
}

impl Vec3 {
    pub const fn new(x: f64, y: f64, z: f64) -> Self {
        Self { x, y, z }
    }
    pub fn dot(self, o: Vec3) -> f64 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }
    pub fn cross(self, o: Vec3) -> Vec3 {
        Vec3::new(
            self.y * o.z - self.z * o.y,
            self.z * o.x - self.x * o.z,
            self.x * o.y - self.y * o.x,
        )
    }
    pub fn norm(self) -> f64 {
        self.dot(self).sqrt()
    }
    /// The unit vector along this one (zero stays zero).
    pub fn unit(self) -> Vec3 {
        let n = self.norm();
        if n > 0.0 { self * (1.0 / n) } else { self }
    }
    /// The angle between two vectors, radians (accurate at all angles).
    pub fn angle_to(self, o: Vec3) -> f64 {
        self.cross(o).norm().atan2(self.dot(o))
    }
    /// An equatorial (ICRS) vector in the ecliptic frame.
    pub fn equatorial_to_ecliptic(self) -> Vec3 {
        let (s, c) = OBLIQUITY_J2000.sin_cos();
        Vec3::new(self.x, c * self.y + s * self.z, -s * self.y + c * self.z)
    }
    /// An ecliptic vector in the equatorial (ICRS) frame.
    pub fn ecliptic_to_equatorial(self) -> Vec3 {
        let (s, c) = OBLIQUITY_J2000.sin_cos();
        Vec3::new(self.x, c * self.y - s * self.z, s * self.y + c * self.z)
    }
    /// The unit vector towards an ICRS position.
    pub fn towards(p: SkyCoord) -> Vec3 {
        let (ra, dec) = (p.ra().to_radians(), p.dec().to_radians());
        Vec3::new(dec.cos() * ra.cos(), dec.cos() * ra.sin(), dec.sin())
    }
    /// The direction of this vector as longitude and latitude in its frame, degrees;
    /// None for the zero vector.
    pub fn lon_lat(self) -> Option<(f64, f64)> {
        let n = self.norm();
        if n.is_nan() || n <= 0.0 {
            return None;
        }
        let lat = (self.z / n).clamp(-1.0, 1.0).asin().to_degrees();
        let lon = self.y.atan2(self.x).to_degrees().rem_euclid(360.0);
        Some((lon, lat))
    }
    /// The ICRS position this (equatorial) vector points to.
    pub fn sky(self) -> Option<SkyCoord> {
        self.lon_lat().and_then(|(ra, dec)| SkyCoord::new(ra, dec))
    }
}

impl Add for Vec3 {
    type Output = Vec3;
    fn add(self, o: Vec3) -> Vec3 {
        Vec3::new(self.x + o.x, self.y + o.y, self.z + o.z)
    }
}

impl Sub for Vec3 {
    type Output = Vec3;
    fn sub(self, o: Vec3) -> Vec3 {
        Vec3::new(self.x - o.x, self.y - o.y, self.z - o.z)
    }
}

impl Mul<f64> for Vec3 {
    type Output = Vec3;
    fn mul(self, k: f64) -> Vec3 {
        Vec3::new(self.x * k, self.y * k, self.z * k)
    }
}

/// Ecliptic longitude and latitude (J2000 mean ecliptic and equinox) of an ICRS position,
/// degrees.
pub fn ecliptic(p: SkyCoord) -> (f64, f64) {
    Vec3::towards(p)
        .equatorial_to_ecliptic()
        .lon_lat()
        .expect("a unit vector")
}

/// Galactic longitude and latitude of an ICRS position, degrees.
pub fn galactic(p: SkyCoord) -> (f64, f64) {
    let v = Vec3::towards(p);
    let row = |r: [f64; 3]| r[0] * v.x + r[1] * v.y + r[2] * v.z;
    Vec3::new(row(GALACTIC[0]), row(GALACTIC[1]), row(GALACTIC[2]))
        .lon_lat()
        .expect("a unit vector")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn galactic_centre_and_pole() {
        // The galactic centre and north pole as Hipparcos defines them.
        let (l, b) = galactic(SkyCoord::new(266.404_988_3, -28.936_174_9).unwrap());
        assert!(l.min(360.0 - l) < 1e-5 && b.abs() < 1e-5, "{l} {b}");
        let (_, b) = galactic(SkyCoord::new(192.859_481_2, 27.128_251_4).unwrap());
        assert!((b - 90.0).abs() < 1e-5, "{b}");
    }

    #[test]
    fn ecliptic_of_the_equinoxes_and_solstice() {
        let (l, b) = ecliptic(SkyCoord::new(0.0, 0.0).unwrap());
        assert!(l.min(360.0 - l) < 1e-12 && b.abs() < 1e-12);
        // The June solstice point: RA 90, Dec = obliquity.
        let (l, b) = ecliptic(SkyCoord::new(90.0, OBLIQUITY_J2000.to_degrees()).unwrap());
        assert!((l - 90.0).abs() < 1e-9 && b.abs() < 1e-9, "{l} {b}");
        // The ecliptic pole.
        let (_, b) = ecliptic(SkyCoord::new(270.0, 90.0 - OBLIQUITY_J2000.to_degrees()).unwrap());
        assert!((b - 90.0).abs() < 1e-9);
    }

    #[test]
    fn frame_rotations_invert() {
        let v = Vec3::new(0.3, -1.2, 2.5);
        let back = v.equatorial_to_ecliptic().ecliptic_to_equatorial();
        assert!((back - v).norm() < 1e-14);
        assert!((v.angle_to(v * 2.0)).abs() < 1e-12);
    }
}
