//! `scan`: every node under a root → TokenRecords in one central database.
//!
//! ```text
//! node queue ──► node workers (N threads; per node: fingerprint → skip if unchanged →
//!                TokensTable snapshot → minus what the database has → resolve content)
//!        ──rows / removals / node done──► one writer (the only connection that writes)
//! ```
//!
//! One writer keeps each node's messages in order: its rows commit before its removals, and
//! its ProcessedDatabases row (whose fingerprint makes the next scan skip it) commits last.
//! A node cut short (Ctrl-C, kill -9, a lost connection) has no new ProcessedDatabases row,
//! so the next scan does it again, finding the committed rows already current. A node that
//! fails (not an SQLite file, unreadable) is reported and recorded; the others go on.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};

use crate::ipfs::peer::{Fallback, PeerOptions};
use crate::ipfs::Repo;
use crate::node::{Discovery, DiscoveryProblem, NamedNode};
use crate::sink::records::{
    ContentError, NodeMeta, ProcessedRecord, RecordRow, RecordSink, RecordsWritten,
};
use crate::sink::SinkError;
use crate::source::{self, Delta, RecordSnapshot, SourceError};

use super::{Contents, PipelineError};

#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Keep only TokensTable rows with these `token_status`es (empty: all).
    pub statuses: Vec<i64>,
    /// Process every node, even one whose database has not changed.
    pub force: bool,
    /// Nodes processed at the same time.
    pub node_workers: usize,
    /// Rows per database transaction.
    pub batch_size: usize,
    pub work_dir: Option<PathBuf>,
    pub busy_timeout: Duration,
    pub progress: bool,
    /// This machine's identity in the central database.
    pub source: String,
    pub source_ip: Option<String>,
    /// Where blocks missing from a node's repository come from (`offline`: nowhere).
    pub peer: PeerOptions,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            statuses: Vec::new(),
            force: false,
            node_workers: 2,
            batch_size: 10_000,
            work_dir: None,
            busy_timeout: Duration::from_secs(10),
            progress: false,
            source: "test".into(),
            source_ip: None,
            peer: PeerOptions::default(),
        }
    }
}

/// How one node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Scanned; every row's content was read.
    Ok,
    /// Scanned; some rows' content could not be read (`ipfs_error` says why).
    WithFailures,
    /// Its database has not changed since the last scan: nothing read or written.
    Unchanged,
    /// Its database has no TokensTable.
    NoTokensTable,
    /// The node could not be scanned at all (see `error`).
    Failed,
    /// Not finished: the scan was interrupted.
    Interrupted,
}

impl NodeStatus {
    fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ok => "ok",
            NodeStatus::WithFailures => "with_failures",
            NodeStatus::Unchanged => "unchanged",
            NodeStatus::NoTokensTable => "no_tokens_table",
            NodeStatus::Failed => "failed",
            NodeStatus::Interrupted => "interrupted",
        }
    }
}

/// One node's part of the scan (`--json` prints these).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeSummary {
    pub name: String,
    pub db_path: String,
    pub ipfs_path: Option<String>,
    pub status: NodeStatus,
    /// Rows in the node's TokensTable (after `--status`).
    pub records: u64,
    #[serde(flatten)]
    pub delta: Delta,
    /// Rows inserted into / rewritten in TokenRecords this run.
    pub inserted: u64,
    pub updated: u64,
    /// Of the rows resolved this run: content read, and not.
    pub fetched: u64,
    pub failed: u64,
    pub failures_by_class: BTreeMap<String, u64>,
    /// TokensTable columns this node lacks (read as NULL).
    pub missing_columns: Vec<&'static str>,
    pub elapsed_s: f64,
    pub error: Option<String>,
}

/// The whole scan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScanSummary {
    pub root: String,
    pub database: String,
    pub source: String,
    pub source_ip: Option<String>,
    pub nodes: Vec<NodeSummary>,
    pub problems: Vec<DiscoveryProblem>,
    pub interrupted: bool,
    pub rows_resolved: u64,
    pub elapsed_s: f64,
    pub rows_per_s: f64,
}

impl ScanSummary {
    /// True when every node was scanned (or skipped as unchanged / without TokensTable) and
    /// every row's content was read.
    pub fn all_ok(&self) -> bool {
        self.nodes.iter().all(|n| {
            matches!(
                n.status,
                NodeStatus::Ok | NodeStatus::Unchanged | NodeStatus::NoTokensTable
            )
        })
    }
}

