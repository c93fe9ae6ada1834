//! `class_counts(label)`: a map from each class present to its row count,
//! keys in ascending order. Keys are Int64 for integer and boolean labels
//! (booleans as 0 and 1), Utf8 for strings; NULL for no rows.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, Int64Array, MapArray, StructArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::logical_expr::{AggregateUDF, Documentation};

use crate::class_tally::{ClassStatistic, ClassStatisticUdf};
use crate::doc::class_doc;

#[derive(Debug)]
pub struct ClassCounts;

fn entry_fields(class_type: &DataType) -> Fields {
    Fields::from(vec![
        Field::new("key", class_type.clone(), false),
        Field::new("value", DataType::Int64, false),
    ])
}

impl ClassStatistic for ClassCounts {
    const NAME: &'static str = "class_counts";

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            class_doc(
                "Map from each class present to its number of rows, keys ascending.",
                "class_counts(label)",
            )
        });
        &DOC
    }

    fn return_type(class_type: &DataType) -> DataType {
        DataType::Map(
            Arc::new(Field::new(
                "entries",
                DataType::Struct(entry_fields(class_type)),
                false,
            )),
            false,
        )
    }

    fn evaluate(classes: &ArrayRef, counts: &[u64], return_type: &DataType) -> Result<ScalarValue> {
        if counts.is_empty() {
            return ScalarValue::try_from(return_type);
        }
        let DataType::Map(entries_field, _) = return_type else {
            return internal_err!("class_counts returns {return_type}");
        };
        let counts = counts
            .iter()
            .map(|n| i64::try_from(*n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| datafusion::common::DataFusionError::Execution(e.to_string()))?;
        let entries = StructArray::try_new(
            entry_fields(classes.data_type()),
            vec![Arc::clone(classes), Arc::new(Int64Array::from(counts))],
            None,
        )?;
        let map = MapArray::try_new(
            Arc::clone(entries_field),
            OffsetBuffer::from_lengths([classes.len()]),
            entries,
            None,
            false,
        )?;
        Ok(ScalarValue::Map(Arc::new(map)))
    }
}

/// The `class_counts` aggregate.
pub fn class_counts_udaf() -> Arc<AggregateUDF> {
    ClassStatisticUdf::<ClassCounts>::udaf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class_tally::test_util::statistic_of;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::Int64Type;

    #[test]
    fn counts_per_class_in_key_order() -> Result<()> {
        let ScalarValue::Map(map) =
            statistic_of::<ClassCounts>(&[Some(5), Some(-2), Some(5), None])?
        else {
            return internal_err!("not a map");
        };
        let entries = map.value(0);
        let keys = entries.column(0).as_primitive::<Int64Type>();
        let values = entries.column(1).as_primitive::<Int64Type>();
        assert_eq!(keys.values().to_vec(), vec![-2, 5]);
        assert_eq!(values.values().to_vec(), vec![1, 2]);
        assert!(statistic_of::<ClassCounts>(&[None])?.is_null());
        assert_eq!(map.len(), 1);
        Ok(())
    }
}
