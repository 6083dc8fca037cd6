//! Prometheus metrics for `sync`, `scan` and `watch` (`--metrics-addr 127.0.0.1:PORT`).
//!
//! Process-wide counters, updated where the work happens (block reads, batch commits, node
//! summaries) with relaxed atomics: a few nanoseconds on the hot path, no locks. Served as
//! Prometheus's text format (0.0.4) by a small HTTP endpoint on its own thread, so a scrape
//! never waits on the pipeline. Everything is counted whether or not it is served.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Upper bounds (seconds) of the batch-commit latency histogram.
const BATCH_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BATCH_BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds (atomics hold integers).
    sum_us: AtomicU64,
}

/// Where a block that was read came from.
#[derive(Debug, Clone, Copy)]
pub enum BlockSource {
    /// The node's own flatfs.
    Disk,
    /// Our own cache of blocks fetched from the swarm (in this run or before).
    Cache,
    /// Fetched from the swarm in this run and held in memory (`--cache none`).
    Fetched,
}

#[derive(Default)]
struct Registry {
    blocks_disk: AtomicU64,
    blocks_cache: AtomicU64,
    blocks_fetched_mem: AtomicU64,
    block_bytes: AtomicU64,
    peer_blocks: AtomicU64,
    peer_bytes: AtomicU64,
    tokens_written: AtomicU64,
    tokens_unchanged: AtomicU64,
    tokens_failed: AtomicU64,
    tokens_skipped: AtomicU64,
    records_new: AtomicU64,
    records_changed: AtomicU64,
    records_removed: AtomicU64,
    records_unchanged: AtomicU64,
    records_fetch_failed: AtomicU64,
    db_errors: AtomicU64,
    batch: Histogram,
    /// Labelled counters whose label values are only known at run time.
    failures_by_class: Mutex<BTreeMap<String, u64>>,
    nodes_by_status: Mutex<BTreeMap<String, u64>>,
    runs_by_status: Mutex<BTreeMap<(String, String), u64>>,
    last_run_end: AtomicU64,
    last_run_seconds_ms: AtomicU64,
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::default)
}

/// A block was read (and verified) from `source`.
pub fn block_read(source: BlockSource, bytes: usize) {
    let r = registry();
    match source {
        BlockSource::Disk => &r.blocks_disk,
        BlockSource::Cache => &r.blocks_cache,
        BlockSource::Fetched => &r.blocks_fetched_mem,
    }
    .fetch_add(1, Relaxed);
    r.block_bytes.fetch_add(bytes as u64, Relaxed);
}

/// A block arrived from a peer of the swarm (hash-verified).
pub fn block_fetched(bytes: usize) {
    let r = registry();
    r.peer_blocks.fetch_add(1, Relaxed);
    r.peer_bytes.fetch_add(bytes as u64, Relaxed);
}

/// A `sync` batch committed in `took`.
pub fn batch_committed(took: Duration, written: u64, unchanged: u64, failed: &[&str]) {
    let r = registry();
    r.tokens_written.fetch_add(written, Relaxed);
    r.tokens_unchanged.fetch_add(unchanged, Relaxed);
    r.tokens_failed.fetch_add(failed.len() as u64, Relaxed);
    if !failed.is_empty() {
        let mut m = r
            .failures_by_class
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for class in failed {
            *m.entry((*class).to_string()).or_default() += 1;
        }
    }
    observe_batch(took);
}

fn observe_batch(took: Duration) {
    let h = &registry().batch;
    let s = took.as_secs_f64();
    for (i, bound) in BATCH_BUCKETS.iter().enumerate() {
        if s <= *bound {
            h.buckets[i].fetch_add(1, Relaxed);
        }
    }
    h.count.fetch_add(1, Relaxed);
    h.sum_us.fetch_add(took.as_micros() as u64, Relaxed);
}