/// What node workers send the writer, in order per node.
enum Msg {
    Rows(Arc<NodeMeta>, Vec<RecordRow>),
    Removed(Arc<NodeMeta>, Vec<String>),
    Done(Arc<NodeMeta>, Box<ProcessedRecord>),
}

const OPTIONAL_COLUMNS: [&str; 6] = [
    "did",
    "parent_token_id",
    "token_value",
    "token_status",
    "token_state_hash",
    "transaction_id",
];

fn display(p: &Path) -> String {
    p.canonicalize()
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// Scans every discovered node into `sink`. `stop` is set by the signal handler.
pub fn scan(
    root: &Path,
    discovery: Discovery,
    mut sink: Box<dyn RecordSink>,
    opts: &ScanOptions,
    stop: &AtomicBool,
) -> Result<ScanSummary, PipelineError> {
    let start = Instant::now();
    sink.migrate()?;
    let database = sink.describe();
    let reader = Mutex::new(sink.another()?);
    let Discovery { nodes, problems } = discovery;
    let n_nodes = nodes.len();
    let summaries: Mutex<Vec<NodeSummary>> = Mutex::new(Vec::with_capacity(n_nodes));
    // Writer-side results per node, merged into the summaries at the end.
    let written: Mutex<HashMap<String, RecordsWritten>> = Mutex::new(HashMap::new());
    let write_error: Mutex<Option<SinkError>> = Mutex::new(None);
    let failed_write = AtomicBool::new(false);
    let halt = || stop.load(Ordering::Relaxed) || failed_write.load(Ordering::Relaxed);
    let bar = progress(opts.progress, n_nodes as u64);

    std::thread::scope(|s| {
        let (tx, rx) = bounded::<Msg>(4);
        let (node_tx, node_rx) = bounded::<NamedNode>(n_nodes.max(1));
        for n in nodes {
            let _ = node_tx.send(n);
        }
        drop(node_tx);

        let (written, write_error, failed_write) = (&written, &write_error, &failed_write);
        s.spawn(move || {
            for msg in rx {
                if failed_write.load(Ordering::Relaxed) {
                    continue; // drain, so senders never block
                }
                let r = match msg {
                    Msg::Rows(meta, rows) => sink.write_records(&meta, &rows).map(|w| {
                        let mut m = written.lock().unwrap_or_else(|p| p.into_inner());
                        let e = m.entry(meta.db_path.clone()).or_default();
                        e.inserted += w.inserted;
                        e.updated += w.updated;
                    }),
                    Msg::Removed(meta, ids) => sink.mark_removed(&meta, &ids).map(drop),
                    Msg::Done(meta, rec) => sink.finish_node(&meta, &rec),
                };
                if let Err(e) = r {
                    crate::metrics::db_error();
                    tracing::error!(error = %e, "writing to the central database failed; stopping (committed batches are kept)");
                    *write_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    failed_write.store(true, Ordering::Relaxed);
                }
            }
        });

        for _ in 0..opts.node_workers.clamp(1, n_nodes.max(1)) {
            let (node_rx, tx) = (node_rx.clone(), tx.clone());
            let (reader, summaries, bar) = (&reader, &summaries, &bar);
            s.spawn(move || {
                for named in node_rx {
                    if halt() {
                        break;
                    }
                    let t = Instant::now();
                    let mut summary = scan_node(root, &named, reader, &tx, opts, &halt);
                    summary.elapsed_s = t.elapsed().as_secs_f64();
                    crate::metrics::node_scanned(
                        summary.status.as_str(),
                        summary.delta.new,
                        summary.delta.changed,
                        summary.delta.removed,
                        summary.delta.unchanged,
                        summary.failed,
                    );
                    bar.inc(1);
                    if opts.progress {
                        bar.println(format!(
                            "  {:<24} {:<16} {} rows, {} new, {} changed, {} removed, {} failed",
                            summary.name,
                            summary.status.as_str(),
                            summary.records,
                            summary.delta.new,
                            summary.delta.changed,
                            summary.delta.removed,
                            summary.failed
                        ));
                    }
                    summaries
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(summary);
                }
            });
        }
        drop(tx);
    });
    bar.finish_and_clear();
    if let Some(e) = write_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e.into());
    }
    let written = written.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut nodes = summaries.into_inner().unwrap_or_else(|p| p.into_inner());
    for n in &mut nodes {
        if let Some(w) = written.get(&n.db_path) {
            n.inserted = w.inserted;
            n.updated = w.updated;
        }
    }
    nodes.sort_by(|a, b| a.db_path.cmp(&b.db_path));
    let rows_resolved: u64 = nodes.iter().map(|n| n.fetched + n.failed).sum();
    let elapsed = start.elapsed().as_secs_f64();
    Ok(ScanSummary {
        root: display(root),
        database,
        source: opts.source.clone(),
        source_ip: opts.source_ip.clone(),
        interrupted: stop.load(Ordering::Relaxed),
        nodes,
        problems,
        rows_resolved,
        elapsed_s: elapsed,
        rows_per_s: if elapsed > 0.0 {
            rows_resolved as f64 / elapsed
        } else {
            0.0
        },
    })
}

