//! Class values as the functions see them, and the dictionary that numbers
//! them ([`ClassDictionary`], shared with the operators).
//!
//! Labels and predictions are integers (any width, and booleans as 0/1),
//! coerced to Int64, or strings, coerced to Utf8. Every accumulator keeps a
//! [`ColumnClasses`] that gives each distinct class a small dense number, so
//! counting is an array increment, not a hash of the value.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
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

/// Distinct classes numbered in order of first appearance (0, 1, ...), with
/// a lookup: the one class dictionary of Equipoise. The functions here key
/// it by `i64` or `String`; the operators by their `ClassValue`.
#[derive(Debug, Clone)]
pub struct ClassDictionary<K> {
    values: Vec<K>,
    lookup: HashMap<K, usize>,
}

impl<K> Default for ClassDictionary<K> {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            lookup: HashMap::new(),
        }
    }
}

/// Two dictionaries are equal when they number the same classes the same
/// way (the lookup follows from the values).
impl<K: Eq + Hash> PartialEq for ClassDictionary<K> {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}

impl<K: Clone + Eq + Hash> ClassDictionary<K> {
    /// The slot of `class`, numbering it if it is new.
    pub fn slot(&mut self, class: K) -> usize {
        match self.get(&class) {
            Some(slot) => slot,
            None => self.insert(class),
        }
    }

    /// The slot of a borrowed class, numbering an owned copy if it is new
    /// (a known class costs no allocation).
    pub fn slot_of<Q>(&mut self, class: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        match self.get(class) {
            Some(slot) => slot,
            None => self.insert(class.to_owned()),
        }
    }

    /// The slot of `class`, if it has one.
    pub fn get<Q>(&self, class: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // A label column has few classes: comparing beats hashing once per
        // row.
        if self.values.len() <= LINEAR_SEARCH_MAX {
            self.values.iter().position(|v| v.borrow() == class)
        } else {
            self.lookup.get(class).copied()
        }
    }

    fn insert(&mut self, class: K) -> usize {
        let slot = self.values.len();
        self.values.push(class.clone());
        self.lookup.insert(class, slot);
        slot
    }

    /// The classes, by slot.
    pub fn values(&self) -> &[K] {
        &self.values
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Capacity of the values and of the lookup, for memory accounting.
    pub fn capacities(&self) -> (usize, usize) {
        (self.values.capacity(), self.lookup.capacity())
    }
}

impl<K: Clone + Eq + Hash + Ord> ClassDictionary<K> {
    /// `slots` sorted by their classes' values.
    pub fn sort<S: Copy + TryInto<usize>>(&self, slots: &mut [S]) {
        let value = |s: S| s.try_into().ok().and_then(|i: usize| self.values.get(i));
        slots.sort_unstable_by(|a, b| value(*a).cmp(&value(*b)));
    }

    /// Rank of each slot's class among all classes by value: the class
    /// order that does not depend on arrival.
    pub fn ranks(&self) -> Vec<u32> {
        let mut by_value: Vec<usize> = (0..self.values.len()).collect();
        by_value.sort_by(|&a, &b| self.values[a].cmp(&self.values[b]));
        let mut rank_of = vec![0u32; self.values.len()];
        for (rank, &slot) in by_value.iter().enumerate() {
            rank_of[slot] = rank as u32;
        }
        rank_of
    }
}

/// Rows per class slot (of a [`ClassDictionary`]): the one class tally of
/// Equipoise, retracting for sliding windows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassCounts(Vec<u64>);

impl ClassCounts {
    /// Count `n` more rows of `slot`.
    pub fn add(&mut self, slot: usize, n: u64) {
        if slot >= self.0.len() {
            self.0.resize(slot + 1, 0);
        }
        self.0[slot] += n;
    }

