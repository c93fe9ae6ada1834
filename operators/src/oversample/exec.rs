//! The execution node shared by every oversampling method, its per-stream
//! state, and how synthetic rows become Arrow columns.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray,
};
use datafusion::arrow::buffer::{BooleanBuffer, Buffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::{cast, interleave};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, PlanProperties,
};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::qc_smote::StreamModels;
use super::reservoir::{ReferenceSet, Reservoirs, ReservoirsState};
use super::{
    ColumnPlan, GenerateContext, Generated, Method, OversampleOptions, OversampleStage,
    SamplingStrategy, Synthetic, generate,
};
use crate::batch_stream::{
    BatchProcessor, StreamServices, merges_partitions, only_child, only_input_stream,
    processed_stream, single_stream_plan_methods, single_stream_properties,
};
use crate::class_label::ClassValue;
use crate::features::{BatchFeatures, ClassIndex, batch_features, batch_labels};
use crate::metrics::{ClassLabels, MetricSet};
use crate::parallel::{cores, in_shares};
use crate::rng::Rng;
use crate::runtime::{ControlSignal, JobRuntime, OperatorSnapshot, RunReport};

/// Prometheus families of every oversampler in a runtime.
#[derive(Debug)]
pub struct OversampleMetrics {
    synthetic_rows: IntCounterVec,
    rejected: IntCounterVec,
    unfilled: IntCounterVec,
    buffered: IntGaugeVec,
}

impl MetricSet for OversampleMetrics {
    const NAME: &'static str = "oversample";

    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace("equipoise");
        let synthetic_rows = IntCounterVec::new(
            opts(
                "synthetic_rows_total",
                "Synthetic rows emitted, by operator, class and kind (interpolated or duplicate).",
            ),
            &["operator", "class", "kind"],
        )?;
        let rejected = IntCounterVec::new(
            opts(
                "synthetic_candidates_rejected_total",
                "Candidate synthetic rows scored and discarded by quality control.",
            ),
            &["operator"],
        )?;
        let unfilled = IntCounterVec::new(
            opts(
                "synthetic_rows_unfilled_total",
                "Synthetic rows the sampling strategy asked for but the method could not make \
                 (no eligible seeds).",
            ),
            &["operator"],
        )?;
        let buffered = IntGaugeVec::new(
            opts(
                "oversampler_buffered_rows",
                "Rows an oversampler holds per class as seeds and neighbours (at most its window).",
            ),
            &["operator", "class"],
        )?;
        registry.register(Box::new(synthetic_rows.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(unfilled.clone()))?;
        registry.register(Box::new(buffered.clone()))?;
        Ok(Self {
            synthetic_rows,
            rejected,
            unfilled,
            buffered,
        })
    }
}

/// Physical node of an oversampling operator.
#[derive(Debug)]
pub struct OversampleExec {
    stage: OversampleStage,
    columns: ColumnPlan,
    input: Arc<dyn ExecutionPlan>,
    operator_id: String,
    runtime: Arc<JobRuntime>,
    prometheus: Arc<OversampleMetrics>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl OversampleExec {
    pub fn try_new(
        stage: OversampleStage,
        input: Arc<dyn ExecutionPlan>,
        runtime: &Arc<JobRuntime>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let columns = stage.columns(&input.schema())?;
        let bounded = Self::whole_table(&stage, input.as_ref())?;
        if !bounded && matches!(stage.options().strategy, SamplingStrategy::Targets(_)) {
            return plan_err!(
                "{}: targets (class sizes to reach) need bounded input; on a stream use \
                 strategy or ratio",
                stage.method()
            );
        }
        let operator_id = runtime.next_operator_id(stage.method().name())?;
        Ok(Arc::new(Self {
            properties: Self::properties_for(&columns, input.as_ref()),
            columns,
            input,
            operator_id,
            runtime: Arc::clone(runtime),
            prometheus: runtime.metric_set::<OversampleMetrics>()?,
            metrics: ExecutionPlanMetricsSet::new(),
            stage,
        }))
    }

    /// Whether the whole-table semantics apply (else streaming).
    fn whole_table(stage: &OversampleStage, input: &dyn ExecutionPlan) -> Result<bool> {
        stage
            .options()
            .mode
            .whole_table("mode", stage.method().name(), input)
    }

    fn properties_for(columns: &ColumnPlan, input: &dyn ExecutionPlan) -> Arc<PlanProperties> {
        single_stream_properties(&columns.output_schema, input, EmissionType::Incremental)
    }

    pub fn operator_id(&self) -> &str {
        &self.operator_id
    }
}

impl DisplayAs for OversampleExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = &self.stage.options().label_column;
        let features = self.columns.feature_indices.len();
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "OversampleExec: method={}, id={}, label={label}, features={features}",
                self.stage.method(),
                self.operator_id
            ),
            DisplayFormatType::TreeRender => {
                writeln!(f, "method={}", self.stage.method())?;
                write!(f, "label={label}")
            }
        }
    }
}

