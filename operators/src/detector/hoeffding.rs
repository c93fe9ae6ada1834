//! Hoeffding tree (VFDT; Domingos and Hulten 2000) with River's defaults:
//! grace period 200, split confidence δ = 1e-7, tie threshold 0.05,
//! information gain, minimum branch fraction 0.01, Gaussian estimators for
//! numeric features (one per leaf, feature and class: weighted mean,
//! variance, min, max) and ten candidate thresholds per feature spaced
//! evenly between the smallest and largest value seen (River's
//! `GaussianSplitter`), leaves predicting by adaptive naive Bayes (the
//! better, so far, of the majority class and Gaussian naive Bayes, as
//! River's `nba`).
//!
//! A leaf tries to split every `grace_period` of weight: the best and the
//! second-best candidate (not splitting counts as a candidate of merit 0)
//! are compared with the Hoeffding bound ε = sqrt(R² ln(1/δ) / 2n), R =
//! log2(classes); it splits when best − second > ε or ε < τ. The children
//! start from the class weights the Gaussians put on each side.
//!
//! This tree handles drift only through the trainer, which replaces the
//! model on a monitor's drift (River's `DriftRetrainingClassifier`
//! pattern); `adaptive_tree.rs` grows the same leaves and splits but also
//! watches its own error and swaps subtrees.

use serde::{Deserialize, Serialize};

/// Weighted mean, variance, min and max of one feature within one class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Gaussian {
    weight: f64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Gaussian {
    fn update(&mut self, x: f64, w: f64) {
        if self.weight == 0.0 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.weight += w;
        let delta = x - self.mean;
        self.mean += w * delta / self.weight;
        self.m2 += w * delta * (x - self.mean);
    }

    fn std(&self) -> f64 {
        if self.weight > 1.0 {
            (self.m2 / (self.weight - 1.0)).max(0.0).sqrt()
        } else {
            0.0
        }
    }

    /// P(X <= x).
    fn cdf(&self, x: f64) -> f64 {
        let s = self.std();
        if s <= 0.0 {
            return if x >= self.mean { 1.0 } else { 0.0 };
        }
        0.5 * (1.0 + erf((x - self.mean) / (s * std::f64::consts::SQRT_2)))
    }

    fn log_pdf(&self, x: f64) -> f64 {
        let s = self.std().max(1e-9);
        let z = (x - self.mean) / s;
        -0.5 * z * z - s.ln() - 0.5 * (std::f64::consts::TAU).ln()
    }
}

/// Abramowitz–Stegun 7.1.26 (absolute error below 1.5e-7), enough for
/// split merits.
pub(crate) fn erf(x: f64) -> f64 {
    let sign = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    sign * y
}

fn entropy(weights: &[f64]) -> f64 {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    weights
        .iter()
        .filter(|&&w| w > 0.0)
        .map(|&w| {
            let p = w / total;
            -p * p.log2()
        })
        .sum()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Leaf {
    class_weights: Vec<f64>,
    /// `[feature][class]`.
    estimators: Vec<Vec<Gaussian>>,
    weight_at_last_attempt: f64,
    majority_correct: f64,
    bayes_correct: f64,
}

impl Leaf {
    /// A leaf that starts from the class weights a split gave its side.
    pub(super) fn with_class_weights(class_weights: Vec<f64>) -> Self {
        Self {
            class_weights,
            ..Self::default()
        }
    }

    /// Whether the leaf has seen any weight.
    pub(super) fn is_empty(&self) -> bool {
        self.class_weights.iter().all(|&w| w <= 0.0)
    }

    fn majority(&self, classes: usize, out: &mut Vec<f64>) {
        out.clear();
        let total: f64 = self.class_weights.iter().sum();
        for c in 0..classes {
            let w = self.class_weights.get(c).copied().unwrap_or(0.0);
            out.push(if total > 0.0 {
                w / total
            } else {
                1.0 / classes as f64
            });
        }
    }

    fn naive_bayes(&self, classes: usize, x: &[f64], out: &mut Vec<f64>) {
        out.clear();
        let total: f64 = self.class_weights.iter().sum();
        for c in 0..classes {
            let w = self.class_weights.get(c).copied().unwrap_or(0.0);
            if w <= 0.0 || total <= 0.0 {
                out.push(f64::NEG_INFINITY);
                continue;
            }
            let mut log = (w / total).ln();
            for (j, estimators) in self.estimators.iter().enumerate() {
                if let Some(g) = estimators.get(c)
                    && g.weight > 0.0
                {
                    log += g.log_pdf(x[j]);
                }
            }
            out.push(log);
        }
        let max = out.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            self.majority(classes, out);
            return;
        }
        let mut sum = 0.0;
        for p in out.iter_mut() {
            *p = (*p - max).exp();
            sum += *p;
        }
        for p in out.iter_mut() {
            *p /= sum;
        }
    }

    /// Class probabilities by adaptive naive Bayes: naive Bayes once it has
    /// been right more often (by weight) than the majority class.
    pub(super) fn predict(&self, classes: usize, x: &[f64], out: &mut Vec<f64>) {
        if self.bayes_correct > self.majority_correct {
            self.naive_bayes(classes, x, out);
        } else {
            self.majority(classes, out);
        }
    }

    /// Learn one row; true when a split attempt is due (another grace
    /// period of weight since the last one).
    pub(super) fn learn(
        &mut self,
        x: &[f64],
        class: usize,
        weight: f64,
        classes: usize,
        rule: &SplitRule,
        scratch: &mut Vec<f64>,
    ) -> bool {
        // Which leaf predictor would have been right (adaptive NB).
        self.majority(classes, scratch);
        if argmax(scratch) == Some(class) {
            self.majority_correct += weight;
        }
        self.naive_bayes(classes, x, scratch);
        if argmax(scratch) == Some(class) {
            self.bayes_correct += weight;
        }
        if self.class_weights.len() < classes {
            self.class_weights.resize(classes, 0.0);
        }
        self.class_weights[class] += weight;
        if self.estimators.len() < x.len() {
            self.estimators.resize(x.len(), Vec::new());
        }
        for (j, &xj) in x.iter().enumerate() {
            let per_class = &mut self.estimators[j];
            if per_class.len() < classes {
                per_class.resize(classes, Gaussian::default());
            }
            per_class[class].update(xj, weight);
        }
        let seen: f64 = self.class_weights.iter().sum();
        if seen - self.weight_at_last_attempt >= rule.grace_period {
            self.weight_at_last_attempt = seen;
            true
        } else {
            false
        }
    }
}

