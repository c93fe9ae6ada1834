//! Hoeffding adaptive tree (Bifet and Gavaldà 2009), as River 0.26's
//! `HoeffdingAdaptiveTreeClassifier` with its defaults: the leaves, split
//! rule and leaf predictors of the Hoeffding tree (`hoeffding.rs`), plus,
//! at every node, ADWIN (δ = 0.002) on the node's 0/1 error and a running
//! mean of that error.
//!
//! - A row is learned along its path: every node on it records whether the
//!   leaf the row reaches below it predicted the row's class (before the
//!   leaf learns the row).
//! - When ADWIN flags a change at a split and the error went up, the split
//!   starts an alternate subtree (a new leaf; any older alternate is
//!   dropped) that learns every row reaching the split from then on; its
//!   error mean and the split's restart. A change with the error going down
//!   restarts the mean only (at a leaf, as in River, only that case acts).
//! - Once the split and its alternate have each recorded more than
//!   `drift_window_threshold` (300) rows, their error means are compared
//!   with the bound sqrt(2 e (1 − e) ln(2 / 0.05) (1/n_alt + 1/n)), e the
//!   split's error: the alternate replaces the subtree when it is better by
//!   more than the bound, and is dropped when worse by more than it.
//! - Leaves learn with bootstrap weights: the weight times k ~ Poisson(1)
//!   when k > 0, unchanged when k = 0 (River's rule, kept as is).
//! - Prediction sums the votes of the row's leaf and of the leaves it
//!   reaches in alternates along its path, each leaf's distribution scaled
//!   by 1 / e² of its error mean (unscaled while e = 0), then normalised,
//!   as River does.
//!
//! Choices where River's code is not a specification: a promoted alternate
//! learns the row that promoted it (River does so at the root only), and
//! replaced or dropped subtrees return their nodes to a free list that new
//! nodes reuse, so that a long stream with many swaps keeps the arena as
//! large as the live tree (tested).

use serde::{Deserialize, Serialize};

use super::hoeffding::{Leaf, SplitRule, argmax, goes_left};
use crate::drift::{Adwin, DriftDetector, DriftState, RunningMean};
use crate::rng::Rng;

/// A node's error: ADWIN signals a change, the mean is what a subtree and
/// its alternate are compared on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ErrorWatch {
    detector: Adwin,
    error: RunningMean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorChange {
    None,
    Lower,
    Higher,
}

impl ErrorWatch {
    /// Start the error mean over (ADWIN keeps its own window).
    fn restart(&mut self) {
        self.error = RunningMean::default();
    }

