//! The Kafka source: a `StreamingTable` with one partition stream per
//! scan, fed by a consumer loop in its own task through a bounded channel.
//!
//! The loop is a `select!` over the next message, a linger tick and the
//! job's stop request: a batch leaves when it holds `batch_rows` rows or
//! `linger_ms` after its first row; the channel (two batches) is the
//! backpressure, so a consumer that falls behind does not buffer the topic.
//!
//! One output partition per scan, not per Kafka partition: Equipoise's
//! operators are order-sensitive and read one stream, so more output
//! partitions would only be merged again. Per Kafka partition there is a
//! plan instead, when a job keeps its state per partition: its scan reads
//! one partition's feed from the replica's group consumer (`group`). A job
//! scales out by running more replicas in one consumer group, each with
//! its share of the partitions.
//!
//! Bounded reads take the high watermarks when the scan starts and end when
//! every partition's position has reached its watermark. Unbounded reads
//! with `'start' 'committed'` join the consumer group (partitions are spread
//! by the group protocol and move on rebalances); with `earliest` or
//! `latest` they assign every partition of the topic to this consumer.
//!
//! Offsets are not committed by the source itself: see the module docs of
//! `crate::kafka` for the delivery guarantee.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{
    DataFusionError, Result, exec_datafusion_err, internal_err, not_impl_err,
};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use equipoise_operators::JobRuntime;
use equipoise_operators::metrics::SharedMetrics;
use equipoise_operators::runtime::StatefulOperator;
use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc::Sender;
use tokio::time::MissedTickBehavior;

use super::consumer::{
    AbortOnDrop, AssignedPartition, Feed, Positions, SourceConsumer, SourceContext,
    create_consumer, is_transient, kafka_error, owned,
};
use super::dead_letter::DeadLetters;
use super::decode::{Message, RecordDecoder};
use super::metrics::KafkaMetrics;
use super::options::{KafkaOptions, ReadMode, Start};
use super::positions::{Emitted, KafkaCommit, RecordStream, SourcePositions};
use super::sink::KafkaSink;

/// Network calls made off the executor (metadata, watermarks) give up
/// after this long.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Batches in flight between the consumer loop and the plan.
const CHANNEL_BATCHES: usize = 2;
/// How often the consumer lag gauges are refreshed.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// A Kafka topic as a table: scan reads it, `INSERT INTO` writes it.
#[derive(Debug)]
pub struct KafkaTable {
    options: KafkaOptions,
    decoder: RecordDecoder,
}

impl KafkaTable {
    pub fn try_new(schema: SchemaRef, options: KafkaOptions) -> Result<Self> {
        let decoder = RecordDecoder::try_new(
            options.format,
            schema,
            options.label.as_deref(),
            options.max_message_bytes,
            options.avro.as_ref(),
        )?;
        Ok(Self { options, decoder })
    }

    pub fn options(&self) -> &KafkaOptions {
        &self.options
    }
}

#[async_trait]
impl TableProvider for KafkaTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(self.decoder.schema())
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let runtime = JobRuntime::from_config(state.config())?;
        let source_id = runtime.next_operator_id("kafka_source")?;
        // In a job with state per partition, the plan of one partition
        // reads that partition's feed.
        let assigned = state
            .config()
            .get_extension::<AssignedPartition>()
            .filter(|assigned| {
                assigned.topic() == self.options.topic && self.options.mode == ReadMode::Unbounded
            });
        let stream = KafkaPartitionStream {
            operator_id: source_id.clone(),
            options: self.options.clone(),
            decoder: self.decoder.clone(),
            runtime,
            assigned,
        };
        let inner = StreamingTableExec::try_new(
            Arc::clone(self.decoder.schema()),
            vec![Arc::new(stream)],
            projection,
            Vec::new(),
            self.options.mode == ReadMode::Unbounded,
            limit,
        )?;
        Ok(Arc::new(KafkaScanExec {
            inner: Arc::new(inner),
            source_id,
            options: self.options.clone(),
        }))
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return not_impl_err!("kafka: {insert_op} is not supported; a topic is appended to");
        }
        let sources = kafka_scans(input.as_ref())
            .into_iter()
            .map(|scan| scan.source_id.clone())
            .collect();
        let sink = KafkaSink::try_new(
            self.schema(),
            &input.schema(),
            self.options.clone(),
            sources,
        )?;
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// The scan of a Kafka table: DataFusion's streaming scan, under a node
/// that names its source so a sink of the same plan can find it.
#[derive(Debug)]
pub struct KafkaScanExec {
    inner: Arc<dyn ExecutionPlan>,
    source_id: String,
    options: KafkaOptions,
}

