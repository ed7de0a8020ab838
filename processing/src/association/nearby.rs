//! Nearby Objects (DMS-REQ-0271, 0324): the stars and galaxies of the Object catalogue
//! around a DIAObject or a DIASource, nearest first, at most three of each within 60
//! arcsec, each with the probability that the DIAObject (or DIASource) is that Object.
//!
//! The probability is positional only, as DMS-REQ-0324 asks: the Objects within the radius
//! compete for the one identity, beside the hypothesis that the catalogue holds no
//! counterpart (a hostless transient, an artefact) with prior `1 - counterpart_prior`.
//! An Object at distance `d` weighs as the likelihood ratio of Sutherland & Saunders
//! (1992), `exp(-d²/2σ²) / (2πσ² ρ)`: the offset's Gaussian density against the chance of
//! an unrelated Object there, `ρ` being the catalogue's density around the position and
//! `σ²` the two positions' variances per axis plus a shared systematic floor. A supernova
//! half an arcsecond from its host's centre is thus near that galaxy but not the galaxy; a
//! variable star is its own Object.
//!
//! The catalogue is indexed by HEALPix cells of order 11 (1.7 arcmin), so a search costs
//! the Objects of the few cells a 60 arcsec cone touches.
use std::collections::HashMap;

use cdshealpix::nested;

use crate::wcs::SkyCoord;

/// HEALPix order of the index: cells of 1.7 arcmin, about the search radius.
const ORDER: u8 = 11;

/// Whether an Object is a point source or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Star,
    Galaxy,
}

/// An Object of the catalogue, as the match needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CatalogObject {
    pub id: i64,
    pub position: SkyCoord,
    /// Error of the position per axis (1 sigma), arcsec.
    pub position_err: f64,
    pub kind: ObjectKind,
}

/// What counts as nearby, and the match's priors.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NearbyConfig {
    /// Objects within this distance are near (diaNearbyObjRadius), arcsec.
    pub radius_arcsec: f64,
    /// At most this many stars (diaNearbyObjMaxStar) and galaxies (diaNearbyObjMaxGalaxy).
    pub max_stars: usize,
    pub max_galaxies: usize,
    /// Prior probability that a DIAObject is one of the catalogue's Objects at all.
    pub counterpart_prior: f64,
    /// Astrometric error the two positions share beyond their own, per axis, arcsec.
    pub systematic_arcsec: f64,
}

