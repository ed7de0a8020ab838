//! DIASources (DMS-REQ-0269, 0270): sources detected on a difference image, positive and
//! negative, at 5 sigma by default, each measured for what an alert carries: centroid with
//! errors in pixels and on the sky, signal-to-noise, PSF and aperture fluxes on the
//! difference, adaptive shape and extendedness, whether it looks like a dipole (a positive
//! and a negative lobe side by side: a misregistered or moving source), the flux at the
//! same place on the science image and on the template, flags, and a spuriousness score.
//!
//! The score is rule-based (no trained classifier yet): it rises for dipoles, for shapes
//! far from the PSF's (cosmic rays, bad subtractions), for masked or edge pixels, and for a
//! positive source brighter on the difference than on the science image it came from.
use crate::detection::{DetectionConfig, Peak, detect};
use crate::image::Exposure;
use crate::measurement::{Flux, Shape, measure_point};
use crate::psf::Moments;
use crate::wcs::PixelPosition;

/// A flux that could not be measured (no PSF, no aperture).
const UNMEASURED: Flux = Flux {
    value: f64::NAN,
    err: f64::NAN,
};

/// How DIASources are found.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiaConfig {
    /// Detection threshold, sigma of the PSF-filtered difference.
    pub threshold: f64,
    /// Footprints smaller than this many pixels are noise.
    pub min_pixels: usize,
    /// A positive and a negative peak closer than this many PSF FWHM make a dipole.
    pub dipole_fwhm: f64,
}

