//! Online logistic regression: multinomial (softmax; two classes is the
//! binary case), online standardisation of the features, L2 on the
//! weights, and one of two steps:
//!
//! - AdaGrad (default): per-parameter step `rate / sqrt(G + 1e-8)`, G the
//!   running sum of squared gradients. Rare classes' parameters keep large
//!   steps because their gradients are rare.
//! - Class-grouped normalised momentum (FedCGNM, algorithms.md §4, our
//!   reconstruction): classes are split into groups by frequency (up to
//!   three groups: the cuts of the sorted log-counts with the least
//!   within-group sum of squares, recomputed as counts change; with three
//!   classes or fewer each class is its own group, since two rare classes
//!   sharing one buffer cancel each other's pushes); each group has a momentum
//!   buffer m_g ← β m_g + (1-β) ∇ over its classes' rows; the step is
//!   `rate · Σ_g m_g / ‖m_g‖`, so the minority group moves the model as
//!   much as the majority group however rare its rows.
//!
//! Standardisation: each feature's running mean and variance (Welford, over
//! the rows learned from, unweighted) scale the input; a feature with no
//! spread yet reads 0. Learning updates the scaler first, then the weights.
//! A row's weight multiplies its gradient.

use serde::{Deserialize, Serialize};

/// Most groups of the grouped step.
const GROUPS: usize = 3;

/// Which step the model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Optimizer {
    AdaGrad,
    Cgnm,
    Adam,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineLogistic {
    pub rate: f64,
    pub l2: f64,
    pub optimizer: Optimizer,
    /// Momentum of the grouped step.
    pub beta: f64,
    dim: usize,
    /// Rows learned from (the scaler's count).
    seen: f64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    /// `classes x (dim + 1)`, bias last.
    weights: Vec<Vec<f64>>,
    /// AdaGrad's squared-gradient sums, same shape.
    squares: Vec<Vec<f64>>,
    /// Momentum per group, same shape each; group of each class.
    momentum: Vec<Vec<Vec<f64>>>,
    class_rows: Vec<f64>,
    group_of: Vec<usize>,
    /// Adam's decayed first and second moments (`classes x (dim + 1)`) and
    /// its step count; absent from snapshots of the other optimizers.
    #[serde(default)]
    first: Vec<Vec<f64>>,
    #[serde(default)]
    second: Vec<Vec<f64>>,
    #[serde(default)]
    steps: f64,
}

/// Adam's moment decays (Kingma and Ba's defaults): the second moment
/// forgets over about 1,000 steps, so a long stream's steps do not shrink
/// towards zero the way AdaGrad's do.
const ADAM_BETA1: f64 = 0.9;
const ADAM_BETA2: f64 = 0.999;
const ADAM_EPSILON: f64 = 1e-8;

/// A feature weight's gradient: the row's share plus L2's.
#[inline(always)]
fn feature_gradient(residual: f64, zj: f64, weight: f64, l2: f64, w: f64) -> f64 {
    residual * zj * weight + l2 * w
}

/// The bias's gradient: its input is the constant 1 and it takes no L2.
#[inline(always)]
fn bias_gradient(residual: f64, weight: f64) -> f64 {
    residual * weight
}

impl OnlineLogistic {
    pub fn new(rate: f64, l2: f64, optimizer: Optimizer) -> Self {
        Self {
            rate,
            l2,
            optimizer,
            beta: 0.9,
            dim: 0,
            seen: 0.0,
            mean: Vec::new(),
            m2: Vec::new(),
            weights: Vec::new(),
            squares: Vec::new(),
            momentum: vec![Vec::new(); GROUPS],
            class_rows: Vec::new(),
            group_of: Vec::new(),
            first: Vec::new(),
            second: Vec::new(),
            steps: 0.0,
        }
    }

    pub fn classes(&self) -> usize {
        self.weights.len()
    }

