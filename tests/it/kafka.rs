//! Kafka tables against librdkafka's in-process mock cluster: bounded reads
//! through SQL, dead letters for every kind of bad record, the fail policy,
//! the sink's round trip, CSV, unbounded reads, and a broker that returns
//! errors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use datafusion::common::Result;
use datafusion::prelude::SessionContext;
use equipoise::JobRuntime;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use super::common::gathered;

/// Every query here ends well within this, or the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

pub(super) struct Broker {
    pub(super) cluster: MockCluster<'static, DefaultProducerContext>,
    producer: FutureProducer,
}

impl Broker {
    pub(super) fn start() -> Self {
        let cluster = match MockCluster::new(1) {
            Ok(cluster) => cluster,
            Err(e) => panic!("mock cluster: {e}"),
        };
        let producer = match ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
        {
            Ok(producer) => producer,
            Err(e) => panic!("producer: {e}"),
        };
        Self { cluster, producer }
    }

    pub(super) fn servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    pub(super) fn topic(&self, name: &str, partitions: i32) {
        if let Err(e) = self.cluster.create_topic(name, partitions, 1) {
            panic!("create topic {name}: {e}");
        }
    }

    async fn produce(
        &self,
        topic: &str,
        partition: i32,
        key: &str,
        payload: &[u8],
        headers: &[(&str, &str)],
    ) {
        let mut owned = OwnedHeaders::new();
        for (k, v) in headers {
            owned = owned.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(payload)
            .headers(owned);
        if let Err((e, _)) = self.producer.send(record, Duration::from_secs(10)).await {
            panic!("produce to {topic}: {e}");
        }
    }

    /// Readings `records` on `topic`, spread round-robin over `partitions`.
    async fn fill(&self, topic: &str, partitions: usize, records: std::ops::Range<usize>) {
        for i in records {
            self.produce(
                topic,
                (i % partitions) as i32,
                "k",
                reading(i).as_bytes(),
                &[],
            )
            .await;
        }
    }

    /// Every message of `topic`, read from the start by a plain consumer.
    fn read_all(
        &self,
        topic: &str,
        partitions: i32,
        expected: usize,
    ) -> Vec<rdkafka::message::OwnedMessage> {
        let consumer = reader(&self.servers(), "test-reader", topic, partitions);
        let mut messages = Vec::new();
        let deadline = std::time::Instant::now() + DEADLINE;
        while messages.len() < expected && std::time::Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                messages.push(message.detach());
            }
        }
        messages
    }
}

/// A consumer of `group` assigned `partitions` of `topic` from the start.
pub(super) fn reader(servers: &str, group: &str, topic: &str, partitions: i32) -> BaseConsumer {
    let consumer: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", group)
        .create()
    {
        Ok(consumer) => consumer,
        Err(e) => panic!("consumer: {e}"),
    };
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        if let Err(e) = assignment.add_partition_offset(topic, partition, Offset::Beginning) {
            panic!("assign: {e}");
        }
    }
    if let Err(e) = consumer.assign(&assignment) {
        panic!("assign: {e}");
    }
    consumer
}

fn session() -> Result<(SessionContext, Arc<JobRuntime>)> {
    let runtime = Arc::new(JobRuntime::default());
    let ctx = equipoise::new_session(Arc::clone(&runtime))?;
    Ok((ctx, runtime))
}

async fn query(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    match tokio::time::timeout(DEADLINE, async { ctx.sql(sql).await?.collect().await }).await {
        Ok(result) => result,
        Err(_) => panic!("query did not end within {DEADLINE:?}: {sql}"),
    }
}

fn int(batches: &[RecordBatch], column: usize) -> i64 {
    batches[0]
        .column(column)
        .as_primitive::<Int64Type>()
        .value(0)
}

fn counter(runtime: &JobRuntime, family: &str, label: (&str, &str)) -> f64 {
    gathered(runtime, family, true)
        .iter()
        .filter(|(labels, _)| labels.get(label.0).is_some_and(|v| v == label.1))
        .map(|(_, value)| value)
        .sum()
}

/// The label (every 20th row is class 1) and a detector's prediction of
/// row `i`.
fn label_and_prediction(i: usize) -> (usize, usize) {
    let label = usize::from(i.is_multiple_of(20));
    let prediction = usize::from(label == 1 && !i.is_multiple_of(60) || i.is_multiple_of(97));
    (label, prediction)
}

/// One JSON record of the readings topic.
fn reading(i: usize) -> String {
    let (label, prediction) = label_and_prediction(i);
    format!(
        r#"{{"f1": {}, "label": {label}, "prediction": {prediction}}}"#,
        i as f64 / 10.0
    )
}

#[tokio::test]
async fn a_bounded_table_reads_every_record_of_every_partition() -> Result<()> {
    let broker = Broker::start();
    broker.topic("readings", 3);
    for i in 0..900 {
        broker
            .produce(
                "readings",
                (i % 3) as i32,
                &i.to_string(),
                reading(i).as_bytes(),
                &[],
            )
            .await;
    }
    let (ctx, _) = session()?;
    query(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE readings (f1 DOUBLE, label BIGINT, prediction BIGINT, \
             _partition INT, _offset BIGINT, _key VARCHAR) STORED AS KAFKA LOCATION 'readings' \
             OPTIONS ('bootstrap.servers' '{}', 'format' 'json', 'start' 'earliest', \
             'batch_rows' '128')",
            broker.servers()
        ),
    )
    .await?;
    let counts = query(
        &ctx,
        "SELECT count(*), sum(label), count(DISTINCT (_partition, _offset)), \
         count(DISTINCT _key), CAST(max(_offset) AS BIGINT) FROM readings",
    )
    .await?;
    assert_eq!(int(&counts, 0), 900);
    assert_eq!(int(&counts, 1), 45);
    assert_eq!(int(&counts, 2), 900);
    assert_eq!(int(&counts, 3), 900);
    assert_eq!(int(&counts, 4), 299);
    // Every Equipoise function works over the topic: the same G-mean as
    // over the same rows in memory.
    let over_topic = query(&ctx, "SELECT gmean(label, prediction) FROM readings").await?;
    let values: Vec<String> = (0..900)
        .map(|i| {
            let (label, prediction) = label_and_prediction(i);
            format!("({label}, {prediction})")
        })
        .collect();
    let in_memory = query(
        &ctx,
        &format!(
            "SELECT gmean(label, prediction) FROM (VALUES {}) AS t(label, prediction)",
            values.join(", ")
        ),
    )
    .await?;
    let g = |b: &[RecordBatch]| b[0].column(0).as_primitive::<Float64Type>().value(0);
    assert_eq!(g(&over_topic), g(&in_memory));
    assert!(g(&over_topic) > 0.5);
    Ok(())
}

