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
//! The comparison is arranged so that a point costs one addition: the
//! queries are multiplied by `-2` before the products (exact for powers of
//! two, so the products are exactly `-2` times the unscaled ones), and the
//! query's share of the lower end moves to the other side, `x_term - 2 q.x
//! <= limit - q_term`. Rounding the two sides instead of the one sum moves
//! the comparison by at most `6 u S` (a skip needs `limit < 3 S`), against
//! the `4 u S` counted for the final additions: the extra `2 u S` is far
//! inside the factor of two.
//!
//! Where the CPU has a matrix unit ([`matrix`]: AMX), the dot products
//! come from it instead ([`Engine::Matrix`]): each coordinate is split
//! into two `bf16` halves, `v = hi + lo` to within `2^-16` of `v` (the
//! first half alone would be `2^-8`), and the unit sums, in `f32`, the
//! exact products `q_hi x_hi + q_hi x_lo + q_lo x_hi` along a depth of three
//! times the dimension (the dropped `q_lo x_lo` is within `2^-16` of
//! `|q.x|`). With `e = (1.001 * 2^-8)^2` the relative error of a split
//! coordinate (`2^-8` is `bf16`'s unit roundoff; the 1.001 covers rounding
//! through `f32`) and `K` the padded depth, the estimate is then within
//! `(5 e + (1.01 K + 2 n + 12) u) S` of the distance (coordinate rounding
//! `4 e S`, the dropped products `e S`, the sums, the norms and the final
//! additions); the coefficient is twice that, about `1.6e-4` at 20
//! dimensions against `6e-6` for the vector engine: still far below the
//! gap between a query's k-th distance and most points'. One unit
//! instruction multiplies 16 x 32 by 32 x 16 values, so the estimates cost
//! a fraction of the vector engine's multiply-adds, and what remains is
//! comparing them with the limits and the exact recomputations.
//!
//! A query's limit starts as a bound, not as infinity: in the first block
//! a query group meets, the upper ends of the estimates (the estimate plus
//! twice the bound: the same terms with `1 + 2c` for `1 - c`; see
//! [`upper_ratio`]) are reduced to the least per lane, and the `k`-th
//! least of those sixteen lanes, which are sixteen different points,
//! bounds the exact distances of `k` points and so the query's `k`-th
//! nearest ([`lane_minima`]). Until then every point
//! of a step passed an unfilled answer and was recomputed and inserted;
//! with it, the 5,022-row class search of the oversampling bench recomputes
//! 18 points per query instead of 48, the 200,000-row search 74 instead of
//! 115. The first block's products are made twice for it (a tenth more of
//! them in the class search). The bound holds only where the exact sums
//! stay finite: a bound that would exceed `f64::MAX / 4` unscaled seeds
//! nothing (past it an exact distance can be `+inf`, above any bound).
//!
//! Centring keeps the bound small where the data sit far from the origin
//! (a bound relative to `|x|^2` would otherwise cover every point and the
//! prefilter would only cost); the power-of-two scale is exact and keeps
//! `f32` far from overflow. A set or query whose scaled coordinates do not
//! fit (`|value| > 2^60`, or not finite) is searched by the exact kernel.

use pulp::Simd;

use super::matrix::{
    self, DEPTH, DEPTH_CHUNK, POINT_COLUMNS, POINT_TILE, QUERY_ROWS, TILE_CHUNK, TileUnit,
};
use super::{PointSet, SearchRange, TopK};

/// Points per prefilter tile: one 64-byte line of `f32` per dimension.
pub(super) const FTILE: usize = 16;
/// Queries sharing one pass over a prefilter tile: 8 x 16 running sums,
/// enough independent additions to hide the multiply-add latency.
const QUERIES: usize = 8;
/// Tiles per cache block (32 x 16 points x 20 dimensions x 4 bytes is 40
/// KiB), reused by a whole query group before the next block.
const BLOCK_TILES: usize = 32;
/// Queries sharing one pass over a block: the `f32` point tiles (16 MB
/// for 200,000 points at 20 dimensions) stream from memory once per 512
/// queries. With 64, a 5,000-query search of 200,000 points took 10–15%
/// longer (AVX-512, the matrix unit set aside).
const QUERY_GROUP: usize = 512;
/// Queries sharing one pass over a block with the matrix engine: 64
/// product blocks' worth, so that the point tiles (25.6 MB of `bf16` for
/// 200,000 points) stream from memory once per 2,048 queries; a block
/// (64 KiB at 20 dimensions) then serves them from the core's cache. With
/// four blocks' worth (128 queries) the unit waited on memory: 15% of a
/// 5,000-query search of 200,000 points.
const MATRIX_GROUP: usize = 64 * QUERY_ROWS;
/// Fewest coordinates whose conversion to the matrix engine's halves is
/// split across cores (below, starting threads costs more than it saves).
const PARALLEL_CONVERSION: usize = 1 << 20;
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

/// How a prefilter computes its dot products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Engine {
    /// `f32` fused multiply-adds, a tile of 16 points per vector pass.
    Vector,
    /// The matrix unit, on coordinates split into two `bf16` halves.
    Matrix,
}

