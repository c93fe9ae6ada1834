//! Class-balanced learning: the trainer weighs each row it learns so that
//! every class carries the same decayed mass, whatever imbalance is left in
//! what reaches it.
//!
//! Why in the trainer, with an oversampler upstream: an oversampler
//! balances a batch from the rows of *earlier* batches (no look-ahead), so
//! with large batches a stream starts unbalanced (a 10,000-row stream in
//! 8,192-row batches is balanced only from its second batch), and on a
//! stream whose minority has not yet arrived there is nothing to draw
//! from. The trainer sees rows one at a time and can correct at once; after
//! a balancing oversampler its weights are close to 1 and change little.
//!
//! Rule (our choice, like River's `RandomOverSampler` towards a uniform
//! mix but as a weight rather than repeated learning): class `c`'s mass is
//! the count of rows learned, synthetic ones included, decayed per row
//! with a half-life of [`ClassBalance::HALF_LIFE_ROWS`]; a row of class `c`
//! is learned with weight `total / (classes × mass_c)` (1 when the classes
//! are balanced; a class counts while its mass is at least half a row), capped at [`ClassBalance::MAX_WEIGHT`] so the first
//! minority rows after a long majority run do not take one giant step
//! (AdaGrad would then shrink every later step of those coordinates). The
//! row's own `sample_weight` multiplies it.

/// Decayed mass per class slot: each row added ages every mass by one row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassMass {
    decay: f64,
    /// Masses in units of `unit`: a row adds `1 / unit`, and decaying every
    /// mass is `unit *= decay`, O(1) per row whatever the classes.
    mass: Vec<f64>,
    unit: f64,
}

impl Default for ClassMass {
    fn default() -> Self {
        Self::new(ClassBalance::HALF_LIFE_ROWS)
    }
}

impl ClassMass {
    pub fn new(half_life_rows: f64) -> Self {
        Self {
            decay: 0.5f64.powf(1.0 / half_life_rows),
            mass: Vec::new(),
            unit: 1.0,
        }
    }

    /// Age every mass by a row, then add `weight` to `slot`'s.
    pub fn add(&mut self, slot: usize, weight: f64) {
        if self.mass.len() <= slot {
            self.mass.resize(slot + 1, 0.0);
        }
        self.unit *= self.decay;
        if self.unit < 1e-200 {
            // Rescale before the stored masses overflow.
            self.mass.iter_mut().for_each(|m| *m *= self.unit);
            self.unit = 1.0;
        }
        self.mass[slot] += weight / self.unit;
    }

    /// The decayed mass of `slot`.
    pub fn get(&self, slot: usize) -> f64 {
        self.mass.get(slot).map_or(0.0, |m| m * self.unit)
    }

    pub fn total(&self) -> f64 {
        self.mass.iter().sum::<f64>() * self.unit
    }

    /// Slots with mass.
    pub fn len(&self) -> usize {
        self.mass.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mass.is_empty()
    }
}

/// Decayed class masses of the rows learned.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassBalance {
    mass: ClassMass,
}

impl ClassBalance {
    pub const HALF_LIFE_ROWS: f64 = 10_000.0;
    pub const MAX_WEIGHT: f64 = 20.0;

    pub fn new(half_life_rows: f64) -> Self {
        Self {
            mass: ClassMass::new(half_life_rows),
        }
    }

    /// Fold a learned row of class `slot` with its own weight `weight` in
    /// and return the weight to learn it with: `weight` times its class's
    /// balancing factor.
    pub fn weigh(&mut self, slot: usize, weight: f64) -> f64 {
        self.mass.add(slot, weight);
        // A class counts while it holds at least half a row's mass: one
        // gone for many half-lives no longer halves the others' weights.
        // In stored units (the unit cancels in the ratio).
        let ClassMass { mass, unit, .. } = &self.mass;
        let present_above = 0.5 / unit;
        let present = mass.iter().filter(|m| **m >= present_above).count().max(1);
        let total: f64 = mass.iter().sum();
        if mass[slot] <= 0.0 {
            return weight;
        }
        weight * (total / (present as f64 * mass[slot])).min(Self::MAX_WEIGHT)
    }
}

/// The class mix of the original and synthetic rows reaching the trainer,
/// for the reweight-only twin: an original row of class `c` weighs
/// `(original_c + synthetic_c) / original_c` (decayed masses, capped at
/// [`ClassBalance::MAX_WEIGHT`]), so the twin learns the same class mix
/// from weights that the synthetic variant learns from synthetic rows.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SyntheticMix {
    /// Slot `2c` holds class `c`'s original rows, `2c + 1` its synthetic ones.
    mass: ClassMass,
}

impl SyntheticMix {
    pub fn observe(&mut self, slot: usize, synthetic: bool) {
        self.mass.add(2 * slot + usize::from(synthetic), 1.0);
    }

    /// The weight of an original row of `slot`.
    pub fn weight(&self, slot: usize) -> f64 {
        let original = self.mass.get(2 * slot);
        if original <= 0.0 {
            return 1.0;
        }
        ((original + self.mass.get(2 * slot + 1)) / original).min(ClassBalance::MAX_WEIGHT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_classes_weigh_one_and_a_rare_class_weighs_its_rarity() {
        let mut balance = ClassBalance::default();
        for i in 0..10_000 {
            let w = balance.weigh(i % 2, 1.0);
            if i > 100 {
                assert!((w - 1.0).abs() < 0.01, "row {i}: {w}");
            }
        }
        // One row in ten of class 2 from now on: its weight heads to
        // total / (3 x mass) while the others' shrink.
        let mut balance = ClassBalance::new(1_000.0);
        let (mut rare, mut common) = (0.0, 0.0);
        for i in 0..20_000 {
            if i % 10 == 0 {
                rare = balance.weigh(1, 1.0);
            } else {
                common = balance.weigh(0, 1.0);
            }
        }
        assert!((rare - 10.0 / 2.0).abs() < 0.2, "{rare}");
        assert!((common - 10.0 / 18.0).abs() < 0.02, "{common}");
        // The first row of a new class is capped.
        assert_eq!(balance.weigh(2, 1.0), ClassBalance::MAX_WEIGHT);
    }

    #[test]
    fn old_rows_fade_with_the_half_life() {
        let mut balance = ClassBalance::new(100.0);
        for _ in 0..100 {
            balance.weigh(0, 1.0);
        }
        // 100 rows of class 1 now: class 0's mass has halved by their end.
        let mut w = 0.0;
        for _ in 0..100 {
            w = balance.weigh(1, 1.0);
        }
        // mass_0 = 50 * 0.5^(0..)... ~ 36 (its 100 rows halved), mass_1 ~ 72.
        assert!(w < 1.0 && w > 0.6, "{w}");
        // Many rescalings keep the weights finite, and a class gone for
        // long no longer counts.
        for _ in 0..200_000 {
            w = balance.weigh(0, 1.0);
        }
        assert_eq!(w, 1.0);
    }
}