#[tokio::test]
async fn every_kind_of_bad_record_goes_to_the_dead_letter_topic_with_its_reason() -> Result<()> {
    let broker = Broker::start();
    broker.topic("raw", 1);
    broker.topic("raw.dlq", 1);
    let bad: [(&[u8], &str); 5] = [
        (br#"{"f1": 1.0, "label"#, "malformed"),
        (br#"{"f1": "high", "label": 1}"#, "schema_mismatch"),
        (br#"{"f1": 2.0}"#, "missing_label"),
        (b"", "empty"),
        (&[b'x'; 300], "oversized"),
    ];
    let mut produced = 0;
    for i in 0..50 {
        broker
            .produce("raw", 0, &format!("good{i}"), reading(i).as_bytes(), &[])
            .await;
        produced += 1;
        if i % 10 == 3 {
            let (payload, reason) = bad[i / 10];
            broker
                .produce(
                    "raw",
                    0,
                    &format!("bad-{reason}"),
                    payload,
                    &[("trace", reason)],
                )
                .await;
            produced += 1;
        }
    }
    assert_eq!(produced, 55);
    let (ctx, runtime) = session()?;
    query(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE raw (f1 DOUBLE, label BIGINT, prediction BIGINT) STORED AS KAFKA \
             LOCATION 'raw' OPTIONS ('bootstrap.servers' '{}', 'start' 'earliest', \
             'label' 'label', 'dead_letter_topic' 'raw.dlq', 'max_message_bytes' '200')",
            broker.servers()
        ),
    )
    .await?;
    let counts = query(&ctx, "SELECT count(*) FROM raw").await?;
    assert_eq!(int(&counts, 0), 50);
    let letters = broker.read_all("raw.dlq", 1, 5);
    assert_eq!(letters.len(), 5);
    for (letter, (payload, reason)) in letters.iter().zip(bad) {
        let header = |name: &str| -> Option<String> {
            letter.headers().and_then(|h| {
                h.iter()
                    .find(|x| x.key == name)
                    .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
            })
        };
        assert_eq!(header("equipoise.reason").as_deref(), Some(reason));
        assert_eq!(
            header("trace").as_deref(),
            Some(reason),
            "original headers kept"
        );
        assert_eq!(header("equipoise.source.topic").as_deref(), Some("raw"));
        assert_eq!(header("equipoise.source.partition").as_deref(), Some("0"));
        assert!(header("equipoise.source.offset").is_some());
        assert!(header("equipoise.error").is_some_and(|e| !e.is_empty()));
        assert_eq!(letter.key(), Some(format!("bad-{reason}").as_bytes()));
        assert_eq!(letter.payload().unwrap_or_default(), payload);
        assert_eq!(
            counter(&runtime, "equipoise_bad_records_total", ("reason", reason)),
            1.0,
            "{reason}"
        );
    }
    assert_eq!(
        counter(
            &runtime,
            "equipoise_dead_letter_records_total",
            ("operator", "kafka_source-0")
        ) + counter(
            &runtime,
            "equipoise_dead_letter_records_total",
            ("operator", "kafka_source-1")
        ),
        5.0
    );
    Ok(())
}

#[tokio::test]
async fn without_a_dead_letter_topic_a_bad_record_fails_or_is_skipped() -> Result<()> {
    let broker = Broker::start();
    broker.topic("strict", 1);
    broker.fill("strict", 1, 0..5).await;
    broker.produce("strict", 0, "k", b"{not json", &[]).await;
    let (ctx, runtime) = session()?;
    let create = |name: &str, extra: &str| {
        format!(
            "CREATE EXTERNAL TABLE {name} (f1 DOUBLE, label BIGINT) STORED AS KAFKA LOCATION 'strict' \
             OPTIONS ('bootstrap.servers' '{}', 'start' 'earliest'{extra})",
            broker.servers()
        )
    };
    query(&ctx, &create("failing", "")).await?;
    let error = match ctx
        .sql("SELECT count(*) FROM failing")
        .await?
        .collect()
        .await
    {
        Ok(_) => panic!("a bad record with the default policy must fail the query"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("bad record at strict/0@5 (malformed)"),
        "{error}"
    );
    query(&ctx, &create("skipping", ", 'bad_records' 'skip'")).await?;
    let counts = query(&ctx, "SELECT count(*) FROM skipping").await?;
    assert_eq!(int(&counts, 0), 5);
    assert_eq!(
        counter(
            &runtime,
            "equipoise_bad_records_total",
            ("reason", "malformed")
        ),
        2.0
    );
    Ok(())
}

/// Avro in the Confluent wire format both ways: rows inserted into an Avro
/// table read back the same through SQL; a message that is not one of
/// the schema's records is a bad record, counted, and the rest are read.
#[tokio::test]
async fn avro_rows_written_by_the_sink_read_back_and_bad_ones_are_counted() -> Result<()> {
    let broker = Broker::start();
    broker.topic("scores", 1);
    let dir =
        tempfile::tempdir().map_err(|e| datafusion::common::DataFusionError::External(e.into()))?;
    let avsc = dir.path().join("score.avsc");
    std::fs::write(
        &avsc,
        r#"{"type": "record", "name": "score", "fields": [
            {"name": "id", "type": "long"},
            {"name": "score", "type": "double"},
            {"name": "prediction", "type": ["null", "long"]}
        ]}"#,
    )
    .map_err(|e| datafusion::common::DataFusionError::External(e.into()))?;
    let (ctx, runtime) = session()?;
    query(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE scores (id BIGINT, score DOUBLE, prediction BIGINT) \
             STORED AS KAFKA LOCATION 'scores' OPTIONS ('bootstrap.servers' '{}', \
             'format' 'avro', 'avro_schema_file' '{}', 'avro_schema_id' '42', \
             'start' 'earliest', 'bad_records' 'skip')",
            broker.servers(),
            avsc.display()
        ),
    )
    .await?;
    let written = query(
        &ctx,
        "INSERT INTO scores SELECT value AS id, value / 100.0 AS score, \
         CASE WHEN value % 10 = 0 THEN NULL ELSE value % 2 END AS prediction \
         FROM generate_series(1, 200)",
    )
    .await?;
    assert_eq!(batches_u64(&written), 200);
    // Each message is the Confluent header (magic 0, id 42) and one record.
    let messages = broker.read_all("scores", 1, 200);
    assert!(
        messages.iter().all(|m| m
            .payload()
            .is_some_and(|p| p.starts_with(&[0, 0, 0, 0, 42]))),
        "Confluent framing with schema id 42"
    );
    broker
        .produce("scores", 0, "bad", br#"{"id": 1}"#, &[])
        .await;
    let check = query(
        &ctx,
        "SELECT count(*), sum(id), count(prediction), CAST(sum(prediction) AS BIGINT), \
         CAST(round(sum(score) * 100) AS BIGINT) FROM scores",
    )
    .await?;
    assert_eq!(int(&check, 0), 200);
    assert_eq!(int(&check, 1), 20_100);
    assert_eq!(int(&check, 2), 180);
    assert_eq!(int(&check, 3), 100);
    assert_eq!(int(&check, 4), 20_100);
    assert_eq!(
        counter(
            &runtime,
            "equipoise_bad_records_total",
            ("reason", "malformed")
        ),
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn rows_inserted_into_a_kafka_table_read_back_with_their_keys() -> Result<()> {
    let broker = Broker::start();
    broker.topic("predictions", 2);
    let (ctx, runtime) = session()?;
    for (name, format) in [("out_json", "json"), ("out_csv", "csv")] {
        query(
            &ctx,
            &format!(
                "CREATE EXTERNAL TABLE {name} (id BIGINT, score DOUBLE, prediction BIGINT) \
                 STORED AS KAFKA LOCATION 'predictions' OPTIONS ('bootstrap.servers' '{}', \
                 'format' '{format}', 'key_column' 'id', 'start' 'earliest')",
                broker.servers()
            ),
        )
        .await?;
    }
    let written = query(
        &ctx,
        "INSERT INTO out_json SELECT value AS id, value / 100.0 AS score, value % 2 AS prediction \
         FROM generate_series(1, 300)",
    )
    .await?;
    assert_eq!(batches_u64(&written), 300);
    assert_eq!(
        counter(
            &runtime,
            "equipoise_sink_records_total",
            ("operator", "kafka_sink-0")
        ),
        300.0
    );
    query(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE readback (id BIGINT, score DOUBLE, prediction BIGINT, _key VARCHAR) \
             STORED AS KAFKA LOCATION 'predictions' OPTIONS ('bootstrap.servers' '{}', \
             'start' 'earliest')",
            broker.servers()
        ),
    )
    .await?;
    let check = query(
        &ctx,
        "SELECT count(*), sum(id), CAST(sum(prediction) AS BIGINT), \
         count(*) FILTER (WHERE CAST(id AS VARCHAR) = _key), CAST(round(sum(score) * 100) AS BIGINT) \
         FROM readback",
    )
    .await?;
    assert_eq!(int(&check, 0), 300);
    assert_eq!(int(&check, 1), 45_150);
    assert_eq!(int(&check, 2), 150);
    assert_eq!(int(&check, 3), 300);
    assert_eq!(int(&check, 4), 45_150);
    // CSV lines decode back to the same rows.
    broker.topic("csv", 1);
    query(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE csv_out (id BIGINT, score DOUBLE) STORED AS KAFKA LOCATION 'csv' \
             OPTIONS ('bootstrap.servers' '{}', 'format' 'csv', 'start' 'earliest')",
            broker.servers()
        ),
    )
    .await?;
    query(
        &ctx,
        "INSERT INTO csv_out SELECT value, value * 0.5 FROM generate_series(1, 10)",
    )
    .await?;
    let csv = query(
        &ctx,
        "SELECT count(*), CAST(sum(score) * 2 AS BIGINT) FROM csv_out",
    )
    .await?;
    assert_eq!(int(&csv, 0), 10);
    assert_eq!(int(&csv, 1), 55);
    Ok(())
}

fn batches_u64(batches: &[RecordBatch]) -> u64 {
    batches[0]
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
        .value(0)
}

#[tokio::test]
async fn an_unbounded_table_streams_until_the_query_has_what_it_asked_for() -> Result<()> {
    let broker = Broker::start();
    broker.topic("stream", 2);
    broker.fill("stream", 2, 0..40).await;
    let (ctx, _) = session()?;
    query(
        &ctx,
        &format!(
            "CREATE UNBOUNDED EXTERNAL TABLE stream (f1 DOUBLE, label BIGINT) STORED AS KAFKA \
             LOCATION 'stream' OPTIONS ('bootstrap.servers' '{}', 'start' 'earliest', 'linger_ms' '20')",
            broker.servers()
        ),
    )
    .await?;
    let plan = ctx
        .sql("SELECT * FROM stream")
        .await?
        .create_physical_plan()
        .await?;
    assert!(plan.properties().boundedness.is_unbounded());
    let rows = query(&ctx, "SELECT f1 FROM stream LIMIT 25").await?;
    assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 25);
    Ok(())
}