impl Engine {
    /// The fastest engine this machine runs for sets of `dim` dimensions,
    /// if any. The matrix engine keeps its query tiles loaded, which takes
    /// a depth of at most two chunks (`3 dim <= 64`); beyond, the vector
    /// engine.
    pub(super) fn best(dim: usize) -> Option<Self> {
        if matrix::available() && fits_matrix_depth(dim) {
            Some(Self::Matrix)
        } else if is_fast() {
            Some(Self::Vector)
        } else {
            None
        }
    }

    /// Every engine this machine runs (the tests compare each with the
    /// exact kernel).
    #[cfg(test)]
    pub(super) fn all_available(dim: usize) -> Vec<Self> {
        let mut engines = Vec::new();
        if is_fast() {
            engines.push(Self::Vector);
        }
        if matrix::available() && fits_matrix_depth(dim) {
            engines.push(Self::Matrix);
        }
        engines
    }
}

/// Whether a row of the matrix engine (three halves per dimension) fits
/// the unit's depth.
fn fits_matrix_depth(dim: usize) -> bool {
    3 * dim <= DEPTH
}

/// A buffer whose first element sits on a 64-byte boundary, so that a
/// 64-byte row of it (a tile row of the matrix unit, an AVX-512 register of
/// `f32`) is one cache line, not two: a large `Vec` comes from `mmap`
/// 16 bytes past a page boundary, and every row of it then straddles a
/// line.
#[derive(Debug)]
struct LineAligned<T> {
    data: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Copy> LineAligned<T> {
    const LINE: usize = 64;

    /// `len` copies of `value`.
    fn filled(value: T, len: usize) -> Self {
        let spare = Self::LINE / size_of::<T>();
        let data = vec![value; len + spare];
        // `align_offset` may decline (`usize::MAX`); the buffer is then
        // still correct, only unaligned.
        let start = data.as_ptr().align_offset(Self::LINE).min(spare);
        Self { data, start, len }
    }

    fn as_slice(&self) -> &[T] {
        &self.data[self.start..self.start + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data[self.start..self.start + self.len]
    }
}

impl<T: Copy> std::ops::Deref for LineAligned<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Copy> Clone for LineAligned<T> {
    /// A fresh aligned buffer (a cloned `Vec` could sit anywhere).
    fn clone(&self) -> Self {
        let slice = self.as_slice();
        let Some(&first) = slice.first() else {
            return Self {
                data: Vec::new(),
                start: 0,
                len: 0,
            };
        };
        let mut copy = Self::filled(first, slice.len());
        copy.as_mut_slice().copy_from_slice(slice);
        copy
    }
}

/// A value starting on a 64-byte boundary (see [`LineAligned`]).
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
struct LineStart<T>(T);

/// The estimates' copy of the points, per engine.
#[derive(Debug, Clone)]
enum Copies {
    /// `tiles[(i / FTILE) * dim * FTILE + d * FTILE + i % FTILE]` is the
    /// scaled, centred coordinate `d` of point `i`; padding lanes are 0.
    Vector { tiles: LineAligned<f32> },
    /// Per tile of [`FTILE`] points, two blocks of [`TILE_CHUNK`] `bf16`
    /// values in the unit's pair layout (see [`TileUnit::dots`]), of each
    /// point's depth row `[hi, lo, hi]` (zero-padded to [`DEPTH`]); a
    /// query's row is `[hi, hi, lo]`.
    Matrix { tiles: LineAligned<u16> },
}

/// A point set's reduced-precision copy (per engine) and the terms of its
/// estimates' error bound.
#[derive(Debug, Clone)]
pub(super) struct Prefilter {
    copies: Copies,
    /// Each point's share of an estimate's lower end, `(1 - c) |x|^2` for
    /// the bound's coefficient `c`; `+inf` on padding lanes, so that no
    /// estimate there passes.
    lower_terms: LineAligned<f32>,
    /// Each point's share of an estimate's upper end, `(1 + 2c) |x|^2`;
    /// `+inf` on padding lanes, so that no padding lane bounds an answer.
    upper_terms: LineAligned<f32>,
    centre: Vec<f64>,
    /// A power of two: exact to apply, and `scale^2` is exact too.
    scale: f64,
    /// `2 (2 n + 8) u` (vector engine; see the module doc for the matrix
    /// engine's): the bound is `coefficient * S + slack`, so an
    /// estimate's lower end is `(1 - c) |q|^2 - slack + (1 - c) |x|^2 -
    /// 2 q.x`, a query's term plus a point's minus the dot product.
    coefficient: f32,
    /// Absolute part of the bound, in scaled units: underflow in `f32`, and
    /// in the exact kernel itself (each squared difference can lose up to
    /// 2^-1074 to underflow, which the scale magnifies for tiny data).
    slack: f32,
}

impl Prefilter {
    /// From `set`'s points; `None` when the coordinates do not fit.
    pub(super) fn new(set: &PointSet<'_>, engine: Engine) -> Option<Self> {
        let (dim, len) = (set.dim, set.len);
        if len == 0 || dim == 0 {
            return None;
        }
        // One pass for the sums and each dimension's extremes: `|v - c|`
        // rounds monotonically in `v` on either side of `c`, so its
        // largest value over the set is at the smallest or the largest `v`,
        // the same value a second pass over every `v` would find.
        let mut buffer = vec![0.0; dim];
        let mut centre = vec![0.0; dim];
        let mut smallest = vec![f64::INFINITY; dim];
        let mut greatest = vec![f64::NEG_INFINITY; dim];
        for i in 0..len {
            let point = set.point(i, &mut buffer);
            for (((c, lo), hi), &v) in centre
                .iter_mut()
                .zip(&mut smallest)
                .zip(&mut greatest)
                .zip(point)
            {
                *c += v;
                *lo = lo.min(v);
                *hi = hi.max(v);
            }
        }
        centre.iter_mut().for_each(|c| *c /= len as f64);
        // A non-finite coordinate (or a sum that overflows) has no bound:
        // such a set is searched exactly.
        if !centre.iter().all(|c| c.is_finite()) {
            return None;
        }
        let largest = centre
            .iter()
            .zip(smallest.iter().zip(&greatest))
            .fold(0.0f64, |a, (c, (lo, hi))| {
                a.max((lo - c).abs()).max((hi - c).abs())
            });
        if !largest.is_finite() {
            return None;
        }
        // Largest scaled coordinate in [1/2, 1): far from both ends of f32.
        let scale = if largest > 0.0 {
            2f64.powi(-largest.log2().floor() as i32 - 1)
        } else {
            1.0
        };
        let slack = (2.0 * dim as f64 * (f64::from_bits(1) * scale) * scale)
            .max(F32_UNDERFLOW_SLACK) as f32;
        let scaled = |v: f64, c: f64| (v - c) * scale;
        let (copies, lower_terms, coefficient) = match engine {
            Engine::Vector => {
                let coefficient = 2.0 * (2.0 * dim as f32 + 8.0) * UNIT_ROUNDOFF;
                let n_tiles = len.div_ceil(FTILE);
                let mut tile_buffer = LineAligned::filled(0.0f32, n_tiles * dim * FTILE);
                let mut term_buffer = LineAligned::filled(f32::INFINITY, n_tiles * FTILE);
                let (tiles, lower_terms) = (tile_buffer.as_mut_slice(), term_buffer.as_mut_slice());
                for (i, term) in lower_terms.iter_mut().enumerate().take(len) {
                    let mut sum = 0.0f32;
                    let base = (i / FTILE) * dim * FTILE + i % FTILE;
                    for (d, (&v, &c)) in set.point(i, &mut buffer).iter().zip(&centre).enumerate() {
                        let v = scaled(v, c) as f32;
                        tiles[base + d * FTILE] = v;
                        sum += v * v;
                    }
                    *term = (1.0 - coefficient) * sum;
                }
                (
                    Copies::Vector { tiles: tile_buffer },
                    term_buffer,
                    coefficient,
                )
            }
            Engine::Matrix => {
                if !fits_matrix_depth(dim) {
                    return None;
                }
                let coefficient = matrix_coefficient(dim);
                let threads = if len * dim >= PARALLEL_CONVERSION {
                    crate::parallel::cores()
                } else {
                    1
                };
                let points = ScaledPoints {
                    set,
                    centre: &centre,
                    scale,
                };
                let (tiles, lower_terms) = points.matrix_copies(coefficient, threads);
                (Copies::Matrix { tiles }, lower_terms, coefficient)
            }
        };
        let upper_terms = upper_terms(&lower_terms, coefficient);
        Some(Self {
            copies,
            lower_terms,
            upper_terms,
            centre,
            scale,
            coefficient,
            slack,
        })
    }

    /// The queries in the prefilter's coordinates; `None` when one of them
    /// does not fit (the exact kernel then answers the whole search).
    pub(super) fn prepare(&self, queries: &[f64]) -> Option<PreparedQueries> {
        let dim = self.centre.len();
        let mut coordinates = Vec::new();
        let mut rows = Vec::new();
        let mut lower_terms = Vec::with_capacity(queries.len() / dim);
        let mut upper_terms = Vec::with_capacity(queries.len() / dim);
        let mut scaled_query = vec![0.0; dim];
        for query in queries.chunks_exact(dim) {
            for ((v, c), scaled) in query.iter().zip(&self.centre).zip(&mut scaled_query) {
                *scaled = (v - c) * self.scale;
                if scaled.is_nan() || scaled.abs() > LARGEST {
                    return None;
                }
            }
            let norm_term = match &self.copies {
                Copies::Vector { .. } => {
                    let mut sum = 0.0f32;
                    for &scaled in &scaled_query {
                        let v = scaled as f32;
                        coordinates.push(-2.0 * v);
                        sum += v * v;
                    }
                    (1.0 - self.coefficient) * sum
                }
                Copies::Matrix { .. } => {
                    let start = rows.len();
                    rows.resize(start + DEPTH, 0);
                    let row = &mut rows[start..];
                    let mut norm = 0.0f64;
                    for (d, &scaled) in scaled_query.iter().enumerate() {
                        let (hi, lo, value) = split(scaled);
                        let (hi, lo) = (times_minus_two(hi), times_minus_two(lo));
                        (row[d], row[dim + d], row[2 * dim + d]) = (hi, hi, lo);
                        norm += value * value;
                    }
                    ((1.0 - f64::from(self.coefficient)) * norm) as f32
                }
            };
            // Enough huge coordinates overflow the norm in f32, making every
            // estimate infinite (only a limit overflowing as well would
            // keep that exact): the exact kernel instead.
            if !norm_term.is_finite() {
                return None;
            }
            lower_terms.push(norm_term - self.slack);
            let upper_term = f64::from(norm_term) * upper_ratio(self.coefficient);
            upper_terms.push(upper_term as f32 + self.slack);
        }
        Some(PreparedQueries {
            coordinates,
            rows,
            lower_terms,
            upper_terms,
        })
    }

    /// A k-th exact distance in the prefilter's units, rounded to `f32`
    /// (the rounding is inside the bound's factor of two).
    fn scaled_limit(&self, squared_distance: f64) -> f32 {
        (squared_distance * self.scale * self.scale) as f32
    }

    /// Whether a scaled upper end bounds the exact kernel's distances too:
    /// far below `f64::MAX` unscaled, where no sum of squared differences
    /// overflows (past it the exact distance is `+inf`, above any bound).
    fn bounds_exact_sums(&self, upper_end: f32) -> bool {
        f64::from(upper_end) / self.scale / self.scale <= f64::MAX / 4.0
    }
}

/// `(1 + 2c) / (1 - c)`: a lower term's `(1 - c) |v|^2` to the upper
/// term's `(1 + 2c) |v|^2`, for the bound's coefficient `c`. The upper end
/// takes the bound twice: its sum is rounded a few more times than the
/// lower end's comparison (the terms here, the sum of three, the limit
/// less the query's lower term), each within a few `u S`, and the second
/// `c S` (at least `2 (2 n + 8) u S`) covers them however few the
/// dimensions.
fn upper_ratio(coefficient: f32) -> f64 {
    let c = f64::from(coefficient);
    (1.0 + 2.0 * c) / (1.0 - c)
}

/// The points' shares of the estimates' upper ends, from their lower ones
/// (`+inf` stays `+inf`).
fn upper_terms(lower_terms: &LineAligned<f32>, coefficient: f32) -> LineAligned<f32> {
    let ratio = upper_ratio(coefficient);
    let mut upper = lower_terms.clone();
    for term in upper.as_mut_slice() {
        *term = (f64::from(*term) * ratio) as f32;
    }
    upper
}

/// Queries in the prefilter's coordinates times `-2` (so the engines'
/// products are `-2 q.x`), with their shares of an estimate's lower end
/// (`(1 - c) |q|^2 - slack`).
#[derive(Debug)]
pub(super) struct PreparedQueries {
    /// Vector engine: `dim` scaled coordinates per query, times `-2`.
    coordinates: Vec<f32>,
    /// Matrix engine: one depth row (`[hi, hi, lo]`, padded) per query,
    /// each half times `-2`.
    rows: Vec<u16>,
    lower_terms: Vec<f32>,
    /// Their shares of an estimate's upper end, `(1 + 2c) |q|^2 + slack`.
    upper_terms: Vec<f32>,
}

/// A scaled coordinate as two `bf16` halves and the value they stand for,
/// `hi + lo`, within [`SPLIT_ERROR`] of it (each rounding is to nearest,
/// through `f32`). The norms are taken of that value, which is what the
/// unit multiplies.
fn split(v: f64) -> (u16, u16, f64) {
    let hi = matrix::to_bf16(v);
    let lo = matrix::to_bf16(v - matrix::from_bf16(hi));
    (hi, lo, matrix::from_bf16(hi) + matrix::from_bf16(lo))
}

/// `-2` times a `bf16` half, exactly: the halves [`split`] makes are 0 or
/// at least `2^-126` and far below overflow, so doubling only moves the
/// exponent.
fn times_minus_two(half: u16) -> u16 {
    matrix::to_bf16(-2.0 * matrix::from_bf16(half))
}

/// A set's points with the centre and scale the prefilter applies.
struct ScaledPoints<'a> {
    set: &'a PointSet<'a>,
    centre: &'a [f64],
    scale: f64,
}

impl ScaledPoints<'_> {
    /// The matrix engine's tiles and lower terms, converted on `threads`
    /// cores (each point on its own, so shares of whole tiles give the
    /// same bits as one piece).
    fn matrix_copies(
        &self,
        coefficient: f32,
        threads: usize,
    ) -> (LineAligned<u16>, LineAligned<f32>) {
        let n_tiles = self.set.len.div_ceil(FTILE);
        let mut tile_buffer = LineAligned::filled(0u16, n_tiles * POINT_TILE);
        let mut term_buffer = LineAligned::filled(f32::INFINITY, n_tiles * FTILE);
        let (tiles, lower_terms) = (tile_buffer.as_mut_slice(), term_buffer.as_mut_slice());
        let share = n_tiles.div_ceil(threads.max(1)).max(1);
        if threads <= 1 {
            self.matrix_share(coefficient, 0, tiles, lower_terms);
        } else {
            std::thread::scope(|scope| {
                let tile_shares = tiles.chunks_mut(share * POINT_TILE);
                let term_shares = lower_terms.chunks_mut(share * FTILE);
                for (s, (tiles, terms)) in tile_shares.zip(term_shares).enumerate() {
                    scope.spawn(move || self.matrix_share(coefficient, s * share, tiles, terms));
                }
            });
        }
        (tile_buffer, term_buffer)
    }

