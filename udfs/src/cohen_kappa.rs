//! `cohen_kappa(label, prediction)`: Cohen kappa between label and prediction (unweighted); NaN when undefined (a single class), as scikit-learn. Equals sklearn.metrics.cohen_kappa_score.

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use crate::confusion::{Confusion, ConfusionMetric, ConfusionMetricUdf};
use crate::doc::metric_doc;

#[derive(Debug)]
pub struct CohenKappa;

impl ConfusionMetric for CohenKappa {
    const NAME: &'static str = "cohen_kappa";

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            metric_doc(
                "Cohen kappa between label and prediction (unweighted); NaN when undefined (a single class), as scikit-learn. Equals sklearn.metrics.cohen_kappa_score.",
                "cohen_kappa(label, prediction)",
            )
        });
        &DOC
    }

    fn evaluate(matrix: &Confusion, class: Option<usize>) -> Option<f64> {
        let _ = class;
        let n = matrix.classes();
        let sum0: Vec<f64> = (0..n).map(|c| matrix.predicted_count(c)).collect();
        let sum1: Vec<f64> = (0..n).map(|c| matrix.true_count(c)).collect();
        let total: f64 = sum0.iter().sum();
        // Row-major sums over the off-diagonal cells, in scikit-learn's order:
        // observed disagreement against the disagreement expected by chance.
        let (mut observed, mut expected) = (0.0, 0.0);
        for (i, predicted_i) in sum0.iter().enumerate() {
            for (j, true_j) in sum1.iter().enumerate() {
                if i != j {
                    observed += matrix.count(i, j);
                    expected += predicted_i * true_j / total;
                }
            }
        }
        Some(if expected == 0.0 {
            f64::NAN
        } else {
            1.0 - observed / expected
        })
    }
}

/// The `cohen_kappa` aggregate.
pub fn cohen_kappa_udaf() -> Arc<AggregateUDF> {
    ConfusionMetricUdf::<CohenKappa>::udaf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confusion::test_util::{assert_close, ints, metric_of};
    use datafusion::common::Result;

    #[test]
    fn agreement_chance_and_undefined() -> Result<()> {
        assert_close(
            metric_of::<CohenKappa>(&ints(&[0, 1, 2]), &ints(&[0, 1, 2]), None)?,
            1.0,
        );
        // p_o = 0.5, p_e = 0.5: kappa 0
        assert_close(
            metric_of::<CohenKappa>(&ints(&[0, 0, 1, 1]), &ints(&[0, 1, 0, 1]), None)?,
            0.0,
        );
        let one_class = metric_of::<CohenKappa>(&ints(&[1, 1]), &ints(&[1, 1]), None)?;
        assert!(one_class.is_some_and(f64::is_nan));
        Ok(())
    }
}
