//! Raw exposures as the camera writes them: one 16-bit segment per amplifier, with prescan
//! and overscan, and the observation's metadata (DMS-REQ-0068: TAI start and end with DUT1,
//! site conditions, telescope pointing and state, camera state and shutter timing); and
//! their assembly into one CCD image with that metadata (DMS-REQ-0024).
use std::collections::BTreeMap;

use crate::camera::{AmpLayout, PIXEL_SCALE, nominal_wcs};
use crate::image::{HeaderValue, Image};
use crate::sky::{BANDS, band_index};
use crate::wcs::{SkyCoord, TanSipWcs};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RawError {
    #[error("header keyword {0} is missing")]
    Missing(&'static str),
    #[error("header keyword {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("amplifier {amp}: {message}")]
    Amplifier { amp: String, message: String },
    #[error("the amplifiers do not tile a {size} x {size} CCD: {message}")]
    Tiling { size: usize, message: String },
}

/// What an exposure looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObsType {
    /// Zero seconds, shutter closed.
    Bias,
    /// Shutter closed for the exposure time.
    Dark,
    /// The dome screen through a filter, or at one wavelength from the monochromator.
    Flat,
    /// The sky.
    Science,
    /// Dithered exposures of the night sky, for the illumination correction and fringes.
    SkyFlat,
    /// Bright spots from the collimated beam projector, for crosstalk.
    Spot,
}

impl ObsType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Bias => "BIAS",
            Self::Dark => "DARK",
            Self::Flat => "FLAT",
            Self::Science => "SCIENCE",
            Self::SkyFlat => "SKYFLAT",
            Self::Spot => "SPOT",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        [
            Self::Bias,
            Self::Dark,
            Self::Flat,
            Self::Science,
            Self::SkyFlat,
            Self::Spot,
        ]
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(s.trim()))
    }
}

/// The observatory's site: Cerro Pachón.
pub const SITE_LATITUDE: f64 = -30.244_639;
pub const SITE_LONGITUDE: f64 = -70.749_417;
pub const SITE_ELEVATION: f64 = 2663.0;

/// Conditions at the site during the exposure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SiteConditions {
    /// Seeing at zenith and 500 nm from the site monitor, arcsec.
    pub seeing: f64,
    /// Sky transparency, 0 to 1.
    pub transparency: f64,
    pub air_temperature: f64,
    pub pressure_hpa: f64,
    pub humidity: f64,
    pub wind_speed: f64,
    pub wind_direction: f64,
}

/// The telescope's pointing and state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TelescopeState {
    pub boresight: SkyCoord,
    /// Sky position angle of the camera, degrees east of north.
    pub rotation: f64,
    pub altitude: f64,
    pub azimuth: f64,
    pub airmass: f64,
    /// Active optics: camera hexapod focus offset (µm) and primary mirror temperature (°C).
    pub focus_z: f64,
    pub m1_temperature: f64,
    pub dome_azimuth: f64,
}

/// Everything known about one exposure of one detector, as the raw header records it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservationInfo {
    /// Unique name of the exposure (all detectors share it).
    pub obs_id: String,
    pub exposure_id: i64,
    pub obs_type: ObsType,
    /// The visit and snap (0 or 1) of science exposures.
    pub visit: Option<i64>,
    pub snap: u8,
    pub detector: i64,
    pub detector_name: String,
    /// CCD size, pixels, and its centre in the focal plane (pixels from the boresight).
    pub ccd_size: usize,
    pub focal_plane_centre: (f64, f64),
    /// Filter band (index into [`BANDS`]), none for dark and bias frames.
    pub band: Option<usize>,
    /// Monochromator wavelength of monochromatic flats, nm.
    pub wavelength: Option<f64>,
    /// Shutter open and close, MJD in TAI; exposure and dark times, seconds.
    pub tai_start: f64,
    pub tai_end: f64,
    pub exposure_time: f64,
    pub dark_time: f64,
    /// UT1 - UTC at the exposure, seconds.
    pub dut1: f64,
    /// TAI - UTC, seconds.
    pub tai_utc: f64,
    /// On-sky exposures only.
    pub telescope: Option<TelescopeState>,
    pub site: SiteConditions,
    /// Camera state: CCD and cryostat temperatures (°C), shutter blade travel time (s).
    pub ccd_temperature: f64,
    pub cryostat_temperature: f64,
    pub shutter_motion: f64,
}

