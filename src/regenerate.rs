//! On-demand regeneration (DMS-REQ-0311, 0310): a processed visit image that is not in
//! the store is made again from what its provenance names (the raws, the calibration
//! products and the reference catalogue, each checksum-verified, and the pipeline
//! configuration as it ran) into a cache, where it lives a configurable time after its
//! last use. Eviction deletes only cache files, never archived datasets.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use aster_archive::exposure_file::write_exposure;
use aster_archive::raw_file::read_raw_info;
use aster_archive::registry::{Dataset, DatasetType, Registry};
use aster_protocols::images::Regenerator;

use crate::pipeline::definition;
use crate::pipeline::run::{DataId, process_in_memory};

pub struct PipelineRegenerator {
    inner: Arc<Inner>,
    /// One regeneration at a time: each uses every core, and two requests for one image
    /// should not both make it.
    running: tokio::sync::Mutex<()>,
}

struct Inner {
    data_dir: PathBuf,
    cache: PathBuf,
    registry: Arc<Registry>,
    lifetime: Duration,
}

impl PipelineRegenerator {
    pub fn new(data_dir: &Path, registry: Arc<Registry>, lifetime: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                cache: data_dir.join("cache").join("regenerated"),
                registry,
                lifetime,
            }),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Deletes cached images unused for longer than the lifetime; returns how many.
    pub fn evict(&self) -> Result<usize> {
        self.inner.evict()
    }
}

impl Inner {
    fn cached(&self, d: &Dataset) -> PathBuf {
        self.cache.join(format!("{}.fits", d.id))
    }

    /// Deletes cached images unused for longer than the lifetime; returns how many.
    pub fn evict(&self) -> Result<usize> {
        let Ok(entries) = std::fs::read_dir(&self.cache) else {
            return Ok(0);
        };
        let mut n = 0;
        for e in entries {
            let path = e?.path();
            let age = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok());
            if age.is_some_and(|a| a > self.lifetime) {
                std::fs::remove_file(&path)
                    .with_context(|| format!("evicting {}", path.display()))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Runs the calexp's pipeline again from its recorded inputs.
    fn make(&self, d: &Dataset) -> Result<PathBuf> {
        if d.dataset_type != DatasetType::Calexp {
            bail!(
                "{} is a {}, which the archive cannot make again",
                d.id,
                d.dataset_type
            );
        }
        let p = d
            .provenance
            .as_ref()
            .with_context(|| format!("{} has no provenance", d.id))?;
        let pipeline = definition::parse(&p.config.to_string(), &[])
            .context("the recorded pipeline configuration")?;
        let mut snaps = Vec::new();
        let mut refcat = None;
        for input in &p.inputs {
            let i = self
                .registry
                .get(input)?
                .with_context(|| format!("input {input} is not in the registry"))?;
            // Every input must be the very file that was used.
            let path = self.registry.verified_path(&i)?;
            match i.dataset_type {
                DatasetType::Raw => snaps.push((path.clone(), read_raw_info(&path)?)),
                DatasetType::RefCat => refcat = Some(path),
                _ => {}
            }
        }
        snaps.sort_by_key(|(_, info)| info.snap);
        let first = &snaps.first().context("no raw among the inputs")?.1;
        let id = DataId {
            visit: first.visit.context("the raw has no visit")?,
            detector: first.detector,
            detector_name: first.detector_name.clone(),
            band: first.band.context("the raw has no band")?,
            snaps: snaps.clone(),
        };
        let refs = crate::pipeline::refcat::read_refcat(
            &refcat.context("no reference catalogue among the inputs")?,
            None,
        )?;
        let mut timings = Vec::new();
        let made = process_in_memory(&self.data_dir, &pipeline, &id, &refs, &mut timings)?;
        let path = self.cached(d);
        std::fs::create_dir_all(&self.cache)?;
        write_exposure(&path, &made.exposure)?;
        tracing::info!(dataset = %d.id, ?timings, "regenerated");
        Ok(path)
    }
}

#[async_trait::async_trait]
impl Regenerator for PipelineRegenerator {
    async fn regenerate(&self, d: &Dataset) -> Result<PathBuf, String> {
        let _turn = self.running.lock().await;
        let path = self.inner.cached(d);
        if path.exists() {
            // A use renews the cache lifetime.
            let _ = std::fs::File::options()
                .append(true)
                .open(&path)
                .and_then(|f| f.set_modified(SystemTime::now()));
            return Ok(path);
        }
        let me = self.inner.clone();
        let d = d.clone();
        tokio::task::spawn_blocking(move || me.make(&d).map_err(|e| format!("{e:#}")))
            .await
            .map_err(|e| e.to_string())?
    }
}
