//! The machinery shared by the score-based aggregates (`roc_auc`, `pr_auc`):
//! (score, positive?) pairs per group, sorted at evaluation into the
//! positive and negative counts at each distinct score, with a row
//! [`Accumulator`] (retracting, for sliding windows) and a
//! [`GroupsAccumulator`], and [`ScoreMetricUdf`], which turns a
//! [`ScoreMetric`] into a DataFusion aggregate.
//!
//! Semantics shared by both:
//! - `metric(label, score [, positive_class])`: a row is positive when its
//!   label equals the positive class (default `1`, which is also `true`);
//!   every other label is negative (one-vs-rest). String labels need the
//!   positive class.
//! - Rows with a NULL label or score are ignored; no rows give NULL.
//! - A NaN score is an error (as in scikit-learn); infinite scores are
//!   ordered like any other value (scikit-learn refuses them).
//! - Equal scores are one threshold: ties count half in ROC AUC, and form
//!   one step of the precision-recall curve, as in scikit-learn.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Datum, Float64Array, Scalar, UInt64Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::kernels::cmp::eq;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type, UInt64Type};
use datafusion::common::{Result, ScalarValue, exec_err, internal_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator, Signature,
};
use datafusion::physical_expr::expressions::Literal;

use crate::classes::class_type;
use crate::generic_udf::{
    generic_udf_boilerplate, list_state, merge_groups, no_convert_to_state, row_selected,
};

/// Positive and negative rows at one distinct score.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Threshold {
    pub score: f64,
    pub positives: u64,
    pub negatives: u64,
}

/// A score-based metric over the thresholds, in decreasing score order.
pub trait ScoreMetric: fmt::Debug + Send + Sync + 'static {
    const NAME: &'static str;
    fn documentation() -> &'static Documentation;
    /// The metric over the thresholds in decreasing score order (never
    /// none), with the total positive and negative rows.
    fn evaluate(thresholds: impl Iterator<Item = Threshold>, positives: u64, negatives: u64)
    -> f64;
}

/// A key that orders f64 totally and puts -0.0 and 0.0 together.
fn order_key(score: f64) -> u64 {
    let bits = (score + 0.0).to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn from_order_key(key: u64) -> f64 {
    f64::from_bits(if key >> 63 == 1 {
        key & !(1 << 63)
    } else {
        !key
    })
}

/// Distinct scores counted in a hash table before the table spills to the
/// sort path; scores with few distinct values (rounded probabilities, tree
/// leaves) never need sorting per row.
const HASHED_DISTINCT_MAX: usize = 1 << 16;

/// Open-addressing counts per order key (`u64::MAX` marks an empty slot: no
/// order key of a non-NaN score reaches it).
#[derive(Debug, Clone)]
struct ScoreTable {
    keys: Vec<u64>,
    counts: Vec<(u64, u64)>,
    len: usize,
}

impl ScoreTable {
    const EMPTY: u64 = u64::MAX;

    fn with_capacity(capacity: usize) -> Self {
        Self {
            keys: vec![Self::EMPTY; capacity],
            counts: vec![(0, 0); capacity],
            len: 0,
        }
    }

    fn add(&mut self, key: u64, positives: u64, negatives: u64) {
        if (self.len + 1) * 2 > self.keys.len() {
            let mut grown = Self::with_capacity(self.keys.len() * 2);
            for (k, (p, n)) in self.drain() {
                grown.add(k, p, n);
            }
            *self = grown;
        }
        let mask = self.keys.len() - 1;
        let shift = 64 - self.keys.len().trailing_zeros();
        let mut slot = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) as usize;
        loop {
            if self.keys[slot] == key {
                break;
            }
            if self.keys[slot] == Self::EMPTY {
                self.keys[slot] = key;
                self.len += 1;
                break;
            }
            slot = (slot + 1) & mask;
        }
        self.counts[slot].0 += positives;
        self.counts[slot].1 += negatives;
    }

    fn drain(&mut self) -> impl Iterator<Item = (u64, (u64, u64))> + '_ {
        self.len = 0;
        self.keys
            .iter_mut()
            .zip(self.counts.iter_mut())
            .filter(|(k, _)| **k != Self::EMPTY)
            .map(|(k, c)| (std::mem::replace(k, Self::EMPTY), std::mem::take(c)))
    }
}

