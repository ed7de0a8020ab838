//! Alerts on Apache Kafka (DMS-REQ-0002): each alert a message on the configured topic,
//! in the Confluent wire format (a zero byte, the schema id 1101, the Avro body), keyed by
//! its alert id, so any Kafka consumer with Rubin's schema reads it (confluent-kafka,
//! kafka-python).
//!
//! The producer is idempotent, and its messages never time out: while a broker is away they
//! wait in librdkafka's queue and go, in order and once, when it is back. A batch counts as
//! delivered only when every message is acknowledged by the broker.
//!
//! Users' saved filters have topics of their own ([`UserTopicsSink`]).
//!
//! A topic is looked up before it is first written to, and made if the brokers do not have
//! it (with their default partitions and replication): production brokers do not make
//! topics on demand (Kafka with `auto.create.topics.enable=false`, Tansu). While that fails
//! the batch is not delivered and is tried again.
//!
//! `brokers = "mock"` starts librdkafka's own mock cluster inside the process (one broker on
//! a free local port, the topic created): a Kafka endpoint for demonstrations and tests
//! where no Kafka runs; its address is in [`KafkaSink::bootstrap`].
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use aster_archive::alerts::{AlertArchive, confluent_frame};

use super::distribute::{Delivery, Sink};
use super::filter::{AlertRows, Filter};

pub struct KafkaSink {
    producer: FutureProducer,
    topics: Arc<Topics>,
    topic: String,
    bootstrap: String,
}

/// Makes topics on the brokers, once each.
struct Topics {
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist.
    made: tokio::sync::Mutex<HashSet<String>>,
}

impl Topics {
    /// Makes those of `names` not yet known to exist (one that exists already is fine).
    async fn ensure<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
        let mut made = self.made.lock().await;
        let unknown: BTreeSet<String> = names
            .into_iter()
            .filter(|n| !made.contains(*n))
            .map(str::to_string)
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        // A broker that makes topics on demand makes one when asked for it here (librdkafka's
        // mock cluster, which has no controller to make one any other way, among them).
        let producer = self.producer.clone();
        let (found, missing): (Vec<String>, Vec<String>) = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for topic in unknown {
                let metadata = producer
                    .client()
                    .fetch_metadata(Some(&topic), Duration::from_secs(10))
                    .map_err(|e| format!("looking up topic {topic}: {e}"))?;
                let exists = metadata.topics().iter().any(|t| {
                    t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                });
                if exists {
                    found.push(topic);
                } else {
                    missing.push(topic);
                }
            }
            Ok::<_, String>((found, missing))
        })
        .await
        .map_err(|e| e.to_string())??;
        made.extend(found);
        if missing.is_empty() {
            return Ok(());
        }
        // -1: the broker's default partition count and replication factor.
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|t| NewTopic::new(t, -1, TopicReplication::Fixed(-1)))
            .collect();
        let options = AdminOptions::new()
            .request_timeout(Some(Duration::from_secs(10)))
            .operation_timeout(Some(Duration::from_secs(10)));
        let results = self
            .admin
            .create_topics(&new, &options)
            .await
            .map_err(|e| format!("creating topics: {e}"))?;
        for r in results {
            match r {
                Ok(t) | Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    made.insert(t);
                }
                Err((t, e)) => return Err(format!("creating topic {t}: {e}")),
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("Kafka: the mock cluster did not start")]
    NoMock,
    #[error("Kafka: {0}")]
    Config(String),
}

impl KafkaSink {
    pub fn connect(brokers: &str, topic: &str) -> Result<Self, KafkaSinkError> {
        if topic.is_empty()
            || topic.len() > 249
            || !topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(KafkaSinkError::Config(format!(
                "'{topic}' is not a Kafka topic name (letters, digits, '.', '_', '-')"
            )));
        }
        let mock = brokers.trim() == "mock";
        let mut config = ClientConfig::new();
        if mock {
            config.set("test.mock.num.brokers", "1");
        } else {
            config.set("bootstrap.servers", brokers);
        }
        config
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "0")
            .set("queue.buffering.max.messages", "1000000")
            .set("linger.ms", "5")
            .set("reconnect.backoff.max.ms", "1000")
            // Alerts with their cutouts and history reach a few hundred kilobytes.
            .set("message.max.bytes", "10000000");
        let producer: FutureProducer = config.create()?;
        let bootstrap = if mock {
            let cluster = producer
                .client()
                .mock_cluster()
                .ok_or(KafkaSinkError::NoMock)?;
            cluster.create_topic(topic, 1, 1)?;
            cluster.bootstrap_servers()
        } else {
            brokers.to_string()
        };
        let admin = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("reconnect.backoff.max.ms", "1000")
            .create()?;
        Ok(Self {
            producer: producer.clone(),
            topics: Arc::new(Topics {
                producer,
                admin,
                made: Default::default(),
            }),
            topic: topic.to_string(),
            bootstrap,
        })
    }

    /// The brokers consumers connect to.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
}

#[async_trait::async_trait]
impl Sink for KafkaSink {
    fn name(&self) -> &str {
        "kafka"
    }

