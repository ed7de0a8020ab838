//! Characterization and calibration of a processed visit image: the PSF model fitted to
//! the stars on it, varying over the CCD (DMS-REQ-0070); the astrometric solution, a
//! TAN-SIP WCS fitted to reference stars at the epoch of the exposure (DMS-REQ-0030); and
//! the photometric zeropoint from the same stars (DMS-REQ-0029). Bright, isolated,
//! unsaturated sources are measured once; stars are those on the tight locus of the
//! smallest sizes; the reference catalogue is matched after finding the telescope's
//! pointing offset by voting.
use std::collections::HashMap;

use crate::background::Background;
use crate::detection::{DetectionConfig, Peak, detect};
use crate::image::{Exposure, HeaderValue, MaskPlane, PhotoCalib};
use crate::linalg::solve;
use crate::measurement::{adaptive_moments, measure_point};
use crate::psf::{FieldPolynomial, GaussianPsf};
use crate::sky::{BANDS, apparent_position, tangent_plane};
use crate::wcs::{PixelPosition, SkyCoord, TanSipWcs};
use crate::wcs_fit::{TangentPoint, TangentPolynomial, deproject};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CharacterizeError {
    #[error("{step}: {message}")]
    Failed { step: &'static str, message: String },
}

fn fail(step: &'static str, message: impl Into<String>) -> CharacterizeError {
    CharacterizeError::Failed {
        step,
        message: message.into(),
    }
}

/// A star of the reference catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceStar {
    pub id: i64,
    /// Position at `epoch` (MJD), degrees.
    pub ra: f64,
    pub dec: f64,
    pub epoch: f64,
    /// Proper motion (mas/yr; RA times cos dec) and parallax (mas); zero when unknown.
    pub pm_ra: f64,
    pub pm_dec: f64,
    pub parallax: f64,
    /// AB magnitude and its error per band, where measured.
    pub mags: [Option<(f64, f64)>; 6],
}

impl ReferenceStar {
    /// Where it appears at `mjd`.
    pub fn at(&self, mjd: f64) -> Option<SkyCoord> {
        let (ra, dec) = apparent_position(
            self.ra,
            self.dec,
            self.pm_ra,
            self.pm_dec,
            self.parallax,
            self.epoch,
            mjd,
        );
        SkyCoord::new(ra, dec)
    }
}

/// Settings of characterization.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CharacterizeConfig {
    /// Detection significance of the sources used (PSF stars, astrometric and
    /// photometric standards).
    pub min_significance: f64,
    /// Order of the PSF moments' polynomials over the CCD.
    pub psf_order: usize,
    /// Order of the astrometric fit (1: linear TAN; 2-4: TAN-SIP).
    pub astrometry_order: usize,
    /// How far the reported pointing may be off, arcsec.
    pub pointing_search: f64,
    /// Match radius once the offset is known, arcsec.
    pub match_radius: f64,
    /// The most sources measured, the most significant first. A crowded 4k CCD offers
    /// six thousand, whose measurement was most of characterization's time; two thousand
    /// fix the PSF, a third-order WCS and the zeropoint, though each thousand fewer
    /// loosens the WCS a little (false DIASources per 4k CCD in the night bench: 211 with
    /// 3000, 221 with 2000, 226 with 1000).
    pub max_sources: usize,
}

impl Default for CharacterizeConfig {
    fn default() -> Self {
        Self {
            min_significance: 20.0,
            psf_order: 2,
            astrometry_order: 3,
            pointing_search: 10.0,
            match_radius: 0.5,
            max_sources: 2000,
        }
    }
}

