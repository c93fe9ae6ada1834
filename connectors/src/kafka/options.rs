//! The options of a Kafka table, as `CREATE EXTERNAL TABLE ... STORED AS
//! KAFKA OPTIONS (...)` gives them.
//!
//! DataFusion rewrites option keys before a table factory sees them: every
//! key is lower-cased, and a key without a dot gets the prefix `format.`
//! (`'format' 'json'` arrives as `format.format`). Users write keys as they
//! read below; this module undoes the prefix:
//!
//! - Equipoise's own keys have no dot: `format`, `start`, `mode`,
//!   `bad_records`, `dead_letter_topic`, `label`, `max_message_bytes`,
//!   `batch_rows`, `linger_ms`, `key_column`, and for `'format' 'avro'`
//!   `avro_schema_file` (the writer schema, `.avsc` JSON) and
//!   `avro_schema_id` (its schema-registry id, in each message's header).
//! - Every other key is a librdkafka setting and is passed to the client as
//!   written (`'bootstrap.servers'`, `'group.id'`, `'security.protocol'`,
//!   and dotless ones such as `'acks'`).
//! - Settings that would break the delivery guarantee are refused
//!   (`enable.auto.commit`).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Duration;

use crate::error::ConnectorError;

/// librdkafka settings that only consumers take (a producer warns on them).
const CONSUMER_ONLY: [&str; 12] = [
    "group.id",
    "group.instance.id",
    "auto.offset.reset",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "isolation.level",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "fetch.wait.max.ms",
    "max.partition.fetch.bytes",
];

/// The prefix DataFusion puts on option keys without a dot.
const FORMAT_PREFIX: &str = "format.";

/// How the values of a message are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per message.
    Json,
    /// One CSV line per message, columns in table order, no header.
    Csv,
    /// One Avro record per message in the Confluent wire format (magic
    /// byte 0, the 4-byte schema id, the binary record), with the writer
    /// schema of [`KafkaOptions::avro`].
    Avro,
}

/// The Avro writer schema of a table: its registry id and its JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct AvroSchemaSource {
    /// The schema-registry id messages carry in their header.
    pub id: u32,
    /// Where the schema was read from, for messages.
    pub file: String,
    /// The schema (`.avsc` JSON), read when the table is created.
    pub json: String,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
    /// The group's committed offsets; earliest where it has none.
    Committed,
}

/// Whether a scan ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// From the start position to the high watermarks taken when the scan
    /// starts, then end.
    Bounded,
    /// Never end.
    Unbounded,
}

/// What happens to a record that cannot become a row, when no dead-letter
/// topic is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRecordPolicy {
    /// End the stream with an error naming topic, partition and offset.
    Fail,
    /// Count it and go on.
    Skip,
}

/// Every option of a Kafka table.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaOptions {
    pub topic: String,
    pub format: Format,
    pub start: Start,
    pub mode: ReadMode,
    pub bad_records: BadRecordPolicy,
    /// Bad records go here (with headers saying why), whatever the policy.
    pub dead_letter_topic: Option<String>,
    /// A row whose value here is NULL is a bad record (`missing_label`).
    pub label: Option<String>,
    /// Larger messages are bad records (`oversized`).
    pub max_message_bytes: usize,
    /// A batch is emitted at this many rows...
    pub batch_rows: usize,
    /// ... or this long after its first row, whichever comes first.
    pub linger: Duration,
    /// The sink's message key comes from this column.
    pub key_column: Option<String>,
    /// The writer schema of `'format' 'avro'` (its `json` is read from
    /// `file` when the table is created).
    pub avro: Option<AvroSchemaSource>,
    /// librdkafka settings, passed through.
    pub client: BTreeMap<String, String>,
}

impl KafkaOptions {
    pub const DEFAULT_BATCH_ROWS: usize = 8_192;
    pub const DEFAULT_LINGER: Duration = Duration::from_millis(100);
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;

    /// A JSON table of `topic` on `bootstrap_servers` with every default.
    pub fn new(topic: impl Into<String>, bootstrap_servers: impl Into<String>) -> Self {
        let mut client = BTreeMap::new();
        client.insert("bootstrap.servers".to_string(), bootstrap_servers.into());
        Self {
            topic: topic.into(),
            format: Format::Json,
            start: Start::Committed,
            mode: ReadMode::Bounded,
            bad_records: BadRecordPolicy::Fail,
            dead_letter_topic: None,
            label: None,
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
            batch_rows: Self::DEFAULT_BATCH_ROWS,
            linger: Self::DEFAULT_LINGER,
            key_column: None,
            avro: None,
            client,
        }
    }

