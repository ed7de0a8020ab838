//! A deterministic synthetic sky and observing cadence: stars and galaxies with ugrizy fluxes
//! (nJy), variable stars and transients, asteroids, and visits with their conditions; plus
//! the photometric noise model that turns true fluxes into measurements. Same seed, same sky.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const BANDS: [&str; 6] = ["u", "g", "r", "i", "z", "y"];
/// Effective wavelengths of the bands, nm.
pub const BAND_WAVELENGTH_NM: [f64; 6] = [367.0, 482.0, 622.0, 754.0, 869.0, 971.0];
/// Wavelength range (nm) each filter passes, where its throughput is above half its peak.
pub const BAND_RANGE_NM: [(f64, f64); 6] = [
    (320.0, 400.0),
    (400.0, 552.0),
    (552.0, 691.0),
    (691.0, 818.0),
    (818.0, 922.0),
    (948.0, 1060.0),
];
/// Single-visit 5-sigma point-source depths (AB mag) at median conditions.
pub const SINGLE_VISIT_DEPTH: [f64; 6] = [23.7, 24.9, 24.4, 23.9, 23.3, 22.4];
/// Coadd 5-sigma depths (AB mag) of the demo release.
pub const COADD_DEPTH: [f64; 6] = [25.6, 26.9, 26.9, 26.4, 25.6, 24.8];

/// The index in [`BANDS`] of a band's name (u, g, r, i, z, y).
pub fn band_index(name: &str) -> Option<usize> {
    BANDS.iter().position(|b| *b == name)
}

/// AB magnitude of a flux in nJy (31.4 is the AB zero point for nJy).
pub fn mag_to_njy(mag: f64) -> f64 {
    10f64.powf((31.4 - mag) / 2.5)
}
pub fn njy_to_mag(flux: f64) -> f64 {
    31.4 - 2.5 * flux.log10()
}

/// A circular survey footprint on the sky (degrees).
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    pub ra: f64,
    pub dec: f64,
    pub radius: f64,
}

impl Footprint {
    /// A footprint whose area grows with the object count, holding a fixed density
    /// (50 000 objects per square degree) but never smaller than a camera field.
    pub fn for_objects(n: u64) -> Self {
        let area = n as f64 / 50_000.0;
        let radius = (area / std::f64::consts::PI).sqrt().max(2.0);
        Self {
            ra: 62.0,
            dec: -37.0,
            radius,
        }
    }

    /// A uniformly distributed position inside the footprint.
    fn sample(&self, rng: &mut impl Rng) -> (f64, f64) {
        // Uniform on the spherical cap around the pole, then rotated onto the centre.
        let cos_r = self.radius.to_radians().cos();
        let z = rng.random_range(cos_r..=1.0);
        let phi = rng.random_range(0.0..std::f64::consts::TAU);
        let s = (1.0 - z * z).sqrt();
        let v = [s * phi.cos(), s * phi.sin(), z];
        rotate_from_pole(v, self.ra, self.dec)
    }
}

