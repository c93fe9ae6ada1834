//! The machinery shared by every confusion-based aggregate: a confusion
//! matrix that grows with the classes it meets, a row [`Accumulator`] and a
//! [`GroupsAccumulator`] over it (both with retraction, for sliding windows),
//! its partial-aggregation state, and [`ConfusionMetricUdf`], which turns a
//! [`ConfusionMetric`] (a name and a formula) into a DataFusion aggregate.
//!
//! Semantics shared by all of them:
//! - rows where the label or the prediction is NULL are ignored;
//! - the classes are the union of values seen in either column, sorted by
//!   value (as scikit-learn's `unique_labels`); a class whose counts all
//!   dropped to zero (a sliding window moved past it) is no longer seen;
//! - no row at all gives NULL.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, UInt64Array};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type, UInt64Type};
use datafusion::common::{Result, ScalarValue, exec_err, internal_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator, Signature,
};
use datafusion::physical_expr::expressions::Literal;

use crate::classes::{ColumnClasses, NULL_CLASS, class_type};
use crate::generic_udf::{
    generic_udf_boilerplate, list_state, merge_groups, no_convert_to_state, row_selected,
};

/// Above this many classes the matrix is stored sparsely.
const DENSE_MAX_CLASSES: usize = 64;

/// A confusion-based metric: its SQL name and its formula.
pub trait ConfusionMetric: fmt::Debug + Send + Sync + 'static {
    const NAME: &'static str;
    /// Whether the call takes a third argument naming one class.
    const PER_CLASS: bool = false;
    fn documentation() -> &'static Documentation;
    /// The metric of `matrix`; `class` is the position of the named class
    /// in `matrix.classes` for per-class metrics (`None` when that class was
    /// not seen). `None` gives NULL.
    fn evaluate(matrix: &Confusion, class: Option<usize>) -> Option<f64>;
}

/// A confusion matrix over the classes seen, sorted by value: `count(t, p)`
/// rows had true class `t` and predicted class `p`.
#[derive(Debug, Clone, PartialEq)]
pub struct Confusion {
    n: usize,
    counts: Vec<f64>,
}

impl Confusion {
    pub fn classes(&self) -> usize {
        self.n
    }

    pub fn count(&self, true_class: usize, predicted: usize) -> f64 {
        self.counts[true_class * self.n + predicted]
    }

    /// Rows whose true class is `c` (row sum).
    pub fn true_count(&self, c: usize) -> f64 {
        (0..self.n).map(|p| self.count(c, p)).sum()
    }

    /// Rows predicted as `c` (column sum).
    pub fn predicted_count(&self, c: usize) -> f64 {
        (0..self.n).map(|t| self.count(t, c)).sum()
    }

    pub fn total(&self) -> f64 {
        self.counts.iter().sum()
    }
}

/// Counts of (true, predicted) class pairs by class number: the one
/// confusion matrix of Equipoise (the aggregates here, the operators'
/// prequential scores, a job's summary). Dense up to 64 classes, sparse
/// beyond; rows can be taken back, for sliding windows.
#[derive(Debug, Clone, Default)]
pub struct ConfusionCells {
    store: CellStore,
}

#[derive(Debug, Clone)]
enum CellStore {
    Dense { dim: usize, counts: Vec<u64> },
    Sparse(std::collections::HashMap<(u32, u32), u64>),
}

impl Default for CellStore {
    fn default() -> Self {
        Self::Dense {
            dim: 0,
            counts: Vec::new(),
        }
    }
}

