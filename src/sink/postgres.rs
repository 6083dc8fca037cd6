//! The PostgreSQL sink: binary COPY into a per-connection staging table, then one merge that
//! rewrites only rows whose values changed, in one transaction per batch.
//!
//! DESIGN.md §5: PostgreSQL is the bottleneck, so the client does as little as it can per
//! row: binary COPY (no text formatting or parsing), a merge that leaves unchanged rows alone
//! (updating `last_updated` on them would rewrite every index), batches de-duplicated before
//! the merge ("ON CONFLICT cannot affect row a second time").

use ::postgres::binary_copy::BinaryCopyInWriter;
use ::postgres::types::Type;
use ::postgres::{Client, Config, NoTls};

use super::config::PgTarget;
use super::{
    text_safe, Batch, BatchWriter, RunRecord, Sink, SinkError, Written, SECONDARY_INDEXES,
};

/// Versioned migrations; each runs once, in order, under an advisory lock.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "TokenInfo, sync_failures, sync_runs",
        "CREATE TABLE IF NOT EXISTS TokenInfo (
         token_id TEXT PRIMARY KEY,
         token_name TEXT NOT NULL,
         token_number INTEGER NOT NULL,
         creator_did TEXT NOT NULL,
         last_updated TIMESTAMP DEFAULT NOW(),
         created_at TIMESTAMP DEFAULT NOW()
     );
     CREATE INDEX IF NOT EXISTS idx_tokeninfo_token_name ON TokenInfo (token_name);
     CREATE INDEX IF NOT EXISTS idx_tokeninfo_creator_did ON TokenInfo (creator_did);
     CREATE INDEX IF NOT EXISTS idx_tokeninfo_token_number ON TokenInfo (token_number);
     CREATE INDEX IF NOT EXISTS idx_tokeninfo_last_updated ON TokenInfo (last_updated);
     CREATE TABLE IF NOT EXISTS sync_failures (
         token_id TEXT NOT NULL,
         node TEXT NOT NULL,
         reason_class TEXT NOT NULL,
         detail TEXT NOT NULL,
         first_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
         last_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
         attempts INTEGER NOT NULL DEFAULT 1,
         PRIMARY KEY (token_id, node)
     );
     CREATE INDEX IF NOT EXISTS idx_sync_failures_reason ON sync_failures (reason_class);
     CREATE TABLE IF NOT EXISTS sync_runs (
         id BIGSERIAL PRIMARY KEY,
         node TEXT NOT NULL,
         started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
         finished_at TIMESTAMPTZ,
         status TEXT NOT NULL,
         tokens_total BIGINT,
         skipped BIGINT,
         written BIGINT,
         unchanged BIGINT,
         failed BIGINT,
         rate DOUBLE PRECISION,
         failures_by_class JSONB
     );",
    ),
    (
        2,
        "TokenRecords, ProcessedDatabases",
        "CREATE TABLE IF NOT EXISTS TokenRecords (
         id BIGSERIAL PRIMARY KEY,
         source TEXT NOT NULL,
         source_ip TEXT,
         node_name TEXT NOT NULL,
         did TEXT,
         token_id TEXT NOT NULL,
         parent_token_id TEXT,
         token_value DOUBLE PRECISION,
         token_status BIGINT,
         token_state_hash TEXT,
         transaction_id TEXT,
         ipfs_data TEXT,
         ipfs_data_raw BYTEA,
         ipfs_data_binary BOOLEAN NOT NULL DEFAULT FALSE,
         ipfs_fetched BOOLEAN NOT NULL DEFAULT FALSE,
         ipfs_error TEXT,
         ipfs_error_class TEXT,
         db_path TEXT NOT NULL,
         ipfs_path TEXT,
         db_last_modified TIMESTAMPTZ,
         synced_at TIMESTAMPTZ NOT NULL DEFAULT now(),
         first_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
         removed_at TIMESTAMPTZ,
         CONSTRAINT tokenrecords_natural_key UNIQUE (source, db_path, token_id)
     );
     CREATE INDEX IF NOT EXISTS idx_tokenrecords_token_id ON TokenRecords (token_id);
     CREATE INDEX IF NOT EXISTS idx_tokenrecords_did ON TokenRecords (did);
     CREATE INDEX IF NOT EXISTS idx_tokenrecords_node_name ON TokenRecords (node_name);
     CREATE INDEX IF NOT EXISTS idx_tokenrecords_source_ip ON TokenRecords (source_ip);
     CREATE INDEX IF NOT EXISTS idx_tokenrecords_db_path ON TokenRecords (db_path);
     CREATE INDEX IF NOT EXISTS idx_tokenrecords_ipfs_fetched ON TokenRecords (ipfs_fetched);
     CREATE INDEX IF NOT EXISTS idx_tokenrecords_synced_at ON TokenRecords (synced_at);
     CREATE TABLE IF NOT EXISTS ProcessedDatabases (
         source TEXT NOT NULL,
         db_path TEXT NOT NULL,
         node_name TEXT NOT NULL,
         ipfs_path TEXT,
         last_modified TIMESTAMPTZ,
         size BIGINT,
         fingerprint TEXT,
         status_filter TEXT NOT NULL DEFAULT '',
         last_processed TIMESTAMPTZ NOT NULL DEFAULT now(),
         record_count BIGINT NOT NULL DEFAULT 0,
         ok_count BIGINT NOT NULL DEFAULT 0,
         failed_count BIGINT NOT NULL DEFAULT 0,
         removed_count BIGINT NOT NULL DEFAULT 0,
         duration_s DOUBLE PRECISION,
         status TEXT NOT NULL,
         error TEXT,
         PRIMARY KEY (source, db_path)
     );",
    ),
];

