//! `macro_f1(label, prediction)`: Unweighted mean of the per-class F1 scores over the union of classes in label and prediction, with 0 where a score is undefined. Equals sklearn.metrics.f1_score(average=macro, zero_division=0).

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use crate::confusion::{Confusion, ConfusionMetric, ConfusionMetricUdf};
use crate::doc::metric_doc;
use crate::scores::divide_or_zero;

#[derive(Debug)]
pub struct MacroF1;

impl ConfusionMetric for MacroF1 {
    const NAME: &'static str = "macro_f1";

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            metric_doc(
                "Unweighted mean of the per-class F1 scores over the union of classes in label and prediction, with 0 where a score is undefined. Equals sklearn.metrics.f1_score(average=macro, zero_division=0).",
                "macro_f1(label, prediction)",
            )
        });
        &DOC
    }

    fn evaluate(matrix: &Confusion, class: Option<usize>) -> Option<f64> {
        let _ = class;
        let n = matrix.classes();
        let f1 = (0..n).map(|c| {
            let tp = matrix.count(c, c);
            divide_or_zero(2.0 * tp, matrix.true_count(c) + matrix.predicted_count(c))
        });
        Some(f1.sum::<f64>() / n as f64)
    }
}

/// The `macro_f1` aggregate.
pub fn macro_f1_udaf() -> Arc<AggregateUDF> {
    ConfusionMetricUdf::<MacroF1>::udaf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confusion::test_util::{assert_close, ints, metric_of};
    use datafusion::common::Result;

    #[test]
    fn averages_over_the_union_of_classes() -> Result<()> {
        // class 0: tp 1, true 2, pred 1 -> 2/3; class 1: tp 1, true 1, pred 1 -> 1;
        // class 2: tp 0, true 0, pred 1 -> 0
        let v = metric_of::<MacroF1>(&ints(&[0, 0, 1]), &ints(&[0, 2, 1]), None)?;
        assert_close(v, (2.0 / 3.0 + 1.0 + 0.0) / 3.0);
        Ok(())
    }
}
