//! Alert cutouts (DMS-REQ-0274): a small box of an exposure around a DIASource as an
//! in-memory multi-extension FITS file, the layout of exposure files in miniature: a
//! primary HDU with what the alert says of the image, then IMAGE, MASK (with its `MP_*`
//! plane cards) and VARIANCE, each with the WCS moved to the box, and PSF, the image of the
//! point-spread function at the source. Written in memory because an alert holds a few
//! hundred of them per visit: no temporary files, no cfitsio handles.
use aster_processing::image::{Exposure, HeaderValue, Image, Mask};

use crate::fits_io::card_text;

/// Side of a cutout, pixels: odd, so the source's pixel is the centre.
pub const CUTOUT_SIDE: usize = 31;
/// Half-width of the PSF image, pixels.
const PSF_HALF: usize = 7;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CutoutError {
    #[error("the position ({x:.1}, {y:.1}) is off the image")]
    OffImage { x: f64, y: f64 },
    #[error("header card {0}")]
    Card(String),
}

/// The cutout of `exposure` centred on pixel (`x`, `y`) (clipped where the box leaves the
/// image), with `cards` in its primary header.
pub fn cutout_fits(
    exposure: &Exposure,
    x: f64,
    y: f64,
    cards: &[(&str, HeaderValue)],
) -> Result<Vec<u8>, CutoutError> {
    let (w, h) = (exposure.width(), exposure.height());
    if !(x >= -0.5 && y >= -0.5 && x < w as f64 - 0.5 && y < h as f64 - 0.5) {
        return Err(CutoutError::OffImage { x, y });
    }
    let half = CUTOUT_SIDE / 2;
    let (cx, cy) = (x.round() as usize, y.round() as usize);
    let (x0, y0) = (cx.saturating_sub(half), cy.saturating_sub(half));
    let (x1, y1) = ((cx + half + 1).min(w), (cy + half + 1).min(h));
    let (bw, bh) = (x1 - x0, y1 - y0);

    let mut out = Vec::with_capacity(4 * (3 * bw * bh * 4 + 2 * 2880));
    let mut primary = Header::default();
    primary.card("SIMPLE", "T")?;
    primary.card("BITPIX", "8")?;
    primary.card("NAXIS", "0")?;
    primary.card("EXTEND", "T")?;
    for (k, v) in cards {
        primary.value(k, v)?;
    }
    primary.value("LTV1", &HeaderValue::Int(-(x0 as i64)))?;
    primary.value("LTV2", &HeaderValue::Int(-(y0 as i64)))?;
    primary.finish(&mut out);

    let wcs_cards = exposure
        .wcs
        .as_ref()
        .map(|wcs| wcs.shifted(x0 as f64, y0 as f64).to_cards())
        .unwrap_or_default();
    let planes = |name: &str, bitpix: i32, extra: &[(String, String)], out: &mut Vec<u8>| {
        let mut hdu = Header::default();
        hdu.card("XTENSION", "'IMAGE   '")?;
        hdu.card("BITPIX", &bitpix.to_string())?;
        hdu.card("NAXIS", "2")?;
        hdu.card("NAXIS1", &bw.to_string())?;
        hdu.card("NAXIS2", &bh.to_string())?;
        hdu.card("PCOUNT", "0")?;
        hdu.card("GCOUNT", "1")?;
        hdu.value("EXTNAME", &HeaderValue::Text(name.into()))?;
        for (k, v) in wcs_cards.iter().chain(extra) {
            hdu.card(k, v)?;
        }
        hdu.finish(out);
        Ok::<_, CutoutError>(())
    };
    let rows = |out: &mut Vec<u8>, get: &dyn Fn(usize, usize) -> [u8; 4]| {
        let start = out.len();
        for yy in y0..y1 {
            for xx in x0..x1 {
                out.extend_from_slice(&get(xx, yy));
            }
        }
        pad(out, start, 0);
    };
    planes("IMAGE", -32, &[], &mut out)?;
    rows(&mut out, &float_pixels(exposure.image()));
    let mask_cards: Vec<(String, String)> = Mask::plane_cards()
        .into_iter()
        .map(|(k, b)| (k, b.to_string()))
        .collect();
    planes("MASK", 32, &mask_cards, &mut out)?;
    let bits = exposure.mask().bits();
    rows(&mut out, &|xx, yy| {
        bits.get(xx, yy).unwrap_or(0).to_be_bytes()
    });
    planes("VARIANCE", -32, &[], &mut out)?;
    rows(&mut out, &float_pixels(exposure.variance()));

    if let Some(kernel) = exposure
        .psf
        .as_ref()
        .and_then(|p| p.kernel_at(x, y, PSF_HALF).ok())
    {
        let mut hdu = Header::default();
        let side = (2 * PSF_HALF + 1).to_string();
        for (k, v) in [
            ("XTENSION", "'IMAGE   '"),
            ("BITPIX", "-32"),
            ("NAXIS", "2"),
            ("NAXIS1", side.as_str()),
            ("NAXIS2", side.as_str()),
            ("PCOUNT", "0"),
            ("GCOUNT", "1"),
        ] {
            hdu.card(k, v)?;
        }
        hdu.value("EXTNAME", &HeaderValue::Text("PSF".into()))?;
        hdu.finish(&mut out);
        let start = out.len();
        for v in kernel.data() {
            out.extend_from_slice(&v.to_be_bytes());
        }
        pad(&mut out, start, 0);
    }
    Ok(out)
}

