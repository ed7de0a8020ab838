//! DIASources (DMS-REQ-0269, 0270): sources detected on a difference image, positive and
//! negative, at 5 sigma by default, one at each distinct peak (the significance dips
//! below it on the way to any brighter peak of its footprint: lumps on a bright source's
//! imperfect subtraction are not sources), each measured for what an alert carries: centroid with
//! errors in pixels and on the sky, signal-to-noise, PSF and aperture fluxes on the
//! difference, adaptive shape and extendedness, whether it looks like a dipole (a positive
//! and a negative lobe side by side: a misregistered or moving source) with a dipole model
//! fitted where it does, a trailed-source model fitted to every source (length and angle of
//! what moved during the exposure; [`models`]), the flux at the same place on the science
//! image and on the template, flags, and a spuriousness score. Under the threshold, down
//! to 4 sigma, faint DIASources are measured alike (DMS-REQ-0270): all those at places the
//! caller watches (a known asteroid's prediction) and a limited sample of the most
//! significant others, whose number tells how a difference's noise departs from its model.
//!
//! The score is rule-based (no trained classifier yet), each rule a probability that the
//! source is an artefact, combined as independent evidence (1 - Π(1 - p)), so that one of
//! the strong rules (0.5 or more) alone, or a 0.4 rule with any other, makes a source at
//! least as likely bogus as real: a change of less than a thirtieth of the template's flux
//! there (what a bright star's imperfect subtraction leaves; 0.6), a dipole (0.5), a PSF
//! fit whose signal-to-noise falls under the detection threshold (0.5: what raised the
//! smoothed image is no PSF), a shape far from the PSF's (cosmic rays, hot pixels, bad
//! subtractions; 0.4) or none measured (0.2), masked or edge pixels (0.2), and a positive
//! source brighter on the difference than on the science image it came from (0.4; not
//! where pixels were masked, which the science flux then misses). Evaluated on the
//! simulator's truth by `tests/alert_figures.py`: on a 4k CCD from raws it marks five in
//! six false DIASources and about one real one in seventy.
use crate::detection::{
    DetectionConfig, Footprint, Peak, detect_keeping_significance, sub_threshold_footprints,
};
use crate::image::{Exposure, Image, PhotoCalib};
use crate::measurement::{Flux, Shape, calibrated, measure_point};
use crate::psf::{GaussianPsf, Moments};
use crate::wcs::{PixelPosition, TanSipWcs};

pub mod models;

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
    /// A change smaller than the template's flux there over this looks like what an
    /// imperfect subtraction of a bright source leaves (evidence for the spuriousness).
    pub residual_ratio: f64,
    /// Faint DIASources (DMS-REQ-0270): footprints above this significance that stay
    /// under `threshold` are kept where they are watched for (a known asteroid's predicted
    /// place), and the `faint_max` most significant of the rest for monitoring the
    /// difference images' quality (how many such a noise-limited difference holds).
    pub faint_threshold: f64,
    pub faint_max: usize,
    /// A peak of a footprint is a source of its own only if the significance dips below
    /// it, on the way to each brighter peak, by this fraction of its significance and by
    /// `peak_prominence_sigma` at least.
    pub peak_prominence: f64,
    pub peak_prominence_sigma: f64,
}

impl Default for DiaConfig {
    fn default() -> Self {
        Self {
            threshold: 5.0,
            min_pixels: 3,
            dipole_fwhm: 1.5,
            residual_ratio: 30.0,
            faint_threshold: 4.0,
            faint_max: 50,
            peak_prominence: 0.15,
            peak_prominence_sigma: 3.0,
        }
    }
}

/// A place faint DIASources are kept at: within `radius` pixels of (`x`, `y`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watch {
    pub x: f64,
    pub y: f64,
    pub radius: f64,
}

/// A DIASource under the detection threshold, and why it was kept.
#[derive(Debug, Clone, PartialEq)]
pub struct FaintDiaSource {
    pub source: DiaSource,
    /// Significance of its footprint's peak, under the threshold.
    pub significance: f64,
    /// Index of the watched place it lies at; None for the monitoring sample.
    pub watched: Option<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DiaError {
    #[error("the {0} has no {1}")]
    Missing(&'static str, &'static str),
    #[error("the difference, science and template images differ in size")]
    Shape,
    #[error("DIASource detection: {0}")]
    Detection(String),
    #[error("the faint DIASources' threshold must be above 0 and at most the threshold, not {0}")]
    FaintThreshold(f64),
}

/// What is flagged about one DIASource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiaFlags {
    pub edge: bool,
    pub masked: bool,
    pub centroid_failed: bool,
    pub shape_failed: bool,
    /// A positive and a negative lobe lie side by side; the dipole model was fitted.
    pub dipole: bool,
}

