//! `rubix-sync bench`: the same sample of a node's tokens read three ways, bytes compared.
//!
//! Operators want to see on their own node what they gain over what they ran before, so the
//! comparison uses their tokens and their repository:
//!
//! * `rubix-sync` — this crate's in-process reader (flatfs + verify + UnixFS), `workers` threads;
//! * `ipfs-cat` — one `ipfs cat CID` process per token with `IPFS_PATH` set, `workers` at a
//!   time: exactly what the old Python scripts did;
//! * `http-rpc` — `POST /api/v0/cat?arg=CID` against the node's daemon, keep-alive, `workers`
//!   concurrent connections.
//!
//! Every method's bytes are compared per CID with the in-process reader's (or, where it failed,
//! the first method that produced bytes); any difference fails the bench and names the CID.
//! A method whose tool is absent or does not answer is reported as skipped, with the reason.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::ipfs::{self, CatLimits, Repo};
use crate::node::Node;
use crate::pipeline::{self, BulkLoad, SyncOptions};
use crate::sink::Sink;
use crate::source::{Snapshot, TokenTable};

/// The `--json` shape's name; bumped only when a field changes meaning or goes away.
pub const SCHEMA: &str = "rubix-sync.bench/1";

/// Largest response accepted from any method: tokens are tiny, and a daemon streaming a huge
/// file by mistake should not exhaust memory.
const MAX_CONTENT: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    #[error("{0}: no .ipfs repository found for this node; pass --ipfs-repo")]
    NoRepo(PathBuf),
    #[error(transparent)]
    Ipfs(#[from] ipfs::IpfsError),
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error("the node's FTTokenTable is empty: nothing to benchmark")]
    NoTokens,
    #[error("end-to-end sync: {0}")]
    EndToEnd(String),
}

/// Where the end-to-end row's `sync` writes. Always a database nobody else uses.
pub enum Scratch {
    /// A fresh SQLite file in a temporary directory, removed afterwards.
    Sqlite,
    /// A fresh database created on this PostgreSQL server and dropped afterwards.
    Postgres(Box<crate::sink::config::PgTarget>),
}

