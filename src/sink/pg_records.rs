//! [`RecordSink`] on PostgreSQL: binary COPY of a batch into a per-connection staging table,
//! then one merge keyed on `(source, db_path, token_id)` that rewrites only rows whose values
//! changed (or that come back after removal). The per-node columns are merge parameters, not
//! copied per row.

use ::postgres::binary_copy::BinaryCopyInWriter;
use ::postgres::types::{ToSql, Type};

use super::postgres::{pg_err, PgSink};
use super::records::{
    content_columns, NodeMeta, ProcessedRecord, ProcessedState, RecordRow, RecordSink,
    RecordsWritten,
};
use super::{text_safe, Sink, SinkError};
use crate::source::TokensRow;

const STAGING: &str = "CREATE TEMP TABLE IF NOT EXISTS rubix_rec_staging (
        token_id TEXT, did TEXT, parent_token_id TEXT, token_value DOUBLE PRECISION,
        token_status BIGINT, token_state_hash TEXT, transaction_id TEXT, ipfs_data TEXT,
        ipfs_data_raw BYTEA, ipfs_data_binary BOOLEAN, ipfs_fetched BOOLEAN, ipfs_error TEXT,
        ipfs_error_class TEXT
    ) ON COMMIT DELETE ROWS";

const COPY_STAGING: &str = "COPY rubix_rec_staging (token_id, did, parent_token_id, token_value,
        token_status, token_state_hash, transaction_id, ipfs_data, ipfs_data_raw,
        ipfs_data_binary, ipfs_fetched, ipfs_error, ipfs_error_class) FROM STDIN BINARY";

/// The columns that make a row what it is; a merge rewrites a row only when one differs.
const VALUE_COLS: [&str; 15] = [
    "source_ip",
    "node_name",
    "did",
    "parent_token_id",
    "token_value",
    "token_status",
    "token_state_hash",
    "transaction_id",
    "ipfs_data",
    "ipfs_data_raw",
    "ipfs_data_binary",
    "ipfs_fetched",
    "ipfs_error",
    "ipfs_error_class",
    "ipfs_path",
];

fn merge_sql() -> String {
    let set: Vec<String> = VALUE_COLS
        .iter()
        .chain(["db_last_modified"].iter())
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    let old: Vec<String> = VALUE_COLS.iter().map(|c| format!("t.{c}")).collect();
    let new: Vec<String> = VALUE_COLS.iter().map(|c| format!("EXCLUDED.{c}")).collect();
    format!(
        "WITH m AS (
            INSERT INTO TokenRecords AS t (source, source_ip, node_name, db_path, ipfs_path,
                db_last_modified, token_id, did, parent_token_id, token_value, token_status,
                token_state_hash, transaction_id, ipfs_data, ipfs_data_raw, ipfs_data_binary,
                ipfs_fetched, ipfs_error, ipfs_error_class)
            SELECT DISTINCT ON (token_id) $1, $2, $3, $4, $5, $6, token_id, did, parent_token_id,
                token_value, token_status, token_state_hash, transaction_id, ipfs_data,
                ipfs_data_raw, ipfs_data_binary, ipfs_fetched, ipfs_error, ipfs_error_class
            FROM rubix_rec_staging ORDER BY token_id
            ON CONFLICT (source, db_path, token_id) DO UPDATE SET {set},
                synced_at = now(), removed_at = NULL
            WHERE t.removed_at IS NOT NULL OR ({old}) IS DISTINCT FROM ({new})
            RETURNING (xmax = 0) AS inserted)
        SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM m",
        set = set.join(", "),
        old = old.join(", "),
        new = new.join(", "),
    )
}

impl RecordSink for PgSink {
    fn describe(&self) -> String {
        self.target.describe()
    }

    fn migrate(&mut self) -> Result<(), SinkError> {
        Sink::migrate(self)
    }

    fn another(&self) -> Result<Box<dyn RecordSink>, SinkError> {
        Ok(Box::new(PgSink::connect(self.target.clone())?))
    }

    fn processed(
        &mut self,
        source: &str,
        db_path: &str,
    ) -> Result<Option<ProcessedState>, SinkError> {
        self.retrying("reading ProcessedDatabases", |s| {
            s.processed_once(source, db_path)
        })
    }

    fn for_each_known(
        &mut self,
        source: &str,
        db_path: &str,
        each: &mut dyn FnMut(&TokensRow, bool) -> bool,
    ) -> Result<(), SinkError> {
        // A retry starts the stream over; the receiving side replaces rows it saw before.
        self.retrying("reading TokenRecords", |s| {
            s.for_each_known_once(source, db_path, each)
        })
    }
    fn write_records(
        &mut self,
        node: &NodeMeta,
        rows: &[RecordRow],
    ) -> Result<RecordsWritten, SinkError> {
        self.retrying("writing TokenRecords", |s| s.write_records_once(node, rows))
    }

    fn mark_removed(&mut self, node: &NodeMeta, ids: &[String]) -> Result<u64, SinkError> {
        self.retrying("marking removed rows", |s| s.mark_removed_once(node, ids))
    }

    fn finish_node(&mut self, node: &NodeMeta, r: &ProcessedRecord) -> Result<(), SinkError> {
        self.retrying("recording the node", |s| s.finish_node_once(node, r))
    }
}

impl PgSink {
    fn processed_once(
        &mut self,
        source: &str,
        db_path: &str,
    ) -> Result<Option<ProcessedState>, SinkError> {
        let row = self
            .control
            .query_opt(
                "SELECT fingerprint, status_filter, ipfs_path, status, record_count FROM ProcessedDatabases
                 WHERE source = $1 AND db_path = $2",
                &[&source, &db_path],
            )
            .map_err(pg_err(&self.target))?;
        Ok(row.map(|r| ProcessedState {
            fingerprint: r.get(0),
            status_filter: r.get(1),
            ipfs_path: r.get(2),
            status: r.get(3),
            record_count: r.get(4),
        }))
    }

