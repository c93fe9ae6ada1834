//! Neighbourhoods the methods share, computed with [`crate::knn`] over the
//! reference set (in the distance space: raw or standardized features).

use crate::knn::{Exclude, PointSet, search};

/// The `k` nearest same-class rows of every member (self excluded by
/// index), as reference-row indices; `k` shrinks to `members.len() - 1`.
#[derive(Debug)]
pub struct ClassNeighbours {
    pub k: usize,
    /// `table[i * k + c]`: neighbour `c` of member `i`.
    pub table: Vec<usize>,
}

impl ClassNeighbours {
    pub fn of(&self, member: usize) -> &[usize] {
        &self.table[member * self.k..(member + 1) * self.k]
    }
}

pub fn class_neighbours(space: &[f64], dim: usize, members: &[usize], k: usize) -> ClassNeighbours {
    // The members are both the set and the queries: gathered once.
    let queries = gather(space, dim, members);
    let set = PointSet::from_rows(&queries, dim);
    let own: Vec<u32> = (0..members.len() as u32).collect();
    let found = search(&set, &queries, k, Exclude::SelfIndex(&own));
    let k = found.k();
    let mut table = Vec::with_capacity(members.len() * k);
    for q in 0..members.len() {
        table.extend(found.indices(q).iter().map(|&i| members[i as usize]));
    }
    ClassNeighbours { k, table }
}

/// The `k` nearest same-class rows of the members listed in `wanted`
/// (member indices; row `j` of the answer is `wanted[j]`'s), as
/// [`class_neighbours`] gives them, taken from `around` where it can be:
/// when a member's whole-set list holds at least `k` rows of its class,
/// their first `k` are its nearest same-class rows (a nearer one would be
/// in the list), with the same distances and the same tie order, since
/// `members` ascend in reference row as the class set's indices do. Only
/// the other members are searched for.
pub fn class_neighbours_from(
    space: &[f64],
    dim: usize,
    members: &[usize],
    wanted: &[usize],
    k: usize,
    around: &WholeNeighbours,
) -> ClassNeighbours {
    debug_assert!(members.is_sorted());
    let k = k.min(members.len().saturating_sub(1));
    let mut table = vec![0; wanted.len() * k];
    if k == 0 {
        return ClassNeighbours { k, table };
    }
    let mut pending: Vec<usize> = Vec::new();
    for (j, &i) in wanted.iter().enumerate() {
        let out = &mut table[j * k..(j + 1) * k];
        // Same-class rows are the members (sorted, so a binary search).
        let mut same = around
            .of(i)
            .iter()
            .filter(|&&r| members.binary_search(&r).is_ok());
        let mut filled = 0;
        for (slot_out, &r) in out.iter_mut().zip(&mut same) {
            *slot_out = r;
            filled += 1;
        }
        if filled < k {
            pending.push(j);
        }
    }
    if !pending.is_empty() {
        let set = PointSet::from_subset(space, dim, members);
        let asked: Vec<usize> = pending.iter().map(|&j| members[wanted[j]]).collect();
        let queries = gather(space, dim, &asked);
        let own: Vec<u32> = pending.iter().map(|&j| wanted[j] as u32).collect();
        let found = search(&set, &queries, k, Exclude::SelfIndex(&own));
        for (q, &j) in pending.iter().enumerate() {
            for (slot_out, &i) in table[j * k..(j + 1) * k].iter_mut().zip(found.indices(q)) {
                *slot_out = members[i as usize];
            }
        }
    }
    ClassNeighbours { k, table }
}

/// The `k` nearest rows of the whole set to every member (self excluded by
/// index): reference-row indices and squared distances, nearest first.
#[derive(Debug)]
pub struct WholeNeighbours {
    pub k: usize,
    pub table: Vec<usize>,
    pub squared_distances: Vec<f64>,
}

impl WholeNeighbours {
    pub fn of(&self, member: usize) -> &[usize] {
        &self.table[member * self.k..(member + 1) * self.k]
    }

    /// How many of `member`'s neighbours belong to a class other than
    /// `slot` (`class_of` gives each reference row's class slot).
    pub fn others_of(&self, member: usize, class_of: &[u32], slot: usize) -> usize {
        self.of(member)
            .iter()
            .filter(|&&r| class_of[r] as usize != slot)
            .count()
    }

    pub fn distances_of(&self, member: usize) -> &[f64] {
        &self.squared_distances[member * self.k..(member + 1) * self.k]
    }
}

