//! The `drift_monitor` operator: what it watches and how it decides,
//! independent of Arrow (the execution node is in [`super::exec`]).
//!
//! Every row passes through; the monitor adds `drift_state` (`none`,
//! `warning`, `drift`: the most severe state of the detectors the row
//! updated) and `drift_signal` (which of them were in warning or drift,
//! comma-separated, NULL when none):
//!
//! - `class_prior:<class>`: ADWIN (River's defaults) over the indicator of
//!   each class ([`super::ClassPrior`]): the class mix moved;
//! - `recall:<class>`: the DDM-OCI recall monitor of the row's class
//!   ([`super::RecallMonitor`]; one per class, so the minority's recall is
//!   watched whichever class it is);
//! - `error`: HDDM_A (River's rule and defaults, increases only) over the
//!   overall error 1[prediction ≠ label]. Not DDM: its s = sqrt(p(1-p)/n)
//!   is 0 after an error-free start, so the first error of an accurate
//!   model is a "drift" (measured: 196 drifts in 20,000 rows of a stable
//!   1% error stream, tests/slt/drift_monitor.slt); HDDM_A's Hoeffding
//!   bound does not depend on the observed variance;
//! - `perfsim`: PerfSim over consecutive class-complete chunks.
//!
//! Order matters: detectors see rows in the order they arrive, or sorted by
//! `order_by` when it is given (then the plan keeps or establishes that
//! order; an unbounded input not ordered by it is a plan error).
//!
//! Without a prediction column only the class mix is watched. Rows with a
//! NULL label, and rows with a NULL prediction when predictions are
//! watched, pass through with state `none`, update no detector and count as
//! bad records (`null_label`, `null_prediction`). Synthetic rows (an
//! upstream oversampler's `is_synthetic`) pass through unwatched: the
//! monitor watches the stream as it arrived, not as it was balanced.
//!
//! Each warning (when a detector enters its warning zone) and each drift is
//! published on the job's control bus as a
//! [`crate::runtime::ControlSignal::Drift`] event, counted in
//! `equipoise_drift_events_total`, and each detector's state after the batch
//! is in `equipoise_drift_detector_state`. With a prediction column the
//! monitor also keeps prequential per-class recall, precision and F1,
//! G-mean and balanced accuracy over the last `window` rows and in total.

use datafusion::common::{Result, plan_err};

use super::{ClassPrior, DriftDetector, DriftState, HddmA, PerfSim, RecallMonitor};
use crate::options::from_option_string;
use crate::prequential::Prequential;

/// Options of `drift_monitor`.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftMonitorOptions {
    pub label_column: String,
    pub prediction_column: Option<String>,
    /// The column that orders the stream (`order_by=t`): the monitor then
    /// requires its input sorted by it (ascending), so a plan that merges
    /// partitions keeps the order. Without it, rows are watched in the
    /// order they arrive.
    pub order_by: Option<String>,
    /// Rows of the sliding prequential window.
    pub window: usize,
    /// Per-row decay of the recall monitors' decayed recall.
    pub recall_decay: f64,
    /// PerfSim's dissimilarity threshold and rows per class per chunk.
    pub perfsim_threshold: f64,
    pub perfsim_class_rows: u64,
}

/// The keys of `drift_monitor`'s options, typed once.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftMonitorKeys {
    pub order_by: Option<String>,
    pub window: Option<usize>,
    pub recall_decay: Option<f64>,
    pub perfsim_threshold: Option<f64>,
    pub perfsim_class_rows: Option<u64>,
}

impl DriftMonitorOptions {
    pub const DEFAULT_WINDOW: usize = 1_000;

    pub fn new(label_column: impl Into<String>) -> Self {
        let recall = RecallMonitor::default();
        let perfsim = PerfSim::default();
        Self {
            label_column: label_column.into(),
            prediction_column: None,
            order_by: None,
            window: Self::DEFAULT_WINDOW,
            recall_decay: recall.eta,
            perfsim_threshold: perfsim.threshold,
            perfsim_class_rows: perfsim.min_class_rows,
        }
    }

