//! The job file of `equipoise run --config job.toml`, resolved in layers:
//! built-in defaults, then the file, then `EQUIPOISE_<SECTION>__<KEY>`
//! environment variables, then command-line flags. Every key is described
//! in `docs/configuration.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "EQUIPOISE_";

/// Keys outside any section, which a variable names without `__`.
const TOP_LEVEL_KEYS: &[&str] = &["sql", "sql_file"];

/// A resolved job file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// The job's SQL script, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// The job's SQL script, in a file (relative to the job file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_file: Option<PathBuf>,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub scale_out: ScaleOutConfig,
    /// The built-in pipeline's telemetry generator (a job without SQL);
    /// read as `equipoise_connectors::GeneratorKeys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<toml::Table>,
    /// The built-in pipeline: query and stages (a job without SQL); read by
    /// `JobSpec::from_tables`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<toml::Table>,
}

impl JobConfig {
    /// Whether the job runs SQL (else the built-in pipeline).
    pub fn runs_sql(&self) -> bool {
        self.sql.is_some() || self.sql_file.is_some()
    }
}

/// Where operator state lives when replicas share a consumer group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateScope {
    /// One operator chain per replica over all the partitions it is given;
    /// its checkpoints are the replica's own (one store per replica).
    #[default]
    PerReplica,
    /// One operator chain per Kafka partition, checkpointed under the
    /// partition's name in a store the replicas share, so a partition
    /// moves to another replica with its state.
    PerPartition,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleOutConfig {
    #[serde(default)]
    pub state: StateScope,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Where checkpoints go: a directory or an object-store URL. Without
    /// it the job does not checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(with = "duration_text", default = "CheckpointConfig::default_interval")]
    pub interval: Duration,
    /// Checkpoints kept in the store.
    #[serde(default = "CheckpointConfig::default_keep")]
    pub keep: usize,
}

impl CheckpointConfig {
    fn default_interval() -> Duration {
        Duration::from_secs(10)
    }
    fn default_keep() -> usize {
        3
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            url: None,
            interval: Self::default_interval(),
            keep: Self::default_keep(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    #[default]
    AtLeastOnce,
    ExactlyOnce,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(default)]
    pub guarantee: Guarantee,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "ServerConfig::default_addr")]
    pub addr: SocketAddr,
    /// How long a stop may take before the job exits anyway.
    #[serde(with = "duration_text", default = "ServerConfig::default_grace")]
    pub grace_period: Duration,
}

impl ServerConfig {
    fn default_addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9464))
    }
    fn default_grace() -> Duration {
        Duration::from_secs(20)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: Self::default_addr(),
            grace_period: Self::default_grace(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human lines on a terminal, JSON otherwise.
    #[default]
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
}

/// Durations as people write them: `10s`, `500ms`, `1m 30s`.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "'{text}' is not a duration ({e}); write e.g. \"10s\" or \"500ms\""
            ))
        })
    }
}

/// `script` with every `${NAME}` replaced by `lookup(NAME)`: how a job's
/// SQL names secrets (broker credentials from a Kubernetes Secret, passed
/// as environment variables) without writing them into the job's files.
/// `$${` is a literal `${`. An unset variable, a name that is not
/// `[A-Za-z_][A-Za-z0-9_]*` or a `${` without its `}` is an error naming
/// `origin`. Substituted values are never printed (`--check` prints the
/// job file and the plan, neither of which holds them).
pub fn substitute_env(
    script: &str,
    origin: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(script.len());
    let mut rest = script;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                return Err(format!("{origin}: `${{` without its closing `}}`"));
            };
            let name = &after[..end];
            let valid =
                name.chars().enumerate().all(|(i, c)| {
                    c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
                }) && !name.is_empty();
            if !valid {
                return Err(format!(
                    "{origin}: `${{{name}}}` is not an environment variable name"
                ));
            }
            let Some(value) = lookup(name) else {
                return Err(format!(
                    "{origin}: ${{{name}}} is not set in the environment"
                ));
            };
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Overrides from flags, applied last.
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    pub sql_file: Option<PathBuf>,
    pub checkpoint_url: Option<String>,
    pub metrics_addr: Option<SocketAddr>,
    /// The built-in pipeline's `[generator]` keys and values (`rate` 0:
    /// removed, flat out).
    pub generator: Vec<(&'static str, toml::Value)>,
    /// The built-in pipeline's detector keys and values.
    pub detector: Vec<(&'static str, toml::Value)>,
}

/// The resolved job and where its script comes from.
#[derive(Debug, Clone)]
pub struct ResolvedJob {
    pub config: JobConfig,
    /// The job file, for messages (`None`: defaults only).
    pub origin: Option<PathBuf>,
}

impl ResolvedJob {
    /// The job's SQL: inline, or read from `sql_file` (relative to the job
    /// file's folder), with `${NAME}` replaced by environment variables
    /// ([`substitute_env`]).
    pub async fn script(&self) -> Result<String, String> {
        let (text, origin) = match (&self.config.sql, &self.config.sql_file) {
            (Some(sql), None) => (sql.clone(), self.origin_name()),
            (None, Some(file)) => {
                let path = match &self.origin {
                    Some(origin) if file.is_relative() => {
                        origin.parent().unwrap_or_else(|| Path::new(".")).join(file)
                    }
                    _ => file.clone(),
                };
                let text = tokio::fs::read_to_string(&path)
                    .await
                    .map_err(|e| format!("cannot read sql_file {}: {e}", path.display()))?;
                (text, path.display().to_string())
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{}: give the job's SQL as `sql` or as `sql_file`, not both",
                    self.origin_name()
                ));
            }
            (None, None) => {
                return Err(format!(
                    "{}: no SQL: set `sql` or `sql_file`",
                    self.origin_name()
                ));
            }
        };
        substitute_env(&text, &origin, |name| std::env::var(name).ok())
    }

    fn origin_name(&self) -> String {
        self.origin
            .as_ref()
            .map_or_else(|| "the job".to_string(), |p| p.display().to_string())
    }
}

