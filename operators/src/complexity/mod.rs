//! Instance hardness and data complexity: how many of a row's nearest
//! neighbours disagree with its label, and what that says about the row
//! and the data set.
//!
//! - k-disagreeing neighbours (kDN, Smith et al. 2014): the share of a row's
//!   k nearest neighbours (itself excluded, by index) of another class.
//! - N3: leave-one-out 1-NN error, the mean kDN at k = 1.
//! - The Napierała–Stefanowski typology at k = 5, simplified to the
//!   neighbour count (as most libraries do): 0–1 of 5 neighbours of another
//!   class is `safe`, 2–3 `borderline`, 4 `rare`, 5 `outlier`. The original
//!   also re-checks a `rare` row's lone same-class neighbour; we do not.
//! - iCost's categories of a minority row are in [`crate::icost`].
//!
//! The SQL side: aggregates [`kdn_mean`] and [`n3`] (and their per-class
//! forms) and the table function [`complexity_report`].
//!
//! This module and its files import each other on purpose: it holds the
//! measures the aggregates wrap; the cycle stays inside this folder.

pub mod complexity_report;
pub mod kdn_mean;
mod measure_udf;
pub mod n3;
mod rows;

use std::cmp::Ordering;

use datafusion::logical_expr::{DocSection, Documentation, DocumentationBuilder};

use crate::knn::{Exclude, Neighbours, PointSet, search};

pub use measure_udf::{NeighbourMeasure, NeighbourMeasureUdf};
pub use rows::{ClassedRows, LabelledRows, eligible_rows};

/// Neighbours that decide kDN and the typology.
pub const DEFAULT_K: usize = 5;

/// The Napierała–Stefanowski type of a row, from its other-class
/// neighbours among `k`. Defined for k = 5; for another k the bands scale
/// (safe below 2/5 of k, borderline up to 3/5, rare below k, outlier at k).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Typology {
    Safe,
    Borderline,
    Rare,
    Outlier,
}

impl Typology {
    pub const ALL: [Self; 4] = [Self::Safe, Self::Borderline, Self::Rare, Self::Outlier];

    pub fn of(disagreeing: usize, k: usize) -> Self {
        // Scaled to k: 5 * m compared with 2k and 4k keeps k = 5 exact.
        let scaled = 5 * disagreeing;
        if disagreeing >= k {
            Self::Outlier
        } else if scaled < 2 * k {
            Self::Safe
        } else if scaled < 4 * k {
            Self::Borderline
        } else {
            Self::Rare
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Safe => "safe",
            Self::Borderline => "borderline",
            Self::Rare => "rare",
            Self::Outlier => "outlier",
        }
    }
}

/// The order rows take before a neighbour search when their arrival order
/// is not reproducible (a merge of parallel partitions): by `rank`, then
/// by feature values (a hash first, for speed), then by position. Ties in
/// the search go to the lower index, so this makes them independent of
/// arrival order; only rows identical in rank and features keep their
/// relative arrival order, and those are interchangeable.
pub fn canonical_order(features: &[f64], dim: usize, rank: &[u32]) -> Vec<usize> {
    canonical_order_by(features, dim, rank, &row_hashes(features, dim, rank.len()))
}

const HASH_START: u64 = 0xCBF2_9CE4_8422_2325;
const HASH_FACTOR: u64 = 0x0000_0100_0000_01B3;

/// The hash of one row's values that [`canonical_order`] sorts by.
fn row_hash(values: &[f64]) -> u64 {
    let mut h = HASH_START;
    for v in values {
        h = (h ^ v.to_bits()).wrapping_mul(HASH_FACTOR);
        h ^= h >> 29;
    }
    h
}

/// [`row_hash`] of each of the first `n` rows, eight rows at a time: one
/// row's hash is a chain of dependent multiplications, and eight
/// independent chains keep the multiplier busy where one leaves it
/// waiting.
fn row_hashes(features: &[f64], dim: usize, n: usize) -> Vec<u64> {
    const ROWS: usize = 8;
    let mut hashes = vec![HASH_START; n];
    let whole = n / ROWS * ROWS;
    for (block, out) in hashes[..whole].chunks_exact_mut(ROWS).enumerate() {
        let rows = &features[block * ROWS * dim..(block + 1) * ROWS * dim];
        let mut h = [HASH_START; ROWS];
        for d in 0..dim {
            for (r, h) in h.iter_mut().enumerate() {
                *h = (*h ^ rows[r * dim + d].to_bits()).wrapping_mul(HASH_FACTOR);
                *h ^= *h >> 29;
            }
        }
        out.copy_from_slice(&h);
    }
    for (i, h) in hashes.iter_mut().enumerate().skip(whole) {
        *h = row_hash(&features[i * dim..(i + 1) * dim]);
    }
    hashes
}