impl KafkaScanExec {
    pub fn source_id(&self) -> &str {
        &self.source_id
    }

    /// The options of the table it reads.
    pub fn options(&self) -> &KafkaOptions {
        &self.options
    }
}

/// The options of every Kafka table `plan` reads, in plan order.
pub fn kafka_sources(plan: &dyn ExecutionPlan) -> Vec<KafkaOptions> {
    kafka_scans(plan)
        .into_iter()
        .map(|scan| scan.options.clone())
        .collect()
}

/// Every Kafka scan of `plan`, in plan order.
pub(crate) fn kafka_scans(plan: &dyn ExecutionPlan) -> Vec<&KafkaScanExec> {
    let mut found: Vec<&KafkaScanExec> = plan.downcast_ref::<KafkaScanExec>().into_iter().collect();
    for child in plan.children() {
        found.extend(kafka_scans(child.as_ref()));
    }
    found
}

impl DisplayAs for KafkaScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KafkaScanExec: id={}, topic={}",
            self.source_id, self.options.topic
        )
    }
}

impl ExecutionPlan for KafkaScanExec {
    fn name(&self) -> &str {
        "KafkaScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            internal_err!("KafkaScanExec has no children")
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.inner.execute(partition, context)
    }
}

/// One consumer's rows as a stream.
struct KafkaPartitionStream {
    operator_id: String,
    options: KafkaOptions,
    decoder: RecordDecoder,
    runtime: Arc<JobRuntime>,
    /// The partition this plan reads, in a job with state per partition.
    assigned: Option<Arc<AssignedPartition>>,
}

impl fmt::Debug for KafkaPartitionStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaPartitionStream")
            .field("operator_id", &self.operator_id)
            .field("topic", &self.options.topic)
            .finish_non_exhaustive()
    }
}

impl PartitionStream for KafkaPartitionStream {
    fn schema(&self) -> &SchemaRef {
        self.decoder.schema()
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let schema = Arc::clone(self.decoder.schema());
        let (tx, received) = tokio::sync::mpsc::channel(CHANNEL_BATCHES);
        let positions = Arc::new(SourcePositions::new(&self.operator_id, &self.options.topic));
        // A restored job resumes from its checkpoint's positions (they are
        // also what a cut before the first pull commits).
        let restored = self
            .runtime
            .state()
            .restore_point(&self.operator_id)
            .and_then(|snapshot| match snapshot {
                Some(snapshot) => positions.restore_positions(&snapshot),
                None => Ok(Positions::new()),
            })
            .and_then(|restored| {
                self.runtime
                    .state()
                    .track(Arc::clone(&positions) as Arc<dyn StatefulOperator>)?;
                Ok(restored)
            });
        let feed = self
            .assigned
            .as_ref()
            .map(|assigned| assigned.take_feed())
            .transpose();
        let restored = restored.and_then(|restored| Ok((restored, feed?)));
        let (restored, feed) = match restored {
            Ok(restored) => restored,
            Err(e) => {
                return Box::pin(RecordBatchStreamAdapter::new(
                    schema,
                    futures::stream::once(async move { Err(e) }),
                ));
            }
        };
        let reader = Reader {
            operator_id: self.operator_id.clone(),
            options: self.options.clone(),
            decoder: self.decoder.clone(),
            runtime: Arc::clone(&self.runtime),
            positions: Arc::clone(&positions),
            restored,
            feed,
        };
        let failed = tx.clone();
        let task = AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = reader.run(tx).await {
                // The plan reads the error where the rows would have been.
                let _ = failed.send(Err(e)).await;
            }
        }));
        Box::pin(RecordStream {
            schema,
            received,
            positions,
            runtime: Arc::clone(&self.runtime),
            ended: false,
            _task: task,
        })
    }
}

