//! `sync`: a node's FTTokenTable → TokenInfo, as a pipeline of bounded stages. (`scan`, the
//! many-node TokensTable → TokenRecords job, is in [`scan`].)
//!
//! ```text
//! snapshot reader ──ids──► resolvers (N threads: flatfs → verify → UnixFS → parse)
//!        ──outcomes──► router (token id → fixed writer) ──batches──► writers (own connections)
//! ```
//!
//! Every channel is bounded, so a slow database slows the readers instead of filling memory
//! (peak memory does not grow with the node's size). Each batch commits atomically; what is
//! committed is never lost, and the next run's snapshot minus TokenInfo is exactly what is left.
//! A token id always goes to the same writer, so two connections never merge the same key.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::ipfs::peer::{Fallback, PeerOptions, WithFallback};
use crate::ipfs::{self, resolve, BlockSource, CatLimits, IpfsError, Repo};
use crate::node::Node;
use crate::sink::{Batch, BatchWriter, FailureRow, RunRecord, Sink, SinkError, TokenRow};
use crate::source::{Snapshot, SourceError, TokenTable};
use crate::token;

pub mod scan;

/// When secondary indexes are dropped for the load and rebuilt after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BulkLoad {
    /// Only when TokenInfo is empty (a first load).
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Re-read and re-verify every token, not only those missing from TokenInfo.
    pub full: bool,
    pub bulk_load: BulkLoad,
    /// Rows per database transaction.
    pub batch_size: usize,
    /// Threads reading and parsing blocks (0 = one per core).
    pub resolvers: usize,
    /// Database connections writing in parallel.
    pub writers: usize,
    /// Where the per-run work database goes (default: the system temp dir).
    pub work_dir: Option<PathBuf>,
    pub busy_timeout: Duration,
    pub progress: bool,
    /// Where blocks missing from the node's repository come from (`offline`: nowhere).
    pub peer: PeerOptions,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            full: false,
            bulk_load: BulkLoad::Auto,
            batch_size: 10_000,
            resolvers: 0,
            writers: 2,
            work_dir: None,
            busy_timeout: Duration::from_secs(10),
            progress: false,
            peer: PeerOptions::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("node {node}: no kubo repository found (looked for .ipfs beside Rubix/ and in its parents); pass --ipfs-repo")]
    NoRepo { node: String },
    #[error(transparent)]
    Repo(#[from] IpfsError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every token landed in TokenInfo.
    Completed,
    /// The run finished; some tokens are in sync_failures.
    CompletedWithFailures,
    /// Stopped by a signal after committing the batches in flight.
    Interrupted,
}

/// What a run did, for the final summary (`--json` prints exactly this).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncSummary {
    pub node: String,
    pub database: String,
    pub run_id: i64,
    pub status: RunStatus,
    /// Distinct token ids in the node's FTTokenTable.
    pub tokens_total: u64,
    /// Already in TokenInfo, not fetched (content behind a CID never changes).
    pub skipped: u64,
    /// Tokens processed this run (synced + failed).
    pub processed: u64,
    /// TokenInfo rows inserted or changed.
    pub written: u64,
    /// Tokens re-read whose TokenInfo row already had the same values (with --full).
    pub unchanged: u64,
    pub failed: u64,
    pub failures_by_class: BTreeMap<String, u64>,
    pub bulk_load: bool,
    pub elapsed_s: f64,
    pub tokens_per_s: f64,
}

/// One token's fate.
enum Outcome {
    Token(TokenRow),
    Failure(FailureRow),
}

/// Reads and verifies one token's content into `buf` (at most [`token::MAX_TOKEN_BYTES`]);
/// on failure, the reason class recorded in the database and a detail for the operator.
fn fetch<S: BlockSource + ?Sized>(
    source: &S,
    id: &str,
    buf: &mut Vec<u8>,
) -> Result<(), (&'static str, String)> {
    let cid = ipfs::parse_cid(id).map_err(|e| ("invalid_cid", e.to_string()))?;
    let limits = CatLimits {
        max_bytes: token::MAX_TOKEN_BYTES,
        ..CatLimits::default()
    };
    resolve::read_file(source, &cid, limits, buf).map_err(|e| {
        let class = match e {
            IpfsError::TooLarge { .. } => "too_large",
            ref other => other.class().as_str(),
        };
        (class, e.to_string())
    })
}

/// A token's content, or why it has none (reason class, detail).
pub(crate) type Content = Result<Vec<u8>, (&'static str, String)>;

/// Where a run's token contents come from: the node's own repository, then (unless
/// `--offline`) the peer fallback for blocks missing there.
#[derive(Clone, Copy)]
pub(crate) struct Contents<'a> {
    pub repo: &'a Repo,
    pub fallback: Option<&'a Fallback>,
}

