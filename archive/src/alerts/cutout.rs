//! Alert cutouts (DMS-REQ-0274): a small box of an exposure around a DIASource as an
//! in-memory multi-extension FITS file, the layout of exposure files in miniature: a
//! primary HDU with what the alert says of the image, then IMAGE, MASK (with its `MP_*`
//! plane cards) and VARIANCE, each with the WCS moved to the box, and PSF, the image of the
//! point-spread function at the source. Written in memory because an alert holds a few
//! hundred of them per visit: no temporary files, no cfitsio handles.
use aster_processing::image::{Exposure, HeaderValue, Mask};

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

/// Cutouts of one exposure. What every cutout of it repeats (its WCS cards but the
/// reference pixel, its mask planes) is rendered once: an alert holds three cutouts and a
/// visit a few thousand alerts, so header formatting would otherwise dominate alert
/// production's time (DMS-REQ-0004).
pub struct Cutouts<'a> {
    exposure: &'a Exposure,
    /// The WCS's cards before CRPIX1/2 and after them, as 80-byte header cards: the
    /// shifted CRPIX goes between, keeping the order (WCSAXES first) the standard asks.
    wcs_before: Vec<u8>,
    wcs_after: Vec<u8>,
    mask_cards: Vec<u8>,
}

impl<'a> Cutouts<'a> {
    pub fn new(exposure: &'a Exposure) -> Result<Self, CutoutError> {
        let (mut before, mut after) = (Header::default(), Header::default());
        if let Some(wcs) = &exposure.wcs {
            let moving: Vec<String> = wcs.crpix_cards().into_iter().map(|(k, _)| k).collect();
            let mut passed = false;
            for (k, v) in wcs.to_cards() {
                if moving.contains(&k) {
                    passed = true;
                } else if passed {
                    after.card(&k, &v)?;
                } else {
                    before.card(&k, &v)?;
                }
            }
        }
        let mut mask_cards = Header::default();
        for (k, bit) in Mask::plane_cards() {
            mask_cards.card(&k, &bit.to_string())?;
        }
        Ok(Self {
            exposure,
            wcs_before: before.0,
            wcs_after: after.0,
            mask_cards: mask_cards.0,
        })
    }

