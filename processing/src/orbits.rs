//! Solar system orbits and ephemerides (DMS-REQ-0285, 0288): heliocentric two-body
//! (Keplerian) orbits in the J2000 ecliptic frame, as the Minor Planet Center publishes
//! them; their state vectors at any time; and the geocentric ephemeris an observer needs to
//! find an asteroid on an image: the astrometric ICRS position corrected for light time, the
//! sky rates, distances, elongation, phase angle and the predicted V magnitude in the H, G
//! system (Bowell et al. 1989).
//!
//! The Earth is the Earth-Moon barycentre on its mean Keplerian orbit (Standish's
//! approximate elements, good to a few arcminutes over 1800-2050), and planets do not
//! perturb the asteroids. That is the precision of a simulation whose truth and predictions
//! come from the same model, not of a real ephemeris service: the observer is at the
//! barycentre, not at the telescope (a few arcseconds of parallax for a main-belt asteroid).
use crate::frames::Vec3;
use crate::wcs::SkyCoord;

/// The Gaussian gravitational constant: sqrt(GM_sun) in au^1.5 per day.
pub const GAUSS_K: f64 = 0.017_202_098_95;
/// GM of the Sun, au^3/day^2.
pub const GM_SUN: f64 = GAUSS_K * GAUSS_K;
/// The speed of light, au per day.
pub const LIGHT_AU_PER_DAY: f64 = 173.144_632_674;
/// Kilometres per second in one au per day.
pub const KM_S_PER_AU_DAY: f64 = 149_597_870.7 / 86_400.0;
/// MJD of J2000.0 (TT).
const J2000_MJD: f64 = 51_544.5;
/// TT minus TAI, days.
const TT_MINUS_TAI: f64 = 32.184 / 86_400.0;

/// An MJD in TAI (as the survey dates observations) in TT (as orbits are dated).
pub fn tt_from_tai(mjd_tai: f64) -> f64 {
    mjd_tai + TT_MINUS_TAI
}

#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum OrbitError {
    #[error("the orbit's {0} is not finite")]
    NotFinite(&'static str),
    #[error("semi-major axis {0} au is not positive")]
    SemiMajorAxis(f64),
    #[error("eccentricity {0} is outside [0, 1): only bound orbits are supported")]
    Eccentricity(f64),
    #[error("inclination {0} deg is outside [0, 180]")]
    Inclination(f64),
    #[error("the state vector is not on a bound orbit (specific energy {0} au^2/day^2)")]
    Unbound(f64),
}

/// A bound heliocentric orbit in the J2000 ecliptic frame: angles in radians inside, degrees
/// at the edges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeplerOrbit {
    a: f64,
    e: f64,
    i: f64,
    node: f64,
    argperi: f64,
    /// Mean anomaly at `epoch`.
    mean_anomaly: f64,
    /// MJD (TT) of the elements.
    epoch: f64,
}

impl KeplerOrbit {
    /// An orbit from its elements: semi-major axis (au), eccentricity, inclination, longitude
    /// of the ascending node, argument of perihelion and mean anomaly (degrees) at `epoch`
    /// (MJD, TT).
    pub fn new(
        a: f64,
        e: f64,
        i_deg: f64,
        node_deg: f64,
        argperi_deg: f64,
        mean_anomaly_deg: f64,
        epoch: f64,
    ) -> Result<Self, OrbitError> {
        for (v, name) in [
            (a, "semi-major axis"),
            (e, "eccentricity"),
            (i_deg, "inclination"),
            (node_deg, "node"),
            (argperi_deg, "argument of perihelion"),
            (mean_anomaly_deg, "mean anomaly"),
            (epoch, "epoch"),
        ] {
            if !v.is_finite() {
                return Err(OrbitError::NotFinite(name));
            }
        }
        if a <= 0.0 {
            return Err(OrbitError::SemiMajorAxis(a));
        }
        if !(0.0..1.0).contains(&e) {
            return Err(OrbitError::Eccentricity(e));
        }
        if !(0.0..=180.0).contains(&i_deg) {
            return Err(OrbitError::Inclination(i_deg));
        }
        let tau = std::f64::consts::TAU;
        Ok(Self {
            a,
            e,
            i: i_deg.to_radians(),
            node: node_deg.to_radians().rem_euclid(tau),
            argperi: argperi_deg.to_radians().rem_euclid(tau),
            mean_anomaly: mean_anomaly_deg.to_radians().rem_euclid(tau),
            epoch,
        })
    }

