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
use datafusion::prelude::SessionConfig;
use equipoise_operators::runtime::DriftState;
use equipoise_operators::{ControlSignal, DriftEvent, JobRuntime};
use futures::StreamExt;

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
    pub elapsed: Duration,
    /// True when the job ended on a stop request.
    pub stopped: bool,
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
        write!(f, "  elapsed: {:.3} s", self.elapsed.as_secs_f64())
    }
}

/// Run `script` until its insert ends or `shutdown` resolves.
pub async fn run_script(
    script: &str,
    runtime: Arc<JobRuntime>,
    shutdown: impl Future<Output = ()>,
) -> Result<ScriptSummary> {
    // One partition, as the built-in job: the operators are order-sensitive.
    let ctx = crate::new_session_with_config(
        Arc::clone(&runtime),
        SessionConfig::new()
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
    // Subscribed before the stream starts, so no event is missed.
    let mut control = runtime.control().subscribe();
    let mut stream = df.execute_stream().await?;
    let started = Instant::now();
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
            }
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
        elapsed: started.elapsed(),
        stopped: stopping,
    })
}
