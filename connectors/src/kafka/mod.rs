//! Kafka tables: `CREATE [UNBOUNDED] EXTERNAL TABLE name (columns) STORED AS
//! KAFKA LOCATION 'topic' OPTIONS (...)`, read by `SELECT` and written by
//! `INSERT INTO`.
//!
//! - [`options`]: what a table's options mean (and how DataFusion's
//!   rewriting of option keys is undone).
//! - [`decode`]: messages into rows (JSON, CSV), one message one row, and
//!   the messages that are not rows, each with its reason.
//! - [`source`]: the consumer loop behind a scan (bounded to the high
//!   watermarks, or unbounded).
//! - [`dead_letter`]: where bad records go.
//! - [`sink`]: `INSERT INTO`.
//! - [`metrics`]: records, bytes, consumer lag, sent and dead-lettered
//!   records.
//!
//! # Delivery
//!
//! Built and tested:
//! - The source never commits offsets on its own (`enable.auto.commit` and
//!   `enable.auto.offset.store` are off and cannot be turned on). A bounded
//!   `SELECT` reads from the start position to the watermarks and commits
//!   nothing: ad-hoc queries do not move a group's progress.
//! - The sink returns only after the broker acknowledged every message
//!   (idempotent producer, so its own retries add no duplicates).
//! - No bad record is lost: it is counted, and written to the dead-letter
//!   topic (acknowledged before the batch it came from is emitted), or fails
//!   the stream with a line naming topic, partition and offset, or is
//!   skipped (counted) when the table says `'bad_records' 'skip'`.
//!
//! Not built yet: committing an unbounded source's offsets once the rows
//! made from them are acknowledged downstream (at-least-once end to end)
//! and the transactional exactly-once path. Until then an unbounded
//! `'start' 'committed'` read starts where the group's last committed
//! offsets (committed by other clients) left it.

pub mod dead_letter;
pub mod decode;
pub mod metrics;
pub mod options;
pub mod sink;
pub mod source;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::CreateExternalTable;

pub use options::KafkaOptions;
pub use source::KafkaTable;

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
        let options = KafkaOptions::from_ddl(topic, cmd.unbounded, &cmd.options)?;
        let schema = Arc::new(cmd.schema.as_arrow().clone());
        Ok(Arc::new(KafkaTable::try_new(schema, options)?))
    }
}
