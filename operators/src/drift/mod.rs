//! Drift detectors, pure Rust, O(1) per update and no allocation per
//! update, matching River 0.26.1 (`river.drift`) row for row with the same
//! parameters: same input sequence, same rows flagged. Defaults are
//! River's.
//!
//! Every detector reports its state after each row ([`DriftState`]): `Drift`
//! wins on a row where it signals both; detectors without a warning zone
//! (Page-Hinkley) never report `Warning`. As in River, a detector that
//! reported drift starts afresh on its next update.
//!
//! Also: [`Kswin`] (River's rule, our sampler), and the imbalance-aware
//! [`ClassPrior`] (the class mix), [`RecallMonitor`] / [`DdmOci`] (recall of
//! each class, of the minority) and [`PerfSim`] (confusion matrices of
//! consecutive chunks), whose choices are documented in their files.
//!
//! SQL: [`sql`] (window functions `adwin(value) OVER (ORDER BY t)` etc.)
//! and [`table_function`] (`drift_monitor`, the operator of [`monitor`] and
//! [`exec`] that watches a labelled, predicted stream and tells the rest of
//! the job).
//!
//! This module and its detector files import each other on purpose: it
//! defines what every detector shares (`DriftDetector`, running moments)
//! and re-exports the detectors; the cycle stays inside this folder.

pub mod adwin;
pub mod class_prior;
pub mod ddm;
pub mod ddm_oci;
pub mod eddm;
pub mod exec;
pub mod hddm_a;
pub mod hddm_w;
pub mod kswin;
pub mod monitor;
pub mod page_hinkley;
pub mod perfsim;
pub mod table_function;
pub mod whole_partition;
pub mod window_functions;

use serde::{Deserialize, Serialize};

pub use adwin::Adwin;
pub use class_prior::ClassPrior;
pub use ddm::Ddm;
pub use ddm_oci::{DdmOci, RecallMonitor};
pub use eddm::Eddm;
pub use hddm_a::HddmA;
pub use hddm_w::HddmW;
pub use kswin::Kswin;
pub use monitor::DriftMonitorOptions;
pub use page_hinkley::PageHinkley;
pub use perfsim::PerfSim;

pub use crate::runtime::DriftState;

/// A change detector fed one value per row.
pub trait DriftDetector: Send {
    /// Add a value (an error indicator 0/1 for the binary detectors) and
    /// return the state after it.
    fn update(&mut self, x: f64) -> DriftState;
}

/// River's `stats.Mean` with unit weights: `n` as a float and the
/// incremental update `mean += (1 / n) * (x - mean)`, so that every mean is
/// bit-identical to River's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningMean {
    pub n: f64,
    pub mean: f64,
}

impl RunningMean {
    #[inline]
    pub fn update(&mut self, x: f64) {
        self.n += 1.0;
        self.mean += (1.0 / self.n) * (x - self.mean);
    }
}

/// River's `stats.Var` (ddof 1, Welford) over unit weights.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunningVariance {
    pub mean: RunningMean,
    sum_squares: f64,
}

impl RunningVariance {
    #[inline]
    pub fn update(&mut self, x: f64) {
        let old = self.mean.mean;
        self.mean.update(x);
        self.sum_squares += (x - old) * (x - self.mean.mean);
    }

    /// Sample variance; 0 with one value or none.
    pub fn get(&self) -> f64 {
        if self.mean.n > 1.0 {
            self.sum_squares / (self.mean.n - 1.0)
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (inputs, detector names, expected states per detector) of a reference
    /// file written by scripts/reference-drift from River (columns: t, x,
    /// one state per detector).
    fn reference(file: &str) -> (Vec<f64>, Vec<String>, Vec<Vec<String>>) {
        let path = format!("{}/../tests/data/drift/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut lines = text.lines();
        let header: Vec<String> = lines
            .next()
            .unwrap_or_default()
            .split(',')
            .skip(2)
            .map(str::to_string)
            .collect();
        let mut xs = Vec::new();
        let mut states = vec![Vec::new(); header.len()];
        for line in lines {
            let mut fields = line.split(',').skip(1);
            xs.push(
                fields
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .unwrap_or(f64::NAN),
            );
            for (column, field) in states.iter_mut().zip(fields) {
                column.push(field.to_string());
            }
        }
        (xs, header, states)
    }

    fn check(detector: &mut dyn DriftDetector, xs: &[f64], expected: &[String], name: &str) {
        let mut flagged = 0;
        for (row, (&x, want)) in xs.iter().zip(expected).enumerate() {
            let got = detector.update(x).name();
            assert_eq!(got, want, "{name}: row {row}");
            flagged += usize::from(got != "none");
        }
        assert!(flagged > 0, "{name} never fires on the reference stream");
    }

    #[test]
    fn binary_detectors_flag_the_rows_river_flags() {
        let (xs, names, states) = reference("binary_stream.csv");
        for (name, expected) in names.iter().zip(&states) {
            let mut detector: Box<dyn DriftDetector> = match name.as_str() {
                "adwin" => Box::new(Adwin::default()),
                "ddm" => Box::new(Ddm::default()),
                "eddm" => Box::new(Eddm::default()),
                "hddm_a" => Box::new(HddmA::default()),
                "hddm_w" => Box::new(HddmW::default()),
                other => panic!("unexpected column {other}"),
            };
            check(detector.as_mut(), &xs, expected, name);
        }
    }

    #[test]
    fn value_detectors_flag_the_rows_river_flags() {
        let (xs, names, states) = reference("value_stream.csv");
        for (name, expected) in names.iter().zip(&states) {
            let mut detector: Box<dyn DriftDetector> = match name.as_str() {
                "page_hinkley" => Box::new(PageHinkley::default()),
                "adwin" => Box::new(Adwin::default()),
                other => panic!("unexpected column {other}"),
            };
            check(detector.as_mut(), &xs, expected, name);
        }
    }
}
