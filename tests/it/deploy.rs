//! deploy/ against what the job exports: every metric the Grafana dashboard
//! and the alerting rules use exists, every exported family is documented
//! in docs/metrics.md (and nothing documented is missing), and every panel
//! query is valid PromQL (promtool).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use datafusion::common::Result;
use equipoise::JobRuntime;
use equipoise::connectors::kafka::metrics::KafkaMetrics;

use super::common::tool;
use equipoise::job::JobSpec;
use equipoise_connectors::GeneratorConfig;

use super::drift::run;

fn repo(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// `equipoise_...` names in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("equipoise_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Every `expr` of the dashboard's panels and annotations.
fn dashboard_queries() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo("deploy/grafana/equipoise.json")).expect("dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            queries.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .expect("annotations")
    {
        if let Some(expr) = annotation["expr"].as_str() {
            queries.push(expr.to_string());
        }
    }
    queries
}

/// The metric families the full default pipeline exports (generator,
/// class monitor, QC-SMOTE, iCost, detector, drift monitor on its
/// predictions), and those of a Kafka source and sink.
async fn exported_families() -> Result<BTreeSet<String>> {
    let runtime = Arc::new(JobRuntime::default());
    let spec = JobSpec::embedded_default(GeneratorConfig {
        rows: Some(20_000),
        batch_size: 2000,
        ..GeneratorConfig::default()
    })?;
    run(&spec, Arc::clone(&runtime)).await?;
    // The Kafka source and sink's families, with the series a job reading
    // and writing Kafka has.
    let kafka = runtime.metric_set::<KafkaMetrics>()?;
    // The checkpoint series of a job with a checkpoint store.
    runtime.metric_set::<equipoise::operators::runtime::CheckpointMetrics>()?;
    for family in [
        &kafka.records,
        &kafka.bytes,
        &kafka.sent,
        &kafka.dead_letters,
    ] {
        family.with_label_values(&["kafka_source-0"]);
    }
    kafka.lag.with_label_values(&["kafka_source-0", "0"]);
    kafka
        .transactions
        .with_label_values(&["kafka_sink-0", "committed"]);
    Ok(runtime
        .registry()
        .gather()
        .iter()
        .map(|f| f.name().to_string())
        .collect())
}

/// A name as it appears in a query, to its family (histogram series).
fn family_of(name: &str, families: &BTreeSet<String>) -> String {
    for suffix in ["_bucket", "_count", "_sum"] {
        if let Some(base) = name.strip_suffix(suffix)
            && families.contains(base)
        {
            return base.to_string();
        }
    }
    name.to_string()
}

#[tokio::test]
async fn dashboard_alerts_and_docs_name_exactly_the_exported_metrics() -> Result<()> {
    let families = exported_families().await?;
    assert!(families.len() >= 20, "{families:?}");

    let dashboard: BTreeSet<String> = dashboard_queries()
        .iter()
        .flat_map(|q| metric_names(q))
        .map(|n| family_of(&n, &families))
        .collect();
    let alerts_text: String = repo("deploy/prometheus/alerts.yml")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let alerts: BTreeSet<String> = metric_names(&alerts_text)
        .iter()
        .map(|n| family_of(n, &families))
        .collect();
    for (source, used) in [("dashboard", &dashboard), ("alert rules", &alerts)] {
        let unknown: Vec<_> = used.difference(&families).collect();
        assert!(
            unknown.is_empty(),
            "{source} use unexported metrics: {unknown:?}"
        );
    }
    // The dashboard shows every family but the per-operator details that
    // the panels fold into others.
    assert!(dashboard.len() >= 14, "{dashboard:?}");

    let documented: BTreeSet<String> = metric_names(&repo("docs/metrics.md"))
        .iter()
        .map(|n| family_of(n, &families))
        .collect();
    let undocumented: Vec<_> = families.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/metrics.md: {undocumented:?}"
    );
    let stale: Vec<_> = documented.difference(&families).collect();
    assert!(stale.is_empty(), "documented but not exported: {stale:?}");
    Ok(())
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    // Grafana's variables, as Grafana would substitute them.
    let rules: String = dashboard_queries()
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let q = q
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "15s")
                .replace("$operator", ".*");
            format!(
                "      - record: dashboard_query_{i}\n        expr: {}\n",
                serde_json::json!(q)
            )
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(
        &file,
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .expect("write rules");
    let output = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `EQUIPOISE_*` variables an overlay sets (its YAML files' `- name:` /
/// `value:` pairs).
fn overlay_settings(overlay: &Path) -> Vec<(String, String)> {
    let mut settings = Vec::new();
    for entry in std::fs::read_dir(overlay)
        .expect("overlay folder")
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            if let (Some(name), Some(value)) = (
                pair[0].strip_prefix("- name: "),
                pair[1].strip_prefix("value: "),
            ) && name.starts_with("EQUIPOISE_")
            {
                settings.push((name.to_string(), value.to_string()));
            }
        }
    }
    settings
}