    /// Tiles from `first_tile` on, as many as `lower_terms` covers.
    fn matrix_share(
        &self,
        coefficient: f32,
        first_tile: usize,
        tiles: &mut [u16],
        lower_terms: &mut [f32],
    ) {
        let dim = self.set.dim;
        // Where depth `k` of point 0 of a tile goes (point `p` is `2 p`
        // further): chunk, row of the pair, place in the pair.
        let depth_offsets: Vec<usize> = (0..3 * dim)
            .map(|k| (k / DEPTH_CHUNK) * TILE_CHUNK + (k % DEPTH_CHUNK / 2) * DEPTH_CHUNK + k % 2)
            .collect();
        let (first, second, third) = (
            &depth_offsets[..dim],
            &depth_offsets[dim..2 * dim],
            &depth_offsets[2 * dim..],
        );
        let start = first_tile * FTILE;
        let end = (start + lower_terms.len()).min(self.set.len);
        let mut buffer = vec![0.0; dim];
        for i in start..end {
            let point = self.set.point(i, &mut buffer);
            let base = (i / FTILE - first_tile) * POINT_TILE + (i % FTILE) * 2;
            let mut norm = 0.0f64;
            for (d, (&v, &c)) in point.iter().zip(self.centre).enumerate() {
                let scaled = (v - c) * self.scale;
                let (hi, lo, value) = split(scaled);
                tiles[base + first[d]] = hi;
                tiles[base + second[d]] = lo;
                tiles[base + third[d]] = hi;
                norm += value * value;
            }
            lower_terms[i - start] = ((1.0 - f64::from(coefficient)) * norm) as f32;
        }
    }
}

