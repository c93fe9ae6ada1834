//! The streaming job behind `equipoise run`.
//!
//! A job is a source registered as table `telemetry`, a SQL query over it
//! (the projection), and the pipeline stages after it, executed as one
//! DataFusion stream that is pulled batch by batch; nothing is collected. The
//! embedded default job reads the telemetry generator
//! ([`equipoise_connectors::generator`]).
//!
//! Stopping: when `shutdown` resolves, the job publishes
//! [`ControlSignal::Stop`]; sources end their streams after the batch in
//! flight, everything downstream drains, and [`run_job`] returns the summary.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{Result, exec_datafusion_err};
use datafusion::prelude::SessionConfig;
use equipoise_connectors::{GeneratorConfig, GeneratorTable};
use equipoise_operators::class_label::{ClassValue, for_each_class};
use equipoise_operators::columns::{IS_SYNTHETIC, PREDICTION};
use equipoise_operators::drift::DriftState;
use equipoise_operators::features::FeatureSelection;
use equipoise_operators::stage::Mode;
use equipoise_operators::{
    ClassMonitorOptions, ControlSignal, DataFrameStageExt, DetectorOptions, DriftEvent,
    DriftMonitorOptions, IcostOptions, JobRuntime, JobSnapshot, Method, OversampleOptions,
};
use futures::StreamExt;

use crate::progress::ProgressReporter;

/// The name under which a job's source is registered.
pub const SOURCE_TABLE: &str = "telemetry";

/// What a job runs.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub source: GeneratorConfig,
    /// SQL over [`SOURCE_TABLE`]; its result feeds the stages.
    pub query: String,
    pub label_column: String,
    pub half_life_rows: f64,
    /// The oversampling stage after the class monitor, if any.
    pub oversampler: Option<(Method, OversampleOptions)>,
    /// The iCost stage after the oversampler, if any.
    pub icost: Option<IcostOptions>,
    /// The detector trained after iCost, if any.
    pub detector: Option<DetectorOptions>,
    /// The drift monitor after the detector, if any (it watches the
    /// detector's predictions when there is a detector).
    pub drift_monitor: Option<DriftMonitorOptions>,
}

impl JobSpec {
    /// The embedded default: generated telemetry, a projection that adds a
    /// derived feature, the class monitor (which sees the stream as it
    /// arrives), QC-SMOTE over the sensor readings (`seq` and `machine_id`
    /// are identifiers, copied from the seed, not features), then iCost
    /// weights on the same readings (synthetic rows weigh 1.0; see
    /// [`equipoise_operators::icost`]), then an online logistic regression
    /// trained test-then-train on the balanced, weighted stream
    /// ([`equipoise_operators::detector`]), then the drift monitor on its
    /// predictions. The monitor's drifts shrink the oversampler's and
    /// iCost's windows and retrain the detector.
    pub fn embedded_default(source: GeneratorConfig) -> Self {
        Self {
            source,
            query: format!(
                "SELECT seq, event_time, machine_id, temperature_c, vibration_mm_s, \
                 pressure_bar, rotation_rpm, current_a, \
                 current_a / pressure_bar AS current_per_bar, label \
                 FROM {SOURCE_TABLE}"
            ),
            label_column: "label".to_string(),
            half_life_rows: ClassMonitorOptions::DEFAULT_HALF_LIFE_ROWS,
            oversampler: Some((
                Method::QcSmote,
                OversampleOptions {
                    exclude: vec!["seq".to_string(), "machine_id".to_string()],
                    // A job bounded by --rows is still a stream.
                    mode: Mode::Stream,
                    ..OversampleOptions::new("label")
                },
            )),
            icost: Some(IcostOptions {
                selection: FeatureSelection {
                    features: None,
                    exclude: vec!["seq".to_string(), "machine_id".to_string()],
                },
                semantics: Mode::Stream,
                ..IcostOptions::new("label")
            }),
            detector: Some(DetectorOptions {
                selection: FeatureSelection {
                    features: None,
                    exclude: vec!["seq".to_string(), "machine_id".to_string()],
                },
                ..DetectorOptions::new("label")
            }),
            drift_monitor: Some(DriftMonitorOptions::new("label").with_prediction(PREDICTION)),
        }
    }

    /// The rows where the source is documented to change: `(row, what)`.
    pub fn change_points(&self) -> Vec<(u64, &'static str)> {
        vec![
            (self.source.prior_shift_at, "class mix"),
            (self.source.concept_shift_at, "fault signature"),
        ]
    }
}

/// Rows per class as the job's sink received them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassTally {
    classes: Vec<(ClassValue, u64)>,
    unlabelled: u64,
}

