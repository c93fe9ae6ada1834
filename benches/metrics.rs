//! Imbalance metrics over 10 million in-memory rows, against the cost of the
//! same query shape with `sum` (what the machine needs just to read the two
//! columns through DataFusion).
//!
//! `cargo bench --bench metrics` prints one line per query (median of
//! several runs) and writes the data to `target/bench-metrics/` so that
//! `scripts/bench-metrics` can time scikit-learn and imbalanced-learn on the
//! very same rows in the same run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::Result;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

const ROWS: usize = 10_000_000;
const BATCH: usize = 8192;
const RUNS: usize = 7;

/// SplitMix64: the data are the same on every machine and in every run.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn uniform(state: &mut u64) -> f64 {
    (next(state) >> 11) as f64 / (1u64 << 53) as f64
}

/// 5% positives; a detector that catches 70% of them with 3% false alarms;
/// a score with 3 decimals (so many ties, few distinct values) and the same
/// score unrounded (every value distinct).
fn columns() -> (Vec<i64>, Vec<i64>, Vec<f64>, Vec<f64>) {
    let mut state = 20_261_126u64;
    let mut label = Vec::with_capacity(ROWS);
    let mut prediction = Vec::with_capacity(ROWS);
    let mut score = Vec::with_capacity(ROWS);
    let mut fine = Vec::with_capacity(ROWS);
    for _ in 0..ROWS {
        let positive = uniform(&mut state) < 0.05;
        let alarm = uniform(&mut state) < if positive { 0.7 } else { 0.03 };
        let s = uniform(&mut state) * 0.6 + if positive { 0.3 } else { 0.0 };
        label.push(i64::from(positive));
        prediction.push(i64::from(alarm));
        score.push((s * 1000.0).round() / 1000.0);
        fine.push(s);
    }
    (label, prediction, score, fine)
}

fn write_raw(dir: &Path, name: &str, bytes: impl Iterator<Item = [u8; 8]>) -> std::io::Result<()> {
    let data: Vec<u8> = bytes.flatten().collect();
    std::fs::write(dir.join(name), data)
}

async fn median_time(ctx: &SessionContext, sql: &str) -> Result<(Duration, String)> {
    let mut times = Vec::with_capacity(RUNS);
    let mut value = String::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let batches = ctx.sql(sql).await?.collect().await?;
        times.push(started.elapsed());
        value = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?
            .to_string()
            .lines()
            .nth(3)
            .unwrap_or_default()
            .to_string();
    }
    times.sort();
    Ok((times[RUNS / 2], value))
}

/// The `equipoise` binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<()> {
    let (label, prediction, score, fine) = columns();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-metrics");
    std::fs::create_dir_all(&dir)?;
    write_raw(&dir, "label.i64", label.iter().map(|v| v.to_le_bytes()))?;
    write_raw(
        &dir,
        "prediction.i64",
        prediction.iter().map(|v| v.to_le_bytes()),
    )?;
    write_raw(&dir, "score.f64", score.iter().map(|v| v.to_le_bytes()))?;
    write_raw(&dir, "score_fine.f64", fine.iter().map(|v| v.to_le_bytes()))?;

    let schema = Arc::new(Schema::new(vec![
        Field::new("label", DataType::Int64, false),
        Field::new("prediction", DataType::Int64, false),
        Field::new("score", DataType::Float64, false),
        Field::new("score_fine", DataType::Float64, false),
    ]));
    let batches: Vec<RecordBatch> = (0..ROWS)
        .step_by(BATCH)
        .map(|start| {
            let end = (start + BATCH).min(ROWS);
            let columns: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(label[start..end].to_vec())),
                Arc::new(Int64Array::from(prediction[start..end].to_vec())),
                Arc::new(Float64Array::from(score[start..end].to_vec())),
                Arc::new(Float64Array::from(fine[start..end].to_vec())),
            ];
            RecordBatch::try_new(Arc::clone(&schema), columns)
        })
        .collect::<std::result::Result<_, _>>()?;
    // One partition per core, as a file scan would give.
    let partitions = std::thread::available_parallelism().map_or(1, usize::from);
    let per_partition = batches.len().div_ceil(partitions);
    let partitioned: Vec<Vec<RecordBatch>> = batches
        .chunks(per_partition)
        .map(<[RecordBatch]>::to_vec)
        .collect();
    let ctx = SessionContext::new();
    equipoise::register_all(&ctx)?;
    ctx.register_table("t", Arc::new(MemTable::try_new(schema, partitioned)?))?;

    println!("rows {ROWS}, partitions {partitions}, median of {RUNS} runs");
    // `BENCH_FILTER=roc` runs only the queries whose name contains it.
    let filter = std::env::var("BENCH_FILTER").unwrap_or_default();
    for (name, sql) in [
        (
            "sum(label), sum(prediction)",
            "SELECT sum(label), sum(prediction) FROM t",
        ),
        ("macro_f1", "SELECT macro_f1(label, prediction) FROM t"),
        ("gmean", "SELECT gmean(label, prediction) FROM t"),
        (
            "sum(label), sum(score)",
            "SELECT sum(label), sum(score) FROM t",
        ),
        ("roc_auc", "SELECT roc_auc(label, score) FROM t"),
        ("pr_auc", "SELECT pr_auc(label, score) FROM t"),
        (
            "roc_auc distinct",
            "SELECT roc_auc(label, score_fine) FROM t",
        ),
        ("pr_auc distinct", "SELECT pr_auc(label, score_fine) FROM t"),
    ] {
        if !name.contains(filter.as_str()) {
            continue;
        }
        let (time, value) = median_time(&ctx, sql).await?;
        println!(
            "equipoise\t{name}\t{:.6}\t{}",
            time.as_secs_f64(),
            value.trim()
        );
    }
    Ok(())
}
