//! The probe tree of Gini-iCost: a small CART classifier (Gini impurity,
//! depth 3, at least 5 rows per leaf, as the `icost` package configures
//! scikit-learn's), used only for the class's share of each leaf.
//!
//! Splits are `x[f] <= threshold`, the threshold halfway between two
//! consecutive distinct values (as scikit-learn). Among equally good splits
//! the first feature and the lowest threshold win (scikit-learn draws the
//! feature order at random).

/// Probe-tree shape and the leaf shares that bound the categories.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TreeParams {
    pub max_depth: usize,
    pub min_leaf: usize,
}

impl Default for TreeParams {
    fn default() -> Self {
        Self {
            max_depth: 3,
            min_leaf: 5,
        }
    }
}

impl TreeParams {
    /// A leaf at least this much the class's is `pure` (the package's tau_min).
    pub const PURE_SHARE: f64 = 0.80;
    /// A leaf at most this much the class's is `outlier` (tau_maj).
    pub const MAJORITY_SHARE: f64 = 0.20;
    /// Folds of the cross-fitting on tables.
    pub const FOLDS: usize = 3;
}

#[derive(Debug, Clone)]
enum Node {
    Split {
        feature: usize,
        threshold: f64,
        left: usize,
        right: usize,
    },
    Leaf {
        share: f64,
    },
}

/// A fitted probe tree.
#[derive(Debug, Clone)]
pub struct ProbeTree {
    nodes: Vec<Node>,
}

/// Gini impurity times size: n * (1 - p^2 - (1-p)^2) = 2 pos (n - pos) / n.
fn weighted_gini(positive: usize, n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    2.0 * positive as f64 * (n - positive) as f64 / n as f64
}

impl ProbeTree {
    /// Fit on `rows` (indices into the row-major `features`, `dim` wide),
    /// separating rows where `positive[row]` from the rest.
    pub fn fit(
        features: &[f64],
        dim: usize,
        rows: &[usize],
        positive: &[bool],
        params: &TreeParams,
    ) -> Self {
        let mut tree = Self { nodes: Vec::new() };
        let mut rows = rows.to_vec();
        tree.grow(features, dim, &mut rows, positive, params, 0);
        tree
    }

    fn grow(
        &mut self,
        features: &[f64],
        dim: usize,
        rows: &mut [usize],
        positive: &[bool],
        params: &TreeParams,
        depth: usize,
    ) -> usize {
        let n = rows.len();
        let pos = rows.iter().filter(|&&r| positive[r]).count();
        let share = if n == 0 { 0.0 } else { pos as f64 / n as f64 };
        let id = self.nodes.len();
        self.nodes.push(Node::Leaf { share });
        if depth >= params.max_depth || n < 2 * params.min_leaf.max(1) || pos == 0 || pos == n {
            return id;
        }
        let Some((feature, threshold)) = best_split(features, dim, rows, positive, params) else {
            return id;
        };
        // Partition in place: rows going left first.
        let mut split = 0;
        for i in 0..n {
            if features[rows[i] * dim + feature] <= threshold {
                rows.swap(i, split);
                split += 1;
            }
        }
        let (left_rows, right_rows) = rows.split_at_mut(split);
        let left = self.grow(features, dim, left_rows, positive, params, depth + 1);
        let right = self.grow(features, dim, right_rows, positive, params, depth + 1);
        self.nodes[id] = Node::Split {
            feature,
            threshold,
            left,
            right,
        };
        id
    }

    /// The positive share of the leaf `x` falls in.
    pub fn leaf_share(&self, x: &[f64]) -> f64 {
        let mut node = 0;
        loop {
            match self.nodes.get(node) {
                Some(Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                }) => {
                    node = if x[*feature] <= *threshold {
                        *left
                    } else {
                        *right
                    }
                }
                Some(Node::Leaf { share }) => return *share,
                None => return 0.0,
            }
        }
    }
}

/// The split of lowest weighted Gini impurity with at least `min_leaf`
/// rows a side, if any.
fn best_split(
    features: &[f64],
    dim: usize,
    rows: &[usize],
    positive: &[bool],
    params: &TreeParams,
) -> Option<(usize, f64)> {
    let n = rows.len();
    let total_pos = rows.iter().filter(|&&r| positive[r]).count();
    let min_leaf = params.min_leaf.max(1);
    let mut best: Option<(f64, usize, f64)> = None;
    let mut sorted: Vec<(f64, bool)> = Vec::with_capacity(n);
    for feature in 0..dim {
        sorted.clear();
        sorted.extend(
            rows.iter()
                .map(|&r| (features[r * dim + feature], positive[r])),
        );
        sorted.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut left_pos = 0;
        for i in 1..n {
            left_pos += usize::from(sorted[i - 1].1);
            if i < min_leaf || n - i < min_leaf || sorted[i - 1].0 >= sorted[i].0 {
                continue;
            }
            let impurity = weighted_gini(left_pos, i) + weighted_gini(total_pos - left_pos, n - i);
            if best.is_none_or(|(b, _, _)| impurity < b) {
                let (a, b) = (sorted[i - 1].0, sorted[i].0);
                let mut threshold = a / 2.0 + b / 2.0;
                if threshold >= b {
                    threshold = a;
                }
                best = Some((impurity, feature, threshold));
            }
        }
    }
    best.map(|(_, feature, threshold)| (feature, threshold))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_a_threshold_and_reports_leaf_shares() {
        // Feature 1 separates: rows with x1 > 5 are positive, save one.
        let mut features = Vec::new();
        let mut positive = Vec::new();
        for i in 0..40 {
            features.extend([f64::from(i % 7), f64::from(i)]);
            positive.push(i > 25 || i == 3);
        }
        let rows: Vec<usize> = (0..40).collect();
        let tree = ProbeTree::fit(&features, 2, &rows, &positive, &TreeParams::default());
        assert_eq!(tree.leaf_share(&[0.0, 35.0]), 1.0);
        let low = tree.leaf_share(&[0.0, 1.0]);
        assert!(low < 0.25, "{low}");
    }

    #[test]
    fn leaves_keep_at_least_min_leaf_rows() {
        // One positive among ten: no split can isolate it with 5 a side.
        let features: Vec<f64> = (0..10).map(f64::from).collect();
        let positive: Vec<bool> = (0..10).map(|i| i == 9).collect();
        let rows: Vec<usize> = (0..10).collect();
        let tree = ProbeTree::fit(&features, 1, &rows, &positive, &TreeParams::default());
        assert_eq!(tree.leaf_share(&[9.0]), 0.2);
    }
}
