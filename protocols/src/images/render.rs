//! Quick-look renderings: an image plane as an 8-bit greyscale PNG or JPEG, binned to fit,
//! with an asinh (default), linear or log stretch about the sky level; `/preview/{id}`.
use aster_archive::exposure_file::read_exposure;
use aster_processing::image::Image;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::datalink::cuttable;
use super::{ImageServices, text_error};

/// Longest side of a preview, pixels.
const PREVIEW_SIZE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stretch {
    Asinh,
    Linear,
    Log,
}

impl Stretch {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "asinh" => Some(Self::Asinh),
            "linear" => Some(Self::Linear),
            "log" => Some(Self::Log),
            _ => None,
        }
    }
}

/// The median and a robust sigma (1.4826 x MAD) of the finite values.
fn sky_and_noise(v: &mut Vec<f32>) -> (f32, f32) {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return (0.0, 1.0);
    }
    let mid = v.len() / 2;
    let median = *v.select_nth_unstable_by(mid, f32::total_cmp).1;
    let mut dev: Vec<f32> = v.iter().map(|x| (x - median).abs()).collect();
    let mad = *dev.select_nth_unstable_by(mid, f32::total_cmp).1;
    (median, (1.4826 * mad).max(1e-12))
}

/// A quick-look encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Picture {
    Png,
    Jpeg,
}

impl Picture {
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
        }
    }
}

/// `image` as a PNG or JPEG (quality 90), each output pixel the mean of a bin of input
/// pixels so the longer side is at most `max_side`.
pub fn render(
    image: &Image<f32>,
    max_side: usize,
    stretch: Stretch,
    picture: Picture,
) -> Result<Vec<u8>, String> {
    let (w, h, grey) = stretched(image, max_side, stretch)?;
    let mut out = Vec::new();
    match picture {
        Picture::Png => {
            let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::Eight);
            let mut writer = enc.write_header().map_err(|e| e.to_string())?;
            writer.write_image_data(&grey).map_err(|e| e.to_string())?;
        }
        Picture::Jpeg => {
            let (w16, h16) = (
                u16::try_from(w).map_err(|_| "too wide for JPEG")?,
                u16::try_from(h).map_err(|_| "too tall for JPEG")?,
            );
            jpeg_encoder::Encoder::new(&mut out, 90)
                .encode(&grey, w16, h16, jpeg_encoder::ColorType::Luma)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(out)
}

/// The binned, stretched 8-bit pixels, top row first, with their width and height.
fn stretched(
    image: &Image<f32>,
    max_side: usize,
    stretch: Stretch,
) -> Result<(usize, usize, Vec<u8>), String> {
    let (w, h) = (image.width(), image.height());
    if w == 0 || h == 0 {
        return Err("an empty image".into());
    }
    let bin = w.max(h).div_ceil(max_side.max(1)).max(1);
    let (ow, oh) = (w.div_ceil(bin), h.div_ceil(bin));
    let mut binned = vec![0f32; ow * oh];
    for oy in 0..oh {
        for ox in 0..ow {
            let (mut sum, mut n) = (0f64, 0u32);
            for y in oy * bin..((oy + 1) * bin).min(h) {
                for &v in &image.row(y)[ox * bin..((ox + 1) * bin).min(w)] {
                    if v.is_finite() {
                        sum += f64::from(v);
                        n += 1;
                    }
                }
            }
            binned[oy * ow + ox] = if n > 0 {
                (sum / f64::from(n)) as f32
            } else {
                f32::NAN
            };
        }
    }
    let (sky, noise) = sky_and_noise(&mut binned.clone());
    // From one noise sigma below the sky up to the brightest binned pixel.
    let lo = sky - noise;
    let hi = binned
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::MIN, f32::max)
        .max(lo + noise);
    let map = |v: f32| -> u8 {
        if !v.is_finite() {
            return 0;
        }
        let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
        let s = match stretch {
            Stretch::Linear => t,
            // Soft above ~10 sigma: faint structure stays visible next to bright stars.
            Stretch::Asinh => {
                let a = (10.0 * noise / (hi - lo)).max(1e-6);
                (t / a).asinh() / (1.0 / a).asinh()
            }
            Stretch::Log => (1.0 + 1000.0 * t).ln() / 1001f32.ln(),
        };
        (s * 255.0).round() as u8
    };
    // PNG rows run top down; images have y up.
    let mut pixels = Vec::with_capacity(ow * oh);
    for oy in (0..oh).rev() {
        pixels.extend(binned[oy * ow..(oy + 1) * ow].iter().map(|&v| map(v)));
    }
    Ok((ow, oh, pixels))
}

#[derive(serde::Deserialize)]
pub(super) struct PreviewParams {
    stretch: Option<String>,
    size: Option<usize>,
    format: Option<String>,
}

/// `GET /preview/{id}[?stretch=asinh|linear|log&size=N&format=png|jpeg]`: a quick look
/// at a processed image.
pub(super) async fn preview(
    State(s): State<ImageServices>,
    Path(id): Path<String>,
    Query(p): Query<PreviewParams>,
) -> Response {
    let stretch = match p.stretch.as_deref().map(Stretch::parse) {
        None => Stretch::Asinh,
        Some(Some(st)) => st,
        Some(None) => {
            return text_error(
                StatusCode::BAD_REQUEST,
                "stretch: expected asinh, linear or log",
            );
        }
    };
    let picture = match p.format.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("png") | Some("image/png") => Picture::Png,
        Some("jpeg") | Some("jpg") | Some("image/jpeg") => Picture::Jpeg,
        Some(_) => return text_error(StatusCode::BAD_REQUEST, "format: expected png or jpeg"),
    };
    let size = p.size.unwrap_or(PREVIEW_SIZE);
    if !(16..=4096).contains(&size) {
        return text_error(StatusCode::BAD_REQUEST, "size: expected 16 to 4096 pixels");
    }
    let d = match s.dataset(&id).await {
        Ok(d) => d,
        Err(e) => return text_error(e.status(), e.message().to_string()),
    };
    if !cuttable(&d) {
        return text_error(
            StatusCode::BAD_REQUEST,
            format!(
                "{} is a {}: previews are made of processed images",
                d.id, d.dataset_type
            ),
        );
    }
    let path = match s.file_of(&d).await {
        Ok(p) => p,
        Err(e) => return text_error(e.status(), e.message().to_string()),
    };
    let png = tokio::task::spawn_blocking(move || {
        let e = read_exposure(&path).map_err(|e| e.to_string())?;
        render(e.image(), size, stretch, picture)
    })
    .await
    .expect("render task panicked");
    match png {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, picture.media_type()),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => text_error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pngs_have_the_binned_size_and_brighter_is_whiter() {
        let mut img = Image::filled(300, 200, 100.0f32);
        for (i, v) in img.data_mut().iter_mut().enumerate() {
            *v += ((i * 7919) % 13) as f32 - 6.0;
        }
        img.set(150, 100, 5000.0);
        let png = render(&img, 128, Stretch::Asinh, Picture::Png).unwrap();
        let jpeg = render(&img, 128, Stretch::Asinh, Picture::Jpeg).unwrap();
        assert!(jpeg.starts_with(&[0xFF, 0xD8]));
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (100, 67));
        // The bright pixel's bin (x 50, y 33 from the bottom) outshines the sky.
        let row = (67 - 1 - 33) as usize;
        assert!(buf[row * 100 + 50] > buf[0] + 50);
    }
}
