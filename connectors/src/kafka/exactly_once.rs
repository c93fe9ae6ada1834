//! Exactly-once delivery for a checkpointed job: what the job does before
//! its plan runs.
//!
//! 1. [`begin_transactions`]: the plan's Kafka sink gets a transactional
//!    producer. Initialising it fences any earlier instance of the job
//!    (same `transactional.id`) and aborts the transaction that instance
//!    left open, so no zombie can commit after this point.
//! 2. [`committed_checkpoint`]: the checkpoint to restore is the newest
//!    whose source positions equal the offsets the group has committed.
//!    Each transaction commits a checkpoint's offsets with the rows
//!    written before it, after that checkpoint was stored; a crash
//!    between the store and the commit leaves one checkpoint newer than
//!    the committed offsets, and restoring it would skip the rows of the
//!    aborted transaction. The newest matching checkpoint is the state
//!    that produced exactly the committed rows.
//!
//! Both run before the plan pulls its first batch, in this order: a
//! committed-offset read waits while a transaction holding offsets of
//! the group is open, and step 1 ends any such transaction.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::physical_plan::ExecutionPlan;
use equipoise_operators::runtime::{CheckpointStore, StoredCheckpoint};
use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::consumer::{Positions, SourceContext, create_consumer, kafka_error};
use super::options::KafkaOptions;
use super::positions::positions_in;
use super::sink::KafkaSink;
use super::source::kafka_scans;
use super::transaction::Transaction;

/// librdkafka's default `transaction.timeout.ms`.
const DEFAULT_TRANSACTION_TIMEOUT_MS: u64 = 60_000;
/// How long the committed-offset read may take.
const OFFSET_FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Give the Kafka sink of `plan` an initialised transactional producer with
/// a transaction open. Its `transactional.id` is the sink table's
/// `'transactional.id'` option if set, else `<source group.id>.<sink
/// topic>`, followed by `.<scope>` when given (one plan per Kafka
/// partition: each has its own id, so the partition's next owner fences
/// the previous one). Checkpoints every `interval` must fit in the
/// transaction timeout twice. The transactional id.
pub async fn begin_transactions(
    plan: &Arc<dyn ExecutionPlan>,
    scope: Option<&str>,
    interval: Duration,
) -> Result<String> {
    let id = transactional_id(plan.as_ref(), scope, interval)?;
    let sink = kafka_sink(plan.as_ref())?;
    let options = sink.options().clone();
    let transaction = {
        let id = id.clone();
        tokio::task::spawn_blocking(move || Transaction::begin(&options, &id))
            .await
            .map_err(|e| {
                DataFusionError::Internal(format!("kafka: a transaction call did not finish: {e}"))
            })??
    };
    sink.set_transaction(transaction)?;
    Ok(id)
}

/// The `transactional.id` [`begin_transactions`] would use, after checking
/// that `plan` can run exactly once (one Kafka source, a Kafka sink, the
/// interval within the transaction timeout); touches no broker, so
/// `--check` can call it beside a running job.
pub fn transactional_id(
    plan: &dyn ExecutionPlan,
    scope: Option<&str>,
    interval: Duration,
) -> Result<String> {
    let sink = kafka_sink(plan)?;
    let (_, source) = kafka_source(plan)?;
    let options = sink.options();
    let timeout_ms = match options.client.get("transaction.timeout.ms") {
        None => DEFAULT_TRANSACTION_TIMEOUT_MS,
        Some(value) => value.parse().map_err(|_| {
            DataFusionError::Plan(format!(
                "kafka: 'transaction.timeout.ms' must be a number of milliseconds, got '{value}'"
            ))
        })?,
    };
    if interval.as_millis() * 2 > u128::from(timeout_ms) {
        return plan_err!(
            "exactly-once: a transaction stays open for a checkpoint interval ({} ms), which \
             must be at most half the sink's transaction.timeout.ms ({timeout_ms} ms) or the \
             broker aborts it; lower [checkpoint] interval or raise 'transaction.timeout.ms' \
             in the sink table's OPTIONS",
            interval.as_millis()
        );
    }
    let base = options
        .client
        .get("transactional.id")
        .cloned()
        .unwrap_or_else(|| format!("{}.{}", source.group_id(), options.topic));
    Ok(match scope {
        Some(scope) => format!("{base}.{scope}"),
        None => base,
    })
}

