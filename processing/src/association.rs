//! Association (DMS-REQ-0271, 0272, 0285): each visit's DIASources are matched to the
//! DIAObjects already known, one to one and nearest first within a radius, and the rest
//! start new DIAObjects. A DIAObject's summary is updated with every source: its
//! inverse-variance weighted position, its proper motion and parallax once its sources
//! span long enough ([`astrometry`]), its first and last times, and per band the mean PSF
//! flux with its error, the scatter, the chi-square about the mean (a variability
//! statistic: about one per point for a constant source), the extremes, the mean error and
//! the steepest rise between consecutive sources; and with every visit's forced photometry
//! the weighted means of its forced fluxes on the difference and the visit image, whose
//! difference fluxes over the past year also make its light curve, searched for a period
//! ([`periodogram`]).
//!
//! A night continues the DIAObjects of the nights before: their DIASources and forced
//! sources of the past year, read back from the Level 1 database, are replayed into the
//! summaries ([`Associator::add_earlier`]) before the night's first visit.
//!
//! Candidates are found through HEALPix cells of order 14 (13 arcsec) and their neighbours,
//! so a visit costs its sources times the few objects nearby, whatever the catalog's size.
//! Sources of known solar system objects are taken out first ([`solar_system`]).
use std::collections::HashMap;

use cdshealpix::nested;

use crate::dia::DiaSource;
use crate::measurement::Flux;
use crate::sky::BANDS;
use crate::wcs::SkyCoord;

/// HEALPix order of the index: cells of 13 arcsec, well above any match radius.
const ORDER: u8 = 14;

/// How sources are matched.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssociationConfig {
    /// Sources within this distance of a DIAObject may belong to it, arcsec.
    pub radius_arcsec: f64,
}

impl Default for AssociationConfig {
    fn default() -> Self {
        Self { radius_arcsec: 1.0 }
    }
}

/// Running per-band flux statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BandFluxes {
    pub n: u32,
    sum_w: f64,
    sum_wf: f64,
    sum_wf2: f64,
    sum_f: f64,
    sum_f2: f64,
    sum_err: f64,
    n_err: u32,
    min: f64,
    max: f64,
    /// The latest flux and its time (MJD), and the steepest rise between consecutive
    /// fluxes so far, nJy a day.
    last: Option<(f64, f64)>,
    max_slope: Option<f64>,
}

impl BandFluxes {
    /// Adds a flux (nJy) and its error measured at `mjd`; fluxes arrive in time order, as
    /// visits do. A flux that is not a number counts for nothing.
    fn add(&mut self, flux: f64, err: f64, mjd: f64) {
        if !flux.is_finite() {
            return;
        }
        let w = if err > 0.0 { 1.0 / (err * err) } else { 0.0 };
        if self.n == 0 {
            (self.min, self.max) = (flux, flux);
        }
        self.n += 1;
        self.sum_w += w;
        self.sum_wf += w * flux;
        self.sum_wf2 += w * flux * flux;
        self.sum_f += flux;
        self.sum_f2 += flux * flux;
        if err.is_finite() {
            self.sum_err += err;
            self.n_err += 1;
        }
        self.min = self.min.min(flux);
        self.max = self.max.max(flux);
        if let Some((t, f)) = self.last
            && mjd > t
        {
            let slope = (flux - f) / (mjd - t);
            self.max_slope = Some(self.max_slope.map_or(slope, |m| m.max(slope)));
        }
        self.last = Some((mjd, flux));
    }

    /// The smallest and largest flux, nJy.
    pub fn min(&self) -> Option<f64> {
        (self.n > 0).then_some(self.min)
    }
    pub fn max(&self) -> Option<f64> {
        (self.n > 0).then_some(self.max)
    }

    /// The largest change a day between consecutive fluxes, nJy/day (a fall is negative).
    pub fn max_slope(&self) -> Option<f64> {
        self.max_slope
    }

