//! Exposure files: one multi-extension FITS file a product, written through cfitsio. The
//! primary HDU holds the metadata, the photometric calibration (`PHOTZP`, `PHOTZPER`) and
//! the PSF (`PSFTYPE`, `PSF{XX,YY,XY}ORD`, `PSF{XX,YY,XY}_n`: moment polynomials);
//! the `IMAGE` (BITPIX -32), `MASK` (BITPIX 32, Rice tile-compressed, planes named by
//! `MP_<NAME>` cards) and `VARIANCE` (BITPIX -32) extensions each carry the WCS, so any
//! FITS reader (astropy, ds9) places every plane on the sky. Values are written exactly
//! (numbers with 17 significant digits) and read back unchanged. Files are written beside
//! their final name and renamed into place, so a failure never leaves half a file.
//! docs/exposure-files.md describes the layout.
use std::collections::HashMap;
use std::path::Path;

use aster_processing::background::Background;
use aster_processing::image::{Exposure, Image, Mask, PhotoCalib};
use aster_processing::psf::{FieldPolynomial, GaussianPsf};
use aster_processing::wcs::TanSipWcs;
use fitsio::FitsFile;
use fitsio::hdu::{FitsHdu, HduInfo};
use fitsio::images::{ImageDescription, ImageType};

pub use crate::fits_io::FitsFileError;
use crate::fits_io::{
    RICE_1, all_cards, card_text, parse_value, quoted, set_compression, verify_checksum,
    write_atomically, write_atomically_with, write_card, write_checksum,
};

type Result<T> = std::result::Result<T, FitsFileError>;

/// Keywords cfitsio writes itself, which are not metadata.
const STRUCTURAL: &[&str] = &[
    "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "PCOUNT", "GCOUNT", "XTENSION",
    "EXTNAME", "COMMENT", "HISTORY", "", "PHOTZP", "PHOTZPER", "CHECKSUM", "DATASUM",
];

/// Writes `e` to `path` (replacing it), atomically.
pub fn write_exposure(path: &Path, e: &Exposure) -> Result<()> {
    write_exposure_file(path, e, None)
}

/// Writes a coadd: the exposure and, in a `DEPTH` extension (BITPIX 32, Rice-compressed,
/// with the WCS), the number of inputs at each pixel.
pub fn write_coadd(path: &Path, e: &Exposure, depth: &Image<u16>) -> Result<()> {
    if (depth.width(), depth.height()) != (e.width(), e.height()) {
        return Err(FitsFileError::new(path, "DEPTH", "not the coadd's shape"));
    }
    write_exposure_file(path, e, Some(depth))
}

/// The depth (inputs per pixel) of a coadd written by [`write_coadd`].
pub fn read_coadd_depth(path: &Path) -> Result<Image<u16>> {
    let fail =
        |step: &'static str| move |err: &dyn std::fmt::Display| FitsFileError::new(path, step, err);
    let mut f = FitsFile::open(path).map_err(|x| fail("open")(&x))?;
    let hdu = f.hdu("DEPTH").map_err(|x| fail("DEPTH")(&x))?;
    verify_checksum(&mut f, false).map_err(|x| fail("checksum")(&format!("DEPTH: {x}")))?;
    let (w, h) = match &hdu.info {
        HduInfo::ImageInfo { shape, .. } if shape.len() == 2 => (shape[1], shape[0]),
        _ => return Err(fail("DEPTH")(&"not a two-dimensional image")),
    };
    let data: Vec<i32> = hdu.read_image(&mut f).map_err(|x| fail("DEPTH")(&x))?;
    let data = data
        .into_iter()
        .map(|v| v.clamp(0, i32::from(u16::MAX)) as u16)
        .collect();
    Image::from_vec(w, h, data).map_err(|x| fail("DEPTH")(&x))
}

