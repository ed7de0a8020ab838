//! Calibration product files: one FITS file per product and CCD (and filter). The primary
//! HDU holds the provenance (DMS-REQ-0132: `CALTYPE`, `DETECTOR`, `FILTER`, `INPUTnnn` with
//! `CALDATE0`/`CALDATE1` for the inputs' date range, `PARNAMn`/`PARVALn`, `USEDCALn`,
//! `SOFTWARE`, `CALDATE`); then, by type: `IMAGE` and `VARIANCE` (BITPIX -32) for bias,
//! dark, flat, illumination and fringe; `IMAGE` as a cube (NAXIS3 = wavelengths, listed as
//! `WAVEn` in nm) for the monochromatic flats; `CROSSTALK` and `ERRORS` (BITPIX -64, victim
//! rows, source columns) for the crosstalk matrix; `DEFECTS` (BITPIX 32, Rice-compressed,
//! bits named by `DEF_<NAME>` cards) for the bad pixel map. Every HDU carries FITS
//! checksums, verified on read; files are written atomically.
use std::collections::BTreeMap;
use std::path::Path;

use aster_processing::calib::{
    CalibImage, CalibProduct, CalibType, CrosstalkMatrix, DefectBit, DefectMap, MonoFlatCube,
    Provenance,
};
use aster_processing::image::Image;
use fitsio::FitsFile;
use fitsio::hdu::{FitsHdu, HduInfo};
use fitsio::images::{ImageDescription, ImageType};

use crate::fits_io::{
    FitsFileError, RICE_1, all_cards, card_text, open_primary, set_compression, verify_checksum,
    write_atomically, write_card, write_checksum,
};

type Result<T> = std::result::Result<T, FitsFileError>;

/// Writes `product` to `path` (replacing it), atomically.
pub fn write_calibration(path: &Path, product: &CalibProduct) -> Result<()> {
    let fail =
        |step: &'static str| move |e: &dyn std::fmt::Display| FitsFileError::new(path, step, e);
    write_atomically(path, |f| {
        for (key, value) in product.provenance().to_cards() {
            let text = card_text(&key, &value).map_err(|e| fail("provenance")(&e))?;
            write_card(f, &key, &text).map_err(|e| fail("provenance")(&e))?;
        }
        write_checksum(f).map_err(|e| fail("checksum")(&e))?;
        let hdu = |f: &mut FitsFile, name: &str, kind: ImageType, dims: &[usize]| {
            f.create_image(
                name,
                &ImageDescription {
                    data_type: kind,
                    dimensions: dims,
                },
            )
            .map_err(|e| fail("image HDU")(&e))
        };
        match product {
            CalibProduct::Image(c) => {
                let dims = [c.image.height(), c.image.width()];
                let h = hdu(f, "IMAGE", ImageType::Float, &dims)?;
                h.write_image(f, c.image.data())
                    .map_err(|e| fail("IMAGE")(&e))?;
                write_checksum(f).map_err(|e| fail("checksum")(&e))?;
                let h = hdu(f, "VARIANCE", ImageType::Float, &dims)?;
                h.write_image(f, c.variance.data())
                    .map_err(|e| fail("VARIANCE")(&e))?;
            }
            CalibProduct::Cube(c) => {
                let Some(first) = c.planes.first() else {
                    return Err(fail("IMAGE")(&"the cube has no planes"));
                };
                let dims = [c.planes.len(), first.height(), first.width()];
                let h = hdu(f, "IMAGE", ImageType::Float, &dims)?;
                for (i, w) in c.wavelengths.iter().enumerate() {
                    write_card(f, &format!("WAVE{}", i + 1), &format!("{w:.17E}"))
                        .map_err(|e| fail("IMAGE")(&e))?;
                }
                let data: Vec<f32> = c
                    .planes
                    .iter()
                    .flat_map(|p| p.data().iter().copied())
                    .collect();
                h.write_image(f, &data).map_err(|e| fail("IMAGE")(&e))?;
            }
            CalibProduct::Crosstalk(c) => {
                let dims = [c.amps, c.amps];
                let h = hdu(f, "CROSSTALK", ImageType::Double, &dims)?;
                h.write_image(f, &c.coefficients)
                    .map_err(|e| fail("CROSSTALK")(&e))?;
                write_checksum(f).map_err(|e| fail("checksum")(&e))?;
                let h = hdu(f, "ERRORS", ImageType::Double, &dims)?;
                h.write_image(f, &c.errors)
                    .map_err(|e| fail("ERRORS")(&e))?;
            }
            CalibProduct::Defects(c) => {
                set_compression(f, RICE_1).map_err(|e| fail("DEFECTS")(&e))?;
                let h = hdu(
                    f,
                    "DEFECTS",
                    ImageType::Long,
                    &[c.bits.height(), c.bits.width()],
                )?;
                for b in DefectBit::ALL {
                    write_card(f, &format!("DEF_{}", b.name()), &(b as u32).to_string())
                        .map_err(|e| fail("DEFECTS")(&e))?;
                }
                h.write_image(f, c.bits.data())
                    .map_err(|e| fail("DEFECTS")(&e))?;
                set_compression(f, 0).map_err(|e| fail("DEFECTS")(&e))?;
            }
        }
        write_checksum(f).map_err(|e| fail("checksum")(&e))
    })
}

