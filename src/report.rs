//! `report`: audit views over the central database, as a table, CSV or JSON.
//!
//! Each report is one read-only SQL query; its result is rendered by a real table/CSV/JSON
//! library, so values with commas, quotes or newlines come out right in every format. JSON is
//! an array of objects keyed by column name, numbers as numbers: a stable shape for scripts.

use ::postgres::types::Type;
use ::postgres::Client;
use serde_json::Value;

use crate::sink::SinkError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportKind {
    /// Tokens held by more than one node, and where.
    Duplicates,
    /// Every scanned node: counts, status and when it was last scanned.
    Nodes,
    /// Tokens whose content could not be read (scan) or that did not sync, by reason.
    Failures,
    /// One row of fleet-wide totals.
    Summary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// A query result, in column order.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

fn sql(kind: ReportKind) -> &'static str {
    match kind {
        ReportKind::Duplicates => {
            "SELECT token_id, count(*) AS nodes,
                    string_agg(node_name || ' @ ' || source, ', ' ORDER BY source, node_name)
                        AS held_by
             FROM TokenRecords WHERE removed_at IS NULL
             GROUP BY token_id HAVING count(*) > 1
             ORDER BY count(*) DESC, token_id"
        }
        ReportKind::Nodes => {
            "SELECT p.source, p.node_name, p.db_path, p.status, p.record_count AS records,
                    p.ok_count AS fetched, p.failed_count AS failed, p.removed_count AS removed,
                    to_char(p.last_processed AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS\"Z\"')
                        AS last_scan,
                    round(p.duration_s::numeric, 3)::float8 AS seconds, p.error
             FROM ProcessedDatabases p ORDER BY p.source, p.node_name, p.db_path"
        }
        ReportKind::Failures => {
            "SELECT * FROM (
                 SELECT 'TokenRecords' AS origin, coalesce(ipfs_error_class, 'unknown') AS reason,
                        count(*) AS tokens, count(DISTINCT (source, db_path)) AS nodes,
                        min(ipfs_error) AS example
                 FROM TokenRecords WHERE NOT ipfs_fetched AND removed_at IS NULL GROUP BY 2
                 UNION ALL
                 SELECT 'sync_failures', reason_class, count(*), count(DISTINCT node), min(detail)
                 FROM sync_failures GROUP BY 2) f
             ORDER BY origin, tokens DESC, reason"
        }
        ReportKind::Summary => {
            "SELECT (SELECT count(*) FROM ProcessedDatabases) AS nodes,
                    (SELECT count(DISTINCT source) FROM ProcessedDatabases) AS sources,
                    count(*) FILTER (WHERE removed_at IS NULL) AS records,
                    count(DISTINCT token_id) FILTER (WHERE removed_at IS NULL) AS distinct_tokens,
                    count(*) FILTER (WHERE removed_at IS NULL AND ipfs_fetched) AS fetched,
                    count(*) FILTER (WHERE removed_at IS NULL AND NOT ipfs_fetched) AS failed,
                    count(*) FILTER (WHERE removed_at IS NOT NULL) AS removed,
                    (SELECT count(*) FROM (SELECT 1 FROM TokenRecords WHERE removed_at IS NULL
                         GROUP BY token_id HAVING count(*) > 1) d) AS duplicated_tokens,
                    (SELECT count(*) FROM TokenInfo) AS tokeninfo_rows,
                    (SELECT to_char(max(last_processed) AT TIME ZONE 'UTC',
                         'YYYY-MM-DD HH24:MI:SS\"Z\"') FROM ProcessedDatabases) AS last_scan
             FROM TokenRecords"
        }
    }
}

/// Runs one report. The schema must exist (`scan` or `sync` creates it).
pub fn run(client: &mut Client, kind: ReportKind, describe: &str) -> Result<Report, SinkError> {
    query(client, sql(kind), describe)
}

/// Runs one read-only query (constant SQL, no parameters) into a [`Report`].
pub(crate) fn query(client: &mut Client, sql: &str, describe: &str) -> Result<Report, SinkError> {
    let err = |e| SinkError::Postgres {
        target: describe.to_string(),
        source: e,
    };
    let stmt = client.prepare(sql).map_err(err)?;
    let columns = stmt
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let rows = client
        .query(&stmt, &[])
        .map_err(err)?
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| value(row, i))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    Ok(Report { columns, rows })
}

fn value(row: &::postgres::Row, i: usize) -> Result<Value, ::postgres::Error> {
    let t = row.columns()[i].type_();
    Ok(if *t == Type::INT8 {
        row.try_get::<_, Option<i64>>(i)?
            .map_or(Value::Null, Value::from)
    } else if *t == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)?
            .map_or(Value::Null, Value::from)
    } else if *t == Type::FLOAT8 {
        row.try_get::<_, Option<f64>>(i)?
            .map_or(Value::Null, Value::from)
    } else if *t == Type::BOOL {
        row.try_get::<_, Option<bool>>(i)?
            .map_or(Value::Null, Value::from)
    } else {
        row.try_get::<_, Option<String>>(i)?
            .map_or(Value::Null, Value::from)
    })
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders a report; the output ends with a newline.
pub fn render(r: &Report, format: Format) -> String {
    match format {
        Format::Table => {
            use comfy_table::{presets, CellAlignment, Table};
            let mut t = Table::new();
            t.load_style(presets::ASCII_MARKDOWN);
            t.set_header(r.columns.clone());
            for row in &r.rows {
                t.add_row(row.iter().map(cell).collect::<Vec<_>>());
            }
            if let Some(first) = r.rows.first() {
                for (i, v) in first.iter().enumerate() {
                    if v.is_number() {
                        if let Some(c) = t.column_mut(i) {
                            c.set_cell_alignment(CellAlignment::Right);
                        }
                    }
                }
            }
            let n = r.rows.len();
            format!("{t}\n({n} {})\n", if n == 1 { "row" } else { "rows" })
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            // Writing to memory cannot fail.
            let _ = w.write_record(&r.columns);
            for row in &r.rows {
                let _ = w.write_record(row.iter().map(cell));
            }
            String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
        }
        Format::Json => {
            let objects: Vec<Value> = r
                .rows
                .iter()
                .map(|row| {
                    Value::Object(r.columns.iter().cloned().zip(row.iter().cloned()).collect())
                })
                .collect();
            let mut s = serde_json::to_string_pretty(&objects).unwrap_or_default();
            s.push('\n');
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            columns: vec!["token_id".into(), "nodes".into(), "held_by".into()],
            rows: vec![vec![
                Value::from("Qm1"),
                Value::from(2),
                Value::from("a @ h, \"b\" @ h"),
            ]],
        }
    }

    #[test]
    fn csv_quotes_and_json_keeps_types() {
        let csv = render(&sample(), Format::Csv);
        assert_eq!(
            csv,
            "token_id,nodes,held_by\nQm1,2,\"a @ h, \"\"b\"\" @ h\"\n"
        );
        let json: Value = serde_json::from_str(&render(&sample(), Format::Json)).unwrap();
        assert_eq!(json[0]["nodes"], 2);
        assert_eq!(json[0]["held_by"], "a @ h, \"b\" @ h");
        let table = render(&sample(), Format::Table);
        assert!(
            table.contains("| Qm1 ") && table.ends_with("(1 row)\n"),
            "{table}"
        );
    }
}
