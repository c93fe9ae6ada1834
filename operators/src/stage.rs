//! How a streaming operator enters a DataFusion plan.
//!
//! Every Equipoise operator is a [`StreamStage`]: it knows its output schema
//! from its input schema (so SQL and DataFrames can be planned on top of it),
//! and it builds its physical node when the query is planned, receiving the
//! session's [`JobRuntime`] at that moment. [`StageTable`] is the
//! `TableProvider` that does this for any stage over any input plan; the SQL
//! table functions and the DataFrame methods (`crate::dataframe`) are thin
//! wrappers around it. [`Mode`] is the one vocabulary of whole-table and
//! streaming semantics that every operator with both takes as `mode=`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::{Expr, LogicalPlan, TableType};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

use crate::runtime::JobRuntime;

/// A streaming operator, as the planner sees it.
pub trait StreamStage: fmt::Debug + Send + Sync {
    /// Operator kind, e.g. `class_monitor`; also the prefix of operator ids.
    fn kind(&self) -> &'static str;

    /// Output schema for `input`, or a plan error naming what is wrong
    /// (a missing label column, an unsupported type).
    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef>;

    /// Build the physical node over `input`. Called once per planning of the
    /// query; this is where the operator registers its state and metrics
    /// with `runtime`.
    fn plan(
        &self,
        input: Arc<dyn ExecutionPlan>,
        runtime: &Arc<JobRuntime>,
    ) -> Result<Arc<dyn ExecutionPlan>>;
}

/// A table whose rows are `stage` applied to the rows of `input`.
#[derive(Debug)]
pub struct StageTable {
    input: LogicalPlan,
    stage: Arc<dyn StreamStage>,
    schema: SchemaRef,
}

impl StageTable {
    pub fn try_new(input: LogicalPlan, stage: Arc<dyn StreamStage>) -> Result<Self> {
        let schema = stage.output_schema(input.schema().inner())?;
        Ok(Self {
            input,
            stage,
            schema,
        })
    }
}

#[async_trait]
impl TableProvider for StageTable {
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
        // Filters and limits are not pushed below a stage: a stage must see
        // every row of its input (a filter above it is applied by DataFusion).
        let runtime = JobRuntime::from_config(state.config())?;
        let input = state.create_physical_plan(&self.input).await?;
        let staged = self.stage.plan(input, &runtime)?;
        project(staged, projection)
    }
}

/// `plan` with only the columns of `projection` (a table provider's scan).
pub fn project(
    plan: Arc<dyn ExecutionPlan>,
    projection: Option<&Vec<usize>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(indices) = projection else {
        return Ok(plan);
    };
    let schema = plan.schema();
    let exprs = indices
        .iter()
        .map(|&i| {
            let name = schema.field(i).name();
            ProjectionExpr::new(Arc::new(Column::new(name, i)), name.clone())
        })
        .collect::<Vec<_>>();
    Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
}

/// Which semantics an operator with a whole-table and a streaming form
/// applies: option `mode`, the same word and values in every operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Streaming on unbounded input, whole-table on bounded input.
    #[default]
    Auto,
    /// Streaming semantics even on bounded input (replaying a file as the
    /// stream it was, or a job bounded only by `--rows`).
    Stream,
    /// Whole-table semantics; refused on unbounded input.
    Batch,
}

impl Mode {
    /// Whether the whole-table semantics apply to `input` (else streaming),
    /// or a plan error where `Batch` meets unbounded input.
    pub fn whole_table(self, key: &str, operator: &str, input: &dyn ExecutionPlan) -> Result<bool> {
        let unbounded = input.properties().boundedness.is_unbounded();
        match self {
            Self::Auto => Ok(!unbounded),
            Self::Stream => Ok(false),
            Self::Batch if unbounded => {
                plan_err!("{operator}: {key}=batch needs bounded input; this input is unbounded")
            }
            Self::Batch => Ok(true),
        }
    }
}