fn write_exposure_file(path: &Path, e: &Exposure, depth: Option<&Image<u16>>) -> Result<()> {
    let fail =
        |step: &'static str| move |err: &dyn std::fmt::Display| FitsFileError::new(path, step, err);
    write_atomically(path, |f| {
        for (key, value) in &e.metadata {
            let text = card_text(key, value).map_err(|x| fail("metadata")(&x))?;
            write_card(f, key, &text).map_err(|x| fail("metadata")(&x))?;
        }
        if let Some(psf) = &e.psf {
            write_card(f, "PSFTYPE", &quoted("GAUSSIAN")).map_err(|x| fail("PSF")(&x))?;
            for (name, poly) in [("XX", &psf.ixx), ("YY", &psf.iyy), ("XY", &psf.ixy)] {
                write_card(f, &format!("PSF{name}ORD"), &poly.order().to_string())
                    .map_err(|x| fail("PSF")(&x))?;
                for (i, c) in poly.coeffs().iter().enumerate() {
                    write_card(f, &format!("PSF{name}_{i}"), &format!("{c:.17E}"))
                        .map_err(|x| fail("PSF")(&x))?;
                }
            }
        }
        if let Some(pc) = &e.photo_calib {
            write_card(f, "PHOTZP", &format!("{:.17E}", pc.zero_point()))
                .and_then(|()| write_card(f, "PHOTZPER", &format!("{:.17E}", pc.zero_point_err())))
                .map_err(|x| fail("calibration")(&x))?;
        }
        write_checksum(f).map_err(|x| fail("checksum")(&x))?;
        write_planes(path, f, e)?;
        if let Some(depth) = depth {
            write_depth(path, f, e, depth)?;
        }
        Ok(())
    })
}

fn write_depth(path: &Path, f: &mut FitsFile, e: &Exposure, depth: &Image<u16>) -> Result<()> {
    let fail =
        |step: &'static str| move |err: &dyn std::fmt::Display| FitsFileError::new(path, step, err);
    set_compression(f, RICE_1).map_err(|x| fail("DEPTH")(&x))?;
    let hdu = f
        .create_image(
            "DEPTH",
            &ImageDescription {
                data_type: ImageType::Long,
                dimensions: &[depth.height(), depth.width()],
            },
        )
        .map_err(|x| fail("DEPTH")(&x))?;
    if let Some(wcs) = &e.wcs {
        for (k, v) in wcs.to_cards() {
            write_card(f, &k, &v).map_err(|x| fail("WCS")(&x))?;
        }
    }
    write_card(f, "BUNIT", &quoted("count")).map_err(|x| fail("DEPTH")(&x))?;
    let data: Vec<i32> = depth.data().iter().map(|&v| i32::from(v)).collect();
    hdu.write_image(f, &data).map_err(|x| fail("DEPTH")(&x))?;
    write_checksum(f).map_err(|x| fail("checksum")(&x))?;
    set_compression(f, 0).map_err(|x| fail("DEPTH")(&x))?;
    Ok(())
}

/// The IMAGE, MASK and VARIANCE extensions of `e`, each with the WCS.
fn write_planes(path: &Path, f: &mut FitsFile, e: &Exposure) -> Result<()> {
    let fail =
        |step: &'static str| move |err: &dyn std::fmt::Display| FitsFileError::new(path, step, err);
    let (w, h) = (e.width(), e.height());
    let plane = |f: &mut FitsFile, name: &str, kind: ImageType| {
        let hdu = f
            .create_image(
                name,
                &ImageDescription {
                    data_type: kind,
                    dimensions: &[h, w],
                },
            )
            .map_err(|x| fail("image HDU")(&x))?;
        if let Some(wcs) = &e.wcs {
            for (k, v) in wcs.to_cards() {
                write_card(f, &k, &v).map_err(|x| fail("WCS")(&x))?;
            }
        }
        Ok::<_, FitsFileError>(hdu)
    };
    let hdu = plane(f, "IMAGE", ImageType::Float)?;
    hdu.write_image(f, e.image().data())
        .map_err(|x| fail("IMAGE")(&x))?;
    write_checksum(f).map_err(|x| fail("checksum")(&x))?;
    // The mask is mostly zeros: Rice tile compression (lossless for integers) shrinks
    // it many times over. Floats stay uncompressed: noise does not compress losslessly.
    set_compression(f, RICE_1).map_err(|x| fail("MASK")(&x))?;
    let hdu = plane(f, "MASK", ImageType::Long)?;
    for (k, bit) in Mask::plane_cards() {
        write_card(f, &k, &bit.to_string()).map_err(|x| fail("MASK")(&x))?;
    }
    hdu.write_image(f, e.mask().bits().data())
        .map_err(|x| fail("MASK")(&x))?;
    write_checksum(f).map_err(|x| fail("checksum")(&x))?;
    set_compression(f, 0).map_err(|x| fail("MASK")(&x))?;
    let hdu = plane(f, "VARIANCE", ImageType::Float)?;
    hdu.write_image(f, e.variance().data())
        .map_err(|x| fail("VARIANCE")(&x))?;
    write_checksum(f).map_err(|x| fail("checksum")(&x))?;
    Ok(())
}

