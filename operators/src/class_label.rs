//! Class labels as operators see them: integer, boolean or string columns,
//! turned into one comparable [`ClassValue`] per row.

use std::fmt;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
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
            for (row, value) in integer_labels(labels)?.iter().enumerate() {
                each(row, value.map(ClassValue::Int));
            }
        }
        other => return plan_err!("unsupported label type {other}"),
    }
    Ok(())
}

/// Each row's class as the slot `slot_of` gives it, `None` for a NULL
/// label. `slot_of` is called once per run of equal labels, not per row: a
/// label column is long runs of few values, and a string label is then
/// compared where [`for_each_class`] would copy it.
pub fn class_slots(
    labels: &ArrayRef,
    mut slot_of: impl FnMut(ClassValue) -> usize,
) -> Result<Vec<Option<usize>>> {
    let mut slots = Vec::with_capacity(labels.len());
    match labels.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let strings = cast(labels, &DataType::Utf8)?;
            let mut last: Option<(&str, usize)> = None;
            for value in strings.as_string::<i32>().iter() {
                slots.push(value.map(|v| match last {
                    Some((label, slot)) if label == v => slot,
                    _ => {
                        let slot = slot_of(ClassValue::Str(v.to_string()));
                        last = Some((v, slot));
                        slot
                    }
                }));
            }
        }
        t if t.is_integer() => {
            let mut last: Option<(i64, usize)> = None;
            for value in integer_labels(labels)?.iter() {
                slots.push(value.map(|v| match last {
                    Some((label, slot)) if label == v => slot,
                    _ => {
                        let slot = slot_of(ClassValue::Int(v));
                        last = Some((v, slot));
                        slot
                    }
                }));
            }
        }
        _ => for_each_class(labels, |_, class| slots.push(class.map(&mut slot_of)))?,
    }
    Ok(slots)
}

/// An integer label column as `i64`; u64 labels above `i64::MAX` fail the
/// cast with an error, never wrap.
fn integer_labels(labels: &ArrayRef) -> Result<Int64Array> {
    let ints = cast(labels, &DataType::Int64)?;
    let ints = ints.as_primitive::<Int64Type>().clone();
    if ints.null_count() != labels.null_count() {
        return exec_err!("label value out of the 64-bit signed range");
    }
    Ok(ints)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{BooleanArray, Int32Array, StringArray, UInt64Array};
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
        assert!(class_slots(&labels, |_| 0).is_err());
    }

    /// `class`'s slot in order of first appearance, as the operators' class
    /// indexes give them.
    fn first_seen_slot(seen: &mut Vec<ClassValue>, class: ClassValue) -> usize {
        seen.iter().position(|c| *c == class).unwrap_or_else(|| {
            seen.push(class);
            seen.len() - 1
        })
    }

    /// Slots in order of first appearance; every call recorded.
    fn slots_and_calls(labels: &ArrayRef) -> Result<(Vec<Option<usize>>, Vec<ClassValue>)> {
        let mut seen: Vec<ClassValue> = Vec::new();
        let mut calls = Vec::new();
        let slots = class_slots(labels, |class| {
            calls.push(class.clone());
            first_seen_slot(&mut seen, class)
        })?;
        Ok((slots, calls))
    }

    #[test]
    fn class_slots_ask_once_per_run_of_equal_labels() -> Result<()> {
        let ints: ArrayRef = Arc::new(Int32Array::from(vec![
            Some(0),
            Some(0),
            None,
            Some(0),
            Some(1),
            Some(1),
            Some(0),
        ]));
        let (slots, calls) = slots_and_calls(&ints)?;
        assert_eq!(
            slots,
            vec![Some(0), Some(0), None, Some(0), Some(1), Some(1), Some(0)]
        );
        // A NULL does not end a run; a change of label does.
        assert_eq!(
            calls,
            vec![ClassValue::Int(0), ClassValue::Int(1), ClassValue::Int(0)]
        );

        let strings: ArrayRef = Arc::new(StringArray::from(vec![
            Some("clean"),
            Some("clean"),
            Some("defect"),
            None,
            Some("clean"),
        ]));
        let (slots, calls) = slots_and_calls(&strings)?;
        assert_eq!(slots, vec![Some(0), Some(0), Some(1), None, Some(0)]);
        assert_eq!(calls.len(), 3);

        // Every label type gives the slots for_each_class's values give.
        let booleans: ArrayRef = Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)]));
        for labels in [ints, strings, booleans] {
            let (slots, _) = slots_and_calls(&labels)?;
            let mut seen: Vec<ClassValue> = Vec::new();
            let expected: Vec<Option<usize>> = classes(&labels)?
                .into_iter()
                .map(|class| class.map(|class| first_seen_slot(&mut seen, class)))
                .collect();
            assert_eq!(slots, expected, "{:?}", labels.data_type());
        }
        Ok(())
    }

    #[test]
    fn float_labels_are_refused_at_planning() {
        assert!(check_label_type("y", &DataType::Float64).is_err());
        assert!(check_label_type("y", &DataType::UInt8).is_ok());
    }
}
