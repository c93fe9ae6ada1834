//! SQL functions of Equipoise, shaped like DataFusion's `functions-aggregate`
//! crate: one function per file, [`all_default_aggregate_functions`],
//! [`expr_fn`] builders and [`register_all`].
//!
//! This crate depends on DataFusion alone: no connector, no operator, no
//! runtime. That keeps the functions usable in any DataFusion application and
//! in batch queries as well as on streams.
//!
//! Confusion-based metrics share [`confusion`]: they ignore rows where the
//! label or the prediction is NULL, take the classes as the union of values
//! seen in either column, give NULL on no rows, and retract rows for sliding
//! window frames, so `OVER (ORDER BY ... ROWS BETWEEN n PRECEDING AND CURRENT
//! ROW)` runs on an unbounded stream in memory bounded by the classes seen.

use std::sync::Arc;

use datafusion::catalog::TableFunctionImpl;
use datafusion::common::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{AggregateUDF, WindowUDF};

pub mod balanced_accuracy;
pub mod balanced_weight;
pub mod c2_imbalance;
pub mod class_counts;
pub mod class_tally;
pub mod classes;
pub mod cohen_kappa;
pub mod confusion;
mod doc;
pub mod expr_fn;
pub mod f1_of;
mod generic_udf;
pub mod gmean;
pub mod imbalance_ratio;
pub mod imbalance_report;
pub mod macro_f1;
pub mod mcc;
pub mod pr_auc;
pub mod precision_of;
pub mod recall_of;
pub mod roc_auc;
pub mod score_curve;
pub mod scores;
pub mod specificity_of;

/// Every aggregate function of this crate.
pub fn all_default_aggregate_functions() -> Vec<Arc<AggregateUDF>> {
    vec![
        gmean::gmean_udaf(),
        balanced_accuracy::balanced_accuracy_udaf(),
        macro_f1::macro_f1_udaf(),
        mcc::mcc_udaf(),
        cohen_kappa::cohen_kappa_udaf(),
        recall_of::recall_of_udaf(),
        precision_of::precision_of_udaf(),
        f1_of::f1_of_udaf(),
        specificity_of::specificity_of_udaf(),
        imbalance_ratio::imbalance_ratio_udaf(),
        class_counts::class_counts_udaf(),
        c2_imbalance::c2_imbalance_udaf(),
        roc_auc::roc_auc_udaf(),
        pr_auc::pr_auc_udaf(),
    ]
}

/// Every window function of this crate.
pub fn all_default_window_functions() -> Vec<Arc<WindowUDF>> {
    vec![balanced_weight::balanced_weight_udwf()]
}

/// Every table function of this crate, by name.
pub fn all_table_functions() -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    vec![(
        imbalance_report::NAME,
        Arc::new(imbalance_report::ImbalanceReportFunction),
    )]
}

/// Register every function of this crate in `state`: aggregates, window
/// functions and table functions, replacing functions of the same name
/// (logged, since a host application may not expect it).
pub fn register_all(state: &mut SessionState) -> Result<()> {
    for udaf in all_default_aggregate_functions() {
        if let Some(previous) = state.register_udaf(udaf)? {
            tracing::debug!(name = previous.name(), "replaced an aggregate function");
        }
    }
    for udwf in all_default_window_functions() {
        if let Some(previous) = state.register_udwf(udwf)? {
            tracing::debug!(name = previous.name(), "replaced a window function");
        }
    }
    for (name, function) in all_table_functions() {
        state.register_udtf(name, function);
    }
    Ok(())
}