/// Reads an exposure file written by [`write_exposure`] (or any file with that layout).
pub fn read_exposure(path: &Path) -> Result<Exposure> {
    read_exposure_impl(path, None)
}

/// A rectangle of pixels: columns `x` and rows `y` (0-based, end exclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PixelBox {
    pub x: std::ops::Range<usize>,
    pub y: std::ops::Range<usize>,
}

/// Reads only the pixels of `region` from an exposure file (tile-compressed planes are
/// decompressed only where needed): the three planes, the WCS moved to the cutout's
/// origin, the calibration and metadata, with `LTV1`/`LTV2` giving the offset into the
/// parent (IRAF's convention). The PSF, a model over the whole CCD, is left out.
pub fn read_exposure_region(path: &Path, region: &PixelBox) -> Result<Exposure> {
    read_exposure_impl(path, Some(region))
}

/// The WCS in the current HDU's header, if it has one.
fn hdu_wcs(path: &Path, f: &mut FitsFile) -> Result<Option<TanSipWcs>> {
    let cards: HashMap<String, String> = all_cards(f)
        .map_err(|x| FitsFileError::new(path, "IMAGE", x))?
        .into_iter()
        .collect();
    if !cards.contains_key("CTYPE1") {
        return Ok(None);
    }
    TanSipWcs::from_cards(|k| cards.get(k).cloned())
        .map(Some)
        .map_err(|x| FitsFileError::new(path, "WCS", x))
}

/// An exposure file's width, height and WCS, from the IMAGE header alone.
pub fn read_exposure_geometry(path: &Path) -> Result<(usize, usize, Option<TanSipWcs>)> {
    let fail =
        |step: &'static str| move |err: &dyn std::fmt::Display| FitsFileError::new(path, step, err);
    let mut f = FitsFile::open(path).map_err(|x| fail("open")(&x))?;
    let hdu = f.hdu("IMAGE").map_err(|x| fail("IMAGE")(&x))?;
    let (w, h) = match &hdu.info {
        HduInfo::ImageInfo { shape, .. } if shape.len() == 2 => (shape[1], shape[0]),
        _ => return Err(fail("IMAGE")(&"not a two-dimensional image")),
    };
    let wcs = hdu_wcs(path, &mut f)?;
    Ok((w, h, wcs))
}

