//! `qc_smote`: quality-controlled SMOTE (Upman and Gowda, 2026).
//!
//! The paper's abstract names the parts; the weights and thresholds are
//! ours, each documented here and in `docs/oversampling.md`. Per class `c`
//! (one-vs-rest: every other class is "majority"), in standardized feature
//! space unless `scale=false`:
//!
//! 1. **Neighbourhoods.** For each class row `i`: its `2k` nearest rows of
//!    the whole set (self excluded by index) and its `k` nearest same-class
//!    rows. `sl_i` = same-class rows among the first `k` of the whole-set
//!    list (Safe-Level-SMOTE's safe level); `d_f` = mean distance to the `k`
//!    same-class neighbours; `d_e` = distance to the nearest other-class row
//!    in the `2k` list, or, when there is none, the distance to the `2k`-th
//!    row (a lower bound: such a row is at least that isolated).
//! 2. **Trustworthiness** `T = (D + S + I) / 3` with `D` = inverse-`d_f`
//!    rank in `[0, 1]` (densest 1), `S = sl/k`, `I = d_e / (d_e + d_f)`;
//!    noise (`sl = 0`) gets `T = 0`.
//! 3. **Boundary informativeness** `B = 1 - |2(1 - S) - 1|`, 1 at a
//!    half-enemy neighbourhood, 0 for safe rows and for noise.
//! 4. **Allocation.** Row `i` gets a share `T (B + eps)` of the class's
//!    synthetic rows (largest-remainder rounding, so the total is exactly the
//!    sampling strategy's); `eps` = 2 keeps safe regions supplied (a
//!    borderline row gets at most 1.5 times the share of an equally trusted
//!    safe row; `eps` = 0.5, which favours the border three to one, ranked
//!    worse in the evaluation). If every weight is 0 (all noise), seeds are
//!    uniform: random-oversampling-like.
//! 5. **Regime.** Overlap = mean minority kDN = `1 - mean(S)`; high overlap
//!    at 0.3 or more (algorithms.md §1). Low overlap: `lambda ~ U[0, 1)`,
//!    candidates scored by midpoint purity only. High overlap: `lambda ~
//!    U[0, 0.5)` (stay near the seed) and majority clearance is enforced.
//! 6. **Best of K** (`candidates`, 5): each candidate is a (same-class
//!    neighbour `j`, `lambda`) pair; its score is the midpoint purity of
//!    `(x_i + x_j) / 2` (share of class `c` among its `k` nearest rows,
//!    searched in the union of `i`'s and `j`'s `2k` lists plus `i` and `j`:
//!    a local search, exact whenever the midpoint's neighbours lie in those
//!    neighbourhoods, and what keeps the method near SMOTE's cost), minus
//!    0.5 when clearance fails: the nearest other-class row of that pool is
//!    closer to the candidate than the seed is.
//! 7. **Fallback.** When the best score is below `tau = min(0.5, 25th
//!    percentile of S over non-noise class rows)`, the seed is duplicated
//!    instead (`synthetic_kind = 'duplicate'`), which degrades gracefully to
//!    random over-sampling in noisy regions.

use std::sync::Arc;

use datafusion::common::Result;

use super::neighbourhood::{
    ClassNeighbours, WholeNeighbours, class_neighbours_from, whole_neighbours,
};
use super::reservoir::{ReferenceSet, Reservoirs};
use super::{GenerateContext, Generated, OversampleOptions, Synthetic};
use crate::class_label::ClassValue;
use crate::knn::PointSet;
use crate::parallel::in_shares;
use crate::rng::Rng;

/// Score penalty of a candidate failing majority clearance.
pub const CLEARANCE_PENALTY: f64 = 0.5;

/// The tunable thresholds (options `floor`, `overlap_threshold`,
/// `purity_cap`); the defaults are the documented choices.
#[derive(Debug, Clone, PartialEq)]
pub struct QcParams {
    /// Weight of the allocation floor against boundary informativeness.
    pub allocation_floor: f64,
    /// Mean minority kDN at and above which the regime is high-overlap.
    pub high_overlap: f64,
    /// Upper bound of the adaptive purity threshold.
    pub max_purity_threshold: f64,
}

