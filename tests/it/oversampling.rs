//! The oversampling operators through the library API: the SMOTE segment
//! property, determinism, EXPLAIN ANALYZE metrics, and the streaming path
//! over the unbounded generator (no look-ahead, the output mix moving to
//! the target).

use std::time::Duration;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::{DataFusionError, Result};
use datafusion::physical_plan::ExecutionPlanProperties;
use datafusion::physical_plan::execution_plan::Boundedness;
use datafusion::prelude::{CsvReadOptions, SessionConfig, SessionContext};
use equipoise::operators::{DataFrameStageExt, OversampleOptions};
use futures::StreamExt;

use super::common::{explain_analyze, gathered};

const OVERLAP: &str = "tests/data/oversampling/binary_overlap.csv";

async fn session_with(table: &str, path: &str) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    equipoise::register_all(&ctx)?;
    ctx.register_csv(table, path, CsvReadOptions::new()).await?;
    Ok(ctx)
}

/// Rows of `batches` as (features, label, is_synthetic).
fn rows(batches: &[RecordBatch], features: usize) -> Vec<(Vec<f64>, i64, bool)> {
    let mut out = Vec::new();
    for batch in batches {
        let label_index = features;
        let synthetic = batch.column(features + 1).as_boolean();
        for r in 0..batch.num_rows() {
            let values = (0..features)
                .map(|c| batch.column(c).as_primitive::<Float64Type>().value(r))
                .collect();
            let label = batch
                .column(label_index)
                .as_primitive::<Int64Type>()
                .value(r);
            out.push((values, label, synthetic.value(r)));
        }
    }
    out
}

fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

#[tokio::test]
async fn every_smote_row_lies_on_a_segment_to_one_of_the_k_nearest_neighbours() -> Result<()> {
    let ctx = session_with("t", OVERLAP).await?;
    let batches = ctx
        .sql("SELECT * FROM smote('t', 'label', 'seed=5')")
        .await?
        .collect()
        .await?;
    let all = rows(&batches, 4);
    let minority: Vec<&Vec<f64>> = all
        .iter()
        .filter(|(_, l, s)| *l == 1 && !*s)
        .map(|(f, _, _)| f)
        .collect();
    let synthetic: Vec<&Vec<f64>> = all
        .iter()
        .filter(|(_, _, s)| *s)
        .map(|(f, _, _)| f)
        .collect();
    assert_eq!(minority.len(), 60);
    assert_eq!(synthetic.len(), 540 - 60);
    // The definition: 5 nearest same-class rows by (distance, index).
    let neighbours: Vec<Vec<usize>> = (0..minority.len())
        .map(|i| {
            let mut others: Vec<(f64, usize)> = (0..minority.len())
                .filter(|&j| j != i)
                .map(|j| (squared_distance(minority[i], minority[j]), j))
                .collect();
            others.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            others.iter().take(5).map(|&(_, j)| j).collect()
        })
        .collect();
    for s in &synthetic {
        let on_a_segment = (0..minority.len()).any(|i| {
            neighbours[i].iter().any(|&j| {
                let (a, b) = (minority[i], minority[j]);
                // One step u for every coordinate, in [0, 1).
                let d = 0;
                let u = (s[d] - a[d]) / (b[d] - a[d]);
                (0.0..1.0).contains(&u)
                    && s.iter()
                        .zip(a.iter().zip(b.iter()))
                        .all(|(v, (x, y))| (v - (x + u * (y - x))).abs() < 1e-9)
            })
        });
        assert!(on_a_segment, "{s:?} is on no seed-neighbour segment");
    }
    Ok(())
}

#[tokio::test]
async fn same_seed_same_rows_other_seed_other_rows() -> Result<()> {
    let ctx = session_with("t", OVERLAP).await?;
    for method in [
        "smote",
        "borderline_smote",
        "adasyn",
        "qc_smote",
        "random_oversample",
    ] {
        let run = |seed: u64| {
            let ctx = ctx.clone();
            async move {
                let sql = format!(
                    "SELECT f0, f1, f2, f3, synthetic_kind FROM {method}('t', 'label', \
                     'seed={seed}') WHERE is_synthetic"
                );
                let batches = ctx.sql(&sql).await?.collect().await?;
                let text = pretty_format_batches(&batches)?.to_string();
                Ok::<_, DataFusionError>(text)
            }
        };
        let first = run(1).await?;
        assert_eq!(first, run(1).await?, "{method} is not deterministic");
        assert_ne!(first, run(2).await?, "{method} ignores its seed");
    }
    Ok(())
}

#[tokio::test]
async fn explain_analyze_shows_the_operator_metrics() -> Result<()> {
    let ctx = session_with("t", OVERLAP).await?;
    let text = explain_analyze(&ctx, "SELECT count(*) FROM qc_smote('t', 'label')").await?;
    for metric in [
        "OversampleExec: method=qc_smote",
        "input_rows=600",
        "synthetic_rows=480",
        "candidates_rejected=",
        "output_rows=1.08 K",
    ] {
        assert!(text.contains(metric), "missing {metric} in\n{text}");
    }
    Ok(())
}