fn read_exposure_impl(path: &Path, region: Option<&PixelBox>) -> Result<Exposure> {
    let fail =
        |step: &'static str| move |err: &dyn std::fmt::Display| FitsFileError::new(path, step, err);
    let mut f = FitsFile::open(path).map_err(|x| fail("open")(&x))?;
    f.primary_hdu().map_err(|x| fail("primary HDU")(&x))?;
    // Files from elsewhere may carry no checksums; ours always do.
    verify_checksum(&mut f, false).map_err(|x| fail("checksum")(&format!("primary HDU: {x}")))?;
    let mut metadata = std::collections::BTreeMap::new();
    let mut photzp = None;
    let mut photzper = None;
    let mut psf_cards = HashMap::new();
    for (key, value) in all_cards(&mut f).map_err(|x| fail("metadata")(&x))? {
        match key.as_str() {
            "PHOTZP" => photzp = value.trim().parse::<f64>().ok(),
            "PHOTZPER" => photzper = value.trim().parse::<f64>().ok(),
            k if STRUCTURAL.contains(&k) => {}
            k if is_psf_card(k) => {
                psf_cards.insert(key, value);
            }
            _ => {
                metadata.insert(key, parse_value(&value));
            }
        }
    }
    // The HDU of a plane and its width and height.
    let read_plane = |f: &mut FitsFile, name: &'static str| -> Result<(FitsHdu, (usize, usize))> {
        let hdu = f.hdu(name).map_err(|x| fail(name)(&x))?;
        verify_checksum(f, false).map_err(|x| fail("checksum")(&format!("{name}: {x}")))?;
        let size = match &hdu.info {
            HduInfo::ImageInfo { shape, .. } if shape.len() == 2 => (shape[1], shape[0]),
            _ => return Err(fail(name)(&"not a two-dimensional image")),
        };
        Ok((hdu, size))
    };
    let (hdu, (full_w, full_h)) = read_plane(&mut f, "IMAGE")?;
    if let Some(r) = region
        && (r.x.is_empty() || r.y.is_empty() || r.x.end > full_w || r.y.end > full_h)
    {
        return Err(fail("region")(&format!(
            "columns {:?} and rows {:?} are not inside the {full_w} x {full_h} image",
            r.x, r.y
        )));
    }
    let (w, h) = region.map_or((full_w, full_h), |r| (r.x.len(), r.y.len()));
    // A whole plane, or the region of it.
    fn read<T: fitsio::images::ReadImage>(
        hdu: &FitsHdu,
        f: &mut FitsFile,
        region: Option<&PixelBox>,
    ) -> fitsio::errors::Result<T> {
        match region {
            None => hdu.read_image(f),
            // fitsio hands the ranges to cfitsio as they come: fastest axis first.
            Some(r) => hdu.read_region(f, &[&r.x, &r.y]),
        }
    }
    let pixels: Vec<f32> = read(&hdu, &mut f, region).map_err(|x| fail("IMAGE")(&x))?;
    let wcs = hdu_wcs(path, &mut f)?;
    let shape = |name: &'static str, got: (usize, usize)| {
        if got == (full_w, full_h) {
            Ok(())
        } else {
            Err(fail(name)(&format!(
                "{} x {} pixels, the image is {w} x {h}",
                got.0, got.1
            )))
        }
    };
    let (hdu, size) = read_plane(&mut f, "MASK")?;
    shape("MASK", size)?;
    let bits: Vec<i32> = read(&hdu, &mut f, region).map_err(|x| fail("MASK")(&x))?;
    let mask_cards: HashMap<String, String> = all_cards(&mut f)
        .map_err(|x| fail("MASK")(&x))?
        .into_iter()
        .collect();
    // A file whose planes use other bits would be misread: refuse it.
    for (k, bit) in Mask::plane_cards() {
        if let Some(v) = mask_cards.get(&k)
            && v.trim().parse::<u32>().ok() != Some(bit)
        {
            return Err(fail("MASK")(&format!(
                "{k} = {} but Aster's plane is bit {bit}",
                v.trim()
            )));
        }
    }
    let (hdu, size) = read_plane(&mut f, "VARIANCE")?;
    shape("VARIANCE", size)?;
    let variance: Vec<f32> = read(&hdu, &mut f, region).map_err(|x| fail("VARIANCE")(&x))?;
    let image = |step, data| Image::from_vec(w, h, data).map_err(|x| fail(step)(&x));
    let mut e = Exposure::new(
        image("IMAGE", pixels)?,
        Mask::from_image(Image::from_vec(w, h, bits).map_err(|x| fail("MASK")(&x))?),
        image("VARIANCE", variance)?,
    )
    .map_err(|x| fail("planes")(&x))?;
    e.metadata = metadata;
    match region {
        None => {
            e.wcs = wcs;
            e.psf = read_psf(&psf_cards, w, h).map_err(|x| fail("PSF")(&x))?;
        }
        Some(r) => {
            let (x0, y0) = (r.x.start as f64, r.y.start as f64);
            e.wcs = wcs.map(|w| w.shifted(x0, y0));
            e.metadata.insert(
                "LTV1".into(),
                aster_processing::image::HeaderValue::Float(-x0),
            );
            e.metadata.insert(
                "LTV2".into(),
                aster_processing::image::HeaderValue::Float(-y0),
            );
        }
    }
    e.photo_calib = match photzp {
        Some(zp) => Some(
            PhotoCalib::new(zp, photzper.unwrap_or(0.0))
                .ok_or_else(|| fail("calibration")(&"PHOTZP/PHOTZPER are not valid"))?,
        ),
        None => None,
    };
    Ok(e)
}

