//! HDDM_W (Frías-Blanco et al. 2015), as River's `drift.binary.HDDMW`
//! (one-sided by default): exponentially weighted means (weight
//! `lambda`) before and after the cut point where the weighted mean plus
//! its McDiarmid bound was lowest; drift when the later mean exceeds the
//! earlier by the bound at `drift_confidence`, warning at
//! `warning_confidence`.

use super::{DriftDetector, DriftState};

/// River's `SampleInfo`: an exponentially weighted mean (the first value
/// sets it, then `lambda x + (1 - lambda) mean`) and its bound coefficient.
#[derive(Debug, Clone, Copy)]
struct Sample {
    lambda: f64,
    mean: f64,
    initialized: bool,
    /// Sum of squared weights, for McDiarmid's bound.
    ibc: f64,
}

impl Sample {
    fn new(lambda: f64) -> Self {
        Self {
            lambda,
            mean: 0.0,
            initialized: false,
            ibc: 1.0,
        }
    }

    fn update(&mut self, x: f64) {
        self.mean = if self.initialized {
            self.lambda * x + (1.0 - self.lambda) * self.mean
        } else {
            x
        };
        self.initialized = true;
        let rest = 1.0 - self.lambda;
        self.ibc = self.lambda * self.lambda + rest.powi(2) * self.ibc;
    }
}

#[derive(Debug, Clone)]
pub struct HddmW {
    pub drift_confidence: f64,
    pub warning_confidence: f64,
    pub lambda: f64,
    pub two_sided: bool,
    total: Sample,
    s1_decr: Sample,
    s1_incr: Sample,
    s2_decr: Sample,
    s2_incr: Sample,
    incr_cut: f64,
    decr_cut: f64,
    warning: bool,
    drift: bool,
}

impl Default for HddmW {
    fn default() -> Self {
        Self::new(0.001, 0.005, 0.05, false)
    }
}

impl HddmW {
    pub fn new(
        drift_confidence: f64,
        warning_confidence: f64,
        lambda: f64,
        two_sided: bool,
    ) -> Self {
        let fresh = Sample::new(lambda);
        Self {
            drift_confidence,
            warning_confidence,
            lambda,
            two_sided,
            total: fresh,
            s1_decr: fresh,
            s1_incr: fresh,
            s2_decr: fresh,
            s2_incr: fresh,
            incr_cut: f64::INFINITY,
            decr_cut: f64::NEG_INFINITY,
            warning: false,
            drift: false,
        }
    }

    fn reset(&mut self) {
        *self = Self::new(
            self.drift_confidence,
            self.warning_confidence,
            self.lambda,
            self.two_sided,
        );
    }

    fn mcdiarmid(ibc: f64, confidence: f64) -> f64 {
        (ibc * (1.0 / confidence).ln() / 2.0).sqrt()
    }

    /// Whether `later`'s mean exceeds `earlier`'s by the bound.
    fn changed(earlier: &Sample, later: &Sample, confidence: f64) -> bool {
        if !(earlier.initialized && later.initialized) {
            return false;
        }
        later.mean - earlier.mean > Self::mcdiarmid(earlier.ibc + later.ibc, confidence)
    }
}

impl DriftDetector for HddmW {
    fn update(&mut self, x: f64) -> DriftState {
        if self.drift {
            self.reset();
        }
        self.total.update(x);
        let eps = Self::mcdiarmid(self.total.ibc, self.drift_confidence);
        if self.total.mean + eps < self.incr_cut {
            self.incr_cut = self.total.mean + eps;
            self.s1_incr = self.total;
            self.s2_incr = Sample::new(self.lambda);
        } else {
            self.s2_incr.update(x);
        }
        if Self::changed(&self.s1_incr, &self.s2_incr, self.drift_confidence) {
            self.warning = false;
            self.drift = true;
        } else if Self::changed(&self.s1_incr, &self.s2_incr, self.warning_confidence) {
            self.warning = true;
            self.drift = false;
        } else {
            self.warning = false;
            self.drift = false;
        }
        let eps = Self::mcdiarmid(self.total.ibc, self.drift_confidence);
        if self.total.mean - eps > self.decr_cut {
            self.decr_cut = self.total.mean - eps;
            self.s1_decr = self.total;
            self.s2_decr = Sample::new(self.lambda);
        } else {
            self.s2_decr.update(x);
        }
        if self.two_sided {
            if Self::changed(&self.s2_decr, &self.s1_decr, self.drift_confidence) {
                self.drift = true;
            } else if Self::changed(&self.s2_decr, &self.s1_decr, self.warning_confidence) {
                self.warning = true;
            }
        }
        DriftState::of(self.drift, self.warning)
    }
}
