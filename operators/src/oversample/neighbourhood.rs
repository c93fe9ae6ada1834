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
    let set = PointSet::from_subset(space, dim, members);
    let queries = gather(space, dim, members);
    let own: Vec<u32> = (0..members.len() as u32).collect();
    let found = search(&set, &queries, k, Exclude::SelfIndex(&own));
    let k = found.k();
    let mut table = Vec::with_capacity(members.len() * k);
    for q in 0..members.len() {
        table.extend(found.indices(q).iter().map(|&i| members[i as usize]));
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

pub fn gather(space: &[f64], dim: usize, rows: &[usize]) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows.len() * dim);
    for &r in rows {
        out.extend_from_slice(&space[r * dim..(r + 1) * dim]);
    }
    out
}
