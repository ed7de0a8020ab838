//! `aster download MANIFEST`: fetches every dataset a bulk download manifest lists (a
//! file, or a URL of `/api/manifest`), into the archive's layout under the output
//! directory, with a progress bar. Each file is downloaded to `<name>.part`, resumed from
//! where it stopped with an HTTP Range request (If-Range on its checksum, so a changed file
//! starts over), verified against its SHA-256 and only then renamed; files already present
//! with the right checksum are skipped (DMS-REQ-0300, 0346).
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use aster_archive::registry::file_checksum;
use futures::StreamExt;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Manifest {
    datasets: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    id: String,
    path: String,
    url: String,
    size: u64,
    sha256: String,
}

/// A manifest path kept inside the output directory (no absolute paths, no `..`).
fn safe_join(root: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if p.components().any(|c| !matches!(c, Component::Normal(_))) {
        bail!("the manifest's path {rel} leaves the output directory");
    }
    Ok(root.join(p))
}

async fn load(client: &reqwest::Client, manifest: &str) -> Result<Manifest> {
    let text = if manifest.starts_with("http://") || manifest.starts_with("https://") {
        client
            .get(manifest)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("fetching {manifest}"))?
            .text()
            .await?
    } else {
        std::fs::read_to_string(manifest).with_context(|| format!("reading {manifest}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("{manifest} is not a download manifest"))
}

pub async fn download(manifest: &str, output: &Path) -> Result<()> {
    let client = reqwest::Client::builder()
        .build()
        .context("an HTTP client")?;
    let m = load(&client, manifest).await?;
    let total: u64 = m.datasets.iter().map(|d| d.size).sum();
    let bar = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} [{elapsed}] {msg}",
        )
        .expect("a valid template"),
    );
    let (mut fetched, mut skipped) = (0usize, 0usize);
    let mut failures = Vec::new();
    for d in &m.datasets {
        bar.set_message(d.id.clone());
        match fetch(&client, d, output, &bar).await {
            Ok(true) => fetched += 1,
            Ok(false) => skipped += 1,
            Err(e) => {
                let line = format!("{}: {e:#}", d.id);
                bar.suspend(|| eprintln!("{line}"));
                failures.push(line);
            }
        }
    }
    bar.finish_and_clear();
    println!(
        "{fetched} downloaded, {skipped} already present, {} failed ({} datasets, {total} bytes)",
        failures.len(),
        m.datasets.len()
    );
    if !failures.is_empty() {
        bail!(
            "{} of {} datasets failed; run the command again to resume",
            failures.len(),
            m.datasets.len()
        );
    }
    Ok(())
}

/// Fetches one dataset; false when it was already there.
async fn fetch(
    client: &reqwest::Client,
    d: &Entry,
    output: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<bool> {
    let dest = safe_join(output, &d.path)?;
    if dest.exists() && file_checksum(&dest)?.1 == d.sha256 {
        bar.inc(d.size);
        return Ok(false);
    }
    std::fs::create_dir_all(dest.parent().unwrap_or(output))?;
    let part = dest.with_file_name(format!(
        "{}.part",
        dest.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("download")
    ));
    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let mut req = client.get(&d.url);
    if have > 0 && have < d.size {
        req = req
            .header(reqwest::header::RANGE, format!("bytes={have}-"))
            .header(reqwest::header::IF_RANGE, format!("\"{}\"", d.sha256));
    }
    let resp = req
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("GET {}", d.url))?;
    let resumed = resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
    let mut file = if resumed {
        bar.inc(have);
        std::fs::OpenOptions::new().append(true).open(&part)?
    } else {
        std::fs::File::create(&part)?
    };
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("reading {}", d.url))?;
        file.write_all(&chunk)?;
        bar.inc(chunk.len() as u64);
    }
    file.sync_all()?;
    drop(file);
    let (size, sum) = file_checksum(&part)?;
    if sum != d.sha256 || size != d.size {
        std::fs::remove_file(&part)?;
        bail!(
            "the file downloaded ({size} bytes, SHA-256 {sum}) is not the one listed ({} bytes, {}); removed",
            d.size,
            d.sha256
        );
    }
    std::fs::rename(&part, &dest)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_stay_inside_the_output() {
        let root = Path::new("/out");
        assert_eq!(
            safe_join(root, "raw/20250101/x.fits").unwrap(),
            Path::new("/out/raw/20250101/x.fits")
        );
        for bad in ["../x", "/etc/passwd", "raw/../../x", "./x"] {
            assert!(safe_join(root, bad).is_err(), "{bad}");
        }
    }
}
