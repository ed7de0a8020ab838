//! The night's solar system (DMS-REQ-0285, 0288): asteroids on Keplerian orbits that cross
//! the field during the night, drawn as trails on each visit; the orbit catalogue that alert
//! production predicts their places from (most of them, each catalogued orbit a little off
//! the true one, as real orbits are); the predictions DIASources are matched to; and the
//! rows of `ap.mpc_orbits` and `ap.SSSource`, which the alerts' `mpc_orbits` and `ssSource`
//! records are encoded from.
use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use aster_processing::association::solar_system::{SsMatch, SsPrediction, SsSummary};
use aster_processing::dia::DiaSource;
use aster_processing::frames::{ecliptic, galactic};
use aster_processing::orbits::{
    Ephemeris, KM_S_PER_AU_DAY, KeplerOrbit, ephemeris, orbit_through, tt_from_tai,
};
use aster_processing::render::Trail;
use aster_processing::sky::{Asteroid, SimVisit, gaussian, mag_to_njy};
use aster_processing::skymap::PixelGrid;
use aster_processing::wcs::SkyCoord;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::tables::Columns;

/// ssObjectIds of the night's asteroids, apart from the demo release's.
pub const FIRST_SS_OBJECT: i64 = 4_000_000_000_000;
/// One asteroid in this many is missing from the orbit catalogue (found, not predicted).
const UNLISTED_EVERY: usize = 6;
/// One-sigma along-track error of the catalogued orbits at the night, arcsec.
const ORBIT_ERROR_ARCSEC: f64 = 0.3;
/// The slope parameter of the H, G system, typical of asteroids; the simulator's, and the
/// one SSObject summaries hold fixed.
pub const G_SLOPE: f64 = 0.15;
/// Solar colours, magnitudes relative to r, in ugrizy; and V - r.
const COLOURS: [f64; 6] = [2.3, 0.45, 0.0, -0.12, -0.15, -0.17];
const V_MINUS_R: f64 = 0.2;
/// The half-month letter of the night (late November) in provisional designations, and
/// their second letters (I is not used).
const HALF_MONTH: char = 'W';
const ORDER_LETTERS: &[u8; 25] = b"ABCDEFGHJKLMNOPQRSTUVWXYZ";

/// An asteroid of the simulated sky.
#[derive(Debug, Clone)]
pub struct SimAsteroid {
    pub ss_object_id: i64,
    /// The MPC's row id.
    pub mpc_id: i32,
    /// Unpacked ("2025 WB1") and packed ("K25W01B") provisional designations.
    pub designation: String,
    pub packed: String,
    /// Where it truly goes.
    pub orbit: KeplerOrbit,
    /// What the orbit catalogue says, when it knows the object; and the 1-sigma error of
    /// its mean anomaly, degrees.
    pub catalogued: Option<(KeplerOrbit, f64)>,
    /// Absolute magnitude (V).
    pub h: f64,
}

impl SimAsteroid {
    /// Its flux in `band` as seen at this ephemeris, nJy.
    fn flux_njy(&self, eph: &Ephemeris, band: usize) -> f64 {
        mag_to_njy(eph.v_magnitude(self.h_in(band), G_SLOPE))
    }

    /// Its true absolute magnitude in `band` (AB): H (V) in the Sun's colours.
    pub fn h_in(&self, band: usize) -> f64 {
        self.h - V_MINUS_R + COLOURS[band]
    }

    /// Its straight track through `visit` (as the camera simulator draws asteroids): its
    /// place and rates at the visit's middle, which hold to a small fraction of a pixel over
    /// the visit's half minute.
    pub fn track(&self, visit: &SimVisit) -> Asteroid {
        let mid = visit.mjd_mid();
        let eph = ephemeris(&self.orbit, tt_from_tai(mid));
        Asteroid {
            id: self.ss_object_id,
            ra: eph.position.ra(),
            dec: eph.position.dec(),
            mjd0: mid,
            rate_ra: eph.rate_ra,
            rate_dec: eph.rate_dec,
            flux: std::array::from_fn(|b| self.flux_njy(&eph, b)),
        }
    }

    /// Its track on `visit`: from shutter open to close.
    pub fn trail(&self, visit: &SimVisit) -> Trail {
        let at = |mjd: f64| ephemeris(&self.orbit, tt_from_tai(mjd));
        let (open, close) = (
            at(visit.mjd_start),
            at(visit.mjd_start + visit.exp_time / 86_400.0),
        );
        Trail {
            id: self.ss_object_id,
            start: open.position,
            end: close.position,
            flux_njy: self.flux_njy(&at(visit.mjd_mid()), visit.band),
        }
    }
}

