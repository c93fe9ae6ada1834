//! Where bad records go: a dead-letter topic (original key, value and
//! headers, plus headers saying why and where from), or, without one, the
//! table's policy: fail the stream with one line naming the record, or skip
//! it. Every bad record counts in `equipoise_bad_records_total{reason}`,
//! whatever happens to it.

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::{DataFusionError, Result, exec_datafusion_err};
use equipoise_operators::metrics::SharedMetrics;
use prometheus::IntCounter;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::decode::{BadRecord, Message};
use super::options::{BadRecordPolicy, KafkaOptions};

/// Headers a dead letter carries besides the original ones.
pub const ERROR_HEADER: &str = "equipoise.error";
pub const REASON_HEADER: &str = "equipoise.reason";
pub const TOPIC_HEADER: &str = "equipoise.source.topic";
pub const PARTITION_HEADER: &str = "equipoise.source.partition";
pub const OFFSET_HEADER: &str = "equipoise.source.offset";

/// How long a dead letter may wait in the producer's queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// The bad-record route of one source.
pub struct DeadLetters {
    operator_id: String,
    policy: BadRecordPolicy,
    producer: Option<(FutureProducer, String)>,
    shared: Arc<SharedMetrics>,
    written: IntCounter,
}

impl DeadLetters {
    /// `written` counts dead letters the broker acknowledged.
    pub fn try_new(
        options: &KafkaOptions,
        operator_id: &str,
        shared: &Arc<SharedMetrics>,
        written: IntCounter,
    ) -> Result<Self> {
        let producer = match &options.dead_letter_topic {
            None => None,
            Some(topic) => {
                let producer: FutureProducer = options.producer_config().create().map_err(|e| {
                    DataFusionError::Plan(format!(
                        "kafka: cannot create the dead-letter producer for '{topic}': {e}"
                    ))
                })?;
                Some((producer, topic.clone()))
            }
        };
        Ok(Self {
            operator_id: operator_id.to_string(),
            policy: options.bad_records,
            producer,
            shared: Arc::clone(shared),
            written,
        })
    }

    /// Count `bad` (a record of `message`) and route it: to the dead-letter
    /// topic, acknowledged before this returns; else fail or skip.
    pub async fn route(&mut self, message: &Message, bad: &BadRecord) -> Result<()> {
        self.shared
            .bad_records
            .with_label_values(&[self.operator_id.as_str(), bad.reason.name()])
            .inc();
        let Some((producer, topic)) = &self.producer else {
            return match self.policy {
                BadRecordPolicy::Fail => Err(exec_datafusion_err!(
                    "kafka: bad record at {}/{}@{} ({}): {}",
                    message.topic,
                    message.partition,
                    message.offset,
                    bad.reason.name(),
                    bad.error
                )),
                BadRecordPolicy::Skip => {
                    tracing::debug!(
                        operator = %self.operator_id,
                        topic = %message.topic,
                        partition = message.partition,
                        offset = message.offset,
                        reason = bad.reason.name(),
                        error = %bad.error,
                        "bad record skipped"
                    );
                    Ok(())
                }
            };
        };
        let mut headers = OwnedHeaders::new();
        for (key, value) in &message.headers {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        let partition = message.partition.to_string();
        let offset = message.offset.to_string();
        for (key, value) in [
            (ERROR_HEADER, bad.error.as_str()),
            (REASON_HEADER, bad.reason.name()),
            (TOPIC_HEADER, message.topic.as_str()),
            (PARTITION_HEADER, partition.as_str()),
            (OFFSET_HEADER, offset.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(key) = &message.key {
            record = record.key(key.as_slice());
        }
        if let Some(payload) = &message.payload {
            record = record.payload(payload.as_slice());
        }
        producer
            .send(record, QUEUE_TIMEOUT)
            .await
            .map_err(|(e, _)| {
                exec_datafusion_err!(
                    "kafka: cannot write the bad record {}/{}@{} to dead-letter topic '{topic}': {e}",
                    message.topic,
                    message.partition,
                    message.offset
                )
            })?;
        self.written.inc();
        Ok(())
    }

    /// Wait until every dead letter is acknowledged.
    pub async fn flush(&self) -> Result<()> {
        let Some((producer, _)) = &self.producer else {
            return Ok(());
        };
        let producer = producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(QUEUE_TIMEOUT))
            .await
            .map_err(|e| DataFusionError::Internal(format!("kafka: flush did not finish: {e}")))?
            .map_err(|e| exec_datafusion_err!("kafka: dead letters not acknowledged: {e}"))
    }
}