#[tokio::test]
async fn streaming_qc_smote_has_no_look_ahead_and_balances_the_stream() -> Result<()> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    equipoise::register_all(&ctx)?;
    // seq is excluded from the features, so a synthetic row carries its
    // seed's seq: that is how the test sees which row seeded it.
    let df = ctx
        .sql(
            "SELECT seq, temperature_c, vibration_mm_s, pressure_bar, current_a, label \
             FROM equipoise_generator('batch_size=500')",
        )
        .await?
        .qc_smote(OversampleOptions {
            exclude: vec!["seq".into()],
            seed: 9,
            ..OversampleOptions::new("label")
        })?;
    let plan = df.clone().create_physical_plan().await?;
    assert!(matches!(plan.boundedness(), Boundedness::Unbounded { .. }));

    let mut stream = df.execute_stream().await?;
    let mut next_seq = 0i64;
    let (mut original_minority, mut synthetic_rows, mut late_rows, mut late_minority) =
        (0usize, 0usize, 0usize, 0usize);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while next_seq < 60_000 {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the stream keeps flowing")
            .expect("an unbounded stream does not end")?;
        let seq = batch.column(0).as_primitive::<Int64Type>();
        let label = batch.column(5).as_primitive::<Int64Type>();
        let synthetic = batch.column(6).as_boolean();
        let late = next_seq >= 30_000;
        for r in 0..batch.num_rows() {
            let minority = label.value(r) == 1;
            if synthetic.value(r) {
                // Seeds come from batches already emitted: no look-ahead.
                assert!(
                    seq.value(r) < next_seq,
                    "seed {} >= {next_seq}",
                    seq.value(r)
                );
                assert!(minority, "only the minority is over-sampled");
                synthetic_rows += 1;
            } else {
                assert_eq!(seq.value(r), next_seq, "originals pass in order");
                next_seq += 1;
                original_minority += usize::from(minority);
            }
            if late {
                late_rows += 1;
                late_minority += usize::from(minority);
            }
        }
    }
    assert!(original_minority > 800, "{original_minority}");
    assert!(synthetic_rows > 20_000, "{synthetic_rows}");
    // The generator has 2% faults, then 3.5% from row 60,000; once the
    // decayed mix has settled the output is close to balanced.
    let share = late_minority as f64 / late_rows as f64;
    assert!((0.45..0.55).contains(&share), "late minority share {share}");
    Ok(())
}

#[tokio::test]
async fn streaming_qc_smote_reuses_its_neighbourhoods_across_small_batches() -> Result<()> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    equipoise::register_all(&ctx)?;
    // 80 batches of 250 rows, 2% faults: a few faults per batch, so a
    // rebuild per batch would be 80 builds. A class model is rebuilt when an
    // eighth of its rows is new or the whole window has turned over twice.
    ctx.sql(
        "CREATE VIEW g AS SELECT temperature_c, vibration_mm_s, pressure_bar, current_a, label \
         FROM equipoise_generator('rows=20000, batch_size=250')",
    )
    .await?;
    let text = explain_analyze(
        &ctx,
        "SELECT count(*) FROM qc_smote('g', 'label', 'mode=stream')",
    )
    .await?;
    // EXPLAIN ANALYZE prints counts as "412" or "18.52 K".
    let metric = |name: &str| -> f64 {
        let at = text.find(&format!("{name}=")).expect(name) + name.len() + 1;
        let rest = &text[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..end].parse().expect("a count");
        if rest[end..].starts_with(" K") {
            value * 1e3
        } else {
            value
        }
    };
    let builds = metric("neighbourhood_builds");
    let synthetic = metric("synthetic_rows");
    assert!(synthetic > 5_000.0, "{synthetic} synthetic rows");
    // Turnover alone rebuilds every 8,000 rows (twice the 4,000-row
    // reference); the minority grows from nothing (geometric rebuilds early
    // on).
    assert!(
        (3.0..=30.0).contains(&builds),
        "{builds} builds for 80 batches"
    );
    Ok(())
}

#[tokio::test]
async fn bounded_output_does_not_depend_on_the_order_rows_arrive_in() -> Result<()> {
    // The same rows as four partitions, in two partition orders: the
    // merged input order differs, the synthetic rows must not.
    let ctx = session_with("t", OVERLAP).await?;
    let batches = ctx.sql("SELECT * FROM t").await?.collect().await?;
    let whole = datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches)?;
    let parts: Vec<RecordBatch> = (0..4).map(|i| whole.slice(i * 150, 150)).collect();
    let schema = whole.schema();
    let mut outputs = Vec::new();
    for order in [[0, 1, 2, 3], [3, 1, 0, 2]] {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
        equipoise::register_all(&ctx)?;
        let partitions = order.iter().map(|&i| vec![parts[i].clone()]).collect();
        let table = datafusion::datasource::MemTable::try_new(schema.clone(), partitions)?;
        ctx.register_table("p", std::sync::Arc::new(table))?;
        for method in ["smote", "adasyn", "qc_smote", "borderline_smote"] {
            let sql = format!(
                "SELECT f0, f1, f2, f3, synthetic_kind FROM {method}('p', 'label', 'seed=4') \
                 WHERE is_synthetic ORDER BY f0, f1, f2, f3"
            );
            let batches = ctx.sql(&sql).await?.collect().await?;
            outputs.push((method, pretty_format_batches(&batches)?.to_string()));
        }
    }
    let (first, second) = outputs.split_at(4);
    for ((method, a), (_, b)) in first.iter().zip(second) {
        assert_eq!(a, b, "{method} depends on arrival order");
    }
    Ok(())
}