/// `n` asteroids at the places `place` draws, 1.2 to 2.5 au away, V 19 to 23.5 at
/// `mjd` (TAI), on prograde orbits near the circular speed.
pub fn asteroids(
    n: usize,
    mjd: f64,
    rng: &mut ChaCha8Rng,
    mut place: impl FnMut(&mut ChaCha8Rng) -> (f64, f64),
) -> Result<Vec<SimAsteroid>> {
    let tt = tt_from_tai(mjd);
    (0..n)
        .map(|k| {
            let (ra, dec) = place(rng);
            let position = SkyCoord::new(ra, dec).context("an asteroid off the sky")?;
            let orbit = orbit_through(
                position,
                rng.random_range(1.2..2.5),
                tt,
                rng.random_range(0.9..1.1),
                rng.random_range(-0.5..0.5),
            )
            .context("an asteroid's orbit")?;
            let eph = ephemeris(&orbit, tt);
            let h = rng.random_range(19.0..23.5) - eph.v_magnitude(0.0, G_SLOPE);
            // The catalogued orbit is off along the track: its mean anomaly's error, from the
            // angle it makes at this distance.
            let sigma = ORBIT_ERROR_ARCSEC / 3600.0 * eph.delta() / eph.r();
            let catalogued = (k % UNLISTED_EVERY != UNLISTED_EVERY - 1).then(|| {
                let off = orbit.with_mean_anomaly_offset(sigma * gaussian(rng));
                (off, sigma)
            });
            let letter = ORDER_LETTERS[k % ORDER_LETTERS.len()] as char;
            let cycle = k / ORDER_LETTERS.len();
            Ok(SimAsteroid {
                ss_object_id: FIRST_SS_OBJECT + k as i64,
                mpc_id: k as i32 + 1,
                designation: if cycle == 0 {
                    format!("2025 {HALF_MONTH}{letter}")
                } else {
                    format!("2025 {HALF_MONTH}{letter}{cycle}")
                },
                packed: format!("K25{HALF_MONTH}{cycle:02}{letter}"),
                orbit,
                catalogued,
                h,
            })
        })
        .collect()
}

/// A catalogued asteroid's predicted place at a visit.
pub struct Predicted<'a> {
    pub asteroid: &'a SimAsteroid,
    pub ephemeris: Ephemeris,
    pub prediction: SsPrediction,
}

/// Where the catalogue puts its asteroids at `mjd` (TAI), those that fall on `grid`.
pub fn predict<'a>(asteroids: &'a [SimAsteroid], mjd: f64, grid: &PixelGrid) -> Vec<Predicted<'a>> {
    let (w, h) = (grid.width() as f64, grid.height() as f64);
    asteroids
        .iter()
        .filter_map(|a| {
            let (orbit, sigma) = a.catalogued?;
            let eph = ephemeris(&orbit, tt_from_tai(mjd));
            let p = grid.wcs().sky_to_pixel(eph.position).ok()?;
            ((0.0..w).contains(&p.x) && (0.0..h).contains(&p.y)).then(|| Predicted {
                asteroid: a,
                prediction: SsPrediction {
                    ss_object_id: a.ss_object_id,
                    position: eph.position,
                    error_arcsec: sigma * 3600.0 * eph.r() / eph.delta(),
                },
                ephemeris: eph,
            })
        })
        .collect()
}