impl Default for NearbyConfig {
    fn default() -> Self {
        Self {
            radius_arcsec: 60.0,
            max_stars: 3,
            max_galaxies: 3,
            counterpart_prior: 0.5,
            systematic_arcsec: 0.02,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NearbyError {
    #[error("the nearby radius must be above 0 and at most 1 degree, not {0} arcsec")]
    Radius(f64),
    #[error("the counterpart prior must lie strictly between 0 and 1, not {0}")]
    Prior(f64),
    #[error("the systematic error must be finite and not negative, not {0} arcsec")]
    Systematic(f64),
}

impl NearbyConfig {
    pub fn validate(&self) -> Result<(), NearbyError> {
        if !(self.radius_arcsec > 0.0 && self.radius_arcsec <= 3600.0) {
            return Err(NearbyError::Radius(self.radius_arcsec));
        }
        if !(self.counterpart_prior > 0.0 && self.counterpart_prior < 1.0) {
            return Err(NearbyError::Prior(self.counterpart_prior));
        }
        if !(self.systematic_arcsec >= 0.0 && self.systematic_arcsec.is_finite()) {
            return Err(NearbyError::Systematic(self.systematic_arcsec));
        }
        Ok(())
    }
}

/// One nearby Object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearbyObject {
    pub object_id: i64,
    pub kind: ObjectKind,
    pub distance_arcsec: f64,
    /// Natural log of the probability that the DIAObject is this Object.
    pub ln_p: f64,
}

/// The Object catalogue of a region, indexed on the sky.
#[derive(Debug, Clone)]
pub struct ObjectIndex {
    config: NearbyConfig,
    objects: Vec<CatalogObject>,
    cells: HashMap<u64, Vec<usize>>,
}

impl ObjectIndex {
    pub fn new(config: NearbyConfig, objects: Vec<CatalogObject>) -> Result<Self, NearbyError> {
        config.validate()?;
        let mut cells: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, o) in objects.iter().enumerate() {
            let p = o.position;
            cells
                .entry(nested::hash(
                    ORDER,
                    p.ra().to_radians(),
                    p.dec().to_radians(),
                ))
                .or_default()
                .push(i);
        }
        Ok(Self {
            config,
            objects,
            cells,
        })
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The nearest stars and galaxies around `position` (error per axis `position_err`,
    /// arcsec), nearest first.
    pub fn nearby(&self, position: SkyCoord, position_err: f64) -> Vec<NearbyObject> {
        let c = &self.config;
        let radius_deg = c.radius_arcsec / 3600.0;
        let mut within: Vec<(f64, &CatalogObject)> = nested::cone_coverage_approx_flat(
            ORDER,
            position.ra().to_radians(),
            position.dec().to_radians(),
            radius_deg.to_radians(),
        )
        .iter()
        .filter_map(|cell| self.cells.get(cell))
        .flatten()
        .map(|&i| &self.objects[i])
        .map(|o| (position.separation(&o.position) * 3600.0, o))
        .filter(|(d, _)| *d <= c.radius_arcsec)
        .collect();
        within.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Unrelated Objects' density here, per arcsec² (one at least, so a lone Object
        // is not certain to be the counterpart).
        let area = std::f64::consts::PI * c.radius_arcsec * c.radius_arcsec;
        let density = within.len().max(1) as f64 / area;
        // An error that could not be measured counts as none (the floor remains).
        let squared = |e: f64| if e.is_finite() { e * e } else { 0.0 };
        let ln_ratio: Vec<f64> = within
            .iter()
            .map(|(d, o)| {
                let var =
                    squared(position_err) + squared(o.position_err) + squared(c.systematic_arcsec);
                let var = var.max(1e-12);
                -d * d / (2.0 * var) - (std::f64::consts::TAU * var * density).ln()
            })
            .collect();
        let none = ((1.0 - c.counterpart_prior) / c.counterpart_prior).ln();
        let ln_total = log_sum_exp(ln_ratio.iter().copied().chain([none]));
        let (mut stars, mut galaxies) = (0, 0);
        within
            .iter()
            .zip(&ln_ratio)
            .filter(|((_, o), _)| {
                let (n, max) = match o.kind {
                    ObjectKind::Star => (&mut stars, c.max_stars),
                    ObjectKind::Galaxy => (&mut galaxies, c.max_galaxies),
                };
                *n += 1;
                *n <= max
            })
            .map(|((d, o), lr)| NearbyObject {
                object_id: o.id,
                kind: o.kind,
                distance_arcsec: *d,
                ln_p: lr - ln_total,
            })
            .collect()
    }
}

fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ra: f64, dec: f64) -> SkyCoord {
        SkyCoord::new(ra, dec).unwrap()
    }

    fn object(id: i64, ra: f64, dec: f64, kind: ObjectKind) -> CatalogObject {
        CatalogObject {
            id,
            position: at(ra, dec),
            position_err: 0.02,
            kind,
        }
    }

    /// A field of Objects on a grid 10 arcsec apart, alternately stars and galaxies.
    fn field() -> Vec<CatalogObject> {
        let step = 10.0 / 3600.0;
        let mut out = Vec::new();
        for i in 0..40 {
            for j in 0..40 {
                let kind = if (i + j) % 2 == 0 {
                    ObjectKind::Star
                } else {
                    ObjectKind::Galaxy
                };
                let dec = -40.0 + (j as f64 - 20.0) * step;
                let ra = 57.0 + (i as f64 - 20.0) * step / dec.to_radians().cos();
                out.push(object(i * 100 + j, ra, dec, kind));
            }
        }
        out
    }

    #[test]
    fn three_stars_and_three_galaxies_nearest_first_within_the_radius() {
        let index = ObjectIndex::new(NearbyConfig::default(), field()).unwrap();
        let near = index.nearby(at(57.0, -40.0), 0.05);
        let kinds = |k| near.iter().filter(|n| n.kind == k).count();
        assert_eq!(kinds(ObjectKind::Star), 3);
        assert_eq!(kinds(ObjectKind::Galaxy), 3);
        assert!(
            near.windows(2)
                .all(|w| w[0].distance_arcsec <= w[1].distance_arcsec)
        );
        // The Object on the position first: the star at the grid's centre.
        assert_eq!(near[0].object_id, 20 * 100 + 20);
        assert!(near[0].distance_arcsec < 1e-6);
        // Its neighbours 10 arcsec away are galaxies; the next stars are at 14.1 arcsec.
        assert!(near.iter().all(|n| n.distance_arcsec <= 14.2 + 1e-6));
    }

    #[test]
    fn nothing_beyond_the_radius_and_none_from_an_empty_catalogue() {
        let index = ObjectIndex::new(NearbyConfig::default(), field()).unwrap();
        // Eight arcminutes beyond the grid's edge.
        assert!(index.nearby(at(57.0, -39.8), 0.05).is_empty());
        let empty = ObjectIndex::new(NearbyConfig::default(), Vec::new()).unwrap();
        assert!(empty.is_empty());
        assert!(empty.nearby(at(57.0, -40.0), 0.05).is_empty());
    }

    #[test]
    fn the_coincident_object_is_probable_and_offset_ones_are_not() {
        let index = ObjectIndex::new(NearbyConfig::default(), field()).unwrap();
        // 0.03 arcsec from the centre star: well within the errors.
        let near = index.nearby(at(57.0, -40.0 + 0.03 / 3600.0), 0.03);
        let p: Vec<f64> = near.iter().map(|n| n.ln_p.exp()).collect();
        assert!(p[0] > 0.99, "{p:?}");
        assert!(p[1..].iter().all(|p| *p < 1e-6), "{p:?}");
        // Half an arcsecond off (a supernova in its host): no Object is likely.
        let near = index.nearby(at(57.0, -40.0 + 0.5 / 3600.0), 0.03);
        assert_eq!(near[0].object_id, 20 * 100 + 20);
        assert!(near[0].ln_p.exp() < 1e-3, "{near:?}");
        // Probabilities of one position sum to at most one.
        let total: f64 = index
            .nearby(at(57.0, -40.0 + 0.05 / 3600.0), 0.05)
            .iter()
            .map(|n| n.ln_p.exp())
            .sum();
        assert!(total <= 1.0 + 1e-12, "{total}");
    }

    #[test]
    fn a_lone_object_is_no_more_certain_than_the_prior_allows() {
        let index = ObjectIndex::new(
            NearbyConfig::default(),
            vec![object(1, 57.0, -40.0, ObjectKind::Galaxy)],
        )
        .unwrap();
        let near = index.nearby(at(57.0, -40.0), 0.02);
        assert_eq!(near.len(), 1);
        let p = near[0].ln_p.exp();
        assert!(p > 0.99 && p < 1.0, "{p}");
        // 30 arcsec away it is near, and surely not the same.
        let near = index.nearby(at(57.0, -40.0 + 30.0 / 3600.0), 0.02);
        assert_eq!(near.len(), 1);
        assert!((near[0].distance_arcsec - 30.0).abs() < 1e-6);
        assert!(near[0].ln_p < -100.0);
    }

    #[test]
    fn an_unmeasured_error_leaves_the_others() {
        let mut objects = field();
        for o in &mut objects {
            o.position_err = f64::NAN;
        }
        let index = ObjectIndex::new(NearbyConfig::default(), objects).unwrap();
        let near = index.nearby(at(57.0, -40.0 + 0.03 / 3600.0), f64::NAN);
        assert!(near.iter().all(|n| n.ln_p.is_finite()), "{near:?}");
        // With the floor of 0.02 arcsec alone, 0.03 arcsec off is a 1.5-sigma offset.
        assert!(near[0].ln_p.exp() > 0.9, "{near:?}");
    }

    #[test]
    fn bad_configurations_are_refused() {
        let with = |f: fn(&mut NearbyConfig)| {
            let mut c = NearbyConfig::default();
            f(&mut c);
            ObjectIndex::new(c, Vec::new()).err()
        };
        assert_eq!(
            with(|c| c.radius_arcsec = 0.0),
            Some(NearbyError::Radius(0.0))
        );
        assert_eq!(
            with(|c| c.counterpart_prior = 1.0),
            Some(NearbyError::Prior(1.0))
        );
        assert_eq!(
            with(|c| c.systematic_arcsec = f64::NAN).map(|e| e.to_string().contains("systematic")),
            Some(true)
        );
    }
}
