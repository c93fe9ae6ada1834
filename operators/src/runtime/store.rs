//! Where checkpoints live: any `object_store` location: a local directory
//! (the default), `s3://` (and S3-compatible stores through
//! `AWS_ENDPOINT`), `gs://`, `az://`/`abfss://`. One object per
//! checkpoint, `checkpoint-<epoch>.json`:
//!
//! ```text
//! {"format":1,"epoch":12,"body_bytes":5321,"crc32":305419896}\n
//! <the JobSnapshot as JSON, body_bytes long>
//! ```
//!
//! A put is atomic in every `object_store` backend (the local one writes a
//! temporary file and renames it), so a crash leaves the previous
//! checkpoint whole. Reading checks the length and the CRC-32 of the body:
//! a truncated or corrupt checkpoint is reported in one line and the one
//! before it is used; one written by an unknown format version is an error,
//! since silently starting from older state would replay records the
//! newer checkpoint had already committed.

use std::sync::Arc;

use datafusion::common::{DataFusionError, Result, exec_datafusion_err, plan_datafusion_err};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::state::JobSnapshot;

/// The layout this build writes and reads.
pub const CHECKPOINT_FORMAT: u32 = 1;

const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".json";

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: u32,
    epoch: u64,
    body_bytes: usize,
    crc32: u32,
}

/// A checkpoint read back from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCheckpoint {
    pub epoch: u64,
    pub snapshot: JobSnapshot,
}

/// A job's checkpoints in one object-store location.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
    keep: usize,
}

impl CheckpointStore {
    /// The store at `location`: an object-store URL (`file:///var/lib/x`,
    /// or `s3://...` in a build with that backend) or a local directory
    /// path. Keeps the newest `keep` checkpoints (at least one).
    pub fn open(location: &str, keep: usize) -> Result<Self> {
        // Credentials, region and endpoint of a cloud store come from the
        // environment as each SDK names them (`AWS_ACCESS_KEY_ID`,
        // `AWS_ENDPOINT`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`,
        // ...); other variables are ignored.
        Self::open_with(location, keep, std::env::vars())
    }

    /// [`Self::open`] with a cloud store's settings given as `options`
    /// (`aws_endpoint`, `aws_region`, ...: object_store's config keys)
    /// instead of read from the environment.
    pub fn open_with(
        location: &str,
        keep: usize,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let url = match url::Url::parse(location) {
            Ok(url) if url.scheme().len() > 1 => url,
            // Not a URL (or a Windows drive letter): a local directory.
            _ => {
                let path = std::path::absolute(location)
                    .map_err(|e| plan_datafusion_err!("checkpoint store '{location}': {e}"))?;
                url::Url::from_directory_path(&path).map_err(|()| {
                    plan_datafusion_err!(
                        "checkpoint store '{location}' is neither a URL nor a directory path"
                    )
                })?
            }
        };
        let (store, root) = object_store::parse_url_opts(&url, options).map_err(|e| {
            plan_datafusion_err!(
                "checkpoint store '{location}': {e} (local directories, file://, s3://, \
                 gs:// and az:// or abfss:// URLs)"
            )
        })?;
        Ok(Self {
            store: Arc::from(store),
            root,
            url: url.to_string(),
            keep: keep.max(1),
        })
    }

    /// The store of one part of a job (a Kafka partition's state), in the
    /// folder `name` below this one.
    pub fn scoped(&self, name: &str) -> Self {
        Self {
            store: Arc::clone(&self.store),
            root: self.root.clone().join(name),
            url: format!("{}/{name}", self.url.trim_end_matches('/')),
            keep: self.keep,
        }
    }

