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
//!
//! A bounded input reads every row once, at the end, so its batches are
//! first held as they came, with no copy, while they total at most
//! `capacity` rows; the features of only the classes a method reads are
//! then copied out at the end. Past `capacity` held rows, the held batches
//! are compacted into chunks, so memory stays bounded by the window.

use std::collections::VecDeque;

use base64::Engine as _;
use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::{Result, exec_datafusion_err, exec_err};

use super::neighbourhood::gather;
use crate::complexity::canonical_order;
use crate::features::{BatchFeatures, ClassIndex, gather_eligible};

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

/// A bounded input's batch, held as it came (no copy) while the batches
/// held stay within the window; see [`Reservoirs::hold`].
#[derive(Debug)]
struct HeldBatch {
    batch: RecordBatch,
    /// Class slot of each row, `None` for a NULL label. Whether a row is
    /// eligible is checked only when its features are read.
    labelled: Vec<Option<usize>>,
    /// Arrival number of the batch's first row.
    first_arrival: u64,
}

/// The rows of every class's ring buffer, for a checkpoint: per class, its
/// chunks from their first row not evicted, the rows as Arrow IPC (base64)
/// with their features and arrival numbers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReservoirsState {
    arrived: u64,
    per_class: Vec<Vec<ChunkState>>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct ChunkState {
    rows: String,
    features: Vec<f64>,
    arrivals: Vec<u64>,
}

fn encode_rows(batch: &RecordBatch) -> Result<String> {
    let mut bytes = Vec::new();
    {
        let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn decode_rows(text: &str) -> Result<RecordBatch> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| exec_datafusion_err!("reservoir rows in a snapshot: {e}"))?;
    let mut reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    match reader.next() {
        Some(batch) => Ok(batch?),
        None => exec_err!("reservoir rows in a snapshot: an empty IPC stream"),
    }
}

/// The ring buffers of every class.
#[derive(Debug)]
pub struct Reservoirs {
    capacity: usize,
    dim: usize,
    feature_indices: Vec<usize>,
    per_class: Vec<ClassReservoir>,
    /// Input rows seen so far (the next arrival number).
    arrived: u64,
    /// Batches held whole, newer than every chunk; their rows and their
    /// labelled rows per class (eligible or not: eligibility is checked
    /// when the rows are read, so these bound the eligible rows from
    /// above).
    held: Vec<HeldBatch>,
    held_rows: usize,
    held_per_class: Vec<usize>,
}

impl Reservoirs {
    /// Bytes held: the batches held whole and every class's chunks (rows,
    /// features, arrival numbers).
    pub fn memory_size(&self) -> usize {
        let held: usize = self
            .held
            .iter()
            .map(|h| {
                h.batch.get_array_memory_size() + h.labelled.capacity() * size_of::<Option<usize>>()
            })
            .sum();
        let chunks: usize = self
            .per_class
            .iter()
            .flat_map(|class| class.chunks.iter())
            .map(|c| {
                c.rows.get_array_memory_size()
                    + c.features.capacity() * size_of::<f64>()
                    + c.arrivals.capacity() * size_of::<u64>()
            })
            .sum();
        held + chunks
    }

    /// Rows are read through `feature_indices` (the operator's features).
    pub fn new(capacity: usize, feature_indices: Vec<usize>) -> Self {
        Self {
            capacity,
            dim: feature_indices.len(),
            feature_indices,
            per_class: Vec::new(),
            arrived: 0,
            held: Vec::new(),
            held_rows: 0,
            held_per_class: Vec::new(),
        }
    }