/// The trailed-source model of a DIASource, on the sky.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trail {
    /// Centre of the trail, degrees, with errors in degrees.
    pub ra: f64,
    pub dec: f64,
    pub ra_err: f64,
    pub dec_err: f64,
    /// Arcseconds.
    pub length: f64,
    pub length_err: f64,
    /// Position angle of the trail, degrees east of north in [0, 180).
    pub angle: f64,
    pub angle_err: f64,
    /// nJy.
    pub flux: Flux,
    pub chi2: f64,
    pub ndata: usize,
    /// The trail reaches past the image's edge.
    pub edge: bool,
}

/// The dipole model of a DIASource: a positive and a negative lobe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dipole {
    /// Mean and difference (positive minus negative) of the lobes' absolute fluxes, nJy.
    pub mean_flux: Flux,
    pub flux_diff: Flux,
    /// Separation of the lobes, arcseconds.
    pub length: f64,
    /// Position angle from the negative to the positive lobe, degrees east of north.
    pub angle: f64,
    pub chi2: f64,
    pub ndata: usize,
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
    /// None when the trailed-source fit failed.
    pub trail: Option<Trail>,
    /// Fitted where the dipole flag is set; None elsewhere and when the fit failed.
    pub dipole: Option<Dipole>,
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
    Ok(detect(difference, science, template, config, None)?.0)
}

/// [`detect_dia_sources`], and the faint DIASources under the threshold
/// (`config.faint_threshold` and up): all the positive ones at the `watched` places, and
/// the `config.faint_max` most significant of the others.
pub fn detect_dia_sources_and_faint(
    difference: &Exposure,
    science: &Exposure,
    template: &Exposure,
    config: &DiaConfig,
    watched: &[Watch],
) -> Result<(Vec<DiaSource>, Vec<FaintDiaSource>), DiaError> {
    detect(difference, science, template, config, Some(watched))
}

