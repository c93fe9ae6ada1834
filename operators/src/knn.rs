//! Exact k-nearest-neighbour search, the hot path of the oversamplers, of
//! iCost and of the complexity measures: every neighbourhood goes through
//! it.
//!
//! Blocked brute force: the reference points are stored in tiles of eight,
//! dimension-major within a tile, so the kernel computes the distances of
//! four queries to eight points with 32 running sums in registers, reading
//! one cache line per dimension; a block of tiles is reused from cache by a
//! group of queries before the next block is touched. The kernel is
//! compiled for AVX-512, AVX2 and the baseline, and the widest the CPU has
//! is picked at run time (`pulp`, so without `unsafe` here). Queries are
//! split across threads when the work is large enough, and so is building
//! a large set's prefilter copy.
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
//! How a set is searched depends on the data, never the answer:
//! - Sets of few dimensions (up to [`TREE_MAX_DIM`]) and enough points are
//!   searched with a k-d tree instead ([`kd_tree`]), under the same
//!   contract. Its leaves are stored and scanned a column at a time, each
//!   point's distance summed in the same dimension order as the brute-force
//!   kernel, so the distances are bit-identical. In more dimensions a tree
//!   prunes too little to pay for itself (the operators' metrics data has
//!   20 and more), so brute force it is.
//! - Above that dimension, a search with enough queries first estimates
//!   distances in single precision ([`prefilter`]): `|q|^2 + |x|^2 - 2 q.x`
//!   on centred, power-of-two-scaled `f32` copies, eight queries by sixteen
//!   points per step, 512 queries per pass over the point tiles. A point is
//!   recomputed exactly unless a proven error bound rules it out, so the
//!   answers are the exact kernel's. Queries are multiplied by -2 (exact)
//!   and carry their own terms in a per-query threshold, so a point's test
//!   is one addition and one comparison; the pairs of a step that pass are
//!   recomputed together, then offered in order, so their independent sums
//!   overlap. A query's limit starts from the `k`-th least per-lane minimum
//!   of the estimates' upper ends in the first block (distinct points, so a
//!   proven bound on its `k`-th distance), not from infinity. Blocks are
//!   scanned in a scattered fixed order, which is why top lists order by
//!   (distance, index) rather than relying on index order.
//! - Where the CPU has a matrix unit (Intel AMX, on Linux) and a set has up
//!   to 21 dimensions, the prefilter's dot products come from it instead
//!   ([`matrix`]), on coordinates split into two `bf16` halves: a wider
//!   bound, the same recomputation rule, and 2,048 queries per pass so that
//!   the point tiles stream from memory once per group.
//!
//! A [`PointSet`] made from all of a caller's rows borrows them (no `f64`
//! copy): the prefilter is converted from them and recomputes from them,
//! and the exact kernel's tiles are made by the first search that runs it.
//! The prefilter's copies and terms, and the matrix unit's query rows and
//! products, start on 64-byte boundaries (`LineAligned`), so a 64-byte row
//! is one cache line. [`matrix`] holds the tile instructions
//! (configuration, the permission request to Linux, loads, products,
//! stores) as inline assembly: the workspace's only `unsafe` code.
//!
//! This module and its engines import each other on purpose: it holds the
//! point sets and answers every engine shares and chooses the engine; the
//! cycle stays inside this folder.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::thread;

use crate::parallel::cores;

mod kd_tree;
mod matrix;
mod prefilter;

use kd_tree::KdTree;
use prefilter::{Engine, Prefilter, PreparedQueries};