/// The provenance of a calibration product, from its primary header alone (the pixels
/// are not read), for the dataset registry.
pub fn read_calibration_provenance(path: &Path) -> Result<Provenance> {
    let (_, cards) = open_primary(path, "provenance")?;
    Provenance::from_cards(&cards).map_err(|e| FitsFileError::new(path, "provenance", e))
}

/// Reads a calibration product written by [`write_calibration`].
pub fn read_calibration(path: &Path) -> Result<CalibProduct> {
    let fail =
        |step: &'static str| move |e: &dyn std::fmt::Display| FitsFileError::new(path, step, e);
    let (mut f, cards) = open_primary(path, "provenance")?;
    let provenance = Provenance::from_cards(&cards).map_err(|e| fail("provenance")(&e))?;
    // An HDU, its shape (fastest axis first) and its cards, checksum verified.
    let open = |f: &mut FitsFile,
                name: &'static str|
     -> Result<(FitsHdu, Vec<usize>, BTreeMap<String, String>)> {
        let hdu = f.hdu(name).map_err(|e| fail(name)(&e))?;
        verify_checksum(f, true).map_err(|e| fail("checksum")(&format!("{name}: {e}")))?;
        let shape = match &hdu.info {
            HduInfo::ImageInfo { shape, .. } => shape.iter().rev().copied().collect(),
            _ => return Err(fail(name)(&"not an image")),
        };
        let cards = all_cards(f)
            .map_err(|e| fail(name)(&e))?
            .into_iter()
            .collect();
        Ok((hdu, shape, cards))
    };
    let plane = |f: &mut FitsFile, name: &'static str| -> Result<Image<f32>> {
        let (hdu, shape, _) = open(f, name)?;
        if shape.len() != 2 {
            return Err(fail(name)(&"not a two-dimensional image"));
        }
        let data: Vec<f32> = hdu.read_image(f).map_err(|e| fail(name)(&e))?;
        Image::from_vec(shape[0], shape[1], data).map_err(|e| fail(name)(&e))
    };
    Ok(match provenance.calib_type {
        CalibType::Bias
        | CalibType::Dark
        | CalibType::Flat
        | CalibType::Illumination
        | CalibType::Fringe => {
            let image = plane(&mut f, "IMAGE")?;
            let variance = plane(&mut f, "VARIANCE")?;
            if (variance.width(), variance.height()) != (image.width(), image.height()) {
                return Err(fail("VARIANCE")(&"differs in shape from IMAGE"));
            }
            CalibProduct::Image(CalibImage {
                image,
                variance,
                provenance,
            })
        }
        CalibType::MonoFlat => {
            let (hdu, shape, cards) = open(&mut f, "IMAGE")?;
            let [w, h, n] = shape[..] else {
                return Err(fail("IMAGE")(&"not a three-dimensional cube"));
            };
            let wavelengths = (1..=n)
                .map(|i| {
                    cards
                        .get(&format!("WAVE{i}"))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .ok_or_else(|| fail("IMAGE")(&format!("WAVE{i} is missing")))
                })
                .collect::<Result<Vec<_>>>()?;
            let data: Vec<f32> = hdu.read_image(&mut f).map_err(|e| fail("IMAGE")(&e))?;
            let planes = data
                .chunks(w * h)
                .map(|c| Image::from_vec(w, h, c.to_vec()).map_err(|e| fail("IMAGE")(&e)))
                .collect::<Result<Vec<_>>>()?;
            CalibProduct::Cube(MonoFlatCube {
                wavelengths,
                planes,
                provenance,
            })
        }
        CalibType::Crosstalk => {
            let mut matrix = |name: &'static str| -> Result<(usize, Vec<f64>)> {
                let (hdu, shape, _) = open(&mut f, name)?;
                if shape.len() != 2 || shape[0] != shape[1] {
                    return Err(fail(name)(&"not a square matrix"));
                }
                let data: Vec<f64> = hdu.read_image(&mut f).map_err(|e| fail(name)(&e))?;
                Ok((shape[0], data))
            };
            let (amps, coefficients) = matrix("CROSSTALK")?;
            let (n, errors) = matrix("ERRORS")?;
            if n != amps {
                return Err(fail("ERRORS")(&"differs in shape from CROSSTALK"));
            }
            CalibProduct::Crosstalk(CrosstalkMatrix {
                amps,
                coefficients,
                errors,
                provenance,
            })
        }
        CalibType::Defects => {
            let (hdu, shape, cards) = open(&mut f, "DEFECTS")?;
            if shape.len() != 2 {
                return Err(fail("DEFECTS")(&"not a two-dimensional image"));
            }
            // Bits named otherwise would be misread: refuse them.
            for b in DefectBit::ALL {
                let key = format!("DEF_{}", b.name());
                if cards.get(&key).map(|v| v.trim().parse::<u32>().ok()) != Some(Some(b as u32)) {
                    return Err(fail("DEFECTS")(&format!("{key} must be {}", b as u32)));
                }
            }
            let data: Vec<i32> = hdu.read_image(&mut f).map_err(|e| fail("DEFECTS")(&e))?;
            let bits =
                Image::from_vec(shape[0], shape[1], data).map_err(|e| fail("DEFECTS")(&e))?;
            CalibProduct::Defects(DefectMap { bits, provenance })
        }
    })
}

