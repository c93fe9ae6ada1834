//! The streaming reference set: the most recent labelled rows with complete
//! features, in a ring buffer.

use crate::complexity::ClassedRows;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SlidingWindow {
    dim: usize,
    capacity: usize,
    features: Vec<f64>,
    class_of: Vec<u32>,
    /// Ring position of the oldest row.
    start: usize,
    len: usize,
}

impl SlidingWindow {
    /// Bytes held by the window's rows.
    pub fn memory_size(&self) -> usize {
        self.features.capacity() * size_of::<f64>() + self.class_of.capacity() * size_of::<u32>()
    }

    pub fn new(capacity: usize, dim: usize) -> Self {
        Self {
            dim,
            capacity: capacity.max(1),
            features: Vec::new(),
            class_of: Vec::new(),
            start: 0,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, row: &[f64], class: u32) {
        if self.class_of.len() < self.capacity {
            // Still filling: the ring is the prefix written so far.
            self.features.extend_from_slice(row);
            self.class_of.push(class);
            self.len += 1;
            return;
        }
        let at = (self.start + self.len) % self.capacity;
        self.features[at * self.dim..(at + 1) * self.dim].copy_from_slice(row);
        self.class_of[at] = class;
        if self.len == self.capacity {
            self.start = (self.start + 1) % self.capacity;
        } else {
            self.len += 1;
        }
    }

    /// Storage position of each row, oldest first: with [`Self::rows`] and
    /// [`Self::class_at`], the window searched in place (a kNN subset in this
    /// order reports arrival ranks, so ties still go to the older row).
    pub fn arrival_positions(&self) -> Vec<usize> {
        let stored = self.class_of.len().max(1);
        (0..self.len).map(|i| (self.start + i) % stored).collect()
    }

    /// Row-major storage, in ring order.
    pub fn rows(&self) -> &[f64] {
        &self.features
    }

    /// Class of the row stored at `position`.
    pub fn class_at(&self, position: usize) -> u32 {
        self.class_of[position]
    }

    /// Keep the newest `keep` rows.
    pub fn shrink_to(&mut self, keep: usize) {
        let snapshot = self.snapshot();
        let drop = snapshot.len().saturating_sub(keep);
        self.features = snapshot.features[drop * self.dim..].to_vec();
        self.class_of = snapshot.class_of[drop..].to_vec();
        self.start = 0;
        self.len = self.class_of.len();
    }

    /// The rows, oldest first (index order is arrival order, so a tie at
    /// the k-th neighbour goes to the older row).
    pub fn snapshot(&self) -> ClassedRows {
        let mut features = Vec::with_capacity(self.len * self.dim);
        let mut class_of = Vec::with_capacity(self.len);
        for at in self.arrival_positions() {
            features.extend_from_slice(&self.features[at * self.dim..(at + 1) * self.dim]);
            class_of.push(self.class_of[at]);
        }
        ClassedRows {
            dim: self.dim,
            features,
            class_of,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_rows_in_arrival_order() {
        let mut window = SlidingWindow::new(3, 1);
        for i in 0..5 {
            window.push(&[f64::from(i)], i as u32);
        }
        assert_eq!(window.snapshot().features, vec![2.0, 3.0, 4.0]);
        window.shrink_to(2);
        assert_eq!(window.snapshot().class_of, vec![3, 4]);
        window.push(&[5.0], 5);
        assert_eq!(window.snapshot().features, vec![3.0, 4.0, 5.0]);
        window.push(&[6.0], 6);
        assert_eq!(window.snapshot().features, vec![4.0, 5.0, 6.0]);
        let in_place: Vec<f64> = window
            .arrival_positions()
            .iter()
            .map(|&p| window.rows()[p])
            .collect();
        assert_eq!(in_place, vec![4.0, 5.0, 6.0]);
        let classes: Vec<u32> = window
            .arrival_positions()
            .iter()
            .map(|&p| window.class_at(p))
            .collect();
        assert_eq!(classes, vec![4, 5, 6]);
    }
}