impl Default for QcParams {
    fn default() -> Self {
        Self {
            allocation_floor: 2.0,
            high_overlap: 0.3,
            max_purity_threshold: 0.5,
        }
    }
}

/// What one class's generation decided, for tests and the docs' tables.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassRegime {
    pub overlap: f64,
    pub high_overlap: bool,
    pub purity_threshold: f64,
}

pub fn generate(
    ctx: &mut GenerateContext<'_>,
    k: usize,
    candidates: usize,
    params: &QcParams,
) -> Generated {
    let mut out = Generated::default();
    let dim = ctx.reference.dim;
    let mut whole: Option<PointSet> = None;
    for (slot, amount) in ctx.classes_to_fill(&mut out) {
        let whole = whole.get_or_insert_with(|| PointSet::from_rows(ctx.space, dim));
        let mut model = ClassModel::build(ctx.reference, ctx.space, whole, slot, k, params);
        let seeds = if ctx.bounded {
            allocate(&model.weights, amount)
        } else {
            sample(&model.weights, amount, ctx.rng)
        };
        model.fill(ctx, &seeds, candidates, &mut out);
    }
    out
}

/// The neighbourhood model of one class (steps 1-5): seeds, their
/// weights, neighbour lists and regime. Building it is the method's cost
/// (its kNN searches); drawing rows from it is cheap, so a stream reuses it
/// while the rows it was built from stand (see `exec`).
#[derive(Debug)]
pub struct ClassModel {
    slot: usize,
    k: usize,
    /// Reference rows of the class, in member order.
    members: Vec<usize>,
    weights: Vec<f64>,
    around: WholeNeighbours,
    same: ClassNeighbours,
    /// Member index of each reference row of the class (`usize::MAX` for
    /// other classes' rows).
    position: Vec<usize>,
    regime: ClassRegime,
    /// Per (member, neighbour rank) pair, `k` slots per member, filled as
    /// drawn.
    pairs: Vec<Option<PairScore>>,
}

/// What a (seed, neighbour) pair's candidates share, whatever their step.
#[derive(Debug, Clone, Copy)]
struct PairScore {
    purity: f64,
    /// A candidate of the pair fails majority clearance when its step is
    /// above this ([`clearance_limit`]; `+inf` outside the high-overlap
    /// regime, where clearance is not required).
    clear_up_to: f64,
}

/// Buffers [`ClassModel::score_pair`] reuses from pair to pair.
#[derive(Debug)]
struct PairScratch {
    /// Per reference row, the last pool it joined: a pool drops repeated
    /// rows without sorting.
    last_pool: Vec<u32>,
    pool_id: u32,
    pool: Vec<usize>,
    midpoint: Vec<f64>,
    ranked: Vec<(f64, usize)>,
}

impl PairScratch {
    fn new(rows: usize, dim: usize, pool_capacity: usize) -> Self {
        Self {
            last_pool: vec![0; rows],
            pool_id: 0,
            pool: Vec::with_capacity(pool_capacity),
            midpoint: vec![0.0; dim],
            ranked: Vec::with_capacity(pool_capacity),
        }
    }

    /// Fill `pool` with the distinct rows of `parts`, in first-seen order.
    fn fill_pool(&mut self, parts: [&[usize]; 3]) {
        if self.pool_id == u32::MAX {
            self.last_pool.fill(0);
            self.pool_id = 0;
        }
        self.pool_id += 1;
        self.pool.clear();
        for &r in parts.into_iter().flatten() {
            if self.last_pool[r] != self.pool_id {
                self.last_pool[r] = self.pool_id;
                self.pool.push(r);
            }
        }
    }
}