/// Whether `path` has the layout of an exposure file (IMAGE, MASK and VARIANCE HDUs).
pub fn is_exposure_file(path: &Path) -> bool {
    FitsFile::open(path)
        .map(|mut f| {
            ["IMAGE", "MASK", "VARIANCE"]
                .iter()
                .all(|n| f.hdu(*n).is_ok())
        })
        .unwrap_or(false)
}

/// A calibrated image from elsewhere: the first two-dimensional image HDU of a FITS file
/// (primary or extension, tile-compressed or not, any BITPIX with BSCALE/BZERO applied)
/// and the header cards that apply to it: the primary header's, overridden by the HDU's
/// own (the inheritance convention of multi-extension files).
#[derive(Debug, Clone)]
pub struct PlainImage {
    pub image: Image<f32>,
    /// Keyword → raw value as written (strings quoted), structural keywords included, with
    /// NAXIS1/NAXIS2 those of the image.
    pub cards: HashMap<String, String>,
    /// Index of the HDU read (0 = primary).
    pub hdu: usize,
}

/// Reads the first two-dimensional image of `path` (see [`PlainImage`]); checksums are
/// verified where the file has them.
pub fn read_plain_image(path: &Path) -> Result<PlainImage> {
    let fail =
        |step: &'static str| move |err: &dyn std::fmt::Display| FitsFileError::new(path, step, err);
    let mut f = FitsFile::open(path).map_err(|x| fail("open")(&x))?;
    f.primary_hdu().map_err(|x| fail("primary HDU")(&x))?;
    let mut cards: HashMap<String, String> = all_cards(&mut f)
        .map_err(|x| fail("header")(&x))?
        .into_iter()
        .collect();
    for index in 0.. {
        let Ok(hdu) = f.hdu(index) else {
            return Err(fail("image")(&"no two-dimensional image HDU in the file"));
        };
        let HduInfo::ImageInfo { shape, .. } = &hdu.info else {
            continue;
        };
        if shape.len() != 2 || shape.contains(&0) {
            continue;
        }
        let (w, h) = (shape[1], shape[0]);
        verify_checksum(&mut f, false)
            .map_err(|x| fail("checksum")(&format!("HDU {index}: {x}")))?;
        if index > 0 {
            cards.extend(all_cards(&mut f).map_err(|x| fail("header")(&x))?);
        }
        cards.insert("NAXIS1".into(), w.to_string());
        cards.insert("NAXIS2".into(), h.to_string());
        let pixels: Vec<f32> = hdu.read_image(&mut f).map_err(|x| fail("image")(&x))?;
        let image = Image::from_vec(w, h, pixels).map_err(|x| fail("image")(&x))?;
        return Ok(PlainImage {
            image,
            cards,
            hdu: index,
        });
    }
    unreachable!("the loop returns")
}

/// Writes one image plane as a plain FITS file: the pixels in the primary HDU (BITPIX -32)
/// with the WCS, for tools that read single-HDU images (SExtractor, SWarp).
pub fn write_plain_image(path: &Path, image: &Image<f32>, wcs: Option<&TanSipWcs>) -> Result<()> {
    let fail =
        |step: &'static str| move |err: &dyn std::fmt::Display| FitsFileError::new(path, step, err);
    let description = ImageDescription {
        data_type: ImageType::Float,
        dimensions: &[image.height(), image.width()],
    };
    write_atomically_with(path, Some(&description), |f| {
        let hdu = f.primary_hdu().map_err(|x| fail("primary HDU")(&x))?;
        if let Some(wcs) = wcs {
            for (k, v) in wcs.to_cards() {
                write_card(f, &k, &v).map_err(|x| fail("WCS")(&x))?;
            }
        }
        hdu.write_image(f, image.data())
            .map_err(|x| fail("IMAGE")(&x))?;
        write_checksum(f).map_err(|x| fail("checksum")(&x))
    })
}