/// [`canonical_order`] with each row's hash given (tests force collisions
/// with it).
fn canonical_order_by(features: &[f64], dim: usize, rank: &[u32], hashes: &[u64]) -> Vec<usize> {
    let n = rank.len();
    let row = |i: usize| &features[i * dim..(i + 1) * dim];
    // One 128-bit key per row, (rank, hash, row number) from the top bits
    // down: compared in one step, and the row number makes it unique.
    let mut keyed: Vec<u128> = (0..n)
        .map(|i| (u128::from(rank[i]) << 96) | (u128::from(hashes[i]) << 32) | i as u128)
        .collect();
    keyed.sort_unstable();
    let mut order: Vec<usize> = keyed.iter().map(|&key| (key as u32) as usize).collect();
    // Rows of one class whose hashes collide are ordered by their values,
    // then by row number: within such a run the row numbers are already
    // ascending, so only runs holding different values need sorting.
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && keyed[end] >> 32 == keyed[start] >> 32 {
            end += 1;
        }
        if end - start > 1 {
            order[start..end].sort_by(|&a, &b| {
                row(a)
                    .iter()
                    .zip(row(b))
                    .map(|(x, y)| x.total_cmp(y))
                    .find(|o| o.is_ne())
                    .unwrap_or(Ordering::Equal)
                    .then(a.cmp(&b))
            });
        }
        start = end;
    }
    order
}

/// Documentation of a complexity function, in its own section.
fn doc(description: &str, syntax: &str) -> Documentation {
    DocumentationBuilder::new_with_details(
        DocSection {
            include: true,
            label: "Equipoise complexity measures",
            description: None,
        },
        description,
        syntax,
    )
    .build()
}

/// For each query row (indices into `rows`), its other-class neighbours
/// among its `k` nearest rows of `rows`, itself excluded by index.
/// Returns the counts and the `k` actually used (below `k` when `rows` is
/// smaller than `k + 1`).
pub fn disagreeing_counts(rows: &ClassedRows, queries: &[usize], k: usize) -> (Vec<usize>, usize) {
    let dim = rows.dim;
    let set = PointSet::from_rows(&rows.features, dim);
    let mut query_features = Vec::with_capacity(queries.len() * dim);
    let mut self_index = Vec::with_capacity(queries.len());
    for &q in queries {
        query_features.extend_from_slice(rows.row(q));
        self_index.push(q as u32);
    }
    let found: Neighbours = search(&set, &query_features, k, Exclude::SelfIndex(&self_index));
    let counts = queries
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let own = rows.class_of[q];
            found
                .indices(i)
                .iter()
                .filter(|&&j| rows.class_of[j as usize] != own)
                .count()
        })
        .collect();
    (counts, found.k())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typology_bands_at_k_5() {
        let types: Vec<_> = (0..=5).map(|m| Typology::of(m, 5)).collect();
        assert_eq!(
            types,
            [
                Typology::Safe,
                Typology::Safe,
                Typology::Borderline,
                Typology::Borderline,
                Typology::Rare,
                Typology::Outlier
            ]
        );
    }

    #[test]
    fn colliding_hashes_fall_back_to_the_values_then_the_position() {
        // Every row hashes alike, so the order comes from the fallback
        // alone: by rank, then values, then position.
        let features = [3.0, 1.0, 2.0, 1.0, 0.5, 9.0, 2.0, -0.0, 0.0];
        let rank = [1, 0, 1, 0, 0, 0, 1, 0, 0];
        let order = canonical_order_by(&features, 1, &rank, &[7; 9]);
        assert_eq!(order, [7, 8, 4, 1, 3, 5, 2, 6, 0]);
        // A real hash gives the same order among rows of equal values.
        let hashed = canonical_order(&features, 1, &rank);
        let position = |o: &[usize], i: usize| o.iter().position(|&x| x == i);
        assert!(position(&hashed, 1) < position(&hashed, 3));
        assert!(position(&hashed, 2) < position(&hashed, 6));
    }

    #[test]
    fn row_hashes_in_blocks_equal_one_row_at_a_time() {
        for (n, dim) in [(0, 3), (7, 3), (8, 5), (21, 20), (9, 0)] {
            let features: Vec<f64> = (0..n * dim).map(|i| (i as f64).sin() * 1e3).collect();
            let one_at_a_time: Vec<u64> = (0..n)
                .map(|i| row_hash(&features[i * dim..(i + 1) * dim]))
                .collect();
            assert_eq!(
                row_hashes(&features, dim, n),
                one_at_a_time,
                "n={n} dim={dim}"
            );
        }
    }

    #[test]
    fn canonical_order_ignores_arrival_order() {
        let features = [3.0, 1.0, 2.0, 1.0, 0.5, 9.0];
        let rank = [0, 1, 0, 1, 0, 1];
        let order = canonical_order(&features, 1, &rank);
        let permuted_features = [9.0, 0.5, 1.0, 2.0, 1.0, 3.0];
        let permuted_rank = [1, 0, 1, 0, 1, 0];
        let permuted = canonical_order(&permuted_features, 1, &permuted_rank);
        let values = |o: &[usize], f: &[f64], r: &[u32]| {
            o.iter()
                .map(|&i| (r[i], f[i].to_bits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            values(&order, &features, &rank),
            values(&permuted, &permuted_features, &permuted_rank)
        );
    }
}
