//! `precision_of(label, prediction, class)`: Precision of one class: rows predicted as that class that are of it, over rows predicted as it; 0 when nothing is predicted as it. Equals sklearn.metrics.precision_score(labels=[class], average=None, zero_division=0).

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use crate::confusion::{Confusion, ConfusionMetric, ConfusionMetricUdf};
use crate::doc::metric_doc;
use crate::scores::divide_or_zero;

#[derive(Debug)]
pub struct PrecisionOf;

impl ConfusionMetric for PrecisionOf {
    const NAME: &'static str = "precision_of";
    const PER_CLASS: bool = true;

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            metric_doc(
                "Precision of one class: rows predicted as that class that are of it, over rows predicted as it; 0 when nothing is predicted as it. Equals sklearn.metrics.precision_score(labels=[class], average=None, zero_division=0).",
                "precision_of(label, prediction, class)",
            )
        });
        &DOC
    }

    fn evaluate(matrix: &Confusion, class: Option<usize>) -> Option<f64> {
        let Some(c) = class else { return Some(0.0) };
        Some(divide_or_zero(
            matrix.count(c, c),
            matrix.predicted_count(c),
        ))
    }
}

/// The `precision_of` aggregate.
pub fn precision_of_udaf() -> Arc<AggregateUDF> {
    ConfusionMetricUdf::<PrecisionOf>::udaf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confusion::test_util::{assert_close, ints, metric_of};
    use datafusion::common::Result;

    #[test]
    fn precision_of_the_named_class() -> Result<()> {
        let (l, p) = (ints(&[1, 1, 0, 0]), ints(&[1, 1, 1, 0]));
        assert_close(metric_of::<PrecisionOf>(&l, &p, Some(1))?, 2.0 / 3.0);
        assert_close(
            metric_of::<PrecisionOf>(&ints(&[1]), &ints(&[0]), Some(1))?,
            0.0,
        );
        Ok(())
    }
}