impl Default for DiaConfig {
    fn default() -> Self {
        Self {
            threshold: 5.0,
            min_pixels: 3,
            dipole_fwhm: 1.5,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DiaError {
    #[error("the {0} has no {1}")]
    Missing(&'static str, &'static str),
    #[error("the difference, science and template images differ in size")]
    Shape,
    #[error("DIASource detection: {0}")]
    Detection(String),
}

/// What is flagged about one DIASource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiaFlags {
    pub edge: bool,
    pub masked: bool,
    pub centroid_failed: bool,
    pub shape_failed: bool,
    pub dipole: bool,
}

/// One source on a difference image. Fluxes in nJy.
#[derive(Debug, Clone, PartialEq)]
pub struct DiaSource {
    pub x: f64,
    pub y: f64,
    pub x_err: f64,
    pub y_err: f64,
    /// Degrees.
    pub ra: f64,
    pub dec: f64,
    pub ra_err: f64,
    pub dec_err: f64,
    pub snr: f64,
    /// Detected as a decrease (negative on the difference).
    pub is_negative: bool,
    pub psf_flux: Flux,
    /// Within the second aperture radius (6 pixels).
    pub ap_flux: Flux,
    pub shape: Option<Shape>,
    pub extendedness: Option<f64>,
    /// PSF flux at the same place on the science (visit) image, and on the template.
    pub science_flux: Flux,
    pub template_flux: Flux,
    /// 0 for a convincing astrophysical source, up to 1 for an artefact.
    pub spuriousness: f64,
    pub flags: DiaFlags,
    /// Pixels its PSF flux was fitted on.
    pub psf_ndata: usize,
    /// Chi-squared and natural log likelihood of the PSF model's fit (NaN without one).
    pub psf_chi2: f64,
    pub psf_ln_l: f64,
    /// The larger side of its footprint's bounding box, pixels.
    pub bbox_size: usize,
    /// The difference image's PSF moments at the source (pixels²).
    pub psf_moments: Moments,
}

/// Detects and measures the DIASources of `difference` (science minus template, decorrelated,
/// with its PSF, WCS and calibration); `science` and `template` are the images it was made
/// from, on the same pixels and calibration.
pub fn detect_dia_sources(
    difference: &Exposure,
    science: &Exposure,
    template: &Exposure,
    config: &DiaConfig,
) -> Result<Vec<DiaSource>, DiaError> {
    let psf = difference
        .psf
        .as_ref()
        .ok_or(DiaError::Missing("difference image", "PSF"))?;
    let wcs = difference
        .wcs
        .as_ref()
        .ok_or(DiaError::Missing("difference image", "WCS"))?;
    if difference.photo_calib.is_none() {
        return Err(DiaError::Missing("difference image", "calibration"));
    }
    let dims = (difference.width(), difference.height());
    if (science.width(), science.height()) != dims || (template.width(), template.height()) != dims
    {
        return Err(DiaError::Shape);
    }
    let mut marked = difference.clone();
    let footprints = detect(
        &mut marked,
        psf,
        &DetectionConfig {
            threshold: config.threshold,
            negative: true,
            min_pixels: config.min_pixels,
        },
    )
    .map_err(|e| DiaError::Detection(e.to_string()))?;
    // Negative sources are measured on the negated difference, so the centroid and
    // moments see a positive profile; their fluxes are negated back.
    let mut negated = difference.clone();
    {
        let (img, _, _) = negated.planes_mut();
        img.iter_mut().for_each(|v| *v = -*v);
    }
    let (cx, cy) = (dims.0 as f64 / 2.0, dims.1 as f64 / 2.0);
    let fwhm = psf.moments_at(cx, cy).fwhm();
    let psf_area = {
        let m = psf.moments_at(cx, cy);
        (m.ixx * m.iyy - m.ixy * m.ixy).sqrt()
    };
    // Every peak is a source: changes near each other share a footprint.
    let peaks: Vec<(Peak, bool, usize)> = footprints
        .iter()
        .flat_map(|f| {
            let side = (f.bbox.2 - f.bbox.0).max(f.bbox.3 - f.bbox.1);
            f.peaks.iter().map(move |p| (*p, f.negative, side))
        })
        .collect();
    let scale_deg = wcs.pixel_scale_arcsec() / 3600.0;
    let mut out = Vec::with_capacity(peaks.len());
    for (peak, negative, bbox_size) in &peaks {
        let on = if *negative { &negated } else { difference };
        let m = measure_point(on, psf, peak);
        let sign = if *negative { -1.0 } else { 1.0 };
        let signed = |f: Flux| Flux {
            value: sign * f.value,
            err: f.err,
        };
        let at = Peak {
            x: m.x.round().clamp(0.0, dims.0 as f64 - 1.0) as usize,
            y: m.y.round().clamp(0.0, dims.1 as f64 - 1.0) as usize,
            significance: peak.significance,
        };
        let science_flux = science
            .psf
            .as_ref()
            .map_or(UNMEASURED, |p| measure_point(science, p, &at).psf_flux);
        let template_flux = template
            .psf
            .as_ref()
            .map_or(UNMEASURED, |p| measure_point(template, p, &at).psf_flux);
        let dipole = peaks.iter().any(|(q, neg, _)| {
            neg != negative
                && ((q.x as f64 - m.x).powi(2) + (q.y as f64 - m.y).powi(2)).sqrt()
                    < config.dipole_fwhm * fwhm
        });
        let sky = wcs.pixel_to_sky(PixelPosition { x: m.x, y: m.y });
        let psf_flux = signed(m.psf_flux);
        let ap_flux = m
            .aperture_fluxes
            .get(1)
            .map_or(UNMEASURED, |(_, f)| signed(*f));
        let flags = DiaFlags {
            edge: m.flags.edge,
            masked: m.flags.masked,
            centroid_failed: m.flags.centroid_failed,
            shape_failed: m.flags.shape_failed,
            dipole,
        };
        let snr = if psf_flux.err > 0.0 {
            psf_flux.value.abs() / psf_flux.err
        } else {
            0.0
        };
        let mut spurious: f64 = 0.0;
        if dipole {
            spurious += 0.5;
        }
        if flags.edge || flags.masked {
            spurious += 0.3;
        }
        match m.shape {
            // Far sharper than the PSF (cosmic rays, hot pixels) or far broader.
            Some(s) => {
                let size = (s.ixx * s.iyy - s.ixy * s.ixy).max(0.0).sqrt() / psf_area;
                if !(0.5..=2.5).contains(&size) {
                    spurious += 0.4;
                }
            }
            None => spurious += 0.2,
        }
        // A brightening cannot exceed what the science image holds at that place.
        if !negative
            && science_flux.value.is_finite()
            && psf_flux.value > science_flux.value + 5.0 * science_flux.err.max(psf_flux.err)
        {
            spurious += 0.4;
        }
        out.push(DiaSource {
            x: m.x,
            y: m.y,
            x_err: m.x_err,
            y_err: m.y_err,
            ra: sky.ra(),
            dec: sky.dec(),
            ra_err: m.x_err * scale_deg,
            dec_err: m.y_err * scale_deg,
            snr,
            is_negative: *negative,
            psf_flux,
            ap_flux,
            shape: m.shape,
            extendedness: m.extendedness,
            science_flux,
            template_flux,
            spuriousness: spurious.min(1.0),
            flags,
            psf_ndata: m.psf_pixels,
            psf_chi2: m.psf_chi2,
            psf_ln_l: m.psf_ln_l,
            bbox_size: *bbox_size,
            psf_moments: psf.moments_at(m.x, m.y),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