/// Advisory-lock namespace for migrations (arbitrary constant, "rubix").
const MIGRATION_LOCK: i64 = 0x0072_7562_6978;

pub struct PgSink {
    pub(super) target: PgTarget,
    pub(super) control: Client,
}

pub(super) fn pg_err(target: &PgTarget) -> impl Fn(::postgres::Error) -> SinkError + '_ {
    move |e| SinkError::Postgres {
        target: target.describe(),
        source: e,
    }
}

pub(super) fn connect(target: &PgTarget) -> Result<Client, SinkError> {
    let config: Config = target.config().clone();
    let client = match target.tls() {
        Some(tls) => config.connect(tls),
        None => config.connect(NoTls),
    };
    client.map_err(|e| SinkError::Connect {
        target: target.describe(),
        source: e,
    })
}

impl PgSink {
    pub fn connect(target: PgTarget) -> Result<PgSink, SinkError> {
        let control = connect(&target)?;
        Ok(PgSink { target, control })
    }

    /// `op` on the control connection, retried through transient faults (reconnecting when
    /// the connection is gone). Each op is one transaction or one idempotent statement. (A
    /// reconnect loses the session's advisory lock on the node; by then the run is ending.)
    pub(super) fn retrying<T>(
        &mut self,
        what: &str,
        mut op: impl FnMut(&mut PgSink) -> Result<T, SinkError>,
    ) -> Result<T, SinkError> {
        let policy = super::retry::RetryPolicy::default();
        super::retry::with_retry(&policy, what, |retry| {
            if retry && self.control.is_closed() {
                tracing::info!(database = %self.target.describe(), "reconnecting");
                self.control = connect(&self.target)?;
            }
            op(self)
        })
    }

    pub fn client(&mut self) -> &mut Client {
        &mut self.control
    }
}

/// A database created for one throw-away run (the bench's end-to-end row) and dropped when
/// this value is. Creating it needs CREATEDB; the name is ours, so nothing else is touched.
pub struct ScratchDatabase {
    admin: Client,
    target: PgTarget,
    name: String,
}

impl ScratchDatabase {
    /// Creates `name` (a plain identifier chosen by the caller) on `server`'s host.
    pub fn create(server: &PgTarget, name: &str) -> Result<ScratchDatabase, SinkError> {
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "scratch database names are plain identifiers"
        );
        let mut admin = connect(server)?;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .map_err(pg_err(server))?;
        Ok(ScratchDatabase {
            admin,
            target: server.with_dbname(name),
            name: name.to_string(),
        })
    }

    pub fn target(&self) -> PgTarget {
        self.target.clone()
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        if let Err(e) = self.admin.batch_execute(&sql) {
            tracing::warn!(database = %self.name, "could not drop scratch database: {e}");
        }
    }
}