/// Reference points, as row-major coordinates, as tiles of [`TILE`] points
/// (within a tile, coordinate `d` of its points is contiguous, so the exact
/// kernel reads one short vector per dimension and keeps the tile's
/// distances in registers), or as a k-d tree.
///
/// A set made from all of the caller's rows borrows them: the prefilter is
/// converted from them and recomputes its exact distances from them (a
/// point's coordinates in two or three cache lines, where the tiles spread
/// them over `dim`), so a set searched only through the prefilter never
/// copies its points in `f64`. The tiles are made by the first search that
/// runs the exact kernel.
#[derive(Debug, Clone)]
pub struct PointSet<'a> {
    dim: usize,
    len: usize,
    /// `rows[i * dim + d]` is coordinate `d` of point `i`; empty for a set
    /// made as tiles ([`Self::tiles_from_subset`]) or as a tree.
    rows: Cow<'a, [f64]>,
    /// `tiles[(i / TILE) * dim * TILE + d * TILE + i % TILE]` is coordinate
    /// `d` of point `i`; lanes past `len` are padding, never reported.
    /// Never made for a set searched through `tree`.
    tiles: OnceLock<Vec<f64>>,
    tree: Option<KdTree>,
    /// Single-precision copy searched first in many dimensions (see
    /// [`Prefilter`]), made by the first search with enough queries to
    /// repay it; `None` inside where the exact kernel is searched alone.
    prefilter: OnceLock<Option<Prefilter>>,
}

/// Most dimensions a set is searched with a k-d tree in.
pub const TREE_MAX_DIM: usize = 8;
/// Fewest queries a search builds the prefilter for (below, building it
/// costs more than it saves over the exact kernel).
const PREFILTER_MIN_QUERIES: usize = 32;
/// Fewest points a set is searched with a k-d tree for.
const TREE_MIN_POINTS: usize = 256;

/// Points per tile: one 64-byte cache line of `f64` per dimension.
pub const TILE: usize = 8;

impl<'a> PointSet<'a> {
    /// From `rows`, row-major with `dim` values per row, borrowed (a tree
    /// copies them into its own order).
    pub fn from_rows(rows: &'a [f64], dim: usize) -> Self {
        let len = rows.len().checked_div(dim).unwrap_or(0);
        if searched_by_tree(dim, len) {
            let all: Vec<usize> = (0..len).collect();
            return Self::tree_from_subset(rows, dim, &all);
        }
        Self {
            dim,
            len,
            rows: Cow::Borrowed(&rows[..len * dim]),
            tiles: OnceLock::new(),
            tree: None,
            prefilter: OnceLock::new(),
        }
    }

