//! Kafka tables: `CREATE [UNBOUNDED] EXTERNAL TABLE name (columns) STORED AS
//! KAFKA LOCATION 'topic' OPTIONS (...)`, read by `SELECT` and written by
//! `INSERT INTO`.
//!
//! - [`options`]: what a table's options mean (and how DataFusion's
//!   rewriting of option keys is undone).
//! - [`decode`]: messages into rows (JSON, CSV, Avro), one message one row, and
//!   the messages that are not rows, each with its reason.
//! - [`source`]: the consumer loop behind a scan (bounded to the high
//!   watermarks, or unbounded).
//! - `consumer`: a source's consumer, its rebalance callback and the
//!   error rules (the bottom of the module).
//! - [`group`]: a replica's share of a consumer group, one feed per
//!   assigned partition (jobs with state per partition).
//! - [`dead_letter`]: where bad records go.
//! - [`sink`]: `INSERT INTO`.
//! - [`transaction`]: the sink's transaction under exactly-once delivery;
//!   [`exactly_once`]: what a job does before its plan runs (fence, then
//!   choose the checkpoint the group's committed offsets match).
//! - [`metrics`]: records, bytes, consumer lag, sent and dead-lettered
//!   records.
//!
//! # Delivery
//!
//! At-least-once, end to end through a plan, as built and tested:
//! - The source never commits offsets on its own (`enable.auto.commit` and
//!   `enable.auto.offset.store` are off and cannot be turned on).
//! - When a source's stream ends normally (the end of a bounded read, or a
//!   stop of the job), it hands the positions after its last record over to
//!   the runtime (`JobRuntime::commits`), under its operator id.
//! - The sink returns only after the broker acknowledged every message it
//!   sent (idempotent producer, so its own retries add no duplicates); then,
//!   and only then, it commits the positions of the sources of its own
//!   plan. A plan that fails, or a query without a Kafka sink (an ad-hoc
//!   `SELECT`), commits nothing. So `INSERT INTO out SELECT ... FROM in`
//!   reads each record of `in` until the rows made from it are stored.
//! - No bad record is lost: it is counted, and written to the dead-letter
//!   topic (acknowledged before the source moves past it), or fails the
//!   stream with a line naming topic, partition and offset, or is skipped
//!   (counted) when the table says `'bad_records' 'skip'`.
//!
//! - A checkpointed job (`equipoise run --config` with a checkpoint store)
//!   commits while it runs: a completed checkpoint hands its cut's
//!   positions to a background commit, after the checkpoint is stored
//!   (`equipoise_operators::runtime::checkpoint`).
//!
//! Rebalances of an unbounded group read:
//! - With state per partition (`group`), revoked partitions are flushed,
//!   checkpointed and committed before they are released; assigned ones
//!   resume from their checkpoint and the committed offset.
//! - With one chain per replica (the default), a revoked partition is
//!   released at once: its records already in the plan are still
//!   processed and written, but its positions are no longer committed by
//!   this replica (a commit only covers partitions the consumer owns), so
//!   its new owner reads from the last commit: duplicates, never a loss.
//!   Why not flush it: the replica's one chain mixes every partition's
//!   records and state, so there is no partition-sized piece to hand over;
//!   jobs that rebalance use state per partition.
//!
//! Exactly-once (`delivery.guarantee = "exactly-once"`, a checkpointed
//! job; [`transaction`], [`exactly_once`]): the sink writes in Kafka
//! transactions, one per checkpoint, each committing the rows written
//! before the checkpoint's cut with the cut's source offsets
//! (`send_offsets_to_transaction`); the checkpoint is stored first. On
//! start the job initialises its producer (fencing an earlier instance of
//! its `transactional.id`), then restores the newest checkpoint whose
//! positions equal the group's committed offsets. Readers use
//! `read_committed`. With state per replica a partition revoked while its
//! rows are in a transaction ends the job; dead letters stay at least
//! once. Verified against the mock cluster only as far as it goes
//! (README, "Delivery: exactly once"): the offsets in the transaction,
//! hidden aborted rows and fencing rest on Kafka.
//!
//! A job that crashes re-reads from its newest checkpoint (under
//! exactly-once, the newest committed one), or from the group's committed
//! offsets without one.

mod consumer;
pub mod dead_letter;
pub mod decode;
pub mod exactly_once;
pub mod group;
pub mod metrics;
pub mod options;
mod positions;
pub mod sink;
pub mod source;
pub mod transaction;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::logical_expr::CreateExternalTable;

pub use consumer::{AssignedPartition, GroupEvent};
pub use exactly_once::{begin_transactions, committed_checkpoint, transactional_id};
pub use group::PartitionGroup;
pub use options::KafkaOptions;
pub use source::{KafkaTable, kafka_sources};

/// The `STORED AS` name of Kafka tables.
pub const FILE_TYPE: &str = "KAFKA";

/// Makes a [`KafkaTable`] of each `CREATE EXTERNAL TABLE ... STORED AS KAFKA`.
#[derive(Debug, Default)]
pub struct KafkaTableFactory;

#[async_trait]
impl TableProviderFactory for KafkaTableFactory {
    async fn create(
        &self,
        _state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let [topic] = cmd.locations.as_slice() else {
            return plan_err!("kafka: LOCATION names one topic");
        };
        if cmd.schema.fields().is_empty() {
            return plan_err!(
                "kafka: declare the table's columns, e.g. CREATE EXTERNAL TABLE t (f1 DOUBLE, label INT) ..."
            );
        }
        let mut options = KafkaOptions::from_ddl(topic, cmd.unbounded, &cmd.options)?;
        if let Some(avro) = options.avro.as_mut() {
            avro.json = tokio::fs::read_to_string(&avro.file).await.map_err(|e| {
                DataFusionError::Plan(format!(
                    "kafka: cannot read avro_schema_file '{}': {e}",
                    avro.file
                ))
            })?;
        }
        let schema = Arc::new(cmd.schema.as_arrow().clone());
        Ok(Arc::new(KafkaTable::try_new(schema, options)?))
    }
}
