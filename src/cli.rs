//! Command-line interface: argument parsing, logging set-up and exit codes. No logic of its own.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::corpus::{self, CorpusSpec};
use crate::ipfs::{self, CatLimits, ErrorClass, IpfsError, Repo};

/// Exit codes. 0 means everything requested succeeded; the rest say what kind of failure.
pub mod exit {
    pub const OK: u8 = 0;
    /// The run itself failed (bad configuration, database unreachable, I/O error).
    pub const FAILED: u8 = 1;
    /// Command-line usage error (clap's own code).
    pub const USAGE: u8 = 2;
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
}

/// Moves Rubix token metadata out of node repositories into PostgreSQL, reading IPFS blocks
/// in-process from the node's `.ipfs` (read-only, never touching `repo.lock`).
#[derive(Debug, Parser)]
#[command(name = "rubix-sync", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the content of IPFS files, byte for byte as `ipfs cat` does.
    Cat(CatArgs),
    /// Write a synthetic Rubix node (kubo-format .ipfs + rubix.db) for benchmarks and tests.
    GenerateCorpus(GenerateArgs),
}

#[derive(Debug, clap::Args)]
struct CatArgs {
    /// The kubo repository [default: $IPFS_PATH, else ./.ipfs, else ~/.ipfs].
    #[arg(long, value_name = "PATH")]
    ipfs_repo: Option<PathBuf>,
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
    init_tracing();
    let code = match cli.command {
        Command::Cat(args) => run_cat(args),
        Command::GenerateCorpus(args) => run_generate(args),
    };
    ExitCode::from(code)
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
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
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    for cid in &cids {
        if let Err(e) = ipfs::resolve::cat(&repo, cid, &mut out, CatLimits::default()) {
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
