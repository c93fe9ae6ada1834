//! The hook between sources that can commit their progress (Kafka offsets)
//! and whoever knows that the rows made from it are safe downstream.
//!
//! A source whose stream ended normally hands its final positions over,
//! under its operator id, instead of committing them itself. A sink that
//! has had every row of its plan acknowledged commits the positions of the
//! sources of that plan, and only those. With checkpoints, a completed
//! checkpoint commits the positions its cut covered through the same
//! handle; under exactly-once the sink sends them inside its transaction
//! instead, reading them through [`PendingCommit::as_any`].

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::common::{DataFusionError, Result};

use crate::sync::lock;

/// Positions a source may commit once told to.
pub trait PendingCommit: fmt::Debug + Send + Sync {
    /// Commit the positions. May block on the network: callers run it on
    /// the blocking pool.
    fn commit(&self) -> Result<()>;
    /// The concrete positions, for a sink that commits them its own way
    /// (in a Kafka transaction).
    fn as_any(&self) -> &dyn Any;
}

/// Positions handed over by sources, by source operator id.
#[derive(Debug, Default)]
pub struct SourceCommits {
    pending: Mutex<BTreeMap<String, Arc<dyn PendingCommit>>>,
}

impl SourceCommits {
    /// `source_id`'s positions, replacing any it handed over before.
    pub fn hand_over(&self, source_id: &str, commit: Arc<dyn PendingCommit>) -> Result<()> {
        lock(&self.pending)?.insert(source_id.to_string(), commit);
        Ok(())
    }

    /// Commit the positions `sources` handed over, on the blocking pool;
    /// how many sources committed.
    pub async fn commit(&self, sources: &[String]) -> Result<usize> {
        let taken: Vec<Arc<dyn PendingCommit>> = {
            let mut pending = lock(&self.pending)?;
            sources.iter().filter_map(|id| pending.remove(id)).collect()
        };
        let count = taken.len();
        tokio::task::spawn_blocking(move || taken.iter().try_for_each(|c| c.commit()))
            .await
            .map_err(|e| DataFusionError::Internal(format!("a commit did not finish: {e}")))??;
        Ok(count)
    }
}