impl ExecutionPlan for OversampleExec {
    fn name(&self) -> &str {
        "OversampleExec"
    }

    // Reservoirs and class weights are global to the operator.
    single_stream_plan_methods!(keeps_order: false);

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child("OversampleExec", children)?;
        let columns = self.stage.columns(&input.schema())?;
        // Same operator id: optimizer rewrites do not make a new operator.
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
        let input = only_input_stream(
            "OversampleExec",
            &self.input,
            partition,
            Arc::clone(&context),
        )?;
        let bounded = Self::whole_table(&self.stage, self.input.as_ref())?;
        let counters = Counters {
            baseline: BaselineMetrics::new(&self.metrics, partition),
            input_rows: MetricBuilder::new(&self.metrics).counter("input_rows", partition),
            synthetic_rows: MetricBuilder::new(&self.metrics).counter("synthetic_rows", partition),
            duplicate_rows: MetricBuilder::new(&self.metrics).counter("duplicate_rows", partition),
            candidates_rejected: MetricBuilder::new(&self.metrics)
                .counter("candidates_rejected", partition),
            neighbourhood_builds: MetricBuilder::new(&self.metrics)
                .counter("neighbourhood_builds", partition),
        };
        let oversampler = Oversampler::new(
            self,
            bounded,
            context.session_config().batch_size(),
            counters,
        );
        processed_stream(
            input,
            oversampler,
            Arc::clone(&self.columns.output_schema),
            services,
        )
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

struct Counters {
    baseline: BaselineMetrics,
    input_rows: Count,
    synthetic_rows: Count,
    duplicate_rows: Count,
    candidates_rejected: Count,
    /// Snapshots QC-SMOTE's stream models were built from.
    neighbourhood_builds: Count,
}

/// The state of one oversampler over one stream.
struct Oversampler {
    method: Method,
    options: OversampleOptions,
    columns: ColumnPlan,
    bounded: bool,
    batch_size: usize,
    operator_id: String,
    prometheus: Arc<OversampleMetrics>,
    class_labels: Arc<ClassLabels>,
    report: Arc<RunReport>,
    counters: Counters,
    classes: ClassIndex,
    /// Labelled rows per class slot (bounded amounts).
    totals: Vec<u64>,
    /// Decayed class weights and owed synthetic rows (streams).
    decayed: Vec<f64>,
    owed: Vec<f64>,
    decay_per_row: f64,
    reservoirs: Reservoirs,
    rng: Rng,
    /// False when the input merges partitions, so that rows arrive in an
    /// order that varies from run to run.
    arrival_order_is_stable: bool,
    /// Synthetic rows made at the end of bounded input, materialized a
    /// few batches at a time (one per core, on their own threads) and
    /// emitted one per poll, so memory holds those batches, not all.
    deferred: Option<Deferred>,
    /// QC-SMOTE's class models on a stream, reused between batches.
    stream_models: Option<StreamModels>,
}

struct Deferred {
    reference: Arc<ReferenceSet>,
    rows: Vec<Synthetic>,
    /// The first row not yet materialized.
    next: usize,
    /// Batches materialized and not yet emitted, in order.
    ready: VecDeque<RecordBatch>,
}

const OVERSAMPLER_STATE_VERSION: u32 = 1;

/// An oversampler's checkpoint state on a stream: its classes in slot
/// order, the decayed class mix and owed rows, its random stream and its
/// reservoirs' rows. QC-SMOTE's class models are not in it: they are
/// rebuilt from the restored reservoirs at the first batch that needs them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct OversamplerState {
    classes: Vec<ClassValue>,
    totals: Vec<u64>,
    decayed: Vec<f64>,
    owed: Vec<f64>,
    rng: Rng,
    reservoirs: ReservoirsState,
}

