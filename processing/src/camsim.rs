//! The camera simulator (DMS-REQ-0009, 0296): raw exposures of one CCD as the camera of
//! [`crate::camera`] would read them out. Light (the sky, its stars and galaxies, the dome
//! screen or nothing) passes the optics' vignetting and the pixels' chromatic response,
//! fringes in the red, gains dark current, is drawn with Poisson noise, is struck by cosmic
//! rays, spills along columns above full well, and is read out through each amplifier with
//! its gain, crosstalk from the others, bias level, drift and structure, and read noise, into
//! 16-bit segments with prescan and overscan. Deterministic for a seed; rows are drawn in
//! parallel from their own generators, so the result does not depend on the thread count.
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::camera::{
    ADC_MAX, BAND_WAVELENGTH_NM, Camera, Detector, EXTINCTION, FRINGE_AMPLITUDE, PIXEL_SCALE,
    SKY_BRIGHTNESS, ZERO_POINT_1S, splitmix,
};
use crate::image::{Image, for_rows};
use crate::psf::Moments;
use crate::raw::{ObsType, ObservationInfo, RawAmp, RawExposure, SiteConditions, TelescopeState};
use crate::scene::Canvas;
use crate::sky::{Asteroid, SimObject, SimVisit, gaussian, njy_to_mag, noise_rng};
use crate::wcs::SkyCoord;

/// Seconds from shutter close to the end of readout, counted in the dark time.
pub const READOUT_TIME: f64 = 2.0;
/// Exposure time of one snap; a visit is two.
pub const SNAP_TIME: f64 = 15.0;

/// What reaches the detector.
#[derive(Debug, Clone, Copy)]
pub enum Light<'a> {
    /// Shutter closed: bias (0 s) and dark frames.
    Closed,
    /// The dome screen lit to `level` electrons a pixel (before vignetting and response),
    /// through the filter `band` or from the monochromator at `wavelength` nm.
    Dome {
        band: Option<usize>,
        wavelength: f64,
        level: f64,
    },
    /// `count` projector spots of `level` electrons a pixel (well above full well), each a
    /// disc of `radius` pixels at positions drawn from the exposure id.
    Spots {
        count: usize,
        level: f64,
        radius: f64,
    },
    /// The sky of `visit` with these objects and asteroids.
    Sky {
        visit: &'a SimVisit,
        objects: &'a [SimObject],
        asteroids: &'a [Asteroid],
    },
}

/// One exposure to simulate.
#[derive(Debug, Clone)]
pub struct ExposureSpec<'a> {
    pub light: Light<'a>,
    pub obs_type: ObsType,
    pub obs_id: String,
    pub exposure_id: i64,
    pub snap: u8,
    pub tai_start: f64,
    pub exposure_time: f64,
}

/// An object as it was drawn on a raw exposure.
#[derive(Debug, Clone, PartialEq)]
pub struct DrawnObject {
    pub id: i64,
    /// Apparent position at mid-exposure (proper motion and parallax applied).
    pub ra: f64,
    pub dec: f64,
    /// Pixel position on the assembled CCD, 0-based.
    pub x: f64,
    pub y: f64,
    pub is_star: bool,
    /// An asteroid (at its mid-exposure position; trailed on the image).
    pub moving: bool,
    /// True flux at mid-exposure, nJy.
    pub flux_njy: f64,
    /// Photo-electrons collected from it (before noise), at the pixel's response.
    pub electrons: f64,
}

/// A simulated raw exposure and what went into it.
#[derive(Debug, Clone)]
pub struct Simulated {
    pub raw: RawExposure,
    pub objects: Vec<DrawnObject>,
    /// Pixels (x, y) of the assembled CCD that cosmic rays hit.
    pub cosmic_ray_pixels: Vec<(usize, usize)>,
}