impl Default for ScoreTable {
    fn default() -> Self {
        Self::with_capacity(1024)
    }
}

/// Sorted pairs: counted entries (distinct keys, ascending) and single
/// rows by class (ascending keys, repeats allowed). Single rows stay 8
/// bytes each, so scores that are all distinct are sorted, stored and
/// merged as two plain key arrays, never as (key, count, count) triples.
#[derive(Debug, Clone, Default)]
struct Sorted {
    counted: Vec<(u64, u64, u64)>,
    positive: Vec<u64>,
    negative: Vec<u64>,
}

impl Sorted {
    fn is_empty(&self) -> bool {
        self.counted.is_empty() && self.positive.is_empty() && self.negative.is_empty()
    }

    /// Total positive and negative rows.
    fn totals(&self) -> (u64, u64) {
        let (p, n) = self
            .counted
            .iter()
            .fold((0, 0), |(p, n), e| (p + e.1, n + e.2));
        (
            p + self.positive.len() as u64,
            n + self.negative.len() as u64,
        )
    }

    /// Both merged, each part by a linear merge of two sorted runs.
    fn merge(a: Self, b: Self) -> Self {
        Self {
            counted: merge_runs(a.counted, b.counted),
            positive: merge_keys(a.positive, b.positive),
            negative: merge_keys(a.negative, b.negative),
        }
    }

    /// (key, positives, negatives) of every distinct key, descending.
    fn descending(&self) -> Descending<'_> {
        Descending {
            sorted: self,
            counted: self.counted.len(),
            positive: self.positive.len(),
            negative: self.negative.len(),
        }
    }

    fn size(&self) -> usize {
        self.counted.capacity() * 24 + (self.positive.capacity() + self.negative.capacity()) * 8
    }
}

/// A walk of a [`Sorted`] from its largest key down, equal keys combined.
struct Descending<'a> {
    sorted: &'a Sorted,
    counted: usize,
    positive: usize,
    negative: usize,
}

impl Iterator for Descending<'_> {
    type Item = (u64, u64, u64);

    fn next(&mut self) -> Option<(u64, u64, u64)> {
        let Sorted {
            counted,
            positive,
            negative,
        } = self.sorted;
        let top = |keys: &[u64], end: usize| end.checked_sub(1).map(|i| keys[i]);
        let key = [
            self.counted.checked_sub(1).map(|i| counted[i].0),
            top(positive, self.positive),
            top(negative, self.negative),
        ]
        .into_iter()
        .flatten()
        .max()?;
        let (mut p, mut n) = (0, 0);
        if let Some(i) = self.counted.checked_sub(1)
            && counted[i].0 == key
        {
            p += counted[i].1;
            n += counted[i].2;
            self.counted = i;
        }
        while self.positive > 0 && positive[self.positive - 1] == key {
            p += 1;
            self.positive -= 1;
        }
        while self.negative > 0 && negative[self.negative - 1] == key {
            n += 1;
            self.negative -= 1;
        }
        Some((key, p, n))
    }
}

/// Merge two ascending key arrays.
fn merge_keys(a: Vec<u64>, b: Vec<u64>) -> Vec<u64> {
    if a.is_empty() {
        return b;
    }
    if b.is_empty() {
        return a;
    }
    let mut merged = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] <= b[j] {
            merged.push(a[i]);
            i += 1;
        } else {
            merged.push(b[j]);
            j += 1;
        }
    }
    merged.extend_from_slice(&a[i..]);
    merged.extend_from_slice(&b[j..]);
    merged
}

