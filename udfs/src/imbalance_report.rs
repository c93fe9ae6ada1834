//! `imbalance_report('table_or_view', 'label_column', 'prediction_column')`:
//! one row per class with the columns of imbalanced-learn's
//! `classification_report_imbalanced`: precision, recall, specificity, f1,
//! geometric mean (per class: `sqrt(recall * specificity)`), index balanced
//! accuracy (alpha 0.1, squared: `(1 + 0.1 (recall - specificity)) gmean²`)
//! and support (rows of the class in label).
//!
//! Classes are the union of values in both columns, sorted by value, and
//! named as text (as the reference names them). Rows where either column is
//! NULL are ignored. The report needs all rows, so its input must be bounded;
//! over a stream, use the windowed functions (`recall_of(...) OVER ...`).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{
    DataFusionError, Result, ScalarValue, TableReference, internal_err, plan_err,
};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::StreamExt;

use crate::classes::class_type;
use crate::confusion::{Confusion, ConfusionCounts};
use crate::scores::divide_or_zero;

pub const NAME: &str = "imbalance_report";
const ALPHA: f64 = 0.1;

fn report_schema() -> SchemaRef {
    let float = |name: &str| Field::new(name, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        Field::new("class", DataType::Utf8, false),
        float("precision"),
        float("recall"),
        float("specificity"),
        float("f1"),
        float("geometric_mean"),
        float("iba"),
        Field::new("support", DataType::Int64, false),
    ]))
}

/// The report rows of `matrix` (classes already sorted).
fn report(matrix: &Confusion, classes: &ArrayRef) -> Result<RecordBatch> {
    let n = matrix.classes();
    let total = matrix.total();
    let mut columns: [Vec<f64>; 6] = Default::default();
    let mut support = Vec::with_capacity(n);
    for c in 0..n {
        let tp = matrix.count(c, c);
        let true_c = matrix.true_count(c);
        let predicted_c = matrix.predicted_count(c);
        let false_positives = predicted_c - tp;
        let true_negatives = total - true_c - false_positives;
        let precision = divide_or_zero(tp, predicted_c);
        let recall = divide_or_zero(tp, true_c);
        let specificity = divide_or_zero(true_negatives, true_negatives + false_positives);
        let f1 = divide_or_zero(2.0 * tp, true_c + predicted_c);
        let gmean = (recall * specificity).sqrt();
        let iba = (1.0 + ALPHA * (recall - specificity)) * gmean.powi(2);
        for (column, value) in
            columns
                .iter_mut()
                .zip([precision, recall, specificity, f1, gmean, iba])
        {
            column.push(value);
        }
        support.push(true_c as i64);
    }
    let mut arrays: Vec<ArrayRef> = vec![cast(classes, &DataType::Utf8)?];
    arrays.extend(
        columns
            .into_iter()
            .map(|c| Arc::new(Float64Array::from(c)) as ArrayRef),
    );
    arrays.push(Arc::new(Int64Array::from(support)));
    Ok(RecordBatch::try_new(report_schema(), arrays)?)
}

/// The table function.
#[derive(Debug, Default)]
pub struct ImbalanceReportFunction;

fn string_arg(args: &[Expr], i: usize) -> Result<String> {
    match args.get(i) {
        Some(Expr::Literal(ScalarValue::Utf8(Some(s)), _)) => Ok(s.clone()),
        _ => plan_err!(
            "{NAME} expects ('table_or_view', 'label_column', 'prediction_column') as string \
             literals"
        ),
    }
}

impl TableFunctionImpl for ImbalanceReportFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.len() != 3 {
            return plan_err!(
                "{NAME} expects ('table_or_view', 'label_column', 'prediction_column'), got {} \
                 argument(s)",
                exprs.len()
            );
        }
        Ok(Arc::new(ImbalanceReportTable {
            table: string_arg(exprs, 0)?,
            label: string_arg(exprs, 1)?,
            prediction: string_arg(exprs, 2)?,
        }))
    }
}

/// The report as a table; the input is resolved when the query is planned.
#[derive(Debug)]
struct ImbalanceReportTable {
    table: String,
    label: String,
    prediction: String,
}