/// The relative error of a split coordinate: two roundings to nearest
/// `bf16` (8 significant bits: unit roundoff `2^-8`), each through `f32`.
const SPLIT_ERROR: f64 = (1.001 / 256.0) * (1.001 / 256.0);

/// The matrix engine's bound coefficient (module doc): twice `5 e + (1.01
/// K + 2 n + 12) u` for split coordinates within `e` and depth `K`.
fn matrix_coefficient(dim: usize) -> f32 {
    let depth = DEPTH as f64;
    let sums = (1.01 * depth + 2.0 * dim as f64 + 12.0) * f64::from(UNIT_ROUNDOFF);
    (2.0 * (5.0 * SPLIT_ERROR + sums)) as f32
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
    let dim = share.set.dim;
    let share_queries = out_indices.len().checked_div(share.k).unwrap_or(0);
    match &prefilter.copies {
        Copies::Vector { tiles } => {
            let mut dots = VectorDots {
                simd,
                tiles: tiles.as_slice(),
                tile_width: dim * FTILE,
                coordinates: &prepared.coordinates,
                dim,
                columns: vec![0.0f32; group_len(QUERY_GROUP, QUERIES, share_queries) * dim],
                out: [[0.0; FTILE]; QUERIES],
            };
            scan(
                &mut dots,
                share,
                prefilter,
                prepared,
                out_indices,
                out_distances,
            );
        }
        Copies::Matrix { tiles } => {
            // The unit is configured per thread; without it (never, as
            // `Engine::best` chose it) the exact kernel answers.
            let Some(unit) = TileUnit::new() else {
                super::search_range(share, out_indices, out_distances);
                return;
            };
            let mut dots = MatrixDots {
                unit,
                tiles: tiles.as_slice(),
                rows: &prepared.rows,
                group_rows: LineAligned::filled(
                    0,
                    group_len(MATRIX_GROUP, QUERY_ROWS, share_queries) * DEPTH,
                ),
                loaded_pass: None,
                out: LineStart([[0.0; POINT_COLUMNS]; QUERY_ROWS]),
            };
            scan(
                &mut dots,
                share,
                prefilter,
                prepared,
                out_indices,
                out_distances,
            );
        }
    }
}

