//! `rubix-sync scan` and `report` against real PostgreSQL and the kubo-written fleet fixture
//! (fixtures/fleet: flat and nested nodes, an old TokensTable schema, tokens shared between
//! nodes, a node without .ipfs, one without TokensTable, a rubix.db that is not SQLite).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rubix_sync::cli::exit;
use serde_json::Value;

fn fleet() -> PathBuf {
    fixtures().join("fleet")
}

fn scan(root: &Path, db: &TestDb, extra: &[&str]) -> (i32, Value, String) {
    let out = run(bin()
        .arg("scan")
        .arg(root)
        .args(["--database", &db.url, "--source", "testhost", "--json"])
        .args(extra));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let summary = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), summary, stderr)
}

fn report(db: &TestDb, kind: &str, format: &str) -> String {
    let out = run(bin()
        .args(["report", kind, "--format", format, "--database"])
        .arg(&db.url));
    assert!(
        out.status.success(),
        "report {kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A row as the test compares it: the node's columns, the content, the error class.
#[derive(Debug, Clone, PartialEq)]
struct Rec {
    did: Option<String>,
    parent: Option<String>,
    value: Option<f64>,
    status: Option<i64>,
    state_hash: Option<String>,
    tx: Option<String>,
    content: Option<Vec<u8>>,
    binary: bool,
    error_class: Option<String>,
    removed: bool,
}

/// TokenRecords keyed by (node_name, token_id); panics on a duplicate natural key.
fn records(db: &TestDb) -> BTreeMap<(String, String), Rec> {
    let rows = db
        .client()
        .query(
            "SELECT node_name, token_id, did, parent_token_id, token_value, token_status,
                    token_state_hash, transaction_id, ipfs_data, ipfs_data_raw, ipfs_data_binary,
                    ipfs_fetched, ipfs_error_class, removed_at IS NOT NULL, source, ipfs_error
             FROM TokenRecords",
            &[],
        )
        .unwrap();
    let mut out = BTreeMap::new();
    for r in rows {
        assert_eq!(r.get::<_, String>(14), "testhost");
        let text: Option<String> = r.get(8);
        let raw: Option<Vec<u8>> = r.get(9);
        let fetched: bool = r.get(11);
        let rec = Rec {
            did: r.get(2),
            parent: r.get(3),
            value: r.get(4),
            status: r.get(5),
            state_hash: r.get(6),
            tx: r.get(7),
            content: text.map(String::into_bytes).or(raw),
            binary: r.get(10),
            error_class: r.get(12),
            removed: r.get(13),
        };
        assert_eq!(fetched, rec.content.is_some(), "{rec:?}");
        assert_eq!(
            fetched,
            r.get::<_, Option<String>>(15).is_none(),
            "ipfs_error is set exactly when nothing was fetched"
        );
        let key = (r.get(0), r.get(1));
        assert!(out.insert(key.clone(), rec).is_none(), "duplicate {key:?}");
    }
    out
}

/// What fixtures/expected/fleet.json says TokenRecords must hold.
fn expected_records() -> BTreeMap<(String, String), Rec> {
    let e = expected("fleet");
    let mut out = BTreeMap::new();
    for (node, n) in e.as_object().unwrap() {
        for row in n["rows"].as_array().unwrap() {
            let s = |k: &str| row[k].as_str().map(str::to_string);
            let expect = row["expect"].as_str().unwrap();
            let content = row.get("content_hex").map(|h| hex(h.as_str().unwrap()));
            let binary = content
                .as_ref()
                .is_some_and(|c| std::str::from_utf8(c).is_err() || c.contains(&0));
            out.insert(
                (node.clone(), s("token_id").unwrap()),
                Rec {
                    did: s("did"),
                    parent: s("parent_token_id"),
                    value: row["token_value"].as_f64(),
                    status: row["token_status"].as_i64(),
                    // The old schema has no such columns: NULL, not an error.
                    state_hash: s("token_state_hash"),
                    tx: s("transaction_id"),
                    content,
                    binary,
                    error_class: (expect != "ok").then(|| expect.to_string()),
                    removed: false,
                },
            );
        }
    }
    out
}

fn node_statuses(summary: &Value) -> BTreeMap<String, String> {
    summary["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn synced_at(db: &TestDb) -> BTreeMap<(String, String), String> {
    db.client()
        .query(
            "SELECT node_name, token_id, synced_at::text FROM TokenRecords",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect()
}

#[test]
fn first_scan_writes_exactly_the_fleet_rows_and_touches_nothing() {
    let db = TestDb::new();
    let before = tree_checksum(&fleet());
    let (code, s, err) = scan(&fleet(), &db, &[]);
    assert_eq!(
        tree_checksum(&fleet()),
        before,
        "nothing written under ROOT"
    );
    assert_eq!(code, exit::SOME_TOKENS_FAILED as i32, "{err}");
    assert_eq!(
        node_statuses(&s),
        [
            ("Qnode1", "ok"),
            ("broken", "failed"),
            ("node01", "with_failures"),
            ("node02", "ok"),
            ("node04", "with_failures"),
            ("node05", "no_tokens_table"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    );
    let nodes = s["nodes"].as_array().unwrap();
    let by_name = |n: &str| nodes.iter().find(|x| x["name"] == n).unwrap();
    assert!(by_name("broken")["error"]
        .as_str()
        .unwrap()
        .contains("not an SQLite database"));
    assert_eq!(
        by_name("node02")["missing_columns"],
        serde_json::json!(["token_state_hash", "transaction_id"])
    );
    assert!(by_name("Qnode1")["ipfs_path"]
        .as_str()
        .unwrap()
        .ends_with("SafePass/Rubix/Qnode1/.ipfs"));
    assert_eq!(by_name("node04")["ipfs_path"], Value::Null);

    let got = records(&db);
    let want = expected_records();
    assert_eq!(got.len(), want.len());
    for (k, w) in &want {
        assert_eq!(got.get(k), Some(w), "{k:?}");
    }
    // A token held by three nodes keeps one row per node.
    let shared = got
        .keys()
        .filter(|(_, t)| got.keys().filter(|(_, t2)| t2 == t).count() == 3);
    assert_eq!(shared.count(), 9);
    // Non-UTF-8 content is kept byte-exact and flagged.
    assert_eq!(got.values().filter(|r| r.binary).count(), 1);

    let processed: BTreeMap<String, (String, i64, i64, i64)> = db
        .client()
        .query(
            "SELECT node_name, status, record_count, ok_count, failed_count FROM ProcessedDatabases",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
        .collect();
    assert_eq!(processed["node01"], ("with_failures".into(), 25, 23, 2));
    assert_eq!(processed["node04"], ("with_failures".into(), 4, 0, 4));
    assert_eq!(processed["node05"].0, "no_tokens_table");
    assert_eq!(processed["broken"].0, "failed");
}

#[test]
fn rerun_skips_unchanged_databases_and_force_rewrites_nothing() {
    let db = TestDb::new();
    let (code, _, err) = scan(&fleet(), &db, &[]);
    assert_eq!(code, exit::SOME_TOKENS_FAILED as i32, "{err}");
    let first = records(&db);
    let stamps = synced_at(&db);

    let (_, s, err) = scan(&fleet(), &db, &[]);
    let st = node_statuses(&s);
    for n in ["Qnode1", "node01", "node02", "node04", "node05"] {
        assert_eq!(st[n], "unchanged", "{n}: {err}");
    }
    assert_eq!(st["broken"], "failed", "a failed node is tried again");
    assert_eq!(s["rows_resolved"], 0);
    assert_eq!(records(&db), first);
    assert_eq!(synced_at(&db), stamps, "no row rewritten");

    let (_, s, err) = scan(&fleet(), &db, &["--force"]);
    assert_eq!(node_statuses(&s)["node01"], "with_failures", "{err}");
    let n01 = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "node01")
        .unwrap();
    // --force re-reads the node; only the two unfetched rows are resolved again.
    assert_eq!(n01["unchanged"], 23);
    assert_eq!(n01["retried"], 2);
    assert_eq!(n01["inserted"], 0);
    assert_eq!(n01["updated"], 0);
    assert_eq!(records(&db), first);
    assert_eq!(synced_at(&db), stamps, "identical rows are never rewritten");
}

#[test]
fn incremental_scan_after_rows_are_added_changed_and_deleted() {
    let db = TestDb::new();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("fleet");
    copy_tree(&fleet(), &root);
    let (code, _, err) = scan(&root, &db, &[]);
    assert_eq!(code, exit::SOME_TOKENS_FAILED as i32, "{err}");
    let first = records(&db);

    // Two new tokens (blocks written kubo-style), one row changed, one deleted, in node01.
    let node01 = root.join("node01");
    let spec = rubix_sync::corpus::CorpusSpec {
        tokens: 0,
        rbt_tokens: 2,
        seed: 77,
        ..Default::default()
    };
    rubix_sync::corpus::generate(&node01, &spec).unwrap();
    let new_ids: Vec<String> = (0..2).map(|i| spec.rbt_token(i).cid.to_string()).collect();
    let c = rusqlite::Connection::open(node01.join("Rubix/rubix.db")).unwrap();
    let ids: Vec<String> = expected("fleet")["node01"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["token_id"].as_str().unwrap().to_string())
        .collect();
    let (changed, deleted) = (&ids[0], &ids[1]);
    c.execute(
        "UPDATE TokensTable SET token_status = 9 WHERE token_id = ?1",
        [changed],
    )
    .unwrap();
    c.execute("DELETE FROM TokensTable WHERE token_id = ?1", [deleted])
        .unwrap();
    drop(c);

    let (_, s, err) = scan(&root, &db, &[]);
    let st = node_statuses(&s);
    assert_eq!(st["node01"], "with_failures", "{err}");
    assert_eq!(st["node02"], "unchanged");
    let n01 = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "node01")
        .unwrap();
    assert_eq!(
        (
            &n01["new"],
            &n01["changed"],
            &n01["removed"],
            &n01["retried"]
        ),
        (
            &Value::from(2),
            &Value::from(1),
            &Value::from(1),
            &Value::from(2)
        ),
        "{n01}"
    );
    assert_eq!(n01["inserted"], 2);
    assert_eq!(n01["updated"], 1);

    let got = records(&db);
    assert_eq!(
        got.len(),
        first.len() + 2,
        "the deleted row is kept, marked"
    );
    let key = |id: &str| ("node01".to_string(), id.to_string());
    assert!(
        got[&key(deleted)].removed,
        "gone from the node: removed_at set"
    );
    assert_eq!(got[&key(changed)].status, Some(9));
    for id in &new_ids {
        let r = &got[&key(id)];
        assert!(r.content.is_some() && !r.removed, "{r:?}");
    }
    for (k, r) in &first {
        if k != &key(deleted) && k != &key(changed) {
            assert_eq!(&got[k], r, "{k:?} untouched");
        }
    }

    // The row comes back: current again.
    let c = rusqlite::Connection::open(node01.join("Rubix/rubix.db")).unwrap();
    c.execute(
        "INSERT INTO TokensTable (token_id, did, token_status) VALUES (?1, 'did:back', 1)",
        [deleted],
    )
    .unwrap();
    drop(c);
    let (_, s, err) = scan(&root, &db, &[]);
    assert_eq!(node_statuses(&s)["node01"], "with_failures", "{err}");
    let back = &records(&db)[&key(deleted)];
    assert!(
        !back.removed && back.did.as_deref() == Some("did:back"),
        "{back:?}"
    );
}

#[test]
fn reports_duplicates_nodes_failures_and_summary_in_every_format() {
    let db = TestDb::new();
    scan(&fleet(), &db, &[]);

    let dups: Value = serde_json::from_str(&report(&db, "duplicates", "json")).unwrap();
    let dups = dups.as_array().unwrap();
    assert_eq!(dups.len(), 7, "3 tokens in three nodes, 4 more in two");
    assert_eq!(dups.iter().filter(|d| d["nodes"] == 3).count(), 3);
    let held = dups[0]["held_by"].as_str().unwrap();
    assert_eq!(
        held,
        "Qnode1 @ testhost, node01 @ testhost, node02 @ testhost"
    );

    let csv = report(&db, "duplicates", "csv");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("token_id,nodes,held_by"));
    assert!(lines
        .next()
        .unwrap()
        .ends_with(",3,\"Qnode1 @ testhost, node01 @ testhost, node02 @ testhost\""));

    let nodes: Value = serde_json::from_str(&report(&db, "nodes", "json")).unwrap();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 6);
    let n01 = nodes.iter().find(|n| n["node_name"] == "node01").unwrap();
    assert_eq!(
        (&n01["records"], &n01["fetched"], &n01["failed"]),
        (&Value::from(25), &Value::from(23), &Value::from(2))
    );
    assert!(n01["last_scan"].as_str().unwrap().ends_with('Z'));

    let failures: Value = serde_json::from_str(&report(&db, "failures", "json")).unwrap();
    let by_reason: BTreeMap<String, i64> = failures
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["reason"].as_str().unwrap().to_string(),
                f["tokens"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by_reason,
        [("block_missing", 1), ("invalid_cid", 1), ("no_repo", 4)]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b))
            .collect()
    );

    let summary: Value = serde_json::from_str(&report(&db, "summary", "json")).unwrap();
    let s = &summary[0];
    assert_eq!(
        (
            &s["records"],
            &s["fetched"],
            &s["failed"],
            &s["duplicated_tokens"],
            &s["nodes"]
        ),
        (
            &Value::from(53),
            &Value::from(47),
            &Value::from(6),
            &Value::from(7),
            &Value::from(6)
        )
    );
    let table = report(&db, "summary", "table");
    assert!(
        table.contains("| records |") || table.contains("records"),
        "{table}"
    );
    assert!(table.ends_with("(1 row)\n"), "{table}");
}

#[test]
fn discovery_excludes_reports_loops_and_names_colliding_nodes() {
    let db = TestDb::new();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("fleet");
    copy_tree(&fleet(), &root);
    copy_tree(&fleet().join("node02"), &root.join("vm2/node02"));
    std::os::unix::fs::symlink(&root, root.join("vm2/back-to-root")).unwrap();
    let (_, s, err) = scan(
        &root,
        &db,
        &["--exclude", "node0[145]", "--exclude", "broken"],
    );
    let names: Vec<&str> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Qnode1", "node02", "vm2/node02"], "{err}");
    let problems = s["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["problem"].as_str().unwrap().contains("loop")),
        "{problems:?}"
    );
    // Both node02 copies are scanned: same tokens, one row per node.
    let got = records(&db);
    assert_eq!(got.keys().filter(|(n, _)| n == "node02").count(), 15);
    assert_eq!(got.keys().filter(|(n, _)| n == "vm2/node02").count(), 15);
}

#[test]
fn status_filter_selects_rows_and_a_new_filter_is_not_a_skip() {
    let db = TestDb::new();
    let (_, s, err) = scan(&fleet(), &db, &["--status", "1,2"]);
    let want = expected_records();
    let n_filtered = want
        .values()
        .filter(|r| matches!(r.status, Some(1) | Some(2)))
        .count();
    let got = records(&db);
    assert_eq!(got.len(), n_filtered, "{err}");
    assert!(got.values().all(|r| matches!(r.status, Some(1) | Some(2))));
    assert_eq!(node_statuses(&s)["node02"], "ok");

    let (_, s, _) = scan(&fleet(), &db, &[]);
    assert_eq!(
        node_statuses(&s)["node02"],
        "ok",
        "another filter: scanned again"
    );
    let got = records(&db);
    assert_eq!(got.len(), want.len());
    assert!(got.values().all(|r| !r.removed));
}

#[test]
fn scan_needs_a_central_postgres_and_says_so() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = bin();
    for k in [
        "DATABASE_URL",
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGDATABASE",
        "PGUSER",
        "PGSERVICE",
        "XDG_CONFIG_HOME",
    ] {
        cmd.env_remove(k);
    }
    let out = run(cmd.env("HOME", home.path()).arg("scan").arg(fleet()));
    assert_eq!(out.status.code(), Some(exit::FAILED as i32));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--database postgres://"), "{err}");

    let out = run(bin()
        .args([
            "scan",
            "--database",
            "postgres://nobody:s3cret@127.0.0.1:1/x",
        ])
        .arg(fleet()));
    assert_eq!(out.status.code(), Some(exit::FAILED as i32));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect") && !err.contains("s3cret"),
        "{err}"
    );
}

