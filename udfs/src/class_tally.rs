//! The machinery shared by the class statistics (`imbalance_ratio`,
//! `class_counts`, `c2_imbalance`): rows per class, with a row
//! [`Accumulator`] and a [`GroupsAccumulator`] (both retracting, for sliding
//! windows), partial-aggregation state, and [`ClassStatisticUdf`], which turns
//! a [`ClassStatistic`] into a DataFusion aggregate.
//!
//! NULL labels are ignored; the classes are those with at least one row in
//! the input (or window frame), sorted by value.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt64Array};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, UInt64Type};
use datafusion::common::{Result, ScalarValue, exec_err, internal_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator, Signature,
};

use crate::classes::{ClassCounts, ColumnClasses, NULL_CLASS, class_type};
use crate::generic_udf::{
    generic_udf_boilerplate, list_state, merge_groups, no_convert_to_state, row_selected,
};

/// A statistic of the class counts.
pub trait ClassStatistic: fmt::Debug + Send + Sync + 'static {
    const NAME: &'static str;
    fn documentation() -> &'static Documentation;
    fn return_type(class_type: &DataType) -> DataType;
    /// The statistic of the classes seen: `classes` (sorted by value, of the
    /// class type) and their row counts; both empty when no row was seen.
    fn evaluate(classes: &ArrayRef, counts: &[u64], return_type: &DataType) -> Result<ScalarValue>;
}

/// The statistic `S` of `counts`, its classes sorted by value.
fn evaluate<S: ClassStatistic>(
    counts: &ClassCounts,
    index: &ColumnClasses,
    return_type: &DataType,
) -> Result<ScalarValue> {
    let mut classes: Vec<u32> = counts.nonzero().map(|(c, _)| c as u32).collect();
    index.sort(&mut classes);
    let rows: Vec<u64> = classes.iter().map(|c| counts.get(*c as usize)).collect();
    S::evaluate(&index.values_of(&classes), &rows, return_type)
}

/// (class number, rows) of the classes with rows, for partial state.
fn nonzero_pairs(counts: &ClassCounts) -> Vec<(u32, u64)> {
    counts.nonzero().map(|(c, n)| (c as u32, n)).collect()
}

