//! Command-line interface: argument parsing, logging set-up and exit codes. No logic of its own.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::bench;
use crate::corpus::{self, CorpusSpec};
use crate::ipfs::peer::{Fallback, PeerOptions, WithFallback};
use crate::ipfs::{self, BlockSource, CatLimits, ErrorClass, IpfsError, Repo};
use crate::node::Node;
use crate::pipeline::scan::{self, NodeStatus, ScanOptions, ScanSummary};
use crate::pipeline::{self, BulkLoad, RunStatus, SyncOptions, SyncSummary};
use crate::report;
use crate::sink::config::{self as dbconfig, Origin, Target};
use crate::sink::{postgres::PgSink, sqlite::SqliteSink, Sink};

/// Exit codes. 0 means everything requested succeeded; the rest say what kind of failure.
pub mod exit {
    pub const OK: u8 = 0;
    /// The run itself failed (bad configuration, database unreachable, I/O error).
    pub const FAILED: u8 = 1;
    /// Command-line usage error (clap's own code).
    pub const USAGE: u8 = 2;
    /// `bench`: two methods returned different bytes for the same CID.
    pub const BENCH_MISMATCH: u8 = 4;
    /// Another run of the same job (`sync` of this node, `scan` of this root) holds its lock.
    pub const BUSY: u8 = 5;
    /// The run completed but some tokens could not be fetched, verified or parsed.
    pub const SOME_TOKENS_FAILED: u8 = 3;
    /// Interrupted (Ctrl-C / SIGTERM) after committing what was in flight.
    pub const INTERRUPTED: u8 = 130;
    pub const REPO: u8 = 10;
    pub const INVALID_CID: u8 = 11;
    pub const BLOCK_MISSING: u8 = 12;
    pub const BLOCK_CORRUPT: u8 = 13;
    pub const NOT_A_FILE: u8 = 14;
    pub const MALFORMED: u8 = 15;
    pub const IO: u8 = 16;
    /// A block missing locally could not be fetched from the swarm.
    pub const PEER: u8 = 17;
}

/// Moves Rubix token metadata out of node repositories into PostgreSQL, reading IPFS blocks
/// in-process from the node's `.ipfs` (read-only, never touching `repo.lock`).
#[derive(Debug, Parser)]
#[command(name = "rubix-sync", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct LogArgs {
    /// Also write log lines (level from RUST_LOG, default warn) to this file, appending; it
    /// rotates by size (PATH.1 … PATH.N).
    #[arg(long, global = true, value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// Rotate the log file when it would pass this many MiB.
    #[arg(long, global = true, default_value_t = 64, value_name = "MIB")]
    log_max_size: u64,
    /// Rotated log files kept.
    #[arg(long, global = true, default_value_t = 5, value_name = "N")]
    log_keep: usize,
    /// Log lines as text or as JSON objects (one per line), on stderr and in the log file.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sync a node's FTTokenTable into TokenInfo (PostgreSQL, or an SQLite file by default).
    Sync(SyncArgs),
    /// Scan every node under a root (TokensTable) into TokenRecords in one central database.
    Scan(ScanArgs),
    /// Audit reports over the central database: duplicates, nodes, failures, summary.
    Report(ReportArgs),
    /// The database itself: create or upgrade the schema, or show what it holds.
    Db(DbArgs),
    /// Run `sync` or `scan` again and again, every interval (a long-running service).
    Watch(WatchArgs),
    /// Print the content of IPFS files, byte for byte as `ipfs cat` does.
    Cat(CatArgs),
    /// Compare rubix-sync with `ipfs cat` and the daemon's HTTP RPC on the node's own tokens.
    Bench(BenchArgs),
    /// Write a synthetic Rubix node (kubo-format .ipfs + rubix.db) for benchmarks and tests.
    GenerateCorpus(GenerateArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct SyncArgs {
    /// The node directory, holding Rubix/rubix.db and (here or in a parent) .ipfs.
    #[arg(default_value = ".", value_name = "NODE_DIR")]
    node_dir: PathBuf,
    /// The node database [default: NODE_DIR/Rubix/rubix.db].
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// The kubo repository [default: .ipfs found by walking up from the database].
    #[arg(long, value_name = "PATH")]
    ipfs_repo: Option<PathBuf>,
    /// postgres://user@host/db (password from PGPASSWORD or ~/.pgpass preferably), key=value
    /// libpq settings, or sqlite:PATH. Default: DATABASE_URL, PG* variables, the config file,
    /// else an SQLite file in the data directory.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    #[command(flatten)]
    peer: PeerArgs,
    /// Re-read and re-verify every token, not only those missing from TokenInfo.
    #[arg(long)]
    full: bool,
    /// Drop TokenInfo's secondary indexes during the load and rebuild them after.
    #[arg(long, value_enum, default_value_t = BulkLoad::Auto)]
    bulk_load: BulkLoad,
    /// Rows per database transaction.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    batch_size: usize,
    /// Database connections writing in parallel (PostgreSQL).
    #[arg(long, default_value_t = 2, value_name = "N")]
    writers: usize,
    /// Threads reading blocks [default: one per core].
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,
    /// Directory for the run's private work database [default: the system temp dir].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// How long to wait for the node's write lock when taking the snapshot, in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    busy_timeout: u64,
    /// Serve Prometheus metrics on this address during the run, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// No progress bar and no summary on stderr (errors are still printed).
    #[arg(long, short)]
    quiet: bool,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, clap::Args)]
