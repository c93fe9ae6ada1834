//! Streaming operators of Equipoise and the job runtime they plug into.
//!
//! - [`runtime`]: the [`runtime::JobRuntime`] every operator receives when it
//!   is planned (metrics registry, control bus, state registry).
//! - [`stage`]: how an operator enters a plan ([`stage::StreamStage`],
//!   [`stage::StageTable`], [`stage::DataFrameStageExt`]).
//! - [`class_monitor`]: per-class counts and the decayed class mix.
//! - [`class_label`]: label columns as class values.
//! - [`options`]: the `key=value, ...` option strings of table functions.

pub mod class_label;
pub mod class_monitor;
pub mod options;
pub mod runtime;
pub mod stage;

pub use class_monitor::{ClassMonitorOptions, ClassMonitorStage};
pub use runtime::{ControlSignal, JobRuntime, JobSnapshot, SignalTarget, StatefulOperator};
pub use stage::{DataFrameStageExt, StageTable, StreamStage};
