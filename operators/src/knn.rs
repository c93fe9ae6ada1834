//! Exact k-nearest-neighbour search, the hot path of the oversamplers (and
//! of the instance-complexity operators).
//!
//! Blocked brute force: the reference points are stored in tiles of eight,
//! dimension-major within a tile, so the kernel computes the distances of two
//! queries to eight points with sixteen running sums in registers, reading
//! one cache line per dimension (the compiler vectorizes the lanes); a block
//! of tiles is reused from cache by a group of queries before the next block
//! is touched. Queries are split across threads when the work is large
//! enough.
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

/// Reference points in tiles of [`TILE`] points: within a tile, coordinate
/// `d` of its points is contiguous, so the kernel reads one short vector per
/// dimension and keeps the tile's distances in registers.
#[derive(Debug, Clone)]
pub struct PointSet {
    dim: usize,
    len: usize,
    /// `tiles[(i / TILE) * dim * TILE + d * TILE + i % TILE]` is coordinate
    /// `d` of point `i`; lanes past `len` are padding, never reported.
    tiles: Vec<f64>,
}

/// Points per tile: one 64-byte cache line of `f64` per dimension.
pub const TILE: usize = 8;

impl PointSet {
    /// From `rows`, row-major with `dim` values per row.
    pub fn from_rows(rows: &[f64], dim: usize) -> Self {
        let len = rows.len().checked_div(dim).unwrap_or(0);
        let all: Vec<usize> = (0..len).collect();
        Self::from_subset(rows, dim, &all)
    }

    /// From the rows of `rows` (row-major, `dim` wide) listed in `subset`.
    pub fn from_subset(rows: &[f64], dim: usize, subset: &[usize]) -> Self {
        let len = subset.len();
        let mut tiles = vec![0.0; len.div_ceil(TILE) * dim * TILE];
        for (i, &r) in subset.iter().enumerate() {
            let base = (i / TILE) * dim * TILE + i % TILE;
            for d in 0..dim {
                tiles[base + d * TILE] = rows[r * dim + d];
            }
        }
        Self { dim, len, tiles }
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

/// Tiles per cache block: 32 tiles x 8 points x 20 dimensions x 8 bytes
/// is 40 KiB, reused by a whole query group before the next block.
const BLOCK_TILES: usize = 32;
/// Queries sharing one pass over a block.
const QUERY_GROUP: usize = 64;
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

/// The best `k` so far of one query, sorted ascending by (distance, index).
struct TopK<'a> {
    distances: &'a mut [f64],
    indices: &'a mut [u32],
    filled: usize,
    skip: usize,
}

impl TopK<'_> {
    #[inline]
    fn offer(&mut self, distances: &[f64; TILE], first: usize, len: usize) {
        let k = self.distances.len();
        for (lane, &d2) in distances.iter().enumerate() {
            // Strict `<` once full: points come in index order, so a later
            // index never displaces an equal distance (the lower-index rule).
            let worst = self.distances[k - 1];
            if d2 < worst || (self.filled < k && d2 <= worst) {
                let index = first + lane;
                if index >= len || index == self.skip || d2.is_nan() {
                    continue;
                }
                let mut pos = self.filled.min(k - 1);
                while pos > 0 && self.distances[pos - 1] > d2 {
                    self.distances[pos] = self.distances[pos - 1];
                    self.indices[pos] = self.indices[pos - 1];
                    pos -= 1;
                }
                self.distances[pos] = d2;
                self.indices[pos] = index as u32;
                self.filled = (self.filled + 1).min(k);
            }
        }
    }
}

/// Dimensions summed between two checks of the early exit.
const CHECK_EVERY: usize = 4;