/// The objects of a visit's snaps as one list, each once: its electrons summed over the
/// snaps, and a moving one placed at the mean of its places, the visit's middle.
pub fn combine_snaps(snaps: impl IntoIterator<Item = Vec<DrawnObject>>) -> Vec<DrawnObject> {
    let mut out: Vec<DrawnObject> = Vec::new();
    let mut at: std::collections::HashMap<i64, usize> = Default::default();
    for o in snaps.into_iter().flatten() {
        match at.get(&o.id) {
            Some(&i) => {
                let r = &mut out[i];
                r.electrons += o.electrons;
                if o.moving {
                    r.x = (r.x + o.x) / 2.0;
                    r.y = (r.y + o.y) / 2.0;
                    r.ra = (r.ra + o.ra) / 2.0;
                    r.dec = (r.dec + o.dec) / 2.0;
                }
            }
            None => {
                at.insert(o.id, out.len());
                out.push(o);
            }
        }
    }
    out
}

/// The boresight the telescope reports for a visit: the true one off by its pointing
/// error (about 1.5 arcsec rms per axis), the same for both snaps.
pub fn reported_boresight(visit: &SimVisit) -> SkyCoord {
    let mut rng = noise_rng(visit.visit as u64, 0x90_1e7);
    let (dx, dy) = (1.5 * gaussian(&mut rng), 1.5 * gaussian(&mut rng));
    let dec = visit.dec + dy / 3600.0;
    let ra = visit.ra + dx / 3600.0 / visit.dec.to_radians().cos();
    SkyCoord::new(ra, dec).expect("a visit on the sky")
}

/// Sky transparency of a visit: thin cloud on some nights.
pub fn transparency(visit: &SimVisit) -> f64 {
    let u = (splitmix(visit.visit as u64 ^ 0x7a5) >> 11) as f64 / (1u64 << 53) as f64;
    1.0 - 0.12 * u * u
}

/// Sky brightness of a visit in its band, AB mag per square arcsec: the dark sky
/// brightened with airmass.
pub fn sky_brightness(visit: &SimVisit) -> f64 {
    SKY_BRIGHTNESS[visit.band] - 0.3 * (visit.airmass - 1.0)
}

/// Electrons per second a source of AB magnitude `mag` gives through `visit`'s band,
/// atmosphere and clouds, before vignetting and pixel response.
pub fn electron_rate(visit: &SimVisit, mag: f64) -> f64 {
    10f64.powf(-0.4 * (mag + EXTINCTION[visit.band] * visit.airmass - ZERO_POINT_1S[visit.band]))
        * transparency(visit)
}

/// PSF moments (pixels²) at focal-plane position (fx, fy) for a visit: the seeing
/// broadens and elongates slightly towards the edge of the field.
pub fn psf_moments(camera: &Camera, visit: &SimVisit, fx: f64, fy: f64) -> Moments {
    let sigma = visit.seeing / PIXEL_SCALE / (2.0 * (2.0 * std::f64::consts::LN_2).sqrt());
    let rmax = 1.5 * (camera.ccd_size as f64 + crate::camera::CCD_GAP);
    let (u, v) = (fx / rmax, fy / rmax);
    let s2 = sigma * sigma;
    Moments {
        ixx: s2 * (1.0 + 0.06 * (u * u + v * v) + 0.02 * u * u),
        iyy: s2 * (1.0 + 0.06 * (u * u + v * v) + 0.02 * v * v),
        ixy: s2 * 0.02 * u * v,
    }
}

/// The zeropoint (AB magnitude of one count) a visit's ISR-processed image of `d` will
/// have: the system throughput through the atmosphere and clouds over `exposure_time`, times
/// the mean response the flat and illumination corrections normalise to.
pub fn expected_zero_point(camera: &Camera, d: &Detector, v: &SimVisit, exposure_time: f64) -> f64 {
    let nm = BAND_WAVELENGTH_NM[v.band];
    let (mut rvd, mut inv_d, mut n) = (0.0, 0.0, 0.0);
    for y in (0..d.size).step_by(7) {
        for x in (0..d.size).step_by(7) {
            let (fx, fy) = d.focal_plane(x as f64, y as f64);
            let dome = camera.dome_illumination(fx, fy);
            let r = d.response(x, y, nm) * camera.vignetting(fx, fy) * dome;
            if r > 0.2 {
                rvd += r;
                inv_d += 1.0 / dome;
                n += 1.0;
            }
        }
    }
    let scale = (rvd / n) * (inv_d / n);
    ZERO_POINT_1S[v.band] - EXTINCTION[v.band] * v.airmass
        + 2.5 * (transparency(v) * exposure_time * scale).log10()
}

