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
//! Drift is handled outside the tree: the trainer replaces the model on a
//! monitor's drift (River's `DriftRetrainingClassifier` pattern) rather
//! than swapping subtrees as the adaptive tree does.

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
fn erf(x: f64) -> f64 {
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
struct Leaf {
    class_weights: Vec<f64>,
    /// `[feature][class]`.
    estimators: Vec<Vec<Gaussian>>,
    weight_at_last_attempt: f64,
    majority_correct: f64,
    bayes_correct: f64,
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

/// A split candidate: (merit, feature, threshold, class weights left,
/// class weights right).
type Candidate = (f64, usize, f64, Vec<f64>, Vec<f64>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoeffdingTree {
    pub grace_period: f64,
    pub delta: f64,
    pub tau: f64,
    pub min_branch_fraction: f64,
    pub candidates: usize,
    nodes: Vec<Node>,
    classes: usize,
}

impl Default for HoeffdingTree {
    fn default() -> Self {
        Self {
            grace_period: 200.0,
            delta: 1e-7,
            tau: 0.05,
            min_branch_fraction: 0.01,
            candidates: 10,
            nodes: vec![Node::Leaf(Leaf::default())],
            classes: 0,
        }
    }
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
            at = if x.get(*feature).copied().unwrap_or(0.0) <= *threshold {
                *left
            } else {
                *right
            };
        }
        at
    }

    fn majority(leaf: &Leaf, classes: usize, out: &mut Vec<f64>) {
        out.clear();
        let total: f64 = leaf.class_weights.iter().sum();
        for c in 0..classes {
            let w = leaf.class_weights.get(c).copied().unwrap_or(0.0);
            out.push(if total > 0.0 {
                w / total
            } else {
                1.0 / classes as f64
            });
        }
    }

    fn naive_bayes(leaf: &Leaf, classes: usize, x: &[f64], out: &mut Vec<f64>) {
        out.clear();
        let total: f64 = leaf.class_weights.iter().sum();
        for c in 0..classes {
            let w = leaf.class_weights.get(c).copied().unwrap_or(0.0);
            if w <= 0.0 || total <= 0.0 {
                out.push(f64::NEG_INFINITY);
                continue;
            }
            let mut log = (w / total).ln();
            for (j, estimators) in leaf.estimators.iter().enumerate() {
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
            Self::majority(leaf, classes, out);
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

    fn argmax(p: &[f64]) -> Option<usize> {
        (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b]))
    }

    /// Class probabilities of `x`.
    pub fn predict_proba(&self, x: &[f64], out: &mut Vec<f64>) {
        out.clear();
        if self.classes == 0 {
            return;
        }
        let Node::Leaf(leaf) = &self.nodes[self.leaf_of(x)] else {
            return;
        };
        if leaf.bayes_correct > leaf.majority_correct {
            Self::naive_bayes(leaf, self.classes, x, out);
        } else {
            Self::majority(leaf, self.classes, out);
        }
    }

    pub fn learn(&mut self, x: &[f64], class: usize, weight: f64) {
        if !(weight.is_finite() && weight > 0.0) {
            return;
        }
        self.classes = self.classes.max(class + 1);
        let classes = self.classes;
        let at = self.leaf_of(x);
        let Node::Leaf(leaf) = &mut self.nodes[at] else {
            return;
        };
        // Which leaf predictor would have been right (adaptive NB).
        let mut p = Vec::new();
        Self::majority(leaf, classes, &mut p);
        if Self::argmax(&p) == Some(class) {
            leaf.majority_correct += weight;
        }
        Self::naive_bayes(leaf, classes, x, &mut p);
        if Self::argmax(&p) == Some(class) {
            leaf.bayes_correct += weight;
        }
        if leaf.class_weights.len() < classes {
            leaf.class_weights.resize(classes, 0.0);
        }
        leaf.class_weights[class] += weight;
        if leaf.estimators.len() < x.len() {
            leaf.estimators.resize(x.len(), Vec::new());
        }
        for (j, &xj) in x.iter().enumerate() {
            let per_class = &mut leaf.estimators[j];
            if per_class.len() < classes {
                per_class.resize(classes, Gaussian::default());
            }
            per_class[class].update(xj, weight);
        }
        let seen: f64 = leaf.class_weights.iter().sum();
        if seen - leaf.weight_at_last_attempt >= self.grace_period {
            leaf.weight_at_last_attempt = seen;
            self.attempt_split(at);
        }
    }

    /// The best split of each feature, best first.
    fn best_split(&self, leaf: &Leaf) -> Vec<Candidate> {
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
                let mut left = vec![0.0; self.classes];
                let mut right = vec![0.0; self.classes];
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

    fn attempt_split(&mut self, at: usize) {
        let Node::Leaf(leaf) = &self.nodes[at] else {
            return;
        };
        if leaf.class_weights.iter().filter(|&&w| w > 0.0).count() < 2 {
            return;
        }
        let candidates = self.best_split(leaf);
        let Some(best) = candidates.first() else {
            return;
        };
        // Not splitting is a candidate of merit 0.
        let second = candidates.get(1).map_or(0.0, |c| c.0.max(0.0));
        let n: f64 = leaf.class_weights.iter().sum();
        let range = (self.classes.max(2) as f64).log2();
        let epsilon = (range * range * (1.0 / self.delta).ln() / (2.0 * n)).sqrt();
        if best.0 > 0.0 && (best.0 - second > epsilon || epsilon < self.tau) {
            let (_, feature, threshold, left, right) = best.clone();
            let left_id = self.nodes.len();
            self.nodes.push(Node::Leaf(Leaf {
                class_weights: left,
                ..Leaf::default()
            }));
            self.nodes.push(Node::Leaf(Leaf {
                class_weights: right,
                ..Leaf::default()
            }));
            self.nodes[at] = Node::Split {
                feature,
                threshold,
                left: left_id,
                right: left_id + 1,
            };
        }
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
        let mut p = Vec::new();
        for t in 0..30_000 {
            let x = [rng.uniform() * 10.0, rng.uniform()];
            // Class 1 (about 10%) when the first feature exceeds 9.
            let class = usize::from(x[0] > 9.0);
            tree.predict_proba(&x, &mut p);
            if t >= 20_000 {
                let predicted = HoeffdingTree::argmax(&p);
                rows[class] += 1.0;
                hits[class] += f64::from(u8::from(predicted == Some(class)));
            }
            tree.learn(&x, class, 1.0);
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
