//! SODA 1.0 `{sync}` cutouts: one ID and one of CIRCLE, POLYGON or POS (BAND, TIME and POL
//! only decide whether the image is wanted at all); the smallest pixel box holding the
//! region, read from the file without reading the rest (tile-compressed planes are
//! decompressed only where needed), written as an exposure file (IMAGE, MASK, VARIANCE,
//! each with the WCS moved to the cutout) and streamed; or a PNG quick look. A region that
//! misses the image answers 204 No Content; errors are text starting with SODA's labels.
use std::f64::consts::PI;

use aster_adql::geometry::{SkyPosition, SkyRegion};
use aster_archive::exposure_file::{
    PixelBox, read_exposure_geometry, read_exposure_region, write_exposure,
};
use aster_processing::wcs::{SkyCoord, TanSipWcs};
use axum::body::Body;
use axum::extract::{Request, State};
use std::path::PathBuf;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::datalink::cuttable;
use super::files::stream_from;
use super::params::{Interval, Params, interval, shape_param};
use super::render::{Picture, Stretch, render};
use super::sia::footprint_meets;
use super::{ImageServices, read_params, text_error};

/// Points along the boundary of a region (and its vertices), for its pixel bounding box.
fn boundary(region: &SkyRegion) -> Vec<SkyPosition> {
    match region {
        SkyRegion::Circle(c) => {
            let (ra0, dec0) = (c.center.ra_rad(), c.center.dec_rad());
            let r = c.radius.to_radians();
            (0..360)
                .filter_map(|i| {
                    // The point at distance r and position angle i degrees.
                    let pa = f64::from(i) * PI / 180.0;
                    let dec = (dec0.sin() * r.cos() + dec0.cos() * r.sin() * pa.cos()).asin();
                    let ra = ra0
                        + (pa.sin() * r.sin() * dec0.cos()).atan2(r.cos() - dec0.sin() * dec.sin());
                    SkyPosition::new(ra.to_degrees(), dec.to_degrees())
                })
                .collect()
        }
        SkyRegion::Polygon(p) => {
            let v = p.vertices();
            let mut out = Vec::new();
            for i in 0..v.len() {
                let (a, b) = (v[i], v[(i + 1) % v.len()]);
                for k in 0..64 {
                    if let Some(q) = slerp(a, b, f64::from(k) / 64.0) {
                        out.push(q);
                    }
                }
            }
            out
        }
    }
}

/// The point a fraction t of the way along the great circle from a to b.
fn slerp(a: SkyPosition, b: SkyPosition, t: f64) -> Option<SkyPosition> {
    let unit = |p: SkyPosition| {
        let (sa, ca) = p.ra_rad().sin_cos();
        let (sd, cd) = p.dec_rad().sin_cos();
        [cd * ca, cd * sa, sd]
    };
    let (u, v) = (unit(a), unit(b));
    let dot = (u[0] * v[0] + u[1] * v[1] + u[2] * v[2]).clamp(-1.0, 1.0);
    let omega = dot.acos();
    let (wa, wb) = if omega < 1e-12 {
        (1.0 - t, t)
    } else {
        (
            ((1.0 - t) * omega).sin() / omega.sin(),
            (t * omega).sin() / omega.sin(),
        )
    };
    let p = [0, 1, 2].map(|k| wa * u[k] + wb * v[k]);
    let n = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
    SkyPosition::new(
        p[1].atan2(p[0]).to_degrees(),
        (p[2] / n).asin().to_degrees(),
    )
}