impl ConfusionCells {
    /// Make room for class numbers below `classes`.
    pub fn fit(&mut self, classes: usize) {
        if let CellStore::Dense { dim, counts } = &mut self.store {
            if classes <= *dim {
                return;
            }
            if classes > DENSE_MAX_CLASSES {
                let mut sparse = std::collections::HashMap::new();
                for (i, &c) in counts.iter().enumerate() {
                    if c > 0 {
                        sparse.insert(((i / *dim) as u32, (i % *dim) as u32), c);
                    }
                }
                self.store = CellStore::Sparse(sparse);
                return;
            }
            let mut grown = vec![0u64; classes * classes];
            for t in 0..*dim {
                grown[t * classes..t * classes + *dim]
                    .copy_from_slice(&counts[t * *dim..(t + 1) * *dim]);
            }
            *dim = classes;
            *counts = grown;
        }
    }

    /// Count `n` rows of true class `t` predicted as `p` (after [`Self::fit`]
    /// made room for both).
    pub fn add(&mut self, t: u32, p: u32, n: u64) {
        match &mut self.store {
            CellStore::Dense { dim, counts } => counts[t as usize * *dim + p as usize] += n,
            CellStore::Sparse(map) => *map.entry((t, p)).or_insert(0) += n,
        }
    }

    /// Take back one row of true class `t` predicted as `p`.
    pub fn remove(&mut self, t: u32, p: u32) -> Result<()> {
        let cell = match &mut self.store {
            CellStore::Dense { dim, counts } => counts.get_mut(t as usize * *dim + p as usize),
            CellStore::Sparse(map) => map.get_mut(&(t, p)),
        };
        match cell {
            Some(c) if *c > 0 => {
                *c -= 1;
                Ok(())
            }
            _ => internal_err!("retracted a row that was never added"),
        }
    }

    /// Rows of true class `t` predicted as `p`.
    pub fn count(&self, t: u32, p: u32) -> u64 {
        match &self.store {
            CellStore::Dense { dim, counts } => {
                if (t as usize) < *dim && (p as usize) < *dim {
                    counts[t as usize * *dim + p as usize]
                } else {
                    0
                }
            }
            CellStore::Sparse(map) => map.get(&(t, p)).copied().unwrap_or(0),
        }
    }

    /// Rows whose true class is `c` (row sum).
    pub fn true_count(&self, c: u32) -> u64 {
        match &self.store {
            CellStore::Dense { dim, counts } => {
                let c = c as usize;
                if c < *dim {
                    counts[c * *dim..(c + 1) * *dim].iter().sum()
                } else {
                    0
                }
            }
            CellStore::Sparse(map) => map
                .iter()
                .filter(|((t, _), _)| *t == c)
                .map(|(_, n)| n)
                .sum(),
        }
    }

    /// Rows predicted as `c` (column sum).
    pub fn predicted_count(&self, c: u32) -> u64 {
        match &self.store {
            CellStore::Dense { dim, counts } => {
                let c = c as usize;
                if c < *dim {
                    (0..*dim).map(|t| counts[t * *dim + c]).sum()
                } else {
                    0
                }
            }
            CellStore::Sparse(map) => map
                .iter()
                .filter(|((_, p), _)| *p == c)
                .map(|(_, n)| n)
                .sum(),
        }
    }

    /// The dense counts and their row length, while the matrix is dense.
    fn dense_mut(&mut self) -> Option<(usize, &mut Vec<u64>)> {
        match &mut self.store {
            CellStore::Dense { dim, counts } => Some((*dim, counts)),
            CellStore::Sparse(_) => None,
        }
    }