/// The largest step `t` at which the candidate `c = s + t (n - s)` of seed
/// `s` and neighbour `n` has none of `enemies` nearer than the seed; `+inf`
/// when no step brings one nearer.
///
/// Why one number per pair: for an enemy `e`,
/// `|c - e|² - |c - s|² = |s - e|² + 2t (s - e)·(n - s) = a + t b`, linear
/// in `t`, and `a >= 0`. So `e` is nearer than the seed exactly when
/// `b < 0` and `t > a / -b`, and a candidate fails clearance when its step
/// is above the least of these bounds. Every candidate of the pair is then
/// checked with one comparison instead of a distance to every enemy.
fn clearance_limit<'a>(
    seed: &[f64],
    neighbour: &[f64],
    enemies: impl Iterator<Item = &'a [f64]>,
) -> f64 {
    let mut limit = f64::INFINITY;
    for enemy in enemies {
        let (mut a, mut b) = (0.0, 0.0);
        for ((s, n), e) in seed.iter().zip(neighbour).zip(enemy) {
            let to_seed = s - e;
            a += to_seed * to_seed;
            b += to_seed * (n - s);
        }
        let b = 2.0 * b;
        if b < 0.0 {
            limit = limit.min(a / -b);
        }
    }
    limit
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    squared_distance(a, b).sqrt()
}

fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>()
}

impl ClassModel {
    /// Steps 1-5 for class `slot` of `reference` (distances in `space`,
    /// whose points `whole` indexes).
    pub fn build(
        reference: &ReferenceSet,
        space: &[f64],
        whole: &PointSet,
        slot: usize,
        k: usize,
        params: &QcParams,
    ) -> Self {
        let dim = reference.dim;
        let class_of = &reference.class_of;
        let members = reference.members[slot].clone();
        let n = members.len();
        let row = |r: usize| &space[r * dim..(r + 1) * dim];
        let around = whole_neighbours(whole, space, &members, 2 * k);
        let all: Vec<usize> = (0..n).collect();
        let same = class_neighbours_from(space, dim, &members, &all, k, &around);
        // Same-class neighbours are members, so every lookup finds one.
        let mut position = vec![usize::MAX; class_of.len()];
        for (i, &r) in members.iter().enumerate() {
            position[r] = i;
        }

        // 1-3: safe level, density, isolation, trust and informativeness.
        let near = k.min(around.k).max(1);
        let mut safe = vec![0.0; n];
        let mut spread = vec![0.0; n];
        let mut isolation = vec![0.5; n];
        for i in 0..n {
            let list = around.of(i);
            let same_class = list
                .iter()
                .take(near)
                .filter(|&&r| class_of[r] as usize == slot)
                .count();
            safe[i] = same_class as f64 / near as f64;
            let d_f = if same.k == 0 {
                0.0
            } else {
                same.of(i)
                    .iter()
                    .map(|&j| distance(row(members[i]), row(j)))
                    .sum::<f64>()
                    / same.k as f64
            };
            spread[i] = d_f;
            let enemy = list
                .iter()
                .zip(around.distances_of(i))
                .find(|(r, _)| class_of[**r] as usize != slot)
                .map(|(_, d2)| d2.sqrt())
                .or_else(|| around.distances_of(i).last().map(|d2| d2.sqrt()));
            if let Some(d_e) = enemy
                && d_e + d_f > 0.0
            {
                isolation[i] = d_e / (d_e + d_f);
            }
        }
        let mut by_spread: Vec<usize> = (0..n).collect();
        by_spread.sort_by(|&a, &b| spread[a].total_cmp(&spread[b]).then(a.cmp(&b)));
        let mut density = vec![1.0; n];
        if n > 1 {
            for (rank, &i) in by_spread.iter().enumerate() {
                density[i] = 1.0 - rank as f64 / (n - 1) as f64;
            }
        }
        let weights: Vec<f64> = (0..n)
            .map(|i| {
                if safe[i] == 0.0 {
                    return 0.0;
                }
                let trust = (density[i] + safe[i] + isolation[i]) / 3.0;
                let informativeness = 1.0 - (2.0 * (1.0 - safe[i]) - 1.0).abs();
                trust * (informativeness + params.allocation_floor)
            })
            .collect();
        // 5: regime and the adaptive threshold.
        let regime = regime(&safe, params);
        Self {
            slot,
            k,
            members,
            weights,
            around,
            position,
            pairs: vec![None; n * same.k],
            same,
            regime,
        }
    }

