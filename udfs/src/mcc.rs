//! `mcc(label, prediction)`: Matthews correlation coefficient, multiclass (Gorodkin) form; 0 when undefined. Equals sklearn.metrics.matthews_corrcoef.

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use crate::confusion::{Confusion, ConfusionMetric, ConfusionMetricUdf};
use crate::doc::metric_doc;

#[derive(Debug)]
pub struct MatthewsCorrelation;

impl ConfusionMetric for MatthewsCorrelation {
    const NAME: &'static str = "mcc";

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            metric_doc(
                "Matthews correlation coefficient, multiclass (Gorodkin) form; 0 when undefined. Equals sklearn.metrics.matthews_corrcoef.",
                "mcc(label, prediction)",
            )
        });
        &DOC
    }

    fn evaluate(matrix: &Confusion, class: Option<usize>) -> Option<f64> {
        let _ = class;
        let n = matrix.classes();
        let t_sum: Vec<f64> = (0..n).map(|c| matrix.true_count(c)).collect();
        let p_sum: Vec<f64> = (0..n).map(|c| matrix.predicted_count(c)).collect();
        let n_correct: f64 = (0..n).map(|c| matrix.count(c, c)).sum();
        let n_samples: f64 = p_sum.iter().sum();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let cov_ytyp = n_correct * n_samples - dot(&t_sum, &p_sum);
        let cov_ypyp = n_samples * n_samples - dot(&p_sum, &p_sum);
        let cov_ytyt = n_samples * n_samples - dot(&t_sum, &t_sum);
        let cov_ypyp_ytyt = cov_ypyp * cov_ytyt;
        Some(if cov_ypyp_ytyt == 0.0 {
            0.0
        } else {
            cov_ytyp / cov_ypyp_ytyt.sqrt()
        })
    }
}

/// The `mcc` aggregate.
pub fn mcc_udaf() -> Arc<AggregateUDF> {
    ConfusionMetricUdf::<MatthewsCorrelation>::udaf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confusion::test_util::{assert_close, ints, metric_of};
    use datafusion::common::Result;

    #[test]
    fn perfect_inverse_and_constant() -> Result<()> {
        assert_close(
            metric_of::<MatthewsCorrelation>(&ints(&[0, 1, 0, 1]), &ints(&[0, 1, 0, 1]), None)?,
            1.0,
        );
        assert_close(
            metric_of::<MatthewsCorrelation>(&ints(&[0, 1, 0, 1]), &ints(&[1, 0, 1, 0]), None)?,
            -1.0,
        );
        // a constant prediction has no variance: defined as 0
        assert_close(
            metric_of::<MatthewsCorrelation>(&ints(&[0, 1, 1]), &ints(&[1, 1, 1]), None)?,
            0.0,
        );
        Ok(())
    }
}
