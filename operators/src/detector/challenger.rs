//! The background model a drift may promote, and its duel with the live
//! model.
//!
//! River's `DriftRetrainingClassifier` swaps in the background model on
//! every drift. On a rare class a drift signal can be a run of bad luck
//! (a few missed faults), and swapping then costs what the live model knew:
//! on AI4I 2020 (3.4% faults) unconditional swaps cost 0.07 of G-mean. So
//! ours promotes on merit (our choice): from the row it starts, the
//! challenger predicts every original row beside the live model (both
//! before learning it); when a drift arrives, the challenger replaces the
//! live model as soon as its balanced accuracy over those rows (mean
//! per-class recall, every class seen at least once) is strictly higher;
//! if that has not happened within `patience` original rows of the drift,
//! the challenger is dropped and the live model stays.

use equipoise_udfs::scores;

use super::model::Learner;

/// What the trainer does with the challenger after a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Wait,
    Promote,
    Drop,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Challenger {
    pub model: Learner,
    /// Per class: original rows seen since the start, and how many of them
    /// the live model and the challenger predicted right.
    seen: Vec<u64>,
    live_hits: Vec<u64>,
    own_hits: Vec<u64>,
    /// Rows left to prove itself once a drift has armed it.
    rows_left: Option<u64>,
}

impl Challenger {
    pub fn new(model: Learner) -> Self {
        Self {
            model,
            seen: Vec::new(),
            live_hits: Vec::new(),
            own_hits: Vec::new(),
            rows_left: None,
        }
    }

    /// A drift: from now on, promote on merit within `patience` rows.
    pub fn arm(&mut self, patience: u64) {
        self.rows_left = Some(patience);
    }

    /// One original row of class `truth`, and what each model predicted
    /// before learning it.
    pub fn record(&mut self, truth: usize, live: usize, own: usize) {
        if self.seen.len() <= truth {
            self.seen.resize(truth + 1, 0);
            self.live_hits.resize(truth + 1, 0);
            self.own_hits.resize(truth + 1, 0);
        }
        self.seen[truth] += 1;
        self.live_hits[truth] += u64::from(live == truth);
        self.own_hits[truth] += u64::from(own == truth);
    }

    /// Mean per-class recall of `hits` over the duel, if every one of the
    /// `classes` live classes has been seen.
    fn balanced_accuracy(&self, hits: &[u64], classes: usize) -> Option<f64> {
        if classes == 0 || self.seen.len() < classes || self.seen[..classes].contains(&0) {
            return None;
        }
        let recalls: Vec<f64> = (0..classes)
            .map(|c| hits[c] as f64 / self.seen[c] as f64)
            .collect();
        scores::mean(&recalls)
    }

    /// After a row: promote when armed and better, drop when armed too
    /// long, else wait. `classes`: how many classes the live model knows.
    pub fn verdict(&mut self, classes: usize) -> Verdict {
        let Some(left) = self.rows_left else {
            return Verdict::Wait;
        };
        let live = self.balanced_accuracy(&self.live_hits, classes);
        let own = self.balanced_accuracy(&self.own_hits, classes);
        if let (Some(live), Some(own)) = (live, own)
            && own > live
        {
            return Verdict::Promote;
        }
        if left == 0 {
            return Verdict::Drop;
        }
        self.rows_left = Some(left - 1);
        Verdict::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::DetectorOptions;

    fn challenger() -> Challenger {
        Challenger::new(Learner::fresh(&DetectorOptions::new("label")))
    }

    #[test]
    fn promoted_only_when_armed_and_better_on_every_class() {
        let mut c = challenger();
        // Better on the majority only so far, the minority unseen: no.
        for _ in 0..10 {
            c.record(0, 1, 0);
        }
        assert_eq!(c.verdict(2), Verdict::Wait, "not armed");
        c.arm(100);
        assert_eq!(c.verdict(2), Verdict::Wait, "class 1 not seen yet");
        // Both find the one minority row: the challenger's balanced
        // accuracy (1.0) beats the live model's (0.5).
        c.record(1, 1, 1);
        assert_eq!(c.verdict(2), Verdict::Promote);
    }

    #[test]
    fn a_challenger_no_better_is_dropped_when_its_patience_runs_out() {
        let mut c = challenger();
        c.arm(3);
        for _ in 0..3 {
            // Equal on the majority, worse on the minority.
            c.record(0, 0, 0);
            c.record(1, 1, 0);
            assert_eq!(c.verdict(2), Verdict::Wait);
        }
        c.record(0, 0, 0);
        assert_eq!(c.verdict(2), Verdict::Drop);
        // A tie is not a promotion either.
        let mut tie = challenger();
        tie.arm(0);
        tie.record(0, 0, 0);
        tie.record(1, 1, 1);
        assert_eq!(tie.verdict(2), Verdict::Drop);
    }
}
