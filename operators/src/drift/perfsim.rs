//! PerfSim (Antwi, Viktor and Japkowicz, ICMLA 2012): the confusion matrix
//! of consecutive chunks of the stream, compared by cosine similarity;
//! drift when the dissimilarity 1 - cos exceeds `threshold`.
//!
//! The paper compares matrices of consecutive batches; ours are chunks of
//! labelled, predicted rows, so the result does not depend on how a source
//! happens to cut its record batches. Two choices make it see the rare
//! class, documented here and in docs/drift.md:
//!
//! - a chunk ends when every class seen so far as a true label has at
//!   least `min_class_rows` (100) rows in it (or at `max_chunk_rows`,
//!   100,000, so a class that vanished does not stall the detector): a
//!   2%-minority stream gets chunks of about 5,000 rows, each with enough
//!   minority rows for its recall to mean something. With 30 rows (the
//!   usual "enough"), a 60% recall measured twice differs by 0.3 often
//!   enough to cross the threshold every few dozen chunks (we measured two
//!   false alarms in 120,000 rows of the generator); with 100 the standard
//!   deviation of that difference is 0.07;
//! - each row of the matrix (true class) is normalised to sum to 1 before
//!   the vectors are compared, and only classes with `min_class_rows` rows
//!   in both chunks enter: on raw counts the majority's true negatives
//!   dominate the vector and a collapse of minority recall barely moves the
//!   cosine.
//!
//! With the default threshold of 0.05, a binary stream whose minority
//! recall falls from 0.9 to 0.4 moves the dissimilarity to about 0.15
//! (flagged within two chunks, tested). One from 0.6 to 0.3 moves it to
//! about 0.06 at most, and a change that falls inside a chunk shows half in
//! that chunk and half in the next, so PerfSim does not see it (tested);
//! the per-class recall monitors do. It is the coarse, batch-level
//! detector of the monitor, not its fast one. The chunk-to-chunk noise of a 90% or a
//! 60% recall measured on 100 rows stays below 0.04 (tested: 0.034 at most over 200 chunks). No warning
//! zone. O(classes²) per chunk, O(1) per row.

use super::DriftState;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PerfSim {
    pub threshold: f64,
    pub min_class_rows: u64,
    pub max_chunk_rows: u64,
    classes: usize,
    /// Classes seen as a true label.
    seen: Vec<bool>,
    /// Row-major `classes x classes` counts of the chunk being filled.
    current: Vec<u64>,
    current_rows: u64,
    /// Row-normalised matrix of the previous chunk and its row totals.
    previous: Option<(Vec<f64>, Vec<u64>)>,
    last_dissimilarity: Option<f64>,
}

impl Default for PerfSim {
    fn default() -> Self {
        Self::new(0.05, 100, 100_000)
    }
}

impl PerfSim {
    pub fn new(threshold: f64, min_class_rows: u64, max_chunk_rows: u64) -> Self {
        Self {
            threshold,
            min_class_rows,
            max_chunk_rows,
            classes: 0,
            seen: Vec::new(),
            current: Vec::new(),
            current_rows: 0,
            previous: None,
            last_dissimilarity: None,
        }
    }

    /// 1 - cosine similarity of the last two chunks compared.
    pub fn last_dissimilarity(&self) -> Option<f64> {
        self.last_dissimilarity
    }

    fn grow(&mut self, classes: usize) {
        if classes <= self.classes {
            return;
        }
        let mut grown = vec![0; classes * classes];
        for t in 0..self.classes {
            for p in 0..self.classes {
                grown[t * classes + p] = self.current[t * self.classes + p];
            }
        }
        if let Some((matrix, totals)) = &mut self.previous {
            let mut wider = vec![0.0; classes * classes];
            for t in 0..self.classes {
                for p in 0..self.classes {
                    wider[t * classes + p] = matrix[t * self.classes + p];
                }
            }
            *matrix = wider;
            totals.resize(classes, 0);
        }
        self.current = grown;
        self.classes = classes;
        self.seen.resize(classes, false);
    }

    fn row_total(&self, t: usize) -> u64 {
        self.current[t * self.classes..(t + 1) * self.classes]
            .iter()
            .sum()
    }

