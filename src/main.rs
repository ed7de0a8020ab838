//! The `aster` command: serve the archive, build the demo release, import catalogs, check
//! ADQL, benchmark the TAP service, simulate CCD images and measure them.
mod bench;
mod bench_hips;
mod bench_night;
mod bench_pipeline;
mod bench_vospace;
mod calibrate;
mod coadd;
mod config;
mod datasets;
mod demo;
mod download;
mod hips;
mod hips_catalog;
mod identity;
mod night;
mod pipeline;
mod regenerate;
mod server;
mod simulate;
mod tables;

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use config::Config;

#[derive(Parser)]
#[command(
    name = "aster",
    version,
    about = "Aster: the survey's data management system and IVOA archive"
)]
struct Cli {
    /// Configuration file (TOML); settings also come from ASTER_* environment variables.
    #[arg(long, global = true, env = "ASTER_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./aster-data].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the archive: TAP, SIAv2, DataLink, SODA, files, MOCs, manifests, the visit
    /// schedule, metrics.
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
        /// Build the demo data release first if the data directory holds no catalogs.
        #[arg(long)]
        demo: bool,
    },
    /// Build the deterministic synthetic demo data release.
    Demo {
        /// Number of objects [default: 100000].
        #[arg(long)]
        objects: Option<u64>,
        /// Number of visits [default: 24]; 0 gives an Object-only release (for benchmarks).
        #[arg(long)]
        visits: Option<u64>,
        /// Random seed [default: 2026].
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Catalog operations.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// ADQL tools.
    Adql {
        #[command(subcommand)]
        command: AdqlCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Simulate a survey into the data directory: raw files of calibration exposures and
    /// visits (two snaps each) for every CCD, a reference catalogue and the truth.
    Simulate {
        #[command(subcommand)]
        command: Option<SimulateCommand>,
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// Visits (each two 15 s snaps), cycling through the bands.
        #[arg(long, default_value_t = 6)]
        visits: usize,
        /// CCDs of the focal plane (1 to 9).
        #[arg(long, default_value_t = 1)]
        ccds: usize,
        /// CCD width and height, pixels (a multiple of 64).
        #[arg(long, default_value_t = 2048)]
        ccd_size: usize,
        /// Objects per square degree.
        #[arg(long, default_value_t = 60_000.0)]
        density: f64,
    },
    /// Calibration products.
    Calib {
        #[command(subcommand)]
        command: CalibCommand,
    },
    /// Science pipelines.
    Pipeline {
        #[command(subcommand)]
        command: PipelineCommand,
    },
    /// Download every dataset a bulk download manifest lists (a file, or a URL such as
    /// http://HOST/api/manifest?collection=single-visit), resuming partial files and
    /// verifying each checksum.
    Download {
        manifest: String,
        /// Where the files go, in the archive's layout.
        #[arg(long, default_value = ".")]
        output: PathBuf,
    },
    /// Users of the archive.
    Users {
        #[command(subcommand)]
        command: identity::UsersCommand,
    },
    /// Groups of users (who may share what, DMS-REQ-0340).
    Groups {
        #[command(subcommand)]
        command: identity::GroupsCommand,
    },
    /// Personal API tokens (for scripts, pyvo and TOPCAT: `Authorization: Bearer`).
    Token {
        #[command(subcommand)]
        command: identity::TokenCommand,
    },
    /// The predicted visit schedule (DMS-REQ-0353).
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Bring files into the archive.
    Ingest {
        #[command(subcommand)]
        command: IngestCommand,
    },
    /// Alert production: the Level 1 chain over a night of visits.
    Night {
        #[command(subcommand)]
        command: NightCommand,
    },
    /// Coadds on the sky map (HEALPix patches).
    Coadd {
        #[command(subcommand)]
        command: CoaddCommand,
    },
    /// Hierarchical Progressive Surveys (HiPS) for Aladin and the portal.
    Hips {
        #[command(subcommand)]
        command: HipsCommand,
    },
}

#[derive(Subcommand)]
enum HipsCommand {
    /// Build or update the HiPS of a collection of coadds under <data-dir>/hips/: one a
    /// band (<collection>-<band>), and a colour one (<collection>-color).
    Build {
        /// Collection of the coadds.
        #[arg(long, default_value = "deep")]
        collection: String,
        /// Bands (repeatable; "all" for the all-band coadds) [default: every band].
        #[arg(long = "band")]
        bands: Vec<String>,
        /// Deepest order [default: the one matching the coadds' pixel scale].
        #[arg(long)]
        order: Option<u8>,
        /// Stretch of the PNG and JPEG tiles: linear, sqrt, log or asinh.
        #[arg(long, default_value = "asinh")]
        stretch: String,
        /// Values shown black and white, "LO,HI" (nJy) [default: 0.5 and 99.8 percentiles].
        #[arg(long, allow_hyphen_values = true)]
        cut: Option<String>,
        /// Bands of the colour HiPS as red,green,blue; "none" for no colour HiPS.
        #[arg(long, default_value = "i,r,g")]
        color: String,
        /// Rebuild every tile.
        #[arg(long)]
        force: bool,
    },
    /// Build a progressive catalog HiPS (TSV tiles) of a catalog table, brightest first.
    Catalog {
        #[arg(long, default_value = "dp.Object")]
        table: String,
        /// HiPS ID.
        #[arg(long, default_value = "dp-object")]
        id: String,
        /// Columns (comma-separated; the first is the identifier) [default: the Object
        /// table's ID, position, g, r, i PSF fluxes and extendedness].
        #[arg(long)]
        columns: Option<String>,
        #[arg(long, default_value = "coord_ra")]
        ra: String,
        #[arg(long, default_value = "coord_dec")]
        dec: String,
        /// ADQL ORDER BY clause putting the brightest first.
        #[arg(long, default_value = "r_psfFlux DESC")]
        order_by: String,
        /// Rows per tile before fainter ones go a level deeper.
        #[arg(long, default_value_t = 100)]
        per_tile: usize,
        /// Deepest order.
        #[arg(long, default_value_t = 10)]
        max_order: u8,
    },
}

#[derive(Subcommand)]
enum NightCommand {
    /// Simulate a night of visits to one field (stars, galaxies, periodic variables,
    /// injected transients, asteroids) and run each through templates, difference imaging,
    /// DIASources, association (to known solar system objects, then DIAObjects), forced
    /// photometry and the match to the Objects measured on the field's template into the
    /// ap tables and alerts, recording the truth, the DIASources and each visit's latency
    /// under the output directory.
    Run {
        /// Visits of each night.
        #[arg(long, default_value_t = 6)]
        visits: usize,
        /// The (first) night of the season to run, from 0. A night continues the DIAObjects,
        /// alert history and asteroid summaries of the nights before it in the Level 1
        /// database; a night already there is refused.
        #[arg(long, default_value_t = 0)]
        night: u32,
        /// How many nights to run, one after the other (each night's records then go to
        /// <out>/night-<N>).
        #[arg(long, default_value_t = 1)]
        nights: u32,
        /// The night of the season the field's asteroids cross it and its transients peak
        /// around: the same for every night of one season (the demo's is 8).
        #[arg(long, default_value_t = 0)]
        epoch: u32,
        /// CCD side, pixels.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 600)]
        stars: usize,
        /// Galaxies, besides the hosts of half the transients.
        #[arg(long, default_value_t = 150)]
        galaxies: usize,
        #[arg(long, default_value_t = 40)]
        variables: usize,
        #[arg(long, default_value_t = 80)]
        transients: usize,
        /// Asteroids crossing the field (one in six missing from the orbit catalogue).
        #[arg(long, default_value_t = 12)]
        asteroids: usize,
        /// Earlier exposures of the field the templates are coadded from.
        #[arg(long, default_value_t = 4)]
        template_visits: usize,
        /// Start from raw exposures: each visit read out by the camera simulator, then ISR
        /// and characterization in the chain (the instrument's calibration products are
        /// made first, under the output directory).
        #[arg(long)]
        from_raw: bool,
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// Where the run's records go [default: <data dir>/night].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CoaddCommand {
    /// Warp the calexps of the input collections onto the patches they touch and combine
    /// them per band and for all bands; a rerun remakes only patches whose inputs changed.
    Build {
        /// Collections of calexps (repeatable).
        #[arg(long = "input", default_value = "single-visit")]
        inputs: Vec<String>,
        /// Collection of the coadds.
        #[arg(long, default_value = "deep")]
        output: String,
        /// Bands to coadd (repeatable) [default: all].
        #[arg(long = "band")]
        bands: Vec<String>,
        /// Pixel scale of the coadds, arcsec.
        #[arg(long, default_value_t = aster_processing::camera::PIXEL_SCALE)]
        pixel_scale: f64,
        /// Reject values this many sigma from the others.
        #[arg(long, default_value_t = 3.0)]
        clip_sigma: f64,
    },
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// Publish a schedule (JSON: {"source": ..., "visits": [{"mjd", "ra", "dec", "band",
    /// "exptime", "rotation"?, "target"?}, ...]}), validated whole: into the data directory,
    /// or to a running archive with --url (and the schedule token).
    Publish {
        file: PathBuf,
        /// Base URL of a running archive, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: Option<String>,
        /// Bearer token for --url [default: schedule_token of the configuration].
        #[arg(long)]
        token: Option<String>,
    },
}

#[derive(Subcommand)]
enum IngestCommand {
    /// Ingest raw FITS files (one CCD of one exposure each): verified, copied under
    /// raw/<night>/<exposure>/ and recorded in the dataset registry with their metadata.
    /// Corrupt files and files already ingested are refused, each with its reason.
    Raw {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SimulateCommand {
    /// A calibrated CCD of the demo sky (exposure FITS) with its truth (<OUTPUT>.truth.parquet).
    Ccd {
        #[arg(long)]
        output: PathBuf,
        /// Width and height in pixels (0.2 arcsec each).
        #[arg(long, default_value_t = 2048)]
        size: usize,
        /// Band: u, g, r, i, z or y.
        #[arg(long, default_value = "r")]
        band: String,
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// Objects in the demo sky the CCD is cut from.
        #[arg(long, default_value_t = 100_000)]
        objects: u64,
    },
}

#[derive(Subcommand)]
enum CalibCommand {
    /// Build every missing calibration product of every CCD from the raw calibration
    /// exposures in the data directory, into calib/<type>/.
    Build,
}

#[derive(Subcommand)]
enum PipelineCommand {
    /// Run a pipeline definition (YAML, e.g. pipelines/single-visit.yaml) over the raws of
    /// the data directory; outputs go to runs/<run>/ and the catalog store. A rerun does
    /// only what is missing.
    Run {
        pipeline: PathBuf,
        /// Select data IDs: visit=N, detector=NAME or band=B (comma-separated, repeatable).
        #[arg(long = "where")]
        where_: Vec<String>,
        /// Override a task's setting: label.key=value (repeatable).
        #[arg(long = "set")]
        overrides: Vec<String>,
        /// Reference catalogue (Parquet) [default: <data-dir>/refcat/refcat.parquet].
        #[arg(long)]
        refcat: Option<PathBuf>,
    },
    /// Characterize, calibrate, detect and measure one calibrated image: an Aster exposure
    /// file or a plain FITS image from any camera with a TAN, TAN-SIP or TPV WCS. Writes
    /// <stem>.calexp.fits, <stem>.sources.parquet and <stem>.sources.fits into --output.
    SingleFrame {
        image: PathBuf,
        #[arg(long)]
        output: PathBuf,
        /// Reference catalogue (Parquet, CSV, FITS or VOTable: ra, dec, mag or u_mag..y_mag,
        /// optional pmra, pmdec, parallax, epoch) to refit the WCS and zeropoint against.
        #[arg(long)]
        refcat: Option<PathBuf>,
        /// The image's band (u g r i z y) when its FILTER card does not name one.
        #[arg(long)]
        band: Option<String>,
        /// Override a task's setting: label.key=value (repeatable).
        #[arg(long = "set")]
        overrides: Vec<String>,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Load tables from Parquet, CSV, FITS binary tables or VOTable into a partitioned table.
    Import {
        /// SCHEMA.NAME of the table to create or append to.
        #[arg(long)]
        table: String,
        /// Right ascension column (degrees); found by UCD pos.eq.ra when omitted.
        #[arg(long)]
        ra: Option<String>,
        /// Declination column (degrees); found by UCD pos.eq.dec when omitted.
        #[arg(long)]
        dec: Option<String>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AdqlCommand {
    /// Check ADQL queries (one per file, or stdin) without a database; exit 1 if any is invalid.
    Check { files: Vec<PathBuf> },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// One CCD of one visit from raw to Source catalog, seconds per stage, and the same
    /// calibrated image through SExtractor (completeness and time). Simulates a survey
    /// with calibrations into the data directory when it holds none.
    Pipeline {
        /// CCD size of the survey it simulates, pixels.
        #[arg(long, default_value_t = 4096)]
        ccd_size: usize,
    },
    /// HiPS generation from a band's coadds in tiles per second, beside CDS Hipsgen on the
    /// same files (builds the demo's coadds first when the data directory has none).
    Hips {
        #[arg(long, default_value = "r")]
        band: String,
    },
    /// VOSpace upload and download throughput through HTTP, beside a plain copy of the
    /// same file on the same disk.
    Vospace {
        /// Size of the file, MiB.
        #[arg(long, default_value_t = 1024)]
        mib: u64,
    },
    /// Alert production's latency per CCD from raw exposures to archived alerts, p50 and
    /// max over a simulated night, in total and per stage (run under `taskset -c 0` for one
    /// core). Keeps its data under <data dir>/bench-night.
    Night {
        /// CCD side, pixels.
        #[arg(long, default_value_t = 4096)]
        size: usize,
        #[arg(long, default_value_t = 5)]
        visits: usize,
        /// Earlier exposures of the field its template is coadded from.
        #[arg(long, default_value_t = 4)]
        template_visits: usize,
    },
    /// Time typical TAP queries end to end through HTTP against a running server.
    Tap {
        /// Base URL of the TAP service.
        #[arg(long, default_value = "http://127.0.0.1:8080/tap")]
        url: String,
        /// Repetitions per query.
        #[arg(long, default_value_t = 20)]
        repeat: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,datafusion=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(d) = cli.data_dir {
        config.data_dir = d;
    }
    if let Command::Adql {
        command: AdqlCommand::Check { files },
    } = &cli.command
    {
        std::process::exit(adql_check(files)?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve { addr, demo } => {
                if let Some(a) = addr {
                    config.addr = a;
                }
                server::serve(config, demo).await
            }
            Command::Demo {
                objects,
                visits,
                seed,
            } => {
                let spec = demo::DemoSpec {
                    objects: objects.unwrap_or(config.demo.objects),
                    visits: visits.unwrap_or(config.demo.visits),
                    seed: seed.unwrap_or(config.demo.seed),
                };
                let store = server::open_store(&config)?;
                let t = std::time::Instant::now();
                demo::build(&store, spec).await?;
                eprintln!(
                    "demo release built in {:.1} s at {}",
                    t.elapsed().as_secs_f64(),
                    config.catalog_location()
                );
                Ok(())
            }
            Command::Catalog {
                command:
                    CatalogCommand::Import {
                        table,
                        ra,
                        dec,
                        files,
                    },
            } => {
                let store = server::open_store(&config)?;
                server::import(&store, &table, ra.as_deref(), dec.as_deref(), &files).await
            }
            Command::Bench {
                command: BenchCommand::Hips { band },
            } => bench_hips::hips(&config, &band).await,
            Command::Bench {
                command: BenchCommand::Vospace { mib },
            } => bench_vospace::vospace(&config, mib).await,
            Command::Bench {
                command: BenchCommand::Tap { url, repeat },
            } => bench::tap(&url, repeat).await,
            Command::Bench {
                command:
                    BenchCommand::Night {
                        size,
                        visits,
                        template_visits,
                    },
            } => bench_night::night(&config, size, visits, template_visits).await,
            Command::Bench {
                command: BenchCommand::Pipeline { ccd_size },
            } => bench_pipeline::pipeline(&config.data_dir, ccd_size),
            Command::Simulate {
                command: None,
                seed,
                visits,
                ccds,
                ccd_size,
                density,
            } => simulate::simulate_survey(
                &config.data_dir,
                &config.open_registry()?,
                &simulate::SurveySpec {
                    seed,
                    visits,
                    ccds,
                    ccd_size,
                    density,
                },
            ),
            Command::Simulate {
                command:
                    Some(SimulateCommand::Ccd {
                        output,
                        size,
                        band,
                        seed,
                        objects,
                    }),
                ..
            } => {
                let band = aster_processing::sky::band_index(&band)
                    .with_context(|| format!("--band {band}: expected one of u g r i z y"))?;
                pipeline::simulate_ccd(&output, size, seed, band, objects)
            }
            Command::Calib {
                command: CalibCommand::Build,
            } => {
                let registry = config.open_registry()?;
                calibrate::build_all(&config.data_dir, &registry)
            }
            Command::Users { command } => identity::users(&config, command),
            Command::Groups { command } => identity::groups(&config, command),
            Command::Token { command } => identity::token(&config, command),
            Command::Schedule {
                command: ScheduleCommand::Publish { file, url, token },
            } => {
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                match url {
                    None => {
                        let s = aster_archive::schedule::Schedule::parse(&bytes)
                            .with_context(|| file.display().to_string())?;
                        let s = aster_archive::schedule::ScheduleStore::new(&config.data_dir)
                            .publish(s)?;
                        println!("published {} visits from {}", s.visits.len(), s.source);
                    }
                    Some(url) => {
                        let token = token
                            .or(config.schedule_token.clone())
                            .context("--token (or schedule_token) is needed to publish by HTTP")?;
                        let r = reqwest::Client::new()
                            .post(format!("{}/api/schedule", url.trim_end_matches('/')))
                            .bearer_auth(token)
                            .header("content-type", "application/json")
                            .body(bytes)
                            .send()
                            .await?;
                        let status = r.status();
                        let text = r.text().await?;
                        if !status.is_success() {
                            bail!("{status}: {text}");
                        }
                        println!("{text}");
                    }
                }
                Ok(())
            }
            Command::Download { manifest, output } => download::download(&manifest, &output).await,
            Command::Hips {
                command:
                    HipsCommand::Build {
                        collection,
                        bands,
                        order,
                        stretch,
                        cut,
                        color,
                        force,
                    },
            } => {
                let opts = hips::HipsOptions {
                    collection,
                    bands,
                    order,
                    stretch: aster_processing::stretch::Stretch::parse(&stretch).with_context(
                        || format!("--stretch {stretch}: not linear, sqrt, log or asinh"),
                    )?,
                    cut: cut.map(|c| hips::parse_cut(&c)).transpose()?,
                    colour: if color == "none" {
                        Vec::new()
                    } else {
                        color.split(',').map(|b| b.trim().to_string()).collect()
                    },
                    force,
                    ..Default::default()
                };
                if opts
                    .order
                    .is_some_and(|o| o > aster_processing::hips::MAX_ORDER)
                {
                    anyhow::bail!(
                        "--order must be at most {}",
                        aster_processing::hips::MAX_ORDER
                    );
                }
                let registry = config.open_registry()?;
                let summary = hips::build(&config.data_dir, &registry, &opts)?;
                for (id, tiles) in &summary.built {
                    println!("{id}: {tiles} tiles written or updated");
                }
                Ok(())
            }
            Command::Hips {
                command:
                    HipsCommand::Catalog {
                        table,
                        id,
                        columns,
                        ra,
                        dec,
                        order_by,
                        per_tile,
                        max_order,
                    },
            } => {
                let mut opts = hips_catalog::CatalogHipsOptions {
                    id,
                    table,
                    ra,
                    dec,
                    order_by,
                    per_tile,
                    max_order,
                    ..Default::default()
                };
                if let Some(c) = columns {
                    opts.columns = c.split(',').map(|c| c.trim().to_string()).collect();
                }
                let store = server::open_store(&config)?;
                let (rows, tiles) = hips_catalog::build(&config.data_dir, &store, &opts).await?;
                println!("{}: {rows} rows in {tiles} tiles", opts.id);
                Ok(())
            }
            Command::Night {
                command:
                    NightCommand::Run {
                        visits,
                        night,
                        nights,
                        epoch,
                        size,
                        stars,
                        galaxies,
                        variables,
                        transients,
                        asteroids,
                        template_visits,
                        from_raw,
                        seed,
                        out,
                    },
            } => {
                let store = server::open_store(&config)?;
                let alerts = server::open_alerts(&config)?;
                let out = out.unwrap_or_else(|| config.data_dir.join("night"));
                for n in night..night.saturating_add(nights.max(1)) {
                    let spec = night::NightSpec {
                        seed,
                        night: n,
                        epoch,
                        visits,
                        size,
                        stars,
                        galaxies,
                        variables,
                        transients,
                        asteroids,
                        template_visits,
                        from_raw,
                        out: if nights > 1 {
                            out.join(format!("night-{n}"))
                        } else {
                            out.clone()
                        },
                    };
                    let s = night::run(&store, &alerts, &spec).await?;
                    let mut l = s.latencies.clone();
                    l.sort_by(f64::total_cmp);
                    println!(
                        "night {n}: {} visits, {} DIASources ({} of known asteroids), {} DIAObjects; latency per CCD p50 {:.2} s, max {:.2} s; records in {}",
                        s.visits,
                        s.dia_sources,
                        s.ss_sources,
                        s.dia_objects,
                        l.get(l.len() / 2).copied().unwrap_or(f64::NAN),
                        l.last().copied().unwrap_or(f64::NAN),
                        spec.out.display()
                    );
                }
                Ok(())
            }
            Command::Coadd {
                command:
                    CoaddCommand::Build {
                        inputs,
                        output,
                        bands,
                        pixel_scale,
                        clip_sigma,
                    },
            } => {
                let registry = config.open_registry()?;
                let mut opts = coadd::CoaddOptions {
                    inputs,
                    output,
                    bands,
                    pixel_scale,
                    ..Default::default()
                };
                opts.config.clip_sigma = clip_sigma;
                let summary = coadd::build(&registry, &opts)?;
                for id in &summary.built {
                    println!("built {id}");
                }
                println!(
                    "{} coadds built, {} up to date",
                    summary.built.len(),
                    summary.unchanged
                );
                Ok(())
            }
            Command::Ingest {
                command: IngestCommand::Raw { files },
            } => {
                let registry = config.open_registry()?;
                let (done, refused) = datasets::ingest_raws(&registry, &files);
                for d in &done {
                    println!("ingested {} ({} bytes) as {}", d.path, d.size, d.id);
                }
                for r in &refused {
                    eprintln!("refused {r}");
                }
                println!("{} ingested, {} refused", done.len(), refused.len());
                if !refused.is_empty() {
                    bail!("{} of {} files were refused", refused.len(), files.len());
                }
                Ok(())
            }
            Command::Pipeline {
                command:
                    PipelineCommand::Run {
                        pipeline,
                        where_,
                        overrides,
                        refcat,
                    },
            } => {
                // Validate everything before touching any data.
                let p = pipeline::definition::load(&pipeline, &overrides)?;
                let store = server::open_store(&config)?;
                let registry = config.open_registry()?;
                pipeline::run::run(
                    &config.data_dir,
                    &store,
                    &registry,
                    &p,
                    &where_,
                    refcat.as_deref(),
                )
                .await
            }
            Command::Pipeline {
                command:
                    PipelineCommand::SingleFrame {
                        image,
                        output,
                        refcat,
                        band,
                        overrides,
                    },
            } => {
                let band = band
                    .map(|b| {
                        aster_processing::sky::band_index(&b)
                            .with_context(|| format!("--band {b}: expected one of u g r i z y"))
                    })
                    .transpose()?;
                pipeline::single_frame(
                    &image,
                    &output,
                    &pipeline::SingleFrameOptions {
                        refcat: refcat.as_deref(),
                        band,
                        overrides: &overrides,
                    },
                )
            }
            Command::Adql { .. } => unreachable!("handled above"),
        }
    })
}

/// `aster adql check`: one query per file, or one query on stdin.
fn adql_check(files: &[PathBuf]) -> Result<i32> {
    let mut inputs = Vec::new();
    if files.is_empty() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        inputs.push(("<stdin>".to_string(), text));
    }
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        inputs.push((f.display().to_string(), text));
    }
    if inputs.is_empty() {
        bail!("no query given");
    }
    let mut invalid = 0;
    for (name, text) in &inputs {
        match aster_adql::validate::check(text) {
            Ok(()) => println!("{name}: valid"),
            Err(e) => {
                invalid += 1;
                println!("{name}: invalid: {e}");
            }
        }
    }
    Ok(if invalid > 0 { 1 } else { 0 })
}
