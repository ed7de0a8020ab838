//! SODA 1.0 `{async}`: cutouts as UWS jobs (`/soda/async`), one result per ID
//! (`cutout-1.fits`, ...); an ID whose image the region misses, or that cannot be cut,
//! gets a text result starting with SODA's error label instead, and the job still
//! completes with the others.
use std::sync::Arc;

use aster_archive::jobs::{Job, JobResult, JobStore};
use tokio::io::AsyncWriteExt;

use super::ImageServices;
use super::params::Params;
use super::soda::{Cutout, SodaRequest, cut};
use crate::uws::{JobRunner, RunningJobs};

pub(super) struct SodaRunner {
    pub services: ImageServices,
    pub jobs: JobStore,
    pub running: RunningJobs,
}

fn request_of(job: &Job) -> Result<SodaRequest, String> {
    SodaRequest::parse(&Params::new(job.parameters.clone()), true).map_err(|(_, m)| m)
}

impl JobRunner for SodaRunner {
    fn validate(&self, job: &Job) -> Result<(), String> {
        request_of(job).map(|_| ())
    }

    fn run(&self, job: Job) {
        let services = self.services.clone();
        let jobs = self.jobs.clone();
        let id = job.id.clone();
        self.running.spawn(self.jobs.clone(), id, async move {
            run_job(&services, &jobs, &job).await
        });
    }

    fn abort(&self, job_id: &str) {
        self.running.abort(job_id);
    }
}

async fn run_job(s: &ImageServices, jobs: &JobStore, job: &Job) -> Result<(), String> {
    let req = request_of(job)?;
    jobs.start(&job.id).map_err(|e| e.to_string())?;
    let mut results = Vec::new();
    for (i, id) in req.ids().iter().enumerate() {
        let n = i + 1;
        let (file_name, media_type, bytes_or_file) = match cut(s, id, &req, job.owner.as_deref())
            .await
        {
            Ok(Cutout::Fits(file)) => (format!("cutout-{n}.fits"), "application/fits", Ok(file)),
            Ok(Cutout::Picture(p, bytes)) => (
                format!("cutout-{n}.{}", p.extension()),
                p.media_type(),
                Err(bytes),
            ),
            Ok(Cutout::NoOverlap) => (
                format!("cutout-{n}.txt"),
                "text/plain",
                Err(format!("Error: the request does not overlap {id}\n").into_bytes()),
            ),
            Err((_, message)) => (
                format!("cutout-{n}.txt"),
                "text/plain",
                Err(format!("{message}\n").into_bytes()),
            ),
        };
        let path = jobs
            .result_path(&job.id, &file_name)
            .map_err(|e| e.to_string())?;
        let mut out = tokio::fs::File::create(&path)
            .await
            .map_err(|e| format!("writing {file_name}: {e}"))?;
        match bytes_or_file {
            Ok(file) => {
                let mut src = tokio::fs::File::from_std(file);
                tokio::io::copy(&mut src, &mut out)
                    .await
                    .map_err(|e| format!("writing {file_name}: {e}"))?;
            }
            Err(bytes) => out
                .write_all(&bytes)
                .await
                .map_err(|e| format!("writing {file_name}: {e}"))?,
        }
        out.flush().await.map_err(|e| e.to_string())?;
        let size = tokio::fs::metadata(&path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        results.push(JobResult {
            id: format!("cutout-{n}"),
            file_name,
            media_type: media_type.into(),
            size,
            rows: None,
        });
    }
    jobs.complete(&job.id, results).map_err(|e| e.to_string())?;
    Ok(())
}

/// The `/soda/async` UWS routes.
pub(super) fn router(
    services: ImageServices,
    jobs: JobStore,
    config: crate::uws::UwsConfig,
) -> axum::Router {
    let runner = Arc::new(SodaRunner {
        services,
        jobs: jobs.clone(),
        running: RunningJobs::default(),
    });
    match crate::uws::resume_interrupted_jobs(&jobs, runner.as_ref(), &config.service) {
        Ok(0) => {}
        Ok(n) => tracing::info!(jobs = n, "resumed SODA jobs interrupted by a restart"),
        Err(e) => tracing::warn!(error = %e, "could not resume interrupted SODA jobs"),
    }
    crate::uws::spawn_reaper(jobs.clone(), runner.clone(), config.service.clone());
    crate::uws::router(jobs, runner, config)
}
