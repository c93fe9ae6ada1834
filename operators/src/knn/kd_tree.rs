//! A k-d tree for the low-dimensional sets, where it beats brute force by
//! pruning whole boxes of points.
//!
//! It keeps the engine's contract exactly: distances are summed by
//! differences in dimension order, as the brute-force kernel sums them, so
//! both give bit-identical distances; a box is skipped only when its lower
//! bound is strictly above the current k-th distance (the bound is computed
//! with the same rounding steps, so it never exceeds the computed distance
//! of a point inside); and candidates are ranked by (distance, index), so a
//! tie goes to the lower index whatever order the tree visits points in.

use super::{Exclude, TopK};

/// Points per leaf: a leaf is scanned a column at a time, so a wide one
/// costs little per point and saves box tests (64 measured faster than 32
/// and 128 on 5-feature streams).
const LEAF: usize = 64;
// A leaf chunk's candidates are one bit each of a `u64`.
const _: () = assert!(LEAF <= 64);

#[derive(Debug, Clone)]
struct Node {
    start: usize,
    end: usize,
    /// Children, or `None` for a leaf.
    children: Option<(usize, usize)>,
}

/// Reused buffers of the build's splits.
#[derive(Debug, Default)]
struct SplitScratch {
    keyed: Vec<(f64, u32)>,
    order: Vec<u32>,
    rows: Vec<f64>,
}

/// The tree: points reordered so that every node is a contiguous range.
#[derive(Debug, Clone)]
pub(super) struct KdTree {
    dim: usize,
    /// In tree order, each leaf's points column by column: coordinate `d`
    /// of point `p` of leaf `start..end` is at
    /// `start * dim + d * (end - start) + (p - start)`, so a leaf's distances
    /// are computed a column at a time across its points, which vectorizes.
    points: Vec<f64>,
    /// Index (in the caller's order) of each point in tree order.
    index: Vec<u32>,
    nodes: Vec<Node>,
    /// Per node: `dim` lower bounds, then `dim` upper bounds.
    bounds: Vec<f64>,
}

impl KdTree {
    /// Build over `rows` (row-major, `dim` wide) listed in `subset`; point
    /// `i` of the tree's answers is `subset[i]`'s position `i`.
    pub(super) fn build(rows: &[f64], dim: usize, subset: &[usize]) -> Self {
        let mut tree = Self {
            dim,
            points: Vec::new(),
            index: Vec::new(),
            nodes: Vec::new(),
            bounds: Vec::new(),
        };
        if dim == 0 {
            // No coordinates: one leaf, every point at distance 0.
            tree.nodes.push(Node {
                start: 0,
                end: subset.len(),
                children: None,
            });
            tree.index = (0..subset.len() as u32).collect();
            return tree;
        }
        // The points are gathered once and moved with their positions as
        // the nodes split, so every node reads a contiguous block rather
        // than following `subset` into `rows` at random.
        let mut order: Vec<u32> = (0..subset.len() as u32).collect();
        let mut work: Vec<f64> = Vec::with_capacity(subset.len() * dim);
        for &r in subset {
            work.extend_from_slice(&rows[r * dim..(r + 1) * dim]);
        }
        tree.split(&mut order, &mut work, 0, &mut SplitScratch::default());
        tree.points = vec![0.0; order.len() * dim];
        for node in tree.nodes.iter().filter(|n| n.children.is_none()) {
            let len = node.end - node.start;
            let block = &mut tree.points[node.start * dim..node.end * dim];
            let rows = &work[node.start * dim..node.end * dim];
            for (offset, row) in rows.chunks_exact(dim).enumerate() {
                for (d, &v) in row.iter().enumerate() {
                    block[d * len + offset] = v;
                }
            }
        }
        tree.index = order;
        tree
    }

    /// Node over `order` (positions) and `work` (their rows, in the same
    /// order), both reordered so that the children are contiguous halves.
    fn split(
        &mut self,
        order: &mut [u32],
        work: &mut [f64],
        start: usize,
        scratch: &mut SplitScratch,
    ) -> usize {
        let dim = self.dim;
        let id = self.nodes.len();
        self.nodes.push(Node {
            start,
            end: start + order.len(),
            children: None,
        });
        let base = self.bounds.len();
        self.bounds.extend(std::iter::repeat_n(f64::INFINITY, dim));
        self.bounds
            .extend(std::iter::repeat_n(f64::NEG_INFINITY, dim));
        {
            let (lo, hi) = self.bounds[base..].split_at_mut(dim);
            for row in work.chunks_exact(dim) {
                for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(row) {
                    *l = l.min(v);
                    *h = h.max(v);
                }
            }
        }
        let (lo, hi) = self.bounds[base..].split_at(dim);
        let widest = (0..dim).max_by(|&a, &b| (hi[a] - lo[a]).total_cmp(&(hi[b] - lo[b])));
        let Some(axis) = widest else { return id };
        if order.len() <= LEAF || hi[axis] <= lo[axis] {
            return id;
        }
        let mid = order.len() / 2;
        // Select on (coordinate, row) pairs, then move the positions and
        // rows into that order.
        let keyed = &mut scratch.keyed;
        keyed.clear();
        keyed.extend(
            work.chunks_exact(dim)
                .enumerate()
                .map(|(r, row)| (row[axis], r as u32)),
        );
        keyed.select_nth_unstable_by(mid, |a, b| a.0.total_cmp(&b.0));
        scratch.order.clear();
        scratch
            .order
            .extend(keyed.iter().map(|&(_, r)| order[r as usize]));
        scratch.rows.clear();
        for &(_, r) in keyed.iter() {
            let r = r as usize;
            scratch
                .rows
                .extend_from_slice(&work[r * dim..(r + 1) * dim]);
        }
        order.copy_from_slice(&scratch.order);
        work.copy_from_slice(&scratch.rows);
        let (left_order, right_order) = order.split_at_mut(mid);
        let (left_work, right_work) = work.split_at_mut(mid * dim);
        let left = self.split(left_order, left_work, start, scratch);
        let right = self.split(right_order, right_work, start + mid, scratch);
        self.nodes[id].children = Some((left, right));
        id
    }