    fn nonzero(&self) -> Vec<(u32, u32, u64)> {
        match &self.store {
            CellStore::Dense { dim, counts } => counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| ((i / *dim) as u32, (i % *dim) as u32, *c))
                .collect(),
            CellStore::Sparse(map) => map
                .iter()
                .filter(|(_, c)| **c > 0)
                .map(|((t, p), c)| (*t, *p, *c))
                .collect(),
        }
    }

    fn size(&self) -> usize {
        match &self.store {
            CellStore::Dense { counts, .. } => counts.capacity() * 8,
            CellStore::Sparse(map) => map.capacity() * 24,
        }
    }

    /// The matrix over the classes seen, sorted by value.
    fn confusion(&self, index: &ColumnClasses) -> Option<(Confusion, Vec<u32>)> {
        let cells = self.nonzero();
        if cells.is_empty() {
            return None;
        }
        let mut seen = vec![false; index.len()];
        for (t, p, _) in &cells {
            seen[*t as usize] = true;
            seen[*p as usize] = true;
        }
        let mut classes: Vec<u32> = (0..index.len() as u32)
            .filter(|c| seen[*c as usize])
            .collect();
        index.sort(&mut classes);
        let mut position = vec![usize::MAX; index.len()];
        for (i, c) in classes.iter().enumerate() {
            position[*c as usize] = i;
        }
        let n = classes.len();
        let mut counts = vec![0.0; n * n];
        for (t, p, c) in cells {
            counts[position[t as usize] * n + position[p as usize]] += c as f64;
        }
        Some((Confusion { n, counts }, classes))
    }
}

/// Rows of `label` and `prediction` as class-number pairs, NULLs dropped.
fn pairs(
    index: &mut ColumnClasses,
    label: &ArrayRef,
    prediction: &ArrayRef,
    scratch: &mut (Vec<u32>, Vec<u32>),
) -> Result<()> {
    index.index_rows(label, &mut scratch.0)?;
    index.index_rows(prediction, &mut scratch.1)?;
    Ok(())
}

fn evaluate_metric<M: ConfusionMetric>(
    cells: &ConfusionCells,
    index: &ColumnClasses,
    class: Option<u32>,
) -> Option<f64> {
    let (matrix, classes) = cells.confusion(index)?;
    let position = class.and_then(|c| classes.iter().position(|x| *x == c));
    M::evaluate(&matrix, position)
}

/// Partial state: three lists per group (true class, predicted class,
/// count), one entry per non-zero cell.
fn state_fields(name: &str, class_type: &DataType) -> Vec<FieldRef> {
    let list = |t: &DataType| DataType::List(Arc::new(Field::new_list_field(t.clone(), true)));
    vec![
        Arc::new(Field::new(
            format_state_name(name, "labels"),
            list(class_type),
            true,
        )),
        Arc::new(Field::new(
            format_state_name(name, "predictions"),
            list(class_type),
            true,
        )),
        Arc::new(Field::new(
            format_state_name(name, "counts"),
            list(&DataType::UInt64),
            true,
        )),
    ]
}

/// Build the three state lists from one cell list per group.
fn state_arrays(index: &ColumnClasses, groups: &[Vec<(u32, u32, u64)>]) -> Result<Vec<ArrayRef>> {
    let lengths = groups.iter().map(Vec::len);
    let offsets = OffsetBuffer::from_lengths(lengths);
    let flat = || groups.iter().flatten();
    let labels: Vec<u32> = flat().map(|(t, _, _)| *t).collect();
    let predictions: Vec<u32> = flat().map(|(_, p, _)| *p).collect();
    let counts = UInt64Array::from_iter_values(flat().map(|(_, _, c)| *c));
    list_state(
        &offsets,
        vec![
            index.values_of(&labels),
            index.values_of(&predictions),
            Arc::new(counts),
        ],
    )
}

/// Fold state row `row` of `states` into `cells`.
fn merge_state_row(
    index: &mut ColumnClasses,
    cells: &mut ConfusionCells,
    states: &[ArrayRef],
    row: usize,
    scratch: &mut (Vec<u32>, Vec<u32>),
) -> Result<()> {
    let [labels, predictions, counts] = states else {
        return internal_err!("confusion state has {} columns, expected 3", states.len());
    };
    let (labels, predictions, counts) = (
        labels.as_list::<i32>(),
        predictions.as_list::<i32>(),
        counts.as_list::<i32>(),
    );
    if labels.is_null(row) {
        return Ok(());
    }
    pairs(index, &labels.value(row), &predictions.value(row), scratch)?;
    cells.fit(index.len());
    let counts = counts.value(row);
    let counts = counts.as_primitive::<UInt64Type>();
    for ((t, p), c) in scratch.0.iter().zip(&scratch.1).zip(counts.values()) {
        cells.add(*t, *p, *c);
    }
    Ok(())
}