impl ClassTally {
    /// Count the rows of `batch` for which `select(row)` holds.
    fn add(
        &mut self,
        batch: &RecordBatch,
        label_index: usize,
        select: impl Fn(usize) -> bool,
    ) -> Result<()> {
        let mut unlabelled = 0;
        let classes = &mut self.classes;
        for_each_class(batch.column(label_index), |row, class| {
            if !select(row) {
                return;
            }
            match class {
                None => unlabelled += 1,
                Some(class) => match classes.iter_mut().find(|(c, _)| *c == class) {
                    Some((_, n)) => *n += 1,
                    None => classes.push((class, 1)),
                },
            }
        })?;
        self.unlabelled += unlabelled;
        Ok(())
    }

    /// Synthetic rows per class as the oversamplers of `registry` counted
    /// them (`equipoise_synthetic_rows_total`, summed over kinds).
    fn synthetic_from(registry: &prometheus::Registry) -> Self {
        let mut tally = Self::default();
        for family in registry.gather() {
            if family.name() != "equipoise_synthetic_rows_total" {
                continue;
            }
            for metric in family.get_metric() {
                let Some(class) = metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "class")
                    .map(|l| l.value().to_string())
                else {
                    continue;
                };
                let class = class
                    .parse::<i64>()
                    .map_or(ClassValue::Str(class), ClassValue::Int);
                let n = metric.get_counter().get_value() as u64;
                match tally.classes.iter_mut().find(|(c, _)| *c == class) {
                    Some((_, total)) => *total += n,
                    None => tally.classes.push((class, n)),
                }
            }
        }
        tally
    }

    /// Rows of every class plus unlabelled rows.
    pub fn rows(&self) -> u64 {
        self.classes.iter().map(|(_, n)| n).sum::<u64>() + self.unlabelled
    }

    /// Rows per class, ordered by class.
    pub fn per_class(&self) -> Vec<(ClassValue, u64)> {
        let mut classes = self.classes.clone();
        classes.sort();
        classes
    }

    pub fn unlabelled(&self) -> u64 {
        self.unlabelled
    }

    /// Share of the smallest class among labelled rows.
    pub fn minority_share(&self) -> Option<f64> {
        let labelled: u64 = self.classes.iter().map(|(_, n)| n).sum();
        let smallest = self.classes.iter().map(|(_, n)| *n).min()?;
        (labelled > 0).then(|| smallest as f64 / labelled as f64)
    }
}

/// What a finished job reports.
#[derive(Debug, Clone)]
pub struct JobSummary {
    /// Rows of the source, as the sink received them.
    pub tally: ClassTally,
    /// Synthetic rows the oversampler added, by class.
    pub synthetic: ClassTally,
    /// Drifts the job's monitors signalled, in order.
    pub drifts: Vec<DriftEvent>,
    /// Warning zones entered.
    pub warnings: u64,
    /// The source's documented change points.
    pub change_points: Vec<(u64, &'static str)>,
    /// Prequential quality of the detector's predictions between them.
    pub quality: SegmentQuality,
    /// Version of the detector's model at the end, if the job has one.
    pub model_version: Option<i64>,
    pub batches: u64,
    pub elapsed: Duration,
    /// True when the job ended on a stop request rather than at the end of
    /// its source.
    pub stopped: bool,
    /// State of every stateful operator when the job ended, taken after the
    /// stream drained: resuming from it continues exactly where this job
    /// stopped.
    pub final_state: JobSnapshot,
}

impl fmt::Display for JobSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rows = self.tally.rows();
        writeln!(
            f,
            "{} after {rows} rows in {} batches",
            if self.stopped { "stopped" } else { "finished" },
            self.batches
        )?;
        for (class, n) in self.tally.per_class() {
            writeln!(f, "  class {class}: {n} rows")?;
        }
        for (class, n) in self.synthetic.per_class() {
            writeln!(f, "  class {class}: {n} synthetic rows")?;
        }
        if self.tally.unlabelled() > 0 {
            writeln!(f, "  unlabelled: {} rows", self.tally.unlabelled())?;
        }
        for (row, what) in &self.change_points {
            writeln!(f, "  documented change: {what} at row {row}")?;
        }
        for drift in &self.drifts {
            let after = self
                .change_points
                .iter()
                .filter(|(row, _)| *row <= drift.row)
                .max_by_key(|(row, _)| *row)
                .map_or(String::new(), |(row, what)| {
                    format!(", {} rows after the {what} change", drift.row - row)
                });
            writeln!(f, "  drift: {drift}{after}")?;
        }
        if self.warnings > 0 {
            writeln!(f, "  warnings: {}", self.warnings)?;
        }
        let minority = self
            .tally
            .per_class()
            .into_iter()
            .min_by_key(|(_, n)| *n)
            .map(|(c, _)| c);
        if let Some(minority) = minority {
            for line in self.quality.lines(&minority) {
                writeln!(f, "  {line}")?;
            }
        }
        if let Some(version) = self.model_version {
            writeln!(f, "  model version: {version}")?;
        }
        writeln!(f, "  elapsed: {secs:.3} s")?;
        write!(f, "  rows per second: {:.0}", rows as f64 / secs.max(1e-9))
    }
}

