//! Raw files: one FITS file per exposure and CCD, as the camera writes them. The primary HDU
//! holds the observation's metadata (DMS-REQ-0068: `DATE-BEG`/`DATE-END` and `MJD-BEG`/
//! `MJD-END` in TAI with `DUT1`, the site, the telescope's pointing and state, the camera's
//! state), with comments; each amplifier is an image extension named for it (`C00`...), 16-bit
//! unsigned (BITPIX 16, BZERO 32768), Rice tile-compressed (lossless), with its `DATASEC`,
//! `BIASSEC` and `DETSEC` sections and nominal `GAIN`, `RDNOISE` and `SATURATE`. Reading
//! checks every section against the camera's layout and that the amplifiers tile the CCD,
//! and every HDU's FITS `CHECKSUM`/`DATASUM`, so a truncated, corrupted or foreign file is
//! refused with the file and the step named.
use std::collections::BTreeMap;
use std::path::Path;

use aster_processing::camera::{AmpLayout, PARALLEL_OVERSCAN, PRESCAN, SERIAL_OVERSCAN};
use aster_processing::image::{HeaderValue, Image};
use aster_processing::raw::{ObservationInfo, RawAmp, RawExposure};
use fitsio::FitsFile;
use fitsio::hdu::HduInfo;
use fitsio::images::{ImageDescription, ImageType};

use crate::fits_io::{
    FitsFileError, RICE_1, all_cards, card_text, open_primary, set_compression, verify_checksum,
    write_atomically, write_card_with_comment, write_checksum,
};

type Result<T> = std::result::Result<T, FitsFileError>;

/// Writes `raw` to `path` (replacing it), atomically.
pub fn write_raw(path: &Path, raw: &RawExposure) -> Result<()> {
    let fail =
        |step: &'static str| move |e: &dyn std::fmt::Display| FitsFileError::new(path, step, e);
    raw.validate().map_err(|e| fail("amplifiers")(&e))?;
    write_atomically(path, |f| {
        for (key, value, comment) in raw.info.to_cards() {
            let text = card_text(key, &value).map_err(|e| fail("metadata")(&e))?;
            write_card_with_comment(f, key, &text, comment).map_err(|e| fail("metadata")(&e))?;
        }
        write_checksum(f).map_err(|e| fail("checksum")(&e))?;
        set_compression(f, RICE_1).map_err(|e| fail("compression")(&e))?;
        for a in &raw.amps {
            let l = &a.layout;
            let hdu = f
                .create_image(
                    &l.name,
                    &ImageDescription {
                        data_type: ImageType::UnsignedShort,
                        dimensions: &[l.raw_height(), l.raw_width()],
                    },
                )
                .map_err(|e| fail("amplifier HDU")(&e))?;
            let cards = [
                ("DATASEC", HeaderValue::Text(l.datasec()), "data section"),
                (
                    "BIASSEC",
                    HeaderValue::Text(l.biassec()),
                    "serial overscan section",
                ),
                (
                    "DETSEC",
                    HeaderValue::Text(l.detsec()),
                    "place of the data in the CCD",
                ),
                (
                    "AMPINDEX",
                    HeaderValue::Int(l.index as i64),
                    "amplifier number",
                ),
                ("GAIN", HeaderValue::Float(a.gain), "nominal gain, e-/ADU"),
                (
                    "RDNOISE",
                    HeaderValue::Float(a.read_noise),
                    "nominal read noise, e-",
                ),
                (
                    "SATURATE",
                    HeaderValue::Float(a.saturation),
                    "saturation level, ADU",
                ),
            ];
            for (key, value, comment) in cards {
                let text = card_text(key, &value).map_err(|e| fail("amplifier header")(&e))?;
                write_card_with_comment(f, key, &text, comment)
                    .map_err(|e| fail("amplifier header")(&e))?;
            }
            hdu.write_image(f, a.pixels.data())
                .map_err(|e| fail("amplifier pixels")(&e))?;
            write_checksum(f).map_err(|e| fail("checksum")(&e))?;
        }
        set_compression(f, 0).map_err(|e| fail("compression")(&e))
    })
}

