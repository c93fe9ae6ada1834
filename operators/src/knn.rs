//! Exact k-nearest-neighbour search, the hot path of the oversamplers (and
//! of the instance-complexity operators).
//!
//! Blocked brute force: the reference points are stored dimension-major, so
//! the inner loop runs over a block of reference points for one dimension at
//! a time (`acc[j] += (x[d][j] - q[d])^2`), which the compiler vectorizes; a
//! block is reused from cache by a group of queries before the next block is
//! touched. Queries are split across threads when the work is large enough.
//!
//! Contract, relied on by the reference tests:
//! - distances are squared Euclidean, computed by differences (never by the
//!   `|q|^2 + |x|^2 - 2 q.x` expansion, which turns exact duplicates into
//!   tiny non-zero distances and so changes which of two ties is kept);
//! - a query can exclude one reference index (itself), by index, so an exact
//!   duplicate of the query is still found as a neighbour at distance 0;
//! - ties are broken by the lower reference index;
//! - every query gets `min(k, available)` neighbours, nearest first.
//!
//! A kd-tree was not added: the operators' data (20 to 60 metrics per row,
//! standardized) is where trees degrade to brute force, and a tree would have
//! to be rebuilt for every streaming batch.

use std::num::NonZeroUsize;
use std::thread;

/// Reference points in dimension-major layout.
#[derive(Debug, Clone)]
pub struct PointSet {
    dim: usize,
    len: usize,
    /// `columns[d * len + i]` is coordinate `d` of point `i`.
    columns: Vec<f64>,
}

impl PointSet {
    /// From `rows`, row-major with `dim` values per row.
    pub fn from_rows(rows: &[f64], dim: usize) -> Self {
        let len = rows.len().checked_div(dim).unwrap_or(0);
        let mut columns = vec![0.0; len * dim];
        for (i, row) in rows.chunks_exact(dim.max(1)).enumerate().take(len) {
            for (d, &v) in row.iter().enumerate() {
                columns[d * len + i] = v;
            }
        }
        Self { dim, len, columns }
    }