/// The rows of `ap.mpc_orbits`: the catalogue's orbits.
pub fn orbits_batch(asteroids: &[SimAsteroid], created: i64) -> Result<RecordBatch> {
    let listed: Vec<(&SimAsteroid, &KeplerOrbit, f64)> = asteroids
        .iter()
        .filter_map(|a| a.catalogued.as_ref().map(|(o, s)| (a, o, *s)))
        .collect();
    let f = |g: &dyn Fn(&KeplerOrbit) -> f64| {
        listed
            .iter()
            .map(|(_, o, _)| Some(g(o)))
            .collect::<Vec<_>>()
    };
    let n = listed.len();
    let mut c = Columns::default();
    c.i32(
        "id",
        listed.iter().map(|(a, _, _)| Some(a.mpc_id)).collect(),
    )
    .str(
        "designation",
        listed
            .iter()
            .map(|(a, _, _)| Some(a.designation.clone()))
            .collect(),
    )
    .str(
        "packed_primary_provisional_designation",
        listed
            .iter()
            .map(|(a, _, _)| Some(a.packed.clone()))
            .collect(),
    )
    .str(
        "unpacked_primary_provisional_designation",
        listed
            .iter()
            .map(|(a, _, _)| Some(a.designation.clone()))
            .collect(),
    )
    .ts("created_at", vec![Some(created); n])
    .ts("updated_at", vec![Some(created); n])
    .f64("a", f(&|o| o.a()))
    .f64("q", f(&|o| o.q()))
    .f64("e", f(&|o| o.e()))
    .f64("i", f(&|o| o.i_deg()))
    .f64("node", f(&|o| o.node_deg()))
    .f64("argperi", f(&|o| o.argperi_deg()))
    .f64("mean_anomaly", f(&|o| o.mean_anomaly_deg()))
    .f64("period", f(&|o| o.period()))
    .f64("mean_motion", f(&|o| o.mean_motion_deg()))
    .f64(
        "mean_anomaly_unc",
        listed.iter().map(|(_, _, s)| Some(*s)).collect(),
    )
    .f64("epoch_mjd", f(&|o| o.epoch()))
    .f64("h", listed.iter().map(|(a, _, _)| Some(a.h)).collect())
    .f64("g", vec![Some(G_SLOPE); n]);
    c.batch()
}

/// The rows of `ap.SSObject` for the asteroids observed: their observations' count and
/// arc, and H per band with the slope G held at [`G_SLOPE`] (the summaries' `g` and `r`
/// and `i` columns; the G12 columns stay empty, a night's phase angles cannot give them).
pub fn ss_object_batch(rows: &[(&SimAsteroid, SsSummary)]) -> Result<RecordBatch> {
    let mut c = Columns::default();
    c.i64(
        "ssObjectId",
        rows.iter().map(|(a, _)| Some(a.ss_object_id)).collect(),
    )
    .str(
        "designation",
        rows.iter()
            .map(|(a, _)| Some(a.designation.clone()))
            .collect(),
    )
    .i32(
        "nObs",
        rows.iter().map(|(_, s)| Some(s.n_obs as i32)).collect(),
    )
    .f32(
        "arc",
        rows.iter().map(|(_, s)| Some(s.arc() as f32)).collect(),
    )
    .f64(
        "firstObservationMjdTai",
        rows.iter().map(|(_, s)| Some(s.first_mjd)).collect(),
    );
    for band in ["g", "r", "i"] {
        let b = aster_processing::sky::band_index(band).context("a survey band")?;
        c.f32(
            format!("{band}_H"),
            rows.iter()
                .map(|(_, s)| s.h(b).map(|h| h.0 as f32))
                .collect(),
        )
        .f32(
            format!("{band}_HErr"),
            rows.iter()
                .map(|(_, s)| s.h(b).map(|h| h.1 as f32))
                .collect(),
        );
    }
    c.batch()
}

/// A DIASource matched to a catalogued asteroid.
pub struct SsDetection<'v, 'a> {
    pub dia_source_id: i64,
    pub source: &'v DiaSource,
    /// The visit's prediction, of an asteroid of the night (which outlives the visit).
    pub predicted: &'v Predicted<'a>,
    pub matched: SsMatch,
}