    async fn deliver(&self, batch: &[Delivery]) -> Result<(), String> {
        let messages: Vec<(String, Vec<u8>)> = batch
            .iter()
            .map(|d| (d.alert.alert_id.to_string(), confluent_frame(&d.body)))
            .collect();
        self.topics.ensure([self.topic.as_str()]).await?;
        let sends = messages.iter().map(|(key, payload)| {
            self.producer.send(
                FutureRecord::to(&self.topic).key(key).payload(payload),
                Timeout::Never,
            )
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| e.to_string())?;
        }
        Ok(())
    }
}

/// Each user's saved filters as a Kafka topic of their own (DMS-REQ-0342, 0343): an alert
/// that passes any of a user's filters goes once to `<topic>.<user>` (the user's name with
/// what a topic name cannot hold made `_`), in the same wire format, with the ids of the
/// filters it passed in the `aster-filters` header. It follows the archive with a cursor
/// of its own, so a user's topic gets what their filters pass from when they were saved.
pub struct UserTopicsSink {
    producer: FutureProducer,
    topics: Arc<Topics>,
    archive: AlertArchive,
    topic: String,
    /// Compiled filters by id (a saved filter never changes; deleted ones are dropped).
    compiled: tokio::sync::Mutex<HashMap<i64, Option<Arc<Filter>>>>,
}

impl UserTopicsSink {
    /// Users' topics next to `alerts`' topic, through its producer.
    pub fn new(alerts: &KafkaSink, archive: AlertArchive) -> Self {
        Self {
            producer: alerts.producer.clone(),
            topics: alerts.topics.clone(),
            archive,
            topic: alerts.topic.clone(),
            compiled: Default::default(),
        }
    }

    /// The topic of `user`'s filtered alerts.
    pub fn topic_of(alerts_topic: &str, user: &str) -> String {
        let user: String = user
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{alerts_topic}.{user}").chars().take(249).collect()
    }

    /// Every saved filter, compiled, with its owner.
    async fn filters(&self) -> Result<Vec<(String, i64, Arc<Filter>)>, String> {
        let archive = self.archive.clone();
        let saved = tokio::task::spawn_blocking(move || archive.all_filters())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let mut compiled = self.compiled.lock().await;
        compiled.retain(|id, _| saved.iter().any(|f| f.id == *id));
        let mut out = Vec::with_capacity(saved.len());
        for f in saved {
            let filter = match compiled.entry(f.id) {
                std::collections::hash_map::Entry::Occupied(e) => e.get().clone(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    // A filter was valid when saved; one the schema no longer accepts is
                    // skipped (its owner's stream says why).
                    let filter = Filter::compile(&f.expression).await;
                    if let Err(err) = &filter {
                        tracing::warn!(filter = f.id, error = %err, "a saved filter no longer compiles");
                    }
                    e.insert(filter.ok().map(Arc::new)).clone()
                }
            };
            if let Some(filter) = filter {
                out.push((f.owner, f.id, filter));
            }
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl Sink for UserTopicsSink {
    fn name(&self) -> &str {
        "kafka-users"
    }

    async fn deliver(&self, batch: &[Delivery]) -> Result<(), String> {
        let filters = self.filters().await?;
        if filters.is_empty() || batch.is_empty() {
            return Ok(());
        }
        let bodies: Vec<&[u8]> = batch.iter().map(|d| d.body.as_slice()).collect();
        let hosts: Vec<_> = batch.iter().map(|d| d.alert.host).collect();
        let rows = AlertRows::decode(&bodies, &hosts).map_err(|e| e.to_string())?;
        // Per user, each passing alert once with the filters it passed.
        let mut passed: BTreeMap<&str, BTreeMap<usize, Vec<i64>>> = BTreeMap::new();
        for (owner, id, filter) in &filters {
            for i in filter.rows(&rows).map_err(|e| e.to_string())? {
                passed
                    .entry(owner.as_str())
                    .or_default()
                    .entry(i)
                    .or_default()
                    .push(*id);
            }
        }
        let messages: Vec<(String, String, Vec<u8>, String)> = passed
            .iter()
            .flat_map(|(owner, alerts)| {
                let topic = Self::topic_of(&self.topic, owner);
                alerts.iter().map(move |(&i, ids)| {
                    let d = &batch[i];
                    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
                    (
                        topic.clone(),
                        d.alert.alert_id.to_string(),
                        confluent_frame(&d.body),
                        ids.join(","),
                    )
                })
            })
            .collect();
        self.topics
            .ensure(messages.iter().map(|(topic, ..)| topic.as_str()))
            .await?;
        let sends = messages.iter().map(|(topic, key, payload, ids)| {
            self.producer.send(
                FutureRecord::to(topic).key(key).payload(payload).headers(
                    OwnedHeaders::new().insert(Header {
                        key: "aster-filters",
                        value: Some(ids.as_bytes()),
                    }),
                ),
                Timeout::Never,
            )
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| e.to_string())?;
        }
        Ok(())
    }
}