/// Rotates a unit vector given relative to the north pole onto (ra0, dec0).
fn rotate_from_pole(v: [f64; 3], ra0: f64, dec0: f64) -> (f64, f64) {
    let (sa, ca) = ra0.to_radians().sin_cos();
    let (sd, cd) = dec0.to_radians().sin_cos();
    // Columns: east, north, centre directions at (ra0, dec0).
    let east = [-sa, ca, 0.0];
    let north = [-sd * ca, -sd * sa, cd];
    let centre = [cd * ca, cd * sa, sd];
    let w: Vec<f64> = (0..3)
        .map(|i| v[0] * east[i] + v[1] * north[i] + v[2] * centre[i])
        .collect();
    let dec = w[2].clamp(-1.0, 1.0).asin().to_degrees();
    let ra = w[1].atan2(w[0]).to_degrees().rem_euclid(360.0);
    (ra, dec)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Variability {
    /// Sinusoidal variable: period (days), fractional amplitude, phase.
    Periodic {
        period: f64,
        amplitude: f64,
        phase: f64,
    },
    /// A supernova-like transient: peak MJD, peak flux in r (nJy), rise and fall times (days).
    Transient {
        peak_mjd: f64,
        peak_flux: f64,
        rise: f64,
        fall: f64,
    },
}

#[derive(Debug, Clone)]
pub struct SimObject {
    pub id: i64,
    pub ra: f64,
    pub dec: f64,
    pub is_star: bool,
    /// True mean fluxes in ugrizy, nJy.
    pub flux: [f64; 6],
    /// Half-light radius of galaxies, arcsec (0 for stars).
    pub size: f64,
    pub variability: Option<Variability>,
    /// Proper motion in RA (times cos dec) and Dec, mas/yr, and parallax, mas (stars only).
    pub pm_ra: f64,
    pub pm_dec: f64,
    pub parallax: f64,
}

/// Epoch of the catalogue positions (ra, dec): Julian year 2016.0, as in Gaia DR3.
pub const REFERENCE_EPOCH_MJD: f64 = 57_388.5;

impl SimObject {
    /// A star of one AB magnitude in every band, fixed on the sky (no proper motion or
    /// parallax), variable or not: what tests and injected populations place.
    pub fn star(id: i64, ra: f64, dec: f64, mag: f64, variability: Option<Variability>) -> Self {
        Self {
            id,
            ra,
            dec,
            is_star: true,
            flux: [mag_to_njy(mag); 6],
            size: 0.0,
            variability,
            pm_ra: 0.0,
            pm_dec: 0.0,
            parallax: 0.0,
        }
    }

    /// Where the object appears at `mjd` from the Earth: proper motion from the reference
    /// epoch and the parallactic displacement towards the Sun.
    pub fn position_at(&self, mjd: f64) -> (f64, f64) {
        apparent_position(
            self.ra,
            self.dec,
            self.pm_ra,
            self.pm_dec,
            self.parallax,
            REFERENCE_EPOCH_MJD,
            mjd,
        )
    }

    /// The shape of a galaxy in pixels of `pixel_scale` arcsec (None for stars): disk and
    /// bulge share an axis ratio and angle drawn from the id.
    pub fn morphology(&self, pixel_scale: f64) -> Option<crate::galaxy::Morphology> {
        if self.is_star {
            return None;
        }
        let frac = |k: f64| (self.id as f64 * k).fract();
        Some(crate::galaxy::Morphology {
            disk_radius: self.size / pixel_scale,
            bulge_fraction: 0.6 * frac(0.754_877_666),
            axis_ratio: 0.4 + 0.6 * frac(0.618_034),
            angle: std::f64::consts::PI * frac(0.414_214),
        })
    }

    /// True flux in `band` at time `mjd`, including variability.
    pub fn flux_at(&self, band: usize, mjd: f64) -> f64 {
        let base = self.flux[band];
        match self.variability {
            None => base,
            Some(Variability::Periodic {
                period,
                amplitude,
                phase,
            }) => base * (1.0 + amplitude * (std::f64::consts::TAU * mjd / period + phase).sin()),
            Some(Variability::Transient {
                peak_mjd,
                peak_flux,
                rise,
                fall,
            }) => {
                let dt = mjd - peak_mjd;
                let shape = if dt < 0.0 {
                    (-(dt / rise).powi(2)).exp()
                } else {
                    (-dt / fall).exp()
                };
                // Bluer near peak: a simple colour term across bands.
                let colour = 1.0 - 0.08 * (band as f64 - 2.0);
                base + peak_flux * shape * colour.max(0.2)
            }
        }
    }
}

/// An asteroid on a straight track: where it is at `mjd0` and how fast it moves. Over the
/// days a simulated survey spans, a main-belt asteroid's track across a field is straight
/// to well within a pixel.
#[derive(Debug, Clone, PartialEq)]
pub struct Asteroid {
    pub id: i64,
    pub ra: f64,
    pub dec: f64,
    pub mjd0: f64,
    /// Rates in RA (times cos dec) and Dec, degrees per day.
    pub rate_ra: f64,
    pub rate_dec: f64,
    /// Fluxes in ugrizy, nJy (solar colours; no phase or distance changes over a survey
    /// this short).
    pub flux: [f64; 6],
}

impl Asteroid {
    /// Where it is at `mjd`.
    pub fn position_at(&self, mjd: f64) -> (f64, f64) {
        let dt = mjd - self.mjd0;
        let dec = (self.dec + self.rate_dec * dt).clamp(-90.0, 90.0);
        let ra = self.ra + self.rate_ra * dt / self.dec.to_radians().cos().max(1e-6);
        (ra.rem_euclid(360.0), dec)
    }
}

/// Main-belt asteroids crossing `footprint` between `mjd0` and `mjd0 + span` (days),
/// deterministic for `seed`, with ids from 9 000 000 001, `density` of them per square
/// degree in the footprint at any moment. Each is placed uniformly in the footprint at a
/// uniform time and moves at a rate near opposition, about a quarter of a degree a day
/// mostly along the ecliptic; magnitudes r 18 to 23.
pub fn asteroids(
    seed: u64,
    density: f64,
    footprint: Footprint,
    mjd0: f64,
    span: f64,
) -> Vec<Asteroid> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xa57e_401d);
    const RATES: std::ops::Range<f64> = 0.15..0.35;
    let area = std::f64::consts::PI * footprint.radius * footprint.radius;
    // Each crosses the footprint (a mean chord of pi/2 radii) in `crossing` days: to keep
    // `density` inside at any moment, tracks must enter throughout the span.
    let crossing = std::f64::consts::FRAC_PI_2 * footprint.radius / 0.25;
    let n = (density * area * (1.0 + span.max(0.0) / crossing)).round() as usize;
    (0..n)
        .map(|k| {
            let (ra, dec) = footprint.sample(&mut rng);
            let at = mjd0 - crossing / 2.0 + rng.random_range(0.0..1.0) * (span + crossing);
            let speed = rng.random_range(RATES);
            let retrograde = if rng.random_bool(0.5) {
                0.0
            } else {
                std::f64::consts::PI
            };
            let angle: f64 = rng.random_range(-0.4..0.4) + retrograde;
            let r_mag = 18.0 + 5.0 * rng.random::<f64>().powf(0.5);
            // Solar colours: u-r 2.3, g-r 0.45, r-i 0.12, r-z 0.15, r-y 0.17.
            let colours = [2.3, 0.45, 0.0, -0.12, -0.15, -0.17];
            Asteroid {
                id: 9_000_000_001 + k as i64,
                ra,
                dec,
                mjd0: at,
                rate_ra: speed * angle.cos(),
                rate_dec: speed * angle.sin() * 0.3,
                flux: colours.map(|c| mag_to_njy(r_mag + c)),
            }
        })
        .collect()
}