impl Sink for PgSink {
    fn describe(&self) -> String {
        self.target.describe()
    }

    fn migrate(&mut self) -> Result<(), SinkError> {
        let e = pg_err(&self.target);
        let mut tx = self.control.transaction().map_err(&e)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(&e)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS rubix_sync_migrations (
                 version INTEGER PRIMARY KEY,
                 name TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .map_err(&e)?;
        for (version, name, sql) in MIGRATIONS {
            let done = tx
                .query_opt(
                    "SELECT 1 FROM rubix_sync_migrations WHERE version = $1",
                    &[version],
                )
                .map_err(&e)?
                .is_some();
            if !done {
                tracing::info!(version, name, "applying migration");
                tx.batch_execute(sql).map_err(&e)?;
                tx.execute(
                    "INSERT INTO rubix_sync_migrations (version, name) VALUES ($1, $2)",
                    &[version, name],
                )
                .map_err(&e)?;
            }
        }
        tx.commit().map_err(&e)
    }

    fn start_run(&mut self, node: &str) -> Result<i64, SinkError> {
        let e = pg_err(&self.target);
        // Session-level lock on the node's name, held by the control connection for the run.
        let locked: bool = self
            .control
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                &[&node],
            )
            .map_err(&e)?
            .get(0);
        if !locked {
            return Err(SinkError::Busy(node.to_string()));
        }
        // With the lock held, any run still marked running for this node died mid-way.
        self.control
            .execute(
                "UPDATE sync_runs SET status = 'aborted' WHERE node = $1 AND status = 'running'",
                &[&node],
            )
            .map_err(&e)?;
        let row = self
            .control
            .query_one(
                "INSERT INTO sync_runs (node, status) VALUES ($1, 'running') RETURNING id",
                &[&node],
            )
            .map_err(&e)?;
        Ok(row.get(0))
    }

    fn finish_run(&mut self, id: i64, r: &RunRecord) -> Result<(), SinkError> {
        let by_class = serde_json::to_string(&r.failures_by_class).unwrap_or_default();
        let n = |v: u64| v as i64;
        self.retrying("recording the run", |s| {
            s.control
                .execute(
                    "UPDATE sync_runs SET finished_at = now(), status = $2, tokens_total = $3,
                         skipped = $4, written = $5, unchanged = $6, failed = $7, rate = $8,
                         failures_by_class = $9::text::jsonb
                     WHERE id = $1",
                    &[
                        &id,
                        &r.status,
                        &n(r.tokens_total),
                        &n(r.skipped),
                        &n(r.written),
                        &n(r.unchanged),
                        &n(r.failed),
                        &r.rate,
                        &by_class,
                    ],
                )
                .map_err(pg_err(&s.target))
        })?;
        Ok(())
    }

    fn token_table_empty(&mut self) -> Result<bool, SinkError> {
        let row = self
            .control
            .query_one("SELECT NOT EXISTS (SELECT 1 FROM TokenInfo)", &[])
            .map_err(pg_err(&self.target))?;
        Ok(row.get(0))
    }

    fn for_each_token_id(&mut self, each: &mut dyn FnMut(&str) -> bool) -> Result<(), SinkError> {
        use std::io::BufRead;
        // COPY OUT streams the ids without materialising a result set.
        let reader = self
            .control
            .copy_out("COPY (SELECT token_id FROM TokenInfo) TO STDOUT")
            .map_err(pg_err(&self.target))?;
        for line in std::io::BufReader::with_capacity(1 << 16, reader).lines() {
            let line = line.map_err(|e| SinkError::Config(format!("reading COPY output: {e}")))?;
            // Text COPY escapes backslashes; token ids (CIDs) never contain one.
            if !each(&line) {
                break;
            }
        }
        Ok(())
    }

    fn drop_secondary_indexes(&mut self) -> Result<(), SinkError> {
        let sql: String = SECONDARY_INDEXES
            .iter()
            .map(|(name, _)| format!("DROP INDEX IF EXISTS {name};"))
            .collect();
        self.retrying("dropping TokenInfo's secondary indexes", |s| {
            s.control.batch_execute(&sql).map_err(pg_err(&s.target))
        })
    }

