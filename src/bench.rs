//! `aster bench tap`: typical queries timed end to end through HTTP (request to last byte),
//! printing p50 and p95 per query. Run it against a server holding a large release, e.g.
//! `aster demo --objects 10000000 --visits 0` then `aster serve`.
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

struct Case {
    name: &'static str,
    query: String,
    /// A CSV table sent as `TAP_UPLOAD.pos`.
    upload: Option<String>,
}

/// 10 000 positions scattered over 3 x 3 degrees around (ra, dec), deterministically.
fn upload_positions(ra: f64, dec: f64, seed: u64) -> String {
    let mut s = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut csv = String::from("id,ra,dec\n");
    for id in 0..10_000 {
        let d = dec + (next() - 0.5) * 3.0;
        let r = ra + (next() - 0.5) * 3.0 / d.to_radians().cos();
        csv.push_str(&format!("{id},{r:.7},{d:.7}\n"));
    }
    csv
}

fn cases(i: usize) -> Vec<Case> {
    // Centres move between repetitions so caches do not answer for the engine.
    let ra = 62.0 + (i % 7) as f64 * 0.3 - 0.9;
    let dec = -37.0 + (i % 5) as f64 * 0.3 - 0.6;
    let plain = |name, query: String| Case {
        name,
        query,
        upload: None,
    };
    vec![
        plain(
            "cone r=0.1 deg",
            format!(
                "SELECT objectId, coord_ra, coord_dec, r_psfFlux FROM dp.Object WHERE CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', {ra}, {dec}, 0.1)) = 1"
            ),
        ),
        plain(
            "cone r=1 deg",
            format!(
                "SELECT objectId, coord_ra, coord_dec, r_psfFlux FROM dp.Object WHERE CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', {ra}, {dec}, 1.0)) = 1"
            ),
        ),
        plain(
            "COUNT(*) with magnitude cut",
            format!(
                "SELECT COUNT(*) FROM dp.Object WHERE r_psfFlux > {}",
                10f64.powf((31.4 - (22.0 + (i % 3) as f64 * 0.1)) / 2.5)
            ),
        ),
        plain(
            "TOP 1000 ORDER BY flux",
            "SELECT TOP 1000 objectId, coord_ra, coord_dec, r_psfFlux FROM dp.Object ORDER BY r_psfFlux DESC".into(),
        ),
        Case {
            name: "10k upload crossmatch 1\"",
            query: "SELECT u.id, o.objectId, o.r_psfFlux FROM TAP_UPLOAD.pos AS u JOIN dp.Object AS o ON 1 = CONTAINS(POINT('ICRS', o.coord_ra, o.coord_dec), CIRCLE('ICRS', u.ra, u.dec, 1.0/3600))".into(),
            upload: Some(upload_positions(ra, dec, i as u64)),
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
            let this = cases(i).swap_remove(k);
            let mut form = reqwest::multipart::Form::new()
                .text("LANG", "ADQL")
                .text("QUERY", this.query)
                .text("RESPONSEFORMAT", "csv")
                .text("MAXREC", "10000000");
            if let Some(csv) = this.upload {
                form = form.text("UPLOAD", "pos,param:pos").part(
                    "pos",
                    reqwest::multipart::Part::text(csv).file_name("pos.csv"),
                );
            }
            let t = Instant::now();
            let resp = client
                .post(&sync)
                .multipart(form)
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