impl CharacterizeConfig {
    /// Checks the parameters' ranges.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: f64, max: f64| {
            if v.is_finite() && v > 0.0 && v <= max {
                Ok(())
            } else {
                Err(format!("{name} {v} must be in (0, {max}]"))
            }
        };
        positive("min_significance", self.min_significance, 1e4)?;
        positive("pointing_search", self.pointing_search, 600.0)?;
        positive("match_radius", self.match_radius, 10.0)?;
        if self.max_sources < 20 {
            return Err(format!(
                "max_sources {} is under 20, too few to fit a PSF and a WCS",
                self.max_sources
            ));
        }
        if self.psf_order > 4 {
            return Err(format!("psf_order {} is over 4", self.psf_order));
        }
        if !(1..=4).contains(&self.astrometry_order) {
            return Err(format!(
                "astrometry_order {} is not 1 to 4",
                self.astrometry_order
            ));
        }
        Ok(())
    }
}

/// What characterization found, for the CcdVisit table and the logs.
#[derive(Debug, Clone, PartialEq)]
pub struct CharacterizeReport {
    pub psf_stars: usize,
    /// PSF FWHM at the centre, arcsec.
    pub seeing: f64,
    pub astrometry_matches: usize,
    /// RMS of the astrometric fit's residuals, mas.
    pub astrometry_rms: f64,
    pub astrometry_order: usize,
    pub photometry_matches: usize,
    pub zero_point: f64,
    pub zero_point_err: f64,
    /// Sky level at the centre, counts per pixel.
    pub sky_level: f64,
    /// Pointing offset found, arcsec (east, north).
    pub pointing_offset: (f64, f64),
}

/// (east, north) arcsec.
type Offset = (f64, f64);
/// (candidate index, reference index).
type Match = (usize, usize);

/// A bright source measured for calibration.
#[derive(Debug, Clone)]
struct Candidate {
    x: f64,
    y: f64,
    /// PSF flux in counts and its error (after the PSF fit).
    flux: f64,
    flux_err: f64,
    /// Adaptive second moments.
    moments: (f64, f64, f64),
    significance: f64,
    /// Centroid error, pixels (x and y combined).
    position_err: f64,
}

/// The PSF stage: the model fitted to bright isolated stars, and those stars measured
/// with it, on a background-subtracted copy of the exposure.
struct PsfStage {
    wcs0: TanSipWcs,
    psf: GaussianPsf,
    psf_stars: usize,
    candidates: Vec<Candidate>,
    sky_level: f64,
    background: Background,
}

fn psf_stage(
    exposure: &Exposure,
    config: &CharacterizeConfig,
) -> Result<PsfStage, CharacterizeError> {
    let wcs0 = exposure
        .wcs
        .clone()
        .ok_or_else(|| fail("astrometry", "the image has no initial WCS"))?;
    let (w, h) = (exposure.width(), exposure.height());
    // Work on a background-subtracted copy: the image itself stays as ISR left it.
    let mut work = exposure.clone();
    let bin = 128.min(w.max(8)).min(h.max(8)).max(8);
    let background = Background::estimate(work.image(), work.mask(), bin)
        .map_err(|e| fail("background", e.to_string()))?;
    let sky_level = background.at(w as f64 / 2.0, h as f64 / 2.0);
    {
        let (pixels, _, _) = work.planes_mut();
        background
            .subtract_from(pixels)
            .map_err(|e| fail("background", e.to_string()))?;
    }
    // A first PSF from the seeing the site reported.
    let seeing = match exposure.metadata.get("SEEING") {
        Some(HeaderValue::Float(s)) if *s > 0.0 => *s,
        _ => 0.8,
    };
    let guess = GaussianPsf::constant_fwhm(w, h, seeing / wcs0.pixel_scale_arcsec());
    // Sparse fields (short u exposures, small CCDs) may hold few sources above the
    // configured significance: lower it step by step, down to 8 sigma, before giving up.
    let mut threshold = config.min_significance;
    let candidates = loop {
        let attempt = CharacterizeConfig {
            min_significance: threshold,
            ..config.clone()
        };
        // Detection only adds DETECTED bits: trying again on the same image is harmless.
        match bright_sources(&mut work, &guess, &attempt) {
            Ok(c) if c.len() >= 20 || threshold <= 8.0 => break c,
            Err(e) if threshold <= 8.0 => return Err(e),
            _ => threshold = (threshold * 0.6).max(8.0),
        }
    };
    let (psf, psf_stars) = fit_psf(&candidates, w, h, config.psf_order)?;
    let candidates: Vec<Candidate> = psf_fluxes(&work, &psf, &candidates);
    Ok(PsfStage {
        wcs0,
        psf,
        psf_stars,
        candidates,
        sky_level,
        background,
    })
}