/// The pairs of one group.
#[derive(Debug, Clone, Default)]
struct Pairs {
    /// Counts per distinct score while there are few; `None` once spilled.
    hashed: Option<ScoreTable>,
    spilled: bool,
    /// Appended since the last compaction, unsorted (after a spill).
    pending: Sorted,
    /// Everything compacted, sorted.
    sorted: Sorted,
    /// Partial states merged in, each already sorted.
    runs: Vec<Sorted>,
    /// Once rows are retracted, counts live here.
    tree: Option<BTreeMap<u64, (u64, u64)>>,
}

/// Merge two ascending runs of (key, positives, negatives), summing equal keys.
fn merge_runs(a: Vec<(u64, u64, u64)>, b: Vec<(u64, u64, u64)>) -> Vec<(u64, u64, u64)> {
    if a.is_empty() {
        return b;
    }
    if b.is_empty() {
        return a;
    }
    let mut merged: Vec<(u64, u64, u64)> = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 <= y.0 => a.next(),
            (Some(_), Some(_)) | (None, Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, None) => break,
        };
        if let Some((key, p, n)) = next {
            match merged.last_mut() {
                Some(last) if last.0 == key => {
                    last.1 += p;
                    last.2 += n;
                }
                _ => merged.push((key, p, n)),
            }
        }
    }
    merged
}

impl Pairs {
    fn add(&mut self, key: u64, positives: u64, negatives: u64) {
        if self.tree.is_none() && !self.spilled {
            let table = self.hashed.get_or_insert_with(ScoreTable::default);
            table.add(key, positives, negatives);
            if table.len > HASHED_DISTINCT_MAX {
                // Many distinct scores: sorting wins from here on.
                self.spilled = true;
                self.drain_hashed();
            }
            return;
        }
        match (&mut self.tree, positives, negatives) {
            (Some(tree), _, _) => {
                let entry = tree.entry(key).or_default();
                entry.0 += positives;
                entry.1 += negatives;
            }
            (None, 1, 0) => self.pending.positive.push(key),
            (None, 0, 1) => self.pending.negative.push(key),
            (None, _, _) => self.pending.counted.push((key, positives, negatives)),
        }
    }

    fn drain_hashed(&mut self) {
        if let Some(table) = &mut self.hashed {
            self.pending
                .counted
                .extend(table.drain().map(|(key, (p, n))| (key, p, n)));
        }
        if self.spilled {
            self.hashed = None;
        }
    }

    /// Add a partial state, already sorted; merged at the next compaction,
    /// never re-sorted.
    fn add_run(&mut self, run: Sorted) {
        if let Some(tree) = &mut self.tree {
            let mut descending = run.descending();
            for (key, p, n) in descending.by_ref() {
                let entry = tree.entry(key).or_default();
                entry.0 += p;
                entry.1 += n;
            }
        } else if !run.is_empty() {
            self.runs.push(run);
        }
    }

