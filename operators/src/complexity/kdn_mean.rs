//! `kdn_mean(label, feature, ...)`: mean k-disagreeing neighbours (k = 5) of
//! the minority class's rows; `kdn_mean_of(label, class, feature, ...)`: the
//! same for a named class.
//!
//! kDN of a row is the share of its 5 nearest rows (Euclidean on the raw
//! feature values, itself excluded by index, ties to the row first in
//! canonical order) whose label differs. The minority class is the one with
//! the fewest rows (ties: the lowest class value). Rows with a NULL label or
//! a NULL/NaN/infinite feature are ignored. NULL with fewer than two rows
//! or when the named class has no rows; 0 with one class.

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use super::{
    ClassedRows, DEFAULT_K, NeighbourMeasure, NeighbourMeasureUdf, disagreeing_counts, doc,
};
use crate::class_label::ClassValue;

/// Mean kDN of the rows of class `class` (a rank in `rows`).
pub fn kdn_of_class(rows: &ClassedRows, class: u32, k: usize) -> Option<f64> {
    let members: Vec<usize> = (0..rows.len())
        .filter(|&i| rows.class_of[i] == class)
        .collect();
    if members.is_empty() {
        return None;
    }
    let (counts, k) = disagreeing_counts(rows, &members, k);
    if k == 0 {
        return None;
    }
    let total: usize = counts.iter().sum();
    Some(total as f64 / (k * members.len()) as f64)
}

/// The class with the fewest rows; ties go to the lowest rank.
pub fn minority_rank(rows: &ClassedRows, classes: usize) -> Option<u32> {
    let mut counts = vec![0usize; classes];
    for &c in &rows.class_of {
        counts[c as usize] += 1;
    }
    (0..classes as u32)
        .filter(|&c| counts[c as usize] > 0)
        .min_by_key(|&c| (counts[c as usize], c))
}

#[derive(Debug)]
pub struct KdnMean;

impl NeighbourMeasure for KdnMean {
    const NAME: &'static str = "kdn_mean";
    const PER_CLASS: bool = false;

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            doc(
                "Mean share of disagreeing labels among the 5 nearest neighbours of the minority \
                 class's rows (kDN, Smith et al. 2014).",
                "kdn_mean(label, feature [, feature ...])",
            )
        });
        &DOC
    }

    fn evaluate(rows: &ClassedRows, classes: &[ClassValue], _class: Option<u32>) -> Option<f64> {
        let minority = minority_rank(rows, classes.len())?;
        kdn_of_class(rows, minority, DEFAULT_K)
    }
}

#[derive(Debug)]
pub struct KdnMeanOf;

impl NeighbourMeasure for KdnMeanOf {
    const NAME: &'static str = "kdn_mean_of";
    const PER_CLASS: bool = true;

    fn documentation() -> &'static Documentation {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            doc(
                "Mean kDN (k = 5) of the rows of the named class.",
                "kdn_mean_of(label, class, feature [, feature ...])",
            )
        });
        &DOC
    }

    fn evaluate(rows: &ClassedRows, _classes: &[ClassValue], class: Option<u32>) -> Option<f64> {
        kdn_of_class(rows, class?, DEFAULT_K)
    }
}

/// The `kdn_mean` aggregate.
pub fn kdn_mean_udaf() -> Arc<AggregateUDF> {
    NeighbourMeasureUdf::<KdnMean>::udaf()
}

/// The `kdn_mean_of` aggregate.
pub fn kdn_mean_of_udaf() -> Arc<AggregateUDF> {
    NeighbourMeasureUdf::<KdnMeanOf>::udaf()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(points: &[(f64, u32)]) -> ClassedRows {
        ClassedRows {
            dim: 1,
            features: points.iter().map(|p| p.0).collect(),
            class_of: points.iter().map(|p| p.1).collect(),
        }
    }

    #[test]
    fn minority_rows_among_the_majority_disagree() {
        // Class 1 at 0.0 and 0.1 amid class 0 at 1..=6: each class-1 row's
        // 5 neighbours are the other class-1 row and 4 class-0 rows.
        let mut points = vec![(0.0, 1), (0.1, 1)];
        points.extend((1..=6).map(|i| (f64::from(i), 0)));
        let r = rows(&points);
        assert_eq!(minority_rank(&r, 2), Some(1));
        assert_eq!(kdn_of_class(&r, 1, 5), Some(0.8));
    }

    #[test]
    fn one_row_has_no_neighbours() {
        assert_eq!(kdn_of_class(&rows(&[(0.0, 0)]), 0, 5), None);
    }
}
