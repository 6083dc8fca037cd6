//! Reading a node's `rubix.db` safely while the node runs and writes to it.
//!
//! The node database is touched exactly once per run: a single `INSERT … SELECT` copies the
//! token ids into a private work database (SQLite, in our own temp directory) inside one read
//! transaction. That is the run's consistent snapshot. Holding a read transaction open for the
//! whole run instead would, for a rollback-journal database (gorm's default), block the node's
//! writers for as long as PostgreSQL takes; the copy holds it for seconds. Everything after —
//! subtracting what the sink already has, ordering, streaming — works on the private copy, so
//! memory stays bounded however many tokens a node has.

mod fingerprint;
mod records;
mod snapshot;

pub use fingerprint::{fingerprint, DbFingerprint};
pub use records::{Delta, RecordSnapshot, TokensRow};
pub use snapshot::{Snapshot, TokenTable};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: cannot open the node database read-only: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{0}: not an SQLite database (no SQLite header); is this really the node's rubix.db?")]
    NotSqlite(PathBuf),
    #[error("{path}: the node database has no {table} table (is this a Rubix node database?)")]
    NoTable { path: PathBuf, table: &'static str },
    #[error("{path}: reading the node database failed: {source} (if the node holds a long write lock, retry; --busy-timeout raises the wait)")]
    Query {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("work database in {path}: {source}")]
    Work {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}