    /// The orbit through heliocentric ecliptic position `r` (au) with velocity `v`
    /// (au/day) at `epoch` (MJD, TT).
    pub fn from_state(r: Vec3, v: Vec3, epoch: f64) -> Result<Self, OrbitError> {
        let rn = r.norm();
        let energy = v.dot(v) / 2.0 - GM_SUN / rn;
        if !energy.is_finite() {
            return Err(OrbitError::NotFinite("state vector"));
        }
        if energy >= 0.0 {
            return Err(OrbitError::Unbound(energy));
        }
        let a = -GM_SUN / (2.0 * energy);
        let h = r.cross(v);
        let e_vec = v.cross(h) * (1.0 / GM_SUN) - r.unit();
        let e = e_vec.norm();
        let i = (h.z / h.norm()).clamp(-1.0, 1.0).acos();
        // The node line; along x when the orbit lies in the ecliptic.
        let n = Vec3::new(-h.y, h.x, 0.0);
        let node_dir = if n.norm() > 1e-14 * h.norm() {
            n.unit()
        } else {
            Vec3::new(1.0, 0.0, 0.0)
        };
        let node = node_dir.y.atan2(node_dir.x);
        let hu = h.unit();
        // Angles in the orbit's plane, from the node line.
        let in_plane = |w: Vec3| hu.cross(node_dir).dot(w).atan2(node_dir.dot(w));
        // Perihelion; at the node for a circular orbit.
        let argperi = if e > 1e-12 { in_plane(e_vec) } else { 0.0 };
        let true_anomaly = in_plane(r) - argperi;
        let big_e = ((1.0 - e * e).sqrt() * true_anomaly.sin()).atan2(e + true_anomaly.cos());
        let mean_anomaly = big_e - e * big_e.sin();
        Self::new(
            a,
            e,
            i.to_degrees(),
            node.to_degrees(),
            argperi.to_degrees(),
            mean_anomaly.to_degrees(),
            epoch,
        )
    }

    pub fn a(&self) -> f64 {
        self.a
    }
    pub fn e(&self) -> f64 {
        self.e
    }
    /// Perihelion distance, au.
    pub fn q(&self) -> f64 {
        self.a * (1.0 - self.e)
    }
    pub fn i_deg(&self) -> f64 {
        self.i.to_degrees()
    }
    pub fn node_deg(&self) -> f64 {
        self.node.to_degrees()
    }
    pub fn argperi_deg(&self) -> f64 {
        self.argperi.to_degrees()
    }
    pub fn mean_anomaly_deg(&self) -> f64 {
        self.mean_anomaly.to_degrees()
    }
    pub fn epoch(&self) -> f64 {
        self.epoch
    }
    /// Mean motion, degrees per day.
    pub fn mean_motion_deg(&self) -> f64 {
        (GAUSS_K / self.a.powf(1.5)).to_degrees()
    }
    /// Orbital period, days.
    pub fn period(&self) -> f64 {
        360.0 / self.mean_motion_deg()
    }
    /// Time of the perihelion passage nearest the epoch, MJD (TT).
    pub fn perihelion_time(&self) -> f64 {
        let m = self.mean_anomaly_deg();
        let m = if m > 180.0 { m - 360.0 } else { m };
        self.epoch - m / self.mean_motion_deg()
    }
    /// The same orbit with its mean anomaly moved by `delta_deg` (an along-track error).
    pub fn with_mean_anomaly_offset(&self, delta_deg: f64) -> Self {
        Self {
            mean_anomaly: (self.mean_anomaly + delta_deg.to_radians())
                .rem_euclid(std::f64::consts::TAU),
            ..*self
        }
    }

