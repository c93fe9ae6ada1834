//! A script job with its state per Kafka partition (`[scale_out] state =
//! "per-partition"`): the way replicas of one consumer group scale out.
//!
//! The replica joins the group of the script's Kafka source once
//! ([`PartitionGroup`]) and runs one plan of the script per partition the
//! group gives it, each with its own runtime (operator state, control bus,
//! checkpoint coordinator) and its checkpoints under the partition's name
//! (`<store>/<topic>-<partition>/`) in a store every replica shares. A
//! partition that moves resumes on its new replica from its own newest
//! checkpoint and the group's committed offset (records below the
//! checkpoint's position are skipped: the checkpoint's state has them).
//!
//! When the group takes partitions back, their feeds close: each plan ends
//! as on a stop (the sink flushes, the final checkpoint is stored, its
//! offsets committed), and only then are the partitions released to the
//! group. A stop of the job stops every plan the same way.
//!
//! Each partition's metrics carry a `pipeline` label (the partition);
//! they are gathered into the replica's `/metrics` through
//! [`PartitionRegistries`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::common::{Result, exec_datafusion_err, plan_err};
use datafusion::prelude::SessionConfig;
use equipoise_connectors::kafka::{AssignedPartition, GroupEvent, PartitionGroup, kafka_sources};
use equipoise_operators::JobRuntime;
use prometheus::Registry;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::script::{
    PlannedScript, ScriptRun, ScriptSummary, plan_script, plan_script_in, run_planned,
};

/// The registries of a replica's partition plans, gathered as one
/// collector of the replica's registry (series of a plan carry its
/// `pipeline` label; a revoked partition's series go with it).
#[derive(Debug, Clone, Default)]
pub struct PartitionRegistries {
    registries: Arc<Mutex<BTreeMap<i32, Registry>>>,
}

impl PartitionRegistries {
    /// A registry for partition `partition`'s plan, gathered from now on.
    fn open(&self, partition: i32) -> Result<Registry> {
        let labels = HashMap::from([("pipeline".to_string(), partition.to_string())]);
        let registry = Registry::new_custom(None, Some(labels))
            .map_err(|e| exec_datafusion_err!("metrics of partition {partition}: {e}"))?;
        if let Ok(mut registries) = self.registries.lock() {
            registries.insert(partition, registry.clone());
        }
        Ok(registry)
    }

    fn close(&self, partition: i32) {
        if let Ok(mut registries) = self.registries.lock() {
            registries.remove(&partition);
        }
    }
}

impl Collector for PartitionRegistries {
    fn desc(&self) -> Vec<&Desc> {
        // Unchecked: the families come and go with the partitions.
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(registries) = self.registries.lock() else {
            return Vec::new();
        };
        // The replica's registry merges families of the same name.
        registries.values().flat_map(Registry::gather).collect()
    }
}

/// What one partition's plan did while this replica had the partition.
#[derive(Debug, Clone)]
pub struct PartitionRun {
    pub partition: i32,
    pub summary: ScriptSummary,
}

/// What a finished job with state per partition reports.
#[derive(Debug, Clone)]
pub struct PartitionedSummary {
    pub topic: String,
    /// Every partition plan that ended, in the order they ended.
    pub runs: Vec<PartitionRun>,
    pub elapsed: Duration,
    pub stopped: bool,
}

impl PartitionedSummary {
    pub fn rows_written(&self) -> u64 {
        self.runs.iter().map(|run| run.summary.rows_written).sum()
    }
}

impl fmt::Display for PartitionedSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = self
            .runs
            .first()
            .map_or("its target", |run| run.summary.target.as_str());
        writeln!(
            f,
            "{} after writing {} rows to {} from {} partition runs of '{}'",
            if self.stopped { "stopped" } else { "finished" },
            self.rows_written(),
            target,
            self.runs.len(),
            self.topic
        )?;
        for run in &self.runs {
            let s = &run.summary;
            write!(
                f,
                "  partition {}: {} rows, {} drifts",
                run.partition,
                s.rows_written,
                s.drifts.len()
            )?;
            if let Some(version) = s.model_version {
                write!(f, ", model version {version}")?;
            }
            if let Some(epoch) = s.restored_from {
                write!(f, ", restored from checkpoint {epoch}")?;
            }
            if let Some(epoch) = s.checkpoint {
                write!(f, ", last checkpoint {epoch}")?;
            }
            writeln!(f)?;
        }
        write!(f, "  elapsed: {:.3} s", self.elapsed.as_secs_f64())
    }
}

