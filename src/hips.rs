//! `aster hips build`: HiPS (IVOA HiPS 1.0) of the coadds (DMS-REQ-0103, 0329). One HiPS a
//! band, `<collection>-<band>` (and `<collection>-all` from the all-band coadds): each
//! pixel of the deepest tiles takes the bilinear value of the coadd of the patch its cell
//! lies in (every cell lies in exactly one patch, so patches meet without seams); parents
//! average their children down to order 3, whose Allsky files hold the whole sky. FITS
//! tiles keep the values (nJy); PNG and JPEG tiles show them through a chosen stretch and
//! cut. A colour HiPS, `<collection>-color`, composes three bands' FITS tiles by Lupton's
//! asinh method. A rebuild remakes only the tiles under patches whose coadd changed (its
//! checksum, recorded in `build.json`), then their ancestors and the Allsky.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail};
use aster_archive::exposure_file::read_exposure;
use aster_archive::hips::{HipsTree, Pixels, Properties, TileFormat, hips_dir};
use aster_archive::registry::coverage::Moc;
use aster_archive::registry::{Dataset, DatasetFilter, DatasetType, Registry};
use aster_processing::hips::{
    Source, Tile, TileLayout, allsky, order_for_scale, parent_tile, pixel_size_deg,
};
use aster_processing::image::Image;
use aster_processing::skymap::PATCH_ORDER;
use aster_processing::stretch::{ColourComposite, Cut, Stretch};
use aster_processing::wcs::TanSipWcs;
use serde::{Deserialize, Serialize};

/// Lowest order built; its Allsky files stand for orders 0 to 3.
const MIN_ORDER: u8 = 3;
/// Tiles are 2^9 = 512 pixels wide.
const WIDTH_ORDER: u8 = 9;
/// Pixels a side of each tile in an Allsky mosaic.
const ALLSKY_TILE: usize = 64;
/// Coadds kept in memory while sampling.
const COADD_CACHE: usize = 16;

/// What to build.
#[derive(Debug, Clone)]
pub struct HipsOptions {
    /// Collection of the coadds.
    pub collection: String,
    /// Bands to build ("all" for the all-band coadds); every band there is when empty.
    pub bands: Vec<String>,
    /// Deepest order [default: the one matching the coadds' pixels].
    pub order: Option<u8>,
    pub stretch: Stretch,
    /// The values shown black and white [default: percentiles of the data].
    pub cut: Option<Cut>,
    /// Percentiles the default cut is taken at.
    pub cut_percentiles: (f64, f64),
    /// Bands of the colour HiPS, red, green, blue; none when empty.
    pub colour: Vec<String>,
    /// Rebuild every tile, not only those whose coadds changed.
    pub force: bool,
    /// Where the HiPS directories go [default: `<data dir>/hips`].
    pub output: Option<std::path::PathBuf>,
}

impl Default for HipsOptions {
    fn default() -> Self {
        Self {
            collection: "deep".into(),
            bands: Vec::new(),
            order: None,
            stretch: Stretch::Asinh,
            cut: None,
            cut_percentiles: (0.5, 99.8),
            colour: vec!["i".into(), "r".into(), "g".into()],
            force: false,
            output: None,
        }
    }
}

/// The record of a build, kept in the HiPS directory to make the next one incremental.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct BuildState {
    order: u8,
    stretch: String,
    cut: Option<(f32, f32)>,
    /// Checksum of the coadd of each patch.
    patches: BTreeMap<u64, String>,
}

/// What a build did, per HiPS.
#[derive(Debug, Default)]
pub struct HipsSummary {
    pub built: Vec<(String, usize)>,
}

fn output_dir(data_dir: &Path, opts: &HipsOptions) -> std::path::PathBuf {
    opts.output.clone().unwrap_or_else(|| hips_dir(data_dir))
}

/// A cut given as "LO,HI".
pub fn parse_cut(s: &str) -> Result<Cut> {
    let (lo, hi) = s.split_once(',').context("--cut takes LO,HI")?;
    let (lo, hi): (f32, f32) = (lo.trim().parse()?, hi.trim().parse()?);
    Cut::new(lo, hi).context("--cut: HI must be above LO, both finite")
}