/// The observation metadata of a raw file, without reading its pixels.
pub fn read_raw_info(path: &Path) -> Result<ObservationInfo> {
    let (_, cards) = open_primary(path, "metadata")?;
    ObservationInfo::from_cards(&cards).map_err(|e| FitsFileError::new(path, "metadata", e))
}

/// Reads a raw file written by [`write_raw`].
pub fn read_raw(path: &Path) -> Result<RawExposure> {
    let fail =
        |step: &'static str| move |e: &dyn std::fmt::Display| FitsFileError::new(path, step, e);
    let info = read_raw_info(path)?;
    let mut f = FitsFile::open(path).map_err(|e| fail("open")(&e))?;
    let mut amps = Vec::new();
    for index in 1.. {
        let Ok(hdu) = f.hdu(index) else {
            break;
        };
        let shape = match &hdu.info {
            HduInfo::ImageInfo { shape, .. } if shape.len() == 2 => (shape[1], shape[0]),
            _ => {
                return Err(fail("amplifier HDU")(&format!(
                    "HDU {index} is not a 2-D image"
                )));
            }
        };
        verify_checksum(&mut f, true)
            .map_err(|e| fail("checksum")(&format!("HDU {index}: {e}")))?;
        let header: BTreeMap<String, String> = all_cards(&mut f)
            .map_err(|e| fail("amplifier header")(&e))?
            .into_iter()
            .collect();
        let layout = amp_layout(&header, amps.len(), shape)
            .map_err(|e| fail("amplifier header")(&format!("HDU {index}: {e}")))?;
        let number = |k: &str| -> std::result::Result<f64, String> {
            header
                .get(k)
                .and_then(|v| v.trim().replace(['D', 'd'], "E").parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| format!("{}: {k} is missing or not a positive number", layout.name))
        };
        let (gain, read_noise, saturation) =
            (|| Ok((number("GAIN")?, number("RDNOISE")?, number("SATURATE")?)))()
                .map_err(|e: String| fail("amplifier header")(&e))?;
        let pixels: Vec<u16> = hdu
            .read_image(&mut f)
            .map_err(|e| fail("amplifier pixels")(&format!("{}: {e}", layout.name)))?;
        let pixels =
            Image::from_vec(shape.0, shape.1, pixels).map_err(|e| fail("amplifier pixels")(&e))?;
        amps.push(RawAmp {
            layout,
            gain,
            read_noise,
            saturation,
            pixels,
        });
    }
    if amps.is_empty() {
        return Err(fail("amplifier HDU")(&"the file has no amplifier images"));
    }
    let raw = RawExposure { info, amps };
    raw.validate().map_err(|e| fail("amplifiers")(&e))?;
    Ok(raw)
}

/// A FITS section `[a:b,c:d]` as 1-based inclusive (a, b, c, d).
fn section(text: &str) -> Option<(usize, usize, usize, usize)> {
    let inner = text.trim().trim_matches('\'').trim();
    let inner = inner.strip_prefix('[')?.strip_suffix(']')?;
    let (x, y) = inner.split_once(',')?;
    let range = |r: &str| -> Option<(usize, usize)> {
        let (a, b) = r.split_once(':')?;
        Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
    };
    let ((a, b), (c, d)) = (range(x)?, range(y)?);
    (a >= 1 && b >= 1 && c >= 1 && d >= 1).then_some((a, b, c, d))
}

