//! The advisor: whether synthesis pays for this model on this stream,
//! answered online.
//!
//! `train_detector` trains a few *variants* of its learner side by side on
//! the same rows; they differ only in what they learn from ([`Variant`]).
//! Every variant predicts every original labelled row before learning it,
//! and [`Advisor`] scores those predictions (never a synthetic row's) over
//! a sliding window. The *champion* serves the operator's prediction and
//! score; a challenger replaces it when the rule of [`Advisor::judge`]
//! says so. The window restarts at a drift, and nothing is judged until it
//! is full again.
//!
//! Choices (docs/detectors.md, "The advisor"):
//! - the champion starts as `balanced` (no synthesis, no instance weights):
//!   synthesis has to earn its place on the stream;
//! - the guard against flapping is both a margin with a minimum count and
//!   a paired test: over a full window in which every class present has
//!   at least `min_minority` rows (20), a challenger must beat the
//!   champion by `margin` (0.01 by default) on the metric and pass a
//!   class-weighted McNemar test at `confidence` (0.99); the same is
//!   needed to switch back, so two variants within the margin never
//!   alternate;
//! - the reweight-only twin is the trainer's own weighting, not an option
//!   of the oversamplers: the trainer sees the class mix any oversampler
//!   upstream produces (the SMOTE family and QC-SMOTE alike) and weighs the
//!   original rows to that same mix, with no second pass over the stream.

use std::collections::VecDeque;

use datafusion::common::{Result, plan_err};
use serde::{Deserialize, Serialize};

use super::hoeffding::erf;
use crate::runtime::{AdvisorReport, AdvisorSegment, VariantScore};

/// What a variant learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// The original rows, class-balanced by the trainer (no synthesis, no
    /// instance weights).
    Balanced,
    /// The original rows, weighted to the class mix that the original plus
    /// synthetic rows have (synthesis replaced by weights).
    Reweighted,
    /// The original and synthetic rows, unweighted.
    Synthetic,
    /// The original rows with their iCost weights.
    Icost,
    /// The original and synthetic rows with their iCost weights,
    /// class-balanced when `balance=true`: the single learner of
    /// `variants=off`.
    SyntheticIcost,
}

impl Variant {
    pub const ALL: [Self; 5] = [
        Self::Balanced,
        Self::Reweighted,
        Self::Synthetic,
        Self::Icost,
        Self::SyntheticIcost,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Balanced => "balanced",
            Self::Reweighted => "reweighted",
            Self::Synthetic => "synthetic",
            Self::Icost => "icost",
            Self::SyntheticIcost => "synthetic_icost",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == text)
    }

    /// True when the variant learns synthetic rows.
    pub fn learns_synthetic(self) -> bool {
        matches!(self, Self::Synthetic | Self::SyntheticIcost)
    }

    /// The inputs the variant needs: (synthetic rows, iCost weights).
    fn needs(self) -> (bool, bool) {
        match self {
            Self::Balanced => (false, false),
            Self::Reweighted | Self::Synthetic => (true, false),
            Self::Icost => (false, true),
            Self::SyntheticIcost => (true, true),
        }
    }

    /// True when an input with (or without) synthetic rows and weights
    /// can feed the variant.
    pub fn available(self, has_synthetic: bool, has_weights: bool) -> bool {
        let (synthetic, weights) = self.needs();
        (has_synthetic || !synthetic) && (has_weights || !weights)
    }
}

/// How a variant weighs the rows it learns, besides their iCost weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    Unit,
    /// The trainer's class balancing (`ClassBalance`).
    ClassBalanced,
    /// Original rows weighted to the original-plus-synthetic class mix.
    SyntheticMix,
}

/// What one learner of the trainer learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    pub synthetic: bool,
    pub icost: bool,
    pub weighting: Weighting,
}