struct ScanArgs {
    /// Where to look for nodes: every Rubix/rubix.db below it, at any depth.
    #[arg(default_value = ".", value_name = "ROOT")]
    root: PathBuf,
    /// The central PostgreSQL database (postgres://user@host/db, key=value libpq settings).
    /// Default: DATABASE_URL, PG* variables, the config file.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// This machine's name in the central database [default: the host name].
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
    /// Only TokensTable rows with these token_status values, e.g. --status 0,1 [default: all].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    status: Vec<i64>,
    /// Skip directories whose path below ROOT, or whose name, matches (repeatable), e.g.
    /// --exclude 'backup*' --exclude 'old/*'.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Scan every node, even one whose database has not changed since the last scan.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    peer: PeerArgs,
    /// Nodes scanned at the same time.
    #[arg(long, default_value_t = 2, value_name = "N")]
    node_workers: usize,
    /// Rows per database transaction.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    batch_size: usize,
    /// Directory for the run's private work databases [default: the system temp dir].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// How long to wait for a node's write lock when taking its snapshot, in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    busy_timeout: u64,
    /// Serve Prometheus metrics on this address during the run, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// No progress and no summary table on stderr (errors are still printed).
    #[arg(long, short)]
    quiet: bool,
    /// Print the scan summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ReportArgs {
    #[arg(value_enum)]
    kind: report::ReportKind,
    /// The central PostgreSQL database [default: as for scan].
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    #[arg(long, value_enum, default_value_t = report::Format::Table)]
    format: report::Format,
}

#[derive(Debug, clap::Args)]
struct WatchArgs {
    /// Time between the end of one run and the start of the next: 30s, 15m, 1h, …
    #[arg(long, default_value = "15m", value_name = "DURATION", value_parser = crate::watch::parse_duration)]
    interval: std::time::Duration,
    /// Add a random part of this to each pause, so many machines spread their runs.
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = crate::watch::parse_duration)]
    jitter: std::time::Duration,
    /// Stop after N runs (0: run until SIGTERM/SIGINT).
    #[arg(long, default_value_t = 0, value_name = "N")]
    runs: u64,
    /// Serve Prometheus metrics on this address for as long as `watch` runs.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    job: WatchJob,
}

#[derive(Debug, Subcommand)]
enum WatchJob {
    /// `rubix-sync sync` with these arguments, every interval.
    Sync(SyncArgs),
    /// `rubix-sync scan` with these arguments, every interval.
    Scan(ScanArgs),
}

#[derive(Debug, clap::Args)]
struct DbArgs {
    #[command(subcommand)]
    action: DbAction,
}