    /// Mean of the fluxes' errors.
    pub fn err_mean(&self) -> Option<f64> {
        (self.n_err > 0).then(|| self.sum_err / f64::from(self.n_err))
    }

    /// Inverse-variance weighted mean, nJy.
    pub fn mean(&self) -> Option<f64> {
        (self.sum_w > 0.0).then(|| self.sum_wf / self.sum_w)
    }

    /// Error of the weighted mean.
    pub fn mean_err(&self) -> Option<f64> {
        (self.sum_w > 0.0).then(|| self.sum_w.recip().sqrt())
    }

    /// Sample standard deviation of the fluxes.
    pub fn sigma(&self) -> Option<f64> {
        (self.n > 1).then(|| {
            let n = self.n as f64;
            ((self.sum_f2 - self.sum_f * self.sum_f / n) / (n - 1.0))
                .max(0.0)
                .sqrt()
        })
    }

    /// Chi-square of the fluxes about their weighted mean.
    pub fn chi2(&self) -> Option<f64> {
        self.mean()
            .map(|m| (self.sum_wf2 - 2.0 * m * self.sum_wf + m * m * self.sum_w).max(0.0))
    }
}

/// A DIAObject and its summary.
/// What association takes from a DIASource: where, how well, how bright.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub ra: f64,
    pub dec: f64,
    pub ra_err: f64,
    pub dec_err: f64,
    pub psf_flux: Flux,
}

impl From<&DiaSource> for Detection {
    fn from(s: &DiaSource) -> Self {
        Self {
            ra: s.ra,
            dec: s.dec,
            ra_err: s.ra_err,
            dec_err: s.dec_err,
            psf_flux: s.psf_flux,
        }
    }
}

/// How far back a DIAObject's light curve and summaries reach, days.
pub const HISTORY_DAYS: f64 = 365.25;

#[derive(Debug, Clone, PartialEq)]
pub struct DiaObject {
    pub id: i64,
    /// Weighted mean position, degrees, and its errors.
    pub ra: f64,
    pub dec: f64,
    pub ra_err: f64,
    pub dec_err: f64,
    pub n_dia_sources: u32,
    pub first_mjd: f64,
    pub last_mjd: f64,
    /// Per band (ugrizy): the DIASources' PSF fluxes, and the forced PSF fluxes of every
    /// visit on the difference and on the visit image.
    pub fluxes: [BandFluxes; 6],
    pub forced: [BandFluxes; 6],
    pub science: [BandFluxes; 6],
    /// Proper motion and parallax, from the DIASources' positions.
    pub astrometry: Astrometry,
    /// Forced PSF fluxes on the difference images, over the past year.
    pub light_curve: Vec<Sample>,
    /// The light curve's best period, as last measured.
    pub periodicity: Option<Periodicity>,
    sum_w_ra: f64,
    sum_w_dec: f64,
    sum_wx: f64,
    sum_wy: f64,
    sum_wz: f64,
}

impl DiaObject {
    fn new(id: i64, s: &Detection, band: usize, mjd: f64) -> Self {
        let mut o = Self {
            id,
            ra: s.ra,
            dec: s.dec,
            ra_err: s.ra_err,
            dec_err: s.dec_err,
            n_dia_sources: 0,
            first_mjd: mjd,
            last_mjd: mjd,
            fluxes: Default::default(),
            forced: Default::default(),
            science: Default::default(),
            astrometry: Astrometry::default(),
            light_curve: Vec::new(),
            periodicity: None,
            sum_w_ra: 0.0,
            sum_w_dec: 0.0,
            sum_wx: 0.0,
            sum_wy: 0.0,
            sum_wz: 0.0,
        };
        o.add(s, band, mjd);
        o
    }