    /// Squared distance from `q` to node `node`'s box, rounded as a point's
    /// distance is, so never above the distance of a point inside.
    #[inline(always)]
    fn box_distance(&self, node: usize, q: &[f64]) -> f64 {
        let dim = self.dim;
        let base = node * 2 * dim;
        let (lo, hi) = (
            &self.bounds[base..base + dim],
            &self.bounds[base + dim..base + 2 * dim],
        );
        let mut sum = 0.0;
        for d in 0..dim {
            let gap = if q[d] < lo[d] {
                lo[d] - q[d]
            } else if q[d] > hi[d] {
                q[d] - hi[d]
            } else {
                0.0
            };
            sum += gap * gap;
        }
        sum
    }

    /// The `k` nearest points to each query `first..` into the output rows
    /// (`k` slots per query), nearest first.
    #[inline(always)]
    pub(super) fn search_range(
        &self,
        queries: &[f64],
        first: usize,
        k: usize,
        exclude: Exclude<'_>,
        out_indices: &mut [u32],
        out_distances: &mut [f64],
    ) {
        let dim = self.dim;
        let count = out_indices.len() / k;
        let mut stack: Vec<(usize, f64)> = Vec::with_capacity(64);
        for q in 0..count {
            let query = &queries[(first + q) * dim..(first + q + 1) * dim];
            let skip = match exclude {
                Exclude::Nothing => usize::MAX,
                Exclude::SelfIndex(own) => own[first + q] as usize,
            };
            let distances = &mut out_distances[q * k..(q + 1) * k];
            let indices = &mut out_indices[q * k..(q + 1) * k];
            distances.fill(f64::INFINITY);
            indices.fill(u32::MAX);
            // Ranked by (distance, index) as the exact kernel ranks: ties
            // to the lower index, whatever order the leaves are visited in.
            let mut top = TopK {
                distances,
                indices,
                filled: 0,
                skip,
            };
            stack.clear();
            stack.push((0, self.box_distance(0, query)));
            while let Some((node, bound)) = stack.pop() {
                // An unfilled answer's k-th distance is +inf: nothing pruned.
                if bound > top.distances[k - 1] {
                    continue;
                }
                let n = &self.nodes[node];
                match n.children {
                    Some((left, right)) => {
                        let (bl, br) = (
                            self.box_distance(left, query),
                            self.box_distance(right, query),
                        );
                        // Nearer box on top of the stack, visited first.
                        if bl <= br {
                            stack.push((right, br));
                            stack.push((left, bl));
                        } else {
                            stack.push((left, bl));
                            stack.push((right, br));
                        }
                    }
                    None => {
                        let len = n.end - n.start;
                        let block = &self.points[n.start * dim..n.end * dim];
                        // Distances of up to LEAF points at once, summed in
                        // dimension order per point (the brute-force order).
                        let mut sums = [0.0f64; LEAF];
                        for chunk in (0..len).step_by(LEAF) {
                            let width = LEAF.min(len - chunk);
                            let sums = &mut sums[..width];
                            sums.fill(0.0);
                            for d in 0..dim {
                                let column = &block[d * len + chunk..d * len + chunk + width];
                                let qd = query[d];
                                for (sum, &v) in sums.iter_mut().zip(column) {
                                    let u = v - qd;
                                    *sum += u * u;
                                }
                            }
                            // Which points could enter the top list: a
                            // vectorized compare against the k-th distance so
                            // far, so that the ranked insertion runs only for
                            // those (ties go on to its full test).
                            let limit = top.distances[k - 1];
                            let mut entering: u64 = 0;
                            for (offset, &d2) in sums.iter().enumerate() {
                                entering |= u64::from(d2 <= limit) << offset;
                            }
                            while entering != 0 {
                                let offset = entering.trailing_zeros() as usize;
                                entering &= entering - 1;
                                let index = self.index[n.start + chunk + offset];
                                top.offer_one(sums[offset], index as usize);
                            }
                        }
                    }
                }
            }
        }
    }
}
