//! What a finished job reports: rows per class as the sink received them,
//! synthetic rows, drifts against the source's change points, and the
//! detector's prequential quality between them.

use std::fmt;
use std::time::Duration;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Result;
use equipoise_operators::class_label::{ClassValue, for_each_class};
use equipoise_operators::features::ClassIndex;
use equipoise_operators::runtime::AdvisorReport;
use equipoise_operators::{DriftEvent, JobSnapshot};
use equipoise_udfs::classes::ClassCounts;
use equipoise_udfs::confusion::ConfusionCells;
use equipoise_udfs::scores::{self, divide_or_zero};

/// Rows per class as the job's sink received them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassTally {
    classes: ClassIndex,
    rows: ClassCounts,
    unlabelled: u64,
}

impl ClassTally {
    /// Count the rows of `batch` for which `select(row)` holds.
    pub(crate) fn add(
        &mut self,
        batch: &RecordBatch,
        label_index: usize,
        select: impl Fn(usize) -> bool,
    ) -> Result<()> {
        let mut unlabelled = 0;
        let (classes, rows) = (&mut self.classes, &mut self.rows);
        for_each_class(batch.column(label_index), |row, class| {
            if !select(row) {
                return;
            }
            match class {
                None => unlabelled += 1,
                Some(class) => rows.add(classes.slot(class), 1),
            }
        })?;
        self.unlabelled += unlabelled;
        Ok(())
    }

    /// A tally of the given per-class counts (a class may come twice).
    pub(crate) fn from_counts(counts: impl IntoIterator<Item = (ClassValue, u64)>) -> Self {
        let mut tally = Self::default();
        for (class, n) in counts {
            let slot = tally.classes.slot(class);
            tally.rows.add(slot, n);
        }
        tally
    }

    /// Rows of every class plus unlabelled rows.
    pub fn rows(&self) -> u64 {
        self.rows.total() + self.unlabelled
    }

    /// Rows per class, ordered by class.
    pub fn per_class(&self) -> Vec<(ClassValue, u64)> {
        let mut classes: Vec<(ClassValue, u64)> = self
            .classes
            .values()
            .iter()
            .enumerate()
            .map(|(slot, class)| (class.clone(), self.rows.get(slot)))
            .collect();
        classes.sort();
        classes
    }

    pub fn unlabelled(&self) -> u64 {
        self.unlabelled
    }

    /// Share of the smallest class among labelled rows.
    pub fn minority_share(&self) -> Option<f64> {
        let labelled = self.rows.total();
        let smallest = (0..self.classes.len())
            .map(|slot| self.rows.get(slot))
            .min()?;
        (labelled > 0).then(|| smallest as f64 / labelled as f64)
    }
}

/// What a finished job reports.
#[derive(Debug, Clone)]
pub struct JobSummary {
    /// Rows of the source, as the sink received them.
    pub tally: ClassTally,
    /// Synthetic rows the oversampler added, by class.
    pub synthetic: ClassTally,
    /// Drifts the job's monitors signalled, in order.
    pub drifts: Vec<DriftEvent>,
    /// Warning zones entered.
    pub warnings: u64,
    /// The source's documented change points.
    pub change_points: Vec<(u64, &'static str)>,
    /// Prequential quality of the detector's predictions between them.
    pub quality: SegmentQuality,
    /// Version of the detector's model at the end, if the job has one.
    pub model_version: Option<u64>,
    /// What each detector's advisor found.
    pub advisors: Vec<AdvisorReport>,
    pub batches: u64,
    pub elapsed: Duration,
    /// True when the job ended on a stop request rather than at the end of
    /// its source.
    pub stopped: bool,
    /// State of every stateful operator when the job ended, taken after the
    /// stream drained: resuming from it continues exactly where this job
    /// stopped.
    pub final_state: JobSnapshot,
}

impl fmt::Display for JobSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rows = self.tally.rows();
        writeln!(
            f,
            "{} after {rows} rows in {} batches",
            if self.stopped { "stopped" } else { "finished" },
            self.batches
        )?;
        for (class, n) in self.tally.per_class() {
            writeln!(f, "  class {class}: {n} rows")?;
        }
        for (class, n) in self.synthetic.per_class() {
            writeln!(f, "  class {class}: {n} synthetic rows")?;
        }
        if self.tally.unlabelled() > 0 {
            writeln!(f, "  unlabelled: {} rows", self.tally.unlabelled())?;
        }
        for (row, what) in &self.change_points {
            writeln!(f, "  documented change: {what} at row {row}")?;
        }
        for drift in &self.drifts {
            let after = self
                .change_points
                .iter()
                .filter(|(row, _)| *row <= drift.row)
                .max_by_key(|(row, _)| *row)
                .map_or(String::new(), |(row, what)| {
                    format!(", {} rows after the {what} change", drift.row - row)
                });
            writeln!(f, "  drift: {drift}{after}")?;
        }
        if self.warnings > 0 {
            writeln!(f, "  warnings: {}", self.warnings)?;
        }
        let minority = self
            .tally
            .per_class()
            .into_iter()
            .min_by_key(|(_, n)| *n)
            .map(|(c, _)| c);
        if let Some(minority) = minority {
            for line in self.quality.lines(&minority) {
                writeln!(f, "  {line}")?;
            }
        }
        if let Some(version) = self.model_version {
            writeln!(f, "  model version: {version}")?;
        }
        for line in self.advisors.iter().flat_map(AdvisorReport::lines) {
            writeln!(f, "  {line}")?;
        }
        writeln!(f, "  elapsed: {secs:.3} s")?;
        write!(f, "  rows per second: {:.0}", rows as f64 / secs.max(1e-9))
    }
}

