//! The `equipoise` command: `equipoise sql` and `equipoise run`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use equipoise::job::{JobSpec, run_job};
use equipoise::metrics_server::MetricsServer;
use equipoise::script::run_script;
use equipoise::sql::{OutputFormat, TableArg, run_sql};
use equipoise::{JobRuntime, progress};
use equipoise_connectors::GeneratorConfig;
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
    /// Run a job written in SQL: a script of DDL and views whose last
    /// statement is `INSERT INTO <table> SELECT ...` (e.g. Kafka to Kafka
    /// through the operators), instead of the built-in telemetry job.
    #[arg(long, value_name = "FILE")]
    sql: Option<PathBuf>,
    /// Stop after this many rows (default: run until Ctrl-C or SIGTERM).
    #[arg(long)]
    rows: Option<u64>,
    /// Seed of the telemetry generator.
    #[arg(long, default_value_t = GeneratorConfig::default().seed)]
    seed: u64,
    /// Rows per record batch.
    #[arg(long, default_value_t = GeneratorConfig::default().batch_size,
          value_parser = positive_usize)]
    batch_size: usize,
    /// Rows per second the generator feeds; 0 runs flat out (benchmarks).
    #[arg(long, default_value_t = 50_000.0, value_parser = non_negative_f64)]
    rate: f64,
    /// Address of the Prometheus endpoint (`/metrics`).
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_addr: SocketAddr,
    /// Directory of the detector's model snapshots: loaded at start when
    /// present, written every `--model-every` learned rows and at the end
    /// (also on Ctrl-C or SIGTERM).
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// Learned rows between two model snapshots.
    #[arg(long, default_value_t = 100_000, value_parser = positive_u64)]
    model_every: u64,
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

fn main() -> ExitCode {
    // A panic is a bug, but it still gets one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error: {}", one_line(&info.to_string()));
    }));
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Sql(_) => "warn",
        Command::Run(_) => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Sql(args) => sql(args).await,
            Command::Run(args) => run(args).await,
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

async fn run(args: RunArgs) -> Result<(), String> {
    if let Some(path) = &args.sql {
        return run_script_file(path, args.metrics_addr).await;
    }
    let source = GeneratorConfig {
        seed: args.seed,
        rows: args.rows,
        batch_size: args.batch_size,
        rows_per_second: (args.rate > 0.0).then_some(args.rate),
        ..GeneratorConfig::default()
    };
    let mut spec = JobSpec::embedded_default(source);
    if let Some(detector) = &mut spec.detector {
        detector.snapshot_dir = args.model_dir;
        detector.snapshot_every = args.model_every;
    }
    let signals = ShutdownSignals::install()?;
    let runtime = Arc::new(JobRuntime::default());
    let server = MetricsServer::start(args.metrics_addr, runtime.registry().clone())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(
        "metrics at http://{}/metrics; Ctrl-C or SIGTERM stops",
        server.local_addr()
    );
    let mut progress = progress::for_stdout(args.rows);
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

/// `equipoise run --sql FILE`: the script job, with the same metrics
/// endpoint and signal handling as the built-in job.
async fn run_script_file(path: &Path, metrics_addr: SocketAddr) -> Result<(), String> {
    let script = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let signals = ShutdownSignals::install()?;
    let runtime = Arc::new(JobRuntime::default());
    let server = MetricsServer::start(metrics_addr, runtime.registry().clone())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(
        "running {}; metrics at http://{}/metrics; Ctrl-C or SIGTERM stops",
        path.display(),
        server.local_addr()
    );
    let summary = run_script(&script, runtime, signals.first_then_force_exit())
        .await
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