fn state_fields(name: &str, class_type: &DataType) -> Vec<FieldRef> {
    let list = |t: &DataType| DataType::List(Arc::new(Field::new_list_field(t.clone(), true)));
    vec![
        Arc::new(Field::new(
            format_state_name(name, "classes"),
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

fn state_arrays(index: &ColumnClasses, groups: &[Vec<(u32, u64)>]) -> Result<Vec<ArrayRef>> {
    let offsets = OffsetBuffer::from_lengths(groups.iter().map(Vec::len));
    let classes: Vec<u32> = groups.iter().flatten().map(|(c, _)| *c).collect();
    let counts = UInt64Array::from_iter_values(groups.iter().flatten().map(|(_, n)| *n));
    list_state(&offsets, vec![index.values_of(&classes), Arc::new(counts)])
}

fn merge_state_row(
    index: &mut ColumnClasses,
    tally: &mut ClassCounts,
    states: &[ArrayRef],
    row: usize,
    scratch: &mut Vec<u32>,
) -> Result<()> {
    let [classes, counts] = states else {
        return internal_err!("class tally state has {} columns, expected 2", states.len());
    };
    let (classes, counts) = (classes.as_list::<i32>(), counts.as_list::<i32>());
    if classes.is_null(row) {
        return Ok(());
    }
    index.index_rows(&classes.value(row), scratch)?;
    let counts = counts.value(row);
    for (c, n) in scratch
        .iter()
        .zip(counts.as_primitive::<UInt64Type>().values())
    {
        tally.add(*c as usize, *n);
    }
    Ok(())
}

#[derive(Debug)]
struct TallyAccumulator<S> {
    index: ColumnClasses,
    tally: ClassCounts,
    return_type: DataType,
    scratch: Vec<u32>,
    statistic: PhantomData<S>,
}

impl<S: ClassStatistic> Accumulator for TallyAccumulator<S> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.index.index_rows(&values[0], &mut self.scratch)?;
        for c in &self.scratch {
            if *c != NULL_CLASS {
                self.tally.add(*c as usize, 1);
            }
        }
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.index.index_rows(&values[0], &mut self.scratch)?;
        for c in &self.scratch {
            if *c != NULL_CLASS {
                self.tally.remove(*c as usize)?;
            }
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for row in 0..states.first().map_or(0, |s| s.len()) {
            merge_state_row(
                &mut self.index,
                &mut self.tally,
                states,
                row,
                &mut self.scratch,
            )?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        state_arrays(&self.index, &[nonzero_pairs(&self.tally)])?
            .iter()
            .map(|a| ScalarValue::try_from_array(a, 0))
            .collect()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        evaluate::<S>(&self.tally, &self.index, &self.return_type)
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.index.size() + self.tally.capacity() * 8
    }
}

#[derive(Debug)]
struct TallyGroupsAccumulator<S> {
    index: ColumnClasses,
    groups: Vec<ClassCounts>,
    return_type: DataType,
    scratch: Vec<u32>,
    statistic: PhantomData<S>,
}

impl<S: ClassStatistic> GroupsAccumulator for TallyGroupsAccumulator<S> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups
            .resize_with(total_num_groups, ClassCounts::default);
        self.index.index_rows(&values[0], &mut self.scratch)?;
        for (row, (c, g)) in self.scratch.iter().zip(group_indices).enumerate() {
            if *c != NULL_CLASS && row_selected(opt_filter, row) {
                self.groups[*g].add(*c as usize, 1);
            }
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
            |tally, row| merge_state_row(index, tally, values, row, scratch),
        )
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = emit_to.take_needed(&mut self.groups);
        let values = groups
            .iter()
            .map(|t| evaluate::<S>(t, &self.index, &self.return_type))
            .collect::<Result<Vec<_>>>()?;
        ScalarValue::iter_to_array(values)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let groups = emit_to.take_needed(&mut self.groups);
        let tallies: Vec<_> = groups.iter().map(nonzero_pairs).collect();
        state_arrays(&self.index, &tallies)
    }

    fn convert_to_state(
        &self,
        _values: &[ArrayRef],
        _opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        no_convert_to_state(S::NAME)
    }

    fn size(&self) -> usize {
        size_of::<Self>()
            + self.index.size()
            + self.groups.iter().map(|t| t.capacity() * 8).sum::<usize>()
            + self.groups.capacity() * size_of::<ClassCounts>()
    }
}

/// Any [`ClassStatistic`] as a DataFusion aggregate.
pub struct ClassStatisticUdf<S> {
    signature: Signature,
    marker: PhantomData<S>,
}

generic_udf_boilerplate!(ClassStatisticUdf, ClassStatistic);

impl<S: ClassStatistic> AggregateUDFImpl for ClassStatisticUdf<S> {
    fn name(&self) -> &str {
        S::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 1 {
            return plan_err!(
                "{} expects (label), got {} argument(s)",
                S::NAME,
                arg_types.len()
            );
        }
        Ok(vec![class_type(S::NAME, arg_types)?])
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [class_type] => Ok(S::return_type(class_type)),
            _ => internal_err!("{} planned with {} arguments", S::NAME, arg_types.len()),
        }
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let Some(field) = args.input_fields.first() else {
            return internal_err!("{} planned without arguments", S::NAME);
        };
        Ok(state_fields(args.name, field.data_type()))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if args.is_distinct {
            return exec_err!("{}(DISTINCT ...) is not supported", S::NAME);
        }
        Ok(Box::new(TallyAccumulator::<S> {
            index: ColumnClasses::new(args.expr_fields[0].data_type())?,
            tally: ClassCounts::default(),
            return_type: args.return_field.data_type().clone(),
            scratch: Vec::new(),
            statistic: PhantomData,
        }))
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        !args.is_distinct
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(TallyGroupsAccumulator::<S> {
            index: ColumnClasses::new(args.expr_fields[0].data_type())?,
            groups: Vec::new(),
            return_type: args.return_field.data_type().clone(),
            scratch: Vec::new(),
            statistic: PhantomData,
        }))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(S::documentation())
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    /// Statistic `S` of integer labels, with the row accumulator.
    pub fn statistic_of<S: ClassStatistic>(labels: &[Option<i64>]) -> Result<ScalarValue> {
        let mut acc = TallyAccumulator::<S> {
            index: ColumnClasses::new(&DataType::Int64)?,
            tally: ClassCounts::default(),
            return_type: S::return_type(&DataType::Int64),
            scratch: Vec::new(),
            statistic: PhantomData,
        };
        acc.update_batch(&[Arc::new(Int64Array::from(labels.to_vec()))])?;
        acc.evaluate()
    }
}
