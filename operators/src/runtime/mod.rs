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
//! - the [`ControlBus`] ([`control`]), where operators publish and subscribe
//!   to [`ControlSignal`]s (stop the sources, reset state after drift);
//! - the [`StateRegistry`] ([`state`]), where stateful operators register a
//!   [`StatefulOperator`] so the job can snapshot and restore them
//!   (checkpoints build on this);
//! - the [`Checkpoints`] coordinator ([`checkpoint`]) and its
//!   [`CheckpointStore`] ([`store`]), when the job checkpoints.
//!
//! The parts below this module (`control`, `state`, and `crate::metrics` for
//! the metric families) import nothing from it.

pub mod checkpoint;
pub mod commits;
pub mod control;
pub mod report;
pub mod state;
pub mod store;

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::common::{Result, exec_datafusion_err, plan_datafusion_err};
use datafusion::execution::config::SessionConfig;
use prometheus::Registry;

pub use checkpoint::{CheckpointMetrics, Checkpoints, StoredCut, check_plan};
pub use commits::{PendingCommit, SourceCommits};
pub use control::{
    ControlBus, ControlReceiver, ControlSignal, DriftEvent, DriftState, SignalTarget,
};
pub use report::{AdvisorReport, AdvisorSegment, OperatorReport, RunReport, VariantScore};
pub use state::{JobSnapshot, OperatorSnapshot, StateRegistry, StatefulOperator};
pub use store::{CheckpointStore, StoredCheckpoint};

use crate::metrics::{ClassLabels, MetricSet};
use crate::sync::lock;

/// Shared services of one job (or one SQL session).
#[derive(Debug)]
pub struct JobRuntime {
    registry: Registry,
    control: ControlBus,
    state: StateRegistry,
    report: Arc<RunReport>,
    commits: SourceCommits,
    checkpoints: Checkpoints,
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
            report: Arc::default(),
            commits: SourceCommits::default(),
            checkpoints: Checkpoints::default(),
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

    /// Typed figures operators report for the job's summary.
    pub fn report(&self) -> &Arc<RunReport> {
        &self.report
    }

    /// Source positions waiting for their rows to be safe downstream.
    pub fn commits(&self) -> &SourceCommits {
        &self.commits
    }

    /// The job's checkpoint coordinator (idle unless the job enables it).
    pub fn checkpoints(&self) -> &Checkpoints {
        &self.checkpoints
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

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntCounter;

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
