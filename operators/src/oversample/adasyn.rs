//! `adasyn`: ADASYN as imbalanced-learn computes it. Each class row's share
//! of the synthetic rows is the fraction of other-class rows among its `k`
//! nearest rows of the whole set (self excluded by index), normalized; the
//! per-row counts are rounded half to even, so the total can differ from the
//! target exactly as imbalanced-learn's does. Each row is interpolated
//! towards a uniformly drawn one of its `k` nearest same-class rows.
//!
//! When no class row has an other-class neighbour, imbalanced-learn raises;
//! on bounded input we raise the same complaint, on a stream the batch
//! simply gets no ADASYN rows for that class.

use datafusion::common::{Result, exec_err};

use super::neighbourhood::{class_neighbours, whole_neighbours};
use super::{GenerateContext, Generated, Synthetic};
use crate::knn::PointSet;

pub fn generate(ctx: &mut GenerateContext<'_>, k: usize) -> Result<Generated> {
    let mut out = Generated::default();
    let dim = ctx.reference.dim;
    let mut whole: Option<PointSet> = None;
    for (slot, amount) in ctx.class_order() {
        let members = &ctx.reference.members[slot];
        if amount == 0 {
            continue;
        }
        if members.is_empty() {
            out.unfilled += amount;
            continue;
        }
        let whole = whole.get_or_insert_with(|| PointSet::from_rows(ctx.space, dim));
        let around = whole_neighbours(whole, ctx.space, members, k);
        let class_of = &ctx.reference.class_of;
        let mut ratios: Vec<f64> = (0..members.len())
            .map(|i| {
                let others = around
                    .of(i)
                    .iter()
                    .filter(|&&r| class_of[r] as usize != slot)
                    .count();
                others as f64 / k as f64
            })
            .collect();
        let sum: f64 = ratios.iter().sum();
        let class = ctx.class_name(slot);
        if sum == 0.0 {
            if ctx.bounded {
                return exec_err!(
                    "adasyn: no row of class '{class}' has a neighbour of another class, so \
                     ADASYN has nothing to weigh by; use smote"
                );
            }
            out.unfilled += amount;
            continue;
        }
        ratios.iter_mut().for_each(|r| *r /= sum);
        let counts: Vec<u64> = ratios
            .iter()
            .map(|r| (r * amount as f64).round_ties_even() as u64)
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            if ctx.bounded {
                return exec_err!(
                    "adasyn: the {amount} rows asked for class '{class}' round to none per row"
                );
            }
            out.unfilled += amount;
            continue;
        }
        let neighbours = class_neighbours(ctx.space, dim, members, k);
        for (i, &count) in counts.iter().enumerate() {
            for _ in 0..count {
                if neighbours.k == 0 {
                    out.rows.push(Synthetic::duplicate(members[i]));
                    continue;
                }
                let neighbour = neighbours.of(i)[ctx.rng.below(neighbours.k)];
                out.rows.push(Synthetic::interpolated(
                    members[i],
                    neighbour,
                    ctx.rng.uniform(),
                ));
            }
        }
        if total < amount {
            out.unfilled += amount - total;
        }
    }
    Ok(out)
}