/// A float plane's pixels as FITS writes them (big-endian; NaN off the image).
fn float_pixels(img: &Image<f32>) -> impl Fn(usize, usize) -> [u8; 4] + '_ {
    move |x, y| img.get(x, y).unwrap_or(f32::NAN).to_be_bytes()
}

/// Pads what was appended since `start` to a whole number of 2880-byte FITS blocks.
fn pad(out: &mut Vec<u8>, start: usize, fill: u8) {
    let rem = (out.len() - start) % 2880;
    if rem != 0 {
        out.resize(out.len() + 2880 - rem, fill);
    }
}

/// A header being written: 80-character cards, then END, padded with spaces.
#[derive(Default)]
struct Header(Vec<u8>);

impl Header {
    fn card(&mut self, key: &str, value: &str) -> Result<(), CutoutError> {
        // Keywords over eight characters (the mask's MP_DETECTED) by the HIERARCH
        // convention, as cfitsio writes them.
        let text = if key.len() > 8 {
            format!("HIERARCH {key} = {value}")
        } else if value.starts_with('\'') {
            // Strings start in column 11; numbers and logicals end in column 30.
            format!("{key:<8}= {value}")
        } else {
            format!("{key:<8}= {value:>20}")
        };
        if text.len() > 80 || !text.is_ascii() {
            return Err(CutoutError::Card(format!("{key} = {value} does not fit")));
        }
        self.0.extend_from_slice(format!("{text:<80}").as_bytes());
        Ok(())
    }

    fn value(&mut self, key: &str, value: &HeaderValue) -> Result<(), CutoutError> {
        let text = card_text(key, value).map_err(CutoutError::Card)?;
        self.card(key, &text)
    }

    fn finish(mut self, out: &mut Vec<u8>) {
        self.0
            .extend_from_slice(format!("{:<80}", "END").as_bytes());
        let start = out.len();
        out.extend_from_slice(&self.0);
        pad(out, start, b' ');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aster_processing::image::MaskPlane;
    use aster_processing::psf::GaussianPsf;
    use aster_processing::wcs::{PixelPosition, TanSipWcs};

    fn exposure() -> Exposure {
        let (w, h) = (100, 80);
        let mut img = Image::filled(w, h, 0.0f32);
        img.set(50, 40, 100.0);
        let mut mask = Mask::new(w, h);
        mask.set(51, 40, MaskPlane::Sat);
        let mut e = Exposure::new(img, mask, Image::filled(w, h, 4.0)).unwrap();
        e.wcs = Some(
            TanSipWcs::new(
                PixelPosition { x: 50.0, y: 40.0 },
                aster_processing::wcs::SkyCoord::new(62.0, -37.0).unwrap(),
                [[-0.2 / 3600.0, 0.0], [0.0, 0.2 / 3600.0]],
                None,
            )
            .unwrap(),
        );
        e.psf = Some(GaussianPsf::constant_fwhm(w, h, 3.0));
        e
    }

    fn header_of(hdu: &[u8]) -> Vec<String> {
        hdu.chunks(80)
            .map(|c| String::from_utf8_lossy(c).trim_end().to_string())
            .take_while(|c| c != "END")
            .collect()
    }

    #[test]
    fn a_cutout_holds_the_planes_and_the_moved_wcs() {
        let fits = cutout_fits(
            &exposure(),
            50.2,
            39.8,
            &[("DIASRCID", HeaderValue::Int(7))],
        )
        .unwrap();
        assert_eq!(fits.len() % 2880, 0);
        let primary = header_of(&fits[..2880]);
        assert!(
            primary
                .iter()
                .any(|c| c.starts_with("DIASRCID=") && c.ends_with(" 7"))
        );
        // IMAGE: 31 x 31 floats, one block of header then data blocks.
        let image = header_of(&fits[2880..5760]);
        assert!(image.iter().any(|c| c.contains("'IMAGE   '")));
        let crpix1 = image.iter().find(|c| c.starts_with("CRPIX1")).unwrap();
        let v: f64 = crpix1[10..].trim().parse().unwrap();
        // Reference pixel 50 (0-based) in a box from 35: 15, written 1-based.
        assert!((v - 16.0).abs() < 1e-9, "{crpix1}");
        let centre = 5760 + 4 * (15 * 31 + 15);
        let px = f32::from_be_bytes(fits[centre..centre + 4].try_into().unwrap());
        assert_eq!(px, 100.0);
        assert!(fits.windows(8).any(|w| w == b"'MASK   "));
        assert!(fits.windows(8).any(|w| w == b"'PSF    "));
    }

    #[test]
    fn a_box_at_the_corner_is_clipped_and_off_image_refused() {
        let fits = cutout_fits(&exposure(), 1.0, 2.0, &[]).unwrap();
        let image = header_of(&fits[2880..5760]);
        assert!(
            image
                .iter()
                .any(|c| c.starts_with("NAXIS1") && c.ends_with(" 17"))
        );
        assert!(
            image
                .iter()
                .any(|c| c.starts_with("NAXIS2") && c.ends_with(" 18"))
        );
        assert_eq!(
            cutout_fits(&exposure(), -3.0, 2.0, &[]),
            Err(CutoutError::OffImage { x: -3.0, y: 2.0 })
        );
    }
}
