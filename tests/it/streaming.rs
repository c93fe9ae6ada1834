//! The unbounded execution path, through the library API a host application
//! would use.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::common::Result;
use datafusion::physical_plan::ExecutionPlanProperties;
use datafusion::physical_plan::execution_plan::Boundedness;
use datafusion::prelude::SessionContext;
use equipoise::JobRuntime;
use equipoise::job::{JobSpec, run_job};
use equipoise::operators::{ClassMonitorOptions, DataFrameStageExt};
use equipoise::progress::ProgressReporter;
use equipoise_connectors::GeneratorConfig;
use futures::StreamExt;

use super::common::gathered;

/// Fails the test instead of hanging when a query never ends.
async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("finished within 60 s")
}

#[tokio::test]
async fn limit_over_the_unbounded_generator_returns() -> Result<()> {
    let ctx = SessionContext::new();
    equipoise::register_all(&ctx)?;
    let df = ctx
        .sql("SELECT seq, label FROM equipoise_generator('batch_size=100') LIMIT 250")
        .await?;
    let batches = within(df.collect()).await?;
    let seqs: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(seqs, (0..250).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn sliding_window_over_the_unbounded_generator_needs_no_sort() -> Result<()> {
    let ctx = SessionContext::new();
    equipoise::register_all(&ctx)?;
    let sql = "SELECT seq, sum(label) OVER (ORDER BY seq ROWS BETWEEN 99 PRECEDING AND CURRENT ROW) AS faults \
               FROM equipoise_generator() LIMIT 5000";
    let df = ctx.sql(sql).await?;
    let plan = df.clone().create_physical_plan().await?;
    let text = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(false)
        .to_string();
    assert!(
        !text.contains("SortExec"),
        "a sort blocks an unbounded stream:\n{text}"
    );
    let batches = within(df.collect()).await?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 5000);
    Ok(())
}

#[tokio::test]
async fn the_pipeline_is_unbounded_and_emits_batch_by_batch() -> Result<()> {
    // One partition: no exchange buffers batches ahead of the consumer.
    let ctx = SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new().with_target_partitions(1),
    );
    let runtime = equipoise::register_all(&ctx)?;
    let df = ctx
        .sql("SELECT seq, temperature_c, label FROM equipoise_generator('batch_size=500')")
        .await?
        .class_monitor(ClassMonitorOptions::new("label"))?;
    let plan = df.clone().create_physical_plan().await?;
    assert!(matches!(plan.boundedness(), Boundedness::Unbounded { .. }));

    // Pull three batches from a stream that never ends, then walk away.
    let mut stream = df.execute_stream().await?;
    let mut rows = 0;
    for _ in 0..3 {
        rows += within(stream.next()).await.expect("a batch")?.num_rows();
    }
    drop(stream);
    assert_eq!(rows, 1500);

    // The class monitor counted exactly what passed through it.
    let counted: f64 = gathered(&runtime, "equipoise_rows_processed_total", true)
        .iter()
        .map(|(_, value)| value)
        .sum();
    assert_eq!(counted, 1500.0);
    Ok(())
}

#[tokio::test]
async fn explain_analyze_shows_the_class_monitor() -> Result<()> {
    let ctx = SessionContext::new();
    equipoise::register_all(&ctx)?;
    let df = ctx
        .sql("SELECT * FROM equipoise_generator('rows=3000, batch_size=1000')")
        .await?
        .class_monitor(ClassMonitorOptions::new("label"))?
        .explain(false, true)?;
    let batches = df.collect().await?;
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
    assert!(
        text.contains("ClassMonitorExec: id=class_monitor-0, label=label"),
        "{text}"
    );
    assert!(text.contains("output_rows=3.00 K"), "{text}");
    assert!(text.contains("output_batches=3"), "{text}");
    Ok(())
}

#[tokio::test]
async fn a_label_that_is_not_a_class_is_a_plan_error() -> Result<()> {
    let ctx = SessionContext::new();
    equipoise::register_all(&ctx)?;
    let df = ctx
        .sql("SELECT * FROM equipoise_generator('rows=10')")
        .await?;
    let missing = df.clone().class_monitor(ClassMonitorOptions::new("nope"));
    assert!(missing.is_err_and(|e| e.to_string().contains("label column 'nope' not found")));
    let float = df.class_monitor(ClassMonitorOptions::new("temperature_c"));
    assert!(float.is_err_and(|e| {
        e.to_string()
            .contains("must be an integer, boolean or string")
    }));
    Ok(())
}

