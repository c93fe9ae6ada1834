//! The execution node of `train_detector` and its per-stream [`Trainer`].

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, PlanProperties,
};

use super::balance::ClassBalance;
use super::challenger::{Challenger, Verdict};
use super::model::{
    LabelKind, Learner, ModelSnapshot, SNAPSHOT_FORMAT, class_column, minority_of_two,
};
use super::{DetectorColumns, TrainStage};
use crate::batch_stream::{
    BatchProcessor, StreamServices, only_child, only_input_stream, processed_stream,
    single_stream_plan_methods, single_stream_properties,
};
use crate::class_label::ClassValue;
use crate::drift::DriftState;
use crate::features::{ClassIndex, batch_features};
use crate::metrics::SharedMetrics;
use crate::prequential::{Prequential, Scope, ScoreAuc};
use crate::runtime::{ControlSignal, JobRuntime, OperatorSnapshot};

/// Operator kind and id prefix.
pub const KIND: &str = "train_detector";

/// The prequential gauges are published after the first batch, then once
/// at least this many rows have passed, and at the end of input: computing
/// them (the sliding ROC-AUC sorts its window, the whole-run one passes over
/// 10,000 bins) after every small batch took a fifth of a detector's time
/// at 256-row batches, and a scrape every few seconds sees no difference.
const PUBLISH_EVERY_ROWS: usize = 1_024;

/// Drift signals that mean the model, not only the mix, went stale.
const PERFORMANCE_SIGNALS: [&str; 3] = ["recall", "error", "perfsim"];

#[derive(Debug)]
pub struct TrainExec {
    stage: TrainStage,
    columns: DetectorColumns,
    input: Arc<dyn ExecutionPlan>,
    operator_id: String,
    runtime: Arc<JobRuntime>,
    prometheus: Arc<SharedMetrics>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl TrainExec {
    pub fn try_new(
        stage: TrainStage,
        input: Arc<dyn ExecutionPlan>,
        runtime: &Arc<JobRuntime>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let columns = stage.columns(&input.schema())?;
        let operator_id = runtime.next_operator_id(KIND)?;
        let prometheus = runtime.metric_set::<SharedMetrics>()?;
        let id = operator_id.as_str();
        for reason in ["drift", "reset"] {
            prometheus.model_retrains.with_label_values(&[id, reason]);
        }
        prometheus
            .bad_records
            .with_label_values(&[id, "incomplete_features"]);
        Ok(Arc::new(Self {
            properties: Self::properties_for(&columns, input.as_ref()),
            columns,
            input,
            operator_id,
            runtime: Arc::clone(runtime),
            prometheus,
            metrics: ExecutionPlanMetricsSet::new(),
            stage,
        }))
    }

    fn properties_for(columns: &DetectorColumns, input: &dyn ExecutionPlan) -> Arc<PlanProperties> {
        single_stream_properties(&columns.output_schema, input, EmissionType::Incremental)
    }
}

impl DisplayAs for TrainExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.stage.options();
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "TrainExec: id={}, label={}, learner={:?}, features={}",
                self.operator_id,
                o.label_column,
                o.learner,
                self.columns.feature_indices.len()
            ),
            DisplayFormatType::TreeRender => write!(f, "label={}", o.label_column),
        }
    }
}

impl ExecutionPlan for TrainExec {
    fn name(&self) -> &str {
        "TrainExec"
    }

