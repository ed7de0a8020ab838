//! Templates for difference imaging (DMS-REQ-0280): coadds of calibrated exposures taken
//! within an epoch range (by default the year before) and an airmass range, per band,
//! resampled onto the grid they will be subtracted on. The template's PSF is the
//! inverse-variance weighted mean of its inputs' PSF moments at the grid's centre (every
//! input is a Gaussian PSF; their weighted mean is what a weighted coadd of point sources
//! shows to second order).
use crate::coadd::{CoaddConfig, CoaddInput, coadd};
use crate::image::{Exposure, Image, Mask, MaskPlane, PhotoCalib};
use crate::psf::{FieldPolynomial, GaussianPsf};
use crate::skymap::PixelGrid;
use crate::warp::{WarpConfig, warp};
use crate::wcs::PixelPosition;

/// Which exposures make a template.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplateConfig {
    /// Inputs taken from this many days before the science exposure...
    pub max_age_days: f64,
    /// ...up to this many days before it (a transient must not be in its own template).
    pub min_age_days: f64,
    /// Airmass range of the inputs.
    pub airmass: (f64, f64),
    /// At least this many inputs.
    pub min_inputs: usize,
}

impl Default for TemplateConfig {
    fn default() -> Self {
        Self {
            max_age_days: 365.25,
            min_age_days: 30.0,
            airmass: (1.0, 2.0),
            min_inputs: 2,
        }
    }
}

/// A candidate input: a calibrated, background-subtracted exposure with its PSF, and when
/// and through how much air it was taken.
pub struct TemplateInput<'a> {
    pub exposure: &'a Exposure,
    pub mjd: f64,
    pub airmass: f64,
    pub band: usize,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    #[error(
        "{found} exposures in band {band} between {min_age} and {max_age} days before MJD {mjd:.4} at airmass {am0} to {am1}; a template needs {need}"
    )]
    TooFewInputs {
        found: usize,
        need: usize,
        band: usize,
        mjd: f64,
        min_age: f64,
        max_age: f64,
        am0: f64,
        am1: f64,
    },
    #[error("input {0} has no PSF")]
    NoPsf(usize),
    #[error("coadding the template: {0}")]
    Coadd(String),
    #[error("warping the template's inputs: {0}")]
    Warp(String),
}

/// A template on a grid, in nJy, with the inputs it was made of (their indices).
#[derive(Debug, Clone)]
pub struct Template {
    pub exposure: Exposure,
    pub inputs: Vec<usize>,
}

impl Template {
    /// The template in the counts of a science exposure with calibration `calib`, rescaled
    /// in place (a warped template is made for one visit; a copy of its planes would only
    /// add to the visit's latency).
    pub fn into_calibration(self, calib: PhotoCalib) -> Exposure {
        let mut e = self.exposure;
        let from = e.photo_calib.map_or(1.0, |c| c.scale());
        let k = (from / calib.scale()) as f32;
        let (img, _, var) = e.planes_mut();
        img.iter_mut().for_each(|v| *v *= k);
        var.iter_mut().for_each(|v| *v *= k * k);
        e.photo_calib = Some(calib);
        e
    }
}

impl Template {
    /// The template resampled onto another grid (a visit's CCD), pixels it does not cover
    /// NO_DATA. The PSF is carried over: the grids share their pixel scale and orientation.
    pub fn warped_to(&self, grid: &PixelGrid) -> Result<Template, TemplateError> {
        let (w, h) = (grid.width(), grid.height());
        let warped = warp(&self.exposure, grid, &WarpConfig::default())
            .map_err(|e| TemplateError::Warp(e.to_string()))?;
        let mut out = match warped {
            // The template covers the grid: the warp is the result as it stands.
            Some(whole)
                if (whole.x0, whole.y0) == (0, 0)
                    && (whole.exposure.width(), whole.exposure.height()) == (w, h) =>
            {
                let mut e = whole.exposure;
                e.metadata.clear();
                e
            }
            partial => {
                let mut image = vec![f32::NAN; w * h];
                let mut variance = vec![f32::NAN; w * h];
                let mut bits = vec![MaskPlane::NoData.bit(); w * h];
                if let Some(warped) = partial {
                    let e = &warped.exposure;
                    let ew = e.width();
                    for y in 0..e.height() {
                        let (dst, src) = ((warped.y0 + y) * w + warped.x0, y * ew);
                        image[dst..dst + ew].copy_from_slice(&e.image().data()[src..src + ew]);
                        variance[dst..dst + ew]
                            .copy_from_slice(&e.variance().data()[src..src + ew]);
                        bits[dst..dst + ew].copy_from_slice(&e.mask().bits().data()[src..src + ew]);
                    }
                }
                Exposure::new(
                    Image::from_vec(w, h, image).expect("w x h"),
                    Mask::from_image(Image::from_vec(w, h, bits).expect("w x h")),
                    Image::from_vec(w, h, variance).expect("w x h"),
                )
                .expect("one shape")
            }
        };
        out.wcs = Some(grid.wcs().clone());
        out.photo_calib = self.exposure.photo_calib;
        out.psf = self.exposure.psf.as_ref().map(|p| {
            let m = p.moments_at(p.width() as f64 / 2.0, p.height() as f64 / 2.0);
            GaussianPsf::new(
                w,
                h,
                FieldPolynomial::constant(m.ixx),
                FieldPolynomial::constant(m.iyy),
                FieldPolynomial::constant(m.ixy),
            )
        });
        Ok(Template {
            exposure: out,
            inputs: self.inputs.clone(),
        })
    }
}

