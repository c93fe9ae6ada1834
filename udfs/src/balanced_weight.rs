//! `balanced_weight(label) OVER (... ROWS BETWEEN ... AND CURRENT ROW)`: the
//! weight scikit-learn's `class_weight='balanced'` gives the current row's
//! class, computed over the frame: `N / (C * n_class)`, where N is the
//! labelled rows in the frame, C the classes present in it and n_class the
//! rows of the current row's class. NULL for a row with a NULL label.
//!
//! The frame must be a `ROWS` frame that ends at `CURRENT ROW` (a sliding
//! window `n PRECEDING`, or `UNBOUNDED PRECEDING` for everything so far):
//! that is what a stream can compute without looking ahead, and it makes the
//! current row the frame's last. Other frames are a planning error.
//!
//! The class counts of the frame are kept incrementally as the frame slides,
//! so a row costs O(1) plus the rows that enter and leave the frame.

use std::ops::Range;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{
    PartitionEvaluatorArgs, WindowFunctionSimplification, WindowUDFFieldArgs,
};
use datafusion::logical_expr::{
    Documentation, Expr, PartitionEvaluator, Signature, Volatility, WindowFrameBound,
    WindowFrameUnits, WindowUDF, WindowUDFImpl,
};

use crate::classes::{ColumnClasses, NULL_CLASS, class_type};

pub const NAME: &str = "balanced_weight";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct BalancedWeight {
    signature: Signature,
}

impl Default for BalancedWeight {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The `balanced_weight` window function.
pub fn balanced_weight_udwf() -> Arc<WindowUDF> {
    Arc::new(WindowUDF::from(BalancedWeight::default()))
}

impl WindowUDFImpl for BalancedWeight {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 1 {
            return plan_err!(
                "{NAME} expects (label), got {} argument(s)",
                arg_types.len()
            );
        }
        Ok(vec![class_type(NAME, arg_types)?])
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        let Some(field) = args.input_fields().first() else {
            return plan_err!("{NAME} expects (label)");
        };
        Ok(Box::new(BalancedWeightEvaluator {
            index: ColumnClasses::new(field.data_type())?,
            values: None,
            rows: Vec::new(),
            frame: 0..0,
            counts: Vec::new(),
            classes: 0,
            labelled: 0,
        }))
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(
            field_args.name(),
            DataType::Float64,
            true,
        )))
    }

    fn simplify(&self) -> Option<WindowFunctionSimplification> {
        // Not a rewrite: the one place where the frame of the call is
        // visible, so an unsupported frame fails at planning.
        Some(Box::new(|function, _| {
            let frame = &function.params.window_frame;
            if frame.units == WindowFrameUnits::Rows
                && frame.end_bound == WindowFrameBound::CurrentRow
            {
                Ok(Expr::from(function))
            } else {
                plan_err!(
                    "{NAME} needs a ROWS frame that ends at CURRENT ROW, e.g. OVER (ORDER BY seq \
                     ROWS BETWEEN 999 PRECEDING AND CURRENT ROW), got {frame}"
                )
            }
        }))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                crate::doc::DOC_SECTION,
                "Class-balanced weight of the current row within a ROWS frame ending at \
                 CURRENT ROW: N / (C * n_class), as scikit-learn's class_weight='balanced'.",
                "balanced_weight(label) OVER (ORDER BY ... ROWS BETWEEN n PRECEDING AND CURRENT ROW)",
            )
            .with_argument("label", "Class: integer, boolean or string column.")
            .build()
        });
        Some(&DOC)
    }
}

#[derive(Debug)]
struct BalancedWeightEvaluator {
    index: ColumnClasses,
    /// The buffer the counts refer to; DataFusion hands a new one per batch
    /// (after pruning rows that left every frame), so indexes restart there.
    values: Option<ArrayRef>,
    /// Class number of each row of `values`.
    rows: Vec<u32>,
    frame: Range<usize>,
    counts: Vec<u64>,
    classes: usize,
    labelled: u64,
}

