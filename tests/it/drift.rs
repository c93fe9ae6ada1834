//! The drift monitor in a job: what it finds on the generator's documented
//! change points, how the rest of the pipeline hears of it, and what it
//! exports.

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::Result;
use equipoise::JobRuntime;
use equipoise::job::{JobSpec, run_job};
use equipoise::operators::drift::DriftState;
use equipoise::operators::{DriftMonitorOptions, OversampleOptions};
use equipoise::progress::ProgressReporter;
use equipoise::summary::{ClassTally, JobSummary};
use equipoise_connectors::GeneratorConfig;
use prometheus::{Encoder, TextEncoder};

struct Silent;
impl ProgressReporter for Silent {
    fn update(&mut self, _: &ClassTally, _: Duration) {}
    fn finish(&mut self) {}
}

/// The default job with a crude rule in its projection instead of a
/// trained detector: "hot means
/// faulty", which works until the fault signature moves at row 120,000.
pub(super) fn scored_job(rows: u64) -> Result<JobSpec> {
    let mut spec = JobSpec::embedded_default(GeneratorConfig {
        rows: Some(rows),
        batch_size: 2000,
        ..GeneratorConfig::default()
    })?;
    spec.query = spec.query.replace(
        "label FROM",
        "label, CAST(temperature_c > 72 AS BIGINT) AS predicted FROM",
    );
    let not_a_feature = |mut exclude: Vec<String>| {
        exclude.push("predicted".to_string());
        exclude
    };
    if let Some((_, options)) = &mut spec.oversampler {
        options.exclude = not_a_feature(std::mem::take(&mut options.exclude));
    }
    if let Some(options) = &mut spec.icost {
        options.selection.exclude = not_a_feature(std::mem::take(&mut options.selection.exclude));
    }
    // The rule is the model here, so that its failure is known.
    spec.detector = None;
    spec.drift_monitor = Some(DriftMonitorOptions::new("label").with_prediction("predicted"));
    Ok(spec)
}

pub(super) async fn run(spec: &JobSpec, runtime: Arc<JobRuntime>) -> Result<JobSummary> {
    tokio::time::timeout(
        Duration::from_secs(300),
        run_job(spec, runtime, &mut Silent, std::future::pending()),
    )
    .await
    .map_err(|_| datafusion::common::DataFusionError::Execution("job timed out".into()))?
}

pub(super) fn exposition(runtime: &JobRuntime) -> String {
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&runtime.registry().gather(), &mut text)
        .expect("encode");
    String::from_utf8(text).expect("utf-8")
}

#[tokio::test]
async fn minority_recall_drift_follows_the_concept_shift_and_shrinks_the_oversampler() -> Result<()>
{
    let spec = scored_job(140_000)?;
    let runtime = Arc::new(JobRuntime::default());
    let summary = run(&spec, Arc::clone(&runtime)).await?;
    assert_eq!(summary.tally.rows(), 140_000);

    let recall_drifts: Vec<u64> = summary
        .drifts
        .iter()
        .filter(|d| d.signal == "recall" && d.class.as_deref() == Some("1"))
        .map(|d| d.row)
        .collect();
    assert!(
        recall_drifts.iter().all(|&row| row >= 120_000),
        "minority recall drift before the concept shift: {recall_drifts:?}"
    );
    let first = recall_drifts
        .first()
        .copied()
        .expect("recall drift flagged");
    assert!(first < 122_000, "flagged only at row {first}");
    // The class mix moves at row 60,000 (2% to 3.5% faults).
    let prior: Vec<u64> = summary
        .drifts
        .iter()
        .filter(|d| d.signal == "class_prior")
        .map(|d| d.row)
        .collect();
    assert!(
        prior
            .first()
            .is_some_and(|&row| (60_000..70_000).contains(&row)),
        "{prior:?}"
    );
    assert!(summary.drifts.iter().all(|d| d.state == DriftState::Drift));
    // Nothing fires on the stable first 60,000 rows.
    assert!(
        summary.drifts.iter().all(|d| d.row >= 60_000),
        "{:?}",
        summary.drifts
    );

    // The oversampler heard it: after the last drift it kept a tenth of its
    // 2,000-row class-1 buffer and refilled from the ~700 faults since;
    // without the shrink the buffer would be full.
    let window = OversampleOptions::STREAM_WINDOW;
    let text = exposition(&runtime);
    let buffered = equipoise_test_sample(
        &text,
        "equipoise_oversampler_buffered_rows{class=\"1\",operator=\"qc_smote-0\"}",
    );
    assert!(buffered < window as f64 * 0.75, "{buffered} rows buffered");

    // Its metrics: the recall drift counted, the recall gauge low after the
    // shift, G-mean exported.
    let drifts = equipoise_test_sample(
        &text,
        "equipoise_drift_events_total{class=\"1\",detector=\"ddm_oci\",operator=\"drift_monitor-0\",signal=\"recall\",state=\"drift\"}",
    );
    assert!(drifts >= 1.0);
    let sliding_recall = equipoise_test_sample(
        &text,
        "equipoise_prequential_recall_ratio{class=\"1\",operator=\"drift_monitor-0\",window=\"sliding\"}",
    );
    let total_recall = equipoise_test_sample(
        &text,
        "equipoise_prequential_recall_ratio{class=\"1\",operator=\"drift_monitor-0\",window=\"total\"}",
    );
    assert!(
        sliding_recall < total_recall,
        "{sliding_recall} vs {total_recall}"
    );
    assert!(text.contains(
        "equipoise_prequential_gmean_ratio{operator=\"drift_monitor-0\",window=\"total\"}"
    ));

    // The summary names both documented change points and the drifts.
    let printed = summary.to_string();
    assert!(printed.contains("documented change: fault signature at row 120000"));
    assert!(
        printed.contains("drift: recall drift (class 1) at row"),
        "{printed}"
    );
    Ok(())
}