    /// The store's URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path_of(&self, epoch: u64) -> Path {
        self.root
            .clone()
            .join(format!("{PREFIX}{epoch:020}{SUFFIX}"))
    }

    /// Write checkpoint `epoch`, then delete all but the newest `keep`;
    /// the bytes written.
    pub async fn write(&self, epoch: u64, snapshot: &JobSnapshot) -> Result<usize> {
        let body = serde_json::to_vec(snapshot)
            .map_err(|e| exec_datafusion_err!("cannot serialise checkpoint {epoch}: {e}"))?;
        let header = Header {
            format: CHECKPOINT_FORMAT,
            epoch,
            body_bytes: body.len(),
            crc32: crc32fast::hash(&body),
        };
        let mut bytes = serde_json::to_vec(&header)
            .map_err(|e| exec_datafusion_err!("cannot serialise checkpoint {epoch}: {e}"))?;
        bytes.push(b'\n');
        bytes.extend_from_slice(&body);
        let written = bytes.len();
        self.store
            .put(&self.path_of(epoch), PutPayload::from(bytes))
            .await
            .map_err(|e| self.error("write", &e))?;
        self.prune().await?;
        Ok(written)
    }

    /// The epochs stored, oldest first.
    pub async fn epochs(&self) -> Result<Vec<u64>> {
        // This folder only: scoped stores ([`Self::scoped`]) live below it.
        let listed = self
            .store
            .list_with_delimiter(Some(&self.root))
            .await
            .map_err(|e| self.error("list", &e))?;
        let mut epochs: Vec<u64> = listed
            .objects
            .iter()
            .filter_map(|meta| {
                meta.location
                    .filename()?
                    .strip_prefix(PREFIX)?
                    .strip_suffix(SUFFIX)?
                    .parse()
                    .ok()
            })
            .collect();
        epochs.sort_unstable();
        Ok(epochs)
    }

    /// The newest checkpoint that reads back whole, if any. Truncated or
    /// corrupt ones are reported and passed over.
    pub async fn latest(&self) -> Result<Option<StoredCheckpoint>> {
        Ok(self.readable_newest_first(1).await?.pop())
    }

    /// Every checkpoint that reads back whole, newest first (damaged ones
    /// reported and passed over), for a job that chooses among them.
    pub async fn readable(&self) -> Result<Vec<StoredCheckpoint>> {
        self.readable_newest_first(usize::MAX).await
    }

    /// Up to `most` checkpoints that read back whole, newest first.
    async fn readable_newest_first(&self, most: usize) -> Result<Vec<StoredCheckpoint>> {
        let mut readable = Vec::new();
        for epoch in self.epochs().await?.into_iter().rev() {
            if readable.len() == most {
                break;
            }
            match self.read(epoch).await {
                Ok(checkpoint) => readable.push(checkpoint),
                Err(ReadError::Damaged(why)) => tracing::warn!(
                    store = %self.url,
                    epoch,
                    "checkpoint {epoch} is damaged ({why}); using the one before it"
                ),
                Err(ReadError::Fatal(e)) => return Err(e),
            }
        }
        Ok(readable)
    }

    async fn read(&self, epoch: u64) -> std::result::Result<StoredCheckpoint, ReadError> {
        let bytes = self
            .store
            .get(&self.path_of(epoch))
            .await
            .map_err(|e| ReadError::Fatal(self.error("read", &e)))?
            .bytes()
            .await
            .map_err(|e| ReadError::Fatal(self.error("read", &e)))?;
        let Some(newline) = bytes.iter().position(|b| *b == b'\n') else {
            return Err(ReadError::Damaged("no header".into()));
        };
        let header: Header = serde_json::from_slice(&bytes[..newline])
            .map_err(|e| ReadError::Damaged(format!("unreadable header: {e}")))?;
        if header.format != CHECKPOINT_FORMAT {
            return Err(ReadError::Fatal(plan_datafusion_err!(
                "checkpoint {epoch} in {} has format version {}; this build reads version \
                 {CHECKPOINT_FORMAT} (restore it with the release that wrote it, or point \
                 [checkpoint] url at an empty location)",
                self.url,
                header.format
            )));
        }
        let body = &bytes[newline + 1..];
        if body.len() != header.body_bytes {
            return Err(ReadError::Damaged(format!(
                "{} body bytes, the header says {}",
                body.len(),
                header.body_bytes
            )));
        }
        if crc32fast::hash(body) != header.crc32 {
            return Err(ReadError::Damaged("checksum mismatch".into()));
        }
        let snapshot = serde_json::from_slice(body)
            .map_err(|e| ReadError::Damaged(format!("unreadable body: {e}")))?;
        Ok(StoredCheckpoint {
            epoch: header.epoch,
            snapshot,
        })
    }

    async fn prune(&self) -> Result<()> {
        let epochs = self.epochs().await?;
        let excess = epochs.len().saturating_sub(self.keep);
        for epoch in &epochs[..excess] {
            self.store
                .delete(&self.path_of(*epoch))
                .await
                .map_err(|e| self.error("delete", &e))?;
        }
        Ok(())
    }

    fn error(&self, what: &str, e: &object_store::Error) -> DataFusionError {
        exec_datafusion_err!("checkpoint store {}: cannot {what}: {e}", self.url)
    }
}

enum ReadError {
    /// Passed over: the checkpoint before it is used.
    Damaged(String),
    /// Stops the restore.
    Fatal(DataFusionError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::OperatorSnapshot;

    fn snapshot(value: u64) -> JobSnapshot {
        let mut snapshot = JobSnapshot::default();
        snapshot.operators.insert(
            "counter-0".into(),
            OperatorSnapshot {
                kind: "counter".into(),
                version: 1,
                state: serde_json::json!(value),
            },
        );
        snapshot
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("equipoise-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn keeps_the_newest_and_falls_back_past_a_damaged_one() -> Result<()> {
        let dir = temp_dir("fallback");
        let store = CheckpointStore::open(&dir.to_string_lossy(), 2)?;
        for epoch in 1..=3 {
            store.write(epoch, &snapshot(epoch * 10)).await?;
        }
        assert_eq!(store.epochs().await?, vec![2, 3]);
        let latest = store.latest().await?;
        assert_eq!(latest.map(|c| c.epoch), Some(3));

        // Truncate the newest: the one before it is restored.
        let newest = dir.join(format!("{PREFIX}{:020}{SUFFIX}", 3));
        let bytes = std::fs::read(&newest).map_err(DataFusionError::from)?;
        std::fs::write(&newest, &bytes[..bytes.len() - 3]).map_err(DataFusionError::from)?;
        let latest = store.latest().await?.map(|c| (c.epoch, c.snapshot));
        assert_eq!(latest, Some((2, snapshot(20))));

        // Flip a byte of the body: the checksum catches it.
        let older = dir.join(format!("{PREFIX}{:020}{SUFFIX}", 2));
        let mut bytes = std::fs::read(&older).map_err(DataFusionError::from)?;
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        std::fs::write(&older, &bytes).map_err(DataFusionError::from)?;
        assert_eq!(store.latest().await?, None);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[tokio::test]
    async fn an_unknown_format_version_is_an_error() -> Result<()> {
        let dir = temp_dir("format");
        let store = CheckpointStore::open(&format!("file://{}", dir.display()), 3)?;
        store.write(7, &snapshot(1)).await?;
        let path = dir.join(format!("{PREFIX}{:020}{SUFFIX}", 7));
        let text = std::fs::read_to_string(&path).map_err(DataFusionError::from)?;
        std::fs::write(&path, text.replacen("\"format\":1", "\"format\":9", 1))
            .map_err(DataFusionError::from)?;
        let error = store.latest().await.err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("format version 9")),
            "{error:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