    /// The same weights and scaler with the step history forgotten: AdaGrad
    /// steps back to full size, momentum to zero. A model retrained from
    /// this learns the new concept at the speed of a new model without
    /// starting from nothing.
    pub fn with_fresh_steps(&self) -> Self {
        let mut refreshed = self.clone();
        for row in refreshed.squares.iter_mut() {
            row.iter_mut().for_each(|g| *g = 0.0);
        }
        for group in refreshed.momentum.iter_mut() {
            group.iter_mut().flatten().for_each(|m| *m = 0.0);
        }
        for moment in refreshed
            .first
            .iter_mut()
            .chain(refreshed.second.iter_mut())
        {
            moment.iter_mut().for_each(|m| *m = 0.0);
        }
        refreshed.steps = 0.0;
        refreshed
    }

    fn grow(&mut self, dim: usize, classes: usize) {
        if self.dim == 0 && self.mean.is_empty() {
            self.dim = dim;
            self.mean = vec![0.0; dim];
            self.m2 = vec![0.0; dim];
        }
        while self.weights.len() < classes {
            self.weights.push(vec![0.0; self.dim + 1]);
            self.squares.push(vec![0.0; self.dim + 1]);
            for group in &mut self.momentum {
                group.push(vec![0.0; self.dim + 1]);
            }
            self.class_rows.push(0.0);
            self.group_of.push(0);
        }
        // Adam's moments follow the weights' shape, also for a snapshot
        // written without them. (Checked first: `resize` would build its
        // fill value, an allocation, on every row.)
        let width = self.dim + 1;
        if self.first.len() != self.weights.len() || self.second.len() != self.weights.len() {
            self.first.resize(self.weights.len(), vec![0.0; width]);
            self.second.resize(self.weights.len(), vec![0.0; width]);
        }
    }

    /// `x` standardised into `z` (as wide as `x`): one square root per
    /// feature per row, shared by every class's logit and gradient.
    fn standardize(&self, x: &[f64], z: &mut [f64]) {
        if self.seen <= 1.0 {
            z.iter_mut().for_each(|zj| *zj = 0.0);
            return;
        }
        let count = self.seen - 1.0;
        // Branch-free per feature, so the loop vectorizes; the operations
        // and their order are those of the definition.
        for ((zj, xj), (mean, m2)) in z.iter_mut().zip(x).zip(self.mean.iter().zip(&self.m2)) {
            let variance = m2 / count;
            let scaled = (xj - mean) / variance.sqrt();
            *zj = if variance > 0.0 { scaled } else { 0.0 };
        }
    }

    /// Class probabilities of `x` into `out` (one per class known).
    pub fn predict_proba(&self, x: &[f64], out: &mut Vec<f64>) {
        out.clear();
        let k = self.classes();
        if k == 0 || x.len() != self.dim {
            return;
        }
        self.softmax(x, out);
        out.truncate(k);
    }

    /// Softmax of the logits of `x` into `out[..classes]`, with `x`
    /// standardised in `out[classes..]` (so no allocation once `out` has
    /// room).
    fn softmax(&self, x: &[f64], out: &mut Vec<f64>) {
        let k = self.classes();
        out.clear();
        out.resize(k + self.dim, 0.0);
        let (probabilities, z) = out.split_at_mut(k);
        self.standardize(x, z);
        match (&mut *probabilities, self.weights.as_slice()) {
            // Two classes, the common case: both sums in one pass, two
            // independent chains of additions (each in the same order as
            // below, so the same bits).
            ([p0, p1], [w0, w1]) => {
                let (mut s0, mut s1) = (0.0, 0.0);
                for ((&a, &b), &zj) in w0.iter().zip(w1.iter()).zip(z.iter()) {
                    s0 += a * zj;
                    s1 += b * zj;
                }
                *p0 = w0[self.dim] + s0;
                *p1 = w1[self.dim] + s1;
            }
            (probabilities, weights) => {
                for (p, w) in probabilities.iter_mut().zip(weights) {
                    *p = w[self.dim] + w.iter().zip(z.iter()).map(|(a, zj)| a * zj).sum::<f64>();
                }
            }
        }
        let max = probabilities
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        let mut total = 0.0;
        for p in probabilities.iter_mut() {
            *p = (*p - max).exp();
            total += *p;
        }
        for p in probabilities.iter_mut() {
            *p /= total;
        }
    }