/// Queries a group buffer holds: whole passes of `pass` queries, no more
/// than the `group` nor than the share's queries need (a small search
/// does not zero a full group's buffer).
fn group_len(group: usize, pass: usize, share_queries: usize) -> usize {
    group.min(share_queries.next_multiple_of(pass))
}

/// Dot products of `Q` queries with `P` points at a time, for [`scan`]
/// (of the prepared queries, so `-2 q.x`).
trait Dots<const Q: usize, const P: usize> {
    /// Queries sharing one pass over a block of tiles (a multiple of `Q`).
    const GROUP: usize;
    /// Lay out queries `first..first + count` of the prepared queries.
    fn load_group(&mut self, first: usize, count: usize);
    /// The products of the group's pass `pass` (its queries `Q pass..`)
    /// with the `P` points from tile `tile` on.
    fn dots(&mut self, pass: usize, tile: usize) -> &[[f32; P]; Q];
}

struct VectorDots<'a, S> {
    simd: S,
    tiles: &'a [f32],
    tile_width: usize,
    coordinates: &'a [f32],
    dim: usize,
    /// A group's queries, pass by pass, dimension-major within a pass
    /// (what `tile_dots` reads).
    columns: Vec<f32>,
    out: [[f32; FTILE]; QUERIES],
}

