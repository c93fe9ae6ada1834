//! Checkpoints in an S3 bucket, against a real S3-protocol server in its
//! own process (moto's `moto_server`): the store writes, keeps the newest
//! N, reads the newest back and keeps scoped stores apart; and `equipoise
//! run --check` finds the bucket from the standard `AWS_*` environment
//! variables. (Damaged checkpoints are the same code on every backend:
//! the store's unit tests cover them on a local directory.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use datafusion::common::Result;
use equipoise::operators::runtime::{CheckpointStore, JobSnapshot, OperatorSnapshot};

use super::common::{free_port, stdout, tool};

/// A moto S3 server on a free loopback port, with one bucket; stopped when
/// dropped.
struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    fn start(bucket: &str) -> Option<Self> {
        let binary = tool("moto_server")?;
        let port = free_port();
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start moto_server: {e}"));
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Create the bucket: a bare PUT (moto does not check signatures).
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        )
        .expect("request");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "create bucket: {answer}"
        );
        Some(server)
    }

    /// The object_store settings (as `AWS_*` variables) that reach it.
    fn settings(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_ACCESS_KEY_ID", "test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn snapshot(value: u64) -> Result<JobSnapshot> {
    let mut snapshot = JobSnapshot::default();
    snapshot.operators.insert(
        "counter-0".to_string(),
        OperatorSnapshot::encode("counter-0", "counter", 1, &value)?,
    );
    Ok(snapshot)
}

#[tokio::test]
async fn checkpoints_in_an_s3_bucket_are_kept_read_back_and_scoped() -> Result<()> {
    let Some(server) = S3Server::start("checkpoints") else {
        return Ok(());
    };
    let store = CheckpointStore::open_with("s3://checkpoints/job", 2, server.settings())?;
    assert_eq!(
        store.latest().await?,
        None,
        "an empty bucket: no checkpoint"
    );
    for epoch in 1..=4 {
        store.write(epoch, &snapshot(epoch * 10)?).await?;
    }
    assert_eq!(store.epochs().await?, vec![3, 4], "the newest two are kept");
    let latest = store.latest().await?.expect("a checkpoint");
    assert_eq!((latest.epoch, latest.snapshot), (4, snapshot(40)?));

    // A scoped store (a Kafka partition's state) is its own series and does
    // not show in its parent's.
    let partition = store.scoped("readings-3");
    partition.write(9, &snapshot(90)?).await?;
    assert_eq!(partition.epochs().await?, vec![9]);
    assert_eq!(store.epochs().await?, vec![3, 4]);

    // Another job's store in the same bucket reads back what was written.
    let again = CheckpointStore::open_with("s3://checkpoints/job", 2, server.settings())?;
    assert_eq!(again.latest().await?.map(|c| c.epoch), Some(4));
    Ok(())
}

#[test]
fn equipoise_run_check_reads_an_s3_store_from_the_environment() {
    let Some(server) = S3Server::start("jobs") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let output = super::cli_run::check_job_with_env(
        dir.path(),
        "sql_file = \"job.sql\"\n[checkpoint]\nurl = \"s3://jobs/detector\"\n",
        "",
        &server.settings(),
    );
    let out = stdout(&output);
    assert!(
        output.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.contains("no checkpoint in s3://jobs/detector"), "{out}");
}