/// Prequential confusion counts of the detector's predictions, split at
/// the source's change points (the shared [`ConfusionCells`], scored by the
/// shared formulas).
#[derive(Debug, Clone, Default)]
pub struct SegmentQuality {
    bounds: Vec<u64>,
    classes: ClassIndex,
    segments: Vec<ConfusionCells>,
}

/// Recall, precision, F1 of one class, and G-mean over all classes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassQuality {
    pub rows: u64,
    pub recall: f64,
    pub precision: f64,
    pub f1: f64,
    pub gmean: f64,
}

impl SegmentQuality {
    pub fn new(change_points: impl Iterator<Item = u64>) -> Self {
        let mut bounds: Vec<u64> = change_points.collect();
        bounds.sort_unstable();
        Self {
            segments: vec![ConfusionCells::default(); bounds.len() + 1],
            classes: ClassIndex::default(),
            bounds,
        }
    }

    /// Count the original rows of `batch`, the first of which is row
    /// `first_row` of the stream.
    pub(crate) fn add(
        &mut self,
        batch: &RecordBatch,
        label_index: usize,
        prediction_index: usize,
        first_row: u64,
        synthetic_index: Option<usize>,
    ) -> Result<()> {
        let mut truths = Vec::with_capacity(batch.num_rows());
        for_each_class(batch.column(label_index), |_, c| truths.push(c))?;
        let mut predictions = Vec::with_capacity(batch.num_rows());
        for_each_class(batch.column(prediction_index), |_, c| predictions.push(c))?;
        let marks = synthetic_index.map(|i| batch.column(i).as_boolean().clone());
        let mut row_number = first_row;
        for (row, (truth, prediction)) in truths.into_iter().zip(predictions).enumerate() {
            if marks.as_ref().is_some_and(|m| m.value(row)) {
                continue;
            }
            let segment = self.bounds.iter().filter(|b| **b <= row_number).count();
            row_number += 1;
            let (Some(truth), Some(prediction)) = (truth, prediction) else {
                continue;
            };
            let (t, p) = (self.classes.slot(truth), self.classes.slot(prediction));
            let cells = &mut self.segments[segment];
            cells.fit(self.classes.len());
            cells.add(t as u32, p as u32, 1);
        }
        Ok(())
    }

    /// Quality of `class` in segment `i` (None without rows of it).
    pub fn of(&self, i: usize, class: &ClassValue) -> Option<ClassQuality> {
        let cells = self.segments.get(i)?;
        let c = self.classes.get(class)? as u32;
        let rows = cells.true_count(c);
        if rows == 0 {
            return None;
        }
        let hits = cells.count(c, c);
        let recall = hits as f64 / rows as f64;
        let precision = divide_or_zero(hits as f64, cells.predicted_count(c) as f64);
        // G-mean over the segment's true classes, in the order of their values.
        let mut truths: Vec<u32> = (0..self.classes.len() as u32)
            .filter(|t| cells.true_count(*t) > 0)
            .collect();
        self.classes.sort(&mut truths);
        let recalls: Vec<f64> = truths
            .iter()
            .map(|t| cells.count(*t, *t) as f64 / cells.true_count(*t) as f64)
            .collect();
        Some(ClassQuality {
            rows,
            recall,
            precision,
            f1: scores::f1(precision, recall),
            gmean: scores::gmean(&recalls)?,
        })
    }

    /// One summary line per segment for `class`.
    fn lines(&self, class: &ClassValue) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..self.segments.len() {
            let Some(q) = self.of(i, class) else {
                continue;
            };
            let from = if i == 0 { 0 } else { self.bounds[i - 1] };
            let span = match self.bounds.get(i) {
                Some(to) => format!("rows {from}-{to}"),
                None => format!("rows {from}-"),
            };
            out.push(format!(
                "detector, {span}: class {class} recall {:.3}, precision {:.3}, F1 {:.3}; \
                 G-mean {:.3} ({} rows of the class)",
                q.recall, q.precision, q.f1, q.gmean, q.rows
            ));
        }
        out
    }
}
