//! A DIAObject's proper motion and parallax (DMS-REQ-0271's summary positions with their
//! motion): its DIASources' positions, as offsets on the tangent plane at its first
//! source, fitted by weighted least squares for an offset, a proper motion and a parallax
//! whose factors are the Sun's direction projected on the plane (the model of
//! [`crate::sky::apparent_position`]). The normal equations are sums over sources, kept
//! running, so an update costs the same however many sources an object has.
//!
//! A motion is only fitted once the sources span enough time to tell it from the noise
//! and from each other: a month for proper motion, and half a year (Earth's orbit seen from
//! both sides) for parallax as well.
use crate::sky::{sun_direction, tangent_axes, tangent_plane};

/// Days of sources before a proper motion is fitted.
pub const MIN_PM_SPAN_DAYS: f64 = 30.0;
/// Days of sources before a parallax is fitted too.
pub const MIN_PARALLAX_SPAN_DAYS: f64 = 180.0;

/// Milliarcseconds per degree.
const MAS: f64 = 3.6e6;

/// A fitted motion: proper motion in RA (times cos dec) and Dec, mas/yr, and parallax, mas,
/// each with its error; the fit's chi-squared over `ndata` coordinates (two per source,
/// those with a usable error).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Motion {
    pub pm_ra: f64,
    pub pm_ra_err: f64,
    pub pm_dec: f64,
    pub pm_dec_err: f64,
    /// None until the sources span [`MIN_PARALLAX_SPAN_DAYS`].
    pub parallax: Option<(f64, f64)>,
    pub chi2: f64,
    pub ndata: u32,
}

/// The running normal equations of the astrometric model.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Astrometry {
    /// The first source: RA, Dec (degrees) and time (MJD), the tangent point and epoch.
    reference: Option<(f64, f64, f64)>,
    /// Parameters: offsets east and north (mas), proper motion east and north (mas/yr),
    /// parallax (mas).
    normal: [[f64; 5]; 5],
    rhs: [f64; 5],
    sum_wr2: f64,
    /// Sources added, and the coordinates among them with a usable error.
    n: u32,
    rows: u32,
    first_mjd: f64,
    last_mjd: f64,
}