#[derive(Debug, Subcommand)]
enum DbAction {
    /// Create or upgrade the schema (idempotent; every run does this too).
    Migrate {
        /// As for sync: postgres://…, key=value libpq settings or sqlite:PATH
        /// [default: DATABASE_URL, PG* variables, the config file, the default SQLite file].
        #[arg(long, value_name = "URL")]
        database: Option<String>,
    },
    /// Schema version, row counts, the last runs and failures by reason.
    Status {
        /// As for `db migrate`.
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        /// How many of the latest runs to list.
        #[arg(long, default_value_t = 5, value_name = "N")]
        runs: usize,
        #[arg(long, value_enum, default_value_t = report::Format::Table)]
        format: report::Format,
    },
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// The node directory, holding Rubix/rubix.db and (here or in a parent) .ipfs.
    #[arg(default_value = ".", value_name = "NODE_DIR")]
    node_dir: PathBuf,
    /// The node database [default: NODE_DIR/Rubix/rubix.db].
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// The kubo repository [default: .ipfs found by walking up from the database].
    #[arg(long, value_name = "PATH")]
    ipfs_repo: Option<PathBuf>,
    /// How many FTTokenTable tokens to sample (all of them if the node has fewer).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    sample: usize,
    /// Seed of the sample, to repeat a run on the same tokens.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The `ipfs` executable for the `ipfs cat` method [default: `ipfs` on PATH].
    #[arg(long, value_name = "PATH")]
    ipfs_bin: Option<PathBuf>,
    /// The daemon's RPC API (http://HOST:PORT or /ip4/HOST/tcp/PORT) [default: the repo's
    /// `api` file, which a running daemon writes].
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// Concurrent workers per method: threads, `ipfs` processes, HTTP connections
    /// [default: one per core].
    #[arg(long, default_value_t = 0, value_name = "N")]
    workers: usize,
    /// Per-token time limit for `ipfs cat` and the HTTP RPC, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    timeout: u64,
    /// Add a full `sync` of the node into a scratch database (a temporary SQLite file, or a
    /// database created on --scratch-database's server and dropped after).
    #[arg(long)]
    end_to_end: bool,
    /// PostgreSQL server for --end-to-end (postgres://user@host/anydb; the role needs
    /// CREATEDB). A fresh database is created there and dropped after.
    #[arg(long, value_name = "URL", requires = "end_to_end")]
    scratch_database: Option<String>,
    /// Directory for temporary files [default: the system temp dir].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Print the report as JSON on stdout (shape: README, "bench --json").
    #[arg(long)]
    json: bool,
}

/// The peer fallback's settings, shared by `cat`, `sync` and `scan`.
#[derive(Debug, Clone, clap::Args)]
struct PeerArgs {
    /// Read blocks only from the node's own repository; never dial anything.
    #[arg(long)]
    offline: bool,
    /// Ask this peer first for blocks missing on disk (repeatable), e.g.
    /// /ip4/127.0.0.1/tcp/4001/p2p/QmPeerId. Then the node's own daemon (its config's swarm
    /// address, on loopback), then the config's Bootstrap list.
    #[arg(long = "peer", value_name = "MULTIADDR")]
    peers: Vec<String>,
    /// The private network's key [default: the repo's swarm.key].
    #[arg(long, value_name = "PATH")]
    swarm_key: Option<PathBuf>,
    /// Without a swarm key, fetch from the public network (refused when LIBP2P_FORCE_PNET=1).
    #[arg(long)]
    no_pnet: bool,
    /// How long a missing block may take to arrive from the peers, in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    block_timeout: u64,
    /// How long to wait for each peer's connection and handshake, in seconds.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    dial_timeout: u64,
    /// Stop asking peers after this many seconds of fetching in all (0: no limit).
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    fetch_deadline: u64,
    /// Where fetched blocks are cached (never in the node's repo), or `none`
    /// [default: ~/.cache/rubix-sync/blocks].
    #[arg(long, value_name = "DIR|none")]
    cache: Option<String>,
    /// Dial only the peers named or configured; never ask the swarm's DHT who has a block.
    #[arg(long)]
    no_dht: bool,
}

impl PeerArgs {
    fn options(&self) -> PeerOptions {
        PeerOptions {
            offline: self.offline,
            peers: self.peers.clone(),
            swarm_key: self.swarm_key.clone(),
            no_pnet: self.no_pnet,
            dial_timeout: std::time::Duration::from_secs(self.dial_timeout.max(1)),
            block_timeout: std::time::Duration::from_secs(self.block_timeout.max(1)),
            deadline: (self.fetch_deadline > 0)
                .then(|| std::time::Duration::from_secs(self.fetch_deadline)),
            cache: match self.cache.as_deref() {
                Some("none") => None,
                Some(dir) => Some(PathBuf::from(dir)),
                None => crate::ipfs::peer::default_cache_dir(),
            },
            dht: !self.no_dht,
        }
    }
}