impl Recipe {
    /// The recipe of `variant` on an input with (or without) synthetic
    /// rows and weights; `balance` is the trainer's option.
    pub fn of(variant: Variant, has_synthetic: bool, has_weights: bool, balance: bool) -> Self {
        let (synthetic, icost, weighting) = match variant {
            Variant::Balanced => (false, false, Weighting::ClassBalanced),
            Variant::Reweighted => (false, false, Weighting::SyntheticMix),
            Variant::Synthetic => (true, false, Weighting::Unit),
            Variant::Icost => (false, true, Weighting::Unit),
            Variant::SyntheticIcost if balance => (true, true, Weighting::ClassBalanced),
            Variant::SyntheticIcost => (true, true, Weighting::Unit),
        };
        Self {
            synthetic: synthetic && has_synthetic,
            icost: icost && has_weights,
            weighting,
        }
    }
}

/// Which variants `train_detector` trains (`variants=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariantSet {
    /// One learner of every row it gets (`variants=off`).
    Off,
    /// Every variant the input can feed (the default, `variants=all`).
    Available,
    /// These, in this order (`variants=balanced synthetic`).
    Chosen(Vec<Variant>),
}

impl VariantSet {
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim() {
            "off" => Ok(Self::Off),
            "all" => Ok(Self::Available),
            list => {
                let mut chosen = Vec::new();
                for name in list.split_whitespace() {
                    let Some(variant) = Variant::parse(name) else {
                        return plan_err!(
                            "train_detector: unknown variant '{name}'; use off, all, or names \
                             among balanced, reweighted, synthetic, icost, synthetic_icost"
                        );
                    };
                    if !chosen.contains(&variant) {
                        chosen.push(variant);
                    }
                }
                if chosen.is_empty() {
                    return plan_err!("train_detector: variants is empty; use off or all");
                }
                Ok(Self::Chosen(chosen))
            }
        }
    }

    /// The variants to train on an input with (or without) synthetic rows
    /// and weights; a chosen variant the input cannot feed is an error.
    pub fn resolve(&self, has_synthetic: bool, has_weights: bool) -> Result<Vec<Variant>> {
        match self {
            Self::Off => Ok(vec![Variant::SyntheticIcost]),
            Self::Available => {
                let available: Vec<Variant> = Variant::ALL
                    .into_iter()
                    .filter(|v| v.available(has_synthetic, has_weights))
                    .collect();
                if available.len() < 2 {
                    // Nothing to compare: the single learner (which keeps
                    // `balance=false` meaning what it says).
                    return Self::Off.resolve(has_synthetic, has_weights);
                }
                Ok(available)
            }
            Self::Chosen(chosen) => {
                for v in chosen {
                    if !v.available(has_synthetic, has_weights) {
                        let (synthetic, _) = v.needs();
                        let what = if synthetic && !has_synthetic {
                            "synthetic rows (an oversampler upstream)"
                        } else {
                            "a sample_weight column (icost upstream)"
                        };
                        return plan_err!(
                            "train_detector: variant '{}' needs {what}, and the input has none",
                            v.name()
                        );
                    }
                }
                Ok(chosen.clone())
            }
        }
    }
}

/// What the advisor compares variants on (`metric=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvisorMetric {
    Gmean,
    BalancedAccuracy,
    MacroF1,
    MinorityRecall,
}

impl AdvisorMetric {
    pub fn name(self) -> &'static str {
        match self {
            Self::Gmean => "gmean",
            Self::BalancedAccuracy => "balanced_accuracy",
            Self::MacroF1 => "macro_f1",
            Self::MinorityRecall => "minority_recall",
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        [
            Self::Gmean,
            Self::BalancedAccuracy,
            Self::MacroF1,
            Self::MinorityRecall,
        ]
        .into_iter()
        .find(|m| m.name() == text)
        .map_or_else(
            || {
                plan_err!(
                    "train_detector: unknown metric '{text}'; use gmean, balanced_accuracy, \
                     macro_f1 or minority_recall"
                )
            },
            Ok,
        )
    }
}