impl Contents<'_> {
    /// The contents of `ids`, in order. Everything on disk is read first; then the root
    /// blocks still missing are asked of the swarm in one want-list, and only those tokens
    /// are read again (a multi-block file's missing children are fetched as the walk meets
    /// them).
    pub(crate) fn read<T: AsRef<str>>(&self, ids: &[T], buf: &mut Vec<u8>) -> Vec<Content> {
        let local = WithFallback {
            local: self.repo,
            fallback: None,
        };
        let mut out: Vec<Content> = ids
            .iter()
            .map(|id| fetch(&local, id.as_ref(), buf).map(|()| buf.clone()))
            .collect();
        let Some(fallback) = self.fallback else {
            return out;
        };
        let missing: Vec<usize> = (0..ids.len())
            .filter(|&i| matches!(&out[i], Err((class, _)) if *class == "block_missing"))
            .collect();
        if missing.is_empty() {
            return out;
        }
        let roots: Vec<ipfs::Cid> = missing
            .iter()
            .filter_map(|&i| ipfs::parse_cid(ids[i].as_ref()).ok())
            .filter(|c| {
                matches!(
                    self.repo.read_block(c, buf),
                    Err(IpfsError::BlockMissing { .. })
                )
            })
            .collect();
        fallback.prefetch(&roots);
        let source = WithFallback {
            local: self.repo,
            fallback: Some(fallback),
        };
        for i in missing {
            out[i] = fetch(&source, ids[i].as_ref(), buf).map(|()| buf.clone());
        }
        out
    }
}

/// Parses one token's content.
fn resolve_token(id: String, content: Content) -> Outcome {
    let fail = |class: &'static str, detail: String, id: String| {
        Outcome::Failure(FailureRow {
            token_id: id,
            class,
            detail,
        })
    };
    let bytes = match content {
        Ok(b) => b,
        Err((class, detail)) => return fail(class, detail, id),
    };
    match token::parse(&bytes) {
        Ok(t) => Outcome::Token(TokenRow {
            name: t.name.to_string(),
            number: t.number,
            creator_did: t.creator_did.to_string(),
            token_id: id,
        }),
        Err(e) => fail(e.class(), e.to_string(), id),
    }
}

/// Which writer owns a token id (stable within a run).
fn route(id: &str, writers: usize) -> usize {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    (h % writers as u64) as usize
}

#[derive(Default)]
struct Counters {
    processed: AtomicU64,
    written: AtomicU64,
    unchanged: AtomicU64,
    failed: AtomicU64,
}

/// IDs per message between reader and resolvers: large enough to amortise channel costs,
/// small enough that all resolvers stay busy.
const ID_CHUNK: usize = 512;