impl ImbalanceReportTable {
    async fn input(&self, state: &dyn Session) -> Result<Arc<dyn TableProvider>> {
        let options = state.config_options();
        let reference = TableReference::from(self.table.as_str()).resolve(
            &options.catalog.default_catalog,
            &options.catalog.default_schema,
        );
        let schema = state
            .catalog_list()
            .catalog(&reference.catalog)
            .and_then(|catalog| catalog.schema(&reference.schema));
        let table = match schema {
            Some(schema) => schema.table(&reference.table).await?,
            None => None,
        };
        table.ok_or_else(|| {
            DataFusionError::Plan(format!("{NAME}: table or view '{}' not found", self.table))
        })
    }
}

#[async_trait]
impl TableProvider for ImbalanceReportTable {
    fn schema(&self) -> SchemaRef {
        report_schema()
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
        let input = self.input(state).await?;
        let input_schema = input.schema();
        let column = |name: &str| {
            input_schema.index_of(name).map_err(|_| {
                DataFusionError::Plan(format!(
                    "{NAME}: column '{name}' not found in '{}'",
                    self.table
                ))
            })
        };
        let (label, prediction) = (column(&self.label)?, column(&self.prediction)?);
        let types = [
            input_schema.field(label).data_type().clone(),
            input_schema.field(prediction).data_type().clone(),
        ];
        let class_type = class_type(NAME, &types)?;
        // One scan column when both arguments name the same column.
        let scanned = if label == prediction {
            vec![label]
        } else {
            vec![label, prediction]
        };
        let plan = input.scan(state, Some(&scanned), &[], None).await?;
        if plan.boundedness().is_unbounded() {
            return plan_err!(
                "{NAME} needs a bounded input, and '{}' is unbounded; over a stream use the \
                 windowed metrics, e.g. recall_of(label, prediction, 1) OVER (...)",
                self.table
            );
        }
        let exec: Arc<dyn ExecutionPlan> = Arc::new(ImbalanceReportExec::new(
            Arc::new(CoalescePartitionsExec::new(plan)),
            class_type,
        ));
        match projection {
            None => Ok(exec),
            Some(indices) => {
                let exprs = indices.iter().map(|&i| {
                    let field = report_schema().field(i).clone();
                    let column: Arc<dyn PhysicalExpr> = Arc::new(
                        datafusion::physical_expr::expressions::Column::new(field.name(), i),
                    );
                    (column, field.name().clone())
                });
                Ok(Arc::new(
                    datafusion::physical_plan::projection::ProjectionExec::try_new(exprs, exec)?,
                ))
            }
        }
    }
}

/// Counts the whole (bounded) input, then emits the report.
#[derive(Debug)]
struct ImbalanceReportExec {
    input: Arc<dyn ExecutionPlan>,
    class_type: DataType,
    properties: Arc<PlanProperties>,
}

impl ImbalanceReportExec {
    fn new(input: Arc<dyn ExecutionPlan>, class_type: DataType) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(report_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            input,
            class_type,
            properties,
        }
    }
}

impl DisplayAs for ImbalanceReportExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImbalanceReportExec")
    }
}

impl ExecutionPlan for ImbalanceReportExec {
    fn name(&self) -> &str {
        "ImbalanceReportExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("{NAME} takes one input");
        }
        Ok(Arc::new(Self::new(
            children.swap_remove(0),
            self.class_type.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("{NAME} has one partition, asked for {partition}");
        }
        let mut input = self.input.execute(0, context)?;
        let class_type = self.class_type.clone();
        let report = futures::stream::once(async move {
            let mut counts = ConfusionCounts::new(&class_type)?;
            while let Some(batch) = input.next().await {
                let batch = batch?;
                let label = cast(batch.column(0), &class_type)?;
                let prediction = cast(batch.column(batch.num_columns() - 1), &class_type)?;
                counts.update(&label, &prediction)?;
            }
            match counts.confusion() {
                Some((matrix, classes)) => report(&matrix, &classes),
                None => Ok(RecordBatch::new_empty(report_schema())),
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            report_schema(),
            report,
        )))
    }
}
