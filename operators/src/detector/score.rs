//! The scoring-only operator behind `score_detector`: a saved model's
//! prediction, score and version for every row; nothing is learned.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, plan_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

use super::model::{ModelSnapshot, class_column, minority_of_two};
use super::scored_schema;
use crate::batch_stream::{BatchProcessor, StreamServices, only_child, processed_stream};
use crate::columns::{MODEL_VERSION, PREDICTION, SCORE};
use crate::runtime::{ControlSignal, JobRuntime};
use crate::stage::StreamStage;

/// Scoring with a saved model: every row passes through with the model's
/// prediction, score and version; nothing is learned.
#[derive(Debug, Clone)]
pub struct ScoreStage {
    path: PathBuf,
    model: Arc<ModelSnapshot>,
}

impl ScoreStage {
    pub fn try_new(path: PathBuf) -> Result<Self> {
        let model = Arc::new(ModelSnapshot::read(&path)?);
        Ok(Self { path, model })
    }

    fn feature_indices(&self, input: &SchemaRef) -> Result<Vec<usize>> {
        self.model
            .features
            .iter()
            .map(|name| match input.index_of(name) {
                Ok(i) if input.field(i).data_type().is_numeric() => Ok(i),
                Ok(i) => plan_err!(
                    "score_detector: feature '{name}' is {}, the model needs a number",
                    input.field(i).data_type()
                ),
                Err(_) => plan_err!(
                    "score_detector: the model reads feature '{name}', which the input lacks"
                ),
            })
            .collect()
    }
}

impl StreamStage for ScoreStage {
    fn kind(&self) -> &'static str {
        "score_detector"
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        self.feature_indices(input)?;
        for column in [PREDICTION, SCORE, MODEL_VERSION] {
            if input.index_of(column).is_ok() {
                return plan_err!("score_detector: the input already has a '{column}' column");
            }
        }
        Ok(scored_schema(input, &self.model.label_kind.data_type()))
    }

    fn plan(
        &self,
        input: Arc<dyn ExecutionPlan>,
        runtime: &Arc<JobRuntime>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let operator_id = runtime.next_operator_id("score_detector")?;
        Ok(Arc::new(self.exec(input, runtime, operator_id)?))
    }
}

impl ScoreStage {
    /// The node over `input` for the operator `operator_id` (kept through
    /// optimizer rewrites, so its metrics and memory keep one name).
    fn exec(
        &self,
        input: Arc<dyn ExecutionPlan>,
        runtime: &Arc<JobRuntime>,
        operator_id: String,
    ) -> Result<ScoreExec> {
        let schema = self.output_schema(&input.schema())?;
        let features = self.feature_indices(&input.schema())?;
        Ok(ScoreExec {
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(Arc::clone(&schema)),
                input.properties().partitioning.clone(),
                EmissionType::Incremental,
                input.properties().boundedness,
            )),
            stage: self.clone(),
            schema,
            features,
            input,
            operator_id,
            runtime: Arc::clone(runtime),
        })
    }
}

#[derive(Debug)]
struct ScoreExec {
    stage: ScoreStage,
    schema: SchemaRef,
    features: Vec<usize>,
    input: Arc<dyn ExecutionPlan>,
    operator_id: String,
    runtime: Arc<JobRuntime>,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for ScoreExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ScoreExec: id={}, model={}, version={}",
            self.operator_id,
            self.stage.path.display(),
            self.stage.model.version
        )
    }
}

impl ExecutionPlan for ScoreExec {
    fn name(&self) -> &str {
        "ScoreExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
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
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child("ScoreExec", children)?;
        Ok(Arc::new(self.stage.exec(
            input,
            &self.runtime,
            self.operator_id.clone(),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let services = StreamServices::new(&self.runtime, &self.operator_id, &context)?;
        let input = self.input.execute(partition, context)?;
        processed_stream(
            input,
            Scorer {
                model: Arc::clone(&self.stage.model),
                features: self.features.clone(),
                schema: Arc::clone(&self.schema),
            },
            Arc::clone(&self.schema),
            services,
        )
    }
}

struct Scorer {
    model: Arc<ModelSnapshot>,
    features: Vec<usize>,
    schema: SchemaRef,
}

impl BatchProcessor for Scorer {
    fn process(
        &mut self,
        batch: RecordBatch,
        _signals: &[ControlSignal],
    ) -> Result<Vec<RecordBatch>> {
        let rows = batch.num_rows();
        let columns: Vec<ArrayRef> = self
            .features
            .iter()
            .map(|&i| cast(batch.column(i), &DataType::Float64))
            .collect::<std::result::Result<_, _>>()?;
        let model = &self.model;
        let minority =
            (model.classes.len() == 2).then(|| minority_of_two(&model.classes, &model.class_rows));
        let mut x = vec![0.0; columns.len()];
        let mut proba = Vec::new();
        let mut predictions = Vec::with_capacity(rows);
        let mut scores = Vec::with_capacity(rows);
        for row in 0..rows {
            let mut complete = true;
            for (j, column) in columns.iter().enumerate() {
                let values = column.as_primitive::<Float64Type>();
                if values.is_valid(row) && values.value(row).is_finite() {
                    x[j] = values.value(row);
                } else {
                    complete = false;
                }
            }
            if complete {
                model.learner.predict_proba(&x, &mut proba);
            } else {
                proba.clear();
            }
            match (0..proba.len()).max_by(|&a, &b| proba[a].total_cmp(&proba[b])) {
                Some(p) => {
                    predictions.push(model.classes.get(p).cloned());
                    scores.push(proba.get(minority.unwrap_or(p)).copied());
                }
                None => {
                    predictions.push(None);
                    scores.push(None);
                }
            }
        }
        let mut out = batch.columns().to_vec();
        out.push(class_column(&predictions, &model.label_kind.data_type())?);
        out.push(Arc::new(Float64Array::from(scores)));
        let version = i64::try_from(model.version).unwrap_or(i64::MAX);
        out.push(Arc::new(Int64Array::from(vec![version; rows])));
        Ok(vec![RecordBatch::try_new(Arc::clone(&self.schema), out)?])
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }
}