/// Simulates `spec` on `detector` of `camera`.
pub fn simulate(camera: &Camera, detector: &Detector, spec: &ExposureSpec, seed: u64) -> Simulated {
    let size = detector.size;
    let dark_time = spec.exposure_time + READOUT_TIME;
    let tag = seed ^ splitmix(spec.exposure_id as u64) ^ (detector.id as u64) << 56;
    let mut expected = vec![0.0f64; size * size];
    let mut objects = Vec::new();
    // Light falling on the pixels, before their response.
    let (nm, light_level, fringe_level) = match spec.light {
        Light::Closed => (BAND_WAVELENGTH_NM[2], 0.0, 0.0),
        Light::Spots {
            count,
            level,
            radius,
        } => {
            let mut rng = noise_rng(tag, 0x5907);
            for _ in 0..count {
                let cx = rng.random_range(radius..size as f64 - radius);
                let cy = rng.random_range(radius..size as f64 - radius);
                let r = radius.ceil() as usize;
                for y in (cy as usize).saturating_sub(r)..(cy as usize + r + 1).min(size) {
                    for x in (cx as usize).saturating_sub(r)..(cx as usize + r + 1).min(size) {
                        if (x as f64 - cx).powi(2) + (y as f64 - cy).powi(2) <= radius * radius {
                            expected[y * size + x] = level;
                        }
                    }
                }
            }
            (BAND_WAVELENGTH_NM[2], 0.0, 0.0)
        }
        Light::Dome {
            wavelength, level, ..
        } => (wavelength, level, 0.0),
        Light::Sky {
            visit,
            objects: sky,
            asteroids,
        } => {
            let sky_e = electron_rate(visit, sky_brightness(visit))
                * PIXEL_SCALE
                * PIXEL_SCALE
                * spec.exposure_time;
            let mid = spec.tai_start + spec.exposure_time / 2.0 / 86_400.0;
            let boresight = SkyCoord::new(visit.ra, visit.dec).expect("a visit on the sky");
            let mut canvas = Canvas {
                pixels: &mut expected,
                width: size,
                height: size,
            };
            for o in sky {
                let (ra, dec) = o.position_at(mid);
                let Some(sc) = SkyCoord::new(ra, dec) else {
                    continue;
                };
                let Some(p) = camera.sky_to_pixel(detector, boresight, visit.sky_rotation, sc)
                else {
                    continue;
                };
                let margin = 30.0;
                if p.x < -margin
                    || p.y < -margin
                    || p.x > size as f64 + margin
                    || p.y > size as f64 + margin
                {
                    continue;
                }
                let flux_njy = o.flux_at(visit.band, mid);
                let electrons = electron_rate(visit, njy_to_mag(flux_njy)) * spec.exposure_time;
                let (fx, fy) = detector.focal_plane(p.x, p.y);
                let psf = psf_moments(camera, visit, fx, fy);
                canvas.draw(p.x, p.y, electrons, o.morphology(PIXEL_SCALE).as_ref(), psf);
                if (0.0..size as f64 - 0.5).contains(&p.x)
                    && (0.0..size as f64 - 0.5).contains(&p.y)
                {
                    let (xi, yi) = (p.x.round() as usize, p.y.round() as usize);
                    objects.push(DrawnObject {
                        id: o.id,
                        ra,
                        dec,
                        x: p.x,
                        y: p.y,
                        is_star: o.is_star,
                        moving: false,
                        flux_njy,
                        electrons: electrons
                            * detector.response(xi, yi, BAND_WAVELENGTH_NM[visit.band])
                            * camera.vignetting(fx, fy),
                    });
                }
            }
            // Asteroids trail during the exposure: drawn as PSFs every half pixel along
            // the track between shutter open and close.
            let (start, end) = (
                spec.tai_start,
                spec.tai_start + spec.exposure_time / 86_400.0,
            );
            for a in asteroids.iter() {
                let pixel = |mjd: f64| {
                    let (ra, dec) = a.position_at(mjd);
                    let sc = SkyCoord::new(ra, dec)?;
                    camera.sky_to_pixel(detector, boresight, visit.sky_rotation, sc)
                };
                let (Some(p0), Some(p1), Some(pm)) = (pixel(start), pixel(end), pixel(mid)) else {
                    continue;
                };
                let margin = 30.0;
                if pm.x < -margin
                    || pm.y < -margin
                    || pm.x > size as f64 + margin
                    || pm.y > size as f64 + margin
                {
                    continue;
                }
                let flux_njy = a.flux[visit.band];
                let electrons = electron_rate(visit, njy_to_mag(flux_njy)) * spec.exposure_time;
                let (fx, fy) = detector.focal_plane(pm.x, pm.y);
                let psf = psf_moments(camera, visit, fx, fy);
                let steps = ((p1.x - p0.x).hypot(p1.y - p0.y) / 0.5).ceil().max(1.0) as usize;
                for k in 0..steps {
                    let t = (k as f64 + 0.5) / steps as f64;
                    let (x, y) = (p0.x + t * (p1.x - p0.x), p0.y + t * (p1.y - p0.y));
                    canvas.draw(x, y, electrons / steps as f64, None, psf);
                }
                if (0.0..size as f64 - 0.5).contains(&pm.x)
                    && (0.0..size as f64 - 0.5).contains(&pm.y)
                {
                    let (ra, dec) = a.position_at(mid);
                    let (xi, yi) = (pm.x.round() as usize, pm.y.round() as usize);
                    objects.push(DrawnObject {
                        id: a.id,
                        ra,
                        dec,
                        x: pm.x,
                        y: pm.y,
                        is_star: false,
                        moving: true,
                        flux_njy,
                        electrons: electrons
                            * detector.response(xi, yi, BAND_WAVELENGTH_NM[visit.band])
                            * camera.vignetting(fx, fy),
                    });
                }
            }
            (
                BAND_WAVELENGTH_NM[visit.band],
                sky_e,
                sky_e * FRINGE_AMPLITUDE[visit.band],
            )
        }
    };
    let dome = matches!(spec.light, Light::Dome { .. });
    // Expected electrons: light through vignetting and response, fringes, dark current;
    // then Poisson noise, row by row.
    for_rows(&mut expected, size, |y, row| {
        let mut rng = noise_rng(tag, y as u64);
        for (x, e) in row.iter_mut().enumerate() {
            let (fx, fy) = detector.focal_plane(x as f64, y as f64);
            let mut illumination = camera.vignetting(fx, fy);
            if dome {
                illumination *= camera.dome_illumination(fx, fy);
            }
            let light = (light_level + *e) * illumination + fringe_level * detector.fringe(x, y);
            let mean = light.max(0.0) * detector.response(x, y, nm)
                + detector.dark_current(x, y) * dark_time;
            *e = poisson(&mut rng, mean);
        }
    });
    let cosmic_ray_pixels = cosmic_rays(&mut expected, size, dark_time, tag);
    bleed(&mut expected, detector);
    let raw = read_out(detector, &expected, tag);
    Simulated {
        raw: RawExposure {
            info: observation_info(detector, spec),
            amps: raw,
        },
        objects,
        cosmic_ray_pixels,
    }
}

