//! The `drift_monitor` operator in a plan: [`DriftMonitorStage`] (schema,
//! planning), [`DriftMonitorExec`] (one partition, incremental, the input's
//! boundedness) and the per-stream [`Watcher`] that feeds [`Monitors`],
//! writes the two columns, publishes events and sets the metrics.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringBuilder};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, plan_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{
    LexRequirement, OrderingRequirements, PhysicalExpr, PhysicalSortRequirement,
};
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, PlanProperties,
};

use super::DriftState;
use super::monitor::{DriftMonitorOptions, MonitorState, Monitors, Signal};
use crate::batch_stream::{
    BatchProcessor, StreamServices, only_child, only_input_stream, processed_stream,
    single_stream_plan_methods, single_stream_properties,
};
use crate::class_label::{ClassValue, check_label_type, class_slots};
use crate::columns::{DRIFT_SIGNAL, DRIFT_STATE, synthetic_marker, with_columns};
use crate::features::{ClassIndex, column_list};
use crate::metrics::SharedMetrics;
use crate::runtime::{ControlSignal, DriftEvent, JobRuntime, OperatorSnapshot};
use crate::stage::StreamStage;

/// Operator kind and id prefix.
pub const KIND: &str = "drift_monitor";

/// The planning side of `drift_monitor`.
#[derive(Debug, Clone)]
pub struct DriftMonitorStage {
    options: DriftMonitorOptions,
}

/// Where the monitor's inputs are in its input schema.
#[derive(Debug, Clone)]
struct MonitorColumns {
    label_index: usize,
    prediction_index: Option<usize>,
    order_index: Option<usize>,
    synthetic_index: Option<usize>,
    output_schema: SchemaRef,
}

/// The kind of values a label holds, for comparing labels with predictions.
fn label_family(t: &DataType) -> &'static str {
    if t.is_integer() {
        "integer"
    } else if matches!(t, DataType::Boolean) {
        "boolean"
    } else {
        "string"
    }
}

impl DriftMonitorStage {
    pub fn try_new(options: DriftMonitorOptions) -> Result<Self> {
        options.validate()?;
        Ok(Self { options })
    }

    pub fn options(&self) -> &DriftMonitorOptions {
        &self.options
    }

    fn columns(&self, input: &SchemaRef) -> Result<MonitorColumns> {
        let names = || column_list(input);
        let label = &self.options.label_column;
        let Ok(label_index) = input.index_of(label) else {
            return plan_err!(
                "{KIND}: label column '{label}' not found; columns are: {}",
                names()
            );
        };
        let label_type = input.field(label_index).data_type();
        check_label_type(label, label_type)?;
        let prediction_index = match &self.options.prediction_column {
            None => None,
            Some(prediction) => {
                let Ok(i) = input.index_of(prediction) else {
                    return plan_err!(
                        "{KIND}: prediction column '{prediction}' not found; columns are: {}",
                        names()
                    );
                };
                let t = input.field(i).data_type();
                check_label_type(prediction, t)?;
                if label_family(t) != label_family(label_type) {
                    return plan_err!(
                        "{KIND}: prediction column '{prediction}' ({t}) does not hold the same \
                         kind of class as label column '{label}' ({label_type})"
                    );
                }
                Some(i)
            }
        };
        let order_index = match &self.options.order_by {
            None => None,
            Some(column) => match input.index_of(column) {
                Ok(i) => Some(i),
                Err(_) => {
                    return plan_err!(
                        "{KIND}: order_by column '{column}' not found; columns are: {}",
                        names()
                    );
                }
            },
        };
        for column in [DRIFT_STATE, DRIFT_SIGNAL] {
            if input.index_of(column).is_ok() {
                return plan_err!(
                    "{KIND}: the input already has a '{column}' column (applied twice?)"
                );
            }
        }
        let synthetic_index = synthetic_marker(input);
        Ok(MonitorColumns {
            label_index,
            prediction_index,
            order_index,
            synthetic_index,
            output_schema: with_columns(
                input,
                [
                    Field::new(DRIFT_STATE, DataType::Utf8, false),
                    Field::new(DRIFT_SIGNAL, DataType::Utf8, true),
                ],
            ),
        })
    }
}

impl StreamStage for DriftMonitorStage {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.columns(input)?.output_schema)
    }

    fn plan(
        &self,
        input: Arc<dyn ExecutionPlan>,
        runtime: &Arc<JobRuntime>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DriftMonitorExec::try_new(self.clone(), input, runtime)
    }
}