    /// The options of `CREATE [UNBOUNDED] EXTERNAL TABLE ... LOCATION
    /// 'topic' OPTIONS (...)`, as DataFusion hands them over.
    pub fn from_ddl(
        topic: &str,
        unbounded: bool,
        options: &HashMap<String, String>,
    ) -> Result<Self, ConnectorError> {
        if topic.is_empty() {
            return Err(ConnectorError::user(
                "kafka: LOCATION must name the topic, e.g. LOCATION 'readings'",
            ));
        }
        let mut parsed = Self::new(topic, "");
        parsed.client.clear();
        let mut mode = None;
        let (mut avro_file, mut avro_id) = (None, None);
        for (key, value) in options {
            let own = key.strip_prefix(FORMAT_PREFIX).unwrap_or(key);
            match own {
                "format" => {
                    parsed.format = match value.to_lowercase().as_str() {
                        "json" => Format::Json,
                        "csv" => Format::Csv,
                        "avro" => Format::Avro,
                        other => {
                            return Err(ConnectorError::user(format!(
                                "kafka: unknown format '{other}'; use json, csv or avro"
                            )));
                        }
                    }
                }
                "start" => {
                    parsed.start = match value.to_lowercase().as_str() {
                        "earliest" => Start::Earliest,
                        "latest" => Start::Latest,
                        "committed" => Start::Committed,
                        other => {
                            return Err(ConnectorError::user(format!(
                                "kafka: unknown start '{other}'; use earliest, latest or committed"
                            )));
                        }
                    }
                }
                "mode" => {
                    mode = Some(match value.to_lowercase().as_str() {
                        "bounded" => ReadMode::Bounded,
                        "unbounded" => ReadMode::Unbounded,
                        other => {
                            return Err(ConnectorError::user(format!(
                                "kafka: unknown mode '{other}'; use bounded or unbounded"
                            )));
                        }
                    })
                }
                "bad_records" => {
                    parsed.bad_records = match value.to_lowercase().as_str() {
                        "fail" => BadRecordPolicy::Fail,
                        "skip" => BadRecordPolicy::Skip,
                        other => {
                            return Err(ConnectorError::user(format!(
                                "kafka: unknown bad_records '{other}'; use fail or skip \
                                 (or set dead_letter_topic)"
                            )));
                        }
                    }
                }
                "avro_schema_file" => avro_file = Some(value.clone()),
                "avro_schema_id" => {
                    avro_id = Some(value.parse::<u32>().map_err(|_| {
                        ConnectorError::user(format!(
                            "kafka: 'avro_schema_id' must be a schema-registry id (0 to \
                             4294967295), got '{value}'"
                        ))
                    })?);
                }
                "dead_letter_topic" => parsed.dead_letter_topic = Some(value.clone()),
                "label" => parsed.label = Some(value.clone()),
                "key_column" => parsed.key_column = Some(value.clone()),
                "max_message_bytes" => parsed.max_message_bytes = positive(own, value)?,
                "batch_rows" => parsed.batch_rows = positive(own, value)?,
                "linger_ms" => parsed.linger = Duration::from_millis(positive(own, value)? as u64),
                "enable.auto.commit" | "enable.auto.offset.store" => {
                    return Err(ConnectorError::user(format!(
                        "kafka: '{own}' cannot be set: Equipoise commits offsets itself, \
                         after their rows are processed"
                    )));
                }
                // A dotless librdkafka setting arrives with the prefix too.
                _ => {
                    parsed.client.insert(own.to_string(), value.clone());
                }
            }
        }
        parsed.mode = match (mode, unbounded) {
            (Some(ReadMode::Bounded), true) => {
                return Err(ConnectorError::user(
                    "kafka: 'mode' 'bounded' contradicts CREATE UNBOUNDED EXTERNAL TABLE",
                ));
            }
            (Some(mode), _) => mode,
            (None, true) => ReadMode::Unbounded,
            (None, false) => ReadMode::Bounded,
        };
        parsed.avro = match (parsed.format, avro_file, avro_id) {
            (Format::Avro, Some(file), Some(id)) => Some(AvroSchemaSource {
                id,
                file,
                json: String::new(),
            }),
            (Format::Avro, _, _) => {
                return Err(ConnectorError::user(
                    "kafka: 'format' 'avro' needs 'avro_schema_file' (the writer schema, .avsc) \
                     and 'avro_schema_id' (its schema-registry id)",
                ));
            }
            (_, None, None) => None,
            (_, _, _) => {
                return Err(ConnectorError::user(
                    "kafka: 'avro_schema_file' and 'avro_schema_id' are options of 'format' 'avro'",
                ));
            }
        };
        if !parsed.client.contains_key("bootstrap.servers") {
            return Err(ConnectorError::user(
                "kafka: OPTIONS must set 'bootstrap.servers', e.g. ('bootstrap.servers' '127.0.0.1:9092')",
            ));
        }
        Ok(parsed)
    }

