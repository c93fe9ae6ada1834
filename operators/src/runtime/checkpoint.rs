//! Checkpoints: consistent cuts of a job's state, aligned with its source
//! positions, committed only once the sink has flushed what came before.
//!
//! The protocol (ARCHITECTURE.md, "Checkpoints"):
//!
//! 1. A timer [`Checkpoints::request`]s a checkpoint.
//! 2. The job's source, at its next poll, *cuts*: a job that checkpoints is
//!    one chain of operators pulled by one task (checked when it starts:
//!    by [`check_plan`], after its filters are replaced by ones that do not
//!    gather rows), so when the source is polled every
//!    operator downstream has processed all it was given and emitted all it
//!    owes, and waits on the source. The cut snapshots every registered
//!    operator there and then, together with the source's positions after
//!    the last batch it yielded: state and positions describe the same
//!    prefix of the input. This is the aligned barrier of Flink and Arroyo,
//!    with the alignment given by the pull order instead of a marker.
//! 3. The sink, told of cut `n`, waits for the broker to acknowledge every
//!    row it had sent (all of them made from input before the cut), then
//!    calls [`Checkpoints::complete`]: the snapshot is written to the store,
//!    and only then are the source positions committed.
//!
//! On restart the job restores every operator and the source's positions
//! from the newest checkpoint that reads back whole; input after it is read
//! again, so a crash repeats at most the records since the last completed
//! checkpoint and loses none.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Instant;

use datafusion::common::Result;
use futures::task::AtomicWaker;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use tokio::sync::watch;

use super::commits::PendingCommit;
use super::state::{JobSnapshot, StateRegistry};
use super::store::CheckpointStore;
use crate::metrics::MetricSet;
use crate::sync::lock;

/// A cut waiting for the sink to flush.
struct Cut {
    taken: Instant,
    snapshot: JobSnapshot,
    commit: Option<Arc<dyn PendingCommit>>,
}

/// The checkpoint coordinator of one job.
pub struct Checkpoints {
    store: Mutex<Option<CheckpointStore>>,
    requested: AtomicBool,
    /// The epoch the next cut gets.
    next_epoch: AtomicU64,
    cuts: Mutex<BTreeMap<u64, Cut>>,
    /// The newest cut's epoch (0: none yet), for sinks.
    newest_cut: watch::Sender<u64>,
    completed: AtomicU64,
    /// The source's task, woken by a request so that an idle source cuts
    /// too.
    source: AtomicWaker,
    commits: Arc<Mutex<CommitQueue>>,
}

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoints")
            .field("next_epoch", &self.next_epoch)
            .field("completed", &self.completed)
            .finish_non_exhaustive()
    }
}

impl Default for Checkpoints {
    fn default() -> Self {
        Self {
            store: Mutex::new(None),
            requested: AtomicBool::new(false),
            next_epoch: AtomicU64::new(1),
            cuts: Mutex::new(BTreeMap::new()),
            newest_cut: watch::channel(0).0,
            completed: AtomicU64::new(0),
            source: AtomicWaker::new(),
            commits: Arc::default(),
        }
    }
}

impl Checkpoints {
    /// Checkpoint into `store`, restored from `restored_epoch` (0 for
    /// none), numbering new checkpoints after `newest_stored` (at least the
    /// restored epoch): a job that restored an older checkpoint than the
    /// store's newest, or none, must not write epochs the store already
    /// holds (the newer stale ones would outrank and prune its own).
    pub fn enable(
        &self,
        store: CheckpointStore,
        restored_epoch: u64,
        newest_stored: u64,
    ) -> Result<()> {
        *lock(&self.store)? = Some(store);
        self.next_epoch
            .store(restored_epoch.max(newest_stored) + 1, Ordering::SeqCst);
        self.completed.store(restored_epoch, Ordering::SeqCst);
        Ok(())
    }

    /// Whether the job checkpoints (a store is set).
    pub fn enabled(&self) -> bool {
        lock(&self.store).is_ok_and(|store| store.is_some())
    }