impl ObservationInfo {
    /// The header cards, with their comments.
    pub fn to_cards(&self) -> Vec<(&'static str, HeaderValue, &'static str)> {
        use HeaderValue::{Float, Int, Text};
        let mut c = vec![
            (
                "TELESCOP",
                Text("Aster Survey Telescope".into()),
                "telescope",
            ),
            ("INSTRUME", Text("AsterCam".into()), "camera"),
            ("OBSID", Text(self.obs_id.clone()), "exposure name"),
            ("EXPID", Int(self.exposure_id), "exposure id"),
            (
                "IMGTYPE",
                Text(self.obs_type.name().into()),
                "BIAS, DARK, FLAT or SCIENCE",
            ),
            ("DETECTOR", Int(self.detector), "detector number"),
            (
                "DETNAME",
                Text(self.detector_name.clone()),
                "detector place in the focal plane",
            ),
            (
                "DETSIZE",
                Int(self.ccd_size as i64),
                "CCD width and height, pixels",
            ),
            (
                "FPCENTX",
                Float(self.focal_plane_centre.0),
                "CCD centre in the focal plane, px",
            ),
            (
                "FPCENTY",
                Float(self.focal_plane_centre.1),
                "CCD centre in the focal plane, px",
            ),
            (
                "PIXSCALE",
                Float(PIXEL_SCALE),
                "nominal pixel scale, arcsec",
            ),
            ("TIMESYS", Text("TAI".into()), "time scale of the dates"),
            (
                "DATE-BEG",
                Text(mjd_to_iso(self.tai_start)),
                "shutter open (TAI)",
            ),
            (
                "DATE-END",
                Text(mjd_to_iso(self.tai_end)),
                "shutter closed (TAI)",
            ),
            ("MJD-BEG", Float(self.tai_start), "shutter open, MJD (TAI)"),
            ("MJD-END", Float(self.tai_end), "shutter closed, MJD (TAI)"),
            ("EXPTIME", Float(self.exposure_time), "exposure time, s"),
            (
                "DARKTIME",
                Float(self.dark_time),
                "time from reset to readout, s",
            ),
            ("DUT1", Float(self.dut1), "UT1 - UTC, s"),
            ("TAI-UTC", Float(self.tai_utc), "TAI - UTC, s"),
            ("OBS-LAT", Float(SITE_LATITUDE), "site latitude, deg"),
            (
                "OBS-LONG",
                Float(SITE_LONGITUDE),
                "site longitude, deg east",
            ),
            ("OBS-ELEV", Float(SITE_ELEVATION), "site elevation, m"),
            (
                "SEEING",
                Float(self.site.seeing),
                "site monitor seeing, arcsec",
            ),
            (
                "TRANSPAR",
                Float(self.site.transparency),
                "sky transparency",
            ),
            (
                "AIRTEMP",
                Float(self.site.air_temperature),
                "outside air temperature, C",
            ),
            (
                "PRESSURE",
                Float(self.site.pressure_hpa),
                "air pressure, hPa",
            ),
            (
                "HUMIDITY",
                Float(self.site.humidity),
                "relative humidity, %",
            ),
            ("WINDSPD", Float(self.site.wind_speed), "wind speed, m/s"),
            (
                "WINDDIR",
                Float(self.site.wind_direction),
                "wind direction, deg",
            ),
            ("CCDTEMP", Float(self.ccd_temperature), "CCD temperature, C"),
            (
                "CRYOTEMP",
                Float(self.cryostat_temperature),
                "cryostat temperature, C",
            ),
            (
                "SHUTMOTN",
                Float(self.shutter_motion),
                "shutter blade travel, s",
            ),
        ];
        if let Some(v) = self.visit {
            c.push(("VISIT", Int(v), "visit id"));
            c.push(("SNAP", Int(self.snap as i64), "snap within the visit"));
        }
        if let Some(b) = self.band {
            c.push(("FILTER", Text(BANDS[b].into()), "filter band"));
        }
        if let Some(w) = self.wavelength {
            c.push(("WAVELEN", Float(w), "monochromator wavelength, nm"));
        }
        if let Some(t) = &self.telescope {
            c.extend([
                (
                    "RA",
                    Float(t.boresight.ra()),
                    "boresight right ascension, deg",
                ),
                (
                    "DEC",
                    Float(t.boresight.dec()),
                    "boresight declination, deg",
                ),
                (
                    "ROTPA",
                    Float(t.rotation),
                    "sky position angle of the camera, deg",
                ),
                ("ALTITUDE", Float(t.altitude), "telescope altitude, deg"),
                ("AZIMUTH", Float(t.azimuth), "telescope azimuth, deg"),
                ("AIRMASS", Float(t.airmass), "airmass"),
                ("FOCUSZ", Float(t.focus_z), "hexapod focus offset, um"),
                (
                    "M1TEMP",
                    Float(t.m1_temperature),
                    "primary mirror temperature, C",
                ),
                ("DOMEAZ", Float(t.dome_azimuth), "dome azimuth, deg"),
            ]);
        }
        c
    }

