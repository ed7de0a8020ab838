//! HiPS serving (IVOA HiPS 1.0, section 6): `/hips/list` (and `/hipslist`, the name HiPS
//! nodes conventionally use) lists every HiPS of the archive with its service URL;
//! `/hips/{id}/{file}` serves the files of one tree (`properties`, `Moc.fits`,
//! `metadata.xml`, `NorderK/Allsky.*`, `NorderK/DirD/NpixN.*`) with their media type, an
//! ETag and Last-Modified (answering conditional requests with 304) and cache lifetimes,
//! so Aladin Desktop, Aladin Lite and browsers cache tiles; CORS comes from the server.
//! Nothing outside a tree is reachable: paths are parsed, not joined.
use std::path::PathBuf;
use std::sync::Arc;

use aster_archive::hips::{HipsTree, Properties, hips_dir, hips_list, valid_id};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Where the trees are and how the archive is reached.
#[derive(Debug, Clone)]
pub struct HipsService {
    root: PathBuf,
    public_url: Option<String>,
}

impl HipsService {
    pub fn new(data_dir: &std::path::Path, public_url: Option<String>) -> Self {
        Self {
            root: hips_dir(data_dir),
            public_url,
        }
    }

    /// Every HiPS with valid properties, by ID.
    fn list(&self) -> Vec<(String, Properties)> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut out: Vec<(String, Properties)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let id = e.file_name().to_string_lossy().into_owned();
                let props = self.properties(&id)?;
                Some((id, props))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The valid properties of one HiPS, if it exists.
    fn properties(&self, id: &str) -> Option<Properties> {
        if !valid_id(id) {
            return None;
        }
        let props = HipsTree::new(self.root.join(id)).read_properties().ok()??;
        props.validate().ok()?;
        Some(props)
    }
}

pub fn router(service: HipsService) -> Router {
    Router::new()
        .route("/hips", get(list))
        .route("/hips/", get(list))
        .route("/hips/list", get(list))
        .route("/hipslist", get(list))
        .route("/hips/{id}", get(tree_root))
        .route("/hips/{id}/", get(tree_root))
        .route("/hips/{id}/render", get(render))
        .route("/hips/{id}/{*file}", get(file))
        .with_state(Arc::new(service))
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{what}\n"),
    )
        .into_response()
}

/// `GET /hips/list`: the HiPS list of this node.
async fn list(State(s): State<Arc<HipsService>>, headers: HeaderMap) -> Response {
    let base = crate::request_base(s.public_url.as_deref(), &headers);
    let entries: Vec<(Properties, String)> = s
        .list()
        .into_iter()
        .map(|(id, p)| (p, format!("{base}/hips/{id}")))
        .collect();
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        hips_list(&entries),
    )
        .into_response()
}

/// `GET /hips/{id}/`: what the HiPS is and where its files are, for a person.
async fn tree_root(State(s): State<Arc<HipsService>>, Path(id): Path<String>) -> Response {
    let Some(props) = s.properties(&id) else {
        return not_found(&format!("no HiPS {id}: /hips/list lists them"));
    };
    let esc = crate::xml::escape;
    let rows: String = props
        .entries()
        .iter()
        .map(|(k, v)| format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v)))
        .collect();
    let title = esc(props.get("obs_title").unwrap_or(&id));
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>A HiPS (IVOA HiPS 1.0): open this URL in Aladin, or \
         see it in the portal's sky view. Files: <a href=\"properties\">properties</a>, \
         <a href=\"Moc.fits\">Moc.fits</a>.</p><table>{rows}</table></body></html>"
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// A file of a tree that HiPS defines, or None.
fn hips_file(path: &str) -> Option<(&'static str, &'static str)> {
    const TILE_TYPES: [(&str, &str); 4] = [
        ("fits", "application/fits"),
        ("png", "image/png"),
        ("jpg", "image/jpeg"),
        ("tsv", "text/tab-separated-values; charset=utf-8"),
    ];
    let long = "public, max-age=86400";
    match path {
        "properties" => return Some(("text/plain; charset=utf-8", "public, max-age=60")),
        "Moc.fits" => return Some(("application/fits", "public, max-age=60")),
        "metadata.xml" | "Metadata.xml" => return Some(("application/x-votable+xml", long)),
        _ => {}
    }
    let parts: Vec<&str> = path.split('/').collect();
    let order: u8 = parts.first()?.strip_prefix("Norder")?.parse().ok()?;
    let (name, ext) = parts.last()?.rsplit_once('.')?;
    let media = TILE_TYPES.iter().find(|(e, _)| *e == ext)?.1;
    match parts.as_slice() {
        [_, _] if name == "Allsky" && order <= 3 => Some((media, "public, max-age=3600")),
        [_, dir, _] => {
            let npix: u64 = name.strip_prefix("Npix")?.parse().ok()?;
            let d: u64 = dir.strip_prefix("Dir")?.parse().ok()?;
            // Canonical names only: no leading zeros, the right directory.
            (d == npix / 10_000 * 10_000
                && format!("Npix{npix}") == name
                && format!("Dir{d}") == *dir
                && format!("Norder{order}") == parts[0]
                && aster_processing::hips::Tile::new(order, npix).is_some())
            .then_some((media, long))
        }
        _ => None,
    }
}