impl<S: Simd> Dots<QUERIES, FTILE> for VectorDots<'_, S> {
    const GROUP: usize = QUERY_GROUP;

    #[inline(always)]
    fn load_group(&mut self, first: usize, count: usize) {
        let dim = self.dim;
        for (p, columns) in self.columns.chunks_exact_mut(QUERIES * dim).enumerate() {
            let pass_start = p * QUERIES;
            if pass_start >= count {
                break;
            }
            // A short pass repeats its last query (those sums are unused).
            let n = QUERIES.min(count - pass_start);
            for j in 0..QUERIES {
                let q = first + pass_start + j.min(n - 1);
                for (d, &v) in self.coordinates[q * dim..(q + 1) * dim].iter().enumerate() {
                    columns[d * QUERIES + j] = v;
                }
            }
        }
    }

    #[inline(always)]
    fn dots(&mut self, pass: usize, tile: usize) -> &[[f32; FTILE]; QUERIES] {
        let columns = &self.columns[pass * QUERIES * self.dim..(pass + 1) * QUERIES * self.dim];
        let tile = &self.tiles[tile * self.tile_width..(tile + 1) * self.tile_width];
        self.out = tile_dots(self.simd, tile, columns);
        &self.out
    }
}

struct MatrixDots<'a> {
    unit: TileUnit,
    tiles: &'a [u16],
    rows: &'a [u16],
    /// The group's query rows (a short group repeats its last query).
    group_rows: LineAligned<u16>,
    /// The group's pass whose queries the unit holds.
    loaded_pass: Option<usize>,
    /// The unit's products, stored by rows of 64 bytes.
    out: LineStart<[[f32; POINT_COLUMNS]; QUERY_ROWS]>,
}

impl Dots<QUERY_ROWS, POINT_COLUMNS> for MatrixDots<'_> {
    const GROUP: usize = MATRIX_GROUP;

    #[inline(always)]
    fn load_group(&mut self, first: usize, count: usize) {
        for (j, row) in self
            .group_rows
            .as_mut_slice()
            .chunks_exact_mut(DEPTH)
            .enumerate()
        {
            let q = first + j.min(count - 1);
            row.copy_from_slice(&self.rows[q * DEPTH..(q + 1) * DEPTH]);
        }
        self.loaded_pass = None;
    }

    #[inline(always)]
    fn dots(&mut self, pass: usize, tile: usize) -> &[[f32; POINT_COLUMNS]; QUERY_ROWS] {
        if self.loaded_pass != Some(pass) {
            let pass_rows = QUERY_ROWS * DEPTH;
            let queries = &self.group_rows[pass * pass_rows..(pass + 1) * pass_rows];
            self.unit.load_queries(queries);
            self.loaded_pass = Some(pass);
        }
        self.unit.dots(
            &self.tiles[tile * POINT_TILE..(tile + 1) * POINT_TILE],
            &mut self.out.0,
        );
        &self.out.0
    }
}

