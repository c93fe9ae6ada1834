//! The library surface a host application uses: each crate's
//! `register_all`, composed by the root one, and the `expr_fn` builders,
//! which must give what the same SQL gives; operator state counted in the
//! session's memory pool.

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Float64Type;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext, col, lit};
use equipoise::operators::expr_fn::{kdn_mean, n3};
use equipoise::udfs::expr_fn::{gmean, imbalance_ratio, recall_of, roc_auc};

const ROWS: &str = "SELECT * FROM (VALUES
    (0, 0, 0.1, 1.0, 2.0), (0, 0, 0.3, 1.5, 2.5), (0, 1, 0.7, 3.0, 1.0),
    (1, 1, 0.9, 4.0, 0.5), (1, 0, 0.4, 1.2, 2.2), (0, 0, 0.2, 0.9, 2.1),
    (0, 0, 0.15, 1.1, 1.9), (1, 1, 0.8, 3.8, 0.7)) AS t(label, prediction, score, x, y)";

fn floats(batches: &[datafusion::arrow::record_batch::RecordBatch]) -> Vec<f64> {
    let batch = &batches[0];
    (0..batch.num_columns())
        .map(|i| {
            let column = batch.column(i);
            match column.as_primitive_opt::<Float64Type>() {
                Some(values) => values.value(0),
                None => f64::NAN,
            }
        })
        .collect()
}

#[tokio::test]
async fn expr_fn_builders_equal_their_sql() -> Result<()> {
    let ctx = SessionContext::new();
    equipoise::register_all(&ctx)?;
    ctx.sql(&format!("CREATE VIEW t AS {ROWS}")).await?;
    let by_sql = ctx
        .sql(
            "SELECT gmean(label, prediction), recall_of(label, prediction, 1), \
             roc_auc(label, score), imbalance_ratio(label), kdn_mean(label, x, y), \
             n3(label, x, y) FROM t",
        )
        .await?
        .collect()
        .await?;
    let by_builders = ctx
        .table("t")
        .await?
        .aggregate(
            vec![],
            vec![
                gmean(col("label"), col("prediction")),
                recall_of(col("label"), col("prediction"), lit(1)),
                roc_auc(col("label"), col("score"), None),
                imbalance_ratio(col("label")),
                kdn_mean(col("label"), vec![col("x"), col("y")]),
                n3(col("label"), vec![col("x"), col("y")]),
            ],
        )?
        .collect()
        .await?;
    let (sql, builders) = (floats(&by_sql), floats(&by_builders));
    assert_eq!(sql.len(), 6);
    assert!(sql.iter().all(|v| v.is_finite()), "{sql:?}");
    assert_eq!(sql, builders);
    // recalls 4/5 and 2/3 (G-mean), minority recall 2/3, ratio 5/3.
    assert!(
        (sql[0] - (0.8f64 * 2.0 / 3.0).sqrt()).abs() < 1e-12,
        "{sql:?}"
    );
    assert!((sql[1] - 2.0 / 3.0).abs() < 1e-12);
    assert!((sql[3] - 5.0 / 3.0).abs() < 1e-12);
    Ok(())
}

#[tokio::test]
async fn each_crate_registers_its_own_functions() -> Result<()> {
    let ctx = SessionContext::new();
    {
        let state = ctx.state_ref();
        let mut state = state.write();
        equipoise::udfs::register_all(&mut state)?;
    }
    // The metric functions without the operators or connectors.
    let state = ctx.state();
    assert!(state.aggregate_functions().contains_key("gmean"));
    assert!(state.window_functions().contains_key("balanced_weight"));
    assert!(state.table_functions().contains_key("imbalance_report"));
    assert!(!state.table_functions().contains_key("qc_smote"));
    assert!(!state.window_functions().contains_key("adwin"));

    let all = SessionContext::new();
    equipoise::register_all(&all)?;
    let state = all.state();
    for name in [
        "qc_smote",
        "icost",
        "train_detector",
        "drift_monitor",
        "equipoise_generator",
        "advisor_report",
    ] {
        assert!(state.table_functions().contains_key(name), "{name}");
    }
    assert!(state.window_functions().contains_key("adwin"));
    // Once, however many times register_all runs.
    equipoise::register_all(&all)?;
    let rules = all
        .state()
        .physical_optimizers()
        .iter()
        .filter(|r| r.name() == "whole_partition_detectors")
        .count();
    assert_eq!(rules, 1);
    assert!(state.aggregate_functions().contains_key("kdn_mean"));
    let _ = state
        .aggregate_functions()
        .get("gmean")
        .map(|f| f.name().len());
    Ok(())
}

