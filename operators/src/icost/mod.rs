//! iCost: per-row cost weights from instance complexity (Newaz, Adib and
//! Jabid, arXiv 2409.13007), as the `icost` operator.
//!
//! Every input row passes through with two more columns: `sample_weight`
//! (Float64) and `complexity` (Utf8: `pure`, `safe`, `border`, `outlier` for
//! a weighed minority row, NULL otherwise).
//!
//! Which rows are weighed: without `minority`, every class but the largest
//! (one-vs-rest: a row of class c is weighed in c's own subproblem, with
//! IR_c = rows not of c / rows of c, and its neighbours count as "majority"
//! when their class is not c); rows of the largest class weigh 1.0. The
//! largest class is the one with the most rows, ties going to the greatest
//! class value (so a tied binary problem weighs the lower class, as the
//! reference does). With `minority=v` only class `v` is weighed, against all
//! other rows. A row with a NULL label weighs NULL (nothing can learn from
//! it); a weighed row whose features are incomplete (NULL, NaN, infinite)
//! has no neighbourhood, so it gets the class-level weight IR and NULL
//! complexity.
//!
//! Synthetic rows (an upstream oversampler's `is_synthetic` rows) are not
//! observations: they stay out of the window and the class counts, weigh
//! 1.0 and have NULL complexity. The oversampler already raised their
//! class's share; weighing them by IR as well would count the imbalance
//! twice.
//!
//! Modes:
//! - `neighbor` (default): Neighbor-iCost of the PyPI package `icost` 0.3.0.
//!   The k nearest rows (Euclidean on raw values, the row itself excluded
//!   by index), m of them of another class: m = 0 `pure`, m/k < 0.5 `safe`,
//!   m < k `border`, m = k `outlier`; weight = multiplier x IR with
//!   multipliers pure 0.30, safe 0.50, border 0.70, outlier 0.10.
//! - `cs`: class-level weights, IR for every weighed row; no complexity.
//! - `gini`: Gini-iCost. A probe tree (CART, Gini, depth 3, at least 5 rows
//!   a leaf) separates the class from the rest; p is the class's share of
//!   the row's leaf: p >= 0.8 `pure` (pure multiplier), p <= 0.2 `outlier`
//!   (outlier multiplier), otherwise safe + (border - safe) x 4p(1 - p),
//!   times IR, labelled `safe` when p >= 0.5 and `border` below. On a table
//!   the tree is cross-fitted (3 stratified folds, seeded: a row is scored
//!   by a tree that did not see it); on a stream it is fitted on the window
//!   before the batch.
//!
//! Tables (bounded input, `mode=auto` or `batch`): every row is read
//! first, then weighed against all rows, which matches the reference row
//! for row. Ties at the k-th neighbour go to the row that came first (in
//! input order; in a canonical order of class and features when the input
//! merges parallel partitions). scikit-learn's trees break such ties by
//! traversal order instead, so on data where a tie at the k-th distance
//! mixes classes the two can differ; docs/icost.md shows how often.
//!
//! Streams: a sliding window of the most recent `window` labelled rows
//! with complete features (default 10,000) is the reference set; a row is
//! weighed against the window as it stood before its batch (no look-ahead),
//! and the class counts are per-row decayed weights (half-life `half_life`
//! rows, default 10,000) updated causally, up to and including the row.
//! Until the window holds k rows, weighed rows get the class-level weight.
//! A `Reset` control signal for the operator, or a drift (not a warning)
//! from any `drift_monitor` of the job, keeps the newest tenth of the window and a
//! tenth of the decayed weights (the class mix is kept, its inertia cut).
//!
//! This module and its files import each other on purpose: it holds the
//! options and categories every file reads and plans the node of
//! [`exec`]; the cycle stays inside this folder.

pub mod exec;
pub mod probe_tree;
pub mod table_function;
pub mod weights;
pub mod window;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::common::{Result, plan_err};
use datafusion::physical_plan::ExecutionPlan;
use serde::Deserialize;

use crate::columns::{COMPLEXITY, SAMPLE_WEIGHT, synthetic_marker, with_columns};
use crate::features::{FeatureSelection, LabelAndFeatures};
use crate::options::from_option_string;
use crate::runtime::JobRuntime;
use crate::stage::{Mode, StreamStage};

