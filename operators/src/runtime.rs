//! The job runtime: the one place every streaming operator receives when it is
//! planned.
//!
//! A [`JobRuntime`] travels inside DataFusion's `SessionConfig` as an extension
//! (installed by `equipoise::register_all`). Operators fetch it with
//! [`JobRuntime::from_config`] while they are planned and get three things from
//! it:
//!
//! - the injected [`prometheus::Registry`] (never the process-global default, so
//!   a host application owns its metrics), with [`JobRuntime::metric_set`] to
//!   register each family once however many operator instances share it;
//! - the [`ControlBus`], where operators publish and subscribe to
//!   [`ControlSignal`]s (stop the sources, reset state after drift);
//! - the [`StateRegistry`], where stateful operators register a
//!   [`StatefulOperator`] so the job can snapshot and restore them
//!   (checkpoints build on this).

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::common::{DataFusionError, Result, exec_datafusion_err, plan_datafusion_err};
use datafusion::execution::config::SessionConfig;
use prometheus::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::drift::DriftState;
use crate::metrics::ClassLabels;

/// How many control signals a slow subscriber may fall behind before it
/// misses some. Signals are rare (drift, stop), so this is generous.
const CONTROL_CHANNEL_CAPACITY: usize = 256;

/// Shared services of one job (or one SQL session).
#[derive(Debug)]
pub struct JobRuntime {
    registry: Registry,
    control: ControlBus,
    state: StateRegistry,
    class_labels: Arc<ClassLabels>,
    metric_sets: Mutex<HashMap<&'static str, Arc<dyn Any + Send + Sync>>>,
    operator_ids: Mutex<HashMap<&'static str, usize>>,
}

impl Default for JobRuntime {
    fn default() -> Self {
        Self::new(Registry::new())
    }
}

impl JobRuntime {
    /// A runtime that registers its metrics in `registry`.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            control: ControlBus::new(),
            state: StateRegistry::default(),
            class_labels: Arc::default(),
            metric_sets: Mutex::new(HashMap::new()),
            operator_ids: Mutex::new(HashMap::new()),
        }
    }

    /// The runtime installed in a session's configuration.
    pub fn from_config(config: &SessionConfig) -> Result<Arc<Self>> {
        config.get_extension::<Self>().ok_or_else(|| {
            plan_datafusion_err!(
                "the Equipoise runtime is not installed in this session; \
                 call equipoise::register_all on the SessionContext first"
            )
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn control(&self) -> &ControlBus {
        &self.control
    }

    pub fn state(&self) -> &StateRegistry {
        &self.state
    }

    /// The `class` label of metric series (capped; see [`crate::metrics`]).
    pub fn class_labels(&self) -> &Arc<ClassLabels> {
        &self.class_labels
    }

    /// The metric set `M`, registered in this runtime's registry on first use
    /// and shared afterwards (Prometheus refuses to register a family twice).
    pub fn metric_set<M: MetricSet>(&self) -> Result<Arc<M>> {
        let mut sets = lock(&self.metric_sets)?;
        if let Some(existing) = sets.get(M::NAME) {
            return Arc::clone(existing)
                .downcast::<M>()
                .map_err(|_| exec_datafusion_err!("metric set {} has two types", M::NAME));
        }
        let set =
            Arc::new(M::register(&self.registry).map_err(|e| {
                exec_datafusion_err!("cannot register metric set {}: {e}", M::NAME)
            })?);
        sets.insert(M::NAME, Arc::clone(&set) as Arc<dyn Any + Send + Sync>);
        Ok(set)
    }

    /// A stable identifier for the next operator of `kind`: `kind-0`, `kind-1`,
    /// ... in planning order, so the same job plans the same ids and a snapshot
    /// finds its operator again after a restart.
    pub fn next_operator_id(&self, kind: &'static str) -> Result<String> {
        let mut ids = lock(&self.operator_ids)?;
        let n = ids.entry(kind).or_insert(0);
        let id = format!("{kind}-{n}");
        *n += 1;
        Ok(id)
    }
}

/// A group of Prometheus metrics that one kind of operator exports.
pub trait MetricSet: Send + Sync + 'static {
    /// Unique key of the set within a runtime.
    const NAME: &'static str;
    fn register(registry: &Registry) -> prometheus::Result<Self>
    where
        Self: Sized;
}

/// Which operators a control signal addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignalTarget {
    All,
    /// Every operator of a kind, e.g. `class_monitor`.
    Kind(String),
    /// One operator, by the id it got from [`JobRuntime::next_operator_id`].
    Operator(String),
}

impl SignalTarget {
    pub fn matches(&self, kind: &str, operator_id: &str) -> bool {
        match self {
            Self::All => true,
            Self::Kind(k) => k == kind,
            Self::Operator(id) => id == operator_id,
        }
    }
}