    /// Reads the cards written by [`ObservationInfo::to_cards`].
    pub fn from_cards(cards: &BTreeMap<String, HeaderValue>) -> Result<Self, RawError> {
        let float = |k: &'static str| -> Result<f64, RawError> {
            match cards.get(k) {
                None => Err(RawError::Missing(k)),
                Some(HeaderValue::Float(x)) if x.is_finite() => Ok(*x),
                Some(HeaderValue::Int(i)) => Ok(*i as f64),
                Some(v) => Err(RawError::Invalid {
                    key: k,
                    message: format!("{v:?} is not a number"),
                }),
            }
        };
        let int = |k: &'static str| -> Result<i64, RawError> {
            match cards.get(k) {
                None => Err(RawError::Missing(k)),
                Some(HeaderValue::Int(i)) => Ok(*i),
                Some(v) => Err(RawError::Invalid {
                    key: k,
                    message: format!("{v:?} is not an integer"),
                }),
            }
        };
        let text = |k: &'static str| -> Result<String, RawError> {
            match cards.get(k) {
                None => Err(RawError::Missing(k)),
                Some(HeaderValue::Text(t)) => Ok(t.clone()),
                Some(v) => Err(RawError::Invalid {
                    key: k,
                    message: format!("{v:?} is not text"),
                }),
            }
        };
        let obs_type = text("IMGTYPE")?;
        let obs_type = ObsType::from_name(&obs_type).ok_or(RawError::Invalid {
            key: "IMGTYPE",
            message: format!("'{obs_type}' is none of BIAS, DARK, FLAT, SCIENCE, SKYFLAT, SPOT"),
        })?;
        let band = match cards.get("FILTER") {
            None => None,
            Some(_) => {
                let f = text("FILTER")?;
                Some(band_index(f.trim()).ok_or(RawError::Invalid {
                    key: "FILTER",
                    message: format!("'{f}' is none of ugrizy"),
                })?)
            }
        };
        let telescope = match cards.contains_key("RA") {
            false => None,
            true => Some(TelescopeState {
                boresight: SkyCoord::new(float("RA")?, float("DEC")?).ok_or(RawError::Invalid {
                    key: "DEC",
                    message: "not a sky position".into(),
                })?,
                rotation: float("ROTPA")?,
                altitude: float("ALTITUDE")?,
                azimuth: float("AZIMUTH")?,
                airmass: float("AIRMASS")?,
                focus_z: float("FOCUSZ")?,
                m1_temperature: float("M1TEMP")?,
                dome_azimuth: float("DOMEAZ")?,
            }),
        };
        let size = int("DETSIZE")?;
        if !(64..=16_384).contains(&size) {
            return Err(RawError::Invalid {
                key: "DETSIZE",
                message: format!("{size} pixels"),
            });
        }
        let (tai_start, tai_end) = (float("MJD-BEG")?, float("MJD-END")?);
        if tai_end < tai_start {
            return Err(RawError::Invalid {
                key: "MJD-END",
                message: "before MJD-BEG".into(),
            });
        }
        Ok(Self {
            obs_id: text("OBSID")?,
            exposure_id: int("EXPID")?,
            obs_type,
            visit: cards
                .contains_key("VISIT")
                .then(|| int("VISIT"))
                .transpose()?,
            snap: match cards.contains_key("SNAP") {
                true => int("SNAP")?.clamp(0, 255) as u8,
                false => 0,
            },
            detector: int("DETECTOR")?,
            detector_name: text("DETNAME")?,
            ccd_size: size as usize,
            focal_plane_centre: (float("FPCENTX")?, float("FPCENTY")?),
            band,
            wavelength: cards
                .contains_key("WAVELEN")
                .then(|| float("WAVELEN"))
                .transpose()?,
            tai_start,
            tai_end,
            exposure_time: float("EXPTIME")?,
            dark_time: float("DARKTIME")?,
            dut1: float("DUT1")?,
            tai_utc: float("TAI-UTC")?,
            telescope,
            site: SiteConditions {
                seeing: float("SEEING")?,
                transparency: float("TRANSPAR")?,
                air_temperature: float("AIRTEMP")?,
                pressure_hpa: float("PRESSURE")?,
                humidity: float("HUMIDITY")?,
                wind_speed: float("WINDSPD")?,
                wind_direction: float("WINDDIR")?,
            },
            ccd_temperature: float("CCDTEMP")?,
            cryostat_temperature: float("CRYOTEMP")?,
            shutter_motion: float("SHUTMOTN")?,
        })
    }

    /// Mid-exposure, MJD (TAI).
    pub fn tai_mid(&self) -> f64 {
        (self.tai_start + self.tai_end) / 2.0
    }

    /// The WCS from the telescope's pointing, if it pointed at the sky.
    pub fn nominal_wcs(&self) -> Option<TanSipWcs> {
        let t = self.telescope.as_ref()?;
        nominal_wcs(
            self.ccd_size,
            self.focal_plane_centre,
            t.boresight,
            t.rotation,
        )
    }
}