/// How weights are derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IcostMethod {
    Neighbor,
    Cs,
    Gini,
}

impl IcostMethod {
    pub fn name(self) -> &'static str {
        match self {
            Self::Neighbor => "neighbor",
            Self::Cs => "cs",
            Self::Gini => "gini",
        }
    }
}

/// Relative costs of the four categories, multiplied by IR.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Costs {
    pub pure: f64,
    pub safe: f64,
    pub border: f64,
    pub outlier: f64,
}

impl Default for Costs {
    /// The `icost` 0.3.0 defaults.
    fn default() -> Self {
        Self {
            pure: 0.30,
            safe: 0.50,
            border: 0.70,
            outlier: 0.10,
        }
    }
}

impl Costs {
    pub fn of(&self, category: Category) -> f64 {
        match category {
            Category::Pure => self.pure,
            Category::Safe => self.safe,
            Category::Border => self.border,
            Category::Outlier => self.outlier,
        }
    }
}

/// Complexity category of a weighed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Pure,
    Safe,
    Border,
    Outlier,
}

impl Category {
    pub const ALL: [Self; 4] = [Self::Pure, Self::Safe, Self::Border, Self::Outlier];

    /// From `m` other-class rows among `k` neighbours (the reference's
    /// bands: the share is compared as a float, as it does).
    pub fn of_neighbours(m: usize, k: usize) -> Self {
        let share = m as f64 / k as f64;
        if m == 0 {
            Self::Pure
        } else if share < 0.5 {
            Self::Safe
        } else if m < k {
            Self::Border
        } else {
            Self::Outlier
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Pure => "pure",
            Self::Safe => "safe",
            Self::Border => "border",
            Self::Outlier => "outlier",
        }
    }
}

/// The keys of `icost`'s options, typed once: what an option string
/// (`'method=gini, k=7'`) or a table of another format may set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcostKeys {
    pub method: Option<IcostMethod>,
    pub k: Option<usize>,
    pub pure: Option<f64>,
    pub safe: Option<f64>,
    pub border: Option<f64>,
    pub outlier: Option<f64>,
    pub window: Option<usize>,
    pub minority: Option<String>,
    pub seed: Option<u64>,
    pub half_life: Option<f64>,
    pub mode: Option<Mode>,
    pub features: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
}

/// Options of the `icost` operator; see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct IcostOptions {
    pub label_column: String,
    pub method: IcostMethod,
    pub k: usize,
    pub costs: Costs,
    /// Labelled rows in the reference window; default 1,000,000 on tables
    /// (more is an error: the table does not fit), 10,000 on streams.
    pub window: Option<usize>,
    /// The one class to weigh, by its value as text.
    pub minority: Option<String>,
    pub seed: u64,
    pub half_life_rows: f64,
    pub mode: Mode,
    pub selection: FeatureSelection,
}

impl IcostOptions {
    pub const DEFAULT_K: usize = 5;
    pub const TABLE_WINDOW: usize = 1_000_000;
    pub const STREAM_WINDOW: usize = 10_000;
    pub const DEFAULT_HALF_LIFE_ROWS: f64 = 10_000.0;

    pub fn new(label_column: impl Into<String>) -> Self {
        Self {
            label_column: label_column.into(),
            method: IcostMethod::Neighbor,
            k: Self::DEFAULT_K,
            costs: Costs::default(),
            window: None,
            minority: None,
            seed: 0,
            half_life_rows: Self::DEFAULT_HALF_LIFE_ROWS,
            mode: Mode::Auto,
            selection: FeatureSelection::default(),
        }
    }

    /// Parse an option string such as `'method=gini, k=7, minority=1'`.
    pub fn parse(label_column: &str, text: &str) -> Result<Self> {
        Self::from_keys(label_column, from_option_string("icost", text)?)
    }