/// The sum of `family` over every series.
fn family_sum(runtime: &JobRuntime, family: &str, counter: bool) -> f64 {
    gathered(runtime, family, counter)
        .iter()
        .map(|(_, value)| value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_gauge_counts_the_records_a_stalled_plan_has_not_taken() -> Result<()> {
    use futures::StreamExt;
    let broker = Broker::start();
    broker.topic("lagging", 1);
    broker.fill("lagging", 1, 0..1_000).await;
    let (ctx, runtime) = session()?;
    query(
        &ctx,
        &format!(
            "CREATE UNBOUNDED EXTERNAL TABLE lagging (f1 DOUBLE, label BIGINT) STORED AS KAFKA \
             LOCATION 'lagging' OPTIONS ('bootstrap.servers' '{}', 'start' 'earliest', \
             'batch_rows' '50')",
            broker.servers()
        ),
    )
    .await?;
    let mut stream = ctx
        .sql("SELECT f1 FROM lagging")
        .await?
        .execute_stream()
        .await?;
    // One batch, then the plan stops pulling: the source fills its channel
    // and waits, and the records behind it are the lag.
    let first = stream.next().await.expect("a batch")?;
    assert!(first.num_rows() > 0);
    // The gauge is measured every 5 seconds.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let lag = family_sum(&runtime, "equipoise_consumer_lag_records", false);
    let taken = family_sum(&runtime, "equipoise_source_records_total", true);
    assert!(lag > 0.0 && taken > 0.0, "lag {lag}, taken {taken}");
    assert_eq!(lag + taken, 1_000.0, "lag {lag}, taken {taken}");
    drop(stream);
    Ok(())
}

#[tokio::test]
async fn no_record_is_lost_when_the_broker_answers_fetches_with_errors() -> Result<()> {
    let broker = Broker::start();
    broker.topic("flaky", 2);
    broker.fill("flaky", 2, 0..400).await;
    broker.cluster.request_errors(
        RDKafkaApiKey::Fetch,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        ],
    );
    let (ctx, _) = session()?;
    query(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE flaky (f1 DOUBLE, label BIGINT, _partition INT, _offset BIGINT) \
             STORED AS KAFKA LOCATION 'flaky' OPTIONS ('bootstrap.servers' '{}', 'start' 'earliest')",
            broker.servers()
        ),
    )
    .await?;
    let counts = query(
        &ctx,
        "SELECT count(*), count(DISTINCT (_partition, _offset)), sum(label) FROM flaky",
    )
    .await?;
    assert_eq!(int(&counts, 0), 400);
    assert_eq!(int(&counts, 1), 400);
    assert_eq!(int(&counts, 2), 20);
    Ok(())
}