pub struct BenchOptions {
    pub sample: usize,
    pub seed: u64,
    pub workers: usize,
    /// The `ipfs` executable; `None` means look for `ipfs` on `PATH`.
    pub ipfs_bin: Option<PathBuf>,
    /// The daemon's RPC address (`http://host:port` or a multiaddr); `None` means the repo's
    /// `api` file.
    pub api: Option<String>,
    /// Per-token bound for the external methods, so a block the daemon cannot find does not
    /// stall the bench.
    pub timeout: Duration,
    pub end_to_end: Option<Scratch>,
    pub work_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodId {
    RubixSync,
    IpfsCat,
    HttpRpc,
    EndToEnd,
}

impl MethodId {
    pub fn as_str(self) -> &'static str {
        match self {
            MethodId::RubixSync => "rubix-sync",
            MethodId::IpfsCat => "ipfs-cat",
            MethodId::HttpRpc => "http-rpc",
            MethodId::EndToEnd => "end-to-end",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenError {
    pub cid: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MethodReport {
    pub method: MethodId,
    /// What exactly ran, e.g. the executable or URL.
    pub detail: String,
    pub status: Status,
    pub skip_reason: Option<String>,
    pub tokens: usize,
    pub errors: usize,
    /// Up to five failed tokens with their errors.
    pub error_examples: Vec<TokenError>,
    pub seconds: f64,
    pub tokens_per_s: f64,
    /// Per-token latency; `None` for skipped methods and the end-to-end row.
    pub latency: Option<Latency>,
    /// tokens/s divided by the `ipfs-cat` method's, when both ran.
    pub speedup_vs_ipfs_cat: Option<f64>,
    /// tokens/s divided by the `http-rpc` method's, when both ran.
    pub speedup_vs_http_rpc: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    pub cid: String,
    pub method: MethodId,
    /// The method whose bytes were taken as the reference.
    pub reference: MethodId,
    pub reference_len: usize,
    pub len: usize,
    /// Offset of the first differing byte.
    pub first_difference: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub schema: &'static str,
    pub node: String,
    pub ipfs_repo: String,
    pub tokens_in_node: u64,
    pub sample: usize,
    pub seed: u64,
    pub workers: usize,
    pub methods: Vec<MethodReport>,
    pub mismatches: Vec<Mismatch>,
    /// No mismatch. (Per-token errors do not make this false; they are in each method's row.)
    pub ok: bool,
}

/// One call's result: the CID's index in the sample, its bytes or error, and how long it took.
type Call = (usize, Result<Vec<u8>, String>, Duration);

/// One method's raw outcome: per sampled CID, its bytes or error, and the call's latency.
struct Outcome {
    results: Vec<Result<Vec<u8>, String>>,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

/// Runs the bench. `stop` ends each method early (Ctrl-C); the report then covers what ran.
pub fn run(node: &Node, opts: &BenchOptions, stop: &AtomicBool) -> Result<BenchReport, BenchError> {
    let repo_path = node
        .ipfs
        .clone()
        .ok_or_else(|| BenchError::NoRepo(node.dir.clone()))?;
    let repo = Repo::open(&repo_path)?;
    let snapshot = Snapshot::take(
        &node.db,
        TokenTable::FtTokens,
        opts.work_dir.as_deref(),
        Duration::from_secs(10),
    )?;
    let tokens_in_node = snapshot.total();
    let sample = snapshot.sample(opts.sample, opts.seed)?;
    drop(snapshot);
    if sample.is_empty() {
        return Err(BenchError::NoTokens);
    }
    let workers = opts.workers.max(1);
    let mut reports = Vec::new();
    let mut outcomes: Vec<(MethodId, Outcome)> = Vec::new();

    // (a) in-process.
    let limits = CatLimits {
        max_bytes: MAX_CONTENT,
        ..CatLimits::default()
    };
    let out = run_parallel(&sample, workers, stop, || {
        let repo = &repo;
        let mut buf = Vec::new();
        move |cid: &str| {
            let cid = ipfs::parse_cid(cid).map_err(|e| e.to_string())?;
            ipfs::resolve::read_file(repo, &cid, limits, &mut buf).map_err(|e| e.to_string())?;
            Ok(buf.clone())
        }
    });
    reports.push(report_for(
        MethodId::RubixSync,
        format!("in-process reader, {workers} threads"),
        &out,
        &sample,
    ));
    outcomes.push((MethodId::RubixSync, out));

    // (b) `ipfs cat` subprocesses.
    match probe_ipfs_bin(opts.ipfs_bin.as_deref(), &repo_path) {
        Ok(bin) => {
            let out = run_parallel(&sample, workers, stop, || {
                let bin = bin.clone();
                let repo_path = repo_path.clone();
                let timeout = format!("--timeout={}s", opts.timeout.as_secs().max(1));
                move |cid: &str| ipfs_cat(&bin, &repo_path, &timeout, cid)
            });
            reports.push(report_for(
                MethodId::IpfsCat,
                format!("{} cat, {workers} processes at a time", bin.display()),
                &out,
                &sample,
            ));
            outcomes.push((MethodId::IpfsCat, out));
        }
        Err(reason) => reports.push(skipped(MethodId::IpfsCat, reason)),
    }

    // (c) the daemon's HTTP RPC.
    match probe_api(opts.api.as_deref(), &repo_path, opts.timeout) {
        Ok(base) => {
            let out = run_parallel(&sample, workers, stop, || {
                let agent = http_agent(opts.timeout);
                let base = base.clone();
                move |cid: &str| http_cat(&agent, &base, cid)
            });
            reports.push(report_for(
                MethodId::HttpRpc,
                format!("POST {base}/api/v0/cat, {workers} keep-alive connections"),
                &out,
                &sample,
            ));
            outcomes.push((MethodId::HttpRpc, out));
        }
        Err(reason) => reports.push(skipped(MethodId::HttpRpc, reason)),
    }

    let mismatches = compare(&sample, &outcomes);

    if let Some(scratch) = &opts.end_to_end {
        if !stop.load(Ordering::Relaxed) {
            reports.push(end_to_end(node, scratch, opts, stop)?);
        }
    }

    let rate = |id| {
        reports
            .iter()
            .find(|r: &&MethodReport| r.method == id && r.status == Status::Ok)
            .map(|r| r.tokens_per_s)
            .filter(|r| *r > 0.0)
    };
    let (cat_rate, rpc_rate) = (rate(MethodId::IpfsCat), rate(MethodId::HttpRpc));
    for r in reports.iter_mut().filter(|r| r.status == Status::Ok) {
        r.speedup_vs_ipfs_cat = cat_rate.map(|c| r.tokens_per_s / c);
        r.speedup_vs_http_rpc = rpc_rate.map(|c| r.tokens_per_s / c);
    }

    Ok(BenchReport {
        schema: SCHEMA,
        node: node.label(),
        ipfs_repo: repo_path.display().to_string(),
        tokens_in_node,
        sample: sample.len(),
        seed: opts.seed,
        workers,
        ok: mismatches.is_empty(),
        methods: reports,
        mismatches,
    })
}

/// Runs `make()`'s closure over every CID on `workers` threads, each thread with its own
/// closure (its own buffer, connection or client), handing out CIDs one at a time.
fn run_parallel<M, F>(cids: &[String], workers: usize, stop: &AtomicBool, make: M) -> Outcome
where
    M: Fn() -> F + Sync,
    F: FnMut(&str) -> Result<Vec<u8>, String>,
{
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let mut per_thread: Vec<Vec<Call>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.min(cids.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut f = make();
                    let mut done = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(cid) = cids.get(i) else { break };
                        let t = Instant::now();
                        let r = f(cid);
                        done.push((i, r, t.elapsed()));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench worker panicked"))
            .collect()
    });
    let elapsed = start.elapsed();
    let mut results: Vec<Result<Vec<u8>, String>> =
        vec![Err("not run (interrupted)".to_string()); cids.len()];
    let mut latencies = Vec::with_capacity(cids.len());
    for (i, r, d) in per_thread.drain(..).flatten() {
        results[i] = r;
        latencies.push(d);
    }
    Outcome {
        results,
        latencies,
        elapsed,
    }
}

fn report_for(method: MethodId, detail: String, out: &Outcome, cids: &[String]) -> MethodReport {
    let ran = out.latencies.len();
    let errors: Vec<TokenError> = out
        .results
        .iter()
        .zip(cids)
        .filter_map(|(r, cid)| {
            r.as_ref().err().map(|e| TokenError {
                cid: cid.clone(),
                error: e.clone(),
            })
        })
        .collect();
    let secs = out.elapsed.as_secs_f64();
    MethodReport {
        method,
        detail,
        status: Status::Ok,
        skip_reason: None,
        tokens: ran,
        errors: errors.len(),
        error_examples: errors.into_iter().take(5).collect(),
        seconds: secs,
        tokens_per_s: if secs > 0.0 { ran as f64 / secs } else { 0.0 },
        latency: latency(&out.latencies),
        speedup_vs_ipfs_cat: None,
        speedup_vs_http_rpc: None,
    }
}

fn skipped(method: MethodId, reason: String) -> MethodReport {
    MethodReport {
        method,
        detail: String::new(),
        status: Status::Skipped,
        skip_reason: Some(reason),
        tokens: 0,
        errors: 0,
        error_examples: Vec::new(),
        seconds: 0.0,
        tokens_per_s: 0.0,
        latency: None,
        speedup_vs_ipfs_cat: None,
        speedup_vs_http_rpc: None,
    }
}

/// Nearest-rank percentiles.
fn latency(samples: &[Duration]) -> Option<Latency> {
    if samples.is_empty() {
        return None;
    }
    let mut v: Vec<Duration> = samples.to_vec();
    v.sort_unstable();
    let pick = |p: f64| {
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1].as_secs_f64() * 1000.0
    };
    Some(Latency {
        p50_ms: pick(50.0),
        p95_ms: pick(95.0),
        p99_ms: pick(99.0),
    })
}

/// Per CID, every method's bytes against the reference: the first method (in run order) that
/// produced bytes for it.
fn compare(cids: &[String], outcomes: &[(MethodId, Outcome)]) -> Vec<Mismatch> {
    let mut found = Vec::new();
    for (i, cid) in cids.iter().enumerate() {
        let mut reference: Option<(MethodId, &[u8])> = None;
        for (method, out) in outcomes {
            let Ok(bytes) = &out.results[i] else { continue };
            match reference {
                None => reference = Some((*method, bytes)),
                Some((ref_method, want)) if want != bytes.as_slice() => {
                    found.push(Mismatch {
                        cid: cid.clone(),
                        method: *method,
                        reference: ref_method,
                        reference_len: want.len(),
                        len: bytes.len(),
                        first_difference: want
                            .iter()
                            .zip(bytes)
                            .position(|(a, b)| a != b)
                            .unwrap_or(want.len().min(bytes.len())),
                    });
                }
                Some(_) => {}
            }
        }
    }
    found
}

/// Finds the `ipfs` executable and checks it runs (`ipfs version`).
fn probe_ipfs_bin(explicit: Option<&Path>, repo: &Path) -> Result<PathBuf, String> {
    let bin = match explicit {
        Some(p) => p.to_path_buf(),
        None => find_on_path("ipfs").ok_or_else(|| {
            "no `ipfs` executable on PATH (pass --ipfs-bin PATH to include the old system's way)"
                .to_string()
        })?,
    };
    let out = Command::new(&bin)
        .arg("version")
        .env("IPFS_PATH", repo)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{} cannot be run: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{} version` failed ({}): {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(bin)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| {
                p.metadata()
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
            })
    })
}

/// One `ipfs cat` process, as the old scripts ran it.
fn ipfs_cat(bin: &Path, repo: &Path, timeout: &str, cid: &str) -> Result<Vec<u8>, String> {
    let mut child = Command::new(bin)
        .arg(timeout)
        .arg("cat")
        .arg(cid)
        .env("IPFS_PATH", repo)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning {}: {e}", bin.display()))?;
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let mut bytes = Vec::new();
    let read = child
        .stdout
        .take()
        .expect("piped")
        .take(MAX_CONTENT + 1)
        .read_to_end(&mut bytes);
    let status = child.wait().map_err(|e| format!("waiting for ipfs: {e}"))?;
    let stderr = err_reader.join().unwrap_or_default();
    read.map_err(|e| format!("reading ipfs output: {e}"))?;
    if !status.success() {
        return Err(format!(
            "ipfs cat exited with {status}: {}",
            String::from_utf8_lossy(&stderr).trim()
        ));
    }
    if bytes.len() as u64 > MAX_CONTENT {
        return Err(format!("more than {MAX_CONTENT} bytes"));
    }
    Ok(bytes)
}

/// The daemon's RPC base URL from `--api` or the repo's `api` file (a multiaddr such as
/// `/ip4/127.0.0.1/tcp/5001`), checked with `POST /api/v0/version`.
fn probe_api(explicit: Option<&str>, repo: &Path, timeout: Duration) -> Result<String, String> {
    let text = match explicit {
        Some(a) => a.trim().to_string(),
        None => {
            let file = repo.join("api");
            std::fs::read_to_string(&file)
                .map_err(|_| {
                    format!(
                        "no daemon API: {} does not exist (the daemon is not running?); pass --api URL",
                        file.display()
                    )
                })?
                .trim()
                .to_string()
        }
    };
    let base = api_base_url(&text)?;
    let agent = http_agent(timeout.min(Duration::from_secs(5)));
    let url = format!("{base}/api/v0/version");
    match agent.post(&url).send_empty() {
        Ok(r) if r.status().is_success() => Ok(base),
        Ok(r) => Err(format!(
            "daemon at {base} answered {} to /api/v0/version",
            r.status()
        )),
        Err(e) => Err(format!("daemon at {base} does not answer: {e}")),
    }
}

/// `http://host:port`, `host:port`, or a `/ip4|ip6|dns|dns4|dns6/HOST/tcp/PORT` multiaddr.
pub fn api_base_url(text: &str) -> Result<String, String> {
    let text = text.trim().trim_end_matches('/');
    if text.starts_with("http://") || text.starts_with("https://") {
        return Ok(text.to_string());
    }
    if let Some(rest) = text.strip_prefix('/') {
        let parts: Vec<&str> = rest.split('/').collect();
        if let [proto, host, "tcp", port, ..] = parts.as_slice() {
            if port.parse::<u16>().is_ok() {
                return match *proto {
                    "ip4" | "dns" | "dns4" | "dns6" => Ok(format!("http://{host}:{port}")),
                    "ip6" => Ok(format!("http://[{host}]:{port}")),
                    _ => Err(format!("unsupported API multiaddr {text:?}")),
                };
            }
        }
        return Err(format!(
            "unsupported API multiaddr {text:?} (want /ip4/HOST/tcp/PORT)"
        ));
    }
    if text
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        return Ok(format!("http://{text}"));
    }
    Err(format!(
        "cannot read {text:?} as an API address (http://HOST:PORT or a multiaddr)"
    ))
}

fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_idle_connections_per_host(64)
            .build(),
    )
}

fn http_cat(agent: &ureq::Agent, base: &str, cid: &str) -> Result<Vec<u8>, String> {
    // CIDs are base-N text: nothing in them needs percent-encoding.
    let url = format!("{base}/api/v0/cat?arg={cid}");
    let mut resp = agent.post(&url).send_empty().map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_CONTENT)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        // kubo answers errors as {"Message": "...", "Code": 0, "Type": "error"}.
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("Message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(format!("HTTP {status}: {msg}"));
    }
    if let Some(err) = resp.headers().get("X-Stream-Error") {
        return Err(format!("stream error: {}", err.to_str().unwrap_or("?")));
    }
    Ok(body)
}

