//! `equipoise run`, spawned as a user (or Kubernetes) would run it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::common::{
    BIN, equipoise, equipoise_with_env, free_port, http_get, sample, stderr, stdout, tool,
};

/// `(class, rows)` lines of a summary, and the total it announces.
fn parse_summary(text: &str) -> (Vec<(String, u64)>, u64) {
    let total = text
        .lines()
        .find_map(|l| {
            let rest = l.split(" after ").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .expect("summary has a row total");
    let classes = text
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("class ")?;
            let (class, rows) = rest.split_once(": ")?;
            Some((class.to_string(), rows.strip_suffix(" rows")?.parse().ok()?))
        })
        .collect();
    (classes, total)
}

#[test]
fn bounded_run_prints_a_summary_that_adds_up() {
    let output = equipoise(&[
        "run",
        "--rows",
        "30000",
        "--rate",
        "0",
        "--batch-size",
        "1000",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("finished after 30000 rows in 30 batches\n"),
        "{text}"
    );
    let (classes, total) = parse_summary(&text);
    assert_eq!(total, 30_000);
    assert_eq!(classes.iter().map(|(_, n)| n).sum::<u64>(), 30_000);
    assert_eq!(classes.len(), 2, "{text}");
    // The default job balances the stream with QC-SMOTE.
    assert!(
        text.contains("  class 1: ") && text.contains(" synthetic rows\n"),
        "{text}"
    );
    // About 2% faults before the documented shift at row 60,000.
    let faults = classes
        .iter()
        .find(|(c, _)| c == "1")
        .map(|(_, n)| *n)
        .unwrap_or(0);
    assert!(
        (450..750).contains(&faults),
        "{faults} faults in 30000 rows"
    );
}

#[test]
fn the_summary_reports_drift_against_the_documented_change_points() {
    let output = equipoise(&[
        "run",
        "--rows",
        "80000",
        "--rate",
        "0",
        "--batch-size",
        "2000",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("  documented change: class mix at row 60000\n"),
        "{text}"
    );
    // The class-prior monitor of the default job sees the 2% to 3.5% shift
    // within a few thousand rows, and nothing before it.
    let drift_rows: Vec<u64> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("drift: class_prior drift"))
        .filter_map(|l| {
            l.split(" at row ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .trim_end_matches(',')
                .parse()
                .ok()
        })
        .collect();
    assert!(!drift_rows.is_empty(), "{text}");
    assert!(
        drift_rows.iter().all(|r| (60_000..66_000).contains(r)),
        "{drift_rows:?}"
    );
    assert!(text.contains("rows after the class mix change"), "{text}");
    // The detector's prequential quality on the fault class, per stretch.
    let recalls: Vec<f64> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("detector, rows "))
        .filter_map(|l| l.split(" recall ").nth(1)?.split(',').next()?.parse().ok())
        .collect();
    assert_eq!(recalls.len(), 2, "{text}");
    assert!(
        recalls.iter().all(|r| (0.5..=1.0).contains(r)),
        "{recalls:?}"
    );
}

#[test]
fn the_model_is_saved_on_the_way_out_and_loaded_by_the_next_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model_dir = dir.path().to_str().expect("utf-8 path");
    let run = || {
        let output = equipoise(&[
            "run",
            "--rows",
            "10000",
            "--rate",
            "0",
            "--batch-size",
            "1000",
            "--metrics-addr",
            "127.0.0.1:0",
            "--model-dir",
            model_dir,
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        let snapshot: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("train_detector-0.json")).expect("model written"),
        )
        .expect("model is JSON");
        (
            stdout(&output),
            snapshot["rows_learned"].as_u64().expect("rows"),
        )
    };
    let version = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix("model version: "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no model version in {text}"))
    };
    let (first, learned_once) = run();
    assert!(learned_once >= 10_000, "{learned_once}");
    // The second run starts from the saved model and adds to it: rows and
    // version go on (a new champion or a retrain adds to the version).
    let (second, learned_twice) = run();
    assert!(
        learned_twice > learned_once + 9_000,
        "{learned_once} then {learned_twice}"
    );
    assert!(version(&second) >= version(&first), "{first}\n{second}");
    let bad = equipoise(&["run", "--rows", "10", "--model-every", "0"]);
    assert!(!bad.status.success());
}

