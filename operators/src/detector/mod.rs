//! Continuously retrained detectors: the `train_detector` operator
//! (test-then-train) and `score_detector` (a saved model, scoring only).
//!
//! `train_detector('table_or_view', 'label' [, 'options'])` passes every
//! original row through with three more columns:
//!
//! - `prediction` (the label's type): the class the model predicted for
//!   the row *before* learning from it (prequential: a row's prediction
//!   never uses its own label);
//! - `score` (Float64): with two classes, the probability of the minority
//!   class (fewer original rows so far; ties to the greater value); with
//!   more, the probability of the predicted class;
//! - `model_version` (Int64): the version that predicted (1 for the first
//!   model, +1 on every retrain; restored from a snapshot).
//!
//! Then it learns from the row, weighted by `sample_weight` when the input
//! has that column (iCost), else unweighted. Synthetic rows of an upstream
//! oversampler (`is_synthetic`) are learned from but not emitted, so
//! nothing downstream counts or scores them. A row with a NULL label is
//! predicted but not learned; a row with incomplete features (NULL, NaN,
//! infinite) gets a NULL prediction and score, is not learned, and counts
//! as a bad record (`incomplete_features`).
//!
//! The advisor ([`advisor`]): unless `variants=off`, the trainer trains
//! learner variants side by side that differ only in what they learn from
//! (original rows class-balanced; reweighted to the synthetic class mix;
//! original plus synthetic rows; iCost weights; both), scores each
//! prequentially on the original rows, and serves the champion's
//! prediction and score; a challenger replaces it by the rule of
//! [`advisor::Advisor::judge`].
//!
//! Learners (`learner=`): `logistic` (default; [`logistic`]) and `tree`
//! (a Hoeffding tree; [`hoeffding`]).
//!
//! Drift response (River's `DriftRetrainingClassifier` pattern, driven by
//! the job's drift monitors through the control bus): on a warning of a
//! performance signal (a class's recall, the overall error, PerfSim) a
//! background model starts learning beside the live one; on a drift it
//! replaces the live model (or a fresh model does, if no warning came
//! first), the version goes up and `equipoise_model_retrains_total`
//! counts it. Class-prior drift does not retrain (the mix moved, not the
//! concept; the oversampler and iCost adapt to the mix). `retrain=false`
//! turns the response off.
//!
//! Snapshots (`snapshot_dir=`): the model (learner, classes, features,
//! version) as JSON, written atomically (temporary file, then rename) to
//! `<dir>/<operator id>.json` every `snapshot_every` learned rows (default
//! 100,000) and at the end of input, and loaded at start when present.
//! `score_detector('t', 'path/to/train_detector-0.json')` scores with such
//! a file.
//!
//! This module and its files import each other on purpose: it holds the
//! options and columns every file reads and plans the node of [`exec`];
//! the cycle stays inside this folder.

pub mod adaptive_tree;
pub mod advisor;
pub mod advisor_report;
pub mod balance;
pub mod challenger;
pub mod exec;
pub mod hoeffding;
pub mod logistic;
pub mod model;
pub mod score;
pub mod table_function;

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{Result, plan_err};
use datafusion::physical_plan::ExecutionPlan;

use crate::columns::{
    MODEL_VERSION, PREDICTION, SAMPLE_WEIGHT, SCORE, synthetic_marker, with_columns,
};
use crate::features::{FeatureSelection, LabelAndFeatures};
use crate::options::from_option_string;
use crate::runtime::JobRuntime;
use crate::stage::StreamStage;
use advisor::{AdvisorMetric, VariantSet};
use logistic::Optimizer;

/// Which learner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LearnerKind {
    Logistic,
    Tree,
    AdaptiveTree,
}

/// The optimizer's option names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerName {
    Adagrad,
    Adam,
    Cgnm,
}