/// Runs `sync` for one node into `sink`. `stop` is set by the signal handler.
pub fn sync(
    node: &Node,
    sink: &mut dyn Sink,
    opts: &SyncOptions,
    stop: &AtomicBool,
) -> Result<SyncSummary, PipelineError> {
    let start = Instant::now();
    let label = node.label();
    let repo_path = node.ipfs.clone().ok_or_else(|| PipelineError::NoRepo {
        node: label.clone(),
    })?;
    let repo = Repo::open(&repo_path)?;

    sink.migrate()?;
    let run_id = sink.start_run(&label)?;
    let fallback = Fallback::new(&repo, &opts.peer);
    let source = Contents {
        repo: &repo,
        fallback: fallback.as_ref(),
    };
    let result = run(node, source, sink, opts, stop, &label, run_id, start);
    let record = match &result {
        Ok(s) => RunRecord {
            status: serde_json::to_value(s.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            tokens_total: s.tokens_total,
            skipped: s.skipped,
            written: s.written,
            unchanged: s.unchanged,
            failed: s.failed,
            rate: s.tokens_per_s,
            failures_by_class: s.failures_by_class.clone(),
        },
        Err(_) => RunRecord {
            status: "failed".into(),
            ..RunRecord::default()
        },
    };
    if let Err(e) = sink.finish_run(run_id, &record) {
        tracing::warn!(error = %e, "could not record the run's end");
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn run(
    node: &Node,
    source: Contents<'_>,
    sink: &mut dyn Sink,
    opts: &SyncOptions,
    stop: &AtomicBool,
    label: &str,
    run_id: i64,
    start: Instant,
) -> Result<SyncSummary, PipelineError> {
    let mut snapshot = Snapshot::take(
        &node.db,
        TokenTable::FtTokens,
        opts.work_dir.as_deref(),
        opts.busy_timeout,
    )?;
    let total = snapshot.total();
    tracing::info!(
        tokens = total,
        elapsed_s = start.elapsed().as_secs_f64(),
        "snapshot taken"
    );
    if !opts.full {
        let mut sink_err = None;
        snapshot.load_done(|add| -> Result<(), SourceError> {
            let mut add_err = None;
            let r = sink.for_each_token_id(&mut |id| match add(id) {
                Ok(()) => true,
                Err(e) => {
                    add_err = Some(e);
                    false
                }
            });
            if let Err(e) = r {
                sink_err = Some(e);
            }
            add_err.map_or(Ok(()), Err)
        })??;
        if let Some(e) = sink_err {
            return Err(e.into());
        }
    }
    let pending = snapshot.pending()?;
    let skipped = total - pending.min(total);
    crate::metrics::tokens_skipped(skipped);
    tracing::info!(
        pending,
        skipped,
        elapsed_s = start.elapsed().as_secs_f64(),
        "work list ready"
    );

    let bulk = pending > 0
        && match opts.bulk_load {
            BulkLoad::Auto => sink.token_table_empty()?,
            BulkLoad::Always => true,
            BulkLoad::Never => false,
        };
    if bulk {
        tracing::info!("bulk load: dropping TokenInfo's secondary indexes until the load is done");
        sink.drop_secondary_indexes()?;
    } else {
        // Repairs what an interrupted bulk load left behind; a no-op otherwise.
        sink.ensure_secondary_indexes()?;
    }

    // Without --full the work list is the snapshot minus TokenInfo: every row is new, so it
    // can be COPYed straight into TokenInfo (no staging table, no merge).
    let writers = sink.writers(opts.writers, bulk || !opts.full)?;
    let counters = Counters::default();
    let by_class: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    let bar = progress_bar(opts.progress, pending);
    let outcome = stream(
        source, snapshot, writers, opts, stop, label, &counters, &by_class, &bar,
    );
    bar.finish_and_clear();
    tracing::info!(elapsed_s = start.elapsed().as_secs_f64(), "tokens streamed");

    if bulk {
        tracing::info!("bulk load: building secondary indexes");
        sink.ensure_secondary_indexes()?;
        tracing::info!(
            elapsed_s = start.elapsed().as_secs_f64(),
            "secondary indexes built"
        );
    }
    outcome?;

    let failed = counters.failed.load(Ordering::Relaxed);
    let processed = counters.processed.load(Ordering::Relaxed);
    let interrupted = stop.load(Ordering::Relaxed) && processed < pending;
    let elapsed = start.elapsed().as_secs_f64();
    Ok(SyncSummary {
        node: label.to_string(),
        database: sink.describe(),
        run_id,
        status: if interrupted {
            RunStatus::Interrupted
        } else if failed > 0 {
            RunStatus::CompletedWithFailures
        } else {
            RunStatus::Completed
        },
        tokens_total: total,
        skipped,
        processed,
        written: counters.written.load(Ordering::Relaxed),
        unchanged: counters.unchanged.load(Ordering::Relaxed),
        failed,
        failures_by_class: by_class.into_inner().unwrap_or_default(),
        bulk_load: bulk,
        elapsed_s: elapsed,
        tokens_per_s: if elapsed > 0.0 {
            processed as f64 / elapsed
        } else {
            0.0
        },
    })
}

fn progress_bar(show: bool, len: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} tokens  {per_sec}  ETA {eta}  {msg}",
        )
        .expect("valid progress template"),
    );
    bar.set_message("failures: 0");
    bar
}

