//! A source's positions: where the plan's input ends in each partition, as
//! checkpoint state, as the offsets a completed checkpoint commits, and as
//! the place a restored job resumes from.
//!
//! Positions advance when the plan *pulls* a batch (not when the consumer
//! loop decodes it), so that at a checkpoint's cut they name exactly the
//! records the operators have seen (`equipoise_operators::runtime::checkpoint`).
//! [`KafkaCommit`] commits them, and [`is_transient`] tells the errors that
//! pass by themselves (for the consumer loop in `source` and for commits).

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result, exec_datafusion_err};
use datafusion::execution::RecordBatchStream;
use equipoise_operators::JobRuntime;
use equipoise_operators::runtime::{OperatorSnapshot, PendingCommit, StatefulOperator};
use futures::Stream;
use rdkafka::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::sync::mpsc::Receiver;

use super::group::Routing;

/// Attempts, and the backoff between them, of a commit a rebalance refused.
const COMMIT_ATTEMPTS: u32 = 5;
const COMMIT_BACKOFF: Duration = Duration::from_millis(200);

const KIND: &str = "kafka_source";
const STATE_VERSION: u32 = 1;

/// Per partition, the offset after the last record handed to the plan.
pub(crate) type Positions = BTreeMap<i32, i64>;

/// The consumer of a source.
pub(crate) type SourceConsumer = StreamConsumer<SourceContext>;

/// The consumer's context: places a restored job's partitions at the
/// checkpoint's positions when the group assigns them.
pub(crate) struct SourceContext {
    topic: String,
    /// Positions of the restored checkpoint not yet applied; each applies
    /// to its partition's first assignment only (later ones start from
    /// the offsets the job has committed since).
    restored: Mutex<Positions>,
    /// A replica with state per partition: feeds per assigned partition,
    /// and revocations deferred until the job releases them.
    routing: Option<Arc<Routing>>,
}

impl SourceContext {
    pub(crate) fn new(topic: &str, restored: Positions) -> Self {
        Self {
            topic: topic.to_string(),
            restored: Mutex::new(restored),
            routing: None,
        }
    }

    /// The context of a group consumer that routes records by partition.
    pub(crate) fn routed(topic: &str, routing: Arc<Routing>) -> Self {
        Self {
            topic: topic.to_string(),
            restored: Mutex::new(Positions::new()),
            routing: Some(routing),
        }
    }

    /// Set the restored position of every partition of `list` that has one.
    pub(crate) fn place(&self, list: &mut TopicPartitionList) {
        let Ok(mut restored) = self.restored.lock() else {
            return;
        };
        let partitions: Vec<i32> = list
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        for partition in partitions {
            if let Some(next) = restored.remove(&partition)
                && let Err(e) =
                    list.set_partition_offset(&self.topic, partition, Offset::Offset(next))
            {
                tracing::warn!(topic = %self.topic, partition, error = %e, "kafka: restored position not set");
            }
        }
    }
}

impl ClientContext for SourceContext {}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        list: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match (err, &self.routing) {
            (RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, Some(routing)) => {
                routing.assign(consumer, list, cooperative)
            }
            // Released by the job once the partitions' plans have ended.
            (RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS, Some(routing))
                if routing.revoke(list) =>
            {
                Ok(())
            }
            (RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, None) => {
                self.place(list);
                if cooperative {
                    consumer.incremental_assign(list)
                } else {
                    consumer.assign(list)
                }
            }
            (RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS, _) if cooperative => {
                consumer.incremental_unassign(list)
            }
            (RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS, _) => consumer.unassign(),
            (other, routing) => {
                tracing::warn!(topic = %self.topic, error = ?other, "kafka: rebalance failed");
                if let Some(routing) = routing {
                    routing.revoke_all();
                }
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::warn!(topic = %self.topic, error = %e, "kafka: (un)assignment refused");
        }
    }
}

/// A source's positions as checkpoint state.
pub(crate) struct SourcePositions {
    operator_id: String,
    topic: String,
    pulled: Mutex<Positions>,
    consumer: OnceLock<Arc<SourceConsumer>>,
}

impl SourcePositions {
    pub(crate) fn new(operator_id: &str, topic: &str) -> Self {
        Self {
            operator_id: operator_id.to_string(),
            topic: topic.to_string(),
            pulled: Mutex::new(Positions::new()),
            consumer: OnceLock::new(),
        }
    }

    /// The consumer that commits these positions, once it exists.
    pub(crate) fn attach(&self, consumer: &Arc<SourceConsumer>) {
        let _ = self.consumer.set(Arc::clone(consumer));
    }

    /// Start from a restore point's snapshot of this source; its
    /// positions.
    pub(crate) fn restore_positions(&self, snapshot: &OperatorSnapshot) -> Result<Positions> {
        let positions: Positions = snapshot.decode(&self.operator_id, KIND, STATE_VERSION)?;
        self.advance(&positions);
        Ok(positions)
    }

    fn pulled(&self) -> Positions {
        self.pulled.lock().map(|p| p.clone()).unwrap_or_default()
    }

    fn advance(&self, positions: &Positions) {
        if let Ok(mut pulled) = self.pulled.lock() {
            for (partition, next) in positions {
                let at = pulled.entry(*partition).or_insert(*next);
                *at = (*at).max(*next);
            }
        }
    }

    /// A commit of the positions pulled so far.
    pub(crate) fn commit(&self) -> Option<Arc<dyn PendingCommit>> {
        let consumer = self.consumer.get()?;
        Some(Arc::new(KafkaCommit {
            consumer: Arc::clone(consumer),
            topic: self.topic.clone(),
            positions: self.pulled(),
        }))
    }
}