#[derive(Debug, clap::Args)]
struct CatArgs {
    /// The kubo repository [default: $IPFS_PATH, else ./.ipfs, else ~/.ipfs].
    #[arg(long, value_name = "PATH")]
    ipfs_repo: Option<PathBuf>,
    #[command(flatten)]
    peer: PeerArgs,
    /// CIDs to print, in order (v0 `Qm…` or v1 in any multibase).
    #[arg(required = true, value_name = "CID")]
    cids: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// Node directory to write (`.ipfs` and `Rubix/rubix.db` inside it).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// FTTokenTable rows, each with its block.
    #[arg(long, default_value_t = 1000)]
    tokens: u64,
    /// TokensTable rows, each with its block.
    #[arg(long, default_value_t = 0)]
    rbt_tokens: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Leave every Nth FT token's block off disk (0 = none).
    #[arg(long, default_value_t = 0)]
    missing_every: u64,
}

/// Parses arguments, runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    let code = match cli.command {
        Command::Sync(args) => match serve_metrics(args.metrics_addr) {
            Ok(()) => observed("sync", || run_sync(args)),
            Err(code) => code,
        },
        Command::Scan(args) => match serve_metrics(args.metrics_addr) {
            Ok(()) => observed("scan", || run_scan(args)),
            Err(code) => code,
        },
        Command::Watch(args) => run_watch(args),
        Command::Report(args) => run_report(args),
        Command::Db(args) => run_db(args),
        Command::Cat(args) => run_cat(args),
        Command::Bench(args) => run_bench(args),
        Command::GenerateCorpus(args) => run_generate(args),
    };
    ExitCode::from(code)
}

fn init_tracing(log: &LogArgs) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, EnvFilter, Layer};
    // The libp2p stack logs every failed dial at error level; the peer module reports those
    // itself, once, with what to do. RUST_LOG brings them back.
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("warn,connexa=off,rust_ipfs=off,libp2p_swarm=off"))
    };
    let json = log.log_format == LogFormat::Json;
    let stderr = if json {
        fmt::layer()
            .json()
            .with_writer(io::stderr)
            .with_filter(filter())
            .boxed()
    } else {
        fmt::layer()
            .with_writer(io::stderr)
            .with_filter(filter())
            .boxed()
    };
    let file = log.log_file.as_deref().and_then(|p| {
        match crate::logfile::RotatingFile::open(p, log.log_max_size.max(1) << 20, log.log_keep) {
            Ok(f) => {
                let writer = std::sync::Mutex::new(f);
                Some(if json {
                    fmt::layer()
                        .json()
                        .with_writer(writer)
                        .with_filter(filter())
                        .boxed()
                } else {
                    fmt::layer()
                        .with_ansi(false)
                        .with_writer(writer)
                        .with_filter(filter())
                        .boxed()
                })
            }
            Err(e) => {
                eprintln!(
                    "rubix-sync: warning: cannot open log file {}: {e}",
                    p.display()
                );
                None
            }
        }
    });
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
}

/// Starts the metrics endpoint, if asked for.
fn serve_metrics(addr: Option<std::net::SocketAddr>) -> Result<(), u8> {
    let Some(addr) = addr else { return Ok(()) };
    match crate::metrics::serve(addr) {
        Ok(bound) => {
            tracing::info!(%bound, "serving metrics on http://{bound}/metrics");
            Ok(())
        }
        Err(e) => {
            eprintln!("rubix-sync: error: --metrics-addr {addr}: {e}");
            Err(exit::FAILED)
        }
    }
}

/// Runs a `sync` or `scan` and records its outcome in the metrics.
fn observed(command: &str, run: impl FnOnce() -> u8) -> u8 {
    let started = std::time::Instant::now();
    let code = run();
    let status = match code {
        exit::OK => "ok",
        exit::SOME_TOKENS_FAILED => "with_failures",
        exit::INTERRUPTED => "interrupted",
        exit::BUSY => "skipped_busy",
        _ => "failed",
    };
    crate::metrics::run_finished(command, status, started.elapsed());
    code
}

fn run_watch(args: WatchArgs) -> u8 {
    let addr = args.metrics_addr.or(match &args.job {
        WatchJob::Sync(a) => a.metrics_addr,
        WatchJob::Scan(a) => a.metrics_addr,
    });
    if let Err(code) = serve_metrics(addr) {
        return code;
    }
    let opts = crate::watch::WatchOptions {
        interval: args.interval,
        jitter: args.jitter,
        runs: args.runs,
    };
    let stop = pipeline::stop_flag();
    crate::watch::watch(&opts, &stop, exit::INTERRUPTED, |n| match &args.job {
        WatchJob::Sync(a) => {
            tracing::info!(run = n, node = %a.node_dir.display(), "watch: sync");
            observed("sync", || run_sync(a.clone()))
        }
        WatchJob::Scan(a) => {
            tracing::info!(run = n, root = %a.root.display(), "watch: scan");
            observed("scan", || run_scan(a.clone()))
        }
    })
}