/// One confusion matrix with its own class dictionary.
#[derive(Debug)]
pub(crate) struct ConfusionCounts {
    index: ColumnClasses,
    cells: ConfusionCells,
    scratch: (Vec<u32>, Vec<u32>),
}

impl ConfusionCounts {
    pub(crate) fn new(class_type: &DataType) -> Result<Self> {
        Ok(Self {
            index: ColumnClasses::new(class_type)?,
            cells: ConfusionCells::default(),
            scratch: Default::default(),
        })
    }

    /// Count the (label, prediction) rows where neither is NULL.
    pub(crate) fn update(&mut self, label: &ArrayRef, prediction: &ArrayRef) -> Result<()> {
        if let Some(table) = self.index.small_int_table([label, prediction]) {
            self.cells.fit(self.index.len());
            if let Some((dim, counts)) = self.cells.dense_mut()
                && dim <= 8
            {
                let labels = label.as_primitive::<Int64Type>().values();
                let predictions = prediction.as_primitive::<Int64Type>().values();
                if table[2] == NULL_CLASS {
                    count_binary(&table, dim, labels, predictions, counts);
                    return Ok(());
                }
                count_small(&table, dim, labels, predictions, counts);
                return Ok(());
            }
        }
        pairs(&mut self.index, label, prediction, &mut self.scratch)?;
        self.cells.fit(self.index.len());
        for (t, p) in self.scratch.0.iter().zip(&self.scratch.1) {
            if *t != NULL_CLASS && *p != NULL_CLASS {
                self.cells.add(*t, *p, 1);
            }
        }
        Ok(())
    }

    /// The matrix over the classes seen and their values, sorted by value.
    pub(crate) fn confusion(&self) -> Option<(Confusion, ArrayRef)> {
        let (matrix, classes) = self.cells.confusion(&self.index)?;
        Some((matrix, self.index.values_of(&classes)))
    }
}

/// 0/1 labels, the common case: three sums that vectorise give the four
/// cells (n11 = sum(l & p), n1. = sum(l), n.1 = sum(p)).
fn count_binary(
    table: &[u32; 64],
    dim: usize,
    labels: &[i64],
    predictions: &[i64],
    counts: &mut [u64],
) {
    let (mut ones, mut predicted_ones, mut both) = (0i64, 0i64, 0i64);
    for (l, p) in labels.iter().zip(predictions) {
        ones += l;
        predicted_ones += p;
        both += l & p;
    }
    let n = labels.len() as i64;
    let cells = [
        (0, 0, n - ones - predicted_ones + both),
        (0, 1, predicted_ones - both),
        (1, 0, ones - both),
        (1, 1, both),
    ];
    for (l, p, count) in cells {
        // A value outside the batch's range has no class but also no rows.
        if count > 0 {
            let (t, q) = (table[l] as usize, table[p] as usize);
            counts[t * dim + q] += count as u64;
        }
    }
}

/// The hot loop for small integer labels: values index the class table
/// directly (they were checked to lie in `0..64`), and four interleaved
/// partial counts keep consecutive rows from waiting on the same counter.
fn count_small(
    table: &[u32; 64],
    dim: usize,
    labels: &[i64],
    predictions: &[i64],
    counts: &mut [u64],
) {
    let mut partial = [[0u64; 64]; 4];
    for (i, (l, p)) in labels.iter().zip(predictions).enumerate() {
        let t = table[(*l as usize) & 63] as usize;
        let q = table[(*p as usize) & 63] as usize;
        partial[i & 3][(t * dim + q) & 63] += 1;
    }
    for part in partial {
        for (count, n) in counts.iter_mut().zip(part) {
            *count += n;
        }
    }
}

