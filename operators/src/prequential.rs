//! Prequential (test-then-train) classification quality: a confusion
//! matrix over the last `window` predicted rows and one over all of them,
//! and the per-class scores an imbalanced stream is judged by.
//!
//! Conventions (the same as scikit-learn's with `zero_division=0`): a
//! class's recall is undefined (None) while no row of it is in scope; its
//! precision is 0 when it was never predicted but has rows, F1 is 0 when
//! precision + recall is 0. G-mean and balanced accuracy are over the
//! classes with rows in scope. A class's gauges are published only while it
//! has its own `class` label (the capped `other` bucket would mix classes).

use std::collections::VecDeque;

use equipoise_udfs::confusion::ConfusionCells;
use equipoise_udfs::scores;

use crate::metrics::{OTHER_CLASS, SharedMetrics};

/// Which rows a score covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The last `window` rows.
    Sliding,
    /// Every row since the start.
    Total,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sliding => "sliding",
            Self::Total => "total",
        }
    }
}

/// Confusion matrices of a predicted stream, over the shared
/// [`ConfusionCells`] and scored by the shared formulas ([`scores`]).
#[derive(Debug, Clone)]
pub struct Prequential {
    window: usize,
    classes: usize,
    recent: VecDeque<(usize, usize)>,
    sliding: ConfusionCells,
    total: ConfusionCells,
}

impl Prequential {
    pub fn new(window: usize) -> Self {
        Self {
            window: window.max(1),
            classes: 0,
            recent: VecDeque::new(),
            sliding: ConfusionCells::default(),
            total: ConfusionCells::default(),
        }
    }

    /// A row of class slot `truth` predicted as slot `prediction`.
    pub fn update(&mut self, truth: usize, prediction: usize) {
        let classes = truth.max(prediction) + 1;
        if classes > self.classes {
            self.classes = classes;
            self.sliding.fit(classes);
            self.total.fit(classes);
        }
        self.sliding.add(truth as u32, prediction as u32, 1);
        self.total.add(truth as u32, prediction as u32, 1);
        self.recent.push_back((truth, prediction));
        if self.recent.len() > self.window
            && let Some((t, p)) = self.recent.pop_front()
        {
            // The row was counted above, so taking it back cannot fail.
            let _ = self.sliding.remove(t as u32, p as u32);
        }
    }

    fn matrix(&self, scope: Scope) -> &ConfusionCells {
        match scope {
            Scope::Sliding => &self.sliding,
            Scope::Total => &self.total,
        }
    }

    pub fn recall(&self, scope: Scope, class: usize) -> Option<f64> {
        if class >= self.classes {
            return None;
        }
        let matrix = self.matrix(scope);
        let rows = matrix.true_count(class as u32);
        (rows > 0).then(|| matrix.count(class as u32, class as u32) as f64 / rows as f64)
    }

    pub fn precision(&self, scope: Scope, class: usize) -> Option<f64> {
        if class >= self.classes {
            return None;
        }
        let matrix = self.matrix(scope);
        let predicted = matrix.predicted_count(class as u32);
        if predicted > 0 {
            Some(matrix.count(class as u32, class as u32) as f64 / predicted as f64)
        } else {
            (matrix.true_count(class as u32) > 0).then_some(0.0)
        }
    }

    pub fn f1(&self, scope: Scope, class: usize) -> Option<f64> {
        let (p, r) = (self.precision(scope, class)?, self.recall(scope, class)?);
        Some(scores::f1(p, r))
    }

    fn recalls(&self, scope: Scope) -> Vec<f64> {
        (0..self.classes)
            .filter_map(|c| self.recall(scope, c))
            .collect()
    }

    /// Geometric mean of the per-class recalls.
    pub fn gmean(&self, scope: Scope) -> Option<f64> {
        scores::gmean(&self.recalls(scope))
    }

    /// Mean of the per-class recalls.
    pub fn balanced_accuracy(&self, scope: Scope) -> Option<f64> {
        scores::mean(&self.recalls(scope))
    }

    /// Set the gauges of `operator`; `labels[slot]` is each class's label.
    pub fn publish(&self, metrics: &SharedMetrics, operator: &str, labels: &[String]) {
        for scope in [Scope::Sliding, Scope::Total] {
            let window = scope.name();
            for (class, label) in labels.iter().enumerate() {
                if label == OTHER_CLASS {
                    continue;
                }
                let values = [&metrics.recall, &metrics.precision, &metrics.f1]
                    .into_iter()
                    .zip([
                        self.recall(scope, class),
                        self.precision(scope, class),
                        self.f1(scope, class),
                    ]);
                for (family, value) in values {
                    if let Some(value) = value {
                        family
                            .with_label_values(&[operator, label.as_str(), window])
                            .set(value);
                    }
                }
            }
            if let Some(g) = self.gmean(scope) {
                metrics.gmean.with_label_values(&[operator, window]).set(g);
            }
            if let Some(b) = self.balanced_accuracy(scope) {
                metrics
                    .balanced_accuracy
                    .with_label_values(&[operator, window])
                    .set(b);
            }
        }
    }
}

/// Bins of the whole-run ROC-AUC over scores in [0, 1].
const AUC_BINS: usize = 10_000;