/// The buffered rows of `class` as the operator reports them.
fn buffered(runtime: &equipoise::JobRuntime, class: &str) -> Option<f64> {
    gathered(runtime, "equipoise_oversampler_buffered_rows", false)
        .into_iter()
        .find(|(labels, _)| labels.get("class").is_some_and(|c| c == class))
        .map(|(_, value)| value)
}

#[tokio::test]
async fn a_reset_signal_shrinks_the_buffers_of_a_streaming_oversampler() -> Result<()> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    let runtime = equipoise::register_all(&ctx)?;
    let df = ctx
        .sql(
            "SELECT temperature_c, vibration_mm_s, label \
             FROM equipoise_generator('batch_size=500')",
        )
        .await?
        .smote(OversampleOptions {
            window: Some(1_000),
            ..OversampleOptions::new("label")
        })?;
    let mut stream = df.execute_stream().await?;
    let mut next_original_batch = async || -> Result<()> {
        loop {
            let batch = tokio::time::timeout(Duration::from_secs(60), stream.next())
                .await
                .expect("the stream keeps flowing")
                .expect("an unbounded stream does not end")?;
            if batch.column(3).as_boolean().false_count() > 0 {
                return Ok(());
            }
        }
    };
    for _ in 0..4 {
        next_original_batch().await?;
    }
    assert_eq!(buffered(&runtime, "0"), Some(1_000.0), "the window is full");
    runtime
        .control()
        .publish(equipoise::operators::ControlSignal::Reset {
            target: equipoise::operators::SignalTarget::Kind("smote".into()),
            reason: "test drift".into(),
        });
    next_original_batch().await?;
    // Shrunk to the newest 100, then one batch of about 490 normal rows.
    let after = buffered(&runtime, "0").unwrap_or(f64::NAN);
    assert!(
        (550.0..=650.0).contains(&after),
        "{after} rows after the reset"
    );
    Ok(())
}

#[tokio::test]
async fn a_duplicate_keeps_its_seeds_values_bit_for_bit() -> Result<()> {
    use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use std::sync::Arc;

    // Class 1 has one row, so it can only be duplicated; class 2's rows are
    // interpolated: one batch of synthetic rows holds both kinds. The
    // seed's -0.0 would come out as 0.0 if a duplicate were computed as
    // `seed + 0 x difference`, and an i64 above 2^53 would not survive f64.
    let big = (1i64 << 60) + 1;
    let x = vec![
        1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, -0.0, -2.0, -3.0, -4.0,
    ];
    let n = vec![0, 1, 2, 3, 4, 5, 6, 7, big, 10, 20, 30];
    let label = vec![0i64, 0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2];
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Float64, false),
        Field::new("n", DataType::Int64, false),
        Field::new("label", DataType::Int64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Float64Array::from(x)),
        Arc::new(Int64Array::from(n)),
        Arc::new(Int64Array::from(label)),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    let ctx = SessionContext::new();
    equipoise::register_all(&ctx)?;
    ctx.register_table("t", Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))?;
    for method in ["smote", "random_oversample"] {
        let sql = format!(
            "SELECT x, n, label, synthetic_kind FROM {method}('t', 'label', 'seed=3') \
             WHERE is_synthetic"
        );
        let batches = ctx.sql(&sql).await?.collect().await?;
        let mut per_class = [0usize; 3];
        for batch in &batches {
            let x = batch.column(0).as_primitive::<Float64Type>();
            let n = batch.column(1).as_primitive::<Int64Type>();
            let label = batch.column(2).as_primitive::<Int64Type>();
            let kind = batch.column(3).as_string::<i32>();
            for r in 0..batch.num_rows() {
                let class = label.value(r) as usize;
                per_class[class] += 1;
                match class {
                    1 => {
                        assert_eq!(kind.value(r), "duplicate", "{method}");
                        assert_eq!(x.value(r).to_bits(), (-0.0f64).to_bits(), "{method}");
                        assert_eq!(n.value(r), big, "{method}");
                    }
                    2 => {
                        assert!((-4.0..=-2.0).contains(&x.value(r)), "{method}");
                        if method == "random_oversample" {
                            let seed = [(-2.0, 10), (-3.0, 20), (-4.0, 30)]
                                .contains(&(x.value(r), n.value(r)));
                            assert!(seed, "{method}: not a copy of a seed");
                        } else {
                            assert_eq!(kind.value(r), "interpolated", "{method}");
                        }
                    }
                    _ => panic!("{method}: the majority class was oversampled"),
                }
            }
        }
        assert_eq!(per_class, [0, 7, 5], "{method}");
    }
    Ok(())
}
