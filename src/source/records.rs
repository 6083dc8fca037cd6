//! The per-run snapshot of a node's TokensTable rows, for `scan`.
//!
//! Rubix versions differ in which TokensTable columns exist (older ones lack
//! `token_state_hash`, `transaction_id`, `added`; none has the `created_at`/`updated_at` the
//! old script expected), so the columns are read from `PRAGMA table_info` and a missing one
//! reads as NULL. Values are normalised on the way in (numbers as numbers, text as text), so
//! comparing them with what the central database holds is exact and an unchanged row never
//! looks changed.
//!
//! As for `sync`, the node database is read in one statement into a private work database;
//! the rows the central database already has for this node are loaded next to them, and the
//! difference (new, changed, retried, removed) is computed there, so memory stays bounded.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::snapshot::{node_columns, open_work, with_node_attached};
use super::SourceError;

/// One TokensTable row, normalised. `token_id` is the only column every version has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokensRow {
    pub token_id: String,
    pub did: Option<String>,
    pub parent_token_id: Option<String>,
    pub token_value: Option<f64>,
    pub token_status: Option<i64>,
    pub token_state_hash: Option<String>,
    pub transaction_id: Option<String>,
}

/// The columns read, in [`TokensRow`] order after `token_id`, with how each is normalised.
const COLUMNS: [(&str, Kind); 6] = [
    ("did", Kind::Text),
    ("parent_token_id", Kind::Text),
    ("token_value", Kind::Real),
    ("token_status", Kind::Integer),
    ("token_state_hash", Kind::Text),
    ("transaction_id", Kind::Text),
];

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Real,
    Integer,
}

const TABLE: &str = "TokensTable";

/// How the pending rows split up, for the per-node summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Delta {
    /// In the node, not (or no longer) in the central database.
    pub new: u64,
    /// In both, but a column differs.
    pub changed: u64,
    /// Unchanged, but the content could not be fetched last time: tried again.
    pub retried: u64,
    /// In the central database as current, gone from the node.
    pub removed: u64,
    /// In both and identical: nothing to do.
    pub unchanged: u64,
}

/// A node's TokensTable rows, copied in one read transaction, plus what the central database
/// already holds for the node.
pub struct RecordSnapshot {
    work: Connection,
    dir: tempfile::TempDir,
    total: u64,
    /// Which of the optional columns this node's TokensTable has.
    pub columns_present: Vec<&'static str>,
}

fn select_expr(name: &str, kind: Kind, present: bool) -> String {
    if !present {
        return "NULL".into();
    }
    let c = format!("\"{name}\"");
    match kind {
        Kind::Text => format!("CASE WHEN {c} IS NULL THEN NULL ELSE CAST({c} AS TEXT) END"),
        Kind::Real => {
            format!("CASE WHEN typeof({c}) IN ('integer','real') THEN CAST({c} AS REAL) END")
        }
        Kind::Integer => format!(
            "CASE typeof({c}) WHEN 'integer' THEN {c} WHEN 'real' THEN CAST({c} AS INTEGER) END"
        ),
    }
}

/// Text that may not be valid UTF-8 (a hostile or damaged database), read lossily.
fn text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
    }
}

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokensRow> {
    Ok(TokensRow {
        token_id: text(r.get_ref(0)?).unwrap_or_default(),
        did: text(r.get_ref(1)?),
        parent_token_id: text(r.get_ref(2)?),
        token_value: r.get(3)?,
        token_status: r.get(4)?,
        token_state_hash: text(r.get_ref(5)?),
        transaction_id: text(r.get_ref(6)?),
    })
}

const ROW_COLS: &str =
    "token_id, did, parent_token_id, token_value, token_status, token_state_hash, transaction_id";