/// The row accumulator (plain aggregates and window frames).
#[derive(Debug)]
struct ConfusionAccumulator<M> {
    counts: ConfusionCounts,
    class: Option<u32>,
    metric: PhantomData<M>,
}

impl<M> ConfusionAccumulator<M> {
    fn new(index: ColumnClasses, class: Option<u32>) -> Self {
        Self {
            counts: ConfusionCounts {
                index,
                cells: ConfusionCells::default(),
                scratch: Default::default(),
            },
            class,
            metric: PhantomData,
        }
    }
}

impl<M: ConfusionMetric> Accumulator for ConfusionAccumulator<M> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.counts.update(&values[0], &values[1])
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let c = &mut self.counts;
        pairs(&mut c.index, &values[0], &values[1], &mut c.scratch)?;
        c.cells.fit(c.index.len());
        for (t, p) in c.scratch.0.iter().zip(&c.scratch.1) {
            if *t != NULL_CLASS && *p != NULL_CLASS {
                c.cells.remove(*t, *p)?;
            }
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let c = &mut self.counts;
        for row in 0..states.first().map_or(0, |s| s.len()) {
            merge_state_row(&mut c.index, &mut c.cells, states, row, &mut c.scratch)?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let arrays = state_arrays(&self.counts.index, &[self.counts.cells.nonzero()])?;
        arrays
            .iter()
            .map(|a| ScalarValue::try_from_array(a, 0))
            .collect()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(evaluate_metric::<M>(
            &self.counts.cells,
            &self.counts.index,
            self.class,
        )))
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.counts.index.size() + self.counts.cells.size()
    }
}

/// One matrix per group, one class dictionary for all groups.
#[derive(Debug)]
struct ConfusionGroupsAccumulator<M> {
    index: ColumnClasses,
    groups: Vec<ConfusionCells>,
    class: Option<u32>,
    scratch: (Vec<u32>, Vec<u32>),
    metric: PhantomData<M>,
}

impl<M: ConfusionMetric> GroupsAccumulator for ConfusionGroupsAccumulator<M> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups
            .resize_with(total_num_groups, ConfusionCells::default);
        pairs(&mut self.index, &values[0], &values[1], &mut self.scratch)?;
        let classes = self.index.len();
        for (row, ((t, p), g)) in self
            .scratch
            .0
            .iter()
            .zip(&self.scratch.1)
            .zip(group_indices)
            .enumerate()
        {
            if *t == NULL_CLASS || *p == NULL_CLASS || !row_selected(opt_filter, row) {
                continue;
            }
            let cells = &mut self.groups[*g];
            cells.fit(classes);
            cells.add(*t, *p, 1);
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        let (index, scratch) = (&mut self.index, &mut self.scratch);
        merge_groups(
            &mut self.groups,
            group_indices,
            total_num_groups,
            |cells, row| merge_state_row(index, cells, values, row, scratch),
        )
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = emit_to.take_needed(&mut self.groups);
        Ok(Arc::new(Float64Array::from_iter(groups.iter().map(
            |cells| evaluate_metric::<M>(cells, &self.index, self.class),
        ))))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let groups = emit_to.take_needed(&mut self.groups);
        let cells: Vec<_> = groups.iter().map(ConfusionCells::nonzero).collect();
        state_arrays(&self.index, &cells)
    }

    fn convert_to_state(
        &self,
        _values: &[ArrayRef],
        _opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        no_convert_to_state(M::NAME)
    }

    fn size(&self) -> usize {
        size_of::<Self>()
            + self.index.size()
            + self.groups.iter().map(ConfusionCells::size).sum::<usize>()
            + self.groups.capacity() * size_of::<ConfusionCells>()
    }
}

/// Any [`ConfusionMetric`] as a DataFusion aggregate.
pub struct ConfusionMetricUdf<M> {
    signature: Signature,
    marker: PhantomData<M>,
}

generic_udf_boilerplate!(ConfusionMetricUdf, ConfusionMetric);