    // One model learns from the stream in order.
    single_stream_plan_methods!(keeps_order: true);

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child("TrainExec", children)?;
        let columns = self.stage.columns(&input.schema())?;
        Ok(Arc::new(Self {
            properties: Self::properties_for(&columns, input.as_ref()),
            columns,
            input,
            operator_id: self.operator_id.clone(),
            runtime: Arc::clone(&self.runtime),
            prometheus: Arc::clone(&self.prometheus),
            metrics: ExecutionPlanMetricsSet::new(),
            stage: self.stage.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let services = StreamServices::new(&self.runtime, &self.operator_id, &context)?;
        let input = only_input_stream("TrainExec", &self.input, partition, context)?;
        let trainer = Trainer::new(self, partition)?;
        processed_stream(
            input,
            trainer,
            Arc::clone(&self.columns.output_schema),
            services,
        )
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The model of one stream, and how it is judged.
struct Trainer {
    stage: TrainStage,
    columns: DetectorColumns,
    label_type: DataType,
    operator_id: String,
    runtime: Arc<JobRuntime>,
    prometheus: Arc<SharedMetrics>,
    classes: ClassIndex,
    learner: Learner,
    /// The background model a drift may promote (`challenger`).
    challenger: Option<Challenger>,
    /// Reused space for class probabilities while learning.
    scratch: Vec<f64>,
    /// Class-balancing weights of learned rows, when on.
    balance: Option<ClassBalance>,
    /// Synthetic rows waiting to be learned between the next batch's
    /// original rows.
    pending: SyntheticQueue,
    version: u64,
    /// Original labelled rows per class slot.
    class_rows: Vec<u64>,
    rows_learned: u64,
    learned_since_snapshot: u64,
    prequential: Prequential,
    auc: ScoreAuc,
    baseline: BaselineMetrics,
    learned_rows: Count,
    synthetic_rows: Count,
    retrains: Count,
    challengers_dropped: Count,
    subtrees_replaced: Count,
    /// The live learner's replacements already added to the metric.
    replacements_counted: u64,
    /// Rows processed since the gauges were last published.
    rows_since_publish: usize,
}

impl Trainer {
    fn new(exec: &TrainExec, partition: usize) -> Result<Self> {
        let options = exec.stage.options();
        let builder = || MetricBuilder::new(&exec.metrics);
        let mut trainer = Self {
            stage: exec.stage.clone(),
            columns: exec.columns.clone(),
            label_type: exec
                .input
                .schema()
                .field(exec.columns.label_index)
                .data_type()
                .clone(),
            operator_id: exec.operator_id.clone(),
            runtime: Arc::clone(&exec.runtime),
            prometheus: Arc::clone(&exec.prometheus),
            classes: ClassIndex::default(),
            learner: Learner::fresh(options),
            challenger: None,
            scratch: Vec::new(),
            balance: options.balance.then(ClassBalance::default),
            pending: SyntheticQueue::default(),
            version: 1,
            class_rows: Vec::new(),
            rows_learned: 0,
            learned_since_snapshot: 0,
            prequential: Prequential::new(options.window),
            auc: ScoreAuc::new(options.window),
            baseline: BaselineMetrics::new(&exec.metrics, partition),
            learned_rows: builder().counter("learned_rows", partition),
            synthetic_rows: builder().counter("synthetic_rows_learned", partition),
            retrains: builder().counter("retrains", partition),
            challengers_dropped: builder().counter("challengers_dropped", partition),
            subtrees_replaced: builder().counter("subtrees_replaced", partition),
            replacements_counted: 0,
            rows_since_publish: usize::MAX,
        };
        trainer.restore()?;
        trainer.publish_version()?;
        Ok(trainer)
    }

    fn snapshot_path(&self) -> Option<std::path::PathBuf> {
        let dir = self.stage.options().snapshot_dir.as_ref()?;
        Some(ModelSnapshot::path_in(dir, &self.operator_id))
    }

    /// Continue from the snapshot in `snapshot_dir`, if there is one.
    fn restore(&mut self) -> Result<()> {
        let Some(path) = self.snapshot_path() else {
            return Ok(());
        };
        if !path.exists() {
            return Ok(());
        }
        let snapshot = ModelSnapshot::read(&path)?;
        self.adopt(snapshot, &path.display().to_string())
    }

    /// Continue from `snapshot` (read from `origin`).
    fn adopt(&mut self, snapshot: ModelSnapshot, origin: &str) -> Result<()> {
        if snapshot.features != self.columns.feature_names {
            return datafusion::common::plan_err!(
                "{origin}: the model reads features {:?}, this input has {:?}",
                snapshot.features,
                self.columns.feature_names
            );
        }
        for class in &snapshot.classes {
            self.classes.slot(class.clone());
        }
        self.learner = snapshot.learner;
        self.version = snapshot.version;
        self.class_rows = snapshot.class_rows;
        self.rows_learned = snapshot.rows_learned;
        tracing::info!(operator = %self.operator_id, version = self.version, origin, "model restored");
        Ok(())
    }

    /// The model as `score_detector` loads it.
    fn model_snapshot(&self) -> ModelSnapshot {
        ModelSnapshot {
            format: SNAPSHOT_FORMAT,
            version: self.version,
            classes: self.classes.values().to_vec(),
            class_rows: self.class_rows.clone(),
            features: self.columns.feature_names.clone(),
            label_kind: LabelKind::of(&self.label_type),
            rows_learned: self.rows_learned,
            learner: self.learner.clone(),
        }
    }

    fn save(&mut self) -> Result<()> {
        let Some(path) = self.snapshot_path() else {
            return Ok(());
        };
        self.model_snapshot().write(&path)?;
        self.learned_since_snapshot = 0;
        Ok(())
    }

    fn publish_version(&self) -> Result<()> {
        self.prometheus
            .model_version
            .with_label_values(&[self.operator_id.as_str()])
            .set(i64::try_from(self.version).unwrap_or(i64::MAX));
        let version = self.version;
        self.runtime.report().update(&self.operator_id, |report| {
            report.model_version = Some(version)
        })
    }

    /// Replace the live model: by the challenger when there is one, else by
    /// a retrained copy.
    fn retrain(&mut self, reason: &str) -> Result<()> {
        let replacement = match self.challenger.take() {
            Some(challenger) => challenger.model,
            None => self.learner.retrained_from(self.stage.options()),
        };
        self.learner = replacement;
        self.replacements_counted = self.learner.subtrees_replaced();
        self.version += 1;
        self.retrains.add(1);
        self.prometheus
            .model_retrains
            .with_label_values(&[self.operator_id.as_str(), reason])
            .inc();
        self.publish_version()?;
        tracing::info!(operator = %self.operator_id, version = self.version, reason, "model replaced");
        Ok(())
    }

    fn start_challenger(&mut self) -> &mut Challenger {
        let options = self.stage.options();
        self.challenger
            .get_or_insert_with(|| Challenger::new(self.learner.retrained_from(options)))
    }

    fn handle(&mut self, signal: &ControlSignal) -> Result<()> {
        if !self.stage.options().retrain {
            return Ok(());
        }
        match signal {
            ControlSignal::Drift(event) if PERFORMANCE_SIGNALS.contains(&event.signal.as_str()) => {
                match event.state {
                    DriftState::Warning => {
                        self.start_challenger();
                    }
                    DriftState::Drift => {
                        let patience = self.stage.options().window as u64;
                        self.start_challenger().arm(patience);
                    }
                    DriftState::None => {}
                }
            }
            ControlSignal::Reset { target, .. } if target.matches(KIND, &self.operator_id) => {
                self.retrain("reset")?;
            }
            _ => {}
        }
        Ok(())
    }

    /// After an original row: promote or drop an armed challenger.
    fn judge_challenger(&mut self, classes: usize) -> Result<()> {
        let Some(challenger) = self.challenger.as_mut() else {
            return Ok(());
        };
        match challenger.verdict(classes) {
            Verdict::Wait => {}
            Verdict::Promote => self.retrain("drift")?,
            Verdict::Drop => {
                self.challenger = None;
                self.challengers_dropped.add(1);
                tracing::info!(operator = %self.operator_id, "challenger dropped: no better than the live model");
            }
        }
        Ok(())
    }

    /// The slot scored: with two classes learned the minority, else the
    /// predicted one.
    fn scored_slot(&self, predicted: usize, learned: usize) -> usize {
        if learned != 2 {
            return predicted;
        }
        minority_of_two(self.classes.values(), &self.class_rows)
    }

    fn learn(&mut self, x: &[f64], slot: usize, weight: f64) {
        let weight = match &mut self.balance {
            Some(balance) => balance.weigh(slot, weight),
            None => weight,
        };
        self.learner.learn(x, slot, weight, &mut self.scratch);
        if let Some(challenger) = &mut self.challenger {
            challenger.model.learn(x, slot, weight, &mut self.scratch);
        }
        self.rows_learned += 1;
        self.learned_since_snapshot += 1;
    }

    fn learn_synthetic(&mut self, queue: &SyntheticQueue, i: usize) {
        let (x, slot, weight) = queue.row(i);
        self.learn(x, slot, weight);
        self.synthetic_rows.add(1);
    }

    /// Learn every synthetic row still waiting (end of input, before the
    /// last snapshot).
    fn drain_pending(&mut self) {
        let queue = std::mem::take(&mut self.pending);
        for i in 0..queue.len() {
            self.learn_synthetic(&queue, i);
        }
    }

    fn process_batch(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let features = batch_features(
            batch,
            self.columns.label_index,
            &self.columns.feature_indices,
            &mut self.classes,
        )?;
        if self.class_rows.len() < self.classes.len() {
            self.class_rows.resize(self.classes.len(), 0);
        }
        let weights: Option<Vec<Option<f64>>> = match self.columns.weight_index {
            Some(i) => {
                let w = cast(batch.column(i), &DataType::Float64)?;
                Some(w.as_primitive::<Float64Type>().iter().collect())
            }
            None => None,
        };
        let synthetic = self
            .columns
            .synthetic_index
            .map(|i| batch.column(i).as_boolean().clone());
        let dim = features.dim;
        // The synthetic rows of earlier batches, spread evenly over this
        // batch's original rows.
        let draining = std::mem::take(&mut self.pending);
        let originals = match &synthetic {
            Some(m) => rows - m.true_count(),
            None => rows,
        };
        let mut drained = 0;
        let mut originals_seen = 0;
        let mut kept = Vec::with_capacity(rows);
        let mut predictions: Vec<Option<ClassValue>> = Vec::with_capacity(rows);
        let mut scores: Vec<Option<f64>> = Vec::with_capacity(rows);
        let mut proba = Vec::new();
        let mut challenger_proba = Vec::new();
        let mut incomplete = 0u64;
        for row in 0..rows {
            let is_synthetic = synthetic
                .as_ref()
                .is_some_and(|m| m.is_valid(row) && m.value(row));
            let x = &features.values[row * dim..(row + 1) * dim];
            let complete = features.complete[row];
            let weight = match &weights {
                Some(w) => w[row].unwrap_or(1.0),
                None => 1.0,
            };
            if is_synthetic {
                if let Some(slot) = features.slots[row] {
                    self.pending.push(x, slot, weight);
                }
                continue;
            }
            originals_seen += 1;
            let due = draining.len() * originals_seen / originals.max(1);
            while drained < due {
                self.learn_synthetic(&draining, drained);
                drained += 1;
            }
            kept.push(row as u32);
            if !complete {
                incomplete += 1;
                predictions.push(None);
                scores.push(None);
                continue;
            }
            self.learner.predict_proba(x, &mut proba);
            let predicted = (0..proba.len()).max_by(|&a, &b| proba[a].total_cmp(&proba[b]));
            match predicted {
                Some(p) => {
                    predictions.push(Some(self.classes.values()[p].clone()));
                    let scored = self.scored_slot(p, proba.len());
                    let score = proba.get(scored).copied();
                    scores.push(score);
                    if let (Some(truth), Some(score)) = (features.slots[row], score) {
                        self.prequential.update(truth, p);
                        if proba.len() == 2 {
                            self.auc.update(score, truth == scored);
                        }
                    }
                    if let (Some(truth), Some(challenger)) =
                        (features.slots[row], self.challenger.as_mut())
                    {
                        challenger.model.predict_proba(x, &mut challenger_proba);
                        let own = (0..challenger_proba.len())
                            .max_by(|&a, &b| challenger_proba[a].total_cmp(&challenger_proba[b]));
                        challenger.record(truth, p, own.unwrap_or(usize::MAX));
                    }
                }
                None => {
                    predictions.push(None);
                    scores.push(None);
                }
            }
            if let Some(slot) = features.slots[row] {
                self.class_rows[slot] += 1;
                self.learn(x, slot, weight);
                self.learned_rows.add(1);
                self.judge_challenger(proba.len())?;
            }
        }
        for i in drained..draining.len() {
            self.learn_synthetic(&draining, i);
        }
        if incomplete > 0 {
            self.prometheus
                .bad_records
                .with_label_values(&[self.operator_id.as_str(), "incomplete_features"])
                .inc_by(incomplete);
        }
        let emitted = kept.len();
        // An oversampler emits its synthetic rows in batches of their own,
        // so a batch is usually all original (passed through as is) or all
        // synthetic (nothing to emit).
        let mut columns: Vec<ArrayRef> = if emitted == rows {
            batch.columns().to_vec()
        } else {
            let indices = UInt32Array::from(kept);
            batch
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), &indices, None))
                .collect::<std::result::Result<_, _>>()?
        };
        columns.push(class_column(&predictions, &self.label_type)?);
        columns.push(Arc::new(Float64Array::from(scores)));
        let version = i64::try_from(self.version).unwrap_or(i64::MAX);
        columns.push(Arc::new(Int64Array::from(vec![version; emitted])));
        Ok(RecordBatch::try_new(
            Arc::clone(&self.columns.output_schema),
            columns,
        )?)
    }

    fn publish(&self) -> Result<()> {
        let labels: Vec<String> = self
            .classes
            .values()
            .iter()
            .map(|c| self.runtime.class_labels().label(c))
            .collect::<Result<_>>()?;
        let id = self.operator_id.as_str();
        self.prequential.publish(&self.prometheus, id, &labels);
        for scope in [Scope::Sliding, Scope::Total] {
            if let Some(auc) = self.auc.roc_auc(scope) {
                self.prometheus
                    .roc_auc
                    .with_label_values(&[id, scope.name()])
                    .set(auc);
            }
        }
        Ok(())
    }
}

/// Synthetic rows learned one batch late, interleaved with the next
/// batch's original rows: an oversampler emits a batch's synthetic rows
/// together after its originals, and learning hundreds of minority rows in
/// a row makes a stochastic-gradient learner swing towards the minority and
/// back every batch. They come from rows before the batch that triggered
/// them, so the delay reveals no label early.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct SyntheticQueue {
    dim: usize,
    features: Vec<f64>,
    rows: Vec<(usize, f64)>,
}

