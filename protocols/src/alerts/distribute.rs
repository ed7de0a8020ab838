//! Alert distribution (DMS-REQ-0002): each sink (Kafka, a VOEvent broker, the filter
//! service) follows the alert archive from its own cursor, delivers what is new in archive
//! order, and moves its cursor only when the whole batch is delivered. A sink that fails
//! (its broker is down) retries the same batch with a growing pause; alerts archived
//! meanwhile wait in the archive, so none is lost, and the cursor keeps any from being sent
//! twice by Aster.
use std::sync::Arc;
use std::time::Duration;

use aster_archive::alerts::{AlertArchive, AlertQuery, AlertRef};

/// How often the archive is looked at for new alerts.
const POLL: Duration = Duration::from_millis(200);
/// Alerts taken at a time.
const BATCH: usize = 500;
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// An alert to deliver: where it is in the archive, and its Avro body.
pub struct Delivery {
    pub alert: AlertRef,
    pub body: Vec<u8>,
}

#[async_trait::async_trait]
pub trait Sink: Send + Sync + 'static {
    /// The cursor's name in the archive.
    fn name(&self) -> &str;
    /// Delivers every alert of the batch, in order, or fails.
    async fn deliver(&self, batch: &[Delivery]) -> Result<(), String>;
}

/// Follows the archive for `sink` until the process ends.
pub fn spawn(archive: AlertArchive, sink: Arc<dyn Sink>) {
    tokio::spawn(async move {
        let mut backoff = POLL;
        loop {
            match step(&archive, sink.as_ref()).await {
                Ok(0) => {
                    backoff = POLL;
                    tokio::time::sleep(POLL).await;
                }
                Ok(n) => {
                    backoff = POLL;
                    tracing::debug!(sink = sink.name(), alerts = n, "alerts delivered");
                }
                Err(e) => {
                    tracing::warn!(sink = sink.name(), error = %e, retry_in = ?backoff, "alert delivery failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    });
}

/// Delivers the next batch; returns how many alerts went.
async fn step(archive: &AlertArchive, sink: &dyn Sink) -> Result<usize, String> {
    let name = sink.name().to_string();
    let a = archive.clone();
    let batch = tokio::task::spawn_blocking(move || {
        let after = a.cursor(&name)?;
        let refs = a.find(&AlertQuery {
            after_seq: Some(after),
            limit: BATCH,
            ..Default::default()
        })?;
        refs.into_iter()
            .map(|r| {
                let body = a.read(&r)?;
                Ok(Delivery { alert: r, body })
            })
            .collect::<Result<Vec<_>, aster_archive::alerts::AlertArchiveError>>()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let Some(last) = batch.last().map(|d| d.alert.seq) else {
        return Ok(0);
    };
    sink.deliver(&batch).await?;
    let (a, name) = (archive.clone(), sink.name().to_string());
    tokio::task::spawn_blocking(move || a.advance(&name, last))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(batch.len())
}