/// The pixels of a `w` x `h` image holding the region: the bounding box of its boundary
/// in pixel coordinates, clipped to the image; the whole image when the boundary cannot
/// be projected (a region reaching beyond the image's hemisphere). None when empty.
fn pixel_box(region: &SkyRegion, wcs: &TanSipWcs, w: usize, h: usize) -> Option<PixelBox> {
    let mut lo = (f64::INFINITY, f64::INFINITY);
    let mut hi = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for p in boundary(region) {
        let Some(sky) = SkyCoord::new(p.ra(), p.dec()) else {
            continue;
        };
        match wcs.sky_to_pixel(sky) {
            Ok(px) if px.x.is_finite() && px.y.is_finite() => {
                lo = (lo.0.min(px.x), lo.1.min(px.y));
                hi = (hi.0.max(px.x), hi.1.max(px.y));
            }
            _ => {
                return Some(PixelBox { x: 0..w, y: 0..h });
            }
        }
    }
    // Pixel i covers [i - 0.5, i + 0.5).
    let clip = |v: f64, n: usize| (v + 0.5).floor().clamp(0.0, n as f64) as usize;
    let x = clip(lo.0, w)..clip(hi.0, w - 1).saturating_add(1).min(w);
    let y = clip(lo.1, h)..clip(hi.1, h - 1).saturating_add(1).min(h);
    (!x.is_empty() && !y.is_empty() && hi.0 >= -0.5 && hi.1 >= -0.5).then_some(PixelBox { x, y })
}

#[derive(Debug, Clone, Copy)]
enum Output {
    Fits,
    Picture(Picture),
}

/// A SODA request: the IDs (one for sync; each a cutout for async) and what to cut.
#[derive(Debug, Clone)]
pub(super) struct SodaRequest {
    ids: Vec<String>,
    region: Option<SkyRegion>,
    filters: Vec<(&'static str, Interval)>,
    pol: bool,
    output: Output,
}

/// A refusal: the status and the text (which starts with SODA's label).
type Refusal = (StatusCode, String);

fn usage_error(m: impl std::fmt::Display) -> Refusal {
    (StatusCode::BAD_REQUEST, format!("UsageError: {m}"))
}

impl SodaRequest {
    pub(super) fn parse(params: &Params, many_ids: bool) -> Result<Self, Refusal> {
        let multi = |m: &str| {
            (
                StatusCode::BAD_REQUEST,
                format!("MultiValuedParamNotSupported: {m}"),
            )
        };
        let ids: Vec<String> = params.all("ID").into_iter().map(str::to_string).collect();
        match ids.len() {
            0 => return Err(usage_error("ID is required")),
            1 => {}
            _ if many_ids => {}
            _ => {
                return Err(multi(
                    "one ID per request (the async service takes several)",
                ));
            }
        }
        let mut shapes: Vec<(&str, &str)> = Vec::new();
        for name in ["CIRCLE", "POLYGON", "POS"] {
            shapes.extend(params.all(name).into_iter().map(|v| (name, v)));
        }
        if shapes.len() > 1 {
            return Err(multi("one of CIRCLE, POLYGON or POS, once"));
        }
        let region = shapes
            .first()
            .map(|(n, v)| shape_param(n, v))
            .transpose()
            .map_err(usage_error)?;
        let mut filters = Vec::new();
        for name in ["BAND", "TIME"] {
            match params.single(name) {
                Err(_) => return Err(multi(&format!("{name} once"))),
                Ok(Some(v)) => filters.push((name, interval(name, v).map_err(usage_error)?)),
                Ok(None) => {}
            }
        }
        let output = match params.single("RESPONSEFORMAT").map_err(usage_error)? {
            None => Output::Fits,
            Some(f) => match f
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
                .as_str()
            {
                "application/fits" | "image/fits" | "fits" => Output::Fits,
                "image/png" | "png" => Output::Picture(Picture::Png),
                "image/jpeg" | "jpeg" | "jpg" => Output::Picture(Picture::Jpeg),
                other => {
                    return Err(usage_error(format!(
                        "RESPONSEFORMAT {other}: application/fits, image/png or image/jpeg"
                    )));
                }
            },
        };
        Ok(Self {
            ids,
            region,
            filters,
            pol: !params.all("POL").is_empty(),
            output,
        })
    }