/// The PSF model alone, for images whose WCS and calibration are kept as they came (no
/// reference catalogue): fitted and set on `exposure`; returns the stars used and the
/// FWHM at the centre (arcsec).
pub fn model_psf(
    exposure: &mut Exposure,
    config: &CharacterizeConfig,
) -> Result<(usize, f64), CharacterizeError> {
    let stage = psf_stage(exposure, config)?;
    let (w, h) = (exposure.width() as f64, exposure.height() as f64);
    let seeing = stage.psf.moments_at(w / 2.0, h / 2.0).fwhm() * stage.wcs0.pixel_scale_arcsec();
    exposure.psf = Some(stage.psf);
    let m = &mut exposure.metadata;
    m.insert("PSFNSTAR".into(), HeaderValue::Int(stage.psf_stars as i64));
    m.insert("PSFFWHM".into(), HeaderValue::Float(seeing));
    m.insert("SKYLEVEL".into(), HeaderValue::Float(stage.sky_level));
    Ok((stage.psf_stars, seeing))
}

/// Fits the PSF, WCS and zeropoint of `exposure` (ISR-processed, in counts) and sets them.
pub fn characterize(
    exposure: &mut Exposure,
    refcat: &[ReferenceStar],
    band: usize,
    mjd: f64,
    config: &CharacterizeConfig,
) -> Result<CharacterizeReport, CharacterizeError> {
    characterize_with_background(exposure, refcat, band, mjd, config).map(|(report, _)| report)
}

/// As [`characterize`], also returning the background it measured on the way (bins of
/// 128 pixels, the image as ISR left it): alert production subtracts it rather than
/// measuring it again (DMS-REQ-0004's latency).
pub fn characterize_with_background(
    exposure: &mut Exposure,
    refcat: &[ReferenceStar],
    band: usize,
    mjd: f64,
    config: &CharacterizeConfig,
) -> Result<(CharacterizeReport, Background), CharacterizeError> {
    let PsfStage {
        wcs0,
        psf,
        psf_stars,
        candidates,
        sky_level,
        background,
    } = psf_stage(exposure, config)?;
    let (w, h) = (exposure.width(), exposure.height());
    // Astrometry: reference stars where they are at this exposure, matched to the
    // candidates after finding the pointing offset.
    let refs: Vec<(usize, SkyCoord)> = refcat
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, r.at(mjd)?)))
        .collect();
    let (offset, matches) = match_references(&candidates, &refs, &wcs0, w, h, config)?;
    let (wcs, used, rms, order) =
        fit_wcs(&candidates, &refs, &matches, w, h, config.astrometry_order)?;
    // Photometry: the zeropoint that puts the PSF fluxes of matched stars on the
    // reference magnitudes, outliers (variables, blends) clipped.
    let mut zps: Vec<(f64, f64)> = used
        .iter()
        .filter_map(|&(c, r)| {
            let cand = &candidates[c];
            let (mag, mag_err) = refcat[refs[r].0].mags[band]?;
            (cand.flux > 0.0 && cand.flux_err > 0.0).then(|| {
                let inst_err = 1.0857 * cand.flux_err / cand.flux;
                (
                    mag + 2.5 * cand.flux.log10(),
                    (mag_err.powi(2) + inst_err.powi(2)).sqrt(),
                )
            })
        })
        .collect();
    if zps.len() < 3 {
        return Err(fail(
            "photometry",
            format!(
                "{} reference stars with {} magnitudes matched; 3 are needed",
                zps.len(),
                BANDS[band]
            ),
        ));
    }
    let (zero_point, zero_point_err) = clipped_weighted_mean(&mut zps);
    let report = CharacterizeReport {
        psf_stars,
        seeing: psf.moments_at(w as f64 / 2.0, h as f64 / 2.0).fwhm() * wcs.pixel_scale_arcsec(),
        astrometry_matches: used.len(),
        astrometry_rms: rms,
        astrometry_order: order,
        photometry_matches: zps.len(),
        zero_point,
        zero_point_err,
        sky_level,
        pointing_offset: offset,
    };
    exposure.psf = Some(psf);
    exposure.wcs = Some(wcs);
    exposure.photo_calib = Some(
        PhotoCalib::new(zero_point, zero_point_err)
            .ok_or_else(|| fail("photometry", "the zeropoint is not finite"))?,
    );
    let m = &mut exposure.metadata;
    m.insert("ASTRMS".into(), HeaderValue::Float(rms));
    m.insert("ASTNSTAR".into(), HeaderValue::Int(used.len() as i64));
    m.insert("PSFNSTAR".into(), HeaderValue::Int(psf_stars as i64));
    m.insert("PSFFWHM".into(), HeaderValue::Float(report.seeing));
    m.insert("ZPNSTAR".into(), HeaderValue::Int(zps.len() as i64));
    m.insert("SKYLEVEL".into(), HeaderValue::Float(sky_level));
    Ok((report, background))
}

