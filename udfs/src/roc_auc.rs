//! `roc_auc(label, score [, positive_class])`: area under the ROC curve of
//! `score` for the positive class (default 1), ties in score counting half;
//! NaN when only one class is present, as scikit-learn. Equals
//! `sklearn.metrics.roc_auc_score` on binary labels.

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use crate::doc::score_doc;
use crate::score_curve::{ScoreMetric, ScoreMetricUdf, Threshold};

#[derive(Debug)]
pub struct RocAuc;

impl ScoreMetric for RocAuc {
    const NAME: &'static str = "roc_auc";

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            score_doc(
                "Area under the ROC curve of score for the positive class (default 1); \
                 ties count half; NaN when only one class is present. Equals \
                 sklearn.metrics.roc_auc_score.",
                "roc_auc(label, score [, positive_class])",
            )
        });
        &DOC
    }

    fn evaluate(
        thresholds: impl Iterator<Item = Threshold>,
        positives: u64,
        negatives: u64,
    ) -> f64 {
        if positives == 0 || negatives == 0 {
            return f64::NAN;
        }
        // The Mann-Whitney count in exact integers: every (positive,
        // negative) pair ranked right counts 2, every tie 1.
        let mut positives_above: u128 = 0;
        let mut doubled_pairs: u128 = 0;
        for t in thresholds {
            let (p, n) = (u128::from(t.positives), u128::from(t.negatives));
            doubled_pairs += n * (2 * positives_above + p);
            positives_above += p;
        }
        doubled_pairs as f64 / (2.0 * positives as f64 * negatives as f64)
    }
}

/// The `roc_auc` aggregate.
pub fn roc_auc_udaf() -> Arc<AggregateUDF> {
    ScoreMetricUdf::<RocAuc>::udaf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score_curve::test_util::score_metric_of;
    use datafusion::common::Result;

    #[test]
    fn ranks_ties_and_one_class() -> Result<()> {
        assert_eq!(
            score_metric_of::<RocAuc>(&[0, 0, 1, 1], &[0.1, 0.4, 0.35, 0.8])?,
            Some(0.75)
        );
        assert_eq!(
            score_metric_of::<RocAuc>(&[0, 1, 1, 0], &[0.5; 4])?,
            Some(0.5)
        );
        assert!(score_metric_of::<RocAuc>(&[0, 0], &[0.1, 0.2])?.is_some_and(f64::is_nan));
        assert_eq!(score_metric_of::<RocAuc>(&[], &[])?, None);
        Ok(())
    }
}
