//! `gmean(label, prediction)`: Geometric mean of the per-class recalls over the union of classes in label and prediction; 0 when any class has recall 0. Equals imblearn.metrics.geometric_mean_score (average=multiclass).

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use crate::confusion::{Confusion, ConfusionMetric, ConfusionMetricUdf};
use crate::doc::metric_doc;
use crate::scores::{self, divide_or_zero};

#[derive(Debug)]
pub struct GeometricMean;

impl ConfusionMetric for GeometricMean {
    const NAME: &'static str = "gmean";

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            metric_doc(
                "Geometric mean of the per-class recalls over the union of classes in label and prediction; 0 when any class has recall 0. Equals imblearn.metrics.geometric_mean_score (average=multiclass).",
                "gmean(label, prediction)",
            )
        });
        &DOC
    }

    fn evaluate(matrix: &Confusion, class: Option<usize>) -> Option<f64> {
        let _ = class;
        let recalls: Vec<f64> = (0..matrix.classes())
            .map(|c| divide_or_zero(matrix.count(c, c), matrix.true_count(c)))
            .collect();
        scores::gmean(&recalls)
    }
}

/// The `gmean` aggregate.
pub fn gmean_udaf() -> Arc<AggregateUDF> {
    ConfusionMetricUdf::<GeometricMean>::udaf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confusion::test_util::{assert_close, ints, metric_of};
    use datafusion::common::Result;

    #[test]
    fn binary_and_multiclass() -> Result<()> {
        // recalls 3/4 and 1/2: sqrt(3/8)
        let v = metric_of::<GeometricMean>(
            &ints(&[0, 0, 0, 0, 1, 1]),
            &ints(&[0, 0, 0, 1, 1, 0]),
            None,
        )?;
        assert_close(v, (3.0f64 / 8.0).sqrt());
        // class 2 only predicted: recall 0 for it, so the mean is 0
        let v = metric_of::<GeometricMean>(&ints(&[0, 1]), &ints(&[0, 2]), None)?;
        assert_close(v, 0.0);
        assert_eq!(metric_of::<GeometricMean>(&[], &[], None)?, None);
        Ok(())
    }
}
