//! `borderline_smote`: Borderline-SMOTE kind 1, as imbalanced-learn. A
//! class row is in DANGER when `m/2 <= m' < m` of its `m` nearest rows of
//! the whole set (self excluded by index) belong to other classes; only
//! DANGER rows seed, interpolated towards their `k` nearest same-class rows
//! (among all of the class). A class without DANGER rows gets no synthetic
//! rows, as in imbalanced-learn (its counts then stay short of the target).

use super::neighbourhood::{class_neighbours_from, whole_neighbours};
use super::smote::sample_segments;
use super::{GenerateContext, Generated};
use crate::knn::PointSet;

pub fn generate(ctx: &mut GenerateContext<'_>, k: usize, m: usize) -> Generated {
    let mut out = Generated::default();
    let dim = ctx.reference.dim;
    let mut whole: Option<PointSet> = None;
    for (slot, amount) in ctx.classes_to_fill(&mut out) {
        let members = &ctx.reference.members[slot];
        let whole = whole.get_or_insert_with(|| PointSet::from_rows(ctx.space, dim));
        let around = whole_neighbours(whole, ctx.space, members, m);
        let class_of = &ctx.reference.class_of;
        let danger: Vec<usize> = (0..members.len())
            .filter(|&i| {
                let others = around.others_of(i, class_of, slot);
                2 * others >= around.k && others < around.k
            })
            .collect();
        if danger.is_empty() {
            out.unfilled += amount;
            continue;
        }
        // Only DANGER rows seed, so only theirs are needed.
        let neighbours = class_neighbours_from(ctx.space, dim, members, &danger, k, &around);
        let seeds: Vec<usize> = danger.iter().map(|&i| members[i]).collect();
        sample_segments(
            ctx.rng,
            &seeds,
            neighbours.k,
            &neighbours.table,
            amount,
            &mut out.rows,
        );
    }
    out
}