/// `n` objects in `footprint`, deterministic for `seed`; ids are 1..=n.
pub fn objects(seed: u64, n: u64, footprint: Footprint) -> impl Iterator<Item = SimObject> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (1..=n as i64).map(move |id| {
        let (ra, dec) = footprint.sample(&mut rng);
        let is_star = rng.random_bool(0.3);
        // Number counts rise steeply to the faint end: r magnitude from a truncated power law.
        let u: f64 = rng.random();
        let r_mag = 16.0 + 11.0 * u.powf(0.35);
        let (colours, size) = if is_star {
            let t: f64 = rng.random_range(0.0..1.0);
            (
                [
                    1.2 + 1.5 * t,
                    0.5 + 0.9 * t,
                    0.0,
                    -0.15 - 0.4 * t,
                    -0.2 - 0.6 * t,
                    -0.25 - 0.7 * t,
                ],
                0.0,
            )
        } else {
            let red: f64 = rng.random_range(0.0..1.0);
            let size = rng.random_range(0.3..2.5) * (24.0 / r_mag).powi(2);
            (
                [
                    1.0 + 1.2 * red,
                    0.4 + 0.8 * red,
                    0.0,
                    -0.3 - 0.3 * red,
                    -0.45 - 0.4 * red,
                    -0.55 - 0.5 * red,
                ],
                size,
            )
        };
        let mut flux = [0.0; 6];
        for b in 0..6 {
            flux[b] = mag_to_njy(r_mag + colours[b]);
        }
        let roll: f64 = rng.random();
        let variability = if is_star && roll < 0.03 {
            Some(Variability::Periodic {
                period: 10f64.powf(rng.random_range(-1.0..2.0)),
                amplitude: rng.random_range(0.1..0.6),
                phase: rng.random_range(0.0..std::f64::consts::TAU),
            })
        } else if !is_star && roll < 0.004 {
            Some(Variability::Transient {
                peak_mjd: rng.random_range(60_600.0..60_965.0),
                peak_flux: mag_to_njy(rng.random_range(19.5..22.5)),
                rise: rng.random_range(8.0..20.0),
                fall: rng.random_range(20.0..60.0),
            })
        } else {
            None
        };
        // Kinematics from their own generator, so the rest of the sky stays as it was.
        let (pm_ra, pm_dec, parallax) = if is_star {
            let mut k = noise_rng(seed, 0x6b1e_0000 ^ id as u64);
            let parallax = 10f64.powf(k.random_range(-1.0..0.7));
            // Tangential velocities of ~30 km/s: mas/yr = km/s x parallax (mas) / 4.74.
            (
                gaussian(&mut k) * 30.0 * parallax / 4.74,
                gaussian(&mut k) * 30.0 * parallax / 4.74,
                parallax,
            )
        } else {
            (0.0, 0.0, 0.0)
        };
        SimObject {
            id,
            ra,
            dec,
            is_star,
            flux,
            size,
            variability,
            pm_ra,
            pm_dec,
            parallax,
        }
    })
}

