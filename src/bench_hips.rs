//! `aster bench hips`: HiPS generation from a band's coadds, tiles per second, side by side
//! with CDS Hipsgen (Debian's aladin, `-hipsgen`) on the same coadd files, at the same
//! order, both writing FITS, PNG and JPEG tiles with their Allsky files and MOC. Uses the
//! coadds of the data directory, building the demo's images and coadds when there are none.
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use aster_archive::hips::{HipsTree, TileFormat};
use aster_archive::registry::{DatasetFilter, DatasetType};

use crate::hips::{HipsOptions, build};

const HIPSGEN_JAR: &str = "/usr/share/java/aladin.jar";

pub async fn hips(config: &crate::config::Config, band: &str) -> Result<()> {
    let registry = config.open_registry()?;
    let filter = DatasetFilter {
        types: vec![DatasetType::Coadd],
        collections: vec!["deep".into()],
        band: Some(band.to_string()),
        ..Default::default()
    };
    if registry.list(&filter)?.is_empty() {
        println!("no {band} coadds: building the demo's images and coadds first");
        let store = crate::server::open_store(config)?;
        crate::demo::build_images(config, &store, &registry).await?;
    }
    let coadds = registry.list(&filter)?;
    if coadds.is_empty() {
        bail!("the data directory has no coadds in band {band}");
    }
    let work = config.data_dir.join("bench-hips");
    let _ = std::fs::remove_dir_all(&work);
    let input = work.join("coadds");
    std::fs::create_dir_all(&input)?;
    for c in &coadds {
        let path = registry.verified_path(c)?;
        std::fs::copy(&path, input.join(path.file_name().context("a file name")?))?;
    }
    println!(
        "HiPS of {} {band} coadds ({:.0} MB), {} threads",
        coadds.len(),
        dir_mb(&input),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let ours_dir = work.join("aster");
    let opts = HipsOptions {
        bands: vec![band.to_string()],
        colour: Vec::new(),
        force: true,
        output: Some(ours_dir.clone()),
        ..Default::default()
    };
    let t = Instant::now();
    build(&config.data_dir, &registry, &opts)?;
    let ours = t.elapsed().as_secs_f64();
    let tree = HipsTree::new(ours_dir.join(format!("deep-{band}")));
    let props = tree
        .read_properties()?
        .context("our HiPS has no properties")?;
    let order: u8 = props
        .get("hips_order")
        .and_then(|o| o.parse().ok())
        .context("hips_order")?;
    let cut = props.get("hips_pixel_cut").unwrap_or("0 1").to_string();
    let ours_tiles = count_tiles(tree.root(), order)?;
    report("Aster", ours_tiles, ours);

    if !Path::new(HIPSGEN_JAR).exists() {
        println!("Hipsgen: not installed (Debian package aladin); skipped");
        return Ok(());
    }
    let theirs_dir = work.join("hipsgen");
    let t = Instant::now();
    let status = Command::new("java")
        .args(["-Xmx2g", "-jar", HIPSGEN_JAR, "-hipsgen"])
        .arg(format!("in={}", input.display()))
        .arg(format!("out={}", theirs_dir.display()))
        .args([
            "creator_did=ivo://aster.survey/P/bench".to_string(),
            "hdu=1".into(),
            format!("hips_order={order}"),
            format!("hips_pixel_cut={cut} asinh"),
            "-f".into(),
            "INDEX".into(),
            "TILES".into(),
            "PNG".into(),
            "JPEG".into(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("running java for Hipsgen")?;
    let theirs = t.elapsed().as_secs_f64();
    if !status.success() {
        bail!("Hipsgen failed ({status})");
    }
    let theirs_tiles = count_tiles(&theirs_dir, order)?;
    report("Hipsgen", theirs_tiles, theirs);
    println!(
        "Aster is {:.1}x Hipsgen's speed in tiles per second",
        (ours_tiles as f64 / ours) / (theirs_tiles as f64 / theirs)
    );
    Ok(())
}

fn report(who: &str, tiles: usize, seconds: f64) {
    println!(
        "{who:8} {tiles:6} FITS tiles (+ PNG, JPEG) in {seconds:7.2} s: {:8.1} tiles/s",
        tiles as f64 / seconds
    );
}

/// FITS tiles of every order up to `order`.
fn count_tiles(root: &Path, order: u8) -> Result<usize> {
    let tree = HipsTree::new(root);
    let mut n = 0;
    for o in 0..=order {
        n += tree.tiles(o, TileFormat::Fits)?.len();
    }
    Ok(n)
}

fn dir_mb(dir: &Path) -> f64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len() as f64)
                .sum::<f64>()
        })
        .unwrap_or(0.0)
        / 1e6
}
