//! Streaming operators of Equipoise and the job runtime they plug into.
//!
//! Floors, each importing only from those below it:
//!
//! 1. vocabulary and plumbing: [`columns`] (the column names operators
//!    share), [`metrics`] (shared Prometheus families, the class-label cap),
//!    [`runtime`] (the [`runtime::JobRuntime`] every operator receives when
//!    it is planned: metrics registry, control bus, state registry),
//!    [`stage`] (how an operator enters a plan: [`stage::StreamStage`],
//!    [`stage::StageTable`], the `mode` vocabulary), [`batch_stream`],
//!    [`options`], [`features`], [`class_label`], [`knn`], [`rng`];
//! 2. the operators; one may use another's algorithms (complexity's
//!    canonical order and kDN, drift's ADWIN), never its execution node;
//! 3. [`dataframe`]: every operator as a DataFrame method
//!    ([`dataframe::DataFrameStageExt`]), and [`table_functions`] below.
//!
//! Modules:
//!
//! - [`batch_stream`]: the output stream of batch-at-a-time operators.
//! - [`class_monitor`]: per-class counts and the decayed class mix.
//! - [`class_label`]: label columns as class values.
//! - [`options`]: the `key=value, ...` option strings of table functions.
//! - [`oversample`]: the SMOTE family and QC-SMOTE (`smote`, `qc_smote`, ...).
//! - [`complexity`]: kDN, N3 and the typology of rows (`kdn_mean`, `n3`,
//!   `complexity_report`).
//! - [`drift`]: drift detectors (ADWIN, DDM, EDDM, HDDM_A, HDDM_W and
//!   Page-Hinkley matching River; KSWIN, DDM-OCI, PerfSim, class prior) and
//!   the `drift_monitor` operator.
//! - [`detector`]: online learners, the `train_detector` /
//!   `score_detector` operators and the advisor over learner variants
//!   (`advisor_report`).
//! - [`prequential`]: test-then-train per-class quality.
//! - [`features`]: which columns are label and features.
//! - [`table_args`]: arguments of the SQL table functions.
//! - [`icost`]: per-row cost weights from instance complexity (`icost`).
//! - [`knn`]: the exact k-nearest-neighbour engine the operators share.
//! - [`rng`]: the seeded generator behind "same seed, same output".

pub mod batch_stream;
pub mod class_label;
pub mod class_monitor;
pub mod columns;
pub mod complexity;
pub mod dataframe;
pub mod detector;
pub mod drift;
pub mod expr_fn;
pub mod features;
pub mod icost;
pub mod knn;
pub mod metrics;
pub mod options;
pub mod oversample;
pub mod parallel;
pub mod prequential;
pub mod report_exec;
pub mod rng;
pub mod runtime;
pub mod stage;
pub mod stream_filter;
mod sync;
pub mod table_args;

pub use class_monitor::{ClassMonitorOptions, ClassMonitorStage};
pub use dataframe::DataFrameStageExt;
pub use detector::DetectorOptions;
pub use drift::DriftMonitorOptions;
pub use icost::{IcostMethod, IcostOptions, IcostStage};
pub use oversample::{Method, OversampleOptions, OversampleStage, SamplingStrategy};
pub use runtime::{
    ControlSignal, DriftEvent, JobRuntime, JobSnapshot, SignalTarget, StatefulOperator,
};
pub use stage::{Mode, StageTable, StreamStage};

use std::sync::Arc;

use datafusion::catalog::TableFunctionImpl;
use datafusion::common::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::AggregateUDF;
use datafusion::physical_optimizer::PhysicalOptimizerRule;

/// Every operator's SQL table function, by name.
pub fn table_functions() -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    let mut functions = oversample::table_function::table_functions();
    functions.push(("icost", Arc::new(icost::table_function::IcostFunction)));
    functions.push((
        "train_detector",
        Arc::new(detector::table_function::TrainDetectorFunction),
    ));
    functions.push((
        "score_detector",
        Arc::new(detector::table_function::ScoreDetectorFunction),
    ));
    functions.push((
        "drift_monitor",
        Arc::new(drift::table_function::DriftMonitorFunction),
    ));
    functions.push((
        "complexity_report",
        Arc::new(complexity::complexity_report::ComplexityReportFunction),
    ));
    functions.push((
        "advisor_report",
        Arc::new(detector::advisor_report::AdvisorReportFunction),
    ));
    functions
}

/// The drift detectors as window functions (`adwin`, `ddm`, ...).
pub fn window_functions() -> Vec<Arc<datafusion::logical_expr::WindowUDF>> {
    drift::window_functions::window_functions()
}

/// The aggregates backed by the neighbour engine (`kdn_mean`, `n3`, ...).
pub fn aggregate_functions() -> Vec<Arc<AggregateUDF>> {
    vec![
        complexity::kdn_mean::kdn_mean_udaf(),
        complexity::kdn_mean::kdn_mean_of_udaf(),
        complexity::n3::n3_udaf(),
        complexity::n3::n3_of_udaf(),
    ]
}

/// Register every function and operator of this crate in `state`: the
/// operators' table functions, the neighbour-based aggregates and the drift
/// detectors' window functions. Operators also need the runtime in the
/// session's configuration ([`JobRuntime`]), which the application installs.
pub fn register_all(state: &mut SessionState) -> Result<()> {
    for (name, function) in table_functions() {
        state.register_udtf(name, function);
    }
    for udaf in aggregate_functions() {
        state.register_udaf(udaf)?;
    }
    for udwf in window_functions() {
        state.register_udwf(udwf)?;
    }
    let rule: Arc<dyn PhysicalOptimizerRule + Send + Sync> =
        Arc::new(drift::whole_partition::WholePartitionDetectors);
    if !state
        .physical_optimizers()
        .iter()
        .any(|r| r.name() == rule.name())
    {
        *state = SessionStateBuilder::new_from_existing(state.clone())
            .with_physical_optimizer_rule(rule)
            .build();
    }
    Ok(())
}
