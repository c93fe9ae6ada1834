//! Page-Hinkley, as River's `drift.PageHinkley` (mode `both` by default):
//! decayed cumulative deviations from the running mean, minus (upward) or
//! plus (downward) `delta`; drift when either departs from its extreme by
//! more than `threshold`, after `min_instances` rows. No warning zone.

use super::{DriftDetector, DriftState, RunningMean};

/// Which direction of change Page-Hinkley watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
    Both,
}

#[derive(Debug, Clone)]
pub struct PageHinkley {
    pub min_instances: usize,
    pub delta: f64,
    pub threshold: f64,
    pub alpha: f64,
    pub direction: Direction,
    mean: RunningMean,
    sum_increase: f64,
    sum_decrease: f64,
    min_increase: f64,
    max_decrease: f64,
    drift: bool,
}

impl Default for PageHinkley {
    fn default() -> Self {
        Self::new(30, 0.005, 50.0, 1.0 - 0.0001, Direction::Both)
    }
}

impl PageHinkley {
    pub fn new(
        min_instances: usize,
        delta: f64,
        threshold: f64,
        alpha: f64,
        direction: Direction,
    ) -> Self {
        Self {
            min_instances,
            delta,
            threshold,
            alpha,
            direction,
            mean: RunningMean::default(),
            sum_increase: 0.0,
            sum_decrease: 0.0,
            min_increase: f64::INFINITY,
            max_decrease: -1.0,
            drift: false,
        }
    }

    fn reset(&mut self) {
        *self = Self::new(
            self.min_instances,
            self.delta,
            self.threshold,
            self.alpha,
            self.direction,
        );
    }
}

impl DriftDetector for PageHinkley {
    fn update(&mut self, x: f64) -> DriftState {
        if self.drift {
            self.reset();
        }
        self.mean.update(x);
        let deviation = x - self.mean.mean;
        self.sum_increase = self.alpha * self.sum_increase + deviation - self.delta;
        self.sum_decrease = self.alpha * self.sum_decrease + deviation + self.delta;
        if self.sum_increase < self.min_increase {
            self.min_increase = self.sum_increase;
        }
        if self.sum_decrease > self.max_decrease {
            self.max_decrease = self.sum_decrease;
        }
        if self.mean.n >= self.min_instances as f64 {
            let up = self.sum_increase - self.min_increase > self.threshold;
            let down = self.max_decrease - self.sum_decrease > self.threshold;
            self.drift = match self.direction {
                Direction::Up => up,
                Direction::Down => down,
                Direction::Both => up || down,
            };
        }
        DriftState::of(self.drift, false)
    }
}