/// A message between operators, or from the job to its operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlSignal {
    /// Sources end their streams after the batch in flight; everything
    /// downstream then drains and the job ends cleanly.
    Stop,
    /// Forget adaptive state (decayed frequencies, reservoirs, models) because
    /// the data no longer looks like what built it. Totals are kept.
    Reset {
        target: SignalTarget,
        reason: String,
    },
    /// A drift monitor's detector entered its warning zone or signalled
    /// drift. Subscribers decide what it means to them: the oversamplers and
    /// iCost shrink their windows on `Drift` (as on a `Reset`), a trainer
    /// starts a background model on `Warning` and promotes it on `Drift`.
    Drift(DriftEvent),
}

impl ControlSignal {
    /// Whether this signal tells the operator `kind`/`operator_id` to forget
    /// adaptive state: a `Reset` addressed to it, or any drift (not a
    /// warning) from a monitor.
    pub fn resets(&self, kind: &str, operator_id: &str) -> bool {
        match self {
            Self::Reset { target, .. } => target.matches(kind, operator_id),
            Self::Drift(event) => event.state == DriftState::Drift,
            Self::Stop => false,
        }
    }

    /// Why, for logs.
    pub fn reason(&self) -> String {
        match self {
            Self::Stop => "stop".to_string(),
            Self::Reset { reason, .. } => reason.clone(),
            Self::Drift(event) => event.to_string(),
        }
    }
}

/// One warning or drift of one detector of a drift monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftEvent {
    /// Id of the monitor operator that published it.
    pub monitor: String,
    /// `adwin`, `ddm_oci`, `hddm_a` or `perfsim`.
    pub detector: String,
    /// What was watched: `class_prior`, `recall`, `error` or `confusion`.
    pub signal: String,
    /// The class the signal is about (its metric label), if any.
    pub class: Option<String>,
    /// `Warning` or `Drift`.
    pub state: DriftState,
    /// Position of the row that raised it among the original (not
    /// synthetic) rows the monitor has seen, from 0.
    pub row: u64,
}

impl std::fmt::Display for DriftEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.signal, self.state.name())?;
        if let Some(class) = &self.class {
            write!(f, " (class {class})")?;
        }
        write!(f, " at row {} [{}]", self.row, self.detector)
    }
}

/// Publish/subscribe channel for [`ControlSignal`]s.
#[derive(Debug)]
pub struct ControlBus {
    sender: broadcast::Sender<ControlSignal>,
    // Stop is also latched here so that a source that subscribes late, or a
    // subscriber that lagged, can never miss it.
    stop_requested: AtomicBool,
}

impl ControlBus {
    fn new() -> Self {
        let (sender, _) = broadcast::channel(CONTROL_CHANNEL_CAPACITY);
        Self {
            sender,
            stop_requested: AtomicBool::new(false),
        }
    }

    /// Send a signal to every current subscriber.
    pub fn publish(&self, signal: ControlSignal) {
        if signal == ControlSignal::Stop {
            self.stop_requested.store(true, Ordering::SeqCst);
        }
        // No subscriber is not an error: nothing listens for that signal yet.
        let _ = self.sender.send(signal);
    }

    pub fn subscribe(&self) -> ControlReceiver {
        ControlReceiver {
            receiver: self.sender.subscribe(),
        }
    }

    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::SeqCst)
    }
}

/// One subscriber's end of the [`ControlBus`].
#[derive(Debug)]
pub struct ControlReceiver {
    receiver: broadcast::Receiver<ControlSignal>,
}

impl ControlReceiver {
    /// Signals that arrived since the last call, without waiting. Operators
    /// call this between batches, so signals take effect at batch boundaries.
    pub fn drain(&mut self) -> Vec<ControlSignal> {
        let mut signals = Vec::new();
        loop {
            match self.receiver.try_recv() {
                Ok(signal) => signals.push(signal),
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "control subscriber lagged; signals were missed");
                }
                Err(
                    broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed,
                ) => break,
            }
        }
        signals
    }
}

/// The serialised state of one operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorSnapshot {
    /// Operator kind, checked on restore so state never lands in the wrong
    /// operator.
    pub kind: String,
    /// Version of the operator's state layout.
    pub version: u32,
    pub state: serde_json::Value,
}

/// The state of every stateful operator of a job, keyed by operator id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobSnapshot {
    pub operators: BTreeMap<String, OperatorSnapshot>,
}

/// Implemented by every operator that keeps state across batches.
pub trait StatefulOperator: Send + Sync {
    fn operator_id(&self) -> &str;
    fn snapshot(&self) -> Result<OperatorSnapshot>;
    fn restore(&self, snapshot: &OperatorSnapshot) -> Result<()>;
}

/// The stateful operators of a job, and the snapshot they restore from.
///
/// Operators are held for the life of the runtime, so the state of a stream
/// that has ended can still be snapshotted (the final checkpoint of a job).
/// A runtime belongs to one job; a long-lived session that plans many
/// stateful queries on one runtime calls [`StateRegistry::clear`] between
/// them.
#[derive(Default)]
pub struct StateRegistry {
    inner: Mutex<StateRegistryInner>,
}