impl BatchProcessor for Oversampler {
    fn snapshot(&self) -> Result<Option<OperatorSnapshot>> {
        if self.bounded {
            // Synthetic rows are made from every row at the end of input.
            return exec_err!(
                "{}: an oversampler in batch mode draws from every row at the end of input and \
                 cannot be checkpointed; use mode=stream",
                self.operator_id
            );
        }
        let state = OversamplerState {
            classes: self.classes.values().to_vec(),
            totals: self.totals.clone(),
            decayed: self.decayed.clone(),
            owed: self.owed.clone(),
            rng: self.rng.clone(),
            reservoirs: self.reservoirs.state()?,
        };
        OperatorSnapshot::encode(
            &self.operator_id,
            self.method.name(),
            OVERSAMPLER_STATE_VERSION,
            &state,
        )
        .map(Some)
    }

    fn restore(&mut self, snapshot: &OperatorSnapshot) -> Result<()> {
        let state: OversamplerState = snapshot.decode(
            &self.operator_id,
            self.method.name(),
            OVERSAMPLER_STATE_VERSION,
        )?;
        for class in state.classes {
            self.classes.slot(class);
        }
        self.totals = state.totals;
        self.decayed = state.decayed;
        self.owed = state.owed;
        self.rng = state.rng;
        self.reservoirs.restore(state.reservoirs)?;
        self.stream_models = None;
        Ok(())
    }

    fn memory_size(&self) -> usize {
        let ready: usize = self.deferred.as_ref().map_or(0, |d| {
            d.ready
                .iter()
                .map(RecordBatch::get_array_memory_size)
                .sum::<usize>()
                + d.rows.capacity() * size_of::<Synthetic>()
        });
        self.reservoirs.memory_size() + ready
    }

    fn process(
        &mut self,
        batch: RecordBatch,
        signals: &[ControlSignal],
    ) -> Result<Vec<RecordBatch>> {
        self.process_batch(&batch, signals)
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        self.finish_input()
    }

    fn next_deferred(&mut self) -> Result<Option<RecordBatch>> {
        self.next_deferred_batch()
    }
}

impl Oversampler {
    fn new(exec: &OversampleExec, bounded: bool, batch_size: usize, counters: Counters) -> Self {
        let options = exec.stage.options().clone();
        let window = window_of(&options, bounded);
        Self {
            reservoirs: Reservoirs::new(window, exec.columns.feature_indices.clone()),
            rng: Rng::new(options.seed),
            decay_per_row: 0.5f64.powf(1.0 / options.half_life_rows),
            method: exec.stage.method(),
            options,
            columns: exec.columns.clone(),
            bounded,
            batch_size: batch_size.max(1),
            operator_id: exec.operator_id.clone(),
            prometheus: Arc::clone(&exec.prometheus),
            class_labels: Arc::clone(exec.runtime.class_labels()),
            report: Arc::clone(exec.runtime.report()),
            counters,
            classes: ClassIndex::default(),
            totals: Vec::new(),
            decayed: Vec::new(),
            owed: Vec::new(),
            arrival_order_is_stable: !merges_partitions(exec.input.as_ref()),
            deferred: None,
            stream_models: None,
        }
    }

    fn window(&self) -> usize {
        window_of(&self.options, self.bounded)
    }