    pub fn with_prediction(mut self, column: impl Into<String>) -> Self {
        self.prediction_column = Some(column.into());
        self
    }

    /// Parse `'window=500, recall_decay=0.995'`.
    pub fn parse(label_column: &str, prediction: Option<&str>, text: &str) -> Result<Self> {
        Self::from_keys(
            label_column,
            prediction,
            from_option_string("drift_monitor", text)?,
        )
    }

    /// The options `keys` set over the defaults, validated.
    pub fn from_keys(
        label_column: &str,
        prediction: Option<&str>,
        keys: DriftMonitorKeys,
    ) -> Result<Self> {
        let defaults = Self::new(label_column);
        let parsed = Self {
            prediction_column: prediction.map(str::to_string),
            order_by: keys.order_by,
            window: keys.window.unwrap_or(defaults.window),
            recall_decay: keys.recall_decay.unwrap_or(defaults.recall_decay),
            perfsim_threshold: keys.perfsim_threshold.unwrap_or(defaults.perfsim_threshold),
            perfsim_class_rows: keys
                .perfsim_class_rows
                .unwrap_or(defaults.perfsim_class_rows),
            ..defaults
        };
        parsed.validate()?;
        Ok(parsed)
    }

    pub fn validate(&self) -> Result<()> {
        if self.window == 0 {
            return plan_err!("drift_monitor: window must be at least 1 row");
        }
        if !(self.recall_decay > 0.0 && self.recall_decay < 1.0) {
            return plan_err!(
                "drift_monitor: recall_decay must lie in (0, 1), got {}",
                self.recall_decay
            );
        }
        if !(self.perfsim_threshold > 0.0 && self.perfsim_threshold < 1.0) {
            return plan_err!(
                "drift_monitor: perfsim_threshold must lie in (0, 1), got {}",
                self.perfsim_threshold
            );
        }
        if self.perfsim_class_rows == 0 {
            return plan_err!("drift_monitor: perfsim_class_rows must be at least 1");
        }
        if self.prediction_column.as_deref() == Some(self.label_column.as_str()) {
            return plan_err!("drift_monitor: the prediction column cannot be the label column");
        }
        Ok(())
    }
}

/// One watched signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Signal {
    ClassPrior(usize),
    Recall(usize),
    Error,
    PerfSim,
}

impl Signal {
    /// The detector behind the signal.
    pub fn detector(self) -> &'static str {
        match self {
            Self::ClassPrior(_) => "adwin",
            Self::Recall(_) => "ddm_oci",
            Self::Error => "hddm_a",
            Self::PerfSim => "perfsim",
        }
    }

    /// The signal's name without its class.
    pub fn name(self) -> &'static str {
        match self {
            Self::ClassPrior(_) => "class_prior",
            Self::Recall(_) => "recall",
            Self::Error => "error",
            Self::PerfSim => "perfsim",
        }
    }

    pub fn class(self) -> Option<usize> {
        match self {
            Self::ClassPrior(c) | Self::Recall(c) => Some(c),
            Self::Error | Self::PerfSim => None,
        }
    }
}

/// A warning entered or a drift signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub signal: Signal,
    pub state: DriftState,
    /// Position among the rows the monitor watched.
    pub row: u64,
}

/// What one row did to the detectors.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RowOutcome {
    pub state: DriftState,
    /// Signals in warning or drift after the row, in [`Signal`] order.
    pub signals: Vec<Signal>,
}

/// What a monitor's detectors have learned, for checkpoints (the sliding
/// prequential figures start over after a restore).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MonitorState {
    class_prior: ClassPrior,
    recall: Vec<RecallMonitor>,
    error: HddmA,
    error_state: DriftState,
    perfsim: PerfSim,
    rows: u64,
}