    fn ensure_secondary_indexes(&mut self) -> Result<(), SinkError> {
        let sql: String = SECONDARY_INDEXES
            .iter()
            .map(|(name, col)| format!("CREATE INDEX IF NOT EXISTS {name} ON TokenInfo ({col});"))
            .collect();
        self.retrying("building TokenInfo's secondary indexes", |s| {
            s.control.batch_execute(&sql).map_err(pg_err(&s.target))
        })
    }

    fn query(&mut self, sql: &str) -> Result<crate::report::Report, SinkError> {
        let describe = self.target.describe();
        crate::report::query(&mut self.control, sql, &describe)
    }

    fn has_table(&mut self, name: &str) -> Result<bool, SinkError> {
        let e = pg_err(&self.target);
        let row = self
            .control
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&name.to_lowercase()],
            )
            .map_err(&e)?;
        Ok(row.get(0))
    }

    fn writers(&self, n: usize, append: bool) -> Result<Vec<Box<dyn BatchWriter>>, SinkError> {
        (0..n.max(1))
            .map(|_| {
                PgWriter::connect(self.target.clone(), append)
                    .map(|w| Box::new(w) as Box<dyn BatchWriter>)
            })
            .collect()
    }
}

/// One connection writing batches: COPY → staging → merge, one transaction each. In append
/// mode (no row of the run was in TokenInfo at its start) rows are COPYed straight into
/// TokenInfo, halving the work per row; a unique violation (a concurrent writer got there
/// first) rolls the batch back and switches this writer to merging for the rest of the run.
pub struct PgWriter {
    target: PgTarget,
    client: Client,
    append: bool,
}

const MERGE_TOKENS: &str = "
    WITH merged AS (
        INSERT INTO TokenInfo (token_id, token_name, token_number, creator_did)
        SELECT DISTINCT ON (token_id) token_id, token_name, token_number, creator_did
        FROM rubix_staging ORDER BY token_id
        ON CONFLICT (token_id) DO UPDATE SET
            token_name = EXCLUDED.token_name,
            token_number = EXCLUDED.token_number,
            creator_did = EXCLUDED.creator_did,
            last_updated = NOW()
        WHERE (TokenInfo.token_name, TokenInfo.token_number, TokenInfo.creator_did)
              IS DISTINCT FROM (EXCLUDED.token_name, EXCLUDED.token_number, EXCLUDED.creator_did)
        RETURNING 1)
    SELECT count(*) FROM merged";

const CLEAR_FAILURES: &str = "DELETE FROM sync_failures WHERE token_id = ANY($1)";

const COPY_STAGING: &str =
    "COPY rubix_staging (token_id, token_name, token_number, creator_did) FROM STDIN BINARY";
const COPY_TOKENINFO: &str =
    "COPY TokenInfo (token_id, token_name, token_number, creator_did) FROM STDIN BINARY";

const MERGE_FAILURES: &str = "
    INSERT INTO sync_failures AS f (token_id, node, reason_class, detail)
    SELECT DISTINCT ON (t) t, $1, c, d FROM unnest($2::text[], $3::text[], $4::text[]) AS u(t, c, d)
    ORDER BY t
    ON CONFLICT (token_id, node) DO UPDATE SET
        reason_class = EXCLUDED.reason_class,
        detail = EXCLUDED.detail,
        last_seen = now(),
        attempts = f.attempts + 1";

fn copy_rows(
    tx: &mut ::postgres::Transaction<'_>,
    sql: &str,
    batch: &Batch,
) -> Result<(), ::postgres::Error> {
    let sink = tx.copy_in(sql)?;
    let mut w = BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::TEXT, Type::INT4, Type::TEXT]);
    for t in &batch.tokens {
        w.write(&[
            &text_safe(&t.token_id).as_ref(),
            &text_safe(&t.name).as_ref(),
            &t.number,
            &text_safe(&t.creator_did).as_ref(),
        ])?;
    }
    w.finish().map(drop)
}

