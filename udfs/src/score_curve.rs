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
use datafusion::arrow::buffer::{OffsetBuffer, ScalarBuffer};
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

/// (order key, positives, negatives) at one distinct score.
type Entry = (u64, u64, u64);

/// Rows appended since the last compaction, unsorted: counted entries
/// and single rows' order keys by class (8 bytes a row, so scores that are
/// all distinct never become (key, count, count) triples).
#[derive(Debug, Clone, Default)]
struct Appended {
    counted: Vec<Entry>,
    positive: Vec<u64>,
    negative: Vec<u64>,
}

impl Appended {
    fn is_empty(&self) -> bool {
        self.counted.is_empty() && self.positive.is_empty() && self.negative.is_empty()
    }

    /// Sorted, equal counted keys combined.
    fn into_sorted(mut self) -> Sorted {
        self.counted.sort_unstable_by_key(|entry| entry.0);
        self.counted.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 += later.1;
                kept.2 += later.2;
            }
            same
        });
        self.positive.sort_unstable();
        self.negative.sort_unstable();
        Sorted {
            counted: self.counted,
            positive: ScalarBuffer::from(self.positive),
            negative: ScalarBuffer::from(self.negative),
        }
    }

    fn size(&self) -> usize {
        self.counted.capacity() * 24 + (self.positive.capacity() + self.negative.capacity()) * 8
    }
}

/// A sorted part of a group's pairs: counted entries (distinct keys,
/// ascending) and single rows' keys by class (ascending, repeats allowed).
/// The key lists are Arrow buffers: a partial state's lists are kept as
/// they arrive, without a copy.
#[derive(Debug, Clone, Default)]
struct Sorted {
    counted: Vec<Entry>,
    positive: ScalarBuffer<u64>,
    negative: ScalarBuffer<u64>,
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

    /// `parts` merged into one, each list by linear merges of sorted runs.
    fn merge(parts: Vec<Self>) -> Self {
        let mut merged = Self::default();
        for part in parts {
            merged = Self {
                counted: merge_runs(merged.counted, part.counted),
                positive: merge_keys(&merged.positive, &part.positive),
                negative: merge_keys(&merged.negative, &part.negative),
            };
        }
        merged
    }

    fn size(&self) -> usize {
        self.counted.capacity() * 24 + (self.positive.len() + self.negative.len()) * 8
    }
}

/// A walk of sorted parts from the largest key down, equal keys combined:
/// (key, positives, negatives). No order key of a score is 0 (NaN is
/// refused), so 0 marks an exhausted list.
struct Descending<'a> {
    /// (entries, end)
    counted: Vec<(&'a [Entry], usize)>,
    /// (keys, end, positive?)
    keys: Vec<(&'a [u64], usize, bool)>,
}

impl<'a> Descending<'a> {
    fn new(parts: &'a [Sorted]) -> Self {
        let mut walk = Self {
            counted: Vec::new(),
            keys: Vec::new(),
        };
        for part in parts {
            if !part.counted.is_empty() {
                walk.counted.push((&part.counted, part.counted.len()));
            }
            for (keys, positive) in [(&part.positive, true), (&part.negative, false)] {
                if !keys.is_empty() {
                    walk.keys.push((keys, keys.len(), positive));
                }
            }
        }
        walk
    }
}

impl Iterator for Descending<'_> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        let mut key = 0;
        for (counted, end) in &self.counted {
            if *end > 0 {
                key = key.max(counted[*end - 1].0);
            }
        }
        for (keys, end, _) in &self.keys {
            if *end > 0 {
                key = key.max(keys[*end - 1]);
            }
        }
        if key == 0 {
            return None;
        }
        let (mut p, mut n) = (0, 0);
        for (counted, end) in &mut self.counted {
            if *end > 0 && counted[*end - 1].0 == key {
                p += counted[*end - 1].1;
                n += counted[*end - 1].2;
                *end -= 1;
            }
        }
        for (keys, end, positive) in &mut self.keys {
            let before = *end;
            while *end > 0 && keys[*end - 1] == key {
                *end -= 1;
            }
            let rows = (before - *end) as u64;
            if *positive {
                p += rows;
            } else {
                n += rows;
            }
        }
        Some((key, p, n))
    }
}