/// Takes the job's lock (one run of a job at a time, across processes), or says why not.
fn job_lock(command: &str, target: &Path) -> Result<crate::watch::JobLock, u8> {
    crate::watch::lock(command, target).map_err(|e| {
        eprintln!("rubix-sync: {e}");
        match e {
            crate::watch::LockError::Busy { .. } => exit::BUSY,
            crate::watch::LockError::Io { .. } => exit::FAILED,
        }
    })
}

/// The repository `cat` reads when `--ipfs-repo` is not given, in kubo's own order of
/// preference plus `./.ipfs` (where a Rubix node keeps it).
pub fn default_repo_path(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(p) = explicit {
        return p;
    }
    if let Some(p) = std::env::var_os("IPFS_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let local = Path::new(".ipfs");
    if local.is_dir() {
        return local.to_path_buf();
    }
    directories::BaseDirs::new()
        .map(|d| d.home_dir().join(".ipfs"))
        .unwrap_or_else(|| local.to_path_buf())
}

pub fn exit_code_for(err: &IpfsError) -> u8 {
    match err.class() {
        ErrorClass::Repo => exit::REPO,
        ErrorClass::InvalidCid => exit::INVALID_CID,
        ErrorClass::BlockMissing => exit::BLOCK_MISSING,
        ErrorClass::BlockCorrupt => exit::BLOCK_CORRUPT,
        ErrorClass::NotAFile => exit::NOT_A_FILE,
        ErrorClass::Malformed => exit::MALFORMED,
        ErrorClass::PeerUnreachable | ErrorClass::HandshakeFailed | ErrorClass::PeerTimeout => {
            exit::PEER
        }
        ErrorClass::Io | ErrorClass::Output => exit::IO,
    }
}

fn report(err: &IpfsError) -> u8 {
    eprintln!("rubix-sync: error: {err}");
    exit_code_for(err)
}

fn run_cat(args: CatArgs) -> u8 {
    let repo = match Repo::open(default_repo_path(args.ipfs_repo)) {
        Ok(r) => r,
        Err(e) => return report(&e),
    };
    // Parse every CID before printing anything, so a typo in the last argument does not leave
    // half the output behind (kubo does the same).
    let mut cids = Vec::with_capacity(args.cids.len());
    for text in &args.cids {
        match ipfs::parse_cid(text) {
            Ok(c) => cids.push(c),
            Err(e) => return report(&e),
        }
    }
    // Blocks missing on disk: the roots are asked of the swarm in one want-list up front.
    let fallback = Fallback::new(&repo, &args.peer.options());
    if let Some(f) = &fallback {
        let mut buf = Vec::new();
        let missing: Vec<_> = cids
            .iter()
            .filter(|c| {
                matches!(
                    repo.read_block(c, &mut buf),
                    Err(IpfsError::BlockMissing { .. })
                )
            })
            .copied()
            .collect();
        if !missing.is_empty() {
            f.prefetch(&missing);
        }
    }
    let source = WithFallback {
        local: &repo,
        fallback: fallback.as_ref(),
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    for cid in &cids {
        if let Err(e) = ipfs::resolve::cat(&source, cid, &mut out, CatLimits::default()) {
            let _ = out.flush();
            return match e {
                IpfsError::Output(ref io) if io.kind() == io::ErrorKind::BrokenPipe => exit::OK,
                e => report(&e),
            };
        }
    }
    match out.flush() {
        Ok(()) => exit::OK,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => report(&IpfsError::Output(e)),
    }
}

/// Opens the sink a run writes to, saying which one and why when it is the default.
fn open_sink(flag: Option<&str>, quiet: bool) -> Result<Box<dyn Sink>, crate::sink::SinkError> {
    let env = |k: &str| std::env::var(k).ok();
    let file_db = match dbconfig::config_file_path() {
        Some(p) => dbconfig::read_config_file(&p)?,
        None => None,
    };
    let (target, origin) =
        dbconfig::resolve(flag, &env, file_db, &dbconfig::default_sqlite_path())?;
    tracing::info!(database = %target.describe(), ?origin, "database");
    if origin == Origin::Default && !quiet {
        eprintln!(
            "rubix-sync: no PostgreSQL configured (--database, DATABASE_URL, PG*, config file); writing to {}",
            target.describe()
        );
    }
    Ok(match target {
        Target::Postgres(pg) => Box::new(PgSink::connect(*pg)?),
        Target::Sqlite(path) => Box::new(SqliteSink::open(&path)?),
    })
}

/// The central database for `scan` and `report`: PostgreSQL, chosen as for `sync`.
fn open_central(flag: Option<&str>) -> Result<PgSink, crate::sink::SinkError> {
    let env = |k: &str| std::env::var(k).ok();
    let file_db = match dbconfig::config_file_path() {
        Some(p) => dbconfig::read_config_file(&p)?,
        None => None,
    };
    let (target, origin) =
        dbconfig::resolve(flag, &env, file_db, &dbconfig::default_sqlite_path())?;
    match target {
        Target::Postgres(pg) => {
            tracing::info!(database = %pg.describe(), ?origin, "central database");
            PgSink::connect(*pg)
        }
        Target::Sqlite(p) => Err(crate::sink::SinkError::Config(format!(
            "scan and report need the central PostgreSQL database (got sqlite:{}{}); pass \
             --database postgres://user@host/rubix_tokens or set DATABASE_URL / PG* / the \
             config file",
            p.display(),
            if origin == Origin::Default {
                ", the default when nothing is configured"
            } else {
                ""
            }
        ))),
    }
}

fn run_scan(args: ScanArgs) -> u8 {
    let mut patterns = Vec::new();
    for g in &args.exclude {
        match glob::Pattern::new(g) {
            Ok(p) => patterns.push(p),
            Err(e) => {
                eprintln!("rubix-sync: error: --exclude {g:?}: {e}");
                return exit::USAGE;
            }
        }
    }
    if !args.root.is_dir() {
        eprintln!(
            "rubix-sync: error: {}: not a directory (ROOT is where the nodes are)",
            args.root.display()
        );
        return exit::FAILED;
    }
    let _lock = match job_lock("scan", &args.root) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let sink = match open_central(args.database.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rubix-sync: error: {}", dbconfig::redact(&e.to_string()));
            return exit::FAILED;
        }
    };
    let discovery = crate::node::discover(&args.root, &patterns);
    if !args.quiet {
        eprintln!(
            "rubix-sync: {} node(s) under {}",
            discovery.nodes.len(),
            args.root.display()
        );
    }
    let source = args
        .source
        .clone()
        .or_else(crate::host::hostname)
        .unwrap_or_else(|| "unknown-host".into());
    let opts = ScanOptions {
        statuses: args.status.clone(),
        force: args.force,
        node_workers: args.node_workers.max(1),
        batch_size: args.batch_size,
        work_dir: args.work_dir.clone(),
        busy_timeout: std::time::Duration::from_secs(args.busy_timeout),
        progress: !args.quiet && !args.json && io::IsTerminal::is_terminal(&io::stderr()),
        source,
        source_ip: crate::host::primary_address().map(|a| a.to_string()),
        peer: args.peer.options(),
    };
    let stop = pipeline::stop_flag();
    match scan::scan(&args.root, discovery, Box::new(sink), &opts, &stop) {
        Ok(summary) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).unwrap_or_default()
                );
            }
            if !args.quiet {
                eprint!("{}", render_scan_summary(&summary));
            }
            if summary.interrupted {
                exit::INTERRUPTED
            } else if summary.all_ok() {
                exit::OK
            } else {
                exit::SOME_TOKENS_FAILED
            }
        }
        Err(e) => {
            eprintln!("rubix-sync: error: {}", dbconfig::redact(&e.to_string()));
            exit::FAILED
        }
    }
}