/// The rule's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdvisorRule {
    pub metric: AdvisorMetric,
    /// Original labelled rows in the sliding window.
    pub window: usize,
    /// How much better a challenger must be.
    pub margin: f64,
    /// Fewest rows of every class present in the window to judge.
    pub min_minority: u64,
    /// One-sided confidence of the paired test a promotion must pass.
    pub confidence: f64,
}

impl AdvisorRule {
    pub fn validate(&self) -> Result<()> {
        if !(self.margin.is_finite() && self.margin >= 0.0) {
            return plan_err!(
                "train_detector: margin must be 0 or more, got {}",
                self.margin
            );
        }
        if self.min_minority == 0 {
            return plan_err!("train_detector: min_minority must be at least 1 row");
        }
        if !(self.confidence >= 0.5 && self.confidence < 1.0) {
            return plan_err!(
                "train_detector: confidence must be at least 0.5 and below 1, got {}",
                self.confidence
            );
        }
        Ok(())
    }

    /// The standard normal quantile of `confidence` (bisection on the
    /// normal distribution function).
    pub fn z(&self) -> f64 {
        let cdf = |z: f64| 0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2));
        let (mut low, mut high) = (0.0, 10.0);
        for _ in 0..60 {
            let mid = 0.5 * (low + high);
            if cdf(mid) < self.confidence {
                low = mid;
            } else {
                high = mid;
            }
        }
        0.5 * (low + high)
    }
}

/// Predictions of every variant against the truth, per class: the counts
/// every metric is computed from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Tally {
    /// Rows per true class.
    seen: Vec<u64>,
    /// Per variant, correct predictions per true class.
    hits: Vec<Vec<u64>>,
    /// Per variant, predictions per predicted class.
    predicted: Vec<Vec<u64>>,
}

impl Tally {
    fn new(variants: usize) -> Self {
        Self {
            seen: Vec::new(),
            hits: vec![Vec::new(); variants],
            predicted: vec![Vec::new(); variants],
        }
    }

    fn grow(counts: &mut Vec<u64>, slot: usize) {
        if counts.len() <= slot {
            counts.resize(slot + 1, 0);
        }
    }

    /// Count (`add`) or forget (not `add`) one row.
    fn count(&mut self, truth: u32, predictions: &[u32], add: bool) {
        let change = |n: &mut u64| {
            if add {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
            }
        };
        let t = truth as usize;
        Self::grow(&mut self.seen, t);
        change(&mut self.seen[t]);
        for (v, &p) in predictions.iter().enumerate() {
            if p == truth {
                Self::grow(&mut self.hits[v], t);
                change(&mut self.hits[v][t]);
            }
            if p != NO_PREDICTION {
                Self::grow(&mut self.predicted[v], p as usize);
                change(&mut self.predicted[v][p as usize]);
            }
        }
    }

    fn rows(&self) -> u64 {
        self.seen.iter().sum()
    }

    /// Slots of the classes with rows.
    fn present(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.seen.len()).filter(|&c| self.seen[c] > 0)
    }

    /// How many classes have rows, and the least frequent of them (ties
    /// to the lower slot).
    fn census(&self) -> (usize, Option<usize>) {
        let count = self.present().count();
        (count, self.present().min_by_key(|&c| self.seen[c]))
    }

    fn recall(&self, variant: usize, class: usize) -> f64 {
        let hits = self.hits[variant].get(class).copied().unwrap_or(0);
        hits as f64 / self.seen[class] as f64
    }

    /// `metric` of `variant` over the classes present; None with fewer
    /// than two.
    fn score(&self, variant: usize, metric: AdvisorMetric) -> Option<f64> {
        let (present, minority) = self.census();
        if present < 2 {
            return None;
        }
        let k = present as f64;
        let recalls = self.present().map(|c| self.recall(variant, c));
        Some(match metric {
            AdvisorMetric::Gmean => recalls.product::<f64>().powf(1.0 / k),
            AdvisorMetric::BalancedAccuracy => recalls.sum::<f64>() / k,
            AdvisorMetric::MinorityRecall => self.recall(variant, minority?),
            AdvisorMetric::MacroF1 => {
                self.present()
                    .map(|c| {
                        let hits = self.hits[variant].get(c).copied().unwrap_or(0) as f64;
                        let predicted = self.predicted[variant].get(c).copied().unwrap_or(0);
                        let denominator = (self.seen[c] + predicted) as f64;
                        if denominator > 0.0 {
                            2.0 * hits / denominator
                        } else {
                            0.0
                        }
                    })
                    .sum::<f64>()
                    / k
            }
        })
    }
}

