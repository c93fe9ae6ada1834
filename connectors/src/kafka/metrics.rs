//! Prometheus families of the Kafka source and sink. Bad records count in
//! the shared `equipoise_bad_records_total{operator, reason}`.

use equipoise_operators::metrics::MetricSet;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// The families of every Kafka source and sink of a runtime; the
/// `operator` label tells instances apart, `partition` is a Kafka
/// partition number of the topic (bounded by the topic's partitions).
#[derive(Debug)]
pub struct KafkaMetrics {
    pub records: IntCounterVec,
    pub bytes: IntCounterVec,
    pub lag: IntGaugeVec,
    pub sent: IntCounterVec,
    pub dead_letters: IntCounterVec,
    /// Transactions of an exactly-once sink, by `outcome` (`committed`,
    /// `aborted`).
    pub transactions: IntCounterVec,
}

impl MetricSet for KafkaMetrics {
    const NAME: &'static str = "kafka";

    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace("equipoise");
        let records = IntCounterVec::new(
            opts(
                "source_records_total",
                "Kafka records consumed by the source.",
            ),
            &["operator"],
        )?;
        let bytes = IntCounterVec::new(
            opts(
                "source_bytes_total",
                "Bytes of the values of Kafka records consumed by the source.",
            ),
            &["operator"],
        )?;
        let lag = IntGaugeVec::new(
            opts(
                "consumer_lag_records",
                "Records between the source's position and the partition's high watermark.",
            ),
            &["operator", "partition"],
        )?;
        let sent = IntCounterVec::new(
            opts(
                "sink_records_total",
                "Records the Kafka sink wrote and the broker acknowledged.",
            ),
            &["operator"],
        )?;
        let dead_letters = IntCounterVec::new(
            opts(
                "dead_letter_records_total",
                "Bad records written to the dead-letter topic and acknowledged.",
            ),
            &["operator"],
        )?;
        let transactions = IntCounterVec::new(
            opts(
                "sink_transactions_total",
                "Transactions of an exactly-once Kafka sink, one per checkpoint, by outcome.",
            ),
            &["operator", "outcome"],
        )?;
        registry.register(Box::new(transactions.clone()))?;
        registry.register(Box::new(records.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        registry.register(Box::new(sent.clone()))?;
        registry.register(Box::new(dead_letters.clone()))?;
        Ok(Self {
            records,
            bytes,
            lag,
            sent,
            dead_letters,
            transactions,
        })
    }
}
