//! Exactly-once delivery (`[delivery] guarantee = "exactly-once"`) against
//! librdkafka's mock cluster: what that broker can show. Its transactions
//! are shallow (../shared/reference/infra.md): EndTxn checks the producer id
//! and epoch, so commits and fencing are real, but TxnOffsetCommit stores
//! no offsets and Fetch ignores `isolation.level`. So the offsets inside a
//! transaction and the hiding of aborted rows are not verified here; the
//! choice of checkpoint from the group's committed offsets is, with
//! offsets committed directly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::Result;
use equipoise::JobRuntime;
use equipoise::operators::runtime::{CheckpointStore, JobSnapshot, OperatorSnapshot};
use equipoise::script::plan_script;
use equipoise_connectors::kafka::committed_checkpoint;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaApiKey;
use rdkafka::types::RDKafkaRespErr;

use super::common::exited_within;
use super::kafka::{Broker, Predictions, covers, finish, job_file, signal, telemetry, trickle};

/// How long a job may take to exit after it was fenced or signalled.
const EXIT_WAIT: Duration = Duration::from_secs(30);

/// A broker with the example job's topics, `records` telemetry records in
/// two partitions of `readings`, and the example job file for it.
async fn example_job(records: usize) -> Result<(Broker, tempfile::TempDir, std::path::PathBuf)> {
    let broker = Broker::start();
    broker.topic("readings", 2);
    broker.topic("readings.dead-letters", 1);
    broker.topic("predictions", 1);
    let lines = telemetry(0, records as u64).await?;
    if trickle(broker.servers(), lines, 0, 2).join().is_err() {
        panic!("the producer thread failed");
    }
    let dir =
        tempfile::tempdir().map_err(|e| datafusion::common::DataFusionError::External(e.into()))?;
    let config = job_file(&broker.servers(), &dir);
    Ok((broker, dir, config))
}

