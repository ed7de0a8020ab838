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

/// An object that moves during the exposure (an asteroid): drawn as the PSF every half
/// pixel along its track from shutter open to close.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trail {
    pub id: i64,
    /// Where it is when the shutter opens and closes.
    pub start: SkyCoord,
    pub end: SkyCoord,
    /// Its flux, nJy.
    pub flux_njy: f64,
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
    render_scene(visit, ra, dec, size, objects, &[], seed)
}

/// [`render`], with moving objects too (their truth at mid-exposure).
pub fn render_scene(
    visit: &SimVisit,
    ra: f64,
    dec: f64,
    size: usize,
    objects: &[SimObject],
    trails: &[Trail],
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
    // What a PSF fit reaches on the sky noise alone.
    let point_snr =
        |counts: f64| counts / (sky_sigma * (4.0 * std::f64::consts::PI).sqrt() * sigma_psf);
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
                snr: point_snr(counts),
            });
        }
    }
    for t in trails {
        let (Ok(p0), Ok(p1)) = (wcs.sky_to_pixel(t.start), wcs.sky_to_pixel(t.end)) else {
            continue;
        };
        let mid = ((p0.x + p1.x) / 2.0, (p0.y + p1.y) / 2.0);
        let margin = 5.0 * fwhm;
        if mid.0 < -margin
            || mid.1 < -margin
            || mid.0 > size as f64 + margin
            || mid.1 > size as f64 + margin
        {
            continue;
        }
        let counts = counts_of(t.flux_njy);
        let steps = ((p1.x - p0.x).hypot(p1.y - p0.y) / 0.5).ceil().max(1.0) as usize;
        let mut canvas = Canvas {
            pixels: &mut model,
            width: size,
            height: size,
        };
        for k in 0..steps {
            let f = (k as f64 + 0.5) / steps as f64;
            let (x, y) = (p0.x + f * (p1.x - p0.x), p0.y + f * (p1.y - p0.y));
            canvas.draw(x, y, counts / steps as f64, None, psf_moments);
        }
        if (0.0..size as f64).contains(&mid.0) && (0.0..size as f64).contains(&mid.1) {
            truth.push(TruthEntry {
                id: t.id,
                x: mid.0,
                y: mid.1,
                is_star: false,
                flux_njy: t.flux_njy,
                snr: point_snr(counts),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trail_is_drawn_along_its_track_with_its_flux() {
        let visit = SimVisit {
            visit: 1,
            band: 2,
            ra: 62.4,
            dec: -36.6,
            sky_rotation: 0.0,
            mjd_start: 61_000.0,
            exp_time: 30.0,
            airmass: 1.1,
            seeing: 0.7,
            depth_offset: 0.0,
            altitude: 65.0,
            azimuth: 180.0,
        };
        let arcsec = 1.0 / 3600.0;
        let cosd = 36.6f64.to_radians().cos();
        let trail = Trail {
            id: 42,
            start: SkyCoord::new(62.4 - 2.0 * arcsec / cosd, -36.6).unwrap(),
            end: SkyCoord::new(62.4 + 2.0 * arcsec / cosd, -36.6).unwrap(),
            flux_njy: mag_to_njy(17.0),
        };
        let (e, truth) = render_scene(&visit, 62.4, -36.6, 128, &[], &[trail], 7);
        let t = truth
            .iter()
            .find(|t| t.id == 42)
            .expect("the trail's truth");
        let c = 127.0 / 2.0;
        assert!((t.x - c).abs() < 0.01 && (t.y - c).abs() < 0.01, "{t:?}");
        // 4 arcsec is 20 pixels along x: light spread over the track, none across it.
        let at = |x: usize, y: usize| e.image().get(x, y).unwrap() as f64 - SKY_LEVEL;
        let (cx, cy) = (c.round() as usize, c.round() as usize);
        assert!(at(cx - 8, cy) > 0.5 * at(cx, cy) && at(cx + 8, cy) > 0.5 * at(cx, cy));
        assert!(at(cx, cy + 8) < 0.05 * at(cx, cy));
        let calib = e.photo_calib.unwrap();
        let total: f64 = (cy - 12..cy + 13)
            .flat_map(|y| (cx - 25..cx + 26).map(move |x| (x, y)))
            .map(|(x, y)| at(x, y))
            .sum::<f64>()
            * calib.scale();
        assert!((total / trail.flux_njy - 1.0).abs() < 0.02, "{total}");
    }
}