#[tokio::test]
async fn equipoise_sql_counts_a_topic_and_computes_gmean_over_it() {
    let broker = Broker::start();
    broker.topic("p", 2);
    broker.fill("p", 2, 0..200).await;
    let script = format!(
        "CREATE EXTERNAL TABLE p (f1 DOUBLE, label BIGINT, prediction BIGINT) STORED AS KAFKA \
         LOCATION 'p' OPTIONS ('bootstrap.servers' '{}', 'format' 'json', 'start' 'earliest'); \
         SELECT count(*) AS n, sum(label) AS minority, round(gmean(label, prediction), 6) AS g FROM p",
        broker.servers()
    );
    let output = tokio::task::spawn_blocking(move || {
        super::common::equipoise(&["sql", "--format", "csv", &script])
    })
    .await
    .unwrap_or_else(|e| panic!("equipoise sql did not finish: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "n,minority,g");
    assert!(lines[1].starts_with("200,10,"), "{stdout}");
}

#[tokio::test]
async fn an_insert_commits_its_sources_offsets_only_after_every_row_is_acknowledged() -> Result<()>
{
    let broker = Broker::start();
    broker.topic("in", 2);
    broker.topic("out", 1);
    broker.fill("in", 2, 0..100).await;
    let (ctx, _) = session()?;
    for (name, topic) in [("source", "in"), ("target", "out")] {
        query(
            &ctx,
            &format!(
                "CREATE EXTERNAL TABLE {name} (f1 DOUBLE, label BIGINT, prediction BIGINT) \
                 STORED AS KAFKA LOCATION '{topic}' OPTIONS ('bootstrap.servers' '{}', \
                 'group.id' 'etl', 'start' 'committed')",
                broker.servers()
            ),
        )
        .await?;
    }
    // An ad-hoc SELECT reads from the group's position and commits nothing.
    let seen = query(&ctx, "SELECT count(*) FROM source").await?;
    assert_eq!(int(&seen, 0), 100);
    let moved = query(&ctx, "INSERT INTO target SELECT * FROM source").await?;
    assert_eq!(batches_u64(&moved), 100);
    // The INSERT committed: the group's next read starts after its rows.
    let again = query(&ctx, "INSERT INTO target SELECT * FROM source").await?;
    assert_eq!(batches_u64(&again), 0);
    broker.fill("in", 2, 100..130).await;
    let rest = query(&ctx, "INSERT INTO target SELECT * FROM source").await?;
    assert_eq!(batches_u64(&rest), 30);
    let out = broker.read_all("out", 1, 130);
    assert_eq!(out.len(), 130);
    Ok(())
}

#[tokio::test]
async fn an_insert_whose_rows_are_not_acknowledged_commits_nothing() -> Result<()> {
    let broker = Broker::start();
    broker.topic("in", 1);
    broker.topic("out", 1);
    broker.fill("in", 1, 0..20).await;
    let (ctx, _) = session()?;
    for (name, topic) in [("source", "in"), ("target", "out")] {
        query(
            &ctx,
            &format!(
                "CREATE EXTERNAL TABLE {name} (f1 DOUBLE, label BIGINT, prediction BIGINT) \
                 STORED AS KAFKA LOCATION '{topic}' OPTIONS ('bootstrap.servers' '{}', \
                 'group.id' 'etl', 'start' 'committed', 'message.timeout.ms' '3000')",
                broker.servers()
            ),
        )
        .await?;
    }
    // The broker refuses every produce: the sink fails, and the source's
    // offsets stay where they were.
    broker.cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 64],
    );
    let failed = ctx
        .sql("INSERT INTO target SELECT * FROM source")
        .await?
        .collect()
        .await;
    assert!(failed.is_err(), "the broker refused every record");
    broker.cluster.clear_request_errors(RDKafkaApiKey::Produce);
    let retried = query(&ctx, "INSERT INTO target SELECT * FROM source").await?;
    assert_eq!(batches_u64(&retried), 20);
    Ok(())
}

