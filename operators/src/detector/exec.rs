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

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::advisor::{Advisor, AdvisorMetric, NO_PREDICTION, Recipe, Variant, Weighting};
use super::balance::{ClassBalance, ClassMass, SyntheticMix};
use super::challenger::{Challenger, Verdict};
use super::model::{
    LabelKind, Learner, ModelSnapshot, SNAPSHOT_FORMAT, class_column, minority_of_two,
};
use super::{DetectorColumns, DetectorOptions, TrainStage};
use crate::batch_stream::{
    BatchProcessor, StreamServices, only_child, only_input_stream, processed_stream,
    single_stream_plan_methods, single_stream_properties,
};
use crate::class_label::ClassValue;
use crate::drift::DriftState;
use crate::features::{ClassIndex, batch_features};
use crate::metrics::{MetricSet, OTHER_CLASS, SharedMetrics};
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
        // A chosen variant the input cannot feed is a plan error.
        stage.options().variants.resolve(
            columns.synthetic_index.is_some(),
            columns.weight_index.is_some(),
        )?;
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

    /// The id its metrics, reports and checkpoint state go by.
    pub fn operator_id(&self) -> &str {
        &self.operator_id
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

/// Prometheus families of the advisor (`advisor`), in every trainer of a
/// runtime that trains more than one variant.
#[derive(Debug)]
pub struct AdvisorMetrics {
    variant_gmean: GaugeVec,
    variant_minority_recall: GaugeVec,
    champion: IntGaugeVec,
    champion_changes: IntCounterVec,
    effective_class_share: GaugeVec,
}

impl MetricSet for AdvisorMetrics {
    const NAME: &'static str = "advisor";

    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace("equipoise");
        let variant_gmean = GaugeVec::new(
            opts(
                "variant_gmean",
                "Prequential G-mean of each learner variant over the detector's sliding window \
                 (original rows only).",
            ),
            &["operator", "variant"],
        )?;
        let variant_minority_recall = GaugeVec::new(
            opts(
                "variant_minority_recall",
                "Prequential recall of the window's least frequent class, per learner variant.",
            ),
            &["operator", "variant"],
        )?;
        let champion = IntGaugeVec::new(
            opts(
                "champion",
                "1 for the variant serving the detector's predictions, 0 for the others.",
            ),
            &["operator", "variant"],
        )?;
        let champion_changes = IntCounterVec::new(
            opts(
                "champion_changes_total",
                "Champion changes of a detector, by the variant promoted.",
            ),
            &["operator", "variant"],
        )?;
        let effective_class_share = GaugeVec::new(
            opts(
                "effective_class_share",
                "Share of each class in the decayed weight the serving model learned from, \
                 after resampling and weighting (the effective training distribution).",
            ),
            &["operator", "class"],
        )?;
        registry.register(Box::new(variant_gmean.clone()))?;
        registry.register(Box::new(variant_minority_recall.clone()))?;
        registry.register(Box::new(champion.clone()))?;
        registry.register(Box::new(champion_changes.clone()))?;
        registry.register(Box::new(effective_class_share.clone()))?;
        Ok(Self {
            variant_gmean,
            variant_minority_recall,
            champion,
            champion_changes,
            effective_class_share,
        })
    }
}

/// One learner of a trainer and what it learns from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Member {
    variant: Variant,
    recipe: Recipe,
    learner: Learner,
    /// Class-balancing weights, when its recipe balances.
    balance: Option<ClassBalance>,
    /// The background model a drift may promote (`challenger`).
    challenger: Option<Challenger>,
    /// Decayed weight learned per class: its effective training mix.
    learned: ClassMass,
}

impl Member {
    fn new(variant: Variant, recipe: Recipe, options: &DetectorOptions) -> Self {
        Self {
            variant,
            recipe,
            learner: Learner::fresh(options),
            balance: (recipe.weighting == Weighting::ClassBalanced).then(ClassBalance::default),
            challenger: None,
            learned: ClassMass::default(),
        }
    }

    /// Learn a row of `slot` whose `sample_weight` is `row_weight`.
    fn learn(
        &mut self,
        x: &[f64],
        slot: usize,
        row_weight: f64,
        mix: &SyntheticMix,
        scratch: &mut Vec<f64>,
    ) {
        let weight = if self.recipe.icost { row_weight } else { 1.0 };
        let weight = match (self.recipe.weighting, &mut self.balance) {
            (Weighting::ClassBalanced, Some(balance)) => balance.weigh(slot, weight),
            (Weighting::SyntheticMix, _) => weight * mix.weight(slot),
            _ => weight,
        };
        self.learner.learn(x, slot, weight, scratch);
        if let Some(challenger) = &mut self.challenger {
            challenger.model.learn(x, slot, weight, scratch);
        }
        self.learned.add(slot, weight);
    }
}