    fn chunk_complete(&self) -> bool {
        self.current_rows >= self.max_chunk_rows
            || (0..self.classes).all(|t| !self.seen[t] || self.row_total(t) >= self.min_class_rows)
    }

    /// A row of true class slot `truth` predicted as slot `predicted`.
    /// Returns `Drift` on the row that closes a chunk unlike the one
    /// before.
    pub fn update(&mut self, truth: usize, predicted: usize) -> DriftState {
        self.grow(truth.max(predicted) + 1);
        self.seen[truth] = true;
        self.current[truth * self.classes + predicted] += 1;
        self.current_rows += 1;
        if !self.chunk_complete() {
            return DriftState::None;
        }
        let k = self.classes;
        let totals: Vec<u64> = (0..k).map(|t| self.row_total(t)).collect();
        let mut normalised = vec![0.0; k * k];
        for t in 0..k {
            if totals[t] > 0 {
                for p in 0..k {
                    normalised[t * k + p] = self.current[t * k + p] as f64 / totals[t] as f64;
                }
            }
        }
        let mut state = DriftState::None;
        if let Some((previous, previous_totals)) = &self.previous {
            let (mut dot, mut a, mut b) = (0.0, 0.0, 0.0);
            for t in 0..k {
                if totals[t] < self.min_class_rows || previous_totals[t] < self.min_class_rows {
                    continue;
                }
                for p in 0..k {
                    let (x, y) = (normalised[t * k + p], previous[t * k + p]);
                    dot += x * y;
                    a += x * x;
                    b += y * y;
                }
            }
            if a > 0.0 && b > 0.0 {
                let dissimilarity = 1.0 - dot / (a.sqrt() * b.sqrt());
                self.last_dissimilarity = Some(dissimilarity);
                if dissimilarity > self.threshold {
                    state = DriftState::Drift;
                }
            }
        }
        self.previous = Some((normalised, totals));
        self.current.iter_mut().for_each(|n| *n = 0);
        self.current_rows = 0;
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn a_minority_recall_collapse_is_flagged_and_noise_is_not() {
        for (before, after, seed) in [(0.9, 0.4, 4), (0.6, 0.3, 5)] {
            let mut rng = Rng::new(seed);
            let mut perfsim = PerfSim::default();
            let mut largest_before: f64 = 0.0;
            let mut detected = None;
            for t in 0..1_200_000u64 {
                let truth = usize::from(rng.uniform() < 0.02);
                let recall = match truth {
                    1 if t >= 1_000_000 => after,
                    1 => before,
                    _ => 0.95,
                };
                let hit = rng.uniform() < recall;
                let predicted = if hit { truth } else { 1 - truth };
                let state = perfsim.update(truth, predicted);
                if t < 1_000_000 {
                    assert_eq!(state, DriftState::None, "false alarm at {t}");
                    largest_before =
                        largest_before.max(perfsim.last_dissimilarity().unwrap_or(0.0));
                } else if state == DriftState::Drift {
                    detected.get_or_insert(t);
                }
            }
            assert!(largest_before < 0.04, "{before}: {largest_before}");
            if before == 0.9 {
                // Within two chunks of about 5,000 rows.
                assert!(
                    detected.is_some_and(|t| t < 1_010_000),
                    "{before} -> {after}: {detected:?}"
                );
            } else {
                assert_eq!(detected, None, "a moderate change split over two chunks");
            }
        }
    }

    #[test]
    fn chunks_wait_for_every_class_seen() {
        let mut perfsim = PerfSim::new(0.05, 3, 1_000);
        perfsim.update(1, 1);
        for _ in 0..10 {
            perfsim.update(0, 0);
        }
        perfsim.update(1, 1);
        assert_eq!(perfsim.current_rows, 12, "class 1 has 2 rows of 3");
        perfsim.update(1, 0);
        assert_eq!(perfsim.current_rows, 0, "closed once class 1 had 3 rows");
        let mut capped = PerfSim::new(0.05, 3, 5);
        capped.update(1, 1);
        for _ in 0..4 {
            capped.update(0, 0);
        }
        assert_eq!(capped.current_rows, 0, "closed at max_chunk_rows");
    }
}