/// The header of the exposure.
fn observation_info(detector: &Detector, spec: &ExposureSpec) -> ObservationInfo {
    let h = |k: u64| (splitmix(spec.exposure_id as u64 ^ k) >> 11) as f64 / (1u64 << 53) as f64;
    let (band, wavelength, telescope, seeing) = match spec.light {
        Light::Closed | Light::Spots { .. } => (None, None, None, 0.7 + 0.4 * h(1)),
        Light::Dome {
            band, wavelength, ..
        } => (
            band,
            band.is_none().then_some(wavelength),
            None,
            0.7 + 0.4 * h(1),
        ),
        Light::Sky { visit, .. } => (
            Some(visit.band),
            None,
            Some(TelescopeState {
                boresight: reported_boresight(visit),
                rotation: visit.sky_rotation,
                altitude: visit.altitude,
                azimuth: visit.azimuth,
                airmass: visit.airmass,
                focus_z: 20.0 * (h(2) - 0.5),
                m1_temperature: 8.0 + 6.0 * h(3),
                dome_azimuth: visit.azimuth + (h(4) - 0.5),
            }),
            visit.seeing / visit.airmass.powf(0.6),
        ),
    };
    ObservationInfo {
        obs_id: spec.obs_id.clone(),
        exposure_id: spec.exposure_id,
        obs_type: spec.obs_type,
        visit: match spec.light {
            Light::Sky { visit, .. } => Some(visit.visit),
            _ => None,
        },
        snap: spec.snap,
        detector: detector.id,
        detector_name: detector.name.clone(),
        ccd_size: detector.size,
        focal_plane_centre: detector.centre,
        band,
        wavelength,
        tai_start: spec.tai_start,
        tai_end: spec.tai_start + spec.exposure_time / 86_400.0,
        exposure_time: spec.exposure_time,
        dark_time: spec.exposure_time + READOUT_TIME,
        dut1: 0.1 * (spec.tai_start / 180.0).sin(),
        tai_utc: 37.0,
        telescope,
        site: SiteConditions {
            seeing,
            transparency: match spec.light {
                Light::Sky { visit, .. } => transparency(visit),
                _ => 1.0,
            },
            air_temperature: 6.0 + 8.0 * h(5),
            pressure_hpa: 740.0 + 10.0 * h(6),
            humidity: 10.0 + 50.0 * h(7),
            wind_speed: 12.0 * h(8),
            wind_direction: 360.0 * h(9),
        },
        ccd_temperature: -100.0 + 0.2 * (h(10) - 0.5),
        cryostat_temperature: -130.0 + 0.5 * (h(11) - 0.5),
        shutter_motion: 0.93 + 0.02 * h(12),
    }
}