#[test]
fn a_killed_scan_resumes_to_exactly_the_full_set() {
    let db = TestDb::new();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("vm");
    let per_node = 15_000u64;
    for i in 0..3u64 {
        let spec = rubix_sync::corpus::CorpusSpec {
            tokens: 0,
            rbt_tokens: per_node,
            seed: 100 + i,
            ..Default::default()
        };
        rubix_sync::corpus::generate(&root.join(format!("node{i}")), &spec).unwrap();
    }
    let count = || -> i64 {
        db.client()
            .query_one("SELECT count(*) FROM TokenRecords", &[])
            .map(|r| r.get(0))
            .unwrap_or(0)
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_rubix-sync"))
        .arg("scan")
        .arg(&root)
        .args([
            "--database",
            &db.url,
            "--source",
            "testhost",
            "--quiet",
            "--batch-size",
            "1000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && count() < 3_000 {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = count();
    assert!(partial >= 3_000, "batches committed before the kill");
    assert!(
        partial < 3 * per_node as i64,
        "killed before finishing (raise per_node if this machine is fast)"
    );
    assert_eq!(partial % 1000, 0, "only whole batches are committed");

    let (code, s, err) = scan(&root, &db, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(count(), 3 * per_node as i64);
    let fetched: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM TokenRecords WHERE ipfs_fetched AND removed_at IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(fetched, 3 * per_node as i64);
    let resolved = s["rows_resolved"].as_i64().unwrap();
    assert_eq!(
        resolved,
        3 * per_node as i64 - partial,
        "committed rows are not redone"
    );
}
