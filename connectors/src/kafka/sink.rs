//! The Kafka sink: `INSERT INTO kafka_table SELECT ...` writes one message
//! per row (a JSON object, a CSV line or a Confluent-framed Avro record, the
//! table's format), keyed by the `key_column` option or a `_key` column.
//! `write_all` returns only when
//! the broker has acknowledged every message it sent, so a plan that
//! finished without error has had its output stored.
//!
//! Columns named like the source's metadata columns (`_partition`,
//! `_offset`, `_timestamp`, `_key`) are not written into the value:
//! `_key` is the key.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow_avro::schema::{FingerprintStrategy, SCHEMA_METADATA_KEY};
use arrow_avro::writer::WriterBuilder;
use arrow_avro::writer::format::AvroSoeFormat;
use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::{DataFusionError, Result, exec_datafusion_err, plan_err};
use datafusion::datasource::sink::DataSink;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};
use equipoise_operators::JobRuntime;
use equipoise_operators::runtime::{CheckpointMetrics, Checkpoints, StoredCut};
use futures::StreamExt;
use prometheus::IntCounter;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::decode::{KEY, METADATA_COLUMNS};
use super::metrics::KafkaMetrics;
use super::options::{Format, KafkaOptions};
use super::transaction::Transaction;

/// Messages sent before the sink waits for their acknowledgements.
const IN_FLIGHT: usize = 50_000;
/// How long a full producer queue is waited on before an error.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);

/// Writes rows to a Kafka topic.
pub struct KafkaSink {
    schema: SchemaRef,
    options: KafkaOptions,
    /// The input columns written into the value.
    value_columns: Vec<usize>,
    /// The input column of the key.
    key_column: Option<usize>,
    /// The Kafka sources of the plan: their positions are committed once
    /// every row is acknowledged.
    sources: Vec<String>,
    /// Under exactly-once delivery, the transaction rows are written in
    /// (set by the job before the plan runs).
    transaction: OnceLock<Transaction>,
}

impl fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.options.topic)
            .finish_non_exhaustive()
    }
}

impl DisplayAs for KafkaSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KafkaSink: topic={}", self.options.topic)
    }
}

impl KafkaSink {
    /// A sink of `table` columns fed rows of `input`.
    pub fn try_new(
        table: SchemaRef,
        input: &SchemaRef,
        options: KafkaOptions,
        sources: Vec<String>,
    ) -> Result<Self> {
        let key_name = options
            .key_column
            .clone()
            .or_else(|| table.index_of(KEY).ok().map(|_| KEY.to_string()));
        let key_column = match &key_name {
            None => None,
            Some(name) => Some(input.index_of(name).map_err(|_| {
                DataFusionError::Plan(format!(
                    "kafka: key column '{name}' is not among the inserted columns"
                ))
            })?),
        };
        let value_columns: Vec<usize> = (0..input.fields().len())
            .filter(|&i| !METADATA_COLUMNS.contains(&input.field(i).name().as_str()))
            .collect();
        if value_columns.is_empty() {
            return plan_err!("kafka: the inserted rows have no value column");
        }
        Ok(Self {
            schema: table,
            options,
            value_columns,
            key_column,
            sources,
            transaction: OnceLock::new(),
        })
    }

    pub fn options(&self) -> &KafkaOptions {
        &self.options
    }

    /// Write in transactions from now on: `transaction` is initialised and
    /// open; it commits at every checkpoint.
    pub fn set_transaction(&self, transaction: Transaction) -> Result<()> {
        self.transaction.set(transaction).map_err(|_| {
            DataFusionError::Internal("kafka: the sink's transaction is set twice".into())
        })
    }

    fn producer(&self) -> Result<FutureProducer> {
        self.options.producer_config().create().map_err(|e| {
            DataFusionError::Plan(format!(
                "kafka: cannot create a producer for topic '{}': {e}",
                self.options.topic
            ))
        })
    }