    fn handle(&mut self, signal: &ControlSignal) -> Result<()> {
        if signal.resets(self.method.name(), &self.operator_id) {
            let keep = (self.window() / 10).max(self.options.k + 1);
            let reason = signal.reason();
            tracing::info!(operator = %self.operator_id, %reason, keep, "reservoirs shrunk");
            self.reservoirs.shrink_to(keep)?;
            self.stream_models = None;
            self.decayed.iter_mut().for_each(|w| *w = 0.0);
            self.owed.iter_mut().for_each(|o| *o = 0.0);
            self.publish_buffered()?;
        }
        Ok(())
    }

    fn publish_buffered(&self) -> Result<()> {
        let held = self
            .classes
            .values()
            .iter()
            .enumerate()
            .map(|(slot, class)| (class, self.reservoirs.len_of(slot) as f64));
        for (class, held) in self.class_labels.sum_by_label(held)? {
            self.prometheus
                .buffered
                .with_label_values(&[self.operator_id.as_str(), class.as_str()])
                .set(held as i64);
        }
        Ok(())
    }

    /// Size the per-class state for the classes seen so far and count the
    /// batch's labelled rows (eligible or not) into the class totals.
    fn count_labelled(&mut self, labelled: &[Option<usize>]) {
        let n = self.classes.len();
        self.totals.resize(n, 0);
        self.decayed.resize(n, 0.0);
        self.owed.resize(n, 0.0);
        for slot in labelled.iter().flatten() {
            self.totals[*slot] += 1;
        }
    }

    fn process_batch(
        &mut self,
        batch: &RecordBatch,
        signals: &[ControlSignal],
    ) -> Result<Vec<RecordBatch>> {
        let elapsed = self.counters.baseline.elapsed_compute().clone();
        let _timer = elapsed.timer();
        for signal in signals {
            self.handle(signal)?;
        }
        self.counters.input_rows.add(batch.num_rows());
        let mut out = vec![self.with_marker_columns(batch)?];
        if self.bounded {
            // Every row is read once, at the end: hold the batch as it is
            // (its features are read, and checked, only then).
            let labelled = batch_labels(batch, self.columns.label_index, &mut self.classes)?;
            self.count_labelled(&labelled);
            self.reservoirs.hold(batch, labelled)?;
        } else {
            let features = batch_features(
                batch,
                self.columns.label_index,
                &self.columns.feature_indices,
                &mut self.classes,
            )?;
            self.count_labelled(&features.labelled);
            let amounts = self.stream_amounts(&features);
            if amounts.iter().any(|&a| a > 0) {
                // From the reservoirs as they were before this batch.
                if let Some(made) = self.synthesize(&amounts)? {
                    out.extend(synthetic_batches(
                        &self.columns,
                        &made.reference,
                        &made.rows,
                        self.batch_size,
                    )?);
                }
            }
            self.reservoirs.insert(batch, &features)?;
            if let Some(models) = self.stream_models.as_mut() {
                models.note_inserted(&features.slots);
            }
        }
        self.publish_buffered()?;
        self.record_output(&out);
        Ok(out)
    }

    fn finish_input(&mut self) -> Result<Vec<RecordBatch>> {
        if !self.bounded {
            return Ok(Vec::new());
        }
        let elapsed = self.counters.baseline.elapsed_compute().clone();
        let _timer = elapsed.timer();
        let counts: Vec<_> = self
            .classes
            .values()
            .iter()
            .cloned()
            .zip(self.totals.iter().copied())
            .collect();
        if counts.is_empty() {
            return Ok(Vec::new());
        }
        let amounts = self
            .options
            .strategy
            .bounded_amounts(self.method.name(), &counts)?;
        self.deferred = self.synthesize(&amounts)?;
        Ok(Vec::new())
    }