#[test]
fn runs_are_deterministic_per_seed() {
    let run = |seed: &str, batch: &str| {
        let output = equipoise(&[
            "run",
            "--rows",
            "20000",
            "--rate",
            "0",
            "--seed",
            seed,
            "--batch-size",
            batch,
            "--metrics-addr",
            "127.0.0.1:0",
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        parse_summary(&stdout(&output)).0
    };
    let first = run("7", "1000");
    assert_eq!(first, run("7", "333"), "batch size changed the data");
    assert_ne!(first, run("8", "1000"), "seed did not change the data");
}

/// The built-in job is its embedded job file: the shipped copy run with
/// --config gives the same summary; a copy's [generator] and [pipeline]
/// tables (the operators' option keys) and EQUIPOISE_GENERATOR__* change
/// what runs; a wrong key is a one-line error naming its table.
#[test]
fn the_built_in_job_is_its_job_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = root.join("examples/telemetry-job.toml");
    let file = file.to_string_lossy();
    let summary = |args: &[&str], env: &[(String, String)]| {
        let mut all = vec![
            "run",
            "--rows",
            "12000",
            "--rate",
            "0",
            "--metrics-addr",
            "127.0.0.1:0",
        ];
        all.extend_from_slice(args);
        let output = equipoise_with_env(&all, env);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        parse_summary(&stdout(&output)).0
    };
    let embedded = summary(&[], &[]);
    assert_eq!(embedded, summary(&["--config", &file], &[]));
    let reseeded = summary(&[], &[("EQUIPOISE_GENERATOR__SEED".into(), "7".into())]);
    assert_ne!(
        embedded, reseeded,
        "the generator's seed comes from the job file's table"
    );
    assert_eq!(reseeded, summary(&["--seed", "7"], &[]));

    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(root.join("examples/telemetry-job.toml")).expect("job file");
    // No oversampler: no synthetic rows in the summary.
    let plain = dir.path().join("plain.toml");
    std::fs::write(
        &plain,
        text.replace("[pipeline.qc_smote]", "[pipeline.unused]"),
    )
    .expect("write");
    let output = equipoise(&["run", "--config", &plain.to_string_lossy(), "--check"]);
    let err = stderr(&output);
    assert!(!output.status.success());
    assert!(
        err.contains("[pipeline]") && err.contains("unused"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    std::fs::write(
        &plain,
        text.replace("[pipeline.qc_smote]\n", "[pipeline.qc_smote]\nk = 0\n"),
    )
    .expect("write");
    let output = equipoise(&["run", "--config", &plain.to_string_lossy(), "--check"]);
    assert!(
        stderr(&output).contains("qc_smote: k must be at least 1"),
        "{}",
        stderr(&output)
    );
    let without = text.replace(
        "[pipeline.qc_smote]\nexclude = [\"seq\", \"machine_id\"]\nmode = \"stream\"\n",
        "",
    );
    assert_ne!(without, text);
    std::fs::write(&plain, without).expect("write");
    let output = equipoise(&["run", "--config", &plain.to_string_lossy(), "--check"]);
    assert!(
        stdout(&output).contains("class_monitor -> icost -> train_detector -> drift_monitor"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn metrics_are_served_while_the_job_runs_and_sigterm_stops_it_cleanly() {
    let port = free_port();
    let child = Command::new(BIN)
        .args([
            "run",
            "--rate",
            "20000",
            "--batch-size",
            "1000",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn equipoise run");

    // Wait until both classes have been counted, QC-SMOTE has made rows and
    // every operator has finished a batch. Each operator publishes its
    // series as its own batches finish, so a scrape can fall between two
    // operators' first batches: wait for all the series checked below.
    let deadline = Instant::now() + Duration::from_secs(30);
    let fault_series = "equipoise_rows_processed_total{class=\"1\",operator=\"class_monitor-0\"}";
    let synthetic_series =
        "equipoise_synthetic_rows_total{class=\"1\",kind=\"interpolated\",operator=\"qc_smote-0\"}";
    let weighed_series =
        "equipoise_complexity_rows_total{category=\"pure\",class=\"1\",operator=\"icost-0\"}";
    let overlap_series = "equipoise_minority_overlap{operator=\"icost-0\"}";
    let class_prior_series = "equipoise_drift_detector_state{class=\"1\",detector=\"adwin\",operator=\"drift_monitor-0\",signal=\"class_prior\"}";
    let operators = [
        "class_monitor-0",
        "qc_smote-0",
        "icost-0",
        "drift_monitor-0",
    ];
    let batches_of = |body: &str, operator: &str| {
        sample(
            body,
            &format!("equipoise_batch_duration_seconds_count{{operator=\"{operator}\"}}"),
        )
    };
    let exposition = loop {
        if let Some(body) = http_get(port, "/metrics")
            && sample(&body, fault_series).is_some()
            && sample(&body, synthetic_series).is_some_and(|n| n > 0.0)
            && sample(&body, weighed_series).is_some()
            && sample(&body, overlap_series).is_some()
            && sample(&body, class_prior_series).is_some()
            && operators
                .iter()
                .all(|operator| batches_of(&body, operator).is_some_and(|n| n > 0.0))
        {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the job's series did not all appear in time: {}",
            http_get(port, "/metrics").unwrap_or_default()
        );
        sleep(Duration::from_millis(100));
    };
    let normal = sample(
        &exposition,
        "equipoise_rows_processed_total{class=\"0\",operator=\"class_monitor-0\"}",
    )
    .expect("normal rows are counted");
    assert!(normal > 0.0);
    let share = sample(
        &exposition,
        "equipoise_class_share_ratio{class=\"1\",operator=\"class_monitor-0\"}",
    )
    .expect("fault share is exported");
    assert!(share > 0.0 && share < 0.2, "fault share {share}");
    assert!(exposition.contains("# TYPE equipoise_batches_processed_total counter"));
    assert!(exposition.contains("# TYPE equipoise_imbalance_ratio gauge"));
    assert!(exposition.contains("# TYPE equipoise_synthetic_candidates_rejected_total counter"));
    let overlap = sample(&exposition, overlap_series).expect("the overlap gauge is exported");
    assert!((0.0..=1.0).contains(&overlap), "overlap {overlap}");
    // The drift monitor's state is one of none (0), warning (1), drift (2).
    let state = sample(&exposition, class_prior_series);
    assert!(
        state.is_some_and(|s| [0.0, 1.0, 2.0].contains(&s)),
        "{state:?}"
    );
    assert_eq!(http_get(port, "/healthz").as_deref(), Some("ok\n"));
    assert_eq!(http_get(port, "/readyz").as_deref(), Some("ready\n"));
    check_exposition_with_promtool(&exposition);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let output = child.wait_with_output().expect("equipoise run exits");
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        stderr(&output)
    );
    let text = stdout(&output);
    assert!(text.starts_with("stopped after "), "{text}");
    let (classes, total) = parse_summary(&text);
    assert_eq!(classes.iter().map(|(_, n)| n).sum::<u64>(), total);
    // Whole batches only: the batch in flight finished, none was cut.
    assert_eq!(total % 1000, 0, "{text}");
    assert!(text.contains("rows per second: "), "{text}");
}

#[test]
fn a_taken_metrics_port_is_a_one_line_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let output = equipoise(&["run", "--rows", "10", "--metrics-addr", &addr]);
    assert!(!output.status.success());
    let err = stderr(&output);
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(error_lines.len(), 1, "{err}");
    assert!(error_lines[0].contains("cannot listen on"), "{err}");
}

/// Prometheus' own linter: `_total` on counters, HELP on every family, units.
fn check_exposition_with_promtool(exposition: &str) {
    use std::io::Write;
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write exposition");
    let output = child.wait_with_output().expect("promtool exits");
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `equipoise run --config job.toml --check` on a job file `toml` in `dir`
/// whose SQL inserts the detector's predictions, with `tail` appended.
fn check_job(dir: &Path, toml: &str, tail: &str) -> std::process::Output {
    check_job_with_env(dir, toml, tail, &[])
}

/// [`check_job`] with environment variables `env` set.
pub(super) fn check_job_with_env(
    dir: &Path,
    toml: &str,
    tail: &str,
    env: &[(String, String)],
) -> std::process::Output {
    let sql = format!(
        "CREATE UNBOUNDED EXTERNAL TABLE readings (f1 DOUBLE, f2 DOUBLE, label INT) \
         STORED AS KAFKA LOCATION 'readings' OPTIONS ('bootstrap.servers' '127.0.0.1:1'); \
         CREATE EXTERNAL TABLE predictions (label INT, prediction INT) \
         STORED AS KAFKA LOCATION 'predictions' OPTIONS ('bootstrap.servers' '127.0.0.1:1'); \
         INSERT INTO predictions SELECT label, prediction \
         FROM train_detector('readings', 'label') {tail};"
    );
    std::fs::write(dir.join("job.sql"), sql).expect("job.sql");
    let path = dir.join("job.toml");
    std::fs::write(&path, toml).expect("job.toml");
    equipoise_with_env(
        &["run", "--config", &path.to_string_lossy(), "--check"],
        env,
    )
}

#[test]
fn check_prints_the_resolved_job_and_refuses_what_cannot_be_checkpointed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let toml = format!(
        "sql_file = \"job.sql\"\n[checkpoint]\nurl = \"{}\"\ninterval = \"2s\"\n",
        store.display()
    );
    let output = check_job(dir.path(), &toml, "");
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    assert!(out.contains("interval = \"2s\""), "{out}");
    assert!(out.contains("grace_period = \"20s\""), "{out}");
    assert!(out.contains("TrainExec"), "{out}");
    assert!(out.contains("KafkaScanExec"), "{out}");
    assert!(out.contains("would start fresh"), "{out}");

    // A filter runs as one that passes each batch on at once.
    let output = check_job(dir.path(), &toml, "WHERE label IS NOT NULL");
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    assert!(out.contains("StreamFilterExec: label@"), "{out}");
    assert!(!out.contains(" FilterExec"), "{out}");

    // Two chains into one sink (a union) cannot be cut consistently.
    let output = check_job(
        dir.path(),
        &toml,
        "UNION ALL SELECT label, prediction FROM train_detector('readings', 'label')",
    );
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("one chain of operators"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // Without [checkpoint] the union is fine.
    let output = check_job(
        dir.path(),
        "sql_file = \"job.sql\"\n",
        "UNION ALL SELECT label, prediction FROM train_detector('readings', 'label')",
    );
    assert!(output.status.success(), "{}", stderr(&output));

    // An unknown key names the file and the key, in one line.
    let output = check_job(
        dir.path(),
        "sql_file = \"job.sql\"\n[server]\nadress = \"x\"\n",
        "",
    );
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("job.toml") && err.contains("adress"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // Exactly-once needs checkpoints, and two of them kept, each refusal
    // in one line naming the file.
    for (toml, expected) in [
        (
            "sql_file = \"job.sql\"\n[delivery]\nguarantee = \"exactly-once\"\n".to_string(),
            "set [checkpoint] url",
        ),
        (
            format!(
                "sql_file = \"job.sql\"\n[checkpoint]\nurl = \"{}\"\nkeep = 1\n\
                 [delivery]\nguarantee = \"exactly-once\"\n",
                store.display()
            ),
            "keep >= 2",
        ),
        (
            format!(
                "sql_file = \"job.sql\"\n[checkpoint]\nurl = \"{}\"\ninterval = \"40s\"\n\
                 [delivery]\nguarantee = \"exactly-once\"\n",
                store.display()
            ),
            "transaction.timeout.ms (60000 ms)",
        ),
    ] {
        let output = check_job(dir.path(), &toml, "");
        assert!(!output.status.success(), "{toml}");
        let err = stderr(&output);
        assert!(err.contains(expected), "{toml}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // With them, --check names the transactional id it would use (the
    // source's group and the sink's topic), without touching a broker.
    let output = check_job(
        dir.path(),
        &format!(
            "sql_file = \"job.sql\"\n[checkpoint]\nurl = \"{}\"\ninterval = \"1s\"\n\
             [delivery]\nguarantee = \"exactly-once\"\n",
            store.display()
        ),
        "",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("transactional.id equipoise-readings.predictions,"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn the_job_sql_takes_secrets_from_the_environment_and_names_a_missing_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sql = "CREATE UNBOUNDED EXTERNAL TABLE readings (f1 DOUBLE, label INT) STORED AS KAFKA \
               LOCATION 'readings' OPTIONS ('bootstrap.servers' '${TEST_BROKERS}', \
               'sasl.username' 'job', 'sasl.password' '${TEST_BROKER_PASSWORD}'); \
               CREATE EXTERNAL TABLE predictions (label INT, prediction INT) STORED AS KAFKA \
               LOCATION 'predictions' OPTIONS ('bootstrap.servers' '${TEST_BROKERS}'); \
               INSERT INTO predictions SELECT label, prediction \
               FROM train_detector('readings', 'label');";
    std::fs::write(dir.path().join("job.sql"), sql).expect("job.sql");
    let path = dir.path().join("job.toml");
    std::fs::write(&path, "sql_file = \"job.sql\"\n").expect("job.toml");
    let config = path.to_string_lossy().into_owned();
    let run = |password: Option<&str>| {
        let mut command = Command::new(BIN);
        command
            .args(["run", "--config", &config, "--check"])
            .env("TEST_BROKERS", "127.0.0.1:1")
            .env_remove("TEST_BROKER_PASSWORD");
        if let Some(password) = password {
            command.env("TEST_BROKER_PASSWORD", password);
        }
        command.output().expect("the equipoise binary runs")
    };
    let output = run(Some("s3cret-value"));
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    assert!(out.contains("KafkaScanExec"), "{out}");
    // The value is used, never printed.
    assert!(!out.contains("s3cret-value"), "{out}");
    let output = run(None);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("${TEST_BROKER_PASSWORD} is not set in the environment"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
