//! `balanced_accuracy(label, prediction)`: Mean of the per-class recalls over the classes present in label (a class seen only in prediction is left out). Equals sklearn.metrics.balanced_accuracy_score.

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use crate::confusion::{Confusion, ConfusionMetric, ConfusionMetricUdf};
use crate::doc::metric_doc;
use crate::scores;

#[derive(Debug)]
pub struct BalancedAccuracy;

impl ConfusionMetric for BalancedAccuracy {
    const NAME: &'static str = "balanced_accuracy";

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            metric_doc(
                "Mean of the per-class recalls over the classes present in label (a class seen only in prediction is left out). Equals sklearn.metrics.balanced_accuracy_score.",
                "balanced_accuracy(label, prediction)",
            )
        });
        &DOC
    }

    fn evaluate(matrix: &Confusion, class: Option<usize>) -> Option<f64> {
        let _ = class;
        let recalls: Vec<f64> = (0..matrix.classes())
            .filter(|c| matrix.true_count(*c) > 0.0)
            .map(|c| matrix.count(c, c) / matrix.true_count(c))
            .collect();
        scores::mean(&recalls)
    }
}

/// The `balanced_accuracy` aggregate.
pub fn balanced_accuracy_udaf() -> Arc<AggregateUDF> {
    ConfusionMetricUdf::<BalancedAccuracy>::udaf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confusion::test_util::{assert_close, ints, metric_of};
    use datafusion::common::Result;

    #[test]
    fn classes_only_predicted_do_not_count() -> Result<()> {
        let v = metric_of::<BalancedAccuracy>(&ints(&[0, 0, 1, 1]), &ints(&[0, 2, 1, 1]), None)?;
        assert_close(v, (0.5 + 1.0) / 2.0);
        Ok(())
    }
}