/// Run `spec` until its source ends or `shutdown` resolves.
pub async fn run_job(
    spec: &JobSpec,
    runtime: Arc<JobRuntime>,
    progress: &mut dyn ProgressReporter,
    shutdown: impl Future<Output = ()>,
) -> Result<JobSummary> {
    // One partition: imbalance operators are order-sensitive (decay,
    // test-then-train), so a job keeps its stream in order. Parallelism comes
    // from more replicas, each with its own share of the source partitions.
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(spec.source.batch_size);
    let ctx = crate::new_session_with_config(Arc::clone(&runtime), config)?;
    ctx.register_table(
        SOURCE_TABLE,
        Arc::new(GeneratorTable::try_new(spec.source.clone())?),
    )?;
    let mut pipeline = ctx.sql(&spec.query).await?.class_monitor(
        ClassMonitorOptions::new(&spec.label_column).with_half_life_rows(spec.half_life_rows),
    )?;
    if let Some((method, options)) = &spec.oversampler {
        pipeline = pipeline.oversample(*method, options.clone())?;
    }
    if let Some(options) = &spec.icost {
        pipeline = pipeline.icost(options.clone())?;
    }
    if let Some(options) = &spec.detector {
        pipeline = pipeline.train_detector(options.clone())?;
    }
    if let Some(options) = &spec.drift_monitor {
        pipeline = pipeline.drift_monitor(options.clone())?;
    }
    let prediction_index = pipeline.schema().index_of_column_by_name(None, PREDICTION);
    let mut quality = SegmentQuality::new(spec.change_points().iter().map(|(row, _)| *row));
    // Subscribed before the stream starts, so no event is missed.
    let mut control = runtime.control().subscribe();
    let mut drifts = Vec::new();
    let mut warnings = 0u64;
    let label_index = pipeline
        .schema()
        .index_of_column_by_name(None, &spec.label_column)
        .ok_or_else(|| exec_datafusion_err!("label column '{}' vanished", spec.label_column))?;
    let synthetic_index = pipeline
        .schema()
        .index_of_column_by_name(None, IS_SYNTHETIC);
    let mut stream = pipeline.execute_stream().await?;

    let started = Instant::now();
    let mut tally = ClassTally::default();
    let mut synthetic = ClassTally::default();
    let mut batches = 0u64;
    let mut stopping = false;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown, if !stopping => {
                tracing::info!("stop requested; finishing the batch in flight");
                runtime.control().publish(ControlSignal::Stop);
                stopping = true;
            }
            next = stream.next() => match next {
                Some(batch) => {
                    let batch = batch?;
                    // Source batches: an oversampler's batches of synthetic
                    // rows are not counted as batches of the stream.
                    match synthetic_index {
                        None => {
                            tally.add(&batch, label_index, |_| true)?;
                            batches += 1;
                        }
                        Some(i) => {
                            let marks = batch.column(i).as_boolean();
                            tally.add(&batch, label_index, |r| !marks.value(r))?;
                            synthetic.add(&batch, label_index, |r| marks.value(r))?;
                            batches += u64::from(marks.false_count() > 0);
                        }
                    }
                    if let Some(p) = prediction_index {
                        let seen = tally.rows() - batch.num_rows() as u64;
                        quality.add(&batch, label_index, p, seen, synthetic_index)?;
                    }
                    for signal in control.drain() {
                        if let ControlSignal::Drift(event) = signal {
                            match event.state {
                                DriftState::Drift => drifts.push(event),
                                _ => warnings += 1,
                            }
                        }
                    }
                    progress.update(&tally, started.elapsed());
                }
                None => break,
            },
        }
    }
    progress.finish();
    let elapsed = started.elapsed();
    if synthetic.rows() == 0 {
        // A detector learns from synthetic rows without emitting them: take
        // the oversampler's own count.
        synthetic = ClassTally::synthetic_from(runtime.registry());
    }
    let final_state = runtime.state().snapshot_all()?;
    Ok(JobSummary {
        tally,
        synthetic,
        drifts,
        warnings,
        change_points: spec.change_points(),
        quality,
        model_version: gauge_value(runtime.registry(), "equipoise_model_version"),
        batches,
        elapsed,
        stopped: stopping,
        final_state,
    })
}

