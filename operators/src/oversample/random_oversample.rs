//! `random_oversample`: duplicates of seeds drawn uniformly with replacement
//! from their class (imbalanced-learn's `RandomOverSampler` without
//! shrinkage). Needs no features: the one method that also works on rows
//! without numeric columns.

use super::{GenerateContext, Generated, Synthetic};

pub fn generate(ctx: &mut GenerateContext<'_>) -> Generated {
    let mut out = Generated::default();
    for (slot, amount) in ctx.classes_to_fill(&mut out) {
        let members = &ctx.reference.members[slot];
        for _ in 0..amount {
            let seed = members[ctx.rng.below(members.len())];
            out.rows.push(Synthetic::duplicate(seed));
        }
    }
    out
}