/// Resolve the job at `path` (`None`: defaults), with `env` (the process's
/// variables, passed in for tests) and `flags` over it.
pub fn resolve(
    path: Option<&Path>,
    text: Option<&str>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &FlagOverrides,
) -> Result<ResolvedJob, String> {
    let origin = path.map_or_else(|| "the job".to_string(), |p| p.display().to_string());
    let mut table: toml::Table = match text {
        Some(text) => text
            .parse()
            .map_err(|e: toml::de::Error| format!("{origin}: {}", one_line(&e.to_string())))?,
        None => toml::Table::new(),
    };
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        // `SECTION__KEY`, or a top-level key; other EQUIPOISE_ variables
        // (a tool's own settings) are not the job's.
        let keys: Vec<String> = if rest.contains("__") {
            rest.split("__").map(str::to_lowercase).collect()
        } else if TOP_LEVEL_KEYS.contains(&rest.to_lowercase().as_str()) {
            vec![rest.to_lowercase()]
        } else {
            continue;
        };
        set(&mut table, &keys, env_value(&value));
    }
    if let Some(file) = &flags.sql_file {
        table.remove("sql");
        set(
            &mut table,
            &["sql_file".into()],
            toml::Value::String(file.display().to_string()),
        );
    }
    if let Some(url) = &flags.checkpoint_url {
        set(
            &mut table,
            &["checkpoint".into(), "url".into()],
            toml::Value::String(url.clone()),
        );
    }
    for (key, value) in &flags.generator {
        let keys = ["generator".to_string(), (*key).to_string()];
        if *key == "rate" && value.as_float() == Some(0.0) {
            if let Some(toml::Value::Table(generator)) = table.get_mut("generator") {
                generator.remove("rate");
            }
        } else {
            set(&mut table, &keys, value.clone());
        }
    }
    if !flags.detector.is_empty() {
        let detector = table
            .get_mut("pipeline")
            .and_then(|p| p.get_mut("train_detector"))
            .and_then(toml::Value::as_table_mut);
        let Some(detector) = detector else {
            return Err(format!(
                "{origin}: --model-dir and --model-every set [pipeline.train_detector], \
                 which this job does not have"
            ));
        };
        for (key, value) in &flags.detector {
            detector.insert((*key).to_string(), value.clone());
        }
    }
    if let Some(addr) = flags.metrics_addr {
        set(
            &mut table,
            &["server".into(), "addr".into()],
            toml::Value::String(addr.to_string()),
        );
    }
    let config: JobConfig = table.try_into().map_err(|e: toml::de::Error| {
        format!(
            "{origin} (with {ENV_PREFIX}* variables and flags over it): {}",
            one_line(e.message())
        )
    })?;
    // A flag's sql_file is relative to the working directory.
    let origin = if flags.sql_file.is_some() {
        None
    } else {
        path.map(Path::to_path_buf)
    };
    Ok(ResolvedJob { config, origin })
}

/// An environment value as TOML when it reads as a number or a boolean,
/// else as a string (`10s`, `127.0.0.1:9464`).
fn env_value(text: &str) -> toml::Value {
    if let Ok(n) = text.parse::<i64>() {
        return toml::Value::Integer(n);
    }
    if let Ok(x) = text.parse::<f64>()
        && x.is_finite()
    {
        return toml::Value::Float(x);
    }
    if let Ok(b) = text.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    toml::Value::String(text.to_string())
}

