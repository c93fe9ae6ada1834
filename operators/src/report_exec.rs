//! The report table functions (`complexity_report`, `advisor_report`): a
//! table over a bounded input whose plan reads the whole input, then
//! emits one batch.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, plan_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties,
};
use futures::StreamExt;

use crate::batch_stream::{only_child, only_input_stream, single_stream_plan_methods};
use crate::stage::project;

/// Makes a report's kind for the input's physical plan (which an advisor
/// report searches for its detectors).
pub type KindFor =
    dyn Fn(&dyn Session, &Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ReportKind>> + Send + Sync;

/// The table a report function returns: `input` read to its end under a
/// [`ReportExec`].
pub struct ReportTable {
    /// The function, for messages.
    function: &'static str,
    input: LogicalPlan,
    schema: SchemaRef,
    /// What to use over an unbounded input, said in its error.
    instead: &'static str,
    kind_for: Box<KindFor>,
}

impl fmt::Debug for ReportTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReportTable")
            .field("function", &self.function)
            .finish_non_exhaustive()
    }
}

impl ReportTable {
    pub fn new(
        function: &'static str,
        input: LogicalPlan,
        schema: SchemaRef,
        instead: &'static str,
        kind_for: Box<KindFor>,
    ) -> Self {
        Self {
            function,
            input,
            schema,
            instead,
            kind_for,
        }
    }
}

#[async_trait]
impl TableProvider for ReportTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = state.create_physical_plan(&self.input).await?;
        if plan.boundedness().is_unbounded() {
            return plan_err!(
                "{} needs a bounded input; over a stream {}",
                self.function,
                self.instead
            );
        }
        let kind = (self.kind_for)(state, &plan)?;
        let exec: Arc<dyn ExecutionPlan> = Arc::new(ReportExec::new(
            Arc::new(CoalescePartitionsExec::new(plan)),
            kind,
        ));
        project(exec, projection)
    }
}

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

    // The input is gathered into one partition (the table's scan puts a
    // `CoalescePartitionsExec` under it); the report has no row order.
    single_stream_plan_methods!(keeps_order: false);

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child(self.kind.name(), children)?;
        Ok(Arc::new(Self::new(input, Arc::clone(&self.kind))))
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
