//! How a streaming operator enters a DataFusion plan.
//!
//! Every Equipoise operator is a [`StreamStage`]: it knows its output schema
//! from its input schema (so SQL and DataFrames can be planned on top of it),
//! and it builds its physical node when the query is planned, receiving the
//! session's [`JobRuntime`] at that moment. [`StageTable`] is the
//! `TableProvider` that does this for any stage over any input plan; the SQL
//! table functions and the [`DataFrameStageExt`] methods are thin wrappers
//! around it.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, TableType};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};

use crate::class_monitor::{ClassMonitorOptions, ClassMonitorStage};
use crate::detector::{DetectorOptions, TrainStage};
use crate::drift::DriftMonitorOptions;
use crate::drift::exec::DriftMonitorStage;
use crate::icost::{IcostOptions, IcostStage};
use crate::oversample::{IS_SYNTHETIC, Method, OversampleOptions, OversampleStage};
use crate::runtime::JobRuntime;

/// `input`'s fields (and metadata) followed by an operator's own columns.
pub fn with_columns(input: &Schema, added: impl IntoIterator<Item = Field>) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
    fields.extend(added.into_iter().map(Arc::new));
    Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()))
}

/// The Boolean `is_synthetic` marker an upstream oversampler added, if any.
pub fn synthetic_marker(input: &Schema) -> Option<usize> {
    input
        .index_of(IS_SYNTHETIC)
        .ok()
        .filter(|&i| input.field(i).data_type() == &DataType::Boolean)
}

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
        match projection {
            None => Ok(staged),
            Some(indices) => {
                let schema = staged.schema();
                let exprs = indices
                    .iter()
                    .map(|&i| {
                        let name = schema.field(i).name();
                        ProjectionExpr::new(Arc::new(Column::new(name, i)), name.clone())
                    })
                    .collect::<Vec<_>>();
                Ok(Arc::new(ProjectionExec::try_new(exprs, staged)?))
            }
        }
    }
}

/// Equipoise stages as DataFrame methods, for Rust users.
pub trait DataFrameStageExt: Sized {
    /// Apply any stage.
    fn stage(self, stage: Arc<dyn StreamStage>) -> Result<DataFrame>;

    /// Count rows per class and track the decayed class mix; see
    /// [`crate::class_monitor`].
    fn class_monitor(self, options: ClassMonitorOptions) -> Result<DataFrame> {
        self.stage(Arc::new(ClassMonitorStage::try_new(options)?))
    }

    /// Over-sample with any method; see [`crate::oversample`].
    fn oversample(self, method: Method, options: OversampleOptions) -> Result<DataFrame> {
        self.stage(Arc::new(OversampleStage::try_new(method, options)?))
    }

    /// Quality-controlled SMOTE; see [`crate::oversample::qc_smote`].
    fn qc_smote(self, options: OversampleOptions) -> Result<DataFrame> {
        self.oversample(Method::QcSmote, options)
    }

    /// iCost weights; see [`crate::icost`].
    fn icost(self, options: IcostOptions) -> Result<DataFrame> {
        self.stage(Arc::new(IcostStage::try_new(options)?))
    }

    /// Watch the class mix (and, with a prediction column, per-class recall,
    /// error and confusion) for drift; see [`crate::drift::monitor`].
    fn drift_monitor(self, options: DriftMonitorOptions) -> Result<DataFrame> {
        self.stage(Arc::new(DriftMonitorStage::try_new(options)?))
    }

    /// Predict, then learn, row by row; see [`crate::detector`].
    fn train_detector(self, options: DetectorOptions) -> Result<DataFrame> {
        self.stage(Arc::new(TrainStage::try_new(options)?))
    }

    /// SMOTE as imbalanced-learn; see [`crate::oversample::smote`].
    fn smote(self, options: OversampleOptions) -> Result<DataFrame> {
        self.oversample(Method::Smote, options)
    }
}

impl DataFrameStageExt for DataFrame {
    fn stage(self, stage: Arc<dyn StreamStage>) -> Result<DataFrame> {
        let kind = stage.kind();
        let (state, plan) = self.into_parts();
        let table = StageTable::try_new(plan, stage)?;
        let plan =
            LogicalPlanBuilder::scan(kind, provider_as_source(Arc::new(table)), None)?.build()?;
        Ok(DataFrame::new(state, plan))
    }
}
