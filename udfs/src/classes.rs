//! Class values as the functions see them, and the dictionary that numbers
//! them.
//!
//! Labels and predictions are integers (any width, and booleans as 0/1),
//! coerced to Int64, or strings, coerced to Utf8. Every accumulator keeps a
//! [`ClassIndex`] that gives each distinct class a small dense number, so
//! counting is an array increment, not a hash of the value.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err, internal_err, plan_err};

/// Row index of a NULL class.
pub(crate) const NULL_CLASS: u32 = u32::MAX;

/// Linear search beats hashing for the few classes labels usually have.
const LINEAR_SEARCH_MAX: usize = 8;

/// The one type every class argument of a call is coerced to.
pub(crate) fn class_type(function: &str, arg_types: &[DataType]) -> Result<DataType> {
    let is_int = |t: &DataType| t.is_integer() || *t == DataType::Boolean || *t == DataType::Null;
    let is_str =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    if arg_types.iter().all(is_int) {
        Ok(DataType::Int64)
    } else if arg_types.iter().all(|t| is_str(t) || *t == DataType::Null) {
        Ok(DataType::Utf8)
    } else {
        let types: Vec<String> = arg_types.iter().map(ToString::to_string).collect();
        plan_err!(
            "{function}: class arguments must all be integers (or booleans) or all strings, \
             got {}",
            types.join(", ")
        )
    }
}

/// The distinct classes seen so far, numbered in order of appearance.
#[derive(Debug, Clone)]
pub(crate) enum ClassIndex {
    Int {
        values: Vec<i64>,
        lookup: HashMap<i64, u32>,
    },
    Str {
        values: Vec<String>,
        lookup: HashMap<String, u32>,
    },
}

impl ClassIndex {
    pub(crate) fn new(class_type: &DataType) -> Result<Self> {
        match class_type {
            DataType::Int64 => Ok(Self::Int {
                values: Vec::new(),
                lookup: HashMap::new(),
            }),
            DataType::Utf8 => Ok(Self::Str {
                values: Vec::new(),
                lookup: HashMap::new(),
            }),
            other => internal_err!("class type {other} was not coerced"),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Int { values, .. } => values.len(),
            Self::Str { values, .. } => values.len(),
        }
    }

    fn int_index(values: &mut Vec<i64>, lookup: &mut HashMap<i64, u32>, v: i64) -> u32 {
        if values.len() <= LINEAR_SEARCH_MAX {
            if let Some(i) = values.iter().position(|x| *x == v) {
                return i as u32;
            }
        } else if let Some(i) = lookup.get(&v) {
            return *i;
        }
        let i = values.len() as u32;
        values.push(v);
        lookup.insert(v, i);
        i
    }

    /// Append the class number of every row of `array` to `out`
    /// ([`NULL_CLASS`] for NULL).
    pub(crate) fn index_rows(&mut self, array: &ArrayRef, out: &mut Vec<u32>) -> Result<()> {
        out.clear();
        out.reserve(array.len());
        match self {
            Self::Int { values, lookup } => {
                let ints = array.as_primitive_opt::<Int64Type>().ok_or_else(|| {
                    datafusion::common::DataFusionError::Internal(format!(
                        "expected Int64 classes, got {}",
                        array.data_type()
                    ))
                })?;
                if ints.null_count() == 0 {
                    // Runs of one class are common (sorted data, rare faults):
                    // remember the last hit.
                    let mut last: Option<(i64, u32)> = None;
                    for &v in ints.values() {
                        let i = match last {
                            Some((lv, li)) if lv == v => li,
                            _ => Self::int_index(values, lookup, v),
                        };
                        last = Some((v, i));
                        out.push(i);
                    }
                } else {
                    for v in ints.iter() {
                        out.push(v.map_or(NULL_CLASS, |v| Self::int_index(values, lookup, v)));
                    }
                }
            }
            Self::Str { values, lookup } => {
                let strings = array.as_string_opt::<i32>().ok_or_else(|| {
                    datafusion::common::DataFusionError::Internal(format!(
                        "expected Utf8 classes, got {}",
                        array.data_type()
                    ))
                })?;
                for v in strings.iter() {
                    out.push(match v {
                        None => NULL_CLASS,
                        Some(s) => match lookup.get(s) {
                            Some(i) => *i,
                            None => {
                                let i = values.len() as u32;
                                values.push(s.to_string());
                                lookup.insert(s.to_string(), i);
                                i
                            }
                        },
                    });
                }
            }
        }
        if self.len() >= NULL_CLASS as usize {
            return exec_err!("more than {} distinct classes", NULL_CLASS - 1);
        }
        Ok(())
    }