/// Where a star at (ra, dec) at `epoch` (MJD) with proper motion (mas/yr, RA times cos dec)
/// and parallax (mas) appears from the Earth at `mjd`: moved along its proper motion and
/// displaced towards the Sun by its parallax. Degrees.
pub fn apparent_position(
    ra: f64,
    dec: f64,
    pm_ra: f64,
    pm_dec: f64,
    parallax: f64,
    epoch: f64,
    mjd: f64,
) -> (f64, f64) {
    if pm_ra == 0.0 && pm_dec == 0.0 && parallax == 0.0 {
        return (ra, dec);
    }
    let mas = (1.0 / 3.6e6f64).to_radians();
    let years = (mjd - epoch) / 365.25;
    let (sa, ca) = ra.to_radians().sin_cos();
    let (sd, cd) = dec.to_radians().sin_cos();
    let u = [cd * ca, cd * sa, sd];
    let (east, north) = tangent_axes(ra, dec);
    let sun = sun_direction(mjd);
    let su = sun[0] * u[0] + sun[1] * u[1] + sun[2] * u[2];
    let mut v = [0.0; 3];
    for i in 0..3 {
        v[i] = u[i]
            + mas * years * (pm_ra * east[i] + pm_dec * north[i])
            + mas * parallax * (sun[i] - su * u[i]);
    }
    let norm = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    let dec = (v[2] / norm).asin().to_degrees();
    let ra = v[1].atan2(v[0]).to_degrees().rem_euclid(360.0);
    (ra, dec)
}

/// Unit vectors (ICRS equatorial) pointing east and north at (ra, dec), degrees: the
/// axes of the tangent plane there, along which proper motions and parallaxes are
/// measured.
pub fn tangent_axes(ra: f64, dec: f64) -> ([f64; 3], [f64; 3]) {
    let (sa, ca) = ra.to_radians().sin_cos();
    let (sd, cd) = dec.to_radians().sin_cos();
    ([-sa, ca, 0.0], [-sd * ca, -sd * sa, cd])
}

/// Unit vector (ICRS equatorial) from the Earth to the Sun at `mjd`: the low-precision
/// almanac solar longitude, good to 0.01 degree, plenty for parallaxes.
pub fn sun_direction(mjd: f64) -> [f64; 3] {
    let n = mjd + 2_400_000.5 - 2_451_545.0;
    let g = (357.528 + 0.985_600_3 * n).to_radians();
    let lambda =
        (280.460 + 0.985_647_4 * n + 1.915 * g.sin() + 0.020 * (2.0 * g).sin()).to_radians();
    let eps = (23.439 - 0.000_000_4 * n).to_radians();
    [
        lambda.cos(),
        lambda.sin() * eps.cos(),
        lambda.sin() * eps.sin(),
    ]
}

#[derive(Debug, Clone)]
pub struct SimVisit {
    pub visit: i64,
    pub band: usize,
    pub ra: f64,
    pub dec: f64,
    pub sky_rotation: f64,
    pub mjd_start: f64,
    pub exp_time: f64,
    pub airmass: f64,
    /// PSF FWHM, arcsec.
    pub seeing: f64,
    /// Sky background, nJy per square arcsec... expressed as 5-sigma depth shift (mag).
    pub depth_offset: f64,
    pub altitude: f64,
    pub azimuth: f64,
}

impl SimVisit {
    pub fn mjd_mid(&self) -> f64 {
        self.mjd_start + self.exp_time / 2.0 / 86_400.0
    }
    /// 5-sigma point-source depth of this visit, AB mag.
    pub fn depth(&self) -> f64 {
        SINGLE_VISIT_DEPTH[self.band] + self.depth_offset
    }
}

