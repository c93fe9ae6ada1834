//! A source's consumer and its context: the client settings every source
//! consumer gets, the rebalance callback (restored positions placed on
//! assignment; with state per partition, feeds opened and closed per
//! partition: [`Routing`]), owned messages, and the error rules shared by
//! the consumer loop, the group and commits. The bottom of `kafka`: it
//! imports only `decode` and `options`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use datafusion::common::{DataFusionError, Result, exec_datafusion_err};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Headers, Message as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::sync::mpsc::{Receiver, Sender, UnboundedSender};

use super::decode::Message;
use super::options::{KafkaOptions, Start};

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
        for partition in partitions_in(list, &self.topic) {
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
        let result = match (err, &self.routing) {
            (RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, Some(routing)) => {
                routing.assign(consumer, list)
            }
            // Released by the job once the partitions' plans have ended.
            (RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS, Some(routing))
                if routing.revoke(list) =>
            {
                Ok(())
            }
            (RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, None) => {
                self.place(list);
                assign(consumer, list)
            }
            (RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS, _) => unassign(consumer, list),
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

/// What the group tells the job.
#[derive(Debug)]
pub enum GroupEvent {
    /// Partitions the group gave this replica, each with its records.
    Assigned(Vec<Arc<AssignedPartition>>),
    /// Partitions the group takes back. Their feeds are closed; call
    /// [`super::group::PartitionGroup::release`] once their plans have ended.
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
    /// Records a feed holds before the consumer waits for its plan.
    capacity: usize,
    feeds: Mutex<HashMap<i32, Sender<Message>>>,
    events: UnboundedSender<GroupEvent>,
    /// The consumer whose context this is (weak: the context lives inside
    /// it), set once it exists.
    consumer: OnceLock<Weak<SourceConsumer>>,
    /// Set when the replica leaves the group: nobody waits to release.
    leaving: AtomicBool,
}

impl Routing {
    pub(crate) fn new(topic: &str, capacity: usize, events: UnboundedSender<GroupEvent>) -> Self {
        Self {
            topic: topic.to_string(),
            capacity: capacity.max(1),
            feeds: Mutex::new(HashMap::new()),
            events,
            consumer: OnceLock::new(),
            leaving: AtomicBool::new(false),
        }
    }

    /// The consumer whose context holds this routing.
    pub(crate) fn attach(&self, consumer: &Arc<SourceConsumer>) {
        let _ = self.consumer.set(Arc::downgrade(consumer));
    }

    /// From now on revocations are not deferred (the group is being left).
    pub(crate) fn leave(&self) {
        self.leaving.store(true, Ordering::Release);
    }

    /// Open a feed per partition of `list` and assign them.
    pub(crate) fn assign(
        &self,
        consumer: &BaseConsumer<SourceContext>,
        list: &TopicPartitionList,
    ) -> KafkaResult<()> {
        let owner = self.consumer.get().and_then(Weak::upgrade);
        let (Some(owner), Ok(mut feeds)) = (owner, self.feeds.lock()) else {
            // Assigned partitions without feeds would stall unseen.
            self.fail(exec_datafusion_err!(
                "kafka: partitions of '{}' assigned before the consumer was ready",
                self.topic
            ));
            return Ok(());
        };
        let assigned: Vec<Arc<AssignedPartition>> = partitions_in(list, &self.topic)
            .into_iter()
            .map(|partition| {
                let (tx, rx) = tokio::sync::mpsc::channel(self.capacity);
                feeds.insert(partition, tx);
                Arc::new(AssignedPartition {
                    topic: self.topic.clone(),
                    partition,
                    consumer: Arc::clone(&owner),
                    records: Mutex::new(Some(rx)),
                })
            })
            .collect();
        drop(feeds);
        let result = assign(consumer, list);
        if !assigned.is_empty() {
            let _ = self.events.send(GroupEvent::Assigned(assigned));
        }
        result
    }

    /// Close the feeds of the partitions of `list`. `true`: the job
    /// releases them; `false` (the group is being left): release now.
    pub(crate) fn revoke(&self, list: &TopicPartitionList) -> bool {
        let partitions = partitions_in(list, &self.topic);
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

    pub(crate) fn feed(&self, partition: i32) -> Option<Sender<Message>> {
        self.feeds.lock().ok()?.get(&partition).cloned()
    }

    pub(crate) fn fail(&self, error: DataFusionError) {
        let _ = self.events.send(GroupEvent::Failed(error));
    }
}

/// The partitions of `topic` in `list`.
fn partitions_in(list: &TopicPartitionList, topic: &str) -> Vec<i32> {
    list.elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect()
}

/// Take `list` on: added to the assignment under the cooperative protocol,
/// the whole new assignment under the eager one.
fn assign<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    list: &TopicPartitionList,
) -> KafkaResult<()> {
    if cooperative(consumer) {
        consumer.incremental_assign(list)
    } else {
        consumer.assign(list)
    }
}

/// Give `list` up: only those under the cooperative protocol, everything
/// under the eager one (which revokes the whole assignment).
pub(crate) fn unassign<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    list: &TopicPartitionList,
) -> KafkaResult<()> {
    if cooperative(consumer) {
        consumer.incremental_unassign(list)
    } else {
        consumer.unassign()
    }
}

fn cooperative<C: ConsumerContext>(consumer: &impl Consumer<C>) -> bool {
    matches!(
        consumer.rebalance_protocol(),
        RebalanceProtocol::Cooperative
    )
}

/// A consumer of the table with `options`, with `context`.
pub(crate) fn create_consumer(
    options: &KafkaOptions,
    context: SourceContext,
) -> Result<SourceConsumer> {
    consumer_config(options)
        .create_with_context(context)
        .map_err(|e| {
            DataFusionError::Plan(format!(
                "kafka: cannot create a consumer for topic '{}': {e}",
                options.topic
            ))
        })
}

/// The client settings of a source's consumer: the table's, with offsets
/// never committed or stored by librdkafka itself.
fn consumer_config(options: &KafkaOptions) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in &options.client {
        config.set(key, value);
    }
    config
        .set("group.id", options.group_id())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set(
            "auto.offset.reset",
            if options.start == Start::Latest {
                "latest"
            } else {
                "earliest"
            },
        );
    config
}

pub(crate) fn owned(message: &rdkafka::message::BorrowedMessage<'_>) -> Message {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    Message {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        headers,
    }
}

/// A task that ends with its owner.
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