/// Writes a background model (DMS-REQ-0327): a `BACKGROUND` image of the levels at bin
/// centres, with `BKGBIN` (pixels a bin), `IMGWIDTH` and `IMGHEIGHT`; read back exactly.
pub fn write_background(path: &Path, b: &Background) -> Result<()> {
    let fail =
        |step: &'static str| move |err: &dyn std::fmt::Display| FitsFileError::new(path, step, err);
    write_atomically(path, |f| {
        write_checksum(f).map_err(|x| fail("checksum")(&x))?;
        let levels = b.levels();
        let hdu = f
            .create_image(
                "BACKGROUND",
                &ImageDescription {
                    data_type: ImageType::Float,
                    dimensions: &[levels.height(), levels.width()],
                },
            )
            .map_err(|x| fail("BACKGROUND")(&x))?;
        for (k, v) in [
            ("BKGBIN", b.bin_size()),
            ("IMGWIDTH", b.width()),
            ("IMGHEIGHT", b.height()),
        ] {
            write_card(f, k, &v.to_string()).map_err(|x| fail("BACKGROUND")(&x))?;
        }
        hdu.write_image(f, levels.data())
            .map_err(|x| fail("BACKGROUND")(&x))?;
        write_checksum(f).map_err(|x| fail("checksum")(&x))
    })
}

/// Reads a background model written by [`write_background`].
pub fn read_background(path: &Path) -> Result<Background> {
    let fail =
        |step: &'static str| move |err: &dyn std::fmt::Display| FitsFileError::new(path, step, err);
    let mut f = FitsFile::open(path).map_err(|x| fail("open")(&x))?;
    let hdu = f.hdu("BACKGROUND").map_err(|x| fail("BACKGROUND")(&x))?;
    verify_checksum(&mut f, true).map_err(|x| fail("checksum")(&x))?;
    let (w, h) = match &hdu.info {
        HduInfo::ImageInfo { shape, .. } if shape.len() == 2 => (shape[1], shape[0]),
        _ => return Err(fail("BACKGROUND")(&"not a two-dimensional image")),
    };
    let cards: HashMap<String, String> = all_cards(&mut f)
        .map_err(|x| fail("BACKGROUND")(&x))?
        .into_iter()
        .collect();
    let number = |k: &str| {
        cards
            .get(k)
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| fail("BACKGROUND")(&format!("{k} is missing")))
    };
    let levels: Vec<f32> = hdu.read_image(&mut f).map_err(|x| fail("BACKGROUND")(&x))?;
    let levels = Image::from_vec(w, h, levels).map_err(|x| fail("BACKGROUND")(&x))?;
    Background::from_levels(
        number("IMGWIDTH")?,
        number("IMGHEIGHT")?,
        number("BKGBIN")?,
        levels,
    )
    .map_err(|x| fail("BACKGROUND")(&x))
}

