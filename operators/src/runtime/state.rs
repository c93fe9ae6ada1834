//! Operator state that survives a restart, under each operator's stable id.
//! Every stateful operator registers a [`StatefulOperator`] handle: an
//! operator's stream shares its processor with the registry
//! (`batch_stream::processed_stream`), sources register their positions. The job takes
//! them all as one [`JobSnapshot`], and a new plan's operators restore from
//! one set as the restore point.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use datafusion::common::{Result, exec_datafusion_err, plan_err};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::sync::lock;

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

impl OperatorSnapshot {
    /// `state` of operator `operator_id`, as a snapshot of `kind` at layout
    /// `version`.
    pub fn encode<T: Serialize>(
        operator_id: &str,
        kind: &str,
        version: u32,
        state: &T,
    ) -> Result<Self> {
        let state = serde_json::to_value(state)
            .map_err(|e| exec_datafusion_err!("cannot snapshot {operator_id}: {e}"))?;
        Ok(Self {
            kind: kind.to_string(),
            version,
            state,
        })
    }

    /// The state of this snapshot for operator `operator_id`, which keeps
    /// `kind` state at layout `version`; an error when the snapshot is of
    /// another kind or version, or does not read as `T`.
    pub fn decode<T: DeserializeOwned>(
        &self,
        operator_id: &str,
        kind: &str,
        version: u32,
    ) -> Result<T> {
        if self.kind != kind || self.version != version {
            return plan_err!(
                "cannot restore {operator_id} ({kind} v{version}) from a {} v{} snapshot",
                self.kind,
                self.version
            );
        }
        serde_json::from_value(self.state.clone())
            .map_err(|e| exec_datafusion_err!("corrupt snapshot for {operator_id}: {e}"))
    }
}

/// The state of every stateful operator of a job, keyed by operator id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobSnapshot {
    pub operators: BTreeMap<String, OperatorSnapshot>,
}

/// An operator's handle to its state, for checkpoints (a cut snapshots
/// every registered handle while their streams wait on the source).
pub trait StatefulOperator: Send + Sync {
    fn operator_id(&self) -> &str;
    /// `None` for an operator that keeps no snapshot.
    fn snapshot(&self) -> Result<Option<OperatorSnapshot>>;
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

    /// Track an operator that restored itself (from
    /// [`Self::restore_point`]); a later one with the same id replaces it.
    pub fn track(&self, operator: Arc<dyn StatefulOperator>) -> Result<()> {
        let id = operator.operator_id().to_string();
        lock(&self.inner)?.operators.insert(id, operator);
        Ok(())
    }

    /// The restore point's state for `operator_id`, if it holds any. Read,
    /// not taken: a plan executed twice restores from the same point.
    pub fn restore_point(&self, operator_id: &str) -> Result<Option<OperatorSnapshot>> {
        Ok(lock(&self.inner)?
            .pending_restore
            .operators
            .get(operator_id)
            .cloned())
    }

    /// Ids the restore point holds state for that no registered operator
    /// has: state a changed job no longer uses.
    pub fn unclaimed(&self) -> Result<Vec<String>> {
        let inner = lock(&self.inner)?;
        Ok(inner
            .pending_restore
            .operators
            .keys()
            .filter(|id| !inner.operators.contains_key(*id))
            .cloned()
            .collect())
    }

    /// Forget every registered operator.
    pub fn clear(&self) -> Result<()> {
        lock(&self.inner)?.operators.clear();
        Ok(())
    }

    /// A snapshot of every registered operator that keeps one.
    pub fn snapshot_all(&self) -> Result<JobSnapshot> {
        // Snapshot outside the lock: an operator may take its own locks.
        let live: Vec<(String, Arc<dyn StatefulOperator>)> = lock(&self.inner)?
            .operators
            .iter()
            .map(|(id, op)| (id.clone(), Arc::clone(op)))
            .collect();
        let mut snapshot = JobSnapshot::default();
        for (id, op) in live {
            if let Some(state) = op.snapshot()? {
                snapshot.operators.insert(id, state);
            }
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::JobRuntime;

    struct Counter {
        id: String,
        value: Mutex<u64>,
    }

    impl StatefulOperator for Counter {
        fn operator_id(&self) -> &str {
            &self.id
        }
        fn snapshot(&self) -> Result<Option<OperatorSnapshot>> {
            Ok(Some(OperatorSnapshot {
                kind: "counter".into(),
                version: 1,
                state: serde_json::json!(*lock(&self.value)?),
            }))
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
    fn state_no_operator_claims_is_reported() -> Result<()> {
        let runtime = JobRuntime::default();
        let mut snapshot = JobSnapshot::default();
        for id in ["counter-0", "counter-1"] {
            snapshot.operators.insert(
                id.to_string(),
                OperatorSnapshot {
                    kind: "counter".into(),
                    version: 1,
                    state: serde_json::json!(3),
                },
            );
        }
        runtime.state().set_restore_point(snapshot)?;
        runtime.state().track(Arc::new(Counter {
            id: "counter-0".into(),
            value: Mutex::new(0),
        }))?;
        assert_eq!(runtime.state().unclaimed()?, vec!["counter-1".to_string()]);
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
}