    /// The next batch of end-of-input synthetic rows.
    fn next_deferred_batch(&mut self) -> Result<Option<RecordBatch>> {
        let Some(deferred) = self.deferred.as_mut() else {
            return Ok(None);
        };
        if deferred.ready.is_empty() {
            let end = (deferred.next + cores() * self.batch_size).min(deferred.rows.len());
            if deferred.next >= end {
                self.deferred = None;
                return Ok(None);
            }
            let elapsed = self.counters.baseline.elapsed_compute().clone();
            let _timer = elapsed.timer();
            deferred.ready.extend(synthetic_batches(
                &self.columns,
                &deferred.reference,
                &deferred.rows[deferred.next..end],
                self.batch_size,
            )?);
            deferred.next = end;
        }
        let batch = deferred.ready.pop_front();
        if let Some(batch) = &batch {
            self.record_output(std::slice::from_ref(batch));
        }
        Ok(batch)
    }

    fn record_output(&self, batches: &[RecordBatch]) {
        for batch in batches {
            self.counters.baseline.record_output(batch.num_rows());
            self.counters.baseline.output_batches().add(1);
        }
    }

    /// Fold the batch's labels into the decayed weights (per row, as the
    /// class monitor does) and turn the owed fraction into whole rows.
    fn stream_amounts(&mut self, features: &BatchFeatures) -> Vec<u64> {
        let mut weight = 1.0;
        let n = features.labelled.len();
        let mut added = vec![0.0; self.decayed.len()];
        for slot in features.labelled.iter().rev() {
            if let Some(slot) = *slot {
                added[slot] += weight;
            }
            weight *= self.decay_per_row;
        }
        let batch_decay = self
            .decay_per_row
            .powi(i32::try_from(n).unwrap_or(i32::MAX));
        for (w, a) in self.decayed.iter_mut().zip(&added) {
            *w = *w * batch_decay + a;
        }
        let labelled = features.labelled.iter().flatten().count() as f64;
        let rates = self.options.strategy.stream_rates(&self.decayed);
        let mut amounts = vec![0; self.decayed.len()];
        for (slot, rate) in rates.iter().enumerate() {
            if self.reservoirs.len_of(slot) == 0 {
                // Nothing to draw from yet: the debt is forgiven, not
                // saved up into a burst.
                self.owed[slot] = 0.0;
                continue;
            }
            self.owed[slot] += labelled * rate;
            let whole = self.owed[slot].floor();
            self.owed[slot] -= whole;
            amounts[slot] = whole as u64;
        }
        amounts
    }

    /// Generate `amounts` rows per class from the reservoirs (counted in
    /// the metrics now; materialized by the caller).
    fn synthesize(&mut self, amounts: &[u64]) -> Result<Option<Deferred>> {
        let made = if self.method == Method::QcSmote && !self.bounded {
            self.generate_from_stream_models(amounts)?
        } else {
            self.generate_from_reservoirs(amounts)?
        };
        let Some((reference, generated)) = made else {
            return Ok(None);
        };
        self.counters
            .candidates_rejected
            .add(generated.candidates_rejected as usize);
        let id = self.operator_id.as_str();
        self.prometheus
            .rejected
            .with_label_values(&[id])
            .inc_by(generated.candidates_rejected);
        self.prometheus
            .unfilled
            .with_label_values(&[id])
            .inc_by(generated.unfilled);
        if generated.rows.is_empty() {
            return Ok(None);
        }
        let mut per_kind = vec![[0u64; 2]; self.classes.len()];
        for row in &generated.rows {
            per_kind[reference.class_of[row.seed] as usize][usize::from(row.duplicate)] += 1;
        }
        for (slot, [interpolated, duplicate]) in per_kind.iter().enumerate() {
            let made = interpolated + duplicate;
            if made > 0 {
                let class = &self.classes.values()[slot];
                self.report
                    .update(id, |report| report.add_synthetic(class, made))?;
            }
            let class = self.class_labels.label(&self.classes.values()[slot])?;
            for (kind, n) in [("interpolated", interpolated), ("duplicate", duplicate)] {
                if *n > 0 {
                    self.prometheus
                        .synthetic_rows
                        .with_label_values(&[id, class.as_str(), kind])
                        .inc_by(*n);
                }
            }
            self.counters.duplicate_rows.add(*duplicate as usize);
        }
        self.counters.synthetic_rows.add(generated.rows.len());
        Ok(Some(Deferred {
            reference,
            rows: generated.rows,
            next: 0,
            ready: VecDeque::new(),
        }))
    }

