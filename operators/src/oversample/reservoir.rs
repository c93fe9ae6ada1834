//! Per-class row reservoirs and the reference set the methods read.
//!
//! A reservoir is a **ring buffer** of the most recent `capacity` eligible
//! rows of one class (eligible: label and every feature non-NULL and
//! finite). Recent rather than uniformly sampled, because on a drifting
//! stream old minority rows describe a concept that may be gone; on bounded
//! input that fits the window it simply holds every row.
//!
//! Rows are kept as compact per-batch chunks (the class's rows `take`n out of
//! the input batch, every column) plus their features as `f64`, so a
//! synthetic row can copy its seed's non-feature columns and memory is
//! bounded by `capacity` rows per class plus one partly evicted chunk.

use std::collections::VecDeque;

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::common::Result;

use crate::complexity::canonical_order;
use crate::features::{BatchFeatures, ClassIndex};

#[derive(Debug)]
struct Chunk {
    rows: RecordBatch,
    features: Vec<f64>,
    /// Arrival number of each row (position in the operator's input).
    arrivals: Vec<u64>,
    /// Rows before `start` have been evicted.
    start: usize,
}

#[derive(Debug, Default)]
struct ClassReservoir {
    chunks: VecDeque<Chunk>,
    len: usize,
}

/// The ring buffers of every class.
#[derive(Debug)]
pub struct Reservoirs {
    capacity: usize,
    dim: usize,
    per_class: Vec<ClassReservoir>,
    /// Input rows seen so far (the next arrival number).
    arrived: u64,
}

impl Reservoirs {
    pub fn new(capacity: usize, dim: usize) -> Self {
        Self {
            capacity,
            dim,
            per_class: Vec::new(),
            arrived: 0,
        }
    }

    /// Rows held for class `slot`.
    pub fn len_of(&self, slot: usize) -> usize {
        self.per_class.get(slot).map_or(0, |r| r.len)
    }

    pub fn total_len(&self) -> usize {
        self.per_class.iter().map(|r| r.len).sum()
    }

    /// Add the eligible rows of `batch`, evicting the oldest beyond capacity.
    pub fn insert(&mut self, batch: &RecordBatch, features: &BatchFeatures) -> Result<()> {
        let dim = self.dim;
        let mut rows_of: Vec<Vec<u32>> = Vec::new();
        for (row, slot) in features.slots.iter().enumerate() {
            if let Some(slot) = *slot {
                if rows_of.len() <= slot {
                    rows_of.resize_with(slot + 1, Vec::new);
                }
                rows_of[slot].push(row as u32);
            }
        }
        for (slot, rows) in rows_of.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            // Only the newest `capacity` rows of a large batch can survive.
            let keep_from = rows.len().saturating_sub(self.capacity);
            let rows = &rows[keep_from..];
            let mut chunk_features = Vec::with_capacity(rows.len() * dim);
            for &r in rows {
                let r = r as usize;
                chunk_features.extend_from_slice(&features.values[r * dim..(r + 1) * dim]);
            }
            let indices = UInt32Array::from(rows.to_vec());
            let chunk = Chunk {
                rows: take_record_batch(batch, &indices)?,
                features: chunk_features,
                arrivals: rows.iter().map(|&r| self.arrived + u64::from(r)).collect(),
                start: 0,
            };
            if self.per_class.len() <= slot {
                self.per_class
                    .resize_with(slot + 1, ClassReservoir::default);
            }
            let reservoir = &mut self.per_class[slot];
            reservoir.len += rows.len();
            reservoir.chunks.push_back(chunk);
            Self::evict(reservoir, self.capacity);
        }
        self.arrived += batch.num_rows() as u64;
        Ok(())
    }

    fn evict(reservoir: &mut ClassReservoir, keep: usize) {
        while reservoir.len > keep {
            let Some(front) = reservoir.chunks.front_mut() else {
                break;
            };
            let held = front.rows.num_rows() - front.start;
            let drop = (reservoir.len - keep).min(held);
            front.start += drop;
            reservoir.len -= drop;
            if front.start == front.rows.num_rows() {
                reservoir.chunks.pop_front();
            }
        }
    }

    /// Keep only the newest `keep` rows of every class (drift response).
    pub fn shrink_to(&mut self, keep: usize) {
        for reservoir in &mut self.per_class {
            Self::evict(reservoir, keep);
        }
    }

    /// Everything held, as one reference set.
    pub fn reference(&self) -> ReferenceSet {
        let dim = self.dim;
        let total = self.total_len();
        let mut features = Vec::with_capacity(total * dim);
        let mut class_of = Vec::with_capacity(total);
        let mut locator = Vec::with_capacity(total);
        let mut arrival = Vec::with_capacity(total);
        let mut members = vec![Vec::new(); self.per_class.len()];
        let mut chunks = Vec::new();
        for (slot, reservoir) in self.per_class.iter().enumerate() {
            for chunk in &reservoir.chunks {
                let chunk_id = chunks.len() as u32;
                chunks.push(chunk.rows.clone());
                for row in chunk.start..chunk.rows.num_rows() {
                    members[slot].push(class_of.len());
                    class_of.push(slot as u32);
                    locator.push((chunk_id, row as u32));
                    arrival.push(chunk.arrivals[row]);
                    features.extend_from_slice(&chunk.features[row * dim..(row + 1) * dim]);
                }
            }
        }
        ReferenceSet {
            dim,
            features,
            class_of,
            locator,
            arrival,
            members,
            chunks,
        }
    }
}

