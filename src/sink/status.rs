//! `db status`: what the database holds, for an operator's first look (and for monitoring
//! scripts, as JSON): the schema version, row counts, the last runs and failures by reason.
//!
//! Every query is constant SQL that both sinks understand; numbers stay numbers in JSON.

use serde_json::{json, Value};

use super::{Sink, SinkError};
use crate::report::{self, Format, Report};

/// Our tables, in the order they are shown; TokenRecords and ProcessedDatabases exist only
/// where `scan` has run.
const TABLES: [&str; 5] = [
    "TokenInfo",
    "sync_failures",
    "sync_runs",
    "TokenRecords",
    "ProcessedDatabases",
];

/// Everything `db status` shows.
#[derive(Debug, Clone)]
pub struct DbStatus {
    pub database: String,
    pub schema_version: Option<i64>,
    pub migrations: Report,
    pub tables: Report,
    pub runs: Report,
    pub failures: Report,
}

/// Gathers the status; `runs` = how many of the latest runs to list.
pub fn gather(sink: &mut dyn Sink, runs: usize) -> Result<DbStatus, SinkError> {
    let migrations = if sink.has_table("rubix_sync_migrations")? {
        sink.query(
            "SELECT version, name, CAST(applied_at AS TEXT) AS applied_at
             FROM rubix_sync_migrations ORDER BY version",
        )?
    } else {
        empty(&["version", "name", "applied_at"])
    };
    let schema_version = migrations.rows.iter().filter_map(|r| r[0].as_i64()).max();
    let mut present = Vec::new();
    for t in TABLES {
        if sink.has_table(t)? {
            present.push(t);
        }
    }
    let has = |t: &str| present.contains(&t);
    let mut tables = empty(&["table", "rows"]);
    for t in &present {
        // Table names are our constants, never input.
        let n = sink.query(&format!("SELECT count(*) AS n FROM {t}"))?;
        tables
            .rows
            .push(vec![Value::from(*t), n.rows[0][0].clone()]);
    }
    let runs = if has("sync_runs") {
        sink.query(&format!(
            "SELECT id, node, CAST(started_at AS TEXT) AS started_at,
                    CAST(finished_at AS TEXT) AS finished_at, status, tokens_total, skipped,
                    written, unchanged, failed,
                    CAST(round(CAST(rate AS NUMERIC), 1) AS FLOAT8) AS rate
             FROM sync_runs ORDER BY id DESC LIMIT {}",
            runs.max(1)
        ))?
    } else {
        empty(&["id"])
    };
    let mut failures = empty(&["origin", "reason", "tokens"]);
    if has("sync_failures") {
        let r = sink.query(
            "SELECT 'sync_failures' AS origin, reason_class AS reason, count(*) AS tokens
             FROM sync_failures GROUP BY reason_class ORDER BY count(*) DESC, reason_class",
        )?;
        failures.rows.extend(r.rows);
    }
    if has("TokenRecords") {
        let r = sink.query(
            "SELECT 'TokenRecords' AS origin, coalesce(ipfs_error_class, 'unknown') AS reason,
                    count(*) AS tokens
             FROM TokenRecords WHERE NOT ipfs_fetched AND removed_at IS NULL
             GROUP BY coalesce(ipfs_error_class, 'unknown') ORDER BY count(*) DESC, 2",
        )?;
        failures.rows.extend(r.rows);
    }
    Ok(DbStatus {
        database: sink.describe(),
        schema_version,
        migrations,
        tables,
        runs,
        failures,
    })
}

fn empty(columns: &[&str]) -> Report {
    Report {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: Vec::new(),
    }
}

fn objects(r: &Report) -> Value {
    Value::Array(
        r.rows
            .iter()
            .map(|row| Value::Object(r.columns.iter().cloned().zip(row.iter().cloned()).collect()))
            .collect(),
    )
}

/// The status as text (sections of Markdown-style tables) or as one JSON object
/// (schema `rubix-sync.db-status/1`; fields are only ever added).
pub fn render(s: &DbStatus, format: Format) -> String {
    match format {
        Format::Json => {
            let tables: serde_json::Map<String, Value> = s
                .tables
                .rows
                .iter()
                .map(|r| (r[0].as_str().unwrap_or_default().to_string(), r[1].clone()))
                .collect();
            let v = json!({
                "schema": "rubix-sync.db-status/1",
                "database": s.database,
                "schema_version": s.schema_version,
                "migrations": objects(&s.migrations),
                "tables": tables,
                "runs": objects(&s.runs),
                "failures": objects(&s.failures),
            });
            let mut out = serde_json::to_string_pretty(&v).unwrap_or_default();
            out.push('\n');
            out
        }
        Format::Table | Format::Csv => {
            let version = s.schema_version.map_or_else(
                || "none (run `rubix-sync db migrate`)".into(),
                |v| v.to_string(),
            );
            let mut out = format!("database: {}\nschema version: {version}\n", s.database);
            for (title, r) in [
                ("tables", &s.tables),
                ("last runs", &s.runs),
                ("failures by reason", &s.failures),
                ("migrations", &s.migrations),
            ] {
                out.push_str(&format!("\n{title}:\n"));
                out.push_str(&report::render(r, format));
            }
            out
        }
    }
}