impl Astrometry {
    /// Adds a source at (ra, dec) with 1-sigma errors (degrees) observed at `mjd`.
    /// A source without a usable position or error adds nothing.
    pub fn add(&mut self, ra: f64, dec: f64, ra_err: f64, dec_err: f64, mjd: f64) {
        let usable = |v: f64, err: f64| v.is_finite() && err > 0.0 && err.is_finite();
        if !(usable(ra, ra_err) || usable(dec, dec_err)) || !(ra.is_finite() && dec.is_finite()) {
            return;
        }
        let (ra0, dec0, t0) = self.reference.unwrap_or((ra, dec, mjd));
        // A source on the far side of the sky from its object is no position of it.
        let Some((xi, eta)) = tangent_plane(ra0, dec0, ra, dec) else {
            return;
        };
        self.reference = Some((ra0, dec0, t0));
        if self.n == 0 {
            (self.first_mjd, self.last_mjd) = (mjd, mjd);
        }
        self.first_mjd = self.first_mjd.min(mjd);
        self.last_mjd = self.last_mjd.max(mjd);
        let (east, north) = tangent_axes(ra0, dec0);
        let sun = sun_direction(mjd);
        let dot = |a: [f64; 3], b: [f64; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
        let years = (mjd - t0) / 365.25;
        let rows = [
            (
                [1.0, 0.0, years, 0.0, dot(sun, east)],
                xi * MAS,
                ra_err * MAS,
            ),
            (
                [0.0, 1.0, 0.0, years, dot(sun, north)],
                eta * MAS,
                dec_err * MAS,
            ),
        ];
        for (a, value, err) in rows {
            if !(err > 0.0 && err.is_finite() && value.is_finite()) {
                continue;
            }
            let w = 1.0 / (err * err);
            for i in 0..5 {
                self.rhs[i] += w * a[i] * value;
                for j in 0..5 {
                    self.normal[i][j] += w * a[i] * a[j];
                }
            }
            self.sum_wr2 += w * value * value;
            self.rows += 1;
        }
        self.n += 1;
    }

    /// The motion, once the sources span long enough (see the module's doc).
    pub fn motion(&self) -> Option<Motion> {
        let span = self.last_mjd - self.first_mjd;
        if self.n < 3 || self.rows <= 5 || span < MIN_PM_SPAN_DAYS {
            return None;
        }
        // Without the parallax, its row and column leave the system.
        let k = if span >= MIN_PARALLAX_SPAN_DAYS { 5 } else { 4 };
        let a: Vec<Vec<f64>> = (0..k).map(|i| self.normal[i][..k].to_vec()).collect();
        let inv = crate::measurement::invert(a)?;
        let p: Vec<f64> = (0..k)
            .map(|i| (0..k).map(|j| inv[i][j] * self.rhs[j]).sum())
            .collect();
        let err = |i: usize| inv[i][i].max(0.0).sqrt();
        // At the solution, chi² = Σ w v² − pᵀ b.
        let chi2 = (self.sum_wr2 - (0..k).map(|i| p[i] * self.rhs[i]).sum::<f64>()).max(0.0);
        Some(Motion {
            pm_ra: p[2],
            pm_ra_err: err(2),
            pm_dec: p[3],
            pm_dec_err: err(3),
            parallax: (k == 5).then(|| (p[4], err(4))),
            chi2,
            ndata: self.rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sky::apparent_position;
    use crate::testkit::Normal;

    /// Sources of a star with (pm_ra, pm_dec, parallax) every few days over `days`, with
    /// 5 mas of noise per coordinate.
    fn observed(days: f64, truth: (f64, f64, f64), seed: u64) -> Astrometry {
        let (ra, dec) = (150.0, -30.0);
        let mut noise = Normal(seed);
        let mut a = Astrometry::default();
        let err = 5.0 / MAS;
        let mut t = 60_000.0;
        while t <= 60_000.0 + days {
            let (r, d) = apparent_position(ra, dec, truth.0, truth.1, truth.2, 60_000.0, t);
            let r = r + noise.next() * err / dec.to_radians().cos();
            let d = d + noise.next() * err;
            a.add(r, d, err, err, t);
            t += 3.7;
        }
        a
    }

    #[test]
    fn two_years_of_sources_give_the_proper_motion_and_parallax() {
        let truth = (-42.0, 17.0, 8.5);
        let m = observed(730.0, truth, 3).motion().expect("a motion");
        let (plx, plx_err) = m.parallax.expect("a parallax");
        for (got, want, err) in [
            (m.pm_ra, truth.0, m.pm_ra_err),
            (m.pm_dec, truth.1, m.pm_dec_err),
            (plx, truth.2, plx_err),
        ] {
            assert!(err > 0.0 && err < 2.0, "{m:?}");
            assert!((got - want).abs() < 4.0 * err, "{got} {want} {err} {m:?}");
        }
        // Chi-squared of the noise: one per coordinate, less the five parameters.
        let dof = f64::from(m.ndata) - 5.0;
        assert!((m.chi2 / dof - 1.0).abs() < 0.25, "{m:?}");
    }

    #[test]
    fn a_short_span_gives_no_motion_then_proper_motion_without_parallax() {
        assert_eq!(observed(10.0, (100.0, 0.0, 0.0), 1).motion(), None);
        let m = observed(90.0, (100.0, -50.0, 0.0), 2)
            .motion()
            .expect("a motion");
        assert_eq!(m.parallax, None);
        assert!((m.pm_ra - 100.0).abs() < 4.0 * m.pm_ra_err, "{m:?}");
        assert!((m.pm_dec + 50.0).abs() < 4.0 * m.pm_dec_err, "{m:?}");
    }

    #[test]
    fn sources_without_errors_add_nothing_but_do_not_break_the_fit() {
        let mut a = observed(400.0, (0.0, 0.0, 0.0), 4);
        let before = a;
        a.add(150.0, -30.0, 0.0, f64::NAN, 60_500.0);
        a.add(f64::NAN, -30.0, 1e-6, 1e-6, 60_600.0);
        assert_eq!(a, before);
        let m = a.motion().expect("a motion");
        assert_eq!(m.ndata, 2 * before.n);
        assert!(m.pm_ra.abs() < 4.0 * m.pm_ra_err, "{m:?}");
    }
}