/// `n` telemetry records from the generator, as JSON lines with the
/// columns of `examples/kafka-job.sql`.
pub(super) async fn telemetry(from: u64, n: u64) -> Result<Vec<String>> {
    let ctx = SessionContext::new();
    equipoise::register_all(&ctx)?;
    let batches = query(
        &ctx,
        &format!(
            "SELECT CAST(seq AS BIGINT) AS seq, CAST(machine_id AS INT) AS machine_id, \
             temperature_c, vibration_mm_s, pressure_bar, rotation_rpm, current_a, \
             CAST(label AS INT) AS label FROM equipoise_generator('rows={}') WHERE seq >= {from}",
            from + n
        ),
    )
    .await?;
    let mut buffer = Vec::new();
    {
        let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut buffer);
        for batch in &batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    }
    Ok(String::from_utf8_lossy(&buffer)
        .lines()
        .map(str::to_string)
        .collect())
}

/// A consumer of the predictions topic that keeps what it has read.
pub(super) struct Predictions {
    consumer: BaseConsumer,
    /// (source partition, source offset) of every prediction read.
    pub(super) seen: Vec<(i64, i64)>,
}

impl Predictions {
    pub(super) fn new(servers: &str) -> Self {
        let consumer = reader(servers, "test-predictions", "predictions", 1);
        Self {
            consumer,
            seen: Vec::new(),
        }
    }

    /// Read until `done(&seen)` or the deadline; whether `done` held.
    pub(super) fn read_until(&mut self, done: impl Fn(&[(i64, i64)]) -> bool) -> bool {
        let deadline = std::time::Instant::now() + DEADLINE;
        while std::time::Instant::now() < deadline {
            if done(&self.seen) {
                return true;
            }
            if let Some(Ok(message)) = self.consumer.poll(Duration::from_millis(100)) {
                let value: serde_json::Value =
                    serde_json::from_slice(message.payload().unwrap_or_default())
                        .unwrap_or(serde_json::Value::Null);
                let (Some(p), Some(o)) = (
                    value["source_partition"].as_i64(),
                    value["source_offset"].as_i64(),
                ) else {
                    panic!("a prediction without its source: {value}");
                };
                self.seen.push((p, o));
            }
        }
        done(&self.seen)
    }

    /// Read until nothing arrives for `quiet`.
    pub(super) fn read_until_quiet(&mut self, quiet: Duration) {
        let mut last = std::time::Instant::now();
        let mut count = self.seen.len();
        while last.elapsed() < quiet {
            let before = std::time::Instant::now() + Duration::from_millis(100);
            self.read_until(|seen| seen.len() > count || std::time::Instant::now() >= before);
            if self.seen.len() > count {
                count = self.seen.len();
                last = std::time::Instant::now();
            }
        }
    }

    pub(super) fn distinct(&self) -> usize {
        self.seen
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    }
}

fn job_script(servers: &str, dir: &tempfile::TempDir) -> std::path::PathBuf {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/kafka-job.sql"
    ))
    .unwrap_or_else(|e| panic!("examples/kafka-job.sql: {e}"));
    let script = example.replace("127.0.0.1:9092", servers);
    let path = dir.path().join("job.sql");
    if let Err(e) = std::fs::write(&path, script) {
        panic!("write job.sql: {e}");
    }
    path
}

fn start_job(script: &std::path::Path) -> std::process::Child {
    match std::process::Command::new(super::common::BIN)
        .args(["run", "--sql"])
        .arg(script)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("spawn equipoise run: {e}"),
    }
}

pub(super) fn signal(child: &std::process::Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([name, &child.id().to_string()])
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill {name}");
}

#[tokio::test]
async fn the_example_job_survives_a_kill_and_stops_cleanly_without_losing_a_record() -> Result<()> {
    let broker = Broker::start();
    broker.topic("readings", 2);
    broker.topic("readings.dead-letters", 1);
    broker.topic("predictions", 1);
    let first = telemetry(0, 3000).await?;
    for (i, line) in first.iter().enumerate() {
        broker
            .produce(
                "readings",
                (i % 2) as i32,
                &i.to_string(),
                line.as_bytes(),
                &[],
            )
            .await;
    }
    let dir =
        tempfile::tempdir().map_err(|e| datafusion::common::DataFusionError::External(e.into()))?;
    let script = job_script(&broker.servers(), &dir);
    let mut predictions = Predictions::new(&broker.servers());

    // Killed mid-stream: nothing was committed, so the next run reads again.
    let mut killed = start_job(&script);
    assert!(
        predictions.read_until(|seen| seen.len() >= 200),
        "no predictions"
    );
    signal(&killed, "-KILL");
    let _ = killed.wait();

    // Nothing was committed, so a second run reads every record again;
    // once it has written them all, it stops on SIGTERM.
    let before = predictions.seen.len();
    let second = start_job(&script);
    assert!(
        predictions.read_until(|seen| seen.len() >= before + 3000 && covers(seen, 3000)),
        "every record of the topic has a prediction ({} distinct of {} read)",
        predictions.distinct(),
        predictions.seen.len()
    );
    signal(&second, "-TERM");
    let (ok, stdout, second_log) = finish(second).await?;
    assert!(ok, "{stdout}{second_log}");
    assert!(
        stdout.contains("stopped after writing 3000 rows"),
        "{stdout}{second_log}"
    );

    // The clean stop committed: a third run processes only the new records.
    let more = telemetry(3000, 500).await?;
    for (i, line) in more.iter().enumerate() {
        broker
            .produce("readings", (i % 2) as i32, "k", line.as_bytes(), &[])
            .await;
    }
    let third = start_job(&script);
    assert!(predictions.read_until(|seen| seen.len() >= before + 3500 && covers(seen, 3500)));
    signal(&third, "-TERM");
    let (ok, stdout, _) = finish(third).await?;
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("stopped after writing 500 rows"),
        "{stdout}\nsecond run:\n{second_log}"
    );
    Ok(())
}