struct Silent;
impl ProgressReporter for Silent {
    fn update(&mut self, _: &equipoise::summary::ClassTally, _: Duration) {}
    fn finish(&mut self) {}
}

#[tokio::test]
async fn a_job_resumes_from_its_snapshot_where_it_stopped() -> Result<()> {
    let config = |rows| GeneratorConfig {
        rows: Some(rows),
        batch_size: 1000,
        ..GeneratorConfig::default()
    };
    // One uninterrupted job of 8000 rows ...
    let whole = run_job(
        &JobSpec::embedded_default(config(8000))?,
        Arc::new(JobRuntime::default()),
        &mut Silent,
        std::future::pending(),
    )
    .await?;

    // ... against 5000 rows, a snapshot, and 3000 more in a new runtime.
    let first = run_job(
        &JobSpec::embedded_default(config(5000))?,
        Arc::new(JobRuntime::default()),
        &mut Silent,
        std::future::pending(),
    )
    .await?;
    let snapshot = first.final_state;
    assert_eq!(
        snapshot.operators["generator-0"].state["next_row"],
        serde_json::json!(5000)
    );
    let second_runtime = Arc::new(JobRuntime::default());
    second_runtime.state().set_restore_point(snapshot)?;
    let resumed = run_job(
        &JobSpec::embedded_default(config(3000))?,
        second_runtime,
        &mut Silent,
        std::future::pending(),
    )
    .await?;
    assert_eq!(resumed.tally.rows(), 3000);

    // The restored class monitor carries the totals of both runs, which
    // equal the uninterrupted run's.
    let mix = &resumed.final_state.operators["class_monitor-0"].state;
    let totals: Vec<(i64, u64)> = mix["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .map(|c| {
            (
                c["class"].as_i64().expect("class"),
                c["rows"].as_u64().expect("rows"),
            )
        })
        .collect();
    let expected: Vec<(i64, u64)> = whole
        .tally
        .per_class()
        .into_iter()
        .map(|(c, n)| (c.to_string().parse().expect("int class"), n))
        .collect();
    assert_eq!(totals, expected);
    Ok(())
}

/// Reports the rows the sink has received so far.
struct RowsSeen(tokio::sync::watch::Sender<u64>);
impl ProgressReporter for RowsSeen {
    fn update(&mut self, tally: &equipoise::summary::ClassTally, _: Duration) {
        self.0.send_replace(tally.rows());
    }
    fn finish(&mut self) {}
}

