//! Sources and sinks of Equipoise.
//!
//! - [`file`]: CSV, gzip CSV, Parquet and newline-delimited JSON tables.
//! - [`generator`]: the deterministic telemetry stream with rare faults.
//! - [`error`]: typed connector errors (domain and retry hint).
//!
//! Kafka sources and sinks land here next, with the same error type and the
//! same runtime hooks (control bus for stop, state registry for offsets).

use std::sync::Arc;

use datafusion::execution::session_state::SessionState;

pub mod error;
pub mod file;
pub mod generator;

pub use error::{ConnectorError, ErrorDomain, RetryHint};
pub use file::register_file_table;
pub use generator::{GeneratorConfig, GeneratorTable, GeneratorTableFunction};

/// Register every table function of this crate in `state`
/// (`equipoise_generator`).
pub fn register_all(state: &mut SessionState) {
    state.register_udtf(generator::FUNCTION_NAME, Arc::new(GeneratorTableFunction));
}
