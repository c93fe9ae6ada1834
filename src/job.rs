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

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::AsArray;
use datafusion::common::{Result, exec_datafusion_err, plan_datafusion_err, plan_err};
use datafusion::prelude::SessionConfig;
use equipoise_connectors::{GeneratorConfig, GeneratorTable};
use equipoise_operators::columns::{IS_SYNTHETIC, PREDICTION};
use equipoise_operators::detector::DetectorKeys;
use equipoise_operators::drift::DriftState;
use equipoise_operators::drift::monitor::DriftMonitorKeys;
use equipoise_operators::icost::IcostKeys;
use equipoise_operators::oversample::OversampleKeys;
use equipoise_operators::{
    ClassMonitorOptions, ControlSignal, DataFrameStageExt, DetectorOptions, DriftMonitorOptions,
    IcostOptions, JobRuntime, Method, OversampleOptions,
};
use futures::StreamExt;
use serde::Deserialize;

use crate::progress::ProgressReporter;
use crate::summary::{ClassTally, JobSummary, SegmentQuality};

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

/// The built-in telemetry job's file, compiled in: `equipoise run`
/// without `--config` runs it (`examples/telemetry-job.toml`).
pub const EMBEDDED_JOB_FILE: &str = include_str!("../examples/telemetry-job.toml");

/// A job file's `[pipeline]` table: the query and the stages, each stage's
/// keys its operator's options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineTable {
    label: String,
    query: String,
    #[serde(default = "default_half_life")]
    half_life: f64,
    random_oversample: Option<OversampleKeys>,
    smote: Option<OversampleKeys>,
    borderline_smote: Option<OversampleKeys>,
    adasyn: Option<OversampleKeys>,
    qc_smote: Option<OversampleKeys>,
    icost: Option<IcostKeys>,
    train_detector: Option<DetectorKeys>,
    drift_monitor: Option<DriftMonitorKeys>,
}

fn default_half_life() -> f64 {
    ClassMonitorOptions::DEFAULT_HALF_LIFE_ROWS
}

impl JobSpec {
    /// The embedded default ([`EMBEDDED_JOB_FILE`]) over `source`:
    /// generated telemetry, a projection that adds a derived feature, the
    /// class monitor (which sees the stream as it arrives), QC-SMOTE over
    /// the sensor readings (`seq` and `machine_id` are identifiers, copied
    /// from the seed, not features), then iCost weights on the same
    /// readings (synthetic rows weigh 1.0; see
    /// [`equipoise_operators::icost`]), then an online logistic regression
    /// trained test-then-train on the balanced, weighted stream
    /// ([`equipoise_operators::detector`]), then the drift monitor on its
    /// predictions. The monitor's drifts shrink the oversampler's and
    /// iCost's windows and retrain the detector.
    pub fn embedded_default(source: GeneratorConfig) -> Result<Self> {
        let file: toml::Table = EMBEDDED_JOB_FILE
            .parse()
            .map_err(|e| exec_datafusion_err!("the built-in job file: {e}"))?;
        let pipeline = match file.get("pipeline") {
            Some(toml::Value::Table(pipeline)) => pipeline.clone(),
            _ => return plan_err!("the built-in job file has no [pipeline]"),
        };
        Self::from_tables(source, pipeline)
    }

    /// The job a file's `[pipeline]` table describes, over `source`.
    pub fn from_tables(source: GeneratorConfig, pipeline: toml::Table) -> Result<Self> {
        let pipeline: PipelineTable = pipeline.try_into().map_err(|e: toml::de::Error| {
            plan_datafusion_err!("[pipeline]: {}", e.message().trim())
        })?;
        let label = pipeline.label.as_str();
        let oversamplers = [
            (Method::RandomOversample, pipeline.random_oversample),
            (Method::Smote, pipeline.smote),
            (Method::BorderlineSmote, pipeline.borderline_smote),
            (Method::Adasyn, pipeline.adasyn),
            (Method::QcSmote, pipeline.qc_smote),
        ];
        let mut oversampler = None;
        for (method, keys) in oversamplers {
            let Some(keys) = keys else { continue };
            if oversampler.is_some() {
                return plan_err!("[pipeline]: one oversampler at most");
            }
            oversampler = Some((method, OversampleOptions::from_keys(method, label, keys)?));
        }
        let detector = pipeline
            .train_detector
            .map(|keys| DetectorOptions::from_keys(label, keys))
            .transpose()?;
        // The monitor watches the detector's predictions when there is one.
        let prediction = detector.as_ref().map(|_| PREDICTION);
        Ok(Self {
            source,
            query: pipeline.query.trim().to_string(),
            label_column: pipeline.label.clone(),
            half_life_rows: pipeline.half_life,
            oversampler,
            icost: pipeline
                .icost
                .map(|keys| IcostOptions::from_keys(label, keys))
                .transpose()?,
            detector,
            drift_monitor: pipeline
                .drift_monitor
                .map(|keys| DriftMonitorOptions::from_keys(label, prediction, keys))
                .transpose()?,
        })
    }

    /// The stages after the class monitor, by operator name.
    pub fn stage_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if let Some((method, _)) = &self.oversampler {
            names.push(method.name());
        }
        if self.icost.is_some() {
            names.push("icost");
        }
        if self.detector.is_some() {
            names.push("train_detector");
        }
        if self.drift_monitor.is_some() {
            names.push("drift_monitor");
        }
        names
    }

    /// The rows where the source is documented to change: `(row, what)`.
    pub fn change_points(&self) -> Vec<(u64, &'static str)> {
        vec![
            (self.source.prior_shift_at, "class mix"),
            (self.source.concept_shift_at, "fault signature"),
        ]
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
    let reports = runtime.report().operators()?;
    if synthetic.rows() == 0 {
        // A detector learns from synthetic rows without emitting them: take
        // the oversamplers' own counts.
        synthetic = ClassTally::from_counts(
            reports
                .values()
                .flat_map(|report| report.synthetic_rows.iter().cloned()),
        );
    }
    let model_version = reports
        .values()
        .rev()
        .find_map(|report| report.model_version);
    let advisors = reports
        .values()
        .filter_map(|report| report.advisor.clone())
        .collect();
    let final_state = runtime.state().snapshot_all()?;
    Ok(JobSummary {
        tally,
        synthetic,
        drifts,
        warnings,
        change_points: spec.change_points(),
        quality,
        model_version,
        advisors,
        batches,
        elapsed,
        stopped: stopping,
        final_state,
    })
}