/// A variant's prediction slot meaning "no prediction".
pub const NO_PREDICTION: u32 = u32::MAX;

/// A champion change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Promotion {
    pub from: Variant,
    pub to: Variant,
    /// The challenger's lead on the metric over the window.
    pub by: f64,
}

/// Rows judged since the segment began, and its champion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OpenSegment {
    first_row: u64,
    champion: usize,
    tally: Tally,
}

/// The sliding comparison of the variants and the champion it elects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advisor {
    variants: Vec<Variant>,
    rule: AdvisorRule,
    champion: usize,
    /// The window's rows, oldest first: the true slot, then each variant's
    /// predicted slot.
    ring: VecDeque<u32>,
    window: Tally,
    /// Per variant and true class, window rows it got right and the
    /// champion wrong (`wins`), and the reverse (`losses`).
    wins: Vec<Vec<u64>>,
    losses: Vec<Vec<u64>>,
    /// The paired test's threshold, from the rule's confidence.
    z: f64,
    segment: OpenSegment,
    closed: Vec<AdvisorSegment>,
    /// Every judged row of the run.
    run: Tally,
    /// Rows judged with each variant as the champion.
    champion_rows: Vec<u64>,
    rows: u64,
    changes: u64,
}

impl Advisor {
    /// `variants` in order; the champion starts as `balanced` when it is
    /// among them, else as the first.
    pub fn new(variants: Vec<Variant>, rule: AdvisorRule) -> Self {
        let champion = variants
            .iter()
            .position(|&v| v == Variant::Balanced)
            .unwrap_or(0);
        let n = variants.len();
        Self {
            rule,
            champion,
            ring: VecDeque::new(),
            window: Tally::new(n),
            wins: vec![Vec::new(); n],
            losses: vec![Vec::new(); n],
            z: rule.z(),
            segment: OpenSegment {
                first_row: 0,
                champion,
                tally: Tally::new(n),
            },
            closed: Vec::new(),
            run: Tally::new(n),
            champion_rows: vec![0; n],
            rows: 0,
            changes: 0,
            variants,
        }
    }

    pub fn variants(&self) -> &[Variant] {
        &self.variants
    }

    pub fn champion(&self) -> usize {
        self.champion
    }

    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Score one original labelled row: its true slot and every variant's
    /// predicted slot ([`NO_PREDICTION`] for none), in variant order.
    pub fn record(&mut self, truth: u32, predictions: &[u32]) {
        let stride = 1 + self.variants.len();
        if self.ring.len() / stride >= self.rule.window {
            // The oldest row, copied out without allocating (at most five
            // variants, [`Variant::ALL`]).
            let mut old = [NO_PREDICTION; 1 + Variant::ALL.len()];
            for (slot, value) in old.iter_mut().zip(self.ring.drain(..stride)) {
                *slot = value;
            }
            self.window.count(old[0], &old[1..stride], false);
            self.pair(old[0], &old[1..stride], false);
        }
        self.ring.push_back(truth);
        self.ring.extend(predictions.iter().copied());
        self.window.count(truth, predictions, true);
        self.pair(truth, predictions, true);
        self.segment.tally.count(truth, predictions, true);
        self.run.count(truth, predictions, true);
        self.champion_rows[self.champion] += 1;
        self.rows += 1;
    }