/// Ranges of `(partition, offset)` without a prediction, of `records`
/// spread round-robin over `partitions`.
fn missing(seen: &[(i64, i64)], records: usize, partitions: usize) -> Vec<(i64, i64, i64)> {
    let seen: std::collections::BTreeSet<_> = seen.iter().copied().collect();
    let mut ranges: Vec<(i64, i64, i64)> = Vec::new();
    for partition in 0..partitions as i64 {
        let count = (records / partitions
            + usize::from((partition as usize) < records % partitions)) as i64;
        for offset in 0..count {
            if !seen.contains(&(partition, offset)) {
                match ranges.last_mut() {
                    Some(last) if last.0 == partition && last.2 == offset => last.2 = offset + 1,
                    _ => ranges.push((partition, offset, offset + 1)),
                }
            }
        }
    }
    ranges
}

/// Whether `seen` holds `records` distinct source positions.
pub(super) fn covers(seen: &[(i64, i64)], records: usize) -> bool {
    seen.iter().collect::<std::collections::BTreeSet<_>>().len() >= records
}

// Two workers: the test reads the output topic blockingly while the insert
// runs on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_unbounded_insert_commits_what_it_wrote() -> Result<()> {
    let broker = Broker::start();
    broker.topic("live", 2);
    broker.topic("copy", 1);
    broker.fill("live", 2, 0..60).await;
    let (ctx, runtime) = session()?;
    query(
        &ctx,
        &format!(
            "CREATE UNBOUNDED EXTERNAL TABLE live (f1 DOUBLE, label BIGINT, prediction BIGINT) \
             STORED AS KAFKA LOCATION 'live' OPTIONS ('bootstrap.servers' '{0}', \
             'group.id' 'copier', 'start' 'committed', 'linger_ms' '20'); \
             ",
            broker.servers()
        ),
    )
    .await?;
    query(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE copy (f1 DOUBLE, label BIGINT, prediction BIGINT) \
             STORED AS KAFKA LOCATION 'copy' OPTIONS ('bootstrap.servers' '{}')",
            broker.servers()
        ),
    )
    .await?;
    let insert = ctx.sql("INSERT INTO copy SELECT * FROM live").await?;
    let running = tokio::spawn(async move { insert.collect().await });
    let copied = broker.read_all("copy", 1, 60);
    assert_eq!(copied.len(), 60);
    runtime
        .control()
        .publish(equipoise::operators::ControlSignal::Stop);
    let written = match tokio::time::timeout(DEADLINE, running).await {
        Ok(Ok(result)) => result?,
        other => panic!("the insert did not stop: {other:?}"),
    };
    assert_eq!(batches_u64(&written), 60);
    // The group's offsets are past every record.
    let consumer: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", broker.servers())
        .set("group.id", "copier")
        .create()
    {
        Ok(consumer) => consumer,
        Err(e) => panic!("consumer: {e}"),
    };
    let mut asked = TopicPartitionList::new();
    asked.add_partition("live", 0);
    asked.add_partition("live", 1);
    let committed = match consumer.committed_offsets(asked, Duration::from_secs(10)) {
        Ok(committed) => committed,
        Err(e) => panic!("committed offsets: {e}"),
    };
    let offsets: Vec<Offset> = committed.elements().iter().map(|e| e.offset()).collect();
    assert_eq!(offsets, vec![Offset::Offset(30), Offset::Offset(30)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_readers_of_one_group_share_the_partitions_and_lose_nothing() -> Result<()> {
    let broker = Broker::start();
    broker.topic("shared", 4);
    broker.topic("merged", 1);
    broker.fill("shared", 4, 0..400).await;
    let (ctx, runtime) = session()?;
    query(
        &ctx,
        &format!(
            "CREATE UNBOUNDED EXTERNAL TABLE shared (f1 DOUBLE, label BIGINT, _partition INT, \
             _offset BIGINT) STORED AS KAFKA LOCATION 'shared' OPTIONS ('bootstrap.servers' '{0}', \
             'group.id' 'pair', 'start' 'committed', 'linger_ms' '20')",
            broker.servers()
        ),
    )
    .await?;
    query(
        &ctx,
        &format!(
            "CREATE EXTERNAL TABLE merged (reader VARCHAR, source_partition INT, source_offset BIGINT) \
             STORED AS KAFKA LOCATION 'merged' OPTIONS ('bootstrap.servers' '{}')",
            broker.servers()
        ),
    )
    .await?;
    let mut running = Vec::new();
    for reader in ["a", "b"] {
        let insert = ctx
            .sql(&format!(
                "INSERT INTO merged SELECT '{reader}', _partition, _offset FROM shared"
            ))
            .await?;
        running.push(tokio::spawn(async move { insert.collect().await }));
    }
    // The group spreads the four partitions over the two readers (a
    // rebalance may hand a partition over, and the new owner reads it again
    // from the last commit); together they copy every record.
    let positions = tokio::task::spawn_blocking({
        let servers = broker.servers();
        move || copied_positions(&servers, "merged", 400)
    })
    .await
    .map_err(|e| datafusion::common::DataFusionError::External(e.into()))?;
    runtime
        .control()
        .publish(equipoise::operators::ControlSignal::Stop);
    for task in running {
        match tokio::time::timeout(DEADLINE, task).await {
            Ok(Ok(result)) => {
                result?;
            }
            other => panic!("a reader did not stop: {other:?}"),
        }
    }
    assert_eq!(positions.len(), 400, "every record copied");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_goes_down_and_comes_back_loses_no_record() -> Result<()> {
    let broker = Broker::start();
    broker.topic("outage", 2);
    broker.fill("outage", 2, 0..300).await;
    let (ctx, _) = session()?;
    query(
        &ctx,
        &format!(
            "CREATE UNBOUNDED EXTERNAL TABLE outage (f1 DOUBLE, label BIGINT, _partition INT, \
             _offset BIGINT) STORED AS KAFKA LOCATION 'outage' OPTIONS ('bootstrap.servers' '{}', \
             'start' 'earliest', 'linger_ms' '20')",
            broker.servers()
        ),
    )
    .await?;
    let reading = ctx
        .sql("SELECT count(DISTINCT (_partition, _offset)) FROM (SELECT * FROM outage LIMIT 300)")
        .await?;
    let running = tokio::spawn(async move { reading.collect().await });
    // The only broker goes down while the read runs, then comes back.
    if let Err(e) = broker.cluster.broker_down(1) {
        panic!("broker down: {e}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Err(e) = broker.cluster.broker_up(1) {
        panic!("broker up: {e}");
    }
    let counted = match tokio::time::timeout(DEADLINE, running).await {
        Ok(Ok(result)) => result?,
        other => panic!("the read did not finish: {other:?}"),
    };
    assert_eq!(int(&counted, 0), 300);
    Ok(())
}

/// The distinct (source_partition, source_offset) of the records on
/// `topic`, read until there are `expected` or the deadline passes.
fn copied_positions(
    servers: &str,
    topic: &str,
    expected: usize,
) -> std::collections::BTreeSet<(i64, i64)> {
    let consumer = reader(servers, "test-copied", topic, 1);
    let mut positions = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + DEADLINE;
    while positions.len() < expected && std::time::Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let value: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap_or_default()).unwrap_or_default();
            match (
                value["source_partition"].as_i64(),
                value["source_offset"].as_i64(),
            ) {
                (Some(p), Some(o)) => {
                    positions.insert((p, o));
                }
                _ => panic!("{value}"),
            }
        }
    }
    positions
}

/// The example job file, run over `broker` with its checkpoints in
/// `dir/checkpoints` every `interval`.
pub(super) fn job_file(servers: &str, dir: &tempfile::TempDir) -> std::path::PathBuf {
    job_script(servers, dir);
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/kafka-job.toml"
    ))
    .unwrap_or_else(|e| panic!("examples/kafka-job.toml: {e}"));
    let path = dir.path().join("job.toml");
    let example = example.replace("\"kafka-job.sql\"", "\"job.sql\"");
    if let Err(e) = std::fs::write(&path, example) {
        panic!("write job.toml: {e}");
    }
    path
}

