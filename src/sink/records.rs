//! `scan`'s tables: TokenRecords (one row per token per node, the old multi-node table made
//! idempotent) and ProcessedDatabases (what each node database looked like when last scanned).
//!
//! A row's natural key is `(source, db_path, token_id)`: re-running never duplicates rows
//! (the old script did), and a token held by two nodes keeps one row per node. A row the node
//! no longer has is marked `removed_at`, never deleted and never left looking current.

use std::time::SystemTime;

use crate::source::TokensRow;

use super::SinkError;

/// Which node a batch of records belongs to, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMeta {
    /// The scanning machine's identity (`--source`, else the host name).
    pub source: String,
    /// Its primary non-loopback address, if it has one.
    pub source_ip: Option<String>,
    pub node_name: String,
    pub db_path: String,
    pub ipfs_path: Option<String>,
    pub db_last_modified: Option<SystemTime>,
}

/// Why a token's content is not in TokenRecords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentError {
    pub class: &'static str,
    pub detail: String,
}

/// One TokensTable row with its resolved content.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRow {
    pub row: TokensRow,
    pub content: Result<Vec<u8>, ContentError>,
}

/// How content is stored: text when it is UTF-8 that PostgreSQL `text` can hold, otherwise
/// the exact bytes in `ipfs_data_raw` with `ipfs_data_binary` set. Never mangled.
pub(crate) fn content_columns(content: &[u8]) -> (Option<&str>, Option<&[u8]>, bool) {
    match std::str::from_utf8(content) {
        Ok(s) if !s.contains('\0') => (Some(s), None, false),
        _ => (None, Some(content), true),
    }
}

/// What one batch of records changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecordsWritten {
    pub inserted: u64,
    /// Existing rows whose values changed (or that came back after removal).
    pub updated: u64,
}

/// What ProcessedDatabases remembers of a node database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessedState {
    pub fingerprint: Option<String>,
    pub status_filter: Option<String>,
    pub ipfs_path: Option<String>,
    pub status: Option<String>,
    pub record_count: i64,
}

/// A node database's row in ProcessedDatabases after a scan of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessedRecord {
    pub size: Option<i64>,
    pub fingerprint: Option<String>,
    pub status_filter: String,
    pub record_count: i64,
    pub ok_count: i64,
    pub failed_count: i64,
    pub removed_count: i64,
    pub duration_s: f64,
    /// `ok`, `with_failures`, `no_tokens_table`, `failed`.
    pub status: String,
    pub error: Option<String>,
}

/// The central database as `scan` sees it. Every method commits what it writes.
pub trait RecordSink: Send {
    /// Where the data goes, with any password redacted.
    fn describe(&self) -> String;
    /// Creates or upgrades the schema (all of rubix-sync's tables); idempotent.
    fn migrate(&mut self) -> Result<(), SinkError>;
    /// Another connection to the same database (node workers read while the writer writes).
    fn another(&self) -> Result<Box<dyn RecordSink>, SinkError>;
    fn processed(
        &mut self,
        source: &str,
        db_path: &str,
    ) -> Result<Option<ProcessedState>, SinkError>;
    /// Calls `each` with every current (not removed) row of this node and whether its
    /// content was fetched; stop early by returning false.
    fn for_each_known(
        &mut self,
        source: &str,
        db_path: &str,
        each: &mut dyn FnMut(&TokensRow, bool) -> bool,
    ) -> Result<(), SinkError>;
    /// Upserts a batch in one transaction; rows whose values are unchanged are not rewritten.
    fn write_records(
        &mut self,
        node: &NodeMeta,
        rows: &[RecordRow],
    ) -> Result<RecordsWritten, SinkError>;
    /// Marks these ids of this node as removed; returns how many rows were marked.
    fn mark_removed(&mut self, node: &NodeMeta, ids: &[String]) -> Result<u64, SinkError>;
    /// Records the node database as processed (its fingerprint decides the next skip).
    fn finish_node(&mut self, node: &NodeMeta, record: &ProcessedRecord) -> Result<(), SinkError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_text_only_when_text_can_hold_it_exactly() {
        assert_eq!(content_columns(b"RBT 1 d"), (Some("RBT 1 d"), None, false));
        assert_eq!(
            content_columns(b"RBT\xff 1"),
            (None, Some(&b"RBT\xff 1"[..]), true)
        );
        assert_eq!(content_columns(b"a\0b"), (None, Some(&b"a\0b"[..]), true));
        assert_eq!(content_columns(b""), (Some(""), None, false));
    }
}
