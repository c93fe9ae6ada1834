//! The detectors as SQL window functions, evaluated row by row in the
//! window's order: `adwin(value [, delta]) OVER (ORDER BY t)`,
//! `page_hinkley(value)`, `hddm_a(value)`, `hddm_w(value)`, `ddm(error)`,
//! `eddm(error)`, `kswin(value)`, and `ddm_oci(label, prediction)` (the
//! recall of the current minority class; see [`super::ddm_oci`]). Each
//! returns the detector's state after the row: `none`,
//! `warning` or `drift`.
//!
//! Value inputs take any numeric column; error inputs a Boolean or an
//! integer column of 0 and 1 (another integer is an error naming it). A
//! NULL input leaves the detector as it is and gives NULL. The functions are
//! causal and need only the current row, so they run on unbounded input
//! (`BoundedWindowAggExec`), one detector per window partition.

use std::ops::Range;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    DocSection, Documentation, PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl,
};
use datafusion::physical_expr::expressions::Literal;

use super::{Adwin, Ddm, DdmOci, DriftDetector, Eddm, HddmA, HddmW, Kswin, PageHinkley};
use crate::class_label::{ClassValue, check_label_type, class_slots, for_each_class};
use crate::features::ClassIndex;

/// The detectors SQL knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DetectorKind {
    Adwin,
    PageHinkley,
    HddmA,
    HddmW,
    Ddm,
    Eddm,
    Kswin,
}

impl DetectorKind {
    pub const ALL: [Self; 7] = [
        Self::Adwin,
        Self::PageHinkley,
        Self::HddmA,
        Self::HddmW,
        Self::Ddm,
        Self::Eddm,
        Self::Kswin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Adwin => "adwin",
            Self::PageHinkley => "page_hinkley",
            Self::HddmA => "hddm_a",
            Self::HddmW => "hddm_w",
            Self::Ddm => "ddm",
            Self::Eddm => "eddm",
            Self::Kswin => "kswin",
        }
    }

    /// Whether the input is an error indicator (0/1) rather than a value.
    fn takes_errors(self) -> bool {
        matches!(self, Self::Ddm | Self::Eddm)
    }

    fn usage(self) -> String {
        match self {
            Self::Adwin => "adwin(value [, delta])".to_string(),
            k if k.takes_errors() => format!("{}(error)", k.name()),
            k => format!("{}(value)", k.name()),
        }
    }

    fn detector(self, delta: Option<f64>) -> Box<dyn DriftDetector> {
        match self {
            Self::Adwin => {
                let mut adwin = Adwin::default();
                if let Some(delta) = delta {
                    adwin.delta = delta;
                }
                Box::new(adwin)
            }
            Self::PageHinkley => Box::new(PageHinkley::default()),
            Self::HddmA => Box::new(HddmA::default()),
            Self::HddmW => Box::new(HddmW::default()),
            Self::Ddm => Box::new(Ddm::default()),
            Self::Eddm => Box::new(Eddm::default()),
            Self::Kswin => Box::new(Kswin::default()),
        }
    }
}

/// A detector as a window function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DetectorWindow {
    kind: DetectorKind,
    signature: Signature,
}

impl DetectorWindow {
    pub fn udwf(kind: DetectorKind) -> Arc<WindowUDF> {
        Arc::new(WindowUDF::from(Self {
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        }))
    }
}

/// Every detector's window function.
pub fn window_functions() -> Vec<Arc<WindowUDF>> {
    let mut functions: Vec<_> = DetectorKind::ALL
        .iter()
        .map(|&k| DetectorWindow::udwf(k))
        .collect();
    functions.push(Arc::new(WindowUDF::from(DdmOciWindow::default())));
    functions
}