fn detect(
    difference: &Exposure,
    science: &Exposure,
    template: &Exposure,
    config: &DiaConfig,
    faint: Option<&[Watch]>,
) -> Result<(Vec<DiaSource>, Vec<FaintDiaSource>), DiaError> {
    let psf = difference
        .psf
        .as_ref()
        .ok_or(DiaError::Missing("difference image", "PSF"))?;
    let wcs = difference
        .wcs
        .as_ref()
        .ok_or(DiaError::Missing("difference image", "WCS"))?;
    let calib = difference
        .photo_calib
        .ok_or(DiaError::Missing("difference image", "calibration"))?;
    let dims = (difference.width(), difference.height());
    if (science.width(), science.height()) != dims || (template.width(), template.height()) != dims
    {
        return Err(DiaError::Shape);
    }
    if faint.is_some()
        && !(config.faint_threshold > 0.0 && config.faint_threshold <= config.threshold)
    {
        return Err(DiaError::FaintThreshold(config.faint_threshold));
    }
    let mut marked = difference.clone();
    let (footprints, significance) = detect_keeping_significance(
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
    let ctx = Measuring {
        difference,
        negated: &negated,
        science,
        template,
        psf,
        wcs,
        calib,
        dims,
        fwhm: psf.moments_at(cx, cy).fwhm(),
        psf_area: {
            let m = psf.moments_at(cx, cy);
            (m.ixx * m.iyy - m.ixy * m.ixy).sqrt()
        },
        config,
    };
    // Every distinct peak is a source: changes near each other share a footprint.
    let footprints: Vec<Footprint> = footprints
        .into_iter()
        .map(|f| distinct_peaks(f, &significance, config))
        .collect();
    let peaks = peaks_of(&footprints);
    let out = peaks
        .iter()
        .map(|p| ctx.measure(p, &peaks))
        .collect::<Vec<_>>();
    let Some(watched) = faint else {
        return Ok((out, Vec::new()));
    };
    let below = sub_threshold_footprints(
        &significance,
        config.faint_threshold,
        config.threshold,
        true,
        config.min_pixels,
    )
    .map_err(|e| DiaError::Detection(e.to_string()))?
    .into_iter()
    .map(|f| distinct_peaks(f, &significance, config))
    .collect::<Vec<_>>();
    // The watched ones (what is watched for brightens: positive ones only), then the
    // most significant others up to the limit; a faint lobe may pair with a detected one
    // into a dipole.
    let candidates = peaks_of(&below);
    let at_watch = |&(p, negative, _): &(Peak, bool, usize)| {
        watched
            .iter()
            .position(|w| !negative && (p.x as f64 - w.x).hypot(p.y as f64 - w.y) <= w.radius)
    };
    let mut sample = 0;
    let kept: Vec<((Peak, bool, usize), Option<usize>)> = candidates
        .iter()
        .filter_map(|c| {
            let watch = at_watch(c);
            let take = watch.is_some() || sample < config.faint_max;
            if watch.is_none() && take {
                sample += 1;
            }
            take.then_some((*c, watch))
        })
        .collect();
    let partners: Vec<(Peak, bool, usize)> = peaks
        .iter()
        .copied()
        .chain(kept.iter().map(|(c, _)| *c))
        .collect();
    let faint_sources = kept
        .iter()
        .map(|(c, watch)| FaintDiaSource {
            source: ctx.measure(c, &partners),
            significance: c.0.significance,
            watched: *watch,
        })
        .collect();
    Ok((out, faint_sources))
}

/// `footprint` with only its distinct peaks: a peak is dropped when, on the way to a
/// brighter one of the footprint, the significance never dips below it by
/// `config.peak_prominence` sigma and that fraction of its own significance. A bright
/// source that subtracts imperfectly leaves bumps on its own profile (lumps of a PSF
/// mismatch, a few per cent of its flux), which are no sources of their own.
fn distinct_peaks(mut footprint: Footprint, sig: &Image<f32>, config: &DiaConfig) -> Footprint {
    if footprint.peaks.len() < 2 {
        return footprint;
    }
    let value = |x: f64, y: f64| {
        let v = f64::from(
            sig.get(x.round().max(0.0) as usize, y.round().max(0.0) as usize)
                .unwrap_or(0.0),
        );
        if footprint.negative { -v } else { v }
    };
    let mut kept: Vec<Peak> = Vec::with_capacity(footprint.peaks.len());
    // Most significant first.
    for p in &footprint.peaks {
        let own = p.significance.abs();
        let needed = (config.peak_prominence * own).max(config.peak_prominence_sigma);
        let distinct = kept.iter().all(|q| {
            let (dx, dy) = (q.x as f64 - p.x as f64, q.y as f64 - p.y as f64);
            let steps = dx.abs().max(dy.abs()).ceil().max(1.0) as usize;
            let lowest = (0..=steps)
                .map(|k| {
                    let t = k as f64 / steps as f64;
                    value(p.x as f64 + t * dx, p.y as f64 + t * dy)
                })
                .fold(f64::INFINITY, f64::min);
            own - lowest >= needed
        });
        if distinct {
            kept.push(*p);
        }
    }
    footprint.peaks = kept;
    footprint
}

/// Each peak of `footprints` with its sign and its footprint's size, most significant
/// footprint first.
fn peaks_of(footprints: &[Footprint]) -> Vec<(Peak, bool, usize)> {
    footprints
        .iter()
        .flat_map(|f| {
            let side = (f.bbox.2 - f.bbox.0).max(f.bbox.3 - f.bbox.1);
            f.peaks.iter().map(move |p| (*p, f.negative, side))
        })
        .collect()
}

/// What measuring a DIASource takes.
struct Measuring<'a> {
    difference: &'a Exposure,
    negated: &'a Exposure,
    science: &'a Exposure,
    template: &'a Exposure,
    psf: &'a GaussianPsf,
    wcs: &'a TanSipWcs,
    calib: PhotoCalib,
    dims: (usize, usize),
    fwhm: f64,
    psf_area: f64,
    config: &'a DiaConfig,
}

