//! `f1_of(label, prediction, class)`: F1 score of one class; 0 when undefined. Equals sklearn.metrics.f1_score(labels=[class], average=None, zero_division=0).

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use crate::confusion::{Confusion, ConfusionMetric, ConfusionMetricUdf};
use crate::doc::metric_doc;
use crate::scores::divide_or_zero;

#[derive(Debug)]
pub struct F1Of;

impl ConfusionMetric for F1Of {
    const NAME: &'static str = "f1_of";
    const PER_CLASS: bool = true;

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            metric_doc(
                "F1 score of one class; 0 when undefined. Equals sklearn.metrics.f1_score(labels=[class], average=None, zero_division=0).",
                "f1_of(label, prediction, class)",
            )
        });
        &DOC
    }

    fn evaluate(matrix: &Confusion, class: Option<usize>) -> Option<f64> {
        let Some(c) = class else { return Some(0.0) };
        let denominator = matrix.true_count(c) + matrix.predicted_count(c);
        Some(divide_or_zero(2.0 * matrix.count(c, c), denominator))
    }
}

/// The `f1_of` aggregate.
pub fn f1_of_udaf() -> Arc<AggregateUDF> {
    ConfusionMetricUdf::<F1Of>::udaf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confusion::test_util::{assert_close, ints, metric_of};
    use datafusion::common::Result;

    #[test]
    fn f1_of_the_named_class() -> Result<()> {
        // tp 2, true 3, predicted 3
        let v = metric_of::<F1Of>(&ints(&[1, 1, 1, 0]), &ints(&[1, 1, 0, 1]), Some(1))?;
        assert_close(v, 4.0 / 6.0);
        Ok(())
    }
}