    pub(super) fn ids(&self) -> &[String] {
        &self.ids
    }
}

/// What one cutout gives.
pub(super) enum Cutout {
    /// The region, band, time or polarization misses the image.
    NoOverlap,
    /// An exposure file, unlinked scratch file open for reading.
    Fits(std::fs::File),
    /// A quick look.
    Picture(Picture, Vec<u8>),
}

/// Cuts dataset `id` as `req` asks, for `user` (None: anonymous).
pub(super) async fn cut(
    s: &ImageServices,
    id: &str,
    req: &SodaRequest,
    user: Option<&str>,
) -> Result<Cutout, Refusal> {
    if id.starts_with("vos://") {
        return cut_private(s, id, req, user).await;
    }
    let d = s
        .dataset(id)
        .await
        .map_err(|e| (e.status(), format!("Error: {}", e.message())))?;
    if !cuttable(&d) {
        return Err(usage_error(format!(
            "{} is a {}: SODA cuts processed images (calexps, difference images, coadds); fetch the whole file from DataLink's #this link",
            d.id, d.dataset_type
        )));
    }
    let obs = d.observation.clone();
    for (name, i) in &req.filters {
        let range = obs.as_ref().and_then(|o| match *name {
            "BAND" => o.em_min.zip(o.em_max),
            _ => Some((o.t_min, o.t_max)),
        });
        if !range.is_some_and(|(a, b)| i.overlaps(a, b)) {
            return Ok(Cutout::NoOverlap);
        }
    }
    // The images have no polarization axis: POL selects nothing of them.
    if req.pol {
        return Ok(Cutout::NoOverlap);
    }
    if let Some(r) = &req.region
        && !footprint_meets(&d, r)
    {
        return Ok(Cutout::NoOverlap);
    }
    let path = s
        .file_of(&d)
        .await
        .map_err(|e| (e.status(), format!("Error: {}", e.message())))?;
    cut_file(path, req).await
}

/// Cuts a user's own image (an exposure file in VOSpace), if `user` may read it. Such files
/// have no registry record: only the region (from the file's WCS) selects.
async fn cut_private(
    s: &ImageServices,
    id: &str,
    req: &SodaRequest,
    user: Option<&str>,
) -> Result<Cutout, Refusal> {
    let Some(private) = &s.private else {
        return Err(usage_error(format!(
            "{id}: this archive keeps no users' images"
        )));
    };
    if !req.filters.is_empty() || req.pol {
        return Err(usage_error(
            "BAND, TIME and POL select registry images only: a user's image is cut by region",
        ));
    }
    let file = private
        .local_file(id, user)
        .await
        .map_err(|(status, m)| (status, format!("Error: {m}")))?;
    let path = file.path.clone();
    let cut = cut_file(path, req).await;
    drop(file);
    cut
}

/// Cuts the exposure file at `path` to the request's region.
async fn cut_file(path: PathBuf, req: &SodaRequest) -> Result<Cutout, Refusal> {
    let (region, output) = (req.region.clone(), req.output);
    tokio::task::spawn_blocking(move || -> Result<Cutout, String> {
        let (w, h, wcs) = read_exposure_geometry(&path).map_err(|e| e.to_string())?;
        let pixels = match (&region, &wcs) {
            (None, _) => PixelBox { x: 0..w, y: 0..h },
            (Some(r), Some(wcs)) => match pixel_box(r, wcs, w, h) {
                Some(b) => b,
                None => return Ok(Cutout::NoOverlap),
            },
            (Some(_), None) => return Err("the image has no WCS".into()),
        };
        let cut = read_exposure_region(&path, &pixels).map_err(|e| e.to_string())?;
        match output {
            Output::Picture(p) => Ok(Cutout::Picture(
                p,
                render(cut.image(), 2048, Stretch::Asinh, p)?,
            )),
            Output::Fits => {
                // cfitsio writes files: the cutout goes to a scratch file that is unlinked
                // once open, then streamed from the open handle.
                let tmp =
                    std::env::temp_dir().join(format!("aster-soda-{}.fits", uuid::Uuid::new_v4()));
                write_exposure(&tmp, &cut).map_err(|e| e.to_string())?;
                let file = std::fs::File::open(&tmp).map_err(|e| e.to_string());
                let _ = std::fs::remove_file(&tmp);
                Ok(Cutout::Fits(file?))
            }
        }
    })
    .await
    .expect("cutout task panicked")
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("Error: {e}")))
}