/// One amplifier's raw segment.
#[derive(Debug, Clone, PartialEq)]
pub struct RawAmp {
    pub layout: AmpLayout,
    /// Nominal electronics from the camera description: electrons per ADU, read noise
    /// (electrons) and the raw level at which the pixel saturates (ADU).
    pub gain: f64,
    pub read_noise: f64,
    pub saturation: f64,
    /// `layout.raw_width()` x `layout.raw_height()` ADU.
    pub pixels: Image<u16>,
}

/// A raw exposure of one CCD.
#[derive(Debug, Clone, PartialEq)]
pub struct RawExposure {
    pub info: ObservationInfo,
    pub amps: Vec<RawAmp>,
}

impl RawExposure {
    /// Checks that every segment has its layout's shape and that the data sections tile
    /// the CCD exactly once.
    pub fn validate(&self) -> Result<(), RawError> {
        let size = self.info.ccd_size;
        let mut covered = vec![false; size * size];
        for a in &self.amps {
            let l = &a.layout;
            if a.pixels.width() != l.raw_width() || a.pixels.height() != l.raw_height() {
                return Err(RawError::Amplifier {
                    amp: l.name.clone(),
                    message: format!(
                        "{} x {} pixels, the layout needs {} x {}",
                        a.pixels.width(),
                        a.pixels.height(),
                        l.raw_width(),
                        l.raw_height()
                    ),
                });
            }
            if !(a.gain > 0.0 && a.gain.is_finite() && a.saturation > 0.0) {
                return Err(RawError::Amplifier {
                    amp: l.name.clone(),
                    message: "gain and saturation must be positive".into(),
                });
            }
            if l.x0 + l.width > size || l.y0 + l.height > size {
                return Err(RawError::Tiling {
                    size,
                    message: format!("{} reaches outside the CCD", l.name),
                });
            }
            for y in l.y0..l.y0 + l.height {
                for x in l.x0..l.x0 + l.width {
                    if std::mem::replace(&mut covered[y * size + x], true) {
                        return Err(RawError::Tiling {
                            size,
                            message: format!("{} overlaps another amplifier", l.name),
                        });
                    }
                }
            }
        }
        if covered.iter().any(|c| !c) {
            return Err(RawError::Tiling {
                size,
                message: "some pixels belong to no amplifier".into(),
            });
        }
        Ok(())
    }

