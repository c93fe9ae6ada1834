//! `class_monitor`: a pass-through stage that counts rows per class and keeps
//! a time-decayed estimate of the class mix, exported to Prometheus.
//!
//! Decay is per row, not per batch or per second, so the estimate does not
//! depend on how the stream is cut into batches or how fast it flows: after a
//! row, every class weight is multiplied by `λ = 0.5^(1 / half_life_rows)` and
//! the row's class gains 1. The share of a class is its weight over the sum of
//! weights; the imbalance ratio is the largest class weight over the smallest,
//! among classes seen at least once since the last reset. Rows with a NULL
//! label pass through and are counted as unlabelled, never as a class.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, exec_datafusion_err, plan_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, PlanProperties,
};
use equipoise_udfs::classes::ClassCounts;
use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};

use crate::batch_stream::{
    BatchProcessor, StreamServices, only_child, only_input_stream, processed_stream,
    single_stream_plan_methods,
};
use crate::class_label::{ClassValue, check_label_type, class_slots};
use crate::features::{ClassIndex, column_list};
use crate::metrics::{ClassLabels, MetricSet};
use crate::runtime::{ControlSignal, JobRuntime, OperatorSnapshot};
use crate::stage::StreamStage;

pub const KIND: &str = "class_monitor";
const STATE_VERSION: u32 = 1;

/// Options of the class monitor stage.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassMonitorOptions {
    pub label_column: String,
    /// Rows after which an observation counts half as much.
    pub half_life_rows: f64,
}

impl ClassMonitorOptions {
    pub const DEFAULT_HALF_LIFE_ROWS: f64 = 10_000.0;

    pub fn new(label_column: impl Into<String>) -> Self {
        Self {
            label_column: label_column.into(),
            half_life_rows: Self::DEFAULT_HALF_LIFE_ROWS,
        }
    }

    pub fn with_half_life_rows(mut self, half_life_rows: f64) -> Self {
        self.half_life_rows = half_life_rows;
        self
    }
}

/// Counts and decayed weights per class. Memory is one entry per distinct
/// class, which a label column keeps small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "ClassMixState", into = "ClassMixState")]
pub struct ClassMix {
    classes: ClassIndex,
    rows: ClassCounts,
    /// Time-decayed weight per class slot.
    decayed: Vec<f64>,
    unlabelled_rows: u64,
    batches: u64,
}

/// One class of a [`ClassMix`] as snapshots store it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClassEntry {
    class: ClassValue,
    rows: u64,
    decayed: f64,
}

/// The snapshot layout of a [`ClassMix`] (state version 1): classes in
/// order of first appearance.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClassMixState {
    classes: Vec<ClassEntry>,
    unlabelled_rows: u64,
    batches: u64,
}

impl From<ClassMix> for ClassMixState {
    fn from(mix: ClassMix) -> Self {
        let classes = mix
            .classes
            .values()
            .iter()
            .enumerate()
            .map(|(slot, class)| ClassEntry {
                class: class.clone(),
                rows: mix.rows.get(slot),
                decayed: mix.decayed[slot],
            })
            .collect();
        Self {
            classes,
            unlabelled_rows: mix.unlabelled_rows,
            batches: mix.batches,
        }
    }
}

impl From<ClassMixState> for ClassMix {
    fn from(state: ClassMixState) -> Self {
        let mut mix = Self::new();
        for entry in state.classes {
            let slot = mix.class_slot(entry.class);
            mix.rows.add(slot, entry.rows);
            mix.decayed[slot] = entry.decayed;
        }
        mix.unlabelled_rows = state.unlabelled_rows;
        mix.batches = state.batches;
        mix
    }
}

impl ClassMix {
    fn new() -> Self {
        Self {
            classes: ClassIndex::default(),
            rows: ClassCounts::default(),
            decayed: Vec::new(),
            unlabelled_rows: 0,
            batches: 0,
        }
    }

    fn class_slot(&mut self, class: ClassValue) -> usize {
        let slot = self.classes.slot(class);
        if slot == self.decayed.len() {
            self.decayed.push(0.0);
        }
        slot
    }