/// The per-node table and totals printed at the end of a scan.
fn render_scan_summary(s: &ScanSummary) -> String {
    use comfy_table::{presets, CellAlignment, Table};
    let mut t = Table::new();
    t.load_style(presets::ASCII_MARKDOWN);
    t.set_header(vec![
        "node",
        "status",
        "rows",
        "new",
        "changed",
        "removed",
        "unchanged",
        "fetched",
        "failed",
        "seconds",
    ]);
    for n in &s.nodes {
        t.add_row(vec![
            n.name.clone(),
            serde_json::to_value(n.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            n.records.to_string(),
            n.delta.new.to_string(),
            n.delta.changed.to_string(),
            n.delta.removed.to_string(),
            n.delta.unchanged.to_string(),
            n.fetched.to_string(),
            n.failed.to_string(),
            format!("{:.2}", n.elapsed_s),
        ]);
    }
    for i in 2..10 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = format!(
        "{t}
"
    );
    for n in &s.nodes {
        if let Some(e) = &n.error {
            out.push_str(&format!("  {}: failed: {}\n", n.name, e));
        } else if n.status == NodeStatus::NoTokensTable {
            out.push_str(&format!(
                "  {}: skipped: no TokensTable in {}\n",
                n.name, n.db_path
            ));
        }
        if !n.missing_columns.is_empty() && n.records > 0 {
            out.push_str(&format!(
                "  {}: TokensTable lacks {} (stored as NULL)\n",
                n.name,
                n.missing_columns.join(", ")
            ));
        }
        for (class, k) in &n.failures_by_class {
            out.push_str(&format!("  {}: {k} token(s) {class}\n", n.name));
        }
    }
    for p in &s.problems {
        out.push_str(&format!("  warning: {}: {}\n", p.path.display(), p.problem));
    }
    out.push_str(&format!(
        "{}: {} node(s) from {} → {}, {} rows resolved in {:.1}s ({:.0} rows/s)\n",
        if s.interrupted {
            "scan interrupted (committed batches are kept; run again to finish)"
        } else {
            "scan complete"
        },
        s.nodes.len(),
        s.source,
        s.database,
        s.rows_resolved,
        s.elapsed_s,
        s.rows_per_s
    ));
    if !s.all_ok() {
        out.push_str("  details: rubix-sync report failures; SELECT * FROM ProcessedDatabases WHERE status <> 'ok';\n");
    }
    out
}

fn run_db(args: DbArgs) -> u8 {
    let fail = |e: crate::sink::SinkError| {
        eprintln!("rubix-sync: error: {}", dbconfig::redact(&e.to_string()));
        exit::FAILED
    };
    match args.action {
        DbAction::Migrate { database } => {
            let mut sink = match open_sink(database.as_deref(), false) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            if let Err(e) = sink.migrate() {
                return fail(e);
            }
            match crate::sink::status::gather(sink.as_mut(), 1) {
                Ok(s) => {
                    println!(
                        "{}: schema at version {}",
                        s.database,
                        s.schema_version.unwrap_or_default()
                    );
                    exit::OK
                }
                Err(e) => fail(e),
            }
        }
        DbAction::Status {
            database,
            runs,
            format,
        } => {
            let mut sink = match open_sink(database.as_deref(), true) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            match crate::sink::status::gather(sink.as_mut(), runs) {
                Ok(s) => {
                    print!("{}", crate::sink::status::render(&s, format));
                    exit::OK
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn run_report(args: ReportArgs) -> u8 {
    let mut sink = match open_central(args.database.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rubix-sync: error: {}", dbconfig::redact(&e.to_string()));
            return exit::FAILED;
        }
    };
    let describe = Sink::describe(&sink);
    if let Err(e) = Sink::migrate(&mut sink) {
        eprintln!("rubix-sync: error: {}", dbconfig::redact(&e.to_string()));
        return exit::FAILED;
    }
    match report::run(sink.client(), args.kind, &describe) {
        Ok(r) => {
            print!("{}", report::render(&r, args.format));
            exit::OK
        }
        Err(e) => {
            eprintln!("rubix-sync: error: {}", dbconfig::redact(&e.to_string()));
            exit::FAILED
        }
    }
}

fn run_sync(args: SyncArgs) -> u8 {
    let _lock = match job_lock("sync", &args.node_dir) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let node = match Node::locate(
        &args.node_dir,
        args.db.clone(),
        args.ipfs_repo.clone(),
        None,
    ) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("rubix-sync: error: {e}");
            return exit::FAILED;
        }
    };
    let mut sink = match open_sink(args.database.as_deref(), args.quiet) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rubix-sync: error: {}", dbconfig::redact(&e.to_string()));
            return exit::FAILED;
        }
    };
    let stop = pipeline::stop_flag();
    let opts = SyncOptions {
        full: args.full,
        bulk_load: args.bulk_load,
        batch_size: args.batch_size,
        resolvers: args.threads,
        writers: args.writers,
        work_dir: args.work_dir.clone(),
        busy_timeout: std::time::Duration::from_secs(args.busy_timeout),
        progress: !args.quiet && !args.json && io::IsTerminal::is_terminal(&io::stderr()),
        peer: args.peer.options(),
    };
    match pipeline::sync(&node, sink.as_mut(), &opts, &stop) {
        Ok(summary) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).unwrap_or_default()
                );
            }
            if !args.quiet {
                print_summary(&summary);
            }
            match summary.status {
                RunStatus::Completed => exit::OK,
                RunStatus::CompletedWithFailures => exit::SOME_TOKENS_FAILED,
                RunStatus::Interrupted => exit::INTERRUPTED,
            }
        }
        Err(e) => {
            eprintln!("rubix-sync: error: {}", dbconfig::redact(&e.to_string()));
            exit::FAILED
        }
    }
}

