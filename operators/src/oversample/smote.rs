//! `smote`: imbalanced-learn's SMOTE. For each synthetic row a (seed,
//! neighbour) pair is drawn uniformly with replacement among the class's
//! rows and their `k` nearest same-class neighbours (one draw over
//! `n_class * k` pairs, as imbalanced-learn does), and one uniform step
//! `u ~ U[0, 1)` places the row at `seed + u * (neighbour - seed)`: on the
//! segment, never in the box. A class of one row can only be duplicated;
//! a class smaller than `k + 1` uses every other row as a neighbour.

use super::neighbourhood::class_neighbours;
use super::{GenerateContext, Generated, Synthetic};
use crate::rng::Rng;

pub fn generate(ctx: &mut GenerateContext<'_>, k: usize) -> Generated {
    let mut out = Generated::default();
    let dim = ctx.reference.dim;
    for (slot, amount) in ctx.classes_to_fill(&mut out) {
        let members = &ctx.reference.members[slot];
        let neighbours = class_neighbours(ctx.space, dim, members, k);
        sample_segments(
            ctx.rng,
            members,
            neighbours.k,
            &neighbours.table,
            amount,
            &mut out.rows,
        );
    }
    out
}

/// imbalanced-learn's `_make_samples`: `amount` rows, each from a uniformly
/// drawn (seed, neighbour) pair and one uniform step; `table` holds `k`
/// neighbours per seed.
pub fn sample_segments(
    rng: &mut Rng,
    seeds: &[usize],
    k: usize,
    table: &[usize],
    amount: u64,
    out: &mut Vec<Synthetic>,
) {
    for _ in 0..amount {
        if k == 0 {
            out.push(Synthetic::duplicate(seeds[rng.below(seeds.len())]));
            continue;
        }
        let pair = rng.below(seeds.len() * k);
        let (row, column) = (pair / k, pair % k);
        out.push(Synthetic::interpolated(
            seeds[row],
            table[row * k + column],
            rng.uniform(),
        ));
    }
}