    /// Fold one batch of labels in; returns the rows per class slot it added
    /// and its unlabelled rows.
    fn observe(&mut self, labels: &ArrayRef, decay: f64) -> Result<(Vec<u64>, u64)> {
        let n = labels.len();
        let slots = class_slots(labels, |class| self.class_slot(class))?;
        let unlabelled = slots.iter().filter(|slot| slot.is_none()).count() as u64;
        // Row j of n is followed by n-1-j rows, so it weighs decay^(n-1-j) now.
        let mut added_rows = vec![0u64; self.classes.len()];
        let mut added_weight = vec![0f64; self.classes.len()];
        let mut weight = 1.0;
        for slot in slots.iter().rev() {
            if let Some(i) = *slot {
                added_rows[i] += 1;
                added_weight[i] += weight;
            }
            weight *= decay;
        }
        let batch_decay = decay.powi(i32::try_from(n).unwrap_or(i32::MAX));
        for (i, decayed) in self.decayed.iter_mut().enumerate() {
            self.rows.add(i, added_rows[i]);
            *decayed = *decayed * batch_decay + added_weight[i];
        }
        self.unlabelled_rows += unlabelled;
        self.batches += 1;
        Ok((added_rows, unlabelled))
    }

    /// Forget the decayed mix (after drift); totals stay.
    fn reset_decayed(&mut self) {
        self.decayed.fill(0.0);
    }

    /// Rows seen per class, in order of first appearance.
    pub fn rows_per_class(&self) -> Vec<(ClassValue, u64)> {
        self.classes
            .values()
            .iter()
            .enumerate()
            .map(|(slot, class)| (class.clone(), self.rows.get(slot)))
            .collect()
    }

    /// Time-decayed share of each class (summing to 1), or empty before the
    /// first labelled row.
    pub fn decayed_shares(&self) -> Vec<(ClassValue, f64)> {
        let total: f64 = self.decayed.iter().sum();
        if total <= 0.0 {
            return Vec::new();
        }
        self.classes
            .values()
            .iter()
            .zip(&self.decayed)
            .map(|(class, decayed)| (class.clone(), decayed / total))
            .collect()
    }

    /// Largest decayed class weight over the smallest, among classes seen
    /// since the last reset; `None` with fewer than two such classes.
    pub fn imbalance_ratio(&self) -> Option<f64> {
        let live = self.decayed.iter().copied().filter(|w| *w > 0.0);
        let (min, max, n) = live.fold((f64::INFINITY, 0.0f64, 0), |(lo, hi, n), w| {
            (lo.min(w), hi.max(w), n + 1)
        });
        (n >= 2).then(|| max / min)
    }

    pub fn unlabelled_rows(&self) -> u64 {
        self.unlabelled_rows
    }

    pub fn batches(&self) -> u64 {
        self.batches
    }
}

/// Prometheus families of every class monitor in a runtime; the `operator`
/// label tells instances apart.
#[derive(Debug)]
pub struct ClassMonitorMetrics {
    rows: IntCounterVec,
    unlabelled_rows: IntCounterVec,
    batches: IntCounterVec,
    class_share: GaugeVec,
    imbalance_ratio: GaugeVec,
}

impl MetricSet for ClassMonitorMetrics {
    const NAME: &'static str = KIND;

    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace("equipoise");
        let rows = IntCounterVec::new(
            opts("rows_processed_total", "Labelled rows processed, by class."),
            &["operator", "class"],
        )?;
        let unlabelled_rows = IntCounterVec::new(
            opts(
                "rows_unlabelled_total",
                "Rows whose label was NULL; passed through, counted in no class.",
            ),
            &["operator"],
        )?;
        let batches = IntCounterVec::new(
            opts("batches_processed_total", "Record batches processed."),
            &["operator"],
        )?;
        let class_share = GaugeVec::new(
            opts(
                "class_share_ratio",
                "Time-decayed share of each class in the stream (0 to 1).",
            ),
            &["operator", "class"],
        )?;
        let imbalance_ratio = GaugeVec::new(
            opts(
                "imbalance_ratio",
                "Time-decayed largest class weight over smallest class weight.",
            ),
            &["operator"],
        )?;
        registry.register(Box::new(rows.clone()))?;
        registry.register(Box::new(unlabelled_rows.clone()))?;
        registry.register(Box::new(batches.clone()))?;
        registry.register(Box::new(class_share.clone()))?;
        registry.register(Box::new(imbalance_ratio.clone()))?;
        Ok(Self {
            rows,
            unlabelled_rows,
            batches,
            class_share,
            imbalance_ratio,
        })
    }
}