/// Detects sources above `min_significance` and measures the isolated, clean ones, at
/// most `max_sources`, the most significant first (and returned in that order).
fn bright_sources(
    work: &mut Exposure,
    guess: &GaussianPsf,
    config: &CharacterizeConfig,
) -> Result<Vec<Candidate>, CharacterizeError> {
    let detection = DetectionConfig {
        threshold: config.min_significance.min(10.0),
        ..DetectionConfig::default()
    };
    let footprints =
        detect(work, guess, &detection).map_err(|e| fail("detection", e.to_string()))?;
    let sigma = guess.moments_at(0.0, 0.0).determinant_radius();
    let (w, h) = (work.width(), work.height());
    let bad = [
        MaskPlane::Sat,
        MaskPlane::Bad,
        MaskPlane::Cr,
        MaskPlane::Intrp,
        MaskPlane::NoData,
    ];
    let mut peaks: Vec<_> = footprints
        .iter()
        .filter(|f| !f.negative && f.peaks.len() == 1)
        .map(|f| &f.peaks[0])
        .filter(|p| p.significance >= config.min_significance)
        .collect();
    peaks.sort_by(|a, b| b.significance.total_cmp(&a.significance));
    let mut out = Vec::new();
    for p in peaks {
        if out.len() == config.max_sources {
            break;
        }
        let edge = 15;
        if p.x < edge || p.y < edge || p.x + edge >= w || p.y + edge >= h {
            continue;
        }
        let r = (3.0 * sigma).ceil() as usize + 1;
        let masked =
            (p.y - r..=p.y + r).any(|y| (p.x - r..=p.x + r).any(|x| work.mask().any(x, y, &bad)));
        if masked {
            continue;
        }
        let m = measure_point(work, guess, p);
        if m.flags.centroid_failed || m.flags.edge || m.flags.masked {
            continue;
        }
        let Some(shape) = adaptive_moments(work, m.x, m.y, sigma) else {
            continue;
        };
        out.push(Candidate {
            x: m.x,
            y: m.y,
            flux: m.psf_flux.value,
            flux_err: m.psf_flux.err,
            // Pixels integrate the light: a pixelised Gaussian's moments exceed the
            // Gaussian's by 1/12 (the model's kernels integrate over pixels again).
            moments: (shape.ixx - 1.0 / 12.0, shape.iyy - 1.0 / 12.0, shape.ixy),
            significance: p.significance,
            position_err: m.x_err.hypot(m.y_err),
        });
    }
    if out.len() < 5 {
        return Err(fail(
            "PSF",
            format!(
                "{} clean sources above {} sigma; 5 are needed",
                out.len(),
                config.min_significance
            ),
        ));
    }
    Ok(out)
}

