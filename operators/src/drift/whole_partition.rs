//! Drift detectors over a bounded input run over whole partitions.
//!
//! DataFusion plans a causal window function over sorted input as a
//! `BoundedWindowAggExec`, which calls the evaluator once per row and
//! gathers a `ScalarValue` per row (DataFusion 55's `evaluate_stateful`):
//! at 50-70 ns per row that costs several times the detectors' own update.
//! Over a bounded input nothing is gained by that: this rule puts a
//! `WindowAggExec` in its place, which hands each partition to the
//! evaluator's `evaluate_all` at once. Only nodes whose every window
//! expression is one of our detectors, over sorted bounded input, change;
//! an unbounded input keeps the bounded (per-row) execution, which is what
//! a stream needs. The cost: `WindowAggExec` holds a partition's rows until
//! it ends, as DataFusion does for any window function without bounded
//! execution.

use std::any::Any;
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::windows::{
    BoundedWindowAggExec, StandardWindowExpr, WindowAggExec, WindowExpr, WindowUDFExpr,
};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, InputOrderMode};

use super::window_functions::{DdmOciWindow, DetectorWindow};

/// The physical optimizer rule (registered by `register_all`).
#[derive(Debug, Default)]
pub struct WholePartitionDetectors;

/// True when `expr` is one of our detectors' window functions.
fn is_detector(expr: &Arc<dyn WindowExpr>) -> bool {
    expr.as_any()
        .downcast_ref::<StandardWindowExpr>()
        .and_then(|e| {
            e.get_standard_func_expr()
                .as_any()
                .downcast_ref::<WindowUDFExpr>()
        })
        .is_some_and(|udf| {
            let function: &dyn Any = udf.fun().inner().as_ref();
            function.is::<DetectorWindow>() || function.is::<DdmOciWindow>()
        })
}

impl PhysicalOptimizerRule for WholePartitionDetectors {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(window) = node.downcast_ref::<BoundedWindowAggExec>() else {
                return Ok(Transformed::no(node));
            };
            let eligible = !window.input().boundedness().is_unbounded()
                && window.input_order_mode == InputOrderMode::Sorted
                && window.window_expr().iter().all(is_detector);
            if !eligible {
                return Ok(Transformed::no(node));
            }
            let whole = WindowAggExec::try_new(
                window.window_expr().to_vec(),
                Arc::clone(window.input()),
                !window.partition_keys().is_empty(),
            )?;
            Ok(Transformed::yes(Arc::new(whole) as Arc<dyn ExecutionPlan>))
        })
        .data()
    }

    fn name(&self) -> &str {
        "whole_partition_detectors"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
