//! End to end against a Kafka-protocol broker in its own process (tansu,
//! with SQLite storage, whose high watermarks are right): `equipoise sql`
//! over a bounded topic of three partitions, and an exactly-once job
//! refused in one line (tansu has no transactions).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::common::{free_port, tool};

/// A tansu broker on a free loopback port, stopped when dropped.
pub(super) struct Tansu {
    binary: PathBuf,
    child: Child,
    pub(super) address: String,
    _dir: tempfile::TempDir,
}

impl Tansu {
    pub(super) fn start() -> Option<Self> {
        let binary = tool("tansu")?;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&binary)
            .current_dir(dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.sqlite"])
            .args(["--cluster-id", "equipoise-test", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start tansu: {e}"));
        let address = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {address}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self {
            binary,
            child,
            address,
            _dir: dir,
        })
    }

    pub(super) fn topic(&self, name: &str, partitions: u32) {
        let status = Command::new(&self.binary)
            .args(["topic", "create", "--broker"])
            .arg(format!("tcp://{}", self.address))
            .args(["--partitions", &partitions.to_string(), name])
            .stdout(Stdio::null())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "create topic {name}");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Record `i` of the test topic: one in 50 of class 1, its first features
/// shifted.
fn record(i: u64) -> String {
    let label = u64::from(i.is_multiple_of(50));
    let x = |k: u64| ((i * 7919 + k * 104_729) % 1000) as f64 / 250.0 - 2.0;
    format!(
        r#"{{"seq": {i}, "f1": {}, "f2": {}, "f3": {}, "label": {label}}}"#,
        x(1) + 1.5 * label as f64,
        x(2) + 1.0 * label as f64,
        x(3)
    )
}

async fn fill(address: &str, topic: &str, partitions: u64, records: std::ops::Range<u64>) {
    let payloads: Vec<String> = records.clone().map(record).collect();
    produce(
        address,
        topic,
        partitions as usize,
        records.start as usize,
        &payloads,
    )
    .await;
}

/// Produce `payloads` as records `first..` of `topic`, record `i` to
/// partition `i % partitions` with key `i`, and wait for every
/// acknowledgement.
pub(super) async fn produce(
    address: &str,
    topic: &str,
    partitions: usize,
    first: usize,
    payloads: &[String],
) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("linger.ms", "5")
        .create()
        .unwrap_or_else(|e| panic!("producer: {e}"));
    let mut pending = Vec::new();
    for (k, payload) in payloads.iter().enumerate() {
        let i = first + k;
        let key = i.to_string();
        match producer.send_result(
            FutureRecord::to(topic)
                .partition((i % partitions) as i32)
                .key(key.as_str())
                .payload(payload.as_str()),
        ) {
            Ok(delivery) => pending.push(delivery),
            Err((e, _)) => panic!("produce: {e}"),
        }
        if pending.len() >= 10_000 {
            for delivery in pending.drain(..) {
                assert!(
                    matches!(delivery.await, Ok(Ok(_))),
                    "record not acknowledged"
                );
            }
        }
    }
    for delivery in pending.drain(..) {
        assert!(
            matches!(delivery.await, Ok(Ok(_))),
            "record not acknowledged"
        );
    }
}

#[tokio::test]
async fn equipoise_sql_counts_every_record_and_every_minority_record_of_a_topic() {
    let Some(broker) = Tansu::start() else {
        return;
    };
    broker.topic("modules", 3);
    fill(&broker.address, "modules", 3, 0..5_000).await;
    let sql = format!(
        "CREATE EXTERNAL TABLE modules (seq BIGINT, f1 DOUBLE, f2 DOUBLE, f3 DOUBLE, label INT) \
         STORED AS KAFKA LOCATION 'modules' OPTIONS ('bootstrap.servers' '{}', 'start' 'earliest'); \
         SELECT count(*) AS n, sum(label) AS minority, count(DISTINCT seq) AS distinct_seq FROM modules",
        broker.address
    );
    let output = tokio::task::spawn_blocking(move || {
        super::common::equipoise(&["sql", "--format", "csv", &sql])
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.lines().nth(1), Some("5000,100,5000"), "{stdout}");
}

/// Exactly-once against a broker without transactions (tansu 0.6.0 answers
/// no EndTxn): the job ends at its first commit with one line naming the
/// broker's refusal, and nothing it wrote is committed as done.
#[tokio::test]
async fn exactly_once_against_a_broker_without_transactions_fails_in_one_line() {
    let Some(broker) = Tansu::start() else {
        eprintln!("skipped: tansu not installed (scripts/test installs it)");
        return;
    };
    broker.topic("readings", 1);
    broker.topic("readings.dead-letters", 1);
    broker.topic("predictions", 1);
    let lines = super::kafka::telemetry(0, 500)
        .await
        .unwrap_or_else(|e| panic!("telemetry: {e}"));
    produce(&broker.address, "readings", 1, 0, &lines).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let config = super::kafka::job_file(&broker.address, &dir);
    let output = Command::new(super::common::BIN)
        .args(["run", "--config"])
        .arg(&config)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("EQUIPOISE_CHECKPOINT__URL", dir.path().join("checkpoints"))
        .env("EQUIPOISE_CHECKPOINT__INTERVAL", "1s")
        .env("EQUIPOISE_DELIVERY__GUARANTEE", "exactly-once")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("equipoise run: {e}"));
    // It must end by itself, soon.
    let mut child = output;
    if super::common::exited_within(&mut child, Duration::from_secs(60)).is_none() {
        let _ = child.kill();
    }
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("equipoise run: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("cannot commit transaction") && errors[0].contains("EndTxn"),
        "{stderr}"
    );
}

/// The checkpointed example job over tansu, killed with SIGKILL at random
/// moments and restarted: every record is predicted and exactly the
/// predictions written past each restored checkpoint are repeated. The
/// job's consumer is a static group member (`group.instance.id`): a
/// restarted dynamic member does not get its partitions back from tansu
/// 0.6.0 (its SyncGroup answers with the evicted generation's
/// assignment), a static one rejoins as itself. The soak settings
/// (`SOAK_KILLS`, `SOAK_RECORDS`) apply, but a longer run over tansu is
/// not reliable (docs/configuration.md, "Crash tests and a soak").
#[tokio::test]
async fn a_static_member_job_killed_over_tansu_repeats_only_what_followed_its_checkpoint() {
    let Some(broker) = Tansu::start() else {
        eprintln!("skipped: tansu not installed (scripts/test installs it)");
        return;
    };
    let result = super::kafka::killed_and_restarted(
        &broker.address,
        |name, count| broker.topic(name, count.unsigned_abs()),
        super::kafka::setting("SOAK_RECORDS", 20_000),
        4,
        super::kafka::setting("SOAK_KILLS", 2),
        Some("equipoise-0"),
    )
    .await;
    if let Err(e) = result {
        panic!("{e}");
    }
}
