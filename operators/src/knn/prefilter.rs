//! A single-precision prefilter in front of the exact kernel, for sets of
//! many dimensions.
//!
//! Each point is stored centred (on the set's mean) and scaled by a power
//! of two, in `f32`, with its squared norm. A query's distance to sixteen
//! points is then estimated as `|q|^2 + |x|^2 - 2 q.x`: one fused
//! multiply-add per coordinate and point, sixteen lanes wide, where the
//! exact kernel needs a subtraction and a multiply-add in `f64` (eight
//! lanes). The estimate is never trusted: a point is recomputed exactly
//! (the definition's differences, in `f64`, bit for bit what the exact
//! kernel computes) unless the estimate proves it cannot enter the answer.
//! The answer is therefore the exact kernel's, ties and duplicates
//! included; only how many points are recomputed depends on rounding.
//!
//! The proof is a bound on the estimate's error (unit roundoff `u` of
//! `f32`, `n` dimensions, `S = |a|^2 + |b|^2` over the scaled, centred
//! coordinates `a`, `b` of query and point):
//! - rounding the coordinates to `f32` moves the true distance by at most
//!   `4 u S` (each coordinate moves by `u` of itself; the cross term is
//!   bounded through `|a - b| <= |a| + |b|`);
//! - the three sums are each within `n u` of their absolute sums
//!   (recursive summation, fused or not), and the two final additions add
//!   `4 u S`;
//!
//! so the estimate is within `(2 n + 8) u S`. We use twice that plus an
//! absolute term for underflow (in `f32`, and in the exact kernel, whose
//! squared differences of tiny data lose up to 2^-1074 each), and skip a
//! point only when `estimate - bound > limit`, where `limit` is the
//! query's current k-th exact distance (scaled): then its exact distance
//! exceeds the k-th, and it could not enter (entry needs strictly less).
//!
//! Centring keeps the bound small where the data sit far from the origin
//! (a bound relative to `|x|^2` would otherwise cover every point and the
//! prefilter would only cost); the power-of-two scale is exact and keeps
//! `f32` far from overflow. A set or query whose scaled coordinates do not
//! fit (`|value| > 2^60`, or not finite) is searched by the exact kernel.

use pulp::Simd;

use super::{PointSet, SearchRange, TILE, TopK};

/// Points per prefilter tile: one 64-byte line of `f32` per dimension.
pub(super) const FTILE: usize = 16;
/// Queries sharing one pass over a prefilter tile: 8 x 16 running sums,
/// enough independent additions to hide the multiply-add latency.
const QUERIES: usize = 8;
/// Tiles per cache block (32 x 16 points x 20 dimensions x 4 bytes is 40
/// KiB), reused by a whole query group before the next block.
const BLOCK_TILES: usize = 32;
/// Queries sharing one pass over a block.
const QUERY_GROUP: usize = 64;
/// Largest scaled coordinate the prefilter takes: squares and sums of
/// squares stay far below `f32::MAX`.
const LARGEST: f64 = 1.152_921_504_606_847e18; // 2^60
/// Unit roundoff of `f32`.
const UNIT_ROUNDOFF: f32 = f32::EPSILON / 2.0;
/// Absolute slack for coordinates that underflow in `f32` (each moves by
/// at most 2^-150): far above their effect, far below any real distance.
const F32_UNDERFLOW_SLACK: f64 = 1e-30;