    /// Sort what was appended and merge it and the runs into `sorted`.
    fn compact(&mut self) {
        self.drain_hashed();
        let mut pending = std::mem::take(&mut self.pending);
        if !pending.is_empty() {
            pending.counted.sort_unstable_by_key(|entry| entry.0);
            pending.counted.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    kept.1 += later.1;
                    kept.2 += later.2;
                }
                same
            });
            pending.positive.sort_unstable();
            pending.negative.sort_unstable();
            self.runs.push(pending);
        }
        for run in std::mem::take(&mut self.runs) {
            let earlier = std::mem::take(&mut self.sorted);
            self.sorted = Sorted::merge(earlier, run);
        }
    }

    fn tree(&mut self) -> &mut BTreeMap<u64, (u64, u64)> {
        if self.tree.is_none() {
            self.compact();
            let sorted = std::mem::take(&mut self.sorted);
            let tree = sorted
                .descending()
                .map(|(key, p, n)| (key, (p, n)))
                .collect();
            self.tree = Some(tree);
        }
        self.tree.get_or_insert_with(BTreeMap::new)
    }

    fn remove(&mut self, key: u64, positive: bool) -> Result<()> {
        let tree = self.tree();
        let Some(entry) = tree.get_mut(&key) else {
            return internal_err!("retracted a score that was never added");
        };
        let count = if positive { &mut entry.0 } else { &mut entry.1 };
        if *count == 0 {
            return internal_err!("retracted a score that was never added");
        }
        *count -= 1;
        if *entry == (0, 0) {
            tree.remove(&key);
        }
        Ok(())
    }

    /// Call `f` with every pair, sorted, without copying them.
    fn with_sorted<R>(&mut self, f: impl FnOnce(&Sorted) -> R) -> R {
        if let Some(tree) = &self.tree {
            let sorted = Sorted {
                counted: tree.iter().map(|(k, (p, n))| (*k, *p, *n)).collect(),
                ..Sorted::default()
            };
            return f(&sorted);
        }
        self.compact();
        f(&self.sorted)
    }

    /// Distinct scores with their counts, in decreasing score order.
    #[cfg(test)]
    fn thresholds(&mut self) -> Vec<Threshold> {
        self.with_sorted(|sorted| {
            sorted
                .descending()
                .map(|(key, positives, negatives)| Threshold {
                    score: from_order_key(key),
                    positives,
                    negatives,
                })
                .collect()
        })
    }

    fn size(&self) -> usize {
        self.hashed.as_ref().map_or(0, |t| t.keys.len() * 24)
            + self.pending.size()
            + self.sorted.size()
            + self.runs.iter().map(Sorted::size).sum::<usize>()
            + self.tree.as_ref().map_or(0, |t| t.len() * 40)
    }
}

fn evaluate<M: ScoreMetric>(pairs: &mut Pairs) -> Option<f64> {
    let threshold = |(key, positives, negatives): (u64, u64, u64)| Threshold {
        score: from_order_key(key),
        positives,
        negatives,
    };
    if let Some(tree) = &pairs.tree {
        let (p, n) = tree
            .values()
            .fold((0, 0), |(p, n), (ep, en)| (p + ep, n + en));
        let entries = tree.iter().rev().map(|(k, (p, n))| (*k, *p, *n));
        return (!tree.is_empty()).then(|| M::evaluate(entries.map(threshold), p, n));
    }
    // Walk the pairs in place: no copy of what may be millions of scores.
    pairs.compact();
    let sorted = &pairs.sorted;
    let (p, n) = sorted.totals();
    (!sorted.is_empty()).then(|| M::evaluate(sorted.descending().map(threshold), p, n))
}

fn nan_error<T>(function: &str) -> Result<T> {
    exec_err!("{function}: a score is NaN; filter it out or replace it")
}

/// Call `each(row, order key, positive?)` for every row with a label and a
/// score.
fn for_each_row(
    function: &str,
    labels: &ArrayRef,
    scores: &ArrayRef,
    positive_class: &Scalar<ArrayRef>,
    mut each: impl FnMut(usize, u64, bool) -> Result<()>,
) -> Result<()> {
    let scores = scores.as_primitive::<Float64Type>();
    // The common shape, integer labels and no NULLs, without the kernel and
    // its intermediate mask.
    if let (Some(ints), Some(positive)) = (
        labels.as_primitive_opt::<Int64Type>(),
        positive_class.get().0.as_primitive_opt::<Int64Type>(),
    ) && ints.null_count() == 0
        && scores.null_count() == 0
    {
        let positive = positive.value(0);
        for (row, (l, s)) in ints.values().iter().zip(scores.values()).enumerate() {
            if s.is_nan() {
                return nan_error(function);
            }
            each(row, order_key(*s), *l == positive)?;
        }
        return Ok(());
    }
    let positive = eq(labels, positive_class)?;
    for (row, (p, s)) in positive.iter().zip(scores.iter()).enumerate() {
        match (p, s) {
            (Some(_), Some(s)) if s.is_nan() => return nan_error(function),
            (Some(p), Some(s)) => each(row, order_key(s), p)?,
            _ => {}
        }
    }
    Ok(())
}