/// The execution node of `drift_monitor`.
#[derive(Debug)]
pub struct DriftMonitorExec {
    stage: DriftMonitorStage,
    columns: MonitorColumns,
    input: Arc<dyn ExecutionPlan>,
    operator_id: String,
    runtime: Arc<JobRuntime>,
    prometheus: Arc<SharedMetrics>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl DriftMonitorExec {
    pub fn try_new(
        stage: DriftMonitorStage,
        input: Arc<dyn ExecutionPlan>,
        runtime: &Arc<JobRuntime>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let columns = stage.columns(&input.schema())?;
        let operator_id = runtime.next_operator_id(KIND)?;
        let prometheus = runtime.metric_set::<SharedMetrics>()?;
        // Series known up front read 0 rather than nothing.
        if stage.options.prediction_column.is_some() {
            for signal in [Signal::Error, Signal::PerfSim] {
                init_series(&prometheus, &operator_id, signal, "all");
            }
        }
        for reason in ["null_label", "null_prediction"] {
            prometheus
                .bad_records
                .with_label_values(&[operator_id.as_str(), reason]);
        }
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

    fn properties_for(columns: &MonitorColumns, input: &dyn ExecutionPlan) -> Arc<PlanProperties> {
        single_stream_properties(&columns.output_schema, input, EmissionType::Incremental)
    }
}

/// The event counters (warning, drift) and state gauge of one detector.
fn init_series(metrics: &SharedMetrics, operator: &str, signal: Signal, class: &str) {
    for state in [DriftState::Warning, DriftState::Drift] {
        metrics.drift_events.with_label_values(&[
            operator,
            signal.detector(),
            signal.name(),
            class,
            state.name(),
        ]);
    }
    metrics
        .drift_state
        .with_label_values(&[operator, signal.detector(), signal.name(), class])
        .set(0.0);
}

impl DisplayAs for DriftMonitorExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.stage.options;
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "DriftMonitorExec: id={}, label={}, prediction={}, order_by={}",
                self.operator_id,
                o.label_column,
                o.prediction_column.as_deref().unwrap_or("none"),
                o.order_by.as_deref().unwrap_or("arrival")
            ),
            DisplayFormatType::TreeRender => write!(f, "label={}", o.label_column),
        }
    }
}

impl ExecutionPlan for DriftMonitorExec {
    fn name(&self) -> &str {
        "DriftMonitorExec"
    }

    // Detectors see the stream in order, as one.
    single_stream_plan_methods!(keeps_order: true);

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        let requirement = self.columns.order_index.and_then(|i| {
            let name = self.columns.output_schema.field(i).name();
            LexRequirement::new([PhysicalSortRequirement::new(
                Arc::new(Column::new(name, i)),
                Some(SortOptions::default()),
            )])
        });
        vec![requirement.map(OrderingRequirements::new)]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child("DriftMonitorExec", children)?;
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
        let input = only_input_stream("DriftMonitorExec", &self.input, partition, context)?;
        let builder = || MetricBuilder::new(&self.metrics);
        let watcher = Watcher {
            monitors: Monitors::new(self.stage.options.clone()),
            columns: self.columns.clone(),
            classes: ClassIndex::default(),
            labels: Vec::new(),
            operator_id: self.operator_id.clone(),
            runtime: Arc::clone(&self.runtime),
            prometheus: Arc::clone(&self.prometheus),
            baseline: BaselineMetrics::new(&self.metrics, partition),
            watched_rows: builder().counter("watched_rows", partition),
            warnings: builder().counter("warnings", partition),
            drifts: builder().counter("drifts", partition),
        };
        processed_stream(
            input,
            watcher,
            Arc::clone(&self.columns.output_schema),
            services,
        )
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The monitor over one stream.
struct Watcher {
    monitors: Monitors,
    columns: MonitorColumns,
    classes: ClassIndex,
    /// Metric label of each class slot.
    labels: Vec<String>,
    operator_id: String,
    runtime: Arc<JobRuntime>,
    prometheus: Arc<SharedMetrics>,
    baseline: BaselineMetrics,
    watched_rows: Count,
    warnings: Count,
    drifts: Count,
}

impl Watcher {
    /// Class slots of a class column, `None` for NULL.
    fn slots(&mut self, column: &Arc<dyn Array>) -> Result<Vec<Option<usize>>> {
        class_slots(column, |c| self.classes.slot(c))
    }

    /// Labels (and zeroed series) for classes seen for the first time.
    fn label_new_classes(&mut self) -> Result<()> {
        while self.labels.len() < self.classes.len() {
            let class = &self.classes.values()[self.labels.len()];
            let label = self.runtime.class_labels().label(class)?;
            let slot = self.labels.len();
            init_series(
                &self.prometheus,
                &self.operator_id,
                Signal::ClassPrior(slot),
                &label,
            );
            if self.monitors.watches_predictions() {
                init_series(
                    &self.prometheus,
                    &self.operator_id,
                    Signal::Recall(slot),
                    &label,
                );
            }
            self.labels.push(label);
        }
        Ok(())
    }

    fn class_label(&self, signal: Signal) -> &str {
        signal
            .class()
            .and_then(|c| self.labels.get(c))
            .map_or("all", String::as_str)
    }

    fn signal_text(&self, signal: Signal) -> String {
        match signal.class() {
            Some(c) => format!("{}:{}", signal.name(), self.classes.values()[c]),
            None => signal.name().to_string(),
        }
    }

