//! HiPS trees on disk (IVOA HiPS 1.0) under `<data dir>/hips/<id>/`: tiles at
//! `NorderK/DirD/NpixN.{fits,png,jpg,tsv}`, `Norder3/Allsky.*`, `properties`, `Moc.fits`
//! and, for catalogs, `metadata.xml`. FITS tiles are single-HDU BITPIX -32 images with NaN
//! for no data, rows bottom up; PNG tiles are grey with transparency (or RGB with it) and
//! JPEG tiles grey (or RGB) on black, rows top down. Every file is written beside its name
//! and renamed into place, so a reader never sees half a tile.
pub mod properties;

use std::io::Write;
use std::path::{Path, PathBuf};

use aster_processing::hips::Tile;
use fitsio::images::{ImageDescription, ImageType};

use crate::fits_io::{FitsFileError, write_atomically_with, write_checksum};
pub use properties::{Properties, PropertiesError, hips_list};

#[derive(Debug, thiserror::Error)]
pub enum HipsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Fits(#[from] FitsFileError),
    #[error("{0}")]
    Encode(String),
    #[error(transparent)]
    Properties(#[from] PropertiesError),
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, HipsError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HipsError + '_ {
    move |source| HipsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the HiPS of a data directory live.
pub fn hips_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("hips")
}

/// Whether a HiPS ID is safe as a directory and URL segment: letters, digits, '-', '_'.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// Tile file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TileFormat {
    Fits,
    Png,
    Jpeg,
}

impl TileFormat {
    /// The name in `hips_tile_format`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fits => "fits",
            Self::Png => "png",
            Self::Jpeg => "jpeg",
        }
    }
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Fits => "fits",
            Self::Png => "png",
            Self::Jpeg => "jpg",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Fits, Self::Png, Self::Jpeg]
            .into_iter()
            .find(|f| f.name() == s || f.extension() == s)
    }
}

