//! Replicas of one job with state per Kafka partition, as processes: the
//! example detector job on a 4-partition topic, two replicas, one killed
//! with SIGKILL mid-stream; its partitions are taken over from their
//! checkpoints; new records after that rebalance are predicted once each.
//! Over tansu (100,000 records) a third replica joins for the takeover
//! (see the test for the broker's part in that); over librdkafka's mock
//! cluster (40,000 records) the survivor alone takes every partition. The replicas' logs and checkpoints are kept with
//! `SCALE_OUT_KEEP=1`; `SCALE_OUT_LOG` sets their `RUST_LOG` and
//! `SCALE_OUT_RDKAFKA_DEBUG` librdkafka's `debug` (e.g. `cgrp`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use datafusion::common::{DataFusionError, Result};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::kafka::{finish, signal, telemetry};
use super::tansu::{Tansu, produce};

const PARTITIONS: usize = 4;
/// How long a phase may take before the test gives up.
const PHASE: Duration = Duration::from_secs(600);

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The predictions topic as read so far: `(source partition, source
/// offset)` of every prediction, in order.
struct Predictions {
    consumer: BaseConsumer,
    seen: Vec<(i64, i64)>,
}

impl Predictions {
    fn new(address: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", address)
            .set("group.id", "test-scale-out-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap_or_else(|e| panic!("consumer: {e}"));
        let mut list = TopicPartitionList::new();
        if let Err(e) = list.add_partition_offset("predictions", 0, Offset::Beginning) {
            panic!("{e}");
        }
        if let Err(e) = consumer.assign(&list) {
            panic!("assign: {e}");
        }
        Self {
            consumer,
            seen: Vec::new(),
        }
    }

    fn poll(&mut self) {
        if let Some(Ok(message)) = self.consumer.poll(Duration::from_millis(100)) {
            let value: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap_or_default())
                    .unwrap_or(serde_json::Value::Null);
            match (
                value["source_partition"].as_i64(),
                value["source_offset"].as_i64(),
            ) {
                (Some(p), Some(o)) => self.seen.push((p, o)),
                _ => panic!("a prediction without its source: {value}"),
            }
        }
    }

    fn distinct(&self) -> usize {
        self.seen.iter().collect::<BTreeSet<_>>().len()
    }

    /// Read until `distinct()` reaches `n`; whether it did within `PHASE`.
    fn read_until_distinct(&mut self, n: usize) -> bool {
        let deadline = Instant::now() + PHASE;
        let mut distinct: BTreeSet<(i64, i64)> = self.seen.iter().copied().collect();
        let mut read = self.seen.len();
        while distinct.len() < n && Instant::now() < deadline {
            self.poll();
            distinct.extend(self.seen[read..].iter().copied());
            read = self.seen.len();
        }
        distinct.len() >= n
    }

    /// Read until nothing arrives for `quiet`.
    fn read_until_quiet(&mut self, quiet: Duration) {
        let mut last = Instant::now();
        let mut count = self.seen.len();
        while last.elapsed() < quiet {
            self.poll();
            if self.seen.len() > count {
                count = self.seen.len();
                last = Instant::now();
            }
        }
    }
}

/// The example job with state per partition, checkpoints every second
/// into `dir/checkpoints` (shared by every replica).
fn job_files(address: &str, dir: &Path) -> PathBuf {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/kafka-job.sql"
    ))
    .unwrap_or_else(|e| panic!("examples/kafka-job.sql: {e}"));
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"));
    };
    let mut script = example.replace("127.0.0.1:9092", address);
    if let Ok(debug) = std::env::var("SCALE_OUT_RDKAFKA_DEBUG") {
        script = script.replace(
            "'format' 'json',\n    'start'",
            &format!("'format' 'json',\n    'debug' '{debug}',\n    'start'"),
        );
    }
    write("job.sql", script);
    write(
        "job.toml",
        format!(
            "sql_file = \"job.sql\"\n\
             [checkpoint]\nurl = \"{}\"\ninterval = \"1s\"\n\
             [server]\naddr = \"127.0.0.1:0\"\n\
             [scale_out]\nstate = \"per-partition\"\n",
            dir.join("checkpoints").display()
        ),
    );
    dir.join("job.toml")
}

/// A replica: `equipoise run --config job.toml`, its log in `dir/<name>.log`.
fn replica(config: &Path, dir: &Path, name: &str) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))
        .unwrap_or_else(|e| panic!("log file: {e}"));
    Command::new(super::common::BIN)
        .args(["run", "--config"])
        .arg(config)
        .env(
            "RUST_LOG",
            std::env::var("SCALE_OUT_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn equipoise run: {e}"))
}

