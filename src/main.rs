//! The `equipoise` command: `equipoise sql` and `equipoise run`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use datafusion::physical_plan::displayable;
use equipoise::config::StateScope;
use equipoise::config::{self, FlagOverrides, Guarantee, LogFormat, ResolvedJob};
use equipoise::job::{EMBEDDED_JOB_FILE, JobSpec, run_job};
use equipoise::metrics_server::{Health, MetricsServer};
use equipoise::model_export::export_models;
use equipoise::operators::runtime::CheckpointStore;
use equipoise::partitioned::{group_source, run_partitioned};
use equipoise::script::{ExactlyOnce, ScriptRun, checkpointable, plan_script, run_script};
use equipoise::sql::{OutputFormat, TableArg, run_sql};
use equipoise::{JobRuntime, progress};
use equipoise_connectors::kafka;
use equipoise_connectors::{GeneratorConfig, GeneratorKeys};
use tracing_subscriber::EnvFilter;

/// mimalloc keeps freed pages for reuse; the system allocator gave them back
/// and faulted them in again for every batch (see `docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "equipoise",
    version,
    about = "Class-imbalance-aware stream processing on DataFusion"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run SQL over files, with every Equipoise function registered.
    Sql(SqlArgs),
    /// Run the streaming job (by default: generated machine telemetry).
    Run(RunArgs),
    /// Write the detectors' models of a job's newest checkpoint as the
    /// model files `score_detector` loads.
    ExportModel(ExportModelArgs),
}

#[derive(Debug, Args)]
struct ExportModelArgs {
    /// The job's checkpoint store (a directory or an object-store URL).
    #[arg(long, value_name = "URL")]
    checkpoint: String,
    /// Only this detector (its operator id, e.g. train_detector-0).
    #[arg(long, value_name = "ID")]
    operator: Option<String>,
    /// Where the model files go (`<dir>/<operator id>.json`).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct SqlArgs {
    /// Register a file as a table: NAME=PATH (.csv, .csv.gz, .parquet,
    /// .json/.ndjson/.jsonl). Repeatable.
    #[arg(long = "table", value_name = "NAME=PATH")]
    tables: Vec<TableArg>,
    /// Read the SQL from a file instead of the argument.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "query"
    )]
    file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// SQL to run: one or more `;`-separated statements; the last one's
    /// result is printed.
    query: Option<String>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Run the job a job file describes (TOML: its SQL, checkpoints,
    /// delivery, server, logs; see docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the job, print it resolved with its physical plan, and
    /// exit without running it.
    #[arg(long)]
    check: bool,
    /// Run a job written in SQL: a script of DDL and views whose last
    /// statement is `INSERT INTO <table> SELECT ...` (e.g. Kafka to Kafka
    /// through the operators), instead of the built-in telemetry job.
    /// Overrides the job file's `sql_file`.
    #[arg(long, value_name = "FILE")]
    sql: Option<PathBuf>,
    /// Checkpoint store (a directory or an object-store URL); overrides
    /// the job file's `[checkpoint] url`.
    #[arg(long, value_name = "URL")]
    checkpoint_url: Option<String>,
    /// Built-in pipeline: stop after this many rows (default: run until
    /// Ctrl-C or SIGTERM).
    #[arg(long)]
    rows: Option<u64>,
    /// Built-in pipeline: seed of the telemetry generator (default: the job
    /// file's, 42 in the built-in one).
    #[arg(long)]
    seed: Option<u64>,
    /// Built-in pipeline: rows per record batch (default: the job file's).
    #[arg(long, value_parser = positive_usize)]
    batch_size: Option<usize>,
    /// Built-in pipeline: rows per second the generator feeds; 0 runs flat
    /// out (default: the job file's, 50,000 in the built-in one).
    #[arg(long, value_parser = non_negative_f64)]
    rate: Option<f64>,
    /// Address of `/metrics`, `/healthz` and `/readyz` (default
    /// 127.0.0.1:9464); overrides the job file's `[server] addr`.
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Directory of the detector's model snapshots: loaded at start when
    /// present, written every `--model-every` learned rows and at the end
    /// (also on Ctrl-C or SIGTERM).
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// Learned rows between two model snapshots (default 100,000).
    #[arg(long, value_parser = positive_u64)]
    model_every: Option<u64>,
}

