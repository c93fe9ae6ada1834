//! The exact kNN engine on the oversampling bench's rows (200,000 x 20,
//! 2% minority, written by `scripts/bench-oversampling` to
//! `target/bench-oversampling/`): the searches the oversamplers make.
//! Prints one line per search: median seconds of 5 runs
//! (`scripts/bench-oversampling` sets them beside scikit-learn's
//! `NearestNeighbors` on the same rows).
//!
//! - `knn_minority_vs_all`: every minority row's 10 nearest among all rows
//!   (Borderline-SMOTE's danger test, ADASYN's and QC-SMOTE's neighbourhoods);
//! - `knn_minority_vs_minority`: every minority row's 5 nearest same-class rows
//!   (SMOTE's neighbours).
//!
//! `BENCH_FILTER=<search>` runs one of them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use equipoise_operators::knn::{Exclude, PointSet, search};

const FEATURES: usize = 20;
const RUNS: usize = 5;

fn read(name: &str) -> Result<Vec<u8>, String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-oversampling")
        .join(name);
    std::fs::read(&path).map_err(|e| {
        format!(
            "{}: {e}; run scripts/bench-oversampling, which writes it",
            path.display()
        )
    })
}

fn median(mut f: impl FnMut()) -> f64 {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    times.sort();
    times[RUNS / 2].as_secs_f64()
}

/// The `equipoise` binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), String> {
    let x: Vec<f64> = read("x.f64")?
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    let y: Vec<i64> = read("y.i64")?
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    let minority: Vec<usize> = (0..y.len()).filter(|&i| y[i] == 1).collect();
    let queries: Vec<f64> = minority
        .iter()
        .flat_map(|&i| x[i * FEATURES..(i + 1) * FEATURES].iter().copied())
        .collect();
    let own_in_all: Vec<u32> = minority.iter().map(|&i| i as u32).collect();
    let own_in_minority: Vec<u32> = (0..minority.len() as u32).collect();

    let filter = std::env::var("BENCH_FILTER").unwrap_or_default();
    let timed = |name: &str, set: &[f64], k: usize, own: &[u32]| {
        if !filter.is_empty() && filter != name {
            return;
        }
        let set = PointSet::from_rows(set, FEATURES);
        let seconds = median(|| {
            let found = search(&set, &queries, k, Exclude::SelfIndex(own));
            std::hint::black_box(found);
        });
        println!("equipoise\t{name}\t{seconds:.6}\t{}", minority.len());
    };
    timed("knn_minority_vs_all", &x, 10, &own_in_all);
    timed("knn_minority_vs_minority", &queries, 5, &own_in_minority);
    Ok(())
}