/// Builds or updates the HiPS of the coadds of `opts.collection`.
pub fn build(data_dir: &Path, registry: &Registry, opts: &HipsOptions) -> Result<HipsSummary> {
    let coadds = registry.list(&DatasetFilter {
        types: vec![DatasetType::Coadd],
        collections: vec![opts.collection.clone()],
        ..Default::default()
    })?;
    if coadds.is_empty() {
        bail!(
            "no coadds in collection {}: run `aster coadd build` first",
            opts.collection
        );
    }
    let mut by_band: BTreeMap<String, Vec<Dataset>> = BTreeMap::new();
    for c in coadds {
        let band = c.data_id.band.clone().unwrap_or_else(|| "all".into());
        if opts.bands.is_empty() || opts.bands.contains(&band) {
            by_band.entry(band).or_default().push(c);
        }
    }
    if by_band.is_empty() {
        bail!("no coadds of bands {}", opts.bands.join(", "));
    }
    let mut summary = HipsSummary::default();
    let mut changed_tiles: BTreeMap<String, BTreeSet<Tile>> = BTreeMap::new();
    for (band, coadds) in &by_band {
        let id = format!("{}-{band}", opts.collection);
        let tiles = build_band(data_dir, registry, opts, &id, band, coadds)
            .with_context(|| format!("building HiPS {id}"))?;
        summary.built.push((id, tiles.len()));
        changed_tiles.insert(band.clone(), tiles);
    }
    if opts.colour.len() == 3 {
        let bands: Vec<&String> = opts.colour.iter().collect();
        if bands.iter().all(|b| by_band.contains_key(*b)) {
            let id = format!("{}-color", opts.collection);
            let n = build_colour(data_dir, opts, &id, &bands, &changed_tiles)
                .with_context(|| format!("building HiPS {id}"))?;
            summary.built.push((id, n));
        }
    } else if !opts.colour.is_empty() {
        bail!("a colour HiPS takes three bands: red, green and blue");
    }
    Ok(summary)
}

/// A coadd's pixels and WCS, as sampled.
struct Loaded {
    image: Image<f32>,
    wcs: TanSipWcs,
}

