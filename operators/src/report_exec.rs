//! The execution node of the report table functions (`complexity_report`,
//! `advisor_report`): it reads its whole input, then emits one batch.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;

use crate::batch_stream::only_input_stream;

/// One execution's report in the making.
pub trait Report: Send {
    /// Take an input batch in.
    fn absorb(&mut self, batch: &RecordBatch) -> Result<()>;
    /// The report, once the input has ended.
    fn finish(self: Box<Self>) -> Result<RecordBatch>;
}

/// What a report node makes: its name and details for `EXPLAIN`, its
/// schema, and a fresh [`Report`] per execution.
pub trait ReportKind: fmt::Debug + Send + Sync {
    /// The node's name, e.g. `ComplexityReportExec`.
    fn name(&self) -> &'static str;
    /// The details after the name in `EXPLAIN`.
    fn details(&self) -> String;
    fn schema(&self) -> SchemaRef;
    fn start(&self) -> Box<dyn Report>;
}

/// Reads the whole input, then emits the report.
#[derive(Debug)]
pub struct ReportExec {
    input: Arc<dyn ExecutionPlan>,
    kind: Arc<dyn ReportKind>,
    properties: Arc<PlanProperties>,
}

impl ReportExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, kind: Arc<dyn ReportKind>) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(kind.schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            input,
            kind,
            properties,
        }
    }
}

impl DisplayAs for ReportExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.kind.details())
    }
}

impl ExecutionPlan for ReportExec {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("{} takes one input", self.kind.name());
        }
        Ok(Arc::new(Self::new(
            children.swap_remove(0),
            Arc::clone(&self.kind),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let mut input = only_input_stream(self.kind.name(), &self.input, partition, context)?;
        let mut report = self.kind.start();
        let batch = futures::stream::once(async move {
            while let Some(batch) = input.next().await {
                report.absorb(&batch?)?;
            }
            report.finish()
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.kind.schema(),
            batch,
        )))
    }
}