/// Tokens a `sync` run did not fetch because TokenInfo already had them.
pub fn tokens_skipped(n: u64) {
    registry().tokens_skipped.fetch_add(n, Relaxed);
}

/// A `scan` node finished: its row counts and its status.
pub fn node_scanned(
    status: &str,
    new: u64,
    changed: u64,
    removed: u64,
    unchanged: u64,
    fetch_failed: u64,
) {
    let r = registry();
    r.records_new.fetch_add(new, Relaxed);
    r.records_changed.fetch_add(changed, Relaxed);
    r.records_removed.fetch_add(removed, Relaxed);
    r.records_unchanged.fetch_add(unchanged, Relaxed);
    r.records_fetch_failed.fetch_add(fetch_failed, Relaxed);
    *r.nodes_by_status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(status.to_string())
        .or_default() += 1;
}

/// A database operation failed (a batch, a merge, a connection).
pub fn db_error() {
    registry().db_errors.fetch_add(1, Relaxed);
}

/// A run of `command` ended with `status` after `took`.
pub fn run_finished(command: &str, status: &str, took: Duration) {
    let r = registry();
    *r.runs_by_status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((command.to_string(), status.to_string()))
        .or_default() += 1;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    r.last_run_end.store(now, Relaxed);
    r.last_run_seconds_ms
        .store(took.as_millis() as u64, Relaxed);
}

/// Label values are ours (reason classes, statuses, commands), but escape them anyway.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics in Prometheus's text exposition format.
pub fn render() -> String {
    let r = registry();
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        o.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            o.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let v = |a: &AtomicU64| a.load(Relaxed).to_string();
    metric(
        "rubix_sync_blocks_read_total",
        "counter",
        "Blocks read and hash-verified, by where they came from.",
        vec![
            ("{source=\"disk\"}".into(), v(&r.blocks_disk)),
            ("{source=\"cache\"}".into(), v(&r.blocks_cache)),
            ("{source=\"fetched\"}".into(), v(&r.blocks_fetched_mem)),
        ],
    );
    metric(
        "rubix_sync_block_bytes_total",
        "counter",
        "Bytes of the blocks read.",
        vec![(String::new(), v(&r.block_bytes))],
    );
    metric(
        "rubix_sync_peer_blocks_fetched_total",
        "counter",
        "Blocks missing on disk that arrived from the swarm (hash-verified).",
        vec![(String::new(), v(&r.peer_blocks))],
    );
    metric(
        "rubix_sync_peer_bytes_fetched_total",
        "counter",
        "Bytes of the blocks that arrived from the swarm.",
        vec![(String::new(), v(&r.peer_bytes))],
    );
    metric(
        "rubix_sync_tokens_total",
        "counter",
        "sync: tokens by outcome (written = inserted or changed in TokenInfo).",
        vec![
            ("{outcome=\"written\"}".into(), v(&r.tokens_written)),
            ("{outcome=\"unchanged\"}".into(), v(&r.tokens_unchanged)),
            ("{outcome=\"failed\"}".into(), v(&r.tokens_failed)),
            ("{outcome=\"skipped\"}".into(), v(&r.tokens_skipped)),
        ],
    );
    let classes = r
        .failures_by_class
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, n)| (format!("{{class=\"{}\"}}", label(k)), n.to_string()))
        .collect();
    metric(
        "rubix_sync_token_failures_total",
        "counter",
        "sync: tokens that could not be fetched, verified or parsed, by reason class.",
        classes,
    );
    metric(
        "rubix_sync_records_total",
        "counter",
        "scan: TokenRecords rows by what the scan did with them.",
        vec![
            ("{outcome=\"new\"}".into(), v(&r.records_new)),
            ("{outcome=\"changed\"}".into(), v(&r.records_changed)),
            ("{outcome=\"removed\"}".into(), v(&r.records_removed)),
            ("{outcome=\"unchanged\"}".into(), v(&r.records_unchanged)),
            (
                "{outcome=\"fetch_failed\"}".into(),
                v(&r.records_fetch_failed),
            ),
        ],
    );
    let nodes = r
        .nodes_by_status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, n)| (format!("{{status=\"{}\"}}", label(k)), n.to_string()))
        .collect();
    metric(
        "rubix_sync_nodes_total",
        "counter",
        "scan: nodes by status.",
        nodes,
    );
    metric(
        "rubix_sync_db_errors_total",
        "counter",
        "Database operations that failed.",
        vec![(String::new(), v(&r.db_errors))],
    );
    let h = &r.batch;
    let mut samples: Vec<(String, String)> = BATCH_BUCKETS
        .iter()
        .zip(&h.buckets)
        .map(|(b, n)| (format!("_bucket{{le=\"{b}\"}}"), v(n)))
        .collect();
    samples.push(("_bucket{le=\"+Inf\"}".into(), v(&h.count)));
    samples.push((
        "_sum".into(),
        format!("{}", h.sum_us.load(Relaxed) as f64 / 1e6),
    ));
    samples.push(("_count".into(), v(&h.count)));
    metric(
        "rubix_sync_batch_commit_seconds",
        "histogram",
        "sync: time to commit one batch (COPY + merge + commit).",
        samples,
    );
    let runs = r
        .runs_by_status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|((c, s), n)| {
            (
                format!("{{command=\"{}\",status=\"{}\"}}", label(c), label(s)),
                n.to_string(),
            )
        })
        .collect();
    metric(
        "rubix_sync_runs_total",
        "counter",
        "Runs by command and final status.",
        runs,
    );
    metric(
        "rubix_sync_last_run_end_timestamp_seconds",
        "gauge",
        "When the last run ended (Unix time; 0 before the first).",
        vec![(String::new(), v(&r.last_run_end))],
    );
    metric(
        "rubix_sync_last_run_duration_seconds",
        "gauge",
        "How long the last run took.",
        vec![(
            String::new(),
            format!("{}", r.last_run_seconds_ms.load(Relaxed) as f64 / 1e3),
        )],
    );
    o
}