#[derive(Default)]
struct StateRegistryInner {
    operators: BTreeMap<String, Arc<dyn StatefulOperator>>,
    pending_restore: JobSnapshot,
}

impl std::fmt::Debug for StateRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateRegistry").finish_non_exhaustive()
    }
}

impl StateRegistry {
    /// Make `snapshot` the state that operators registered from now on
    /// restore from.
    pub fn set_restore_point(&self, snapshot: JobSnapshot) -> Result<()> {
        lock(&self.inner)?.pending_restore = snapshot;
        Ok(())
    }

    /// Register an operator, restoring it first if the restore point holds
    /// state for its id. A later operator with the same id replaces it.
    pub fn register(&self, operator: &Arc<dyn StatefulOperator>) -> Result<()> {
        let mut inner = lock(&self.inner)?;
        let id = operator.operator_id().to_string();
        if let Some(snapshot) = inner.pending_restore.operators.remove(&id) {
            operator.restore(&snapshot)?;
        }
        inner.operators.insert(id, Arc::clone(operator));
        Ok(())
    }

    /// Forget every registered operator.
    pub fn clear(&self) -> Result<()> {
        lock(&self.inner)?.operators.clear();
        Ok(())
    }

    /// Snapshot every registered operator.
    pub fn snapshot_all(&self) -> Result<JobSnapshot> {
        // Snapshot outside the lock: an operator may take its own locks.
        let live: Vec<(String, Arc<dyn StatefulOperator>)> = lock(&self.inner)?
            .operators
            .iter()
            .map(|(id, op)| (id.clone(), Arc::clone(op)))
            .collect();
        let mut snapshot = JobSnapshot::default();
        for (id, op) in live {
            snapshot.operators.insert(id, op.snapshot()?);
        }
        Ok(snapshot)
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    mutex
        .lock()
        .map_err(|_| DataFusionError::Internal("a lock was poisoned by a panic".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntCounter;

    struct Counter {
        id: String,
        value: Mutex<u64>,
    }

    impl StatefulOperator for Counter {
        fn operator_id(&self) -> &str {
            &self.id
        }
        fn snapshot(&self) -> Result<OperatorSnapshot> {
            Ok(OperatorSnapshot {
                kind: "counter".into(),
                version: 1,
                state: serde_json::json!(*lock(&self.value)?),
            })
        }
        fn restore(&self, snapshot: &OperatorSnapshot) -> Result<()> {
            *lock(&self.value)? = snapshot.state.as_u64().unwrap_or_default();
            Ok(())
        }
    }

    #[test]
    fn snapshot_restores_into_a_new_operator_with_the_same_id() -> Result<()> {
        let first = JobRuntime::default();
        let op: Arc<dyn StatefulOperator> = Arc::new(Counter {
            id: first.next_operator_id("counter")?,
            value: Mutex::new(41),
        });
        first.state().register(&op)?;
        let snapshot = first.state().snapshot_all()?;
        assert_eq!(snapshot.operators["counter-0"].state, serde_json::json!(41));

        let second = JobRuntime::default();
        second.state().set_restore_point(snapshot)?;
        let restored = Arc::new(Counter {
            id: second.next_operator_id("counter")?,
            value: Mutex::new(0),
        });
        second
            .state()
            .register(&(Arc::clone(&restored) as Arc<dyn StatefulOperator>))?;
        assert_eq!(*lock(&restored.value)?, 41);
        Ok(())
    }

    #[test]
    fn state_outlives_the_plan_until_cleared() -> Result<()> {
        let runtime = JobRuntime::default();
        let op: Arc<dyn StatefulOperator> = Arc::new(Counter {
            id: "counter-0".into(),
            value: Mutex::new(1),
        });
        runtime.state().register(&op)?;
        drop(op);
        assert_eq!(runtime.state().snapshot_all()?.operators.len(), 1);
        runtime.state().clear()?;
        assert!(runtime.state().snapshot_all()?.operators.is_empty());
        Ok(())
    }

    #[test]
    fn stop_is_latched_and_broadcast() {
        let bus = ControlBus::new();
        let mut early = bus.subscribe();
        assert!(!bus.stop_requested());
        bus.publish(ControlSignal::Stop);
        assert!(bus.stop_requested());
        assert_eq!(early.drain(), vec![ControlSignal::Stop]);
        assert!(early.drain().is_empty());
    }

    struct Rows(IntCounter);
    impl MetricSet for Rows {
        const NAME: &'static str = "rows";
        fn register(registry: &Registry) -> prometheus::Result<Self> {
            let c = IntCounter::new("test_rows_total", "rows")?;
            registry.register(Box::new(c.clone()))?;
            Ok(Self(c))
        }
    }

    #[test]
    fn metric_sets_register_once_and_are_shared() -> Result<()> {
        let runtime = JobRuntime::default();
        runtime.metric_set::<Rows>()?.0.inc();
        runtime.metric_set::<Rows>()?.0.inc();
        let families = runtime.registry().gather();
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].get_metric()[0].get_counter().get_value(), 2.0);
        Ok(())
    }
}