/// The amplifier's layout from its sections, which must be this camera's: data after
/// [`PRESCAN`] columns, [`SERIAL_OVERSCAN`] columns and [`PARALLEL_OVERSCAN`] rows after it.
fn amp_layout(
    header: &BTreeMap<String, String>,
    index: usize,
    shape: (usize, usize),
) -> std::result::Result<AmpLayout, String> {
    let get = |k: &str| header.get(k).ok_or_else(|| format!("{k} is missing"));
    let name = get("EXTNAME")?.trim().trim_matches('\'').trim().to_string();
    let (dx0, dx1, dy0, dy1) = section(get("DATASEC")?).ok_or("DATASEC is not [a:b,c:d]")?;
    let (a, b, c, d) = section(get("DETSEC")?).ok_or("DETSEC is not [a:b,c:d]")?;
    let (width, height) = (b.abs_diff(a) + 1, d.abs_diff(c) + 1);
    if (dx0, dx1, dy0, dy1) != (PRESCAN + 1, PRESCAN + width, 1, height) {
        return Err(format!(
            "{name}: DATASEC {} does not match this camera's {width} x {height} data section after {PRESCAN} prescan columns",
            get("DATASEC")?.trim()
        ));
    }
    let expected = (
        PRESCAN + width + SERIAL_OVERSCAN,
        height + PARALLEL_OVERSCAN,
    );
    if shape != expected {
        return Err(format!(
            "{name}: {} x {} pixels, the sections need {} x {}",
            shape.0, shape.1, expected.0, expected.1
        ));
    }
    Ok(AmpLayout {
        name,
        index,
        x0: a.min(b) - 1,
        y0: c.min(d) - 1,
        width,
        height,
        flip_x: a > b,
        flip_y: c > d,
    })
}

#[cfg(test)]
mod tests {
    use aster_processing::camera::Camera;
    use aster_processing::camsim::{ExposureSpec, Light, simulate};
    use aster_processing::raw::ObsType;

    use super::*;

    fn raw() -> RawExposure {
        let cam = Camera::new(4, 256, 1).unwrap();
        let spec = ExposureSpec {
            light: Light::Dome {
                band: None,
                wavelength: 700.0,
                level: 5000.0,
            },
            obs_type: ObsType::Flat,
            obs_id: "AS_C_20241017_000012".into(),
            exposure_id: 12,
            snap: 0,
            tai_start: 60_600.9,
            exposure_time: 5.0,
        };
        simulate(&cam, &cam.detectors[0], &spec, 1).raw
    }

    #[test]
    fn raws_read_back_exactly_and_bad_ones_are_refused() {
        let dir = std::env::temp_dir().join(format!("aster-raw-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("raw.fits");
        let r = raw();
        write_raw(&path, &r).unwrap();
        assert_eq!(read_raw(&path).unwrap(), r);
        // Rice compression keeps the file well below the raw 16-bit size.
        let bytes = std::fs::read(&path).unwrap();
        let plain: usize = r.amps.iter().map(|a| a.pixels.data().len() * 2).sum();
        assert!(bytes.len() < plain, "{} vs {plain}", bytes.len());

        let cut = dir.join("truncated.fits");
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let err = read_raw(&cut).unwrap_err();
        assert!(err.to_string().contains("truncated.fits"), "{err}");

        // Flipped bytes in the middle of the compressed pixels: refused, not misread.
        let mut corrupt = bytes.clone();
        let mid = corrupt.len() / 2;
        for b in &mut corrupt[mid..mid + 4000] {
            *b ^= 0x5a;
        }
        let bad = dir.join("corrupt.fits");
        std::fs::write(&bad, &corrupt).unwrap();
        let result = read_raw(&bad);
        assert!(
            result.as_ref().map_or(true, |back| back != &r),
            "corruption went unnoticed"
        );

        let mut missing = r.clone();
        missing.amps.pop();
        let err = write_raw(&dir.join("seven.fits"), &missing).unwrap_err();
        assert_eq!(err.step, "amplifiers");
        assert!(!dir.join("seven.fits").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sections_parse() {
        assert_eq!(section("'[4:67,1:128]'"), Some((4, 67, 1, 128)));
        assert_eq!(section("[256:193,256:129]"), Some((256, 193, 256, 129)));
        assert_eq!(section("[0:3,1:2]"), None);
        assert_eq!(section("4:67,1:128"), None);
    }
}
