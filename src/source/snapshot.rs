//! The per-run snapshot of a node's token ids, kept in a private work database.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::SourceError;

/// Which node table a run reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenTable {
    /// Fungible tokens: `sync` → TokenInfo.
    FtTokens,
}

impl TokenTable {
    fn name(self) -> &'static str {
        match self {
            TokenTable::FtTokens => "FTTokenTable",
        }
    }
}

/// Token ids copied out of a node database in one read transaction, plus the ids the sink
/// already holds, in a private SQLite file that is deleted with this value.
pub struct Snapshot {
    work: Connection,
    dir: tempfile::TempDir,
    total: u64,
}

const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Percent-encodes a path for an SQLite `file:` URI.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        match b {
            b'?' | b'#' | b'%' | b'&' | b'=' | 0..=0x20 | 0x7f..=0xff => {
                out.push_str(&format!("%{b:02X}"))
            }
            _ => out.push(b as char),
        }
    }
    out
}

/// Reads the database header: is it SQLite, and is it in WAL mode (file format version 2)?
fn inspect(db: &Path) -> Result<bool, SourceError> {
    let mut header = [0u8; 20];
    let mut f = File::open(db).map_err(|e| SourceError::Io {
        path: db.to_path_buf(),
        source: e,
    })?;
    if f.read_exact(&mut header).is_err() || &header[..16] != SQLITE_HEADER {
        return Err(SourceError::NotSqlite(db.to_path_buf()));
    }
    Ok(header[18] == 2)
}

/// A private work database in a fresh temp directory (deleted with the `TempDir`).
pub(super) fn open_work(
    work_dir: Option<&Path>,
    busy_timeout: Duration,
    schema: &str,
) -> Result<(Connection, tempfile::TempDir), SourceError> {
    let dir = match work_dir {
        Some(d) => tempfile::Builder::new().prefix("rubix-sync-").tempdir_in(d),
        None => tempfile::Builder::new().prefix("rubix-sync-").tempdir(),
    }
    .map_err(|e| SourceError::Io {
        path: work_dir.map_or_else(std::env::temp_dir, Path::to_path_buf),
        source: e,
    })?;
    let work_path = dir.path().join("work.db");
    let werr = |e| SourceError::Work {
        path: work_path.clone(),
        source: e,
    };
    let work = Connection::open_with_flags(
        &work_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(werr)?;
    work.busy_timeout(busy_timeout).map_err(werr)?;
    work.execute_batch(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA temp_store=FILE;
         PRAGMA cache_size=-16384;",
    )
    .map_err(werr)?;
    work.execute_batch(schema).map_err(werr)?;
    Ok((work, dir))
}

/// Runs `f` with the node database attached read-only as `node`, detaching it afterwards
/// whatever happened.
///
/// The node database is attached read-only (`mode=ro`). A WAL database whose `-shm` file is
/// absent has no open connection (SQLite removes it on last close); attaching it normally
/// would make SQLite create `-shm`/`-wal` in the node directory, so it is attached
/// `immutable=1` instead, which reads the file as it stands and creates nothing.
pub(super) fn with_node_attached<T>(
    work: &Connection,
    db: &Path,
    f: impl FnOnce(&Connection) -> Result<T, SourceError>,
) -> Result<T, SourceError> {
    let wal = inspect(db)?;
    let canonical = db.canonicalize().map_err(|e| SourceError::Io {
        path: db.to_path_buf(),
        source: e,
    })?;
    let shm = PathBuf::from(format!("{}-shm", canonical.display()));
    let mut uri = format!("file:{}?mode=ro", uri_path(&canonical));
    if wal && !shm.exists() {
        uri.push_str("&immutable=1");
    }
    work.execute("ATTACH DATABASE ?1 AS node", [&uri])
        .map_err(|e| SourceError::Open {
            path: db.to_path_buf(),
            source: e,
        })?;
    let result = f(work);
    let _ = work.execute("DETACH DATABASE node", []);
    result
}

/// The columns of `table` in the attached node database, or `None` if it has no such table.
pub(super) fn node_columns(
    work: &Connection,
    db: &Path,
    table: &str,
) -> Result<Option<Vec<String>>, SourceError> {
    let map = |e: rusqlite::Error| match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
            SourceError::NotSqlite(db.to_path_buf())
        }
        e => SourceError::Query {
            path: db.to_path_buf(),
            source: e,
        },
    };
    let mut stmt = work
        .prepare("SELECT name FROM pragma_table_info(?1, 'node')")
        .map_err(map)?;
    let cols = stmt
        .query_map([table], |r| r.get::<_, String>(0))
        .map_err(map)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(map)?;
    Ok((!cols.is_empty()).then_some(cols))
}