#[cfg(test)]
mod tests {
    use aster_processing::calib::Stamp;
    use aster_processing::image::HeaderValue;

    use super::*;

    fn provenance(t: CalibType) -> Provenance {
        let cards: BTreeMap<String, HeaderValue> = [
            ("CALTYPE", HeaderValue::Text(t.name().into())),
            ("DETECTOR", HeaderValue::Int(4)),
            ("NINPUT", HeaderValue::Int(2)),
            ("INPUT001", HeaderValue::Text("AS_C_1".into())),
            ("INPUT002", HeaderValue::Text("AS_C_2".into())),
            ("CALMJD0", HeaderValue::Float(60_600.25)),
            ("CALMJD1", HeaderValue::Float(60_601.5)),
            ("NPARAM", HeaderValue::Int(1)),
            ("PARNAM1", HeaderValue::Text("reject_sigma".into())),
            ("PARVAL1", HeaderValue::Text("4".into())),
            ("NUSEDCAL", HeaderValue::Int(1)),
            ("USEDCAL1", HeaderValue::Text("bias".into())),
            ("SOFTWARE", HeaderValue::Text("aster 0.1.0".into())),
            ("CALDATE", HeaderValue::Text("2026-11-25T17:00:00".into())),
            ("FILTER", HeaderValue::Text("z".into())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let p = Provenance::from_cards(&cards).unwrap();
        assert_eq!(
            p.stamp,
            Stamp {
                software: "aster 0.1.0".into(),
                created: "2026-11-25T17:00:00".into()
            }
        );
        p
    }

    #[test]
    fn every_kind_reads_back_exactly() {
        let dir = std::env::temp_dir().join(format!("aster-calib-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = |k: f32| {
            Image::from_vec(5, 3, (0..15).map(|i| i as f32 * k + 0.125).collect()).unwrap()
        };
        let products = [
            CalibProduct::Image(CalibImage {
                image: img(1.5),
                variance: img(0.01),
                provenance: provenance(CalibType::Flat),
            }),
            CalibProduct::Cube(MonoFlatCube {
                wavelengths: vec![400.0, 700.5],
                planes: vec![img(1.0), img(2.0)],
                provenance: provenance(CalibType::MonoFlat),
            }),
            CalibProduct::Crosstalk(CrosstalkMatrix {
                amps: 2,
                coefficients: vec![0.0, 1.5e-4, 2.25e-5, 0.0],
                errors: vec![0.0, 1e-6, 2e-6, 0.0],
                provenance: provenance(CalibType::Crosstalk),
            }),
            CalibProduct::Defects(DefectMap {
                bits: Image::from_vec(4, 2, vec![0, 1, 2, 4, 0, 0, 3, 0]).unwrap(),
                provenance: provenance(CalibType::Defects),
            }),
        ];
        for (i, p) in products.iter().enumerate() {
            let path = dir.join(format!("{i}.fits"));
            write_calibration(&path, p).unwrap();
            assert_eq!(&read_calibration(&path).unwrap(), p);
        }
        // A flipped bit near the end (in the pixels) fails the checksum.
        let bytes = std::fs::read(dir.join("3.fits")).unwrap();
        let mut flipped = bytes.clone();
        let mid = flipped.len() - 100;
        flipped[mid] ^= 1;
        std::fs::write(dir.join("bad.fits"), &flipped).unwrap();
        let err = read_calibration(&dir.join("bad.fits")).unwrap_err();
        assert_eq!(err.step, "checksum", "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
