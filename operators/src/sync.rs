//! Locks that turn poisoning into an error instead of a panic.

use std::sync::{Mutex, MutexGuard};

use datafusion::common::{DataFusionError, Result};

/// `mutex`, locked; a lock poisoned by a panic elsewhere is an internal
/// error, so no operator panics on an execution path.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    mutex
        .lock()
        .map_err(|_| DataFusionError::Internal("a lock was poisoned by a panic".to_string()))
}
