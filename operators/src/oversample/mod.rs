//! Oversampling operators: `random_oversample`, `smote`, `borderline_smote`
//! (kind 1), `adasyn` and `qc_smote`, one method per file over one shared
//! execution node ([`exec::OversampleExec`]).
//!
//! Output: every input column unchanged, then `is_synthetic` (Boolean) and
//! `synthetic_kind` (Utf8: NULL for original rows, `interpolated` or
//! `duplicate`). Original rows pass through in input order; synthetic rows
//! follow the originals of the batch that triggered them.
//!
//! Features are the numeric (integer and float) columns other than the
//! label, or those named by `features=`, minus `exclude=`. Synthetic rows
//! interpolate the feature columns (integers rounded to the nearest) and
//! copy every other column from their seed. A row with a NULL label, or a
//! NULL or non-finite feature, passes through but is never a seed or a
//! neighbour; rows with a label count towards their class's size whatever
//! their features.
//!
//! Bounded input (the node asks its input): rows pass through as they come
//! and the synthetic rows are made after the last batch, from every row
//! (up to `window` rows per class), in the numbers imbalanced-learn's
//! `fit_resample` would make. Unbounded input: per-class ring buffers of the
//! newest `window` rows; per-row time-decayed class weights decide how many
//! rows each batch needs to move the output towards the target mix, and
//! those rows are generated from the buffers as they stood *before* the
//! batch (no look-ahead). A `Reset` control signal for the operator, or a
//! drift (not a warning) from any `drift_monitor` of the job, shrinks the
//! buffers to their newest tenth and forgets the decayed
//! mix. See `reservoir` for why ring buffers.
//!
//! This module and its method files import each other on purpose: it holds
//! the options and synthetic-row types every method reads and dispatches
//! to the methods; the cycle stays inside this folder.

pub mod adasyn;
pub mod borderline_smote;
pub mod exec;
pub mod neighbourhood;
pub mod qc_smote;
pub mod random_oversample;
pub mod reservoir;
pub mod smote;
pub mod strategy;
pub mod table_function;

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::common::{Result, plan_err};
use datafusion::physical_plan::ExecutionPlan;

use crate::class_label::ClassValue;
use crate::columns::{IS_SYNTHETIC, SYNTHETIC_KIND, with_columns};
use crate::features::{FeatureSelection, LabelAndFeatures, column_list};
use crate::options::from_option_string;
use crate::rng::Rng;
use crate::runtime::JobRuntime;
use crate::stage::{Mode, StreamStage};
use reservoir::ReferenceSet;
pub use strategy::SamplingStrategy;

/// The oversampling methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    RandomOversample,
    Smote,
    BorderlineSmote,
    Adasyn,
    QcSmote,
}

impl Method {
    pub const ALL: [Method; 5] = [
        Method::RandomOversample,
        Method::Smote,
        Method::BorderlineSmote,
        Method::Adasyn,
        Method::QcSmote,
    ];

    /// SQL name, operator kind and id prefix.
    pub fn name(self) -> &'static str {
        match self {
            Self::RandomOversample => "random_oversample",
            Self::Smote => "smote",
            Self::BorderlineSmote => "borderline_smote",
            Self::Adasyn => "adasyn",
            Self::QcSmote => "qc_smote",
        }
    }

    fn needs_features(self) -> bool {
        self != Self::RandomOversample
    }

    /// Whether rows of the classes being filled are judged by their
    /// neighbours of other classes (else seeds and neighbours are drawn
    /// within the class).
    fn reads_other_classes(self) -> bool {
        matches!(self, Self::BorderlineSmote | Self::Adasyn | Self::QcSmote)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The keys of the oversamplers' options, typed once (one set for every
/// method; [`OversampleOptions::from_keys`] refuses those a method does
/// not use).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OversampleKeys {
    pub strategy: Option<String>,
    pub ratio: Option<f64>,
    pub targets: Option<String>,
    pub k: Option<usize>,
    pub m: Option<usize>,
    pub candidates: Option<usize>,
    pub floor: Option<f64>,
    pub overlap_threshold: Option<f64>,
    pub purity_cap: Option<f64>,
    pub seed: Option<u64>,
    pub window: Option<usize>,
    pub scale: Option<bool>,
    pub features: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub half_life: Option<f64>,
    pub mode: Option<Mode>,
}