    /// The rows held, for a checkpoint. Only a stream's reservoirs are
    /// checkpointed: a bounded input's batches held whole are not.
    pub fn state(&self) -> Result<ReservoirsState> {
        if !self.held.is_empty() {
            return exec_err!("a bounded input's held batches are not checkpointed");
        }
        let dim = self.dim;
        let per_class = self
            .per_class
            .iter()
            .map(|reservoir| {
                reservoir
                    .chunks
                    .iter()
                    .map(|chunk| {
                        let kept = chunk.rows.num_rows() - chunk.start;
                        Ok(ChunkState {
                            rows: encode_rows(&chunk.rows.slice(chunk.start, kept))?,
                            features: chunk.features[chunk.start * dim..].to_vec(),
                            arrivals: chunk.arrivals[chunk.start..].to_vec(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ReservoirsState {
            arrived: self.arrived,
            per_class,
        })
    }

    /// Continue from `state` (the same operator's [`Self::state`]).
    pub fn restore(&mut self, state: ReservoirsState) -> Result<()> {
        let mut per_class = Vec::with_capacity(state.per_class.len());
        for chunks in state.per_class {
            let mut reservoir = ClassReservoir::default();
            for chunk in chunks {
                let rows = decode_rows(&chunk.rows)?;
                if chunk.features.len() != rows.num_rows() * self.dim
                    || chunk.arrivals.len() != rows.num_rows()
                {
                    return exec_err!(
                        "reservoir snapshot: {} rows with {} features and {} arrivals ({} features a row)",
                        rows.num_rows(),
                        chunk.features.len(),
                        chunk.arrivals.len(),
                        self.dim
                    );
                }
                reservoir.len += rows.num_rows();
                reservoir.chunks.push_back(Chunk {
                    rows,
                    features: chunk.features,
                    arrivals: chunk.arrivals,
                    start: 0,
                });
            }
            per_class.push(reservoir);
        }
        self.per_class = per_class;
        self.arrived = state.arrived;
        self.held.clear();
        self.held_rows = 0;
        self.held_per_class.clear();
        Ok(())
    }

    /// Rows held for class `slot`: its eligible rows, plus, on a bounded
    /// input, the labelled rows of the batches still held as they came
    /// (whose eligibility is checked when they are read).
    pub fn len_of(&self, slot: usize) -> usize {
        self.per_class.get(slot).map_or(0, |r| r.len)
            + self.held_per_class.get(slot).copied().unwrap_or(0)
    }

    pub fn total_len(&self) -> usize {
        self.per_class.iter().map(|r| r.len).sum::<usize>()
            + self.held_per_class.iter().sum::<usize>()
    }

    /// Add the eligible rows of `batch`, evicting the oldest beyond capacity.
    pub fn insert(&mut self, batch: &RecordBatch, features: &BatchFeatures) -> Result<()> {
        self.compact()?;
        let dim = self.dim;
        for (slot, rows) in rows_by_class(&features.slots).into_iter().enumerate() {
            // Only the newest `capacity` rows of a large batch can survive.
            let rows = &rows[rows.len().saturating_sub(self.capacity)..];
            if rows.is_empty() {
                continue;
            }
            let mut chunk_features = Vec::with_capacity(rows.len() * dim);
            for &r in rows {
                let r = r as usize;
                chunk_features.extend_from_slice(&features.values[r * dim..(r + 1) * dim]);
            }
            self.push_chunk(slot, batch, rows, chunk_features, self.arrived)?;
        }
        self.arrived += batch.num_rows() as u64;
        Ok(())
    }

    /// Hold `batch` as it is, with its rows' class slots (`None` for a
    /// NULL label): what a bounded input does, whose rows are all read
    /// once, at the end. Nothing is copied, and no feature is read, while
    /// the held batches total at most `capacity` rows and no class exceeds
    /// it; past that, every held batch is compacted into per-class chunks
    /// of its eligible rows, as [`Self::insert`] makes them, so memory stays
    /// bounded by the window. Counting labelled rows, an upper bound on the
    /// eligible ones, compacts no later than counting eligible rows would,
    /// and compaction keeps each class's newest eligible rows: the
    /// reference set is the same.
    pub fn hold(&mut self, batch: &RecordBatch, labelled: Vec<Option<usize>>) -> Result<()> {
        for &slot in labelled.iter().flatten() {
            if self.held_per_class.len() <= slot {
                self.held_per_class.resize(slot + 1, 0);
            }
            self.held_per_class[slot] += 1;
        }
        self.held_rows += batch.num_rows();
        self.held.push(HeldBatch {
            batch: batch.clone(),
            labelled,
            first_arrival: self.arrived,
        });
        self.arrived += batch.num_rows() as u64;
        let over = (0..self.held_per_class.len()).any(|slot| self.len_of(slot) > self.capacity);
        if self.held_rows > self.capacity || over {
            self.compact()?;
        }
        Ok(())
    }

    /// Turn every held batch into per-class chunks of its eligible rows
    /// (oldest first).
    fn compact(&mut self) -> Result<()> {
        for held in std::mem::take(&mut self.held) {
            for (slot, rows) in rows_by_class(&held.labelled).into_iter().enumerate() {
                let (rows, mut features) =
                    gather_eligible(&held.batch, &self.feature_indices, rows)?;
                // Only the newest `capacity` eligible rows can survive.
                let first = rows.len().saturating_sub(self.capacity);
                if first == rows.len() {
                    continue;
                }
                features.drain(..first * self.dim);
                self.push_chunk(
                    slot,
                    &held.batch,
                    &rows[first..],
                    features,
                    held.first_arrival,
                )?;
            }
        }
        self.held_rows = 0;
        self.held_per_class.iter_mut().for_each(|n| *n = 0);
        Ok(())
    }

    fn push_chunk(
        &mut self,
        slot: usize,
        batch: &RecordBatch,
        rows: &[u32],
        features: Vec<f64>,
        first_arrival: u64,
    ) -> Result<()> {
        let indices = UInt32Array::from(rows.to_vec());
        let chunk = Chunk {
            rows: take_record_batch(batch, &indices)?,
            features,
            arrivals: rows.iter().map(|&r| first_arrival + u64::from(r)).collect(),
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
    pub fn shrink_to(&mut self, keep: usize) -> Result<()> {
        self.compact()?;
        for reservoir in &mut self.per_class {
            Self::evict(reservoir, keep);
        }
        Ok(())
    }

    /// Everything held, as one reference set.
    pub fn reference(&self) -> Result<ReferenceSet> {
        self.reference_of(|_| true)
    }

    /// The rows of the classes `include` accepts (by slot), as one
    /// reference set: per class, oldest first. The other classes' rows are
    /// left out (their features are never read), which is all a method
    /// that draws seeds and neighbours from one class at a time needs.
    pub fn reference_of(&self, include: impl Fn(usize) -> bool) -> Result<ReferenceSet> {
        let dim = self.dim;
        let classes = self.per_class.len().max(self.held_per_class.len());
        let total: usize = (0..classes)
            .filter(|&slot| include(slot))
            .map(|slot| self.len_of(slot))
            .sum();
        let mut features = Vec::with_capacity(total * dim);
        let mut class_of = Vec::with_capacity(total);
        let mut locator = Vec::with_capacity(total);
        let mut arrival = Vec::with_capacity(total);
        let mut members = vec![Vec::new(); classes];
        let mut chunks = Vec::new();
        // Held batches: the included classes' eligible rows and their
        // features, read once per batch.
        let mut held_rows = Vec::with_capacity(self.held.len());
        for held in &self.held {
            let rows: Vec<u32> = (0..held.labelled.len() as u32)
                .filter(|&r| held.labelled[r as usize].is_some_and(&include))
                .collect();
            held_rows.push(gather_eligible(&held.batch, &self.feature_indices, rows)?);
        }
        for slot in (0..classes).filter(|&slot| include(slot)) {
            if let Some(reservoir) = self.per_class.get(slot) {
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
            for (held, (rows, values)) in self.held.iter().zip(&held_rows) {
                let chunk_id = chunks.len() as u32;
                let mut used = false;
                for (i, &row) in rows.iter().enumerate() {
                    if held.labelled[row as usize] != Some(slot) {
                        continue;
                    }
                    used = true;
                    members[slot].push(class_of.len());
                    class_of.push(slot as u32);
                    locator.push((chunk_id, row));
                    arrival.push(held.first_arrival + u64::from(row));
                    features.extend_from_slice(&values[i * dim..(i + 1) * dim]);
                }
                if used {
                    chunks.push(held.batch.clone());
                }
            }
        }
        Ok(ReferenceSet {
            dim,
            features,
            class_of,
            locator,
            arrival,
            members,
            chunks,
        })
    }
}

/// Row numbers of each class slot's rows (those with a slot), in row order.
fn rows_by_class(slots: &[Option<usize>]) -> Vec<Vec<u32>> {
    let mut rows_of: Vec<Vec<u32>> = Vec::new();
    for (row, slot) in slots.iter().enumerate() {
        if let Some(slot) = *slot {
            if rows_of.len() <= slot {
                rows_of.resize_with(slot + 1, Vec::new);
            }
            rows_of[slot].push(row as u32);
        }
    }
    rows_of
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
        let features = gather(&self.features, dim, &order);
        let mut class_of = Vec::with_capacity(order.len());
        let mut locator = Vec::with_capacity(order.len());
        let mut arrival = Vec::with_capacity(order.len());
        let mut members = vec![Vec::new(); self.members.len()];
        for &old in &order {
            arrival.push(self.arrival[old]);
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
        // Written row by row into place: a flattening iterator would not
        // vectorize.
        let mut out = vec![0.0; self.features.len()];
        for (to, row) in out
            .chunks_exact_mut(dim.max(1))
            .zip(self.features.chunks_exact(dim.max(1)))
        {
            for (((o, v), m), s) in to.iter_mut().zip(row).zip(&mean).zip(&scale) {
                *o = (v - m) * s;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{ClassIndex, batch_features, batch_labels};
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
        let mut reservoirs = Reservoirs::new(3, vec![0]);
        for start in 0..4 {
            let xs: Vec<Option<f64>> = (0..4).map(|i| Some(f64::from(start * 4 + i))).collect();
            let b = batch(&xs, &[Some(0), Some(1), Some(0), Some(0)])?;
            let features = batch_features(&b, 1, &[0], &mut classes)?;
            reservoirs.insert(&b, &features)?;
        }
        assert_eq!(reservoirs.len_of(0), 3);
        assert_eq!(reservoirs.len_of(1), 3);
        let reference = reservoirs.reference()?;
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
        reservoirs.shrink_to(1)?;
        assert_eq!(reservoirs.total_len(), 2);
        Ok(())
    }

    #[test]
    fn held_batches_give_the_reference_that_inserted_ones_do() -> Result<()> {
        // Capacity 3 compacts the held batches on the way (a class exceeds
        // it, then the rows do); 100 holds them all to the end.
        for capacity in [3, 5, 100] {
            let mut classes = ClassIndex::default();
            let mut inserted = Reservoirs::new(capacity, vec![0]);
            let mut held = Reservoirs::new(capacity, vec![0]);
            for start in 0..5 {
                // A NULL, a NaN and an infinite feature, in both classes.
                let xs: Vec<Option<f64>> = (0..4)
                    .map(|i| match (start, i) {
                        (1, 2) => None,
                        (3, 1) => Some(f64::NAN),
                        (4, 0) => Some(f64::INFINITY),
                        _ => Some(f64::from(start * 4 + i)),
                    })
                    .collect();
                let b = batch(&xs, &[Some(0), Some(1), Some(0), None])?;
                let features = batch_features(&b, 1, &[0], &mut classes)?;
                let labelled = batch_labels(&b, 1, &mut classes)?;
                assert_eq!(labelled, features.labelled);
                inserted.insert(&b, &features)?;
                held.hold(&b, labelled)?;
                // Held rows count before their eligibility is known: never
                // fewer than the eligible ones, and never past the window.
                for slot in 0..2 {
                    assert!(held.len_of(slot) >= inserted.len_of(slot));
                    assert!(held.len_of(slot) <= capacity);
                }
            }
            let (a, b) = (inserted.reference()?, held.reference()?);
            assert_eq!(a.features, b.features, "capacity {capacity}");
            assert_eq!(a.class_of, b.class_of);
            assert_eq!(a.arrival, b.arrival);
            assert_eq!(a.members, b.members);
            // Each locator reaches the same value through either layout.
            let value = |r: &ReferenceSet, i: usize| {
                let (chunk, row) = r.locator[i];
                r.chunks[chunk as usize]
                    .column(0)
                    .as_primitive::<Float64Type>()
                    .value(row as usize)
            };
            for i in 0..a.len() {
                assert_eq!(value(&a, i), value(&b, i));
            }
            // Only the classes asked for: class 1's rows alone.
            let ones = held.reference_of(|slot| slot == 1)?;
            assert_eq!(ones.members[1].len(), inserted.len_of(1));
            assert!(ones.members[0].is_empty());
            assert!(ones.class_of.iter().all(|&c| c == 1));
        }
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