    /// Learn from `x` of class slot `class` with `weight`.
    pub fn learn(&mut self, x: &[f64], class: usize, weight: f64) {
        self.learn_with(x, class, weight, &mut Vec::new());
    }

    /// [`Self::learn`] with the caller's scratch space for the class
    /// probabilities (no allocation per row).
    pub fn learn_with(&mut self, x: &[f64], class: usize, weight: f64, p: &mut Vec<f64>) {
        if !(weight.is_finite() && weight > 0.0) {
            return;
        }
        self.grow(x.len(), class + 1);
        if x.len() != self.dim {
            return;
        }
        // Scaler first (Welford).
        self.seen += 1.0;
        let seen = self.seen;
        for ((&xj, mean), m2) in x.iter().zip(&mut self.mean).zip(&mut self.m2) {
            let delta = xj - *mean;
            *mean += delta / seen;
            *m2 += delta * (xj - *mean);
        }
        self.class_rows[class] += 1.0;
        if self.classes() < 2 {
            return;
        }
        self.softmax(x, p);
        let (probabilities, z) = p.split_at(self.classes());
        match self.optimizer {
            Optimizer::AdaGrad => self.adagrad_step(z, probabilities, class, weight),
            Optimizer::Cgnm => self.grouped_step(z, probabilities, class, weight),
            Optimizer::Adam => self.adam_step(z, probabilities, class, weight),
        }
    }

    /// Adam with bias-corrected moments; a row's weight scales its
    /// gradient, so a heavy row moves the moments more.
    fn adam_step(&mut self, z: &[f64], p: &[f64], class: usize, weight: f64) {
        self.steps += 1.0;
        let first_correction = 1.0 - ADAM_BETA1.powf(self.steps);
        let second_correction = 1.0 - ADAM_BETA2.powf(self.steps);
        let step = self.rate * second_correction.sqrt() / first_correction;
        for (k, &pk) in p.iter().enumerate() {
            let residual = pk - if k == class { 1.0 } else { 0.0 };
            for (j, zj) in z.iter().copied().chain([1.0]).enumerate() {
                let g = self.gradient(k, j, zj, residual, weight);
                let m = &mut self.first[k][j];
                *m = ADAM_BETA1 * *m + (1.0 - ADAM_BETA1) * g;
                let v = &mut self.second[k][j];
                *v = ADAM_BETA2 * *v + (1.0 - ADAM_BETA2) * g * g;
                self.weights[k][j] -= step * self.first[k][j]
                    / (self.second[k][j].sqrt() + ADAM_EPSILON * second_correction.sqrt());
            }
        }
    }

    fn gradient(&self, k: usize, j: usize, zj: f64, residual: f64, weight: f64) -> f64 {
        if j == self.dim {
            bias_gradient(residual, weight)
        } else {
            feature_gradient(residual, zj, weight, self.l2, self.weights[k][j])
        }
    }

    /// `z`: the standardised row.
    fn adagrad_step(&mut self, z: &[f64], p: &[f64], class: usize, weight: f64) {
        let (rate, l2) = (self.rate, self.l2);
        for (k, &pk) in p.iter().enumerate() {
            let residual = pk - if k == class { 1.0 } else { 0.0 };
            let (weights, squares) = (&mut self.weights[k], &mut self.squares[k]);
            let Some((bias, features)) = weights.split_last_mut() else {
                continue;
            };
            let Some((bias_square, feature_squares)) = squares.split_last_mut() else {
                continue;
            };
            // The features, as one loop that vectorizes, then the bias's
            // constant input.
            for ((w, g2), &zj) in features.iter_mut().zip(feature_squares).zip(z) {
                let g = feature_gradient(residual, zj, weight, l2, *w);
                *g2 += g * g;
                *w -= rate * g / (*g2 + 1e-8).sqrt();
            }
            let g = bias_gradient(residual, weight);
            *bias_square += g * g;
            *bias -= rate * g / (*bias_square + 1e-8).sqrt();
        }
    }