    fn for_each_known_once(
        &mut self,
        source: &str,
        db_path: &str,
        each: &mut dyn FnMut(&TokensRow, bool) -> bool,
    ) -> Result<(), SinkError> {
        use ::postgres::fallible_iterator::FallibleIterator;
        let e = pg_err(&self.target);
        let params: [&(dyn ToSql + Sync); 2] = [&source, &db_path];
        // A portal streams the rows; a node's history is never held in memory at once.
        let mut rows = self
            .control
            .query_raw(
                "SELECT token_id, did, parent_token_id, token_value, token_status,
                        token_state_hash, transaction_id, ipfs_fetched
                 FROM TokenRecords
                 WHERE source = $1 AND db_path = $2 AND removed_at IS NULL",
                params,
            )
            .map_err(&e)?;
        while let Some(r) = rows.next().map_err(&e)? {
            let row = TokensRow {
                token_id: r.get(0),
                did: r.get(1),
                parent_token_id: r.get(2),
                token_value: r.get(3),
                token_status: r.get(4),
                token_state_hash: r.get(5),
                transaction_id: r.get(6),
            };
            if !each(&row, r.get(7)) {
                break;
            }
        }
        Ok(())
    }
}

impl PgSink {
    fn write_records_once(
        &mut self,
        node: &NodeMeta,
        rows: &[RecordRow],
    ) -> Result<RecordsWritten, SinkError> {
        if rows.is_empty() {
            return Ok(RecordsWritten::default());
        }
        let e = pg_err(&self.target);
        self.control.batch_execute(STAGING).map_err(&e)?;
        let mut tx = self.control.transaction().map_err(&e)?;
        {
            let sink = tx.copy_in(COPY_STAGING).map_err(&e)?;
            let mut w = BinaryCopyInWriter::new(
                sink,
                &[
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::FLOAT8,
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::BYTEA,
                    Type::BOOL,
                    Type::BOOL,
                    Type::TEXT,
                    Type::TEXT,
                ],
            );
            for rec in rows {
                let r = &rec.row;
                let opt = |s: &Option<String>| s.as_deref().map(|v| text_safe(v).into_owned());
                let (data, raw, binary) = match &rec.content {
                    Ok(bytes) => content_columns(bytes),
                    Err(_) => (None, None, false),
                };
                let (fetched, err, class) = match &rec.content {
                    Ok(_) => (true, None, None),
                    Err(c) => (
                        false,
                        Some(text_safe(&c.detail).into_owned()),
                        Some(c.class),
                    ),
                };
                w.write(&[
                    &text_safe(&r.token_id).as_ref(),
                    &opt(&r.did),
                    &opt(&r.parent_token_id),
                    &r.token_value,
                    &r.token_status,
                    &opt(&r.token_state_hash),
                    &opt(&r.transaction_id),
                    &data,
                    &raw,
                    &binary,
                    &fetched,
                    &err,
                    &class,
                ])
                .map_err(&e)?;
            }
            w.finish().map_err(&e)?;
        }
        let row = tx
            .query_one(
                &merge_sql(),
                &[
                    &node.source,
                    &node.source_ip,
                    &node.node_name,
                    &node.db_path,
                    &node.ipfs_path,
                    &node.db_last_modified,
                ],
            )
            .map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(RecordsWritten {
            inserted: row.get::<_, i64>(0) as u64,
            updated: row.get::<_, i64>(1) as u64,
        })
    }

    fn mark_removed_once(&mut self, node: &NodeMeta, ids: &[String]) -> Result<u64, SinkError> {
        self.control
            .execute(
                "UPDATE TokenRecords SET removed_at = now(), synced_at = now()
                 WHERE source = $1 AND db_path = $2 AND token_id = ANY($3) AND removed_at IS NULL",
                &[&node.source, &node.db_path, &ids],
            )
            .map_err(pg_err(&self.target))
    }

    fn finish_node_once(&mut self, node: &NodeMeta, r: &ProcessedRecord) -> Result<(), SinkError> {
        self.control
            .execute(
                "INSERT INTO ProcessedDatabases (source, db_path, node_name, ipfs_path,
                     last_modified, size, fingerprint, status_filter, last_processed,
                     record_count, ok_count, failed_count, removed_count, duration_s, status,
                     error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), $9, $10, $11, $12, $13, $14, $15)
                 ON CONFLICT (source, db_path) DO UPDATE SET node_name = EXCLUDED.node_name,
                     ipfs_path = EXCLUDED.ipfs_path, last_modified = EXCLUDED.last_modified,
                     size = EXCLUDED.size, fingerprint = EXCLUDED.fingerprint,
                     status_filter = EXCLUDED.status_filter, last_processed = now(),
                     record_count = EXCLUDED.record_count, ok_count = EXCLUDED.ok_count,
                     failed_count = EXCLUDED.failed_count, removed_count = EXCLUDED.removed_count,
                     duration_s = EXCLUDED.duration_s, status = EXCLUDED.status,
                     error = EXCLUDED.error",
                &[
                    &node.source,
                    &node.db_path,
                    &node.node_name,
                    &node.ipfs_path,
                    &node.db_last_modified,
                    &r.size,
                    &r.fingerprint,
                    &r.status_filter,
                    &r.record_count,
                    &r.ok_count,
                    &r.failed_count,
                    &r.removed_count,
                    &r.duration_s,
                    &r.status,
                    &r.error.as_deref().map(|e| text_safe(e).into_owned()),
                ],
            )
            .map_err(pg_err(&self.target))?;
        Ok(())
    }
}