fn state_fields(name: &str) -> Vec<FieldRef> {
    let list = |t: DataType| DataType::List(Arc::new(Field::new_list_field(t, true)));
    [
        ("scores", DataType::Float64),
        ("positives", DataType::UInt64),
        ("negatives", DataType::UInt64),
        ("positive_scores", DataType::Float64),
        ("negative_scores", DataType::Float64),
    ]
    .into_iter()
    .map(|(part, t)| Arc::new(Field::new(format_state_name(name, part), list(t), true)))
    .collect()
}

/// Partial state: per group, the counted scores in increasing order with
/// their positive and negative counts, then the scores of single positive
/// and single negative rows, each in increasing order.
fn state_arrays<'a>(groups: impl Iterator<Item = &'a mut Pairs>) -> Result<Vec<ArrayRef>> {
    let (mut counted_lengths, mut positive_lengths, mut negative_lengths) =
        (Vec::new(), Vec::new(), Vec::new());
    let (mut scores, mut positives, mut negatives) = (Vec::new(), Vec::new(), Vec::new());
    let (mut positive_scores, mut negative_scores) = (Vec::new(), Vec::new());
    for pairs in groups {
        pairs.with_sorted(|sorted| {
            counted_lengths.push(sorted.counted.len());
            scores.extend(sorted.counted.iter().map(|e| from_order_key(e.0)));
            positives.extend(sorted.counted.iter().map(|e| e.1));
            negatives.extend(sorted.counted.iter().map(|e| e.2));
            positive_lengths.push(sorted.positive.len());
            positive_scores.extend(sorted.positive.iter().map(|k| from_order_key(*k)));
            negative_lengths.push(sorted.negative.len());
            negative_scores.extend(sorted.negative.iter().map(|k| from_order_key(*k)));
        });
    }
    let mut arrays = list_state(
        &OffsetBuffer::from_lengths(counted_lengths),
        vec![
            Arc::new(Float64Array::from(scores)),
            Arc::new(UInt64Array::from(positives)),
            Arc::new(UInt64Array::from(negatives)),
        ],
    )?;
    arrays.extend(list_state(
        &OffsetBuffer::from_lengths(positive_lengths),
        vec![Arc::new(Float64Array::from(positive_scores))],
    )?);
    arrays.extend(list_state(
        &OffsetBuffer::from_lengths(negative_lengths),
        vec![Arc::new(Float64Array::from(negative_scores))],
    )?);
    Ok(arrays)
}

fn merge_state_row(pairs: &mut Pairs, states: &[ArrayRef], row: usize) -> Result<()> {
    let [
        scores,
        positives,
        negatives,
        positive_scores,
        negative_scores,
    ] = states
    else {
        return internal_err!("score state has {} columns, expected 5", states.len());
    };
    if scores.is_null(row) {
        return Ok(());
    }
    let list = |array: &ArrayRef| array.as_list::<i32>().value(row);
    let (s, p, n) = (list(scores), list(positives), list(negatives));
    let s = s.as_primitive::<Float64Type>();
    let p = p.as_primitive::<UInt64Type>();
    let n = n.as_primitive::<UInt64Type>();
    let keys = |array: &ArrayRef| -> Vec<u64> {
        list(array)
            .as_primitive::<Float64Type>()
            .values()
            .iter()
            .map(|s| order_key(*s))
            .collect()
    };
    // States list scores in increasing order: each part is a sorted run.
    pairs.add_run(Sorted {
        counted: s
            .values()
            .iter()
            .zip(p.values())
            .zip(n.values())
            .map(|((s, p), n)| (order_key(*s), *p, *n))
            .collect(),
        positive: keys(positive_scores),
        negative: keys(negative_scores),
    });
    Ok(())
}