/// One class monitor over one stream: its class mix (owned by the stream,
/// snapshotted through it), its metrics and its plan counters.
struct ClassMonitor {
    id: String,
    decay_per_row: f64,
    label_index: usize,
    mix: ClassMix,
    metrics: Arc<ClassMonitorMetrics>,
    labels: Arc<ClassLabels>,
    baseline: BaselineMetrics,
    unlabelled: Count,
}

impl ClassMonitor {
    fn observe(&mut self, labels: &ArrayRef) -> Result<()> {
        let (added, unlabelled) = self.mix.observe(labels, self.decay_per_row)?;
        for (class, n) in self.mix.classes.values().iter().zip(added) {
            if n > 0 {
                let class = self.labels.label(class)?;
                self.metrics
                    .rows
                    .with_label_values(&[self.id.as_str(), class.as_str()])
                    .inc_by(n);
            }
        }
        self.metrics
            .unlabelled_rows
            .with_label_values(&[self.id.as_str()])
            .inc_by(unlabelled);
        self.metrics
            .batches
            .with_label_values(&[self.id.as_str()])
            .inc();
        self.publish_gauges()
    }

    fn publish_gauges(&self) -> Result<()> {
        let shares = self.mix.decayed_shares();
        let by_label = self
            .labels
            .sum_by_label(shares.iter().map(|(class, share)| (class, *share)))?;
        for (class, share) in by_label {
            self.metrics
                .class_share
                .with_label_values(&[self.id.as_str(), class.as_str()])
                .set(share);
        }
        if let Some(ratio) = self.mix.imbalance_ratio() {
            self.metrics
                .imbalance_ratio
                .with_label_values(&[self.id.as_str()])
                .set(ratio);
        }
        Ok(())
    }

    /// A `Reset` for this monitor forgets the decayed mix. Drift does not:
    /// the monitor observes the raw mix, and its decay follows a shift.
    fn handle(&mut self, signal: &ControlSignal) {
        if let ControlSignal::Reset { target, reason } = signal
            && target.matches(KIND, &self.id)
        {
            tracing::info!(operator = %self.id, %reason, "class mix reset");
            self.mix.reset_decayed();
        }
    }
}

impl BatchProcessor for ClassMonitor {
    fn process(
        &mut self,
        batch: RecordBatch,
        signals: &[ControlSignal],
    ) -> Result<Vec<RecordBatch>> {
        let elapsed = self.baseline.elapsed_compute().clone();
        let _timer = elapsed.timer();
        for signal in signals {
            self.handle(signal);
        }
        let labels = Arc::clone(batch.column(self.label_index));
        self.unlabelled.add(labels.null_count());
        self.observe(&labels)?;
        self.baseline.record_output(batch.num_rows());
        self.baseline.output_batches().add(1);
        Ok(vec![batch])
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }

    fn snapshot(&self) -> Result<Option<OperatorSnapshot>> {
        OperatorSnapshot::encode(&self.id, KIND, STATE_VERSION, &self.mix).map(Some)
    }

    fn restore(&mut self, snapshot: &OperatorSnapshot) -> Result<()> {
        self.mix = snapshot.decode(&self.id, KIND, STATE_VERSION)?;
        self.publish_gauges()
    }
}

/// The planning side of the stage: validates the label column and builds a
/// [`ClassMonitorExec`] registered with the runtime.
#[derive(Debug, Clone)]
pub struct ClassMonitorStage {
    options: ClassMonitorOptions,
}

impl ClassMonitorStage {
    pub fn try_new(options: ClassMonitorOptions) -> Result<Self> {
        if !(options.half_life_rows.is_finite() && options.half_life_rows > 0.0) {
            return plan_err!(
                "half_life_rows must be a positive number, got {}",
                options.half_life_rows
            );
        }
        Ok(Self { options })
    }
}