/// ROC-AUC of a score for the positive (minority) class: exact over the
/// last `window` rows (sorted when asked), and over the whole run from
/// counts in 10,000 equal score bins, ties within a bin counted as half
/// (the error is at most the share of positive-negative pairs that share a
/// bin). Scores outside [0, 1] are clamped.
#[derive(Debug, Clone)]
pub struct ScoreAuc {
    window: usize,
    recent: VecDeque<(f64, bool)>,
    /// Per bin: (negatives, positives).
    bins: Vec<(u64, u64)>,
}

impl ScoreAuc {
    pub fn new(window: usize) -> Self {
        Self {
            window: window.max(1),
            recent: VecDeque::new(),
            bins: vec![(0, 0); AUC_BINS],
        }
    }

    pub fn update(&mut self, score: f64, positive: bool) {
        let score = if score.is_nan() {
            0.0
        } else {
            score.clamp(0.0, 1.0)
        };
        let bin = ((score * AUC_BINS as f64) as usize).min(AUC_BINS - 1);
        if positive {
            self.bins[bin].1 += 1;
        } else {
            self.bins[bin].0 += 1;
        }
        self.recent.push_back((score, positive));
        if self.recent.len() > self.window {
            self.recent.pop_front();
        }
    }

    /// Mann–Whitney over (negatives, positives) counts in increasing score.
    fn from_counts(counts: impl Iterator<Item = (u64, u64)>) -> Option<f64> {
        let (mut negatives_below, mut pairs, mut wins) = (0u64, 0f64, 0f64);
        let mut positives = 0u64;
        for (n, p) in counts {
            wins += p as f64 * (negatives_below as f64 + 0.5 * n as f64);
            negatives_below += n;
            positives += p;
        }
        pairs += positives as f64 * negatives_below as f64;
        (pairs > 0.0).then(|| wins / pairs)
    }

    pub fn roc_auc(&self, scope: Scope) -> Option<f64> {
        match scope {
            Scope::Total => Self::from_counts(self.bins.iter().copied()),
            Scope::Sliding => {
                let mut sorted: Vec<(f64, bool)> = self.recent.iter().copied().collect();
                sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
                let mut groups = Vec::new();
                let mut i = 0;
                while i < sorted.len() {
                    let (mut n, mut p) = (0, 0);
                    let score = sorted[i].0;
                    while i < sorted.len() && sorted[i].0 == score {
                        if sorted[i].1 {
                            p += 1;
                        } else {
                            n += 1;
                        }
                        i += 1;
                    }
                    groups.push((n, p));
                }
                Self::from_counts(groups.into_iter())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_scikit_learn_conventions() {
        // truth, prediction; scikit-learn on these rows: recall [0.75, 0.5],
        // precision [0.75, 0.5], f1 [0.75, 0.5], balanced accuracy 0.625.
        let rows = [(0, 0), (0, 0), (0, 0), (0, 1), (1, 1), (1, 0)];
        let mut q = Prequential::new(100);
        for (t, p) in rows {
            q.update(t, p);
        }
        let s = Scope::Total;
        assert_eq!(q.recall(s, 0), Some(0.75));
        assert_eq!(q.recall(s, 1), Some(0.5));
        assert_eq!(q.precision(s, 0), Some(0.75));
        assert_eq!(q.precision(s, 1), Some(0.5));
        assert_eq!(q.f1(s, 1), Some(0.5));
        assert_eq!(q.balanced_accuracy(s), Some(0.625));
        let g = q.gmean(s).unwrap_or_default();
        assert!((g - (0.75f64 * 0.5).sqrt()).abs() < 1e-15);
        // A class never predicted has precision 0, one never seen none.
        q.update(0, 0);
        assert_eq!(q.recall(s, 2), None);
        let mut never_predicted = Prequential::new(10);
        never_predicted.update(1, 0);
        assert_eq!(never_predicted.precision(s, 1), Some(0.0));
        assert_eq!(never_predicted.f1(s, 1), Some(0.0));
        assert_eq!(never_predicted.gmean(s), Some(0.0));
    }

    #[test]
    fn roc_auc_matches_scikit_learn() {
        // sklearn.metrics.roc_auc_score([0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35,
        // 0.8, 0.4, 0.4]) = 0.6666666666666667 (scikit-learn 1.9.1).
        let mut auc = ScoreAuc::new(100);
        for (y, s) in [(0, 0.1), (0, 0.4), (1, 0.35), (1, 0.8), (0, 0.4), (1, 0.4)] {
            auc.update(s, y == 1);
        }
        let exact = auc.roc_auc(Scope::Sliding).unwrap_or_default();
        assert!((exact - 0.666_666_666_666_666_7).abs() < 1e-12, "{exact}");
        let binned = auc.roc_auc(Scope::Total).unwrap_or_default();
        assert!((binned - exact).abs() < 1e-12, "{binned}");
        assert_eq!(ScoreAuc::new(3).roc_auc(Scope::Total), None);
    }

    #[test]
    fn the_sliding_window_forgets_old_rows() {
        let mut q = Prequential::new(4);
        for _ in 0..10 {
            q.update(1, 0);
        }
        for _ in 0..4 {
            q.update(1, 1);
        }
        assert_eq!(q.recall(Scope::Sliding, 1), Some(1.0));
        assert_eq!(q.recall(Scope::Total, 1), Some(4.0 / 14.0));
    }
}