    /// Steps 6-7: `seeds[i]` rows from member `i`, each the best of
    /// `candidates` or a duplicate of its seed. `ctx` must hold the
    /// reference set and space the model was built from.
    ///
    /// In three phases, so that the costly one runs on every core with the
    /// rows the sequential method would make: every candidate's neighbour
    /// rank and step are drawn first, in the order that method draws them
    /// (scoring draws nothing); then the pairs drawn for the first time are
    /// scored on every core; then each row picks its best candidate.
    pub fn fill(
        &mut self,
        ctx: &mut GenerateContext<'_>,
        seeds: &[u64],
        candidates: usize,
        out: &mut Generated,
    ) {
        let candidates = candidates.max(1);
        let same_k = self.same.k;
        let rows: Vec<u32> = seeds
            .iter()
            .enumerate()
            .flat_map(|(i, &count)| std::iter::repeat_n(i as u32, count as usize))
            .collect();
        if same_k == 0 {
            out.rows.extend(
                rows.iter()
                    .map(|&i| Synthetic::duplicate(self.members[i as usize])),
            );
            return;
        }
        let (low, high) = if self.regime.high_overlap {
            (0.0, 0.5)
        } else {
            (0.0, 1.0)
        };
        let draws: Vec<Draw> = (0..rows.len() * candidates)
            .map(|_| {
                let rank = ctx.rng.below(same_k) as u32;
                let step = low + (high - low) * ctx.rng.uniform();
                Draw { rank, step }
            })
            .collect();
        let space = ctx.space;
        self.score_drawn_pairs(ctx.reference, space, &rows, &draws, candidates);
        // A candidate's decision is a look-up and a comparison (the pair
        // holds its clearance limit): one thread.
        out.rows.reserve(rows.len());
        for (i, row_draws) in rows.iter().zip(draws.chunks_exact(candidates)) {
            let (synthetic, rejected) = self.best_candidate(*i as usize, row_draws);
            out.rows.push(synthetic);
            out.candidates_rejected += rejected;
        }
    }

    /// Score, on every core, the pairs `draws` reaches that no earlier
    /// draw did, and cache them in `pairs`.
    fn score_drawn_pairs(
        &mut self,
        reference: &ReferenceSet,
        space: &[f64],
        rows: &[u32],
        draws: &[Draw],
        candidates: usize,
    ) {
        let same_k = self.same.k;
        let mut queued = vec![false; self.pairs.len()];
        let mut new_pairs = Vec::new();
        for (r, &i) in rows.iter().enumerate() {
            for draw in &draws[r * candidates..(r + 1) * candidates] {
                let slot = i as usize * same_k + draw.rank as usize;
                if self.pairs[slot].is_none() && !queued[slot] {
                    queued[slot] = true;
                    new_pairs.push(slot);
                }
            }
        }
        let model = &*self;
        let class_of = &reference.class_of[..];
        let score = |first: usize, end: usize| {
            let mut scratch = PairScratch::new(class_of.len(), reference.dim, 4 * model.k + 2);
            new_pairs[first..end]
                .iter()
                .map(|&slot| {
                    let (i, rank) = (slot / same_k, slot % same_k);
                    let score =
                        model.score_pair(space, class_of, i, model.same.of(i)[rank], &mut scratch);
                    (slot, score)
                })
                .collect::<Vec<_>>()
        };
        // A pair's score: its pool's distances to the midpoint and its
        // enemies' clearance terms, about 40 distances.
        for scored in in_shares(
            new_pairs.len(),
            new_pairs.len() * 40 >= PARALLEL_WORK,
            score,
        ) {
            for (slot, score) in scored {
                self.pairs[slot] = Some(score);
            }
        }
    }