/// Half-width of a detector on the sky, degrees, and the 3x3 detector layout of the camera.
pub const DETECTOR_HALF_WIDTH: f64 = 0.6;
pub const DETECTORS: i64 = 9;

/// The detector (0..9) of a visit that sees (ra, dec), if any: a 3x3 grid of square
/// detectors on the tangent plane around the pointing.
pub fn detector_of(v: &SimVisit, ra: f64, dec: f64) -> Option<(i64, f64, f64)> {
    let (x, y) = tangent_plane(v.ra, v.dec, ra, dec)?;
    let size = 2.0 * DETECTOR_HALF_WIDTH;
    let (gx, gy) = ((x / size + 1.5).floor(), (y / size + 1.5).floor());
    if !(0.0..3.0).contains(&gx) || !(0.0..3.0).contains(&gy) {
        return None;
    }
    // Pixel coordinates: 0.2 arcsec pixels, 4000x4000 per detector.
    let px = ((x / size + 1.5) - gx) * 4000.0;
    let py = ((y / size + 1.5) - gy) * 4000.0;
    Some(((gy * 3.0 + gx) as i64, px, py))
}

/// Gnomonic projection of (ra, dec) about (ra0, dec0), degrees; None on the far side.
pub fn tangent_plane(ra0: f64, dec0: f64, ra: f64, dec: f64) -> Option<(f64, f64)> {
    let (a0, d0, a, d) = (
        ra0.to_radians(),
        dec0.to_radians(),
        ra.to_radians(),
        dec.to_radians(),
    );
    let cos_c = d0.sin() * d.sin() + d0.cos() * d.cos() * (a - a0).cos();
    if cos_c <= 0.0 {
        return None;
    }
    let x = d.cos() * (a - a0).sin() / cos_c;
    let y = (d0.cos() * d.sin() - d0.sin() * d.cos() * (a - a0).cos()) / cos_c;
    Some((x.to_degrees(), y.to_degrees()))
}

/// Visit centre of detector `det` on the sky.
pub fn detector_center(v: &SimVisit, det: i64) -> (f64, f64) {
    let size = 2.0 * DETECTOR_HALF_WIDTH;
    let (gx, gy) = ((det % 3) as f64 - 1.0, (det / 3) as f64 - 1.0);
    let (x, y) = ((gx * size).to_radians(), (gy * size).to_radians());
    let (a0, d0) = (v.ra.to_radians(), v.dec.to_radians());
    let rho = (x * x + y * y).sqrt();
    if rho == 0.0 {
        return (v.ra, v.dec);
    }
    let c = rho.atan();
    let dec = (c.cos() * d0.sin() + y * c.sin() * d0.cos() / rho).asin();
    let ra = a0 + (x * c.sin()).atan2(rho * d0.cos() * c.cos() - y * d0.sin() * c.sin());
    (ra.to_degrees().rem_euclid(360.0), dec.to_degrees())
}

/// `n` visits dithered over `footprint` across a year, cycling through the bands.
pub fn cadence(seed: u64, n: u64, footprint: Footprint) -> Vec<SimVisit> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_cade);
    let inner = Footprint {
        radius: (footprint.radius - 1.0).max(0.2),
        ..footprint
    };
    (0..n)
        .map(|i| {
            let (ra, dec) = inner.sample(&mut rng);
            let night = (i as f64 * 365.0 / n.max(1) as f64).floor();
            let altitude: f64 = rng.random_range(40.0..85.0);
            let airmass = 1.0 / altitude.to_radians().sin();
            let seeing = rng.random_range(0.55..1.3) * airmass.powf(0.6);
            SimVisit {
                visit: 2_026_000_000 + i as i64 * 100,
                band: [1, 2, 3, 4, 0, 5][i as usize % 6],
                ra,
                dec,
                sky_rotation: rng.random_range(0.0..360.0),
                mjd_start: 60_600.0 + night + rng.random_range(0.05..0.35),
                exp_time: 30.0,
                airmass,
                seeing,
                depth_offset: -1.25 * (seeing / 0.7).log10() * 2.0 - 0.2 * (airmass - 1.0)
                    + rng.random_range(-0.3..0.1),
                altitude,
                azimuth: rng.random_range(0.0..360.0),
            }
        })
        .collect()
}