    /// One encoded value per row of `batch`.
    fn encode(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let values = batch.project(&self.value_columns)?;
        if self.options.format == Format::Avro {
            return self.encode_avro(&values);
        }
        let mut buffer = Vec::new();
        match self.options.format {
            Format::Json => {
                let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut buffer);
                writer.write(&values)?;
                writer.finish()?;
            }
            Format::Csv => {
                let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .build(&mut buffer);
                writer.write(&values)?;
            }
            Format::Avro => {}
        }
        let lines: Vec<Vec<u8>> = buffer
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        if lines.len() != batch.num_rows() {
            return Err(DataFusionError::Internal(format!(
                "kafka: {} rows encoded as {} lines",
                batch.num_rows(),
                lines.len()
            )));
        }
        Ok(lines)
    }

    /// One Confluent-framed Avro record per row of `values`, written with
    /// the table's schema (fields matched by name; the inserted columns
    /// must have its types: cast in the SQL).
    fn encode_avro(&self, values: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let Some(avro) = &self.options.avro else {
            return plan_err!("kafka: 'format' 'avro' needs its writer schema");
        };
        let schema = values.schema();
        let mut metadata = schema.metadata().clone();
        metadata.insert(SCHEMA_METADATA_KEY.to_string(), avro.json.clone());
        let schema = Schema::new_with_metadata(schema.fields().clone(), metadata);
        let avro_error = |e: arrow_avro::errors::AvroError| {
            DataFusionError::Execution(format!(
                "kafka: rows do not fit avro_schema_file '{}': {e}",
                avro.file
            ))
        };
        let mut encoder = WriterBuilder::new(schema)
            .with_fingerprint_strategy(FingerprintStrategy::Id(avro.id))
            .build_encoder::<AvroSoeFormat>()
            .map_err(avro_error)?;
        encoder.encode(values).map_err(avro_error)?;
        let rows = encoder.flush();
        if rows.len() != values.num_rows() {
            return Err(DataFusionError::Internal(format!(
                "kafka: {} rows encoded as {} Avro records",
                values.num_rows(),
                rows.len()
            )));
        }
        Ok(rows.iter().map(|row| row.to_vec()).collect())
    }

    fn keys(&self, batch: &RecordBatch) -> Result<Option<StringArray>> {
        let Some(i) = self.key_column else {
            return Ok(None);
        };
        let keys: ArrayRef = cast(batch.column(i), &DataType::Utf8)?;
        let keys = keys
            .as_any()
            .downcast_ref::<StringArray>()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("kafka: keys did not cast".into()))?;
        Ok(Some(keys))
    }
}

#[async_trait]
impl DataSink for KafkaSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let runtime = JobRuntime::from_config(context.session_config())?;
        let id = runtime.next_operator_id("kafka_sink")?;
        let metrics = runtime.metric_set::<KafkaMetrics>()?;
        let sent = metrics.sent.with_label_values(&[id.as_str()]);
        let checkpoints = runtime.checkpoints();
        let checkpointing = checkpoints.enabled();
        let transaction = match self.transaction.get() {
            Some(transaction) if !checkpointing => {
                return plan_err!(
                    "kafka: transaction '{}' commits at checkpoints, and this job takes none",
                    transaction.id()
                );
            }
            Some(transaction) => Some(SinkTransaction {
                transaction,
                committed: metrics
                    .transactions
                    .with_label_values(&[id.as_str(), "committed"]),
                aborted: metrics
                    .transactions
                    .with_label_values(&[id.as_str(), "aborted"]),
            }),
            None => None,
        };
        let producer = match &transaction {
            Some(t) => t.transaction.producer().clone(),
            None => self.producer()?,
        };
        let topic = self.options.topic.as_str();
        let mut pending: Vec<DeliveryFuture> = Vec::new();
        let mut written = 0u64;
        let checkpoint_metrics = runtime.metric_set::<CheckpointMetrics>()?;
        let completion = CutCompletion {
            topic,
            checkpoints,
            metrics: &checkpoint_metrics,
            transaction: transaction.as_ref(),
        };
        let mut cuts = checkpoints.cuts();
        cuts.mark_unchanged();
        loop {
            let batch = tokio::select! {
                biased;
                changed = cuts.changed(), if checkpointing => {
                    if changed.is_ok() {
                        let epoch = *cuts.borrow_and_update();
                        written += completion.complete(&mut pending, epoch, false).await?;
                    }
                    continue;
                }
                next = data.next() => match next {
                    Some(batch) => batch?,
                    None => break,
                },
            };
            if checkpointing && cuts.has_changed().unwrap_or(false) {
                // A cut taken while this batch was pulled: it covers what
                // was sent before this batch, not this batch.
                let epoch = *cuts.borrow_and_update();
                written += completion.complete(&mut pending, epoch, false).await?;
            }
            let values = self.encode(&batch)?;
            let keys = self.keys(&batch)?;
            for (row, value) in values.iter().enumerate() {
                let mut record: FutureRecord<'_, str, [u8]> =
                    FutureRecord::to(topic).payload(value.as_slice());
                if let Some(keys) = &keys
                    && keys.is_valid(row)
                {
                    record = record.key(keys.value(row));
                }
                loop {
                    match producer.send_result(record) {
                        Ok(delivery) => {
                            pending.push(delivery);
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            record = back;
                            // Let deliveries drain before queueing more.
                            written += acknowledge(&mut pending, topic).await?;
                            tokio::time::sleep(QUEUE_FULL_WAIT).await;
                        }
                        Err((e, _)) => {
                            return Err(exec_datafusion_err!(
                                "kafka: cannot send to topic '{topic}': {e}"
                            ));
                        }
                    }
                }
            }
            if pending.len() >= IN_FLIGHT {
                written += acknowledge(&mut pending, topic).await?;
            }
        }
        written += acknowledge(&mut pending, topic).await?;
        sent.inc_by(written);
        if checkpointing {
            // The final checkpoint, cut when the source ended (under
            // exactly-once with the last transaction; no cut left: the one
            // completed last covered every row, and the open transaction
            // holds none).
            let epoch = *cuts.borrow_and_update();
            completion.complete(&mut pending, epoch, true).await?;
            match &transaction {
                Some(transaction) => tracing::info!(
                    topic,
                    rows = written,
                    epoch = checkpoints.completed_epoch(),
                    transactional_id = transaction.transaction.id(),
                    "kafka sink: every row acknowledged; final checkpoint stored and its \
                     transaction committed"
                ),
                None => {
                    checkpoints.commits_settled().await;
                    tracing::info!(
                        topic,
                        rows = written,
                        epoch = checkpoints.completed_epoch(),
                        "kafka sink: every row acknowledged; final checkpoint stored and committed"
                    );
                }
            }
            return Ok(written);
        }
        // Every row of the plan is stored: its sources' positions are safe.
        // The rows are stored: a commit that still fails leaves their
        // records to be read again (a duplicate, never a loss), so it is
        // reported, not an error of the insert.
        match runtime.commits().commit(&self.sources).await {
            Ok(committed) => tracing::info!(
                topic,
                rows = written,
                committed,
                "kafka sink: every row acknowledged; source offsets committed"
            ),
            Err(e) => tracing::warn!(
                topic,
                rows = written,
                error = %e,
                "kafka sink: every row acknowledged, but the source offsets were not \
                 committed; their records will be read again"
            ),
        }
        Ok(written)
    }
}