fn run_bench(args: BenchArgs) -> u8 {
    let node = match Node::locate(&args.node_dir, args.db, args.ipfs_repo, None) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("rubix-sync: error: {e}");
            return exit::FAILED;
        }
    };
    let end_to_end = match (args.end_to_end, args.scratch_database.as_deref()) {
        (false, _) => None,
        (true, None) => Some(bench::Scratch::Sqlite),
        (true, Some(url)) => {
            let env = |k: &str| std::env::var(k).ok();
            match dbconfig::pg_target(url, &env) {
                Ok(t) => Some(bench::Scratch::Postgres(Box::new(t))),
                Err(e) => {
                    eprintln!("rubix-sync: error: {}", dbconfig::redact(&e.to_string()));
                    return exit::FAILED;
                }
            }
        }
    };
    let workers = match args.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let opts = bench::BenchOptions {
        sample: args.sample,
        seed: args.seed,
        workers,
        ipfs_bin: args.ipfs_bin,
        api: args.api,
        timeout: std::time::Duration::from_secs(args.timeout.max(1)),
        end_to_end,
        work_dir: args.work_dir,
    };
    let stop = pipeline::stop_flag();
    match bench::run(&node, &opts, &stop) {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", bench::render_table(&report));
            }
            if !report.ok {
                eprintln!(
                    "rubix-sync: error: {} CID(s) returned different bytes; see MISMATCH lines",
                    report.mismatches.len()
                );
                exit::BENCH_MISMATCH
            } else if stop.load(std::sync::atomic::Ordering::Relaxed) {
                exit::INTERRUPTED
            } else {
                exit::OK
            }
        }
        Err(e) => {
            eprintln!("rubix-sync: error: {}", dbconfig::redact(&e.to_string()));
            exit::FAILED
        }
    }
}

