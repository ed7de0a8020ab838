//! Exposures from the calibrated images of other cameras (DMS-REQ-0296): a plain image and
//! its header cards become an [`Exposure`] with a mask (pixels without a finite value are
//! NO_DATA, those at or over SATURATE are SAT), a variance plane (the sky noise measured
//! on the image, plus the sources' own Poisson noise where GAIN says how many electrons a
//! count is), the WCS (TAN, TAN-SIP or TPV), and what the header says of the band, the
//! time and the seeing.
use std::collections::HashMap;

use crate::background::{Background, BackgroundError};
use crate::image::{Exposure, HeaderValue, Image, Mask, MaskPlane};
use crate::raw::iso_to_mjd;
use crate::sky::band_index;
use crate::wcs::{TanSipWcs, WcsError};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlainImageError {
    #[error("the header has no WCS (CTYPE1/CTYPE2): a WCS is needed to place sources")]
    NoWcs,
    #[error("WCS: {0}")]
    Wcs(#[from] WcsError),
    #[error("{key}: {message}")]
    Header { key: String, message: String },
    #[error("no pixel has a finite value")]
    Empty,
    #[error("background: {0}")]
    Background(#[from] BackgroundError),
}

/// What the header tells of the observation.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Index into [`crate::sky::BANDS`], from FILTER when it names one of ugrizy.
    pub band: Option<usize>,
    /// Mid-exposure MJD: MJD-OBS or DATE-OBS (the start) plus half of EXPTIME.
    pub mjd: Option<f64>,
    /// The sky noise measured, counts per pixel (1 sigma).
    pub sky_noise: f64,
    /// GAIN (electrons per count) when the header gives one.
    pub gain: Option<f64>,
}

/// Header keywords carried into the exposure's metadata. The WCS is re-derived (and may
/// be refitted), so its cards are not copied.
const KEPT: [&str; 12] = [
    "TELESCOP", "INSTRUME", "OBSERVER", "OBJECT", "FILTER", "EXPTIME", "DATE-OBS", "MJD-OBS",
    "AIRMASS", "SEEING", "GAIN", "SATURATE",
];

/// Background bin for the noise estimate, pixels.
const BIN: usize = 128;

/// Builds the exposure of `image` from its header `cards` (keyword → value as written).
pub fn exposure_from_plain(
    mut image: Image<f32>,
    cards: &HashMap<String, String>,
) -> Result<(Exposure, Observation), PlainImageError> {
    let (w, h) = (image.width(), image.height());
    let text = |k: &str| {
        cards
            .get(k)
            .map(|v| v.trim().trim_matches('\'').trim().to_string())
    };
    let number = |k: &str| -> Result<Option<f64>, PlainImageError> {
        match cards.get(k) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .replace(['D', 'd'], "E")
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| PlainImageError::Header {
                    key: k.into(),
                    message: format!("'{}' is not a number", v.trim()),
                }),
        }
    };
    if !cards.contains_key("CTYPE1") {
        return Err(PlainImageError::NoWcs);
    }
    let wcs = TanSipWcs::from_cards(|k| cards.get(k).cloned())?;
    let positive = |k: &str| -> Result<Option<f64>, PlainImageError> {
        match number(k)? {
            Some(v) if v <= 0.0 => Err(PlainImageError::Header {
                key: k.into(),
                message: format!("{v} is not positive"),
            }),
            other => Ok(other),
        }
    };
    let gain = positive("GAIN")?;
    let saturate = positive("SATURATE")?;

    let mut mask = Mask::new(w, h);
    let mut finite = 0usize;
    for y in 0..h {
        for x in 0..w {
            let v = image.get(x, y).unwrap_or(f32::NAN);
            if !v.is_finite() {
                image.set(x, y, 0.0);
                mask.set(x, y, MaskPlane::NoData);
                continue;
            }
            finite += 1;
            if saturate.is_some_and(|s| f64::from(v) >= s) {
                mask.set(x, y, MaskPlane::Sat);
            }
        }
    }
    if finite == 0 {
        return Err(PlainImageError::Empty);
    }
    let bin = BIN.min(w.max(8)).min(h.max(8)).max(8);
    let background = Background::estimate(&image, &mask, bin)?;
    let level = background.render();
    // The sky noise: the median absolute deviation of the pixels about the background
    // (sources are too few to move it), as a standard deviation.
    let usable = [MaskPlane::NoData, MaskPlane::Sat];
    let mut deviations: Vec<f32> = (0..h)
        .step_by(3)
        .flat_map(|y| (0..w).step_by(3).map(move |x| (x, y)))
        .filter(|&(x, y)| !mask.any(x, y, &usable))
        .map(|(x, y)| (image.get(x, y).unwrap_or(0.0) - level.get(x, y).unwrap_or(0.0)).abs())
        .collect();
    if deviations.is_empty() {
        return Err(PlainImageError::Empty);
    }
    let middle = deviations.len() / 2;
    let mad = *deviations.select_nth_unstable_by(middle, f32::total_cmp).1;
    let sky_noise = 1.4826 * f64::from(mad);
    if sky_noise.is_nan() || sky_noise <= 0.0 {
        return Err(PlainImageError::Header {
            key: "image".into(),
            message: "the pixels have no noise to measure (a constant image?)".into(),
        });
    }
    let sky_var = (sky_noise * sky_noise) as f32;
    let variance_data: Vec<f32> = image
        .data()
        .iter()
        .zip(level.data())
        .map(|(&v, &b)| match gain {
            Some(g) => sky_var + ((v - b).max(0.0) as f64 / g) as f32,
            None => sky_var,
        })
        .collect();
    let variance = Image::from_vec(w, h, variance_data).expect("the image's own size");
    let mut exposure = Exposure::new(image, mask, variance).expect("planes of one size");
    exposure.wcs = Some(wcs);

    for key in KEPT {
        let Some(raw) = cards.get(key) else { continue };
        let raw = raw.trim();
        let value = if raw.starts_with('\'') {
            HeaderValue::Text(text(key).unwrap_or_default())
        } else if let Ok(i) = raw.parse::<i64>() {
            HeaderValue::Int(i)
        } else if let Some(f) = number(key)? {
            HeaderValue::Float(f)
        } else {
            continue;
        };
        exposure.metadata.insert(key.into(), value);
    }
    // The PSF's first guess reads SEEING (arcsec); FWHM-like cards of other observatories
    // are in pixels or arcsec, too ambiguous to use.
    let band = text("FILTER").and_then(|f| {
        let f = f.trim();
        band_index(f).or_else(|| {
            // "r DECam SDSS c0002 ...", "SDSS r", "r.MP9601": a lone band letter token.
            f.split(|c: char| !c.is_ascii_alphanumeric())
                .find_map(band_index)
        })
    });
    let start = match number("MJD-OBS")? {
        Some(m) => Some(m),
        None => match text("DATE-OBS") {
            Some(d) => Some(iso_to_mjd(&d).ok_or_else(|| PlainImageError::Header {
                key: "DATE-OBS".into(),
                message: format!("'{d}' is not an ISO 8601 date"),
            })?),
            None => None,
        },
    };
    let exptime = number("EXPTIME")?.unwrap_or(0.0).max(0.0);
    let mjd = start.map(|s| s + exptime / 2.0 / 86_400.0);
    Ok((
        exposure,
        Observation {
            band,
            mjd,
            sky_noise,
            gain,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cards(extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut c: HashMap<String, String> = [
            ("CTYPE1", "'RA---TAN'"),
            ("CTYPE2", "'DEC--TAN'"),
            ("CRPIX1", "50.5"),
            ("CRPIX2", "40.5"),
            ("CRVAL1", "150.0"),
            ("CRVAL2", "2.0"),
            ("CD1_1", "-7.2E-5"),
            ("CD2_2", "7.2E-5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            c.insert(k.to_string(), v.to_string());
        }
        c
    }

    fn noisy(w: usize, h: usize, sigma: f32) -> Image<f32> {
        let mut state = 12345u64;
        let data = (0..w * h)
            .map(|_| {
                // A sum of uniforms: near enough Gaussian for a MAD.
                let s: f32 = (0..12)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (state >> 40) as f32 / (1u64 << 24) as f32
                    })
                    .sum();
                100.0 + sigma * (s - 6.0)
            })
            .collect();
        Image::from_vec(w, h, data).unwrap()
    }

    #[test]
    fn noise_mask_band_and_time_come_from_the_image_and_its_header() {
        let mut image = noisy(100, 80, 5.0);
        image.set(3, 4, f32::NAN);
        image.set(10, 10, 60_000.0);
        let (e, obs) = exposure_from_plain(
            image,
            &cards(&[
                ("FILTER", "'r DECam SDSS c0002 6415.0 1480.0'"),
                ("DATE-OBS", "'2024-10-17T06:00:00'"),
                ("EXPTIME", "90.0"),
                ("GAIN", "4.0"),
                ("SATURATE", "50000"),
            ]),
        )
        .unwrap();
        assert!((obs.sky_noise - 5.0).abs() < 0.3, "{}", obs.sky_noise);
        assert_eq!(obs.band, Some(2));
        assert!((obs.mjd.unwrap() - (60_600.25 + 45.0 / 86_400.0)).abs() < 1e-9);
        assert!(e.mask().any(3, 4, &[MaskPlane::NoData]));
        assert!(e.mask().any(10, 10, &[MaskPlane::Sat]));
        // The bright pixel's variance holds its own Poisson noise.
        let v = e.variance().get(10, 10).unwrap();
        assert!(v > 25.0 + 59_000.0 / 4.0 - 200.0, "{v}");
        assert!(e.wcs.is_some());
        assert_eq!(
            e.metadata.get("FILTER"),
            Some(&HeaderValue::Text(
                "r DECam SDSS c0002 6415.0 1480.0".into()
            ))
        );
    }

    #[test]
    fn images_without_a_wcs_or_data_or_with_bad_cards_are_refused() {
        let image = noisy(64, 64, 3.0);
        let mut no_wcs = cards(&[]);
        no_wcs.remove("CTYPE1");
        assert_eq!(
            exposure_from_plain(image.clone(), &no_wcs).unwrap_err(),
            PlainImageError::NoWcs
        );
        let err = exposure_from_plain(image.clone(), &cards(&[("GAIN", "-1")])).unwrap_err();
        assert!(err.to_string().contains("GAIN"), "{err}");
        let err =
            exposure_from_plain(image.clone(), &cards(&[("DATE-OBS", "'soon'")])).unwrap_err();
        assert!(err.to_string().contains("DATE-OBS"), "{err}");
        let empty = Image::from_vec(64, 64, vec![f32::NAN; 64 * 64]).unwrap();
        assert_eq!(
            exposure_from_plain(empty, &cards(&[])).unwrap_err(),
            PlainImageError::Empty
        );
        let flat = Image::from_vec(64, 64, vec![7.0; 64 * 64]).unwrap();
        assert!(exposure_from_plain(flat, &cards(&[])).is_err());
    }
}
