//! Class labels as operators see them: integer, boolean or string columns,
//! turned into one comparable [`ClassValue`] per row.

use std::fmt;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{Result, exec_err, plan_err};
use serde::{Deserialize, Serialize};

/// One class of a label column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClassValue {
    Bool(bool),
    Int(i64),
    Str(String),
}

impl fmt::Display for ClassValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Str(s) => f.write_str(s),
        }
    }
}

/// Check at planning time that a column can serve as a class label.
pub fn check_label_type(column: &str, data_type: &DataType) -> Result<()> {
    if data_type.is_integer()
        || matches!(
            data_type,
            DataType::Boolean | DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        )
    {
        Ok(())
    } else {
        plan_err!(
            "label column '{column}' has type {data_type}; a class label must be an integer, \
             boolean or string column"
        )
    }
}

/// Call `each(row, class)` for every row, with `None` for a NULL label.
pub fn for_each_class(
    labels: &ArrayRef,
    mut each: impl FnMut(usize, Option<ClassValue>),
) -> Result<()> {
    match labels.data_type() {
        DataType::Boolean => {
            for (row, value) in labels.as_boolean().iter().enumerate() {
                each(row, value.map(ClassValue::Bool));
            }
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let strings = cast(labels, &DataType::Utf8)?;
            for (row, value) in strings.as_string::<i32>().iter().enumerate() {
                each(row, value.map(|s| ClassValue::Str(s.to_string())));
            }
        }
        t if t.is_integer() => {
            // u64 labels above i64::MAX fail the cast with an error, never wrap.
            let ints = cast(labels, &DataType::Int64)?;
            let ints = ints.as_primitive::<Int64Type>();
            if ints.null_count() != labels.null_count() {
                return exec_err!("label value out of the 64-bit signed range");
            }
            for (row, value) in ints.iter().enumerate() {
                each(row, value.map(ClassValue::Int));
            }
        }
        other => return plan_err!("unsupported label type {other}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray, UInt64Array};
    use std::sync::Arc;

    fn classes(array: &ArrayRef) -> Result<Vec<Option<ClassValue>>> {
        let mut out = Vec::new();
        for_each_class(array, |_, c| out.push(c))?;
        Ok(out)
    }

    #[test]
    fn integer_and_string_labels_with_nulls() -> Result<()> {
        assert_eq!(
            classes(&(Arc::new(Int32Array::from(vec![Some(1), None, Some(0)])) as ArrayRef))?,
            vec![Some(ClassValue::Int(1)), None, Some(ClassValue::Int(0))]
        );
        assert_eq!(
            classes(&(Arc::new(StringArray::from(vec![Some("fault"), None])) as ArrayRef))?,
            vec![Some(ClassValue::Str("fault".into())), None]
        );
        Ok(())
    }

    #[test]
    fn huge_unsigned_labels_are_an_error_not_a_wrap() {
        let labels: ArrayRef = Arc::new(UInt64Array::from(vec![u64::MAX]));
        assert!(classes(&labels).is_err());
    }

    #[test]
    fn float_labels_are_refused_at_planning() {
        assert!(check_label_type("y", &DataType::Float64).is_err());
        assert!(check_label_type("y", &DataType::UInt8).is_ok());
    }
}