    /// The same set, owning its coordinates (copied if borrowed).
    pub fn into_owned(self) -> PointSet<'static> {
        PointSet {
            dim: self.dim,
            len: self.len,
            rows: Cow::Owned(self.rows.into_owned()),
            tiles: self.tiles,
            tree: self.tree,
            prefilter: self.prefilter,
        }
    }

    /// From the rows of `rows` (row-major, `dim` wide) listed in `subset`,
    /// gathered row-major (or into a tree).
    pub fn from_subset(rows: &[f64], dim: usize, subset: &[usize]) -> Self {
        if searched_by_tree(dim, subset.len()) {
            return Self::tree_from_subset(rows, dim, subset);
        }
        let mut gathered = Vec::with_capacity(subset.len() * dim);
        for &r in subset {
            gathered.extend_from_slice(&rows[r * dim..(r + 1) * dim]);
        }
        Self {
            dim,
            len: subset.len(),
            rows: Cow::Owned(gathered),
            tiles: OnceLock::new(),
            tree: None,
            prefilter: OnceLock::new(),
        }
    }

    /// Searched by brute force, whatever the dimension, its points copied
    /// straight into the exact kernel's tiles (for a set searched by few
    /// queries, which the exact kernel answers).
    pub fn tiles_from_subset(rows: &[f64], dim: usize, subset: &[usize]) -> Self {
        let tiles = tiles_of(subset.len(), dim, |i| {
            let r = subset[i];
            &rows[r * dim..(r + 1) * dim]
        });
        Self {
            dim,
            len: subset.len(),
            rows: Cow::Owned(Vec::new()),
            tiles: OnceLock::from(tiles),
            tree: None,
            prefilter: OnceLock::new(),
        }
    }

    /// The exact kernel's tiles, made on first use.
    fn tiles(&self) -> &[f64] {
        self.tiles.get_or_init(|| {
            let dim = self.dim;
            tiles_of(self.len, dim, |i| &self.rows[i * dim..(i + 1) * dim])
        })
    }

    /// Point `i`'s coordinates: its row, or (for a set made as tiles)
    /// gathered from its tile into `buffer`.
    #[inline(always)]
    fn point<'b>(&'b self, i: usize, buffer: &'b mut [f64]) -> &'b [f64] {
        let dim = self.dim;
        if !self.rows.is_empty() {
            return &self.rows[i * dim..(i + 1) * dim];
        }
        let tiles = self.tiles();
        let base = tile_offset(i, dim);
        for (d, v) in buffer.iter_mut().enumerate().take(dim) {
            *v = tiles[base + d * TILE];
        }
        &buffer[..dim]
    }

    /// The squared distance of point `i` to `query`: the exact kernel's
    /// arithmetic, in its order (so the same bits), from the point's row
    /// (or, for a set made as tiles, its tile).
    #[inline(always)]
    fn squared_distance(&self, i: usize, query: &[f64]) -> f64 {
        let dim = self.dim;
        let mut sum = 0.0;
        if self.rows.is_empty() {
            let tiles = self.tiles();
            let base = tile_offset(i, dim);
            for (d, &q) in query.iter().enumerate() {
                let u = tiles[base + d * TILE] - q;
                sum += u * u;
            }
        } else {
            for (&x, &q) in self.rows[i * dim..(i + 1) * dim].iter().zip(query) {
                let u = x - q;
                sum += u * u;
            }
        }
        sum
    }

    /// The prefilter for a search of `n_queries`: made now if there are
    /// enough queries to repay building it (a set searched once for a few
    /// queries, as iCost's window per batch, is cheaper without), else
    /// whatever an earlier search made.
    fn prefilter_for(&self, n_queries: usize) -> Option<&Prefilter> {
        let usable = self.tree.is_none() && self.dim > TREE_MAX_DIM;
        if usable && n_queries >= PREFILTER_MIN_QUERIES {
            self.prefilter
                .get_or_init(|| {
                    Engine::best(self.dim).and_then(|engine| Prefilter::new(self, engine))
                })
                .as_ref()
        } else {
            self.prefilter.get().and_then(Option::as_ref)
        }
    }

    /// Searched through a prefilter of `engine` (where the coordinates
    /// fit), whatever the query count.
    #[cfg(test)]
    fn with_engine(mut self, engine: Engine) -> Self {
        let prefilter = Prefilter::new(&self, engine);
        self.prefilter = OnceLock::from(prefilter);
        self
    }

    /// Searched by the exact kernel alone, never through the prefilter.
    #[cfg(test)]
    fn without_prefilter(mut self) -> Self {
        self.prefilter = OnceLock::from(None);
        self
    }

    /// Searched through a k-d tree, whatever the dimension.
    pub fn tree_from_subset(rows: &[f64], dim: usize, subset: &[usize]) -> Self {
        Self {
            dim,
            len: subset.len(),
            rows: Cow::Owned(Vec::new()),
            tiles: OnceLock::new(),
            tree: Some(KdTree::build(rows, dim, subset)),
            prefilter: OnceLock::from(None),
        }
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

/// Whether a set of `len` points in `dim` dimensions is searched through a
/// k-d tree (few dimensions, enough points) rather than by brute force.
fn searched_by_tree(dim: usize, len: usize) -> bool {
    (1..=TREE_MAX_DIM).contains(&dim) && len >= TREE_MIN_POINTS
}

/// Where coordinate 0 of point `i` sits in tiles of `dim` dimensions
/// (coordinate `d` is `d * TILE` further).
#[inline(always)]
fn tile_offset(i: usize, dim: usize) -> usize {
    (i / TILE) * dim * TILE + i % TILE
}

/// `len` points of `dim` coordinates (`point(i)` gives point `i`'s) laid
/// out as the exact kernel's tiles.
fn tiles_of<'p>(len: usize, dim: usize, point: impl Fn(usize) -> &'p [f64]) -> Vec<f64> {
    let mut tiles = vec![0.0; len.div_ceil(TILE) * dim * TILE];
    for i in 0..len {
        let base = tile_offset(i, dim);
        for (d, &v) in point(i).iter().enumerate() {
            tiles[base + d * TILE] = v;
        }
    }
    tiles
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
/// Below this many queries a tree search is not split across threads.
const TREE_PARALLEL_QUERIES: usize = 1_024;

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
    let threads = cores();
    let work = n_queries.saturating_mul(set.len).saturating_mul(dim.max(1));
    let parallel = threads > 1
        && match set.tree {
            Some(_) => n_queries >= TREE_PARALLEL_QUERIES,
            None => work >= PARALLEL_WORK && n_queries >= 2 * QUERY_GROUP,
        };
    let prefilter = set.prefilter_for(n_queries);
    let prepared = prefilter.and_then(|p| p.prepare(queries));
    let prepared = prefilter.zip(prepared.as_ref());
    if set.tree.is_none() && prepared.is_none() {
        // Made once, before the threads that share them.
        set.tiles();
    }
    let kernel = |first, out_indices, out_distances| SearchKernel {
        share: SearchRange {
            set,
            queries,
            first,
            k,
            exclude,
        },
        prepared,
        out_indices,
        out_distances,
    };
    if !parallel {
        kernel(0, &mut indices, &mut squared_distances).dispatched();
    } else {
        let per_thread = n_queries.div_ceil(threads);
        thread::scope(|scope| {
            let index_chunks = indices.chunks_mut(per_thread * k);
            let distance_chunks = squared_distances.chunks_mut(per_thread * k);
            for (t, (idx, dist)) in index_chunks.zip(distance_chunks).enumerate() {
                let first = t * per_thread;
                let kernel = kernel(first, idx, dist);
                scope.spawn(move || kernel.dispatched());
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
    #[inline(always)]
    fn offer(&mut self, distances: &[f64; TILE], first: usize, len: usize) {
        // Most tiles hold no point that could enter: one branch-free test
        // over the lanes (no point enters above the k-th distance; NaN
        // never does) saves the branch per lane.
        let worst = self.distances[self.distances.len() - 1];
        if !distances.iter().fold(false, |any, &d2| any | (d2 <= worst)) {
            return;
        }
        for (lane, &d2) in distances.iter().enumerate() {
            let index = first + lane;
            if index < len {
                self.offer_one(d2, index);
            }
        }
    }

    /// Offer point `index` at squared distance `d2`; whether it entered.
    /// Order is by (distance, index), so the lower index wins a tie
    /// whatever order points are offered in; an unfilled slot holds
    /// (`+inf`, `u32::MAX`), which every point precedes.
    #[inline(always)]
    fn offer_one(&mut self, d2: f64, index: usize) -> bool {
        let k = self.distances.len();
        let index = index as u32;
        let precedes = |d: f64, i: u32| d2 < d || (d2 == d && index < i);
        if !precedes(self.distances[k - 1], self.indices[k - 1])
            || index as usize == self.skip
            || d2.is_nan()
        {
            return false;
        }
        let mut pos = self.filled.min(k - 1);
        while pos > 0 && precedes(self.distances[pos - 1], self.indices[pos - 1]) {
            self.distances[pos] = self.distances[pos - 1];
            self.indices[pos] = self.indices[pos - 1];
            pos -= 1;
        }
        self.distances[pos] = d2;
        self.indices[pos] = index;
        self.filled = (self.filled + 1).min(k);
        true
    }
}

/// Dimensions summed between two checks of the early exit.
const CHECK_EVERY: usize = 4;

/// Queries sharing one pass over a tile: four independent running sums
/// per lane hide the latency of the additions (one query alone would wait
/// on its own previous addition every dimension).
const QUAD: usize = 4;

/// Squared distances of four queries to the eight points of one tile, the
/// 32 running sums in registers. Each sum adds the dimensions in order, so
/// every distance is the one the definition (and the k-d tree) computes.
/// Partial distance search: every few dimensions, if every partial sum
/// already reaches its query's current k-th best (`limits`), the rest is
/// skipped: a partial sum only grows, so none of these points could enter
/// any answer (entry needs strictly less), and the early exit changes no
/// result.
#[inline(always)]
fn tile_distances(
    tile: &[f64],
    queries: &[&[f64]; QUAD],
    limits: &[f64; QUAD],
) -> [[f64; TILE]; QUAD] {
    let mut sums = [[0.0; TILE]; QUAD];
    let dim = queries[0].len();
    let mut d = 0;
    while d < dim {
        let end = (d + CHECK_EVERY).min(dim);
        for dd in d..end {
            let column = &tile[dd * TILE..(dd + 1) * TILE];
            for (sum, query) in sums.iter_mut().zip(queries) {
                let q = query[dd];
                for lane in 0..TILE {
                    let u = column[lane] - q;
                    sum[lane] += u * u;
                }
            }
        }
        d = end;
        // Branch-free over the lanes (a short-circuiting `all` would be a
        // data-dependent branch per lane), one branch on the result.
        let mut beyond = true;
        for (sum, &limit) in sums.iter().zip(limits) {
            for &s in sum {
                beyond &= s >= limit;
            }
        }
        if d < dim && beyond {
            break;
        }
    }
    sums
}

/// One thread's share of a search: queries `first..` of `queries`
/// against `set`.
#[derive(Clone, Copy)]
struct SearchRange<'a> {
    set: &'a PointSet<'a>,
    queries: &'a [f64],
    first: usize,
    k: usize,
    exclude: Exclude<'a>,
}

impl SearchRange<'_> {
    /// Query `q` of this share.
    #[inline(always)]
    fn query(&self, q: usize) -> &[f64] {
        let dim = self.set.dim;
        &self.queries[(self.first + q) * dim..(self.first + q + 1) * dim]
    }

    /// Empty answers for the share's queries (every slot (`+inf`,
    /// `u32::MAX`), which any point precedes) and each query's count of
    /// filled slots: none yet.
    fn empty_answers(&self, out_indices: &mut [u32], out_distances: &mut [f64]) -> Vec<usize> {
        out_distances.fill(f64::INFINITY);
        out_indices.fill(u32::MAX);
        vec![0; out_indices.len() / self.k]
    }

    /// The set index query `q` of this share must not find.
    #[inline(always)]
    fn skip(&self, q: usize) -> usize {
        match self.exclude {
            Exclude::Nothing => usize::MAX,
            Exclude::SelfIndex(own) => own[self.first + q] as usize,
        }
    }
}

/// A share of a search as a unit that `pulp` compiles once per instruction
/// set (monomorphized per `Simd` type and inlined into a function with
/// those target features) and picks from at run time.
struct SearchKernel<'a, 'o> {
    share: SearchRange<'a>,
    /// The prefilter and the queries in its coordinates, when it is used.
    prepared: Option<(&'a Prefilter, &'a PreparedQueries)>,
    out_indices: &'o mut [u32],
    out_distances: &'o mut [f64],
}

impl SearchKernel<'_, '_> {
    /// The search compiled for the widest vector instructions this CPU has
    /// (AVX-512 or AVX2 with FMA, else the baseline), chosen at run time: a
    /// tile's lanes then fit one or two registers.
    fn dispatched(self) {
        pulp::Arch::new().dispatch(self);
    }
}

impl pulp::WithSimd for SearchKernel<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let Self {
            share,
            prepared,
            out_indices,
            out_distances,
        } = self;
        match (&share.set.tree, prepared) {
            (Some(tree), _) => tree.search_range(
                share.queries,
                share.first,
                share.k,
                share.exclude,
                out_indices,
                out_distances,
            ),
            (None, Some((prefilter, prepared))) => prefilter::search_range(
                simd,
                share,
                prefilter,
                prepared,
                out_indices,
                out_distances,
            ),
            _ => search_range(share, out_indices, out_distances),
        }
    }
}

