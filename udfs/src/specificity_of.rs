//! `specificity_of(label, prediction, class)`: Specificity of one class: rows not of that class not predicted as it, over rows not of that class; 0 when there are no such rows. Equals the specificity of imblearn.metrics.sensitivity_specificity_support for that class.

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use crate::confusion::{Confusion, ConfusionMetric, ConfusionMetricUdf};
use crate::doc::metric_doc;
use crate::scores::divide_or_zero;

#[derive(Debug)]
pub struct SpecificityOf;

impl ConfusionMetric for SpecificityOf {
    const NAME: &'static str = "specificity_of";
    const PER_CLASS: bool = true;

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            metric_doc(
                "Specificity of one class: rows not of that class not predicted as it, over rows not of that class; 0 when there are no such rows. Equals the specificity of imblearn.metrics.sensitivity_specificity_support for that class.",
                "specificity_of(label, prediction, class)",
            )
        });
        &DOC
    }

    fn evaluate(matrix: &Confusion, class: Option<usize>) -> Option<f64> {
        let total = matrix.total();
        let (tp, true_c, predicted_c) = match class {
            Some(c) => (
                matrix.count(c, c),
                matrix.true_count(c),
                matrix.predicted_count(c),
            ),
            None => (0.0, 0.0, 0.0),
        };
        let false_positives = predicted_c - tp;
        let true_negatives = total - true_c - false_positives;
        Some(divide_or_zero(
            true_negatives,
            true_negatives + false_positives,
        ))
    }
}

/// The `specificity_of` aggregate.
pub fn specificity_of_udaf() -> Arc<AggregateUDF> {
    ConfusionMetricUdf::<SpecificityOf>::udaf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confusion::test_util::{assert_close, ints, metric_of};
    use datafusion::common::Result;

    #[test]
    fn specificity_of_the_named_class() -> Result<()> {
        // negatives of class 1: rows 3, 4, 5; one of them predicted 1
        let v =
            metric_of::<SpecificityOf>(&ints(&[1, 1, 0, 0, 2]), &ints(&[1, 0, 1, 0, 2]), Some(1))?;
        assert_close(v, 2.0 / 3.0);
        // nothing but the class itself: no negatives
        assert_close(
            metric_of::<SpecificityOf>(&ints(&[1]), &ints(&[1]), Some(1))?,
            0.0,
        );
        Ok(())
    }
}
