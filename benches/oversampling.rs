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

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

const FEATURES: usize = 20;
const BATCH: usize = 8192;
const RUNS: usize = 3;

fn read_le<T, const N: usize>(path: &PathBuf, decode: fn([u8; N]) -> T) -> Result<Vec<T>> {
    let bytes = std::fs::read(path).map_err(|e| {
        DataFusionError::Execution(format!(
            "{}: {e}; run scripts/bench-oversampling, which writes it",
            path.display()
        ))
    })?;
    Ok(bytes
        .chunks_exact(N)
        .map(|c| decode(c.try_into().unwrap_or([0; N])))
        .collect())
}

fn table() -> Result<MemTable> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-oversampling");
    let x = read_le(&root.join("x.f64"), f64::from_le_bytes)?;
    let y = read_le(&root.join("y.i64"), i64::from_le_bytes)?;
    let mut fields: Vec<Field> = (0..FEATURES)
        .map(|i| Field::new(format!("f{i}"), DataType::Float64, false))
        .collect();
    fields.push(Field::new("label", DataType::Int64, false));
    let schema = Arc::new(Schema::new(fields));
    let mut batches = Vec::new();
    for start in (0..y.len()).step_by(BATCH) {
        let end = (start + BATCH).min(y.len());
        let mut columns: Vec<ArrayRef> = (0..FEATURES)
            .map(|f| {
                Arc::new(Float64Array::from_iter_values(
                    (start..end).map(|r| x[r * FEATURES + f]),
                )) as ArrayRef
            })
            .collect();
        columns.push(Arc::new(Int64Array::from(y[start..end].to_vec())));
        batches.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
    }
    MemTable::try_new(schema, vec![batches])
}

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
