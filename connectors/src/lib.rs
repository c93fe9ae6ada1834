//! Sources and sinks of Equipoise.
//!
//! - [`file`]: CSV, gzip CSV, Parquet and newline-delimited JSON tables.
//! - [`generator`]: the deterministic telemetry stream with rare faults.
//! - [`error`]: typed connector errors (domain and retry hint).
//!
//! Kafka sources and sinks land here next, with the same error type and the
//! same runtime hooks (control bus for stop, state registry for offsets).

pub mod error;
pub mod file;
pub mod generator;

pub use error::{ConnectorError, ErrorDomain, RetryHint};
pub use file::register_file_table;
pub use generator::{GeneratorConfig, GeneratorTable, GeneratorTableFunction};