    fn observe(&mut self, wrong: bool) -> ErrorChange {
        let value = f64::from(u8::from(wrong));
        let before = self.error.mean;
        let drift = self.detector.update(value) == DriftState::Drift;
        self.error.update(value);
        if !drift {
            ErrorChange::None
        } else if before > self.error.mean {
            ErrorChange::Lower
        } else {
            ErrorChange::Higher
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Kind {
    Leaf(Leaf),
    Split {
        feature: usize,
        threshold: f64,
        left: usize,
        right: usize,
        alternate: Option<usize>,
    },
    /// On the free list.
    Free,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Node {
    kind: Kind,
    watch: ErrorWatch,
}

impl Node {
    fn leaf(leaf: Leaf) -> Self {
        Self {
            kind: Kind::Leaf(leaf),
            watch: ErrorWatch::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveHoeffdingTree {
    #[serde(flatten)]
    pub rule: SplitRule,
    /// Rows both a split and its alternate must have recorded before they
    /// are compared.
    pub drift_window_threshold: f64,
    /// Significance of the switch test.
    pub switch_significance: f64,
    pub bootstrap: bool,
    nodes: Vec<Node>,
    free: Vec<usize>,
    root: usize,
    classes: usize,
    rng: Rng,
    /// Alternates started, subtrees replaced by one, alternates dropped.
    pub alternates_started: u64,
    pub subtrees_replaced: u64,
    pub alternates_dropped: u64,
}

impl AdaptiveHoeffdingTree {
    pub fn new(seed: u64) -> Self {
        Self {
            rule: SplitRule::default(),
            drift_window_threshold: 300.0,
            switch_significance: 0.05,
            bootstrap: true,
            nodes: vec![Node::leaf(Leaf::default())],
            free: Vec::new(),
            root: 0,
            classes: 0,
            rng: Rng::new(seed),
            alternates_started: 0,
            subtrees_replaced: 0,
            alternates_dropped: 0,
        }
    }

    fn allocate(&mut self, node: Node) -> usize {
        match self.free.pop() {
            Some(at) => {
                self.nodes[at] = node;
                at
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        }
    }

    /// Return `at` and everything below it (alternates included) to the
    /// free list.
    fn release(&mut self, at: usize) {
        let kind = std::mem::replace(&mut self.nodes[at].kind, Kind::Free);
        self.nodes[at].watch = ErrorWatch::default();
        self.free.push(at);
        if let Kind::Split {
            left,
            right,
            alternate,
            ..
        } = kind
        {
            self.release(left);
            self.release(right);
            if let Some(alternate) = alternate {
                self.release(alternate);
            }
        }
    }

    /// The leaf `x` reaches from `at`, alternates aside.
    fn leaf_under(&self, mut at: usize, x: &[f64]) -> usize {
        while let Kind::Split {
            feature,
            threshold,
            left,
            right,
            ..
        } = &self.nodes[at].kind
        {
            at = if goes_left(x, *feature, *threshold) {
                *left
            } else {
                *right
            };
        }
        at
    }

    /// Leaves of the live tree (alternates not counted).
    pub fn leaves(&self) -> usize {
        let mut stack = vec![self.root];
        let mut leaves = 0;
        while let Some(at) = stack.pop() {
            match &self.nodes[at].kind {
                Kind::Split { left, right, .. } => stack.extend([*left, *right]),
                _ => leaves += 1,
            }
        }
        leaves
    }

    /// Nodes reachable from the root, alternates included.
    #[cfg(test)]
    fn reachable(&self) -> usize {
        let mut stack = vec![self.root];
        let mut count = 0;
        while let Some(at) = stack.pop() {
            count += 1;
            if let Kind::Split {
                left,
                right,
                alternate,
                ..
            } = &self.nodes[at].kind
            {
                stack.extend([*left, *right]);
                stack.extend(*alternate);
            }
        }
        count
    }

    /// Class probabilities of `x`.
    pub fn predict_proba(&self, x: &[f64], out: &mut Vec<f64>) {
        out.clear();
        if self.classes == 0 {
            return;
        }
        out.resize(self.classes, 0.0);
        let mut vote = Vec::new();
        self.add_votes(self.root, x, out, &mut vote);
        let total: f64 = out.iter().sum();
        if total > 0.0 && total.is_finite() {
            out.iter_mut().for_each(|p| *p /= total);
        } else {
            out.fill(1.0 / self.classes as f64);
        }
    }

    fn add_votes(&self, mut at: usize, x: &[f64], out: &mut [f64], vote: &mut Vec<f64>) {
        loop {
            match &self.nodes[at].kind {
                Kind::Split {
                    feature,
                    threshold,
                    left,
                    right,
                    alternate,
                } => {
                    if let Some(alternate) = alternate {
                        self.add_votes(*alternate, x, out, vote);
                    }
                    at = if goes_left(x, *feature, *threshold) {
                        *left
                    } else {
                        *right
                    };
                }
                Kind::Leaf(leaf) if !leaf.is_empty() => {
                    leaf.predict(self.classes, x, vote);
                    let sum: f64 = vote.iter().sum();
                    let error = self.nodes[at].watch.error.mean;
                    let factor = sum * error * error;
                    let scale = if factor > 0.0 { 1.0 / factor } else { 1.0 };
                    for (o, v) in out.iter_mut().zip(vote.iter()) {
                        *o += v * scale;
                    }
                    return;
                }
                _ => return,
            }
        }
    }

    pub fn learn(&mut self, x: &[f64], class: usize, weight: f64, scratch: &mut Vec<f64>) {
        if !(weight.is_finite() && weight > 0.0) {
            return;
        }
        self.classes = self.classes.max(class + 1);
        self.root = self.learn_subtree(self.root, x, class, weight, scratch);
    }

    /// Learn a row in the subtree at `at`; the node that roots the subtree
    /// afterwards (an alternate may have replaced it).
    fn learn_subtree(
        &mut self,
        at: usize,
        x: &[f64],
        class: usize,
        weight: f64,
        scratch: &mut Vec<f64>,
    ) -> usize {
        let leaf = self.leaf_under(at, x);
        let wrong = match &self.nodes[leaf].kind {
            Kind::Leaf(l) if !l.is_empty() => {
                l.predict(self.classes, x, scratch);
                argmax(scratch) != Some(class)
            }
            // River: an empty leaf predicts nothing, which is an error.
            _ => true,
        };
        self.learn_path(at, x, class, weight, wrong, scratch)
    }

    fn learn_path(
        &mut self,
        at: usize,
        x: &[f64],
        class: usize,
        weight: f64,
        wrong: bool,
        scratch: &mut Vec<f64>,
    ) -> usize {
        let change = self.nodes[at].watch.observe(wrong);
        match self.nodes[at].kind {
            Kind::Leaf(_) => {
                self.learn_leaf(at, x, class, weight, change, scratch);
                at
            }
            Kind::Split {
                feature,
                threshold,
                left,
                right,
                mut alternate,
            } => {
                match change {
                    ErrorChange::Lower => self.nodes[at].watch.restart(),
                    ErrorChange::Higher => {
                        self.nodes[at].watch.restart();
                        if let Some(old) = alternate {
                            self.release(old);
                        }
                        alternate = Some(self.allocate(Node::leaf(Leaf::default())));
                        self.alternates_started += 1;
                    }
                    ErrorChange::None => {
                        if let Some(candidate) = alternate {
                            match self.compare(at, candidate) {
                                Some(true) => {
                                    // Detach the alternate, then free the
                                    // subtree it replaces.
                                    self.nodes[at].kind = Kind::Split {
                                        feature,
                                        threshold,
                                        left,
                                        right,
                                        alternate: None,
                                    };
                                    self.release(at);
                                    self.subtrees_replaced += 1;
                                    return self
                                        .learn_subtree(candidate, x, class, weight, scratch);
                                }
                                Some(false) => {
                                    self.release(candidate);
                                    alternate = None;
                                    self.alternates_dropped += 1;
                                }
                                None => {}
                            }
                        }
                    }
                }
                if let Some(candidate) = alternate {
                    alternate = Some(self.learn_subtree(candidate, x, class, weight, scratch));
                }
                let left_side = goes_left(x, feature, threshold);
                let child = if left_side { left } else { right };
                let child = self.learn_path(child, x, class, weight, wrong, scratch);
                let (left, right) = if left_side {
                    (child, right)
                } else {
                    (left, child)
                };
                self.nodes[at].kind = Kind::Split {
                    feature,
                    threshold,
                    left,
                    right,
                    alternate,
                };
                at
            }
            Kind::Free => at,
        }
    }

    /// Whether the alternate should replace the subtree (`Some(true)`), be
    /// dropped (`Some(false)`), or go on learning (`None`).
    fn compare(&self, at: usize, alternate: usize) -> Option<bool> {
        let own = self.nodes[at].watch.error;
        let other = self.nodes[alternate].watch.error;
        if own.n <= self.drift_window_threshold || other.n <= self.drift_window_threshold {
            return None;
        }
        let (e, e_alt) = (own.mean, other.mean);
        let bound = (2.0
            * e
            * (1.0 - e)
            * (2.0 / self.switch_significance).ln()
            * (1.0 / other.n + 1.0 / own.n))
            .sqrt();
        if bound < e - e_alt {
            Some(true)
        } else if bound < e_alt - e {
            Some(false)
        } else {
            None
        }
    }

    fn learn_leaf(
        &mut self,
        at: usize,
        x: &[f64],
        class: usize,
        weight: f64,
        change: ErrorChange,
        scratch: &mut Vec<f64>,
    ) {
        let weight = if self.bootstrap {
            match poisson_one(&mut self.rng) {
                0 => weight,
                k => weight * k as f64,
            }
        } else {
            weight
        };
        if change == ErrorChange::Lower {
            self.nodes[at].watch.restart();
        }
        let classes = self.classes;
        let Kind::Leaf(leaf) = &mut self.nodes[at].kind else {
            return;
        };
        if !leaf.learn(x, class, weight, classes, &self.rule, scratch) {
            return;
        }
        let Some(split) = self.rule.decide(leaf, classes) else {
            return;
        };
        let left = self.allocate(Node::leaf(Leaf::with_class_weights(split.left)));
        let right = self.allocate(Node::leaf(Leaf::with_class_weights(split.right)));
        self.nodes[at] = Node {
            kind: Kind::Split {
                feature: split.feature,
                threshold: split.threshold,
                left,
                right,
                alternate: None,
            },
            watch: ErrorWatch::default(),
        };
    }
}

/// k ~ Poisson(1) by Knuth's product of uniforms (as River's `poisson`).
fn poisson_one(rng: &mut Rng) -> u32 {
    let limit = (-1.0f64).exp();
    let mut product = 1.0;
    let mut k = 0;
    loop {
        product *= rng.uniform();
        if product <= limit {
            return k;
        }
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::hoeffding::HoeffdingTree;

    /// Class 1 when the first feature exceeds 0.5 up to `change`, then when
    /// the second does (an abrupt concept change the old splits cannot
    /// express); accuracy over the `after` rows that follow `change + lag`.
    fn concept_swap_accuracy(
        learn: &mut dyn FnMut(&[f64], usize),
        predict: &dyn Fn(&[f64], &mut Vec<f64>),
        change: usize,
        lag: usize,
        after: usize,
    ) -> f64 {
        let mut rng = Rng::new(11);
        let mut p = Vec::new();
        let mut hits = 0;
        for t in 0..change + lag + after {
            let x = [rng.uniform(), rng.uniform(), rng.uniform()];
            let informative = if t < change { x[0] } else { x[1] };
            // Four stripes: a concept of three splits on one feature.
            let class = (informative * 4.0) as usize % 2;
            if t >= change + lag {
                predict(&x, &mut p);
                hits += usize::from(argmax(&p) == Some(class));
            }
            learn(&x, class);
        }
        hits as f64 / after as f64
    }

    #[test]
    fn alternate_subtrees_recover_from_a_concept_swap_sooner_than_growing_the_old_tree() {
        let mut scratch = Vec::new();
        let tree = std::cell::RefCell::new(AdaptiveHoeffdingTree::new(7));
        let adaptive = concept_swap_accuracy(
            &mut |x, c| tree.borrow_mut().learn(x, c, 1.0, &mut scratch),
            &|x, p| tree.borrow().predict_proba(x, p),
            20_000,
            5_000,
            5_000,
        );
        let tree = tree.into_inner();
        let mut scratch = Vec::new();
        let plain = std::cell::RefCell::new(HoeffdingTree::default());
        let plain = concept_swap_accuracy(
            &mut |x, c| plain.borrow_mut().learn(x, c, 1.0, &mut scratch),
            &|x, p| plain.borrow().predict_proba(x, p),
            20_000,
            5_000,
            5_000,
        );
        assert!(tree.alternates_started >= 1 && tree.subtrees_replaced >= 1);
        // Measured: 0.940 against 0.858.
        assert!(
            adaptive > 0.92 && adaptive > plain + 0.05,
            "adaptive {adaptive}, plain {plain}"
        );
    }

    #[test]
    fn replaced_subtrees_are_reused_so_the_arena_stays_the_size_of_the_live_tree() {
        let mut tree = AdaptiveHoeffdingTree::new(3);
        let mut rng = Rng::new(5);
        let mut scratch = Vec::new();
        // A concept that swaps every 5,000 rows keeps starting alternates.
        for t in 0..60_000 {
            let x = [rng.uniform(), rng.uniform()];
            let class = usize::from(x[(t / 5_000) % 2] > 0.5);
            tree.learn(&x, class, 1.0, &mut scratch);
            assert_eq!(tree.reachable() + tree.free.len(), tree.nodes.len());
        }
        assert!(tree.subtrees_replaced + tree.alternates_dropped >= 3);
        assert!(
            tree.nodes.len() <= 4 * tree.reachable().max(8),
            "arena {} for {} live nodes",
            tree.nodes.len(),
            tree.reachable()
        );
    }

    #[test]
    fn the_switch_test_follows_the_bound() {
        let mut tree = AdaptiveHoeffdingTree::new(1);
        let split = tree.allocate(Node::leaf(Leaf::default()));
        let alternate = tree.allocate(Node::leaf(Leaf::default()));
        let set = |tree: &mut AdaptiveHoeffdingTree, at: usize, n: f64, mean: f64| {
            tree.nodes[at].watch.error = RunningMean { n, mean };
        };
        // Too few rows on one side: no decision.
        set(&mut tree, split, 300.0, 0.4);
        set(&mut tree, alternate, 1_000.0, 0.1);
        assert_eq!(tree.compare(split, alternate), None);
        // e = 0.4, n = n_alt = 1,000: bound = sqrt(2 * 0.24 * ln 40 * 0.002) = 0.0594.
        set(&mut tree, split, 1_000.0, 0.4);
        set(&mut tree, alternate, 1_000.0, 0.34);
        assert_eq!(tree.compare(split, alternate), Some(true));
        set(&mut tree, alternate, 1_000.0, 0.35);
        assert_eq!(tree.compare(split, alternate), None);
        set(&mut tree, alternate, 1_000.0, 0.46);
        assert_eq!(tree.compare(split, alternate), Some(false));
    }

    #[test]
    fn poisson_one_has_mean_and_variance_one() {
        let mut rng = Rng::new(9);
        let draws: Vec<f64> = (0..200_000)
            .map(|_| f64::from(poisson_one(&mut rng)))
            .collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let variance = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / draws.len() as f64;
        assert!((mean - 1.0).abs() < 0.01 && (variance - 1.0).abs() < 0.02);
    }

    #[test]
    fn a_snapshot_mid_stream_continues_exactly_like_the_original() {
        let mut tree = AdaptiveHoeffdingTree::new(4);
        let mut rng = Rng::new(8);
        let mut scratch = Vec::new();
        let row = |t: usize, rng: &mut Rng| {
            let x = [rng.uniform(), rng.uniform()];
            (x, usize::from(x[usize::from(t >= 15_000)] > 0.5))
        };
        for t in 0..22_000 {
            let (x, c) = row(t, &mut rng);
            tree.learn(&x, c, 1.0, &mut scratch);
        }
        let text = serde_json::to_string(&tree).expect("serialise");
        let mut restored: AdaptiveHoeffdingTree = serde_json::from_str(&text).expect("read");
        assert_eq!(restored, tree);
        let (mut p, mut q) = (Vec::new(), Vec::new());
        for t in 22_000..30_000 {
            let (x, c) = row(t, &mut rng);
            tree.predict_proba(&x, &mut p);
            restored.predict_proba(&x, &mut q);
            assert_eq!(p, q);
            tree.learn(&x, c, 1.0, &mut scratch);
            restored.learn(&x, c, 1.0, &mut scratch);
        }
        assert_eq!(restored, tree);
    }
}