/// A Poisson deviate of mean `mean`: exact (by inversion) below 40, normal above.
fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    if mean <= 0.0 {
        return 0.0;
    }
    if mean > 40.0 {
        return (mean + mean.sqrt() * gaussian(rng)).round().max(0.0);
    }
    let limit = (-mean).exp();
    let mut k = 0.0;
    let mut p: f64 = rng.random();
    while p > limit {
        k += 1.0;
        p *= rng.random::<f64>();
    }
    k
}

/// Adds cosmic-ray tracks for `seconds` of exposure and returns the pixels they hit.
fn cosmic_rays(e: &mut [f64], size: usize, seconds: f64, tag: u64) -> Vec<(usize, usize)> {
    let mut rng = noise_rng(tag, u64::MAX);
    let rate = 1.4e-7 * (size * size) as f64 * seconds;
    let count = poisson(&mut rng, rate) as usize;
    let mut hit = Vec::new();
    for _ in 0..count {
        let (x0, y0) = (
            rng.random_range(0.0..size as f64),
            rng.random_range(0.0..size as f64),
        );
        // Mostly short tracks from steep muons and electrons, some long grazing ones.
        let length = (-rng.random_range(f64::MIN_POSITIVE..1.0f64).ln() * 4.0).min(40.0);
        let angle = rng.random_range(0.0..std::f64::consts::TAU);
        let per_pixel = rng.random_range(900.0..4000.0);
        let steps = (length * 2.0).ceil().max(1.0) as usize;
        for s in 0..=steps {
            let t = s as f64 / steps as f64 * length;
            let (x, y) = (x0 + t * angle.cos(), y0 + t * angle.sin());
            if x < 0.0 || y < 0.0 || x >= size as f64 || y >= size as f64 {
                continue;
            }
            let (xi, yi) = (x as usize, y as usize);
            e[yi * size + xi] += per_pixel / (steps as f64 + 1.0) * length.max(1.0);
            hit.push((xi, yi));
        }
    }
    hit.sort_unstable();
    hit.dedup();
    hit
}

/// Moves charge above full well along each column, half up and half down, into pixels
/// with room; charge that runs off the CCD is lost.
fn bleed(e: &mut [f64], detector: &Detector) {
    let size = detector.size;
    for x in 0..size {
        let full = detector
            .amp_at(x, 0)
            .full_well
            .min(detector.amp_at(x, size - 1).full_well);
        for y in 0..size {
            let excess = e[y * size + x] - full;
            if excess <= 0.0 {
                continue;
            }
            e[y * size + x] = full;
            for direction in [1i64, -1] {
                let mut carry = excess / 2.0;
                let mut yy = y as i64 + direction;
                while carry > 0.0 && (0..size as i64).contains(&yy) {
                    let p = &mut e[yy as usize * size + x];
                    let take = (full - *p).max(0.0).min(carry);
                    *p += take;
                    carry -= take;
                    yy += direction;
                }
            }
        }
    }
}