impl StreamStage for ClassMonitorStage {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        let field = input
            .field_with_name(&self.options.label_column)
            .map_err(|_| {
                exec_datafusion_err!(
                    "label column '{}' not found; columns are: {}",
                    self.options.label_column,
                    column_list(input)
                )
            })?;
        check_label_type(field.name(), field.data_type())?;
        Ok(Arc::clone(input))
    }

    fn plan(
        &self,
        input: Arc<dyn ExecutionPlan>,
        runtime: &Arc<JobRuntime>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.output_schema(&input.schema())?;
        let label_index = input.schema().index_of(&self.options.label_column)?;
        let id = runtime.next_operator_id(KIND)?;
        runtime.metric_set::<ClassMonitorMetrics>()?;
        Ok(Arc::new(ClassMonitorExec {
            properties: Arc::clone(input.properties()),
            input,
            label_index,
            id,
            half_life_rows: self.options.half_life_rows,
            runtime: Arc::clone(runtime),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }
}

/// Physical node of the class monitor. Emits each batch as soon as it has
/// been counted, so it is as incremental and as bounded as its input, and
/// keeps its input's properties (order included): it passes rows through.
#[derive(Debug)]
pub struct ClassMonitorExec {
    input: Arc<dyn ExecutionPlan>,
    label_index: usize,
    /// Stays through optimizer rewrites: one logical stage, one state.
    id: String,
    half_life_rows: f64,
    runtime: Arc<JobRuntime>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl DisplayAs for ClassMonitorExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = self.input.schema().field(self.label_index).name().clone();
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, "ClassMonitorExec: id={}, label={label}", self.id)
            }
            DisplayFormatType::TreeRender => {
                writeln!(f, "id={}", self.id)?;
                write!(f, "label={label}")
            }
        }
    }
}

impl ExecutionPlan for ClassMonitorExec {
    fn name(&self) -> &str {
        "ClassMonitorExec"
    }