/// Options of an oversampling operator; `None` means "the default for the
/// input's boundedness or the method".
#[derive(Debug, Clone, PartialEq)]
pub struct OversampleOptions {
    pub label_column: String,
    pub strategy: SamplingStrategy,
    /// Same-class neighbours (SMOTE's k; ADASYN's and QC-SMOTE's k too).
    pub k: usize,
    /// Whole-set neighbours that decide DANGER (Borderline-SMOTE's m).
    pub m: usize,
    /// Candidates per synthetic row (QC-SMOTE's K).
    pub candidates: usize,
    /// QC-SMOTE's tuning; see [`qc_smote::QcParams`].
    pub qc: qc_smote::QcParams,
    pub seed: u64,
    /// Rows kept per class; default 100,000 on bounded input, 2,000 on
    /// streams.
    pub window: Option<usize>,
    /// Standardize features for distances; default on for `qc_smote` only
    /// (the others match imbalanced-learn, which uses raw values).
    pub scale: Option<bool>,
    pub features: Option<Vec<String>>,
    pub exclude: Vec<String>,
    /// Half-life, in rows, of the decayed class weights on streams.
    pub half_life_rows: f64,
    /// Bounded or streaming semantics; by default the input's boundedness.
    pub mode: Mode,
}

impl OversampleOptions {
    pub const DEFAULT_K: usize = 5;
    pub const DEFAULT_M: usize = 10;
    pub const DEFAULT_CANDIDATES: usize = 5;
    pub const BOUNDED_WINDOW: usize = 100_000;
    pub const STREAM_WINDOW: usize = 2_000;
    pub const DEFAULT_HALF_LIFE_ROWS: f64 = 10_000.0;

    pub fn new(label_column: impl Into<String>) -> Self {
        Self {
            label_column: label_column.into(),
            strategy: SamplingStrategy::NotMajority,
            k: Self::DEFAULT_K,
            m: Self::DEFAULT_M,
            candidates: Self::DEFAULT_CANDIDATES,
            qc: qc_smote::QcParams::default(),
            seed: 0,
            window: None,
            scale: None,
            features: None,
            exclude: Vec::new(),
            half_life_rows: Self::DEFAULT_HALF_LIFE_ROWS,
            mode: Mode::Auto,
        }
    }

    /// Parse an option string (`'k=5, seed=7'`) for `method`; options the
    /// method does not use are refused as unknown.
    pub fn parse(method: Method, label_column: &str, text: &str) -> Result<Self> {
        Self::from_keys(
            method,
            label_column,
            from_option_string(method.name(), text)?,
        )
    }

    /// The options `keys` set over the defaults for `method`, validated;
    /// keys the method does not use are refused as unknown.
    pub fn from_keys(method: Method, label_column: &str, keys: OversampleKeys) -> Result<Self> {
        let name = method.name();
        for (key, set, used) in [
            ("k", keys.k.is_some(), method != Method::RandomOversample),
            ("m", keys.m.is_some(), method == Method::BorderlineSmote),
            (
                "candidates",
                keys.candidates.is_some(),
                method == Method::QcSmote,
            ),
            ("floor", keys.floor.is_some(), method == Method::QcSmote),
            (
                "overlap_threshold",
                keys.overlap_threshold.is_some(),
                method == Method::QcSmote,
            ),
            (
                "purity_cap",
                keys.purity_cap.is_some(),
                method == Method::QcSmote,
            ),
            ("scale", keys.scale.is_some(), method.needs_features()),
        ] {
            if set && !used {
                return plan_err!("{name}: unknown option '{key}' (not used by {name})");
            }
        }
        let defaults = Self::new(label_column);
        let strategy = match keys.targets {
            Some(t) if keys.strategy.is_none() && keys.ratio.is_none() => {
                SamplingStrategy::parse_targets(name, &t)?
            }
            Some(_) => return plan_err!("{name}: give one of strategy, ratio or targets"),
            None => SamplingStrategy::parse(name, keys.strategy.as_deref(), keys.ratio)?,
        };
        let qc = defaults.qc;
        let selection = FeatureSelection::from_options(keys.features, keys.exclude)?;
        let parsed = Self {
            strategy,
            k: keys.k.unwrap_or(defaults.k),
            m: keys.m.unwrap_or(defaults.m),
            candidates: keys.candidates.unwrap_or(defaults.candidates),
            qc: qc_smote::QcParams {
                allocation_floor: keys.floor.unwrap_or(qc.allocation_floor),
                high_overlap: keys.overlap_threshold.unwrap_or(qc.high_overlap),
                max_purity_threshold: keys.purity_cap.unwrap_or(qc.max_purity_threshold),
            },
            seed: keys.seed.unwrap_or(defaults.seed),
            window: keys.window,
            scale: keys.scale,
            features: selection.features,
            exclude: selection.exclude,
            half_life_rows: keys.half_life.unwrap_or(defaults.half_life_rows),
            mode: keys.mode.unwrap_or(defaults.mode),
            ..defaults
        };
        parsed.validate(method)?;
        Ok(parsed)
    }