/// How the sink completes a checkpoint's cut.
struct CutCompletion<'a> {
    topic: &'a str,
    checkpoints: &'a Checkpoints,
    metrics: &'a CheckpointMetrics,
    /// Under exactly-once, the transaction the cut's offsets commit in.
    transaction: Option<&'a SinkTransaction<'a>>,
}

impl CutCompletion<'_> {
    /// Complete checkpoint `epoch`, cut when everything `pending` was
    /// already sent: wait for those deliveries (the number acknowledged is
    /// returned), then store the checkpoint and commit its offsets, in
    /// the transaction under exactly-once (the `last` one: no next
    /// transaction begins).
    async fn complete(
        &self,
        pending: &mut Vec<DeliveryFuture>,
        epoch: u64,
        last: bool,
    ) -> Result<u64> {
        let acknowledged = acknowledge(pending, self.topic).await?;
        match self.transaction {
            None => {
                self.checkpoints.complete(epoch, self.metrics).await?;
            }
            Some(transaction) => {
                if let Some(stored) = self.checkpoints.store_cut(epoch, self.metrics).await? {
                    transaction.commit(stored, last).await?;
                }
            }
        }
        Ok(acknowledged)
    }
}

/// The sink's transaction and its counters.
struct SinkTransaction<'a> {
    transaction: &'a Transaction,
    committed: IntCounter,
    aborted: IntCounter,
}

impl SinkTransaction<'_> {
    /// Commit the rows sent before `stored` was cut with its offsets; the
    /// checkpoint is already in the store (see `transaction`).
    async fn commit(&self, stored: StoredCut, last: bool) -> Result<()> {
        match self
            .transaction
            .commit(stored.epoch, stored.commit, last)
            .await
        {
            Ok(()) => {
                self.committed.inc();
                Ok(())
            }
            Err(e) => {
                self.aborted.inc();
                Err(e)
            }
        }
    }
}

/// Wait for every pending delivery; the number acknowledged, or the first
/// failure.
async fn acknowledge(pending: &mut Vec<DeliveryFuture>, topic: &str) -> Result<u64> {
    let mut acknowledged = 0;
    for delivery in pending.drain(..) {
        match delivery.await {
            Ok(Ok(_)) => acknowledged += 1,
            Ok(Err((e, _))) => {
                return Err(exec_datafusion_err!(
                    "kafka: the broker did not take a record for topic '{topic}': {e}"
                ));
            }
            Err(_) => {
                return Err(exec_datafusion_err!(
                    "kafka: the producer went away before acknowledging a record for '{topic}'"
                ));
            }
        }
    }
    Ok(acknowledged)
}
