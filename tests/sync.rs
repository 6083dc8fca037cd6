//! `rubix-sync sync` against real PostgreSQL (each test creates its own database) and the
//! kubo-written fixtures: exact rows, every failure class, idempotence, resume after SIGKILL,
//! SQLite-sink parity, bounded memory, and the node tree left untouched.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rubix_sync::cli::exit;

impl TestDb {
    fn tokens(&self) -> BTreeMap<String, (String, i32, String)> {
        self.client()
            .query(
                "SELECT token_id, token_name, token_number, creator_did FROM TokenInfo",
                &[],
            )
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
            .collect()
    }

    fn failures(&self) -> BTreeMap<String, String> {
        self.client()
            .query("SELECT token_id, reason_class FROM sync_failures", &[])
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    fn count(&self) -> i64 {
        self.client()
            .query_one("SELECT count(*) FROM TokenInfo", &[])
            .unwrap()
            .get(0)
    }
}

fn sync(node: &Path, database: &str, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let out = run(bin()
        .arg("sync")
        .arg(node)
        .args(["--database", database, "--json", "--quiet"])
        .args(extra));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let summary = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), summary, stderr)
}

/// The TokenInfo rows the fixtures' kubo bytes imply.
fn expected_rows(name: &str) -> BTreeMap<String, (String, i32, String)> {
    expected(name)["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t.get("token_name").is_some() && t.get("failure").is_none())
        .map(|t| {
            (
                t["token_id"].as_str().unwrap().to_string(),
                (
                    t["token_name"].as_str().unwrap().to_string(),
                    t["token_number"].as_i64().unwrap() as i32,
                    t["creator_did"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

fn expected_failures() -> BTreeMap<String, String> {
    expected("bad-node")["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| {
            Some((
                t["token_id"].as_str()?.to_string(),
                t.get("failure")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn first_sync_writes_exactly_the_fixture_tokens() {
    let db = TestDb::new();
    let node = fixtures().join("node");
    let before = tree_checksum(&node);
    let (code, s, err) = sync(&node, &db.url, &[]);
    assert_eq!(code, exit::OK as i32, "{err}");
    assert_eq!(s["status"], "completed");
    assert_eq!(s["tokens_total"], 300);
    assert_eq!(s["written"], 300);
    assert_eq!(s["bulk_load"], true);
    assert_eq!(db.tokens(), expected_rows("node"));
    assert!(db.failures().is_empty());
    // Bulk load rebuilt the old system's four secondary indexes.
    let idx: i64 = db
        .client()
        .query_one("SELECT count(*) FROM pg_indexes WHERE tablename = 'tokeninfo' AND indexname LIKE 'idx_tokeninfo_%'", &[])
        .unwrap()
        .get(0);
    assert_eq!(idx, 4);
    let run = db
        .client()
        .query_one("SELECT status, written FROM sync_runs", &[])
        .unwrap();
    assert_eq!(
        (run.get::<_, String>(0), run.get::<_, i64>(1)),
        ("completed".into(), 300)
    );
    assert_eq!(
        before,
        tree_checksum(&node),
        "sync changed the node directory"
    );
}

#[test]
fn every_bad_input_class_lands_in_sync_failures() {
    let db = TestDb::new();
    let node = fixtures().join("bad-node");
    let before = tree_checksum(&node);
    let (code, s, err) = sync(&node, &db.url, &[]);
    assert_eq!(code, exit::SOME_TOKENS_FAILED as i32, "{err}");
    assert_eq!(s["status"], "completed_with_failures");
    let failures = db.failures();
    assert_eq!(failures, expected_failures());
    let classes: BTreeSet<&str> = failures.values().map(String::as_str).collect();
    for class in [
        "invalid_cid",
        "block_missing",
        "block_corrupt",
        "not_a_file",
        "field_count",
        "not_integer",
        "out_of_range",
        "not_utf8",
        "empty",
    ] {
        assert!(classes.contains(class), "no {class} failure recorded");
    }
    assert_eq!(db.tokens(), expected_rows("bad-node"));
    // Every row ends in exactly one place.
    assert_eq!(
        failures.len() + db.tokens().len(),
        s["tokens_total"].as_u64().unwrap() as usize
    );
    let detail: String = db
        .client()
        .query_one(
            "SELECT detail FROM sync_failures WHERE reason_class = 'block_corrupt'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(detail.contains("hash mismatch"), "{detail}");
    assert_eq!(before, tree_checksum(&node));
}

#[test]
fn rerun_is_idempotent_and_full_rewrites_nothing() {
    let db = TestDb::new();
    let node = fixtures().join("node");
    assert_eq!(sync(&node, &db.url, &[]).0, 0);
    let stamps = |db: &TestDb| -> Vec<String> {
        db.client()
            .query(
                "SELECT token_id || last_updated::text FROM TokenInfo ORDER BY token_id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let before = stamps(&db);
    let (code, s, _) = sync(&node, &db.url, &[]);
    assert_eq!(code, 0);
    assert_eq!(
        (s["skipped"].as_u64(), s["processed"].as_u64()),
        (Some(300), Some(0))
    );
    let (code, s, _) = sync(&node, &db.url, &["--full"]);
    assert_eq!(code, 0);
    assert_eq!(
        (
            s["processed"].as_u64(),
            s["written"].as_u64(),
            s["unchanged"].as_u64()
        ),
        (Some(300), Some(0), Some(300))
    );
    assert_eq!(stamps(&db), before, "unchanged rows must not be rewritten");
    assert_eq!(db.count(), 300);
}

#[test]
fn a_token_that_later_succeeds_leaves_the_failures_table() {
    let db = TestDb::new();
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("bad-node");
    copy_tree(&fixtures().join("bad-node"), &node);
    assert_eq!(sync(&node, &db.url, &[]).0, exit::SOME_TOKENS_FAILED as i32);
    let corrupt = expected_failures()
        .into_iter()
        .find(|(_, c)| c == "block_corrupt")
        .unwrap()
        .0;
    // The fixture flipped bit 0 of the middle byte; flip it back (an operator restoring the block).
    let repo = rubix_sync::ipfs::Repo::open(node.join(".ipfs")).unwrap();
    let path = repo
        .blocks()
        .block_path(&rubix_sync::ipfs::parse_cid(&corrupt).unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let attempts: i32 = db
        .client()
        .query_one(
            "SELECT attempts FROM sync_failures WHERE reason_class='empty' LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(attempts, 1);
    let (code, s, _) = sync(&node, &db.url, &[]);
    assert_eq!(code, exit::SOME_TOKENS_FAILED as i32);
    assert_eq!(s["failed"], 9);
    assert!(db.tokens().contains_key(&corrupt));
    assert!(
        !db.failures().contains_key(&corrupt),
        "a synced token left sync_failures"
    );
    let attempts: i32 = db
        .client()
        .query_one(
            "SELECT attempts FROM sync_failures WHERE reason_class='empty' LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(attempts, 2, "failures are retried and counted");
}

#[test]
fn sqlite_sink_holds_the_same_rows_as_postgres() {
    let db = TestDb::new();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("tokens.sqlite");
    let lite = format!("sqlite:{}", file.display());
    for node in ["node", "bad-node"] {
        let n = fixtures().join(node);
        let (a, _, e1) = sync(&n, &db.url, &[]);
        let (b, _, e2) = sync(&n, &lite, &[]);
        assert_eq!(a, b, "{e1} {e2}");
    }
    let conn = rusqlite::Connection::open(&file).unwrap();
    let lite_tokens: BTreeMap<String, (String, i32, String)> = conn
        .prepare("SELECT token_id, token_name, token_number, creator_did FROM TokenInfo")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let lite_failures: BTreeMap<String, String> = conn
        .prepare("SELECT token_id, reason_class FROM sync_failures")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(lite_tokens, db.tokens());
    assert_eq!(lite_failures, db.failures());
    assert_eq!(lite_tokens.len(), 304);
}

/// A scratch directory on tmpfs when there is one (a generated node is many small files).
fn scratch() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn generate(node: &Path, tokens: u64) {
    let out = run(bin()
        .args(["generate-corpus", "--tokens", &tokens.to_string(), "--out"])
        .arg(node));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Spawns `sync`, and returns its exit status and peak RSS in KiB (wait4 on that child only).
// The child is reaped by wait4(2) below, which std's `wait` cannot do with rusage.
#[allow(clippy::zombie_processes)]
fn sync_with_rss(node: &Path, database: &str, extra: &[&str]) -> (i32, i64) {
    let child = Command::new(env!("CARGO_BIN_EXE_rubix-sync"))
        .arg("sync")
        .arg(node)
        .args(["--database", database, "--quiet"])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: plain wait4(2) on our own child; rusage is a plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

#[test]
fn resume_after_sigkill_completes_exactly() {
    let db = TestDb::new();
    let tmp = scratch();
    let node = tmp.path().join("node");
    let n: i64 = 60_000;
    generate(&node, n as u64);
    let mut child = Command::new(env!("CARGO_BIN_EXE_rubix-sync"))
        .arg("sync")
        .arg(&node)
        .args([
            "--database",
            &db.url,
            "--quiet",
            "--batch-size",
            "500",
            "--writers",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some batches have committed, before it can finish.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = 0;
    while Instant::now() < deadline {
        seen = db
            .client()
            .query_one("SELECT count(*) FROM TokenInfo", &[])
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
        if seen >= 2_000 {
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = db.count();
    assert!(
        partial >= 2_000,
        "the run committed batches before the kill ({seen})"
    );
    assert!(
        partial < n,
        "killed before finishing (raise the token count if this machine is fast)"
    );
    assert_eq!(
        partial % 500,
        0,
        "only whole batches are committed (no partial batch)"
    );

    // The killed run was a bulk load: its secondary indexes were dropped and never rebuilt.
    let (code, s, err) = sync(&node, &db.url, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(s["skipped"].as_i64().unwrap(), partial);
    assert_eq!(db.count(), n);
    let spec = rubix_sync::corpus::CorpusSpec {
        tokens: n as u64,
        ..Default::default()
    };
    let want: BTreeSet<String> = (0..n as u64)
        .map(|i| spec.ft_token(i).cid.to_string())
        .collect();
    let got: BTreeSet<String> = db.tokens().into_keys().collect();
    assert_eq!(got, want);
    let idx: i64 = db
        .client()
        .query_one("SELECT count(*) FROM pg_indexes WHERE tablename = 'tokeninfo' AND indexname LIKE 'idx_tokeninfo_%'", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        idx, 4,
        "the rerun repaired the interrupted bulk load's indexes"
    );
    let statuses: Vec<String> = db
        .client()
        .query("SELECT status FROM sync_runs ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(statuses, ["aborted", "completed"]);
}

#[test]
fn memory_does_not_grow_with_the_node() {
    // Bounded channels and an on-disk work list: 8× the tokens must not mean 8× the memory.
    let db_small = TestDb::new();
    let db_large = TestDb::new();
    let tmp = scratch();
    let (small, large) = (tmp.path().join("small"), tmp.path().join("large"));
    generate(&small, 10_000);
    generate(&large, 80_000);
    let (c1, rss_small) = sync_with_rss(&small, &db_small.url, &[]);
    let (c2, rss_large) = sync_with_rss(&large, &db_large.url, &[]);
    assert_eq!((c1, c2), (0, 0));
    assert_eq!(db_large.count(), 80_000);
    assert!(
        rss_large < rss_small + 24 * 1024,
        "peak RSS grew from {rss_small} KiB to {rss_large} KiB for 8× the tokens"
    );
}

#[test]
fn connection_problems_are_clear_fast_and_never_show_the_password() {
    let start = Instant::now();
    let node = fixtures().join("node");
    let (code, _, err) = sync(
        &node,
        "postgres://postgres:Sup3rSecret@127.0.0.1:1/none",
        &[],
    );
    assert_eq!(code, exit::FAILED as i32);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        err.contains("cannot connect") && err.contains("127.0.0.1"),
        "{err}"
    );
    assert!(!err.contains("Sup3rSecret"), "password leaked: {err}");
    let out = run(bin()
        .args(["sync"])
        .arg(&node)
        .env("RUST_LOG", "trace")
        .env(
            "DATABASE_URL",
            "postgres://postgres:Sup3rSecret@127.0.0.1:1/none",
        ));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains("Sup3rSecret"),
        "password leaked at trace level"
    );
}

#[test]
fn libpq_environment_variables_select_the_database() {
    let db = TestDb::new();
    let out = run(bin()
        .arg("sync")
        .arg(fixtures().join("node"))
        .arg("--quiet")
        .env("PGHOST", "127.0.0.1")
        .env("PGUSER", "postgres")
        .env("PGDATABASE", &db.name));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(db.count(), 300);
}

#[test]
fn missing_node_database_or_repo_is_a_clear_error() {
    let db = TestDb::new();
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, err) = sync(tmp.path(), &db.url, &[]);
    assert_eq!(code, exit::FAILED as i32);
    assert!(err.contains("Rubix/rubix.db"), "{err}");
    let node = tmp.path().join("n");
    std::fs::create_dir_all(node.join("Rubix")).unwrap();
    std::fs::copy(
        fixtures().join("node/Rubix/rubix.db"),
        node.join("Rubix/rubix.db"),
    )
    .unwrap();
    let (code, _, err) = sync(&node, &db.url, &[]);
    assert_eq!(code, exit::FAILED as i32);
    assert!(err.contains("no kubo repository"), "{err}");
}

#[test]
fn ctrl_c_commits_in_flight_batches_prints_the_summary_and_exits_non_zero() {
    let db = TestDb::new();
    let tmp = scratch();
    let node = tmp.path().join("node");
    let n: i64 = 60_000;
    generate(&node, n as u64);
    let child = Command::new(env!("CARGO_BIN_EXE_rubix-sync"))
        .arg("sync")
        .arg(&node)
        .args(["--database", &db.url, "--json", "--batch-size", "500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline
        && db
            .client()
            .query_one("SELECT count(*) FROM TokenInfo", &[])
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0)
            < 2_000
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit::INTERRUPTED as i32),
        "{stderr}"
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["status"], "interrupted");
    assert!(stderr.contains("interrupted"), "{stderr}");
    // Everything the summary says was processed is committed, and nothing more.
    let committed = db.count();
    assert_eq!(committed, s["written"].as_i64().unwrap());
    assert!(committed < n);
    let status: String = db
        .client()
        .query_one("SELECT status FROM sync_runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(status, "interrupted");
    assert_eq!(sync(&node, &db.url, &[]).0, 0);
    assert_eq!(db.count(), n);
}

#[test]
fn an_appending_writer_that_meets_an_existing_row_merges_instead() {
    use rubix_sync::sink::{postgres::PgSink, Batch, Sink, TokenRow};
    let db = TestDb::new();
    let target = rubix_sync::sink::config::pg_target(&db.url, &|_| None).unwrap();
    let mut sink = PgSink::connect(target).unwrap();
    sink.migrate().unwrap();
    let row = |id: &str, n: i32| TokenRow {
        token_id: id.into(),
        name: "TRI".into(),
        number: n,
        creator_did: "did".into(),
    };
    // A concurrent writer (another node's run) already put "b" there, with other values.
    db.client()
        .execute(
            "INSERT INTO TokenInfo (token_id, token_name, token_number, creator_did)
             VALUES ('b', 'OLD', 0, 'x')",
            &[],
        )
        .unwrap();
    let mut writers = sink.writers(1, true).unwrap();
    let batch = Batch {
        tokens: vec![row("a", 1), row("b", 2), row("c", 3)],
        failures: vec![],
    };
    let w = writers[0].write("node", &batch).unwrap();
    assert_eq!((w.written, w.unchanged), (3, 0));
    // The same batch again: merged, nothing rewritten.
    let w = writers[0].write("node", &batch).unwrap();
    assert_eq!((w.written, w.unchanged), (0, 3));
    let tokens = db.tokens();
    assert_eq!(tokens.len(), 3);
    assert_eq!(tokens["b"], ("TRI".into(), 2, "did".into()));
}