#[allow(clippy::too_many_arguments)]
fn stream(
    source: Contents<'_>,
    snapshot: Snapshot,
    writers: Vec<Box<dyn BatchWriter>>,
    opts: &SyncOptions,
    stop: &AtomicBool,
    label: &str,
    counters: &Counters,
    by_class: &Mutex<BTreeMap<String, u64>>,
    bar: &indicatif::ProgressBar,
) -> Result<(), PipelineError> {
    let resolvers = if opts.resolvers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        opts.resolvers
    };
    let n_writers = writers.len();
    let batch_size = opts.batch_size.max(1);
    // A writer error stops everything; the error itself is kept for the caller.
    let failed_write = AtomicBool::new(false);
    let write_error: Mutex<Option<SinkError>> = Mutex::new(None);
    let halt = || stop.load(Ordering::Relaxed) || failed_write.load(Ordering::Relaxed);

    std::thread::scope(|s| -> Result<(), PipelineError> {
        let (id_tx, id_rx) = bounded::<Vec<String>>(resolvers * 2);
        let (out_tx, out_rx) = bounded::<Vec<Outcome>>(resolvers * 2);

        let reader = s.spawn(move || {
            snapshot.for_each_pending(ID_CHUNK, |ids| !halt() && id_tx.send(ids).is_ok())
        });

        for _ in 0..resolvers {
            let (id_rx, out_tx): (Receiver<Vec<String>>, Sender<Vec<Outcome>>) =
                (id_rx.clone(), out_tx.clone());
            s.spawn(move || {
                let mut buf = Vec::with_capacity(256);
                for ids in id_rx {
                    let contents = source.read(&ids, &mut buf);
                    let outcomes: Vec<Outcome> = ids
                        .into_iter()
                        .zip(contents)
                        .map(|(id, c)| resolve_token(id, c))
                        .collect();
                    if out_tx.send(outcomes).is_err() {
                        break;
                    }
                }
            });
        }
        drop((id_rx, out_tx));

        let mut batch_txs = Vec::with_capacity(n_writers);
        for mut writer in writers {
            let (tx, rx) = bounded::<Batch>(1);
            batch_txs.push(tx);
            let (failed_write, write_error) = (&failed_write, &write_error);
            s.spawn(move || {
                for batch in rx {
                    if failed_write.load(Ordering::Relaxed) {
                        break;
                    }
                    let started = Instant::now();
                    match writer.write(label, &batch) {
                        Ok(w) => {
                            let classes: Vec<&str> =
                                batch.failures.iter().map(|f| f.class).collect();
                            crate::metrics::batch_committed(
                                started.elapsed(),
                                w.written,
                                w.unchanged,
                                &classes,
                            );
                            counters.processed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                            counters.written.fetch_add(w.written, Ordering::Relaxed);
                            counters.unchanged.fetch_add(w.unchanged, Ordering::Relaxed);
                            let failed = counters.failed.fetch_add(w.failures, Ordering::Relaxed) + w.failures;
                            if w.failures > 0 {
                                let mut m = by_class.lock().unwrap_or_else(|p| p.into_inner());
                                for f in &batch.failures {
                                    *m.entry(f.class.to_string()).or_default() += 1;
                                }
                                bar.set_message(format!("failures: {failed}"));
                            }
                            bar.inc(batch.len() as u64);
                        }
                        Err(e) => {
                            crate::metrics::db_error();
                            tracing::error!(error = %e, "writing a batch failed; stopping (committed batches are kept)");
                            *write_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            failed_write.store(true, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            });
        }

        // Router: this thread. Fills one batch per writer; a full batch goes out at once.
        let mut pending: Vec<Batch> = (0..n_writers).map(|_| Batch::default()).collect();
        'route: for outcomes in out_rx {
            for o in outcomes {
                let (id, slot) = match &o {
                    Outcome::Token(t) => (&t.token_id, 0),
                    Outcome::Failure(f) => (&f.token_id, 1),
                };
                let w = route(id, n_writers);
                let b = &mut pending[w];
                match (o, slot) {
                    (Outcome::Token(t), _) => b.tokens.push(t),
                    (Outcome::Failure(f), _) => b.failures.push(f),
                }
                if b.len() >= batch_size {
                    let full = std::mem::take(b);
                    if batch_txs[w].send(full).is_err() {
                        break 'route;
                    }
                }
            }
        }
        // Flush partial batches (also on interrupt: what was read and resolved is committed).
        if !failed_write.load(Ordering::Relaxed) {
            for (w, b) in pending.into_iter().enumerate() {
                if !b.is_empty() {
                    let _ = batch_txs[w].send(b);
                }
            }
        }
        drop(batch_txs);
        let read = reader.join().expect("snapshot reader panicked");
        // Writers finish when their channels close; scope joins them.
        read.map_err(PipelineError::from)
    })?;
    if let Some(e) = write_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e.into());
    }
    Ok(())
}

/// Wires Ctrl-C and SIGTERM to `stop`: the first signal finishes the batches in flight, a
/// second one exits at once (committed batches are safe either way).
/// The process's stop flag, set by Ctrl-C / SIGTERM; the handler is installed on first use
/// (once per process, so `watch` shares one flag across its runs).
pub fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let stop = Arc::new(AtomicBool::new(false));
        install_signal_handler(stop.clone());
        stop
    })
    .clone()
}

fn install_signal_handler(stop: Arc<AtomicBool>) {
    let result = ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            eprintln!("rubix-sync: second interrupt, exiting now (committed batches are kept)");
            std::process::exit(130);
        }
        eprintln!(
            "rubix-sync: interrupted; committing the batches in flight (Ctrl-C again to quit now)"
        );
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not install the interrupt handler");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_is_stable_and_spreads() {
        assert_eq!(route("QmA", 2), route("QmA", 2));
        let ones = (0..1000)
            .filter(|i| route(&format!("Qm{i}"), 2) == 1)
            .count();
        assert!((400..600).contains(&ones), "{ones}");
        assert_eq!(route("anything", 1), 0);
    }
}