/// The consumer loop of one scan.
struct Reader {
    operator_id: String,
    options: KafkaOptions,
    decoder: RecordDecoder,
    runtime: Arc<JobRuntime>,
    positions: Arc<SourcePositions>,
    /// Where a restored job's partitions resume.
    restored: Positions,
    /// The one partition this scan reads, from the group's consumer (a job
    /// with state per partition); `None`: a consumer of its own.
    feed: Option<Feed>,
}

impl Reader {
    fn consumer(&self) -> Result<SourceConsumer> {
        let context = SourceContext::new(&self.options.topic, self.restored.clone());
        create_consumer(&self.options, context)
    }

    /// Subscribe or assign `consumer` as the table's options say. For a
    /// bounded read, the offset each partition's read ends before (`None`:
    /// nothing to read); empty for an unbounded one.
    async fn start_reading(
        &self,
        consumer: &Arc<SourceConsumer>,
    ) -> Result<Option<BTreeMap<i32, i64>>> {
        let mut ends = BTreeMap::new();
        let topic = self.options.topic.clone();
        let partitions = blocking(Arc::clone(consumer), move |c| partitions_of(c, &topic)).await?;
        match (self.options.mode, self.options.start) {
            (ReadMode::Bounded, start) => {
                let topic = self.options.topic.clone();
                let plan = blocking(Arc::clone(consumer), move |c| {
                    bounded_plan(c, &topic, &partitions, start)
                })
                .await?;
                let mut assignment = TopicPartitionList::new();
                for (partition, (from, end)) in plan {
                    if from < end {
                        assignment
                            .add_partition_offset(
                                &self.options.topic,
                                partition,
                                Offset::Offset(from),
                            )
                            .map_err(|e| kafka_error(&e))?;
                        ends.insert(partition, end);
                    }
                }
                if ends.is_empty() {
                    return Ok(None);
                }
                consumer.assign(&assignment).map_err(|e| kafka_error(&e))?;
            }
            (ReadMode::Unbounded, Start::Committed) => {
                consumer
                    .subscribe(&[self.options.topic.as_str()])
                    .map_err(|e| kafka_error(&e))?;
            }
            (ReadMode::Unbounded, start) => {
                let offset = if start == Start::Latest {
                    Offset::End
                } else {
                    Offset::Beginning
                };
                let mut assignment = TopicPartitionList::new();
                for partition in &partitions {
                    assignment
                        .add_partition_offset(&self.options.topic, *partition, offset)
                        .map_err(|e| kafka_error(&e))?;
                }
                consumer.context().place(&mut assignment);
                consumer.assign(&assignment).map_err(|e| kafka_error(&e))?;
            }
        }
        Ok(Some(ends))
    }

