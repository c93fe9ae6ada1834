//! Helpers shared by the integration tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

/// `EXPLAIN ANALYZE` of `sql` as DataFusion prints it: the plan with each
/// operator's metrics.
pub async fn explain_analyze(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
) -> datafusion::common::Result<String> {
    let batches = ctx
        .sql(&format!("EXPLAIN ANALYZE {sql}"))
        .await?
        .collect()
        .await?;
    Ok(datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
}

pub const BIN: &str = env!("CARGO_BIN_EXE_equipoise");

/// A file of the shared data sets, or `None` (with a note) when the shared
/// folder is absent, so the calling test skips instead of failing.
pub fn shared_data(relative: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(relative);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipped: shared data set {} is absent", path.display());
        None
    }
}

pub fn equipoise(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the equipoise binary runs")
}

/// [`equipoise`] with environment variables `env` set.
pub fn equipoise_with_env(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(BIN)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("the equipoise binary runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` on 127.0.0.1:port; the body, or `None` if nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    if chunked {
        dechunk(body)
    } else {
        Some(body.to_string())
    }
}

/// The body of a chunked HTTP/1.1 response.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// The value of the first sample of `series` (a metric name with labels, as
/// printed) in a text exposition.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// The path of an external tool the tests use, or `None` (with a note) when
/// it is not installed and `EQUIPOISE_REQUIRE_TOOLS` is unset. `scripts/test`
/// installs the tools and sets that variable, so there a missing tool fails.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("EQUIPOISE_REQUIRE_TOOLS").is_none(),
            "{name} is required but not installed"
        );
        eprintln!("skipped: {name} is not installed (scripts/test installs it)");
    }
    found
}

/// Every series of the metric `family` in `runtime`'s registry: its labels
/// and its value (a counter's when `counter`, else a gauge's).
pub fn gathered(
    runtime: &equipoise::JobRuntime,
    family: &str,
    counter: bool,
) -> Vec<(std::collections::BTreeMap<String, String>, f64)> {
    runtime
        .registry()
        .gather()
        .iter()
        .filter(|f| f.name() == family)
        .flat_map(|f| f.get_metric().iter())
        .map(|m| {
            let labels = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            let value = if counter {
                m.get_counter().get_value()
            } else {
                m.get_gauge().get_value()
            };
            (labels, value)
        })
        .collect()
}

/// Wait for `child` to exit by itself within `wait`: whether it succeeded,
/// `None` if it did not exit.
pub fn exited_within(child: &mut std::process::Child, wait: Duration) -> Option<bool> {
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status.success());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}