/// Whether this CPU multiplies and adds in one instruction, without which
/// the prefilter would call a library routine per coordinate.
pub(super) fn is_fast() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("fma") && std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(target_arch = "aarch64")]
    {
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The single-precision copy of a point set.
#[derive(Debug, Clone)]
pub(super) struct Prefilter {
    /// `tiles[(i / FTILE) * dim * FTILE + d * FTILE + i % FTILE]` is the
    /// scaled, centred coordinate `d` of point `i`; padding lanes are 0.
    tiles: Vec<f32>,
    /// Each point's share of an estimate's lower end, `(1 - c) |x|^2` for
    /// the bound's coefficient `c`; `+inf` on padding lanes, so that no
    /// estimate there passes.
    lower_terms: Vec<f32>,
    centre: Vec<f64>,
    /// A power of two: exact to apply, and `scale^2` is exact too.
    scale: f64,
    /// `2 (2 n + 8) u`: the bound is `coefficient * S + slack`, so an
    /// estimate's lower end is `(1 - c) |q|^2 - slack + (1 - c) |x|^2 -
    /// 2 q.x`, a query's term plus a point's minus the dot product.
    coefficient: f32,
    /// Absolute part of the bound, in scaled units: underflow in `f32`, and
    /// in the exact kernel itself (each squared difference can lose up to
    /// 2^-1074 to underflow, which the scale magnifies for tiny data).
    slack: f32,
}

impl Prefilter {
    /// From the exact kernel's tiles (`TILE` points per tile); `None` when
    /// the coordinates do not fit.
    pub(super) fn new(exact_tiles: &[f64], dim: usize, len: usize) -> Option<Self> {
        if len == 0 || dim == 0 {
            return None;
        }
        // Every pass reads the exact tiles in memory order (tile, dimension,
        // lane); `lanes(t)` is how many of tile `t`'s lanes hold points.
        let exact_tiles = exact_tiles.chunks_exact(dim * TILE);
        let lanes = |t: usize| TILE.min(len - t * TILE);
        let mut centre = vec![0.0; dim];
        for (t, tile) in exact_tiles.clone().enumerate() {
            for (column, c) in tile.chunks_exact(TILE).zip(centre.iter_mut()) {
                *c += column[..lanes(t)].iter().sum::<f64>();
            }
        }
        centre.iter_mut().for_each(|c| *c /= len as f64);
        // A non-finite coordinate (or a sum that overflows) has no bound:
        // such a set is searched exactly.
        if !centre.iter().all(|c| c.is_finite()) {
            return None;
        }
        let mut largest = 0.0f64;
        for (t, tile) in exact_tiles.clone().enumerate() {
            for (column, c) in tile.chunks_exact(TILE).zip(&centre) {
                for v in &column[..lanes(t)] {
                    largest = largest.max((v - c).abs());
                }
            }
        }
        if !largest.is_finite() {
            return None;
        }
        // Largest scaled coordinate in [1/2, 1): far from both ends of f32.
        let scale = if largest > 0.0 {
            2f64.powi(-largest.log2().floor() as i32 - 1)
        } else {
            1.0
        };
        let coefficient = 2.0 * (2.0 * dim as f32 + 8.0) * UNIT_ROUNDOFF;
        let n_tiles = len.div_ceil(FTILE);
        let mut tiles = vec![0.0f32; n_tiles * dim * FTILE];
        let mut lower_terms = vec![f32::INFINITY; n_tiles * FTILE];
        for (t, tile) in exact_tiles.enumerate() {
            let mut sums = [0.0f32; TILE];
            for (d, (column, c)) in tile.chunks_exact(TILE).zip(&centre).enumerate() {
                for (lane, (v, sum)) in column.iter().zip(&mut sums).enumerate().take(lanes(t)) {
                    let i = t * TILE + lane;
                    let v = ((v - c) * scale) as f32;
                    tiles[(i / FTILE) * dim * FTILE + d * FTILE + i % FTILE] = v;
                    *sum += v * v;
                }
            }
            for (lane, sum) in sums.iter().enumerate().take(lanes(t)) {
                lower_terms[t * TILE + lane] = (1.0 - coefficient) * sum;
            }
        }
        Some(Self {
            tiles,
            lower_terms,
            centre,
            scale,
            coefficient,
            slack: (2.0 * dim as f64 * (f64::from_bits(1) * scale) * scale).max(F32_UNDERFLOW_SLACK)
                as f32,
        })
    }

    /// The queries in the prefilter's coordinates; `None` when one of them
    /// does not fit (the exact kernel then answers the whole search).
    pub(super) fn prepare(&self, queries: &[f64]) -> Option<PreparedQueries> {
        let dim = self.centre.len();
        let mut coordinates = Vec::with_capacity(queries.len());
        let mut lower_terms = Vec::with_capacity(queries.len() / dim);
        for query in queries.chunks_exact(dim) {
            let mut sum = 0.0f32;
            for (v, c) in query.iter().zip(&self.centre) {
                let scaled = (v - c) * self.scale;
                if scaled.is_nan() || scaled.abs() > LARGEST {
                    return None;
                }
                let v = scaled as f32;
                coordinates.push(v);
                sum += v * v;
            }
            // Enough huge coordinates overflow the norm in f32, making every
            // estimate infinite (only a limit overflowing as well would
            // keep that exact): the exact kernel instead.
            if !sum.is_finite() {
                return None;
            }
            lower_terms.push((1.0 - self.coefficient) * sum - self.slack);
        }
        Some(PreparedQueries {
            coordinates,
            lower_terms,
        })
    }

    /// A k-th exact distance in the prefilter's units, rounded to `f32`
    /// (the rounding is inside the bound's factor of two).
    fn scaled_limit(&self, squared_distance: f64) -> f32 {
        (squared_distance * self.scale * self.scale) as f32
    }
}

/// Queries in the prefilter's coordinates, with their shares of an
/// estimate's lower end (`(1 - c) |q|^2 - slack`).
#[derive(Debug)]
pub(super) struct PreparedQueries {
    coordinates: Vec<f32>,
    lower_terms: Vec<f32>,
}

/// Dot products of eight queries with the sixteen points of one tile, the
/// running sums in vector registers (one per query with AVX-512, two with
/// AVX2). `queries` is dimension-major: the eight queries' coordinate `d`
/// are `queries[d * QUERIES..][..QUERIES]`. Written against `pulp`'s vector
/// types because the auto-vectorizer may pick the query axis instead.
#[inline(always)]
fn tile_dots<S: Simd>(simd: S, tile: &[f32], queries: &[f32]) -> [[f32; FTILE]; QUERIES] {
    let (columns, _) = S::as_simd_f32s(tile);
    let per_column = (FTILE / S::F32_LANES).max(1);
    let zero = simd.splat_f32s(0.0);
    // Sized for the narrowest vectors; only `per_column` are used.
    let mut sums = [[zero; FTILE]; QUERIES];
    for (column, coordinates) in columns
        .chunks_exact(per_column)
        .zip(queries.chunks_exact(QUERIES))
    {
        for (sum, &q) in sums.iter_mut().zip(coordinates) {
            let q = simd.splat_f32s(q);
            for (s, &x) in sum[..per_column].iter_mut().zip(column) {
                *s = simd.mul_add_e_f32s(q, x, *s);
            }
        }
    }
    let mut dots = [[0.0f32; FTILE]; QUERIES];
    for (dot, sum) in dots.iter_mut().zip(&sums) {
        let (out, _) = S::as_mut_simd_f32s(dot);
        out.copy_from_slice(&sum[..per_column]);
    }
    dots
}

/// The step between blocks scanned one after the other: coprime with
/// their count (so every block is visited once) and near its golden
/// section, so that consecutive blocks lie far apart. Sets often come
/// sorted (the oversamplers order a table's rows canonically, by feature
/// values); scanned in order, each query would then approach its
/// neighbours step by step and its k-th best distance would improve
/// hundreds of times, each time with exact recomputations. Scattered, the
/// k-th best tightens early, as on shuffled data. Ties do not depend on the
/// order ([`TopK::offer_one`] orders by distance, then index).
fn block_stride(n_blocks: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let mut stride = ((n_blocks as f64 * 0.618) as usize).max(1);
    while gcd(stride, n_blocks.max(1)) != 1 {
        stride += 1;
    }
    stride
}

/// The exact squared distance of point `i` to `query`: the exact kernel's
/// arithmetic, in its order (so the same bits).
#[inline(always)]
fn exact_squared_distance(set: &PointSet, i: usize, query: &[f64]) -> f64 {
    let dim = set.dim;
    let base = (i / TILE) * dim * TILE + i % TILE;
    let mut sum = 0.0;
    for (d, &q) in query.iter().enumerate() {
        let u = set.tiles[base + d * TILE] - q;
        sum += u * u;
    }
    sum
}

/// Answer the share's queries (`out_indices.len() / k` of them): the
/// prefilter's estimates first, exact distances where they cannot rule a
/// point out.
#[inline(always)]
pub(super) fn search_range<S: Simd>(
    simd: S,
    share: SearchRange<'_>,
    prefilter: &Prefilter,
    prepared: &PreparedQueries,
    out_indices: &mut [u32],
    out_distances: &mut [f64],
) {
    let SearchRange { set, first, k, .. } = share;
    let dim = set.dim;
    let mut filled = share.empty_answers(out_indices, out_distances);
    let count = filled.len();
    let n_tiles = set.len.div_ceil(FTILE);
    let tile_width = dim * FTILE;
    let n_blocks = n_tiles.div_ceil(BLOCK_TILES);
    let stride = block_stride(n_blocks);
    // A group's queries, pass by pass, dimension-major within a pass (what
    // `tile_dots` reads); a short pass repeats its last query (those sums
    // are unused). Made once per group, read by every block.
    let mut group_columns = vec![0.0f32; QUERY_GROUP * dim];
    let scaled = |q: usize| &prepared.coordinates[(first + q) * dim..(first + q + 1) * dim];
    for group_start in (0..count).step_by(QUERY_GROUP) {
        let group_end = (group_start + QUERY_GROUP).min(count);
        for (p, columns) in group_columns.chunks_exact_mut(QUERIES * dim).enumerate() {
            let pass_start = group_start + p * QUERIES;
            if pass_start >= group_end {
                break;
            }
            let n = QUERIES.min(group_end - pass_start);
            for j in 0..QUERIES {
                for (d, &v) in scaled(pass_start + j.min(n - 1)).iter().enumerate() {
                    columns[d * QUERIES + j] = v;
                }
            }
        }
        for b in 0..n_blocks {
            let block_start = (b * stride) % n_blocks * BLOCK_TILES;
            let block_end = (block_start + BLOCK_TILES).min(n_tiles);
            for (p, pass_start) in (group_start..group_end).step_by(QUERIES).enumerate() {
                let n = QUERIES.min(group_end - pass_start);
                let pass_columns = &group_columns[p * QUERIES * dim..(p + 1) * QUERIES * dim];
                let range = pass_start * k..(pass_start + n) * k;
                let mut distance_rows = out_distances[range.clone()].chunks_mut(k);
                let mut index_rows = out_indices[range].chunks_mut(k);
                let mut tops: [Option<TopK<'_>>; QUERIES] = std::array::from_fn(|j| {
                    Some(TopK {
                        distances: distance_rows.next()?,
                        indices: index_rows.next()?,
                        filled: filled[pass_start + j],
                        skip: share.skip(pass_start + j),
                    })
                });
                let mut limits: [f32; QUERIES] = std::array::from_fn(|j| match &tops[j] {
                    Some(top) if top.filled == k => prefilter.scaled_limit(top.distances[k - 1]),
                    _ => f32::INFINITY,
                });
                let query_terms: [f32; QUERIES] = std::array::from_fn(|j| {
                    prepared.lower_terms[first + pass_start + j.min(n - 1)]
                });
                for t in block_start..block_end {
                    let tile = &prefilter.tiles[t * tile_width..(t + 1) * tile_width];
                    let point_terms = &prefilter.lower_terms[t * FTILE..(t + 1) * FTILE];
                    let dots = tile_dots(simd, tile, pass_columns);
                    for (j, top) in tops.iter_mut().enumerate() {
                        let Some(top) = top else {
                            continue;
                        };
                        // The estimate minus its bound, for every lane.
                        let lower =
                            |lane: usize| query_terms[j] + point_terms[lane] - 2.0 * dots[j][lane];
                        let mut any = false;
                        for lane in 0..FTILE {
                            any |= lower(lane) <= limits[j];
                        }
                        if !any {
                            continue;
                        }
                        let query = share.query(pass_start + j);
                        for lane in 0..FTILE {
                            let index = t * FTILE + lane;
                            if lower(lane) <= limits[j] && index < set.len {
                                let d2 = exact_squared_distance(set, index, query);
                                if top.offer_one(d2, index) && top.filled == k {
                                    limits[j] = prefilter.scaled_limit(top.distances[k - 1]);
                                }
                            }
                        }
                    }
                }
                for (j, top) in tops.iter().enumerate() {
                    if let Some(top) = top {
                        filled[pass_start + j] = top.filled;
                    }
                }
            }
        }
    }
}
