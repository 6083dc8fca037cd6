//! Database faults during a run: PostgreSQL restarted mid-sync and mid-scan, and a lock
//! that makes statements time out. The run rides them out (retry with backoff, reconnecting)
//! and ends with exactly the rows a fault-free run writes.

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::cluster::Cluster;
use common::*;

/// TokenInfo's content as one digest, for comparing databases exactly.
fn tokeninfo_digest(c: &mut postgres::Client) -> (i64, String) {
    let r = c
        .query_one(
            "SELECT count(*), coalesce(md5(string_agg(
                 token_id || '|' || token_name || '|' || token_number || '|' || creator_did,
                 ',' ORDER BY token_id)), '')
             FROM TokenInfo",
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

fn failures(c: &mut postgres::Client) -> Vec<(String, String)> {
    c.query(
        "SELECT token_id, reason_class FROM sync_failures ORDER BY token_id",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn spawn(args: &[&str]) -> Child {
    bin()
        .env("RUST_LOG", "warn")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn a_postgres_restart_mid_sync_is_ridden_out_and_nothing_is_lost_or_doubled() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    generate_corpus(&node, 100_000, 0, 1);
    let node_s = node.to_str().unwrap();

    // The reference: the same node synced without faults (the shared server).
    let reference = TestDb::new();
    let out = run(bin().args([
        "sync",
        node_s,
        "--offline",
        "--quiet",
        "--database",
        &reference.url,
    ]));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = tokeninfo_digest(&mut reference.client());
    let want_failures = failures(&mut reference.client());
    assert_eq!(want.0, 100_000 - want_failures.len() as i64);

    let pg = Cluster::start();
    let child = spawn(&[
        "sync",
        node_s,
        "--offline",
        "--quiet",
        "--batch-size",
        "2000",
        "--bulk-load",
        "never",
        "--database",
        &pg.url("postgres"),
    ]);
    // Restart once some batches have landed (and many are still to come).
    let n = wait_for_rows(&pg.url("postgres"), "TokenInfo", 4_000);
    assert!(
        n < 90_000,
        "the run was nearly over before the restart ({n})"
    );
    pg.restart();
    let (code, err) = finish(child);
    assert_eq!(
        code, 3,
        "completed (some tokens have no block, by design): {err}"
    );
    assert!(err.contains("transient database error, retrying"), "{err}");
    let mut c = pg.client("postgres");
    assert_eq!(
        tokeninfo_digest(&mut c),
        want,
        "exactly the fault-free rows"
    );
    assert_eq!(failures(&mut c), want_failures);
    let status: String = c
        .query_one("SELECT status FROM sync_runs ORDER BY id DESC LIMIT 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(status, "completed_with_failures");
}

#[test]
fn statements_that_time_out_behind_a_lock_are_retried_until_it_is_released() {
    let db = TestDb::new();
    let node = fixtures().join("node");
    let out = run(bin().args(["db", "migrate", "--database", &db.url]));
    assert!(out.status.success());
    let mut admin = db.client();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} SET statement_timeout = '400ms'",
            db.name
        ))
        .unwrap();
    // Another session holds a lock that blocks writes (reads still go through).
    let mut locker = db.client();
    let mut tx = locker.transaction().unwrap();
    tx.batch_execute("LOCK TABLE TokenInfo IN SHARE MODE")
        .unwrap();
    let child = spawn(&[
        "sync",
        node.to_str().unwrap(),
        "--offline",
        "--quiet",
        "--database",
        &db.url,
    ]);
    std::thread::sleep(Duration::from_millis(2500));
    tx.rollback().unwrap();
    let (code, err) = finish(child);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("retrying"), "{err}");
    assert!(err.contains("statement timeout"), "{err}");
    let n: i64 = admin
        .query_one("SELECT count(*) FROM TokenInfo", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 300);
}

#[test]
fn a_postgres_restart_mid_scan_is_ridden_out() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("fleet");
    for i in 0..4 {
        generate_corpus(&root.join(format!("node{i}")), 10, 15_000, 1);
    }
    let root_s = root.to_str().unwrap();
    let reference = TestDb::new();
    let out = run(bin().args([
        "scan",
        root_s,
        "--offline",
        "--quiet",
        "--source",
        "vm1",
        "--database",
        &reference.url,
    ]));
    assert!(out.status.code().is_some_and(|c| c == 0 || c == 3));
    let digest = |c: &mut postgres::Client| -> (i64, String) {
        let r = c
            .query_one(
                "SELECT count(*), md5(string_agg(node_name || token_id || coalesce(ipfs_data, '') ||
                     ipfs_fetched::text, ',' ORDER BY node_name, token_id)) FROM TokenRecords",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    let want = digest(&mut reference.client());
    assert_eq!(want.0, 60_000);

    let pg = Cluster::start();
    let child = spawn(&[
        "scan",
        root_s,
        "--offline",
        "--quiet",
        "--source",
        "vm1",
        "--batch-size",
        "1000",
        "--node-workers",
        "1",
        "--database",
        &pg.url("postgres"),
    ]);
    let n = wait_for_rows(&pg.url("postgres"), "TokenRecords", 2_000);
    assert!(
        n < 55_000,
        "the scan was nearly over before the restart ({n})"
    );
    pg.restart();
    let (code, err) = finish(child);
    assert!(code == 0 || code == 3, "{code}: {err}");
    assert!(err.contains("retrying"), "{err}");
    assert_eq!(
        digest(&mut pg.client("postgres")),
        want,
        "exactly the fault-free rows"
    );
}