/// `GET /hips/{id}/{file}`.
async fn file(
    State(s): State<Arc<HipsService>>,
    Path((id, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !valid_id(&id) {
        return not_found(&format!("no HiPS {id}"));
    }
    let Some((media, cache)) = hips_file(&path) else {
        return not_found(&format!("{path} is not a file of a HiPS"));
    };
    // The standard names the catalog metadata `metadata.xml`; Aladin asks for `Metadata.xml`.
    let path = if path == "Metadata.xml" {
        "metadata.xml".to_string()
    } else {
        path
    };
    let full = s.root.join(&id).join(&path);
    let file = match tokio::fs::File::open(&full).await {
        Ok(f) => f,
        Err(_) if !s.root.join(&id).join("properties").exists() => {
            return not_found(&format!("no HiPS {id}: /hips/list lists them"));
        }
        Err(_) => return not_found(&format!("HiPS {id} has no {path}")),
    };
    let meta = match file.metadata().await {
        Ok(m) => m,
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("{path}: {e}\n")).into_response();
        }
    };
    let modified = meta.modified().ok();
    let stamp = modified
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    // A tile is rewritten (renamed into place) whenever it changes: size and time name it.
    let etag = format!("\"{:x}-{:x}\"", meta.len(), stamp);
    let last_modified = modified.map(httpdate);
    let mut h = vec![
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, cache.to_string()),
    ];
    if let Some(lm) = &last_modified {
        h.push((header::LAST_MODIFIED, lm.clone()));
    }
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let unmodified = headers.get(header::IF_NONE_MATCH).is_none()
        && headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .zip(last_modified.as_deref())
            .is_some_and(|(since, lm)| since == lm);
    let mut resp = if matches || unmodified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        crate::images::files::stream_from(
            Response::builder().header(header::CONTENT_TYPE, media),
            file,
            meta.len(),
        )
    };
    for (k, v) in h {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

#[derive(serde::Deserialize)]
struct RenderParams {
    ra: Option<String>,
    dec: Option<String>,
    fov: Option<String>,
    width: Option<String>,
    height: Option<String>,
    format: Option<String>,
}

const MAX_RENDER_SIDE: usize = 4000;

fn bad_request(msg: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{msg}\n"),
    )
        .into_response()
}