/// Answer the share's queries (`out_indices.len() / k` of them) with the
/// exact kernel.
#[inline(always)]
fn search_range(share: SearchRange<'_>, out_indices: &mut [u32], out_distances: &mut [f64]) {
    let SearchRange { set, k, .. } = share;
    let dim = set.dim;
    let mut filled = share.empty_answers(out_indices, out_distances);
    let count = filled.len();
    let n_tiles = set.len.div_ceil(TILE);
    let tile_width = dim * TILE;
    let tiles = set.tiles();
    for group_start in (0..count).step_by(QUERY_GROUP) {
        let group_len = QUERY_GROUP.min(count - group_start);
        for block_start in (0..n_tiles).step_by(BLOCK_TILES) {
            let block_end = (block_start + BLOCK_TILES).min(n_tiles);
            for quad_start in (group_start..group_start + group_len).step_by(QUAD) {
                let n = QUAD.min(group_start + group_len - quad_start);
                // A short quad repeats its last query; those sums are unused.
                let points: [&[f64]; QUAD] =
                    std::array::from_fn(|j| share.query(quad_start + j.min(n - 1)));
                let range = quad_start * k..(quad_start + n) * k;
                let mut distance_rows = out_distances[range.clone()].chunks_mut(k);
                let mut index_rows = out_indices[range].chunks_mut(k);
                let mut tops: [Option<TopK<'_>>; QUAD] = std::array::from_fn(|j| {
                    let (distances, indices) = (distance_rows.next()?, index_rows.next()?);
                    Some(TopK {
                        distances,
                        indices,
                        filled: filled[quad_start + j],
                        skip: share.skip(quad_start + j),
                    })
                });
                for t in block_start..block_end {
                    let tile = &tiles[t * tile_width..(t + 1) * tile_width];
                    let limits: [f64; QUAD] = std::array::from_fn(|j| match &tops[j] {
                        Some(top) if top.filled == k => top.distances[k - 1],
                        Some(_) => f64::INFINITY,
                        // An unused slot never holds the early exit back.
                        None => f64::NEG_INFINITY,
                    });
                    let sums = tile_distances(tile, &points, &limits);
                    for (top, sum) in tops.iter_mut().zip(&sums) {
                        if let Some(top) = top {
                            top.offer(sum, t * TILE, set.len);
                        }
                    }
                }
                for (j, top) in tops.iter().enumerate() {
                    if let Some(top) = top {
                        filled[quad_start + j] = top.filled;
                    }
                }
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
    fn tree_and_tiles_give_identical_answers() {
        // Grid data (ties everywhere, duplicates) in 1 to 12 dimensions,
        // both layouts, both exclusions, serial and parallel.
        let mut rng = Rng::new(23);
        for &(n, dim, levels, k, n_queries) in &[
            (2_000, 2, 5, 5, 300),
            (3_000, 6, 3, 7, 1_500),
            (1_000, 12, 2, 5, 200),
            (600, 1, 50, 9, 600),
        ] {
            let rows = random_rows(&mut rng, n, dim, levels);
            let all: Vec<usize> = (0..n).collect();
            let tiles = PointSet::tiles_from_subset(&rows, dim, &all);
            let tree = PointSet::tree_from_subset(&rows, dim, &all);
            let queries = random_rows(&mut rng, n_queries, dim, levels + 1);
            let a = search(&tiles, &queries, k, Exclude::Nothing);
            let b = search(&tree, &queries, k, Exclude::Nothing);
            assert_eq!(a, b, "n={n} dim={dim}");
            let own: Vec<u32> = (0..n as u32).collect();
            let a = search(&tiles, &rows, k, Exclude::SelfIndex(&own));
            let b = search(&tree, &rows, k, Exclude::SelfIndex(&own));
            assert_eq!(a, b, "n={n} dim={dim}, self excluded");
            for q in (0..n).step_by(97) {
                let expected = naive(&rows, dim, &rows[q * dim..(q + 1) * dim], k, Some(q));
                assert_eq!(b.indices(q), expected.as_slice());
            }
        }
        // A subset keeps the subset's numbering.
        let rows: Vec<f64> = (0..1_000).map(f64::from).collect();
        let subset: Vec<usize> = (0..1_000).rev().collect();
        let tree = PointSet::tree_from_subset(&rows, 1, &subset);
        let found = search(&tree, &[3.2], 2, Exclude::Nothing);
        assert_eq!(found.indices(0), &[996, 995]);
    }

    #[test]
    fn parallel_path_agrees_with_the_definition() {
        // Large enough to cross PARALLEL_WORK and span several blocks.
        let mut rng = Rng::new(11);
        let (n, dim, k) = (3_000, 20, 6);
        let rows: Vec<f64> = (0..n * dim).map(|_| rng.uniform()).collect();
        let set = PointSet::from_rows(&rows, dim);
        let queries: Vec<f64> = (0..200 * dim).map(|_| rng.uniform()).collect();
        for set in [set.clone(), set.without_prefilter()] {
            let found = search(&set, &queries, k, Exclude::Nothing);
            for q in (0..200).step_by(7) {
                let expected = naive(&rows, dim, &queries[q * dim..(q + 1) * dim], k, None);
                assert_eq!(found.indices(q), expected.as_slice());
            }
        }
    }

    /// Both searches of `set` (through the prefilter, with every engine
    /// the CPU has, and the exact kernel alone) give identical answers,
    /// distances included.
    fn assert_prefilter_is_exact(rows: &[f64], dim: usize, queries: &[f64], k: usize) {
        let set = PointSet::from_rows(rows, dim);
        let exact = set.clone().without_prefilter();
        let n = rows.len() / dim;
        let own: Vec<u32> = (0..n as u32).collect();
        let expected_own = search(&exact, rows, k, Exclude::SelfIndex(&own));
        let expected = search(&exact, queries, k, Exclude::Nothing);
        // The default search builds the best engine's prefilter.
        assert_eq!(
            search(&set, rows, k, Exclude::SelfIndex(&own)),
            expected_own,
            "dim={dim}, self excluded"
        );
        // The default search builds it above the tree's dimensions only;
        // below, the engines are forced (next) to test them there too.
        let built = set.prefilter.get().is_some_and(Option::is_some);
        let expected_built = dim > TREE_MAX_DIM && Engine::best(dim).is_some();
        assert_eq!(built, expected_built, "dim={dim}");
        // A set made as tiles converts and recomputes from its tiles, one
        // made from rows from its rows: both must answer alike.
        let all: Vec<usize> = (0..n).collect();
        let as_tiles = PointSet::tiles_from_subset(rows, dim, &all);
        for engine in Engine::all_available(dim) {
            for (layout, set) in [("rows", &set), ("tiles", &as_tiles)] {
                let set = set.clone().with_engine(engine);
                assert_eq!(
                    search(&set, rows, k, Exclude::SelfIndex(&own)),
                    expected_own,
                    "{engine:?} {layout} dim={dim}, self excluded"
                );
                assert_eq!(
                    search(&set, queries, k, Exclude::Nothing),
                    expected,
                    "{engine:?} {layout} dim={dim}"
                );
            }
        }
        for q in (0..queries.len() / dim).step_by(13) {
            let naive = naive(rows, dim, &queries[q * dim..(q + 1) * dim], k, None);
            assert_eq!(expected.indices(q), naive.as_slice(), "dim={dim} q={q}");
        }
    }

    #[test]
    fn the_prefilter_keeps_exact_answers_with_ties_offsets_and_extreme_scales() {
        let mut rng = Rng::new(29);
        // Grids: ties and exact duplicates everywhere, where an estimate
        // alone would pick the wrong one of two equal distances.
        // 5,200 points fill 11 blocks, scanned out of order: equal distances
        // met in any order must still resolve to the lower index.
        for &(n, dim, levels, k) in &[
            (900, 9, 2, 7),
            (1_500, 12, 3, 5),
            (700, 20, 2, 10),
            (5_200, 9, 2, 6),
            // Few dimensions, each engine forced: the bound's margin is
            // smallest there, the seeded limits' rounding the largest
            // share of it.
            (200, 2, 3, 6),
            (240, 1, 5, 4),
        ] {
            let rows = random_rows(&mut rng, n, dim, levels);
            let queries = random_rows(&mut rng, 150, dim, levels + 1);
            assert_prefilter_is_exact(&rows, dim, &queries, k);
        }
        let gaussian = |rng: &mut Rng| (0..4).map(|_| rng.uniform()).sum::<f64>() - 2.0;
        // A shell: every point at distance 1 + (below 1e-9) from the centre,
        // far finer than f32 resolves, so the estimates alone would order
        // them wrongly; only the bound keeps the answer exact.
        let dim = 12;
        let mut shell = Vec::new();
        for _ in 0..1_500 {
            let direction: Vec<f64> = (0..dim).map(|_| gaussian(&mut rng)).collect();
            let norm = direction.iter().map(|v| v * v).sum::<f64>().sqrt();
            let radius = 1.0 + rng.uniform() * 1e-9;
            shell.extend(direction.iter().map(|v| v / norm * radius));
        }
        let centres: Vec<f64> = (0..20 * dim).map(|_| rng.uniform() * 1e-10).collect();
        assert_prefilter_is_exact(&shell, dim, &centres, 10);
        let (n, dim) = (2_000, 20);
        // Far from the origin (a bound relative to |x|^2 would cover every
        // point), tiny and huge scales, and columns of different magnitudes.
        for transform in [
            (|v: f64, _d: usize| 1e9 + v * 1e-3) as fn(f64, usize) -> f64,
            |v, _| v * 1e-200,
            |v, _| v * 1e200,
            |v, d| v * 10f64.powi(d as i32 - 10),
            |v, d| if d % 3 == 0 { (v * 4.0).round() } else { v },
        ] {
            let rows: Vec<f64> = (0..n * dim)
                .map(|i| transform(gaussian(&mut rng), i % dim))
                .collect();
            let queries: Vec<f64> = (0..120 * dim)
                .map(|i| transform(gaussian(&mut rng) * 1.5, i % dim))
                .collect();
            assert_prefilter_is_exact(&rows, dim, &queries, 8);
        }
    }

    #[test]
    fn values_beyond_the_prefilters_range_are_searched_exactly() {
        let mut rng = Rng::new(31);
        let dim = 10;
        let mut rows: Vec<f64> = (0..500 * dim).map(|_| rng.uniform()).collect();
        // A query far outside the set's scale: the prefilter declines it.
        let mut queries: Vec<f64> = (0..40 * dim).map(|_| rng.uniform()).collect();
        queries[7] = 1e300;
        assert_prefilter_is_exact(&rows, dim, &queries, 4);
        // Coordinates each within range whose squares overflow f32 when
        // summed (300 of about 2^60): still exact.
        let wide = 300;
        let wide_rows: Vec<f64> = (0..100 * wide).map(|_| rng.uniform()).collect();
        let mut wide_queries: Vec<f64> = (0..40 * wide).map(|_| rng.uniform()).collect();
        wide_queries[..wide].fill(1.1e18);
        assert_prefilter_is_exact(&wide_rows, wide, &wide_queries, 3);
        // A set whose coordinates overflow when summed has no prefilter.
        rows[3] = f64::MAX;
        rows[13] = f64::MAX;
        let set = PointSet::from_rows(&rows, dim);
        let found = search(&set, &queries, 4, Exclude::Nothing);
        assert!(set.prefilter.get().is_some_and(Option::is_none));
        for q in 0..40 {
            let expected = naive(&rows, dim, &queries[q * dim..(q + 1) * dim], 4, None);
            assert_eq!(found.indices(q), expected.as_slice(), "q={q}");
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
        // The exact kernel alone (in 20 dimensions the prefilter runs first).
        let set = PointSet::from_rows(&rows, dim).without_prefilter();
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