impl WindowUDFImpl for DetectorWindow {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.kind.name();
        let arity_ok = match self.kind {
            DetectorKind::Adwin => (1..=2).contains(&arg_types.len()),
            _ => arg_types.len() == 1,
        };
        if !arity_ok {
            return plan_err!(
                "{name} expects {}, got {} argument(s)",
                self.kind.usage(),
                arg_types.len()
            );
        }
        let input = &arg_types[0];
        let accepted = if self.kind.takes_errors() {
            input.is_integer() || matches!(input, DataType::Boolean | DataType::Null)
        } else {
            input.is_integer() || input.is_floating() || matches!(input, DataType::Null)
        };
        if !accepted {
            let what = if self.kind.takes_errors() {
                "a Boolean or 0/1 integer error column"
            } else {
                "a numeric column"
            };
            return plan_err!("{name}: the input must be {what}, not {input}");
        }
        let first = if self.kind.takes_errors() && !matches!(input, DataType::Boolean) {
            DataType::Int64
        } else if self.kind.takes_errors() {
            DataType::Boolean
        } else {
            DataType::Float64
        };
        let mut coerced = vec![first];
        if arg_types.len() == 2 {
            coerced.push(DataType::Float64);
        }
        Ok(coerced)
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        let name = self.kind.name();
        let delta = match args.input_exprs().get(1) {
            None => None,
            Some(expr) => {
                let Some(literal) = expr.downcast_ref::<Literal>() else {
                    return plan_err!("{name}: delta must be a constant");
                };
                match literal.value().cast_to(&DataType::Float64)? {
                    ScalarValue::Float64(Some(d)) if d > 0.0 && d < 1.0 => Some(d),
                    other => return plan_err!("{name}: delta must lie in (0, 1), got {other}"),
                }
            }
        };
        Ok(Box::new(DetectorEvaluator {
            kind: self.kind,
            detector: self.kind.detector(delta),
            numbers: None,
        }))
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(
            field_args.name(),
            DataType::Utf8,
            true,
        )))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOCS: LazyLock<Vec<(DetectorKind, Documentation)>> = LazyLock::new(|| {
            DetectorKind::ALL
                .iter()
                .map(|&kind| {
                    let doc = Documentation::builder(
                        DocSection {
                            include: true,
                            label: "Equipoise drift detectors",
                            description: None,
                        },
                        format!(
                            "State of the {} detector (River's rule and defaults) after the \
                             row: none, warning or drift.",
                            kind.name()
                        ),
                        format!("{} OVER (ORDER BY ...)", kind.usage()),
                    )
                    .build();
                    (kind, doc)
                })
                .collect()
        });
        DOCS.iter().find(|(k, _)| *k == self.kind).map(|(_, d)| d)
    }
}

struct DetectorEvaluator {
    kind: DetectorKind,
    detector: Box<dyn DriftDetector>,
    /// The input array of the rows being evaluated and its values as
    /// numbers: bounded execution calls `evaluate` once per row with the
    /// same arrays for a whole batch, and casting (and checking) a
    /// one-row slice per row cost many times the detector's update.
    numbers: Option<(ArrayRef, Float64Array)>,
}

impl std::fmt::Debug for DetectorEvaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetectorEvaluator")
            .field("kind", &self.kind)
            .finish()
    }
}

impl DetectorEvaluator {
    fn step(&mut self, x: Option<f64>) -> Option<&'static str> {
        x.map(|x| self.detector.update(x).name())
    }

    /// Row `row` of `values` as a number, from the cast of the whole
    /// array, made once per array.
    fn number_at(&mut self, values: &[ArrayRef], row: usize) -> Result<Option<f64>> {
        let column = &values[0];
        let cached = matches!(&self.numbers, Some((source, _)) if Arc::ptr_eq(source, column));
        if !cached {
            let numbers = cast(column, &DataType::Float64)?
                .as_primitive::<Float64Type>()
                .clone();
            self.numbers = Some((Arc::clone(column), numbers));
        }
        let Some((_, numbers)) = &self.numbers else {
            return Ok(None);
        };
        if row >= numbers.len() || numbers.is_null(row) {
            return Ok(None);
        }
        let x = numbers.value(row);
        if self.kind.takes_errors() && x != 0.0 && x != 1.0 {
            return exec_err!(
                "{}: an error input must be 0 or 1 (or a Boolean), got {x}",
                self.kind.name()
            );
        }
        Ok(Some(x))
    }
}

impl PartitionEvaluator for DetectorEvaluator {
    fn is_causal(&self) -> bool {
        true
    }

    fn supports_bounded_execution(&self) -> bool {
        true
    }

    fn evaluate(&mut self, values: &[ArrayRef], range: &Range<usize>) -> Result<ScalarValue> {
        // Called once per row, in order: the range is the current row.
        let x = self.number_at(values, range.start)?;
        Ok(ScalarValue::Utf8(self.step(x).map(str::to_string)))
    }

    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        // Straight from the cast array into a builder sized for the states
        // (at most 7 bytes each): a whole partition at a time is the fast
        // path, and an intermediate vector cost a third of it.
        let mut states = StringBuilder::with_capacity(num_rows, num_rows * 7);
        for row in 0..num_rows {
            match self.number_at(values, row)? {
                Some(x) => states.append_value(self.detector.update(x).name()),
                None => states.append_null(),
            }
        }
        Ok(Arc::new(states.finish()))
    }
}

