//! Control signals between operators, and from the job to its operators:
//! one broadcast bus ([`ControlBus`]), drained between batches, so a signal
//! takes effect at a batch boundary, never inside one.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// How many control signals a slow subscriber may fall behind before it
/// misses some. Signals are rare (drift, stop), so this is generous.
const CONTROL_CHANNEL_CAPACITY: usize = 256;

/// Which operators a control signal addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignalTarget {
    All,
    /// Every operator of a kind, e.g. `class_monitor`.
    Kind(String),
    /// One operator, by the id it got from [`JobRuntime::next_operator_id`].
    Operator(String),
}

impl SignalTarget {
    pub fn matches(&self, kind: &str, operator_id: &str) -> bool {
        match self {
            Self::All => true,
            Self::Kind(k) => k == kind,
            Self::Operator(id) => id == operator_id,
        }
    }
}

/// A message between operators, or from the job to its operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlSignal {
    /// Sources end their streams after the batch in flight; everything
    /// downstream then drains and the job ends cleanly.
    Stop,
    /// Forget adaptive state (decayed frequencies, reservoirs, models) because
    /// the data no longer looks like what built it. Totals are kept.
    Reset {
        target: SignalTarget,
        reason: String,
    },
    /// A drift monitor's detector entered its warning zone or signalled
    /// drift. Subscribers decide what it means to them: the oversamplers and
    /// iCost shrink their windows on `Drift` (as on a `Reset`), a trainer
    /// starts a background model on `Warning` and promotes it on `Drift`.
    Drift(DriftEvent),
}

impl ControlSignal {
    /// Whether this signal tells the operator `kind`/`operator_id` to forget
    /// adaptive state: a `Reset` addressed to it, or any drift (not a
    /// warning) from a monitor.
    pub fn resets(&self, kind: &str, operator_id: &str) -> bool {
        match self {
            Self::Reset { target, .. } => target.matches(kind, operator_id),
            Self::Drift(event) => event.state == DriftState::Drift,
            Self::Stop => false,
        }
    }

    /// Why, for logs.
    pub fn reason(&self) -> String {
        match self {
            Self::Stop => "stop".to_string(),
            Self::Reset { reason, .. } => reason.clone(),
            Self::Drift(event) => event.to_string(),
        }
    }
}

/// One warning or drift of one detector of a drift monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftEvent {
    /// Id of the monitor operator that published it.
    pub monitor: String,
    /// `adwin`, `ddm_oci`, `hddm_a` or `perfsim`.
    pub detector: String,
    /// What was watched: `class_prior`, `recall`, `error` or `confusion`.
    pub signal: String,
    /// The class the signal is about (its metric label), if any.
    pub class: Option<String>,
    /// `Warning` or `Drift`.
    pub state: DriftState,
    /// Position of the row that raised it among the original (not
    /// synthetic) rows the monitor has seen, from 0.
    pub row: u64,
}

impl std::fmt::Display for DriftEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.signal, self.state.name())?;
        if let Some(class) = &self.class {
            write!(f, " (class {class})")?;
        }
        write!(f, " at row {} [{}]", self.row, self.detector)
    }
}

/// Publish/subscribe channel for [`ControlSignal`]s.
#[derive(Debug)]
pub struct ControlBus {
    sender: broadcast::Sender<ControlSignal>,
    // Stop is also latched here so that a source that subscribes late, or a
    // subscriber that lagged, can never miss it.
    stop_requested: AtomicBool,
}

impl ControlBus {
    pub(super) fn new() -> Self {
        let (sender, _) = broadcast::channel(CONTROL_CHANNEL_CAPACITY);
        Self {
            sender,
            stop_requested: AtomicBool::new(false),
        }
    }

    /// Send a signal to every current subscriber.
    pub fn publish(&self, signal: ControlSignal) {
        if signal == ControlSignal::Stop {
            self.stop_requested.store(true, Ordering::SeqCst);
        }
        // No subscriber is not an error: nothing listens for that signal yet.
        let _ = self.sender.send(signal);
    }

    pub fn subscribe(&self) -> ControlReceiver {
        ControlReceiver {
            receiver: self.sender.subscribe(),
        }
    }

    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::SeqCst)
    }
}

/// One subscriber's end of the [`ControlBus`].
#[derive(Debug)]
pub struct ControlReceiver {
    receiver: broadcast::Receiver<ControlSignal>,
}

impl ControlReceiver {
    /// The next signal, waiting for it; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<ControlSignal> {
        loop {
            match self.receiver.recv().await {
                Ok(signal) => return Some(signal),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "control subscriber lagged; signals were missed");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Signals that arrived since the last call, without waiting. Operators
    /// call this between batches, so signals take effect at batch boundaries.
    pub fn drain(&mut self) -> Vec<ControlSignal> {
        let mut signals = Vec::new();
        loop {
            match self.receiver.try_recv() {
                Ok(signal) => signals.push(signal),
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "control subscriber lagged; signals were missed");
                }
                Err(
                    broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed,
                ) => break,
            }
        }
        signals
    }
}

/// A detector's state after a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftState {
    #[default]
    None,
    Warning,
    Drift,
}

impl DriftState {
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Warning => "warning",
            Self::Drift => "drift",
        }
    }

    pub(crate) fn of(drift: bool, warning: bool) -> Self {
        if drift {
            Self::Drift
        } else if warning {
            Self::Warning
        } else {
            Self::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_is_latched_and_broadcast() {
        let bus = ControlBus::new();
        let mut early = bus.subscribe();
        assert!(!bus.stop_requested());
        bus.publish(ControlSignal::Stop);
        assert!(bus.stop_requested());
        assert_eq!(early.drain(), vec![ControlSignal::Stop]);
        assert!(early.drain().is_empty());
    }
}