    async fn run(mut self, tx: Sender<Result<Emitted>>) -> Result<()> {
        let mut feed = self.feed.take();
        let consumer = match &feed {
            Some(feed) => Arc::clone(&feed.consumer),
            None => Arc::new(self.consumer()?),
        };
        self.positions.attach(&consumer);
        let metrics = self.runtime.metric_set::<KafkaMetrics>()?;
        let shared = self.runtime.metric_set::<SharedMetrics>()?;
        let dead_letters = DeadLetters::try_new(
            &self.options,
            &self.operator_id,
            &shared,
            metrics
                .dead_letters
                .with_label_values(&[self.operator_id.as_str()]),
        )?;
        let (work, work_rx) = tokio::sync::mpsc::channel::<Vec<Message>>(1);
        let emitter = tokio::spawn(
            Emitter {
                decoder: self.decoder.clone(),
                dead_letters,
                tx,
                positions: BTreeMap::new(),
            }
            .run(work_rx),
        );
        // A fed partition was assigned by the group already.
        let fed_partition = feed.as_ref().map(|feed| feed.partition);
        // Bounded: the offset each partition's read ends before.
        let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
        if fed_partition.is_none() {
            match self.start_reading(&consumer).await? {
                Some(bounded_ends) => ends = bounded_ends,
                None => return Ok(()),
            }
        }
        let bounded = self.options.mode == ReadMode::Bounded;
        let limits = bounded.then(|| ends.clone());
        let mut buffer: Vec<Message> = Vec::with_capacity(self.options.batch_rows);
        let mut first_buffered: Option<Instant> = None;
        let mut ticker = tokio::time::interval(self.options.linger);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The lag is measured by a task of its own: measured in this loop,
        // it would stop being measured exactly when the loop waits on a
        // full channel, i.e. while the plan falls behind.
        let _lag = AbortOnDrop(tokio::spawn({
            let (consumer, metrics) = (Arc::clone(&consumer), Arc::clone(&metrics));
            let (topic, id) = (self.options.topic.clone(), self.operator_id.clone());
            async move {
                let mut interval = tokio::time::interval(LAG_INTERVAL);
                interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    publish_lag(&consumer, &topic, fed_partition, &metrics, &id).await;
                }
            }
        }));
        let id = self.operator_id.as_str();
        let records = metrics.records.with_label_values(&[id]);
        let bytes = metrics.bytes.with_label_values(&[id]);
        // Records of a fed partition below its restored position are in
        // the checkpoint's state already (the group's committed offset can
        // trail the checkpoint: the commit follows the store).
        let resume_at = fed_partition.map(|p| self.restored.get(&p).copied().unwrap_or(0));
        let mut skipped = 0u64;
        loop {
            if bounded && ends.is_empty() {
                break;
            }
            tokio::select! {
                received = next_record(&consumer, feed.as_mut().map(|f| &mut f.records)) => {
                    let record = match received {
                        Some(Ok(record)) => record,
                        // The partition was revoked: end like a stop.
                        None => break,
                        Some(Err(e)) if is_transient(&e) => {
                            // librdkafka retries these itself; nothing is lost.
                            tracing::warn!(operator = id, error = %e, "kafka: transient consumer error");
                            continue;
                        }
                        Some(Err(e)) => {
                            return Err(exec_datafusion_err!(
                                "kafka: reading topic '{}' failed: {e}",
                                self.options.topic
                            ));
                        }
                    };
                    if resume_at.is_some_and(|at| record.offset < at) {
                        skipped += 1;
                        continue;
                    }
                    records.inc();
                    bytes.inc_by(record.payload.as_ref().map_or(0, Vec::len) as u64);
                    first_buffered.get_or_insert_with(Instant::now);
                    take(record, &mut buffer, &mut ends, limits.as_ref());
                    if buffer.len() >= self.options.batch_rows {
                        if work.send(std::mem::take(&mut buffer)).await.is_err() {
                            // The emitter ended: its result says why.
                            break;
                        }
                        first_buffered = None;
                    }
                }
                _ = ticker.tick() => {
                    if first_buffered.is_some_and(|t| t.elapsed() >= self.options.linger) {
                        if work.send(std::mem::take(&mut buffer)).await.is_err() {
                            // The emitter ended: its result says why.
                            break;
                        }
                        first_buffered = None;
                    }
                    if bounded {
                        // Offsets past the last record (transaction markers,
                        // compacted records) end a partition too.
                        let positions = consumer.position().map_err(|e| kafka_error(&e))?;
                        for element in positions.elements() {
                            if let (Offset::Offset(at), Some(end)) =
                                (element.offset(), ends.get(&element.partition()))
                                && at >= *end
                            {
                                ends.remove(&element.partition());
                            }
                        }
                    }
                    if self.runtime.control().stop_requested() {
                        break;
                    }
                }
            }
        }
        if skipped > 0 {
            tracing::info!(
                operator = id,
                skipped,
                "kafka: records below the restored checkpoint's position were not read again"
            );
        }
        if !buffer.is_empty() {
            // A closed channel means the emitter ended; its result says why.
            let _ = work.send(buffer).await;
        }
        drop(work);
        let positions = emitter.await.map_err(|e| {
            DataFusionError::Internal(format!("kafka: the decoder task failed: {e}"))
        })??;
        let Some(positions) = positions else {
            return Ok(());
        };
        if self.runtime.checkpoints().enabled() {
            // The final checkpoint commits them, once the sink has flushed.
            return Ok(());
        }
        // Every record up to these positions is in the plan: a sink that
        // gets all of the plan acknowledged may commit them.
        let handed = Arc::new(KafkaCommit {
            consumer: Arc::clone(&consumer),
            topic: self.options.topic.clone(),
            positions,
        });
        self.runtime
            .commits()
            .hand_over(&self.operator_id, handed)?;
        Ok(())
    }
}

