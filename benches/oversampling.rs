//! Oversampling 200,000 in-memory rows x 20 features (2% minority), the
//! data `scripts/bench_oversampling.py` wrote to `target/bench-oversampling/`
//! (run through `scripts/bench-oversampling`, which times imbalanced-learn on
//! the same rows in the same run). Prints one line per operator: median
//! seconds of `SELECT count(*) FROM <operator>('t', 'label',
//! 'window=200000')`, which makes every synthetic row with every input row
//! as a neighbour candidate. `BENCH_FILTER=<operator>` runs one operator,
//! `BENCH_PARTITIONS=n` sets the session's target partitions (default 2).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::common::Result;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

const FEATURES: usize = 20;
#[path = "support.rs"]
mod support;

const WRITER: &str = "scripts/bench-oversampling";
const RUNS: usize = 3;

fn table() -> Result<MemTable> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-oversampling");
    let x = support::read_le(&root.join("x.f64"), WRITER, f64::from_le_bytes)?;
    let y = support::read_le(&root.join("y.i64"), WRITER, i64::from_le_bytes)?;
    support::table_of(&x, &y, FEATURES)
}

/// The `equipoise` binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<()> {
    let partitions = std::env::var("BENCH_PARTITIONS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(2);
    let ctx = SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new().with_target_partitions(partitions),
    );
    equipoise::register_all(&ctx)?;
    ctx.register_table("t", Arc::new(table()?))?;
    let filter = std::env::var("BENCH_FILTER").unwrap_or_default();
    for operator in [
        "random_oversample",
        "smote",
        "borderline_smote",
        "adasyn",
        "qc_smote",
    ] {
        if !filter.is_empty() && operator != filter {
            continue;
        }
        // The majority class (195k rows) exceeds the default bounded window
        // of 100,000 rows per class: widen it so every row is a neighbour
        // candidate, as in imbalanced-learn.
        let sql = format!("SELECT count(*) FROM {operator}('t', 'label', 'window=200000')");
        let mut times: Vec<Duration> = Vec::new();
        let mut rows = String::new();
        for _ in 0..RUNS {
            let started = Instant::now();
            let batches = ctx.sql(&sql).await?.collect().await?;
            times.push(started.elapsed());
            rows = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?
                .to_string()
                .lines()
                .nth(3)
                .unwrap_or_default()
                .trim_matches(|c: char| c == '|' || c.is_whitespace())
                .to_string();
        }
        times.sort();
        println!(
            "equipoise\t{operator}\t{:.6}\t{rows}",
            times[RUNS / 2].as_secs_f64()
        );
    }
    Ok(())
}
