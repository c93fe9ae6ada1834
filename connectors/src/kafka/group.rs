//! A replica's share of a consumer group, split by Kafka partition, for
//! jobs that keep their state per partition (`equipoise run` with
//! `[scale_out] state = "per-partition"`).
//!
//! One consumer per replica joins the group and receives every record of
//! the partitions the group gives it; a demultiplexing task routes each
//! record to the feed of its partition, which the scan of that partition's
//! plan reads ([`AssignedPartition`], found in the plan's session
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

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use datafusion::common::{DataFusionError, Result, exec_datafusion_err};
use rdkafka::consumer::{BaseConsumer, Consumer, RebalanceProtocol};
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio::sync::mpsc::{Receiver, Sender, UnboundedReceiver, UnboundedSender};

use super::decode::Message;
use super::options::{KafkaOptions, ReadMode, Start};
use super::positions::{AbortOnDrop, SourceConsumer, SourceContext, is_transient, kafka_error};
use super::source::{consumer_config, owned};

/// What the group tells the job.
#[derive(Debug)]
pub enum GroupEvent {
    /// Partitions the group gave this replica, each with its records.
    Assigned(Vec<Arc<AssignedPartition>>),
    /// Partitions the group takes back. Their feeds are closed; call
    /// [`PartitionGroup::release`] once their plans have ended.
    Revoked(Vec<i32>),
    /// The consumer failed with an error that does not pass by itself.
    Failed(DataFusionError),
}

/// A partition assigned to this replica: what the scan of its plan reads
/// instead of a consumer of its own. The job puts it in the session
/// configuration of the partition's plan.
pub struct AssignedPartition {
    topic: String,
    partition: i32,
    consumer: Arc<SourceConsumer>,
    records: Mutex<Option<Receiver<Message>>>,
}

impl fmt::Debug for AssignedPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssignedPartition")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

impl AssignedPartition {
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The partition's records, for the one scan that reads them.
    pub(crate) fn take_feed(&self) -> Result<Feed> {
        let records = self
            .records
            .lock()
            .map_err(|_| exec_datafusion_err!("kafka: a partition feed's lock was poisoned"))?
            .take()
            .ok_or_else(|| {
                exec_datafusion_err!(
                    "kafka: partition {} of '{}' is read by more than one scan; a job with \
                     state per partition reads its topic once",
                    self.partition,
                    self.topic
                )
            })?;
        Ok(Feed {
            consumer: Arc::clone(&self.consumer),
            partition: self.partition,
            records,
        })
    }
}

/// One partition's records, and the group's consumer that commits them.
pub(crate) struct Feed {
    pub(crate) consumer: Arc<SourceConsumer>,
    pub(crate) partition: i32,
    pub(crate) records: Receiver<Message>,
}

/// Where each assigned partition's records go; lives in the consumer's
/// context, so the rebalance callback creates and closes the feeds.
pub(crate) struct Routing {
    topic: String,
    capacity: usize,
    feeds: Mutex<HashMap<i32, Sender<Message>>>,
    events: UnboundedSender<GroupEvent>,
    /// The consumer whose context this is (weak: the context lives inside
    /// it).
    consumer: Mutex<Weak<SourceConsumer>>,
    /// Set when the replica leaves the group: nobody waits to release.
    leaving: AtomicBool,
}

impl Routing {
    fn partitions(&self, list: &TopicPartitionList) -> Vec<i32> {
        list.elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect()
    }

    /// Open a feed per partition of `list` and assign them.
    pub(crate) fn assign(
        &self,
        consumer: &BaseConsumer<SourceContext>,
        list: &TopicPartitionList,
        cooperative: bool,
    ) -> rdkafka::error::KafkaResult<()> {
        let owner = self.consumer.lock().ok().and_then(|weak| weak.upgrade());
        let mut assigned = Vec::new();
        if let (Some(owner), Ok(mut feeds)) = (owner, self.feeds.lock()) {
            for partition in self.partitions(list) {
                let (tx, rx) = tokio::sync::mpsc::channel(self.capacity);
                feeds.insert(partition, tx);
                assigned.push(Arc::new(AssignedPartition {
                    topic: self.topic.clone(),
                    partition,
                    consumer: Arc::clone(&owner),
                    records: Mutex::new(Some(rx)),
                }));
            }
        }
        let result = if cooperative {
            consumer.incremental_assign(list)
        } else {
            consumer.assign(list)
        };
        if !assigned.is_empty() {
            let _ = self.events.send(GroupEvent::Assigned(assigned));
        }
        result
    }

    /// Close the feeds of the partitions of `list`. `true`: the job
    /// releases them; `false` (the group is being left): release now.
    pub(crate) fn revoke(&self, list: &TopicPartitionList) -> bool {
        let partitions = self.partitions(list);
        if let Ok(mut feeds) = self.feeds.lock() {
            for partition in &partitions {
                feeds.remove(partition);
            }
        }
        if self.leaving.load(Ordering::Acquire) {
            return false;
        }
        self.events.send(GroupEvent::Revoked(partitions)).is_ok()
    }

    /// Close every feed (a failed rebalance unassigns everything).
    pub(crate) fn revoke_all(&self) {
        let partitions: Vec<i32> = match self.feeds.lock() {
            Ok(mut feeds) => feeds.drain().map(|(partition, _)| partition).collect(),
            Err(_) => Vec::new(),
        };
        let _ = self.events.send(GroupEvent::Revoked(partitions));
    }

    fn feed(&self, partition: i32) -> Option<Sender<Message>> {
        self.feeds.lock().ok()?.get(&partition).cloned()
    }

    fn fail(&self, error: DataFusionError) {
        let _ = self.events.send(GroupEvent::Failed(error));
    }
}

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
        self.routing.leaving.store(true, Ordering::Release);
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
        let routing = Arc::new(Routing {
            topic: options.topic.clone(),
            capacity: options.batch_rows.max(1),
            feeds: Mutex::new(HashMap::new()),
            events: events_tx,
            consumer: Mutex::new(Weak::new()),
            leaving: AtomicBool::new(false),
        });
        let context = SourceContext::routed(&options.topic, Arc::clone(&routing));
        let consumer: Arc<SourceConsumer> = Arc::new(
            consumer_config(options)
                .create_with_context(context)
                .map_err(|e| {
                    DataFusionError::Plan(format!(
                        "kafka: cannot create a consumer for topic '{}': {e}",
                        options.topic
                    ))
                })?,
        );
        if let Ok(mut owner) = routing.consumer.lock() {
            *owner = Arc::downgrade(&consumer);
        }
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
            if matches!(
                consumer.rebalance_protocol(),
                RebalanceProtocol::Cooperative
            ) {
                let mut list = TopicPartitionList::new();
                for partition in partitions {
                    list.add_partition(&topic, partition);
                }
                consumer.incremental_unassign(&list)
            } else {
                consumer.unassign()
            }
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
