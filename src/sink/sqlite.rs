//! The zero-setup sink: the same tables in an SQLite file, so `sync` works on a machine with
//! no PostgreSQL configured. One writer (SQLite has one), one transaction per batch.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags};

use super::{Batch, BatchWriter, RunRecord, Sink, SinkError, Written, SECONDARY_INDEXES};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS rubix_sync_migrations (
        version INTEGER PRIMARY KEY, name TEXT NOT NULL,
        applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP);
    CREATE TABLE IF NOT EXISTS TokenInfo (
        token_id TEXT PRIMARY KEY,
        token_name TEXT NOT NULL,
        token_number INTEGER NOT NULL,
        creator_did TEXT NOT NULL,
        last_updated TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
    CREATE TABLE IF NOT EXISTS sync_failures (
        token_id TEXT NOT NULL, node TEXT NOT NULL, reason_class TEXT NOT NULL,
        detail TEXT NOT NULL,
        first_seen TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
        last_seen TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
        attempts INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (token_id, node));
    CREATE TABLE IF NOT EXISTS sync_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL,
        started_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, finished_at TEXT,
        status TEXT NOT NULL, tokens_total INTEGER, skipped INTEGER, written INTEGER,
        unchanged INTEGER, failed INTEGER, rate REAL, failures_by_class TEXT);
    INSERT OR IGNORE INTO rubix_sync_migrations (version, name)
        VALUES (1, 'TokenInfo, sync_failures, sync_runs');";

pub struct SqliteSink {
    path: PathBuf,
    conn: Connection,
}

fn open(path: &Path) -> Result<Connection, SinkError> {
    let err = |e| SinkError::Sqlite {
        path: path.display().to_string(),
        source: e,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| SinkError::Config(format!("{}: {e}", dir.display())))?;
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(err)?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        .map_err(err)?;
    Ok(conn)
}

