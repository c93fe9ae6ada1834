//! The Prometheus families every operator shares, and the one rule for
//! class labels.
//!
//! Families are registered in the runtime's injected registry (never the
//! process default). Their label sets are fixed and bounded:
//!
//! - `operator`: the operator id (`drift_monitor-0`, ...), one per operator
//!   in the plan;
//! - `class`: a class label through [`ClassLabels`]: the first
//!   [`MAX_CLASS_LABELS`] classes a runtime sees keep their own value, later
//!   ones are counted under [`OTHER_CLASS`]. A stream cannot know which
//!   classes will be frequent, and a series must not change meaning once it
//!   exists, so first-come it is; a job with more than 32 classes is rare
//!   in imbalance monitoring and says so in its `other` series;
//! - small closed sets: `detector`, `signal`, `state`, `reason`, `window`,
//!   `kind`, `category`.
//!
//! No family has a per-row label. Every family is listed in docs/metrics.md;
//! a test there keeps the list, the dashboard and the alert rules honest.
//!
//! The operator-specific families (class counts, synthetic rows, complexity
//! categories) live beside their operators and use the same labels; the
//! ones here are those several operators write: batch latency, bad records,
//! drift events and detector state, prequential quality.

use std::collections::HashMap;
use std::sync::Mutex;

use datafusion::common::Result;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use crate::class_label::ClassValue;
use crate::sync::lock;

/// A group of Prometheus metrics that one kind of operator exports.
pub trait MetricSet: Send + Sync + 'static {
    /// Unique key of the set within a runtime.
    const NAME: &'static str;
    fn register(registry: &Registry) -> prometheus::Result<Self>
    where
        Self: Sized;
}

/// Classes that get their own `class` label value per runtime.
pub const MAX_CLASS_LABELS: usize = 32;
/// The `class` label of every class beyond the first [`MAX_CLASS_LABELS`].
pub const OTHER_CLASS: &str = "other";

/// The `class` label of each class, shared by every operator of a runtime
/// so that one class has one label everywhere.
#[derive(Debug, Default)]
pub struct ClassLabels {
    assigned: Mutex<HashMap<ClassValue, String>>,
}

impl ClassLabels {
    /// The label of `class`: its value while fewer than
    /// [`MAX_CLASS_LABELS`] classes have one, [`OTHER_CLASS`] after.
    pub fn label(&self, class: &ClassValue) -> Result<String> {
        let mut assigned = lock(&self.assigned)?;
        if let Some(label) = assigned.get(class) {
            return Ok(label.clone());
        }
        let label = if assigned.len() < MAX_CLASS_LABELS {
            class.to_string()
        } else {
            OTHER_CLASS.to_string()
        };
        // Classes beyond the cap are remembered too (as `other`), so the
        // map is bounded by the classes of the stream, not by its rows.
        assigned.insert(class.clone(), label.clone());
        Ok(label)
    }

    /// `values` per class summed per label, for gauges of a share or a
    /// size (classes beyond the cap add up under `other`).
    pub fn sum_by_label<'a>(
        &self,
        values: impl IntoIterator<Item = (&'a ClassValue, f64)>,
    ) -> Result<Vec<(String, f64)>> {
        let mut sums: Vec<(String, f64)> = Vec::new();
        for (class, value) in values {
            let label = self.label(class)?;
            match sums.iter_mut().find(|(l, _)| *l == label) {
                Some((_, sum)) => *sum += value,
                None => sums.push((label, value)),
            }
        }
        Ok(sums)
    }
}

/// Families written by several operators.
#[derive(Debug)]
pub struct SharedMetrics {
    /// Seconds an operator spent on one input batch.
    pub batch_duration: HistogramVec,
    /// Records an operator could not use, by reason.
    pub bad_records: IntCounterVec,
    /// Warning and drift events (a warning counts when a detector enters its
    /// warning zone, not on every row inside it).
    pub drift_events: IntCounterVec,
    /// Each detector's state after the last batch: 0 none, 1 warning,
    /// 2 drift.
    pub drift_state: GaugeVec,
    /// Prequential recall, precision and F1 per class and window.
    pub recall: GaugeVec,
    pub precision: GaugeVec,
    pub f1: GaugeVec,
    /// Prequential G-mean of per-class recalls and balanced accuracy.
    pub gmean: GaugeVec,
    pub balanced_accuracy: GaugeVec,
    /// Prequential ROC-AUC of the minority score (two classes).
    pub roc_auc: GaugeVec,
    /// Version of the model a trainer predicts with.
    pub model_version: IntGaugeVec,
    /// Models replaced, by reason (`drift`, `reset`).
    pub model_retrains: IntCounterVec,
}