/// `ddm_oci(label, prediction)`: DDM-OCI's state after the row.
///
/// The recall monitor of every class is updated on that class's rows; the
/// result follows the current minority class (smallest decayed size): on
/// its rows the monitor's state, on other rows `warning` while the
/// minority's monitor is in its warning zone and `none` otherwise. A NULL
/// label or prediction gives NULL and changes nothing.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DdmOciWindow {
    signature: Signature,
}

impl Default for DdmOciWindow {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl WindowUDFImpl for DdmOciWindow {
    fn name(&self) -> &str {
        "ddm_oci"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [label, prediction] = arg_types else {
            return plan_err!(
                "ddm_oci expects (label, prediction), got {} argument(s)",
                arg_types.len()
            );
        };
        check_label_type("ddm_oci label", label)?;
        check_label_type("ddm_oci prediction", prediction)?;
        // Compare classes as values of one type.
        let common = if label == prediction {
            label.clone()
        } else if label.is_integer() && prediction.is_integer() {
            DataType::Int64
        } else {
            DataType::Utf8
        };
        Ok(vec![common.clone(), common])
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(DdmOciEvaluator::default()))
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(
            field_args.name(),
            DataType::Utf8,
            true,
        )))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DocSection {
                    include: true,
                    label: "Equipoise drift detectors",
                    description: None,
                },
                "State of DDM-OCI (time-decayed recall of the minority class) after the row: \
                 none, warning or drift.",
                "ddm_oci(label, prediction) OVER (ORDER BY ...)",
            )
            .build()
        });
        Some(&DOC)
    }
}

#[derive(Debug, Default)]
struct DdmOciEvaluator {
    classes: ClassIndex,
    detector: DdmOci,
    /// The label and prediction arrays of the rows being evaluated row by
    /// row, and their classes (read once per pair of arrays, not per row;
    /// see `DetectorEvaluator::numbers`).
    rows: Option<BatchClasses>,
}

/// A label array, a prediction array, and the class of each of their rows.
#[derive(Debug)]
struct BatchClasses {
    label: ArrayRef,
    prediction: ArrayRef,
    truths: Vec<Option<ClassValue>>,
    predictions: Vec<Option<ClassValue>>,
}

/// The class of every row of `column`.
fn classes_of(column: &ArrayRef) -> Result<Vec<Option<ClassValue>>> {
    let mut classes = vec![None; column.len()];
    for_each_class(column, |row, class| classes[row] = class)?;
    Ok(classes)
}

impl DdmOciEvaluator {
    fn states(&mut self, values: &[ArrayRef], range: Range<usize>) -> Result<StringArray> {
        let mut slots = [Vec::new(), Vec::new()];
        for (column, out) in values.iter().zip(&mut slots) {
            let column = column.slice(range.start, range.len());
            *out = class_slots(&column, |c| self.classes.slot(c))?;
        }
        let [truth, predicted] = slots;
        Ok(truth
            .into_iter()
            .zip(predicted)
            .map(|pair| match pair {
                (Some(t), Some(p)) => Some(self.detector.update(t, t == p).name()),
                _ => None,
            })
            .collect())
    }
}

impl PartitionEvaluator for DdmOciEvaluator {
    fn is_causal(&self) -> bool {
        true
    }

    fn supports_bounded_execution(&self) -> bool {
        true
    }

    fn evaluate(&mut self, values: &[ArrayRef], range: &Range<usize>) -> Result<ScalarValue> {
        let [label, prediction] = values else {
            return exec_err!("ddm_oci takes (label, prediction)");
        };
        let cached = matches!(&self.rows, Some(rows)
            if Arc::ptr_eq(&rows.label, label) && Arc::ptr_eq(&rows.prediction, prediction));
        if !cached {
            self.rows = Some(BatchClasses {
                label: Arc::clone(label),
                prediction: Arc::clone(prediction),
                truths: classes_of(label)?,
                predictions: classes_of(prediction)?,
            });
        }
        let Some(BatchClasses {
            truths,
            predictions,
            ..
        }) = &self.rows
        else {
            return Ok(ScalarValue::Utf8(None));
        };
        let row = range.start;
        let (truth, predicted) = (
            truths.get(row).cloned().flatten(),
            predictions.get(row).cloned().flatten(),
        );
        // Slots in the order the rows bring the classes: the label first.
        let truth = truth.map(|c| self.classes.slot(c));
        let predicted = predicted.map(|c| self.classes.slot(c));
        let state = match (truth, predicted) {
            (Some(t), Some(p)) => Some(self.detector.update(t, t == p).name()),
            _ => None,
        };
        Ok(ScalarValue::Utf8(state.map(str::to_string)))
    }

    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        Ok(Arc::new(self.states(values, 0..num_rows)?))
    }
}
