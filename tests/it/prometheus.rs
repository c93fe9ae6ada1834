//! A real Prometheus server scrapes a running `equipoise run` on 127.0.0.1
//! and loads deploy/prometheus/alerts.yml; its HTTP API must then hold the
//! per-class series with non-zero values and report the rules healthy.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::common::{BIN, free_port, http_get, tool};

/// Kills the process when dropped, so a failing assertion leaves nothing
/// running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /api/v1/...` on Prometheus, parsed, when it answers with success.
fn api(port: u16, path: &str) -> Option<serde_json::Value> {
    let body = http_get(port, path)?;
    let value: serde_json::Value = serde_json::from_str(&body).ok()?;
    (value["status"] == "success").then_some(value)
}

/// Class label and value of each series of an instant-query result.
fn series(result: &serde_json::Value) -> Vec<(String, f64)> {
    result["data"]["result"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|s| {
                    let class = s["metric"]["class"].as_str()?.to_string();
                    let value = s["value"][1].as_str()?.parse().ok()?;
                    Some((class, value))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_prometheus_server_scrapes_the_job_and_loads_the_alert_rules() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    let job_port = free_port();
    let _job = Running(
        Command::new(BIN)
            .args([
                "run",
                "--rate",
                "20000",
                "--batch-size",
                "1000",
                "--metrics-addr",
                &format!("127.0.0.1:{job_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn equipoise run"),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: equipoise\n    static_configs:\n      \
             - targets: ['127.0.0.1:{job_port}']\n",
            rules.display()
        ),
    )
    .expect("write config");
    let prometheus_port = free_port();
    let _server = Running(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn prometheus"),
    );

    // The first scrape becomes queryable after a few seconds: poll, until
    // a scrape holds both classes' row counts, the decayed class share and
    // the drift monitor's series (each operator publishes its series as its
    // own first batch finishes, so an early scrape may hold only some).
    let query = |q: &str| {
        api(prometheus_port, &format!("/api/v1/query?query={q}"))
            .map(|r| series(&r))
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let (per_class, shares, drift_series) = loop {
        let per_class = query("equipoise_rows_processed_total");
        let shares = query("equipoise_class_share_ratio");
        let drift_series = query("equipoise_drift_detector_state");
        if per_class.len() == 2
            && per_class.iter().all(|(_, v)| *v > 0.0)
            && shares.iter().any(|(c, _)| c == "1")
            && drift_series.len() >= 2
        {
            break (per_class, shares, drift_series);
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never held the job's series: rows {per_class:?}, shares {shares:?}, \
             drift {drift_series:?}"
        );
        sleep(Duration::from_millis(250));
    };
    let classes: Vec<&str> = per_class.iter().map(|(c, _)| c.as_str()).collect();
    assert!(
        classes.contains(&"0") && classes.contains(&"1"),
        "{classes:?}"
    );
    let normal = per_class
        .iter()
        .find(|(c, _)| c == "0")
        .map_or(0.0, |s| s.1);
    let faults = per_class
        .iter()
        .find(|(c, _)| c == "1")
        .map_or(0.0, |s| s.1);
    assert!(normal > faults, "{per_class:?}");
    assert!(
        shares.iter().any(|(c, v)| c == "1" && *v > 0.0 && *v < 0.2),
        "{shares:?}"
    );
    assert!(
        drift_series
            .iter()
            .all(|(_, state)| [0.0, 1.0, 2.0].contains(state)),
        "{drift_series:?}"
    );

    // Every alert rule loaded and evaluated without error.
    let expected = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/alerts.yml"
    ))
    .expect("alerts.yml")
    .lines()
    .filter(|line| line.trim_start().starts_with("- alert:"))
    .count();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rules: Vec<(String, String)> = api(prometheus_port, "/api/v1/rules")
            .and_then(|r| {
                let groups = r["data"]["groups"].as_array()?.clone();
                Some(
                    groups
                        .iter()
                        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                        .map(|rule| {
                            (
                                rule["name"].as_str().unwrap_or_default().to_string(),
                                rule["health"].as_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                )
            })
            .unwrap_or_default();
        if rules.len() == expected && rules.iter().all(|(_, health)| health == "ok") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alert rules not all loaded and healthy: {rules:?}"
        );
        sleep(Duration::from_millis(250));
    }
}