    /// Take back one row of `slot`.
    pub fn remove(&mut self, slot: usize) -> Result<()> {
        match self.0.get_mut(slot) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Ok(())
            }
            _ => internal_err!("retracted a row that was never added"),
        }
    }

    /// Rows of `slot` (0 for a slot never counted).
    pub fn get(&self, slot: usize) -> u64 {
        self.0.get(slot).copied().unwrap_or(0)
    }

    /// Rows of every slot.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// (slot, rows) of the slots with rows, in slot order.
    pub fn nonzero(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(c, n)| (c, *n))
    }

    /// Rows per slot, from slot 0.
    pub fn as_slice(&self) -> &[u64] {
        &self.0
    }

    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

/// The distinct classes seen so far, numbered in order of appearance.
#[derive(Debug, Clone)]
pub(crate) enum ColumnClasses {
    Int(ClassDictionary<i64>),
    Str(ClassDictionary<String>),
}

impl ColumnClasses {
    pub(crate) fn new(class_type: &DataType) -> Result<Self> {
        match class_type {
            DataType::Int64 => Ok(Self::Int(ClassDictionary::default())),
            DataType::Utf8 => Ok(Self::Str(ClassDictionary::default())),
            other => internal_err!("class type {other} was not coerced"),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Int(classes) => classes.len(),
            Self::Str(classes) => classes.len(),
        }
    }

    fn int_index(classes: &mut ClassDictionary<i64>, v: i64) -> u32 {
        classes.slot(v) as u32
    }

    /// Append the class number of every row of `array` to `out`
    /// ([`NULL_CLASS`] for NULL).
    pub(crate) fn index_rows(&mut self, array: &ArrayRef, out: &mut Vec<u32>) -> Result<()> {
        out.clear();
        out.reserve(array.len());
        match self {
            Self::Int(classes) => {
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
                            _ => Self::int_index(classes, v),
                        };
                        last = Some((v, i));
                        out.push(i);
                    }
                } else {
                    for v in ints.iter() {
                        out.push(v.map_or(NULL_CLASS, |v| Self::int_index(classes, v)));
                    }
                }
            }
            Self::Str(classes) => {
                let strings = array.as_string_opt::<i32>().ok_or_else(|| {
                    datafusion::common::DataFusionError::Internal(format!(
                        "expected Utf8 classes, got {}",
                        array.data_type()
                    ))
                })?;
                for v in strings.iter() {
                    out.push(v.map_or(NULL_CLASS, |s| classes.slot_of(s) as u32));
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
        let Self::Int(classes) = self else {
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
            table[v as usize] = Self::int_index(classes, v as i64);
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

    /// `classes` sorted by value, as scikit-learn orders labels.
    pub(crate) fn sort(&self, classes: &mut [u32]) {
        match self {
            Self::Int(dictionary) => dictionary.sort(classes),
            Self::Str(dictionary) => dictionary.sort(classes),
        }
    }

    /// The values of `classes`, as an array of the class type.
    pub(crate) fn values_of(&self, classes: &[u32]) -> ArrayRef {
        match self {
            Self::Int(dictionary) => Arc::new(Int64Array::from_iter_values(
                classes.iter().map(|i| dictionary.values()[*i as usize]),
            )),
            Self::Str(dictionary) => Arc::new(StringArray::from_iter_values(
                classes
                    .iter()
                    .map(|i| dictionary.values()[*i as usize].as_str()),
            )),
        }
    }

    pub(crate) fn size(&self) -> usize {
        match self {
            Self::Int(dictionary) => {
                let (values, lookup) = dictionary.capacities();
                values * 8 + lookup * 16
            }
            Self::Str(dictionary) => {
                // Each class is held twice (by slot and as a lookup key).
                let (_, lookup) = dictionary.capacities();
                dictionary
                    .values()
                    .iter()
                    .map(|s| 2 * s.capacity() + 24)
                    .sum::<usize>()
                    + lookup * 32
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
        let mut index = ColumnClasses::new(&DataType::Int64)?;
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