/// A job started by [`start_configured_job`]: its stderr goes to a file,
/// since a pipe read only at the end fills on a long run and stalls the job.
struct LoggedJob {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl LoggedJob {
    fn signal(&self, name: &str) {
        signal(&self.child, name);
    }

    /// Wait for the exit: success, stdout and the log.
    async fn finish(self) -> Result<(bool, String, String)> {
        let (ok, stdout, _) = finish(self.child).await?;
        Ok((
            ok,
            stdout,
            std::fs::read_to_string(&self.log).unwrap_or_default(),
        ))
    }
}

fn start_configured_job(
    config: &std::path::Path,
    checkpoints: &std::path::Path,
    interval: &str,
) -> LoggedJob {
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = config.with_file_name(format!("job-{n}.log"));
    let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log file: {e}"));
    match std::process::Command::new(super::common::BIN)
        .args(["run", "--config"])
        .arg(config)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("EQUIPOISE_CHECKPOINT__URL", checkpoints)
        .env("EQUIPOISE_CHECKPOINT__INTERVAL", interval)
        .env(
            "RUST_LOG",
            "info,equipoise_operators::runtime::checkpoint=debug",
        )
        .stdout(std::process::Stdio::piped())
        .stderr(file)
        .spawn()
    {
        Ok(child) => LoggedJob { child, log },
        Err(e) => panic!("spawn equipoise run --config: {e}"),
    }
}

/// Produce `lines[from..]` to `readings` (record `i` to partition
/// `i % partitions`) at about 2,000 records a second, on a thread of its own.
pub(super) fn trickle(
    servers: String,
    lines: Vec<String>,
    from: usize,
    partitions: usize,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let producer: rdkafka::producer::BaseProducer = match ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .create()
        {
            Ok(producer) => producer,
            Err(e) => panic!("producer: {e}"),
        };
        for (i, line) in lines.iter().enumerate().skip(from) {
            let key = i.to_string();
            let mut record = rdkafka::producer::BaseRecord::to("readings")
                .partition((i % partitions) as i32)
                .key(key.as_str())
                .payload(line.as_str());
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
            if i % 200 == 199 {
                if let Err(e) = producer.flush(Duration::from_secs(10)) {
                    panic!("flush: {e}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if let Err(e) = producer.flush(Duration::from_secs(10)) {
            panic!("flush: {e}");
        }
    })
}

/// The body of the newest checkpoint in `dir`, if there is one.
fn newest_checkpoint(dir: &std::path::Path) -> Option<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let text = std::fs::read_to_string(files.last()?).ok()?;
    let (_, body) = text.split_once('\n')?;
    serde_json::from_str(body).ok()
}

/// The Kafka positions (partition -> next offset) of a checkpoint body.
pub(super) fn checkpoint_positions(body: &serde_json::Value) -> BTreeMap<i64, i64> {
    body["operators"]["kafka_source-0"]["state"]
        .as_object()
        .map(|positions| {
            positions
                .iter()
                .filter_map(|(p, o)| Some((p.parse().ok()?, o.as_i64()?)))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) async fn finish(child: std::process::Child) -> Result<(bool, String, String)> {
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .map_err(|e| datafusion::common::DataFusionError::External(e.into()))?
        .map_err(|e| datafusion::common::DataFusionError::External(e.into()))?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// `name` from the environment, else `default` (the soak settings).
pub(super) fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Killed with SIGKILL at random moments and restarted each time, the
/// checkpointed example job predicts every record, and repeats exactly the
/// predictions each killed run wrote past the checkpoint the next run
/// restored. Kept short here; `SOAK_KILLS` and `SOAK_RECORDS` run it
/// longer, though not at 100,000 records on the mock cluster
/// (docs/configuration.md, "Crash tests and a soak").
#[tokio::test]
async fn a_checkpointed_job_killed_mid_stream_repeats_only_what_followed_its_checkpoint()
-> Result<()> {
    let records = setting("SOAK_RECORDS", 8000);
    let kills = setting("SOAK_KILLS", 2);
    // The mock cluster serves up to about 16,000 records a partition.
    let partitions = records.div_ceil(15_000).max(2);
    let broker = Broker::start();
    killed_and_restarted(
        &broker.servers(),
        |name, count| broker.topic(name, count),
        records,
        partitions,
        kills,
        None,
    )
    .await
}

/// The kill test over the broker at `servers`, whose topics `topic`
/// creates: `records` telemetry records in `partitions` partitions of
/// `readings`, the checkpointed example job killed `kills` times; with
/// `static_member`, the job's consumer is that static group member
/// (`group.instance.id`), which a restart rejoins as.
pub(super) async fn killed_and_restarted(
    servers: &str,
    topic: impl Fn(&str, i32),
    records: usize,
    partitions: usize,
    kills: usize,
    static_member: Option<&str>,
) -> Result<()> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    topic("readings", partitions as i32);
    topic("readings.dead-letters", 1);
    topic("predictions", 1);
    // A quarter now, the rest while the job runs.
    let lines = telemetry(0, records as u64).await?;
    let first: Vec<String> = lines[..records / 4].to_vec();
    if trickle(servers.to_string(), first, 0, partitions)
        .join()
        .is_err()
    {
        panic!("the producer thread failed");
    }
    let producing = trickle(servers.to_string(), lines, records / 4, partitions);
    let dir =
        tempfile::tempdir().map_err(|e| datafusion::common::DataFusionError::External(e.into()))?;
    let config = job_file(servers, &dir);
    if let Some(member) = static_member {
        let script = dir.path().join("job.sql");
        let sql = std::fs::read_to_string(&script)
            .map_err(|e| datafusion::common::DataFusionError::External(e.into()))?;
        let sql = sql.replace(
            "'session.timeout.ms' '10000',",
            &format!("'session.timeout.ms' '10000', 'group.instance.id' '{member}',"),
        );
        assert!(
            sql.contains("group.instance.id"),
            "the example job sets session.timeout.ms"
        );
        std::fs::write(&script, sql)
            .map_err(|e| datafusion::common::DataFusionError::External(e.into()))?;
    }
    let store = dir.path().join("checkpoints");
    let mut predictions = Predictions::new(servers);

    // Kill moments: random counts of distinct predictions, increasing.
    let mut state = seed;
    let mut moments: Vec<usize> = (0..kills)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % records as u64) as usize
        })
        .collect();
    moments.sort_unstable();
    let mut expected_repeats = 0;
    let mut restored_checkpoints = 0;
    for moment in moments {
        let run_start = predictions.seen.len();
        let killed = start_configured_job(&config, &store, "200ms");
        let reached = predictions.read_until(|seen| covers(seen, moment));
        killed.signal("-KILL");
        let (_, _, log) = killed.finish().await?;
        assert!(
            reached,
            "seed {seed}: the run never reached {moment} records:\n{log}"
        );
        // Everything the killed run wrote, and where the next run resumes.
        predictions.read_until_quiet(Duration::from_secs(2));
        let checkpoint = newest_checkpoint(&store);
        restored_checkpoints += usize::from(checkpoint.is_some());
        let positions = checkpoint
            .as_ref()
            .map(checkpoint_positions)
            .unwrap_or_default();
        expected_repeats += predictions.seen[run_start..]
            .iter()
            .filter(|(p, o)| *o >= positions.get(p).copied().unwrap_or(0))
            .count();
        if let Some(body) = &checkpoint {
            let operators = body["operators"].as_object().cloned().unwrap_or_default();
            for kind in [
                "kafka_source",
                "qc_smote",
                "icost",
                "train_detector",
                "drift_monitor",
            ] {
                assert!(
                    operators.values().any(|op| op["kind"] == kind),
                    "the checkpoint holds the {kind} state: {:?}",
                    operators.keys().collect::<Vec<_>>()
                );
            }
        }
    }
    if producing.join().is_err() {
        panic!("the producer thread failed");
    }
    assert!(
        restored_checkpoints > 0,
        "seed {seed}: no kill came after a checkpoint"
    );