fn set(table: &mut toml::Table, keys: &[String], value: toml::Value) {
    match keys {
        [] => {}
        [key] => {
            table.insert(key.clone(), value);
        }
        [section, rest @ ..] => {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(inner) = entry {
                set(inner, rest, value);
            }
        }
    }
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
sql_file = "job.sql"
[checkpoint]
url = "file:///var/lib/equipoise/checkpoints"
interval = "10s"
keep = 3
[delivery]
guarantee = "at-least-once"
[server]
addr = "127.0.0.1:9464"
grace_period = "20s"
"#;

    #[test]
    fn the_documented_file_reads_as_written() -> Result<(), String> {
        let job = resolve(
            Some(Path::new("/jobs/a.toml")),
            Some(FILE),
            [],
            &FlagOverrides::default(),
        )?;
        assert_eq!(job.config.sql_file, Some(PathBuf::from("job.sql")));
        assert_eq!(job.config.checkpoint.interval, Duration::from_secs(10));
        assert_eq!(job.config.checkpoint.keep, 3);
        assert_eq!(job.config.server.grace_period, Duration::from_secs(20));
        assert_eq!(job.config.delivery.guarantee, Guarantee::AtLeastOnce);
        Ok(())
    }

    #[test]
    fn environment_then_flags_override_the_file() -> Result<(), String> {
        let env = [
            (
                "EQUIPOISE_CHECKPOINT__INTERVAL".to_string(),
                "1s".to_string(),
            ),
            ("EQUIPOISE_CHECKPOINT__KEEP".to_string(), "5".to_string()),
            (
                "EQUIPOISE_SERVER__ADDR".to_string(),
                "0.0.0.0:9000".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
            // Not the job's: no section, and not a top-level key.
            ("EQUIPOISE_REQUIRE_TOOLS".to_string(), "1".to_string()),
            ("EQUIPOISE_SQL_FILE".to_string(), "other.sql".to_string()),
        ];
        let flags = FlagOverrides {
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9999))),
            ..FlagOverrides::default()
        };
        let job = resolve(None, Some(FILE), env, &flags)?;
        assert_eq!(job.config.checkpoint.interval, Duration::from_secs(1));
        assert_eq!(job.config.checkpoint.keep, 5);
        assert_eq!(
            job.config.server.addr,
            SocketAddr::from(([127, 0, 0, 1], 9999))
        );
        Ok(())
    }

    #[test]
    fn unknown_keys_name_the_file_and_the_key() {
        let text = "sql = 'SELECT 1'\n[checkpoint]\nintervall = '5s'\n";
        let error = resolve(
            Some(Path::new("job.toml")),
            Some(text),
            [],
            &FlagOverrides::default(),
        )
        .err()
        .unwrap_or_default();
        assert!(error.starts_with("job.toml"), "{error}");
        assert!(error.contains("intervall"), "{error}");
        assert!(error.contains("interval"), "{error}");

        let env = [("EQUIPOISE_SERVR__ADDR".to_string(), "x".to_string())];
        let error = resolve(
            Some(Path::new("job.toml")),
            Some(text.replace("intervall", "interval").as_str()),
            env,
            &FlagOverrides::default(),
        )
        .err()
        .unwrap_or_default();
        assert!(error.contains("servr"), "{error}");
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        let error = resolve(
            None,
            Some("[checkpoint]\ninterval = 'often'\n"),
            [],
            &FlagOverrides::default(),
        )
        .err()
        .unwrap_or_default();
        assert!(error.contains("not a duration"), "{error}");
    }

    #[test]
    fn environment_variables_are_substituted_and_missing_ones_named() {
        let lookup = |name: &str| (name == "KAFKA_PASSWORD").then(|| "s3cret".to_string());
        assert_eq!(
            substitute_env(
                "'sasl.password' '${KAFKA_PASSWORD}', cost $5",
                "job.sql",
                lookup
            ),
            Ok("'sasl.password' 's3cret', cost $5".to_string())
        );
        assert_eq!(
            substitute_env("literal $${KAFKA_PASSWORD}", "job.sql", lookup),
            Ok("literal ${KAFKA_PASSWORD}".to_string())
        );
        assert_eq!(
            substitute_env("'${NOT_SET}'", "job.sql", lookup),
            Err("job.sql: ${NOT_SET} is not set in the environment".to_string())
        );
        assert!(substitute_env("'${KAFKA_PASSWORD'", "job.sql", lookup).is_err());
        assert!(substitute_env("'${1BAD}'", "job.sql", lookup).is_err());
        assert!(substitute_env("'${}'", "job.sql", lookup).is_err());
    }
}