/// Reads the electrons out through every amplifier into raw segments.
fn read_out(detector: &Detector, e: &[f64], tag: u64) -> Vec<RawAmp> {
    let size = detector.size;
    // Signal in ADU at each raw data pixel, amplifier by amplifier, in readout order.
    let signal: Vec<Vec<f64>> = detector
        .amps
        .iter()
        .map(|a| {
            let l = &a.layout;
            let mut s = vec![0.0; l.width * l.height];
            for ry in 0..l.height {
                for i in 0..l.width {
                    let (x, y) = l
                        .to_ccd(crate::camera::PRESCAN + i, ry)
                        .expect("a data pixel");
                    s[ry * l.width + i] = e[y * size + x] / a.gain;
                }
            }
            s
        })
        .collect();
    // What each amplifier's signal can reach before the converter saturates.
    let ceilings: Vec<f64> = detector
        .amps
        .iter()
        .map(|a| a.saturation_adu() - a.bias_level)
        .collect();
    // Amplifiers are read out in parallel, each with its own generator.
    std::thread::scope(|scope| {
        let handles: Vec<_> = detector
            .amps
            .iter()
            .enumerate()
            .map(|(v, amp)| {
                let (signal, ceilings) = (&signal, &ceilings);
                scope.spawn(move || read_amp(detector, v, amp, signal, ceilings, tag))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("an amplifier's readout"))
            .collect()
    })
}

/// One amplifier's raw segment: bias level with drift and structure, its signal and the
/// crosstalk of the others, read noise, digitised.
fn read_amp(
    detector: &Detector,
    v: usize,
    amp: &crate::camera::Amplifier,
    signal: &[Vec<f64>],
    ceilings: &[f64],
    tag: u64,
) -> RawAmp {
    let n = detector.amps.len();
    let l = &amp.layout;
    let (w, h) = (l.raw_width(), l.raw_height());
    let mut rng = noise_rng(tag ^ 0xb1a5, v as u64);
    let drift = 4.0 * gaussian(&mut rng);
    let phase = rng.random_range(0.0..std::f64::consts::TAU);
    let mut pixels = Vec::with_capacity(w * h);
    let read_noise_adu = amp.read_noise / amp.gain;
    for ry in 0..h {
        // A slow drift along the readout that the overscan follows row by row.
        let level = amp.bias_level + drift + 0.8 * (ry as f64 / 150.0 + phase).sin();
        for rx in 0..w {
            let mut value = level + read_noise_adu * gaussian(&mut rng);
            if let Some(i) = (rx >= crate::camera::PRESCAN && ry < l.height)
                .then(|| rx - crate::camera::PRESCAN)
                .filter(|&i| i < l.width)
            {
                let k = ry * l.width + i;
                let mut adu = signal[v][k].min(ceilings[v]);
                for (s, other) in signal.iter().enumerate() {
                    if s != v {
                        adu += detector.crosstalk[v * n + s] * other[k].min(ceilings[s]);
                    }
                }
                value += adu + detector.bias_structure(v, rx, ry);
            }
            pixels.push(value.round().clamp(0.0, ADC_MAX) as u16);
        }
    }
    RawAmp {
        layout: l.clone(),
        gain: amp.gain,
        read_noise: amp.read_noise,
        saturation: amp.saturation_adu(),
        pixels: Image::from_vec(w, h, pixels).expect("the raw segment's shape"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sky::{Footprint, cadence, objects};

    fn spec<'a>(light: Light<'a>, obs_type: ObsType, t: f64) -> ExposureSpec<'a> {
        ExposureSpec {
            light,
            obs_type,
            obs_id: "AS_TEST_000001".into(),
            exposure_id: 7,
            snap: 0,
            tai_start: 60_600.1,
            exposure_time: t,
        }
    }

    #[test]
    fn bias_frames_sit_at_the_bias_level_with_read_noise() {
        let cam = Camera::new(2, 256, 1).unwrap();
        let d = &cam.detectors[0];
        let sim = simulate(&cam, d, &spec(Light::Closed, ObsType::Bias, 0.0), 9);
        sim.raw.validate().unwrap();
        for (a, amp) in sim.raw.amps.iter().zip(&d.amps) {
            let over: Vec<f64> = (0..a.layout.height)
                .flat_map(|ry| {
                    (a.layout.raw_width() - 20..a.layout.raw_width()).map(move |rx| (rx, ry))
                })
                .map(|(rx, ry)| a.pixels.get(rx, ry).unwrap() as f64)
                .collect();
            let mean = over.iter().sum::<f64>() / over.len() as f64;
            let sd =
                (over.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / over.len() as f64).sqrt();
            assert!(
                (mean - amp.bias_level).abs() < 20.0,
                "{mean} {}",
                amp.bias_level
            );
            let expected = amp.read_noise / amp.gain;
            assert!(
                (sd - expected).abs() < 0.25 * expected,
                "{sd} vs {expected}"
            );
        }
        let info = &sim.raw.info;
        assert_eq!(
            ObservationInfo::from_cards(
                &info
                    .to_cards()
                    .into_iter()
                    .map(|(k, v, _)| (k.to_string(), v))
                    .collect()
            )
            .unwrap(),
            *info
        );
    }

    #[test]
    fn flats_follow_response_and_saturated_stars_bleed() {
        let cam = Camera::new(2, 256, 1).unwrap();
        let d = &cam.detectors[0];
        let light = Light::Dome {
            band: Some(2),
            wavelength: 622.0,
            level: 20_000.0,
        };
        let sim = simulate(&cam, d, &spec(light, ObsType::Flat, 10.0), 9);
        let img = sim.raw.assemble();
        // Pixel (100, 60) of amp C00: raw ADU minus bias, times gain, over the expected.
        let a = d.amp_at(100, 60);
        let (fx, fy) = d.focal_plane(100.0, 60.0);
        let expected = 20_000.0
            * d.response(100, 60, 622.0)
            * cam.vignetting(fx, fy)
            * cam.dome_illumination(fx, fy);
        let got = (img.get(100, 60).unwrap() as f64 - a.bias_level) * a.gain;
        assert!((got / expected - 1.0).abs() < 0.05, "{got} vs {expected}");

        // A very bright star saturates and bleeds along its column.
        let visit = &cadence(1, 1, Footprint::for_objects(1000))[0];
        let centre = cam
            .pixel_to_sky(
                d,
                SkyCoord::new(visit.ra, visit.dec).unwrap(),
                visit.sky_rotation,
                crate::wcs::PixelPosition { x: 160.0, y: 200.0 },
            )
            .unwrap();
        let mut star = objects(1, 50, Footprint::for_objects(1000))
            .find(|o| o.is_star)
            .unwrap();
        (
            star.ra,
            star.dec,
            star.pm_ra,
            star.pm_dec,
            star.parallax,
            star.variability,
        ) = (centre.ra(), centre.dec(), 0.0, 0.0, 0.0, None);
        star.flux = [crate::sky::mag_to_njy(12.0); 6];
        let stars = [star];
        let sky = Light::Sky {
            visit,
            objects: &stars,
            asteroids: &[],
        };
        let sim = simulate(&cam, d, &spec(sky, ObsType::Science, 15.0), 9);
        let img = sim.raw.assemble();
        let sat = d.amp_at(160, 200).saturation_adu() - 20.0;
        let saturated: Vec<usize> = (0..256)
            .filter(|&y| img.get(160, y).unwrap() as f64 >= sat)
            .collect();
        assert!(saturated.len() > 10, "{saturated:?}");
        let wide: Vec<usize> = (0..256)
            .filter(|&x| img.get(x, 200).unwrap() as f64 >= sat)
            .collect();
        assert!(
            saturated.len() > wide.len(),
            "bleeds along the column: {} vs {}",
            saturated.len(),
            wide.len()
        );
        assert_eq!(sim.objects.len(), 1);
        // Crosstalk: the neighbouring amplifier shows a ghost at the mirrored position.
        let (rx, ry) = d.amp_at(160, 200).layout.to_raw(160, 200);
        let victim = &sim.raw.amps[d.amp_at(160, 200).layout.index - 1];
        let ghost = victim.pixels.get(rx, ry).unwrap() as f64;
        // Beside the bleed trail's ghost, which runs along the same raw column.
        let quiet = victim.pixels.get(rx + 20, ry).unwrap() as f64;
        assert!(ghost - quiet > 3.0, "{ghost} vs {quiet}");
    }

    #[test]
    fn snaps_combine_into_one_entry_per_object() {
        let drawn = |id: i64, x: f64, moving: bool| DrawnObject {
            id,
            ra: x / 1000.0,
            dec: 0.0,
            x,
            y: 2.0 * x,
            is_star: !moving,
            moving,
            flux_njy: 100.0,
            electrons: 50.0,
        };
        let visit = combine_snaps([
            vec![drawn(1, 10.0, false), drawn(2, 20.0, true)],
            vec![
                drawn(2, 22.0, true),
                drawn(1, 10.0, false),
                drawn(3, 30.0, false),
            ],
        ]);
        assert_eq!(visit.iter().map(|o| o.id).collect::<Vec<_>>(), [1, 2, 3]);
        // Electrons add up; a star stays put; an asteroid sits between its two places.
        assert_eq!((visit[0].electrons, visit[0].x), (100.0, 10.0));
        assert_eq!((visit[1].x, visit[1].y), (21.0, 42.0));
        assert!((visit[1].ra - 0.021).abs() < 1e-15);
        assert_eq!(visit[2].electrons, 50.0);
    }

    #[test]
    fn asteroids_trail_along_their_motion() {
        let cam = Camera::new(2, 256, 1).unwrap();
        let d = &cam.detectors[0];
        let visit = &cadence(1, 1, Footprint::for_objects(1000))[0];
        let centre = cam
            .pixel_to_sky(
                d,
                SkyCoord::new(visit.ra, visit.dec).unwrap(),
                visit.sky_rotation,
                crate::wcs::PixelPosition { x: 128.0, y: 128.0 },
            )
            .unwrap();
        // 4 deg/day for clarity: 2.5 arcsec, 12 pixels, in a 15 s exposure.
        let t0 = 60_000.0;
        let rock = Asteroid {
            id: 9_000_000_001,
            ra: centre.ra(),
            dec: centre.dec(),
            mjd0: t0 + 7.5 / 86_400.0,
            rate_ra: 0.0,
            rate_dec: 4.0,
            flux: [crate::sky::mag_to_njy(17.0); 6],
        };
        let rocks = [rock];
        let mut s = spec(
            Light::Sky {
                visit,
                objects: &[],
                asteroids: &rocks,
            },
            ObsType::Science,
            15.0,
        );
        s.tai_start = t0;
        let sim = simulate(&cam, d, &s, 3);
        assert_eq!(sim.objects.len(), 1);
        let o = &sim.objects[0];
        assert!(
            o.moving && (o.x - 128.0).abs() < 0.5 && (o.y - 128.0).abs() < 0.5,
            "{o:?}"
        );
        // The light lies along the track, which the camera's rotation points somewhere in
        // the image plane: its second moments are far longer along it than across.
        let img = sim.raw.assemble();
        let (mut sw, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0);
        let mut around: Vec<f32> = (98..158)
            .flat_map(|y| (98..158).map(move |x| (x, y)))
            .map(|(x, y)| img.get(x, y).unwrap())
            .collect();
        around.sort_by(f32::total_cmp);
        let level = f64::from(around[around.len() / 2]);
        let mut deviations: Vec<f64> = around
            .iter()
            .map(|&v| (f64::from(v) - level).abs())
            .collect();
        deviations.sort_by(f64::total_cmp);
        let noise = 1.4826 * deviations[deviations.len() / 2];
        for y in 98..158 {
            for x in 98..158 {
                let v = img.get(x, y).unwrap() as f64 - level;
                let v = if v > 5.0 * noise { v } else { 0.0 };
                let (dx, dy) = (x as f64 - 128.0, y as f64 - 128.0);
                sw += v;
                sxx += v * dx * dx;
                syy += v * dy * dy;
                sxy += v * dx * dy;
            }
        }
        let (a, b, c) = (sxx / sw, syy / sw, sxy / sw);
        let half = ((a - b).powi(2) / 4.0 + c * c).sqrt();
        let (major, minor) = ((a + b) / 2.0 + half, (a + b) / 2.0 - half);
        assert!(major > 4.0 * minor, "{major} vs {minor}");
    }
}