/// Pixels of a picture tile, display order: grey levels or colours, None for no data.
pub enum Pixels<'a> {
    Grey(&'a [Option<u8>]),
    Rgb(&'a [Option<[u8; 3]>]),
}

/// One HiPS directory.
#[derive(Debug, Clone)]
pub struct HipsTree {
    root: PathBuf,
}

impl HipsTree {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn tile_path(&self, tile: Tile, format: TileFormat) -> PathBuf {
        self.root.join(tile.path(format.extension()))
    }

    /// Writes a FITS tile of `width` x `width` values given top row first.
    pub fn write_fits_tile(&self, tile: Tile, width: usize, pixels: &[f32]) -> Result<()> {
        self.write_fits(
            &self.tile_path(tile, TileFormat::Fits),
            width,
            width,
            pixels,
        )
    }

    /// The values of a FITS tile, top row first; None when there is no such tile.
    pub fn read_fits_tile(&self, tile: Tile) -> Result<Option<Vec<f32>>> {
        Ok(self
            .read_fits(&self.tile_path(tile, TileFormat::Fits))?
            .map(|(_, _, px)| px))
    }

    /// `Norder<order>/Allsky.fits`: its width, height and values, top row first.
    pub fn read_allsky_fits(&self, order: u8) -> Result<Option<(usize, usize, Vec<f32>)>> {
        self.read_fits(&self.root.join(format!("Norder{order}/Allsky.fits")))
    }

    fn read_fits(&self, path: &Path) -> Result<Option<(usize, usize, Vec<f32>)>> {
        if !path.exists() {
            return Ok(None);
        }
        let fail = |e: &dyn std::fmt::Display| FitsFileError::new(path, "tile", e);
        let mut f = fitsio::FitsFile::open(path).map_err(|e| fail(&e))?;
        let hdu = f.primary_hdu().map_err(|e| fail(&e))?;
        let (w, h) = match &hdu.info {
            fitsio::hdu::HduInfo::ImageInfo { shape, .. } if shape.len() == 2 => {
                (shape[1], shape[0])
            }
            _ => return Err(fail(&"not a two-dimensional image").into()),
        };
        let stored: Vec<f32> = hdu.read_image(&mut f).map_err(|e| fail(&e))?;
        let mut out = Vec::with_capacity(w * h);
        for r in (0..h).rev() {
            out.extend_from_slice(&stored[r * w..(r + 1) * w]);
        }
        Ok(Some((w, h, out)))
    }

    /// Removes a tile's files in the given formats, where they exist.
    pub fn remove_tile(&self, tile: Tile, formats: &[TileFormat]) -> Result<()> {
        for f in formats {
            let path = self.tile_path(tile, *f);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&path)(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes a PNG or JPEG tile.
    pub fn write_picture_tile(
        &self,
        tile: Tile,
        width: usize,
        pixels: Pixels<'_>,
        format: TileFormat,
    ) -> Result<()> {
        self.write_picture(&self.tile_path(tile, format), width, width, pixels, format)
    }

    /// Writes `Norder<order>/Allsky.fits`, `width` x `height` values top row first.
    pub fn write_allsky_fits(
        &self,
        order: u8,
        width: usize,
        height: usize,
        px: &[f32],
    ) -> Result<()> {
        let path = self.root.join(format!("Norder{order}/Allsky.fits"));
        self.write_fits(&path, width, height, px)
    }

    /// Writes `Norder<order>/Allsky.png` or `.jpg`.
    pub fn write_allsky_picture(
        &self,
        order: u8,
        width: usize,
        height: usize,
        pixels: Pixels<'_>,
        format: TileFormat,
    ) -> Result<()> {
        let path = self
            .root
            .join(format!("Norder{order}/Allsky.{}", format.extension()));
        self.write_picture(&path, width, height, pixels, format)
    }

    /// The tiles of `order` present in `format`, sorted.
    pub fn tiles(&self, order: u8, format: TileFormat) -> Result<Vec<Tile>> {
        let dir = self.root.join(format!("Norder{order}"));
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(out);
        };
        let suffix = format!(".{}", format.extension());
        for sub in entries {
            let sub = sub.map_err(io(&dir))?.path();
            if !sub.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&sub).map_err(io(&sub))? {
                let name = f.map_err(io(&sub))?.file_name();
                let name = name.to_string_lossy();
                if let Some(n) = name
                    .strip_prefix("Npix")
                    .and_then(|r| r.strip_suffix(&suffix))
                    .and_then(|n| n.parse::<u64>().ok())
                    .and_then(|n| Tile::new(order, n))
                {
                    out.push(n);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn write_properties(&self, p: &Properties) -> Result<()> {
        p.validate()?;
        self.write_file(&self.root.join("properties"), p.to_string().as_bytes())
    }

    pub fn read_properties(&self) -> Result<Option<Properties>> {
        let path = self.root.join("properties");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(Properties::parse(&text)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Writes `Moc.fits`: the coverage of the given cells of `order`.
    pub fn write_moc(&self, moc: &crate::registry::coverage::Moc) -> Result<()> {
        self.write_file(&self.root.join("Moc.fits"), &moc.to_fits())
    }

    /// Writes a file of the tree (e.g. `metadata.xml`, a catalog tile) atomically.
    pub fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io(path))
    }

    fn write_fits(&self, path: &Path, w: usize, h: usize, px: &[f32]) -> Result<()> {
        if px.len() != w * h {
            return Err(HipsError::Invalid(format!(
                "{} values for {w} x {h}",
                px.len()
            )));
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut stored = Vec::with_capacity(w * h);
        for r in (0..h).rev() {
            stored.extend_from_slice(&px[r * w..(r + 1) * w]);
        }
        let description = ImageDescription {
            data_type: ImageType::Float,
            dimensions: &[h, w],
        };
        let fail = |e: &dyn std::fmt::Display| FitsFileError::new(path, "tile", e);
        write_atomically_with(path, Some(&description), |f| {
            let hdu = f.primary_hdu().map_err(|e| fail(&e))?;
            hdu.write_image(f, &stored).map_err(|e| fail(&e))?;
            write_checksum(f).map_err(|e| fail(&e))
        })?;
        Ok(())
    }

    fn write_picture(
        &self,
        path: &Path,
        w: usize,
        h: usize,
        pixels: Pixels<'_>,
        format: TileFormat,
    ) -> Result<()> {
        let bytes = encode(w, h, pixels, format)?;
        self.write_file(path, &bytes)
    }
}

/// A picture as PNG (transparent where there is no data) or JPEG (black there).
pub fn encode(w: usize, h: usize, pixels: Pixels<'_>, format: TileFormat) -> Result<Vec<u8>> {
    let n = match &pixels {
        Pixels::Grey(p) => p.len(),
        Pixels::Rgb(p) => p.len(),
    };
    if n != w * h {
        return Err(HipsError::Invalid(format!("{n} pixels for {w} x {h}")));
    }
    let enc = |e: &dyn std::fmt::Display| HipsError::Encode(e.to_string());
    let mut out = Vec::new();
    match format {
        TileFormat::Png => {
            let (colour, data): (png::ColorType, Vec<u8>) = match pixels {
                Pixels::Grey(p) => (
                    png::ColorType::GrayscaleAlpha,
                    p.iter()
                        .flat_map(|v| v.map_or([0, 0], |g| [g, 255]))
                        .collect(),
                ),
                Pixels::Rgb(p) => (
                    png::ColorType::Rgba,
                    p.iter()
                        .flat_map(|v| v.map_or([0; 4], |[r, g, b]| [r, g, b, 255]))
                        .collect(),
                ),
            };
            let mut e = png::Encoder::new(&mut out, w as u32, h as u32);
            e.set_color(colour);
            e.set_depth(png::BitDepth::Eight);
            e.set_compression(png::Compression::Fast);
            let mut writer = e.write_header().map_err(|x| enc(&x))?;
            writer.write_image_data(&data).map_err(|x| enc(&x))?;
        }
        TileFormat::Jpeg => {
            let (w16, h16) = (
                u16::try_from(w).map_err(|_| HipsError::Invalid("too wide for JPEG".into()))?,
                u16::try_from(h).map_err(|_| HipsError::Invalid("too tall for JPEG".into()))?,
            );
            let encoder = jpeg_encoder::Encoder::new(&mut out, 90);
            match pixels {
                Pixels::Grey(p) => {
                    let data: Vec<u8> = p.iter().map(|v| v.unwrap_or(0)).collect();
                    encoder.encode(&data, w16, h16, jpeg_encoder::ColorType::Luma)
                }
                Pixels::Rgb(p) => {
                    let data: Vec<u8> = p.iter().flat_map(|v| v.unwrap_or([0; 3])).collect();
                    encoder.encode(&data, w16, h16, jpeg_encoder::ColorType::Rgb)
                }
            }
            .map_err(|x| enc(&x))?;
        }
        TileFormat::Fits => {
            return Err(HipsError::Invalid(
                "FITS tiles hold values, not pictures".into(),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_tiles_read_back_in_display_order_and_are_stored_bottom_up() {
        let dir = std::env::temp_dir().join(format!("aster-hips-{}", uuid::Uuid::new_v4()));
        let tree = HipsTree::new(&dir);
        let tile = Tile::new(6, 10_302).unwrap();
        let px: Vec<f32> = (0..16).map(|v| v as f32).collect();
        tree.write_fits_tile(tile, 4, &px).unwrap();
        let path = dir.join("Norder6/Dir10000/Npix10302.fits");
        assert!(path.exists());
        assert_eq!(tree.read_fits_tile(tile).unwrap().unwrap(), px);
        // FITS row 1 (stored first) is the bottom row of the picture.
        let mut f = fitsio::FitsFile::open(&path).unwrap();
        let hdu = f.primary_hdu().unwrap();
        let stored: Vec<f32> = hdu.read_image(&mut f).unwrap();
        assert_eq!(&stored[..4], &[12.0, 13.0, 14.0, 15.0]);
        assert_eq!(tree.tiles(6, TileFormat::Fits).unwrap(), vec![tile]);
        assert!(
            tree.read_fits_tile(Tile::new(6, 1).unwrap())
                .unwrap()
                .is_none()
        );
        let grey: Vec<Option<u8>> = (0..16).map(|v| (v != 0).then_some(v as u8 * 10)).collect();
        tree.write_picture_tile(tile, 4, Pixels::Grey(&grey), TileFormat::Png)
            .unwrap();
        let png = std::fs::read(dir.join("Norder6/Dir10000/Npix10302.png")).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut buf).unwrap();
        // Top-left has no data: transparent; the next pixel is opaque grey 10.
        assert_eq!(&buf[..4], &[0, 0, 10, 255]);
        tree.write_picture_tile(tile, 4, Pixels::Grey(&grey), TileFormat::Jpeg)
            .unwrap();
        assert!(dir.join("Norder6/Dir10000/Npix10302.jpg").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ids_are_safe_path_segments() {
        assert!(valid_id("deep-r_2"));
        for bad in ["", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad}");
        }
        assert_eq!(TileFormat::parse("jpg"), Some(TileFormat::Jpeg));
        assert_eq!(TileFormat::parse("jpeg").unwrap().extension(), "jpg");
    }
}