    /// Ask the source to cut at its next poll.
    pub fn request(&self) {
        if self.enabled() {
            self.requested.store(true, Ordering::SeqCst);
            self.source.wake();
        }
    }

    /// Called by the source at every poll: the task a request wakes.
    pub fn wake_source_with(&self, waker: &Waker) {
        self.source.register(waker);
    }

    /// Whether a cut is asked for.
    pub fn cut_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// The newest completed epoch (or the restored one), 0 for none.
    pub fn completed_epoch(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }

    /// Cut now: snapshot every operator in `state` (the caller is the job's
    /// only source, polled while everything downstream waits on it) with
    /// the source's `commit`, the positions that snapshot covers. The new
    /// epoch.
    pub fn cut(
        &self,
        state: &StateRegistry,
        commit: Option<Arc<dyn PendingCommit>>,
    ) -> Result<u64> {
        self.requested.store(false, Ordering::SeqCst);
        let taken = Instant::now();
        let snapshot = state.snapshot_all()?;
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        lock(&self.cuts)?.insert(
            epoch,
            Cut {
                taken,
                snapshot,
                commit,
            },
        );
        self.newest_cut.send_replace(epoch);
        tracing::debug!(epoch, "checkpoint cut");
        Ok(epoch)
    }

    /// A receiver of the newest cut's epoch, for a sink.
    pub fn cuts(&self) -> watch::Receiver<u64> {
        self.newest_cut.subscribe()
    }

    /// The sink has flushed everything sent before cut `epoch`: store the
    /// cut, then commit its positions. Older cuts not yet completed are
    /// covered by it and dropped. Returns whether a checkpoint was written.
    pub async fn complete(&self, epoch: u64, metrics: &CheckpointMetrics) -> Result<bool> {
        let Some(stored) = self.store_cut(epoch, metrics).await? else {
            return Ok(false);
        };
        if let Some(commit) = stored.commit {
            // Off the sink's path: the checkpoint is stored, so a slow or
            // failed commit only makes the group's offsets lag (a restart
            // reads the checkpoint's own). Commits run one at a time, in
            // epoch order; a newer one supersedes those still waiting.
            self.commit_in_background(stored.epoch, commit)?;
        }
        Ok(true)
    }

    /// Store cut `epoch` (covering older ones, as [`Self::complete`]) and
    /// hand its positions back uncommitted, for a sink that commits them
    /// in its own transaction; `None` when no cut was waiting.
    pub async fn store_cut(
        &self,
        epoch: u64,
        metrics: &CheckpointMetrics,
    ) -> Result<Option<StoredCut>> {
        let cut = {
            let mut cuts = lock(&self.cuts)?;
            let newer = cuts.split_off(&(epoch + 1));
            let covered = std::mem::replace(&mut *cuts, newer);
            covered.into_iter().next_back()
        };
        let Some((epoch, cut)) = cut else {
            return Ok(None);
        };
        let Some(store) = lock(&self.store)?.clone() else {
            return Ok(None);
        };
        let bytes = store.write(epoch, &cut.snapshot).await?;
        self.completed.store(epoch, Ordering::SeqCst);
        metrics.completed.inc();
        metrics.epoch.set(i64::try_from(epoch).unwrap_or(i64::MAX));
        metrics.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        metrics.duration.observe(cut.taken.elapsed().as_secs_f64());
        tracing::info!(epoch, bytes, "checkpoint complete");
        Ok(Some(StoredCut {
            epoch,
            commit: cut.commit,
        }))
    }
}

/// A checkpoint written to the store whose positions are not committed yet.
#[derive(Debug)]
pub struct StoredCut {
    pub epoch: u64,
    pub commit: Option<Arc<dyn PendingCommit>>,
}

/// Commits of completed checkpoints, run one at a time off the sink's path.
#[derive(Default)]
struct CommitQueue {
    /// The newest commit not yet started; it supersedes older ones.
    waiting: Option<(u64, Arc<dyn PendingCommit>)>,
    running: bool,
}