impl SyntheticQueue {
    /// Bytes held by the queued rows.
    fn memory_size(&self) -> usize {
        self.features.capacity() * size_of::<f64>()
            + self.rows.capacity() * size_of::<(usize, f64)>()
    }

    fn push(&mut self, x: &[f64], slot: usize, weight: f64) {
        self.dim = x.len();
        self.features.extend_from_slice(x);
        self.rows.push((slot, weight));
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn row(&self, i: usize) -> (&[f64], usize, f64) {
        let (slot, weight) = self.rows[i];
        (
            &self.features[i * self.dim..(i + 1) * self.dim],
            slot,
            weight,
        )
    }
}

impl BatchProcessor for Trainer {
    fn memory_size(&self) -> usize {
        self.pending.memory_size()
    }

    fn process(
        &mut self,
        batch: RecordBatch,
        signals: &[ControlSignal],
    ) -> Result<Vec<RecordBatch>> {
        let elapsed = self.baseline.elapsed_compute().clone();
        let _timer = elapsed.timer();
        for signal in signals {
            self.handle(signal)?;
        }
        let out = self.process_batch(&batch)?;
        let replaced = self.learner.subtrees_replaced();
        self.subtrees_replaced
            .add(usize::try_from(replaced.saturating_sub(self.replacements_counted)).unwrap_or(0));
        self.replacements_counted = replaced;
        self.rows_since_publish = self.rows_since_publish.saturating_add(batch.num_rows());
        if self.rows_since_publish >= PUBLISH_EVERY_ROWS {
            self.publish()?;
            self.rows_since_publish = 0;
        }
        if self.learned_since_snapshot >= self.stage.options().snapshot_every {
            self.save()?;
        }
        self.baseline.record_output(out.num_rows());
        // A batch of synthetic rows only leaves nothing to pass on.
        Ok(if out.num_rows() == 0 {
            Vec::new()
        } else {
            vec![out]
        })
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        self.drain_pending();
        self.publish()?;
        self.save()?;
        Ok(Vec::new())
    }