#[derive(Debug)]
struct ScoreAccumulator<M> {
    pairs: Pairs,
    positive_class: Scalar<ArrayRef>,
    metric: PhantomData<M>,
}

impl<M: ScoreMetric> Accumulator for ScoreAccumulator<M> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let pairs = &mut self.pairs;
        for_each_row(
            M::NAME,
            &values[0],
            &values[1],
            &self.positive_class,
            |_, key, positive| {
                pairs.add(key, u64::from(positive), u64::from(!positive));
                Ok(())
            },
        )
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let pairs = &mut self.pairs;
        for_each_row(
            M::NAME,
            &values[0],
            &values[1],
            &self.positive_class,
            |_, key, positive| pairs.remove(key, positive),
        )
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for row in 0..states.first().map_or(0, |s| s.len()) {
            merge_state_row(&mut self.pairs, states, row)?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        state_arrays(std::iter::once(&mut self.pairs))?
            .iter()
            .map(|a| ScalarValue::try_from_array(a, 0))
            .collect()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(evaluate::<M>(&mut self.pairs)))
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.pairs.size()
    }
}

#[derive(Debug)]
struct ScoreGroupsAccumulator<M> {
    groups: Vec<Pairs>,
    positive_class: Scalar<ArrayRef>,
    metric: PhantomData<M>,
}

impl<M: ScoreMetric> GroupsAccumulator for ScoreGroupsAccumulator<M> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Pairs::default);
        let groups = &mut self.groups;
        for_each_row(
            M::NAME,
            &values[0],
            &values[1],
            &self.positive_class,
            |row, key, positive| {
                if row_selected(opt_filter, row) {
                    groups[group_indices[row]].add(key, u64::from(positive), u64::from(!positive));
                }
                Ok(())
            },
        )
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        merge_groups(
            &mut self.groups,
            group_indices,
            total_num_groups,
            |pairs, row| merge_state_row(pairs, values, row),
        )
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let mut groups = emit_to.take_needed(&mut self.groups);
        Ok(Arc::new(Float64Array::from_iter(
            groups.iter_mut().map(evaluate::<M>),
        )))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let mut groups = emit_to.take_needed(&mut self.groups);
        state_arrays(groups.iter_mut())
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
            + self.groups.iter().map(Pairs::size).sum::<usize>()
            + self.groups.capacity() * size_of::<Pairs>()
    }
}

/// Any [`ScoreMetric`] as a DataFusion aggregate.
pub struct ScoreMetricUdf<M> {
    signature: Signature,
    marker: PhantomData<M>,
}

generic_udf_boilerplate!(ScoreMetricUdf, ScoreMetric);

impl<M: ScoreMetric> ScoreMetricUdf<M> {
    fn positive_class(args: &AccumulatorArgs) -> Result<Scalar<ArrayRef>> {
        let label_type = args.expr_fields[0].data_type();
        let value = match args.exprs.get(2) {
            None if *label_type == DataType::Int64 => ScalarValue::Int64(Some(1)),
            None => {
                return plan_err!(
                    "{}: string labels need the positive class, e.g. {}(label, score, 'fault')",
                    M::NAME,
                    M::NAME
                );
            }
            Some(expr) => match expr.downcast_ref::<Literal>() {
                Some(literal) if !literal.value().is_null() => {
                    literal.value().cast_to(label_type)?
                }
                _ => {
                    return plan_err!(
                        "{}: the positive class must be a non-NULL constant",
                        M::NAME
                    );
                }
            },
        };
        Ok(Scalar::new(value.to_array_of_size(1)?))
    }
}

