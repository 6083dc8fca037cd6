//! Where tokens land: PostgreSQL (the real target) or an SQLite file (zero-setup default).
//!
//! Both hold the same tables: `TokenInfo` exactly as the old system had it (its queries and
//! pgAdmin views keep working), `sync_failures` (every token that could not be fetched,
//! verified or parsed, with its reason) and `sync_runs`. The sink knows nothing of IPFS.
//!
//! A sink has a control side ([`Sink`]: migrations, what is already there, run records, index
//! management) and one or more [`BatchWriter`]s, each on its own connection, each committing a
//! batch atomically: an interrupted run loses nothing already committed.

pub mod config;
mod pg_records;
pub mod postgres;
pub mod records;
pub mod retry;
pub mod sqlite;
pub mod status;

use std::borrow::Cow;

/// A token that parsed, ready for TokenInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub token_id: String,
    pub name: String,
    pub number: i32,
    pub creator_did: String,
}

/// A token that did not make it, with its stable reason class and a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRow {
    pub token_id: String,
    pub class: &'static str,
    pub detail: String,
}

/// One atomic unit of work for a writer.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub tokens: Vec<TokenRow>,
    pub failures: Vec<FailureRow>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.tokens.len() + self.failures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a committed batch changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// TokenInfo rows inserted or updated (values changed).
    pub written: u64,
    /// Tokens whose TokenInfo row already held exactly these values (not rewritten).
    pub unchanged: u64,
    pub failures: u64,
}

/// The record of one run, for `sync_runs`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunRecord {
    pub status: String,
    pub tokens_total: u64,
    pub skipped: u64,
    pub written: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub rate: f64,
    pub failures_by_class: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot connect to {target}: {source}{}", hint(.source))]
    Connect {
        target: String,
        source: ::postgres::Error,
    },
    #[error("PostgreSQL ({target}): {source}{}", hint(.source))]
    Postgres {
        target: String,
        source: ::postgres::Error,
    },
    #[error("SQLite sink {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database configuration: {0}")]
    Config(String),
    #[error("another rubix-sync run holds the lock for node {0}; wait for it to finish")]
    Busy(String),
}

fn hint(e: &::postgres::Error) -> String {
    // The top-level message can be as bare as "error performing TLS handshake"; the why
    // (e.g. "invalid peer certificate: UnknownIssuer") is further down the source chain.
    let mut causes = String::new();
    let mut next = std::error::Error::source(e);
    while let Some(cause) = next {
        let c = cause.to_string();
        if !e.to_string().contains(&c) && !causes.contains(&c) {
            causes.push_str(": ");
            causes.push_str(&c);
        }
        next = cause.source();
    }
    let text = format!("{e}{causes}");
    causes
        + &if text.contains("certificate") || text.contains("TLS handshake") {
            " (TLS: the server's certificate must chain to sslrootcert=PATH, PGSSLROOTCERT or \
             ~/.postgresql/root.crt, and with verify-full name the host connected to)"
                .to_string()
        } else {
            base_hint(&text)
        }
}

fn base_hint(text: &str) -> String {
    if text.contains("password authentication failed") {
        " (check the password in --database, DATABASE_URL, PGPASSWORD, ~/.pgpass or the config file)".into()
    } else if text.contains("Connection refused") || text.contains("error connecting") {
        " (is PostgreSQL running and listening there?)".into()
    } else if text.contains("does not exist") && text.contains("database") {
        " (create the database first, e.g. scripts/setup_postgres.sh or createdb)".into()
    } else {
        String::new()
    }
}

/// The control side of a sink.
pub trait Sink {
    /// Where the data goes, with any password redacted: safe to print and log.
    fn describe(&self) -> String;
    /// Creates or upgrades the schema; idempotent.
    fn migrate(&mut self) -> Result<(), SinkError>;
    /// Takes the per-node run lock (so two runs never sync the same node at once) and records
    /// the run as started; returns its id.
    fn start_run(&mut self, node: &str) -> Result<i64, SinkError>;
    fn finish_run(&mut self, id: i64, record: &RunRecord) -> Result<(), SinkError>;
    /// True when TokenInfo holds no rows (a first load).
    fn token_table_empty(&mut self) -> Result<bool, SinkError>;
    /// Calls `each` with every token id in TokenInfo; stop early by returning false.
    fn for_each_token_id(&mut self, each: &mut dyn FnMut(&str) -> bool) -> Result<(), SinkError>;
    /// Drops TokenInfo's secondary indexes before a bulk load.
    fn drop_secondary_indexes(&mut self) -> Result<(), SinkError>;
    /// Creates any missing secondary index (after a bulk load, or to repair an interrupted one).
    fn ensure_secondary_indexes(&mut self) -> Result<(), SinkError>;
    /// `n` writers, each on its own connection (a sink may return fewer, e.g. SQLite: one).
    /// `append`: no id the run will write was in TokenInfo when the run started (an
    /// incremental run writes only ids missing from it), so rows may be appended directly
    /// instead of merged; a writer falls back to merging if a concurrent writer made that
    /// untrue.
    fn writers(&self, n: usize, append: bool) -> Result<Vec<Box<dyn BatchWriter>>, SinkError>;
    /// Runs a constant, read-only SQL query (for `db status`); numbers come back as numbers.
    fn query(&mut self, sql: &str) -> Result<crate::report::Report, SinkError>;
    /// Whether a table of ours exists (TokenRecords only where `scan` has run).
    fn has_table(&mut self, name: &str) -> Result<bool, SinkError>;
}

/// One connection's worth of atomic batch writes.
pub trait BatchWriter: Send {
    fn write(&mut self, node: &str, batch: &Batch) -> Result<Written, SinkError>;
}

/// PostgreSQL `text` cannot hold NUL; tokens and details never should, but a hostile node
/// database could put one in a token id, and one bad row must not fail a whole batch.
pub(crate) fn text_safe(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// The secondary indexes the old system had on TokenInfo (names are ours).
pub(crate) const SECONDARY_INDEXES: [(&str, &str); 4] = [
    ("idx_tokeninfo_token_name", "token_name"),
    ("idx_tokeninfo_creator_did", "creator_did"),
    ("idx_tokeninfo_token_number", "token_number"),
    ("idx_tokeninfo_last_updated", "last_updated"),
];