/// Serves `GET /metrics` on `addr` from a thread of its own, for the life of the process.
/// Returns the bound address (port 0 picks a free one).
pub fn serve(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    if !bound.ip().is_loopback() {
        tracing::warn!(%bound, "metrics are served beyond this machine (no authentication)");
    }
    std::thread::Builder::new()
        .name("rubix-sync-metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(stream) {
                    tracing::debug!("metrics request: {e}");
                }
            }
        })?;
    Ok(bound)
}

fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Drain the headers (up to the blank line); the body of a GET is empty.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_labels_and_a_cumulative_histogram() {
        block_read(BlockSource::Disk, 74);
        batch_committed(Duration::from_millis(30), 2, 1, &["not_utf8"]);
        let text = render();
        assert!(text.contains("# TYPE rubix_sync_blocks_read_total counter"));
        assert!(text.contains("rubix_sync_token_failures_total{class=\"not_utf8\"}"));
        // 30 ms lands in every bucket from 0.05 s up, not in the smaller ones.
        let bucket = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "rubix_sync_batch_commit_seconds_bucket{{le=\"{le}\"}}"
                    ))
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap()
        };
        assert!(bucket("0.05") >= 1);
        assert!(bucket("+Inf") >= bucket("0.05"));
        assert!(bucket("0.025") <= bucket("0.05"));
    }

    #[test]
    fn serves_metrics_over_http_and_404_elsewhere() {
        let addr = serve("127.0.0.1:0".parse().unwrap()).unwrap();
        let get = |path: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            std::io::Read::read_to_string(&mut s, &mut out).unwrap();
            out
        };
        let ok = get("/metrics");
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.contains("rubix_sync_runs_total"));
        assert!(get("/").starts_with("HTTP/1.1 404"));
    }
}