    /// From the rows of `rows` (row-major, `dim` wide) listed in `subset`.
    pub fn from_subset(rows: &[f64], dim: usize, subset: &[usize]) -> Self {
        let len = subset.len();
        let mut columns = vec![0.0; len * dim];
        for (i, &r) in subset.iter().enumerate() {
            for d in 0..dim {
                columns[d * len + i] = rows[r * dim + d];
            }
        }
        Self { dim, len, columns }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// The answer to a batch of queries: `k` neighbours per query, nearest
/// first (`k` may be below the requested count when the set is small).
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbours {
    k: usize,
    indices: Vec<u32>,
    squared_distances: Vec<f64>,
}

impl Neighbours {
    pub fn k(&self) -> usize {
        self.k
    }

    pub fn len(&self) -> usize {
        self.indices.len().checked_div(self.k).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Neighbour indices (into the searched set) of query `q`.
    pub fn indices(&self, q: usize) -> &[u32] {
        &self.indices[q * self.k..(q + 1) * self.k]
    }

    /// Squared distances of query `q`'s neighbours, ascending.
    pub fn squared_distances(&self, q: usize) -> &[f64] {
        &self.squared_distances[q * self.k..(q + 1) * self.k]
    }
}

/// What a query must not find: itself, by index into the searched set.
#[derive(Debug, Clone, Copy)]
pub enum Exclude<'a> {
    Nothing,
    /// `self_index[q]` is query `q`'s own index in the set.
    SelfIndex(&'a [u32]),
}

/// Reference points per block: 512 x 20 dimensions x 8 bytes stays in L2.
const BLOCK: usize = 512;
/// Queries sharing one pass over a block.
const QUERY_GROUP: usize = 16;
/// Below this many coordinate differences, threads cost more than they save.
const PARALLEL_WORK: usize = 4_000_000;

/// The `k` nearest points of `set` to each query (`queries` row-major, as
/// wide as the set).
pub fn search(set: &PointSet, queries: &[f64], k: usize, exclude: Exclude<'_>) -> Neighbours {
    let dim = set.dim;
    let n_queries = queries.len().checked_div(dim).unwrap_or(0);
    let available = match exclude {
        Exclude::Nothing => set.len,
        Exclude::SelfIndex(_) => set.len.saturating_sub(1),
    };
    let k = k.min(available);
    let mut indices = vec![0u32; n_queries * k];
    let mut squared_distances = vec![0.0; n_queries * k];
    if k == 0 || n_queries == 0 {
        return Neighbours {
            k,
            indices,
            squared_distances,
        };
    }
    let threads = thread::available_parallelism()
        .map(NonZeroUsize::get)
        .unwrap_or(1);
    let work = n_queries.saturating_mul(set.len).saturating_mul(dim.max(1));
    if threads == 1 || work < PARALLEL_WORK || n_queries < 2 * QUERY_GROUP {
        search_range(
            set,
            queries,
            0,
            k,
            exclude,
            &mut indices,
            &mut squared_distances,
        );
    } else {
        let per_thread = n_queries.div_ceil(threads);
        thread::scope(|scope| {
            let index_chunks = indices.chunks_mut(per_thread * k);
            let distance_chunks = squared_distances.chunks_mut(per_thread * k);
            for (t, (idx, dist)) in index_chunks.zip(distance_chunks).enumerate() {
                let first = t * per_thread;
                scope.spawn(move || search_range(set, queries, first, k, exclude, idx, dist));
            }
        });
    }
    Neighbours {
        k,
        indices,
        squared_distances,
    }
}

/// Answer queries `first..first + out_indices.len() / k`.
fn search_range(
    set: &PointSet,
    queries: &[f64],
    first: usize,
    k: usize,
    exclude: Exclude<'_>,
    out_indices: &mut [u32],
    out_distances: &mut [f64],
) {
    let dim = set.dim;
    let count = out_indices.len() / k;
    let mut acc = vec![0.0f64; BLOCK];
    for group_start in (0..count).step_by(QUERY_GROUP) {
        let group_len = QUERY_GROUP.min(count - group_start);
        // Per query of the group: its best k so far, sorted ascending.
        let mut best_d = vec![f64::INFINITY; group_len * k];
        let mut best_i = vec![u32::MAX; group_len * k];
        let mut filled = vec![0usize; group_len];
        for block_start in (0..set.len).step_by(BLOCK) {
            let block_len = BLOCK.min(set.len - block_start);
            for g in 0..group_len {
                let q = first + group_start + g;
                let query = &queries[q * dim..(q + 1) * dim];
                let acc = &mut acc[..block_len];
                acc.fill(0.0);
                for (d, &qd) in query.iter().enumerate() {
                    let column = &set.columns[d * set.len + block_start..][..block_len];
                    for (a, &x) in acc.iter_mut().zip(column) {
                        let diff = x - qd;
                        *a += diff * diff;
                    }
                }
                let skip = match exclude {
                    Exclude::Nothing => usize::MAX,
                    Exclude::SelfIndex(own) => own[q] as usize,
                };
                let bd = &mut best_d[g * k..(g + 1) * k];
                let bi = &mut best_i[g * k..(g + 1) * k];
                let f = &mut filled[g];
                for (j, &d2) in acc.iter().enumerate() {
                    // Strict `<`: a later index never displaces an equal
                    // distance, which is the lower-index tie rule.
                    if d2 < bd[k - 1] || (*f < k && d2 <= bd[k - 1]) {
                        let index = block_start + j;
                        if index == skip || d2.is_nan() {
                            continue;
                        }
                        let mut pos = (*f).min(k - 1);
                        while pos > 0 && bd[pos - 1] > d2 {
                            bd[pos] = bd[pos - 1];
                            bi[pos] = bi[pos - 1];
                            pos -= 1;
                        }
                        bd[pos] = d2;
                        bi[pos] = index as u32;
                        *f = (*f + 1).min(k);
                    }
                }
            }
        }
        let start = group_start * k;
        out_distances[start..start + group_len * k].copy_from_slice(&best_d);
        out_indices[start..start + group_len * k].copy_from_slice(&best_i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Sort every point by (distance, index) and keep k: the definition.
    fn naive(rows: &[f64], dim: usize, query: &[f64], k: usize, skip: Option<usize>) -> Vec<u32> {
        let mut all: Vec<(f64, usize)> = rows
            .chunks_exact(dim)
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .map(|(i, r)| {
                let d: f64 = r.iter().zip(query).map(|(a, b)| (a - b) * (a - b)).sum();
                (d, i)
            })
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        all.iter().take(k).map(|&(_, i)| i as u32).collect()
    }

    fn random_rows(rng: &mut Rng, n: usize, dim: usize, levels: usize) -> Vec<f64> {
        // Few distinct levels per coordinate: many exact ties and duplicates.
        (0..n * dim).map(|_| rng.below(levels) as f64).collect()
    }

    #[test]
    fn matches_the_definition_with_ties_duplicates_and_self_exclusion() {
        let mut rng = Rng::new(3);
        for &(n, dim, levels, k) in &[
            (50, 2, 3, 5),
            (700, 3, 4, 7),
            (1_300, 5, 2, 10),
            (40, 1, 40, 39),
        ] {
            let rows = random_rows(&mut rng, n, dim, levels);
            let set = PointSet::from_rows(&rows, dim);
            let own: Vec<u32> = (0..n as u32).collect();
            let found = search(&set, &rows, k, Exclude::SelfIndex(&own));
            assert_eq!(found.k(), k.min(n - 1));
            for q in 0..n {
                let expected = naive(&rows, dim, &rows[q * dim..(q + 1) * dim], k, Some(q));
                assert_eq!(found.indices(q), expected.as_slice(), "n={n} q={q}");
            }
            let queries = random_rows(&mut rng, 33, dim, levels + 1);
            let found = search(&set, &queries, k, Exclude::Nothing);
            for q in 0..33 {
                let expected = naive(&rows, dim, &queries[q * dim..(q + 1) * dim], k, None);
                assert_eq!(found.indices(q), expected.as_slice());
                let d = found.squared_distances(q);
                assert!(d.windows(2).all(|w| w[0] <= w[1]));
            }
        }
    }

    #[test]
    fn parallel_path_agrees_with_the_definition() {
        // Large enough to cross PARALLEL_WORK and span several blocks.
        let mut rng = Rng::new(11);
        let (n, dim, k) = (3_000, 20, 6);
        let rows: Vec<f64> = (0..n * dim).map(|_| rng.uniform()).collect();
        let set = PointSet::from_rows(&rows, dim);
        let queries: Vec<f64> = (0..200 * dim).map(|_| rng.uniform()).collect();
        let found = search(&set, &queries, k, Exclude::Nothing);
        for q in (0..200).step_by(7) {
            let expected = naive(&rows, dim, &queries[q * dim..(q + 1) * dim], k, None);
            assert_eq!(found.indices(q), expected.as_slice());
        }
    }

    #[test]
    fn small_sets_return_what_exists() {
        let rows = [0.0, 1.0, 5.0];
        let set = PointSet::from_rows(&rows, 1);
        let found = search(&set, &rows, 5, Exclude::SelfIndex(&[0, 1, 2]));
        assert_eq!(found.k(), 2);
        assert_eq!(found.indices(0), &[1, 2]);
        assert_eq!(found.indices(2), &[1, 0]);
        let single = PointSet::from_rows(&[1.0], 1);
        let none = search(&single, &[1.0], 5, Exclude::SelfIndex(&[0]));
        assert_eq!(none.k(), 0);
        let subset = PointSet::from_subset(&rows, 1, &[2, 0]);
        let found = search(&subset, &[4.0], 1, Exclude::Nothing);
        assert_eq!(found.indices(0), &[0]);
    }
}