/// The value of the first series of gauge `name` in `registry`.
fn gauge_value(registry: &prometheus::Registry, name: &str) -> Option<i64> {
    registry
        .gather()
        .iter()
        .find(|f| f.name() == name)
        .and_then(|f| f.get_metric().first())
        .map(|m| m.get_gauge().get_value() as i64)
}

/// Prequential confusion counts of the detector's predictions, split at
/// the source's change points.
#[derive(Debug, Clone, Default)]
pub struct SegmentQuality {
    bounds: Vec<u64>,
    /// Per segment: (truth, prediction) -> rows.
    segments: Vec<Vec<(ClassValue, ClassValue, u64)>>,
}

/// Recall, precision, F1 of one class, and G-mean over all classes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassQuality {
    pub rows: u64,
    pub recall: f64,
    pub precision: f64,
    pub f1: f64,
    pub gmean: f64,
}

impl SegmentQuality {
    pub fn new(change_points: impl Iterator<Item = u64>) -> Self {
        let mut bounds: Vec<u64> = change_points.collect();
        bounds.sort_unstable();
        Self {
            segments: vec![Vec::new(); bounds.len() + 1],
            bounds,
        }
    }

    /// Count the original rows of `batch`, the first of which is row
    /// `first_row` of the stream.
    fn add(
        &mut self,
        batch: &RecordBatch,
        label_index: usize,
        prediction_index: usize,
        first_row: u64,
        synthetic_index: Option<usize>,
    ) -> Result<()> {
        let mut truths = Vec::with_capacity(batch.num_rows());
        for_each_class(batch.column(label_index), |_, c| truths.push(c))?;
        let mut predictions = Vec::with_capacity(batch.num_rows());
        for_each_class(batch.column(prediction_index), |_, c| predictions.push(c))?;
        let marks = synthetic_index.map(|i| batch.column(i).as_boolean().clone());
        let mut row_number = first_row;
        for (row, (truth, prediction)) in truths.into_iter().zip(predictions).enumerate() {
            if marks.as_ref().is_some_and(|m| m.value(row)) {
                continue;
            }
            let segment = self.bounds.iter().filter(|b| **b <= row_number).count();
            row_number += 1;
            let (Some(truth), Some(prediction)) = (truth, prediction) else {
                continue;
            };
            let cells = &mut self.segments[segment];
            match cells
                .iter_mut()
                .find(|(t, p, _)| *t == truth && *p == prediction)
            {
                Some((_, _, n)) => *n += 1,
                None => cells.push((truth, prediction, 1)),
            }
        }
        Ok(())
    }

    /// Quality of `class` in segment `i` (None without rows of it).
    pub fn of(&self, i: usize, class: &ClassValue) -> Option<ClassQuality> {
        let cells = self.segments.get(i)?;
        let count = |f: &dyn Fn(&ClassValue, &ClassValue) -> bool| -> u64 {
            cells
                .iter()
                .filter(|(t, p, _)| f(t, p))
                .map(|(_, _, n)| n)
                .sum()
        };
        let rows = count(&|t, _| t == class);
        if rows == 0 {
            return None;
        }
        let hits = count(&|t, p| t == class && p == class);
        let predicted = count(&|_, p| p == class);
        let recall = hits as f64 / rows as f64;
        let precision = if predicted > 0 {
            hits as f64 / predicted as f64
        } else {
            0.0
        };
        let f1 = if recall + precision > 0.0 {
            2.0 * recall * precision / (recall + precision)
        } else {
            0.0
        };
        let mut classes: Vec<&ClassValue> = cells.iter().map(|(t, _, _)| t).collect();
        classes.sort();
        classes.dedup();
        let recalls: Vec<f64> = classes
            .iter()
            .map(|c| {
                let n = count(&|t, _| t == *c);
                count(&|t, p| t == *c && p == *c) as f64 / n as f64
            })
            .collect();
        let gmean = recalls
            .iter()
            .product::<f64>()
            .powf(1.0 / recalls.len() as f64);
        Some(ClassQuality {
            rows,
            recall,
            precision,
            f1,
            gmean,
        })
    }

    /// One summary line per segment for `class`.
    fn lines(&self, class: &ClassValue) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..self.segments.len() {
            let Some(q) = self.of(i, class) else {
                continue;
            };
            let from = if i == 0 { 0 } else { self.bounds[i - 1] };
            let span = match self.bounds.get(i) {
                Some(to) => format!("rows {from}-{to}"),
                None => format!("rows {from}-"),
            };
            out.push(format!(
                "detector, {span}: class {class} recall {:.3}, precision {:.3}, F1 {:.3}; \
                 G-mean {:.3} ({} rows of the class)",
                q.recall, q.precision, q.f1, q.gmean, q.rows
            ));
        }
        out
    }
}