/// Merge two ascending key lists.
fn merge_keys(a: &ScalarBuffer<u64>, b: &ScalarBuffer<u64>) -> ScalarBuffer<u64> {
    if a.is_empty() {
        return b.clone();
    }
    if b.is_empty() {
        return a.clone();
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
    ScalarBuffer::from(merged)
}

/// Sorted parts a group keeps before merging them into one: a walk over
/// few parts costs less than merging them, and a group evaluated again
/// and again (a growing window frame) still walks a bounded number.
const PARTS_MAX: usize = 4;

/// The pairs of one group.
#[derive(Debug, Clone, Default)]
struct Pairs {
    /// Counts per distinct score while there are few; `None` once spilled.
    hashed: Option<ScoreTable>,
    spilled: bool,
    /// Appended since the last compaction (after a spill).
    appended: Appended,
    /// Sorted parts: earlier compactions and merged partial states.
    parts: Vec<Sorted>,
    /// Once rows are retracted, counts live here.
    tree: Option<BTreeMap<u64, (u64, u64)>>,
}

/// Merge two ascending runs of (key, positives, negatives), summing equal keys.
fn merge_runs(a: Vec<Entry>, b: Vec<Entry>) -> Vec<Entry> {
    if a.is_empty() {
        return b;
    }
    if b.is_empty() {
        return a;
    }
    let mut merged: Vec<Entry> = Vec::with_capacity(a.len() + b.len());
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
            (None, 1, 0) => self.appended.positive.push(key),
            (None, 0, 1) => self.appended.negative.push(key),
            (None, _, _) => self.appended.counted.push((key, positives, negatives)),
        }
    }

    fn drain_hashed(&mut self) {
        if let Some(table) = &mut self.hashed {
            self.appended
                .counted
                .extend(table.drain().map(|(key, (p, n))| (key, p, n)));
        }
        if self.spilled {
            self.hashed = None;
        }
    }

    /// Add a partial state, already sorted: kept as a part, never re-sorted.
    fn add_run(&mut self, run: Sorted) {
        if let Some(tree) = &mut self.tree {
            for (key, p, n) in Descending::new(std::slice::from_ref(&run)) {
                let entry = tree.entry(key).or_default();
                entry.0 += p;
                entry.1 += n;
            }
        } else if !run.is_empty() {
            self.parts.push(run);
        }
    }

    /// Sort what was appended into a part; past [`PARTS_MAX`] parts (or
    /// with `into_one`), merge them into one.
    fn compact(&mut self, into_one: bool) {
        self.drain_hashed();
        let appended = std::mem::take(&mut self.appended);
        if !appended.is_empty() {
            self.parts.push(appended.into_sorted());
        }
        if self.parts.len() > PARTS_MAX || (into_one && self.parts.len() > 1) {
            let parts = std::mem::take(&mut self.parts);
            self.parts.push(Sorted::merge(parts));
        }
    }

    fn tree(&mut self) -> &mut BTreeMap<u64, (u64, u64)> {
        if self.tree.is_none() {
            self.compact(false);
            let tree = Descending::new(&self.parts)
                .map(|(key, p, n)| (key, (p, n)))
                .collect();
            self.parts.clear();
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

    /// All pairs as one sorted part (a partial state).
    fn as_one_part(&mut self) -> Sorted {
        if let Some(tree) = &self.tree {
            return Sorted {
                counted: tree.iter().map(|(k, (p, n))| (*k, *p, *n)).collect(),
                ..Sorted::default()
            };
        }
        self.compact(true);
        self.parts.first().cloned().unwrap_or_default()
    }

    /// Distinct scores with their counts, in decreasing score order.
    #[cfg(test)]
    fn thresholds(&mut self) -> Vec<Threshold> {
        let part = [self.as_one_part()];
        Descending::new(&part)
            .map(|(key, positives, negatives)| Threshold {
                score: from_order_key(key),
                positives,
                negatives,
            })
            .collect()
    }

    fn size(&self) -> usize {
        self.hashed.as_ref().map_or(0, |t| t.keys.len() * 24)
            + self.appended.size()
            + self.parts.iter().map(Sorted::size).sum::<usize>()
            + self.tree.as_ref().map_or(0, |t| t.len() * 40)
    }
}

fn evaluate<M: ScoreMetric>(pairs: &mut Pairs) -> Option<f64> {
    let threshold = |(key, positives, negatives): Entry| Threshold {
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
    // Walk the parts in place: no copy of what may be millions of scores.
    pairs.compact(false);
    let (p, n) = pairs
        .parts
        .iter()
        .map(Sorted::totals)
        .fold((0, 0), |(p, n), (ep, en)| (p + ep, n + en));
    (p + n > 0).then(|| M::evaluate(Descending::new(&pairs.parts).map(threshold), p, n))
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
        ("positive_keys", DataType::UInt64),
        ("negative_keys", DataType::UInt64),
    ]
    .into_iter()
    .map(|(part, t)| Arc::new(Field::new(format_state_name(name, part), list(t), true)))
    .collect()
}

/// Partial state: per group, the counted scores in increasing order with
/// their positive and negative counts, then the order keys of single
/// positive and single negative rows, each ascending (one group's lists
/// are handed over without a copy).
fn state_arrays<'a>(groups: impl Iterator<Item = &'a mut Pairs>) -> Result<Vec<ArrayRef>> {
    let parts: Vec<Sorted> = groups.map(Pairs::as_one_part).collect();
    let lengths = |len: fn(&Sorted) -> usize| OffsetBuffer::from_lengths(parts.iter().map(len));
    let keys = |list: fn(&Sorted) -> &ScalarBuffer<u64>| -> ScalarBuffer<u64> {
        match parts.as_slice() {
            [one] => list(one).clone(),
            _ => parts
                .iter()
                .flat_map(|part| list(part).iter().copied())
                .collect(),
        }
    };
    let counted = parts.iter().flat_map(|part| part.counted.iter());
    let mut arrays = list_state(
        &lengths(|part| part.counted.len()),
        vec![
            Arc::new(Float64Array::from_iter_values(
                counted.clone().map(|e| from_order_key(e.0)),
            )),
            Arc::new(UInt64Array::from_iter_values(counted.clone().map(|e| e.1))),
            Arc::new(UInt64Array::from_iter_values(counted.map(|e| e.2))),
        ],
    )?;
    arrays.extend(list_state(
        &lengths(|part| part.positive.len()),
        vec![Arc::new(UInt64Array::new(
            keys(|part| &part.positive),
            None,
        ))],
    )?);
    arrays.extend(list_state(
        &lengths(|part| part.negative.len()),
        vec![Arc::new(UInt64Array::new(
            keys(|part| &part.negative),
            None,
        ))],
    )?);
    Ok(arrays)
}

fn merge_state_row(pairs: &mut Pairs, states: &[ArrayRef], row: usize) -> Result<()> {
    let [scores, positives, negatives, positive_keys, negative_keys] = states else {
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
    // The state's key lists, as they are (a slice of its buffer).
    let keys = |array: &ArrayRef| list(array).as_primitive::<UInt64Type>().values().clone();
    // States list scores in increasing order: each part is sorted.
    pairs.add_run(Sorted {
        counted: s
            .values()
            .iter()
            .zip(p.values())
            .zip(n.values())
            .map(|((s, p), n)| (order_key(*s), *p, *n))
            .collect(),
        positive: keys(positive_keys),
        negative: keys(negative_keys),
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
            positive: ScalarBuffer::from(vec![order_key(2.0), order_key(5000.5)]),
            negative: ScalarBuffer::from(vec![order_key(-1.0)]),
        };
        let mut pairs = Pairs::default();
        pairs.add_run(run(0));
        pairs.add_run(run(1));
        pairs.add_run(run(0));
        pairs.add(order_key(3.0), 1, 0);
        assert_eq!(pairs.parts.len(), 3);
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