impl RecordSnapshot {
    /// Copies TokensTable out of the node database at `db`; `None` if the node has no
    /// TokensTable. `statuses`, when non-empty, keeps only rows with those `token_status`es.
    pub fn take(
        db: &Path,
        statuses: &[i64],
        work_dir: Option<&Path>,
        busy_timeout: Duration,
    ) -> Result<Option<RecordSnapshot>, SourceError> {
        let schema = "CREATE TABLE rows(token_id TEXT PRIMARY KEY, did, parent_token_id,
                 token_value, token_status, token_state_hash, transaction_id) WITHOUT ROWID;
             CREATE TABLE known(token_id TEXT PRIMARY KEY, did, parent_token_id, token_value,
                 token_status, token_state_hash, transaction_id, fetched INTEGER) WITHOUT ROWID;";
        let (work, dir) = open_work(work_dir, busy_timeout, schema)?;
        let taken = with_node_attached(&work, db, |work| {
            let Some(cols) = node_columns(work, db, TABLE)? else {
                return Ok(None);
            };
            let has = |n: &str| cols.iter().any(|c| c.eq_ignore_ascii_case(n));
            let present: Vec<&'static str> =
                COLUMNS.iter().map(|(n, _)| *n).filter(|n| has(n)).collect();
            let exprs: Vec<String> = COLUMNS
                .iter()
                .map(|(n, k)| select_expr(n, *k, has(n)))
                .collect();
            let mut sql = format!(
                "INSERT OR IGNORE INTO rows SELECT CAST(token_id AS TEXT), {} FROM node.\"{TABLE}\"
                 WHERE token_id IS NOT NULL",
                exprs.join(", ")
            );
            if !statuses.is_empty() {
                let status = select_expr("token_status", Kind::Integer, has("token_status"));
                let list = vec!["?"; statuses.len()].join(",");
                sql.push_str(&format!(" AND {status} IN ({list})"));
            }
            sql.push_str(" ORDER BY 1");
            let n = work
                .execute(&sql, rusqlite::params_from_iter(statuses))
                .map_err(|e| SourceError::Query {
                    path: db.to_path_buf(),
                    source: e,
                })?;
            Ok(Some((n as u64, present)))
        })?;
        Ok(taken.map(|(total, columns_present)| RecordSnapshot {
            work,
            dir,
            total,
            columns_present,
        }))
    }

    /// Distinct token ids in the node's TokensTable (after the status filter).
    pub fn total(&self) -> u64 {
        self.total
    }

    fn werr(&self, e: rusqlite::Error) -> SourceError {
        SourceError::Work {
            path: self.dir.path().to_path_buf(),
            source: e,
        }
    }

    /// Records what the central database holds as current for this node. `fill` is handed a
    /// callback to call once per row, with whether its content was fetched.
    pub fn load_known<E>(
        &mut self,
        fill: impl FnOnce(&mut dyn FnMut(&TokensRow, bool) -> Result<(), SourceError>) -> Result<(), E>,
    ) -> Result<Result<(), E>, SourceError> {
        let dir = self.dir.path().to_path_buf();
        let werr = |e| SourceError::Work {
            path: dir.clone(),
            source: e,
        };
        let tx = self.work.transaction().map_err(werr)?;
        let outcome = {
            let mut stmt = tx
                .prepare(&format!(
                    "INSERT OR REPLACE INTO known ({ROW_COLS}, fetched) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)"
                ))
                .map_err(werr)?;
            let mut add = |r: &TokensRow, fetched: bool| -> Result<(), SourceError> {
                stmt.execute(rusqlite::params![
                    r.token_id,
                    r.did,
                    r.parent_token_id,
                    r.token_value,
                    r.token_status,
                    r.token_state_hash,
                    r.transaction_id,
                    fetched
                ])
                .map(drop)
                .map_err(werr)
            };
            fill(&mut add)
        };
        tx.commit().map_err(werr)?;
        Ok(outcome)
    }

    /// How the node's rows compare with the central database's.
    pub fn delta(&self) -> Result<Delta, SourceError> {
        let same = "r.did IS k.did AND r.parent_token_id IS k.parent_token_id
                    AND r.token_value IS k.token_value AND r.token_status IS k.token_status
                    AND r.token_state_hash IS k.token_state_hash
                    AND r.transaction_id IS k.transaction_id";
        let sql = format!(
            "SELECT
                 coalesce(sum(k.token_id IS NULL), 0),
                 coalesce(sum(k.token_id IS NOT NULL AND NOT ({same})), 0),
                 coalesce(sum(k.token_id IS NOT NULL AND ({same}) AND NOT k.fetched), 0),
                 coalesce(sum(k.token_id IS NOT NULL AND ({same}) AND k.fetched), 0)
             FROM rows r LEFT JOIN known k ON k.token_id = r.token_id"
        );
        let (new, changed, retried, unchanged) = self
            .work
            .query_row(&sql, [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(|e| self.werr(e))?;
        let removed: i64 = self
            .work
            .query_row(
                "SELECT count(*) FROM known k WHERE NOT EXISTS
                     (SELECT 1 FROM rows r WHERE r.token_id = k.token_id)",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.werr(e))?;
        Ok(Delta {
            new: new as u64,
            changed: changed as u64,
            retried: retried as u64,
            removed: removed as u64,
            unchanged: unchanged as u64,
        })
    }

    /// Streams the rows that need work (new, changed, or not fetched last time) in batches of
    /// `batch`, in id order. `each` returns false to stop early.
    pub fn for_each_pending(
        &self,
        batch: usize,
        mut each: impl FnMut(Vec<TokensRow>) -> bool,
    ) -> Result<(), SourceError> {
        let sql = format!(
            "SELECT {cols} FROM rows r LEFT JOIN known k ON k.token_id = r.token_id
             WHERE k.token_id IS NULL OR NOT k.fetched
                OR r.did IS NOT k.did OR r.parent_token_id IS NOT k.parent_token_id
                OR r.token_value IS NOT k.token_value OR r.token_status IS NOT k.token_status
                OR r.token_state_hash IS NOT k.token_state_hash
                OR r.transaction_id IS NOT k.transaction_id
             ORDER BY r.token_id",
            cols = ROW_COLS
                .split(", ")
                .map(|c| format!("r.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut stmt = self.work.prepare(&sql).map_err(|e| self.werr(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.werr(e))?;
        let mut buf = Vec::with_capacity(batch);
        while let Some(row) = rows.next().map_err(|e| self.werr(e))? {
            buf.push(row_from(row).map_err(|e| self.werr(e))?);
            if buf.len() == batch && !each(std::mem::replace(&mut buf, Vec::with_capacity(batch))) {
                return Ok(());
            }
        }
        if !buf.is_empty() {
            each(buf);
        }
        Ok(())
    }

    /// Streams the ids the central database holds as current but the node no longer has.
    pub fn for_each_removed(
        &self,
        batch: usize,
        mut each: impl FnMut(Vec<String>) -> bool,
    ) -> Result<(), SourceError> {
        let mut stmt = self
            .work
            .prepare(
                "SELECT token_id FROM known k WHERE NOT EXISTS
                     (SELECT 1 FROM rows r WHERE r.token_id = k.token_id) ORDER BY token_id",
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

    fn db(dir: &Path, ddl: &str, rows: &[&str]) -> std::path::PathBuf {
        let p = dir.join("rubix.db");
        let c = Connection::open(&p).unwrap();
        c.execute_batch(ddl).unwrap();
        for r in rows {
            c.execute_batch(r).unwrap();
        }
        p
    }

    fn pending(s: &RecordSnapshot) -> Vec<TokensRow> {
        let mut all = Vec::new();
        s.for_each_pending(2, |b| {
            all.extend(b);
            true
        })
        .unwrap();
        all
    }

    #[test]
    fn old_schema_columns_read_as_null_and_values_are_normalised() {
        let t = tempfile::tempdir().unwrap();
        let p = db(
            t.path(),
            "CREATE TABLE TokensTable (token_id text, parent_token_id text, token_value real,
                 did text, token_status integer, PRIMARY KEY (token_id))",
            &[
                "INSERT INTO TokensTable VALUES ('a', '', 1, 'did1', 2)",
                "INSERT INTO TokensTable VALUES ('b', NULL, 'junk', 42, 3.0)",
            ],
        );
        let s = RecordSnapshot::take(&p, &[], None, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(
            s.columns_present,
            ["did", "parent_token_id", "token_value", "token_status"]
        );
        let rows = pending(&s);
        assert_eq!(
            rows[0],
            TokensRow {
                token_id: "a".into(),
                did: Some("did1".into()),
                parent_token_id: Some(String::new()),
                token_value: Some(1.0),
                token_status: Some(2),
                token_state_hash: None,
                transaction_id: None,
            }
        );
        assert_eq!(
            rows[1].token_value, None,
            "text in a real column is not a number"
        );
        assert_eq!(rows[1].did.as_deref(), Some("42"));
        assert_eq!(rows[1].token_status, Some(3));
    }

    #[test]
    fn delta_splits_new_changed_retried_removed_and_unchanged() {
        let t = tempfile::tempdir().unwrap();
        let p = db(
            t.path(),
            crate::corpus::TOKENS_DDL,
            &[
                "INSERT INTO TokensTable (token_id, did, token_status) VALUES
                     ('new', 'd', 1), ('chg', 'd2', 1), ('retry', 'd', 1), ('same', 'd', 1),
                     ('filtered', 'd', 9)",
            ],
        );
        let mut s = RecordSnapshot::take(&p, &[1], None, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(s.total(), 4, "the status filter drops 'filtered'");
        let known = |id: &str| TokensRow {
            token_id: id.into(),
            did: Some("d".into()),
            token_status: Some(1),
            ..TokensRow::default()
        };
        s.load_known(|add| -> Result<(), SourceError> {
            add(&known("chg"), true)?;
            add(&known("retry"), false)?;
            add(&known("same"), true)?;
            add(&known("gone"), true)?;
            Ok(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(
            s.delta().unwrap(),
            Delta {
                new: 1,
                changed: 1,
                retried: 1,
                removed: 1,
                unchanged: 1
            }
        );
        let ids: Vec<_> = pending(&s).into_iter().map(|r| r.token_id).collect();
        assert_eq!(ids, ["chg", "new", "retry"]);
        let mut removed = Vec::new();
        s.for_each_removed(10, |b| {
            removed.extend(b);
            true
        })
        .unwrap();
        assert_eq!(removed, ["gone"]);
    }

    #[test]
    fn a_node_without_tokens_table_is_none() {
        let t = tempfile::tempdir().unwrap();
        let p = db(t.path(), crate::corpus::FT_DDL, &[]);
        assert!(RecordSnapshot::take(&p, &[], None, Duration::from_secs(1))
            .unwrap()
            .is_none());
    }
}
