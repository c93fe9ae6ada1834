//! Which columns an operator reads as its label and its numeric features.
//!
//! By default every integer or float column other than the label and the
//! Kafka metadata columns (`_partition`, `_offset`, `_timestamp`, `_key`) is
//! a feature; `features=a b c` names them, `exclude=id seq` removes some.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Schema};
use datafusion::common::{Result, plan_err};

use equipoise_udfs::classes::ClassDictionary;

use crate::class_label::{ClassValue, check_label_type, class_slots};
use crate::columns::METADATA_COLUMNS;

/// The `features` and `exclude` options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureSelection {
    pub features: Option<Vec<String>>,
    pub exclude: Vec<String>,
}

/// Label and feature columns resolved against a schema.
#[derive(Debug, Clone)]
pub struct LabelAndFeatures {
    pub label_index: usize,
    pub feature_indices: Vec<usize>,
}

/// The column names of `schema`, for error messages ("columns are: ...").
pub fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_numeric(t: &DataType) -> bool {
    t.is_integer() || t.is_floating()
}

impl FeatureSelection {
    /// The selection of the `features` and `exclude` options.
    pub fn from_options(
        features: Option<Vec<String>>,
        exclude: Option<Vec<String>>,
    ) -> Result<Self> {
        if features.as_ref().is_some_and(Vec::is_empty) {
            return plan_err!("features is empty");
        }
        Ok(Self {
            features,
            exclude: exclude.unwrap_or_default(),
        })
    }

    /// Find the label and features of `function` in `input`, refusing an
    /// input that already has one of the `reserved` output columns.
    pub fn resolve(
        &self,
        function: &str,
        input: &Schema,
        label: &str,
        reserved: &[&str],
    ) -> Result<LabelAndFeatures> {
        let names = || column_list(input);
        let Ok(label_index) = input.index_of(label) else {
            return plan_err!(
                "{function}: label column '{label}' not found; columns are: {}",
                names()
            );
        };
        check_label_type(label, input.field(label_index).data_type())?;
        for column in reserved {
            if input.index_of(column).is_ok() {
                return plan_err!(
                    "{function}: the input already has a '{column}' column (applied twice?)"
                );
            }
        }
        for excluded in &self.exclude {
            if input.index_of(excluded).is_err() {
                return plan_err!(
                    "{function}: excluded column '{excluded}' not found; columns are: {}",
                    names()
                );
            }
        }
        let feature_indices = match &self.features {
            Some(features) => {
                let mut indices = Vec::new();
                for feature in features {
                    let Ok(i) = input.index_of(feature) else {
                        return plan_err!(
                            "{function}: feature column '{feature}' not found; columns are: {}",
                            names()
                        );
                    };
                    if i == label_index || !is_numeric(input.field(i).data_type()) {
                        return plan_err!(
                            "{function}: feature column '{feature}' must be a numeric column \
                             other than the label"
                        );
                    }
                    if !self.exclude.contains(feature) {
                        indices.push(i);
                    }
                }
                indices
            }
            None => (0..input.fields().len())
                .filter(|&i| {
                    let field = input.field(i);
                    i != label_index
                        && is_numeric(field.data_type())
                        && !METADATA_COLUMNS.contains(&field.name().as_str())
                        && !self.exclude.contains(field.name())
                })
                .collect(),
        };
        Ok(LabelAndFeatures {
            label_index,
            feature_indices,
        })
    }
}

/// Features of a batch, row-major, and which rows may seed or neighbour.
#[derive(Debug)]
pub struct BatchFeatures {
    pub dim: usize,
    pub values: Vec<f64>,
    /// Class slot of each row, `None` for an ineligible row.
    pub slots: Vec<Option<usize>>,
    /// Class slot of each labelled row (eligible or not), for class counts.
    pub labelled: Vec<Option<usize>>,
    /// Whether each row's features are all present and finite.
    pub complete: Vec<bool>,
}

/// Whether feature value `v` of row `row` can be used: present (not NULL
/// in `nulls`) and finite. A row is eligible when all its values are.
#[inline(always)]
fn usable(nulls: Option<&NullBuffer>, row: usize, v: f64) -> bool {
    nulls.is_none_or(|n| n.is_valid(row)) && v.is_finite()
}

/// Each row's class slot, `None` for a NULL label, read without the
/// features: a bounded input holds its batches as they came and checks
/// the eligibility of only the rows it reads, with [`gather_eligible`]
/// (a method that fills the minority from its own rows never reads the
/// majority's features).
pub fn batch_labels(
    batch: &RecordBatch,
    label_index: usize,
    classes: &mut ClassIndex,
) -> Result<Vec<Option<usize>>> {
    class_slots(batch.column(label_index), |c| classes.slot(c))
}

/// The eligible rows among `rows` of `batch` (every feature present and
/// finite, as [`batch_features`] decides) and their features, row-major.
/// Eligibility is checked as the values are copied: one pass over them.
pub fn gather_eligible(
    batch: &RecordBatch,
    feature_indices: &[usize],
    mut rows: Vec<u32>,
) -> Result<(Vec<u32>, Vec<f64>)> {
    let dim = feature_indices.len();
    let columns = float_columns(batch, feature_indices)?;
    let (mut values, complete) = row_major(&columns, rows.len(), |i| rows[i] as usize);
    if complete.iter().all(|&ok| ok) {
        return Ok((rows, values));
    }
    // Ineligible rows are rare: close the gaps they leave, in place.
    let mut kept = 0;
    for (i, &ok) in complete.iter().enumerate() {
        if ok {
            values.copy_within(i * dim..(i + 1) * dim, kept * dim);
            rows[kept] = rows[i];
            kept += 1;
        }
    }
    rows.truncate(kept);
    values.truncate(kept * dim);
    Ok((rows, values))
}