    /// Up to [`GROUPS`] groups of classes by frequency: the cuts of the
    /// sorted log-counts with the least within-group sum of squares.
    fn regroup(&mut self) {
        let k = self.classes();
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| self.class_rows[a].total_cmp(&self.class_rows[b]));
        if k <= GROUPS {
            for (rank, &class) in order.iter().enumerate() {
                self.group_of[class] = rank;
            }
            return;
        }
        let logs: Vec<f64> = order.iter().map(|&c| self.class_rows[c].ln_1p()).collect();
        let sse = |v: &[f64]| {
            let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
            v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>()
        };
        let mut best = (f64::INFINITY, 1, 2);
        for a in 1..k - 1 {
            for b in a + 1..k {
                let cost = sse(&logs[..a]) + sse(&logs[a..b]) + sse(&logs[b..]);
                if cost < best.0 {
                    best = (cost, a, b);
                }
            }
        }
        for (rank, &class) in order.iter().enumerate() {
            self.group_of[class] = usize::from(rank >= best.1) + usize::from(rank >= best.2);
        }
    }

    fn grouped_step(&mut self, z: &[f64], p: &[f64], class: usize, weight: f64) {
        self.regroup();
        let group = self.group_of[class];
        for (k, &pk) in p.iter().enumerate() {
            let residual = pk - if k == class { 1.0 } else { 0.0 };
            // The features, then the bias's constant input.
            for (j, zj) in z.iter().copied().chain([1.0]).enumerate() {
                let g = self.gradient(k, j, zj, residual, weight);
                let m = &mut self.momentum[group][k][j];
                *m = self.beta * *m + (1.0 - self.beta) * g;
            }
        }
        let norms: Vec<f64> = self
            .momentum
            .iter()
            .map(|m| m.iter().flatten().map(|v| v * v).sum::<f64>().sqrt())
            .collect();
        for (k, row) in self.weights.iter_mut().enumerate() {
            for (j, w) in row.iter_mut().enumerate() {
                let mut direction = 0.0;
                for (g, norm) in norms.iter().enumerate() {
                    if *norm > 1e-12 {
                        direction += self.momentum[g][k][j] / norm;
                    }
                }
                *w -= self.rate * direction;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn normal(rng: &mut Rng) -> f64 {
        let (u, v) = (rng.uniform().max(f64::MIN_POSITIVE), rng.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Accuracy per class after learning a separable-ish two-feature
    /// problem online (class centres 4 standard deviations from the origin,
    /// evenly around it; the first feature on a scale of 1,000 and the
    /// second offset by 50, so the scaler is needed).
    fn per_class_recall(optimizer: Optimizer, rate: f64, classes: usize) -> Vec<f64> {
        let mut rng = Rng::new(1);
        let mut model = OnlineLogistic::new(rate, 1e-4, optimizer);
        let mut hits = vec![0.0; classes];
        let mut rows = vec![0.0; classes];
        let mut p = Vec::new();
        for t in 0..20_000 {
            // Class 0 is 90% of rows.
            let class = if rng.uniform() < 0.9 {
                0
            } else {
                1 + rng.below(classes - 1)
            };
            let angle = std::f64::consts::TAU * class as f64 / classes as f64;
            let x = [
                1000.0 * (4.0 * angle.cos() + normal(&mut rng)),
                4.0 * angle.sin() + normal(&mut rng) + 50.0,
            ];
            model.predict_proba(&x, &mut p);
            if t >= 10_000 {
                let predicted = (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b]));
                rows[class] += 1.0;
                hits[class] += f64::from(u8::from(predicted == Some(class)));
            }
            model.learn(&x, class, 1.0);
        }
        hits.iter().zip(&rows).map(|(h, n)| h / n).collect()
    }

    #[test]
    fn every_step_learns_binary_and_multiclass_problems() {
        for optimizer in [Optimizer::AdaGrad, Optimizer::Cgnm, Optimizer::Adam] {
            let rate = if optimizer == Optimizer::AdaGrad {
                0.1
            } else {
                0.01
            };
            for classes in [2, 3] {
                let recall = per_class_recall(optimizer, rate, classes);
                assert!(
                    recall.iter().all(|&r| r > 0.85),
                    "{optimizer:?} {classes}: {recall:?}"
                );
            }
        }
    }

    #[test]
    fn a_row_weight_scales_its_pull() {
        // One row of class 1 at x = 1 among class 0 rows at x = -1: its
        // weight decides how far the model moves towards it.
        let score = |weight: f64| {
            let mut model = OnlineLogistic::new(0.1, 0.0, Optimizer::AdaGrad);
            for i in 0..50 {
                model.learn(&[-1.0 - f64::from(i % 3)], 0, 1.0);
            }
            model.learn(&[1.0], 1, weight);
            let mut p = Vec::new();
            model.predict_proba(&[1.0], &mut p);
            p[1]
        };
        assert!(score(5.0) > score(1.0));
        assert!(score(1.0) > score(0.2));
    }

    #[test]
    fn snapshots_round_trip() -> serde_json::Result<()> {
        for optimizer in [Optimizer::AdaGrad, Optimizer::Cgnm, Optimizer::Adam] {
            let mut model = OnlineLogistic::new(0.1, 1e-4, optimizer);
            model.learn(&[1.0, 2.0], 0, 1.0);
            model.learn(&[2.0, 0.0], 1, 2.0);
            let text = serde_json::to_string(&model)?;
            let back: OnlineLogistic = serde_json::from_str(&text)?;
            assert_eq!(back, model);
        }
        Ok(())
    }

    #[test]
    fn an_adam_snapshot_without_its_moments_still_learns() -> serde_json::Result<()> {
        let mut model = OnlineLogistic::new(0.01, 0.0, Optimizer::Adam);
        model.learn(&[1.0], 0, 1.0);
        model.learn(&[-1.0], 1, 1.0);
        let mut value = serde_json::to_value(&model)?;
        if let Some(fields) = value.as_object_mut() {
            fields.remove("first");
            fields.remove("second");
        }
        let mut back: OnlineLogistic = serde_json::from_value(value)?;
        back.learn(&[1.0], 0, 1.0);
        let mut p = Vec::new();
        back.predict_proba(&[1.0], &mut p);
        assert!(p[0] > 0.5, "{p:?}");
        Ok(())
    }

    #[test]
    fn adam_keeps_its_step_size_where_adagrad_decays() {
        // After 20,000 rows of one concept, the classes swap sides: Adam's
        // decayed second moment lets it follow within a few hundred rows,
        // AdaGrad's growing sum slows it down.
        let recall_after_swap = |optimizer: Optimizer, rate: f64| {
            let mut model = OnlineLogistic::new(rate, 0.0, optimizer);
            let mut rng = Rng::new(3);
            let mut p = Vec::new();
            let mut hits = 0.0;
            for t in 0..20_500 {
                let class = usize::from(rng.uniform() < 0.5);
                let side = if (class == 1) == (t < 20_000) {
                    1.0
                } else {
                    -1.0
                };
                let x = [side * 2.0 + normal(&mut rng)];
                if t >= 20_200 {
                    model.predict_proba(&x, &mut p);
                    hits += f64::from(u8::from((p[1] > 0.5) == (class == 1)));
                }
                model.learn(&x, class, 1.0);
            }
            hits / 300.0
        };
        let adam = recall_after_swap(Optimizer::Adam, 0.01);
        let adagrad = recall_after_swap(Optimizer::AdaGrad, 0.01);
        assert!(adam > 0.9, "{adam}");
        assert!(adam > adagrad + 0.1, "adam {adam}, adagrad {adagrad}");
    }
}
