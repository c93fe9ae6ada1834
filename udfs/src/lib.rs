//! SQL functions of Equipoise, shaped like DataFusion's `functions-aggregate`
//! crate: one function per file, [`all_default_aggregate_functions`] and
//! [`register_all`].
//!
//! This crate depends on DataFusion alone: no connector, no operator, no
//! runtime. That keeps the functions usable in any DataFusion application and
//! in batch queries as well as on streams.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::AggregateUDF;

/// Every aggregate function of this crate.
pub fn all_default_aggregate_functions() -> Vec<Arc<AggregateUDF>> {
    Vec::new()
}

/// Register every function of this crate in `registry`, replacing functions
/// of the same name (logged, since a host application may not expect it).
pub fn register_all(registry: &mut dyn FunctionRegistry) -> Result<()> {
    for udaf in all_default_aggregate_functions() {
        if let Some(previous) = registry.register_udaf(udaf)? {
            tracing::debug!(name = previous.name(), "replaced an aggregate function");
        }
    }
    Ok(())
}
