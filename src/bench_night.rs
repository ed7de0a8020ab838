//! `aster bench night`: alert production's latency per CCD from the raw exposures to the
//! alerts in the archive (DMS-REQ-0004; issue 5's target is 10 s for a 4k x 4k CCD on one
//! core): a simulated night run from raw (`aster night run --from-raw`) with the field's
//! population scaled to the CCD's area, then p50 and max over its visits, in total and per
//! stage. Its own data directory (`<data dir>/bench-night`) is emptied of catalogs and
//! alerts at each run; the instrument's calibration products are kept for the next.
use anyhow::{Context, Result};

use crate::config::Config;
use crate::night::{NightSpec, run};

pub async fn night(
    config: &Config,
    size: usize,
    visits: usize,
    template_visits: usize,
) -> Result<()> {
    let dir = config.data_dir.join("bench-night");
    for stale in ["catalogs", "alerts"] {
        let p = dir.join(stale);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("emptying {}", p.display()))?;
        }
    }
    let mut bench = config.clone();
    bench.data_dir = dir.clone();
    bench.catalog_url = None;
    let d = NightSpec::default();
    // The demo's field density on a CCD of this size.
    let area = (size as f64 / d.size as f64).powi(2);
    let scaled = |n: usize| (n as f64 * area).round() as usize;
    let spec = NightSpec {
        visits,
        size,
        stars: scaled(d.stars),
        galaxies: scaled(d.galaxies),
        variables: scaled(d.variables),
        transients: scaled(d.transients),
        asteroids: scaled(d.asteroids),
        template_visits,
        from_raw: true,
        out: dir.join("night"),
        ..d
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "a night of {visits} visits of a {size} x {size} CCD from raw exposures, on {cores} core(s): \
         {} stars, {} galaxies, {} variables, {} transients, {} asteroids",
        spec.stars, spec.galaxies, spec.variables, spec.transients, spec.asteroids
    );
    let s = run(
        &crate::server::open_store(&bench)?,
        &crate::server::open_alerts(&bench)?,
        &spec,
    )
    .await?;
    let p50_max = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        (
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN),
            v.last().copied().unwrap_or(f64::NAN),
        )
    };
    println!(
        "\n{} DIASources ({} of known asteroids) and as many alerts, {} DIAObjects",
        s.dia_sources, s.ss_sources, s.dia_objects
    );
    println!("\nlatency per CCD, raw exposures to alerts archived (s)");
    println!("  {:<16} {:>7} {:>7}", "stage", "p50", "max");
    for (name, seconds) in &s.stages {
        let (p50, max) = p50_max(seconds);
        println!("  {name:<16} {p50:>7.2} {max:>7.2}");
    }
    let (p50, max) = p50_max(&s.latencies);
    println!("  {:<16} {p50:>7.2} {max:>7.2}", "total");
    println!(
        "\nfigures: python3 tests/alert_figures.py {}",
        spec.out.display()
    );
    Ok(())
}