/// The one Kafka source a job with state per partition reads, from its
/// plan (also what `--check` verifies).
pub async fn group_source(script: &str) -> Result<equipoise_connectors::kafka::KafkaOptions> {
    let probe = Arc::new(JobRuntime::default());
    let PlannedScript { plan, .. } = plan_script(script, &probe).await?;
    let mut sources = kafka_sources(plan.as_ref());
    match sources.len() {
        1 => Ok(sources.remove(0)),
        0 => plan_err!(
            "state per partition needs a Kafka source: the job's insert reads no Kafka table"
        ),
        n => plan_err!(
            "state per partition needs one Kafka source; the job's insert reads {n} \
             ({}); run one job per source",
            sources
                .iter()
                .map(|s| s.topic.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A running partition plan; dropped, it ends (a job that fails does not
/// leave the other partitions' plans running).
struct Pipeline {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Run `script` with state per partition until `shutdown` resolves (or a
/// partition's plan fails). `registry` is the replica's: each partition's
/// metrics are gathered into it. `run` is what each partition's plan gets:
/// its store is the one the replicas share (without one, a moved
/// partition's state starts afresh from the group's committed offset), its
/// grace period bounds a stop or a revocation.
pub async fn run_partitioned(
    script: &str,
    registry: &Registry,
    run: ScriptRun,
    shutdown: impl Future<Output = ()>,
) -> Result<PartitionedSummary> {
    let options = group_source(script).await?;
    let partitions = PartitionRegistries::default();
    registry
        .register(Box::new(partitions.clone()))
        .map_err(|e| exec_datafusion_err!("cannot register the partitions' metrics: {e}"))?;
    let mut group = PartitionGroup::join(&options)?;
    let script: Arc<str> = Arc::from(script);
    run.health.set_ready(true);
    let started = Instant::now();
    let (done_tx, mut done) = mpsc::unbounded_channel::<(i32, Result<ScriptSummary>)>();
    let mut running: HashMap<i32, Pipeline> = HashMap::new();
    // Revoked partitions whose plans have not ended yet.
    let mut leaving: BTreeSet<i32> = BTreeSet::new();
    let mut to_release: Vec<i32> = Vec::new();
    let mut runs = Vec::new();
    let mut stopping = false;
    let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown, if !stopping => {
                tracing::info!(partitions = running.len(), "stop requested; stopping every partition's plan");
                stopping = true;
                for pipeline in running.values_mut() {
                    if let Some(stop) = pipeline.stop.take() {
                        let _ = stop.send(());
                    }
                }
                if running.is_empty() {
                    break;
                }
            }
            _ = heartbeat.tick() => run.health.beat(),
            event = group.next() => match event {
                Some(GroupEvent::Assigned(assigned)) => {
                    for partition in assigned {
                        let id = partition.partition();
                        if stopping || running.contains_key(&id) {
                            // Its feed closes with it; the group reassigns.
                            continue;
                        }
                        tracing::info!(topic = %options.topic, partition = id, "partition assigned; starting its plan");
                        let (stop, stopped) = oneshot::channel();
                        let metrics = partitions.open(id)?;
                        let task = tokio::spawn(
                            partition_plan(
                                Arc::clone(&script),
                                run.clone(),
                                partition,
                                metrics,
                                stopped,
                                done_tx.clone(),
                            )
                            .instrument(tracing::info_span!("partition", partition = id)),
                        );
                        running.insert(id, Pipeline { stop: Some(stop), task });
                    }
                }
                Some(GroupEvent::Revoked(revoked)) => {
                    tracing::info!(topic = %options.topic, partitions = ?revoked, "partitions revoked; finishing their plans");
                    for id in revoked {
                        if running.contains_key(&id) {
                            leaving.insert(id);
                        }
                        to_release.push(id);
                    }
                    if leaving.is_empty() {
                        group.release(std::mem::take(&mut to_release)).await?;
                    }
                }
                Some(GroupEvent::Failed(e)) => return Err(e),
                None => return plan_err!("kafka: the group consumer of '{}' ended", options.topic),
            },
            Some((id, result)) = done.recv() => {
                running.remove(&id);
                partitions.close(id);
                let summary = result?;
                tracing::info!(partition = id, rows = summary.rows_written, "partition plan ended");
                runs.push(PartitionRun { partition: id, summary });
                if leaving.remove(&id) && leaving.is_empty() {
                    group.release(std::mem::take(&mut to_release)).await?;
                }
                if stopping && running.is_empty() {
                    break;
                }
            }
        }
    }
    Ok(PartitionedSummary {
        topic: options.topic,
        runs,
        elapsed: started.elapsed(),
        stopped: stopping,
    })
}

/// Plan and run the script over one assigned partition, checkpointing
/// into the partition's part of `run`'s store; report its end.
async fn partition_plan(
    script: Arc<str>,
    mut run: ScriptRun,
    partition: Arc<AssignedPartition>,
    registry: Registry,
    stop: oneshot::Receiver<()>,
    done: mpsc::UnboundedSender<(i32, Result<ScriptSummary>)>,
) {
    let id = partition.partition();
    let scope = format!("{}-{id}", partition.topic());
    let result = async {
        let runtime = Arc::new(JobRuntime::new(registry));
        let config = SessionConfig::new().with_extension(partition);
        let planned = plan_script_in(&script, &runtime, config).await?;
        run.checkpoint = run
            .checkpoint
            .map(|(store, interval)| (store.scoped(&scope), interval));
        if let Some(exactly_once) = &mut run.exactly_once {
            exactly_once.scope = Some(scope);
        }
        // A dropped sender is no stop: the job keeps it while the plan runs.
        let stopped = async {
            if stop.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        run_planned(planned, runtime, run, stopped).await
    }
    .await;
    let _ = done.send((id, result));
}
