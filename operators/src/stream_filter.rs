//! A filter that passes each batch on as soon as it is filtered.
//!
//! DataFusion's `FilterExec` gathers its output into full batches, so rows
//! can wait inside it while its input waits on the source; a checkpoint cut
//! then would commit offsets of rows the sink has not been given
//! (`runtime::checkpoint`). A checkpointed job replaces every `FilterExec`
//! with this node ([`pass_through_filters`]): same predicate and
//! projection, batch for batch, empty results dropped.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, exec_err, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

/// A `FilterExec` without its batch gathering.
#[derive(Debug)]
pub struct StreamFilterExec {
    predicate: Arc<dyn PhysicalExpr>,
    projection: Option<Arc<[usize]>>,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl StreamFilterExec {
    /// The same filter as `filter`.
    pub fn from_filter(filter: &FilterExec) -> Self {
        Self {
            predicate: Arc::clone(filter.predicate()),
            projection: filter.projection().clone(),
            input: Arc::clone(filter.input()),
            properties: Arc::clone(filter.properties()),
        }
    }
}

/// `plan` with every `FilterExec` replaced by a [`StreamFilterExec`].
pub fn pass_through_filters(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        Ok(match node.downcast_ref::<FilterExec>() {
            Some(filter) => Transformed::yes(
                Arc::new(StreamFilterExec::from_filter(filter)) as Arc<dyn ExecutionPlan>
            ),
            None => Transformed::no(node),
        })
    })
    .map(|transformed| transformed.data)
}

impl DisplayAs for StreamFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamFilterExec: {}", self.predicate)
    }
}

impl ExecutionPlan for StreamFilterExec {
    fn name(&self) -> &str {
        "StreamFilterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        f(&self.predicate)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("StreamFilterExec takes one child, got {}", children.len());
        }
        Ok(Arc::new(Self {
            predicate: Arc::clone(&self.predicate),
            projection: self.projection.clone(),
            input: children.swap_remove(0),
            properties: Arc::clone(&self.properties),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let predicate = Arc::clone(&self.predicate);
        let projection = self.projection.clone();
        let filtered = input.filter_map(move |batch| {
            let result = batch.and_then(|batch| filter(&batch, &predicate, projection.as_deref()));
            std::future::ready(match result {
                Ok(Some(batch)) => Some(Ok(batch)),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            })
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            filtered,
        )))
    }
}

/// The rows of `batch` the predicate keeps, projected; `None` for none.
fn filter(
    batch: &RecordBatch,
    predicate: &Arc<dyn PhysicalExpr>,
    projection: Option<&[usize]>,
) -> Result<Option<RecordBatch>> {
    let mask = predicate.evaluate(batch)?.into_array(batch.num_rows())?;
    if mask.data_type() != &DataType::Boolean {
        return exec_err!("a filter predicate gave {} values", mask.data_type());
    }
    let kept = filter_record_batch(batch, mask.as_boolean())?;
    if kept.num_rows() == 0 {
        return Ok(None);
    }
    Ok(Some(match projection {
        Some(columns) => kept.project(columns)?,
        None => kept,
    }))
}

#[cfg(test)]
mod tests {
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn keeps_the_rows_and_columns_a_filter_keeps() -> Result<()> {
        let ctx = SessionContext::new();
        let df = ctx
            .sql(
                "SELECT a, b * 2 AS c FROM (VALUES (1, 10), (2, 20), (3, 30), (4, NULL)) AS t(a, b) \
                 WHERE a % 2 = 0 OR b IS NULL",
            )
            .await?;
        let plan = df.create_physical_plan().await?;
        let expected = collect(Arc::clone(&plan), ctx.task_ctx()).await?;
        let replaced = pass_through_filters(plan)?;
        let shown = displayable(replaced.as_ref()).indent(true).to_string();
        assert!(shown.contains("StreamFilterExec"), "{shown}");
        assert!(!shown.contains(" FilterExec"), "{shown}");
        let got = collect(replaced, ctx.task_ctx()).await?;
        let rows = |batches: &[RecordBatch]| {
            datafusion::arrow::util::pretty::pretty_format_batches(batches).map(|t| t.to_string())
        };
        assert_eq!(rows(&got)?, rows(&expected)?);
        assert_eq!(got.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
        Ok(())
    }
}
