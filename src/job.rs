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
use equipoise_operators::drift::DriftState;
use equipoise_operators::features::FeatureSelection;
use equipoise_operators::oversample::Mode;
use equipoise_operators::{
    ClassMonitorOptions, ControlSignal, DataFrameStageExt, DriftEvent, DriftMonitorOptions,
    IcostOptions, JobRuntime, JobSnapshot, Method, OversampleOptions,
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
    /// The drift monitor after iCost, if any.
    pub drift_monitor: Option<DriftMonitorOptions>,
}

impl JobSpec {
    /// The embedded default: generated telemetry, a projection that adds a
    /// derived feature, the class monitor (which sees the stream as it
    /// arrives), QC-SMOTE over the sensor readings (`seq` and `machine_id`
    /// are identifiers, copied from the seed, not features), then iCost
    /// weights on the same readings (synthetic rows weigh 1.0; see
    /// [`equipoise_operators::icost`]), then the drift monitor on the class
    /// mix (no model predicts yet, so there is no prediction to watch); its
    /// drifts shrink the oversampler's and iCost's windows.
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
            drift_monitor: Some(DriftMonitorOptions::new("label")),
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
    if let Some(options) = &spec.drift_monitor {
        pipeline = pipeline.drift_monitor(options.clone())?;
    }
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
        .index_of_column_by_name(None, equipoise_operators::oversample::IS_SYNTHETIC);
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
    let final_state = runtime.state().snapshot_all()?;
    Ok(JobSummary {
        tally,
        synthetic,
        drifts,
        warnings,
        change_points: spec.change_points(),
        batches,
        elapsed,
        stopped: stopping,
        final_state,
    })
}
