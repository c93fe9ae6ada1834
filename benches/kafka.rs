//! Kafka ingestion against librdkafka's mock cluster, in one run:
//!
//! - (a) a plain rdkafka consumer that only reads the bytes (`BaseConsumer`
//!   polled in a loop, and `StreamConsumer` awaited in a loop: the two
//!   client shapes the source could use);
//! - (b) the Equipoise source decoding the same records into Arrow batches
//!   (`SELECT count(*)` over a bounded Kafka table);
//! - (c) the default pipeline end to end: the topic through QC-SMOTE,
//!   iCost, the detector and the drift monitor into a predictions topic
//!   (`INSERT INTO ... SELECT`, every message acknowledged);
//! - (d) the same pipeline as a job (`run_script`), without checkpoints and
//!   with a checkpoint every 10 s, 1 s and 100 ms (the cost of
//!   checkpointing: time, checkpoints written, their size and duration).
//!
//! `BENCH_SOURCE_ONLY=1` stops after (a) and (b).
//! `BENCH_RECORDS` sets the record count (default 300,000 records of 20
//! numeric features and a label, 2% minority; figures in
//! docs/benchmarks.md). The broker runs in this process and shares its
//! cores: figures compare client paths on one machine, they are not a
//! broker's throughput.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::common::{DataFusionError, Result};
use equipoise::JobRuntime;
use equipoise::operators::runtime::{CheckpointMetrics, CheckpointStore};
use equipoise::script::{ScriptRun, run_script};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOPIC: &str = "readings";
/// Records per partition: the mock cluster stops serving a partition past
/// about 16,000 records here, so a larger topic gets more partitions.
const RECORDS_PER_PARTITION: u64 = 15_000;
const FEATURES: usize = 20;
/// A read that waits this long for a record has stalled.
const IDLE: Duration = Duration::from_secs(10);

fn external(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Record `i`: 20 features and a label, 1 in 50 of the minority, whose
/// features are shifted so a detector has something to learn.
fn record(i: u64) -> String {
    let label = u64::from(i.is_multiple_of(50));
    let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut fields = Vec::with_capacity(FEATURES + 1);
    for f in 0..FEATURES {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let u = (state >> 11) as f64 / (1u64 << 53) as f64;
        let shift = if label == 1 && f < 5 { 1.5 } else { 0.0 };
        fields.push(format!("\"f{f}\":{:.6}", u * 4.0 - 2.0 + shift));
    }
    fields.push(format!("\"label\":{label}"));
    format!("{{{}}}", fields.join(","))
}

fn consumer_config(servers: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10");
    config
}

fn assignment(partitions: i32) -> Result<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition_offset(TOPIC, partition, Offset::Beginning)
            .map_err(external)?;
    }
    Ok(list)
}

/// (a) Read every record's bytes with a polled `BaseConsumer`.
fn read_base(servers: &str, records: u64, partitions: i32) -> Result<(Duration, u64)> {
    let consumer: BaseConsumer = consumer_config(servers, "bench-base")
        .create()
        .map_err(external)?;
    consumer
        .assign(&assignment(partitions)?)
        .map_err(external)?;
    let started = Instant::now();
    let (mut read, mut bytes) = (0u64, 0u64);
    let mut last = Instant::now();
    while read < records {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.map_err(external)?;
            bytes += message.payload().map_or(0, <[u8]>::len) as u64;
            read += 1;
            last = Instant::now();
        } else if last.elapsed() > IDLE {
            return Err(DataFusionError::Execution(format!(
                "BaseConsumer read {read} of {records} records"
            )));
        }
    }
    Ok((started.elapsed(), bytes))
}

/// (a) The same with an awaited `StreamConsumer`.
async fn read_stream(servers: &str, records: u64, partitions: i32) -> Result<(Duration, u64)> {
    let consumer: StreamConsumer = consumer_config(servers, "bench-stream")
        .create()
        .map_err(external)?;
    consumer
        .assign(&assignment(partitions)?)
        .map_err(external)?;
    let started = Instant::now();
    let (mut read, mut bytes) = (0u64, 0u64);
    while read < records {
        let Ok(message) = tokio::time::timeout(IDLE, consumer.recv()).await else {
            return Err(DataFusionError::Execution(format!(
                "StreamConsumer read {read} of {records} records"
            )));
        };
        let message = message.map_err(external)?;
        bytes += message.payload().map_or(0, <[u8]>::len) as u64;
        read += 1;
    }
    Ok((started.elapsed(), bytes))
}