fn positive_u64(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn positive_usize(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn non_negative_f64(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        Ok(_) => Err("must be a finite number, 0 or more".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// A command with its job resolved, ready to run.
enum Prepared {
    Sql(SqlArgs),
    ExportModel(ExportModelArgs),
    /// The built-in telemetry job.
    Builtin(RunArgs, ResolvedJob),
    /// A job in SQL (`--config` or `--sql`).
    Script(RunArgs, ResolvedJob),
}

fn prepare(command: Command) -> Result<Prepared, String> {
    let args = match command {
        Command::Sql(args) => return Ok(Prepared::Sql(args)),
        Command::ExportModel(args) => return Ok(Prepared::ExportModel(args)),
        Command::Run(args) => args,
    };
    // Read before the async runtime starts: the log format is in it.
    // Without a job file (or SQL), the built-in job's file.
    let text = match (&args.config, &args.sql) {
        (Some(path), _) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read job file {}: {e}", path.display()))?,
        ),
        (None, Some(_)) => None,
        (None, None) => Some(EMBEDDED_JOB_FILE.to_string()),
    };
    let mut generator = Vec::new();
    if let Some(rows) = args.rows {
        generator.push(("rows", toml_int(rows)?));
    }
    if let Some(seed) = args.seed {
        generator.push(("seed", toml_int(seed)?));
    }
    if let Some(batch_size) = args.batch_size {
        generator.push(("batch_size", toml_int(batch_size as u64)?));
    }
    if let Some(rate) = args.rate {
        generator.push(("rate", toml::Value::Float(rate)));
    }
    let mut detector = Vec::new();
    if let Some(dir) = &args.model_dir {
        detector.push((
            "snapshot_dir",
            toml::Value::String(dir.display().to_string()),
        ));
    }
    if let Some(every) = args.model_every {
        detector.push(("snapshot_every", toml_int(every)?));
    }
    let flags = FlagOverrides {
        sql_file: args.sql.clone(),
        checkpoint_url: args.checkpoint_url.clone(),
        metrics_addr: args.metrics_addr,
        generator,
        detector,
    };
    let job = config::resolve(
        args.config.as_deref(),
        text.as_deref(),
        std::env::vars(),
        &flags,
    )?;
    let origin = args
        .config
        .as_ref()
        .map_or_else(|| "the job".to_string(), |p| p.display().to_string());
    if job.config.delivery.guarantee == Guarantee::ExactlyOnce {
        if job.config.checkpoint.url.is_none() {
            return Err(format!(
                "{origin}: delivery.guarantee = \"exactly-once\" commits a Kafka transaction at \
                 each checkpoint: set [checkpoint] url"
            ));
        }
        if job.config.checkpoint.keep < 2 {
            return Err(format!(
                "{origin}: delivery.guarantee = \"exactly-once\" needs checkpoint.keep >= 2: \
                 the newest checkpoint's transaction may not have committed, and then the one \
                 before it is restored"
            ));
        }
        if !job.config.runs_sql() {
            return Err(format!(
                "{origin}: delivery.guarantee = \"exactly-once\" is for jobs from Kafka to Kafka \
                 (set `sql` or `sql_file`); the built-in job writes no topic"
            ));
        }
    }
    let builtin = job.config.pipeline.is_some() || job.config.generator.is_some();
    match (job.config.runs_sql(), builtin) {
        (true, true) => Err(format!(
            "{origin}: a job runs its SQL or the built-in pipeline ([generator], [pipeline]), \
             not both"
        )),
        (true, false) => Ok(Prepared::Script(args, job)),
        (false, true) if job.config.pipeline.is_some() => Ok(Prepared::Builtin(args, job)),
        (false, _) => Err(format!(
            "{origin}: no SQL: set `sql` or `sql_file`, or [pipeline] for the built-in pipeline \
             (examples/telemetry-job.toml)"
        )),
    }
}

fn toml_int(n: u64) -> Result<toml::Value, String> {
    i64::try_from(n)
        .map(toml::Value::Integer)
        .map_err(|_| format!("{n} is too large"))
}

fn main() -> ExitCode {
    // A panic is a bug, but it still gets one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error: {}", one_line(&info.to_string()));
    }));
    let cli = Cli::parse();
    let prepared = match prepare(cli.command) {
        Ok(prepared) => prepared,
        Err(message) => return fail(&message),
    };
    let (default_level, log_format) = match &prepared {
        Prepared::Sql(_) | Prepared::ExportModel(_) => ("warn", LogFormat::Text),
        Prepared::Builtin(_, job) | Prepared::Script(_, job) => ("info", job.config.log.format),
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let terminal = std::io::stderr().is_terminal();
    let json = match log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal,
    };
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(terminal)
            .init();
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match prepared {
            Prepared::Sql(args) => sql(args).await,
            Prepared::ExportModel(args) => export_model(&args).await,
            Prepared::Builtin(args, job) => run(args, &job).await,
            Prepared::Script(args, job) => run_script_job(&args, &job).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {}", one_line(message));
    ExitCode::FAILURE
}

/// Errors are one line: DataFusion nests causes over several lines, and some
/// of its messages carry a whole plan; the cause comes first, so a long
/// message is cut.
fn one_line(message: &str) -> String {
    const MAX_CHARS: usize = 400;
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{} ...", &line[..cut]),
        None => line,
    }
}