/// The rows of `ap.SSSource` for a visit's matched DIASources: where the source was seen,
/// against where the orbit put it, and the orbit's geometry at the time.
pub fn ss_source_batch(rows: &[SsDetection]) -> Result<RecordBatch> {
    struct Row {
        ecl: (f64, f64),
        gal: (f64, f64),
        /// Observed minus predicted, arcsec, east (times cos dec) and north.
        offset: (f64, f64),
    }
    let derived: Vec<Row> = rows
        .iter()
        .map(|r| {
            let seen =
                SkyCoord::new(r.source.ra, r.source.dec).context("a DIASource off the sky")?;
            let eph = &r.predicted.ephemeris;
            let dra = (seen.ra() - eph.position.ra() + 540.0).rem_euclid(360.0) - 180.0;
            Ok(Row {
                ecl: ecliptic(seen),
                gal: galactic(seen),
                offset: (
                    dra * eph.position.dec().to_radians().cos() * 3600.0,
                    (seen.dec() - eph.position.dec()) * 3600.0,
                ),
            })
        })
        .collect::<Result<_>>()?;
    let eph = |g: &dyn Fn(&Ephemeris) -> f64| {
        rows.iter()
            .map(|r| Some(g(&r.predicted.ephemeris) as f32))
            .collect::<Vec<_>>()
    };
    let kms = KM_S_PER_AU_DAY;
    // Along the predicted motion, and across it (positive to the motion's left).
    let track = |r: &SsDetection, d: &Row| {
        let e = &r.predicted.ephemeris;
        let rate = e.rate();
        let (ue, un) = if rate > 0.0 {
            (e.rate_ra / rate, e.rate_dec / rate)
        } else {
            (1.0, 0.0)
        };
        (
            d.offset.0 * ue + d.offset.1 * un,
            -d.offset.0 * un + d.offset.1 * ue,
        )
    };
    let mut c = Columns::default();
    c.i64(
        "diaSourceId",
        rows.iter().map(|r| Some(r.dia_source_id)).collect(),
    )
    .i64(
        "ssObjectId",
        rows.iter()
            .map(|r| Some(r.predicted.asteroid.ss_object_id))
            .collect(),
    )
    .str(
        "designation",
        rows.iter()
            .map(|r| Some(r.predicted.asteroid.designation.clone()))
            .collect(),
    )
    .f64("eclLambda", derived.iter().map(|d| Some(d.ecl.0)).collect())
    .f64("eclBeta", derived.iter().map(|d| Some(d.ecl.1)).collect())
    .f64("galLon", derived.iter().map(|d| Some(d.gal.0)).collect())
    .f64("galLat", derived.iter().map(|d| Some(d.gal.1)).collect())
    .f32("elongation", eph(&|e| e.elongation))
    .f32("phaseAngle", eph(&|e| e.phase_angle))
    .f32("topoRange", eph(&|e| e.delta()))
    .f32("topoRangeRate", eph(&|e| e.delta_rate() * kms))
    .f32("helioRange", eph(&|e| e.r()))
    .f32("helioRangeRate", eph(&|e| e.r_rate() * kms))
    .f64(
        "ephRa",
        rows.iter()
            .map(|r| Some(r.predicted.ephemeris.position.ra()))
            .collect(),
    )
    .f64(
        "ephDec",
        rows.iter()
            .map(|r| Some(r.predicted.ephemeris.position.dec()))
            .collect(),
    )
    .f32(
        "ephVmag",
        rows.iter()
            .map(|r| {
                Some(
                    r.predicted
                        .ephemeris
                        .v_magnitude(r.predicted.asteroid.h, G_SLOPE) as f32,
                )
            })
            .collect(),
    )
    .f32("ephRate", eph(&|e| e.rate()))
    .f32("ephRateRa", eph(&|e| e.rate_ra))
    .f32("ephRateDec", eph(&|e| e.rate_dec))
    .f32(
        "ephOffset",
        derived
            .iter()
            .map(|d| Some(d.offset.0.hypot(d.offset.1) as f32))
            .collect(),
    )
    .f64(
        "ephOffsetRa",
        derived.iter().map(|d| Some(d.offset.0)).collect(),
    )
    .f64(
        "ephOffsetDec",
        derived.iter().map(|d| Some(d.offset.1)).collect(),
    )
    .f32(
        "ephOffsetAlongTrack",
        rows.iter()
            .zip(&derived)
            .map(|(r, d)| Some(track(r, d).0 as f32))
            .collect(),
    )
    .f32(
        "ephOffsetCrossTrack",
        rows.iter()
            .zip(&derived)
            .map(|(r, d)| Some(track(r, d).1 as f32))
            .collect(),
    )
    .f32("helio_x", eph(&|e| e.helio.x))
    .f32("helio_y", eph(&|e| e.helio.y))
    .f32("helio_z", eph(&|e| e.helio.z))
    .f32("helio_vx", eph(&|e| e.helio_velocity.x * kms))
    .f32("helio_vy", eph(&|e| e.helio_velocity.y * kms))
    .f32("helio_vz", eph(&|e| e.helio_velocity.z * kms))
    .f32("helio_vtot", eph(&|e| e.helio_velocity.norm() * kms))
    .f32("topo_x", eph(&|e| e.topo.x))
    .f32("topo_y", eph(&|e| e.topo.y))
    .f32("topo_z", eph(&|e| e.topo.z))
    .f32("topo_vx", eph(&|e| e.topo_velocity.x * kms))
    .f32("topo_vy", eph(&|e| e.topo_velocity.y * kms))
    .f32("topo_vz", eph(&|e| e.topo_velocity.z * kms))
    .f32("topo_vtot", eph(&|e| e.topo_velocity.norm() * kms))
    .i32(
        "diaDistanceRank",
        rows.iter().map(|r| Some(r.matched.rank as i32)).collect(),
    );
    c.batch()
}