/// A full `sync` of the node into a scratch database: what a first load costs end to end.
fn end_to_end(
    node: &Node,
    scratch: &Scratch,
    opts: &BenchOptions,
    stop: &AtomicBool,
) -> Result<MethodReport, BenchError> {
    let e2e = |e: &dyn std::fmt::Display| BenchError::EndToEnd(e.to_string());
    let sync_opts = SyncOptions {
        full: true,
        bulk_load: BulkLoad::Auto,
        batch_size: 10_000,
        resolvers: 0,
        writers: 2,
        work_dir: opts.work_dir.clone(),
        busy_timeout: Duration::from_secs(10),
        progress: false,
        // The row measures reading the node's own blocks, like the in-process row.
        peer: crate::ipfs::peer::PeerOptions {
            offline: true,
            ..Default::default()
        },
    };
    let stop_flag = Arc::new(AtomicBool::new(stop.load(Ordering::Relaxed)));
    let tmp;
    let (summary, detail) = match scratch {
        Scratch::Sqlite => {
            tmp = tempfile::Builder::new()
                .prefix("rubix-sync-bench-")
                .tempdir()
                .map_err(|e| e2e(&e))?;
            let path = tmp.path().join("scratch.db");
            let mut sink = crate::sink::sqlite::SqliteSink::open(&path).map_err(|e| e2e(&e))?;
            let s = pipeline::sync(node, &mut sink as &mut dyn Sink, &sync_opts, &stop_flag)
                .map_err(|e| e2e(&e))?;
            (s, "sync into a scratch SQLite file".to_string())
        }
        Scratch::Postgres(target) => {
            let name = format!(
                "rubix_sync_bench_{}_{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0)
            );
            let db = crate::sink::postgres::ScratchDatabase::create(target, &name)
                .map_err(|e| e2e(&crate::sink::config::redact(&e.to_string())))?;
            let result = (|| {
                let mut sink = crate::sink::postgres::PgSink::connect(db.target())
                    .map_err(|e| e2e(&crate::sink::config::redact(&e.to_string())))?;
                pipeline::sync(node, &mut sink as &mut dyn Sink, &sync_opts, &stop_flag)
                    .map_err(|e| e2e(&crate::sink::config::redact(&e.to_string())))
            })();
            drop(db);
            (
                result?,
                format!("sync into scratch PostgreSQL database {name} (dropped after)"),
            )
        }
    };
    Ok(MethodReport {
        method: MethodId::EndToEnd,
        detail,
        status: Status::Ok,
        skip_reason: None,
        tokens: summary.processed as usize,
        errors: summary.failed as usize,
        error_examples: Vec::new(),
        seconds: summary.elapsed_s,
        tokens_per_s: summary.tokens_per_s,
        latency: None,
        speedup_vs_ipfs_cat: None,
        speedup_vs_http_rpc: None,
    })
}