/// Selects stars (the tight locus of the smallest sizes) and fits each moment as a
/// polynomial over the image, clipping outliers. Returns the PSF and the stars used.
fn fit_psf(
    candidates: &[Candidate],
    w: usize,
    h: usize,
    order: usize,
) -> Result<(GaussianPsf, usize), CharacterizeError> {
    let size = |c: &Candidate| {
        let (xx, yy, xy) = c.moments;
        (xx * yy - xy * xy).max(0.0).powf(0.25)
    };
    let mut sizes: Vec<f64> = candidates.iter().map(size).filter(|s| *s > 0.3).collect();
    sizes.sort_by(f64::total_cmp);
    // The stellar locus: the densest 8%-wide window among the smaller two thirds.
    let lower = &sizes[..(sizes.len() * 2 / 3).max(1)];
    let (mut best, mut best_n) = (lower[0], 0);
    for &s in lower {
        let n = lower.iter().filter(|&&t| t >= s && t <= s * 1.08).count();
        if n > best_n {
            (best, best_n) = (s, n);
        }
    }
    let centre = best * 1.04;
    let mut stars: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| (size(c) / centre - 1.0).abs() < 0.06)
        .collect();
    if stars.len() < 3 {
        return Err(fail(
            "PSF",
            format!("{} stars on the stellar locus; 3 are needed", stars.len()),
        ));
    }
    // Enough stars for the polynomial, or a lower order.
    let mut order = order;
    while order > 0 && stars.len() < 3 * FieldPolynomial::terms(order) {
        order -= 1;
    }
    let scale = |p: f64, n: usize| {
        if n > 1 {
            2.0 * p / (n - 1) as f64 - 1.0
        } else {
            0.0
        }
    };
    let mut polys = Vec::new();
    for round in 0..3 {
        polys.clear();
        for which in 0..3 {
            // Moments' errors fall as 1/SNR: weight by SNR² (capped, so a few very bright
            // stars do not decide alone).
            let points: Vec<(f64, f64, f64, f64)> = stars
                .iter()
                .map(|c| {
                    let v = [c.moments.0, c.moments.1, c.moments.2][which];
                    (
                        scale(c.x, w),
                        scale(c.y, h),
                        v,
                        c.significance.min(300.0).powi(2),
                    )
                })
                .collect();
            polys.push(
                fit_field_polynomial(&points, order).ok_or_else(|| fail("PSF", "singular fit"))?,
            );
        }
        if round == 2 {
            break;
        }
        // Clip stars whose size departs from the model by more than 3 sigma.
        let resid: Vec<f64> = stars
            .iter()
            .map(|c| {
                let (u, v) = (scale(c.x, w), scale(c.y, h));
                let model = (polys[0].eval(u, v) * polys[1].eval(u, v)
                    - polys[2].eval(u, v).powi(2))
                .max(0.0)
                .powf(0.25);
                size(c) - model
            })
            .collect();
        let sd = (resid.iter().map(|r| r * r).sum::<f64>() / resid.len() as f64).sqrt();
        let keep: Vec<bool> = resid
            .iter()
            .map(|r| r.abs() <= 3.0 * sd.max(1e-6))
            .collect();
        if keep.iter().all(|k| *k) {
            continue;
        }
        stars = stars
            .into_iter()
            .zip(keep)
            .filter_map(|(c, k)| k.then_some(c))
            .collect();
    }
    let mut it = polys.into_iter();
    let (ixx, iyy, ixy) = (
        it.next().expect("ixx"),
        it.next().expect("iyy"),
        it.next().expect("ixy"),
    );
    let psf = GaussianPsf::new(w, h, ixx, iyy, ixy);
    // The model must be a valid Gaussian over the whole image.
    for (x, y) in [
        (0.0, 0.0),
        (w as f64, 0.0),
        (0.0, h as f64),
        (w as f64, h as f64),
        (w as f64 / 2.0, h as f64 / 2.0),
    ] {
        if !psf.moments_at(x, y).is_valid() {
            return Err(fail(
                "PSF",
                "the fitted moments are not positive definite over the image",
            ));
        }
    }
    Ok((psf, stars.len()))
}