fn progress(show: bool, nodes: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(nodes),
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} nodes  ETA {eta}",
        )
        .expect("valid progress template"),
    );
    bar
}

/// The part of a node's scan that can fail as a whole.
#[derive(Debug, thiserror::Error)]
enum NodeError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

fn scan_node(
    root: &Path,
    named: &NamedNode,
    reader: &Mutex<Box<dyn RecordSink>>,
    tx: &Sender<Msg>,
    opts: &ScanOptions,
    halt: &dyn Fn() -> bool,
) -> NodeSummary {
    let node = &named.node;
    let db_path = display(&node.db);
    let ipfs_path = node.ipfs.as_deref().map(display);
    let mut summary = NodeSummary {
        name: named.name.clone(),
        db_path: db_path.clone(),
        ipfs_path: ipfs_path.clone(),
        status: NodeStatus::Failed,
        records: 0,
        delta: Delta::default(),
        inserted: 0,
        updated: 0,
        fetched: 0,
        failed: 0,
        failures_by_class: BTreeMap::new(),
        missing_columns: Vec::new(),
        elapsed_s: 0.0,
        error: None,
    };
    let mut meta = NodeMeta {
        source: opts.source.clone(),
        source_ip: opts.source_ip.clone(),
        node_name: named.name.clone(),
        db_path,
        ipfs_path,
        db_last_modified: None,
    };
    let status_filter = {
        let mut s = opts.statuses.clone();
        s.sort_unstable();
        s.dedup();
        s.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
    };
    let started = Instant::now();
    let outcome = (|| -> Result<Option<ProcessedRecord>, NodeError> {
        let fp = source::fingerprint(&node.db)?;
        meta.db_last_modified = fp.modified;
        let previous = reader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .processed(&meta.source, &meta.db_path)?;
        let unchanged = previous.as_ref().is_some_and(|p| {
            p.fingerprint.as_deref() == Some(fp.digest.as_str())
                && p.status_filter.as_deref().unwrap_or("") == status_filter
                && p.ipfs_path == meta.ipfs_path
        });
        if unchanged && !opts.force {
            summary.status = NodeStatus::Unchanged;
            summary.records = previous.map_or(0, |p| p.record_count.max(0) as u64);
            return Ok(None);
        }
        let mut record = ProcessedRecord {
            size: Some(fp.size as i64),
            fingerprint: Some(fp.digest),
            status_filter: status_filter.clone(),
            ..ProcessedRecord::default()
        };
        let Some(mut snap) = RecordSnapshot::take(
            &node.db,
            &opts.statuses,
            opts.work_dir.as_deref(),
            opts.busy_timeout,
        )?
        else {
            summary.status = NodeStatus::NoTokensTable;
            record.status = NodeStatus::NoTokensTable.as_str().into();
            return Ok(Some(record));
        };
        summary.records = snap.total();
        summary.missing_columns = OPTIONAL_COLUMNS
            .iter()
            .copied()
            .filter(|c| !snap.columns_present.contains(c))
            .collect();
        {
            let mut r = reader.lock().unwrap_or_else(|p| p.into_inner());
            let mut sink_err = None;
            snap.load_known(|add| -> Result<(), SourceError> {
                let mut add_err = None;
                let res =
                    r.for_each_known(&meta.source, &meta.db_path, &mut |row, fetched| match add(
                        row, fetched,
                    ) {
                        Ok(()) => true,
                        Err(e) => {
                            add_err = Some(e);
                            false
                        }
                    });
                if let Err(e) = res {
                    sink_err = Some(e);
                }
                add_err.map_or(Ok(()), Err)
            })??;
            if let Some(e) = sink_err {
                return Err(e.into());
            }
        }
        summary.delta = snap.delta()?;

        // Where content comes from: the node's repository, or a reason every row records.
        let repo = match node.ipfs.as_deref() {
            None => Err(ContentError {
                class: "no_repo",
                detail: format!(
                    "no .ipfs found for this node (looked beside Rubix/ and in parents up to {})",
                    root.display()
                ),
            }),
            Some(p) => Repo::open(p).map_err(|e| ContentError {
                class: "repo",
                detail: e.to_string(),
            }),
        };
        let fallback = repo
            .as_ref()
            .ok()
            .and_then(|r| Fallback::new(r, &opts.peer));
        let meta = Arc::new(meta.clone());
        let batch = opts.batch_size.max(1);
        let mut buf = Vec::with_capacity(256);
        let mut out: Vec<RecordRow> = Vec::with_capacity(batch.min(65_536));
        let mut interrupted = false;
        let send = |rows: Vec<RecordRow>| tx.send(Msg::Rows(meta.clone(), rows)).is_ok();
        snap.for_each_pending(512, |rows| {
            if halt() {
                interrupted = true;
                return false;
            }
            let contents: Vec<Result<Vec<u8>, ContentError>> = match &repo {
                Err(e) => rows.iter().map(|_| Err(e.clone())).collect(),
                Ok(repo) => {
                    let ids: Vec<&str> = rows.iter().map(|r| r.token_id.as_str()).collect();
                    Contents {
                        repo,
                        fallback: fallback.as_ref(),
                    }
                    .read(&ids, &mut buf)
                    .into_iter()
                    .map(|c| c.map_err(|(class, detail)| ContentError { class, detail }))
                    .collect()
                }
            };
            for (row, content) in rows.into_iter().zip(contents) {
                match &content {
                    Ok(_) => summary.fetched += 1,
                    Err(e) => {
                        summary.failed += 1;
                        *summary
                            .failures_by_class
                            .entry(e.class.to_string())
                            .or_default() += 1;
                    }
                }
                out.push(RecordRow { row, content });
                if out.len() >= batch && !send(std::mem::take(&mut out)) {
                    interrupted = true;
                    return false;
                }
            }
            true
        })?;
        if interrupted || halt() {
            if !out.is_empty() {
                send(std::mem::take(&mut out));
            }
            summary.status = NodeStatus::Interrupted;
            return Ok(None);
        }
        if !out.is_empty() && !send(std::mem::take(&mut out)) {
            summary.status = NodeStatus::Interrupted;
            return Ok(None);
        }
        snap.for_each_removed(10_000, |ids| {
            tx.send(Msg::Removed(meta.clone(), ids)).is_ok()
        })?;
        // Rows already current and fetched, plus this run's outcome.
        record.record_count = summary.records as i64;
        record.ok_count = (summary.delta.unchanged + summary.fetched) as i64;
        record.failed_count = summary.failed as i64;
        record.removed_count = summary.delta.removed as i64;
        summary.status = if summary.failed > 0 {
            NodeStatus::WithFailures
        } else {
            NodeStatus::Ok
        };
        record.status = summary.status.as_str().into();
        Ok(Some(record))
    })();
    let record = match outcome {
        Ok(r) => r,
        Err(e) => {
            summary.status = NodeStatus::Failed;
            summary.error = Some(e.to_string());
            // Recorded without a fingerprint, so the next scan tries it again.
            Some(ProcessedRecord {
                status_filter,
                status: NodeStatus::Failed.as_str().into(),
                error: Some(e.to_string()),
                ..ProcessedRecord::default()
            })
        }
    };
    if let Some(mut record) = record {
        record.duration_s = started.elapsed().as_secs_f64();
        let _ = tx.send(Msg::Done(Arc::new(meta), Box::new(record)));
    }
    summary
}