/// The decoding half of a source: decodes each buffer the consumer loop
/// hands over, routes its bad records and sends its rows on, on a task of
/// its own so that receiving the next records overlaps decoding these.
struct Emitter {
    decoder: RecordDecoder,
    dead_letters: DeadLetters,
    tx: Sender<Result<Emitted>>,
    /// Per partition, the offset after the last record handed to the plan
    /// (rows sent, bad records routed).
    positions: BTreeMap<i32, i64>,
}

impl Emitter {
    /// Decode the buffered messages, route the bad ones, send the rows on.
    /// `false` when the plan no longer reads (the query ended).
    async fn emit(&mut self, buffer: Vec<Message>) -> Result<bool> {
        if buffer.is_empty() {
            return Ok(true);
        }
        let decoded = self.decoder.decode(&buffer)?;
        for bad in &decoded.bad {
            self.dead_letters.route(&buffer[bad.index], bad).await?;
        }
        for message in &buffer {
            let next = self.positions.entry(message.partition).or_insert(0);
            *next = (*next).max(message.offset + 1);
        }
        // Sent even without rows: the plan's positions pass bad records too.
        let emitted = Emitted {
            batch: decoded.batch,
            positions: self.positions.clone(),
        };
        Ok(self.tx.send(Ok(emitted)).await.is_ok())
    }

    /// Emit every buffer `work` hands over until it closes; the positions
    /// handed to the plan, or `None` when the plan stopped reading.
    async fn run(
        mut self,
        mut work: tokio::sync::mpsc::Receiver<Vec<Message>>,
    ) -> Result<Option<BTreeMap<i32, i64>>> {
        while let Some(buffer) = work.recv().await {
            if !self.emit(buffer).await? {
                return Ok(None);
            }
        }
        self.dead_letters.flush().await?;
        Ok(Some(self.positions))
    }
}

/// Add a consumed record to the buffer. A bounded read keeps only records
/// below its partitions' `limits` (records written after the read started
/// are not its), and a partition is done when its last one is taken.
fn take(
    message: Message,
    buffer: &mut Vec<Message>,
    ends: &mut BTreeMap<i32, i64>,
    limits: Option<&BTreeMap<i32, i64>>,
) {
    if let Some(limits) = limits
        && limits
            .get(&message.partition)
            .is_none_or(|end| message.offset >= *end)
    {
        return;
    }
    if let Some(end) = ends.get(&message.partition)
        && message.offset + 1 >= *end
    {
        ends.remove(&message.partition);
    }
    buffer.push(message);
}

/// The next record of a source: from its feed (`None` once the feed is
/// closed), or from its own consumer.
async fn next_record(
    consumer: &SourceConsumer,
    feed: Option<&mut tokio::sync::mpsc::Receiver<Message>>,
) -> Option<rdkafka::error::KafkaResult<Message>> {
    match feed {
        Some(feed) => feed.recv().await.map(Ok),
        None => Some(consumer.recv().await.map(|message| owned(&message))),
    }
}

/// Run a blocking client call (metadata, watermarks, committed offsets) on
/// the blocking pool, never on the executor.
async fn blocking<T: Send + 'static>(
    consumer: Arc<SourceConsumer>,
    call: impl FnOnce(&SourceConsumer) -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(move || call(&consumer))
        .await
        .map_err(|e| {
            DataFusionError::Internal(format!("kafka: a client call did not finish: {e}"))
        })?
}

/// The partitions of `topic`, or an error if the broker does not know it.
fn partitions_of(consumer: &SourceConsumer, topic: &str) -> Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|e| {
            exec_datafusion_err!("kafka: cannot read the metadata of topic '{topic}': {e}")
        })?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(exec_datafusion_err!(
            "kafka: the broker does not know topic '{topic}'"
        ));
    };
    if let Some(error) = found.error() {
        return Err(exec_datafusion_err!(
            "kafka: topic '{topic}' is not readable: {:?}",
            rdkafka::error::RDKafkaErrorCode::from(error)
        ));
    }
    if found.partitions().is_empty() {
        return Err(exec_datafusion_err!(
            "kafka: topic '{topic}' has no partitions"
        ));
    }
    Ok(found.partitions().iter().map(|p| p.id()).collect())
}

