//! `pr_auc(label, score [, positive_class])`: average precision of `score`
//! for the positive class (default 1): the precision at each distinct score,
//! weighted by the recall it adds. 0 without positive rows, as
//! scikit-learn. Equals `sklearn.metrics.average_precision_score` on binary
//! labels.

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use crate::doc::score_doc;
use crate::score_curve::{ScoreMetric, ScoreMetricUdf, Threshold};

#[derive(Debug)]
pub struct PrAuc;

impl ScoreMetric for PrAuc {
    const NAME: &'static str = "pr_auc";

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            score_doc(
                "Average precision of score for the positive class (default 1): the sum \
                 over distinct scores of precision times added recall; 0 without \
                 positives. Equals sklearn.metrics.average_precision_score.",
                "pr_auc(label, score [, positive_class])",
            )
        });
        &DOC
    }

    fn evaluate(
        thresholds: impl Iterator<Item = Threshold>,
        positives: u64,
        _negatives: u64,
    ) -> f64 {
        if positives == 0 {
            return 0.0;
        }
        let (mut true_positives, mut predicted) = (0u64, 0u64);
        // Neumaier's compensated sum: over millions of distinct scores a
        // plain running sum drifts by 1e-12; this one stays within an ulp
        // or two of the exact sum.
        let (mut sum, mut compensation) = (0.0f64, 0.0f64);
        for t in thresholds {
            true_positives += t.positives;
            predicted += t.positives + t.negatives;
            if t.positives > 0 {
                let recall_step = t.positives as f64 / positives as f64;
                let term = recall_step * (true_positives as f64 / predicted as f64);
                let next = sum + term;
                compensation += if sum.abs() >= term.abs() {
                    (sum - next) + term
                } else {
                    (term - next) + sum
                };
                sum = next;
            }
        }
        sum + compensation
    }
}

/// The `pr_auc` aggregate.
pub fn pr_auc_udaf() -> Arc<AggregateUDF> {
    ScoreMetricUdf::<PrAuc>::udaf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score_curve::test_util::score_metric_of;
    use datafusion::common::Result;

    #[test]
    fn steps_ties_and_no_positives() -> Result<()> {
        // scikit-learn's doc example: 0.8333...
        let ap = score_metric_of::<PrAuc>(&[0, 0, 1, 1], &[0.1, 0.4, 0.35, 0.8])?;
        assert!((ap.unwrap_or(0.0) - 5.0 / 6.0).abs() < 1e-15);
        assert_eq!(
            score_metric_of::<PrAuc>(&[0, 1, 1, 0], &[0.5; 4])?,
            Some(0.5)
        );
        assert_eq!(score_metric_of::<PrAuc>(&[0, 0], &[0.1, 0.2])?, Some(0.0));
        assert_eq!(score_metric_of::<PrAuc>(&[1, 1], &[0.1, 0.2])?, Some(1.0));
        Ok(())
    }
}