/// `GET /hips/{id}/render?ra=&dec=&fov=[&width=800&height=600&format=jpeg|png|html]`: a
/// picture of any region (DMS-REQ-0103), gnomonic, north up, `fov` degrees across, drawn
/// from the HiPS's FITS tiles at the order matching its pixels: grey through the HiPS's cut
/// and stretch, or, for a colour HiPS, the Lupton composite of its bands. The caption, built
/// from the HiPS's metadata, comes as `X-Caption`, or with the picture in an HTML figure.
async fn render(
    State(s): State<Arc<HipsService>>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<RenderParams>,
) -> Response {
    let Some(props) = s.properties(&id) else {
        return not_found(&format!("no HiPS {id}: /hips/list lists them"));
    };
    let (ra, dec, fov, w, h) = match render_region(&q) {
        Ok(v) => v,
        Err(msg) => return bad_request(&msg),
    };
    let format = q.format.as_deref().unwrap_or("jpeg").to_ascii_lowercase();
    let caption = caption(&props, ra, dec, fov, w, h);
    if format == "html" {
        let src = format!("render?ra={ra}&dec={dec}&fov={fov}&width={w}&height={h}&format=jpeg");
        let esc = crate::xml::escape;
        let html = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
             <body><figure><img src=\"{src}\" width=\"{w}\" height=\"{h}\" alt=\"{t}\">\
             <figcaption>{c}</figcaption></figure></body></html>",
            t = esc(props.get("obs_title").unwrap_or(&id)),
            src = esc(&src),
            c = esc(&caption)
        );
        return ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    }
    let picture = match format.as_str() {
        "jpeg" | "jpg" | "image/jpeg" => aster_archive::hips::TileFormat::Jpeg,
        "png" | "image/png" => aster_archive::hips::TileFormat::Png,
        f => return bad_request(&format!("format={f}: jpeg, png or html")),
    };
    if props.get("dataproduct_type") != Some("image") {
        return bad_request(&format!("{id} is a catalog: it has no pixels to draw"));
    }
    let root = s.root.clone();
    let drawn =
        tokio::task::spawn_blocking(move || draw(&root, &id, &props, ra, dec, fov, w, h, picture))
            .await;
    match drawn {
        Ok(Ok(bytes)) => {
            let mut r = (
                [(
                    header::CONTENT_TYPE,
                    if picture == aster_archive::hips::TileFormat::Png {
                        "image/png"
                    } else {
                        "image/jpeg"
                    },
                )],
                bytes,
            )
                .into_response();
            // Header values are ASCII: the caption keeps its words, loses any other bytes.
            let ascii: String = caption
                .chars()
                .filter(|c| c.is_ascii() && !c.is_ascii_control())
                .collect();
            if let Ok(v) = HeaderValue::from_str(&ascii) {
                r.headers_mut().insert("x-caption", v);
            }
            r
        }
        Ok(Err(msg)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{msg}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The region asked for: centre, field of view across (degrees), width and height.
fn render_region(q: &RenderParams) -> Result<(f64, f64, f64, usize, usize), String> {
    let num = |v: &Option<String>, name: &str, default: Option<f64>| -> Result<f64, String> {
        match v {
            None => default.ok_or_else(|| format!("{name} is required")),
            Some(t) => t
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("{name}={t}: not a number")),
        }
    };
    let ra = num(&q.ra, "ra", None)?;
    let dec = num(&q.dec, "dec", None)?;
    let fov = num(&q.fov, "fov", Some(0.1))?;
    if !(-90.0..=90.0).contains(&dec) {
        return Err("dec must be between -90 and 90".into());
    }
    if !(fov > 0.0 && fov <= 10.0) {
        return Err("fov must be above 0 and at most 10 degrees".into());
    }
    let side = |v: f64, n: &str| {
        (v >= 1.0 && v <= MAX_RENDER_SIDE as f64 && v.fract() == 0.0)
            .then_some(v as usize)
            .ok_or_else(|| format!("{n} must be a whole number from 1 to {MAX_RENDER_SIDE}"))
    };
    let w = side(num(&q.width, "width", Some(800.0))?, "width")?;
    let h = side(num(&q.height, "height", Some(600.0))?, "height")?;
    Ok((ra, dec, fov, w, h))
}

/// A caption from the HiPS's metadata and the region.
fn caption(p: &Properties, ra: f64, dec: f64, fov: f64, w: usize, h: usize) -> String {
    let title = p.get("obs_title").unwrap_or("Aster HiPS");
    let (across, up) = (fov * 60.0, fov * 60.0 * h as f64 / w as f64);
    let mut c = format!(
        "{title}: {across:.2} x {up:.2} arcmin about RA {ra:.5} deg, Dec {dec:.5} deg (ICRS), north up, east left."
    );
    if let Some(d) = p.get("obs_description") {
        c.push(' ');
        c.push_str(d);
    }
    if let (Some(a), Some(b)) = (p.get("t_min"), p.get("t_max")) {
        c.push_str(&format!(" Observed MJD {a} to {b}."));
    }
    c
}

/// The picture's bytes: values from the FITS tiles, then grey or colour levels.
#[allow(clippy::too_many_arguments)]
fn draw(
    root: &std::path::Path,
    id: &str,
    props: &Properties,
    ra: f64,
    dec: f64,
    fov: f64,
    w: usize,
    h: usize,
    picture: aster_archive::hips::TileFormat,
) -> Result<Vec<u8>, String> {
    use aster_archive::hips::Pixels;
    use aster_processing::hips::{TileLayout, order_for_scale};
    use aster_processing::stretch::{ColourComposite, Cut, Stretch};
    let centre = aster_processing::wcs::SkyCoord::new(ra, dec).ok_or("not a sky position")?;
    let scale = fov / w as f64;
    let wcs = aster_processing::wcs::TanSipWcs::new(
        aster_processing::wcs::PixelPosition {
            x: (w as f64 - 1.0) / 2.0,
            y: (h as f64 - 1.0) / 2.0,
        },
        centre,
        [[-scale, 0.0], [0.0, scale]],
        None,
    )
    .map_err(|e| e.to_string())?;
    let grid = aster_processing::skymap::PixelGrid::new(wcs, w, h);
    let width: usize = props
        .get("hips_tile_width")
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let layout = TileLayout::new(width.trailing_zeros() as u8);
    let deepest: u8 = props
        .get("hips_order")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let lowest: u8 = props
        .get("hips_order_min")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let order = order_for_scale(scale * 3600.0, layout.width_order()).clamp(lowest, deepest);
    let cells = layout.cells_of_grid(&grid, order);
    let mut tiles: Vec<u64> = cells
        .iter()
        .map(|c| c >> (2 * layout.width_order()))
        .collect();
    tiles.sort_unstable();
    tiles.dedup();
    let values_of = |tree: &HipsTree| -> Result<Vec<f32>, String> {
        let mut loaded = std::collections::HashMap::new();
        for &n in &tiles {
            let tile = aster_processing::hips::Tile::new(order, n).ok_or("a tile off the sky")?;
            if let Some(px) = tree.read_fits_tile(tile).map_err(|e| e.to_string())? {
                loaded.insert(n, px);
            }
        }
        // Grid rows run south to north; pictures top down.
        let v = layout.values_at(&cells, &loaded);
        Ok((0..h)
            .rev()
            .flat_map(|y| v[y * w..(y + 1) * w].to_vec())
            .collect())
    };
    let bytes = if let Some(bands) = props.get("aster_rgb") {
        let planes: Vec<Vec<f32>> = bands
            .split_whitespace()
            .map(|b| {
                if !valid_id(b) {
                    return Err(format!("{b}: not a HiPS"));
                }
                values_of(&HipsTree::new(root.join(b)))
            })
            .collect::<Result<_, _>>()?;
        if planes.len() != 3 {
            return Err("a colour HiPS needs three bands".into());
        }
        let f = |k: &str, d: f32| props.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
        let composite = ColourComposite {
            minimum: [0.0; 3],
            stretch: f("aster_rgb_stretch", 10.0),
            q: f("aster_rgb_q", 8.0),
            scale: [1.0; 3],
        };
        let rgb = composite.compose(
            [Some(&planes[0]), Some(&planes[1]), Some(&planes[2])],
            w * h,
        );
        aster_archive::hips::encode(w, h, Pixels::Rgb(&rgb), picture)
    } else {
        let values = values_of(&HipsTree::new(root.join(id)))?;
        let cut = props
            .get("hips_pixel_cut")
            .and_then(|c| {
                let mut it = c.split_whitespace().map(|v| v.parse::<f32>().ok());
                Cut::new(it.next()??, it.next()??)
            })
            .ok_or("the HiPS has no hips_pixel_cut")?;
        let stretch = props
            .get("hips_pixel_func")
            .and_then(Stretch::parse)
            .unwrap_or(Stretch::Linear);
        let grey = stretch.levels(&values, cut);
        aster_archive::hips::encode(w, h, Pixels::Grey(&grey), picture)
    };
    bytes.map_err(|e| e.to_string())
}

/// An HTTP date (RFC 9110, IMF-fixdate).
fn httpdate(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_hips_defines_are_served() {
        assert!(hips_file("properties").is_some());
        assert!(hips_file("Moc.fits").is_some());
        assert!(hips_file("Metadata.xml").is_some());
        assert!(hips_file("Norder2/Allsky.tsv").is_some());
        assert_eq!(hips_file("Norder3/Allsky.jpg").unwrap().0, "image/jpeg");
        assert_eq!(
            hips_file("Norder6/Dir10000/Npix10302.fits").unwrap().0,
            "application/fits"
        );
        for bad in [
            "../properties",
            "Norder6/Dir0/Npix10302.fits",
            "Norder6/Dir10000/Npix010302.fits",
            "Norder3/Dir0/Npix768.png",
            "Norder6/Dir10000/../../x.fits",
            "Norder5/Allsky.fits",
            "Norder3/Dir0/Npix1.exe",
            "build.json",
            "",
            "Norder3/Dir0/Npix1.fits/x",
        ] {
            assert!(hips_file(bad).is_none(), "{bad}");
        }
    }
}