/// 100,000 rows, one in twenty of class 1, two features.
const LARGE: &str = "CREATE VIEW t AS SELECT CAST(value % 20 = 0 AS BIGINT) AS label, \
    CAST(value AS DOUBLE) AS x, CAST(value * 7 % 13 AS DOUBLE) AS y \
    FROM generate_series(1, 100000)";

async fn run_with_memory_limit(limit: usize, query: &str) -> Result<usize> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(limit, 1.0)
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
    equipoise::register_all(&ctx)?;
    ctx.sql(LARGE).await?;
    let batches = ctx.sql(query).await?.collect().await?;
    Ok(batches.iter().map(|b| b.num_rows()).sum())
}

#[tokio::test]
async fn operator_state_counts_against_the_session_memory_limit() -> Result<()> {
    for (query, operator) in [
        ("SELECT * FROM smote('t', 'label')", "smote-0"),
        ("SELECT * FROM icost('t', 'label')", "icost-0"),
        (
            "SELECT * FROM qc_smote('t', 'label', 'mode=stream, window=50000')",
            "qc_smote-0",
        ),
    ] {
        // Within a generous limit the query runs.
        let rows = run_with_memory_limit(1 << 30, query).await?;
        assert!(rows >= 100_000, "{query}: {rows} rows");
        // The operator's held rows exceed a 256 KiB pool: a clear error
        // naming it, not an allocation past the limit.
        let error = match run_with_memory_limit(256 * 1024, query).await {
            Ok(rows) => panic!("{query} ran within 256 KiB ({rows} rows)"),
            Err(error) => error,
        };
        let text = error.to_string();
        assert!(
            matches!(error.find_root(), DataFusionError::ResourcesExhausted(_)),
            "{query}: {text}"
        );
        assert!(text.contains(operator), "{query}: {text}");
    }
    Ok(())
}

/// An operator's options are typed once: its keys struct reads an option
/// string and a TOML table (as a job file would hold it) alike, and both
/// give the same options; a TOML table's unknown key names the key and the
/// keys expected.
#[test]
fn option_strings_and_toml_tables_give_the_same_operator_options() -> Result<()> {
    use equipoise::operators::detector::DetectorKeys;
    use equipoise::operators::drift::monitor::DriftMonitorKeys;
    use equipoise::operators::icost::IcostKeys;
    use equipoise::operators::oversample::OversampleKeys;
    use equipoise::operators::{
        DetectorOptions, DriftMonitorOptions, IcostOptions, Method, OversampleOptions,
    };
    let toml = |text: &str| {
        text.parse::<toml::Table>()
            .map_err(|e| DataFusionError::Plan(e.to_string()))
    };
    fn keys<T: serde::de::DeserializeOwned>(table: toml::Table) -> Result<T> {
        table
            .try_into()
            .map_err(|e: toml::de::Error| DataFusionError::Plan(e.to_string()))
    }

    let from_string = IcostOptions::parse(
        "label",
        "method=gini, k=7, border=2.5, exclude=seq machine_id, mode=stream",
    )?;
    let table: IcostKeys = keys(toml(
        "method = \"gini\"\nk = 7\nborder = 2.5\nexclude = [\"seq\", \"machine_id\"]\nmode = \"stream\"",
    )?)?;
    assert_eq!(IcostOptions::from_keys("label", table)?, from_string);

    let from_string = OversampleOptions::parse(
        Method::QcSmote,
        "label",
        "candidates=9, floor=0.2, window=500",
    )?;
    let table: OversampleKeys = keys(toml("candidates = 9\nfloor = 0.2\nwindow = 500")?)?;
    assert_eq!(
        OversampleOptions::from_keys(Method::QcSmote, "label", table)?,
        from_string
    );

    let from_string = DetectorOptions::parse(
        "label",
        "learner=adaptive_tree, optimizer=adam, window=500, variants=balanced icost",
    )?;
    let table: DetectorKeys = keys(toml(
        "learner = \"adaptive_tree\"\noptimizer = \"adam\"\nwindow = 500\nvariants = \"balanced icost\"",
    )?)?;
    let from_table = DetectorOptions::from_keys("label", table)?;
    assert_eq!(format!("{from_table:?}"), format!("{from_string:?}"));

    let from_string =
        DriftMonitorOptions::parse("label", Some("prediction"), "window=500, recall_decay=0.99")?;
    let table: DriftMonitorKeys = keys(toml("window = 500\nrecall_decay = 0.99")?)?;
    let from_table = DriftMonitorOptions::from_keys("label", Some("prediction"), table)?;
    assert_eq!(format!("{from_table:?}"), format!("{from_string:?}"));

    let unknown = keys(toml("k = 7\ncolour = \"red\"")?)
        .map(|_: IcostKeys| ())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        unknown.contains("colour") && unknown.contains("`window`"),
        "{unknown}"
    );
    Ok(())
}