    /// The options `keys` set over the defaults, validated.
    pub fn from_keys(label_column: &str, keys: IcostKeys) -> Result<Self> {
        let defaults = Self::new(label_column);
        let costs = defaults.costs;
        let parsed = Self {
            method: keys.method.unwrap_or(defaults.method),
            k: keys.k.unwrap_or(defaults.k),
            costs: Costs {
                pure: keys.pure.unwrap_or(costs.pure),
                safe: keys.safe.unwrap_or(costs.safe),
                border: keys.border.unwrap_or(costs.border),
                outlier: keys.outlier.unwrap_or(costs.outlier),
            },
            window: keys.window,
            minority: keys.minority,
            seed: keys.seed.unwrap_or(defaults.seed),
            half_life_rows: keys.half_life.unwrap_or(defaults.half_life_rows),
            mode: keys.mode.unwrap_or(defaults.mode),
            selection: FeatureSelection::from_options(keys.features, keys.exclude)?,
            ..defaults
        };
        parsed.validate()?;
        Ok(parsed)
    }

    pub fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return plan_err!("icost: k must be at least 1");
        }
        let c = &self.costs;
        for (name, v) in [
            ("pure", c.pure),
            ("safe", c.safe),
            ("border", c.border),
            ("outlier", c.outlier),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return plan_err!("icost: {name} must be a finite number of 0 or more, got {v}");
            }
        }
        if self.window.is_some_and(|w| w <= self.k) {
            return plan_err!("icost: window must hold more than k={} rows", self.k);
        }
        if !(self.half_life_rows.is_finite() && self.half_life_rows > 0.0) {
            return plan_err!("icost: half_life must be a positive number of rows");
        }
        if self.minority.as_deref().is_some_and(str::is_empty) {
            return plan_err!("icost: minority is empty");
        }
        Ok(())
    }

    /// Whether the features take part (not with `method=cs`).
    pub fn needs_features(&self) -> bool {
        self.method != IcostMethod::Cs
    }
}

/// The planning side of the `icost` operator.
#[derive(Debug, Clone)]
pub struct IcostStage {
    options: IcostOptions,
}

/// Label, features and output schema, resolved against an input schema.
#[derive(Debug, Clone)]
pub struct IcostColumns {
    pub label_index: usize,
    pub feature_indices: Vec<usize>,
    /// An oversampler's `is_synthetic` marker, when the input has one.
    pub synthetic_index: Option<usize>,
    pub output_schema: SchemaRef,
}

impl IcostStage {
    pub fn try_new(options: IcostOptions) -> Result<Self> {
        options.validate()?;
        Ok(Self { options })
    }

    pub fn options(&self) -> &IcostOptions {
        &self.options
    }

    pub fn columns(&self, input: &SchemaRef) -> Result<IcostColumns> {
        let LabelAndFeatures {
            label_index,
            feature_indices,
        } = self.options.selection.resolve(
            "icost",
            input,
            &self.options.label_column,
            &[SAMPLE_WEIGHT, COMPLEXITY],
        )?;
        if self.options.needs_features() && feature_indices.is_empty() {
            return plan_err!(
                "icost: no numeric feature columns for method={}; method=cs needs none",
                self.options.method.name()
            );
        }
        let synthetic_index = synthetic_marker(input);
        Ok(IcostColumns {
            label_index,
            feature_indices,
            synthetic_index,
            output_schema: with_columns(
                input,
                [
                    Field::new(SAMPLE_WEIGHT, DataType::Float64, true),
                    Field::new(COMPLEXITY, DataType::Utf8, true),
                ],
            ),
        })
    }
}

impl StreamStage for IcostStage {
    fn kind(&self) -> &'static str {
        "icost"
    }

    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.columns(input)?.output_schema)
    }

    fn plan(
        &self,
        input: Arc<dyn ExecutionPlan>,
        runtime: &Arc<JobRuntime>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        exec::IcostExec::try_new(self.clone(), input, runtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_bands_follow_the_reference() {
        let cats: Vec<_> = (0..=5).map(|m| Category::of_neighbours(m, 5)).collect();
        use Category::*;
        assert_eq!(cats, [Pure, Safe, Safe, Border, Border, Outlier]);
        // k = 4: 2 of 4 is a share of 0.5, which is border, not safe.
        assert_eq!(Category::of_neighbours(2, 4), Border);
    }

    #[test]
    fn bad_options_are_plan_errors() {
        for (text, needle) in [
            ("method=tree", "unknown method"),
            ("k=0", "k must be"),
            ("pure=-1", "pure must be"),
            ("window=3", "window must hold"),
            ("colour=red", "unknown option"),
            ("mode=later", "unknown mode"),
        ] {
            let err = IcostOptions::parse("y", text)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
