//! Crash consistency: `sync` and `scan` of generated nodes (100k tokens / rows) are killed
//! with SIGKILL at seeded random points, 20 trials each (RUBIX_CRASH_TRIALS to change), then
//! run again. After every kill, what is in the database is a consistent part of the answer
//! (every row present is exactly right, nothing duplicated, failures only where expected); after
//! every rerun, the database holds exactly what a run without a crash writes.

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn trials() -> u64 {
    std::env::var("RUBIX_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Seeded, so a failing trial can be replayed (splitmix64).
fn fraction(seed: u64) -> f64 {
    let mut x = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x % 10_000) as f64 / 10_000.0
}

/// Runs the command to the end (or kills it after `kill_after`); returns the exit code
/// (None when killed) and how long it ran.
fn run_or_kill(args: &[&str], kill_after: Option<Duration>) -> (Option<i32>, Duration) {
    let t = Instant::now();
    let log = std::env::temp_dir().join(format!("rubix-crash-{}.stderr", std::process::id()));
    let mut child = bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    if let Some(after) = kill_after {
        while t.elapsed() < after {
            if let Some(s) = child.try_wait().unwrap() {
                return (s.code(), t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        return (None, t.elapsed());
    }
    let code = child.wait().unwrap().code();
    if code != Some(0) {
        eprintln!(
            "{:?} exited {code:?}: {}",
            &args[..2],
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    (code, t.elapsed())
}

type Rows = HashMap<String, String>;

fn tokeninfo(c: &mut postgres::Client) -> Rows {
    c.query(
        "SELECT token_id, token_name || '|' || token_number || '|' || creator_did FROM TokenInfo",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn sync_failures(c: &mut postgres::Client) -> Rows {
    c.query("SELECT token_id, reason_class FROM sync_failures", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Every row in `part` is in `whole` with the same value.
fn consistent_part(part: &Rows, whole: &Rows, what: &str, trial: u64) {
    for (k, v) in part {
        assert_eq!(
            whole.get(k),
            Some(v),
            "trial {trial}: {what} row {k} is not the crash-free row"
        );
    }
}

#[test]
fn sync_killed_at_random_points_always_converges_to_the_crash_free_result() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    generate_corpus(&node, 100_000, 0, 11);
    let node_s = node.to_str().unwrap();

    let reference = TestDb::new();
    let (code, full) = run_or_kill(
        &[
            "sync",
            node_s,
            "--offline",
            "--quiet",
            "--database",
            &reference.url,
        ],
        None,
    );
    assert_eq!(code, Some(3), "some blocks are missing by design");
    let want = tokeninfo(&mut reference.client());
    let want_failures = sync_failures(&mut reference.client());
    assert_eq!(want.len() + want_failures.len(), 100_000);
    assert!(!want_failures.is_empty());

    for trial in 0..trials() {
        let db = TestDb::new();
        // Batches of 2,000 so every kill lands among many commits; bulk mode on odd trials.
        let bulk = if trial % 2 == 0 { "never" } else { "auto" };
        let args = [
            "sync",
            node_s,
            "--offline",
            "--quiet",
            "--batch-size",
            "2000",
            "--bulk-load",
            bulk,
            "--database",
            &db.url,
        ];
        let kill_after = full.mul_f64(0.05 + 0.9 * fraction(trial));
        let (code, _) = run_or_kill(&args, Some(kill_after));
        let mut c = db.client();
        if code.is_none() {
            consistent_part(&tokeninfo(&mut c), &want, "TokenInfo", trial);
            consistent_part(
                &sync_failures(&mut c),
                &want_failures,
                "sync_failures",
                trial,
            );
        }
        let (code, _) = run_or_kill(&args, None);
        assert_eq!(code, Some(3), "trial {trial}: the rerun completes");
        assert!(
            tokeninfo(&mut c) == want,
            "trial {trial}: TokenInfo differs after the rerun"
        );
        assert!(
            sync_failures(&mut c) == want_failures,
            "trial {trial}: sync_failures differs after the rerun"
        );
        // Secondary indexes are all there even if a bulk load was cut short.
        let indexes: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_indexes WHERE tablename = 'tokeninfo'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(indexes, 5, "trial {trial}: PK + 4 secondary indexes");
        let running: i64 = c
            .query_one(
                "SELECT count(*) FROM sync_runs WHERE status = 'running'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(running, 0, "trial {trial}: a killed run is marked aborted");
    }
}

#[test]
fn scan_killed_at_random_points_always_converges_to_the_crash_free_result() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("fleet");
    for i in 0..4u32 {
        generate_corpus(&root.join(format!("node{i}")), 10, 25_000, 100 + i);
    }
    let root_s = root.to_str().unwrap();
    let records = |c: &mut postgres::Client| -> Rows {
        c.query(
            "SELECT node_name || '/' || token_id,
                    coalesce(did, '') || '|' || coalesce(token_status::text, '') || '|' ||
                    coalesce(ipfs_data, '') || '|' || ipfs_fetched::text || '|' ||
                    coalesce(ipfs_error_class, '') || '|' || (removed_at IS NULL)::text
             FROM TokenRecords",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    let reference = TestDb::new();
    let base = |url: &str| {
        vec![
            "scan".to_string(),
            root_s.to_string(),
            "--offline".into(),
            "--quiet".into(),
            "--source".into(),
            "vm1".into(),
            "--database".into(),
            url.to_string(),
        ]
    };
    let args: Vec<String> = base(&reference.url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (want_code, full) = run_or_kill(&args, None);
    assert!(matches!(want_code, Some(0) | Some(3)), "{want_code:?}");
    let want = records(&mut reference.client());
    assert_eq!(want.len(), 100_000);

    for trial in 0..trials() {
        let db = TestDb::new();
        let mut args = base(&db.url);
        args.extend(["--batch-size".into(), "2000".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let kill_after = full.mul_f64(0.05 + 0.9 * fraction(1000 + trial));
        let (code, _) = run_or_kill(&args, Some(kill_after));
        let mut c = db.client();
        if code.is_none() {
            let part = records(&mut c);
            consistent_part(&part, &want, "TokenRecords", trial);
            // A node is marked processed only after all its rows are in.
            let done: Vec<String> = c
                .query("SELECT node_name FROM ProcessedDatabases", &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            for node in done {
                let n = part
                    .keys()
                    .filter(|k| k.starts_with(&format!("{node}/")))
                    .count();
                assert_eq!(
                    n, 25_000,
                    "trial {trial}: {node} marked processed with {n} rows"
                );
            }
        }
        let (code, _) = run_or_kill(&args, None);
        assert_eq!(code, want_code, "trial {trial}: the rerun completes");
        assert!(
            records(&mut c) == want,
            "trial {trial}: TokenRecords differs after the rerun"
        );
        let dup: i64 = c
            .query_one(
                "SELECT count(*) - count(DISTINCT (source, db_path, token_id)) FROM TokenRecords",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(dup, 0);
    }
}