async fn sql(args: SqlArgs) -> Result<(), String> {
    let query = match (&args.file, args.query) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read SQL file {}: {e}", path.display()))?,
        (None, Some(query)) => query,
        (None, None) => return Err("no SQL given: pass a query or -f FILE".to_string()),
    };
    let mut stdout = std::io::BufWriter::new(std::io::stdout());
    match run_sql(&args.tables, &query, args.format, &mut stdout).await {
        Ok(()) => Ok(()),
        // `equipoise sql ... | head` closing the pipe is not a failure.
        Err(datafusion::error::DataFusionError::IoError(e))
            if e.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

async fn run(args: RunArgs, job: &ResolvedJob) -> Result<(), String> {
    let origin = args.config.as_ref().map_or_else(
        || "the built-in job".to_string(),
        |p| p.display().to_string(),
    );
    let generator: GeneratorKeys = job
        .config
        .generator
        .clone()
        .unwrap_or_default()
        .try_into()
        .map_err(|e: toml::de::Error| format!("{origin}: [generator]: {}", e.message().trim()))?;
    let source = GeneratorConfig::from_keys(generator).map_err(|e| format!("{origin}: {e}"))?;
    let spec = JobSpec::from_tables(source, job.config.pipeline.clone().unwrap_or_default())
        .map_err(|e| format!("{origin}: {e}"))?;
    if args.check {
        println!("{}", resolved_text(job)?);
        println!(
            "# the built-in pipeline: class_monitor{}",
            spec.stage_names()
                .iter()
                .map(|name| format!(" -> {name}"))
                .collect::<String>()
        );
        return Ok(());
    }
    let signals = ShutdownSignals::install()?;
    let runtime = Arc::new(JobRuntime::default());
    let health = Arc::new(Health::default());
    health.set_ready(true);
    let server = MetricsServer::start(job.config.server.addr, runtime.registry().clone(), health)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(
        "metrics at http://{}/metrics; Ctrl-C or SIGTERM stops",
        server.local_addr()
    );
    let mut progress = progress::for_stdout(spec.source.rows);
    let summary = run_job(
        &spec,
        runtime,
        progress.as_mut(),
        signals.first_then_force_exit(),
    )
    .await
    .map_err(|e| e.to_string())?;
    println!("{summary}");
    server.shutdown().await.map_err(|e| e.to_string())?;
    Ok(())
}

async fn export_model(args: &ExportModelArgs) -> Result<(), String> {
    let store = CheckpointStore::open(&args.checkpoint, 1).map_err(|e| e.to_string())?;
    let (epoch, written) = export_models(&store, args.operator.as_deref(), &args.out)
        .await
        .map_err(|e| e.to_string())?;
    for path in written {
        println!("{} (checkpoint {epoch})", path.display());
    }
    Ok(())
}

/// The resolved job file, as TOML.
fn resolved_text(job: &ResolvedJob) -> Result<String, String> {
    toml::to_string(&job.config).map_err(|e| format!("cannot print the resolved job: {e}"))
}

/// A job in SQL, with the same endpoint and signal handling as the
/// built-in job, checkpointing when the job file says where.
async fn run_script_job(args: &RunArgs, job: &ResolvedJob) -> Result<(), String> {
    let script = job.script().await?;
    let checkpoint = &job.config.checkpoint;
    let store = match &checkpoint.url {
        Some(url) => Some(CheckpointStore::open(url, checkpoint.keep).map_err(|e| e.to_string())?),
        None => None,
    };
    let runtime = Arc::new(JobRuntime::default());
    let per_partition = job.config.scale_out.state == StateScope::PerPartition;
    let exactly_once = job.config.delivery.guarantee == Guarantee::ExactlyOnce;
    if args.check {
        if per_partition {
            group_source(&script).await.map_err(|e| e.to_string())?;
        }
        let mut planned = plan_script(&script, &runtime)
            .await
            .map_err(|e| e.to_string())?;
        if store.is_some() {
            planned.plan = checkpointable(planned.plan).map_err(|e| e.to_string())?;
        }
        let transactional_id = if exactly_once {
            let scope = per_partition.then_some("<topic>-<partition>");
            Some(
                kafka::transactional_id(planned.plan.as_ref(), scope, checkpoint.interval)
                    .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        println!("{}", resolved_text(job)?);
        println!("# inserts into {}; physical plan:", planned.target);
        print!("{}", displayable(planned.plan.as_ref()).indent(true));
        match &store {
            Some(store) if per_partition => println!(
                "# state per Kafka partition: each partition's checkpoints under {}/<topic>-<partition>",
                store.url().trim_end_matches('/')
            ),
            Some(store) => match store.latest().await.map_err(|e| e.to_string())? {
                Some(found) => println!(
                    "# would restore checkpoint {} from {}",
                    found.epoch,
                    store.url()
                ),
                None => println!("# no checkpoint in {} yet: would start fresh", store.url()),
            },
            None => {}
        }
        if let Some(id) = transactional_id {
            println!(
                "# exactly-once: Kafka transactions with transactional.id {id}, one per \
                 checkpoint; restores the newest checkpoint whose offsets the group committed"
            );
        }
        return Ok(());
    }
    let signals = ShutdownSignals::install()?;
    let health = Arc::new(Health::default());
    let server = MetricsServer::start(
        job.config.server.addr,
        runtime.registry().clone(),
        Arc::clone(&health),
    )
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!(
        "running {}{}; metrics at http://{}/metrics; Ctrl-C or SIGTERM stops",
        job.config
            .sql_file
            .as_ref()
            .map_or_else(|| "the job's SQL".to_string(), |p| p.display().to_string()),
        if per_partition {
            " with state per Kafka partition"
        } else {
            ""
        },
        server.local_addr()
    );
    let run = ScriptRun {
        checkpoint: store.map(|store| (store, checkpoint.interval)),
        health,
        grace_period: Some(job.config.server.grace_period),
        exactly_once: exactly_once.then(ExactlyOnce::default),
    };
    let shutdown = signals.first_then_force_exit();
    let summary = if per_partition {
        run_partitioned(&script, runtime.registry(), run, shutdown)
            .await
            .map(|summary| summary.to_string())
    } else {
        run_script(&script, runtime, run, shutdown)
            .await
            .map(|summary| summary.to_string())
    }
    .map_err(|e| e.to_string())?;
    println!("{summary}");
    server.shutdown().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Ctrl-C and SIGTERM listeners, installed before the job starts so that an
/// early signal is not lost (or fatal).
struct ShutdownSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> Result<Self, String> {
        Ok(Self {
            #[cfg(unix)]
            terminate: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|e| format!("cannot listen for SIGTERM: {e}"))?,
        })
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }

    /// Resolves on the first signal; a second one exits at once.
    async fn first_then_force_exit(mut self) {
        self.recv().await;
        tokio::spawn(async move {
            self.recv().await;
            eprintln!("error: interrupted again; exiting without a summary");
            std::process::exit(130);
        });
    }
}