impl StatefulOperator for SourcePositions {
    fn operator_id(&self) -> &str {
        &self.operator_id
    }

    fn snapshot(&self) -> Result<Option<OperatorSnapshot>> {
        // JSON object keys: the partitions as strings.
        OperatorSnapshot::encode(&self.operator_id, KIND, STATE_VERSION, &self.pulled()).map(Some)
    }

    fn restore(&self, snapshot: &OperatorSnapshot) -> Result<()> {
        self.restore_positions(snapshot).map(|_| ())
    }
}

/// What the consumer loop hands the plan: a decoded batch (none when every
/// record of a buffer was bad) and the positions after it.
pub(crate) struct Emitted {
    pub batch: Option<RecordBatch>,
    pub positions: Positions,
}

/// The source's output stream: batches from the consumer loop, positions
/// advanced as the plan pulls them, and the checkpoint cut taken when the
/// plan polls with a cut requested.
pub(crate) struct RecordStream {
    pub schema: SchemaRef,
    pub received: Receiver<Result<Emitted>>,
    pub positions: Arc<SourcePositions>,
    pub runtime: Arc<JobRuntime>,
    pub ended: bool,
    /// The consumer loop, aborted when the plan drops the stream.
    pub _task: AbortOnDrop,
}

impl RecordStream {
    fn cut(&self) -> Result<()> {
        let checkpoints = self.runtime.checkpoints();
        checkpoints.cut(self.runtime.state(), self.positions.commit())?;
        Ok(())
    }
}

impl fmt::Debug for RecordStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordStream").finish_non_exhaustive()
    }
}

impl Stream for RecordStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let checkpoints = self.runtime.checkpoints();
        checkpoints.wake_source_with(cx.waker());
        if checkpoints.cut_requested()
            && let Err(e) = self.cut()
        {
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            match self.received.poll_recv(cx) {
                Poll::Ready(Some(Ok(emitted))) => {
                    self.positions.advance(&emitted.positions);
                    if let Some(batch) = emitted.batch {
                        return Poll::Ready(Some(Ok(batch)));
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    self.ended = true;
                    // The final checkpoint: everything pulled is in it.
                    if self.runtime.checkpoints().enabled()
                        && let Err(e) = self.cut()
                    {
                        return Poll::Ready(Some(Err(e)));
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A task that ends with its owner.
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl RecordBatchStream for RecordStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

/// Positions of one consumer, committed for its group when the runtime is
/// told their rows are safe.
pub(crate) struct KafkaCommit {
    pub(crate) consumer: Arc<SourceConsumer>,
    pub(crate) topic: String,
    pub(crate) positions: Positions,
}

impl fmt::Debug for KafkaCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaCommit")
            .field("topic", &self.topic)
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

impl PendingCommit for KafkaCommit {
    fn commit(&self) -> Result<()> {
        // Only partitions this consumer owns now: a commit from a member
        // that is still joining (or for a partition that moved) is refused
        // by the coordinator, and librdkafka answers the refusal by
        // rejoining the group, so committing then would keep the group
        // rebalancing.
        let owned = self.consumer.assignment().map_err(|e| kafka_error(&e))?;
        let mut list = TopicPartitionList::new();
        for (partition, next) in &self.positions {
            if owned.find_partition(&self.topic, *partition).is_some() {
                list.add_partition_offset(&self.topic, *partition, Offset::Offset(*next))
                    .map_err(|e| kafka_error(&e))?;
            }
        }
        if list.count() == 0 {
            return Ok(());
        }
        // A rebalance (another member joining or leaving) refuses commits
        // for a moment: try again a few times before giving up.
        let mut attempt = 0;
        loop {
            match self.consumer.commit(&list, CommitMode::Sync) {
                Ok(()) => return Ok(()),
                Err(e) if attempt < COMMIT_ATTEMPTS && is_transient(&e) => {
                    attempt += 1;
                    std::thread::sleep(COMMIT_BACKOFF * attempt);
                }
                Err(e) => {
                    return Err(exec_datafusion_err!(
                        "kafka: cannot commit the offsets of '{}': {e}",
                        self.topic
                    ));
                }
            }
        }
    }
}

/// Whether a consumer error passes by itself (a timeout, a leader change, a
/// broker restarting): librdkafka retries, so the loop goes on. Anything
/// else (an unknown topic, a refused authorization, a fatal error) ends the
/// stream with the error.
pub(crate) fn is_transient(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    match error {
        KafkaError::MessageConsumption(code) | KafkaError::ConsumerCommit(code) => matches!(
            code,
            Code::RequestTimedOut
                | Code::NotLeaderForPartition
                | Code::LeaderNotAvailable
                | Code::BrokerNotAvailable
                | Code::NetworkException
                | Code::BrokerTransportFailure
                | Code::AllBrokersDown
                | Code::OperationTimedOut
                | Code::NotCoordinator
                | Code::CoordinatorNotAvailable
                | Code::CoordinatorLoadInProgress
                | Code::RebalanceInProgress
                | Code::KafkaStorageError
                | Code::FencedLeaderEpoch
                | Code::UnknownLeaderEpoch
                | Code::OffsetNotAvailable
                | Code::PreferredLeaderNotAvailable
        ),
        _ => false,
    }
}

pub(crate) fn kafka_error(error: &KafkaError) -> DataFusionError {
    exec_datafusion_err!("kafka: {error}")
}