    /// Generate from a fresh reference set of the reservoirs.
    fn generate_from_reservoirs(
        &mut self,
        amounts: &[u64],
    ) -> Result<Option<(Arc<ReferenceSet>, Generated)>> {
        let scale = self.options.scale_for(self.method);
        // A method drawing seeds and neighbours within one class reads only
        // the classes it fills (unless standardizing, whose statistics span
        // every row).
        let only_filled = !self.method.reads_other_classes() && !scale;
        let mut reference = self
            .reservoirs
            .reference_of(|slot| !only_filled || amounts.get(slot).is_some_and(|&a| a > 0))?;
        if reference.is_empty() {
            return Ok(None);
        }
        if self.bounded {
            // A table's rows may arrive in any order (parallel scans merged).
            reference.canonicalize(&self.classes);
        }
        let scaled;
        let space: &[f64] = if scale {
            scaled = reference.standardized();
            &scaled
        } else {
            &reference.features
        };
        let mut ctx = GenerateContext {
            reference: &reference,
            space,
            amounts,
            classes: self.classes.values(),
            rng: &mut self.rng,
            bounded: self.bounded,
            arrival_order_is_stable: self.arrival_order_is_stable,
        };
        let generated = generate(self.method, &self.options, &mut ctx)?;
        Ok(Some((Arc::new(reference), generated)))
    }

    /// QC-SMOTE on a stream: from the class models of the last snapshot,
    /// taken anew when they are stale.
    fn generate_from_stream_models(
        &mut self,
        amounts: &[u64],
    ) -> Result<Option<(Arc<ReferenceSet>, Generated)>> {
        if self
            .stream_models
            .as_ref()
            .is_none_or(|m| m.is_stale(amounts, &self.reservoirs))
        {
            self.stream_models =
                StreamModels::snapshot(&self.reservoirs, self.options.scale_for(self.method))?;
            self.counters.neighbourhood_builds.add(1);
        }
        let Some(models) = self.stream_models.as_mut() else {
            return Ok(None);
        };
        let generated =
            models.generate(amounts, self.classes.values(), &mut self.rng, &self.options);
        Ok(Some((Arc::clone(models.reference()), generated)))
    }

    fn with_marker_columns(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(BooleanArray::new(
            BooleanBuffer::new_unset(n),
            None,
        )));
        columns.push(Arc::new(StringArray::new_null(n)));
        Ok(RecordBatch::try_new(
            Arc::clone(&self.columns.output_schema),
            columns,
        )?)
    }
}

/// Rows kept per class: the option, or the default for the semantics.
fn window_of(options: &OversampleOptions, bounded: bool) -> usize {
    options.window.unwrap_or(if bounded {
        OversampleOptions::BOUNDED_WINDOW
    } else {
        OversampleOptions::STREAM_WINDOW
    })
}

/// Fewer synthetic rows than this (half a default batch) are materialized
/// on the calling thread: too little work to be worth starting threads.
const PARALLEL_ROWS: usize = 4_096;

/// Materialize `rows` as batches of `batch_size` rows, in order. The
/// batches are independent, so with enough rows they are split between
/// the cores: each thread makes a contiguous run of them.
fn synthetic_batches(
    columns: &ColumnPlan,
    reference: &ReferenceSet,
    rows: &[Synthetic],
    batch_size: usize,
) -> Result<Vec<RecordBatch>> {
    let chunks: Vec<&[Synthetic]> = rows.chunks(batch_size.max(1)).collect();
    let make = |chunks: &[&[Synthetic]]| -> Result<Vec<RecordBatch>> {
        chunks
            .iter()
            .map(|rows| synthetic_batch(columns, reference, rows))
            .collect()
    };
    let runs = in_shares(chunks.len(), rows.len() >= PARALLEL_ROWS, |first, end| {
        make(&chunks[first..end])
    });
    let mut batches = Vec::with_capacity(chunks.len());
    for run in runs {
        batches.extend(run?);
    }
    Ok(batches)
}