impl SqliteSink {
    pub fn open(path: &Path) -> Result<SqliteSink, SinkError> {
        Ok(SqliteSink {
            path: path.to_path_buf(),
            conn: open(path)?,
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> SinkError + '_ {
        move |e| SinkError::Sqlite {
            path: self.path.display().to_string(),
            source: e,
        }
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl Sink for SqliteSink {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn migrate(&mut self) -> Result<(), SinkError> {
        self.conn.execute_batch(SCHEMA).map_err(self.err())?;
        self.ensure_secondary_indexes()?;
        self.conn
            .execute_batch("CREATE INDEX IF NOT EXISTS idx_sync_failures_reason ON sync_failures (reason_class);")
            .map_err(self.err())
    }

    fn start_run(&mut self, node: &str) -> Result<i64, SinkError> {
        // SQLite has one writer: a concurrent run blocks on the busy timeout instead of a lock.
        self.conn
            .execute(
                "UPDATE sync_runs SET status = 'aborted' WHERE node = ?1 AND status = 'running'",
                [node],
            )
            .map_err(self.err())?;
        self.conn
            .execute(
                "INSERT INTO sync_runs (node, status) VALUES (?1, 'running')",
                [node],
            )
            .map_err(self.err())?;
        Ok(self.conn.last_insert_rowid())
    }

    fn finish_run(&mut self, id: i64, r: &RunRecord) -> Result<(), SinkError> {
        let by_class = serde_json::to_string(&r.failures_by_class).unwrap_or_default();
        self.conn
            .execute(
                "UPDATE sync_runs SET finished_at = CURRENT_TIMESTAMP, status = ?2, tokens_total = ?3,
                     skipped = ?4, written = ?5, unchanged = ?6, failed = ?7, rate = ?8,
                     failures_by_class = ?9 WHERE id = ?1",
                params![
                    id,
                    r.status,
                    r.tokens_total as i64,
                    r.skipped as i64,
                    r.written as i64,
                    r.unchanged as i64,
                    r.failed as i64,
                    r.rate,
                    by_class
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    fn token_table_empty(&mut self) -> Result<bool, SinkError> {
        self.conn
            .query_row("SELECT NOT EXISTS (SELECT 1 FROM TokenInfo)", [], |r| {
                r.get(0)
            })
            .map_err(self.err())
    }

    fn for_each_token_id(&mut self, each: &mut dyn FnMut(&str) -> bool) -> Result<(), SinkError> {
        let mut stmt = self
            .conn
            .prepare("SELECT token_id FROM TokenInfo")
            .map_err(self.err())?;
        let mut rows = stmt.query([]).map_err(self.err())?;
        while let Some(row) = rows.next().map_err(self.err())? {
            let id: String = row.get(0).map_err(self.err())?;
            if !each(&id) {
                break;
            }
        }
        Ok(())
    }

    fn drop_secondary_indexes(&mut self) -> Result<(), SinkError> {
        for (name, _) in SECONDARY_INDEXES {
            self.conn
                .execute_batch(&format!("DROP INDEX IF EXISTS {name};"))
                .map_err(self.err())?;
        }
        Ok(())
    }

    fn ensure_secondary_indexes(&mut self) -> Result<(), SinkError> {
        for (name, col) in SECONDARY_INDEXES {
            self.conn
                .execute_batch(&format!(
                    "CREATE INDEX IF NOT EXISTS {name} ON TokenInfo ({col});"
                ))
                .map_err(self.err())?;
        }
        Ok(())
    }

    fn query(&mut self, sql: &str) -> Result<crate::report::Report, SinkError> {
        use rusqlite::types::ValueRef;
        use serde_json::Value;
        let err = self.err();
        let mut stmt = self.conn.prepare(sql).map_err(&err)?;
        let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let n = columns.len();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            ValueRef::Null => Value::Null,
                            ValueRef::Integer(v) => Value::from(v),
                            ValueRef::Real(v) => Value::from(v),
                            ValueRef::Text(t) | ValueRef::Blob(t) => {
                                Value::from(String::from_utf8_lossy(t).into_owned())
                            }
                        })
                    })
                    .collect::<Result<Vec<_>, rusqlite::Error>>()
            })
            .map_err(&err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&err)?;
        Ok(crate::report::Report { columns, rows })
    }

    fn has_table(&mut self, name: &str) -> Result<bool, SinkError> {
        let err = self.err();
        self.conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND lower(name) = lower(?1)",
                [name],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(err)
    }

    fn writers(&self, _n: usize, _append: bool) -> Result<Vec<Box<dyn BatchWriter>>, SinkError> {
        Ok(vec![Box::new(SqliteWriter {
            path: self.path.clone(),
            conn: open(&self.path)?,
        })])
    }
}

pub struct SqliteWriter {
    path: PathBuf,
    conn: Connection,
}

impl BatchWriter for SqliteWriter {
    fn write(&mut self, node: &str, batch: &Batch) -> Result<Written, SinkError> {
        let path = self.path.display().to_string();
        let err = |e| SinkError::Sqlite {
            path: path.clone(),
            source: e,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let mut written = 0u64;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO TokenInfo (token_id, token_name, token_number, creator_did)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (token_id) DO UPDATE SET
                         token_name = excluded.token_name,
                         token_number = excluded.token_number,
                         creator_did = excluded.creator_did,
                         last_updated = CURRENT_TIMESTAMP
                     WHERE (token_name, token_number, creator_did)
                           IS NOT (excluded.token_name, excluded.token_number, excluded.creator_did)",
                )
                .map_err(err)?;
            let mut clear = tx
                .prepare_cached("DELETE FROM sync_failures WHERE token_id = ?1")
                .map_err(err)?;
            for t in &batch.tokens {
                written += upsert
                    .execute(params![t.token_id, t.name, t.number, t.creator_did])
                    .map_err(err)? as u64;
                clear.execute([&t.token_id]).map_err(err)?;
            }
            let mut fail = tx
                .prepare_cached(
                    "INSERT INTO sync_failures (token_id, node, reason_class, detail) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (token_id, node) DO UPDATE SET reason_class = excluded.reason_class,
                         detail = excluded.detail, last_seen = CURRENT_TIMESTAMP, attempts = attempts + 1",
                )
                .map_err(err)?;
            for f in &batch.failures {
                fail.execute(params![f.token_id, node, f.class, f.detail])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(Written {
            written,
            unchanged: batch.tokens.len() as u64 - written,
            failures: batch.failures.len() as u64,
        })
    }
}