/// For a bounded read, per partition: the first offset and the offset the
/// read ends before (the high watermark now).
fn bounded_plan(
    consumer: &SourceConsumer,
    topic: &str,
    partitions: &[i32],
    start: Start,
) -> Result<BTreeMap<i32, (i64, i64)>> {
    let mut watermarks = BTreeMap::new();
    for &partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            .map_err(|e| {
                exec_datafusion_err!(
                    "kafka: cannot read the watermarks of {topic}/{partition}: {e}"
                )
            })?;
        watermarks.insert(partition, (low, high));
    }
    let committed = if start == Start::Committed {
        let mut asked = TopicPartitionList::new();
        for &partition in partitions {
            asked.add_partition(topic, partition);
        }
        let answer = consumer
            .committed_offsets(asked, METADATA_TIMEOUT)
            .map_err(|e| {
                exec_datafusion_err!("kafka: cannot read the committed offsets of '{topic}': {e}")
            })?;
        answer
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(at) => Some((e.partition(), at)),
                _ => None,
            })
            .collect::<BTreeMap<i32, i64>>()
    } else {
        BTreeMap::new()
    };
    Ok(watermarks
        .into_iter()
        .map(|(partition, (low, high))| {
            let from = match start {
                Start::Earliest => low,
                Start::Latest => high,
                Start::Committed => committed.get(&partition).copied().unwrap_or(low).max(low),
            };
            (partition, (from, high))
        })
        .collect())
}

/// Set the lag gauge of every partition assigned to `consumer`: the high
/// watermark minus the consumer's position.
async fn publish_lag(
    consumer: &Arc<SourceConsumer>,
    topic: &str,
    only: Option<i32>,
    metrics: &KafkaMetrics,
    id: &str,
) {
    let Ok(positions) = consumer.position() else {
        return;
    };
    let positions: Vec<(i32, i64)> = positions
        .elements_for_topic(topic)
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(at) if only.is_none_or(|p| p == e.partition()) => {
                Some((e.partition(), at))
            }
            _ => None,
        })
        .collect();
    let topic = topic.to_string();
    let lags = blocking(Arc::clone(consumer), move |c| {
        Ok(positions
            .into_iter()
            .filter_map(|(partition, at)| {
                c.fetch_watermarks(&topic, partition, METADATA_TIMEOUT)
                    .ok()
                    .map(|(_, high)| (partition, (high - at).max(0)))
            })
            .collect::<Vec<_>>())
    })
    .await;
    match lags {
        Ok(lags) => {
            for (partition, lag) in lags {
                metrics
                    .lag
                    .with_label_values(&[id, &partition.to_string()])
                    .set(lag);
            }
        }
        Err(e) => tracing::warn!(operator = id, error = %e, "kafka: consumer lag not measured"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64) -> Message {
        Message {
            topic: "t".into(),
            partition,
            offset,
            timestamp: None,
            key: None,
            payload: Some(b"{}".to_vec()),
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_bounded_read_keeps_only_records_below_its_watermarks() {
        let limits: BTreeMap<i32, i64> = [(0, 3), (1, 1)].into_iter().collect();
        let mut ends = limits.clone();
        let mut buffer = Vec::new();
        for (partition, offset) in [(0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (2, 0)] {
            take(
                record(partition, offset),
                &mut buffer,
                &mut ends,
                Some(&limits),
            );
        }
        let kept: Vec<(i32, i64)> = buffer.iter().map(|m| (m.partition, m.offset)).collect();
        // Offset 1 of partition 1 and 3 of partition 0 were written after
        // the read started; partition 2 was not part of it.
        assert_eq!(kept, vec![(0, 1), (1, 0), (0, 2)]);
        assert!(ends.is_empty(), "both partitions reached their ends");
        // Unbounded reads keep everything.
        let mut all = Vec::new();
        take(record(5, 9), &mut all, &mut BTreeMap::new(), None);
        assert_eq!(all.len(), 1);
    }
}