/// Materialize synthetic rows: every column copied from the seed, then the
/// feature columns replaced by the interpolated values.
pub fn synthetic_batch(
    columns: &ColumnPlan,
    reference: &ReferenceSet,
    rows: &[Synthetic],
) -> Result<RecordBatch> {
    let schema: &SchemaRef = &columns.output_schema;
    let input_width = schema.fields().len() - 2;
    let seeds: Vec<(usize, usize)> = rows
        .iter()
        .map(|r| {
            let (chunk, row) = reference.locator[r.seed];
            (chunk as usize, row as usize)
        })
        .collect();
    let all_duplicates = rows.iter().all(|r| r.duplicate);
    let any_duplicate = rows.iter().any(|r| r.duplicate);
    let mut feature_of = vec![None; input_width];
    for (d, &c) in columns.feature_indices.iter().enumerate() {
        feature_of[c] = Some(d);
    }
    let copied = |c: usize| -> Result<ArrayRef> {
        let arrays: Vec<&dyn Array> = reference
            .chunks
            .iter()
            .map(|b| b.column(c).as_ref())
            .collect();
        Ok(interleave(&arrays, &seeds)?)
    };
    let mut values = synthetic_features(reference, rows);
    let mut out: Vec<ArrayRef> = Vec::with_capacity(input_width + 2);
    for (c, feature) in feature_of.iter().enumerate() {
        let Some(d) = *feature else {
            out.push(copied(c)?);
            continue;
        };
        let values = Float64Array::from(std::mem::take(&mut values[d]));
        let target = schema.field(c).data_type();
        if matches!(target, DataType::Float64) {
            // The reference holds a Float64 column's values as read, so a
            // duplicate's value is its seed's, bit for bit.
            out.push(Arc::new(values));
            continue;
        }
        if all_duplicates {
            out.push(copied(c)?);
            continue;
        }
        // An integer duplicate is copied, as an i64 beyond 2^53 would not
        // survive the trip through f64.
        let seeds_values = if target.is_integer() && any_duplicate {
            Some(copied(c)?)
        } else {
            None
        };
        out.push(to_column_type(values, target, seeds_values.as_ref(), rows)?);
    }
    out.push(Arc::new(BooleanArray::new(
        BooleanBuffer::new_set(rows.len()),
        None,
    )));
    out.push(Arc::new(kind_column(rows)?));
    Ok(RecordBatch::try_new(Arc::clone(schema), out)?)
}

/// The `synthetic_kind` of synthetic rows, `interpolated` or `duplicate`,
/// its buffers written directly (collected, a `StringArray` is appended
/// value by value).
fn kind_column(rows: &[Synthetic]) -> Result<StringArray> {
    const INTERPOLATED: &[u8] = b"interpolated";
    const DUPLICATE: &[u8] = b"duplicate";
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    let mut values = Vec::with_capacity(rows.len() * INTERPOLATED.len());
    offsets.push(0i32);
    for row in rows {
        values.extend_from_slice(if row.duplicate {
            DUPLICATE
        } else {
            INTERPOLATED
        });
        let Ok(end) = i32::try_from(values.len()) else {
            return exec_err!(
                "a synthetic batch's synthetic_kind exceeds 2 GiB; lower datafusion.execution.batch_size"
            );
        };
        offsets.push(end);
    }
    Ok(StringArray::try_new(
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Buffer::from_vec(values),
        None,
    )?)
}