/// Weighted least squares of `points` (u, v, value, weight) by a polynomial of total
/// degree `order`.
fn fit_field_polynomial(points: &[(f64, f64, f64, f64)], order: usize) -> Option<FieldPolynomial> {
    let n = FieldPolynomial::terms(order);
    let basis = |u: f64, v: f64| -> Vec<f64> {
        let mut b = Vec::with_capacity(n);
        for degree in 0..=order {
            for j in 0..=degree {
                b.push(u.powi((degree - j) as i32) * v.powi(j as i32));
            }
        }
        b
    };
    let mut a = vec![0.0; n * n];
    let mut rhs = vec![0.0; n];
    for &(u, v, value, weight) in points {
        let row = basis(u, v);
        for i in 0..n {
            rhs[i] += weight * row[i] * value;
            for j in 0..n {
                a[i * n + j] += weight * row[i] * row[j];
            }
        }
    }
    FieldPolynomial::new(order, solve(a, rhs)?)
}

/// PSF fluxes (counts) of the candidates with the fitted PSF.
fn psf_fluxes(work: &Exposure, psf: &GaussianPsf, candidates: &[Candidate]) -> Vec<Candidate> {
    candidates
        .iter()
        .map(|c| {
            let peak = Peak {
                x: c.x.round() as usize,
                y: c.y.round() as usize,
                significance: c.significance,
            };
            let m = measure_point(work, psf, &peak);
            Candidate {
                x: m.x,
                y: m.y,
                flux: m.psf_flux.value,
                flux_err: m.psf_flux.err,
                position_err: m.x_err.hypot(m.y_err),
                ..c.clone()
            }
        })
        .collect()
}