impl Snapshot {
    /// Copies the ids of `table` out of the node database at `db`, in one read transaction.
    pub fn take(
        db: &Path,
        table: TokenTable,
        work_dir: Option<&Path>,
        busy_timeout: Duration,
    ) -> Result<Snapshot, SourceError> {
        let (work, dir) = open_work(
            work_dir,
            busy_timeout,
            "CREATE TABLE ids(token_id TEXT PRIMARY KEY) WITHOUT ROWID;
             CREATE TABLE done(token_id TEXT PRIMARY KEY) WITHOUT ROWID;",
        )?;
        let total = with_node_attached(&work, db, |work| {
            if node_columns(work, db, table.name())?.is_none() {
                return Err(SourceError::NoTable {
                    path: db.to_path_buf(),
                    table: table.name(),
                });
            }
            // One statement, one read transaction on the node database: the snapshot. Reading
            // in primary-key order makes the inserts into `ids` plain appends.
            let sql = format!(
                "INSERT OR IGNORE INTO ids SELECT token_id FROM node.\"{0}\"
                 WHERE token_id IS NOT NULL ORDER BY token_id",
                table.name()
            );
            work.execute(&sql, []).map_err(|e| SourceError::Query {
                path: db.to_path_buf(),
                source: e,
            })
        })? as u64;
        Ok(Snapshot { work, dir, total })
    }

    /// How many distinct token ids the node holds.
    pub fn total(&self) -> u64 {
        self.total
    }

    fn werr(&self, e: rusqlite::Error) -> SourceError {
        SourceError::Work {
            path: self.dir.path().to_path_buf(),
            source: e,
        }
    }

    /// Records ids the sink already holds (their content is immutable: never fetched again).
    /// `fill` is handed a callback to call once per id.
    pub fn load_done<E>(
        &mut self,
        fill: impl FnOnce(&mut dyn FnMut(&str) -> Result<(), SourceError>) -> Result<(), E>,
    ) -> Result<Result<(), E>, SourceError> {
        let tx = self.work.transaction().map_err(|e| SourceError::Work {
            path: PathBuf::new(),
            source: e,
        })?;
        let outcome = {
            let mut stmt = tx
                .prepare("INSERT OR IGNORE INTO done VALUES (?1)")
                .map_err(|e| SourceError::Work {
                    path: PathBuf::new(),
                    source: e,
                })?;
            let mut add = |id: &str| -> Result<(), SourceError> {
                stmt.execute([id]).map(drop).map_err(|e| SourceError::Work {
                    path: PathBuf::new(),
                    source: e,
                })
            };
            fill(&mut add)
        };
        tx.commit().map_err(|e| self.werr(e))?;
        Ok(outcome)
    }

    /// Up to `n` ids chosen uniformly at random (seeded, so a run can be repeated), in a
    /// random order.
    pub fn sample(&self, n: usize, seed: u64) -> Result<Vec<String>, SourceError> {
        let mut stmt = self
            .work
            .prepare("SELECT token_id FROM ids ORDER BY token_id")
            .map_err(|e| self.werr(e))?;
        let mut ids = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.werr(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.werr(e))?;
        // Partial Fisher–Yates with splitmix64: the first n slots end up a uniform sample.
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let n = n.min(ids.len());
        for i in 0..n {
            let j = i + (next() % (ids.len() - i) as u64) as usize;
            ids.swap(i, j);
        }
        ids.truncate(n);
        Ok(ids)
    }