    fn snapshot(&self) -> Result<Option<OperatorSnapshot>> {
        let state = TrainerState {
            model: self.model_snapshot(),
            balance: self.balance.clone(),
            challenger: self.challenger.clone(),
            pending: self.pending.clone(),
        };
        OperatorSnapshot::encode(
            &self.operator_id,
            TRAINER_KIND,
            TRAINER_STATE_VERSION,
            &state,
        )
        .map(Some)
    }

    fn restore(&mut self, snapshot: &OperatorSnapshot) -> Result<()> {
        let state: TrainerState =
            snapshot.decode(&self.operator_id, TRAINER_KIND, TRAINER_STATE_VERSION)?;
        self.adopt(state.model, "checkpoint")?;
        self.balance = state.balance;
        self.challenger = state.challenger;
        self.pending = state.pending;
        self.publish_version()
    }
}

const TRAINER_KIND: &str = "train_detector";
const TRAINER_STATE_VERSION: u32 = 1;

/// A detector's checkpoint state: the model as `score_detector` loads it,
/// and what shapes its further learning. The prequential figures (sliding
/// metrics, AUC bins) start over after a restore.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct TrainerState {
    model: ModelSnapshot,
    balance: Option<ClassBalance>,
    challenger: Option<Challenger>,
    pending: SyntheticQueue,
}