    // The last run is not killed: every record gets its prediction.
    let second = start_configured_job(&config, &store, "200ms");
    if !predictions.read_until(|seen| covers(seen, records)) {
        second.signal("-KILL");
        let (_, stdout, log) = second.finish().await?;
        panic!(
            "seed {seed}: every record has a prediction ({} distinct; missing {:?}):\n{stdout}\n{log}",
            predictions.distinct(),
            missing(&predictions.seen, records, partitions)
        );
    }
    predictions.read_until_quiet(Duration::from_secs(2));
    let repeated = predictions.seen.len() - predictions.distinct();
    assert_eq!(
        repeated, expected_repeats,
        "seed {seed}: exactly the killed runs' predictions past their checkpoints are repeated"
    );

    // SIGTERM: a final checkpoint, exit 0; a restart reads only new records.
    second.signal("-TERM");
    let (ok, stdout, log) = second.finish().await?;
    assert!(ok, "{stdout}{log}");
    assert!(stdout.contains("restored from checkpoint"), "{stdout}");
    assert!(stdout.contains("last checkpoint:"), "{stdout}");
    let more = telemetry(records as u64, 300).await?;
    if trickle(servers.to_string(), more, 0, partitions)
        .join()
        .is_err()
    {
        panic!("the producer thread failed");
    }
    let before = predictions.seen.len();
    let third = start_configured_job(&config, &store, "200ms");
    assert!(predictions.read_until(|seen| seen.len() >= before + 300));
    third.signal("-TERM");
    let (ok, stdout, log) = third.finish().await?;
    assert!(ok, "{stdout}{log}");
    assert!(
        stdout.contains("stopped after writing 300 rows"),
        "{stdout}{log}"
    );

    // The detector's model in the final checkpoint scores new rows.
    let models = dir.path().join("models");
    let output = super::common::equipoise(&[
        "export-model",
        "--checkpoint",
        &store.to_string_lossy(),
        "--out",
        &models.to_string_lossy(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        super::common::stderr(&output)
    );
    let rows = dir.path().join("rows.ndjson");
    let sample = telemetry(0, 100).await?.join("\n");
    if let Err(e) = std::fs::write(&rows, sample) {
        panic!("write rows: {e}");
    }
    let model = models.join("train_detector-0.json");
    let output = super::common::equipoise(&[
        "sql",
        "--table",
        &format!("t={}", rows.display()),
        "--format",
        "csv",
        &format!(
            "SELECT count(prediction) AS n FROM score_detector('t', '{}')",
            model.display()
        ),
    ]);
    assert!(
        output.status.success(),
        "{}",
        super::common::stderr(&output)
    );
    assert_eq!(super::common::stdout(&output), "n\n100\n");
    Ok(())
}