/// Whether `x` takes the left branch of a split on `feature` at
/// `threshold` (a missing feature reads 0).
pub(super) fn goes_left(x: &[f64], feature: usize, threshold: f64) -> bool {
    x.get(feature).copied().unwrap_or(0.0) <= threshold
}

/// The index of the largest value (the last of equal ones), if any.
pub(super) fn argmax(p: &[f64]) -> Option<usize> {
    (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b]))
}

/// A split candidate: (merit, feature, threshold, class weights left,
/// class weights right).
type Candidate = (f64, usize, f64, Vec<f64>, Vec<f64>);

/// A split a leaf has earned.
pub(super) struct Split {
    pub feature: usize,
    pub threshold: f64,
    pub left: Vec<f64>,
    pub right: Vec<f64>,
}

/// When and where a leaf splits (River's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitRule {
    pub grace_period: f64,
    pub delta: f64,
    pub tau: f64,
    pub min_branch_fraction: f64,
    pub candidates: usize,
}

impl Default for SplitRule {
    fn default() -> Self {
        Self {
            grace_period: 200.0,
            delta: 1e-7,
            tau: 0.05,
            min_branch_fraction: 0.01,
            candidates: 10,
        }
    }
}

impl SplitRule {
    /// The best split of each feature, best first.
    fn best_splits(&self, leaf: &Leaf, classes: usize) -> Vec<Candidate> {
        let total: f64 = leaf.class_weights.iter().sum();
        let parent = entropy(&leaf.class_weights);
        let mut best_per_feature = Vec::new();
        for (j, per_class) in leaf.estimators.iter().enumerate() {
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for g in per_class.iter().filter(|g| g.weight > 0.0) {
                lo = lo.min(g.min);
                hi = hi.max(g.max);
            }
            if lo >= hi || lo.is_nan() || hi.is_nan() {
                continue;
            }
            let mut best: Option<Candidate> = None;
            for i in 1..=self.candidates {
                let threshold = lo + (hi - lo) * i as f64 / (self.candidates + 1) as f64;
                let mut left = vec![0.0; classes];
                let mut right = vec![0.0; classes];
                for (c, g) in per_class.iter().enumerate() {
                    if g.weight <= 0.0 {
                        continue;
                    }
                    let below = if threshold < g.min {
                        0.0
                    } else if threshold >= g.max {
                        g.weight
                    } else {
                        g.weight * g.cdf(threshold)
                    };
                    left[c] = below;
                    right[c] = g.weight - below;
                }
                let (wl, wr): (f64, f64) = (left.iter().sum(), right.iter().sum());
                if wl < self.min_branch_fraction * total || wr < self.min_branch_fraction * total {
                    continue;
                }
                let merit = parent - (wl / total) * entropy(&left) - (wr / total) * entropy(&right);
                if best.as_ref().is_none_or(|b| merit > b.0) {
                    best = Some((merit, j, threshold, left, right));
                }
            }
            if let Some(b) = best {
                best_per_feature.push(b);
            }
        }
        best_per_feature.sort_by(|a, b| b.0.total_cmp(&a.0));
        best_per_feature
    }