fn equipoise_test_sample(exposition: &str, series: &str) -> f64 {
    super::common::sample(exposition, series)
        .unwrap_or_else(|| panic!("{series} not exported:\n{exposition}"))
}

/// The physical plan of `sql` as text.
async fn physical_plan(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Result<String> {
    let plan = ctx.sql(sql).await?.create_physical_plan().await?;
    Ok(datafusion::physical_plan::displayable(plan.as_ref())
        .indent(false)
        .to_string())
}

#[tokio::test]
async fn detectors_run_over_whole_partitions_of_bounded_input_and_row_by_row_on_streams()
-> Result<()> {
    let ctx = equipoise::new_session(Arc::new(JobRuntime::default()))?;
    ctx.sql(
        "CREATE EXTERNAL TABLE b STORED AS CSV LOCATION 'tests/data/drift/binary_stream.csv' \
         OPTIONS ('format.has_header' 'true')",
    )
    .await?;
    let bounded = physical_plan(&ctx, "SELECT adwin(x) OVER (ORDER BY t) FROM b").await?;
    assert!(
        bounded.contains("WindowAggExec") && !bounded.contains("BoundedWindowAggExec"),
        "{bounded}"
    );
    // Mixed with a window function that is not a detector: left as planned.
    let mixed = physical_plan(
        &ctx,
        "SELECT adwin(x) OVER (ORDER BY t), row_number() OVER (ORDER BY t) FROM b",
    )
    .await?;
    assert!(mixed.contains("BoundedWindowAggExec"), "{mixed}");
    // A stream keeps the bounded execution a stream needs.
    let stream = physical_plan(
        &ctx,
        "SELECT adwin(CAST(label AS INT)) OVER (ORDER BY seq) FROM equipoise_generator('')",
    )
    .await?;
    assert!(stream.contains("BoundedWindowAggExec"), "{stream}");
    Ok(())
}

/// Every detector's states over the reference binary stream, as `table`
/// gives them, ordered by `t`.
async fn states_of(ctx: &datafusion::prelude::SessionContext, table: &str) -> Result<Vec<String>> {
    let batches = ctx
        .sql(&format!(
            "SELECT adwin(x) OVER (ORDER BY t) AS a, ddm(x) OVER (ORDER BY t) AS d, \
                    ddm_oci(x, t % 2) OVER (ORDER BY t) AS o, \
                    page_hinkley(x) OVER (ORDER BY t) AS p \
             FROM {table}"
        ))
        .await?
        .collect()
        .await?;
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
    Ok(text.lines().map(str::to_string).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detectors_give_the_same_states_row_by_row_on_a_stream_as_over_a_whole_file() -> Result<()>
{
    let ctx = equipoise::new_session(Arc::new(JobRuntime::default()))?;
    let path = "tests/data/drift/binary_stream.csv";
    const COLUMNS: &str = "t BIGINT, x BIGINT, adwin VARCHAR, ddm VARCHAR, eddm VARCHAR, \
                           hddm_a VARCHAR, hddm_w VARCHAR";
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE whole ({COLUMNS}) STORED AS CSV LOCATION '{path}' \
         OPTIONS ('format.has_header' 'true')"
    ))
    .await?;
    ctx.sql(&format!(
        "CREATE UNBOUNDED EXTERNAL TABLE stream ({COLUMNS}) STORED AS CSV \
         WITH ORDER (t ASC) LOCATION '{path}' OPTIONS ('format.has_header' 'true')"
    ))
    .await?;
    let plan = physical_plan(&ctx, "SELECT adwin(x) OVER (ORDER BY t) FROM stream").await?;
    assert!(plan.contains("BoundedWindowAggExec"), "{plan}");
    let whole = states_of(&ctx, "whole").await?;
    let stream = states_of(&ctx, "stream").await?;
    assert_eq!(whole.len(), 24_000 + 4, "24,000 rows and the table's frame");
    let differing: Vec<(usize, &String, &String)> = whole
        .iter()
        .zip(&stream)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i, a, b))
        .take(3)
        .collect();
    assert!(
        differing.is_empty(),
        "the row-by-row states differ from the whole-file ones: {differing:?}"
    );
    Ok(())
}