#[tokio::test]
async fn stop_ends_an_unbounded_job_after_whole_batches() -> Result<()> {
    let spec = JobSpec::embedded_default(GeneratorConfig {
        batch_size: 700,
        ..GeneratorConfig::default()
    })?;
    // Stopped once rows have arrived (however slow the machine), and
    // while more are on their way.
    let (rows_seen, mut seen) = tokio::sync::watch::channel(0u64);
    let stop = async move {
        seen.wait_for(|&rows| rows > 0).await.ok();
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let summary = within(run_job(
        &spec,
        Arc::new(JobRuntime::default()),
        &mut RowsSeen(rows_seen),
        stop,
    ))
    .await?;
    assert!(summary.stopped);
    assert!(summary.tally.rows() > 0);
    assert_eq!(summary.tally.rows() % 700, 0);
    Ok(())
}

#[tokio::test]
async fn sliding_metric_windows_stream_over_the_unbounded_generator() -> Result<()> {
    let ctx = SessionContext::new();
    equipoise::register_all(&ctx)?;
    // A crude detector: hot means faulty. Its windowed quality over the last
    // 1000 rows, on a stream that never ends.
    let sql = "SELECT seq, \
                 gmean(label, prediction) OVER w AS gmean, \
                 recall_of(label, prediction, 1) OVER w AS fault_recall \
               FROM (SELECT seq, label, CAST(temperature_c > 72 AS BIGINT) AS prediction \
                     FROM equipoise_generator('batch_size=4096')) \
               WINDOW w AS (ORDER BY seq ROWS BETWEEN 999 PRECEDING AND CURRENT ROW) \
               LIMIT 60000";
    let df = ctx.sql(sql).await?;
    let plan = df.clone().create_physical_plan().await?;
    let text = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(false)
        .to_string();
    // The bounded window operator evaluates frame by frame with retraction;
    // the unbounded one would buffer the whole (endless) partition.
    assert!(text.contains("BoundedWindowAggExec"), "{text}");
    assert!(!text.contains("SortExec"), "{text}");
    let batches = within(df.collect()).await?;
    let mut rows = 0;
    for batch in &batches {
        let gmean = batch
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        let recall = batch
            .column(2)
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        for i in 0..batch.num_rows() {
            assert!((0.0..=1.0).contains(&gmean.value(i)));
            assert!((0.0..=1.0).contains(&recall.value(i)));
        }
        rows += batch.num_rows();
    }
    assert_eq!(rows, 60_000);
    // Before the concept shift at row 120,000, heat gives faults away.
    let last = batches.last().expect("batches");
    let recall = last
        .column(2)
        .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
    assert!(recall.value(last.num_rows() - 1) > 0.5);
    Ok(())
}

#[tokio::test]
async fn windowed_functions_stay_exact_across_many_small_batches() -> Result<()> {
    let ctx = SessionContext::new();
    equipoise::register_all(&ctx)?;
    // Small batches make the bounded window operator prune its buffer often;
    // incremental state must survive every prune.
    let width = 250usize;
    let sql = format!(
        "SELECT label, balanced_weight(label) OVER w, imbalance_ratio(label) OVER w \
         FROM equipoise_generator('batch_size=97, minority_share=0.1') \
         WINDOW w AS (ORDER BY seq ROWS BETWEEN {} PRECEDING AND CURRENT ROW) LIMIT 5000",
        width - 1
    );
    let batches = within(ctx.sql(&sql).await?.collect()).await?;
    let mut labels = Vec::new();
    let mut results = Vec::new();
    for batch in &batches {
        let label = batch.column(0).as_primitive::<Int64Type>();
        let weight = batch
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        let ratio = batch
            .column(2)
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        for i in 0..batch.num_rows() {
            labels.push(label.value(i));
            results.push((weight.value(i), ratio.value(i)));
        }
    }
    assert_eq!(labels.len(), 5000);
    for (i, (weight, ratio)) in results.iter().enumerate() {
        let frame = &labels[(i + 1).saturating_sub(width)..=i];
        let faults = frame.iter().filter(|l| **l == 1).count() as f64;
        let normal = frame.len() as f64 - faults;
        let classes = f64::from(u8::from(faults > 0.0) + u8::from(normal > 0.0));
        let own = if labels[i] == 1 { faults } else { normal };
        let expected_weight = frame.len() as f64 / (classes * own);
        let expected_ratio = if classes < 2.0 {
            1.0
        } else {
            faults.max(normal) / faults.min(normal)
        };
        assert!((weight - expected_weight).abs() < 1e-12, "row {i}");
        assert!((ratio - expected_ratio).abs() < 1e-12, "row {i}");
    }
    Ok(())
}

#[tokio::test]
async fn drift_detectors_stream_over_the_unbounded_generator_and_see_the_concept_shift()
-> Result<()> {
    let ctx = SessionContext::new();
    equipoise::register_all(&ctx)?;
    // "Hot means faulty" stops working at row 120,000 (faults then show as
    // a pressure drop instead): its errors jump, and DDM must say so.
    let sql = "SELECT seq, ddm(error) OVER w AS ddm, hddm_a(error) OVER w AS hddm_a \
               FROM (SELECT seq, CAST((temperature_c > 72) <> (label = 1) AS BIGINT) AS error \
                     FROM equipoise_generator('batch_size=8192')) \
               WINDOW w AS (ORDER BY seq) \
               LIMIT 150000";
    let df = ctx.sql(sql).await?;
    let plan = df.clone().create_physical_plan().await?;
    let text = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(false)
        .to_string();
    assert!(text.contains("BoundedWindowAggExec"), "{text}");
    assert!(!text.contains("SortExec"), "{text}");
    let batches = within(df.collect()).await?;
    let mut first_drift_after_shift = None;
    let mut rows = 0;
    for batch in &batches {
        let seq = batch.column(0).as_primitive::<Int64Type>();
        let ddm = batch.column(1).as_string::<i32>();
        for i in 0..batch.num_rows() {
            assert!(["none", "warning", "drift"].contains(&ddm.value(i)));
            if seq.value(i) >= 120_000 && ddm.value(i) == "drift" {
                first_drift_after_shift.get_or_insert_with(|| seq.value(i));
            }
        }
        rows += batch.num_rows();
    }
    assert_eq!(rows, 150_000);
    let at = first_drift_after_shift.expect("DDM flags the concept shift");
    assert!(at < 130_000, "flagged only at row {at}");
    Ok(())
}

/// The operators' snapshots (the generator's left out) after `query` over
/// the views `views`, the first of which, `rows`, keeps generator rows
/// `from..to` (of `generated`, in 4096-row batches), starting from
/// `restore`.
async fn state_after(
    generated: u64,
    (from, to): (u64, u64),
    views: &[&str],
    query: &str,
    restore: Option<equipoise::operators::runtime::JobSnapshot>,
) -> Result<equipoise::operators::runtime::JobSnapshot> {
    let runtime = Arc::new(JobRuntime::default());
    if let Some(snapshot) = restore {
        runtime.state().set_restore_point(snapshot)?;
    }
    let ctx = equipoise::new_session(Arc::clone(&runtime))?;
    ctx.sql(&format!(
        "CREATE VIEW rows AS SELECT * FROM equipoise_generator('rows={generated}, \
         batch_size=4096') WHERE seq >= {from} AND seq < {to}"
    ))
    .await?
    .collect()
    .await?;
    for view in views {
        ctx.sql(view).await?.collect().await?;
    }
    within(ctx.sql(query).await?.collect()).await?;
    let mut snapshot = runtime.state().snapshot_all()?;
    snapshot.operators.retain(|_, op| op.kind != "generator");
    Ok(snapshot)
}

/// The snapshots of `icost`, `train_detector` and `drift_monitor` after
/// running them over generator rows `from..to` (whole 4096-row batches),
/// starting from `restore`.
async fn chain_state(
    from: u64,
    to: u64,
    restore: Option<equipoise::operators::runtime::JobSnapshot>,
) -> Result<equipoise::operators::runtime::JobSnapshot> {
    state_after(
        32768,
        (from, to),
        &[
            "CREATE VIEW weighed AS SELECT * FROM icost('rows', 'label', \
             'mode=stream, exclude=seq machine_id')",
            "CREATE VIEW scored AS SELECT * FROM train_detector('weighed', 'label', \
             'exclude=seq machine_id')",
        ],
        "SELECT count(*) FROM drift_monitor('scored', 'label', 'prediction')",
        restore,
    )
    .await
}

#[tokio::test]
async fn operator_state_restored_mid_stream_equals_an_uninterrupted_run() -> Result<()> {
    let whole = chain_state(0, 32768, None).await?;
    let first = chain_state(0, 16384, None).await?;
    let resumed = chain_state(16384, 32768, Some(first.clone())).await?;
    let kinds: Vec<&str> = whole
        .operators
        .values()
        .map(|op| op.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        ["drift_monitor", "icost", "train_detector"],
        "{kinds:?}"
    );
    assert_ne!(first, whole, "the halves are different states");
    for (id, state) in &whole.operators {
        assert_eq!(
            resumed.operators.get(id),
            Some(state),
            "{id} after a restore at row 16384 differs from the uninterrupted run"
        );
    }
    Ok(())
}

/// The snapshot of `qc_smote` after generator rows `from..to`, starting
/// from `restore`.
async fn oversampler_state(
    from: u64,
    to: u64,
    restore: Option<equipoise::operators::runtime::JobSnapshot>,
) -> Result<equipoise::operators::runtime::JobSnapshot> {
    state_after(
        20000,
        (from, to),
        &[],
        "SELECT count(*) FROM qc_smote('rows', 'label', 'mode=stream, exclude=seq machine_id')",
        restore,
    )
    .await
}

#[tokio::test]
async fn an_oversampler_keeps_its_reservoirs_across_a_restore() -> Result<()> {
    let first = oversampler_state(0, 12288, None).await?;
    let state = &first.operators["qc_smote-0"].state;
    let held: usize = state["reservoirs"]["per_class"]
        .as_array()
        .expect("classes")
        .iter()
        .flat_map(|chunks| chunks.as_array().expect("chunks"))
        .map(|chunk| chunk["arrivals"].as_array().expect("arrivals").len())
        .sum();
    assert!(held > 1000, "the reservoirs hold rows: {held}");
    // Restored and fed nothing, the oversampler snapshots what it restored.
    let restored = oversampler_state(12288, 12288, Some(first.clone())).await?;
    assert_eq!(restored, first);
    Ok(())
}