    /// The split the Hoeffding bound allows `leaf` to make, if any.
    pub(super) fn decide(&self, leaf: &Leaf, classes: usize) -> Option<Split> {
        if leaf.class_weights.iter().filter(|&&w| w > 0.0).count() < 2 {
            return None;
        }
        let mut candidates = self.best_splits(leaf, classes);
        // Not splitting is a candidate of merit 0.
        let second = candidates.get(1).map_or(0.0, |c| c.0.max(0.0));
        let n: f64 = leaf.class_weights.iter().sum();
        let range = (classes.max(2) as f64).log2();
        let epsilon = (range * range * (1.0 / self.delta).ln() / (2.0 * n)).sqrt();
        let best = candidates.first()?;
        if best.0 > 0.0 && (best.0 - second > epsilon || epsilon < self.tau) {
            let (_, feature, threshold, left, right) = candidates.swap_remove(0);
            Some(Split {
                feature,
                threshold,
                left,
                right,
            })
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Node {
    Leaf(Leaf),
    Split {
        feature: usize,
        threshold: f64,
        left: usize,
        right: usize,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HoeffdingTree {
    #[serde(flatten)]
    pub rule: SplitRule,
    nodes: Vec<Node>,
    classes: usize,
}

impl HoeffdingTree {
    pub fn leaves(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| matches!(n, Node::Leaf(_)))
            .count()
    }

    fn leaf_of(&self, x: &[f64]) -> usize {
        let mut at = 0;
        while let Node::Split {
            feature,
            threshold,
            left,
            right,
        } = &self.nodes[at]
        {
            at = if goes_left(x, *feature, *threshold) {
                *left
            } else {
                *right
            };
        }
        at
    }

    /// Class probabilities of `x`.
    pub fn predict_proba(&self, x: &[f64], out: &mut Vec<f64>) {
        out.clear();
        if self.classes == 0 || self.nodes.is_empty() {
            return;
        }
        if let Node::Leaf(leaf) = &self.nodes[self.leaf_of(x)] {
            leaf.predict(self.classes, x, out);
        }
    }

    pub fn learn(&mut self, x: &[f64], class: usize, weight: f64, scratch: &mut Vec<f64>) {
        if !(weight.is_finite() && weight > 0.0) {
            return;
        }
        if self.nodes.is_empty() {
            self.nodes.push(Node::Leaf(Leaf::default()));
        }
        self.classes = self.classes.max(class + 1);
        let at = self.leaf_of(x);
        let Node::Leaf(leaf) = &mut self.nodes[at] else {
            return;
        };
        if !leaf.learn(x, class, weight, self.classes, &self.rule, scratch) {
            return;
        }
        let Some(split) = self.rule.decide(leaf, self.classes) else {
            return;
        };
        let left = self.nodes.len();
        self.nodes
            .push(Node::Leaf(Leaf::with_class_weights(split.left)));
        self.nodes
            .push(Node::Leaf(Leaf::with_class_weights(split.right)));
        self.nodes[at] = Node::Split {
            feature: split.feature,
            threshold: split.threshold,
            left,
            right: left + 1,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn erf_is_close() {
        for (x, expected) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (-2.0, -0.995_322_265_0),
        ] {
            assert!((erf(x) - expected).abs() < 2e-7, "{x}");
        }
    }

    #[test]
    fn the_tree_splits_on_the_informative_feature_and_learns_a_threshold() {
        let mut rng = Rng::new(3);
        let mut tree = HoeffdingTree::default();
        let (mut hits, mut rows) = ([0.0; 2], [0.0; 2]);
        let (mut p, mut scratch) = (Vec::new(), Vec::new());
        for t in 0..30_000 {
            let x = [rng.uniform() * 10.0, rng.uniform()];
            // Class 1 (about 10%) when the first feature exceeds 9.
            let class = usize::from(x[0] > 9.0);
            tree.predict_proba(&x, &mut p);
            if t >= 20_000 {
                let predicted = argmax(&p);
                rows[class] += 1.0;
                hits[class] += f64::from(u8::from(predicted == Some(class)));
            }
            tree.learn(&x, class, 1.0, &mut scratch);
        }
        assert!(tree.leaves() >= 2);
        let Node::Split { feature, .. } = &tree.nodes[0] else {
            panic!("no split");
        };
        assert_eq!(*feature, 0);
        assert!(
            hits[0] / rows[0] > 0.97 && hits[1] / rows[1] > 0.8,
            "{hits:?} of {rows:?}"
        );
    }
}