/// Rows written row-major at a time from the feature columns: 128 rows x
/// 20 features is 20 KiB, inside the core's first-level cache.
const BLOCK_ROWS: usize = 128;

/// The `Float64` `columns`' values at rows `row(0)..row(n)`, row-major, and
/// whether each row's are all usable (an unusable value is left 0.0). A
/// block of rows at a time, so the rows being written stay in cache while
/// every column is read into them: column by column over all rows, each
/// pass would write one value per row across the whole output, and a
/// batch's rows x 20 features outgrow the cache.
fn row_major(
    columns: &[ArrayRef],
    n: usize,
    row: impl Fn(usize) -> usize,
) -> (Vec<f64>, Vec<bool>) {
    let dim = columns.len();
    let mut values = vec![0.0; n * dim];
    let mut complete = vec![true; n];
    for start in (0..n).step_by(BLOCK_ROWS) {
        let end = (start + BLOCK_ROWS).min(n);
        for (d, column) in columns.iter().enumerate() {
            let array = column.as_primitive::<Float64Type>();
            let (column, nulls) = (array.values(), array.nulls());
            let targets = values[start * dim..end * dim].chunks_exact_mut(dim);
            for ((i, target), ok) in (start..end).zip(targets).zip(&mut complete[start..end]) {
                let r = row(i);
                let v = column[r];
                if usable(nulls, r, v) {
                    target[d] = v;
                } else {
                    *ok = false;
                }
            }
        }
    }
    (values, complete)
}

/// The feature columns as `Float64` (a `Float64` column is shared, not
/// copied).
fn float_columns(batch: &RecordBatch, feature_indices: &[usize]) -> Result<Vec<ArrayRef>> {
    Ok(feature_indices
        .iter()
        .map(|&column| cast(batch.column(column), &DataType::Float64))
        .collect::<std::result::Result<Vec<ArrayRef>, _>>()?)
}

/// Classes in order of first appearance, with a lookup: the shared
/// [`ClassDictionary`] keyed by the operators' [`ClassValue`].
pub type ClassIndex = ClassDictionary<ClassValue>;

/// Read the label and feature columns of `batch`.
pub fn batch_features(
    batch: &RecordBatch,
    label_index: usize,
    feature_indices: &[usize],
    classes: &mut ClassIndex,
) -> Result<BatchFeatures> {
    let dim = feature_indices.len();
    let columns = float_columns(batch, feature_indices)?;
    let (values, complete) = row_major(&columns, batch.num_rows(), |row| row);
    let labelled = batch_labels(batch, label_index, classes)?;
    let slots = labelled
        .iter()
        .zip(&complete)
        .map(|(slot, ok)| if *ok { *slot } else { None })
        .collect();
    Ok(BatchFeatures {
        dim,
        values,
        slots,
        labelled,
        complete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int32Array, Int64Array};
    use datafusion::arrow::datatypes::Field;
    use std::sync::Arc;

    #[test]
    fn kafka_metadata_columns_are_features_only_when_named() -> Result<()> {
        let schema = Schema::new(vec![
            Field::new("f1", DataType::Float64, true),
            Field::new("_partition", DataType::Int32, false),
            Field::new("_offset", DataType::Int64, false),
            Field::new("label", DataType::Int64, true),
        ]);
        let default = FeatureSelection::default().resolve("f", &schema, "label", &[])?;
        assert_eq!(default.feature_indices, vec![0]);
        let named = FeatureSelection {
            features: Some(vec!["f1".into(), "_offset".into()]),
            exclude: Vec::new(),
        }
        .resolve("f", &schema, "label", &[])?;
        assert_eq!(named.feature_indices, vec![0, 2]);
        Ok(())
    }

    #[test]
    fn gathered_rows_are_the_eligible_ones_with_batch_features_values() -> Result<()> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Float64, true),
            Field::new("label", DataType::Int64, true),
            Field::new("b", DataType::Int32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Float64Array::from(vec![
                    Some(0.5),
                    Some(f64::NAN),
                    Some(2.5),
                    None,
                    Some(4.5),
                    Some(f64::NEG_INFINITY),
                    Some(6.5),
                ])),
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    Some(1),
                    None,
                    Some(0),
                    Some(1),
                    Some(0),
                    Some(0),
                ])),
                Arc::new(Int32Array::from(vec![
                    Some(10),
                    Some(11),
                    Some(12),
                    Some(13),
                    None,
                    Some(15),
                    Some(16),
                ])),
            ],
        )?;
        let mut classes = ClassIndex::default();
        let features = batch_features(&batch, 1, &[0, 2], &mut classes)?;
        let labelled = batch_labels(&batch, 1, &mut classes)?;
        assert_eq!(labelled, features.labelled);
        // Every labelled row asked for; the eligible ones come back.
        let asked: Vec<u32> = (0..7).filter(|&r| labelled[r as usize].is_some()).collect();
        let (kept, values) = gather_eligible(&batch, &[0, 2], asked)?;
        let eligible: Vec<u32> = (0..7)
            .filter(|&r| features.slots[r as usize].is_some())
            .collect();
        assert_eq!(kept, eligible);
        assert_eq!(kept, [0, 6]);
        let expected: Vec<f64> = kept
            .iter()
            .flat_map(|&r| features.values[r as usize * 2..][..2].to_vec())
            .collect();
        assert_eq!(values, expected);
        assert_eq!(values, [0.5, 10.0, 6.5, 16.0]);
        // All eligible: the rows as asked, in the order asked.
        let (kept, values) = gather_eligible(&batch, &[0, 2], vec![6, 0])?;
        assert_eq!((kept, values), (vec![6, 0], vec![6.5, 16.0, 0.5, 10.0]));
        Ok(())
    }
}
