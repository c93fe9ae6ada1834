//! Streaming operators of Equipoise and the job runtime they plug into.
//!
//! - [`runtime`]: the [`runtime::JobRuntime`] every operator receives when it
//!   is planned (metrics registry, control bus, state registry).
//! - [`stage`]: how an operator enters a plan ([`stage::StreamStage`],
//!   [`stage::StageTable`], [`stage::DataFrameStageExt`]).
//! - [`class_monitor`]: per-class counts and the decayed class mix.
//! - [`class_label`]: label columns as class values.
//! - [`options`]: the `key=value, ...` option strings of table functions.
//! - [`oversample`]: the SMOTE family and QC-SMOTE (`smote`, `qc_smote`, ...).
//! - [`complexity`]: kDN, N3 and the typology of rows (`kdn_mean`, `n3`,
//!   `complexity_report`).
//! - [`features`]: which columns are label and features.
//! - [`table_function`]: arguments of the SQL table functions.
//! - [`knn`]: the exact k-nearest-neighbour engine the operators share.
//! - [`rng`]: the seeded generator behind "same seed, same output".

pub mod class_label;
pub mod class_monitor;
pub mod complexity;
pub mod features;
pub mod knn;
pub mod options;
pub mod oversample;
pub mod rng;
pub mod runtime;
pub mod stage;
pub mod table_function;

pub use class_monitor::{ClassMonitorOptions, ClassMonitorStage};
pub use oversample::{Method, OversampleOptions, OversampleStage, SamplingStrategy};
pub use runtime::{ControlSignal, JobRuntime, JobSnapshot, SignalTarget, StatefulOperator};
pub use stage::{DataFrameStageExt, StageTable, StreamStage};