fn columns() -> String {
    (0..FEATURES)
        .map(|f| format!("f{f} DOUBLE"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() -> Result<()> {
    let records: u64 = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(external)?;
    runtime.block_on(async {
        let cluster = MockCluster::new(1).map_err(external)?;
        let partitions = i32::try_from(records.div_ceil(RECORDS_PER_PARTITION).max(4))
            .map_err(external)?;
        cluster.create_topic(TOPIC, partitions, 1).map_err(external)?;
        cluster.create_topic("predictions", 1, 1).map_err(external)?;
        let servers = cluster.bootstrap_servers();

        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .map_err(external)?;
        let filling = Instant::now();
        let mut pending = Vec::new();
        let mut delivered = 0u64;
        for i in 0..records {
            let payload = record(i);
            let partition = (i % partitions as u64) as i32;
            let send = producer.send_result(
                FutureRecord::<(), str>::to(TOPIC)
                    .partition(partition)
                    .payload(payload.as_str()),
            );
            match send {
                Ok(delivery) => pending.push(delivery),
                Err((e, _)) => return Err(external(e)),
            }
            if pending.len() >= 100_000 {
                for delivery in pending.drain(..) {
                    delivered += u64::from(matches!(delivery.await, Ok(Ok(_))));
                }
            }
        }
        for delivery in pending.drain(..) {
            delivered += u64::from(matches!(delivery.await, Ok(Ok(_))));
        }
        producer.flush(Duration::from_secs(60)).map_err(external)?;
        println!(
            "filled {TOPIC} ({partitions} partitions): {delivered} of {records} records acknowledged in {:.1} s",
            filling.elapsed().as_secs_f64()
        );
        let records = delivered;

        let base_servers = servers.clone();
        let (base, bytes) =
            tokio::task::spawn_blocking(move || read_base(&base_servers, records, partitions))
                .await
                .map_err(external)??;
        let (stream, _) = read_stream(&servers, records, partitions).await?;

        let ctx = equipoise::new_session(Arc::new(JobRuntime::default()))?;
        let create = format!(
            "CREATE EXTERNAL TABLE readings ({}, label INT) STORED AS KAFKA LOCATION '{TOPIC}' \
             OPTIONS ('bootstrap.servers' '{servers}', 'start' 'earliest', 'group.id' 'bench-source')",
            columns()
        );
        ctx.sql(&create).await?.collect().await?;
        let started = Instant::now();
        let counted = ctx.sql("SELECT count(*) FROM readings").await?.collect().await?;
        let source = started.elapsed();
        let rows = datafusion::arrow::util::pretty::pretty_format_batches(&counted)?;
        if std::env::var_os("BENCH_SOURCE_ONLY").is_some() {
            // (a) and (b) alone, e.g. under a profiler.
            let rate = |d: Duration| records as f64 / d.as_secs_f64();
            println!(
                "(a) {:.0} records/s, (b) {:.0} records/s, (b)/(a) {:.2}",
                rate(base),
                rate(source),
                base.as_secs_f64() / source.as_secs_f64()
            );
            return Ok(());
        }

        ctx.sql(&format!(
            "CREATE EXTERNAL TABLE predictions (label INT, prediction INT, score DOUBLE, \
             drift_state VARCHAR) STORED AS KAFKA LOCATION 'predictions' \
             OPTIONS ('bootstrap.servers' '{servers}')"
        ))
        .await?
        .collect()
        .await?;
        // The default chain as views, as users write it.
        for view in [
            "CREATE VIEW balanced AS SELECT * FROM qc_smote('readings', 'label', 'mode=stream')",
            "CREATE VIEW weighed AS SELECT * FROM icost('balanced', 'label', 'mode=stream')",
            "CREATE VIEW scored AS SELECT * FROM train_detector('weighed', 'label')",
        ] {
            ctx.sql(view).await?.collect().await?;
        }
        let started = Instant::now();
        ctx.sql(
            "INSERT INTO predictions SELECT label, prediction, score, drift_state \
             FROM drift_monitor('scored', 'label', 'prediction')",
        )
        .await?
        .collect()
        .await?;
        let job = started.elapsed();
        report(records, bytes, base, stream, source, job, &rows.to_string());

        println!("| job (d) | s | records/s | checkpoints | bytes each | mean cut-to-commit ms |");
        println!("|---|---:|---:|---:|---:|---:|");
        for (n, interval) in [
            None,
            Some(Duration::from_secs(10)),
            Some(Duration::from_secs(1)),
            Some(Duration::from_millis(100)),
        ]
        .into_iter()
        .enumerate()
        {
            let run = checkpointed_job(&servers, interval, n).await?;
            println!(
                "| {} | {:.2} | {:.0} | {} | {} | {:.1} |",
                interval.map_or_else(|| "no checkpoints".to_string(), |i| format!("every {i:?}")),
                run.elapsed.as_secs_f64(),
                records as f64 / run.elapsed.as_secs_f64(),
                run.checkpoints,
                run.bytes,
                run.mean_ms
            );
        }
        slow_plan(&servers, records).await
    })
}

/// Resident memory of this process, in MB (`VmRSS` of /proc/self/status).
fn resident_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// (e) A plan that falls behind: it takes a batch every 20 ms while the
/// broker holds every record, and the process's resident memory is sampled
/// as it goes. The source's bounded channel should keep it flat.
async fn slow_plan(servers: &str, records: u64) -> Result<()> {
    use futures::StreamExt;
    let ctx = equipoise::new_session(Arc::new(JobRuntime::default()))?;
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE readings ({}, label INT) STORED AS KAFKA LOCATION '{TOPIC}' \
         OPTIONS ('bootstrap.servers' '{servers}', 'start' 'earliest', 'group.id' 'bench-slow')",
        columns()
    ))
    .await?
    .collect()
    .await?;
    let before = resident_mb();
    let mut stream = ctx
        .sql("SELECT * FROM readings")
        .await?
        .execute_stream()
        .await?;
    let mut taken = 0u64;
    let mut marks = [0.1, 0.25, 0.5, 0.75, 0.9]
        .map(|share| (share * records as f64) as u64)
        .into_iter()
        .peekable();
    println!("| (e) plan taking a batch every 20 ms: rows taken | resident MB |");
    println!("|---:|---:|");
    println!("| 0 | {before:.0} |");
    while let Some(batch) = stream.next().await {
        taken += batch?.num_rows() as u64;
        tokio::time::sleep(Duration::from_millis(20)).await;
        while marks.peek().is_some_and(|&mark| taken >= mark) {
            marks.next();
            println!("| {taken} | {:.0} |", resident_mb());
        }
    }
    println!("| {taken} (end) | {:.0} |", resident_mb());
    Ok(())
}

struct JobRun {
    elapsed: Duration,
    checkpoints: u64,
    bytes: i64,
    mean_ms: f64,
}

/// The default pipeline as a job over a bounded read of the topic, with a
/// checkpoint every `interval` into a fresh directory.
async fn checkpointed_job(servers: &str, interval: Option<Duration>, n: usize) -> Result<JobRun> {
    let script = format!(
        "CREATE EXTERNAL TABLE readings ({}, label INT) STORED AS KAFKA LOCATION '{TOPIC}' \
         OPTIONS ('bootstrap.servers' '{servers}', 'start' 'earliest', 'group.id' 'bench-job-{n}'); \
         CREATE EXTERNAL TABLE predictions (label INT, prediction INT, score DOUBLE, \
         drift_state VARCHAR) STORED AS KAFKA LOCATION 'predictions' \
         OPTIONS ('bootstrap.servers' '{servers}'); \
         CREATE VIEW balanced AS SELECT * FROM qc_smote('readings', 'label', 'mode=stream'); \
         CREATE VIEW weighed AS SELECT * FROM icost('balanced', 'label', 'mode=stream'); \
         CREATE VIEW scored AS SELECT * FROM train_detector('weighed', 'label'); \
         INSERT INTO predictions SELECT label, prediction, score, drift_state \
         FROM drift_monitor('scored', 'label', 'prediction')",
        columns()
    );
    let dir = std::env::temp_dir().join(format!(
        "equipoise-bench-checkpoints-{}-{n}",
        std::process::id()
    ));
    let checkpoint = match interval {
        Some(interval) => Some((CheckpointStore::open(&dir.to_string_lossy(), 3)?, interval)),
        None => None,
    };
    let runtime = Arc::new(JobRuntime::default());
    let run = ScriptRun {
        checkpoint,
        ..ScriptRun::default()
    };
    let started = Instant::now();
    run_script(&script, Arc::clone(&runtime), run, std::future::pending()).await?;
    let elapsed = started.elapsed();
    let metrics = runtime.metric_set::<CheckpointMetrics>()?;
    let count = metrics.duration.get_sample_count();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(JobRun {
        elapsed,
        checkpoints: metrics.completed.get(),
        bytes: metrics.bytes.get(),
        mean_ms: if count == 0 {
            0.0
        } else {
            metrics.duration.get_sample_sum() * 1000.0 / count as f64
        },
    })
}

fn report(
    records: u64,
    bytes: u64,
    base: Duration,
    stream: Duration,
    source: Duration,
    job: Duration,
    count: &str,
) {
    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    let plain = rate(base).max(rate(stream));
    println!("{count}");
    println!("{records} records, {:.1} MB of values", bytes as f64 / 1e6);
    println!("| path | s | records/s | / plain consumer |");
    println!("|---|---:|---:|---:|");
    for (name, d) in [
        ("(a) BaseConsumer, bytes only", base),
        ("(a) StreamConsumer, bytes only", stream),
        ("(b) Equipoise source into Arrow", source),
        ("(c) default pipeline end to end", job),
    ] {
        println!(
            "| {name} | {:.2} | {:.0} | {:.2} |",
            d.as_secs_f64(),
            rate(d),
            rate(d) / plain
        );
    }
}
