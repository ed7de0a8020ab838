//! Calibrated CCD images of the synthetic sky: what a processed visit image of a visit would
//! show, with the truth of every object on it. It places [`crate::sky`] objects through a TAN
//! WCS centred on the CCD, draws stars as the PSF and galaxies as bulge + disk profiles
//! convolved with it ([`crate::scene`]), adds a flat sky, and draws Gaussian noise with the sky's and the
//! sources' Poisson variance (gain 1), at the visit's 5-sigma depth. The raw camera
//! simulator ([`crate::camsim`]) draws the same sky through the instrument.
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::image::{Exposure, HeaderValue, Image, Mask, PhotoCalib};
use crate::psf::GaussianPsf;
use crate::scene::Canvas;
use crate::sky::{BANDS, SimObject, SimVisit, gaussian, mag_to_njy};
use crate::wcs::{PixelPosition, SkyCoord, TanSipWcs};

/// Pixel scale, arcsec.
pub const PIXEL_SCALE: f64 = 0.2;
/// Zeropoint of rendered images: AB magnitude of one count.
pub const ZERO_POINT: f64 = 28.0;
/// Sky level, counts per pixel (subtracted by the pipeline's background model).
pub const SKY_LEVEL: f64 = 800.0;

/// What was put on the image for one object.
#[derive(Debug, Clone, PartialEq)]
pub struct TruthEntry {
    pub id: i64,
    pub x: f64,
    pub y: f64,
    pub is_star: bool,
    /// True flux at the visit's mid-exposure, nJy.
    pub flux_njy: f64,
    /// Signal-to-noise a PSF fit would reach on the sky noise alone.
    pub snr: f64,
}

/// Renders `size` x `size` pixels centred on (`ra`, `dec`) as `visit` saw them.
pub fn render(
    visit: &SimVisit,
    ra: f64,
    dec: f64,
    size: usize,
    objects: &[SimObject],
    seed: u64,
) -> (Exposure, Vec<TruthEntry>) {
    let s = PIXEL_SCALE / 3600.0;
    let centre = SkyCoord::new(ra, dec).expect("a valid centre");
    let c = (size as f64 - 1.0) / 2.0;
    let wcs = TanSipWcs::new(
        PixelPosition { x: c, y: c },
        centre,
        [[-s, 0.0], [0.0, s]],
        None,
    )
    .expect("a regular CD matrix");
    let fwhm = visit.seeing / PIXEL_SCALE;
    let psf = GaussianPsf::constant_fwhm(size, size, fwhm);
    let psf_moments = psf.moments_at(c, c);
    let sigma_psf = psf_moments.determinant_radius();
    let calib = PhotoCalib::new(ZERO_POINT, 0.0).expect("a finite zeropoint");
    let counts_of = |njy: f64| njy / calib.scale();
    // Sky noise per pixel so that a point source at the visit's depth has SNR 5.
    let depth_counts = counts_of(mag_to_njy(visit.depth()));
    let sky_sigma = depth_counts / (5.0 * (4.0 * std::f64::consts::PI).sqrt() * sigma_psf);
    let sky_var = sky_sigma * sky_sigma;
    let mut model = vec![0.0f64; size * size];
    let mut truth = Vec::new();
    let mjd = visit.mjd_mid();
    for o in objects {
        let Some(sky) = SkyCoord::new(o.ra, o.dec) else {
            continue;
        };
        let Ok(p) = wcs.sky_to_pixel(sky) else {
            continue;
        };
        let margin = 5.0 * fwhm;
        if p.x < -margin
            || p.y < -margin
            || p.x > size as f64 + margin
            || p.y > size as f64 + margin
        {
            continue;
        }
        let flux_njy = o.flux_at(visit.band, mjd);
        let counts = counts_of(flux_njy);
        let morphology = o.morphology(PIXEL_SCALE);
        Canvas {
            pixels: &mut model,
            width: size,
            height: size,
        }
        .draw(p.x, p.y, counts, morphology.as_ref(), psf_moments);
        if (0.0..size as f64).contains(&p.x) && (0.0..size as f64).contains(&p.y) {
            truth.push(TruthEntry {
                id: o.id,
                x: p.x,
                y: p.y,
                is_star: o.is_star,
                flux_njy,
                snr: counts / (sky_sigma * (4.0 * std::f64::consts::PI).sqrt() * sigma_psf),
            });
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ visit.visit as u64);
    let mut image = Vec::with_capacity(size * size);
    let mut variance = Vec::with_capacity(size * size);
    for m in &model {
        let var = sky_var + m.max(0.0);
        image.push((SKY_LEVEL + m + var.sqrt() * gaussian(&mut rng)) as f32);
        variance.push(var as f32);
    }
    let mut e = Exposure::new(
        Image::from_vec(size, size, image).expect("size x size"),
        Mask::new(size, size),
        Image::from_vec(size, size, variance).expect("size x size"),
    )
    .expect("one shape");
    e.wcs = Some(wcs);
    e.photo_calib = Some(calib);
    e.psf = Some(psf);
    e.metadata
        .insert("VISIT".into(), HeaderValue::Int(visit.visit));
    e.metadata
        .insert("FILTER".into(), HeaderValue::Text(BANDS[visit.band].into()));
    e.metadata
        .insert("MJD-OBS".into(), HeaderValue::Float(visit.mjd_start));
    e.metadata
        .insert("EXPTIME".into(), HeaderValue::Float(visit.exp_time));
    e.metadata
        .insert("AIRMASS".into(), HeaderValue::Float(visit.airmass));
    (e, truth)
}
