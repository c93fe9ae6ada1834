//! `c2_imbalance(label)`: the C2 imbalance index of Lorena et al. (ECoL
//! `balance.R`): `C2 = 1 - 1/IR_L` with
//! `IR_L = ((C - 1) / C) * sum_c n_c / (n - n_c)` over the C classes present.
//! 0 when the classes are balanced, towards 1 at extreme imbalance. With
//! fewer than two classes the index is undefined (the formula divides by
//! zero) and the result is NULL.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{AggregateUDF, Documentation};

use crate::class_tally::{ClassStatistic, ClassStatisticUdf};
use crate::doc::class_doc;

#[derive(Debug)]
pub struct C2Imbalance;

impl ClassStatistic for C2Imbalance {
    const NAME: &'static str = "c2_imbalance";

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            class_doc(
                "C2 imbalance index (Lorena et al.): 1 - 1/IR_L with \
                 IR_L = ((C-1)/C) * sum(n_c / (n - n_c)); 0 when balanced, towards 1 at \
                 extreme imbalance, NULL with fewer than two classes.",
                "c2_imbalance(label)",
            )
        });
        &DOC
    }

    fn return_type(_class_type: &DataType) -> DataType {
        DataType::Float64
    }

    fn evaluate(_classes: &ArrayRef, counts: &[u64], _: &DataType) -> Result<ScalarValue> {
        if counts.len() < 2 {
            return Ok(ScalarValue::Float64(None));
        }
        let c = counts.len() as f64;
        let n: u64 = counts.iter().sum();
        let sum: f64 = counts
            .iter()
            .map(|n_c| *n_c as f64 / (n - n_c) as f64)
            .sum();
        let ir_l = (c - 1.0) / c * sum;
        Ok(ScalarValue::Float64(Some(1.0 - 1.0 / ir_l)))
    }
}

/// The `c2_imbalance` aggregate.
pub fn c2_imbalance_udaf() -> Arc<AggregateUDF> {
    ClassStatisticUdf::<C2Imbalance>::udaf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class_tally::test_util::statistic_of;

    fn c2(labels: &[Option<i64>]) -> Result<Option<f64>> {
        match statistic_of::<C2Imbalance>(labels)? {
            ScalarValue::Float64(v) => Ok(v),
            other => datafusion::common::internal_err!("unexpected {other:?}"),
        }
    }

    #[test]
    fn balanced_is_zero_and_imbalance_approaches_one() -> Result<()> {
        let balanced: Vec<Option<i64>> = (0..30).map(|i| Some(i % 3)).collect();
        assert_eq!(c2(&balanced)?, Some(0.0));
        // Binary: IR_L = (n1/n0 + n0/n1) / 2 = (1/9 + 9) / 2.
        let mut skewed = vec![Some(0); 9];
        skewed.push(Some(1));
        let expected = 1.0 - 1.0 / ((1.0 / 9.0 + 9.0) / 2.0);
        assert!((c2(&skewed)?.unwrap_or(f64::NAN) - expected).abs() < 1e-15);
        let mut extreme = vec![Some(0); 9999];
        extreme.push(Some(1));
        assert!(c2(&extreme)?.unwrap_or(0.0) > 0.999);
        assert_eq!(c2(&[Some(1), Some(1)])?, None);
        Ok(())
    }
}
