//! Any neighbourhood measure as a DataFusion aggregate over
//! `(label, feature, feature, ...)` or `(label, class, feature, ...)`.
//!
//! The state is every eligible row (label and finite features): these
//! measures are exact, so nothing can be summarised before the end. Partial
//! states are list-encoded rows and merge by concatenation; a sliding
//! window frame retracts its oldest rows. Rows are put in canonical order
//! before the search, so the value does not depend on how partitions were
//! merged. There is no `GroupsAccumulator`: the cost is the neighbour
//! search at evaluation, not the per-row accumulation.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, ListArray, StringArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err, internal_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;

use super::{ClassedRows, LabelledRows};
use crate::class_label::{ClassValue, for_each_class};

/// A measure computed from the rows' neighbourhoods.
pub trait NeighbourMeasure: Send + Sync + 'static {
    const NAME: &'static str;
    /// Whether the second argument names the class the measure is about.
    const PER_CLASS: bool;

    fn documentation() -> &'static Documentation;

    /// The measure over `rows` (canonical order; `class_of` is the rank in
    /// `classes`), for class `class` (a rank) when one was named and is
    /// present. `None` is SQL NULL.
    fn evaluate(rows: &ClassedRows, classes: &[ClassValue], class: Option<u32>) -> Option<f64>;
}

/// `M` as an aggregate UDF.
pub struct NeighbourMeasureUdf<M> {
    signature: Signature,
    measure: PhantomData<M>,
}

impl<M: NeighbourMeasure> NeighbourMeasureUdf<M> {
    pub fn udaf() -> Arc<AggregateUDF> {
        Arc::new(AggregateUDF::from(Self {
            signature: Signature::user_defined(Volatility::Immutable),
            measure: PhantomData,
        }))
    }

    fn first_feature() -> usize {
        if M::PER_CLASS { 2 } else { 1 }
    }

    fn usage() -> String {
        if M::PER_CLASS {
            format!("{}(label, class, feature [, feature ...])", M::NAME)
        } else {
            format!("{}(label, feature [, feature ...])", M::NAME)
        }
    }
}

impl<M> fmt::Debug for NeighbourMeasureUdf<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NeighbourMeasureUdf").finish()
    }
}

impl<M: NeighbourMeasure> PartialEq for NeighbourMeasureUdf<M> {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl<M: NeighbourMeasure> Eq for NeighbourMeasureUdf<M> {}

impl<M: NeighbourMeasure> Hash for NeighbourMeasureUdf<M> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        M::NAME.hash(state);
    }
}

/// The type labels are carried in: integers widen to Int64, strings to Utf8.
fn label_type(name: &str, t: &DataType) -> Result<DataType> {
    match t {
        t if t.is_integer() => Ok(DataType::Int64),
        DataType::Boolean => Ok(DataType::Boolean),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(DataType::Utf8),
        DataType::Null => Ok(DataType::Int64),
        other => {
            plan_err!("{name}: the label must be an integer, boolean or string column, not {other}")
        }
    }
}

impl<M: NeighbourMeasure> AggregateUDFImpl for NeighbourMeasureUdf<M> {
    fn name(&self) -> &str {
        M::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let first = Self::first_feature();
        if arg_types.len() <= first {
            return plan_err!(
                "{} expects {}, got {} argument(s)",
                M::NAME,
                Self::usage(),
                arg_types.len()
            );
        }
        let label = label_type(M::NAME, &arg_types[0])?;
        let mut coerced = vec![label.clone()];
        if M::PER_CLASS {
            coerced.push(label);
        }
        for (i, t) in arg_types.iter().enumerate().skip(first) {
            if !(t.is_integer() || t.is_floating() || matches!(t, DataType::Null)) {
                return plan_err!(
                    "{}: argument {} is a feature and must be numeric, not {t}",
                    M::NAME,
                    i + 1
                );
            }
            coerced.push(DataType::Float64);
        }
        Ok(coerced)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let Some(label) = args.input_fields.first() else {
            return internal_err!("{} planned without arguments", M::NAME);
        };
        let list = |name: &str, t: &DataType| {
            Arc::new(Field::new_list(
                format!("{}[{name}]", args.name),
                Field::new_list_field(t.clone(), true),
                true,
            ))
        };
        Ok(vec![
            list("labels", label.data_type()),
            list("features", &DataType::Float64),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if args.is_distinct {
            return exec_err!("{}(DISTINCT ...) is not supported", M::NAME);
        }
        let class = if M::PER_CLASS {
            let Some(literal) = args.exprs.get(1).and_then(|e| e.downcast_ref::<Literal>()) else {
                return plan_err!(
                    "{}: the class argument must be a constant, as in {}",
                    M::NAME,
                    Self::usage()
                );
            };
            let value = literal.value().cast_to(args.expr_fields[0].data_type())?;
            match scalar_class(&value) {
                Some(class) => Some(class),
                None => return plan_err!("{}: the class argument must not be NULL", M::NAME),
            }
        } else {
            None
        };
        let dim = args.exprs.len().saturating_sub(Self::first_feature());
        Ok(Box::new(MeasureAccumulator::<M> {
            rows: LabelledRows::new(dim),
            label_type: args.expr_fields[0].data_type().clone(),
            class,
            measure: PhantomData,
        }))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(M::documentation())
    }
}

fn scalar_class(value: &ScalarValue) -> Option<ClassValue> {
    match value {
        ScalarValue::Int64(Some(v)) => Some(ClassValue::Int(*v)),
        ScalarValue::Boolean(Some(v)) => Some(ClassValue::Bool(*v)),
        ScalarValue::Utf8(Some(v)) => Some(ClassValue::Str(v.clone())),
        _ => None,
    }
}

struct MeasureAccumulator<M> {
    rows: LabelledRows,
    label_type: DataType,
    class: Option<ClassValue>,
    measure: PhantomData<M>,
}

impl<M> fmt::Debug for MeasureAccumulator<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeasureAccumulator")
            .field("rows", &self.rows.len())
            .finish()
    }
}

