//! The HTTP endpoint of a job: `GET /metrics` (Prometheus text format),
//! `GET /healthz` (the job's loop is alive) and `GET /readyz` (state
//! restored and the job running).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What `/healthz` and `/readyz` answer from.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    ready: AtomicBool,
    /// Milliseconds after `started` of the job loop's last beat; 0 while
    /// the loop has not beaten (a job without a loop is always alive).
    last_beat_ms: AtomicU64,
}

/// A loop that has not beaten for this long is reported dead.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Health {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            ready: AtomicBool::new(false),
            last_beat_ms: AtomicU64::new(0),
        }
    }
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// The job loop is alive.
    pub fn beat(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_beat_ms.store(ms.max(1), Ordering::SeqCst);
    }

    fn alive(&self) -> bool {
        let last = self.last_beat_ms.load(Ordering::SeqCst);
        last == 0
            || self
                .started
                .elapsed()
                .saturating_sub(Duration::from_millis(last))
                < LIVENESS_TIMEOUT
    }
}

#[derive(Clone)]
struct Served {
    registry: Registry,
    health: Arc<Health>,
}

/// A running metrics endpoint; dropping it without [`MetricsServer::shutdown`]
/// leaves the task to end with the runtime.
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl MetricsServer {
    /// Listen on `addr` (port 0 picks a free port) and serve `registry` and
    /// `health`.
    pub async fn start(
        addr: SocketAddr,
        registry: Registry,
        health: Arc<Health>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {addr} for metrics: {e}"),
            )
        })?;
        let local_addr = listener.local_addr()?;
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(Served { registry, health });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            local_addr,
            stop,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting scrapes and wait for the server to end.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        self.task.await.map_err(std::io::Error::other)?
    }
}

async fn healthz(State(served): State<Served>) -> (StatusCode, &'static str) {
    if served.health.alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the job loop has stopped\n",
        )
    }
}

async fn readyz(State(served): State<Served>) -> (StatusCode, &'static str) {
    if served.health.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(served): State<Served>) -> impl IntoResponse {
    let mut body = Vec::new();
    match TextEncoder::new().encode(&served.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode metrics: {e}\n").into_bytes(),
        ),
    }
}