/// The keys of `train_detector`'s options, typed once. `variants` and
/// `metric` are read by their own rules (`advisor`).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorKeys {
    pub learner: Option<LearnerKind>,
    pub optimizer: Option<OptimizerName>,
    pub rate: Option<f64>,
    pub l2: Option<f64>,
    pub window: Option<usize>,
    pub retrain: Option<bool>,
    pub balance: Option<bool>,
    pub snapshot_dir: Option<PathBuf>,
    pub snapshot_every: Option<u64>,
    pub seed: Option<u64>,
    pub variants: Option<String>,
    pub metric: Option<String>,
    pub margin: Option<f64>,
    pub min_minority: Option<u64>,
    pub confidence: Option<f64>,
    pub features: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
}

/// Options of `train_detector`.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorOptions {
    pub label_column: String,
    pub learner: LearnerKind,
    pub optimizer: Optimizer,
    /// Step size; default 0.5 for AdaGrad, 0.01 for the grouped step.
    pub rate: Option<f64>,
    pub l2: f64,
    /// Rows of the sliding prequential window.
    pub window: usize,
    pub retrain: bool,
    /// Weigh learned rows so that the classes carry equal decayed mass
    /// (see `balance`).
    pub balance: bool,
    pub snapshot_dir: Option<PathBuf>,
    pub snapshot_every: u64,
    pub selection: FeatureSelection,
    /// Seed of the adaptive tree's bootstrap weights.
    pub seed: u64,
    /// The learners trained side by side (`advisor`).
    pub variants: VariantSet,
    /// What the advisor compares them on.
    pub metric: AdvisorMetric,
    /// How much better on `metric` a challenger must be to be promoted.
    pub margin: f64,
    /// Fewest rows of every class in the window before a promotion.
    pub min_minority: u64,
    /// One-sided confidence of the paired test behind a promotion.
    pub confidence: f64,
}

impl DetectorOptions {
    pub fn new(label_column: impl Into<String>) -> Self {
        Self {
            label_column: label_column.into(),
            learner: LearnerKind::Logistic,
            optimizer: Optimizer::AdaGrad,
            rate: None,
            l2: 1e-4,
            window: 1_000,
            retrain: true,
            balance: true,
            snapshot_dir: None,
            snapshot_every: 100_000,
            selection: FeatureSelection::default(),
            seed: 0,
            variants: VariantSet::Available,
            metric: AdvisorMetric::Gmean,
            margin: 0.01,
            min_minority: 20,
            confidence: 0.99,
        }
    }

    /// The advisor's rule.
    pub fn advisor_rule(&self) -> advisor::AdvisorRule {
        advisor::AdvisorRule {
            metric: self.metric,
            window: self.window,
            margin: self.margin,
            min_minority: self.min_minority,
            confidence: self.confidence,
        }
    }

    /// The step size in use.
    pub fn step(&self) -> f64 {
        self.rate.unwrap_or(match self.optimizer {
            Optimizer::AdaGrad => 0.5,
            Optimizer::Cgnm => 0.01,
            Optimizer::Adam => 0.01,
        })
    }

    /// Parse `'learner=tree, window=500, snapshot_dir=/var/models'`.
    pub fn parse(label_column: &str, text: &str) -> Result<Self> {
        Self::from_keys(label_column, from_option_string("train_detector", text)?)
    }

    /// The options `keys` set over the defaults, validated.
    pub fn from_keys(label_column: &str, keys: DetectorKeys) -> Result<Self> {
        let defaults = Self::new(label_column);
        let parsed = Self {
            learner: keys.learner.unwrap_or(defaults.learner),
            optimizer: keys.optimizer.map_or(defaults.optimizer, |o| match o {
                OptimizerName::Adagrad => Optimizer::AdaGrad,
                OptimizerName::Adam => Optimizer::Adam,
                OptimizerName::Cgnm => Optimizer::Cgnm,
            }),
            rate: keys.rate,
            l2: keys.l2.unwrap_or(defaults.l2),
            window: keys.window.unwrap_or(defaults.window),
            retrain: keys.retrain.unwrap_or(defaults.retrain),
            balance: keys.balance.unwrap_or(defaults.balance),
            snapshot_dir: keys.snapshot_dir,
            snapshot_every: keys.snapshot_every.unwrap_or(defaults.snapshot_every),
            seed: keys.seed.unwrap_or(defaults.seed),
            variants: match keys.variants {
                Some(v) => VariantSet::parse(&v)?,
                None => defaults.variants.clone(),
            },
            metric: match keys.metric {
                Some(m) => AdvisorMetric::parse(&m)?,
                None => defaults.metric,
            },
            margin: keys.margin.unwrap_or(defaults.margin),
            min_minority: keys.min_minority.unwrap_or(defaults.min_minority),
            confidence: keys.confidence.unwrap_or(defaults.confidence),
            selection: FeatureSelection::from_options(keys.features, keys.exclude)?,
            ..defaults
        };
        parsed.validate()?;
        Ok(parsed)
    }