impl PgWriter {
    fn connect(target: PgTarget, append: bool) -> Result<PgWriter, SinkError> {
        let mut client = connect(&target)?;
        client
            .batch_execute(
                "CREATE TEMP TABLE IF NOT EXISTS rubix_staging (
                     token_id TEXT, token_name TEXT, token_number INTEGER, creator_did TEXT
                 ) ON COMMIT DELETE ROWS",
            )
            .map_err(pg_err(&target))?;
        Ok(PgWriter {
            target,
            client,
            append,
        })
    }

    /// Appends the batch's tokens straight into TokenInfo; `Ok(false)` if a row already existed.
    fn try_append(&mut self, node: &str, batch: &Batch) -> Result<bool, SinkError> {
        let e = pg_err(&self.target);
        let mut tx = self.client.transaction().map_err(&e)?;
        match copy_rows(&mut tx, COPY_TOKENINFO, batch) {
            Ok(()) => {}
            Err(err) if err.code() == Some(&::postgres::error::SqlState::UNIQUE_VIOLATION) => {
                tracing::info!("TokenInfo gained rows from another writer; merging from now on");
                return Ok(false);
            }
            Err(err) => return Err(e(err)),
        }
        finish(&mut tx, node, batch).map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(true)
    }
}

/// What every batch does after its tokens are in: successes leave sync_failures, failures
/// are recorded (or their attempt counted).
fn finish(
    tx: &mut ::postgres::Transaction<'_>,
    node: &str,
    batch: &Batch,
) -> Result<(), ::postgres::Error> {
    if !batch.tokens.is_empty() {
        let ids: Vec<&str> = batch.tokens.iter().map(|t| t.token_id.as_str()).collect();
        tx.execute(CLEAR_FAILURES, &[&ids])?;
    }
    if !batch.failures.is_empty() {
        let ids: Vec<String> = batch
            .failures
            .iter()
            .map(|f| text_safe(&f.token_id).into_owned())
            .collect();
        let classes: Vec<&str> = batch.failures.iter().map(|f| f.class).collect();
        let details: Vec<String> = batch
            .failures
            .iter()
            .map(|f| text_safe(&f.detail).into_owned())
            .collect();
        tx.execute(MERGE_FAILURES, &[&node, &ids, &classes, &details])?;
    }
    Ok(())
}

impl PgWriter {
    /// A new connection (and its staging table) if the old one is gone.
    fn reconnect_if_closed(&mut self) -> Result<(), SinkError> {
        if self.client.is_closed() {
            tracing::info!(database = %self.target.describe(), "reconnecting");
            *self = PgWriter::connect(self.target.clone(), self.append)?;
        }
        Ok(())
    }

    fn write_once(&mut self, node: &str, batch: &Batch) -> Result<Written, SinkError> {
        let tokens = batch.tokens.len() as u64;
        if self.append && !batch.tokens.is_empty() {
            if self.try_append(node, batch)? {
                return Ok(Written {
                    written: tokens,
                    unchanged: 0,
                    failures: batch.failures.len() as u64,
                });
            }
            self.append = false;
        }
        let e = pg_err(&self.target);
        let mut tx = self.client.transaction().map_err(&e)?;
        let mut written = 0u64;
        if !batch.tokens.is_empty() {
            copy_rows(&mut tx, COPY_STAGING, batch).map_err(&e)?;
            let row = tx.query_one(MERGE_TOKENS, &[]).map_err(&e)?;
            written = row.get::<_, i64>(0) as u64;
        }
        finish(&mut tx, node, batch).map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(Written {
            written,
            unchanged: tokens - written.min(tokens),
            failures: batch.failures.len() as u64,
        })
    }
}

impl BatchWriter for PgWriter {
    /// One batch, one transaction; transient faults (a restart, a dropped connection, a
    /// deadlock, a timeout) are retried with backoff on a fresh connection if need be.
    fn write(&mut self, node: &str, batch: &Batch) -> Result<Written, SinkError> {
        super::retry::with_retry(
            &super::retry::RetryPolicy::default(),
            "writing a batch",
            |retry| {
                if retry {
                    self.reconnect_if_closed()?;
                }
                self.write_once(node, batch)
            },
        )
    }
}
