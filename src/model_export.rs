//! `equipoise export-model`: the detectors' models of a job's newest
//! checkpoint, written as the model files `score_detector` loads (the
//! layout `--model-dir` writes: `<dir>/<operator id>.json`).

use std::path::{Path, PathBuf};

use datafusion::common::{Result, exec_datafusion_err, plan_err};
use equipoise_operators::detector::model::ModelSnapshot;
use equipoise_operators::runtime::CheckpointStore;

/// The kind under which a detector's state is checkpointed.
const DETECTOR_KIND: &str = "train_detector";

/// Write the model of every detector (or of `operator` alone) in the
/// newest checkpoint of `store` into `dir`; the files written, and the
/// checkpoint's epoch.
pub async fn export_models(
    store: &CheckpointStore,
    operator: Option<&str>,
    dir: &Path,
) -> Result<(u64, Vec<PathBuf>)> {
    let Some(checkpoint) = store.latest().await? else {
        return plan_err!("no checkpoint in {}", store.url());
    };
    let mut written = Vec::new();
    for (id, snapshot) in &checkpoint.snapshot.operators {
        if snapshot.kind != DETECTOR_KIND || operator.is_some_and(|wanted| wanted != id) {
            continue;
        }
        // Read back as a model first: what is written loads.
        let model: ModelSnapshot = serde_json::from_value(snapshot.state["model"].clone())
            .map_err(|e| {
                exec_datafusion_err!("checkpoint {}: {id}: no model: {e}", checkpoint.epoch)
            })?;
        let bytes = serde_json::to_vec(&model)
            .map_err(|e| exec_datafusion_err!("cannot serialise the model of {id}: {e}"))?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| exec_datafusion_err!("cannot create {}: {e}", dir.display()))?;
        let path = ModelSnapshot::path_in(dir, id);
        tokio::fs::write(&path, bytes)
            .await
            .map_err(|e| exec_datafusion_err!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    if written.is_empty() {
        return match operator {
            Some(wanted) => plan_err!(
                "checkpoint {} in {} has no detector {wanted}",
                checkpoint.epoch,
                store.url()
            ),
            None => plan_err!(
                "checkpoint {} in {} has no detector",
                checkpoint.epoch,
                store.url()
            ),
        };
    }
    Ok((checkpoint.epoch, written))
}
