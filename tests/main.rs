//! Integration tests of the `equipoise` package, compiled as one binary.
//!
//! - `checkpoint_store`: checkpoints in an S3 bucket of a real S3-protocol
//!   server (moto), through the store and through `equipoise run --check`.
//! - `cli_sql`: `equipoise sql` end to end (spawning the built binary).
//! - `cli_run`: `equipoise run` end to end: summary, metrics, SIGTERM.
//! - `deploy`: the Grafana dashboard, alert rules and docs/metrics.md
//!   against the metrics the job exports.
//! - `detector`: `train_detector` / `score_detector` (test-then-train
//!   against a direct model, synthetic rows, weights, snapshots, retraining
//!   on the generator's concept change).
//! - `drift`: the drift monitor in a job (change points, signals to the
//!   oversampler, metrics).
//! - `exactly_once`: exactly-once delivery over the mock cluster
//!   (transactions per checkpoint, fencing, the checkpoint a restart
//!   chooses from the group's committed offsets).
//! - `icost`: the iCost operator's streaming semantics, Prometheus families
//!   and arrival-order independence.
//! - `kafka`: Kafka tables against librdkafka's mock cluster (reads,
//!   dead letters, the sink, unbounded reads, broker errors).
//! - `library`: each crate's `register_all` and the `expr_fn` builders
//!   against the same SQL.
//! - `oversampling`: the oversampling operators (segment property,
//!   determinism, metrics, the streaming path).
//! - `prometheus`: a real Prometheus server scraping `equipoise run`, with
//!   the alert rules loaded.
//! - `scale_out`: replicas of one job with state per Kafka partition, as
//!   processes: a replica killed, its partitions taken over from their
//!   checkpoints (tansu with a third replica joining; the mock cluster with
//!   the survivor alone).
//! - `streaming`: the unbounded execution path through the library API.
//! - `tansu`: against a tansu broker in its own process: `equipoise sql`
//!   over a topic, an exactly-once job refused in one line, and the
//!   checkpointed job (a static group member) killed and restarted.

mod it {
    pub mod checkpoint_store;
    pub mod cli_run;
    pub mod cli_sql;
    pub mod common;
    pub mod deploy;
    pub mod detector;
    pub mod drift;
    pub mod exactly_once;
    pub mod icost;
    pub mod kafka;
    pub mod library;
    pub mod oversampling;
    pub mod prometheus;
    pub mod scale_out;
    pub mod slt;
    pub mod streaming;
    pub mod tansu;
}
