//! Faults on the node's side during a run: the node writing its database (WAL mode) while we
//! read it, block files vanishing and appearing mid-run, and a truncated rubix.db in a fleet.
//! Every token still ends in exactly one place, and a rerun completes the work.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn generate(dir: &Path, tokens: u32) {
    let out = run(bin().args(["generate-corpus", "--out"]).arg(dir).args([
        "--tokens",
        &tokens.to_string(),
        "--seed",
        "3",
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn count(db: &TestDb, table: &str) -> i64 {
    db.client()
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0)
}

fn sync(node: &Path, db: &TestDb) -> i32 {
    let out =
        run(bin()
            .arg("sync")
            .arg(node)
            .args(["--offline", "--quiet", "--database", &db.url]));
    out.status.code().unwrap_or(-1)
}

#[test]
fn a_node_writing_its_database_during_the_run_gets_a_consistent_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    generate(&node, 40_000);
    let dbfile = node.join("Rubix/rubix.db");
    // The node runs in WAL mode; half its tokens are not in FTTokenTable yet.
    let held: Vec<(String, String)> = {
        let c = rusqlite::Connection::open(&dbfile).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        let rows = c
            .prepare("SELECT token_id, ft_name FROM FTTokenTable WHERE rowid % 2 = 0")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        c.execute("DELETE FROM FTTokenTable WHERE rowid % 2 = 0", [])
            .unwrap();
        rows
    };
    let db = TestDb::new();
    // The node's writer: adds the held rows back, in small transactions, during the run.
    let writer = {
        let dbfile = dbfile.clone();
        std::thread::spawn(move || {
            let mut c = rusqlite::Connection::open(&dbfile).unwrap();
            c.busy_timeout(Duration::from_secs(10)).unwrap();
            for chunk in held.chunks(200) {
                let tx = c.transaction().unwrap();
                for (id, name) in chunk {
                    tx.execute(
                        "INSERT INTO FTTokenTable (token_id, ft_name, token_status) VALUES (?1, ?2, 0)",
                        [id, name],
                    )
                    .unwrap();
                }
                tx.commit().unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let code = sync(&node, &db);
    writer.join().unwrap();
    assert_eq!(code, 0, "a consistent snapshot, no errors");
    let first = count(&db, "TokenInfo");
    assert!((20_000..=40_000).contains(&first), "{first}");
    assert_eq!(count(&db, "sync_failures"), 0);
    // The rerun picks up what the node added after the snapshot.
    assert_eq!(sync(&node, &db), 0);
    assert_eq!(count(&db, "TokenInfo"), 40_000);
}

#[test]
fn block_files_vanishing_and_appearing_mid_run_leave_every_token_in_one_place() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    generate(&node, 60_000);
    let repo = rubix_sync::ipfs::Repo::open(node.join(".ipfs")).unwrap();
    let ids: Vec<String> = rusqlite::Connection::open(node.join("Rubix/rubix.db"))
        .unwrap()
        .prepare("SELECT token_id FROM FTTokenTable ORDER BY token_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let path = |id: &str| {
        repo.blocks()
            .block_path(&rubix_sync::ipfs::parse_cid(id).unwrap())
    };
    let aside = tmp.path().join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    // 2,000 blocks are away when the run starts, and come back during it; 2,000 others
    // disappear during it.
    let appearing: Vec<&String> = ids.iter().step_by(30).collect();
    let vanishing: Vec<&String> = ids.iter().skip(15).step_by(30).collect();
    for (i, id) in appearing.iter().enumerate() {
        std::fs::rename(path(id), aside.join(format!("a{i}"))).unwrap();
    }
    let db = TestDb::new();
    let child = bin()
        .arg("sync")
        .arg(&node)
        .args([
            "--offline",
            "--quiet",
            "--batch-size",
            "1000",
            "--database",
            &db.url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while count_or_zero(&db) < 5_000 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    for (i, id) in appearing.iter().enumerate() {
        std::fs::rename(aside.join(format!("a{i}")), path(id)).unwrap();
    }
    for (i, id) in vanishing.iter().enumerate() {
        std::fs::rename(path(id), aside.join(format!("v{i}"))).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(matches!(out.status.code(), Some(0) | Some(3)));
    let (landed, failed) = (count(&db, "TokenInfo"), count(&db, "sync_failures"));
    assert_eq!(landed + failed, 60_000, "every token in exactly one place");
    let classes: Vec<String> = db
        .client()
        .query("SELECT DISTINCT reason_class FROM sync_failures", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(classes.iter().all(|c| c == "block_missing"), "{classes:?}");
    // Everything back: the rerun lands the rest and clears the failures.
    for (i, id) in vanishing.iter().enumerate() {
        std::fs::rename(aside.join(format!("v{i}")), path(id)).unwrap();
    }
    assert_eq!(sync(&node, &db), 0);
    assert_eq!(count(&db, "TokenInfo"), 60_000);
    assert_eq!(count(&db, "sync_failures"), 0);
}

fn count_or_zero(db: &TestDb) -> i64 {
    postgres::Client::connect(&db.url, postgres::NoTls)
        .ok()
        .and_then(|mut c| c.query_one("SELECT count(*) FROM TokenInfo", &[]).ok())
        .map_or(0, |r| r.get(0))
}

#[test]
fn a_truncated_node_database_fails_that_node_only() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("fleet");
    copy_tree(&fixtures().join("fleet"), &root);
    let victim = root.join("node02/Rubix/rubix.db");
    let len = std::fs::metadata(&victim).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let db = TestDb::new();
    let out = run(bin().arg("scan").arg(&root).args([
        "--offline",
        "--quiet",
        "--json",
        "--source",
        "vm1",
        "--database",
        &db.url,
    ]));
    assert_eq!(out.status.code(), Some(3));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = summary["nodes"].as_array().unwrap();
    let node02 = nodes.iter().find(|n| n["name"] == "node02").unwrap();
    assert_eq!(node02["status"], "failed", "{node02}");
    let error = node02["error"].as_str().unwrap();
    assert!(error.contains("rubix.db"), "names the file: {error}");
    let others_ok = nodes
        .iter()
        .filter(|n| n["name"] != "node02" && n["name"] != "broken")
        .all(|n| n["status"] != "failed");
    assert!(others_ok, "{summary}");
}