/// The cards of a Gaussian PSF: PSFTYPE, PSF{XX,YY,XY}ORD and PSF{XX,YY,XY}_n.
fn is_psf_card(k: &str) -> bool {
    k == "PSFTYPE"
        || ["PSFXX", "PSFYY", "PSFXY"].iter().any(|p| {
            k.strip_prefix(p).is_some_and(|rest| {
                rest == "ORD"
                    || rest
                        .strip_prefix('_')
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        })
}

fn read_psf(
    cards: &HashMap<String, String>,
    width: usize,
    height: usize,
) -> std::result::Result<Option<GaussianPsf>, String> {
    let Some(kind) = cards.get("PSFTYPE") else {
        return Ok(None);
    };
    if kind.trim().trim_matches('\'').trim() != "GAUSSIAN" {
        return Err(format!("PSFTYPE {kind} is not supported"));
    }
    let poly = |name: &str| -> std::result::Result<FieldPolynomial, String> {
        let order: usize = cards
            .get(&format!("PSF{name}ORD"))
            .and_then(|v| v.trim().parse().ok())
            .filter(|&o| o <= 8)
            .ok_or_else(|| format!("PSF{name}ORD is missing or not 0-8"))?;
        let coeffs = (0..FieldPolynomial::terms(order))
            .map(|i| {
                cards
                    .get(&format!("PSF{name}_{i}"))
                    .and_then(|v| v.trim().replace(['D', 'd'], "E").parse::<f64>().ok())
                    .ok_or_else(|| format!("PSF{name}_{i} is missing or not a number"))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        FieldPolynomial::new(order, coeffs).ok_or_else(|| format!("PSF{name}: bad coefficients"))
    };
    Ok(Some(GaussianPsf::new(
        width,
        height,
        poly("XX")?,
        poly("YY")?,
        poly("XY")?,
    )))
}

#[cfg(test)]
mod tests {
    use aster_processing::image::{HeaderValue, MaskPlane};
    use aster_processing::wcs::{PixelPosition, Sip, SipPolynomial, SkyCoord};

    use std::path::PathBuf;

    use super::*;

    fn exposure() -> Exposure {
        let (w, h) = (37, 23);
        let mut e = Exposure::blank(w, h);
        let (pix, mask, var) = e.planes_mut();
        for (i, (p, v)) in pix.iter_mut().zip(var.iter_mut()).enumerate() {
            *p = (i as f32).sin() * 1e4 + 0.123_456_7;
            *v = 1.0 + i as f32 / 7.0;
        }
        mask.set(3, 4, MaskPlane::Sat);
        mask.set(3, 4, MaskPlane::Cr);
        mask.set(36, 22, MaskPlane::NoData);
        let s = 0.2 / 3600.0;
        let a = SipPolynomial::new(2, [((2, 0), 1.25e-7), ((1, 1), -3.5e-8)]).unwrap();
        let b = SipPolynomial::new(2, [((0, 2), 2.0e-7)]).unwrap();
        e.wcs = Some(
            TanSipWcs::new(
                PixelPosition { x: 18.25, y: 11.5 },
                SkyCoord::new(62.123_456_789_012_3, -37.000_000_1).unwrap(),
                [[-s, 1e-9], [2e-9, s]],
                Some(Sip {
                    a,
                    b,
                    ap: None,
                    bp: None,
                }),
            )
            .unwrap(),
        );
        e.photo_calib = PhotoCalib::new(31.123_456_789, 0.004);
        e.psf = Some(GaussianPsf::new(
            w,
            h,
            FieldPolynomial::new(1, vec![4.1, 0.3, -0.2]).unwrap(),
            FieldPolynomial::new(2, vec![3.9, 0.1, 0.05, 0.01, -0.02, 0.003]).unwrap(),
            FieldPolynomial::constant(0.12),
        ));
        e.metadata
            .insert("FILTER".into(), HeaderValue::Text("r".into()));
        e.metadata
            .insert("OBJECT".into(), HeaderValue::Text("it's a field".into()));
        e.metadata
            .insert("VISIT".into(), HeaderValue::Int(2_026_112_500_123));
        e.metadata
            .insert("EXPTIME".into(), HeaderValue::Float(30.000_000_001));
        e.metadata
            .insert("SNAPPAIR".into(), HeaderValue::Bool(true));
        e
    }

    #[test]
    fn regions_hold_the_parents_pixels_and_sky() {
        let dir = tempdir();
        let path = dir.join("pvi.fits");
        let e = exposure();
        write_exposure(&path, &e).unwrap();
        let region = PixelBox { x: 2..30, y: 3..20 };
        let cut = read_exposure_region(&path, &region).unwrap();
        assert_eq!((cut.width(), cut.height()), (28, 17));
        for y in 0..17 {
            for x in 0..28 {
                let (px, py) = (x + 2, y + 3);
                assert_eq!(cut.image().get(x, y), e.image().get(px, py));
                assert_eq!(cut.variance().get(x, y), e.variance().get(px, py));
                assert_eq!(cut.mask().bits().get(x, y), e.mask().bits().get(px, py));
            }
        }
        let (wc, wp) = (cut.wcs.as_ref().unwrap(), e.wcs.as_ref().unwrap());
        let a = wc.pixel_to_sky(PixelPosition { x: 1.5, y: 7.0 });
        let b = wp.pixel_to_sky(PixelPosition { x: 3.5, y: 10.0 });
        assert!(a.separation(&b) * 3.6e6 < 1e-6, "{a:?} {b:?}");
        assert_eq!(cut.metadata.get("LTV1"), Some(&HeaderValue::Float(-2.0)));
        assert_eq!(cut.photo_calib, e.photo_calib);
        assert!(read_exposure_region(&path, &PixelBox { x: 30..40, y: 0..5 }).is_err());
        assert!(read_exposure_region(&path, &PixelBox { x: 3..3, y: 0..5 }).is_err());
    }

    #[test]
    fn exposures_read_back_exactly() {
        let dir = tempdir();
        let path = dir.join("pvi.fits");
        let e = exposure();
        write_exposure(&path, &e).unwrap();
        let back = read_exposure(&path).unwrap();
        assert_eq!(back, e);
        // Writing again replaces the file, and no temporary file is left behind.
        write_exposure(&path, &e).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn plain_images_hold_the_pixels_and_wcs_in_the_primary_hdu() {
        let dir = tempdir();
        let e = exposure();
        let path = dir.join("plain.fits");
        write_plain_image(&path, e.image(), e.wcs.as_ref()).unwrap();
        let mut f = FitsFile::open(&path).unwrap();
        let hdu = f.primary_hdu().unwrap();
        verify_checksum(&mut f, true).unwrap();
        let pixels: Vec<f32> = hdu.read_image(&mut f).unwrap();
        assert_eq!(pixels, e.image().data());
        let cards: HashMap<String, String> = all_cards(&mut f).unwrap().into_iter().collect();
        let wcs = TanSipWcs::from_cards(|k| cards.get(k).cloned()).unwrap();
        assert_eq!(Some(&wcs), e.wcs.as_ref());
    }

    #[test]
    fn backgrounds_read_back_exactly() {
        let dir = tempdir();
        let e = exposure();
        let b = Background::estimate(e.image(), e.mask(), 8).unwrap();
        let path = dir.join("bkg.fits");
        write_background(&path, &b).unwrap();
        assert_eq!(read_background(&path).unwrap(), b);
    }

    #[test]
    fn bad_files_name_the_file_and_the_step() {
        let dir = tempdir();
        let path = dir.join("x.fits");
        write_exposure(&path, &exposure()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.join("truncated.fits");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = read_exposure(&cut).unwrap_err();
        assert!(err.to_string().contains("truncated.fits"), "{err}");
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x10;
        let corrupt = dir.join("corrupt.fits");
        std::fs::write(&corrupt, &flipped).unwrap();
        assert_eq!(read_exposure(&corrupt).unwrap_err().step, "checksum");
        let junk = dir.join("junk.fits");
        std::fs::write(&junk, b"not a FITS file at all").unwrap();
        assert_eq!(read_exposure(&junk).unwrap_err().step, "open");
        assert_eq!(
            read_exposure(&dir.join("missing.fits")).unwrap_err().step,
            "open"
        );

        let mut bad = exposure();
        bad.metadata.insert("lower".into(), HeaderValue::Int(1));
        let out = dir.join("bad.fits");
        let err = write_exposure(&out, &bad).unwrap_err();
        assert_eq!(err.step, "metadata");
        assert!(!out.exists());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            4,
            "no temporary file left"
        );
    }

    /// For the astropy test in tests/clients: scripts/test-all names a directory, and this
    /// leaves an exposure file there with the sky positions Aster gives some pixels.
    #[test]
    fn sample_for_external_readers() {
        let Ok(dir) = std::env::var("ASTER_TEST_ARTIFACTS") else {
            return;
        };
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let e = exposure();
        write_exposure(&dir.join("exposure.fits"), &e).unwrap();
        let wcs = e.wcs.as_ref().unwrap();
        let rows: Vec<String> = [(0.0, 0.0), (36.0, 22.0), (10.5, 3.25), (-50.0, 400.0)]
            .iter()
            .map(|&(x, y)| {
                let s = wcs.pixel_to_sky(PixelPosition { x, y });
                format!("{x} {y} {:.15} {:.15}", s.ra(), s.dec())
            })
            .collect();
        std::fs::write(dir.join("exposure-sky.txt"), rows.join("\n") + "\n").unwrap();
    }

    fn tempdir() -> crate::testdir::TempDir {
        crate::testdir::tempdir("expfile")
    }
}