    /// The best of a row's candidates (member `i`, its scored `draws`),
    /// or a duplicate of its seed when the best falls below the purity
    /// threshold; and how many candidates were rejected.
    fn best_candidate(&self, i: usize, draws: &[Draw]) -> (Synthetic, u64) {
        let seed = self.members[i];
        let same_k = self.same.k;
        let mut best: Option<(f64, usize, f64)> = None;
        for &Draw { rank, step } in draws {
            let neighbour = self.same.of(i)[rank as usize];
            // Scored by `score_drawn_pairs` before any row is decided.
            let Some(pair) = self.pairs[i * same_k + rank as usize] else {
                continue;
            };
            let mut score = pair.purity;
            if self.regime.high_overlap && step > pair.clear_up_to {
                score -= CLEARANCE_PENALTY;
            }
            if best.is_none_or(|(s, _, _)| score > s) {
                best = Some((score, neighbour, step));
            }
        }
        let drawn = draws.len() as u64;
        match best {
            Some((score, neighbour, step)) if score >= self.regime.purity_threshold => {
                (Synthetic::interpolated(seed, neighbour, step), drawn - 1)
            }
            _ => (Synthetic::duplicate(seed), drawn),
        }
    }

    /// Midpoint purity of the pair (member `i`, its neighbour row
    /// `neighbour`) over the union of both rows' whole-set lists plus the
    /// two rows, and the pair's clearance limit against the pool's
    /// other-class rows.
    /// Only the `k` nearest of the pool count, so they are selected, not
    /// sorted: the order (distance, row) is total, so the selected set is
    /// the one a full sort would put first.
    fn score_pair(
        &self,
        space: &[f64],
        class_of: &[u32],
        i: usize,
        neighbour: usize,
        scratch: &mut PairScratch,
    ) -> PairScore {
        let dim = scratch.midpoint.len();
        let row = |r: usize| &space[r * dim..(r + 1) * dim];
        let seed = self.members[i];
        let j = self.position[neighbour];
        scratch.fill_pool([self.around.of(i), self.around.of(j), &[seed, neighbour]]);
        let PairScratch {
            pool,
            midpoint,
            ranked,
            ..
        } = scratch;
        for (m, (a, b)) in midpoint
            .iter_mut()
            .zip(row(seed).iter().zip(row(neighbour)))
        {
            *m = 0.5 * (a + b);
        }
        ranked.clear();
        ranked.extend(pool.iter().map(|&r| (distance(midpoint, row(r)), r)));
        let take = self.k.min(ranked.len()).max(1);
        if take < ranked.len() {
            ranked.select_nth_unstable_by(take - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        }
        let purity = ranked[..take]
            .iter()
            .filter(|(_, r)| class_of[*r] as usize == self.slot)
            .count() as f64
            / take as f64;
        // Clearance is checked only in the high-overlap regime.
        let clear_up_to = if self.regime.high_overlap {
            let enemies = pool
                .iter()
                .filter(|&&r| class_of[r] as usize != self.slot)
                .map(|&r| row(r));
            clearance_limit(row(seed), row(neighbour), enemies)
        } else {
            f64::INFINITY
        };
        PairScore {
            purity,
            clear_up_to,
        }
    }
}

/// One candidate of a synthetic row: its neighbour's rank in the seed's
/// same-class list and its interpolation step.
#[derive(Debug, Clone, Copy)]
struct Draw {
    rank: u32,
    step: f64,
}

/// Below this much work (in distances between rows), threads cost more
/// than they save: a stream's batch stays on its own thread.
const PARALLEL_WORK: usize = 65_536;

/// A class's model is rebuilt once new rows of its class reach this share
/// of the rows it was built from, or once the rows inserted since the
/// snapshot reach [`STREAM_TURNOVER`] times the rows it held (the other
/// classes' side of the neighbourhoods has been replaced), or when a drift
/// or reset cleared the models.
pub const STREAM_REFRESH_SHARE: f64 = 0.125;
pub const STREAM_TURNOVER: usize = 2;

/// QC-SMOTE on a stream: the class models of one snapshot of the ring
/// buffers, reused from batch to batch while the rows they were built from
/// still stand. Building a model searches the window (see `build`); a
/// 256-row batch asks for a few dozen rows, so rebuilding per batch would
/// cost the search per batch. Rows are still drawn only from rows that
/// arrived before the batch (the snapshot is older, never newer); a seed
/// that arrived after the snapshot waits for the next rebuild.
#[derive(Debug)]
pub struct StreamModels {
    reference: Arc<ReferenceSet>,
    space: Vec<f64>,
    /// The space's points, searched (a copy: the set cannot borrow from
    /// the struct that holds it).
    whole: Option<PointSet<'static>>,
    models: Vec<Option<ClassModel>>,
    /// Rows held per class at the snapshot, and eligible rows inserted per
    /// class since.
    held: Vec<usize>,
    inserted: Vec<usize>,
}

impl StreamModels {
    /// A snapshot of `reservoirs`, or `None` when they hold nothing; models
    /// are built on first use.
    pub fn snapshot(reservoirs: &Reservoirs, scale: bool) -> Result<Option<Self>> {
        let reference = reservoirs.reference()?;
        if reference.is_empty() {
            return Ok(None);
        }
        let space = if scale {
            reference.standardized()
        } else {
            reference.features.clone()
        };
        let held: Vec<usize> = reference.members.iter().map(Vec::len).collect();
        Ok(Some(Self {
            models: (0..held.len()).map(|_| None).collect(),
            inserted: vec![0; held.len()],
            held,
            reference: Arc::new(reference),
            space,
            whole: None,
        }))
    }

