//! A source's positions: where the plan's input ends in each partition, as
//! checkpoint state, as the offsets a completed checkpoint commits, and as
//! the place a restored job resumes from.
//!
//! Positions advance when the plan *pulls* a batch (not when the consumer
//! loop decodes it), so that at a checkpoint's cut they name exactly the
//! records the operators have seen (`equipoise_operators::runtime::checkpoint`).
//! [`KafkaCommit`] commits them, and [`is_transient`] tells the errors that
//! pass by themselves (for the consumer loop in `source` and for commits).

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{Result, exec_datafusion_err};
use datafusion::execution::RecordBatchStream;
use equipoise_operators::JobRuntime;
use equipoise_operators::runtime::{OperatorSnapshot, PendingCommit, StatefulOperator};
use futures::Stream;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc::Receiver;

use super::consumer::{AbortOnDrop, Positions, SourceConsumer, is_transient, kafka_error};

/// Attempts, and the backoff between them, of a commit a rebalance refused.
const COMMIT_ATTEMPTS: u32 = 5;
const COMMIT_BACKOFF: Duration = Duration::from_millis(200);

const KIND: &str = "kafka_source";
const STATE_VERSION: u32 = 1;

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

impl KafkaCommit {
    /// The positions of the partitions the consumer owns now, as offsets
    /// to commit, and the partitions among them it no longer owns.
    pub(crate) fn owned_offsets(&self) -> KafkaResult<(TopicPartitionList, Vec<i32>)> {
        let owned = self.consumer.assignment()?;
        let mut list = TopicPartitionList::new();
        let mut revoked = Vec::new();
        for (partition, next) in &self.positions {
            if owned.find_partition(&self.topic, *partition).is_some() {
                list.add_partition_offset(&self.topic, *partition, Offset::Offset(*next))?;
            } else {
                revoked.push(*partition);
            }
        }
        Ok((list, revoked))
    }
}

impl PendingCommit for KafkaCommit {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn commit(&self) -> Result<()> {
        // Only partitions this consumer owns now: a commit from a member
        // that is still joining (or for a partition that moved) is refused
        // by the coordinator, and librdkafka answers the refusal by
        // rejoining the group, so committing then would keep the group
        // rebalancing.
        let (list, _) = self.owned_offsets().map_err(|e| kafka_error(&e))?;
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

/// The positions source `operator_id` holds in `snapshot` (none when the
/// snapshot has no state of it).
pub(crate) fn positions_in(
    snapshot: &equipoise_operators::runtime::JobSnapshot,
    operator_id: &str,
) -> Result<Positions> {
    snapshot
        .operators
        .get(operator_id)
        .map_or(Ok(Positions::new()), |state| {
            state.decode(operator_id, KIND, STATE_VERSION)
        })
}
