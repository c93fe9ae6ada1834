//! DDM (Gama et al. 2004), as River's `drift.binary.DDM`: the running error
//! rate p and its standard deviation s = sqrt(p (1 - p) / n); after
//! `warm_start` rows, warning when p + s > p_min + 2 s_min, drift when
//! p + s > p_min + 3 s_min, where (p_min, s_min) is the point of smallest
//! p + s so far.

use super::{DriftDetector, DriftState, RunningMean};

#[derive(Debug, Clone)]
pub struct Ddm {
    pub warm_start: usize,
    pub warning_threshold: f64,
    pub drift_threshold: f64,
    p: RunningMean,
    p_min: f64,
    s_min: f64,
    ps_min: f64,
    warning: bool,
    drift: bool,
}

impl Default for Ddm {
    fn default() -> Self {
        Self::new(30, 2.0, 3.0)
    }
}

impl Ddm {
    pub fn new(warm_start: usize, warning_threshold: f64, drift_threshold: f64) -> Self {
        Self {
            warm_start,
            warning_threshold,
            drift_threshold,
            p: RunningMean::default(),
            p_min: f64::NAN,
            s_min: f64::NAN,
            ps_min: f64::INFINITY,
            warning: false,
            drift: false,
        }
    }

    fn reset(&mut self) {
        *self = Self::new(
            self.warm_start,
            self.warning_threshold,
            self.drift_threshold,
        );
    }
}

impl DriftDetector for Ddm {
    fn update(&mut self, x: f64) -> DriftState {
        if self.drift {
            self.reset();
        }
        self.p.update(x);
        let p = self.p.mean;
        let n = self.p.n;
        let s = (p * (1.0 - p) / n).sqrt();
        if n > self.warm_start as f64 {
            if p + s <= self.ps_min {
                self.p_min = p;
                self.s_min = s;
                self.ps_min = self.p_min + self.s_min;
            }
            self.warning = p + s > self.p_min + self.warning_threshold * self.s_min;
            if p + s > self.p_min + self.drift_threshold * self.s_min {
                self.drift = true;
                self.warning = false;
            }
        }
        DriftState::of(self.drift, self.warning)
    }
}