/// Builds one band's HiPS; returns the tiles (at every order) it wrote or removed.
fn build_band(
    data_dir: &Path,
    registry: &Registry,
    opts: &HipsOptions,
    id: &str,
    band: &str,
    coadds: &[Dataset],
) -> Result<BTreeSet<Tile>> {
    let tree = HipsTree::new(output_dir(data_dir, opts).join(id));
    let state_path = tree.root().join("build.json");
    let old: BuildState = std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let patches: BTreeMap<u64, &Dataset> = coadds
        .iter()
        .filter_map(|d| Some((u64::try_from(d.data_id.patch?).ok()?, d)))
        .collect();
    let scale = coadd_scale(registry, coadds)?;
    let order = opts
        .order
        .unwrap_or_else(|| order_for_scale(scale, WIDTH_ORDER))
        .max(MIN_ORDER);
    let stretch_changed = old.stretch != opts.stretch.name()
        || opts.cut.is_some_and(|c| old.cut != Some((c.lo(), c.hi())));
    let full = opts.force || old.order != order;
    if full && tree.root().exists() {
        std::fs::remove_dir_all(tree.root())
            .with_context(|| format!("clearing {}", tree.root().display()))?;
    }
    // Patches whose coadd is new, changed or gone.
    let mut dirty: BTreeSet<u64> = patches
        .iter()
        .filter(|(p, d)| full || old.patches.get(p) != Some(&d.checksum))
        .map(|(p, _)| *p)
        .collect();
    dirty.extend(old.patches.keys().filter(|p| !patches.contains_key(p)));
    let deepest = deepest_tiles(&dirty, order);
    if deepest.is_empty() && !stretch_changed && tree.read_properties()?.is_some() {
        return Ok(BTreeSet::new());
    }
    let layout = TileLayout::new(WIDTH_ORDER);
    let bar = progress(deepest.len() as u64, id);
    let mut cache: HashMap<u64, std::sync::Arc<Loaded>> = HashMap::new();
    let mut written: BTreeSet<Tile> = BTreeSet::new();
    let mut sample: Vec<f32> = Vec::new();
    let shift = 2 * u32::from(layout.pixel_order(order) - PATCH_ORDER);
    for tile in &deepest {
        // The coadds of the patches this tile touches.
        let first = tile.npix << (2 * WIDTH_ORDER) >> shift;
        let last = (((tile.npix + 1) << (2 * WIDTH_ORDER)) - 1) >> shift;
        let mut here: HashMap<u64, std::sync::Arc<Loaded>> = HashMap::new();
        for p in first..=last {
            let Some(d) = patches.get(&p) else { continue };
            if !cache.contains_key(&p) {
                if cache.len() >= COADD_CACHE {
                    cache.clear();
                }
                cache.insert(p, std::sync::Arc::new(load(registry, d)?));
            }
            here.insert(p, cache[&p].clone());
        }
        let sources: HashMap<u64, Source<'_>> = here
            .iter()
            .map(|(p, c)| {
                (
                    *p,
                    Source {
                        image: &c.image,
                        wcs: &c.wcs,
                    },
                )
            })
            .collect();
        let pixels = layout.sample_sources(*tile, shift, &sources);
        write_or_remove(&tree, *tile, layout.width(), &pixels)?;
        sample.extend(pixels.iter().step_by(31).filter(|v| v.is_finite()));
        written.insert(*tile);
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Parents, order by order, from the children on disk.
    let mut level: BTreeSet<Tile> = written.clone();
    for _ in MIN_ORDER..order {
        let parents: BTreeSet<Tile> = level.iter().filter_map(|t| t.parent()).collect();
        for p in &parents {
            let children: Vec<Option<Vec<f32>>> = p
                .children()
                .iter()
                .map(|c| tree.read_fits_tile(*c))
                .collect::<std::result::Result<_, _>>()?;
            let refs: [Option<&[f32]>; 4] = std::array::from_fn(|q| children[q].as_deref());
            let px = parent_tile(layout.width(), refs);
            write_or_remove(&tree, *p, layout.width(), &px)?;
        }
        written.extend(parents.iter().copied());
        level = parents;
    }
    // The cut: as asked, as before (so old picture tiles still match), or from the data.
    let cut = match (opts.cut, old.cut) {
        (Some(c), _) => c,
        (None, Some((lo, hi))) if !full => Cut::new(lo, hi).context("the recorded cut")?,
        _ => Cut::from_percentiles(&mut sample, opts.cut_percentiles.0, opts.cut_percentiles.1)
            .context("the coadds have no pixels to set a cut from")?,
    };
    // Picture tiles of everything remade, or of every tile when the stretch changed.
    let pictures: Vec<Tile> = if stretch_changed && !full {
        (MIN_ORDER..=order)
            .map(|o| tree.tiles(o, TileFormat::Fits))
            .collect::<std::result::Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect()
    } else {
        written.iter().copied().collect()
    };
    for t in &pictures {
        let Some(px) = tree.read_fits_tile(*t)? else {
            continue;
        };
        let grey = opts.stretch.levels(&px, cut);
        for f in [TileFormat::Png, TileFormat::Jpeg] {
            tree.write_picture_tile(*t, layout.width(), Pixels::Grey(&grey), f)?;
        }
    }
    write_allsky(&tree, layout.width(), Some((opts.stretch, cut)))?;
    let present = tree.tiles(order, TileFormat::Fits)?;
    let cells: Vec<u64> = present.iter().map(|t| t.npix).collect();
    let moc = Moc::from_cells(order, &cells);
    tree.write_moc(&moc)?;
    let mut props = image_properties(opts, band, order, coadds, &moc);
    let tiles: usize = (MIN_ORDER..=order)
        .map(|o| tree.tiles(o, TileFormat::Fits).map(|t| t.len()))
        .sum::<std::result::Result<usize, _>>()?;
    props
        .set("hips_nb_tiles", tiles)
        .set("hips_tile_format", "png jpeg fits")
        .set("hips_pixel_bitpix", -32)
        .set("hips_pixel_cut", format!("{} {}", cut.lo(), cut.hi()))
        .set("hips_data_range", format!("{} {}", cut.lo(), cut.hi()))
        .set("hips_pixel_func", opts.stretch.name())
        .set("hips_bunit", "nJy")
        .set("data_ucd", "phot.flux.density")
        .set("hips_sampling", "bilinear");
    tree.write_properties(&props)?;
    let state = BuildState {
        order,
        stretch: opts.stretch.name().into(),
        cut: Some((cut.lo(), cut.hi())),
        patches: patches
            .iter()
            .map(|(p, d)| (*p, d.checksum.clone()))
            .collect(),
    };
    std::fs::write(&state_path, serde_json::to_vec_pretty(&state)?)?;
    Ok(written)
}

/// The tiles at `order` under the given patches.
fn deepest_tiles(patches: &BTreeSet<u64>, order: u8) -> BTreeSet<Tile> {
    let mut out = BTreeSet::new();
    for &p in patches {
        if order >= PATCH_ORDER {
            let shift = 2 * u32::from(order - PATCH_ORDER);
            for n in (p << shift)..((p + 1) << shift) {
                out.extend(Tile::new(order, n));
            }
        } else {
            out.extend(Tile::new(order, p >> (2 * u32::from(PATCH_ORDER - order))));
        }
    }
    out
}

/// Writes a FITS tile, or removes the tile in every format when it has no data.
fn write_or_remove(tree: &HipsTree, tile: Tile, width: usize, px: &[f32]) -> Result<()> {
    if px.iter().any(|v| v.is_finite()) {
        tree.write_fits_tile(tile, width, px)?;
    } else {
        tree.remove_tile(tile, &[TileFormat::Fits, TileFormat::Png, TileFormat::Jpeg])?;
    }
    Ok(())
}

/// `Norder3/Allsky.{fits,png,jpg}` from the order-3 FITS tiles (pictures only with a
/// stretch; a colour HiPS writes its own).
fn write_allsky(tree: &HipsTree, width: usize, stretch: Option<(Stretch, Cut)>) -> Result<()> {
    let tiles: HashMap<u64, Vec<f32>> = tree
        .tiles(MIN_ORDER, TileFormat::Fits)?
        .into_iter()
        .map(|t| Ok((t.npix, tree.read_fits_tile(t)?.unwrap_or_default())))
        .collect::<Result<_>>()?;
    let (w, h, px) = allsky(MIN_ORDER, width, ALLSKY_TILE, |n| {
        tiles.get(&n).map(Vec::as_slice)
    });
    tree.write_allsky_fits(MIN_ORDER, w, h, &px)?;
    if let Some((s, cut)) = stretch {
        let grey = s.levels(&px, cut);
        for f in [TileFormat::Png, TileFormat::Jpeg] {
            tree.write_allsky_picture(MIN_ORDER, w, h, Pixels::Grey(&grey), f)?;
        }
    }
    Ok(())
}

/// The colour HiPS from three bands' FITS tiles: every tile any of them has, or only
/// those rebuilt now when the colour HiPS already exists.
fn build_colour(
    data_dir: &Path,
    opts: &HipsOptions,
    id: &str,
    bands: &[&String],
    changed: &BTreeMap<String, BTreeSet<Tile>>,
) -> Result<usize> {
    let root = output_dir(data_dir, opts);
    let trees: Vec<HipsTree> = bands
        .iter()
        .map(|b| HipsTree::new(root.join(format!("{}-{b}", opts.collection))))
        .collect();
    let props: Vec<Properties> = trees
        .iter()
        .map(|t| {
            t.read_properties()?
                .context("a band HiPS without properties")
        })
        .collect::<Result<_>>()?;
    let order: u8 = props[0]
        .get("hips_order")
        .and_then(|o| o.parse().ok())
        .context("hips_order")?;
    let tree = HipsTree::new(root.join(id));
    let fresh = opts.force || tree.read_properties()?.is_none();
    let mut tiles: BTreeSet<Tile> = BTreeSet::new();
    for (b, t) in bands.iter().zip(&trees) {
        if fresh {
            for o in MIN_ORDER..=order {
                tiles.extend(t.tiles(o, TileFormat::Fits)?);
            }
        } else if let Some(c) = changed.get(*b) {
            tiles.extend(c.iter().copied());
        }
    }
    // Nothing changed in the bands: the colour HiPS, and its release date, stay as they are.
    if tiles.is_empty() && !fresh {
        return Ok(0);
    }
    // Balanced on the data: black at zero (the coadds are background-subtracted), the
    // linear part of the stretch a quarter of the green band's white point.
    let green_hi: f32 = props[1]
        .get("hips_pixel_cut")
        .and_then(|c| c.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(100.0);
    let composite = ColourComposite {
        minimum: [0.0; 3],
        stretch: (green_hi / 4.0).max(1e-3),
        q: 8.0,
        scale: [1.0; 3],
    };
    let width = 1usize << WIDTH_ORDER;
    let bar = progress(tiles.len() as u64, id);
    for t in &tiles {
        let px: Vec<Option<Vec<f32>>> = trees
            .iter()
            .map(|tr| tr.read_fits_tile(*t))
            .collect::<std::result::Result<_, _>>()?;
        if px.iter().all(Option::is_none) {
            tree.remove_tile(*t, &[TileFormat::Png, TileFormat::Jpeg])?;
            continue;
        }
        let rgb = composite.compose(std::array::from_fn(|k| px[k].as_deref()), width * width);
        for f in [TileFormat::Png, TileFormat::Jpeg] {
            tree.write_picture_tile(*t, width, Pixels::Rgb(&rgb), f)?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    // The Allsky from the bands' Allsky values.
    let allskies: Vec<Option<(usize, usize, Vec<f32>)>> = trees
        .iter()
        .map(|t| t.read_allsky_fits(MIN_ORDER))
        .collect::<std::result::Result<_, _>>()?;
    if let Some((w, h, _)) = allskies.iter().flatten().next() {
        let (w, h) = (*w, *h);
        let planes: Vec<Option<Vec<f32>>> = allskies
            .into_iter()
            .map(|a| a.filter(|a| a.0 == w && a.1 == h).map(|a| a.2))
            .collect();
        let rgb = composite.compose(std::array::from_fn(|k| planes[k].as_deref()), w * h);
        for f in [TileFormat::Png, TileFormat::Jpeg] {
            tree.write_allsky_picture(MIN_ORDER, w, h, Pixels::Rgb(&rgb), f)?;
        }
    }
    std::fs::copy(
        trees[1].root().join("Moc.fits"),
        tree.root().join("Moc.fits"),
    )
    .context("copying the coverage")?;
    let mut p = props[1].clone();
    p.set(
        "creator_did",
        format!("ivo://aster.survey/P/{}/color", opts.collection),
    )
    .set(
        "obs_title",
        format!(
            "Aster {} coadds, colour ({} {} {})",
            opts.collection, bands[0], bands[1], bands[2]
        ),
    )
    .set("dataproduct_subtype", "color")
    // How to redraw any region of it from the bands (`/hips/{id}/render`).
    .set(
        "aster_rgb",
        bands
            .iter()
            .map(|b| format!("{}-{b}", opts.collection))
            .collect::<Vec<_>>()
            .join(" "),
    )
    .set("aster_rgb_stretch", composite.stretch)
    .set("aster_rgb_q", composite.q)
    .set("hips_tile_format", "png jpeg")
    .set("hips_release_date", release_date())
    .set(
        "obs_description",
        format!(
            "Colour composite of the {} coadds: {} as red, {} as green, {} as blue, \
                 by the asinh method of Lupton et al. (2004).",
            opts.collection, bands[0], bands[1], bands[2]
        ),
    );
    for k in [
        "hips_pixel_bitpix",
        "hips_pixel_cut",
        "hips_data_range",
        "hips_pixel_func",
        "hips_bunit",
        "data_ucd",
    ] {
        p.remove(k);
    }
    tree.write_properties(&p)?;
    Ok(tiles.len())
}

fn load(registry: &Registry, d: &Dataset) -> Result<Loaded> {
    let e = read_exposure(&registry.verified_path(d)?)?;
    let wcs = e
        .wcs
        .clone()
        .with_context(|| format!("{} has no WCS", d.id))?;
    Ok(Loaded {
        image: e.image().clone(),
        wcs,
    })
}

/// The coadds' pixel scale, arcsec, from one of them.
fn coadd_scale(registry: &Registry, coadds: &[Dataset]) -> Result<f64> {
    let d = coadds.first().context("no coadds")?;
    let (_, _, wcs) =
        aster_archive::exposure_file::read_exposure_geometry(&registry.verified_path(d)?)?;
    Ok(wcs.context("a coadd without WCS")?.pixel_scale_arcsec())
}

fn release_date() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%MZ").to_string()
}

fn image_properties(
    opts: &HipsOptions,
    band: &str,
    order: u8,
    coadds: &[Dataset],
    moc: &Moc,
) -> Properties {
    let obs: Vec<_> = coadds
        .iter()
        .filter_map(|d| d.observation.as_ref())
        .collect();
    let centres: Vec<_> = obs.iter().filter_map(|o| o.centre()).collect();
    let mut p = Properties::new();
    p.set(
        "creator_did",
        format!("ivo://aster.survey/P/{}/{band}", opts.collection),
    )
    .set(
        "obs_title",
        format!("Aster {} coadds, {}", opts.collection, band_words(band)),
    )
    .set(
        "obs_description",
        format!(
            "HiPS of the {} coadds of the Aster survey, {}: calibrated \
                 visit images warped (Lanczos-3) onto HEALPix patches and combined with \
                 outlier rejection; values in nJy.",
            opts.collection,
            band_words(band)
        ),
    )
    .set("obs_collection", format!("Aster-{}", opts.collection))
    .set("obs_regime", "Optical")
    .set("dataproduct_type", "image")
    .set("hips_version", "1.4")
    .set("hips_release_date", release_date())
    .set("hips_creation_date", release_date())
    .set(
        "hips_builder",
        format!("Aster {}", env!("CARGO_PKG_VERSION")),
    )
    .set("hips_creator", "Aster archive")
    .set("hips_status", "public master clonableOnce")
    .set("hips_frame", "equatorial")
    .set("hips_order", order)
    .set("hips_order_min", MIN_ORDER)
    .set("hips_tile_width", 1usize << WIDTH_ORDER)
    .set(
        "hips_pixel_scale",
        format!("{:.6e}", pixel_size_deg(order, WIDTH_ORDER)),
    )
    .set("moc_sky_fraction", format!("{:.6e}", moc.sky_fraction()))
    .set("hips_copyright", "Aster survey");
    if let Some(c) = centres.first() {
        let fov = obs.iter().filter_map(|o| o.fov()).fold(0.0, f64::max);
        p.set("hips_initial_ra", format!("{:.6}", c.ra()))
            .set("hips_initial_dec", format!("{:.6}", c.dec()))
            .set("hips_initial_fov", format!("{:.4}", (fov * 3.0).max(0.05)));
    }
    let t_min = obs.iter().map(|o| o.t_min).fold(f64::INFINITY, f64::min);
    let t_max = obs
        .iter()
        .map(|o| o.t_max)
        .fold(f64::NEG_INFINITY, f64::max);
    if t_min.is_finite() && t_max.is_finite() {
        p.set("t_min", format!("{t_min:.5}"))
            .set("t_max", format!("{t_max:.5}"));
    }
    if let (Some(lo), Some(hi)) = (
        obs.iter().filter_map(|o| o.em_min).reduce(f64::min),
        obs.iter().filter_map(|o| o.em_max).reduce(f64::max),
    ) {
        p.set("em_min", format!("{lo:.4e}"))
            .set("em_max", format!("{hi:.4e}"));
    }
    p
}

fn band_words(band: &str) -> String {
    if band == "all" {
        "all bands".into()
    } else {
        format!("{band} band")
    }
}

fn progress(n: u64, id: &str) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(n).with_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{id} {{bar:30}} {{pos}}/{{len}} tiles {{per_sec}} {{eta}}"
        ))
        .expect("a valid template"),
    )
}