impl Checkpoints {
    fn commit_in_background(&self, epoch: u64, commit: Arc<dyn PendingCommit>) -> Result<()> {
        let mut queue = lock(&self.commits)?;
        queue.waiting = Some((epoch, commit));
        if queue.running {
            return Ok(());
        }
        queue.running = true;
        drop(queue);
        let commits = Arc::clone(&self.commits);
        tokio::task::spawn_blocking(move || {
            loop {
                let next = match commits.lock() {
                    Ok(mut queue) => {
                        let next = queue.waiting.take();
                        queue.running = next.is_some();
                        next
                    }
                    Err(_) => None,
                };
                let Some((epoch, commit)) = next else { break };
                if let Err(e) = commit.commit() {
                    tracing::warn!(epoch, error = %e, "checkpoint stored; its offsets not committed");
                }
            }
        });
        Ok(())
    }

    /// Wait until no commit runs or waits (the end of a job).
    pub async fn commits_settled(&self) {
        loop {
            let busy = lock(&self.commits).is_ok_and(|q| q.running || q.waiting.is_some());
            if !busy {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// The checkpoint series.
#[derive(Debug)]
pub struct CheckpointMetrics {
    pub completed: IntCounter,
    pub epoch: IntGauge,
    pub bytes: IntGauge,
    /// From the cut to the checkpoint stored.
    pub duration: Histogram,
}

impl MetricSet for CheckpointMetrics {
    const NAME: &'static str = "checkpoints";

    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let completed = IntCounter::new(
            "equipoise_checkpoints_total",
            "Checkpoints written to the store and committed",
        )?;
        let epoch = IntGauge::new(
            "equipoise_checkpoint_epoch",
            "Epoch of the newest completed checkpoint",
        )?;
        let bytes = IntGauge::new(
            "equipoise_checkpoint_bytes",
            "Size of the newest completed checkpoint",
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "equipoise_checkpoint_duration_seconds",
                "From a checkpoint's cut at the source to its write to the store",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )?;
        registry.register(Box::new(completed.clone()))?;
        registry.register(Box::new(epoch.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self {
            completed,
            epoch,
            bytes,
            duration,
        })
    }
}

/// Plan nodes a checkpointed job may hold: each passes every batch on as
/// soon as it has processed it, so that when the source is polled nothing
/// made from earlier input waits inside the chain. DataFusion's
/// repartitions, sorts, joins and aggregates buffer rows and are refused;
/// its `FilterExec` gathers rows into full batches and is replaced first
/// (`crate::stream_filter::pass_through_filters`).
const PASS_THROUGH_NODES: &[&str] = &[
    "DataSinkExec",
    "ProjectionExec",
    "StreamFilterExec",
    "CooperativeExec",
    "StreamingTableExec",
    "KafkaScanExec",
    "ClassMonitorExec",
    "OversampleExec",
    "IcostExec",
    "TrainExec",
    "ScoreExec",
    "DriftMonitorExec",
];

/// Check that `plan` can be checkpointed: one chain of pass-through nodes
/// from one source to the sink (see the module doc). The error names the
/// first node that is not.
pub fn check_plan(plan: &dyn datafusion::physical_plan::ExecutionPlan) -> Result<()> {
    let name = plan.name();
    if !PASS_THROUGH_NODES.contains(&name) {
        return datafusion::common::plan_err!(
            "a checkpointed job runs one chain of operators from its source to its sink; \
             {name} holds rows back between batches (a repartition, sort, join or \
             aggregate), so its state cannot be cut consistently: move it out of the job, \
             or run without [checkpoint]"
        );
    }
    let children = plan.children();
    if children.len() > 1 || plan.properties().partitioning.partition_count() > 1 {
        return datafusion::common::plan_err!(
            "a checkpointed job runs one chain of operators from one source; {name} reads \
             {} inputs in {} partitions",
            children.len(),
            plan.properties().partitioning.partition_count()
        );
    }
    children
        .first()
        .map_or(Ok(()), |child| check_plan(child.as_ref()))
}