/// The search proper, whatever computes the dot products: per group of
/// queries, blocks of tiles in a scattered order (see [`block_stride`]),
/// each point's estimate compared with its query's limit, exact distances
/// for the points the estimate cannot rule out.
#[inline(always)]
fn scan<const Q: usize, const P: usize, D: Dots<Q, P>>(
    engine: &mut D,
    share: SearchRange<'_>,
    prefilter: &Prefilter,
    prepared: &PreparedQueries,
    out_indices: &mut [u32],
    out_distances: &mut [f64],
) {
    let SearchRange { set, first, k, .. } = share;
    let mut filled = share.empty_answers(out_indices, out_distances);
    let count = filled.len();
    let lower_terms = prefilter.lower_terms.as_slice();
    let n_tiles = lower_terms.len() / FTILE;
    let tiles_per_step = P / FTILE;
    let n_blocks = n_tiles.div_ceil(BLOCK_TILES);
    let stride = block_stride(n_blocks);
    let upper_terms = prefilter.upper_terms.as_slice();
    // A step's (query, lane) pairs to recompute, and their distances.
    let mut candidates = vec![(0usize, 0usize); Q * P];
    let mut exact = vec![0.0f64; Q * P];
    // Each group query's seeded threshold (see [`lane_minima`]), made in
    // the first block; it needs `k` distinct lanes.
    let seeding = k <= P;
    let mut seeded = vec![f32::INFINITY; D::GROUP.min(count)];
    for group_start in (0..count).step_by(D::GROUP) {
        let group_end = (group_start + D::GROUP).min(count);
        engine.load_group(first + group_start, group_end - group_start);
        for b in 0..n_blocks {
            let block_start = (b * stride) % n_blocks * BLOCK_TILES;
            let block_end = (block_start + BLOCK_TILES).min(n_tiles);
            for (p, pass_start) in (group_start..group_end).step_by(Q).enumerate() {
                let n = Q.min(group_end - pass_start);
                let range = pass_start * k..(pass_start + n) * k;
                let mut distance_rows = out_distances[range.clone()].chunks_mut(k);
                let mut index_rows = out_indices[range].chunks_mut(k);
                let mut tops: [Option<TopK<'_>>; Q] = std::array::from_fn(|j| {
                    Some(TopK {
                        distances: distance_rows.next()?,
                        indices: index_rows.next()?,
                        filled: filled[pass_start + j],
                        skip: share.skip(pass_start + j),
                    })
                });
                // A point may enter a query's answer only if its share of
                // the estimate's lower end, `x_term - 2 q.x`, is at most the
                // query's threshold, `limit - q_term` (module doc); `-inf`
                // for the unused queries of a short pass, which nothing
                // passes.
                let query_terms: [f32; Q] = std::array::from_fn(|j| {
                    prepared.lower_terms[first + pass_start + j.min(n - 1)]
                });
                let seeds = &mut seeded[pass_start - group_start..pass_start - group_start + n];
                if b == 0 && seeding {
                    let own: [usize; Q] =
                        std::array::from_fn(|j| share.skip(pass_start + j.min(n - 1)));
                    let mut minima =
                        lane_minima(engine, p, block_start..block_end, upper_terms, &own);
                    for ((seed, lanes), j) in seeds.iter_mut().zip(&mut minima).zip(0..) {
                        let (_, &mut kth, _) = lanes.select_nth_unstable_by(k - 1, f32::total_cmp);
                        let upper_end = kth + prepared.upper_terms[first + pass_start + j];
                        let threshold = upper_end - query_terms[j];
                        *seed = if prefilter.bounds_exact_sums(upper_end) && !threshold.is_nan() {
                            threshold
                        } else {
                            f32::INFINITY
                        };
                    }
                }
                let seeds = &*seeds;
                let threshold_of = |top: &TopK<'_>, j: usize| {
                    if top.filled == k {
                        let limit = prefilter.scaled_limit(top.distances[k - 1]) - query_terms[j];
                        limit.min(seeds[j])
                    } else {
                        seeds[j]
                    }
                };
                let mut thresholds: [f32; Q] = std::array::from_fn(|j| {
                    tops[j]
                        .as_ref()
                        .map_or(f32::NEG_INFINITY, |top| threshold_of(top, j))
                });
                for t in (block_start..block_end).step_by(tiles_per_step) {
                    let point_terms = &lower_terms[t * FTILE..t * FTILE + P];
                    let dots = engine.dots(p, t);
                    // The (query, lane) pairs the estimates cannot rule out,
                    // against the thresholds as the step began.
                    let mut pending = 0;
                    for (j, products) in dots.iter().enumerate() {
                        let lower = |lane: usize| point_terms[lane] + products[lane];
                        let threshold = thresholds[j];
                        let mut any = false;
                        for lane in 0..P {
                            any |= lower(lane) <= threshold;
                        }
                        if !any {
                            continue;
                        }
                        for lane in 0..P {
                            // Appended without a branch: the pair is written
                            // always, counted only when it passes.
                            candidates[pending] = (j, lane);
                            pending += usize::from(lower(lane) <= threshold);
                        }
                    }
                    if pending == 0 {
                        continue;
                    }
                    // Their exact distances first, all at once: each is a
                    // chain of `dim` dependent additions, and independent
                    // chains overlap where one at a time would wait on each.
                    for (&(j, lane), d2) in candidates[..pending].iter().zip(&mut exact) {
                        // A padding lane past the last point passes only an
                        // unfilled answer's infinite threshold: measured to
                        // the last point instead, and never offered.
                        let index = (t * FTILE + lane).min(set.len - 1);
                        *d2 = set.squared_distance(index, share.query(pass_start + j));
                    }
                    // Then offered in (query, lane) order. A pair a tighter
                    // threshold would have skipped is offered too, and
                    // enters only if it precedes the query's k-th: the
                    // answer is the same.
                    for (&(j, lane), &d2) in candidates[..pending].iter().zip(&exact) {
                        let index = t * FTILE + lane;
                        let Some(top) = tops[j].as_mut() else {
                            continue;
                        };
                        if index < set.len && top.offer_one(d2, index) && top.filled == k {
                            thresholds[j] = threshold_of(top, j);
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

/// Per query of pass `pass`, the least upper end of an estimate in each
/// lane over the tiles of `block` (a query's own point left out: `own[j]`
/// is query `j`'s excluded index; a NaN never enters, `+inf` where nothing
/// did). The lanes hold distinct points, so the `k`-th least of a query's
/// minima bounds the exact distances of `k` points from above, and so its
/// `k`-th nearest distance: a limit before any exact distance is known.
/// Without it, every point of a step passes
/// an unfilled answer's infinite limit and the first block offers dozens
/// of points per query, each recomputed exactly and inserted.
#[inline(always)]
fn lane_minima<const Q: usize, const P: usize, D: Dots<Q, P>>(
    engine: &mut D,
    pass: usize,
    block: std::ops::Range<usize>,
    upper_terms: &[f32],
    own: &[usize; Q],
) -> [[f32; P]; Q] {
    let mut minima = [[f32::INFINITY; P]; Q];
    for t in block.step_by(P / FTILE) {
        let first_point = t * FTILE;
        let point_terms = &upper_terms[first_point..first_point + P];
        let dots = engine.dots(pass, t);
        for ((products, lane_min), &own) in dots.iter().zip(&mut minima).zip(own) {
            let own_lane = own.wrapping_sub(first_point);
            for lane in 0..P {
                let upper = point_terms[lane] + products[lane];
                if upper < lane_min[lane] && lane != own_lane {
                    lane_min[lane] = upper;
                }
            }
        }
    }
    minima
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn matrix_copies_in_shares_equal_one_conversion() {
        let mut rng = Rng::new(3);
        let dim = 7;
        // Five whole prefilter tiles and three points of a sixth.
        let len = 5 * FTILE + 3;
        let rows: Vec<f64> = (0..len * dim).map(|_| rng.uniform() * 10.0 - 4.0).collect();
        let all: Vec<usize> = (0..len).collect();
        let centre: Vec<f64> = (0..dim).map(|d| d as f64 * 0.1).collect();
        let coefficient = matrix_coefficient(dim);
        let from_rows = PointSet::from_rows(&rows, dim);
        let points = ScaledPoints {
            set: &from_rows,
            centre: &centre,
            scale: 0.125,
        };
        let (tiles, terms) = points.matrix_copies(coefficient, 1);
        assert!(terms[..len].iter().all(|t| t.is_finite() && *t > 0.0));
        assert!(terms[len..].iter().all(|t| *t == f32::INFINITY));
        for threads in [2, 3, 4, 16] {
            let (shared_tiles, shared_terms) = points.matrix_copies(coefficient, threads);
            assert_eq!(*shared_tiles, *tiles, "{threads}");
            assert_eq!(*shared_terms, *terms, "{threads}");
        }
        // A set made as tiles reads the same coordinates from them.
        let from_tiles = PointSet::tiles_from_subset(&rows, dim, &all);
        let points = ScaledPoints {
            set: &from_tiles,
            centre: &centre,
            scale: 0.125,
        };
        let (shared_tiles, shared_terms) = points.matrix_copies(coefficient, 2);
        assert_eq!(*shared_tiles, *tiles);
        assert_eq!(*shared_terms, *terms);
    }

    #[test]
    fn line_aligned_buffers_start_on_a_line_and_clone_aligned() {
        for len in [0, 1, 31, 32, 1_000, 100_000] {
            let mut buffer = LineAligned::filled(7u16, len);
            assert_eq!(buffer.len(), len);
            assert!(buffer.iter().all(|&v| v == 7));
            if len == 0 {
                continue;
            }
            assert_eq!(buffer.as_ptr() as usize % 64, 0, "{len}");
            buffer.as_mut_slice()[len - 1] = 9;
            let copy = buffer.clone();
            assert_eq!(*copy, *buffer);
            assert_eq!(copy.as_ptr() as usize % 64, 0, "{len}");
        }
        let block = LineStart([0u8; 3]);
        assert_eq!(&raw const block as usize % 64, 0);
    }

    /// The premise of the matrix engine's bound: `hi + lo` is within
    /// `SPLIT_ERROR` of every coordinate (or within the flushed range),
    /// including values whose low bits sit just past a rounding boundary.
    #[test]
    fn split_coordinates_are_within_the_bounds_error() {
        let mut rng = Rng::new(41);
        let mut worst = 0.0f64;
        for i in 0..200_000 {
            let mantissa = 1.0 + rng.uniform();
            // Every tenth value just past a bf16 halfway point, where the
            // first rounding leaves the largest remainder.
            let mantissa = if i % 10 == 0 {
                (mantissa * 256.0).floor() / 256.0 + 1.0 / 512.0 + rng.uniform() * 1e-7
            } else {
                mantissa
            };
            let v = mantissa * 2f64.powi((rng.uniform() * 120.0) as i32 - 60);
            let v = if i % 2 == 0 { v } else { -v };
            let (_, _, value) = split(v);
            let error = (v - value).abs() / v.abs();
            worst = worst.max(error);
            assert!(error <= SPLIT_ERROR, "{v}: {error}");
        }
        // The bound is not loose by more than the margin for double rounding.
        assert!(worst > SPLIT_ERROR / 8.0, "worst {worst}");
    }
}