    /// The cutout centred on pixel (`x`, `y`) (clipped where the box leaves the image),
    /// with `cards` in its primary header.
    pub fn cutout(
        &self,
        x: f64,
        y: f64,
        cards: &[(&str, HeaderValue)],
    ) -> Result<Vec<u8>, CutoutError> {
        let exposure = self.exposure;
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

        // The WCS moved to the box: only its reference pixel changes.
        let mut wcs_cards = Header::default();
        if let Some(wcs) = &exposure.wcs {
            wcs_cards.0.extend_from_slice(&self.wcs_before);
            for (k, v) in wcs.shifted(x0 as f64, y0 as f64).crpix_cards() {
                wcs_cards.card(&k, &v)?;
            }
            wcs_cards.0.extend_from_slice(&self.wcs_after);
        }
        let planes = |name: &str, bitpix: &str, extra: &[u8], out: &mut Vec<u8>| {
            let mut hdu = Header::default();
            hdu.card("XTENSION", "'IMAGE   '")?;
            hdu.card("BITPIX", bitpix)?;
            hdu.card("NAXIS", "2")?;
            hdu.card("NAXIS1", &bw.to_string())?;
            hdu.card("NAXIS2", &bh.to_string())?;
            hdu.card("PCOUNT", "0")?;
            hdu.card("GCOUNT", "1")?;
            hdu.value("EXTNAME", &HeaderValue::Text(name.into()))?;
            hdu.0.extend_from_slice(&wcs_cards.0);
            hdu.0.extend_from_slice(extra);
            hdu.finish(out);
            Ok::<_, CutoutError>(())
        };
        // The box's rows, big-endian as FITS has them (the box lies on the image).
        fn rows<T: Copy, const N: usize>(
            out: &mut Vec<u8>,
            data: &[T],
            width: usize,
            (x0, x1, y0, y1): (usize, usize, usize, usize),
            be: impl Fn(T) -> [u8; N],
        ) {
            let start = out.len();
            for yy in y0..y1 {
                for &v in &data[yy * width + x0..yy * width + x1] {
                    out.extend_from_slice(&be(v));
                }
            }
            pad(out, start, 0);
        }
        let bx = (x0, x1, y0, y1);
        planes("IMAGE", "-32", &[], &mut out)?;
        rows(&mut out, exposure.image().data(), w, bx, f32::to_be_bytes);
        planes("MASK", "32", &self.mask_cards, &mut out)?;
        rows(
            &mut out,
            exposure.mask().bits().data(),
            w,
            bx,
            i32::to_be_bytes,
        );
        planes("VARIANCE", "-32", &[], &mut out)?;
        rows(
            &mut out,
            exposure.variance().data(),
            w,
            bx,
            f32::to_be_bytes,
        );

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
    /// Appends one card, laid out byte by byte (`format!`'s padding writes a character
    /// at a time, and a visit's alerts write a million cards).
    fn card(&mut self, key: &str, value: &str) -> Result<(), CutoutError> {
        let start = self.0.len();
        let b = &mut self.0;
        let spaces = |b: &mut Vec<u8>, n: usize| b.resize(b.len() + n, b' ');
        if key.len() > 8 {
            // Keywords over eight characters (the mask's MP_DETECTED) by the HIERARCH
            // convention, as cfitsio writes them.
            b.extend_from_slice(b"HIERARCH ");
            b.extend_from_slice(key.as_bytes());
            b.extend_from_slice(b" = ");
            b.extend_from_slice(value.as_bytes());
        } else {
            b.extend_from_slice(key.as_bytes());
            spaces(b, 8 - key.len());
            b.extend_from_slice(b"= ");
            // Strings start in column 11; numbers and logicals end in column 30.
            if !value.starts_with('\'') {
                spaces(b, 20usize.saturating_sub(value.len()));
            }
            b.extend_from_slice(value.as_bytes());
        }
        let written = b.len() - start;
        if written > 80 || !b[start..].is_ascii() {
            b.truncate(start);
            return Err(CutoutError::Card(format!("{key} = {value} does not fit")));
        }
        spaces(b, 80 - written);
        Ok(())
    }

    fn value(&mut self, key: &str, value: &HeaderValue) -> Result<(), CutoutError> {
        let text = card_text(key, value).map_err(CutoutError::Card)?;
        self.card(key, &text)
    }

    fn finish(mut self, out: &mut Vec<u8>) {
        self.0.extend_from_slice(b"END");
        self.0.resize(self.0.len() + 77, b' ');
        let start = out.len();
        out.extend_from_slice(&self.0);
        pad(out, start, b' ');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aster_processing::image::{Image, MaskPlane};
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
        let e = exposure();
        let fits = Cutouts::new(&e)
            .unwrap()
            .cutout(50.2, 39.8, &[("DIASRCID", HeaderValue::Int(7))])
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
        // The WCS's cards in the order the exposure's own header has them (WCSAXES
        // first, as the standard asks), only CRPIX moved.
        let keys: Vec<&str> = image
            .iter()
            .skip_while(|c| !c.starts_with("WCSAXES"))
            .map(|c| c[..8].trim_end())
            .collect();
        let wcs_keys: Vec<String> = e
            .wcs
            .as_ref()
            .unwrap()
            .to_cards()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, wcs_keys);
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
        let e = exposure();
        let cutouts = Cutouts::new(&e).unwrap();
        let fits = cutouts.cutout(1.0, 2.0, &[]).unwrap();
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
            cutouts.cutout(-3.0, 2.0, &[]),
            Err(CutoutError::OffImage { x: -3.0, y: 2.0 })
        );
    }
}