    fn publish(&mut self) {
        let id = self.operator_id.as_str();
        for event in self.monitors.take_events() {
            let class = self.class_label(event.signal).to_string();
            self.prometheus
                .drift_events
                .with_label_values(&[
                    id,
                    event.signal.detector(),
                    event.signal.name(),
                    class.as_str(),
                    event.state.name(),
                ])
                .inc();
            match event.state {
                DriftState::Drift => self.drifts.add(1),
                _ => self.warnings.add(1),
            }
            let drift = DriftEvent {
                monitor: self.operator_id.clone(),
                detector: event.signal.detector().to_string(),
                signal: event.signal.name().to_string(),
                class: event
                    .signal
                    .class()
                    .map(|c| self.classes.values()[c].to_string()),
                state: event.state,
                row: event.row,
            };
            tracing::info!(operator = %self.operator_id, event = %drift, "drift monitor");
            self.runtime.control().publish(ControlSignal::Drift(drift));
        }
        for (signal, state) in self.monitors.detector_states(self.labels.len()) {
            let class = self.class_label(signal);
            self.prometheus
                .drift_state
                .with_label_values(&[id, signal.detector(), signal.name(), class])
                .set(match state {
                    DriftState::None => 0.0,
                    DriftState::Warning => 1.0,
                    DriftState::Drift => 2.0,
                });
        }
        if self.monitors.watches_predictions() {
            self.monitors
                .prequential
                .publish(&self.prometheus, id, &self.labels);
        }
    }
}

const WATCHER_KIND: &str = "drift_monitor";
const WATCHER_STATE_VERSION: u32 = 1;

/// A drift monitor's checkpoint state: its classes in slot order and its
/// detectors.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct WatcherState {
    classes: Vec<ClassValue>,
    monitors: MonitorState,
}

impl BatchProcessor for Watcher {
    fn snapshot(&self) -> Result<Option<OperatorSnapshot>> {
        let state = WatcherState {
            classes: self.classes.values().to_vec(),
            monitors: self.monitors.state(),
        };
        OperatorSnapshot::encode(
            &self.operator_id,
            WATCHER_KIND,
            WATCHER_STATE_VERSION,
            &state,
        )
        .map(Some)
    }

    fn restore(&mut self, snapshot: &OperatorSnapshot) -> Result<()> {
        let state: WatcherState =
            snapshot.decode(&self.operator_id, WATCHER_KIND, WATCHER_STATE_VERSION)?;
        for class in state.classes {
            self.classes.slot(class);
        }
        self.monitors.restore(state.monitors);
        self.label_new_classes()
    }

    fn process(
        &mut self,
        batch: RecordBatch,
        _signals: &[ControlSignal],
    ) -> Result<Vec<RecordBatch>> {
        let elapsed = self.baseline.elapsed_compute().clone();
        let _timer = elapsed.timer();
        let rows = batch.num_rows();
        let truth = self.slots(batch.column(self.columns.label_index))?;
        let predictions = match self.columns.prediction_index {
            Some(i) => Some(self.slots(batch.column(i))?),
            None => None,
        };
        self.label_new_classes()?;
        let synthetic = self
            .columns
            .synthetic_index
            .map(|i| batch.column(i).as_boolean().clone());
        self.monitors.begin_batch();
        let mut states = StringBuilder::with_capacity(rows, rows * 4);
        let mut signals = StringBuilder::new();
        let (mut null_labels, mut null_predictions) = (0, 0);
        for row in 0..rows {
            let is_synthetic = synthetic
                .as_ref()
                .is_some_and(|marks| marks.is_valid(row) && marks.value(row));
            let prediction = predictions.as_ref().map(|p| p[row]);
            let outcome = match (is_synthetic, truth[row], prediction) {
                (true, _, _) => None,
                (false, None, _) => {
                    null_labels += 1;
                    None
                }
                (false, Some(_), Some(None)) => {
                    null_predictions += 1;
                    None
                }
                (false, Some(t), p) => Some(self.monitors.observe(t, p.flatten())),
            };
            match outcome {
                Some(outcome) => {
                    states.append_value(outcome.state.name());
                    if outcome.signals.is_empty() {
                        signals.append_null();
                    } else {
                        let text = outcome
                            .signals
                            .iter()
                            .map(|&s| self.signal_text(s))
                            .collect::<Vec<_>>()
                            .join(",");
                        signals.append_value(text);
                    }
                }
                None => {
                    states.append_value(DriftState::None.name());
                    signals.append_null();
                }
            }
        }
        let watched = rows
            - null_labels
            - null_predictions
            - synthetic.as_ref().map_or(0, |m| m.true_count());
        self.watched_rows.add(watched);
        let id = self.operator_id.as_str();
        self.prometheus
            .bad_records
            .with_label_values(&[id, "null_label"])
            .inc_by(null_labels as u64);
        self.prometheus
            .bad_records
            .with_label_values(&[id, "null_prediction"])
            .inc_by(null_predictions as u64);
        self.publish();
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(states.finish()));
        columns.push(Arc::new(signals.finish()));
        let out = RecordBatch::try_new(Arc::clone(&self.columns.output_schema), columns)?;
        self.baseline.record_output(out.num_rows());
        Ok(vec![out])
    }

    fn finish(&mut self) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }
}