    pub fn validate(&self, method: Method) -> Result<()> {
        let name = method.name();
        if self.k == 0 {
            return plan_err!("{name}: k must be at least 1");
        }
        if self.m == 0 {
            return plan_err!("{name}: m must be at least 1");
        }
        if self.candidates == 0 {
            return plan_err!("{name}: candidates must be at least 1");
        }
        let qc = &self.qc;
        if !(qc.allocation_floor.is_finite() && qc.allocation_floor >= 0.0) {
            return plan_err!("{name}: floor must be a number of 0 or more");
        }
        if !(0.0..=1.0).contains(&qc.high_overlap)
            || !(0.0..=1.0).contains(&qc.max_purity_threshold)
        {
            return plan_err!("{name}: overlap_threshold and purity_cap must lie in [0, 1]");
        }
        if self.window == Some(0) {
            return plan_err!("{name}: window must be at least 1 row per class");
        }
        if !(self.half_life_rows.is_finite() && self.half_life_rows > 0.0) {
            return plan_err!("{name}: half_life must be a positive number of rows");
        }
        if self.features.as_ref().is_some_and(Vec::is_empty) {
            return plan_err!("{name}: features is empty");
        }
        Ok(())
    }

    fn scale_for(&self, method: Method) -> bool {
        self.scale.unwrap_or(method == Method::QcSmote)
    }
}

/// One synthetic row: `seed + step * (neighbour - seed)` in feature space,
/// every other column copied from `seed` (reference-set rows).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Synthetic {
    pub seed: usize,
    pub neighbour: usize,
    pub step: f64,
    pub duplicate: bool,
}

impl Synthetic {
    pub fn interpolated(seed: usize, neighbour: usize, step: f64) -> Self {
        Self {
            seed,
            neighbour,
            step,
            duplicate: false,
        }
    }

    pub fn duplicate(seed: usize) -> Self {
        Self {
            seed,
            neighbour: seed,
            step: 0.0,
            duplicate: true,
        }
    }
}

/// What a method made.
#[derive(Debug, Default)]
pub struct Generated {
    pub rows: Vec<Synthetic>,
    /// Candidates scored but not emitted (QC-SMOTE).
    pub candidates_rejected: u64,
    /// Rows asked for but not made (no eligible rows, no DANGER rows, ...).
    pub unfilled: u64,
}

/// What a method reads.
pub struct GenerateContext<'r> {
    pub reference: &'r ReferenceSet,
    /// Features the distances are measured in (raw or standardized).
    pub space: &'r [f64],
    /// Rows to make per class slot.
    pub amounts: &'r [u64],
    pub classes: &'r [ClassValue],
    pub rng: &'r mut Rng,
    pub bounded: bool,
    /// Whether the rows' arrival order is the input's own (one partition),
    /// rather than a merge of partitions that varies between runs.
    pub arrival_order_is_stable: bool,
}