/// A flux measurement: the true flux plus Gaussian noise whose sigma makes a source of
/// `depth_mag` a 5-sigma detection (background-limited).
pub fn measure(rng: &mut impl Rng, true_flux: f64, depth_mag: f64) -> (f64, f64) {
    let sigma = mag_to_njy(depth_mag) / 5.0;
    (true_flux + sigma * gaussian(rng), sigma)
}

/// Standard normal deviate (Box-Muller).
pub fn gaussian(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A deterministic generator for noise, derived from the release seed and a purpose tag.
pub fn noise_rng(seed: u64, tag: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sky() {
        let f = Footprint::for_objects(1000);
        let a: Vec<_> = objects(7, 100, f)
            .map(|o| (o.ra, o.dec, o.flux[2]))
            .collect();
        let b: Vec<_> = objects(7, 100, f)
            .map(|o| (o.ra, o.dec, o.flux[2]))
            .collect();
        assert_eq!(a, b);
        let c: Vec<_> = objects(8, 100, f)
            .map(|o| (o.ra, o.dec, o.flux[2]))
            .collect();
        assert_ne!(a, c);
    }

    #[test]
    fn objects_fall_inside_the_footprint() {
        let f = Footprint::for_objects(1000);
        for o in objects(1, 2000, f) {
            let (x, y) = tangent_plane(f.ra, f.dec, o.ra, o.dec).unwrap();
            assert!((x * x + y * y).sqrt() <= f.radius * 1.01, "{o:?}");
        }
    }

    #[test]
    fn detectors_tile_the_field_and_centres_map_back() {
        let v = &cadence(3, 1, Footprint::for_objects(1000))[0];
        for det in 0..DETECTORS {
            let (ra, dec) = detector_center(v, det);
            let (d, px, py) = detector_of(v, ra, dec).unwrap();
            assert_eq!(d, det);
            assert!((px - 2000.0).abs() < 1.0 && (py - 2000.0).abs() < 1.0);
        }
    }

    #[test]
    fn stars_move_by_proper_motion_and_parallax() {
        let f = Footprint::for_objects(1000);
        let star = objects(4, 200, f)
            .find(|o| o.is_star && o.parallax > 1.0)
            .unwrap();
        assert_eq!(
            star.position_at(REFERENCE_EPOCH_MJD + 0.0).0,
            star.position_at(REFERENCE_EPOCH_MJD).0
        );
        // Ten years on, half a year apart: the pm moves it 10 pm, the parallax swings it.
        let mas = |a: (f64, f64), b: (f64, f64)| {
            let dra = (a.0 - b.0) * a.1.to_radians().cos();
            ((dra * dra + (a.1 - b.1).powi(2)).sqrt()) * 3.6e6
        };
        let t0 = REFERENCE_EPOCH_MJD + 3652.5;
        let pm = (star.pm_ra.powi(2) + star.pm_dec.powi(2)).sqrt();
        let moved = mas((star.ra, star.dec), star.position_at(t0));
        assert!(
            (moved - 10.0 * pm).abs() <= star.parallax * 1.01,
            "{moved} {pm}"
        );
        let swing = mas(star.position_at(t0), star.position_at(t0 + 182.6));
        assert!(swing > 0.0 && swing < 2.0 * star.parallax + pm, "{swing}");
        let galaxy = objects(4, 200, f).find(|o| !o.is_star).unwrap();
        assert_eq!(galaxy.position_at(t0), (galaxy.ra, galaxy.dec));
        assert!(galaxy.morphology(0.2).is_some() && star.morphology(0.2).is_none());
    }

    #[test]
    fn the_sun_is_at_the_equinox_in_march() {
        // 2025-03-20 09:01 UTC: the Sun crosses the equator at RA 0.
        let s = sun_direction(60_754.376);
        assert!(s[2].abs() < 1e-3 && s[0] > 0.999, "{s:?}");
    }

    #[test]
    fn noise_matches_depth() {
        let mut rng = noise_rng(1, 2);
        let (_, sigma) = measure(&mut rng, 0.0, 24.0);
        assert!((mag_to_njy(24.0) / sigma - 5.0).abs() < 1e-9);
        assert!((njy_to_mag(mag_to_njy(21.3)) - 21.3).abs() < 1e-12);
    }
}
