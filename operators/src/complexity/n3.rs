//! `n3(label, feature, ...)`: leave-one-out 1-NN error rate (Ho and Basu's
//! N3, as ECoL); `n3_of(label, class, feature, ...)`: the error rate over
//! the named class's rows (the class-decomposed N3 of ImbCoL).
//!
//! Each row's nearest other row (Euclidean on raw values, itself excluded by
//! index, ties to the row first in canonical order) predicts its label.
//! Rows with a NULL label or a NULL/NaN/infinite feature are ignored. NULL
//! with fewer than two rows or when the named class has no rows.

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use super::kdn_mean::kdn_of_class;
use super::{ClassedRows, NeighbourMeasure, NeighbourMeasureUdf, disagreeing_counts, doc};
use crate::class_label::ClassValue;

/// Leave-one-out 1-NN error over all rows.
pub fn n3_all(rows: &ClassedRows) -> Option<f64> {
    let all: Vec<usize> = (0..rows.len()).collect();
    let (errors, k) = disagreeing_counts(rows, &all, 1);
    if k == 0 {
        return None;
    }
    Some(errors.iter().sum::<usize>() as f64 / rows.len() as f64)
}

#[derive(Debug)]
pub struct N3;

impl NeighbourMeasure for N3 {
    const NAME: &'static str = "n3";
    const PER_CLASS: bool = false;

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            doc(
                "Error rate of the leave-one-out 1-nearest-neighbour classifier (N3).",
                "n3(label, feature [, feature ...])",
            )
        });
        &DOC
    }

    fn evaluate(rows: &ClassedRows, _classes: &[ClassValue], _class: Option<u32>) -> Option<f64> {
        n3_all(rows)
    }
}

#[derive(Debug)]
pub struct N3Of;

impl NeighbourMeasure for N3Of {
    const NAME: &'static str = "n3_of";
    const PER_CLASS: bool = true;

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            doc(
                "Leave-one-out 1-NN error rate over the rows of the named class (N3 of a class).",
                "n3_of(label, class, feature [, feature ...])",
            )
        });
        &DOC
    }

    fn evaluate(rows: &ClassedRows, _classes: &[ClassValue], class: Option<u32>) -> Option<f64> {
        // N3 of a class is its mean kDN at k = 1.
        kdn_of_class(rows, class?, 1)
    }
}

/// The `n3` aggregate.
pub fn n3_udaf() -> Arc<AggregateUDF> {
    NeighbourMeasureUdf::<N3>::udaf()
}

/// The `n3_of` aggregate.
pub fn n3_of_udaf() -> Arc<AggregateUDF> {
    NeighbourMeasureUdf::<N3Of>::udaf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rows_whose_nearest_neighbour_disagrees() {
        // 0.0(a) 0.1(a) 0.25(b) 5.0(b) 5.1(b): only 0.25's nearest (0.1) disagrees.
        let rows = ClassedRows {
            dim: 1,
            features: vec![0.0, 0.1, 0.25, 5.0, 5.1],
            class_of: vec![0, 0, 1, 1, 1],
        };
        assert_eq!(n3_all(&rows), Some(0.2));
        assert_eq!(kdn_of_class(&rows, 1, 1), Some(1.0 / 3.0));
    }
}
