//! Solar system association (DMS-REQ-0285, 0288): before DIASources go to DIAObjects, the
//! positive ones are matched to where known solar system objects were predicted to be at
//! the visit's time (from their orbits, [`crate::orbits`]), one to one, nearest first,
//! within a radius that grows with the prediction's uncertainty. A matched DIASource
//! belongs to its SSObject and starts no DIAObject.
use crate::dia::DiaSource;
use crate::measurement::Flux;
use crate::orbits::{Ephemeris, hg_phase};
use crate::sky::{BANDS, njy_to_mag};
use crate::wcs::SkyCoord;

/// A solar system object's summary from its DIASources (the SSObject of DMS-REQ-0273): how
/// many and over what arc, and per band its absolute magnitude H, the weighted mean of what
/// each flux gives once the distances and the phase function are taken out, the phase
/// function's slope held at a given G (H, G system): a night's phase angles span too
/// little to fit it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SsSummary {
    pub n_obs: u32,
    pub first_mjd: f64,
    pub last_mjd: f64,
    /// Per band: Σ w H, Σ w and the count.
    bands: [(f64, f64, u32); 6],
}

impl SsSummary {
    /// Adds a DIASource's flux (nJy) in `band` at `mjd`, seen at ephemeris `eph`; `g` is the
    /// slope parameter. Fluxes that are not positive count as observations but give no H.
    pub fn add(&mut self, band: usize, mjd: f64, flux: Flux, eph: &Ephemeris, g: f64) {
        let geometry = Geometry {
            r: eph.r(),
            delta: eph.delta(),
            phase_angle: eph.phase_angle,
        };
        self.add_seen(band, mjd, flux, geometry, g);
    }

    /// [`Self::add`] with the geometry as `ap.SSSource` keeps it.
    pub fn add_seen(&mut self, band: usize, mjd: f64, flux: Flux, geometry: Geometry, g: f64) {
        let Geometry {
            r,
            delta,
            phase_angle,
        } = geometry;
        if self.n_obs == 0 {
            (self.first_mjd, self.last_mjd) = (mjd, mjd);
        }
        self.n_obs += 1;
        self.first_mjd = self.first_mjd.min(mjd);
        self.last_mjd = self.last_mjd.max(mjd);
        if band >= BANDS.len() || !(flux.value > 0.0 && flux.err > 0.0) {
            return;
        }
        let h = njy_to_mag(flux.value) - 5.0 * (r * delta).log10() - hg_phase(phase_angle, g);
        let err = 2.5 / std::f64::consts::LN_10 * flux.err / flux.value;
        let w = 1.0 / (err * err);
        let b = &mut self.bands[band];
        b.0 += w * h;
        b.1 += w;
        b.2 += 1;
    }

    /// Days between the first and the last observation.
    pub fn arc(&self) -> f64 {
        self.last_mjd - self.first_mjd
    }

    /// H in `band` with its error, and how many fluxes gave it.
    pub fn h(&self, band: usize) -> Option<(f64, f64, u32)> {
        let &(sum_wh, sum_w, n) = self.bands.get(band)?;
        (sum_w > 0.0 && n > 0).then(|| (sum_wh / sum_w, sum_w.recip().sqrt(), n))
    }
}

/// Where an object was seen from: its distances from the Sun and the observer (au) and its
/// phase angle (degrees).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub r: f64,
    pub delta: f64,
    pub phase_angle: f64,
}

/// A known object's predicted place at the visit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SsPrediction {
    pub ss_object_id: i64,
    pub position: SkyCoord,
    /// One-sigma uncertainty of the prediction, arcsec.
    pub error_arcsec: f64,
}

/// How a DIASource matched a prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SsMatch {
    pub ss_object_id: i64,
    /// Index of the prediction matched.
    pub prediction: usize,
    pub distance_arcsec: f64,
    /// 1 for the DIASource nearest the prediction, 2 for the next, ... among all positive
    /// DIASources within the search radius (Rubin's `diaDistanceRank`).
    pub rank: u32,
}

/// How far from a prediction a DIASource may be: `radius_arcsec`, or three times the
/// prediction's uncertainty when that is larger.
pub fn search_radius(p: &SsPrediction, radius_arcsec: f64) -> f64 {
    radius_arcsec.max(3.0 * p.error_arcsec)
}

/// Matches `sources` to `predictions`: at most one source per prediction and one
/// prediction per source, closest pairs first. Negative sources never match (an object
/// that moves is absent from the template, so it can only add light).
pub fn associate_solar_system(
    sources: &[DiaSource],
    predictions: &[SsPrediction],
    radius_arcsec: f64,
) -> Vec<Option<SsMatch>> {
    // Candidate pairs per prediction, nearest first, which also gives each pair's rank.
    let mut pairs: Vec<(f64, usize, usize, u32)> = Vec::new();
    for (k, p) in predictions.iter().enumerate() {
        let r = search_radius(p, radius_arcsec);
        let mut near: Vec<(f64, usize)> = sources
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_negative)
            .filter_map(|(i, s)| {
                let d = SkyCoord::new(s.ra, s.dec)?.separation(&p.position) * 3600.0;
                (d <= r).then_some((d, i))
            })
            .collect();
        near.sort_by(|a, b| a.0.total_cmp(&b.0));
        pairs.extend(
            near.into_iter()
                .enumerate()
                .map(|(rank, (d, i))| (d, i, k, rank as u32 + 1)),
        );
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = vec![None; sources.len()];
    let mut taken = vec![false; predictions.len()];
    for (d, i, k, rank) in pairs {
        if out[i].is_some() || taken[k] {
            continue;
        }
        taken[k] = true;
        out[i] = Some(SsMatch {
            ss_object_id: predictions[k].ss_object_id,
            prediction: k,
            distance_arcsec: d,
            rank,
        });
    }
    out
}