    /// The client settings for a producer (the sink, dead letters): the
    /// table's librdkafka settings less the consumer-only ones, with the
    /// idempotent producer on (its own retries add no duplicates).
    pub fn producer_config(&self) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        for (key, value) in &self.client {
            // The transactional id is the exactly-once job's to set
            // (`transaction`): a producer with one must use transactions.
            if !CONSUMER_ONLY.contains(&key.as_str()) && key != "transactional.id" {
                config.set(key, value);
            }
        }
        config.set("enable.idempotence", "true");
        config
    }

    /// The consumer group: `group.id` if set, else one derived from the
    /// topic (so two tables of one topic share progress only when told to).
    pub fn group_id(&self) -> String {
        self.client
            .get("group.id")
            .cloned()
            .unwrap_or_else(|| format!("equipoise-{}", self.topic))
    }
}

fn positive(key: &str, value: &str) -> Result<usize, ConnectorError> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ConnectorError::user(format!(
            "kafka: '{key}' must be a positive integer, got '{value}'"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ddl(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        // As DataFusion rewrites them: lower case, `format.` on dotless keys.
        pairs
            .iter()
            .map(|(k, v)| {
                let k = k.to_lowercase();
                let k = if k.contains('.') {
                    k
                } else {
                    format!("format.{k}")
                };
                (k, (*v).to_string())
            })
            .collect()
    }

    #[test]
    fn own_keys_lose_the_format_prefix_and_client_keys_pass_through() -> Result<(), ConnectorError>
    {
        let options = KafkaOptions::from_ddl(
            "readings",
            false,
            &ddl(&[
                ("bootstrap.servers", "127.0.0.1:9092"),
                ("group.id", "g"),
                ("format", "CSV"),
                ("start", "earliest"),
                ("acks", "all"),
                ("dead_letter_topic", "readings.dlq"),
                ("batch_rows", "100"),
            ]),
        )?;
        assert_eq!(options.format, Format::Csv);
        assert_eq!(options.start, Start::Earliest);
        assert_eq!(options.mode, ReadMode::Bounded);
        assert_eq!(options.batch_rows, 100);
        assert_eq!(options.dead_letter_topic.as_deref(), Some("readings.dlq"));
        assert_eq!(options.group_id(), "g");
        assert_eq!(options.client.get("acks").map(String::as_str), Some("all"));
        assert_eq!(options.client.len(), 3);
        Ok(())
    }

    #[test]
    fn unbounded_tables_and_bad_options() {
        let base = [("bootstrap.servers", "b:1")];
        let unbounded = KafkaOptions::from_ddl("t", true, &ddl(&base));
        assert_eq!(unbounded.map(|o| o.mode).ok(), Some(ReadMode::Unbounded));
        for (key, value, message) in [
            ("format", "xml", "unknown format 'xml'"),
            ("start", "now", "unknown start 'now'"),
            ("batch_rows", "0", "'batch_rows' must be a positive integer"),
            ("enable.auto.commit", "true", "cannot be set"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((key, value));
            let error = KafkaOptions::from_ddl("t", false, &ddl(&pairs)).err();
            assert!(
                error
                    .as_ref()
                    .is_some_and(|e| e.to_string().contains(message)),
                "{key}: {error:?}"
            );
        }
        let contradiction =
            KafkaOptions::from_ddl("t", true, &ddl(&[base[0], ("mode", "bounded")]));
        assert!(contradiction.is_err());
        assert!(KafkaOptions::from_ddl("t", false, &ddl(&[("group.id", "g")])).is_err());
    }
}
