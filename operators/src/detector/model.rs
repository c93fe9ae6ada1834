//! A versioned, serialisable model: the learner, the classes its slots
//! stand for, the features it reads (by name), and how it is written to
//! and read from disk.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_datafusion_err, plan_err};
use serde::{Deserialize, Serialize};

use super::adaptive_tree::AdaptiveHoeffdingTree;
use super::hoeffding::HoeffdingTree;
use super::logistic::OnlineLogistic;
use super::{DetectorOptions, LearnerKind};
use crate::class_label::ClassValue;

/// Layout version of the snapshot file.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// An online learner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Learner {
    Logistic(OnlineLogistic),
    Tree(HoeffdingTree),
    AdaptiveTree(AdaptiveHoeffdingTree),
}

impl Learner {
    /// An untrained learner as `options` ask.
    pub fn fresh(options: &DetectorOptions) -> Self {
        match options.learner {
            LearnerKind::Logistic => Self::Logistic(OnlineLogistic::new(
                options.step(),
                options.l2,
                options.optimizer,
            )),
            LearnerKind::Tree => Self::Tree(HoeffdingTree::default()),
            LearnerKind::AdaptiveTree => {
                Self::AdaptiveTree(AdaptiveHoeffdingTree::new(options.seed))
            }
        }
    }

    /// The learner a retrain starts from: the logistic model warm (its
    /// weights and scaler) with fresh steps; a new tree (a tree cannot
    /// unlearn its splits).
    pub fn retrained_from(&self, options: &DetectorOptions) -> Self {
        match self {
            Self::Logistic(m) => Self::Logistic(m.with_fresh_steps()),
            Self::Tree(_) | Self::AdaptiveTree(_) => Self::fresh(options),
        }
    }

    /// Subtrees an adaptive tree has replaced by their alternates (0 for
    /// the other learners).
    pub fn subtrees_replaced(&self) -> u64 {
        match self {
            Self::AdaptiveTree(m) => m.subtrees_replaced,
            Self::Logistic(_) | Self::Tree(_) => 0,
        }
    }

    /// Probabilities per class slot (empty before anything was learned).
    pub fn predict_proba(&self, x: &[f64], out: &mut Vec<f64>) {
        match self {
            Self::Logistic(m) => m.predict_proba(x, out),
            Self::Tree(m) => m.predict_proba(x, out),
            Self::AdaptiveTree(m) => m.predict_proba(x, out),
        }
    }

    /// Learn one row; `scratch` is reused space (no allocation per row).
    pub fn learn(&mut self, x: &[f64], class: usize, weight: f64, scratch: &mut Vec<f64>) {
        match self {
            Self::Logistic(m) => m.learn_with(x, class, weight, scratch),
            Self::Tree(m) => m.learn(x, class, weight, scratch),
            Self::AdaptiveTree(m) => m.learn(x, class, weight, scratch),
        }
    }
}

/// The kind of value the label holds, for the prediction column of a
/// scoring-only plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelKind {
    Integer,
    Boolean,
    String,
}

impl LabelKind {
    pub fn of(data_type: &DataType) -> Self {
        if data_type.is_integer() {
            Self::Integer
        } else if data_type == &DataType::Boolean {
            Self::Boolean
        } else {
            Self::String
        }
    }

    pub fn data_type(self) -> DataType {
        match self {
            Self::Integer => DataType::Int64,
            Self::Boolean => DataType::Boolean,
            Self::String => DataType::Utf8,
        }
    }
}

/// Everything needed to score with a model, and to go on training it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSnapshot {
    pub format: u32,
    pub version: u64,
    /// The class of each slot of the learner.
    pub classes: Vec<ClassValue>,
    /// Original rows per class slot (decides the minority for `score`).
    pub class_rows: Vec<u64>,
    pub features: Vec<String>,
    pub label_kind: LabelKind,
    pub rows_learned: u64,
    pub learner: Learner,
}

impl ModelSnapshot {
    /// `<dir>/<operator id>.json`.
    pub fn path_in(dir: &Path, operator_id: &str) -> PathBuf {
        dir.join(format!("{operator_id}.json"))
    }

    /// Write to `path` atomically: a temporary file beside it, then a
    /// rename, so a reader (or a crash) never sees half a model.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec(self)
            .map_err(|e| exec_datafusion_err!("cannot serialise the model: {e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                exec_datafusion_err!("cannot create model directory {}: {e}", dir.display())
            })?;
        }
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, text)
            .map_err(|e| exec_datafusion_err!("cannot write model {}: {e}", temporary.display()))?;
        std::fs::rename(&temporary, path)
            .map_err(|e| exec_datafusion_err!("cannot replace model {}: {e}", path.display()))
    }

    /// Read a snapshot; a missing, unreadable or foreign file is a plan
    /// error naming it.
    pub fn read(path: &Path) -> Result<Self> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) => return plan_err!("cannot read model {}: {e}", path.display()),
        };
        let snapshot: Self = match serde_json::from_slice(&text) {
            Ok(s) => s,
            Err(e) => return plan_err!("{} is not an Equipoise model: {e}", path.display()),
        };
        if snapshot.format != SNAPSHOT_FORMAT {
            return plan_err!(
                "{} has model format {}, this build reads {SNAPSHOT_FORMAT}",
                path.display(),
                snapshot.format
            );
        }
        Ok(snapshot)
    }
}

/// The minority of two classes: the slot with fewer original rows, ties to
/// the greater class value. Its probability is a binary detector's score.
pub fn minority_of_two(classes: &[ClassValue], class_rows: &[u64]) -> usize {
    let rows = |s: usize| class_rows.get(s).copied().unwrap_or(0);
    match rows(0).cmp(&rows(1)) {
        std::cmp::Ordering::Less => 0,
        std::cmp::Ordering::Greater => 1,
        std::cmp::Ordering::Equal => usize::from(classes.get(1) > classes.first()),
    }
}

/// Predicted classes as a column of `data_type`.
pub fn class_column(values: &[Option<ClassValue>], data_type: &DataType) -> Result<ArrayRef> {
    let array: ArrayRef = match LabelKind::of(data_type) {
        LabelKind::Integer => std::sync::Arc::new(
            values
                .iter()
                .map(|v| match v {
                    Some(ClassValue::Int(i)) => Some(*i),
                    _ => None,
                })
                .collect::<Int64Array>(),
        ),
        LabelKind::Boolean => std::sync::Arc::new(
            values
                .iter()
                .map(|v| match v {
                    Some(ClassValue::Bool(b)) => Some(*b),
                    _ => None,
                })
                .collect::<BooleanArray>(),
        ),
        LabelKind::String => std::sync::Arc::new(
            values
                .iter()
                .map(|v| v.as_ref().map(ToString::to_string))
                .collect::<StringArray>(),
        ),
    };
    Ok(cast(&array, data_type)?)
}