/// The rows methods draw seeds and neighbours from: features row-major, the
/// class of each row, and where each row's full data lives.
#[derive(Debug)]
pub struct ReferenceSet {
    pub dim: usize,
    pub features: Vec<f64>,
    pub class_of: Vec<u32>,
    /// (chunk, row in chunk) of each reference row.
    pub locator: Vec<(u32, u32)>,
    /// Arrival number of each reference row.
    pub arrival: Vec<u64>,
    /// Reference rows of each class slot.
    pub members: Vec<Vec<usize>>,
    /// Row chunks (shared with the reservoirs: cloning a batch clones
    /// `Arc`s, not data).
    pub chunks: Vec<RecordBatch>,
}

impl ReferenceSet {
    pub fn len(&self) -> usize {
        self.class_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.class_of.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }

    /// Reorder the rows canonically by class and features: the generation then
    /// depends on the rows, not on the order a multi-partition input
    /// happened to deliver them in (only rows with identical class and
    /// features keep their arrival order among themselves).
    pub fn canonicalize(&mut self, classes: &ClassIndex) {
        let dim = self.dim;
        let rank_of = classes.ranks();
        let rank: Vec<u32> = self.class_of.iter().map(|&c| rank_of[c as usize]).collect();
        let order = canonical_order(&self.features, dim, &rank);
        let mut features = Vec::with_capacity(self.features.len());
        let mut class_of = Vec::with_capacity(order.len());
        let mut locator = Vec::with_capacity(order.len());
        let mut arrival = Vec::with_capacity(order.len());
        let mut members = vec![Vec::new(); self.members.len()];
        for &old in &order {
            arrival.push(self.arrival[old]);
            features.extend_from_slice(&self.features[old * dim..(old + 1) * dim]);
            members[self.class_of[old] as usize].push(class_of.len());
            class_of.push(self.class_of[old]);
            locator.push(self.locator[old]);
        }
        self.features = features;
        self.class_of = class_of;
        self.locator = locator;
        self.arrival = arrival;
        self.members = members;
    }

    /// Features z-scored per dimension over the whole set (a constant
    /// dimension is only centred), for distance-based scoring.
    pub fn standardized(&self) -> Vec<f64> {
        let n = self.len().max(1) as f64;
        let dim = self.dim;
        let mut mean = vec![0.0; dim];
        for row in self.features.chunks_exact(dim.max(1)) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; dim];
        for row in self.features.chunks_exact(dim.max(1)) {
            for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v - m) * (v - m);
            }
        }
        let scale: Vec<f64> = var
            .iter()
            .map(|s| {
                let sd = (s / n).sqrt();
                if sd > 0.0 { 1.0 / sd } else { 1.0 }
            })
            .collect();
        self.features
            .chunks_exact(dim.max(1))
            .flat_map(|row| {
                row.iter()
                    .zip(&mean)
                    .zip(&scale)
                    .map(|((v, m), s)| (v - m) * s)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{ClassIndex, batch_features};
    use datafusion::arrow::array::{AsArray, Float64Array, Int64Array};
    use datafusion::arrow::datatypes::Float64Type;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(xs: &[Option<f64>], labels: &[Option<i64>]) -> Result<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Float64, true),
            Field::new("label", DataType::Int64, true),
        ]));
        Ok(RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Float64Array::from(xs.to_vec())),
                Arc::new(Int64Array::from(labels.to_vec())),
            ],
        )?)
    }

    #[test]
    fn ring_buffers_keep_the_newest_eligible_rows_per_class() -> Result<()> {
        let mut classes = ClassIndex::default();
        let mut reservoirs = Reservoirs::new(3, 1);
        for start in 0..4 {
            let xs: Vec<Option<f64>> = (0..4).map(|i| Some(f64::from(start * 4 + i))).collect();
            let b = batch(&xs, &[Some(0), Some(1), Some(0), Some(0)])?;
            let features = batch_features(&b, 1, &[0], &mut classes)?;
            reservoirs.insert(&b, &features)?;
        }
        assert_eq!(reservoirs.len_of(0), 3);
        assert_eq!(reservoirs.len_of(1), 3);
        let reference = reservoirs.reference();
        let class0: Vec<f64> = reference.members[0]
            .iter()
            .map(|&r| reference.row(r)[0])
            .collect();
        let class1: Vec<f64> = reference.members[1]
            .iter()
            .map(|&r| reference.row(r)[0])
            .collect();
        assert_eq!(class0, [12.0, 14.0, 15.0]);
        assert_eq!(class1, [5.0, 9.0, 13.0]);
        // The locator points at the row's full data.
        let (chunk, row) = reference.locator[reference.members[1][0]];
        let x = reference.chunks[chunk as usize].column(0);
        assert_eq!(x.as_primitive::<Float64Type>().value(row as usize), 5.0);
        reservoirs.shrink_to(1);
        assert_eq!(reservoirs.total_len(), 2);
        Ok(())
    }

    #[test]
    fn null_labels_and_features_are_never_eligible() -> Result<()> {
        let mut classes = ClassIndex::default();
        let b = batch(
            &[Some(1.0), None, Some(f64::NAN), Some(2.0)],
            &[Some(1), Some(1), Some(1), None],
        )?;
        let features = batch_features(&b, 1, &[0], &mut classes)?;
        assert_eq!(features.slots, [Some(0), None, None, None]);
        assert_eq!(features.labelled, [Some(0), Some(0), Some(0), None]);
        Ok(())
    }
}