    /// Count (`add`) or forget one window row in the pairs with the
    /// champion.
    fn pair(&mut self, truth: u32, predictions: &[u32], add: bool) {
        let t = truth as usize;
        let champion_right = predictions[self.champion] == truth;
        for (v, &p) in predictions.iter().enumerate() {
            let counts = match (p == truth, champion_right) {
                (true, false) => &mut self.wins[v],
                (false, true) => &mut self.losses[v],
                _ => continue,
            };
            Tally::grow(counts, t);
            if add {
                counts[t] += 1;
            } else {
                counts[t] = counts[t].saturating_sub(1);
            }
        }
    }

    /// Recount the pairs after a champion change.
    fn repair(&mut self) {
        let n = self.variants.len();
        self.wins = vec![Vec::new(); n];
        self.losses = vec![Vec::new(); n];
        let rows: Vec<u32> = self.ring.iter().copied().collect();
        for row in rows.chunks_exact(1 + n) {
            self.pair(row[0], &row[1..], true);
        }
    }

    /// The paired test of variant `v` against the champion: McNemar's
    /// statistic on the difference in balanced accuracy, each class's
    /// discordant rows weighed by one over its rows in the window:
    /// `z = Σ (w_c − l_c) / n_c  /  sqrt(Σ (w_c + l_c) / n_c²)`.
    fn paired_z(&self, v: usize) -> f64 {
        let (mut lead, mut variance) = (0.0, 0.0);
        for (c, &n) in self.window.seen.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let w = self.wins[v].get(c).copied().unwrap_or(0) as f64;
            let l = self.losses[v].get(c).copied().unwrap_or(0) as f64;
            let n = n as f64;
            lead += (w - l) / n;
            variance += (w + l) / (n * n);
        }
        if variance <= 0.0 {
            return 0.0;
        }
        lead / variance.sqrt()
    }

    /// `variant`'s `metric` over the window (None while it cannot be
    /// computed).
    pub fn window_score(&self, variant: usize, metric: AdvisorMetric) -> Option<f64> {
        self.window.score(variant, metric)
    }

    /// The promotion rule: when the window is full (`window` original rows
    /// since the start or the last restart) and every class present in it
    /// has at least `min_minority` rows, the best challenger on the metric (ties
    /// to the earlier variant) replaces the champion if it leads it by at
    /// least `margin` and the paired test on the window's rows
    /// ([`Self::paired_z`]) passes at the rule's confidence.
    pub fn judge(&mut self) -> Option<Promotion> {
        let (present, minority) = self.window.census();
        if self.window.rows() < self.rule.window as u64
            || present < 2
            || minority.map(|c| self.window.seen[c]) < Some(self.rule.min_minority)
        {
            return None;
        }
        let metric = self.rule.metric;
        let champion_score = self.window.score(self.champion, metric)?;
        let (best, best_score) = (0..self.variants.len())
            .filter_map(|v| self.window.score(v, metric).map(|s| (v, s)))
            .fold(None, |best: Option<(usize, f64)>, (v, s)| match best {
                Some((_, b)) if b >= s => best,
                _ => Some((v, s)),
            })?;
        let by = best_score - champion_score;
        if best == self.champion || by < self.rule.margin || by <= 0.0 {
            return None;
        }
        if self.paired_z(best) < self.z {
            return None;
        }
        let promotion = Promotion {
            from: self.variants[self.champion],
            to: self.variants[best],
            by,
        };
        self.close_segment();
        self.champion = best;
        self.segment.champion = best;
        self.changes += 1;
        self.repair();
        Some(promotion)
    }

    /// Start the comparison over (a drift): the window forgets, and a new
    /// segment begins.
    pub fn restart(&mut self) {
        self.ring.clear();
        self.window = Tally::new(self.variants.len());
        self.repair();
        if self.segment.tally.rows() > 0 {
            self.close_segment();
        }
    }

    fn close_segment(&mut self) {
        let segment = std::mem::replace(
            &mut self.segment,
            OpenSegment {
                first_row: self.rows,
                champion: self.champion,
                tally: Tally::new(self.variants.len()),
            },
        );
        self.closed.push(self.report_segment(&segment));
    }

    fn scores_of(&self, tally: &Tally) -> Vec<VariantScore> {
        self.variants
            .iter()
            .enumerate()
            .map(|(v, variant)| VariantScore {
                variant: variant.name().to_string(),
                learns_synthetic: variant.learns_synthetic(),
                score: tally.score(v, self.rule.metric),
                gmean: tally.score(v, AdvisorMetric::Gmean),
                minority_recall: tally.score(v, AdvisorMetric::MinorityRecall),
                champion_rows: 0,
            })
            .collect()
    }

    fn report_segment(&self, segment: &OpenSegment) -> AdvisorSegment {
        AdvisorSegment {
            first_row: segment.first_row,
            rows: segment.tally.rows(),
            champion: self.variants[segment.champion].name().to_string(),
            variants: self.scores_of(&segment.tally),
        }
    }

    /// The run so far: every closed segment, the open one, and each
    /// variant over the whole run.
    pub fn report(&self) -> AdvisorReport {
        let mut segments = self.closed.clone();
        if self.segment.tally.rows() > 0 {
            segments.push(self.report_segment(&self.segment));
        }
        let mut variants = self.scores_of(&self.run);
        for (v, score) in variants.iter_mut().enumerate() {
            score.champion_rows = self.champion_rows[v];
        }
        AdvisorReport {
            metric: self.rule.metric.name().to_string(),
            champion: self.variants[self.champion].name().to_string(),
            changes: self.changes,
            variants,
            segments,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(window: usize) -> AdvisorRule {
        AdvisorRule {
            metric: AdvisorMetric::Gmean,
            window,
            margin: 0.01,
            min_minority: 5,
            confidence: 0.99,
        }
    }

    /// `n` rows of class `truth`; variant v is right on the share
    /// `right[v]` of them (the first ones).
    fn feed(advisor: &mut Advisor, truth: u32, n: usize, right: &[f64]) {
        for i in 0..n {
            let predictions: Vec<u32> = right
                .iter()
                .map(|&r| {
                    if (i as f64) < r * n as f64 {
                        truth
                    } else {
                        1 - truth
                    }
                })
                .collect();
            advisor.record(truth, &predictions);
        }
    }

    #[test]
    fn a_challenger_is_promoted_only_past_the_margin_with_enough_minority_rows() {
        let variants = vec![Variant::Synthetic, Variant::Balanced];
        let mut advisor = Advisor::new(variants, rule(100));
        // Nothing is judged before the window is full.
        feed(&mut advisor, 1, 10, &[1.0, 0.0]);
        feed(&mut advisor, 0, 80, &[1.0, 1.0]);
        assert_eq!(advisor.judge(), None);
        advisor.restart();
        assert_eq!(advisor.champion(), 1, "balanced starts as champion");
        // Synthetic is far better on the minority, but 4 minority rows are
        // too few to judge.
        feed(&mut advisor, 0, 100, &[1.0, 1.0]);
        feed(&mut advisor, 1, 4, &[1.0, 0.0]);
        assert_eq!(advisor.judge(), None);
        // 5 are enough to judge, but 5 discordant rows do not pass the
        // paired test at 0.99 (z = 5/5 / sqrt(5/25) = 2.24 < 2.33) ...
        feed(&mut advisor, 1, 1, &[1.0, 0.0]);
        assert!((advisor.paired_z(0) - 5f64.sqrt()).abs() < 1e-12);
        assert_eq!(advisor.judge(), None);
        // ... 7 do (z = 2.65).
        feed(&mut advisor, 1, 2, &[1.0, 0.0]);
        let promotion = advisor.judge();
        assert!(
            matches!(promotion, Some(Promotion { from: Variant::Balanced, to: Variant::Synthetic, by }) if by > 0.5),
            "{promotion:?}"
        );
        assert_eq!(advisor.champion(), 0);
        assert_eq!(advisor.changes(), 1);
        // Balanced does not win it back while within the margin.
        let mut close = Advisor::new(vec![Variant::Balanced, Variant::Synthetic], rule(1_000));
        feed(&mut close, 0, 1_000, &[1.0, 1.0]);
        feed(&mut close, 1, 100, &[0.90, 0.91]);
        let scores = [0, 1].map(|v| close.window_score(v, AdvisorMetric::Gmean));
        let lead = scores[1].unwrap_or(0.0) - scores[0].unwrap_or(0.0);
        assert!(lead > 0.0 && lead < 0.01, "{scores:?}");
        assert_eq!(
            close.judge(),
            None,
            "a lead under the margin changes nothing"
        );
    }

    #[test]
    fn the_window_forgets_and_a_restart_clears_it() {
        let mut advisor = Advisor::new(vec![Variant::Balanced, Variant::Synthetic], rule(100));
        feed(&mut advisor, 0, 50, &[1.0, 1.0]);
        feed(&mut advisor, 1, 50, &[1.0, 0.0]);
        assert_eq!(advisor.judge(), None, "the champion leads");
        // The next 100 rows push the old ones out; now synthetic leads.
        feed(&mut advisor, 0, 50, &[1.0, 1.0]);
        feed(&mut advisor, 1, 50, &[0.0, 1.0]);
        assert_eq!(advisor.window.rows(), 100);
        assert!(advisor.judge().is_some());
        advisor.restart();
        assert_eq!(advisor.window.rows(), 0);
        assert_eq!(advisor.judge(), None);
        feed(&mut advisor, 0, 10, &[1.0, 1.0]);
        let report = advisor.report();
        assert_eq!(report.segments.len(), 2, "{report:?}");
        assert_eq!(report.segments[0].rows, 200);
        assert_eq!(report.segments[0].champion, "balanced");
        assert_eq!(report.segments[1].champion, "synthetic");
        assert_eq!(report.segments[1].first_row, 200);
        assert_eq!(report.variants[0].champion_rows, 200);
        assert_eq!(report.variants[1].champion_rows, 10);
    }

    #[test]
    fn metrics_follow_their_definitions() {
        let mut tally = Tally::new(1);
        // 80 of class 0 (60 right), 20 of class 1 (10 right, 10 predicted 0).
        for i in 0..80 {
            tally.count(0, &[if i < 60 { 0 } else { 1 }], true);
        }
        for i in 0..20 {
            tally.count(1, &[if i < 10 { 1 } else { 0 }], true);
        }
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
        assert!(close(
            tally.score(0, AdvisorMetric::Gmean),
            (0.75f64 * 0.5).sqrt()
        ));
        assert!(close(
            tally.score(0, AdvisorMetric::BalancedAccuracy),
            0.625
        ));
        assert!(close(tally.score(0, AdvisorMetric::MinorityRecall), 0.5));
        // F1: class 0: 2*60/(80+70); class 1: 2*10/(20+30).
        let f1 = (120.0 / 150.0 + 20.0 / 50.0) / 2.0;
        assert!(close(tally.score(0, AdvisorMetric::MacroF1), f1));
        // A variant that never hits a class has G-mean 0.
        let mut zero = Tally::new(1);
        zero.count(0, &[0], true);
        zero.count(1, &[0], true);
        assert!(close(zero.score(0, AdvisorMetric::Gmean), 0.0));
    }

    #[test]
    fn variant_sets_resolve_against_the_input() -> Result<()> {
        assert_eq!(
            VariantSet::Available.resolve(false, false)?,
            vec![Variant::SyntheticIcost],
            "nothing to compare: the single learner"
        );
        assert_eq!(VariantSet::Available.resolve(true, true)?, Variant::ALL);
        assert_eq!(
            VariantSet::Available.resolve(false, true)?,
            vec![Variant::Balanced, Variant::Icost]
        );
        let chosen = VariantSet::parse("synthetic balanced")?;
        assert!(chosen.resolve(false, false).is_err());
        assert_eq!(
            chosen.resolve(true, false)?,
            vec![Variant::Synthetic, Variant::Balanced]
        );
        assert!(VariantSet::parse("smote").is_err());
        assert_eq!(VariantSet::parse("off")?, VariantSet::Off);
        Ok(())
    }
}