    fn add(&mut self, s: &Detection, band: usize, mjd: f64) {
        // Weighted on the unit sphere, so the mean is right across RA 0 and near the poles.
        let w = 1.0 / (s.ra_err.powi(2) + s.dec_err.powi(2)).max(1e-16);
        let (ra, dec) = (s.ra.to_radians(), s.dec.to_radians());
        self.sum_wx += w * dec.cos() * ra.cos();
        self.sum_wy += w * dec.cos() * ra.sin();
        self.sum_wz += w * dec.sin();
        let norm = (self.sum_wx.powi(2) + self.sum_wy.powi(2) + self.sum_wz.powi(2)).sqrt();
        self.dec = (self.sum_wz / norm).asin().to_degrees();
        self.ra = self
            .sum_wy
            .atan2(self.sum_wx)
            .to_degrees()
            .rem_euclid(360.0);
        self.sum_w_ra += s.ra_err.powi(-2).min(1e16);
        self.sum_w_dec += s.dec_err.powi(-2).min(1e16);
        self.ra_err = self.sum_w_ra.recip().sqrt();
        self.dec_err = self.sum_w_dec.recip().sqrt();
        self.n_dia_sources += 1;
        self.first_mjd = self.first_mjd.min(mjd);
        self.last_mjd = self.last_mjd.max(mjd);
        if band < BANDS.len() {
            self.fluxes[band].add(s.psf_flux.value, s.psf_flux.err, mjd);
        }
        self.astrometry.add(s.ra, s.dec, s.ra_err, s.dec_err, mjd);
    }

    fn position(&self) -> Option<SkyCoord> {
        SkyCoord::new(self.ra, self.dec)
    }
}

/// Where each source of a visit went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Association {
    pub dia_object_id: i64,
    /// The source started this DIAObject.
    pub created: bool,
    /// Distance to the DIAObject's position before the update, arcsec (0 for new ones).
    pub distance_arcsec: f64,
}

/// The DIAObjects of a field, indexed on the sky.
#[derive(Debug, Clone, Default)]
pub struct Associator {
    config: AssociationConfig,
    objects: Vec<DiaObject>,
    by_id: HashMap<i64, usize>,
    cells: HashMap<u64, Vec<usize>>,
}

fn cell_of(ra: f64, dec: f64) -> u64 {
    nested::hash(ORDER, ra.to_radians(), dec.to_radians())
}

impl Associator {
    pub fn new(config: AssociationConfig) -> Self {
        Self {
            config,
            ..Default::default()
        }
    }

    fn insert(&mut self, o: DiaObject) {
        let at = self.objects.len();
        self.cells.entry(cell_of(o.ra, o.dec)).or_default().push(at);
        self.by_id.insert(o.id, at);
        self.objects.push(o);
    }

    pub fn objects(&self) -> &[DiaObject] {
        &self.objects
    }

    pub fn get(&self, id: i64) -> Option<&DiaObject> {
        self.by_id.get(&id).map(|i| &self.objects[*i])
    }

    /// Adds a visit's forced photometry of DIAObject `id` (in `band`, at `mjd`): its PSF
    /// flux on the difference and on the visit image. False when there is no such object.
    pub fn add_forced(
        &mut self,
        id: i64,
        band: usize,
        mjd: f64,
        difference: Flux,
        science: Flux,
    ) -> bool {
        let Some(&i) = self.by_id.get(&id) else {
            return false;
        };
        if band < BANDS.len() {
            let o = &mut self.objects[i];
            o.forced[band].add(difference.value, difference.err, mjd);
            o.science[band].add(science.value, science.err, mjd);
            o.light_curve.push(Sample {
                mjd,
                band,
                flux: difference.value,
                err: difference.err,
            });
        }
        true
    }

    /// Adds a DIASource of an earlier visit, as read back from the Level 1 database, to
    /// DIAObject `id`, which it starts if there is none yet. Sources are to come in time
    /// order, as they were first associated.
    pub fn add_earlier(&mut self, id: i64, d: &Detection, band: usize, mjd: f64) {
        match self.by_id.get(&id) {
            Some(&i) => self.grow(i, d, band, mjd),
            None => self.insert(DiaObject::new(id, d, band, mjd)),
        }
    }