/// Kills the replicas still running when the test ends (a failed assertion
/// must not leave them behind).
struct Reaper(Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The partitions replica `name` holds now, by its log.
fn holding(dir: &Path, name: &str) -> BTreeSet<i64> {
    let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let mut held = BTreeSet::new();
    for line in log.lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let fields = &value["fields"];
        match fields["message"].as_str() {
            Some("partition assigned; starting its plan") => {
                held.extend(fields["partition"].as_i64());
            }
            Some("partition plan ended") => {
                if let Some(p) = fields["partition"].as_i64() {
                    held.remove(&p);
                }
            }
            _ => {}
        }
    }
    held
}

/// How many revocations replica `name`'s log shows.
fn revocations(dir: &Path, name: &str) -> usize {
    std::fs::read_to_string(dir.join(format!("{name}.log")))
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("partitions revoked; finishing their plans"))
        .count()
}

/// Wait until the replicas `names` hold every partition between them,
/// each at least one: the group has settled.
fn wait_for_balance(dir: &Path, names: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let held: Vec<BTreeSet<i64>> = names.iter().map(|n| holding(dir, n)).collect();
        let all: BTreeSet<i64> = held.iter().flatten().copied().collect();
        let count: usize = held.iter().map(BTreeSet::len).sum();
        if all.len() == PARTITIONS && count == PARTITIONS && held.iter().all(|h| !h.is_empty()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas {names:?} did not settle on the {PARTITIONS} partitions: {held:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The position (next offset) of each partition in its newest checkpoint.
fn checkpointed(dir: &Path) -> BTreeMap<i64, i64> {
    let mut positions = BTreeMap::new();
    for partition in 0..PARTITIONS as i64 {
        let folder = dir
            .join("checkpoints")
            .join(format!("readings-{partition}"));
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let Some(text) = files.last().and_then(|f| std::fs::read_to_string(f).ok()) else {
            continue;
        };
        let Some((_, body)) = text.split_once('\n') else {
            continue;
        };
        let body: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        if let Some(next) =
            body["operators"]["kafka_source-0"]["state"][partition.to_string()].as_i64()
        {
            positions.insert(partition, next);
        }
    }
    positions
}

/// Predictions per partition beyond the first of each offset.
fn repeats(seen: &[(i64, i64)]) -> BTreeMap<i64, usize> {
    let mut once = BTreeSet::new();
    let mut repeated = BTreeMap::new();
    for position in seen {
        if !once.insert(*position) {
            *repeated.entry(position.0).or_insert(0) += 1;
        }
    }
    repeated
}

/// Who takes the killed replica's partitions.
#[derive(Clone, Copy, PartialEq)]
enum Takeover {
    /// The survivor alone, at the rebalance that evicts the dead member.
    Survivor,
    /// The survivor and a third replica whose join starts a new generation.
    NewReplica,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_take_over_a_killed_replicas_partitions_from_their_checkpoints() -> Result<()> {
    let Some(broker) = Tansu::start() else {
        return Ok(());
    };
    // tansu 0.6.0 does not hand a dead member's partitions to the survivor
    // by itself: after evicting it, the group keeps its generation and
    // SyncGroup returns the survivor's old assignment, whatever the leader
    // assigned (librdkafka's cgrp log shows both); a member joining starts
    // a new generation. So here a third replica joins after the eviction.
    killed_and_taken_over(
        &broker.address,
        |name, partitions| broker.topic(name, partitions as u32),
        100_000,
        Takeover::NewReplica,
    )
    .await
}

/// The same against librdkafka's mock cluster, whose group coordinator
/// expires the killed member and lets the survivor's assignment stand: the
/// survivor alone takes every partition. (The mock serves about 16,000
/// records a partition, so fewer records.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivor_alone_takes_a_killed_replicas_partitions_over() -> Result<()> {
    let broker = super::kafka::Broker::start();
    killed_and_taken_over(
        &broker.servers(),
        |name, partitions| broker.topic(name, partitions),
        40_000,
        Takeover::Survivor,
    )
    .await
}

/// Two replicas of the example job with state per partition over
/// `records` records in `PARTITIONS` partitions; the second is killed
/// mid-stream, its partitions are taken over as `takeover` says; every
/// record is predicted, the moved partitions repeat exactly what the
/// killed replica wrote past their checkpoints, and records after the
/// rebalance are predicted once.
async fn killed_and_taken_over(
    address: &str,
    topic: impl Fn(&str, i32),
    records: usize,
    takeover: Takeover,
) -> Result<()> {
    topic("readings", PARTITIONS as i32);
    topic("readings.dead-letters", 1);
    topic("predictions", 1);
    let lines = telemetry(0, records as u64).await?;
    let mut dir = tempfile::tempdir().map_err(external)?;
    // The replicas' logs and checkpoints, kept for a look when asked.
    dir.disable_cleanup(std::env::var_os("SCALE_OUT_KEEP").is_some());
    let config = job_files(address, dir.path());
    let mut predictions = Predictions::new(address);

    // Two replicas share the partitions; the records arrive once both
    // hold theirs, and the second is killed mid-stream.
    let first = replica(&config, dir.path(), "first");
    let second = replica(&config, dir.path(), "second");
    let mut reaper = Reaper(vec![first.id(), second.id()]);
    wait_for_balance(dir.path(), &["first", "second"]);
    let producing = tokio::spawn({
        let address = address.to_string();
        async move {
            for (k, chunk) in lines.chunks(5_000).enumerate() {
                produce(&address, "readings", PARTITIONS, k * 5_000, chunk).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let both = tokio::task::block_in_place(|| predictions.read_until_distinct(records * 3 / 10));
    assert!(both, "the two replicas wrote 30% of the predictions");
    let killed_partitions = holding(dir.path(), "second");
    let revocations_before_kill = revocations(dir.path(), "first");
    signal(&second, "-KILL");
    // The replicas still running are reaped on every way out.
    let _ = finish(second).await;
    // Where each partition resumes, and what the killed replica wrote past
    // it: those are the predictions its partitions' new owner repeats.
    let resume = checkpointed(dir.path());
    tokio::task::block_in_place(|| predictions.read_until_quiet(Duration::from_secs(2)));
    assert!(
        !killed_partitions.is_empty(),
        "the second replica was given partitions:\n{}",
        std::fs::read_to_string(dir.path().join("second.log")).unwrap_or_default()
    );
    let mut expected: BTreeMap<i64, usize> = BTreeMap::new();
    for (p, o) in BTreeSet::<(i64, i64)>::from_iter(predictions.seen.iter().copied()) {
        if killed_partitions.contains(&p) && o >= resume.get(&p).copied().unwrap_or(0) {
            *expected.entry(p).or_insert(0) += 1;
        }
    }
    let before_takeover = repeats(&predictions.seen);
    if producing.await.is_err() {
        panic!("the producing task failed");
    }

    let mut running = vec![("first", first)];
    if takeover == Takeover::NewReplica {
        // The third joins once the broker has evicted the dead member (the
        // survivor went through a rebalance): joining before, its
        // assignment would still count the dead member, whose share tansu
        // then never hands on.
        let deadline = Instant::now() + Duration::from_secs(60);
        while revocations(dir.path(), "first") == revocations_before_kill
            || holding(dir.path(), "first").is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "the broker did not evict the killed replica"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let third = replica(&config, dir.path(), "third");
        reaper.0.push(third.id());
        running.push(("third", third));
    }
    let covered = tokio::task::block_in_place(|| predictions.read_until_distinct(records));
    assert!(
        covered,
        "every record has a prediction ({} of {records}); first replica:\n{}",
        predictions.distinct(),
        std::fs::read_to_string(dir.path().join("first.log")).unwrap_or_default()
    );
    tokio::task::block_in_place(|| predictions.read_until_quiet(Duration::from_secs(3)));
    if takeover == Takeover::Survivor {
        assert_eq!(
            holding(dir.path(), "first").len(),
            PARTITIONS,
            "the survivor holds every partition"
        );
    }
    let mut after: BTreeMap<i64, usize> = repeats(&predictions.seen);
    for (p, n) in &before_takeover {
        if let Some(total) = after.get_mut(p) {
            *total -= n;
        }
    }
    after.retain(|_, n| *n > 0);
    assert_eq!(
        after, expected,
        "the new owners repeat exactly what the killed replica wrote past each moved \
         partition's checkpoint (resume positions {resume:?}, killed replica's partitions \
         {killed_partitions:?})"
    );

    // New records after the rebalance are predicted once each.
    let more_records = records / 5;
    let before_more = repeats(&predictions.seen);
    let more = telemetry(records as u64, more_records as u64)
        .await
        .unwrap_or_else(|e| panic!("telemetry: {e}"));
    produce(address, "readings", PARTITIONS, records, &more).await;
    let total = records + more_records;
    let covered = tokio::task::block_in_place(|| predictions.read_until_distinct(total));
    assert!(
        covered,
        "every record has a prediction after the rebalance ({} of {total})",
        predictions.distinct(),
    );
    tokio::task::block_in_place(|| predictions.read_until_quiet(Duration::from_secs(3)));
    assert_eq!(
        repeats(&predictions.seen),
        before_more,
        "records after the rebalance are predicted once"
    );

    // Every replica stops cleanly on SIGTERM, each plan with its final
    // checkpoint.
    for (_, child) in &running {
        signal(child, "-TERM");
    }
    for (name, child) in running {
        let (ok, stdout, _) = finish(child).await?;
        assert!(
            ok && stdout.contains("partition runs of 'readings'"),
            "the {name} replica stops cleanly:\n{stdout}\n{}",
            std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap_or_default()
        );
    }
    Ok(())
}
