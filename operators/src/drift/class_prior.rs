//! Class-prior drift: one ADWIN (River's defaults) per class over the
//! indicator 1[y = c]; a change in any class's share is a drift. Classes
//! seen later get their detector when first seen (their indicator was 0
//! until then, which the new detector starts from: a class appearing is a
//! rise from nothing, and ADWIN needs its own window to see it).

use super::{Adwin, DriftDetector, DriftState};

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ClassPrior {
    detectors: Vec<Adwin>,
}

impl ClassPrior {
    /// A labelled row of class `class`; returns drift when any class's
    /// share changed, with the classes that did.
    pub fn update(&mut self, class: usize) -> (DriftState, Vec<usize>) {
        if self.detectors.len() <= class {
            self.detectors.resize_with(class + 1, Adwin::default);
        }
        let mut changed = Vec::new();
        for (c, detector) in self.detectors.iter_mut().enumerate() {
            let x = if c == class { 1.0 } else { 0.0 };
            if detector.update(x) == DriftState::Drift {
                changed.push(c);
            }
        }
        let state = if changed.is_empty() {
            DriftState::None
        } else {
            DriftState::Drift
        };
        (state, changed)
    }

    /// Each class's share of its current window.
    pub fn shares(&self) -> Vec<f64> {
        self.detectors.iter().map(Adwin::estimation).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn a_shift_in_the_class_mix_is_flagged_and_a_stable_mix_is_not() {
        // 2% minority for 30,000 rows, then 10%.
        let mut rng = Rng::new(3);
        let mut prior = ClassPrior::default();
        let mut first = None;
        for t in 0..40_000u64 {
            let share = if t < 30_000 { 0.02 } else { 0.10 };
            let class = usize::from(rng.uniform() < share);
            let (state, changed) = prior.update(class);
            if state == DriftState::Drift {
                assert!(t >= 30_000, "false alarm at row {t}: {changed:?}");
                first.get_or_insert(t);
            }
        }
        let at = first.expect("the shift is flagged");
        assert!(at < 32_000, "late: {at}");
        let shares = prior.shares();
        assert!((shares[1] - 0.10).abs() < 0.03, "{shares:?}");
    }
}
