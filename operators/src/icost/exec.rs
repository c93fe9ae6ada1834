//! The execution node of `icost` and its per-stream state.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Float64Array, RecordBatch, StringArray};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, exec_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, PlanProperties,
};
use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};

use super::probe_tree::{ProbeTree, TreeParams};
use super::weights::{
    crossfit_shares, leaf_weight, neighbour_weight, table_neighbourhoods, weighed_ratios,
};
use super::window::SlidingWindow;
use super::{Category, IcostColumns, IcostMethod, IcostOptions, IcostStage};
use crate::batch_stream::{
    BatchProcessor, StreamServices, merges_partitions, only_child, only_input_stream,
    processed_stream, single_stream_plan_methods, single_stream_properties,
};
use crate::class_label::ClassValue;
use crate::complexity::{ClassedRows, canonical_order};
use crate::features::{BatchFeatures, ClassIndex, batch_features};
use crate::knn::{Exclude, PointSet, search};
use crate::metrics::{ClassLabels, MetricSet};
use crate::rng::Rng;
use crate::runtime::{ControlSignal, JobRuntime, OperatorSnapshot};

/// Fewest rows of a streamed batch to weigh for which the window is indexed
/// by a tree (where the dimension allows one) rather than scanned per query.
const TREE_QUERIES: usize = 64;

/// Prometheus families of every `icost` operator in a runtime.
#[derive(Debug)]
pub struct IcostMetrics {
    categories: IntCounterVec,
    overlap: GaugeVec,
}

impl MetricSet for IcostMetrics {
    const NAME: &'static str = "icost";

    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let categories = IntCounterVec::new(
            Opts::new(
                "complexity_rows_total",
                "Weighed minority rows by complexity category (pure, safe, border, outlier).",
            )
            .namespace("equipoise"),
            &["operator", "class", "category"],
        )?;
        let overlap = GaugeVec::new(
            Opts::new(
                "minority_overlap",
                "Mean k-disagreeing-neighbours share of the weighed minority rows among the last \
                 `window` input rows (class overlap; above 0.20 learning suffers).",
            )
            .namespace("equipoise"),
            &["operator"],
        )?;
        registry.register(Box::new(categories.clone()))?;
        registry.register(Box::new(overlap.clone()))?;
        Ok(Self {
            categories,
            overlap,
        })
    }
}

/// Physical node of the `icost` operator.
#[derive(Debug)]
pub struct IcostExec {
    stage: IcostStage,
    columns: IcostColumns,
    input: Arc<dyn ExecutionPlan>,
    operator_id: String,
    runtime: Arc<JobRuntime>,
    prometheus: Arc<IcostMetrics>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl IcostExec {
    pub fn try_new(
        stage: IcostStage,
        input: Arc<dyn ExecutionPlan>,
        runtime: &Arc<JobRuntime>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let columns = stage.columns(&input.schema())?;
        let table = Self::whole_table(stage.options(), input.as_ref())?;
        Ok(Arc::new(Self {
            properties: Self::properties_for(&columns, input.as_ref(), table),
            columns,
            input,
            operator_id: runtime.next_operator_id("icost")?,
            runtime: Arc::clone(runtime),
            prometheus: runtime.metric_set::<IcostMetrics>()?,
            metrics: ExecutionPlanMetricsSet::new(),
            stage,
        }))
    }

    /// Whether the whole-table semantics apply (else streaming).
    fn whole_table(options: &IcostOptions, input: &dyn ExecutionPlan) -> Result<bool> {
        options.mode.whole_table("mode", "icost", input)
    }

    fn properties_for(
        columns: &IcostColumns,
        input: &dyn ExecutionPlan,
        table: bool,
    ) -> Arc<PlanProperties> {
        // A table's weights need every row first.
        let emission = if table {
            EmissionType::Final
        } else {
            EmissionType::Incremental
        };
        single_stream_properties(&columns.output_schema, input, emission)
    }
}

impl DisplayAs for IcostExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options = self.stage.options();
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "IcostExec: method={}, id={}, label={}, k={}, features={}",
                options.method.name(),
                self.operator_id,
                options.label_column,
                options.k,
                self.columns.feature_indices.len()
            ),
            DisplayFormatType::TreeRender => write!(f, "method={}", options.method.name()),
        }
    }
}

