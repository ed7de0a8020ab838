//! `aster bench vospace`: VOSpace throughput. A file of random bytes goes up (HTTP PUT to
//! `/vospace/data`, streamed into the object store with its MD5) and comes back (GET) through
//! the real service on a loopback socket, authenticated with a token, beside a plain copy of
//! the same file on the same disk. Uses a scratch area in the data directory.
use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use aster_archive::identity::{IdentityStore, Scopes, UserName};
use aster_archive::jobs::JobStore;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

pub async fn vospace(config: &crate::config::Config, mib: u64) -> Result<()> {
    let work = config.data_dir.join("bench-vospace");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let result = run(&work, mib).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn run(work: &std::path::Path, mib: u64) -> Result<()> {
    let source = work.join("source.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&source)?);
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..mib {
            rand::Rng::fill(&mut rand::rng(), block.as_mut_slice());
            f.write_all(&block)?;
        }
        f.flush()?;
    }
    let bytes = mib << 20;
    // The service, as `serve` wires it, on a port of its own.
    let identity = IdentityStore::open(&work.join("identity.sqlite"))?;
    let user = UserName::new("bench")?;
    identity.ensure_user(&user, false)?;
    let token = identity.issue_token(&user, "bench", Scopes::ALL, 1)?.token;
    let nodes = aster_vospace::NodeStore::open(
        &work.join("vospace"),
        aster_vospace::objects_at(&work.join("objects").display().to_string())?,
        bytes * 4,
    )?;
    let jobs = JobStore::open(&work.join("jobs.sqlite"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let auth = aster_protocols::auth::Auth::new(identity.clone(), None, None);
    let v = aster_vospace::VoSpace::new(
        nodes,
        identity,
        jobs.clone(),
        "localhost!vospace",
        None,
        base.clone(),
    );
    let app = aster_vospace::router(v, jobs, None).layer(axum::middleware::from_fn_with_state(
        auth,
        aster_protocols::auth::layer,
    ));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let url = format!("{base}/vospace/data/bench/bench.bin");

    let t = Instant::now();
    std::fs::copy(&source, work.join("copy.bin"))?;
    // The copy is not done until its bytes are on the disk, as the upload's are not either.
    std::fs::File::open(work.join("copy.bin"))?.sync_all()?;
    let copy = t.elapsed().as_secs_f64();
    std::fs::remove_file(work.join("copy.bin"))?;

    // The MD5 the service must return with every upload (CADC's vos client checks it) is a
    // floor under the upload's time: MD5 cannot be split across cores.
    let t = Instant::now();
    md5_of(&source)?;
    let md5_alone = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let file = tokio::fs::File::open(&source).await?;
    let body = reqwest::Body::wrap_stream(file_chunks(file));
    let r = client
        .put(&url)
        .bearer_auth(&token)
        .header(reqwest::header::CONTENT_LENGTH, bytes)
        .body(body)
        .send()
        .await
        .context("uploading")?;
    if !r.status().is_success() {
        bail!(
            "upload: HTTP {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    let up = t.elapsed().as_secs_f64();
    // The upload's pages are flushed before the download is timed, which would otherwise
    // pay for their writing-back when it syncs its own file.
    std::process::Command::new("sync").status()?;

    let t = Instant::now();
    let r = client.get(&url).bearer_auth(&token).send().await?;
    if !r.status().is_success() {
        bail!("download: HTTP {}", r.status());
    }
    // First the service alone: the bytes read and dropped, so the client's disk, shared with
    // the server's on this machine, does not count.
    let mut stream = r.bytes_stream();
    let mut received = 0;
    while let Some(chunk) = stream.next().await {
        received += chunk?.len() as u64;
    }
    let down_service = t.elapsed().as_secs_f64();
    if received != bytes {
        bail!("the download is not the size of the upload");
    }
    let t = Instant::now();
    let r = client.get(&url).bearer_auth(&token).send().await?;
    if !r.status().is_success() {
        bail!("download: HTTP {}", r.status());
    }
    let back = work.join("back.bin");
    // Buffered as a copy would be: tokio writes each small network chunk on a thread hop.
    let mut out =
        tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(&back).await?);
    let mut stream = r.bytes_stream();
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk?).await?;
    }
    out.flush().await?;
    out.get_ref().sync_all().await?;
    let down = t.elapsed().as_secs_f64();
    server.abort();
    if std::fs::metadata(&back)?.len() != bytes {
        bail!("the download is not the size of the upload");
    }
    let mb = bytes as f64 / 1e6;
    println!(
        "VOSpace throughput, {mib} MiB through HTTP on loopback, against a plain copy on the same disk"
    );
    println!(
        "{:<22} {:>9} {:>10} {:>14}",
        "", "seconds", "MB/s", "vs plain copy"
    );
    println!(
        "{:<22} {:>9.2} {:>10.0} {:>14}",
        "plain copy (cp)",
        copy,
        mb / copy,
        "1.00x"
    );
    println!(
        "{:<22} {:>9.2} {:>10.0} {:>13.2}x",
        "MD5 alone (one core)",
        md5_alone,
        mb / md5_alone,
        md5_alone / copy
    );
    println!(
        "{:<22} {:>9.2} {:>10.0} {:>13.2}x",
        "upload (PUT)",
        up,
        mb / up,
        up / copy
    );
    println!(
        "{:<22} {:>9.2} {:>10.0} {:>13.2}x",
        "download, not stored",
        down_service,
        mb / down_service,
        down_service / copy
    );
    println!(
        "{:<22} {:>9.2} {:>10.0} {:>13.2}x",
        "download to a file",
        down,
        mb / down,
        down / copy
    );
    Ok(())
}

/// The MD5 of a file, read in 1 MiB blocks.
fn md5_of(path: &std::path::Path) -> Result<[u8; 16]> {
    use md5::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut md5 = md5::Md5::new();
    loop {
        match f.read(&mut buf)? {
            0 => break,
            n => md5.update(&buf[..n]),
        }
    }
    Ok(md5.finalize().into())
}

/// A file as a stream of 1 MiB chunks.
fn file_chunks(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}
