//! Alerts on Apache Kafka (DMS-REQ-0002): each alert a message on the configured topic,
//! in the Confluent wire format (a zero byte, the schema id 1101, the Avro body), keyed by
//! its alert id, so any Kafka consumer with Rubin's schema reads it (confluent-kafka,
//! kafka-python).
//!
//! The producer is idempotent, and its messages never time out: while a broker is away they
//! wait in librdkafka's queue and go, in order and once, when it is back. A batch counts as
//! delivered only when every message is acknowledged by the broker.
//!
//! `brokers = "mock"` starts librdkafka's own mock cluster inside the process (one broker on
//! a free local port, the topic created): a Kafka endpoint for demonstrations and tests
//! where no Kafka runs; its address is in [`KafkaSink::bootstrap`].
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use aster_archive::alerts::confluent_frame;

use super::distribute::{Delivery, Sink};

pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
    bootstrap: String,
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
        Ok(Self {
            producer,
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