/// The newest checkpoint in `store` whose positions of `plan`'s Kafka
/// source equal the offsets its group has committed; `None` when the store
/// is empty or the group has committed none of the checkpoints'
/// partitions (the first transaction never committed: the job starts
/// without state). Any other committed offsets match no checkpoint, and
/// restoring would lose or repeat rows: that is an error.
pub async fn committed_checkpoint(
    plan: &dyn ExecutionPlan,
    store: &CheckpointStore,
) -> Result<Option<StoredCheckpoint>> {
    let checkpoints = store.readable().await?;
    if checkpoints.is_empty() {
        return Ok(None);
    }
    let (source_id, options) = kafka_source(plan)?;
    let source_id = source_id.to_string();
    let candidates: Vec<(usize, Positions)> = checkpoints
        .iter()
        .enumerate()
        .map(|(i, c)| Ok((i, positions_in(&c.snapshot, &source_id)?)))
        .collect::<Result<_>>()?;
    let partitions: BTreeSet<i32> = candidates
        .iter()
        .flat_map(|(_, positions)| positions.keys().copied())
        .collect();
    let committed = committed_offsets(options.clone(), partitions).await?;
    // Newest first: the first match is the one to restore.
    for (i, positions) in &candidates {
        if !positions.is_empty() && positions.iter().all(|(p, o)| committed.get(p) == Some(o)) {
            let chosen = checkpoints.into_iter().nth(*i);
            if let Some(chosen) = &chosen
                && *i > 0
            {
                tracing::info!(
                    store = store.url(),
                    epoch = chosen.epoch,
                    newer = i,
                    "exactly-once: restoring checkpoint {}, the newest whose offsets the group \
                     committed (the transaction of a newer one did not commit)",
                    chosen.epoch
                );
            }
            return Ok(chosen);
        }
    }
    if committed.is_empty() {
        tracing::info!(
            store = store.url(),
            group = options.group_id(),
            "exactly-once: the group has committed no offsets of these checkpoints (no \
             transaction of theirs committed); starting without state"
        );
        return Ok(None);
    }
    plan_err!(
        "exactly-once: group '{}' has committed offsets {committed:?} of topic '{}', and no \
         checkpoint in {} has these positions: the checkpoints belong to another job or the \
         one that matched was deleted; restoring any would lose or repeat rows (to start \
         without state from the committed offsets, empty the checkpoint store)",
        options.group_id(),
        options.topic,
        store.url()
    )
}

/// The offsets `options`' group has committed for `partitions` of its
/// topic (partitions without one left out).
async fn committed_offsets(options: KafkaOptions, partitions: BTreeSet<i32>) -> Result<Positions> {
    tokio::task::spawn_blocking(move || {
        let context = SourceContext::new(&options.topic, Positions::new());
        let consumer = create_consumer(&options, context)?;
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            list.add_partition(&options.topic, partition);
        }
        let committed = consumer
            .committed_offsets(list, OFFSET_FETCH_TIMEOUT)
            .map_err(|e| kafka_error(&e))?;
        Ok(committed
            .elements_for_topic(&options.topic)
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(next) => Some((e.partition(), next)),
                _ => None,
            })
            .collect())
    })
    .await
    .map_err(|e| DataFusionError::Internal(format!("kafka: an offset read did not finish: {e}")))?
}

/// The one Kafka sink of `plan`.
fn kafka_sink(plan: &dyn ExecutionPlan) -> Result<&KafkaSink> {
    if let Some(exec) = plan.downcast_ref::<DataSinkExec>() {
        let sink: &dyn std::any::Any = exec.sink();
        if let Some(sink) = sink.downcast_ref::<KafkaSink>() {
            return Ok(sink);
        }
    }
    plan_err!(
        "exactly-once delivery needs the job's last statement to insert into a Kafka table \
         (the rows and the source offsets commit in one Kafka transaction)"
    )
}

/// The one Kafka source of `plan`: its operator id and options.
fn kafka_source(plan: &dyn ExecutionPlan) -> Result<(&str, &KafkaOptions)> {
    let found = kafka_scans(plan);
    match found.as_slice() {
        [scan] => Ok((scan.source_id(), scan.options())),
        _ => plan_err!(
            "exactly-once delivery needs the job to read one Kafka table (it reads {}): the \
             offsets committed in the sink's transaction are that source's",
            found.len()
        ),
    }
}