impl GenerateContext<'_> {
    /// (slot, amount) in ascending class order, so the draws a class gets do
    /// not depend on which class happened to arrive first.
    fn class_order(&self) -> Vec<(usize, u64)> {
        let mut slots: Vec<usize> = (0..self.amounts.len()).collect();
        slots.sort_by(|&a, &b| self.classes.get(a).cmp(&self.classes.get(b)));
        slots.into_iter().map(|s| (s, self.amounts[s])).collect()
    }

    /// The classes with rows to make and eligible rows to make them from,
    /// in ascending class order; a class with rows to make but none to draw
    /// from adds them to `out.unfilled`.
    fn classes_to_fill(&self, out: &mut Generated) -> Vec<(usize, u64)> {
        let mut fill = Vec::new();
        for (slot, amount) in self.class_order() {
            if amount == 0 {
                continue;
            }
            if self.reference.members.get(slot).is_none_or(Vec::is_empty) {
                out.unfilled += amount;
                continue;
            }
            fill.push((slot, amount));
        }
        // The methods make about the rows asked for (ADASYN a few fewer,
        // by its rounding; Borderline-SMOTE none for a class without
        // seeds in danger): room for them at once, not by repeated
        // doubling (room never written to is never touched).
        let total: u64 = fill.iter().map(|&(_, amount)| amount).sum();
        if let Ok(total) = usize::try_from(total) {
            // Declined, the rows are made all the same, growing as they go.
            out.rows.try_reserve(total).ok();
        }
        fill
    }

    fn class_name(&self, slot: usize) -> String {
        self.classes
            .get(slot)
            .map(ToString::to_string)
            .unwrap_or_default()
    }
}

/// Run `method` over `ctx`.
pub fn generate(
    method: Method,
    options: &OversampleOptions,
    ctx: &mut GenerateContext<'_>,
) -> Result<Generated> {
    Ok(match method {
        Method::RandomOversample => random_oversample::generate(ctx),
        Method::Smote => smote::generate(ctx, options.k),
        Method::BorderlineSmote => borderline_smote::generate(ctx, options.k, options.m),
        Method::Adasyn => adasyn::generate(ctx, options.k)?,
        Method::QcSmote => qc_smote::generate(ctx, options.k, options.candidates, &options.qc),
    })
}

/// The planning side of an oversampling operator.
#[derive(Debug, Clone)]
pub struct OversampleStage {
    method: Method,
    options: OversampleOptions,
}

/// Where the operator's columns are, resolved against an input schema.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    pub label_index: usize,
    pub feature_indices: Vec<usize>,
    pub output_schema: SchemaRef,
}

impl OversampleStage {
    pub fn try_new(method: Method, options: OversampleOptions) -> Result<Self> {
        options.validate(method)?;
        Ok(Self { method, options })
    }

    pub fn method(&self) -> Method {
        self.method
    }

    pub fn options(&self) -> &OversampleOptions {
        &self.options
    }

    pub fn columns(&self, input: &SchemaRef) -> Result<ColumnPlan> {
        let name = self.method.name();
        let selection = FeatureSelection {
            features: self.options.features.clone(),
            exclude: self.options.exclude.clone(),
        };
        let LabelAndFeatures {
            label_index,
            feature_indices,
        } = selection.resolve(
            name,
            input,
            &self.options.label_column,
            &[IS_SYNTHETIC, SYNTHETIC_KIND],
        )?;
        let names = || column_list(input);
        if self.method.needs_features() && feature_indices.is_empty() {
            return plan_err!(
                "{name}: no numeric feature columns to interpolate (columns are: {}); \
                 random_oversample needs none",
                names()
            );
        }
        let output_schema = with_columns(
            input,
            [
                Field::new(IS_SYNTHETIC, DataType::Boolean, false),
                Field::new(SYNTHETIC_KIND, DataType::Utf8, true),
            ],
        );
        Ok(ColumnPlan {
            label_index,
            feature_indices,
            output_schema,
        })
    }
}

impl StreamStage for OversampleStage {
    fn kind(&self) -> &'static str {
        self.method.name()
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.columns(input)?.output_schema)
    }

    fn plan(
        &self,
        input: Arc<dyn ExecutionPlan>,
        runtime: &Arc<JobRuntime>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        exec::OversampleExec::try_new(self.clone(), input, runtime)
    }
}