/// Every detector of one monitor, fed row by row.
#[derive(Debug)]
pub struct Monitors {
    options: DriftMonitorOptions,
    class_prior: ClassPrior,
    recall: Vec<RecallMonitor>,
    error: HddmA,
    error_state: DriftState,
    perfsim: PerfSim,
    pub prequential: Prequential,
    /// Rows watched so far.
    rows: u64,
    events: Vec<Event>,
    /// Drift in the current batch, per class (prior) and for PerfSim, for
    /// the state gauges of detectors without a lasting zone.
    prior_drift_in_batch: Vec<bool>,
    perfsim_drift_in_batch: bool,
}

impl Monitors {
    pub fn new(options: DriftMonitorOptions) -> Self {
        Self {
            class_prior: ClassPrior::default(),
            recall: Vec::new(),
            error: HddmA::default(),
            error_state: DriftState::None,
            perfsim: PerfSim::new(
                options.perfsim_threshold,
                options.perfsim_class_rows,
                PerfSim::default().max_chunk_rows,
            ),
            prequential: Prequential::new(options.window),
            rows: 0,
            events: Vec::new(),
            prior_drift_in_batch: Vec::new(),
            perfsim_drift_in_batch: false,
            options,
        }
    }

    /// The detectors' state.
    pub fn state(&self) -> MonitorState {
        MonitorState {
            class_prior: self.class_prior.clone(),
            recall: self.recall.clone(),
            error: self.error.clone(),
            error_state: self.error_state,
            perfsim: self.perfsim.clone(),
            rows: self.rows,
        }
    }

    /// Continue from `state`.
    pub fn restore(&mut self, state: MonitorState) {
        self.class_prior = state.class_prior;
        self.recall = state.recall;
        self.error = state.error;
        self.error_state = state.error_state;
        self.perfsim = state.perfsim;
        self.rows = state.rows;
    }

