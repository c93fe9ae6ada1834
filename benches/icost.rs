//! iCost benchmarks.
//!
//! Tables: `SELECT sum(sample_weight) FROM icost('t', 'label')` over the
//! 100,000-row tables `scripts/bench_icost.py` wrote to
//! `target/bench-icost/` (20 and 6 features, 5% minority; run through
//! `scripts/bench-icost`, which times the `icost` package on the same rows in
//! the same run). Prints `equipoise<TAB>d20<TAB>seconds<TAB>sum of weights`.
//!
//! Streams: rows per second of `icost(..., 'mode=stream, window=W')`
//! over 200,000 generated rows (5% minority, Gaussian, D features) for a
//! grid of W and D. Prints `stream<TAB>W<TAB>D<TAB>rows per second`.
//! `BENCH_FILTER=table` or `stream` runs one part.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Float64Type;
use datafusion::common::Result;
use datafusion::prelude::{SessionConfig, SessionContext};
use equipoise::operators::rng::Rng;

#[path = "support.rs"]
mod support;

const WRITER: &str = "scripts/bench-icost";
const RUNS: usize = 3;

async fn time_query(ctx: &SessionContext, sql: &str) -> Result<(f64, f64)> {
    let mut times = Vec::new();
    let mut value = 0.0;
    for _ in 0..RUNS {
        let started = Instant::now();
        let batches = ctx.sql(sql).await?.collect().await?;
        times.push(started.elapsed().as_secs_f64());
        value = batches
            .first()
            .map(|b| b.column(0).as_primitive::<Float64Type>().value(0))
            .unwrap_or(f64::NAN);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[RUNS / 2], value))
}

/// Gaussian rows, `minority_share` of them of class 1 shifted by one
/// standard deviation in every feature.
fn generated(rows: usize, features: usize, seed: u64) -> (Vec<f64>, Vec<i64>) {
    let mut rng = Rng::new(seed);
    let mut normal = move || {
        // Box-Muller.
        let (u, v) = (rng.uniform().max(f64::MIN_POSITIVE), rng.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let mut x = Vec::with_capacity(rows * features);
    let mut y = Vec::with_capacity(rows);
    for r in 0..rows {
        let label = i64::from(r % 20 == 7);
        for _ in 0..features {
            x.push(normal() + label as f64);
        }
        y.push(label);
    }
    (x, y)
}

/// The `equipoise` binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<()> {
    let filter = std::env::var("BENCH_FILTER").unwrap_or_default();
    if filter.is_empty() || filter == "table" {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-icost");
        for (name, features) in [("d20", 20), ("d6", 6)] {
            let x = support::read_le(
                &root.join(format!("{name}.x.f64")),
                WRITER,
                f64::from_le_bytes,
            )?;
            let y = support::read_le(
                &root.join(format!("{name}.y.i64")),
                WRITER,
                i64::from_le_bytes,
            )?;
            let ctx =
                SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
            equipoise::register_all(&ctx)?;
            ctx.register_table("t", Arc::new(support::table_of(&x, &y, features)?))?;
            let (seconds, sum) =
                time_query(&ctx, "SELECT sum(sample_weight) FROM icost('t', 'label')").await?;
            println!("equipoise\t{name}\t{seconds:.6}\t{sum:.6}");
        }
    }
    if filter.is_empty() || filter == "stream" {
        let rows = 200_000;
        for (window, features) in [
            (10_000, 20),
            (2_000, 20),
            (50_000, 20),
            (10_000, 5),
            (10_000, 10),
            (10_000, 40),
        ] {
            let (x, y) = generated(rows, features, 11);
            let ctx =
                SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
            equipoise::register_all(&ctx)?;
            ctx.register_table("t", Arc::new(support::table_of(&x, &y, features)?))?;
            let sql = format!(
                "SELECT sum(sample_weight) FROM icost('t', 'label', 'mode=stream, window={window}')"
            );
            let (seconds, _) = time_query(&ctx, &sql).await?;
            println!("stream\t{window}\t{features}\t{:.0}", rows as f64 / seconds);
        }
    }
    Ok(())
}
