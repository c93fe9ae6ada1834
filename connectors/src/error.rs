//! Typed connector errors: who is at fault and whether retrying can help.
//!
//! The split follows what an operator of the job needs to know: a `User`
//! error (bad path, bad option) needs a config change, an `External` error
//! (broker down, disk full) may pass on its own, an `Internal` error is our
//! bug. The retry hint tells the job runtime what to do.

use datafusion::common::DataFusionError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorDomain {
    User,
    External,
    Internal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    NoRetry,
    WithBackoff,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConnectorError {
    pub domain: ErrorDomain,
    pub retry: RetryHint,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ConnectorError {
    pub fn new(domain: ErrorDomain, retry: RetryHint, message: impl Into<String>) -> Self {
        Self {
            domain,
            retry,
            message: message.into(),
            source: None,
        }
    }

    pub fn user(message: impl Into<String>) -> Self {
        Self::new(ErrorDomain::User, RetryHint::NoRetry, message)
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

impl From<ConnectorError> for DataFusionError {
    fn from(error: ConnectorError) -> Self {
        match error.domain {
            ErrorDomain::User => DataFusionError::Plan(error.message),
            ErrorDomain::External | ErrorDomain::Internal => {
                DataFusionError::External(Box::new(error))
            }
        }
    }
}