/// The job of `config` under exactly-once, checkpointing every 300 ms into
/// `checkpoints`, logging to `log`, with `env` set too.
fn start_exactly_once_job(
    config: &std::path::Path,
    checkpoints: &std::path::Path,
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> std::process::Child {
    let log = match std::fs::File::create(log) {
        Ok(file) => file,
        Err(e) => panic!("log file: {e}"),
    };
    match std::process::Command::new(super::common::BIN)
        .args(["run", "--config"])
        .arg(config)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("EQUIPOISE_CHECKPOINT__URL", checkpoints)
        .env("EQUIPOISE_CHECKPOINT__INTERVAL", "300ms")
        .env("EQUIPOISE_DELIVERY__GUARANTEE", "exactly-once")
        .env("EQUIPOISE_LOG__FORMAT", "text")
        .env(
            "RUST_LOG",
            "info,equipoise_connectors::kafka::transaction=debug",
        )
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("spawn equipoise run: {e}"),
    }
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The example job under exactly-once: a transaction commits at each
/// checkpoint, every record is predicted once, a coordinator briefly
/// unavailable only delays a commit, and when the broker answers that the
/// job's producer is fenced (the answer a second instance with the same
/// `transactional.id` causes; the mock cluster gives every producer a new
/// id, so the error is injected) the job stops with a one-line error
/// instead of committing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_at_checkpoints_and_a_fenced_job_stops() -> Result<()> {
    let records = 2000;
    let (broker, dir, config) = example_job(records).await?;
    let store = dir.path().join("checkpoints");
    let (first_log, second_log) = (dir.path().join("first.log"), dir.path().join("second.log"));

    let mut first = start_exactly_once_job(&config, &store, &first_log, &[]);
    let mut predictions = Predictions::new(&broker.servers());
    let reached = predictions.read_until(|seen| covers(seen, records));
    if !reached {
        signal(&first, "-KILL");
        let _ = finish(first).await;
        panic!(
            "every record has a prediction ({} of {records}):\n{}",
            predictions.distinct(),
            read(&first_log)
        );
    }
    predictions.read_until_quiet(Duration::from_secs(1));
    assert_eq!(
        predictions.seen.len(),
        records,
        "one prediction per record, no repeats"
    );
    // Checkpoints keep coming while the job idles: each commits one.
    let wait_for = |pattern: &str, count: usize| {
        let deadline = std::time::Instant::now() + EXIT_WAIT;
        while std::time::Instant::now() < deadline {
            if read(&first_log).matches(pattern).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    assert!(wait_for("transaction committed", 3), "{}", read(&first_log));
    let log = read(&first_log);
    assert!(
        log.contains("transactional_id=equipoise-detector.predictions"),
        "{log}"
    );

    // A coordinator that is briefly unavailable delays a commit, no more.
    let committed = read(&first_log).matches("transaction committed").count();
    broker.cluster.request_errors(
        RDKafkaApiKey::EndTxn,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
        ],
    );
    assert!(
        wait_for("transaction committed", committed + 3),
        "{}",
        read(&first_log)
    );
    // The broker answers that a newer producer holds the transactional id
    // (a second instance of the job started): the job stops committing and
    // exits by itself with one line saying so.
    broker.cluster.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    let exited = exited_within(&mut first, EXIT_WAIT);
    if exited.is_none() {
        signal(&first, "-KILL");
    }
    let (_, first_out, _) = finish(first).await?;
    let first_log = read(&first_log);
    assert_eq!(
        exited,
        Some(false),
        "the fenced job exits non-zero by itself:\n{first_out}\n{first_log}"
    );
    let error = first_log
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect::<Vec<_>>();
    assert_eq!(error.len(), 1, "{first_log}");
    assert!(error[0].contains("was fenced"), "{first_log}");
    assert!(
        !error[0].contains("Execution error: Execution error"),
        "{first_log}"
    );

    // Restarted, the job initialises its transactions again, chooses its
    // checkpoint from the group's committed offsets, and stops cleanly.
    let second = start_exactly_once_job(&config, &store, &second_log, &[]);
    let deadline = std::time::Instant::now() + EXIT_WAIT;
    while !read(&second_log).contains("checkpoint complete") && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(&second, "-TERM");
    let (second_ok, second_out, _) = finish(second).await?;
    let second_log = read(&second_log);
    assert!(
        second_ok,
        "the restarted job stops cleanly:\n{second_out}\n{second_log}"
    );
    assert!(
        second_log.contains("exactly-once: transactions initialised"),
        "{second_log}"
    );
    // The mock cluster stores no offsets from a transaction, so the group
    // has none and the job starts without state (a Kafka broker would
    // have the first run's last committed offsets, and the job would
    // restore the checkpoint that has them). Its new checkpoints are
    // numbered after the stored ones, which they must outrank.
    assert!(
        second_log.contains("starting without state"),
        "{second_log}"
    );
    let newest_before = first_log
        .lines()
        .filter_map(|line| line.split("checkpoint complete epoch=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let first_after = second_log
        .lines()
        .filter_map(|line| line.split("checkpoint complete epoch=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .min()
        .unwrap_or(0);
    assert_eq!(first_after, newest_before + 1, "{second_log}");
    Ok(())
}

/// What a restarted exactly-once job restores: the newest checkpoint whose
/// positions equal the group's committed offsets (read from the broker),
/// none when the group has committed nothing, and an error for offsets no
/// checkpoint has.
#[tokio::test]
async fn a_restart_restores_the_checkpoint_whose_offsets_the_group_committed() -> Result<()> {
    let broker = Broker::start();
    broker.topic("in", 2);
    broker.topic("out", 1);
    let servers = broker.servers();
    let script = format!(
        "CREATE UNBOUNDED EXTERNAL TABLE readings (f1 DOUBLE, label INT) STORED AS KAFKA \
         LOCATION 'in' OPTIONS ('bootstrap.servers' '{servers}', 'group.id' 'eo-restore', \
         'start' 'committed'); \
         CREATE EXTERNAL TABLE predictions (f1 DOUBLE, label INT) STORED AS KAFKA \
         LOCATION 'out' OPTIONS ('bootstrap.servers' '{servers}'); \
         INSERT INTO predictions SELECT * FROM readings;"
    );
    let runtime = Arc::new(JobRuntime::default());
    let planned = plan_script(&script, &runtime).await?;
    let dir =
        tempfile::tempdir().map_err(|e| datafusion::common::DataFusionError::External(e.into()))?;
    let store = CheckpointStore::open(&dir.path().to_string_lossy(), 3)?;
    let snapshot = |positions: &[(i32, i64)]| -> Result<JobSnapshot> {
        let positions: BTreeMap<i32, i64> = positions.iter().copied().collect();
        let mut snapshot = JobSnapshot::default();
        snapshot.operators.insert(
            "kafka_source-0".into(),
            OperatorSnapshot::encode("kafka_source-0", "kafka_source", 1, &positions)?,
        );
        Ok(snapshot)
    };

    // An empty store: nothing to restore.
    assert_eq!(
        committed_checkpoint(planned.plan.as_ref(), &store).await?,
        None
    );
    store.write(1, &snapshot(&[(0, 10), (1, 12)])?).await?;
    store.write(2, &snapshot(&[(0, 20), (1, 25)])?).await?;
    // Nothing committed: no transaction of these checkpoints committed.
    assert_eq!(
        committed_checkpoint(planned.plan.as_ref(), &store).await?,
        None
    );

    let committer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .set("group.id", "eo-restore")
        .create()
        .map_err(|e| datafusion::common::DataFusionError::External(e.into()))?;
    let commit = |offsets: &[(i32, i64)]| -> Result<()> {
        let mut list = TopicPartitionList::new();
        for (partition, offset) in offsets {
            list.add_partition_offset("in", *partition, Offset::Offset(*offset))
                .map_err(|e| datafusion::common::DataFusionError::External(e.into()))?;
        }
        committer
            .commit(&list, CommitMode::Sync)
            .map_err(|e| datafusion::common::DataFusionError::External(e.into()))
    };
    let restored = |epoch: u64| {
        let store = store.clone();
        let plan = Arc::clone(&planned.plan);
        async move {
            let found = committed_checkpoint(plan.as_ref(), &store).await?;
            assert_eq!(found.map(|c| c.epoch), Some(epoch));
            Result::<()>::Ok(())
        }
    };
    // The newest checkpoint's transaction did not commit: the one before.
    commit(&[(0, 10), (1, 12)])?;
    restored(1).await?;
    // It did.
    commit(&[(0, 20), (1, 25)])?;
    restored(2).await?;
    // Offsets that no checkpoint has: restoring any would lose or repeat rows.
    commit(&[(0, 15), (1, 25)])?;
    let error = committed_checkpoint(planned.plan.as_ref(), &store)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("no checkpoint in") && error.contains("eo-restore"),
        "{error}"
    );
    Ok(())
}

/// With state per partition, each partition's plan has a transactional id
/// of its own (`<group>.<sink topic>.<topic>-<partition>`, so a partition's
/// next owner fences its previous one), and its transactions commit at the
/// partition's checkpoints: every record is predicted once, and SIGTERM
/// commits the last transaction of each partition and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_state_per_partition_each_partition_has_its_own_transactions() -> Result<()> {
    let records = 1000;
    let (broker, dir, config) = example_job(records).await?;
    let store = dir.path().join("checkpoints");
    let log_path = dir.path().join("job.log");
    let job = start_exactly_once_job(
        &config,
        &store,
        &log_path,
        &[("EQUIPOISE_SCALE_OUT__STATE", "per-partition")],
    );
    let mut predictions = Predictions::new(&broker.servers());
    let reached = predictions.read_until(|seen| covers(seen, records));
    if reached {
        predictions.read_until_quiet(Duration::from_secs(1));
    }
    signal(&job, "-TERM");
    let (ok, stdout, _) = finish(job).await?;
    let log = read(&log_path);
    assert!(
        reached,
        "every record predicted ({} of {records}):\n{log}",
        predictions.distinct()
    );
    assert_eq!(predictions.seen.len(), records, "no repeats:\n{log}");
    assert!(ok, "{stdout}\n{log}");
    for partition in 0..2 {
        let id = format!("transactional_id=equipoise-detector.predictions.readings-{partition}");
        assert!(
            log.lines()
                .any(|line| line.contains("transaction committed") && line.contains(&id)),
            "{id}:\n{log}"
        );
    }
    Ok(())
}
