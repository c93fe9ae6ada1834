//! Sources and sinks of Equipoise.
//!
//! - [`file`]: CSV, gzip CSV, Parquet and newline-delimited JSON tables.
//! - [`generator`]: the deterministic telemetry stream with rare faults.
//! - [`error`]: typed connector errors (domain and retry hint).
//!
//! - [`kafka`]: Kafka tables (`STORED AS KAFKA`): a streaming source into
//!   Arrow with dead letters, and a sink.

use std::sync::Arc;

use datafusion::execution::session_state::SessionState;

pub mod error;
pub mod file;
pub mod generator;
pub mod kafka;

pub use error::{ConnectorError, ErrorDomain, RetryHint};
pub use file::register_file_table;
pub use generator::{GeneratorConfig, GeneratorKeys, GeneratorTable, GeneratorTableFunction};

/// Register what this crate adds to a session: the `equipoise_generator`
/// table function and the `KAFKA` table factory.
pub fn register_all(state: &mut SessionState) {
    state.register_udtf(generator::FUNCTION_NAME, Arc::new(GeneratorTableFunction));
    state.table_factories_mut().insert(
        kafka::FILE_TYPE.to_string(),
        Arc::new(kafka::KafkaTableFactory),
    );
}
