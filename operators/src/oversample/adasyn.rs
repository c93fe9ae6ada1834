//! `adasyn`: ADASYN as imbalanced-learn computes it. Each class row's share
//! of the synthetic rows is the fraction of other-class rows among its `k`
//! nearest rows of the whole set (self excluded by index), normalized; the
//! per-row counts are rounded half to even, so the total can differ from the
//! target exactly as imbalanced-learn's does. Each row is interpolated
//! towards a uniformly drawn one of its `k` nearest same-class rows.
//!
//! The normalizing sum is NumPy's pairwise summation over the rows in
//! arrival order, so the per-row rounding (and with it the total) is the
//! same as imbalanced-learn's even where a share lands on exactly .5. When
//! the input is a merge of several partitions its arrival order changes
//! from run to run; then the sum runs in the canonical row order instead,
//! so the output stays the same for the same rows.
//!
//! When no class row has an other-class neighbour, imbalanced-learn raises;
//! on bounded input we raise the same complaint, on a stream the batch
//! simply gets no ADASYN rows for that class.

use datafusion::common::{Result, exec_err};

use super::neighbourhood::{class_neighbours_from, whole_neighbours};
use super::{GenerateContext, Generated, Synthetic};
use crate::knn::PointSet;

pub fn generate(ctx: &mut GenerateContext<'_>, k: usize) -> Result<Generated> {
    let mut out = Generated::default();
    let dim = ctx.reference.dim;
    let mut whole: Option<PointSet> = None;
    for (slot, amount) in ctx.classes_to_fill(&mut out) {
        let members = &ctx.reference.members[slot];
        let whole = whole.get_or_insert_with(|| PointSet::from_rows(ctx.space, dim));
        let around = whole_neighbours(whole, ctx.space, members, k);
        let class_of = &ctx.reference.class_of;
        let mut ratios: Vec<f64> = (0..members.len())
            .map(|i| around.others_of(i, class_of, slot) as f64 / k as f64)
            .collect();
        // imbalanced-learn's rounding depends on NumPy's float sum, so the
        // sum is NumPy's pairwise sum over the rows in arrival order: equal
        // per-row counts even where a share lands exactly on .5.
        // A merged multi-partition input has no order of its own: then the
        // canonical order keeps the result the same from run to run.
        let mut in_arrival: Vec<usize> = (0..members.len()).collect();
        if ctx.arrival_order_is_stable {
            in_arrival.sort_by_key(|&i| ctx.reference.arrival[members[i]]);
        }
        let ordered: Vec<f64> = in_arrival.iter().map(|&i| ratios[i]).collect();
        let sum = numpy_sum(&ordered);
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
        // Only rows that seed need their neighbours.
        let seeding: Vec<usize> = (0..members.len()).filter(|&i| counts[i] > 0).collect();
        let neighbours = class_neighbours_from(ctx.space, dim, members, &seeding, k, &around);
        for (j, &i) in seeding.iter().enumerate() {
            for _ in 0..counts[i] {
                if neighbours.k == 0 {
                    out.rows.push(Synthetic::duplicate(members[i]));
                    continue;
                }
                let neighbour = neighbours.of(j)[ctx.rng.below(neighbours.k)];
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

/// `numpy.sum` of a contiguous float64 array: pairwise summation with
/// eight accumulators over blocks of at most 128 values.
pub fn numpy_sum(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 8 {
        return values.iter().fold(0.0, |acc, v| acc + v);
    }
    if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&values[..8]);
        let whole = n - n % 8;
        for block in values[8..whole].chunks_exact(8) {
            for (acc, v) in r.iter_mut().zip(block) {
                *acc += v;
            }
        }
        let mut total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for v in &values[whole..] {
            total += v;
        }
        return total;
    }
    let half = n / 2;
    let half = half - half % 8;
    numpy_sum(&values[..half]) + numpy_sum(&values[half..])
}

#[cfg(test)]
mod tests {
    use super::numpy_sum;

    #[test]
    fn pairwise_sum_differs_from_a_running_sum_like_numpy() {
        // numpy 2.4: np.sum(np.arange(777) % 7 / 5) == 466.20000000000005,
        // where a running sum gives 466.19999999999914.
        let values: Vec<f64> = (0..777).map(|i| f64::from(i % 7) / 5.0).collect();
        assert_eq!(numpy_sum(&values), 466.200_000_000_000_05);
        let running = values.iter().fold(0.0, |acc, v| acc + v);
        assert_eq!(running, 466.199_999_999_999_14);
        assert_eq!(numpy_sum(&[0.2, 0.4]), 0.2 + 0.4);
        assert_eq!(numpy_sum(&[]), 0.0);
    }
}
