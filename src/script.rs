//! A streaming job written in SQL, as in Flink SQL and Arroyo:
//! `equipoise run --sql job.sql` runs a script of DDL and views whose last
//! statement is `INSERT INTO <table> SELECT ...`, typically from a Kafka
//! topic through the operators into another topic.
//!
//! The job pulls the insert's plan until it ends (a bounded source) or a
//! stop is requested: then `ControlSignal::Stop` ends the sources after the
//! batch in flight, the plan drains, the sink acknowledges every row, and
//! the sources' offsets are committed (see `equipoise_connectors::kafka`).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SessionConfig, SessionContext};
use equipoise_connectors::kafka;
use equipoise_operators::runtime::{AdvisorReport, CheckpointStore, DriftState, check_plan};
use equipoise_operators::stream_filter::pass_through_filters;
use equipoise_operators::{ControlSignal, DriftEvent, JobRuntime};
use futures::StreamExt;

use crate::metrics_server::Health;
use crate::summary::ClassTally;

/// What a finished script job reports.
#[derive(Debug, Clone)]
pub struct ScriptSummary {
    /// The table the job inserted into.
    pub target: String,
    /// Rows the sink wrote and had acknowledged.
    pub rows_written: u64,
    /// Synthetic rows the oversamplers made, by class.
    pub synthetic: ClassTally,
    /// Drifts the job's monitors signalled, in order.
    pub drifts: Vec<DriftEvent>,
    pub warnings: u64,
    /// Version of the detector's model at the end, if the job has one.
    pub model_version: Option<u64>,
    /// What each detector's advisor found.
    pub advisors: Vec<AdvisorReport>,
    pub elapsed: Duration,
    /// True when the job ended on a stop request.
    pub stopped: bool,
    /// The checkpoint the job restored at its start.
    pub restored_from: Option<u64>,
    /// The newest checkpoint completed (the final one after a stop).
    pub checkpoint: Option<u64>,
}

impl fmt::Display for ScriptSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} after writing {} rows to {}",
            if self.stopped { "stopped" } else { "finished" },
            self.rows_written,
            self.target
        )?;
        for (class, n) in self.synthetic.per_class() {
            writeln!(f, "  class {class}: {n} synthetic rows")?;
        }
        for drift in &self.drifts {
            writeln!(f, "  drift: {drift}")?;
        }
        if self.warnings > 0 {
            writeln!(f, "  warnings: {}", self.warnings)?;
        }
        if let Some(version) = self.model_version {
            writeln!(f, "  model version: {version}")?;
        }
        for line in self.advisors.iter().flat_map(AdvisorReport::lines) {
            writeln!(f, "  {line}")?;
        }
        if let Some(epoch) = self.restored_from {
            writeln!(f, "  restored from checkpoint {epoch}")?;
        }
        if let Some(epoch) = self.checkpoint {
            writeln!(f, "  last checkpoint: {epoch}")?;
        }
        write!(f, "  elapsed: {:.3} s", self.elapsed.as_secs_f64())
    }
}

/// How a script job runs besides its SQL (with state per partition: every
/// partition's plan, each in its part of the store).
#[derive(Debug, Clone, Default)]
pub struct ScriptRun {
    /// Checkpoint into this store at this interval; `None`: no checkpoints
    /// (offsets are committed when the job ends).
    pub checkpoint: Option<(CheckpointStore, Duration)>,
    /// What `/healthz` and `/readyz` report.
    pub health: Arc<Health>,
    /// How long a requested stop may take; `None`: as long as it takes.
    pub grace_period: Option<Duration>,
    /// Exactly-once delivery (the sink writes in Kafka transactions that
    /// commit with each checkpoint); `None`: at-least-once.
    pub exactly_once: Option<ExactlyOnce>,
}

/// How a job delivers exactly once.
#[derive(Debug, Clone, Default)]
pub struct ExactlyOnce {
    /// Appended to the transactional id: the Kafka partition a plan of a
    /// job with state per partition owns.
    pub scope: Option<String>,
}

/// A planned script job: its session, its target and its physical plan.
pub struct PlannedScript {
    pub ctx: SessionContext,
    pub target: String,
    pub plan: Arc<dyn ExecutionPlan>,
}

/// Plan `script` (run its DDL, plan its last statement, an insert).
pub async fn plan_script(script: &str, runtime: &Arc<JobRuntime>) -> Result<PlannedScript> {
    plan_script_in(script, runtime, SessionConfig::new()).await
}

/// [`plan_script`] in a session made from `config` (which may carry
/// extensions, such as the Kafka partition a plan reads).
pub async fn plan_script_in(
    script: &str,
    runtime: &Arc<JobRuntime>,
    config: SessionConfig,
) -> Result<PlannedScript> {
    // One partition, as the built-in job: the operators are order-sensitive.
    let ctx = crate::new_session_with_config(
        Arc::clone(runtime),
        config
            .with_target_partitions(1)
            .with_round_robin_repartition(false)
            .with_repartition_file_scans(false),
    )?;
    let df = crate::sql::run_script_to_last(&ctx, script).await?;
    let target = match df.logical_plan() {
        LogicalPlan::Dml(DmlStatement {
            table_name,
            op: WriteOp::Insert(_),
            ..
        }) => table_name.to_string(),
        _ => {
            return plan_err!(
                "the last statement of a job script must be INSERT INTO <table> SELECT ...; \
                 it is what the job runs"
            );
        }
    };
    let plan = df.create_physical_plan().await?;
    Ok(PlannedScript { ctx, target, plan })
}