impl<M: ScoreMetric> AggregateUDFImpl for ScoreMetricUdf<M> {
    fn name(&self) -> &str {
        M::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if !(2..=3).contains(&arg_types.len()) {
            return plan_err!(
                "{} expects (label, score [, positive_class]), got {} argument(s)",
                M::NAME,
                arg_types.len()
            );
        }
        let score = &arg_types[1];
        if !(score.is_numeric() || *score == DataType::Null) {
            return plan_err!("{}: score must be numeric, got {score}", M::NAME);
        }
        let mut classes = vec![arg_types[0].clone()];
        classes.extend(arg_types.get(2).cloned());
        let class_type = class_type(M::NAME, &classes)?;
        let mut coerced = vec![class_type.clone(), DataType::Float64];
        if arg_types.len() == 3 {
            coerced.push(class_type);
        }
        Ok(coerced)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(state_fields(args.name))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if args.is_distinct {
            return exec_err!("{}(DISTINCT ...) is not supported", M::NAME);
        }
        Ok(Box::new(ScoreAccumulator::<M> {
            pairs: Pairs::default(),
            positive_class: Self::positive_class(&args)?,
            metric: PhantomData,
        }))
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        !args.is_distinct
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(ScoreGroupsAccumulator::<M> {
            groups: Vec::new(),
            positive_class: Self::positive_class(&args)?,
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

    /// Metric `M` of (label, score) pairs, positive class 1, with the row
    /// accumulator.
    pub fn score_metric_of<M: ScoreMetric>(labels: &[i64], scores: &[f64]) -> Result<Option<f64>> {
        let mut acc = ScoreAccumulator::<M> {
            pairs: Pairs::default(),
            positive_class: Scalar::new(Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            metric: PhantomData,
        };
        acc.update_batch(&[
            Arc::new(Int64Array::from(labels.to_vec())),
            Arc::new(Float64Array::from(scores.to_vec())),
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

    #[test]
    fn order_keys_sort_like_numbers_and_merge_signed_zeros() {
        let values = [
            f64::NEG_INFINITY,
            -2.5,
            -0.0,
            0.0,
            1e-300,
            3.0,
            f64::INFINITY,
        ];
        let keys: Vec<u64> = values.iter().map(|v| order_key(*v)).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(order_key(-0.0), order_key(0.0));
        for v in values {
            assert_eq!(from_order_key(order_key(v)), v + 0.0);
        }
    }

    #[test]
    fn many_distinct_scores_spill_from_the_table_to_sorting() {
        let mut pairs = Pairs::default();
        let n = HASHED_DISTINCT_MAX as u64 + 5000;
        for i in 0..n {
            pairs.add(order_key(i as f64), i % 2, 1 - i % 2);
            pairs.add(order_key(7.0), 1, 0);
        }
        assert!(pairs.spilled);
        let thresholds = pairs.thresholds();
        assert_eq!(thresholds.len() as u64, n);
        assert!(thresholds.windows(2).all(|w| w[0].score > w[1].score));
        let seven = thresholds.iter().find(|t| t.score == 7.0).expect("7");
        assert_eq!((seven.positives, seven.negatives), (n + 1, 0));
        let total: u64 = thresholds.iter().map(|t| t.positives + t.negatives).sum();
        assert_eq!(total, 2 * n);
    }

    #[test]
    fn partial_states_merge_to_the_single_accumulator_result() -> Result<()> {
        use datafusion::arrow::array::Int64Array;
        #[derive(Debug)]
        struct Area;
        impl ScoreMetric for Area {
            const NAME: &'static str = "area";
            fn documentation() -> &'static Documentation {
                unimplemented!("not used in tests")
            }
            fn evaluate(t: impl Iterator<Item = Threshold>, p: u64, n: u64) -> f64 {
                // Order-sensitive checksum of the thresholds.
                t.enumerate().fold(0.0, |acc, (i, t)| {
                    acc + (i as f64 + 1.0)
                        * (t.score + 2.0 * t.positives as f64 + t.negatives as f64)
                }) + (p * 1000 + n) as f64
            }
        }
        let new = || ScoreAccumulator::<Area> {
            pairs: Pairs::default(),
            positive_class: Scalar::new(Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            metric: PhantomData,
        };
        let rows = |range: std::ops::Range<i64>| -> Vec<ArrayRef> {
            vec![
                Arc::new(Int64Array::from_iter_values(
                    range.clone().map(|i| i % 3 % 2),
                )),
                Arc::new(Float64Array::from_iter_values(
                    range.map(|i| (i % 7000) as f64 / 7.0),
                )),
            ]
        };
        let (mut left, mut right, mut whole) = (new(), new(), new());
        left.update_batch(&rows(0..9000))?;
        right.update_batch(&rows(9000..20000))?;
        whole.update_batch(&rows(0..20000))?;
        for partial in [&mut left, &mut right] {
            let state: Vec<ArrayRef> = partial
                .state()?
                .iter()
                .map(|s| s.to_array())
                .collect::<Result<_>>()?;
            let mut merged = new();
            merged.merge_batch(&state)?;
            assert_eq!(merged.evaluate()?, partial.evaluate()?);
        }
        let states: Vec<Vec<ArrayRef>> = [&mut left, &mut right]
            .into_iter()
            .map(|p| {
                p.state()?
                    .iter()
                    .map(|s| s.to_array())
                    .collect::<Result<_>>()
            })
            .collect::<Result<_>>()?;
        let mut final_acc = new();
        for state in &states {
            final_acc.merge_batch(state)?;
        }
        assert_eq!(final_acc.evaluate()?, whole.evaluate()?);
        Ok(())
    }

    #[test]
    fn long_partial_states_merge_as_runs() {
        let run = |offset: u64| Sorted {
            counted: (0..5000)
                .map(|i| (order_key((i * 2 + offset) as f64), 1, 2))
                .collect(),
            positive: vec![order_key(2.0), order_key(5000.5)],
            negative: vec![order_key(-1.0)],
        };
        let mut pairs = Pairs::default();
        pairs.add_run(run(0));
        pairs.add_run(run(1));
        pairs.add_run(run(0));
        pairs.add(order_key(3.0), 1, 0);
        assert_eq!(pairs.runs.len(), 3);
        let thresholds = pairs.thresholds();
        assert_eq!(thresholds.len(), 10_002);
        assert!(thresholds.windows(2).all(|w| w[0].score > w[1].score));
        let at = |score: f64| {
            let t = thresholds.iter().find(|t| t.score == score).expect("score");
            (t.positives, t.negatives)
        };
        assert_eq!(at(2.0), (2 + 3, 4));
        assert_eq!(at(3.0), (2, 2));
        assert_eq!(at(5000.5), (3, 0));
        assert_eq!(at(-1.0), (0, 3));
    }

    #[test]
    fn appended_rows_and_merged_states_combine() {
        let mut pairs = Pairs::default();
        pairs.add(order_key(0.5), 1, 0);
        pairs.add(order_key(0.7), 0, 1);
        pairs.add(order_key(0.5), 2, 3);
        let first = pairs.thresholds();
        pairs.add(order_key(0.7), 1, 0);
        pairs.add(order_key(0.1), 0, 1);
        let second = pairs.thresholds();
        assert_eq!(first.len(), 2);
        let summary: Vec<(f64, u64, u64)> = second
            .iter()
            .map(|t| (t.score, t.positives, t.negatives))
            .collect();
        assert_eq!(summary, vec![(0.7, 1, 1), (0.5, 3, 3), (0.1, 0, 1)]);
    }

    #[test]
    fn retraction_after_appends_keeps_counts() -> Result<()> {
        let mut pairs = Pairs::default();
        pairs.add(order_key(0.5), 1, 0);
        pairs.add(order_key(0.5), 0, 1);
        pairs.add(order_key(0.9), 1, 0);
        pairs.remove(order_key(0.5), true)?;
        let t = pairs.thresholds();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].score, t[0].positives, t[0].negatives), (0.9, 1, 0));
        assert_eq!((t[1].score, t[1].positives, t[1].negatives), (0.5, 0, 1));
        assert!(pairs.remove(order_key(0.5), true).is_err());
        Ok(())
    }
}
