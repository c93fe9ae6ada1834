//! The sink's Kafka transaction under exactly-once delivery: one
//! transaction per checkpoint, holding the rows written since the previous
//! checkpoint and the source offsets the checkpoint covers
//! (`send_offsets_to_transaction`), so the rows and the offsets become
//! visible together or not at all.
//!
//! A transaction is begun when the job starts (after `init_transactions`
//! has fenced any earlier producer of the same `transactional.id` and
//! aborted its open transaction) and after every commit. Its commit
//! follows the checkpoint's store: a crash between the two leaves a stored
//! checkpoint whose offsets the group has not committed, and a restart
//! restores the newest checkpoint whose offsets it has
//! (`super::exactly_once`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::{DataFusionError, Result, exec_datafusion_err};
use equipoise_operators::runtime::PendingCommit;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};

use super::options::KafkaOptions;
use super::positions::KafkaCommit;

/// How long one transactional call may take.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts of a commit that failed with a retriable error.
const COMMIT_ATTEMPTS: u32 = 3;

/// A transactional producer with its transaction open.
#[derive(Clone)]
pub struct Transaction {
    producer: FutureProducer,
    id: String,
}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Transaction {
    /// A producer of `options`' topic with `transactional.id` = `id`,
    /// initialised (which fences earlier producers of the id and aborts
    /// their open transaction) and with a transaction begun. Blocks: call
    /// it on the blocking pool.
    pub(crate) fn begin(options: &KafkaOptions, id: &str) -> Result<Self> {
        let producer: FutureProducer = options
            .producer_config()
            .set("transactional.id", id)
            .create()
            .map_err(|e| {
                DataFusionError::Plan(format!(
                    "kafka: cannot create a transactional producer for topic '{}': {e}",
                    options.topic
                ))
            })?;
        producer
            .init_transactions(TRANSACTION_TIMEOUT)
            .map_err(|e| DataFusionError::Execution(transaction_error(id, "initialise", &e)))?;
        producer
            .begin_transaction()
            .map_err(|e| DataFusionError::Execution(transaction_error(id, "begin", &e)))?;
        tracing::info!(
            transactional_id = id,
            "kafka sink: transactions initialised"
        );
        Ok(Self {
            producer,
            id: id.to_string(),
        })
    }

    pub(crate) fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Commit the open transaction, which holds every row sent and
    /// acknowledged before checkpoint `epoch` was cut, with the source
    /// offsets of that checkpoint (`commit`); then begin the next one
    /// unless `last`. On failure the transaction is aborted and the error
    /// ends the job: it restarts from the checkpoint whose offsets the
    /// group has committed.
    pub(crate) async fn commit(
        &self,
        epoch: u64,
        commit: Option<Arc<dyn PendingCommit>>,
        last: bool,
    ) -> Result<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.commit_blocking(epoch, commit.as_deref(), last))
            .await
            .map_err(|e| {
                DataFusionError::Internal(format!("kafka: a transaction call did not finish: {e}"))
            })?
    }

    fn commit_blocking(
        &self,
        epoch: u64,
        commit: Option<&dyn PendingCommit>,
        last: bool,
    ) -> Result<()> {
        let result = self.send_offsets(commit).and_then(|()| {
            let mut attempt = 0;
            loop {
                match self.producer.commit_transaction(TRANSACTION_TIMEOUT) {
                    Ok(()) => return Ok(()),
                    Err(KafkaError::Transaction(e))
                        if e.is_retriable() && attempt < COMMIT_ATTEMPTS =>
                    {
                        attempt += 1;
                    }
                    Err(e) => return Err(transaction_error(&self.id, "commit", &e)),
                }
            }
        });
        if let Err(why) = result {
            if let Err(abort) = self.producer.abort_transaction(TRANSACTION_TIMEOUT) {
                tracing::warn!(transactional_id = %self.id, epoch, error = %abort, "kafka sink: the failed transaction was not aborted; the broker aborts it when it times out or the id is initialised again");
            }
            return Err(exec_datafusion_err!(
                "{why}; checkpoint {epoch}'s rows and offsets were not committed, and the job \
                 resumes from the checkpoint before it"
            ));
        }
        tracing::debug!(transactional_id = %self.id, epoch, "kafka sink: transaction committed");
        if !last {
            self.producer.begin_transaction().map_err(|e| {
                DataFusionError::Execution(transaction_error(&self.id, "begin", &e))
            })?;
        }
        Ok(())
    }

    /// Add the checkpoint's source offsets to the transaction. Every
    /// partition must still be this consumer's: the rows of a partition
    /// revoked since are in the transaction, and committing them without
    /// their offsets would let its new owner write them again.
    fn send_offsets(&self, commit: Option<&dyn PendingCommit>) -> Result<(), String> {
        let Some(commit) = commit else {
            return Ok(());
        };
        let Some(commit) = commit.as_any().downcast_ref::<KafkaCommit>() else {
            return Err(
                "exactly-once delivery needs a Kafka source: only its offsets can join \
                        the sink's transaction"
                    .into(),
            );
        };
        if commit.positions.is_empty() {
            return Ok(());
        }
        let (offsets, revoked) = commit
            .owned_offsets()
            .map_err(|e| transaction_error(&self.id, "list the offsets of", &e))?;
        if let Some(partition) = revoked.first() {
            return Err(format!(
                "kafka: partition {partition} of '{}' was revoked while its rows were in \
                 transaction '{}' (a job with state per replica cannot hand a partition's \
                 rows over; scale out with state per partition)",
                commit.topic, self.id
            ));
        }
        let Some(group) = commit.consumer.group_metadata() else {
            return Err(format!(
                "kafka: the source of '{}' has no consumer group for transaction '{}'",
                commit.topic, self.id
            ));
        };
        self.producer
            .send_offsets_to_transaction(&offsets, &group, TRANSACTION_TIMEOUT)
            .map_err(|e| transaction_error(&self.id, "send the offsets to", &e))
    }
}

fn transaction_error(id: &str, what: &str, error: &KafkaError) -> String {
    let fenced = matches!(
        error.rdkafka_error_code(),
        Some(
            rdkafka::types::RDKafkaErrorCode::Fenced
                | rdkafka::types::RDKafkaErrorCode::ProducerFenced
                | rdkafka::types::RDKafkaErrorCode::InvalidProducerEpoch
        )
    );
    if fenced {
        format!(
            "kafka: transaction '{id}' was fenced: another instance of this job started with \
             the same transactional.id ({error})"
        )
    } else {
        format!("kafka: cannot {what} transaction '{id}': {error}")
    }
}