impl<M: ConfusionMetric> ConfusionMetricUdf<M> {
    fn expected_args() -> &'static str {
        if M::PER_CLASS {
            "(label, prediction, class)"
        } else {
            "(label, prediction)"
        }
    }

    /// The class named by the third argument, numbered in `index`.
    fn named_class(args: &AccumulatorArgs, index: &mut ColumnClasses) -> Result<Option<u32>> {
        if !M::PER_CLASS {
            return Ok(None);
        }
        let Some(literal) = args.exprs.get(2).and_then(|e| e.downcast_ref::<Literal>()) else {
            return plan_err!(
                "{}: the class argument must be a constant, e.g. {}(label, prediction, 1)",
                M::NAME,
                M::NAME
            );
        };
        let value = literal
            .value()
            .cast_to(&args.expr_fields[0].data_type().clone())?;
        if value.is_null() {
            return plan_err!("{}: the class argument must not be NULL", M::NAME);
        }
        index.index_scalar(&value)
    }

    fn new_index(args: &AccumulatorArgs) -> Result<(ColumnClasses, Option<u32>)> {
        let mut index = ColumnClasses::new(args.expr_fields[0].data_type())?;
        let class = Self::named_class(args, &mut index)?;
        Ok((index, class))
    }
}

impl<M: ConfusionMetric> AggregateUDFImpl for ConfusionMetricUdf<M> {
    fn name(&self) -> &str {
        M::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let arity = if M::PER_CLASS { 3 } else { 2 };
        if arg_types.len() != arity {
            return plan_err!(
                "{} expects {}, got {} argument(s)",
                M::NAME,
                Self::expected_args(),
                arg_types.len()
            );
        }
        let common = class_type(M::NAME, arg_types)?;
        Ok(vec![common; arity])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let Some(field) = args.input_fields.first() else {
            return internal_err!("{} planned without arguments", M::NAME);
        };
        Ok(state_fields(args.name, field.data_type()))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if args.is_distinct {
            return exec_err!("{}(DISTINCT ...) is not supported", M::NAME);
        }
        let (index, class) = Self::new_index(&args)?;
        Ok(Box::new(ConfusionAccumulator::<M>::new(index, class)))
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        !args.is_distinct
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let (index, class) = Self::new_index(&args)?;
        Ok(Box::new(ConfusionGroupsAccumulator::<M> {
            index,
            groups: Vec::new(),
            class,
            scratch: Default::default(),
            metric: PhantomData,
        }))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(M::documentation())
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    pub fn ints(values: &[i64]) -> Vec<Option<i64>> {
        values.iter().copied().map(Some).collect()
    }

    /// Equal within 1e-12 relative (or exactly, for 0).
    pub fn assert_close(actual: Option<f64>, expected: f64) {
        let actual = actual.expect("a value, not NULL");
        let tolerance = 1e-12 * expected.abs().max(f64::MIN_POSITIVE);
        assert!(
            (actual - expected).abs() <= tolerance,
            "{actual} != {expected}"
        );
    }

    /// Run metric `M` over integer pairs with the row accumulator.
    pub fn metric_of<M: ConfusionMetric>(
        labels: &[Option<i64>],
        predictions: &[Option<i64>],
        class: Option<i64>,
    ) -> Result<Option<f64>> {
        let mut index = ColumnClasses::new(&DataType::Int64)?;
        let class = match class {
            Some(c) => index.index_scalar(&ScalarValue::Int64(Some(c)))?,
            None => None,
        };
        let mut acc = ConfusionAccumulator::<M>::new(index, class);
        acc.update_batch(&[
            Arc::new(Int64Array::from(labels.to_vec())),
            Arc::new(Int64Array::from(predictions.to_vec())),
        ])?;
        match acc.evaluate()? {
            ScalarValue::Float64(v) => Ok(v),
            other => internal_err!("unexpected {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    #[derive(Debug)]
    struct Total;
    impl ConfusionMetric for Total {
        const NAME: &'static str = "total";
        fn documentation() -> &'static Documentation {
            unimplemented!("not used in tests")
        }
        fn evaluate(matrix: &Confusion, _: Option<usize>) -> Option<f64> {
            Some(matrix.total() * 1000.0 + matrix.classes() as f64)
        }
    }

    fn ints(v: &[i64]) -> ArrayRef {
        Arc::new(Int64Array::from(v.to_vec()))
    }

    fn accumulator() -> Result<ConfusionAccumulator<Total>> {
        Ok(ConfusionAccumulator {
            counts: ConfusionCounts::new(&DataType::Int64)?,
            class: None,
            metric: PhantomData,
        })
    }

    #[test]
    fn retract_forgets_classes_that_left_the_frame() -> Result<()> {
        let mut acc = accumulator()?;
        acc.update_batch(&[ints(&[0, 1, 2]), ints(&[0, 1, 1])])?;
        assert_eq!(acc.evaluate()?, ScalarValue::Float64(Some(3003.0)));
        acc.retract_batch(&[ints(&[2]), ints(&[1])])?;
        assert_eq!(acc.evaluate()?, ScalarValue::Float64(Some(2002.0)));
        acc.retract_batch(&[ints(&[0, 1]), ints(&[0, 1])])?;
        assert_eq!(acc.evaluate()?, ScalarValue::Float64(None));
        assert!(acc.retract_batch(&[ints(&[0]), ints(&[0])]).is_err());
        Ok(())
    }

    #[test]
    fn state_round_trips_through_merge() -> Result<()> {
        let mut a = accumulator()?;
        a.update_batch(&[ints(&[0, 1, 7]), ints(&[1, 1, 7])])?;
        let mut b = accumulator()?;
        b.update_batch(&[ints(&[7, 7]), ints(&[0, 7])])?;
        let state: Vec<ArrayRef> = b
            .state()?
            .iter()
            .map(|s| s.to_array())
            .collect::<Result<_>>()?;
        a.merge_batch(&state)?;
        assert_eq!(a.evaluate()?, ScalarValue::Float64(Some(5003.0)));
        Ok(())
    }

    #[test]
    fn the_fast_integer_paths_count_like_the_general_one() -> Result<()> {
        // 2 classes take the binary sums, 5 and 6 the direct table.
        for (label_classes, predicted_classes) in [(2, 2), (5, 6), (1, 2)] {
            let labels: Vec<i64> = (0..1000)
                .map(|i| (i * 7 + i / 13) % label_classes)
                .collect();
            let predictions: Vec<i64> = (0..1000)
                .map(|i| (i * 3 + i / 7) % predicted_classes)
                .collect();
            let mut fast = ConfusionCounts::new(&DataType::Int64)?;
            fast.update(&ints(&labels), &ints(&predictions))?;
            // A value outside 0..64 in the batch forces the general path.
            let mut general = ConfusionCounts::new(&DataType::Int64)?;
            let with = |extra: i64, values: &[i64]| [&[extra], values].concat();
            general.update(&ints(&with(100, &labels)), &ints(&with(100, &predictions)))?;
            let (a, classes_a) = fast.confusion().expect("rows");
            let (b, classes_b) = general.confusion().expect("rows");
            assert_eq!(classes_a.len() + 1, classes_b.len());
            for t in 0..a.classes() {
                for p in 0..a.classes() {
                    assert_eq!(a.count(t, p), b.count(t, p), "cell {t},{p}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn many_classes_switch_to_sparse_storage_without_losing_counts() -> Result<()> {
        let mut acc = accumulator()?;
        let labels: Vec<i64> = (0..200).collect();
        acc.update_batch(&[ints(&labels[..10]), ints(&labels[..10])])?;
        acc.update_batch(&[ints(&labels), ints(&labels)])?;
        assert!(acc.counts.cells.dense_mut().is_none());
        assert_eq!(acc.evaluate()?, ScalarValue::Float64(Some(210_200.0)));
        Ok(())
    }
}