    /// For Int64 columns without NULLs whose values all lie in `0..64` (the
    /// usual 0/1 or small-integer labels): a direct table from value to class
    /// number. Every value up to the next power of two above the largest is
    /// registered, present or not: a class without rows never shows in a
    /// result (results keep only classes with counts), and this keeps the
    /// check to one OR over the data, which vectorises.
    pub(crate) fn small_int_table(&mut self, columns: [&ArrayRef; 2]) -> Option<[u32; 64]> {
        let Self::Int { values, lookup } = self else {
            return None;
        };
        let mut bits = 0u64;
        for column in columns {
            let ints = column.as_primitive_opt::<Int64Type>()?;
            if ints.null_count() > 0 {
                return None;
            }
            // Negative values set the top bit, so they fail the bound too.
            bits |= ints.values().iter().fold(0u64, |acc, v| acc | *v as u64);
        }
        if bits >= 64 {
            return None;
        }
        let largest = (1u64 << (64 - bits.leading_zeros())) - 1;
        let mut table = [NULL_CLASS; 64];
        for v in 0..=largest.max(1) {
            table[v as usize] = Self::int_index(values, lookup, v as i64);
        }
        Some(table)
    }

    /// The number of `scalar`'s class, adding it if new; `None` for NULL.
    pub(crate) fn index_scalar(&mut self, scalar: &ScalarValue) -> Result<Option<u32>> {
        let array = scalar.to_array_of_size(1)?;
        let mut out = Vec::with_capacity(1);
        self.index_rows(&array, &mut out)?;
        Ok(out.first().copied().filter(|i| *i != NULL_CLASS))
    }

    fn compare(&self, a: u32, b: u32) -> Ordering {
        match self {
            Self::Int { values, .. } => values[a as usize].cmp(&values[b as usize]),
            Self::Str { values, .. } => values[a as usize].cmp(&values[b as usize]),
        }
    }

    /// `classes` sorted by value, as scikit-learn orders labels.
    pub(crate) fn sort(&self, classes: &mut [u32]) {
        classes.sort_unstable_by(|a, b| self.compare(*a, *b));
    }

    /// The values of `classes`, as an array of the class type.
    pub(crate) fn values_of(&self, classes: &[u32]) -> ArrayRef {
        match self {
            Self::Int { values, .. } => Arc::new(Int64Array::from_iter_values(
                classes.iter().map(|i| values[*i as usize]),
            )),
            Self::Str { values, .. } => Arc::new(StringArray::from_iter_values(
                classes.iter().map(|i| values[*i as usize].as_str()),
            )),
        }
    }

    pub(crate) fn size(&self) -> usize {
        match self {
            Self::Int { values, lookup } => values.capacity() * 8 + lookup.capacity() * 16,
            Self::Str { values, lookup } => {
                values.iter().map(|s| s.capacity() + 24).sum::<usize>()
                    + lookup.keys().map(|s| s.capacity() + 32).sum::<usize>()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coercion_keeps_integers_and_strings_apart() -> Result<()> {
        assert_eq!(
            class_type("f", &[DataType::Int32, DataType::UInt8, DataType::Boolean])?,
            DataType::Int64
        );
        assert_eq!(
            class_type("f", &[DataType::Utf8View, DataType::LargeUtf8])?,
            DataType::Utf8
        );
        let mixed = class_type("gmean", &[DataType::Int64, DataType::Utf8]);
        assert!(mixed.is_err_and(|e| e.to_string().contains("gmean: class arguments")));
        assert!(class_type("f", &[DataType::Float64, DataType::Float64]).is_err());
        Ok(())
    }

    #[test]
    fn classes_are_numbered_in_order_of_appearance_and_sorted_by_value() -> Result<()> {
        let mut index = ClassIndex::new(&DataType::Int64)?;
        let mut rows = Vec::new();
        let array: ArrayRef = Arc::new(Int64Array::from(vec![Some(5), None, Some(-1), Some(5)]));
        index.index_rows(&array, &mut rows)?;
        assert_eq!(rows, vec![0, NULL_CLASS, 1, 0]);
        // Past the linear-search size the hash lookup must agree.
        let many: ArrayRef = Arc::new(Int64Array::from_iter_values((0..40).chain(0..40)));
        index.index_rows(&many, &mut rows)?;
        assert_eq!(rows[..40], rows[40..]);
        let mut all: Vec<u32> = (0..index.len() as u32).collect();
        index.sort(&mut all);
        let sorted = index.values_of(&all);
        let sorted = sorted.as_primitive::<Int64Type>();
        assert_eq!(sorted.value(0), -1);
        assert!(sorted.values().windows(2).all(|w| w[0] < w[1]));
        Ok(())
    }
}
