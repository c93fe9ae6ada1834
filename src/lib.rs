//! Equipoise: class imbalance as a first-class concern of DataFusion stream
//! processing.
//!
//! Any DataFusion application gets every Equipoise function and operator with
//! [`register_all`]:
//!
//! ```
//! # async fn demo() -> datafusion::common::Result<()> {
//! let ctx = datafusion::prelude::SessionContext::new();
//! equipoise::register_all(&ctx)?;
//! let rows = ctx
//!     .sql("SELECT label, count(*) FROM equipoise_generator('rows=1000') GROUP BY label")
//!     .await?
//!     .collect()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! This crate wires sessions ([`register_all`]), the streaming job ([`job`]),
//! the SQL command ([`sql`]) and the metrics endpoint ([`metrics_server`]).

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::prelude::{SessionConfig, SessionContext};

pub use equipoise_connectors as connectors;
pub use equipoise_operators as operators;
pub use equipoise_operators::JobRuntime;
pub use equipoise_udfs as udfs;

pub mod config;
pub mod job;
pub mod metrics_server;
pub mod model_export;
pub mod partitioned;
pub mod progress;
pub mod script;
pub mod sql;
pub mod summary;

/// Register every Equipoise function, table function and operator in `ctx`,
/// and install the [`JobRuntime`] that operators receive when they are
/// planned (a fresh one with its own Prometheus registry, unless the session
/// already has one). Returns that runtime.
pub fn register_all(ctx: &SessionContext) -> Result<Arc<JobRuntime>> {
    let state = ctx.state_ref();
    let mut state = state.write();
    let runtime = match state.config().get_extension::<JobRuntime>() {
        Some(runtime) => runtime,
        None => {
            let runtime = Arc::new(JobRuntime::default());
            state.config_mut().set_extension(Arc::clone(&runtime));
            runtime
        }
    };
    equipoise_udfs::register_all(&mut state)?;
    equipoise_operators::register_all(&mut state)?;
    equipoise_connectors::register_all(&mut state);
    Ok(runtime)
}

/// A session with `runtime` installed and everything registered.
///
/// Round-robin repartitioning and the splitting of one file into several
/// scan partitions are off: either would merge the pieces back in
/// arbitrary order below the order-sensitive operators (drift monitors,
/// trainers, decayed class weights), so a query over one file would see
/// its rows shuffled. Multi-file inputs still merge their
/// partitions; `order_by` of `drift_monitor` restores a defined order.
pub fn new_session(runtime: Arc<JobRuntime>) -> Result<SessionContext> {
    new_session_with_config(
        runtime,
        SessionConfig::new()
            .with_round_robin_repartition(false)
            .with_repartition_file_scans(false),
    )
}

/// [`new_session`] with a given configuration.
pub fn new_session_with_config(
    runtime: Arc<JobRuntime>,
    config: SessionConfig,
) -> Result<SessionContext> {
    let ctx = SessionContext::new_with_config(config.with_extension(runtime));
    register_all(&ctx)?;
    Ok(ctx)
}