/// The base job under each overlay's settings passes `equipoise run
/// --check` (an overlay's variables are job-file keys the job must accept;
/// the scale-out overlay's state per partition checks its Kafka source).
#[test]
fn the_base_job_checks_under_every_overlay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let job = root.join("deploy/kubernetes/base/job.toml");
    let overlays = std::fs::read_dir(root.join("deploy/kubernetes/overlays")).expect("overlays");
    let mut checked = 0;
    for overlay in overlays.flatten() {
        let settings = overlay_settings(&overlay.path());
        let output = Command::new(super::common::BIN)
            .args(["run", "--config", &job.to_string_lossy(), "--check"])
            .env("KAFKA_BROKERS", "127.0.0.1:1")
            .env("POD_NAME", "equipoise-0")
            .envs(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("the equipoise binary runs");
        assert!(
            output.status.success(),
            "{} with {settings:?}: {}",
            overlay.path().display(),
            super::common::stderr(&output)
        );
        if settings
            .iter()
            .any(|(k, v)| k == "EQUIPOISE_SCALE_OUT__STATE" && v == "per-partition")
        {
            assert!(
                super::common::stdout(&output).contains("state per Kafka partition"),
                "{}",
                super::common::stdout(&output)
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 1, "the scale-out overlay sets state per partition");
}

/// Every job file shipped (examples and the Kubernetes ConfigMaps) passes
/// `equipoise run --check`, and the pods' grace period leaves the job's
/// own grace period room to finish.
#[test]
fn every_shipped_job_file_checks_and_fits_the_pod_grace_period() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The overlays change environment variables, not the job files; the
    // Kubernetes job names its brokers as ${KAFKA_BROKERS}.
    let jobs = [
        "examples/kafka-job.toml",
        "examples/kafka-job-exactly-once.toml",
        "examples/kafka-job-scale-out.toml",
        "deploy/kubernetes/base/job.toml",
    ];
    for job in jobs {
        let path = root.join(job);
        let output = Command::new(super::common::BIN)
            .args(["run", "--config", &path.to_string_lossy(), "--check"])
            .env("KAFKA_BROKERS", "127.0.0.1:1")
            .env("POD_NAME", "equipoise-0")
            .output()
            .expect("the equipoise binary runs");
        assert!(
            output.status.success(),
            "{job}: {}",
            super::common::stderr(&output)
        );
        let text = std::fs::read_to_string(&path).expect("job file");
        let grace = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("grace_period = \""))
            .and_then(|rest| {
                rest.strip_suffix("s\"")
                    .or_else(|| rest.split("s\"").next())
            })
            .and_then(|n| n.trim().parse::<u64>().ok())
            .expect("a grace_period in seconds");
        let statefulset =
            std::fs::read_to_string(root.join("deploy/kubernetes/base/statefulset.yaml"))
                .expect("statefulset.yaml");
        let pod_grace: u64 = statefulset
            .lines()
            .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
            .and_then(|n| n.parse().ok())
            .expect("terminationGracePeriodSeconds");
        assert!(
            grace + 5 <= pod_grace,
            "{job}: grace_period {grace} s, pod {pod_grace} s"
        );
    }
}