pub fn whole_neighbours(
    whole: &PointSet,
    space: &[f64],
    members: &[usize],
    k: usize,
) -> WholeNeighbours {
    let dim = whole.dim();
    let queries = gather(space, dim, members);
    let own: Vec<u32> = members.iter().map(|&m| m as u32).collect();
    let found = search(whole, &queries, k, Exclude::SelfIndex(&own));
    let k = found.k();
    let mut table = Vec::with_capacity(members.len() * k);
    let mut squared_distances = Vec::with_capacity(members.len() * k);
    for q in 0..members.len() {
        table.extend(found.indices(q).iter().map(|&i| i as usize));
        squared_distances.extend_from_slice(found.squared_distances(q));
    }
    WholeNeighbours {
        k,
        table,
        squared_distances,
    }
}

/// Fewest values a row gather splits across cores.
const PARALLEL_GATHER: usize = 1 << 20;

/// Rows `rows` of `space` (row-major, `dim` wide), in that order; on every
/// core for large sets (a copy per row, so the same values either way).
pub fn gather(space: &[f64], dim: usize, rows: &[usize]) -> Vec<f64> {
    let threads = if rows.len() * dim >= PARALLEL_GATHER {
        crate::parallel::cores()
    } else {
        1
    };
    gather_on(space, dim, rows, threads)
}

fn gather_on(space: &[f64], dim: usize, rows: &[usize], threads: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows.len() * dim];
    if dim == 0 || rows.is_empty() {
        return out;
    }
    let copy = |first: usize, to: &mut [f64]| {
        for (row, &r) in to.chunks_exact_mut(dim).zip(&rows[first..]) {
            row.copy_from_slice(&space[r * dim..(r + 1) * dim]);
        }
    };
    if threads <= 1 {
        copy(0, &mut out);
        return out;
    }
    let share = rows.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for (s, to) in out.chunks_mut(share * dim).enumerate() {
            let copy = &copy;
            scope.spawn(move || copy(s * share, to));
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn rows_gathered_in_shares_equal_one_gather() {
        let dim = 3;
        let rows: Vec<f64> = (0..40 * dim).map(|v| v as f64 * 0.5 - 7.0).collect();
        let order: Vec<usize> = (0..40).map(|i| (i * 17 + 5) % 40).collect();
        let one = gather_on(&rows, dim, &order, 1);
        assert_eq!(&one[..dim], &rows[5 * dim..6 * dim]);
        for threads in [2, 3, 7, 64] {
            assert_eq!(gather_on(&rows, dim, &order, threads), one, "{threads}");
        }
    }

    /// Rows on a small integer grid (many equal distances) in two classes;
    /// the class set is two rows in three, so member order and reference
    /// order interleave with the other class.
    fn grid_rows(n: usize, dim: usize, seed: u64) -> (Vec<f64>, Vec<usize>) {
        let mut rng = Rng::new(seed);
        let rows: Vec<f64> = (0..n * dim).map(|_| rng.below(4) as f64).collect();
        let members: Vec<usize> = (0..n).filter(|r| r % 3 != 0).collect();
        (rows, members)
    }

    #[test]
    fn class_neighbours_from_a_whole_list_equal_a_class_search() {
        for (n, dim, whole_k, k) in [
            (300, 2, 10, 5),
            (600, 3, 10, 5),
            (400, 12, 6, 5),
            (40, 2, 4, 3),
        ] {
            let (rows, members) = grid_rows(n, dim, n as u64);
            let whole = PointSet::from_rows(&rows, dim);
            let around = whole_neighbours(&whole, &rows, &members, whole_k);
            let searched = class_neighbours(&rows, dim, &members, k);
            let all: Vec<usize> = (0..members.len()).collect();
            let derived = class_neighbours_from(&rows, dim, &members, &all, k, &around);
            assert_eq!(derived.k, searched.k);
            assert_eq!(derived.table, searched.table, "n={n} dim={dim}");
            // Some answers came from the whole lists, some from the search.
            let from_lists = (0..members.len())
                .filter(|&i| {
                    around
                        .of(i)
                        .iter()
                        .filter(|r| members.binary_search(r).is_ok())
                        .count()
                        >= k
                })
                .count();
            assert!(
                from_lists > 0 && from_lists < members.len(),
                "n={n} dim={dim}: {from_lists}"
            );
            // A subset of members: row j is wanted[j]'s.
            let wanted: Vec<usize> = (0..members.len()).rev().step_by(3).collect();
            let some = class_neighbours_from(&rows, dim, &members, &wanted, k, &around);
            for (j, &i) in wanted.iter().enumerate() {
                assert_eq!(some.of(j), searched.of(i));
            }
        }
    }
}
