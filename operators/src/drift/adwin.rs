//! ADWIN (Bifet and Gavaldà 2007), as River's `drift.ADWIN`: a window of
//! recent values kept as exponential histograms (row i holds up to
//! `max_buckets + 1` summaries of 2^i values: their sum and their
//! variance); every `clock` rows, once the window is longer than
//! `grace_period`, every split of the window into an older and a newer part
//! (each at least `min_window_length` long) is tested, and while some split
//! shows means further apart than the bound, the oldest summary is dropped.
//! A detection is a drift; as in River, the next update starts a new window.
//!
//! River's arithmetic is reproduced step for step (the order of every sum
//! and product), so the same rows are flagged; memory is O(max_buckets x
//! log(window)) and an update allocates only when the window reaches a new
//! power of two.

use serde::{Deserialize, Serialize};

use super::{DriftDetector, DriftState};

/// One row of the histogram: summaries of 2^row values each, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row {
    sums: Vec<f64>,
    variances: Vec<f64>,
    len: usize,
}

impl Row {
    fn new(capacity: usize) -> Self {
        Self {
            sums: vec![0.0; capacity],
            variances: vec![0.0; capacity],
            len: 0,
        }
    }

    fn push(&mut self, sum: f64, variance: f64) {
        self.sums[self.len] = sum;
        self.variances[self.len] = variance;
        self.len += 1;
    }

    /// Drop the oldest `n` summaries.
    fn drop_oldest(&mut self, n: usize) {
        self.sums.copy_within(n..self.len, 0);
        self.variances.copy_within(n..self.len, 0);
        for i in self.len - n..self.len {
            self.sums[i] = 0.0;
            self.variances[i] = 0.0;
        }
        self.len -= n;
    }
}

/// Serialisable, so that a model that carries detectors (the adaptive
/// Hoeffding tree) round-trips through a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adwin {
    pub delta: f64,
    pub clock: u64,
    pub max_buckets: usize,
    pub min_window_length: f64,
    pub grace_period: f64,
    rows: Vec<Row>,
    total: f64,
    variance: f64,
    width: f64,
    tick: u64,
    drift: bool,
}

impl Default for Adwin {
    fn default() -> Self {
        Self::new(0.002, 32, 5, 5, 10)
    }
}

impl Adwin {
    pub fn new(
        delta: f64,
        clock: u64,
        max_buckets: usize,
        min_window_length: usize,
        grace_period: usize,
    ) -> Self {
        Self {
            delta,
            clock: clock.max(1),
            max_buckets,
            min_window_length: min_window_length as f64,
            grace_period: grace_period as f64,
            rows: vec![Row::new(max_buckets + 1)],
            total: 0.0,
            variance: 0.0,
            width: 0.0,
            tick: 0,
            drift: false,
        }
    }

    fn reset(&mut self) {
        self.rows.truncate(1);
        self.rows[0] = Row::new(self.max_buckets + 1);
        self.total = 0.0;
        self.variance = 0.0;
        self.width = 0.0;
        self.tick = 0;
        self.drift = false;
    }

    /// Values in the window.
    pub fn width(&self) -> f64 {
        self.width
    }

    /// Mean of the window (0 when empty).
    pub fn estimation(&self) -> f64 {
        if self.width == 0.0 {
            0.0
        } else {
            self.total / self.width
        }
    }

    fn insert(&mut self, value: f64) {
        self.rows[0].push(value, 0.0);
        self.width += 1.0;
        let mut added_variance = 0.0;
        if self.width > 1.0 {
            let d = value - self.total / (self.width - 1.0);
            added_variance = (self.width - 1.0) * d * d / self.width;
        }
        self.variance += added_variance;
        self.total += value;
        self.merge_full_rows();
    }

    /// A row holding `max_buckets + 1` summaries merges its two oldest into
    /// one summary of the next row, which may then overflow in turn.
    fn merge_full_rows(&mut self) {
        let mut row = 0;
        while self.rows[row].len == self.max_buckets + 1 {
            let size = (1u64 << row) as f64;
            let (s0, s1) = (self.rows[row].sums[0], self.rows[row].sums[1]);
            let (v0, v1) = (self.rows[row].variances[0], self.rows[row].variances[1]);
            let (m0, m1) = (s0 / size, s1 / size);
            let merged_sum = s0 + s1;
            let merged_variance = v0 + v1 + size * 0.5 * (m0 - m1) * (m0 - m1);
            if row + 1 == self.rows.len() {
                self.rows.push(Row::new(self.max_buckets + 1));
            }
            self.rows[row + 1].push(merged_sum, merged_variance);
            self.rows[row].drop_oldest(2);
            row += 1;
        }
    }

    /// Remove the oldest summary from the window.
    fn drop_oldest(&mut self) {
        let last = self.rows.len() - 1;
        let size = (1u64 << last) as f64;
        let (sum, variance) = (self.rows[last].sums[0], self.rows[last].variances[0]);
        let mean = sum / size;
        self.width -= size;
        self.total -= sum;
        let window_mean = self.total / self.width;
        self.variance -= variance
            + size * self.width * (mean - window_mean) * (mean - window_mean) / (size + self.width);
        self.rows[last].drop_oldest(1);
        if self.rows[last].len == 0 && last > 0 {
            self.rows.pop();
        }
    }

    /// Whether the means of the older part (n0 values) and the newer part
    /// (n1) differ by more than the bound. `delta_prime` and
    /// `window_variance` depend on the window only, so a scan computes them
    /// once (the same expressions River evaluates per split, so the same
    /// values).
    fn cut(
        &self,
        n0: f64,
        n1: f64,
        mean_difference: f64,
        delta_prime: f64,
        window_variance: f64,
    ) -> bool {
        let m =
            1.0 / (n0 - self.min_window_length + 1.0) + 1.0 / (n1 - self.min_window_length + 1.0);
        let epsilon =
            (2.0 * m * window_variance * delta_prime).sqrt() + 2.0 / 3.0 * delta_prime * m;
        mean_difference.abs() > epsilon
    }

    /// Test every split, oldest part growing; drop the oldest summary and
    /// start over while one shows a change.
    fn detect(&mut self) -> bool {
        self.tick += 1;
        if !self.tick.is_multiple_of(self.clock) || self.width <= self.grace_period {
            return false;
        }
        let mut detected = false;
        'scan: loop {
            let delta_prime = (2.0 * self.width.ln() / self.delta).ln();
            let window_variance = self.variance / self.width;
            let (mut n0, mut n1) = (0.0, self.width);
            let (mut s0, mut s1) = (0.0, self.total);
            for row in (0..self.rows.len()).rev() {
                let size = (1u64 << row) as f64;
                let len = self.rows[row].len;
                for k in 0..len {
                    n0 += size;
                    n1 -= size;
                    let sum = self.rows[row].sums[k];
                    s0 += sum;
                    s1 -= sum;
                    if row == 0 && k == len - 1 {
                        // The newest value alone is never the newer part.
                        break 'scan;
                    }
                    let difference = (s0 / n0) - (s1 / n1);
                    if n1 >= self.min_window_length
                        && n0 >= self.min_window_length
                        && self.cut(n0, n1, difference, delta_prime, window_variance)
                    {
                        detected = true;
                        if self.width > 0.0 {
                            self.drop_oldest();
                            continue 'scan;
                        }
                    }
                }
            }
            break;
        }
        detected
    }
}

impl DriftDetector for Adwin {
    fn update(&mut self, x: f64) -> DriftState {
        if self.drift {
            self.reset();
        }
        self.insert(x);
        self.drift = self.detect();
        DriftState::of(self.drift, false)
    }
}
