//! `imbalance_ratio(label)`: rows of the largest class over rows of the
//! smallest class present; 1 for a single class, NULL for no rows.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{AggregateUDF, Documentation};

use crate::class_tally::{ClassStatistic, ClassStatisticUdf};
use crate::doc::class_doc;

#[derive(Debug)]
pub struct ImbalanceRatio;

impl ClassStatistic for ImbalanceRatio {
    const NAME: &'static str = "imbalance_ratio";

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            class_doc(
                "Rows of the largest class over rows of the smallest class present \
                 (1 for a single class, NULL without rows).",
                "imbalance_ratio(label)",
            )
        });
        &DOC
    }

    fn return_type(_class_type: &DataType) -> DataType {
        DataType::Float64
    }

    fn evaluate(_classes: &ArrayRef, counts: &[u64], _: &DataType) -> Result<ScalarValue> {
        let largest = counts.iter().max();
        let smallest = counts.iter().min();
        Ok(ScalarValue::Float64(
            largest.zip(smallest).map(|(l, s)| *l as f64 / *s as f64),
        ))
    }
}

/// The `imbalance_ratio` aggregate.
pub fn imbalance_ratio_udaf() -> Arc<AggregateUDF> {
    ClassStatisticUdf::<ImbalanceRatio>::udaf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class_tally::test_util::statistic_of;

    #[test]
    fn largest_over_smallest() -> Result<()> {
        let labels = [Some(0), Some(0), Some(0), Some(1), None, Some(2), Some(2)];
        assert_eq!(
            statistic_of::<ImbalanceRatio>(&labels)?,
            ScalarValue::Float64(Some(3.0))
        );
        assert_eq!(
            statistic_of::<ImbalanceRatio>(&[Some(4)])?,
            ScalarValue::Float64(Some(1.0))
        );
        assert_eq!(
            statistic_of::<ImbalanceRatio>(&[None])?,
            ScalarValue::Float64(None)
        );
        Ok(())
    }
}