    pub fn validate(&self) -> Result<()> {
        let rate = self.step();
        if !(rate.is_finite() && rate > 0.0) {
            return plan_err!("train_detector: rate must be a positive number, got {rate}");
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return plan_err!("train_detector: l2 must be 0 or more, got {}", self.l2);
        }
        if self.window == 0 {
            return plan_err!("train_detector: window must be at least 1 row");
        }
        if self.snapshot_every == 0 {
            return plan_err!("train_detector: snapshot_every must be at least 1 row");
        }
        self.advisor_rule().validate()
    }
}

/// Where the trainer's inputs are.
#[derive(Debug, Clone)]
pub struct DetectorColumns {
    pub label_index: usize,
    pub feature_indices: Vec<usize>,
    pub feature_names: Vec<String>,
    pub weight_index: Option<usize>,
    pub synthetic_index: Option<usize>,
    pub output_schema: SchemaRef,
}

/// The planning side of `train_detector`.
#[derive(Debug, Clone)]
pub struct TrainStage {
    options: DetectorOptions,
}

/// `input`'s fields plus prediction (of `label_type`), score and version.
pub fn scored_schema(input: &Schema, label_type: &DataType) -> SchemaRef {
    with_columns(
        input,
        [
            Field::new(PREDICTION, label_type.clone(), true),
            Field::new(SCORE, DataType::Float64, true),
            Field::new(MODEL_VERSION, DataType::Int64, false),
        ],
    )
}

impl TrainStage {
    pub fn try_new(options: DetectorOptions) -> Result<Self> {
        options.validate()?;
        Ok(Self { options })
    }

    pub fn options(&self) -> &DetectorOptions {
        &self.options
    }

    pub fn columns(&self, input: &SchemaRef) -> Result<DetectorColumns> {
        let mut selection = self.options.selection.clone();
        // A weight column is never a feature.
        if input.index_of(SAMPLE_WEIGHT).is_ok()
            && !selection.exclude.iter().any(|c| c == SAMPLE_WEIGHT)
        {
            selection.exclude.push(SAMPLE_WEIGHT.to_string());
        }
        let LabelAndFeatures {
            label_index,
            feature_indices,
        } = selection.resolve(
            "train_detector",
            input,
            &self.options.label_column,
            &[PREDICTION, SCORE, MODEL_VERSION],
        )?;
        if feature_indices.is_empty() {
            return plan_err!("train_detector: no numeric feature columns to learn from");
        }
        let weight_index = input
            .index_of(SAMPLE_WEIGHT)
            .ok()
            .filter(|&i| input.field(i).data_type().is_floating());
        let synthetic_index = synthetic_marker(input);
        Ok(DetectorColumns {
            feature_names: feature_indices
                .iter()
                .map(|&i| input.field(i).name().clone())
                .collect(),
            output_schema: scored_schema(input, input.field(label_index).data_type()),
            label_index,
            feature_indices,
            weight_index,
            synthetic_index,
        })
    }
}

impl StreamStage for TrainStage {
    fn kind(&self) -> &'static str {
        exec::KIND
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.columns(input)?.output_schema)
    }

    fn plan(
        &self,
        input: Arc<dyn ExecutionPlan>,
        runtime: &Arc<JobRuntime>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        exec::TrainExec::try_new(self.clone(), input, runtime)
    }
}
