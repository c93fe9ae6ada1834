//! Progress of a running job: a progress bar on a terminal, periodic plain
//! log lines otherwise (CI logs, `kubectl logs`).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::summary::ClassTally;

/// Seconds between two log lines when stdout is not a terminal.
const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Receives the job's running totals after every batch.
pub trait ProgressReporter: Send {
    fn update(&mut self, tally: &ClassTally, elapsed: Duration);
    fn finish(&mut self);
}

/// A bar on a terminal, log lines elsewhere.
pub fn for_stdout(total_rows: Option<u64>) -> Box<dyn ProgressReporter> {
    if std::io::stdout().is_terminal() {
        Box::new(Bar::new(total_rows))
    } else {
        Box::new(LogLines::default())
    }
}

fn minority_percent(tally: &ClassTally) -> f64 {
    tally.minority_share().unwrap_or(0.0) * 100.0
}

fn rows_per_second(tally: &ClassTally, elapsed: Duration) -> f64 {
    tally.rows() as f64 / elapsed.as_secs_f64().max(1e-9)
}

struct Bar(ProgressBar);

impl Bar {
    fn new(total_rows: Option<u64>) -> Self {
        let (bar, template) = match total_rows {
            Some(n) => (
                ProgressBar::new(n),
                "{elapsed_precise} [{bar:30}] {human_pos}/{human_len} rows, {msg}",
            ),
            None => (
                ProgressBar::new_spinner(),
                "{spinner} {elapsed_precise} {human_pos} rows, {msg}",
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Self(bar)
    }
}

impl ProgressReporter for Bar {
    fn update(&mut self, tally: &ClassTally, elapsed: Duration) {
        self.0.set_position(tally.rows());
        self.0.set_message(format!(
            "{:.0} rows/s, minority share {:.2}%",
            rows_per_second(tally, elapsed),
            minority_percent(tally)
        ));
    }

    fn finish(&mut self) {
        self.0.finish_and_clear();
    }
}

#[derive(Default)]
struct LogLines {
    last: Option<Instant>,
}

impl ProgressReporter for LogLines {
    fn update(&mut self, tally: &ClassTally, elapsed: Duration) {
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < LOG_INTERVAL) {
            return;
        }
        if self.last.is_none() {
            // The first batch arrives at once; the first line after LOG_INTERVAL.
            self.last = Some(now);
            return;
        }
        self.last = Some(now);
        tracing::info!(
            rows = tally.rows(),
            rows_per_second = format!("{:.0}", rows_per_second(tally, elapsed)),
            minority_share = format!("{:.2}%", minority_percent(tally)),
            "progress"
        );
    }

    fn finish(&mut self) {}
}