    /// Heliocentric ecliptic position (au) and velocity (au/day) at `mjd` (TT).
    pub fn state_at(&self, mjd: f64) -> (Vec3, Vec3) {
        let n = GAUSS_K / self.a.powf(1.5);
        let m = self.mean_anomaly + n * (mjd - self.epoch);
        kepler_state(self.a, self.e, self.i, self.node, self.argperi, m)
    }
}

/// Eccentric anomaly from mean anomaly (Newton's method from a start that converges for
/// every bound orbit).
fn eccentric_anomaly(m: f64, e: f64) -> f64 {
    let m = m.rem_euclid(std::f64::consts::TAU);
    let mut big_e = if e < 0.8 { m } else { std::f64::consts::PI };
    for _ in 0..50 {
        let step = (big_e - e * big_e.sin() - m) / (1.0 - e * big_e.cos());
        big_e -= step;
        if step.abs() < 1e-15 {
            break;
        }
    }
    big_e
}

/// Position and velocity on an ellipse with these elements (radians) at mean anomaly `m`.
fn kepler_state(a: f64, e: f64, i: f64, node: f64, argperi: f64, m: f64) -> (Vec3, Vec3) {
    let big_e = eccentric_anomaly(m, e);
    let (se, ce) = big_e.sin_cos();
    let b = a * (1.0 - e * e).sqrt();
    let n = GAUSS_K / a.powf(1.5);
    let edot = n / (1.0 - e * ce);
    let (xp, yp) = (a * (ce - e), b * se);
    let (vxp, vyp) = (-a * se * edot, b * ce * edot);
    let (so, co) = node.sin_cos();
    let (sw, cw) = argperi.sin_cos();
    let (si, ci) = i.sin_cos();
    let p = Vec3::new(cw * co - sw * ci * so, cw * so + sw * ci * co, sw * si);
    let q = Vec3::new(-sw * co - cw * ci * so, -sw * so + cw * ci * co, cw * si);
    (p * xp + q * yp, p * vxp + q * vyp)
}

/// The Earth-Moon barycentre's heliocentric ecliptic position and velocity at `mjd` (TT),
/// from its mean elements and their rates (Standish, "Keplerian elements for approximate
/// positions of the major planets", table 1, 1800-2050).
pub fn earth_state(mjd: f64) -> (Vec3, Vec3) {
    let t = (mjd - J2000_MJD) / 36_525.0;
    let a = 1.000_002_61 + 0.000_005_62 * t;
    let e = 0.016_711_23 - 0.000_043_92 * t;
    let i = (-0.000_015_31 - 0.012_946_68 * t).to_radians();
    let mean_longitude = (100.464_571_66 + 35_999.372_449_81 * t).to_radians();
    let perihelion_longitude = (102.937_681_93 + 0.323_273_64 * t).to_radians();
    let node = 0.0;
    kepler_state(
        a,
        e,
        i,
        node,
        perihelion_longitude - node,
        mean_longitude - perihelion_longitude,
    )
}

/// Where and how an object appears from the Earth at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ephemeris {
    /// Astrometric ICRS position (light-time corrected).
    pub position: SkyCoord,
    /// The object's heliocentric position (au) and velocity (au/day) at light-emission
    /// time, ICRS axes.
    pub helio: Vec3,
    pub helio_velocity: Vec3,
    /// The object relative to the observer at light-emission time, ICRS axes.
    pub topo: Vec3,
    pub topo_velocity: Vec3,
    /// Sky motion, degrees per day: in right ascension times cos(dec), and in declination.
    pub rate_ra: f64,
    pub rate_dec: f64,
    /// Sun-observer-object angle, degrees.
    pub elongation: f64,
    /// Sun-object-observer angle, degrees.
    pub phase_angle: f64,
}