/// Builds the template for a science exposure in `band` at `mjd` on `grid`.
pub fn build_template(
    candidates: &[TemplateInput],
    band: usize,
    mjd: f64,
    grid: &PixelGrid,
    config: &TemplateConfig,
) -> Result<Template, TemplateError> {
    let chosen: Vec<usize> = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            let age = mjd - c.mjd;
            c.band == band
                && age >= config.min_age_days
                && age <= config.max_age_days
                && c.airmass >= config.airmass.0
                && c.airmass <= config.airmass.1
        })
        .map(|(i, _)| i)
        .collect();
    let too_few = |found| TemplateError::TooFewInputs {
        found,
        need: config.min_inputs.max(1),
        band,
        mjd,
        min_age: config.min_age_days,
        max_age: config.max_age_days,
        am0: config.airmass.0,
        am1: config.airmass.1,
    };
    if chosen.len() < config.min_inputs.max(1) {
        return Err(too_few(chosen.len()));
    }
    let (cx, cy) = (grid.width() as f64 / 2.0, grid.height() as f64 / 2.0);
    let centre = grid.wcs().pixel_to_sky(PixelPosition { x: cx, y: cy });
    let mut inputs = Vec::new();
    let (mut wxx, mut wyy, mut wxy, mut wsum) = (0.0, 0.0, 0.0, 0.0);
    for &i in &chosen {
        let e = candidates[i].exposure;
        let psf = e.psf.as_ref().ok_or(TemplateError::NoPsf(i))?;
        let Some(w) = warp(e, grid, &WarpConfig::default())
            .map_err(|e| TemplateError::Warp(e.to_string()))?
        else {
            continue;
        };
        // The PSF where the grid's centre falls on this input, weighted as the coadd
        // weights it: by its inverse sky variance in nJy.
        let at = e
            .wcs
            .as_ref()
            .and_then(|wcs| wcs.sky_to_pixel(centre).ok())
            .unwrap_or(PixelPosition { x: cx, y: cy });
        let m = psf.moments_at(at.x, at.y);
        let mut var: Vec<f64> = e
            .variance()
            .data()
            .iter()
            .filter(|v| v.is_finite() && **v > 0.0)
            .map(|v| *v as f64)
            .collect();
        let scale = e.photo_calib.map_or(1.0, |c| c.scale());
        let mid = var.len() / 2;
        let weight = if var.is_empty() {
            0.0
        } else {
            1.0 / (*var.select_nth_unstable_by(mid, f64::total_cmp).1 * scale * scale)
        };
        wxx += weight * m.ixx;
        wyy += weight * m.iyy;
        wxy += weight * m.ixy;
        wsum += weight;
        inputs.push(CoaddInput { warp: w });
    }
    if inputs.is_empty() || wsum <= 0.0 {
        return Err(too_few(0));
    }
    let c = coadd(grid, inputs, &CoaddConfig::default())
        .map_err(|e| TemplateError::Coadd(e.to_string()))?;
    let mut exposure = c.exposure;
    exposure.psf = Some(GaussianPsf::new(
        grid.width(),
        grid.height(),
        FieldPolynomial::constant(wxx / wsum),
        FieldPolynomial::constant(wyy / wsum),
        FieldPolynomial::constant(wxy / wsum),
    ));
    Ok(Template {
        exposure,
        inputs: chosen,
    })
}
