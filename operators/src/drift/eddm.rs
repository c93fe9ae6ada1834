//! EDDM (Baena-García et al. 2006), as River's `drift.binary.EDDM`: the
//! mean p' and standard deviation s' of the distance between consecutive
//! errors; once both the rows and the errors exceed `warm_start`, the
//! level (p' + 2 s') / max(p' + 2 s') below `beta` is drift, below `alpha`
//! a warning. Only error rows (x = 1) update the state.

use super::{DriftDetector, DriftState, RunningVariance};

#[derive(Debug, Clone)]
pub struct Eddm {
    pub warm_start: usize,
    pub alpha: f64,
    pub beta: f64,
    distances: RunningVariance,
    n: u64,
    last_error: u64,
    n_errors: u64,
    p2s_max: f64,
    warning: bool,
    drift: bool,
}

impl Default for Eddm {
    fn default() -> Self {
        Self::new(30, 0.95, 0.9)
    }
}

impl Eddm {
    /// `alpha` must be at least `beta` (checked by the callers' options).
    pub fn new(warm_start: usize, alpha: f64, beta: f64) -> Self {
        Self {
            warm_start,
            alpha,
            beta,
            distances: RunningVariance::default(),
            n: 0,
            last_error: 0,
            n_errors: 0,
            p2s_max: -1.0,
            warning: false,
            drift: false,
        }
    }

    fn reset(&mut self) {
        *self = Self::new(self.warm_start, self.alpha, self.beta);
    }
}

impl DriftDetector for Eddm {
    fn update(&mut self, x: f64) -> DriftState {
        if self.drift {
            self.reset();
        }
        self.n += 1;
        if x == 1.0 {
            self.n_errors += 1;
            self.distances.update((self.n - self.last_error) as f64);
            if self.n > self.warm_start as u64 {
                let p = self.distances.mean.mean;
                let s = self.distances.get().sqrt();
                let p2s = p + 2.0 * s;
                if p2s > self.p2s_max {
                    self.p2s_max = p2s;
                } else if self.n_errors > self.warm_start as u64 {
                    let level = p2s / self.p2s_max;
                    if level < self.beta {
                        // River leaves the warning flag as it was here.
                        self.drift = true;
                    } else {
                        self.warning = level < self.alpha;
                    }
                }
            }
            self.last_error = self.n;
        }
        DriftState::of(self.drift, self.warning)
    }
}
