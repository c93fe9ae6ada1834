//! HDDM_A (Frías-Blanco et al. 2015), as River's `drift.binary.HDDMA`
//! (one-sided by default): Hoeffding bounds on the difference between the
//! running mean and the mean at the point where it was lowest; drift at
//! confidence `drift_confidence`, warning at `warning_confidence`.

use super::{DriftDetector, DriftState, RunningMean};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HddmA {
    pub drift_confidence: f64,
    pub warning_confidence: f64,
    pub two_sided: bool,
    x_min: RunningMean,
    x_max: RunningMean,
    z: RunningMean,
    warning: bool,
    drift: bool,
}

impl Default for HddmA {
    fn default() -> Self {
        Self::new(0.001, 0.005, false)
    }
}

impl HddmA {
    pub fn new(drift_confidence: f64, warning_confidence: f64, two_sided: bool) -> Self {
        Self {
            drift_confidence,
            warning_confidence,
            two_sided,
            x_min: RunningMean::default(),
            x_max: RunningMean::default(),
            z: RunningMean::default(),
            warning: false,
            drift: false,
        }
    }

    fn reset(&mut self) {
        *self = Self::new(
            self.drift_confidence,
            self.warning_confidence,
            self.two_sided,
        );
    }

    fn hoeffding_bound(&self, n: f64) -> f64 {
        (1.0 / (2.0 * n) * (1.0 / self.drift_confidence).ln()).sqrt()
    }

    fn bound(&self, cut: &RunningMean, confidence: f64) -> Option<f64> {
        if cut.n == self.z.n {
            return None;
        }
        let m = (self.z.n - cut.n) / cut.n * (1.0 / self.z.n);
        Some((m / 2.0 * (2.0 / confidence).ln()).sqrt())
    }

    fn mean_increased(&self, confidence: f64) -> bool {
        self.bound(&self.x_min, confidence)
            .is_some_and(|eps| self.z.mean - self.x_min.mean >= eps)
    }

    fn mean_decreased(&self, confidence: f64) -> bool {
        self.bound(&self.x_max, confidence)
            .is_some_and(|eps| self.x_max.mean - self.z.mean >= eps)
    }
}

impl DriftDetector for HddmA {
    fn update(&mut self, x: f64) -> DriftState {
        if self.drift {
            self.reset();
        }
        self.z.update(x);
        if self.x_min.n == 0.0 {
            self.x_min = self.z;
        }
        if self.x_max.n == 0.0 {
            self.x_max = self.z;
        }
        let eps_z = self.hoeffding_bound(self.z.n);
        let eps_x = self.hoeffding_bound(self.x_min.n);
        if self.x_min.mean + eps_x >= self.z.mean + eps_z {
            self.x_min = self.z;
        }
        let eps_x = self.hoeffding_bound(self.x_max.n);
        if self.x_max.mean - eps_x <= self.z.mean - eps_z {
            self.x_max = self.z;
        }
        if self.mean_increased(self.drift_confidence) {
            self.warning = false;
            self.drift = true;
        } else if self.mean_increased(self.warning_confidence) {
            self.warning = true;
            self.drift = false;
        } else {
            self.warning = false;
            self.drift = false;
        }
        if self.two_sided {
            if self.mean_decreased(self.drift_confidence) {
                self.drift = true;
            } else if self.mean_decreased(self.warning_confidence) {
                self.warning = true;
            }
        }
        DriftState::of(self.drift, self.warning)
    }
}
