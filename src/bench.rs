//! `aster bench tap`: typical queries timed end to end through HTTP (request to last byte),
//! printing p50 and p95 per query. Run it against a server holding a large release, e.g.
//! `aster demo --objects 10000000 --visits 0` then `aster serve`.
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

struct Case {
    name: &'static str,
    query: String,
}

fn cases(i: usize) -> Vec<Case> {
    // Centres move between repetitions so caches do not answer for the engine.
    let ra = 62.0 + (i % 7) as f64 * 0.3 - 0.9;
    let dec = -37.0 + (i % 5) as f64 * 0.3 - 0.6;
    vec![
        Case {
            name: "cone r=0.1 deg",
            query: format!(
                "SELECT objectId, coord_ra, coord_dec, r_psfFlux FROM dp.Object WHERE CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', {ra}, {dec}, 0.1)) = 1"
            ),
        },
        Case {
            name: "cone r=1 deg",
            query: format!(
                "SELECT objectId, coord_ra, coord_dec, r_psfFlux FROM dp.Object WHERE CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', {ra}, {dec}, 1.0)) = 1"
            ),
        },
        Case {
            name: "COUNT(*) with magnitude cut",
            query: format!("SELECT COUNT(*) FROM dp.Object WHERE r_psfFlux > {}", 10f64.powf((31.4 - (22.0 + (i % 3) as f64 * 0.1)) / 2.5)),
        },
        Case {
            name: "TOP 1000 ORDER BY flux",
            query: "SELECT TOP 1000 objectId, coord_ra, coord_dec, r_psfFlux FROM dp.Object ORDER BY r_psfFlux DESC".into(),
        },
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub async fn tap(url: &str, repeat: usize) -> Result<()> {
    if repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let client = reqwest::Client::new();
    let sync = format!("{}/sync", url.trim_end_matches('/'));
    println!(
        "{:<30} {:>10} {:>10} {:>10}",
        "query", "p50 (ms)", "p95 (ms)", "rows"
    );
    for (k, case) in cases(0).iter().enumerate() {
        let mut times = Vec::with_capacity(repeat);
        let mut rows = 0;
        for i in 0..repeat {
            let q = &cases(i)[k].query;
            let t = Instant::now();
            let resp = client
                .post(&sync)
                .form(&[
                    ("LANG", "ADQL"),
                    ("QUERY", q.as_str()),
                    ("RESPONSEFORMAT", "csv"),
                    ("MAXREC", "10000000"),
                ])
                .send()
                .await
                .with_context(|| format!("querying {sync}"))?;
            let status = resp.status();
            let body = resp.bytes().await?;
            times.push(t.elapsed());
            if !status.is_success() {
                bail!(
                    "{}: HTTP {status}: {}",
                    case.name,
                    String::from_utf8_lossy(&body)
                );
            }
            rows = body
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                .saturating_sub(1);
        }
        times.sort();
        println!(
            "{:<30} {:>10.1} {:>10.1} {:>10}",
            case.name,
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.95).as_secs_f64() * 1e3,
            rows
        );
    }
    Ok(())
}
