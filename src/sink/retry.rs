//! Riding out transient database faults: a restart of PostgreSQL, a dropped connection, a
//! deadlock, a serialization failure, a statement timeout. A batch that hits one is retried
//! (after reconnecting if the connection is gone) with capped exponential backoff; anything
//! else, or a fault that outlasts the retries, stops the run with the error (and what was
//! committed stays committed; the next run finishes the work).
//!
//! Retrying is safe because every batch is one transaction: it either committed or it did
//! not. The one ambiguous case, a commit whose answer was lost with the connection, is
//! harmless: appends fall back to the merge, and the merge is idempotent.

use std::time::Duration;

use ::postgres::error::SqlState;

use super::SinkError;

/// How often a batch is tried again, and the pause before each retry (doubling, capped).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub retries: u32,
    pub first: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    /// About a minute and a half in all: longer than a PostgreSQL restart or a failover.
    fn default() -> Self {
        RetryPolicy {
            retries: 8,
            first: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    pub fn pause(&self, attempt: u32) -> Duration {
        let doubled = self.first.saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        );
        doubled.min(self.cap)
    }
}

/// Whether a PostgreSQL error is worth retrying.
pub fn transient_pg(e: &::postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // No SQLSTATE: the connection itself failed (I/O, reset, refused while restarting).
        None => e.as_db_error().is_none(),
        Some(code) => [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::QUERY_CANCELED, // statement_timeout
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::CONNECTION_DOES_NOT_EXIST,
            SqlState::CONNECTION_FAILURE,
            SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            SqlState::LOCK_NOT_AVAILABLE,
        ]
        .contains(code),
    }
}

/// Whether a sink error is worth retrying.
pub fn transient(e: &SinkError) -> bool {
    match e {
        SinkError::Connect { source, .. } | SinkError::Postgres { source, .. } => {
            transient_pg(source)
        }
        _ => false,
    }
}

/// Runs `op` until it succeeds, fails for good, or the retries run out. `op(true)` is a
/// retry: it should reconnect first if its connection is gone (a failed reconnect that is
/// itself transient counts as an attempt).
pub fn with_retry<T>(
    policy: &RetryPolicy,
    what: &str,
    mut op: impl FnMut(bool) -> Result<T, SinkError>,
) -> Result<T, SinkError> {
    let mut attempt = 0;
    let mut last = match op(false) {
        Ok(v) => return Ok(v),
        Err(e) if transient(&e) => e,
        Err(e) => return Err(e),
    };
    while attempt < policy.retries {
        attempt += 1;
        crate::metrics::db_error();
        let pause = policy.pause(attempt);
        tracing::warn!(
            attempt,
            of = policy.retries,
            pause_s = pause.as_secs_f64(),
            "{what}: transient database error, retrying: {}",
            super::config::redact(&last.to_string())
        );
        std::thread::sleep(pause);
        match op(true) {
            Ok(v) => {
                tracing::info!(attempt, "{what}: succeeded after retrying");
                return Ok(v);
            }
            Err(e) if transient(&e) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.pause(1), Duration::from_millis(500));
        assert_eq!(p.pause(2), Duration::from_secs(1));
        assert_eq!(p.pause(4), Duration::from_secs(4));
        assert_eq!(p.pause(8), Duration::from_secs(30));
        assert_eq!(p.pause(60), Duration::from_secs(30));
        let total: Duration = (1..=p.retries).map(|a| p.pause(a)).sum();
        assert!(total > Duration::from_secs(60) && total < Duration::from_secs(120));
    }

    #[test]
    fn only_transient_errors_are_retried() {
        let fast = RetryPolicy {
            retries: 3,
            first: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        };
        let mut calls = 0;
        let r: Result<(), _> = with_retry(&fast, "test", |_| {
            calls += 1;
            Err(SinkError::Config("bad".into()))
        });
        assert!(r.is_err());
        assert_eq!(calls, 1, "a configuration error is not retried");
    }
}