/// Squared distances of two queries to the eight points of one tile. Two
/// queries per pass halve the loads per distance; the sixteen running sums
/// stay in registers. Partial distance search: every few dimensions, if all
/// sixteen partial sums already reach their query's current k-th best
/// (`limit_a`, `limit_b`), the rest is skipped: a partial sum only grows, so
/// none of these points could enter either answer (entry needs strictly
/// less), and the early exit changes no result.
#[inline]
fn tile_distances(
    tile: &[f64],
    a: &[f64],
    b: &[f64],
    limit_a: f64,
    limit_b: f64,
) -> ([f64; TILE], [f64; TILE]) {
    let mut da = [0.0; TILE];
    let mut db = [0.0; TILE];
    let dim = a.len();
    let mut d = 0;
    while d < dim {
        let end = (d + CHECK_EVERY).min(dim);
        for dd in d..end {
            let column = &tile[dd * TILE..(dd + 1) * TILE];
            let (qa, qb) = (a[dd], b[dd]);
            for lane in 0..TILE {
                let x = column[lane];
                let u = x - qa;
                let v = x - qb;
                da[lane] += u * u;
                db[lane] += v * v;
            }
        }
        d = end;
        if d < dim && da.iter().all(|&x| x >= limit_a) && db.iter().all(|&x| x >= limit_b) {
            break;
        }
    }
    (da, db)
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
    out_distances.fill(f64::INFINITY);
    out_indices.fill(u32::MAX);
    let n_tiles = set.len.div_ceil(TILE);
    let tile_width = dim * TILE;
    let mut filled = vec![0usize; count];
    for group_start in (0..count).step_by(QUERY_GROUP) {
        let group_len = QUERY_GROUP.min(count - group_start);
        for block_start in (0..n_tiles).step_by(BLOCK_TILES) {
            let block_end = (block_start + BLOCK_TILES).min(n_tiles);
            for pair in (0..group_len).step_by(2) {
                let qa = group_start + pair;
                // An odd group's last query is paired with itself.
                let qb = if pair + 1 < group_len { qa + 1 } else { qa };
                let query = |q: usize| &queries[(first + q) * dim..(first + q + 1) * dim];
                let skip = |q: usize| match exclude {
                    Exclude::Nothing => usize::MAX,
                    Exclude::SelfIndex(own) => own[first + q] as usize,
                };
                let (head, tail) = out_distances.split_at_mut(qb * k);
                let (ihead, itail) = out_indices.split_at_mut(qb * k);
                let a_slots = if qb != qa { qa * k..qb * k } else { 0..0 };
                let mut top_a = TopK {
                    distances: &mut head[a_slots.clone()],
                    indices: &mut ihead[a_slots],
                    filled: filled[qa],
                    skip: skip(qa),
                };
                let mut top_b = TopK {
                    distances: &mut tail[..k],
                    indices: &mut itail[..k],
                    filled: filled[qb],
                    skip: skip(qb),
                };
                for t in block_start..block_end {
                    let tile = &set.tiles[t * tile_width..(t + 1) * tile_width];
                    let limit_a = if qb != qa && top_a.filled == k {
                        top_a.distances[k - 1]
                    } else if qb != qa {
                        f64::INFINITY
                    } else {
                        // A query paired with itself: only `b` counts.
                        f64::NEG_INFINITY
                    };
                    let limit_b = if top_b.filled == k {
                        top_b.distances[k - 1]
                    } else {
                        f64::INFINITY
                    };
                    let (da, db) = tile_distances(tile, query(qa), query(qb), limit_a, limit_b);
                    if qb != qa {
                        top_a.offer(&da, t * TILE, set.len);
                    }
                    top_b.offer(&db, t * TILE, set.len);
                }
                let (fa, fb) = (top_a.filled, top_b.filled);
                if qb != qa {
                    filled[qa] = fa;
                }
                filled[qb] = fb;
            }
        }
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
    fn early_exit_keeps_exact_answers_on_gaussian_data() {
        // Approximately normal coordinates (sum of uniforms), many blocks,
        // queries from the set itself with self exclusion, odd query count.
        let mut rng = Rng::new(17);
        let (n, dim, k) = (20_000, 20, 10);
        let rows: Vec<f64> = (0..n * dim)
            .map(|_| (0..4).map(|_| rng.uniform()).sum::<f64>() - 2.0)
            .collect();
        let set = PointSet::from_rows(&rows, dim);
        let picked: Vec<usize> = (0..n).step_by(211).collect();
        let queries: Vec<f64> = picked
            .iter()
            .flat_map(|&q| rows[q * dim..(q + 1) * dim].to_vec())
            .collect();
        let own: Vec<u32> = picked.iter().map(|&q| q as u32).collect();
        let found = search(&set, &queries, k, Exclude::SelfIndex(&own));
        for (i, &q) in picked.iter().enumerate() {
            let expected = naive(&rows, dim, &rows[q * dim..(q + 1) * dim], k, Some(q));
            assert_eq!(found.indices(i), expected.as_slice(), "query {q}");
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