fn print_summary(s: &SyncSummary) {
    let mut out = format!(
        "{status}: {node} → {db}\n  tokens in node: {total}  already synced: {skipped}  processed: {processed}\n  \
         written: {written}  unchanged: {unchanged}  failed: {failed}\n  {elapsed:.1}s, {rate:.0} tokens/s{bulk}",
        status = match s.status {
            RunStatus::Completed => "sync complete",
            RunStatus::CompletedWithFailures => "sync complete with failures",
            RunStatus::Interrupted => "sync interrupted (committed batches are kept; run again to finish)",
        },
        node = s.node,
        db = s.database,
        total = s.tokens_total,
        skipped = s.skipped,
        processed = s.processed,
        written = s.written,
        unchanged = s.unchanged,
        failed = s.failed,
        elapsed = s.elapsed_s,
        rate = s.tokens_per_s,
        bulk = if s.bulk_load { " (bulk load)" } else { "" },
    );
    for (class, n) in &s.failures_by_class {
        out.push_str(&format!("\n  failed {class}: {n}"));
    }
    if s.failed > 0 {
        out.push_str("\n  details: SELECT * FROM sync_failures ORDER BY last_seen DESC;");
    }
    eprintln!("{out}");
}

fn run_generate(args: GenerateArgs) -> u8 {
    let spec = CorpusSpec {
        tokens: args.tokens,
        rbt_tokens: args.rbt_tokens,
        seed: args.seed,
        missing_every: args.missing_every,
        ..CorpusSpec::default()
    };
    let start = std::time::Instant::now();
    match corpus::generate(&args.out, &spec) {
        Ok(summary) => {
            eprintln!(
                "generated {} FT + {} RBT tokens ({} blocks) in {} in {:.1}s",
                summary.tokens,
                summary.rbt_tokens,
                summary.blocks_written,
                summary.node_dir.display(),
                start.elapsed().as_secs_f64()
            );
            exit::OK
        }
        Err(e) => {
            eprintln!(
                "rubix-sync: error: generating corpus in {}: {e}",
                args.out.display()
            );
            exit::FAILED
        }
    }
}