    pub fn watches_predictions(&self) -> bool {
        self.options.prediction_column.is_some()
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Start of a batch: forget the per-batch drift marks.
    pub fn begin_batch(&mut self) {
        self.prior_drift_in_batch
            .iter_mut()
            .for_each(|d| *d = false);
        self.perfsim_drift_in_batch = false;
    }

    /// State of every detector after the batch, for the gauges.
    pub fn detector_states(&self, classes: usize) -> Vec<(Signal, DriftState)> {
        let mut states = Vec::new();
        for c in 0..classes {
            let drifted = self.prior_drift_in_batch.get(c).copied().unwrap_or(false);
            states.push((
                Signal::ClassPrior(c),
                if drifted {
                    DriftState::Drift
                } else {
                    DriftState::None
                },
            ));
        }
        if self.watches_predictions() {
            for c in 0..classes {
                let state = self.recall.get(c).map_or(DriftState::None, |m| m.state());
                states.push((Signal::Recall(c), state));
            }
            states.push((Signal::Error, self.error_state));
            states.push((
                Signal::PerfSim,
                if self.perfsim_drift_in_batch {
                    DriftState::Drift
                } else {
                    DriftState::None
                },
            ));
        }
        states
    }

    fn record(
        &mut self,
        outcome: &mut RowOutcome,
        signal: Signal,
        state: DriftState,
        before: DriftState,
    ) {
        if state == DriftState::None {
            return;
        }
        outcome.state = outcome.state.max(state);
        outcome.signals.push(signal);
        let entered_warning = state == DriftState::Warning && before != DriftState::Warning;
        if state == DriftState::Drift || entered_warning {
            self.events.push(Event {
                signal,
                state,
                row: self.rows,
            });
        }
    }

    /// Watch a labelled row of class slot `truth`, predicted as
    /// `prediction` when predictions are watched.
    pub fn observe(&mut self, truth: usize, prediction: Option<usize>) -> RowOutcome {
        let mut outcome = RowOutcome::default();
        let (prior_state, changed) = self.class_prior.update(truth);
        if self.prior_drift_in_batch.len() <= truth {
            self.prior_drift_in_batch.resize(truth + 1, false);
        }
        if prior_state == DriftState::Drift {
            for class in changed {
                if self.prior_drift_in_batch.len() <= class {
                    self.prior_drift_in_batch.resize(class + 1, false);
                }
                self.prior_drift_in_batch[class] = true;
                self.record(
                    &mut outcome,
                    Signal::ClassPrior(class),
                    DriftState::Drift,
                    DriftState::None,
                );
            }
        }
        if let Some(predicted) = prediction {
            let hit = predicted == truth;
            if self.recall.len() <= truth {
                let eta = self.options.recall_decay;
                self.recall.resize_with(truth + 1, || {
                    let defaults = RecallMonitor::default();
                    RecallMonitor::new(
                        eta,
                        defaults.warm_start,
                        defaults.warning_threshold,
                        defaults.drift_threshold,
                    )
                });
            }
            let before = self.recall[truth].state();
            let state = self.recall[truth].update(hit);
            self.record(&mut outcome, Signal::Recall(truth), state, before);

            let before = self.error_state;
            self.error_state = self.error.update(if hit { 0.0 } else { 1.0 });
            self.record(&mut outcome, Signal::Error, self.error_state, before);

            if self.perfsim.update(truth, predicted) == DriftState::Drift {
                self.perfsim_drift_in_batch = true;
                self.record(
                    &mut outcome,
                    Signal::PerfSim,
                    DriftState::Drift,
                    DriftState::None,
                );
            }
            self.prequential.update(truth, predicted);
        }
        self.rows += 1;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn options_parse_and_refuse_nonsense() -> Result<()> {
        let o = DriftMonitorOptions::parse("y", Some("p"), "window=500, recall_decay=0.995")?;
        assert_eq!(o.window, 500);
        assert_eq!(o.recall_decay, 0.995);
        assert_eq!(o.prediction_column.as_deref(), Some("p"));
        for bad in [
            "window=0",
            "recall_decay=1",
            "perfsim_threshold=0",
            "nope=1",
        ] {
            assert!(DriftMonitorOptions::parse("y", None, bad).is_err(), "{bad}");
        }
        assert!(DriftMonitorOptions::parse("y", Some("y"), "").is_err());
        Ok(())
    }

    #[test]
    fn a_minority_recall_collapse_is_an_event_of_its_class_and_a_warning_is_one_event() {
        let options = DriftMonitorOptions::new("y").with_prediction("p");
        let mut monitors = Monitors::new(options);
        let mut rng = Rng::new(8);
        let mut recall_drifts = Vec::new();
        let mut warnings_entered = 0;
        let mut warning_rows = 0;
        for t in 0..60_000u64 {
            let truth = usize::from(rng.uniform() < 0.05);
            let recall = match truth {
                1 if t >= 40_000 => 0.3,
                1 => 0.9,
                _ => 0.97,
            };
            let predicted = if rng.uniform() < recall {
                truth
            } else {
                1 - truth
            };
            let outcome = monitors.observe(truth, Some(predicted));
            warning_rows += usize::from(outcome.signals.contains(&Signal::Recall(1)));
            for event in monitors.take_events() {
                match (event.signal, event.state) {
                    (Signal::Recall(1), DriftState::Drift) => recall_drifts.push(event.row),
                    (Signal::Recall(_), DriftState::Warning) => warnings_entered += 1,
                    _ => {}
                }
            }
        }
        assert!(
            recall_drifts
                .first()
                .is_some_and(|&t| (40_000..41_500).contains(&t)),
            "{recall_drifts:?}"
        );
        assert!(
            warnings_entered <= warning_rows,
            "a warning zone counts once"
        );
        assert_eq!(monitors.rows(), 60_000);
    }
}