impl BalancedWeightEvaluator {
    fn add(&mut self, row: usize) {
        let class = self.rows[row];
        if class == NULL_CLASS {
            return;
        }
        let i = class as usize;
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        if self.counts[i] == 0 {
            self.classes += 1;
        }
        self.counts[i] += 1;
        self.labelled += 1;
    }

    fn remove(&mut self, row: usize) {
        let class = self.rows[row];
        if class == NULL_CLASS {
            return;
        }
        let i = class as usize;
        self.counts[i] -= 1;
        if self.counts[i] == 0 {
            self.classes -= 1;
        }
        self.labelled -= 1;
    }

    fn reset(&mut self, frame: &Range<usize>) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.classes = 0;
        self.labelled = 0;
        for row in frame.clone() {
            self.add(row);
        }
        self.frame = frame.clone();
    }

    /// Move the counts from `self.frame` to `frame` on the same buffer.
    fn slide(&mut self, frame: &Range<usize>) {
        let old = self.frame.clone();
        if frame.start < old.start || frame.end < old.end || frame.start >= old.end {
            self.reset(frame);
            return;
        }
        for row in old.start..frame.start {
            self.remove(row);
        }
        for row in old.end..frame.end {
            self.add(row);
        }
        self.frame = frame.clone();
    }
}

impl PartitionEvaluator for BalancedWeightEvaluator {
    fn uses_window_frame(&self) -> bool {
        true
    }

    fn supports_bounded_execution(&self) -> bool {
        true
    }

    fn evaluate(&mut self, values: &[ArrayRef], range: &Range<usize>) -> Result<ScalarValue> {
        let labels = &values[0];
        let same_buffer = self.values.as_ref().is_some_and(|v| Arc::ptr_eq(v, labels));
        if same_buffer {
            self.slide(range);
        } else {
            self.index.index_rows(labels, &mut self.rows)?;
            self.values = Some(Arc::clone(labels));
            self.reset(range);
        }
        // The frame ends at CURRENT ROW (checked at planning): the current
        // row is its last.
        let Some(current) = range.end.checked_sub(1) else {
            return Ok(ScalarValue::Float64(None));
        };
        let class = self.rows[current];
        if class == NULL_CLASS || range.is_empty() {
            return Ok(ScalarValue::Float64(None));
        }
        let n_class = self.counts[class as usize];
        Ok(ScalarValue::Float64(Some(
            self.labelled as f64 / (self.classes as f64 * n_class as f64),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    fn weights(labels: &[Option<i64>], width: usize) -> Result<Vec<Option<f64>>> {
        let mut evaluator =
            BalancedWeight::default().partition_evaluator(PartitionEvaluatorArgs::new(
                &[],
                &[Arc::new(Field::new("label", DataType::Int64, true))],
                false,
                false,
            ))?;
        let values: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(labels.to_vec()))];
        (0..labels.len())
            .map(|i| {
                let range = (i + 1).saturating_sub(width)..i + 1;
                match evaluator.evaluate(&values, &range)? {
                    ScalarValue::Float64(v) => Ok(v),
                    other => datafusion::common::internal_err!("unexpected {other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn sliding_frames_match_a_direct_count() -> Result<()> {
        let labels: Vec<Option<i64>> = (0..200)
            .map(|i: i64| {
                if i % 17 == 0 {
                    None
                } else {
                    Some((i * i) % 5 % 3)
                }
            })
            .collect();
        let width = 10;
        let got = weights(&labels, width)?;
        for (i, weight) in got.iter().enumerate() {
            let frame = &labels[(i + 1).saturating_sub(width)..=i];
            let expected = labels[i].map(|class| {
                let labelled: Vec<i64> = frame.iter().flatten().copied().collect();
                let mut classes = labelled.clone();
                classes.sort_unstable();
                classes.dedup();
                let n_class = labelled.iter().filter(|c| **c == class).count();
                labelled.len() as f64 / (classes.len() as f64 * n_class as f64)
            });
            assert_eq!(*weight, expected, "row {i}");
        }
        Ok(())
    }
}