impl ExecutionPlan for IcostExec {
    fn name(&self) -> &str {
        "IcostExec"
    }

    // The window and class weights are global to the operator.
    single_stream_plan_methods!(keeps_order: true);

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child("IcostExec", children)?;
        let columns = self.stage.columns(&input.schema())?;
        let table = Self::whole_table(self.stage.options(), input.as_ref())?;
        Ok(Arc::new(Self {
            properties: Self::properties_for(&columns, input.as_ref(), table),
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
        let input = only_input_stream("IcostExec", &self.input, partition, Arc::clone(&context))?;
        let table = Self::whole_table(self.stage.options(), self.input.as_ref())?;
        let counters = Counters {
            baseline: BaselineMetrics::new(&self.metrics, partition),
            input_rows: MetricBuilder::new(&self.metrics).counter("input_rows", partition),
            weighed_rows: MetricBuilder::new(&self.metrics).counter("weighed_rows", partition),
            class_level_rows: MetricBuilder::new(&self.metrics)
                .counter("class_level_rows", partition),
        };
        let weigher = Weigher::new(self, table, counters);
        processed_stream(
            input,
            weigher,
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
    /// Rows weighed from a neighbourhood or a probe tree.
    weighed_rows: Count,
    /// Weighed rows that got the class-level weight (no neighbourhood yet,
    /// incomplete features, or method=cs).
    class_level_rows: Count,
}

/// Weight and category of each row of a batch.
#[derive(Debug, Default)]
struct BatchWeights {
    weights: Vec<Option<f64>>,
    categories: Vec<Option<Category>>,
}

impl BatchWeights {
    fn mark_synthetic(&mut self, rows: &[usize]) {
        for &row in rows {
            self.weights[row] = Some(1.0);
            self.categories[row] = None;
        }
    }
}

/// A table's batch, its features and its synthetic rows.
type Buffered = (RecordBatch, BatchFeatures, Vec<usize>);

/// The state of one `icost` operator over one stream.
struct Weigher {
    options: IcostOptions,
    columns: IcostColumns,
    table: bool,
    operator_id: String,
    prometheus: Arc<IcostMetrics>,
    class_labels: Arc<ClassLabels>,
    counters: Counters,
    classes: ClassIndex,
    /// Classes whose Prometheus series exist.
    published_classes: usize,
    // Tables: every batch, then weights at the end.
    buffered: Vec<Buffered>,
    buffered_rows: usize,
    arrival_order_is_stable: bool,
    rng: Rng,
    // Streams.
    window: SlidingWindow,
    decayed: Vec<f64>,
    decay_per_row: f64,
    arrived: u64,
    /// (arrival, kDN) of recent weighed rows, for the overlap gauge.
    overlap: VecDeque<(u64, f64)>,
    overlap_sum: f64,
}

const WEIGHER_KIND: &str = "icost";
const WEIGHER_STATE_VERSION: u32 = 1;

/// iCost's checkpoint state on a stream: its classes in slot order, the
/// reference window, the decayed class masses and its random stream.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct WeigherState {
    classes: Vec<ClassValue>,
    window: SlidingWindow,
    decayed: Vec<f64>,
    arrived: u64,
    rng: Rng,
    overlap: VecDeque<(u64, f64)>,
    overlap_sum: f64,
}

impl BatchProcessor for Weigher {
    fn snapshot(&self) -> Result<Option<OperatorSnapshot>> {
        if self.table {
            // Every row waits for the end of input: a checkpoint would
            // commit offsets of rows not yet emitted.
            return exec_err!(
                "{}: iCost in batch mode holds every row until the end of input and cannot be \
                 checkpointed; use mode=stream",
                self.operator_id
            );
        }
        let state = WeigherState {
            classes: self.classes.values().to_vec(),
            window: self.window.clone(),
            decayed: self.decayed.clone(),
            arrived: self.arrived,
            rng: self.rng.clone(),
            overlap: self.overlap.clone(),
            overlap_sum: self.overlap_sum,
        };
        OperatorSnapshot::encode(
            &self.operator_id,
            WEIGHER_KIND,
            WEIGHER_STATE_VERSION,
            &state,
        )
        .map(Some)
    }

    fn restore(&mut self, snapshot: &OperatorSnapshot) -> Result<()> {
        let state: WeigherState =
            snapshot.decode(&self.operator_id, WEIGHER_KIND, WEIGHER_STATE_VERSION)?;
        for class in state.classes {
            self.classes.slot(class);
        }
        self.window = state.window;
        self.decayed = state.decayed;
        self.arrived = state.arrived;
        self.rng = state.rng;
        self.overlap = state.overlap;
        self.overlap_sum = state.overlap_sum;
        Ok(())
    }

    fn memory_size(&self) -> usize {
        let buffered: usize = self
            .buffered
            .iter()
            .map(|(batch, features, synthetic)| {
                batch.get_array_memory_size()
                    + features.values.capacity() * size_of::<f64>()
                    + synthetic.capacity() * size_of::<usize>()
            })
            .sum();
        self.window.memory_size() + buffered
    }

    fn process(
        &mut self,
        batch: RecordBatch,
        signals: &[ControlSignal],
    ) -> Result<Vec<RecordBatch>> {
        self.process_batch(batch, signals)
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        self.finish_input()
    }
}

impl Weigher {
    fn new(exec: &IcostExec, table: bool, counters: Counters) -> Self {
        let options = exec.stage.options().clone();
        let window = window_of(&options, table);
        Self {
            window: SlidingWindow::new(window, exec.columns.feature_indices.len()),
            decay_per_row: 0.5f64.powf(1.0 / options.half_life_rows),
            rng: Rng::new(options.seed),
            options,
            columns: exec.columns.clone(),
            table,
            operator_id: exec.operator_id.clone(),
            prometheus: Arc::clone(&exec.prometheus),
            class_labels: Arc::clone(exec.runtime.class_labels()),
            counters,
            classes: ClassIndex::default(),
            published_classes: 0,
            buffered: Vec::new(),
            buffered_rows: 0,
            arrival_order_is_stable: !merges_partitions(exec.input.as_ref()),
            decayed: Vec::new(),
            arrived: 0,
            overlap: VecDeque::new(),
            overlap_sum: 0.0,
        }
    }

    fn window_rows(&self) -> usize {
        window_of(&self.options, self.table)
    }

    fn handle(&mut self, signal: &ControlSignal) {
        if signal.resets("icost", &self.operator_id) && !self.table {
            let keep = (self.window_rows() / 10).max(self.options.k + 1);
            let reason = signal.reason();
            tracing::info!(operator = %self.operator_id, %reason, keep, "icost window shrunk");
            self.window.shrink_to(keep);
            self.decayed.iter_mut().for_each(|w| *w *= 0.1);
            self.overlap.clear();
            self.overlap_sum = 0.0;
        }
    }

    /// The batch's features, with synthetic rows masked out (listed apart).
    fn read(&mut self, batch: &RecordBatch) -> Result<(BatchFeatures, Vec<usize>)> {
        let mut features = batch_features(
            batch,
            self.columns.label_index,
            &self.columns.feature_indices,
            &mut self.classes,
        )?;
        self.decayed.resize(self.classes.len(), 0.0);
        let mut synthetic = Vec::new();
        if let Some(i) = self.columns.synthetic_index {
            let marks = batch.column(i).as_boolean();
            for row in 0..batch.num_rows() {
                if marks.is_valid(row) && marks.value(row) {
                    features.labelled[row] = None;
                    features.slots[row] = None;
                    synthetic.push(row);
                }
            }
        }
        Ok((features, synthetic))
    }

    fn process_batch(
        &mut self,
        batch: RecordBatch,
        signals: &[ControlSignal],
    ) -> Result<Vec<RecordBatch>> {
        let elapsed = self.counters.baseline.elapsed_compute().clone();
        let _timer = elapsed.timer();
        for signal in signals {
            self.handle(signal);
        }
        self.counters.input_rows.add(batch.num_rows());
        let (features, synthetic) = self.read(&batch)?;
        if self.table {
            self.buffered_rows += features.labelled.iter().flatten().count();
            if self.buffered_rows > self.window_rows() {
                return exec_err!(
                    "icost: the table has more than window={} labelled rows; raise window or \
                     weigh it as a stream with mode=stream",
                    self.window_rows()
                );
            }
            self.buffered.push((batch, features, synthetic));
            return Ok(Vec::new());
        }
        let mut weights = self.weigh_stream_batch(&features)?;
        weights.mark_synthetic(&synthetic);
        let out = self.with_weight_columns(&batch, &weights)?;
        self.record_output(std::slice::from_ref(&out));
        Ok(vec![out])
    }

    fn finish_input(&mut self) -> Result<Vec<RecordBatch>> {
        if !self.table || self.buffered.is_empty() {
            return Ok(Vec::new());
        }
        let elapsed = self.counters.baseline.elapsed_compute().clone();
        let _timer = elapsed.timer();
        let buffered = std::mem::take(&mut self.buffered);
        let mut weights = self.weigh_table(&buffered)?;
        let mut out = Vec::with_capacity(buffered.len());
        for ((batch, _, synthetic), w) in buffered.iter().zip(&mut weights) {
            w.mark_synthetic(synthetic);
            out.push(self.with_weight_columns(batch, w)?);
        }
        self.record_output(&out);
        Ok(out)
    }

    fn record_output(&self, batches: &[RecordBatch]) {
        for batch in batches {
            self.counters.baseline.record_output(batch.num_rows());
            self.counters.baseline.output_batches().add(1);
        }
    }

    /// Whole-table weights: every row weighed against every other.
    fn weigh_table(&mut self, buffered: &[Buffered]) -> Result<Vec<BatchWeights>> {
        let n_classes = self.classes.len();
        let mut totals = vec![0u64; n_classes];
        for (_, f, _) in buffered {
            for slot in f.labelled.iter().flatten() {
                totals[*slot] += 1;
            }
        }
        // Exact integer counts: the ratio is computed as the reference does.
        let counts: Vec<f64> = totals.iter().map(|&t| t as f64).collect();
        let ratios = weighed_ratios(
            &counts,
            self.classes.values(),
            self.options.minority.as_deref(),
        );
        let mut out: Vec<BatchWeights> = buffered
            .iter()
            .map(|(_, f, _)| BatchWeights {
                weights: f
                    .labelled
                    .iter()
                    .map(|slot| slot.map(|s| ratios[s].unwrap_or(1.0)))
                    .collect(),
                categories: vec![None; f.labelled.len()],
            })
            .collect();
        let weighed_total: usize = buffered
            .iter()
            .flat_map(|(_, f, _)| f.labelled.iter().flatten())
            .filter(|&&s| ratios[s].is_some())
            .count();
        if self.options.method == IcostMethod::Cs || weighed_total == 0 {
            self.counters.class_level_rows.add(weighed_total);
            return Ok(out);
        }
        // The rows with a neighbourhood, in search order.
        let dim = self.columns.feature_indices.len();
        let mut rows = ClassedRows {
            dim,
            ..Default::default()
        };
        let mut origin: Vec<(usize, usize)> = Vec::new();
        for (b, (_, f, _)) in buffered.iter().enumerate() {
            for (r, slot) in f.slots.iter().enumerate() {
                if let Some(s) = slot {
                    rows.features
                        .extend_from_slice(&f.values[r * dim..(r + 1) * dim]);
                    rows.class_of.push(*s as u32);
                    origin.push((b, r));
                }
            }
        }
        if !self.arrival_order_is_stable {
            let (rows_c, origin_c) = self.canonical(&rows, &origin);
            rows = rows_c;
            origin = origin_c;
        }
        let queries: Vec<usize> = (0..rows.len())
            .filter(|&i| ratios[rows.class_of[i] as usize].is_some())
            .collect();
        let mut weighed = 0;
        match self.options.method {
            IcostMethod::Neighbor => {
                let Some(found) = table_neighbourhoods(&rows, &queries, self.options.k) else {
                    return exec_err!(
                        "icost: method=neighbor needs more than k={} rows with a label and \
                         complete features; the table has {}",
                        self.options.k,
                        rows.len()
                    );
                };
                for (&q, (category, _)) in queries.iter().zip(found) {
                    let slot = rows.class_of[q] as usize;
                    let ratio = ratios[slot].unwrap_or(1.0);
                    let (b, r) = origin[q];
                    out[b].weights[r] =
                        Some(neighbour_weight(&self.options.costs, category, ratio));
                    out[b].categories[r] = Some(category);
                    self.count_category(slot, category)?;
                    weighed += 1;
                }
            }
            IcostMethod::Gini => {
                for (slot, ratio) in ratios.iter().enumerate() {
                    let Some(ratio) = *ratio else { continue };
                    let Some(shares) = crossfit_shares(
                        &rows,
                        slot as u32,
                        TreeParams::FOLDS,
                        &TreeParams::default(),
                        &mut self.rng,
                    ) else {
                        return exec_err!(
                            "icost: method=gini needs at least two rows with complete features in \
                             class {} and in the rest",
                            self.classes.values()[slot]
                        );
                    };
                    for (q, share) in shares {
                        let (weight, category) = leaf_weight(&self.options.costs, share, ratio);
                        let (b, r) = origin[q];
                        out[b].weights[r] = Some(weight);
                        out[b].categories[r] = Some(category);
                        self.count_category(slot, category)?;
                        weighed += 1;
                    }
                }
            }
            IcostMethod::Cs => {}
        }
        self.counters.weighed_rows.add(weighed);
        self.counters.class_level_rows.add(weighed_total - weighed);
        Ok(out)
    }

    /// `rows` (and where each came from) in canonical order.
    fn canonical(
        &self,
        rows: &ClassedRows,
        origin: &[(usize, usize)],
    ) -> (ClassedRows, Vec<(usize, usize)>) {
        let rank_of = self.classes.ranks();
        let rank: Vec<u32> = rows.class_of.iter().map(|&s| rank_of[s as usize]).collect();
        let order = canonical_order(&rows.features, rows.dim, &rank);
        let mut sorted = ClassedRows {
            dim: rows.dim,
            features: Vec::with_capacity(rows.features.len()),
            class_of: Vec::with_capacity(rows.len()),
        };
        let mut sorted_origin = Vec::with_capacity(origin.len());
        for &i in &order {
            sorted.features.extend_from_slice(rows.row(i));
            sorted.class_of.push(rows.class_of[i]);
            sorted_origin.push(origin[i]);
        }
        (sorted, sorted_origin)
    }

    /// Streaming weights: against the window before this batch, with the
    /// class weights decayed row by row up to each row.
    fn weigh_stream_batch(&mut self, features: &BatchFeatures) -> Result<BatchWeights> {
        let n = features.labelled.len();
        let dim = features.dim;
        let k = self.options.k;
        let mut out = BatchWeights {
            weights: vec![None; n],
            categories: vec![None; n],
        };
        let usable = match self.options.method {
            IcostMethod::Neighbor => self.window.len() >= k,
            IcostMethod::Gini => self.window.len() >= 2 * TreeParams::default().min_leaf,
            IcostMethod::Cs => false,
        };
        let mut queries: Vec<usize> = Vec::new();
        let mut query_ratio: Vec<f64> = Vec::new();
        let mut class_level = 0;
        for row in 0..n {
            let Some(slot) = features.labelled[row] else {
                continue;
            };
            self.decayed
                .iter_mut()
                .for_each(|w| *w *= self.decay_per_row);
            self.decayed[slot] += 1.0;
            let ratio = weighed_ratios(
                &self.decayed,
                self.classes.values(),
                self.options.minority.as_deref(),
            )[slot];
            match ratio {
                None => out.weights[row] = Some(1.0),
                Some(ratio) => {
                    out.weights[row] = Some(ratio);
                    if usable && features.slots[row].is_some() {
                        queries.push(row);
                        query_ratio.push(ratio);
                    } else {
                        class_level += 1;
                    }
                }
            }
        }
        self.counters.class_level_rows.add(class_level);
        self.counters.weighed_rows.add(queries.len());
        match self.options.method {
            IcostMethod::Neighbor if !queries.is_empty() => {
                // Searched in place: the window in arrival order, no copy. A
                // batch brings few rows to weigh (the rarer classes' only), so
                // a brute-force pass over the window costs less than building
                // a tree for them; a tree pays from `TREE_QUERIES` queries.
                let positions = self.window.arrival_positions();
                let set = if queries.len() >= TREE_QUERIES {
                    PointSet::from_subset(self.window.rows(), dim, &positions)
                } else {
                    PointSet::tiles_from_subset(self.window.rows(), dim, &positions)
                };
                let mut points = Vec::with_capacity(queries.len() * dim);
                for &row in &queries {
                    points.extend_from_slice(&features.values[row * dim..(row + 1) * dim]);
                }
                let found = search(&set, &points, k, Exclude::Nothing);
                let k_used = found.k();
                for (i, &row) in queries.iter().enumerate() {
                    let own = features.labelled[row].unwrap_or(0) as u32;
                    let m = found
                        .indices(i)
                        .iter()
                        .filter(|&&j| self.window.class_at(positions[j as usize]) != own)
                        .count();
                    let category = Category::of_neighbours(m, k_used);
                    out.weights[row] = Some(neighbour_weight(
                        &self.options.costs,
                        category,
                        query_ratio[i],
                    ));
                    out.categories[row] = Some(category);
                    self.count_category(own as usize, category)?;
                    let arrival = self.arrived + row as u64;
                    let kdn = m as f64 / k_used as f64;
                    self.overlap.push_back((arrival, kdn));
                    self.overlap_sum += kdn;
                }
            }
            IcostMethod::Gini if !queries.is_empty() => {
                let reference = self.window.snapshot();
                let all: Vec<usize> = (0..reference.len()).collect();
                let mut trees: Vec<Option<ProbeTree>> = vec![None; self.classes.len()];
                for (i, &row) in queries.iter().enumerate() {
                    let own = features.labelled[row].unwrap_or(0);
                    let tree = trees[own].get_or_insert_with(|| {
                        let positive: Vec<bool> = reference
                            .class_of
                            .iter()
                            .map(|&c| c as usize == own)
                            .collect();
                        ProbeTree::fit(
                            &reference.features,
                            dim,
                            &all,
                            &positive,
                            &TreeParams::default(),
                        )
                    });
                    let share = tree.leaf_share(&features.values[row * dim..(row + 1) * dim]);
                    let (weight, category) =
                        leaf_weight(&self.options.costs, share, query_ratio[i]);
                    out.weights[row] = Some(weight);
                    out.categories[row] = Some(category);
                    self.count_category(own, category)?;
                }
            }
            _ => {}
        }
        for row in 0..n {
            if let Some(slot) = features.slots[row] {
                self.window
                    .push(&features.values[row * dim..(row + 1) * dim], slot as u32);
            }
        }
        self.arrived += n as u64;
        self.publish_overlap();
        Ok(out)
    }

    fn publish_overlap(&mut self) {
        let horizon = self.arrived.saturating_sub(self.window_rows() as u64);
        while let Some(&(arrival, kdn)) = self.overlap.front() {
            if arrival >= horizon {
                break;
            }
            self.overlap_sum -= kdn;
            self.overlap.pop_front();
        }
        if !self.overlap.is_empty() {
            let mean = (self.overlap_sum / self.overlap.len() as f64).clamp(0.0, 1.0);
            self.prometheus
                .overlap
                .with_label_values(&[self.operator_id.as_str()])
                .set(mean);
        }
    }

    fn count_category(&mut self, slot: usize, category: Category) -> Result<()> {
        // Every class's four series exist once it is seen, reading zero.
        while self.published_classes < self.classes.len() {
            let class = self
                .class_labels
                .label(&self.classes.values()[self.published_classes])?;
            for c in Category::ALL {
                self.prometheus
                    .categories
                    .with_label_values(&[self.operator_id.as_str(), class.as_str(), c.name()])
                    .inc_by(0);
            }
            self.published_classes += 1;
        }
        let class = self.class_labels.label(&self.classes.values()[slot])?;
        self.prometheus
            .categories
            .with_label_values(&[self.operator_id.as_str(), class.as_str(), category.name()])
            .inc();
        Ok(())
    }

    fn with_weight_columns(
        &self,
        batch: &RecordBatch,
        weights: &BatchWeights,
    ) -> Result<RecordBatch> {
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(Float64Array::from(weights.weights.clone())));
        columns.push(Arc::new(
            weights
                .categories
                .iter()
                .map(|c| c.map(Category::name))
                .collect::<StringArray>(),
        ));
        Ok(RecordBatch::try_new(
            Arc::clone(&self.columns.output_schema),
            columns,
        )?)
    }
}

/// Labelled rows the reference window holds: the option, or the default
/// for the semantics.
fn window_of(options: &IcostOptions, table: bool) -> usize {
    options.window.unwrap_or(if table {
        IcostOptions::TABLE_WINDOW
    } else {
        IcostOptions::STREAM_WINDOW
    })
}