/// `plan` as a checkpointed job runs it: filters that pass each batch on
/// at once, and checked to be one chain the source's cut is consistent in.
pub fn checkpointable(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let plan = pass_through_filters(plan)?;
    check_plan(plan.as_ref())?;
    Ok(plan)
}

/// Run `script` until its insert ends or `shutdown` resolves.
pub async fn run_script(
    script: &str,
    runtime: Arc<JobRuntime>,
    run: ScriptRun,
    shutdown: impl Future<Output = ()>,
) -> Result<ScriptSummary> {
    let planned = plan_script(script, &runtime).await?;
    run_planned(planned, runtime, run, shutdown).await
}

/// Run a planned script (planned with `runtime`) until its insert ends or
/// `shutdown` resolves.
pub async fn run_planned(
    planned: PlannedScript,
    runtime: Arc<JobRuntime>,
    run: ScriptRun,
    shutdown: impl Future<Output = ()>,
) -> Result<ScriptSummary> {
    let PlannedScript { ctx, target, plan } = planned;
    let mut restored_from = None;
    let mut checkpoint_timer = None;
    let plan = if run.checkpoint.is_some() {
        checkpointable(plan)?
    } else {
        plan
    };
    if run.exactly_once.is_some() && run.checkpoint.is_none() {
        return plan_err!(
            "exactly-once delivery commits a Kafka transaction at each checkpoint: set \
             [checkpoint] url"
        );
    }
    if let Some((store, interval)) = run.checkpoint {
        let restored = match &run.exactly_once {
            Some(exactly_once) => {
                // Fence earlier instances first: the committed offsets are
                // read once no transaction of theirs is open.
                let id = kafka::begin_transactions(&plan, exactly_once.scope.as_deref(), interval)
                    .await?;
                tracing::info!(transactional_id = %id, "exactly-once: transactions initialised");
                kafka::committed_checkpoint(plan.as_ref(), &store).await?
            }
            None => store.latest().await?,
        };
        let epoch = restored.as_ref().map_or(0, |c| c.epoch);
        if let Some(checkpoint) = restored {
            tracing::info!(
                store = store.url(),
                epoch = checkpoint.epoch,
                operators = checkpoint.snapshot.operators.len(),
                "restoring from checkpoint {}",
                checkpoint.epoch
            );
            runtime.state().set_restore_point(checkpoint.snapshot)?;
            restored_from = Some(epoch);
        }
        let newest_stored = store.epochs().await?.last().copied().unwrap_or(0);
        runtime.checkpoints().enable(store, epoch, newest_stored)?;
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        checkpoint_timer = Some(timer);
    }
    // Subscribed before the stream starts, so no event is missed.
    let mut control = runtime.control().subscribe();
    let mut stream = execute_stream(plan, ctx.task_ctx())?;
    if let Some(epoch) = restored_from {
        // Every operator has registered now (when its stream was built).
        let unclaimed = runtime.state().unclaimed()?;
        if !unclaimed.is_empty() {
            tracing::warn!(
                epoch,
                operators = ?unclaimed,
                "checkpoint {epoch} holds state for operators this job does not have (was its \
                 SQL changed?); that state is not used"
            );
        }
    }
    run.health.set_ready(true);
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let started = Instant::now();
    let grace = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(grace);
    let mut rows_written = 0u64;
    let mut stopping = false;
    let mut drifts = Vec::new();
    let mut warnings = 0;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown, if !stopping => {
                tracing::info!("stop requested; finishing the batch in flight");
                runtime.control().publish(ControlSignal::Stop);
                stopping = true;
                if let Some(period) = run.grace_period {
                    grace.as_mut().reset(tokio::time::Instant::now() + period);
                }
            }
            () = &mut grace => {
                return plan_err!(
                    "the job did not stop within its grace period; it resumes from its last \
                     checkpoint (epoch {}) when restarted",
                    runtime.checkpoints().completed_epoch()
                );
            }
            _ = heartbeat.tick() => run.health.beat(),
            _ = tick(checkpoint_timer.as_mut()) => runtime.checkpoints().request(),
            Some(signal) = control.recv() => {
                if let ControlSignal::Drift(event) = signal {
                    match event.state {
                        DriftState::Drift => drifts.push(event),
                        _ => warnings += 1,
                    }
                }
            }
            next = stream.next() => match next {
                Some(batch) => {
                    // The sink's one row: the count it wrote.
                    let batch = batch?;
                    if let Some(count) = batch.column(0).as_primitive_opt::<UInt64Type>() {
                        rows_written += count.values().iter().sum::<u64>();
                    }
                }
                None => break,
            },
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
    let reports = runtime.report().operators()?;
    Ok(ScriptSummary {
        target,
        rows_written,
        synthetic: ClassTally::from_counts(
            reports
                .values()
                .flat_map(|report| report.synthetic_rows.iter().cloned()),
        ),
        drifts,
        warnings,
        model_version: reports
            .values()
            .rev()
            .find_map(|report| report.model_version),
        advisors: reports
            .values()
            .filter_map(|report| report.advisor.clone())
            .collect(),
        elapsed: started.elapsed(),
        stopped: stopping,
        restored_from,
        checkpoint: (runtime.checkpoints().completed_epoch() > 0)
            .then(|| runtime.checkpoints().completed_epoch()),
    })
}

/// How often the job loop tells `/healthz` it is alive.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The next tick of `timer`, never for none.
async fn tick(timer: Option<&mut tokio::time::Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}