    /// The CCD image in ADU: each amplifier's data section, flipped into place, with
    /// `value` applied to every raw pixel on the way (e.g. overscan subtraction).
    pub fn assemble_with(&self, mut value: impl FnMut(usize, usize, usize) -> f32) -> Image<f32> {
        let size = self.info.ccd_size;
        let mut out = Image::filled(size, size, 0.0f32);
        for (i, a) in self.amps.iter().enumerate() {
            let l = &a.layout;
            for ry in 0..l.height {
                for rx in crate::camera::PRESCAN..crate::camera::PRESCAN + l.width {
                    if let Some((x, y)) = l.to_ccd(rx, ry) {
                        out.set(x, y, value(i, rx, ry));
                    }
                }
            }
        }
        out
    }

    /// The CCD image in raw ADU (DMS-REQ-0024).
    pub fn assemble(&self) -> Image<f32> {
        self.assemble_with(|i, rx, ry| {
            self.amps[i]
                .pixels
                .get(rx, ry)
                .map(f32::from)
                .unwrap_or(f32::NAN)
        })
    }
}

/// ISO 8601 date and time (to the millisecond) of a Modified Julian Date.
pub fn mjd_to_iso(mjd: f64) -> String {
    let days = mjd.floor();
    let ms = ((mjd - days) * 86_400_000.0).round() as i64;
    let (days, ms) = if ms >= 86_400_000 {
        (days + 1.0, ms - 86_400_000)
    } else {
        (days, ms)
    };
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 - 40_587 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// The Modified Julian Date of an ISO 8601 date, with or without a time
/// ("2024-10-17", "2024-10-17T06:00:00.5"); None when it is not one.
pub fn iso_to_mjd(text: &str) -> Option<f64> {
    let text = text.trim().trim_end_matches('Z');
    let (date, time) = text.split_once('T').unwrap_or((text, "00:00:00"));
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut t = time.split(':');
    let hours: f64 = t.next()?.parse().ok()?;
    let minutes: f64 = t.next().map_or(Some(0.0), |v| v.parse().ok())?;
    let seconds: f64 = t.next().map_or(Some(0.0), |v| v.parse().ok())?;
    if t.next().is_some() || !(0.0..24.0).contains(&hours) || !(0.0..60.0).contains(&minutes) {
        return None;
    }
    if !(0.0..61.0).contains(&seconds) {
        return None;
    }
    // Days since 1970-01-01 of a civil date (H. Hinnant's algorithm), the inverse of the
    // one in mjd_to_iso.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days + 40_587) as f64 + (hours * 3600.0 + minutes * 60.0 + seconds) / 86_400.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(mjd_to_iso(51_544.5), "2000-01-01T12:00:00.000");
        assert_eq!(mjd_to_iso(60_600.25), "2024-10-17T06:00:00.000");
        assert_eq!(mjd_to_iso(59_999.999_999_999), "2023-02-25T00:00:00.000");
        assert_eq!(iso_to_mjd("2000-01-01T12:00:00.000"), Some(51_544.5));
        assert_eq!(iso_to_mjd("2024-10-17"), Some(60_600.0));
        assert_eq!(iso_to_mjd("2024-10-17T06:00:00Z"), Some(60_600.25));
        for mjd in [40_000.125, 51_544.5, 60_600.75, 61_000.0] {
            assert!((iso_to_mjd(&mjd_to_iso(mjd)).unwrap() - mjd).abs() < 1e-8);
        }
        for bad in [
            "",
            "2024-13-01",
            "2024-10",
            "yesterday",
            "2024-10-17T25:00:00",
        ] {
            assert_eq!(iso_to_mjd(bad), None, "{bad}");
        }
    }
}