impl Ephemeris {
    /// Distance from the observer, au.
    pub fn delta(&self) -> f64 {
        self.topo.norm()
    }
    /// Distance from the Sun, au.
    pub fn r(&self) -> f64 {
        self.helio.norm()
    }
    /// Rate of change of the distance from the observer, au/day (positive receding).
    pub fn delta_rate(&self) -> f64 {
        self.topo_velocity.dot(self.topo.unit())
    }
    /// Rate of change of the distance from the Sun, au/day (positive receding).
    pub fn r_rate(&self) -> f64 {
        self.helio_velocity.dot(self.helio.unit())
    }
    /// Total sky rate, degrees per day.
    pub fn rate(&self) -> f64 {
        self.rate_ra.hypot(self.rate_dec)
    }
    /// The predicted V magnitude of an object of absolute magnitude `h` and slope `g`.
    pub fn v_magnitude(&self, h: f64, g: f64) -> f64 {
        h + 5.0 * (self.r() * self.delta()).log10() + hg_phase(self.phase_angle, g)
    }
}

/// The H, G phase function's magnitude term at `phase_angle` degrees (Bowell et al. 1989).
pub fn hg_phase(phase_angle: f64, g: f64) -> f64 {
    let t = (phase_angle.to_radians() / 2.0).tan();
    let phi1 = (-3.33 * t.powf(0.63)).exp();
    let phi2 = (-1.87 * t.powf(1.22)).exp();
    -2.5 * ((1.0 - g) * phi1 + g * phi2).log10()
}

/// The geocentric ephemeris of `orbit` at `mjd` (TT), light time included.
pub fn ephemeris(orbit: &KeplerOrbit, mjd: f64) -> Ephemeris {
    let (earth, earth_v) = earth_state(mjd);
    let mut emitted = mjd;
    let (mut r, mut v) = orbit.state_at(emitted);
    // Two iterations converge to well under a millisecond for anything beyond the Moon.
    for _ in 0..3 {
        emitted = mjd - (r - earth).norm() / LIGHT_AU_PER_DAY;
        (r, v) = orbit.state_at(emitted);
    }
    let rho = r - earth;
    let rho_v = v - earth_v;
    let (rho_eq, rho_v_eq) = (rho.ecliptic_to_equatorial(), rho_v.ecliptic_to_equatorial());
    let position = rho_eq.sky().expect("a non-zero distance");
    // The motion across the line of sight, radians per day, on the local east and north.
    let u = rho_eq.unit();
    let across = (rho_v_eq - u * rho_v_eq.dot(u)) * (1.0 / rho_eq.norm());
    let (ra, dec) = (position.ra().to_radians(), position.dec().to_radians());
    let east = Vec3::new(-ra.sin(), ra.cos(), 0.0);
    let north = Vec3::new(-dec.sin() * ra.cos(), -dec.sin() * ra.sin(), dec.cos());
    Ephemeris {
        position,
        helio: r.ecliptic_to_equatorial(),
        helio_velocity: v.ecliptic_to_equatorial(),
        topo: rho_eq,
        topo_velocity: rho_v_eq,
        rate_ra: across.dot(east).to_degrees(),
        rate_dec: across.dot(north).to_degrees(),
        elongation: (earth * -1.0).angle_to(rho).to_degrees(),
        phase_angle: (r * -1.0).angle_to(rho * -1.0).to_degrees(),
    }
}

/// An orbit that puts an object at `position` seen from the Earth, `delta` au away, at
/// `mjd` (TT): heliocentric speed `speed` times the circular one, moving prograde at `tilt`
/// radians out of the ecliptic's sense of rotation. For simulating asteroids in a field.
pub fn orbit_through(
    position: SkyCoord,
    delta: f64,
    mjd: f64,
    speed: f64,
    tilt: f64,
) -> Result<KeplerOrbit, OrbitError> {
    let (earth, _) = earth_state(mjd);
    // Where the object is when the light seen at `mjd` leaves it.
    let r = earth + Vec3::towards(position).equatorial_to_ecliptic() * delta;
    let along = Vec3::new(0.0, 0.0, 1.0).cross(r).unit();
    let up = r.unit().cross(along);
    let v = (along * tilt.cos() + up * tilt.sin()) * (speed * (GM_SUN / r.norm()).sqrt());
    KeplerOrbit::from_state(r, v, mjd - delta / LIGHT_AU_PER_DAY)
}

#[cfg(test)]
mod tests;