    /// Whether a class asked for rows has a model that is missing from the
    /// snapshot or too old for its class, or the snapshot as a whole has
    /// turned over [`STREAM_TURNOVER`] times.
    pub fn is_stale(&self, amounts: &[u64], reservoirs: &Reservoirs) -> bool {
        let held: usize = self.held.iter().sum();
        let inserted: usize = self.inserted.iter().sum();
        if inserted >= STREAM_TURNOVER * held.max(1) {
            return true;
        }
        amounts.iter().enumerate().any(|(slot, &amount)| {
            if amount == 0 {
                return false;
            }
            match (self.held.get(slot), self.inserted.get(slot)) {
                (Some(&held), Some(&new)) => {
                    (held == 0 && reservoirs.len_of(slot) > 0)
                        || new as f64 >= STREAM_REFRESH_SHARE * held.max(1) as f64
                }
                // A class first seen after the snapshot.
                _ => reservoirs.len_of(slot) > 0,
            }
        })
    }

    /// Count the eligible rows of a batch just inserted into the buffers.
    pub fn note_inserted(&mut self, slots: &[Option<usize>]) {
        for slot in slots.iter().flatten() {
            if let Some(n) = self.inserted.get_mut(*slot) {
                *n += 1;
            }
        }
    }

    pub fn reference(&self) -> &Arc<ReferenceSet> {
        &self.reference
    }

