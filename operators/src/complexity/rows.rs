//! Labelled rows with complete features, as the complexity measures and
//! the bounded iCost read them: features row-major, one class per row.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::Result;

use super::canonical_order;
use crate::class_label::{ClassValue, for_each_class};

/// Rows of complete features (no NULL, NaN or infinity) and non-NULL label.
#[derive(Debug, Clone, Default)]
pub struct LabelledRows {
    pub dim: usize,
    pub features: Vec<f64>,
    pub labels: Vec<ClassValue>,
}

impl LabelledRows {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            features: Vec::new(),
            labels: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }

    /// Append the eligible rows of `label` and `features` (one array per
    /// dimension); returns how many rows were eligible.
    pub fn extend(&mut self, label: &ArrayRef, features: &[ArrayRef]) -> Result<usize> {
        let eligible = eligible_rows(label, features)?;
        let added = eligible.len();
        for (_, class, values) in eligible {
            self.labels.push(class);
            self.features.extend_from_slice(&values);
        }
        Ok(added)
    }

    /// Drop the oldest `n` rows (a sliding window frame moving on).
    pub fn drop_front(&mut self, n: usize) {
        let n = n.min(self.len());
        self.labels.drain(..n);
        self.features.drain(..n * self.dim);
    }

    /// Rows per class, in class order.
    pub fn class_counts(&self) -> BTreeMap<&ClassValue, usize> {
        let mut counts = BTreeMap::new();
        for label in &self.labels {
            *counts.entry(label).or_insert(0) += 1;
        }
        counts
    }

    /// The rows in canonical order (by class, then features), with the
    /// classes numbered in sorted order: results then depend on the rows,
    /// not on the order partial aggregates were merged in.
    pub fn canonical(&self) -> (ClassedRows, Vec<ClassValue>) {
        let classes: Vec<ClassValue> = self.class_counts().into_keys().cloned().collect();
        let rank: Vec<u32> = self
            .labels
            .iter()
            .map(|l| classes.binary_search(l).map_or(0, |i| i as u32))
            .collect();
        let order = canonical_order(&self.features, self.dim, &rank);
        let mut features = Vec::with_capacity(self.features.len());
        let mut class_of = Vec::with_capacity(order.len());
        for &i in &order {
            features.extend_from_slice(self.row(i));
            class_of.push(rank[i]);
        }
        (
            ClassedRows {
                dim: self.dim,
                features,
                class_of,
            },
            classes,
        )
    }
}

/// Rows with their class as a number (a slot or a rank), ready for a
/// neighbour search.
#[derive(Debug, Clone, Default)]
pub struct ClassedRows {
    pub dim: usize,
    pub features: Vec<f64>,
    pub class_of: Vec<u32>,
}

impl ClassedRows {
    pub fn len(&self) -> usize {
        self.class_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.class_of.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }
}

/// `(row, class, features)` of every row with a label and finite features.
pub fn eligible_rows(
    label: &ArrayRef,
    features: &[ArrayRef],
) -> Result<Vec<(usize, ClassValue, Vec<f64>)>> {
    let columns = features
        .iter()
        .map(|f| cast(f, &DataType::Float64))
        .collect::<Result<Vec<_>, _>>()?;
    let columns: Vec<_> = columns
        .iter()
        .map(|c| c.as_primitive::<Float64Type>())
        .collect();
    let mut out = Vec::new();
    for_each_class(label, |row, class| {
        let Some(class) = class else { return };
        let values: Option<Vec<f64>> = columns
            .iter()
            .map(|c| {
                if c.is_valid(row) && c.value(row).is_finite() {
                    Some(c.value(row))
                } else {
                    None
                }
            })
            .collect();
        if let Some(values) = values {
            out.push((row, class, values));
        }
    })?;
    Ok(out)
}