impl MetricSet for SharedMetrics {
    const NAME: &'static str = "shared";

    fn register(registry: &Registry) -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace("equipoise");
        let batch_duration = HistogramVec::new(
            HistogramOpts::new(
                "batch_duration_seconds",
                "Time an operator spent processing one input batch.",
            )
            .namespace("equipoise")
            .buckets(vec![
                0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5,
            ]),
            &["operator"],
        )?;
        let bad_records = IntCounterVec::new(
            opts(
                "bad_records_total",
                "Records passed through but not used by an operator, by reason.",
            ),
            &["operator", "reason"],
        )?;
        let drift_events = IntCounterVec::new(
            opts(
                "drift_events_total",
                "Warning zones entered and drifts signalled, by detector, signal and class.",
            ),
            &["operator", "detector", "signal", "class", "state"],
        )?;
        let drift_state = GaugeVec::new(
            opts(
                "drift_detector_state",
                "Detector state after the last batch: 0 none, 1 warning, 2 drift.",
            ),
            &["operator", "detector", "signal", "class"],
        )?;
        let per_class = |name: &str, help: &str| {
            GaugeVec::new(opts(name, help), &["operator", "class", "window"])
        };
        let recall = per_class(
            "prequential_recall_ratio",
            "Prequential recall of each class (window: sliding or total).",
        )?;
        let precision = per_class(
            "prequential_precision_ratio",
            "Prequential precision of each class (window: sliding or total).",
        )?;
        let f1 = per_class(
            "prequential_f1_ratio",
            "Prequential F1 of each class (window: sliding or total).",
        )?;
        let gmean = GaugeVec::new(
            opts(
                "prequential_gmean_ratio",
                "Prequential geometric mean of the per-class recalls.",
            ),
            &["operator", "window"],
        )?;
        let balanced_accuracy = GaugeVec::new(
            opts(
                "prequential_balanced_accuracy_ratio",
                "Prequential mean of the per-class recalls.",
            ),
            &["operator", "window"],
        )?;
        let roc_auc = GaugeVec::new(
            opts(
                "prequential_roc_auc_ratio",
                "Prequential ROC-AUC of the minority-class score (binary streams).",
            ),
            &["operator", "window"],
        )?;
        let model_version = IntGaugeVec::new(
            opts(
                "model_version",
                "Version of the model a detector predicts with (1, then +1 per retrain).",
            ),
            &["operator"],
        )?;
        let model_retrains = IntCounterVec::new(
            opts(
                "model_retrains_total",
                "Models replaced by a retrained one, by reason (drift, reset).",
            ),
            &["operator", "reason"],
        )?;
        registry.register(Box::new(roc_auc.clone()))?;
        registry.register(Box::new(model_version.clone()))?;
        registry.register(Box::new(model_retrains.clone()))?;
        registry.register(Box::new(batch_duration.clone()))?;
        registry.register(Box::new(bad_records.clone()))?;
        registry.register(Box::new(drift_events.clone()))?;
        registry.register(Box::new(drift_state.clone()))?;
        registry.register(Box::new(recall.clone()))?;
        registry.register(Box::new(precision.clone()))?;
        registry.register(Box::new(f1.clone()))?;
        registry.register(Box::new(gmean.clone()))?;
        registry.register(Box::new(balanced_accuracy.clone()))?;
        Ok(Self {
            batch_duration,
            bad_records,
            drift_events,
            drift_state,
            recall,
            precision,
            f1,
            gmean,
            balanced_accuracy,
            roc_auc,
            model_version,
            model_retrains,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_beyond_the_cap_share_one_label() -> Result<()> {
        let labels = ClassLabels::default();
        for i in 0..MAX_CLASS_LABELS as i64 {
            assert_eq!(labels.label(&ClassValue::Int(i))?, i.to_string());
        }
        assert_eq!(labels.label(&ClassValue::Int(1_000))?, OTHER_CLASS);
        assert_eq!(labels.label(&ClassValue::Str("x".into()))?, OTHER_CLASS);
        // A class keeps its label.
        assert_eq!(labels.label(&ClassValue::Int(3))?, "3");
        Ok(())
    }
}