    /// `amounts` rows per class slot; seeds drawn by [`sample`].
    pub fn generate(
        &mut self,
        amounts: &[u64],
        classes: &[ClassValue],
        rng: &mut Rng,
        options: &OversampleOptions,
    ) -> Generated {
        let Self {
            reference,
            space,
            whole,
            models,
            ..
        } = self;
        let mut out = Generated::default();
        let mut ctx = GenerateContext {
            reference,
            space,
            amounts,
            classes,
            rng,
            bounded: false,
            arrival_order_is_stable: true,
        };
        for (slot, amount) in ctx.classes_to_fill(&mut out) {
            let Some(model_slot) = models.get_mut(slot) else {
                out.unfilled += amount;
                continue;
            };
            let model = model_slot.get_or_insert_with(|| {
                let whole = whole
                    .get_or_insert_with(|| PointSet::from_rows(space, reference.dim).into_owned());
                ClassModel::build(reference, space, whole, slot, options.k, &options.qc)
            });
            let seeds = sample(&model.weights, amount, ctx.rng);
            model.fill(&mut ctx, &seeds, options.candidates, &mut out);
        }
        out
    }
}

/// Overlap regime and purity threshold from the class rows' safe levels.
pub fn regime(safe: &[f64], params: &QcParams) -> ClassRegime {
    let n = safe.len().max(1) as f64;
    let overlap = safe.iter().map(|s| 1.0 - s).sum::<f64>() / n;
    let mut trusted: Vec<f64> = safe.iter().copied().filter(|s| *s > 0.0).collect();
    trusted.sort_by(f64::total_cmp);
    let quartile = trusted
        .get(trusted.len() / 4)
        .copied()
        .unwrap_or(params.max_purity_threshold);
    ClassRegime {
        overlap,
        high_overlap: overlap >= params.high_overlap,
        purity_threshold: quartile.min(params.max_purity_threshold),
    }
}

/// Split `amount` in proportion to `weights` with largest-remainder
/// rounding (ties to the lower index), so the parts sum to `amount`;
/// uniform when every weight is 0.
pub fn allocate(weights: &[f64], amount: u64) -> Vec<u64> {
    let n = weights.len();
    if n == 0 {
        return Vec::new();
    }
    let total: f64 = weights.iter().sum();
    let shares: Vec<f64> = if total > 0.0 {
        weights.iter().map(|w| w / total * amount as f64).collect()
    } else {
        vec![amount as f64 / n as f64; n]
    };
    let mut parts: Vec<u64> = shares.iter().map(|s| s.floor() as u64).collect();
    let given: u64 = parts.iter().sum();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        let fa = shares[a] - shares[a].floor();
        let fb = shares[b] - shares[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &i in order
        .iter()
        .cycle()
        .take(amount.saturating_sub(given) as usize)
    {
        parts[i] += 1;
    }
    parts
}

/// Split `amount` in proportion to `weights` by systematic sampling: one
/// uniform offset, then every `total / amount` of the cumulative weight, so
/// each part is the floor or ceiling of its share and its expectation is the
/// share exactly. A stream asks for a few rows per batch, where
/// largest-remainder rounding would give them to the same top-weighted
/// seeds every batch; uniform when every weight is 0.
pub fn sample(weights: &[f64], amount: u64, rng: &mut Rng) -> Vec<u64> {
    let n = weights.len();
    let mut parts = vec![0u64; n];
    if n == 0 || amount == 0 {
        return parts;
    }
    let total: f64 = weights.iter().sum();
    let uniform = total.is_nan() || total <= 0.0;
    let weight = |i: usize| if uniform { 1.0 } else { weights[i] };
    let total = if uniform { n as f64 } else { total };
    let step = total / amount as f64;
    let mut next = rng.uniform() * step;
    let mut cumulative = 0.0;
    let mut given = 0;
    for (i, part) in parts.iter_mut().enumerate() {
        cumulative += weight(i);
        while given < amount && next < cumulative {
            *part += 1;
            given += 1;
            next += step;
        }
    }
    // Rounding in the running sum can leave the last point just past the
    // end: it belongs to the last row with weight.
    if given < amount
        && let Some(last) = (0..n).rev().find(|&i| weight(i) > 0.0)
    {
        parts[last] += amount - given;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_fails_clearance_exactly_when_an_enemy_is_nearer_than_the_seed() {
        let mut rng = Rng::new(5);
        let mut point =
            |dim: usize| -> Vec<f64> { (0..dim).map(|_| rng.uniform() * 4.0 - 2.0).collect() };
        let (mut failed, mut cleared) = (0, 0);
        for trial in 0..2_000 {
            let dim = 1 + trial % 6;
            let seed = point(dim);
            let neighbour = point(dim);
            let enemies: Vec<Vec<f64>> = (0..1 + trial % 7).map(|_| point(dim)).collect();
            let limit = clearance_limit(&seed, &neighbour, enemies.iter().map(Vec::as_slice));
            for step in [0.0, 0.1, 0.25, 0.4, 0.5, 0.75, 0.99] {
                let candidate: Vec<f64> = seed
                    .iter()
                    .zip(&neighbour)
                    .map(|(s, n)| s + step * (n - s))
                    .collect();
                let to_seed = distance(&candidate, &seed);
                let nearest_enemy = enemies
                    .iter()
                    .map(|e| distance(&candidate, e))
                    .fold(f64::INFINITY, f64::min);
                // Distances within rounding of each other are a tie either
                // way; the limit decides them, the direct test may not.
                if (nearest_enemy - to_seed).abs() < 1e-9 {
                    continue;
                }
                let enemy_nearer = nearest_enemy < to_seed;
                assert_eq!(
                    step > limit,
                    enemy_nearer,
                    "trial {trial}, step {step}, limit {limit}"
                );
                if enemy_nearer {
                    failed += 1;
                } else {
                    cleared += 1;
                }
            }
        }
        // Both outcomes are exercised.
        assert!(
            failed > 1_000 && cleared > 1_000,
            "{failed} failed, {cleared} cleared"
        );
        // No enemy, or one on the seed (never strictly nearer): every step
        // clears. One on the neighbour is nearer past the midpoint.
        let (seed, neighbour) = ([0.0, 0.0], [1.0, 0.0]);
        assert_eq!(
            clearance_limit(&seed, &neighbour, std::iter::empty()),
            f64::INFINITY
        );
        assert_eq!(
            clearance_limit(&seed, &neighbour, [&seed[..]].into_iter()),
            f64::INFINITY
        );
        assert_eq!(
            clearance_limit(&seed, &neighbour, [&neighbour[..]].into_iter()),
            0.5
        );
    }

    #[test]
    fn allocation_sums_to_the_amount_and_follows_weights() {
        let parts = allocate(&[3.0, 1.0, 0.0, 1.0], 10);
        assert_eq!(parts.iter().sum::<u64>(), 10);
        assert_eq!(parts[2], 0);
        assert!(parts[0] > parts[1]);
        assert_eq!(allocate(&[0.0, 0.0, 0.0], 7).iter().sum::<u64>(), 7);
        assert_eq!(allocate(&[1.0, 1.0, 1.0], 2), [1, 1, 0]);
    }

    #[test]
    fn sampling_gives_each_row_the_floor_or_ceiling_of_its_share() {
        let weights = [3.0, 1.0, 0.0, 1.0, 5.0];
        let total: f64 = weights.iter().sum();
        let mut rng = Rng::new(9);
        let mut drawn = [0u64; 5];
        for amount in [1u64, 2, 3, 7, 10, 23] {
            for _ in 0..200 {
                let parts = sample(&weights, amount, &mut rng);
                assert_eq!(parts.iter().sum::<u64>(), amount);
                assert_eq!(parts[2], 0);
                for (i, p) in parts.iter().enumerate() {
                    let share = weights[i] / total * amount as f64;
                    assert!(*p as f64 >= share.floor() && *p as f64 <= share.ceil());
                    drawn[i] += p;
                }
            }
        }
        // One row at a time still reaches every weighted row, in proportion.
        let mut ones = [0u64; 5];
        for _ in 0..10_000 {
            let parts = sample(&weights, 1, &mut rng);
            for (o, p) in ones.iter_mut().zip(parts) {
                *o += p;
            }
        }
        assert!((ones[0] as f64 / 10_000.0 - 0.3).abs() < 0.02, "{ones:?}");
        assert!((ones[4] as f64 / 10_000.0 - 0.5).abs() < 0.02, "{ones:?}");
        assert_eq!(sample(&[0.0, 0.0], 3, &mut rng).iter().sum::<u64>(), 3);
    }

    #[test]
    fn regime_thresholds() {
        let params = QcParams::default();
        let clean = regime(&[1.0, 1.0, 0.8, 1.0], &params);
        assert!(!clean.high_overlap);
        assert_eq!(clean.purity_threshold, 0.5);
        let noisy = regime(&[0.2, 0.4, 0.0, 0.6, 0.8], &params);
        assert!(noisy.high_overlap);
        assert!((noisy.purity_threshold - 0.4).abs() < 1e-12);
    }
}
