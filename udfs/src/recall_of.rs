//! `recall_of(label, prediction, class)`: Recall (sensitivity) of one class: rows of that class predicted as it, over rows of that class; 0 when the class has no rows. Equals sklearn.metrics.recall_score(labels=[class], average=None, zero_division=0).

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use crate::confusion::{Confusion, ConfusionMetric, ConfusionMetricUdf};
use crate::doc::metric_doc;
use crate::scores::divide_or_zero;

#[derive(Debug)]
pub struct RecallOf;

impl ConfusionMetric for RecallOf {
    const NAME: &'static str = "recall_of";
    const PER_CLASS: bool = true;

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            metric_doc(
                "Recall (sensitivity) of one class: rows of that class predicted as it, over rows of that class; 0 when the class has no rows. Equals sklearn.metrics.recall_score(labels=[class], average=None, zero_division=0).",
                "recall_of(label, prediction, class)",
            )
        });
        &DOC
    }

    fn evaluate(matrix: &Confusion, class: Option<usize>) -> Option<f64> {
        let Some(c) = class else { return Some(0.0) };
        Some(divide_or_zero(matrix.count(c, c), matrix.true_count(c)))
    }
}

/// The `recall_of` aggregate.
pub fn recall_of_udaf() -> Arc<AggregateUDF> {
    ConfusionMetricUdf::<RecallOf>::udaf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confusion::test_util::{assert_close, ints, metric_of};
    use datafusion::common::Result;

    #[test]
    fn recall_of_the_named_class() -> Result<()> {
        let (l, p) = (ints(&[1, 1, 1, 0]), ints(&[1, 0, 0, 1]));
        assert_close(metric_of::<RecallOf>(&l, &p, Some(1))?, 1.0 / 3.0);
        assert_close(metric_of::<RecallOf>(&l, &p, Some(0))?, 0.0);
        assert_close(metric_of::<RecallOf>(&l, &p, Some(9))?, 0.0);
        Ok(())
    }
}