pub(super) async fn sync(
    State(s): State<ImageServices>,
    who: Option<axum::Extension<crate::auth::Principal>>,
    req: Request,
) -> Response {
    let params = match read_params(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let req = match SodaRequest::parse(&params, false) {
        Ok(r) => r,
        Err((status, m)) => return text_error(status, m),
    };
    let name = aster_archive::registry::id_from_did(&req.ids[0]).to_string();
    let user = who.map(|w| w.0.user.to_string());
    match cut(&s, &req.ids[0], &req, user.as_deref()).await {
        Err((status, m)) => text_error(status, m),
        Ok(Cutout::NoOverlap) => StatusCode::NO_CONTENT.into_response(),
        Ok(Cutout::Picture(p, bytes)) => (
            [
                (header::CONTENT_TYPE, p.media_type().to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("inline; filename=\"{name}.cutout.{}\"", p.extension()),
                ),
            ],
            Body::from(bytes),
        )
            .into_response(),
        Ok(Cutout::Fits(file)) => {
            let len = match file.metadata() {
                Ok(m) => m.len(),
                Err(e) => {
                    return text_error(StatusCode::INTERNAL_SERVER_ERROR, format!("Error: {e}"));
                }
            };
            stream_from(
                Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/fits")
                    .header(
                        header::CONTENT_DISPOSITION,
                        format!("inline; filename=\"{name}.cutout.fits\""),
                    ),
                tokio::fs::File::from_std(file),
                len,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aster_adql::geometry::Circle;
    use aster_processing::wcs::PixelPosition;

    #[test]
    fn a_circle_gives_the_box_that_holds_it() {
        let s = 0.2 / 3600.0;
        let wcs = TanSipWcs::new(
            PixelPosition {
                x: 1000.0,
                y: 1000.0,
            },
            SkyCoord::new(62.0, -37.0).unwrap(),
            [[-s, 0.0], [0.0, s]],
            None,
        )
        .unwrap();
        // 20 arcsec = 100 pixels about pixel (500, 700).
        let c = wcs.pixel_to_sky(PixelPosition { x: 500.0, y: 700.0 });
        let circle = SkyRegion::Circle(
            Circle::new(SkyPosition::new(c.ra(), c.dec()).unwrap(), 20.0 / 3600.0).unwrap(),
        );
        let b = pixel_box(&circle, &wcs, 2000, 2000).unwrap();
        assert!(
            (399..=400).contains(&b.x.start) && (601..=602).contains(&b.x.end),
            "{b:?}"
        );
        assert!(
            (599..=600).contains(&b.y.start) && (801..=802).contains(&b.y.end),
            "{b:?}"
        );
        // Clipped at the edge.
        let c = wcs.pixel_to_sky(PixelPosition { x: 10.0, y: 1990.0 });
        let edge = SkyRegion::Circle(
            Circle::new(SkyPosition::new(c.ra(), c.dec()).unwrap(), 20.0 / 3600.0).unwrap(),
        );
        let b = pixel_box(&edge, &wcs, 2000, 2000).unwrap();
        assert_eq!((b.x.start, b.y.end), (0, 2000));
        // Off the image.
        let c = wcs.pixel_to_sky(PixelPosition {
            x: -500.0,
            y: 100.0,
        });
        let off = SkyRegion::Circle(
            Circle::new(SkyPosition::new(c.ra(), c.dec()).unwrap(), 20.0 / 3600.0).unwrap(),
        );
        assert!(pixel_box(&off, &wcs, 2000, 2000).is_none());
    }
}
