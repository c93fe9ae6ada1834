//! Drift detector throughput: updates per second of each detector over the
//! streams `scripts/bench_drift.py` writes to `target/bench-drift/` (run
//! through `scripts/bench-drift`, which times River 0.26.1 on the same
//! values in the same run). Prints
//! `equipoise<TAB>detector<TAB>stream<TAB>updates per second<TAB>rows flagged`
//! (median of 5 runs). Flagged counts equal River's for the six detectors
//! that match it row for row.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use datafusion::common::Result;
use equipoise::operators::drift::{
    Adwin, Ddm, DriftDetector, DriftState, Eddm, HddmA, HddmW, Kswin, PageHinkley, RecallMonitor,
};

#[path = "support.rs"]
#[expect(
    dead_code,
    reason = "shared with the other benches; only read_le is used here"
)]
mod support;

const WRITER: &str = "scripts/bench-drift";
const RUNS: usize = 5;
const KSWIN_ROWS: usize = 100_000;

fn time(xs: &[f64], make: &dyn Fn() -> Box<dyn DriftDetector>) -> (f64, usize) {
    let mut times = Vec::new();
    let mut flagged = 0;
    for _ in 0..RUNS {
        let mut detector = make();
        let started = Instant::now();
        let mut count = 0;
        for &x in xs {
            count += usize::from(detector.update(black_box(x)) == DriftState::Drift);
        }
        times.push(started.elapsed().as_secs_f64());
        flagged = count;
    }
    times.sort_by(f64::total_cmp);
    (xs.len() as f64 / times[RUNS / 2], flagged)
}

/// DDM-OCI's per-class recall monitor, fed the hits of one class.
struct Recall(RecallMonitor);
impl DriftDetector for Recall {
    fn update(&mut self, x: f64) -> DriftState {
        self.0.update(x == 0.0)
    }
}

/// The `equipoise` binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-drift");
    let binary = support::read_le(&root.join("binary.f64"), WRITER, f64::from_le_bytes)?;
    let values = support::read_le(&root.join("values.f64"), WRITER, f64::from_le_bytes)?;
    type Make = Box<dyn Fn() -> Box<dyn DriftDetector>>;
    let detectors: Vec<(&str, &str, Make)> = vec![
        ("adwin", "binary", Box::new(|| Box::new(Adwin::default()))),
        ("ddm", "binary", Box::new(|| Box::new(Ddm::default()))),
        ("eddm", "binary", Box::new(|| Box::new(Eddm::default()))),
        ("hddm_a", "binary", Box::new(|| Box::new(HddmA::default()))),
        ("hddm_w", "binary", Box::new(|| Box::new(HddmW::default()))),
        ("kswin", "binary", Box::new(|| Box::new(Kswin::default()))),
        (
            "ddm_oci",
            "binary",
            Box::new(|| Box::new(Recall(RecallMonitor::default()))),
        ),
        (
            "page_hinkley",
            "values",
            Box::new(|| Box::new(PageHinkley::default())),
        ),
        ("adwin", "values", Box::new(|| Box::new(Adwin::default()))),
    ];
    for (name, stream, make) in &detectors {
        let xs = if *stream == "binary" {
            &binary
        } else {
            &values
        };
        // River's KSWIN is timed on the first 100,000 rows (a SciPy test per
        // update); so is ours, so the flagged counts cover the same rows.
        let xs = if *name == "kswin" {
            &xs[..KSWIN_ROWS.min(xs.len())]
        } else {
            &xs[..]
        };
        let (rate, flagged) = time(xs, make.as_ref());
        println!("equipoise\t{name}\t{stream}\t{rate:.0}\t{flagged}");
    }
    Ok(())
}