    /// How many of the node's ids still need work (not already in the sink).
    pub fn pending(&self) -> Result<u64, SourceError> {
        self.work
            .query_row(
                "SELECT count(*) FROM ids WHERE token_id NOT IN (SELECT token_id FROM done)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.werr(e))
    }

    /// Streams pending ids in batches of `batch` to `each`, in id order. `each` returns false to
    /// stop early (interrupt).
    pub fn for_each_pending(
        &self,
        batch: usize,
        mut each: impl FnMut(Vec<String>) -> bool,
    ) -> Result<(), SourceError> {
        let mut stmt = self
            .work
            .prepare(
                "SELECT token_id FROM ids WHERE token_id NOT IN (SELECT token_id FROM done)
                 ORDER BY token_id",
            )
            .map_err(|e| self.werr(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.werr(e))?;
        let mut buf = Vec::with_capacity(batch);
        while let Some(row) = rows.next().map_err(|e| self.werr(e))? {
            buf.push(row.get::<_, String>(0).map_err(|e| self.werr(e))?);
            if buf.len() == batch && !each(std::mem::replace(&mut buf, Vec::with_capacity(batch))) {
                return Ok(());
            }
        }
        if !buf.is_empty() {
            each(buf);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_db(dir: &Path, wal: bool, ids: &[&str]) -> PathBuf {
        let p = dir.join("rubix.db");
        let c = Connection::open(&p).unwrap();
        if wal {
            c.execute_batch("PRAGMA journal_mode=WAL").unwrap();
        }
        c.execute_batch(crate::corpus::FT_DDL).unwrap();
        for id in ids {
            c.execute("INSERT INTO FTTokenTable(token_id) VALUES (?1)", [id])
                .unwrap();
        }
        p
    }

    fn pending(s: &Snapshot) -> Vec<String> {
        let mut all = Vec::new();
        s.for_each_pending(2, |b| {
            all.extend(b);
            true
        })
        .unwrap();
        all
    }

    #[test]
    fn snapshot_subtracts_done_and_streams_in_order() {
        let t = tempfile::tempdir().unwrap();
        let db = node_db(t.path(), false, &["c", "a", "b", "d", "e"]);
        let mut s =
            Snapshot::take(&db, TokenTable::FtTokens, None, Duration::from_secs(1)).unwrap();
        assert_eq!(s.total(), 5);
        s.load_done(|add| -> Result<(), SourceError> {
            add("b")?;
            add("zz")?;
            Ok(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(s.pending().unwrap(), 4);
        assert_eq!(pending(&s), ["a", "c", "d", "e"]);
    }

    #[test]
    fn sample_is_seeded_distinct_and_bounded() {
        let t = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..200).map(|i| format!("id{i:03}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let db = node_db(t.path(), false, &refs);
        let s = Snapshot::take(&db, TokenTable::FtTokens, None, Duration::from_secs(1)).unwrap();
        let a = s.sample(50, 1).unwrap();
        assert_eq!(a, s.sample(50, 1).unwrap(), "same seed, same sample");
        assert_ne!(a, s.sample(50, 2).unwrap(), "another seed, another sample");
        let distinct: std::collections::BTreeSet<_> = a.iter().collect();
        assert_eq!(distinct.len(), 50);
        assert!(a.iter().all(|id| ids.contains(id)));
        // Not just the first ids in key order.
        assert!(a.iter().any(|id| id.as_str() >= "id100"));
        let mut all = s.sample(10_000, 3).unwrap();
        all.sort();
        assert_eq!(
            all, ids,
            "a sample larger than the table is the whole table"
        );
    }

    #[test]
    fn wal_database_without_shm_creates_no_files_in_the_node_dir() {
        let t = tempfile::tempdir().unwrap();
        let db = node_db(t.path(), true, &["x", "y"]);
        // Closing the last connection checkpointed and removed -wal/-shm.
        let before: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(before.len(), 1, "{before:?}");
        let s = Snapshot::take(&db, TokenTable::FtTokens, None, Duration::from_secs(1)).unwrap();
        assert_eq!(pending(&s), ["x", "y"]);
        drop(s);
        let after: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(before, after);
    }

    #[test]
    fn live_wal_writer_does_not_block_and_snapshot_is_consistent() {
        let t = tempfile::tempdir().unwrap();
        let db = node_db(t.path(), true, &["a"]);
        let writer = Connection::open(&db).unwrap();
        writer
            .execute_batch("BEGIN; INSERT INTO FTTokenTable(token_id) VALUES ('uncommitted');")
            .unwrap();
        let s = Snapshot::take(&db, TokenTable::FtTokens, None, Duration::from_secs(1)).unwrap();
        assert_eq!(
            pending(&s),
            ["a"],
            "uncommitted rows are not in the snapshot"
        );
        writer.execute_batch("COMMIT").unwrap();
    }

    #[test]
    fn not_sqlite_and_missing_table_are_clear_errors() {
        let t = tempfile::tempdir().unwrap();
        let junk = t.path().join("junk.db");
        std::fs::write(&junk, b"this is not a database at all, not even close").unwrap();
        let err = Snapshot::take(&junk, TokenTable::FtTokens, None, Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(matches!(err, SourceError::NotSqlite(_)), "{err}");
        let empty = t.path().join("empty.db");
        Connection::open(&empty)
            .unwrap()
            .execute_batch("CREATE TABLE other(x)")
            .unwrap();
        let err = Snapshot::take(&empty, TokenTable::FtTokens, None, Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(err.to_string().contains("no FTTokenTable"), "{err}");
    }

    #[test]
    fn paths_with_uri_metacharacters_work() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("we?ird #dir%");
        std::fs::create_dir(&d).unwrap();
        let db = node_db(&d, false, &["q"]);
        let s = Snapshot::take(&db, TokenTable::FtTokens, None, Duration::from_secs(1)).unwrap();
        assert_eq!(s.total(), 1);
    }
}