    single_stream_plan_methods!(keeps_order: true);

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child("ClassMonitorExec", children)?;
        Ok(Arc::new(Self {
            properties: Arc::clone(input.properties()),
            input,
            label_index: self.label_index,
            id: self.id.clone(),
            half_life_rows: self.half_life_rows,
            runtime: Arc::clone(&self.runtime),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let services = StreamServices::new(&self.runtime, &self.id, &context)?;
        let input = only_input_stream("ClassMonitorExec", &self.input, partition, context)?;
        let monitor = ClassMonitor {
            id: self.id.clone(),
            decay_per_row: 0.5f64.powf(1.0 / self.half_life_rows),
            label_index: self.label_index,
            mix: ClassMix::new(),
            metrics: self.runtime.metric_set::<ClassMonitorMetrics>()?,
            labels: Arc::clone(self.runtime.class_labels()),
            baseline: BaselineMetrics::new(&self.metrics, partition),
            unlabelled: MetricBuilder::new(&self.metrics).counter("unlabelled_rows", partition),
        };
        processed_stream(input, monitor, self.input.schema(), services)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::SignalTarget;
    use datafusion::arrow::array::Int64Array;

    fn labels(values: &[Option<i64>]) -> ArrayRef {
        Arc::new(Int64Array::from(values.to_vec()))
    }

    #[test]
    fn decayed_mix_does_not_depend_on_batching() -> Result<()> {
        let decay = 0.5f64.powf(1.0 / 3.0);
        let rows: Vec<Option<i64>> = (0..40).map(|i| Some(i64::from(i % 7 == 0))).collect();
        let mut whole = ClassMix::new();
        whole.observe(&labels(&rows), decay)?;
        let mut pieces = ClassMix::new();
        for chunk in rows.chunks(3) {
            pieces.observe(&labels(chunk), decay)?;
        }
        for ((c1, s1), (c2, s2)) in whole.decayed_shares().iter().zip(pieces.decayed_shares()) {
            assert_eq!(*c1, c2);
            assert!((s1 - s2).abs() < 1e-12, "{s1} vs {s2}");
        }
        assert_eq!(whole.rows_per_class(), pieces.rows_per_class());
        Ok(())
    }

    #[test]
    fn decay_follows_the_half_life() -> Result<()> {
        // One row of class 1, then 10 rows of class 0 with a half-life of 10
        // rows: class 1 weighs 0.5 against class 0's sum of 0.5^(k/10), k=0..9.
        let decay = 0.5f64.powf(1.0 / 10.0);
        let mut mix = ClassMix::new();
        mix.observe(&labels(&[Some(1)]), decay)?;
        mix.observe(&labels(&[Some(0); 10]), decay)?;
        let zero_weight: f64 = (0..10).map(|k| decay.powi(k)).sum();
        let expected_ratio = zero_weight / 0.5;
        let ratio = mix
            .imbalance_ratio()
            .ok_or_else(|| exec_datafusion_err!("no ratio"))?;
        assert!(
            (ratio - expected_ratio).abs() < 1e-9,
            "{ratio} vs {expected_ratio}"
        );
        Ok(())
    }

    #[test]
    fn null_labels_count_as_unlabelled_not_as_a_class() -> Result<()> {
        let mut mix = ClassMix::new();
        mix.observe(&labels(&[Some(0), None, Some(0), None]), 0.9)?;
        assert_eq!(mix.rows_per_class(), vec![(ClassValue::Int(0), 2)]);
        assert_eq!(mix.unlabelled_rows(), 2);
        assert_eq!(mix.imbalance_ratio(), None);
        Ok(())
    }

    #[test]
    fn reset_forgets_the_mix_but_keeps_totals() -> Result<()> {
        let mut mix = ClassMix::new();
        mix.observe(&labels(&[Some(0), Some(1), Some(0)]), 0.9)?;
        mix.reset_decayed();
        assert!(mix.decayed_shares().is_empty());
        assert_eq!(
            mix.rows_per_class(),
            vec![(ClassValue::Int(0), 2), (ClassValue::Int(1), 1)]
        );
        Ok(())
    }

    fn monitor(id: &str, runtime: &JobRuntime) -> Result<ClassMonitor> {
        let plan_metrics = ExecutionPlanMetricsSet::new();
        Ok(ClassMonitor {
            id: id.to_string(),
            decay_per_row: 0.5f64.powf(1.0 / 100.0),
            label_index: 0,
            mix: ClassMix::new(),
            metrics: runtime.metric_set::<ClassMonitorMetrics>()?,
            labels: Arc::default(),
            baseline: BaselineMetrics::new(&plan_metrics, 0),
            unlabelled: MetricBuilder::new(&plan_metrics).counter("unlabelled_rows", 0),
        })
    }

    #[test]
    fn snapshot_round_trip_keeps_class_lookup() -> Result<()> {
        let runtime = JobRuntime::default();
        let mut first = monitor("m", &runtime)?;
        first.observe(&labels(&[Some(0), Some(1), Some(0)]))?;
        let Some(snapshot) = first.snapshot()? else {
            panic!("the class monitor keeps a snapshot");
        };
        let mut second = monitor("m", &runtime)?;
        second.restore(&snapshot)?;
        second.observe(&labels(&[Some(1)]))?;
        assert_eq!(
            second.mix.rows_per_class(),
            vec![(ClassValue::Int(0), 2), (ClassValue::Int(1), 2)]
        );
        Ok(())
    }

    #[test]
    fn reset_signals_reach_only_their_target() -> Result<()> {
        let runtime = JobRuntime::default();
        let mut monitor = monitor("class_monitor-3", &runtime)?;
        monitor.observe(&labels(&[Some(0), Some(1)]))?;
        let reset = |target| ControlSignal::Reset {
            target,
            reason: "test".into(),
        };
        monitor.handle(&reset(SignalTarget::Operator("class_monitor-4".into())));
        monitor.handle(&reset(SignalTarget::Kind("oversampler".into())));
        assert_eq!(monitor.mix.decayed_shares().len(), 2);
        monitor.handle(&reset(SignalTarget::Operator("class_monitor-3".into())));
        assert!(monitor.mix.decayed_shares().is_empty());
        monitor.observe(&labels(&[Some(1)]))?;
        monitor.handle(&reset(SignalTarget::Kind(KIND.into())));
        assert!(monitor.mix.decayed_shares().is_empty());
        Ok(())
    }

    #[test]
    fn zero_or_negative_half_life_is_refused() {
        assert!(
            ClassMonitorStage::try_new(ClassMonitorOptions::new("y").with_half_life_rows(0.0))
                .is_err()
        );
        assert!(
            ClassMonitorStage::try_new(ClassMonitorOptions::new("y").with_half_life_rows(f64::NAN))
                .is_err()
        );
    }
}