/// The models of one stream, and how they are judged.
struct Trainer {
    stage: TrainStage,
    columns: DetectorColumns,
    label_type: DataType,
    operator_id: String,
    runtime: Arc<JobRuntime>,
    prometheus: Arc<SharedMetrics>,
    classes: ClassIndex,
    /// The learners trained side by side; one unless the advisor runs.
    members: Vec<Member>,
    /// Judges the members and elects the champion, with two or more.
    advisor: Option<Advisor>,
    advisor_metrics: Option<Arc<AdvisorMetrics>>,
    /// The original and synthetic class mix (the reweight-only twin).
    mix: SyntheticMix,
    /// Reused space for class probabilities while learning.
    scratch: Vec<f64>,
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
    champion_changes: Count,
    /// The live learner's replacements already added to the metric.
    replacements_counted: u64,
    /// Rows processed since the gauges were last published.
    rows_since_publish: usize,
}

impl Trainer {
    fn new(exec: &TrainExec, partition: usize) -> Result<Self> {
        let options = exec.stage.options();
        let builder = || MetricBuilder::new(&exec.metrics);
        let has_synthetic = exec.columns.synthetic_index.is_some();
        let has_weights = exec.columns.weight_index.is_some();
        let variants = options.variants.resolve(has_synthetic, has_weights)?;
        let members: Vec<Member> = variants
            .iter()
            .map(|&v| {
                let recipe = Recipe::of(v, has_synthetic, has_weights, options.balance);
                Member::new(v, recipe, options)
            })
            .collect();
        let (advisor, advisor_metrics) = if members.len() > 1 {
            let metrics = exec.runtime.metric_set::<AdvisorMetrics>()?;
            (
                Some(Advisor::new(variants, options.advisor_rule())),
                Some(metrics),
            )
        } else {
            (None, None)
        };
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
            members,
            advisor,
            advisor_metrics,
            mix: SyntheticMix::default(),
            scratch: Vec::new(),
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
            champion_changes: builder().counter("champion_changes", partition),
            replacements_counted: 0,
            rows_since_publish: usize::MAX,
        };
        trainer.restore()?;
        trainer.publish_version()?;
        trainer.publish_champion();
        Ok(trainer)
    }

    /// Index of the member serving predictions.
    fn champion(&self) -> usize {
        self.advisor.as_ref().map_or(0, Advisor::champion)
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

    /// Continue from `snapshot` (read from `origin`): every member starts
    /// from its model.
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
        for member in &mut self.members {
            member.learner = snapshot.learner.clone();
        }
        self.version = snapshot.version;
        self.class_rows = snapshot.class_rows;
        self.rows_learned = snapshot.rows_learned;
        tracing::info!(operator = %self.operator_id, version = self.version, origin, "model restored");
        Ok(())
    }

    /// The serving model as `score_detector` loads it.
    fn model_snapshot(&self) -> ModelSnapshot {
        ModelSnapshot {
            format: SNAPSHOT_FORMAT,
            version: self.version,
            classes: self.classes.values().to_vec(),
            class_rows: self.class_rows.clone(),
            features: self.columns.feature_names.clone(),
            label_kind: LabelKind::of(&self.label_type),
            rows_learned: self.rows_learned,
            learner: self.members[self.champion()].learner.clone(),
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

    fn publish_champion(&self) {
        let (Some(advisor), Some(metrics)) = (&self.advisor, &self.advisor_metrics) else {
            return;
        };
        for (v, variant) in advisor.variants().iter().enumerate() {
            let labels = [self.operator_id.as_str(), variant.name()];
            metrics
                .champion
                .with_label_values(&labels)
                .set(i64::from(v == advisor.champion()));
            // Exported at 0 from the start, so a rate over it is defined.
            metrics.champion_changes.with_label_values(&labels);
        }
    }

    /// Replace member `m`'s model: by its challenger when there is one,
    /// else by a retrained copy. Replacing the serving model is a new
    /// version.
    fn retrain(&mut self, m: usize, reason: &str) -> Result<()> {
        let options = self.stage.options();
        let member = &mut self.members[m];
        let replacement = match member.challenger.take() {
            Some(challenger) => challenger.model,
            None => member.learner.retrained_from(options),
        };
        member.learner = replacement;
        let variant = member.variant.name();
        if m != self.champion() {
            tracing::debug!(operator = %self.operator_id, variant, reason, "shadow model replaced");
            return Ok(());
        }
        self.replacements_counted = self.members[m].learner.subtrees_replaced();
        self.version += 1;
        self.retrains.add(1);
        self.prometheus
            .model_retrains
            .with_label_values(&[self.operator_id.as_str(), reason])
            .inc();
        self.publish_version()?;
        tracing::info!(operator = %self.operator_id, version = self.version, variant, reason, "model replaced");
        Ok(())
    }

    fn start_challenger<'a>(
        member: &'a mut Member,
        options: &DetectorOptions,
    ) -> &'a mut Challenger {
        member
            .challenger
            .get_or_insert_with(|| Challenger::new(member.learner.retrained_from(options)))
    }

    fn handle(&mut self, signal: &ControlSignal) -> Result<()> {
        if let (ControlSignal::Drift(event), Some(advisor)) = (signal, &mut self.advisor)
            && event.state == DriftState::Drift
        {
            // What helped before the drift need not help after it.
            advisor.restart();
        }
        let options = self.stage.options();
        if !options.retrain {
            return Ok(());
        }
        match signal {
            ControlSignal::Drift(event) if PERFORMANCE_SIGNALS.contains(&event.signal.as_str()) => {
                for member in &mut self.members {
                    match event.state {
                        DriftState::Warning => {
                            Self::start_challenger(member, options);
                        }
                        DriftState::Drift => {
                            let patience = options.window as u64;
                            Self::start_challenger(member, options).arm(patience);
                        }
                        DriftState::None => {}
                    }
                }
            }
            ControlSignal::Reset { target, .. } if target.matches(KIND, &self.operator_id) => {
                for m in 0..self.members.len() {
                    self.retrain(m, "reset")?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// After an original row: promote or drop each member's armed
    /// challenger.
    fn judge_challengers(&mut self, classes: usize) -> Result<()> {
        for m in 0..self.members.len() {
            let Some(challenger) = self.members[m].challenger.as_mut() else {
                continue;
            };
            match challenger.verdict(classes) {
                Verdict::Wait => {}
                Verdict::Promote => self.retrain(m, "drift")?,
                Verdict::Drop => {
                    self.members[m].challenger = None;
                    self.challengers_dropped.add(1);
                    tracing::info!(operator = %self.operator_id, variant = self.members[m].variant.name(), "challenger dropped: no better than the live model");
                }
            }
        }
        Ok(())
    }

    /// After an original labelled row: let the advisor change the champion.
    fn judge_variants(&mut self) -> Result<()> {
        let Some(promotion) = self.advisor.as_mut().and_then(Advisor::judge) else {
            return Ok(());
        };
        self.version += 1;
        self.champion_changes.add(1);
        self.replacements_counted = self.members[self.champion()].learner.subtrees_replaced();
        if let Some(metrics) = &self.advisor_metrics {
            metrics
                .champion_changes
                .with_label_values(&[self.operator_id.as_str(), promotion.to.name()])
                .inc();
        }
        self.publish_version()?;
        self.publish_champion();
        tracing::info!(
            operator = %self.operator_id,
            from = promotion.from.name(),
            to = promotion.to.name(),
            by = promotion.by,
            version = self.version,
            "champion changed"
        );
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

    /// Learn an original row: every member.
    fn learn(&mut self, x: &[f64], slot: usize, weight: f64) {
        self.mix.observe(slot, false);
        for member in &mut self.members {
            member.learn(x, slot, weight, &self.mix, &mut self.scratch);
        }
        self.rows_learned += 1;
        self.learned_since_snapshot += 1;
    }

    /// Learn a queued synthetic row: the members whose recipe takes them.
    fn learn_synthetic(&mut self, queue: &SyntheticQueue, i: usize) {
        let (x, slot, weight) = queue.row(i);
        for member in self.members.iter_mut().filter(|m| m.recipe.synthetic) {
            member.learn(x, slot, weight, &self.mix, &mut self.scratch);
        }
        self.rows_learned += 1;
        self.learned_since_snapshot += 1;
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
        let champion = self.champion();
        let mut drained = 0;
        let mut originals_seen = 0;
        let mut kept = Vec::with_capacity(rows);
        let mut predictions: Vec<Option<ClassValue>> = Vec::with_capacity(rows);
        let mut scores: Vec<Option<f64>> = Vec::with_capacity(rows);
        let mut probas: Vec<Vec<f64>> = vec![Vec::new(); self.members.len()];
        let mut predicted: Vec<u32> = vec![NO_PREDICTION; self.members.len()];
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
                    self.mix.observe(slot, true);
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
            // Every member predicts the row before any learns it.
            for (m, member) in self.members.iter().enumerate() {
                member.learner.predict_proba(x, &mut probas[m]);
                let p = &probas[m];
                predicted[m] = (0..p.len())
                    .max_by(|&a, &b| p[a].total_cmp(&p[b]))
                    .map_or(NO_PREDICTION, |p| p as u32);
            }
            let classes_known = probas[champion].len();
            match predicted[champion] {
                NO_PREDICTION => {
                    predictions.push(None);
                    scores.push(None);
                }
                p => {
                    let p = p as usize;
                    predictions.push(Some(self.classes.values()[p].clone()));
                    let scored = self.scored_slot(p, classes_known);
                    let score = probas[champion].get(scored).copied();
                    scores.push(score);
                    if let (Some(truth), Some(score)) = (features.slots[row], score) {
                        self.prequential.update(truth, p);
                        if classes_known == 2 {
                            self.auc.update(score, truth == scored);
                        }
                    }
                }
            }
            if let Some(truth) = features.slots[row] {
                for (m, member) in self.members.iter_mut().enumerate() {
                    if let Some(challenger) = member.challenger.as_mut() {
                        challenger.model.predict_proba(x, &mut challenger_proba);
                        let own = (0..challenger_proba.len())
                            .max_by(|&a, &b| challenger_proba[a].total_cmp(&challenger_proba[b]));
                        challenger.record(truth, predicted[m] as usize, own.unwrap_or(usize::MAX));
                    }
                }
                if let Some(advisor) = &mut self.advisor {
                    advisor.record(truth as u32, &predicted);
                }
                self.class_rows[truth] += 1;
                self.learn(x, truth, weight);
                self.learned_rows.add(1);
                self.judge_challengers(classes_known)?;
                self.judge_variants()?;
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
        let (Some(advisor), Some(metrics)) = (&self.advisor, &self.advisor_metrics) else {
            return Ok(());
        };
        for (v, variant) in advisor.variants().iter().enumerate() {
            let labels = [id, variant.name()];
            if let Some(g) = advisor.window_score(v, AdvisorMetric::Gmean) {
                metrics.variant_gmean.with_label_values(&labels).set(g);
            }
            if let Some(r) = advisor.window_score(v, AdvisorMetric::MinorityRecall) {
                metrics
                    .variant_minority_recall
                    .with_label_values(&labels)
                    .set(r);
            }
        }
        let learned = &self.members[advisor.champion()].learned;
        let total = learned.total();
        if total > 0.0 {
            for (slot, label) in labels.iter().enumerate() {
                if label != OTHER_CLASS {
                    metrics
                        .effective_class_share
                        .with_label_values(&[id, label.as_str()])
                        .set(learned.get(slot) / total);
                }
            }
        }
        let report = advisor.report();
        self.runtime
            .report()
            .update(id, |r| r.advisor = Some(report))
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
        let replaced = self.members[self.champion()].learner.subtrees_replaced();
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
            members: self.members.clone(),
            advisor: self.advisor.clone(),
            mix: self.mix.clone(),
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
        // Members by variant: one the job no longer trains is dropped, a
        // new one starts from the serving model (adopted above).
        for restored in state.members {
            match self
                .members
                .iter_mut()
                .find(|m| m.variant == restored.variant && m.recipe == restored.recipe)
            {
                Some(member) => *member = restored,
                None => {
                    tracing::warn!(operator = %self.operator_id, variant = restored.variant.name(), "checkpointed variant dropped: the job no longer trains it")
                }
            }
        }
        let same_variants = match (&state.advisor, &self.advisor) {
            (Some(restored), Some(current)) => restored.variants() == current.variants(),
            _ => false,
        };
        if same_variants {
            self.advisor = state.advisor;
        }
        self.mix = state.mix;
        self.pending = state.pending;
        self.publish_version()?;
        self.publish_champion();
        Ok(())
    }
}

const TRAINER_KIND: &str = "train_detector";
/// 2: the learners of every variant and the advisor.
const TRAINER_STATE_VERSION: u32 = 2;

/// A detector's checkpoint state: the serving model as `score_detector`
/// loads it, and what shapes further learning: every variant's learner,
/// the advisor's window and segments, the class mix, the queued synthetic
/// rows. The prequential figures of the served predictions (sliding
/// metrics, AUC bins) start over after a restore.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct TrainerState {
    model: ModelSnapshot,
    members: Vec<Member>,
    advisor: Option<Advisor>,
    mix: SyntheticMix,
    pending: SyntheticQueue,
}
