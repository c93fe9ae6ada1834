//! A replica's share of a consumer group, split by Kafka partition, for
//! jobs that keep their state per partition (`equipoise run` with
//! `[scale_out] state = "per-partition"`).
//!
//! One consumer per replica joins the group and receives every record of
//! the partitions the group gives it; a demultiplexing task routes each
//! record to the feed of its partition, which the scan of that partition's
//! plan reads ([`AssignedPartition`](super::consumer::AssignedPartition), found in the plan's session
//! configuration). The job runs one plan per assigned partition, each with
//! its own operator state and checkpoints, so a partition that moves to
//! another replica takes its state along through the shared checkpoint
//! store.
//!
//! Revocation is deferred until the revoked partitions' plans are done:
//! the rebalance callback closes their feeds (each plan's source ends, the
//! plan drains, the sink flushes, the final checkpoint is stored and its
//! offsets committed while this consumer still owns the partition) and
//! reports [`GroupEvent::Revoked`]; the job calls
//! [`PartitionGroup::release`] when they have ended, and only then does
//! the group hand the partitions on. librdkafka waits for that call (its
//! rebalance callback contract), up to `max.poll.interval.ms`.
//!
//! Records of a partition fetched after its feed closed are not routed:
//! they are not committed either, so the partition's next owner reads them.

use std::fmt;
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result, exec_datafusion_err};
use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio::sync::mpsc::UnboundedReceiver;

use super::consumer::{
    AbortOnDrop, GroupEvent, Routing, SourceConsumer, SourceContext, create_consumer, is_transient,
    kafka_error, owned, unassign,
};
use super::options::{KafkaOptions, ReadMode, Start};

/// This replica's membership of the group reading one topic.
pub struct PartitionGroup {
    consumer: Arc<SourceConsumer>,
    topic: String,
    routing: Arc<Routing>,
    events: UnboundedReceiver<GroupEvent>,
    _demux: AbortOnDrop,
}

impl Drop for PartitionGroup {
    fn drop(&mut self) {
        // Closing the consumer revokes what it holds; nothing defers that.
        self.routing.leave();
    }
}

impl fmt::Debug for PartitionGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionGroup")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl PartitionGroup {
    /// Join the group of the unbounded table with `options` (`'start'
    /// 'committed'`: its partitions are spread by the group).
    pub fn join(options: &KafkaOptions) -> Result<Self> {
        if options.mode != ReadMode::Unbounded || options.start != Start::Committed {
            return Err(DataFusionError::Plan(format!(
                "kafka: state per partition needs the source '{}' read as a consumer group: \
                 an UNBOUNDED table with 'start' 'committed'",
                options.topic
            )));
        }
        let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
        let routing = Arc::new(Routing::new(&options.topic, options.batch_rows, events_tx));
        let context = SourceContext::routed(&options.topic, Arc::clone(&routing));
        let consumer = Arc::new(create_consumer(options, context)?);
        routing.attach(&consumer);
        consumer
            .subscribe(&[options.topic.as_str()])
            .map_err(|e| kafka_error(&e))?;
        let demux = AbortOnDrop(tokio::spawn(demux(
            Arc::clone(&consumer),
            Arc::clone(&routing),
            options.topic.clone(),
        )));
        Ok(Self {
            consumer,
            topic: options.topic.clone(),
            routing,
            events,
            _demux: demux,
        })
    }

    /// The next event; `None` when the consumer is gone.
    pub async fn next(&mut self) -> Option<GroupEvent> {
        self.events.recv().await
    }

    /// Hand revoked partitions back to the group, once their plans ended.
    pub async fn release(&self, partitions: Vec<i32>) -> Result<()> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let mut list = TopicPartitionList::new();
            for partition in partitions {
                list.add_partition(&topic, partition);
            }
            unassign(consumer.as_ref(), &list)
        })
        .await
        .map_err(|e| DataFusionError::Internal(format!("kafka: release did not finish: {e}")))?
        .map_err(|e| kafka_error(&e))
    }
}

/// Route every record the consumer receives to its partition's feed.
async fn demux(consumer: Arc<SourceConsumer>, routing: Arc<Routing>, topic: String) {
    loop {
        let record = match consumer.recv().await {
            Ok(message) => owned(&message),
            Err(e) if is_transient(&e) => {
                // librdkafka retries these itself; nothing is lost.
                tracing::warn!(topic, error = %e, "kafka: transient consumer error");
                continue;
            }
            Err(e) => {
                routing.fail(exec_datafusion_err!(
                    "kafka: reading topic '{topic}' failed: {e}"
                ));
                return;
            }
        };
        if let Some(feed) = routing.feed(record.partition) {
            // A closed feed: the partition was revoked after this record
            // was fetched; it is not committed, its next owner reads it.
            let _ = feed.send(record).await;
        }
    }
}