impl Measuring<'_> {
    /// The DIASource at a peak (with its sign and footprint size); `others` are the peaks
    /// it may make a dipole with.
    fn measure(
        &self,
        &(peak, negative, bbox_size): &(Peak, bool, usize),
        others: &[(Peak, bool, usize)],
    ) -> DiaSource {
        let Self {
            difference,
            negated,
            science,
            template,
            psf,
            wcs,
            calib,
            dims,
            fwhm,
            psf_area,
            config,
        } = *self;
        let scale_deg = wcs.pixel_scale_arcsec() / 3600.0;
        let on = if negative { negated } else { difference };
        let m = measure_point(on, psf, &peak);
        let sign = if negative { -1.0 } else { 1.0 };
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
        // The nearest peak of the other sign close enough to make this one lobe of a dipole.
        let partner = others
            .iter()
            .filter(|(_, neg, _)| *neg != negative)
            .map(|(q, _, _)| ((q.x as f64 - m.x).hypot(q.y as f64 - m.y), q))
            .filter(|(d, _)| *d < config.dipole_fwhm * fwhm)
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, q)| (q.x as f64, q.y as f64));
        let dipole = partner.is_some();
        let psf_moments = psf.moments_at(m.x, m.y);
        let trail = models::fit_trail(
            difference,
            psf_moments,
            (m.x, m.y),
            m.shape.map(|s| Moments {
                ixx: s.ixx,
                iyy: s.iyy,
                ixy: s.ixy,
            }),
            bbox_size as f64,
        )
        .map(|t| trail_on_sky(&t, wcs, &calib));
        let dipole_model = partner.and_then(|other| {
            let (pos, neg) = if negative {
                (other, (m.x, m.y))
            } else {
                ((m.x, m.y), other)
            };
            let mid = psf.moments_at(0.5 * (pos.0 + neg.0), 0.5 * (pos.1 + neg.1));
            models::fit_dipole(difference, mid, pos, neg).map(|d| dipole_on_sky(&d, wcs, &calib))
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
        let masked = flags.edge || flags.masked;
        let evidence = [
            (
                template_flux.value.abs() > config.residual_ratio * psf_flux.value.abs(),
                0.6,
            ),
            (dipole, 0.5),
            // Detected at the threshold, yet under it by the PSF fit: what raised the
            // smoothed image is no PSF (a noise spike, a single hot pixel's remains).
            (snr < config.threshold, 0.5),
            (
                // Far sharper than the PSF (cosmic rays, hot pixels) or far broader.
                m.shape.is_some_and(|s| {
                    let size = (s.ixx * s.iyy - s.ixy * s.ixy).max(0.0).sqrt() / psf_area;
                    !(0.5..=2.5).contains(&size)
                }),
                0.4,
            ),
            (m.shape.is_none(), 0.2),
            (masked, 0.2),
            // A brightening cannot exceed what the science image holds at that place.
            (
                !negative
                    && !masked
                    && science_flux.value.is_finite()
                    && psf_flux.value
                        > science_flux.value + 5.0 * science_flux.err.max(psf_flux.err),
                0.4,
            ),
        ];
        let spurious = 1.0
            - evidence
                .iter()
                .filter(|(holds, _)| *holds)
                .map(|(_, p)| 1.0 - p)
                .product::<f64>();
        DiaSource {
            x: m.x,
            y: m.y,
            x_err: m.x_err,
            y_err: m.y_err,
            ra: sky.ra(),
            dec: sky.dec(),
            ra_err: m.x_err * scale_deg,
            dec_err: m.y_err * scale_deg,
            snr,
            is_negative: negative,
            psf_flux,
            ap_flux,
            shape: m.shape,
            extendedness: m.extendedness,
            science_flux,
            template_flux,
            spuriousness: spurious,
            flags,
            psf_ndata: m.psf_pixels,
            psf_chi2: m.psf_chi2,
            psf_ln_l: m.psf_ln_l,
            bbox_size,
            psf_moments,
            trail,
            dipole: dipole_model,
        }
    }
}

/// Position angle (degrees east of north, in [0, 360)) of the pixel direction (ux, uy) at
/// (x, y).
fn position_angle(wcs: &TanSipWcs, (x, y): (f64, f64), (ux, uy): (f64, f64)) -> f64 {
    let a = wcs.pixel_to_sky(PixelPosition { x, y });
    let b = wcs.pixel_to_sky(PixelPosition {
        x: x + ux,
        y: y + uy,
    });
    let d_ra = ((b.ra() - a.ra() + 540.0).rem_euclid(360.0) - 180.0) * a.dec().to_radians().cos();
    d_ra.atan2(b.dec() - a.dec()).to_degrees().rem_euclid(360.0)
}

fn trail_on_sky(t: &models::TrailFit, wcs: &TanSipWcs, calib: &PhotoCalib) -> Trail {
    let scale = wcs.pixel_scale_arcsec();
    let centre = wcs.pixel_to_sky(PixelPosition { x: t.x, y: t.y });
    let (sin, cos) = t.angle.sin_cos();
    Trail {
        ra: centre.ra(),
        dec: centre.dec(),
        ra_err: t.x_err * scale / 3600.0,
        dec_err: t.y_err * scale / 3600.0,
        length: t.length * scale,
        length_err: t.length_err * scale,
        // A trail has no direction: its angle is taken modulo 180 degrees.
        angle: position_angle(wcs, (t.x, t.y), (cos, sin)).rem_euclid(180.0),
        angle_err: t.angle_err.to_degrees(),
        flux: calibrated(
            calib,
            Flux {
                value: t.flux,
                err: t.flux_err,
            },
        ),
        chi2: t.chi2,
        ndata: t.ndata,
        edge: t.edge,
    }
}

fn dipole_on_sky(d: &models::DipoleFit, wcs: &TanSipWcs, calib: &PhotoCalib) -> Dipole {
    let (dx, dy) = (d.positive.0 - d.negative.0, d.positive.1 - d.negative.1);
    Dipole {
        mean_flux: calibrated(
            calib,
            Flux {
                value: d.mean_flux(),
                err: d.mean_flux_err,
            },
        ),
        flux_diff: calibrated(
            calib,
            Flux {
                value: d.flux_diff(),
                err: d.flux_diff_err,
            },
        ),
        length: d.length() * wcs.pixel_scale_arcsec(),
        angle: position_angle(wcs, d.negative, (dx, dy)),
        chi2: d.chi2,
        ndata: d.ndata,
    }
}

#[cfg(test)]
mod tests;
