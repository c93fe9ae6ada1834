//! Which classes are weighed, with what imbalance ratio, and the weights of
//! their rows from a neighbourhood or a probe tree.

use super::probe_tree::{ProbeTree, TreeParams};
use super::{Category, Costs};
use crate::class_label::ClassValue;
use crate::complexity::{ClassedRows, disagreeing_counts};
use crate::rng::Rng;

/// The imbalance ratio of each weighed class (`None`: rows weigh 1.0).
///
/// `counts` are rows per class slot (exact or decayed). Without `minority`,
/// every class but the largest is weighed (ties for largest go to the
/// greatest class value); with it, only the class whose value reads
/// `minority`. IR = (all rows - rows of the class) / rows of the class.
pub fn weighed_ratios(
    counts: &[f64],
    classes: &[ClassValue],
    minority: Option<&str>,
) -> Vec<Option<f64>> {
    let total: f64 = counts.iter().sum();
    let ratio = |c: usize| (counts[c] > 0.0).then(|| (total - counts[c]) / counts[c]);
    match minority {
        Some(name) => (0..counts.len())
            .map(|c| {
                if classes[c].to_string() == name {
                    ratio(c)
                } else {
                    None
                }
            })
            .collect(),
        None => {
            let largest = (0..counts.len()).max_by(|&a, &b| {
                counts[a]
                    .total_cmp(&counts[b])
                    .then_with(|| classes[a].cmp(&classes[b]))
            });
            (0..counts.len())
                .map(|c| if Some(c) == largest { None } else { ratio(c) })
                .collect()
        }
    }
}

/// Weight of a row from its category.
pub fn neighbour_weight(costs: &Costs, category: Category, ratio: f64) -> f64 {
    // Cost first, then IR, as the reference multiplies.
    costs.of(category) * ratio
}

/// Gini-iCost weight and category from the class's share `p` of the row's
/// probe-tree leaf.
pub fn leaf_weight(costs: &Costs, p: f64, ratio: f64) -> (f64, Category) {
    if p >= TreeParams::PURE_SHARE {
        (costs.pure * ratio, Category::Pure)
    } else if p <= TreeParams::MAJORITY_SHARE {
        (costs.outlier * ratio, Category::Outlier)
    } else {
        let ambiguity = 4.0 * p * (1.0 - p);
        let (safe, border) = (costs.safe * ratio, costs.border * ratio);
        let category = if p >= 0.5 {
            Category::Safe
        } else {
            Category::Border
        };
        (safe + (border - safe) * ambiguity, category)
    }
}

/// Neighbour categories of `queries` (rows of `rows`, themselves excluded),
/// with `m`, the other-class neighbours of each; `None` if `rows` has no
/// more than `k` rows.
pub fn table_neighbourhoods(
    rows: &ClassedRows,
    queries: &[usize],
    k: usize,
) -> Option<Vec<(Category, usize)>> {
    if rows.len() <= k {
        return None;
    }
    let (counts, k) = disagreeing_counts(rows, queries, k);
    Some(
        counts
            .into_iter()
            .map(|m| (Category::of_neighbours(m, k), m))
            .collect(),
    )
}

/// Cross-fitted leaf shares of the rows of class `class`: rows are dealt
/// into `folds` stratified folds (each group shuffled with `rng`, then
/// dealt round-robin), and a row is scored by the tree fitted on the other
/// folds. Returns (row, share) for every row of the class, or `None` when a
/// group has fewer than two rows.
pub fn crossfit_shares(
    rows: &ClassedRows,
    class: u32,
    folds: usize,
    params: &TreeParams,
    rng: &mut Rng,
) -> Option<Vec<(usize, f64)>> {
    let mut members: Vec<usize> = Vec::new();
    let mut others: Vec<usize> = Vec::new();
    for i in 0..rows.len() {
        if rows.class_of[i] == class {
            members.push(i);
        } else {
            others.push(i);
        }
    }
    let folds = folds.min(members.len()).min(others.len());
    if folds < 2 {
        return None;
    }
    let mut fold_of = vec![0usize; rows.len()];
    for group in [&mut members, &mut others] {
        // Fisher-Yates with the operator's generator.
        for i in (1..group.len()).rev() {
            let j = rng.below(i + 1);
            group.swap(i, j);
        }
        for (position, &row) in group.iter().enumerate() {
            fold_of[row] = position % folds;
        }
    }
    let positive: Vec<bool> = rows.class_of.iter().map(|&c| c == class).collect();
    let mut shares = Vec::with_capacity(members.len());
    for fold in 0..folds {
        let fit: Vec<usize> = (0..rows.len()).filter(|&i| fold_of[i] != fold).collect();
        let tree = ProbeTree::fit(&rows.features, rows.dim, &fit, &positive, params);
        for &row in members.iter().filter(|&&r| fold_of[r] == fold) {
            shares.push((row, tree.leaf_share(rows.row(row))));
        }
    }
    shares.sort_unstable_by_key(|s| s.0);
    Some(shares)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_but_the_largest_is_weighed() {
        let classes = [ClassValue::Int(0), ClassValue::Int(1), ClassValue::Int(2)];
        let ratios = weighed_ratios(&[80.0, 15.0, 5.0], &classes, None);
        assert_eq!(ratios, vec![None, Some(85.0 / 15.0), Some(95.0 / 5.0)]);
        // A tie for the largest goes to the greater class value.
        let tied = weighed_ratios(&[5.0, 5.0], &classes[..2], None);
        assert_eq!(tied, vec![Some(1.0), None]);
        // An explicit minority is the only class weighed.
        let named = weighed_ratios(&[80.0, 15.0, 5.0], &classes, Some("1"));
        assert_eq!(named, vec![None, Some(85.0 / 15.0), None]);
    }

    #[test]
    fn leaf_weights_peak_at_an_even_leaf() {
        let costs = Costs::default();
        assert_eq!(leaf_weight(&costs, 0.9, 2.0), (0.6, Category::Pure));
        assert_eq!(leaf_weight(&costs, 0.1, 2.0).1, Category::Outlier);
        let (even, _) = leaf_weight(&costs, 0.5, 2.0);
        let (skewed, _) = leaf_weight(&costs, 0.3, 2.0);
        assert!((even - 1.4).abs() < 1e-12, "{even}");
        assert!(skewed < even && skewed > 1.0);
    }
}