/// The synthetic rows' feature values, one vector per feature: a
/// duplicate's are its seed's, an interpolated row's `a + step (b - a)`
/// from seed `a` towards neighbour `b`. Made row by row, so each row reads
/// its seed and neighbour as two contiguous rows of the row-major reference
/// (a feature-by-feature pass would visit both once per feature).
fn synthetic_features(reference: &ReferenceSet, rows: &[Synthetic]) -> Vec<Vec<f64>> {
    // Rows go through a small row-major block (cache-resident) that is
    // then written out column by column.
    const BLOCK: usize = 16;
    let dim = reference.dim;
    let mut values = vec![vec![0.0; rows.len()]; dim];
    if dim == 0 {
        return values;
    }
    let mut block = vec![0.0; BLOCK * dim];
    for (first, chunk) in (0..).step_by(BLOCK).zip(rows.chunks(BLOCK)) {
        for (r, out) in chunk.iter().zip(block.chunks_exact_mut(dim)) {
            let seed = reference.row(r.seed);
            if r.duplicate {
                out.copy_from_slice(seed);
            } else {
                let neighbour = reference.row(r.neighbour);
                for ((o, &a), &b) in out.iter_mut().zip(seed).zip(neighbour) {
                    *o = a + r.step * (b - a);
                }
            }
        }
        for (d, column) in values.iter_mut().enumerate() {
            let column = &mut column[first..first + chunk.len()];
            for (v, row) in column.iter_mut().zip(block.chunks_exact(dim)) {
                *v = row[d];
            }
        }
    }
    values
}

/// Interpolated values in the column's own type: floats as computed,
/// integers rounded to the nearest. With `copied` (the seeds' own values),
/// duplicates keep the seed's exact value.
fn to_column_type(
    values: Float64Array,
    target: &DataType,
    copied: Option<&ArrayRef>,
    rows: &[Synthetic],
) -> Result<ArrayRef> {
    let values: Float64Array = if target.is_integer() {
        values.unary(f64::round)
    } else {
        values
    };
    let converted = cast(&values, target)?;
    if let Some(copied) = copied {
        let keep = BooleanArray::from(rows.iter().map(|r| r.duplicate).collect::<Vec<_>>());
        return Ok(datafusion::arrow::compute::kernels::zip::zip(
            &keep, copied, &converted,
        )?);
    }
    Ok(converted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::batch_labels;
    use datafusion::arrow::array::{Int32Array, Int64Array};
    use datafusion::arrow::datatypes::{Field, Schema};

    #[test]
    fn batches_made_on_threads_equal_batches_made_one_by_one() -> Result<()> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Float64, false),
            Field::new("n", DataType::Int32, false),
            Field::new("label", DataType::Int64, false),
        ]));
        let rows = 300;
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Float64Array::from_iter_values(
                    (0..rows).map(|i| f64::from(i) * 0.37 - 20.0),
                )),
                Arc::new(Int32Array::from_iter_values((0..rows).map(|i| i * 7 % 101))),
                Arc::new(Int64Array::from_iter_values(
                    (0..rows).map(|i| i64::from(i % 3 == 0)),
                )),
            ],
        )?;
        let stage = OversampleStage::try_new(
            Method::Smote,
            OversampleOptions::parse(Method::Smote, "label", "")?,
        )?;
        let columns = stage.columns(&schema)?;
        let mut classes = ClassIndex::default();
        let mut reservoirs = Reservoirs::new(1_000, columns.feature_indices.clone());
        reservoirs.hold(&batch, batch_labels(&batch, 2, &mut classes)?)?;
        let reference = reservoirs.reference()?;
        let mut rng = Rng::new(11);
        // Enough rows for threads, duplicates among them (integer copies).
        let synthetic: Vec<Synthetic> = (0..3 * PARALLEL_ROWS)
            .map(|i| {
                let seed = rng.below(reference.len());
                if i % 5 == 0 {
                    Synthetic::duplicate(seed)
                } else {
                    Synthetic::interpolated(seed, rng.below(reference.len()), rng.uniform())
                }
            })
            .collect();
        let batch_size = 1_000;
        let on_threads = synthetic_batches(&columns, &reference, &synthetic, batch_size)?;
        let one_by_one = synthetic
            .chunks(batch_size)
            .map(|rows| synthetic_batch(&columns, &reference, rows))
            .collect::<Result<Vec<_>>>()?;
        assert_eq!(on_threads.len(), synthetic.len().div_ceil(batch_size));
        assert_eq!(on_threads, one_by_one);
        Ok(())
    }
}