    /// Measures DIAObject `id`'s period on its light curve of the past year (the points
    /// before that are dropped). False when there is no such object.
    pub fn update_periodicity(&mut self, id: i64, search: &PeriodSearch) -> bool {
        let Some(&i) = self.by_id.get(&id) else {
            return false;
        };
        let o = &mut self.objects[i];
        let newest = o.light_curve.iter().map(|s| s.mjd).fold(f64::MIN, f64::max);
        o.light_curve.retain(|s| s.mjd >= newest - HISTORY_DAYS);
        o.periodicity = periodogram::periodicity(&o.light_curve, search);
        true
    }

    /// Adds a source to object `i`, keeping the cell index up to date as it moves.
    fn grow(&mut self, i: usize, d: &Detection, band: usize, mjd: f64) {
        let before = cell_of(self.objects[i].ra, self.objects[i].dec);
        self.objects[i].add(d, band, mjd);
        let after = cell_of(self.objects[i].ra, self.objects[i].dec);
        if before != after {
            if let Some(v) = self.cells.get_mut(&before) {
                v.retain(|x| *x != i);
            }
            self.cells.entry(after).or_default().push(i);
        }
    }

    /// DIAObjects within `radius_arcsec` of a position.
    fn near(&self, ra: f64, dec: f64, radius_arcsec: f64) -> Vec<(usize, f64)> {
        let Some(p) = SkyCoord::new(ra, dec) else {
            return Vec::new();
        };
        let centre = cell_of(ra, dec);
        let mut cells = vec![centre];
        cells.extend(nested::neighbours(ORDER, centre, false).values_vec());
        cells
            .iter()
            .filter_map(|c| self.cells.get(c))
            .flatten()
            .filter_map(|&i| {
                let d = self.objects[i].position()?.separation(&p) * 3600.0;
                (d <= radius_arcsec).then_some((i, d))
            })
            .collect()
    }

    /// Associates one visit's sources (in `band`, at `mjd`), creating DIAObjects with ids
    /// from `new_id` for those that match none. Returns one association per source.
    pub fn associate(
        &mut self,
        sources: &[DiaSource],
        band: usize,
        mjd: f64,
        mut new_id: impl FnMut() -> i64,
    ) -> Vec<Association> {
        // Every candidate pair, then nearest first, each object and source used once: two
        // sources of one visit are never the same object.
        let mut pairs: Vec<(f64, usize, usize)> = sources
            .iter()
            .enumerate()
            .flat_map(|(s, src)| {
                self.near(src.ra, src.dec, self.config.radius_arcsec)
                    .into_iter()
                    .map(move |(o, d)| (d, s, o))
            })
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut out: Vec<Option<Association>> = vec![None; sources.len()];
        let mut taken = vec![false; self.objects.len()];
        for (d, s, o) in pairs {
            if out[s].is_some() || taken[o] {
                continue;
            }
            taken[o] = true;
            out[s] = Some(Association {
                dia_object_id: self.objects[o].id,
                created: false,
                distance_arcsec: d,
            });
        }
        for (s, a) in out.iter_mut().enumerate() {
            match a {
                Some(a) => {
                    let i = self.by_id[&a.dia_object_id];
                    self.grow(i, &Detection::from(&sources[s]), band, mjd);
                }
                None => {
                    let o = DiaObject::new(new_id(), &Detection::from(&sources[s]), band, mjd);
                    *a = Some(Association {
                        dia_object_id: o.id,
                        created: true,
                        distance_arcsec: 0.0,
                    });
                    self.insert(o);
                }
            }
        }
        out.into_iter()
            .map(|a| a.expect("every source placed"))
            .collect()
    }
}

pub mod astrometry;
pub mod nearby;
pub mod periodogram;
pub mod solar_system;

use astrometry::Astrometry;
use periodogram::{PeriodSearch, Periodicity, Sample};

#[cfg(test)]
mod tests;