/// The human-readable comparison table.
pub fn render_table(r: &BenchReport) -> String {
    use comfy_table::{presets, CellAlignment, Table};
    let mut t = Table::new();
    t.load_style(presets::ASCII_MARKDOWN);
    t.set_header(vec![
        "method",
        "tokens",
        "errors",
        "tokens/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "× ipfs cat",
        "× HTTP RPC",
    ]);
    let ratio = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    for m in &r.methods {
        if m.status == Status::Skipped {
            t.add_row(vec![
                m.method.as_str().to_string(),
                "skipped".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        }
        let (p50, p95, p99) = match &m.latency {
            Some(l) => (
                format!("{:.3}", l.p50_ms),
                format!("{:.3}", l.p95_ms),
                format!("{:.3}", l.p99_ms),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        t.add_row(vec![
            m.method.as_str().to_string(),
            m.tokens.to_string(),
            m.errors.to_string(),
            format!("{:.0}", m.tokens_per_s),
            p50,
            p95,
            p99,
            ratio(m.speedup_vs_ipfs_cat),
            ratio(m.speedup_vs_http_rpc),
        ]);
    }
    for i in 1..9 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = format!(
        "node {} ({} tokens; sample {}, seed {}, {} workers)\n{t}\n",
        r.node, r.tokens_in_node, r.sample, r.seed, r.workers
    );
    for m in &r.methods {
        match (&m.skip_reason, m.error_examples.first()) {
            (Some(why), _) => out.push_str(&format!("{}: skipped: {why}\n", m.method.as_str())),
            (None, Some(e)) => out.push_str(&format!(
                "{}: {} errors, e.g. {}: {}\n",
                m.method.as_str(),
                m.errors,
                e.cid,
                e.error
            )),
            _ if !m.detail.is_empty() => {
                out.push_str(&format!("{}: {}\n", m.method.as_str(), m.detail))
            }
            _ => {}
        }
    }
    for mm in &r.mismatches {
        out.push_str(&format!(
            "MISMATCH {}: {} returned {} bytes, {} returned {} bytes; first difference at byte {}\n",
            mm.cid,
            mm.method.as_str(),
            mm.len,
            mm.reference.as_str(),
            mm.reference_len,
            mm.first_difference
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_addresses() {
        assert_eq!(
            api_base_url("/ip4/127.0.0.1/tcp/5001").unwrap(),
            "http://127.0.0.1:5001"
        );
        assert_eq!(
            api_base_url("/ip6/::1/tcp/5001\n").unwrap(),
            "http://[::1]:5001"
        );
        assert_eq!(
            api_base_url("http://127.0.0.1:5001/").unwrap(),
            "http://127.0.0.1:5001"
        );
        assert_eq!(
            api_base_url("localhost:5001").unwrap(),
            "http://localhost:5001"
        );
        assert!(api_base_url("/ip4/127.0.0.1/udp/5001/quic").is_err());
        assert!(api_base_url("nonsense").is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = latency(&v).unwrap();
        assert_eq!((l.p50_ms, l.p95_ms, l.p99_ms), (50.0, 95.0, 99.0));
        assert!(latency(&[]).is_none());
        let one = latency(&[Duration::from_millis(7)]).unwrap();
        assert_eq!(one.p99_ms, 7.0);
    }

    #[test]
    fn compare_names_the_differing_cid_and_offset() {
        let cids = vec!["a".to_string(), "b".to_string()];
        let out = |r: Vec<Result<Vec<u8>, String>>| Outcome {
            results: r,
            latencies: vec![],
            elapsed: Duration::ZERO,
        };
        let outcomes = vec![
            (
                MethodId::RubixSync,
                out(vec![Ok(b"X 1 d".to_vec()), Err("missing".into())]),
            ),
            (
                MethodId::HttpRpc,
                out(vec![Ok(b"X 2 d".to_vec()), Ok(b"ok".to_vec())]),
            ),
            (
                MethodId::IpfsCat,
                out(vec![Ok(b"X 1 d".to_vec()), Ok(b"ok".to_vec())]),
            ),
        ];
        let m = compare(&cids, &outcomes);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].cid, "a");
        assert_eq!(m[0].method, MethodId::HttpRpc);
        assert_eq!(m[0].reference, MethodId::RubixSync);
        assert_eq!(m[0].first_difference, 2);
    }
}