impl<M: NeighbourMeasure> MeasureAccumulator<M> {
    fn split<'a>(&self, values: &'a [ArrayRef]) -> Result<(&'a ArrayRef, &'a [ArrayRef])> {
        let first = NeighbourMeasureUdf::<M>::first_feature();
        match values.first() {
            Some(label) if values.len() == first + self.rows.dim => Ok((label, &values[first..])),
            _ => internal_err!("{}: {} argument arrays", M::NAME, values.len()),
        }
    }

    fn labels_array(&self) -> ArrayRef {
        let labels = &self.rows.labels;
        match self.label_type {
            DataType::Boolean => Arc::new(
                labels
                    .iter()
                    .map(|l| match l {
                        ClassValue::Bool(b) => Some(*b),
                        _ => None,
                    })
                    .collect::<BooleanArray>(),
            ),
            DataType::Utf8 => Arc::new(
                labels
                    .iter()
                    .map(|l| Some(l.to_string()))
                    .collect::<StringArray>(),
            ),
            _ => Arc::new(
                labels
                    .iter()
                    .map(|l| match l {
                        ClassValue::Int(i) => Some(*i),
                        _ => None,
                    })
                    .collect::<Int64Array>(),
            ),
        }
    }
}

fn one_row_list(values: ArrayRef) -> Result<ScalarValue> {
    let field = Arc::new(Field::new_list_field(values.data_type().clone(), true));
    let offsets = OffsetBuffer::from_lengths([values.len()]);
    let list = ListArray::try_new(field, offsets, values, None)?;
    Ok(ScalarValue::List(Arc::new(list)))
}

impl<M: NeighbourMeasure> Accumulator for MeasureAccumulator<M> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let (label, features) = self.split(values)?;
        self.rows.extend(label, features)?;
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        // A sliding frame retracts the rows it added first, in order.
        let (label, features) = self.split(values)?;
        let leaving = super::eligible_rows(label, features)?.len();
        self.rows.drop_front(leaving);
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [labels, features] = states else {
            return internal_err!("{}: {} state arrays", M::NAME, states.len());
        };
        let labels = labels.as_list::<i32>();
        let features = features.as_list::<i32>();
        for row in 0..labels.len() {
            if labels.is_null(row) {
                continue;
            }
            let row_labels = labels.value(row);
            let row_features = features.value(row);
            let values = row_features.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
            let dim = self.rows.dim;
            if values.len() != row_labels.len() * dim {
                return internal_err!("{}: malformed partial state", M::NAME);
            }
            let mut classes = Vec::with_capacity(row_labels.len());
            for_each_class(&row_labels, |_, class| classes.push(class))?;
            for (i, class) in classes.into_iter().enumerate() {
                let Some(class) = class else {
                    return internal_err!("{}: NULL label in partial state", M::NAME);
                };
                self.rows.labels.push(class);
                self.rows
                    .features
                    .extend_from_slice(&values.values()[i * dim..(i + 1) * dim]);
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let features: ArrayRef = Arc::new(Float64Array::from(self.rows.features.clone()));
        Ok(vec![
            one_row_list(self.labels_array())?,
            one_row_list(features)?,
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let (rows, classes) = self.rows.canonical();
        let class = match &self.class {
            Some(c) => match classes.binary_search(c) {
                Ok(rank) => Some(rank as u32),
                // A class with no rows: the measure has nothing to average.
                Err(_) => return Ok(ScalarValue::Float64(None)),
            },
            None => None,
        };
        Ok(ScalarValue::Float64(M::evaluate(&rows, &classes, class)))
    }

    fn size(&self) -> usize {
        size_of::<Self>()
            + self.rows.features.capacity() * size_of::<f64>()
            + self.rows.labels.capacity() * size_of::<ClassValue>()
    }
}