/// Finds the pointing offset (pixels on the nominal WCS) by voting over candidate and
/// reference pairs, then matches each reference star to the nearest candidate within the
/// match radius. Returns the offset in arcsec (east, north) and (candidate, reference).
fn match_references(
    candidates: &[Candidate],
    refs: &[(usize, SkyCoord)],
    wcs: &TanSipWcs,
    w: usize,
    h: usize,
    config: &CharacterizeConfig,
) -> Result<(Offset, Vec<Match>), CharacterizeError> {
    let scale = wcs.pixel_scale_arcsec();
    let search = config.pointing_search / scale;
    let projected: Vec<(usize, PixelPosition)> = refs
        .iter()
        .enumerate()
        .filter_map(|(i, (_, s))| Some((i, wcs.sky_to_pixel(*s).ok()?)))
        .filter(|(_, p)| {
            p.x > -search && p.y > -search && p.x < w as f64 + search && p.y < h as f64 + search
        })
        .collect();
    if projected.len() < 3 {
        return Err(fail(
            "astrometry",
            format!(
                "{} reference stars fall on the image; 3 are needed",
                projected.len()
            ),
        ));
    }
    // Votes in 1-pixel bins of (candidate - reference).
    let bins = (2.0 * search).ceil() as usize + 1;
    let mut votes = vec![0u32; bins * bins];
    for c in candidates {
        for (_, p) in &projected {
            let (dx, dy) = (c.x - p.x + search, c.y - p.y + search);
            if dx >= 0.0 && dy >= 0.0 && dx < bins as f64 && dy < bins as f64 {
                votes[dy as usize * bins + dx as usize] += 1;
            }
        }
    }
    // The best 2 x 2 block of bins (an offset near a bin edge splits its votes).
    let (mut best, mut best_n) = ((0, 0), 0);
    for by in 0..bins - 1 {
        for bx in 0..bins - 1 {
            let n = votes[by * bins + bx]
                + votes[by * bins + bx + 1]
                + votes[(by + 1) * bins + bx]
                + votes[(by + 1) * bins + bx + 1];
            if n > best_n {
                (best, best_n) = ((bx, by), n);
            }
        }
    }
    if best_n < 3 {
        return Err(fail(
            "astrometry",
            format!(
                "no consistent offset between {} sources and {} reference stars within {} arcsec",
                candidates.len(),
                projected.len(),
                config.pointing_search
            ),
        ));
    }
    let (ox, oy) = (best.0 as f64 + 1.0 - search, best.1 as f64 + 1.0 - search);
    // Refine the offset with the pairs that voted for it, then match.
    let pairs: Vec<(f64, f64)> = candidates
        .iter()
        .flat_map(|c| projected.iter().map(move |(_, p)| (c.x - p.x, c.y - p.y)))
        .filter(|(dx, dy)| (dx - ox).abs() <= 1.5 && (dy - oy).abs() <= 1.5)
        .collect();
    let n = pairs.len() as f64;
    let (ox, oy) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let radius = (config.match_radius / scale).max(1.5);
    // The candidates in cells a match radius wide: a reference star's match is among the
    // nine cells around it, not among every candidate of the CCD.
    let cell = |v: f64| (v / radius).floor() as i64;
    let mut cells: HashMap<(i64, i64), Vec<usize>> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        cells.entry((cell(c.x), cell(c.y))).or_default().push(i);
    }
    let mut taken = vec![false; candidates.len()];
    let mut matches = Vec::new();
    for (r, p) in &projected {
        let (ex, ey) = (p.x + ox, p.y + oy);
        let (cx, cy) = (cell(ex), cell(ey));
        let nearest = (cy - 1..=cy + 1)
            .flat_map(|y| (cx - 1..=cx + 1).map(move |x| (x, y)))
            .filter_map(|k| cells.get(&k))
            .flatten()
            .map(|&i| {
                let c = &candidates[i];
                (i, (c.x - ex).powi(2) + (c.y - ey).powi(2))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((i, d2)) = nearest
            && d2 <= radius * radius
            && !taken[i]
        {
            taken[i] = true;
            matches.push((i, *r));
        }
    }
    // The offset on the sky: the candidate frame's shift seen through the CD matrix.
    let cd = wcs.cd();
    let (xi, eta) = (
        (cd[0][0] * ox + cd[0][1] * oy) * 3600.0,
        (cd[1][0] * ox + cd[1][1] * oy) * 3600.0,
    );
    Ok(((-xi, -eta), matches))
}

/// Fits a TAN-SIP WCS of `order` to the matched pairs (clipping outliers at 3 sigma),
/// lowering the order when there are too few stars. Returns the WCS, the pairs used, the
/// RMS (mas) and the order.
#[allow(clippy::type_complexity)]
fn fit_wcs(
    candidates: &[Candidate],
    refs: &[(usize, SkyCoord)],
    matches: &[(usize, usize)],
    w: usize,
    h: usize,
    order: usize,
) -> Result<(TanSipWcs, Vec<(usize, usize)>, f64, usize), CharacterizeError> {
    let terms = TangentPolynomial::terms;
    let mut order = order.clamp(1, 4);
    while order > 1 && matches.len() < terms(order) + 5 {
        order -= 1;
    }
    if matches.len() < 5 {
        return Err(fail(
            "astrometry",
            format!(
                "{} reference stars matched; 5 are needed (DMS-REQ-0030)",
                matches.len()
            ),
        ));
    }
    let crpix = PixelPosition {
        x: (w as f64 - 1.0) / 2.0,
        y: (h as f64 - 1.0) / 2.0,
    };
    // Pixel offsets scaled to order unity, for a well-conditioned fit.
    let s = w.max(h) as f64 / 2.0;
    let mut used: Vec<(usize, usize)> = matches.to_vec();
    // The tangent point: first the reference stars' mean, then what the fit says is at CRPIX.
    let mean_ra = used.iter().map(|&(_, r)| refs[r].1.ra()).sum::<f64>() / used.len() as f64;
    let mean_dec = used.iter().map(|&(_, r)| refs[r].1.dec()).sum::<f64>() / used.len() as f64;
    let mut tangent = SkyCoord::new(mean_ra, mean_dec)
        .ok_or_else(|| fail("astrometry", "bad reference positions"))?;
    let mut solution: Option<TangentPolynomial> = None;
    let mut rms = f64::INFINITY;
    let point = |tangent: SkyCoord, (c, r): (usize, usize)| {
        let (xi, eta) =
            tangent_plane(tangent.ra(), tangent.dec(), refs[r].1.ra(), refs[r].1.dec())?;
        Some(TangentPoint {
            u: candidates[c].x - crpix.x,
            v: candidates[c].y - crpix.y,
            xi,
            eta,
            // Weighted by the centroid's precision (with a floor for the reference
            // catalogue's own errors): bright stars place the WCS, faint ones barely.
            weight: weight_err(&candidates[c]).powi(-2),
        })
    };
    for round in 0..8 {
        let points: Vec<TangentPoint> = used.iter().filter_map(|&m| point(tangent, m)).collect();
        let fit = TangentPolynomial::fit(&points, order, s)
            .ok_or_else(|| fail("astrometry", "singular fit"))?;
        // Move the tangent point to the fitted sky position of CRPIX and refit.
        if round < 3 {
            let (xi, eta) = fit.offset();
            tangent = deproject(tangent, xi, eta);
            continue;
        }
        let res: Vec<f64> = used
            .iter()
            .map(|&m| {
                point(tangent, m).map_or(f64::NAN, |p| {
                    let (fx, fy) = fit.eval(p.u, p.v);
                    (fx - p.xi).hypot(fy - p.eta) * 3.6e6
                })
            })
            .collect();
        // The weighted RMS: what the solution's accuracy is set by.
        let weights: Vec<f64> = used
            .iter()
            .map(|&(c, _)| weight_err(&candidates[c]).powi(-2))
            .collect();
        let sw: f64 = weights.iter().sum();
        rms = (res
            .iter()
            .zip(&weights)
            .map(|(r, w)| w * r * r)
            .sum::<f64>()
            / sw)
            .sqrt();
        // Clip on residuals in units of each star's own expected scatter.
        let scale = fit.scale_mas();
        solution = Some(fit);
        let keep: Vec<(usize, usize)> = used
            .iter()
            .zip(&res)
            .filter(|(m, r)| **r <= 4.0 * weight_err(&candidates[m.0]) * scale)
            .map(|(m, _)| *m)
            .collect();
        if keep.len() == used.len() || keep.len() < terms(order) + 2 {
            break;
        }
        used = keep;
    }
    let solution = solution.ok_or_else(|| fail("astrometry", "no solution"))?;
    let wcs = solution
        .into_wcs(tangent, crpix, w, h)
        .map_err(|e| fail("astrometry", e.to_string()))?;
    Ok((wcs, used, rms, order))
}

/// A candidate's positional error for weighting, pixels: its centroid error with a floor
/// of 0.02 px (the reference catalogue's errors and the centroider's systematics).
fn weight_err(c: &Candidate) -> f64 {
    let e = if c.position_err.is_finite() {
        c.position_err
    } else {
        1.0
    };
    e.hypot(0.02)
}

/// Weighted mean of (value, error) after clipping values beyond 3 sigma of the median,
/// and its error (the scatter's, or the weights', whichever is larger).
fn clipped_weighted_mean(values: &mut Vec<(f64, f64)>) -> (f64, f64) {
    for _ in 0..5 {
        let mut v: Vec<f64> = values.iter().map(|x| x.0).collect();
        v.sort_by(f64::total_cmp);
        let med = v[v.len() / 2];
        let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
        dev.sort_by(f64::total_cmp);
        let sigma = 1.4826 * dev[dev.len() / 2];
        let before = values.len();
        values.retain(|x| (x.0 - med).abs() <= (3.0 * sigma).max(3.0 * x.1));
        if values.len() == before || values.len() < 3 {
            break;
        }
    }
    let sw: f64 = values.iter().map(|x| 1.0 / (x.1 * x.1).max(1e-12)).sum();
    let mean = values
        .iter()
        .map(|x| x.0 / (x.1 * x.1).max(1e-12))
        .sum::<f64>()
        / sw;
    let n = values.len() as f64;
    let scatter = (values.iter().map(|x| (x.0 - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0))
        .sqrt()
        / n.sqrt();
    (mean, scatter.max(1.0 / sw.sqrt()))
}
