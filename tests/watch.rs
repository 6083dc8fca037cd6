//! `watch` (periodic runs, signals, one run per job at a time), the metrics endpoint seen
//! from outside during a real run, and JSON logs.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The value of one sample line, e.g. `rubix_sync_tokens_total{outcome="written"}`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

struct Env {
    _tmp: tempfile::TempDir,
    state: std::path::PathBuf,
    db: String,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    Env {
        state: tmp.path().join("state"),
        db: format!("sqlite:{}", tmp.path().join("tokens.sqlite").display()),
        _tmp: tmp,
    }
}

fn spawn_watch(e: &Env, args: &[&str]) -> Child {
    bin()
        .env("RUBIX_SYNC_STATE_DIR", &e.state)
        .arg("watch")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

#[test]
fn watch_runs_periodically_serves_metrics_and_stops_on_sigterm() {
    let e = env();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let node = fixtures().join("node");
    let mut child = spawn_watch(
        &e,
        &[
            "--interval",
            "30s",
            "--metrics-addr",
            &addr,
            "sync",
            node.to_str().unwrap(),
            "--database",
            &e.db,
            "--offline",
            "--quiet",
        ],
    );
    // The first run lands the node's 300 tokens; metrics show it while watch sleeps.
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        if let Some(t) = scrape(port) {
            if sample(&t, "rubix_sync_runs_total{command=\"sync\",status=\"ok\"}") == Some(1.0) {
                break t;
            }
        }
        assert!(Instant::now() < deadline, "no completed run in the metrics");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("Content-Type: text/plain; version=0.0.4"));
    assert_eq!(
        sample(&text, "rubix_sync_tokens_total{outcome=\"written\"}"),
        Some(300.0)
    );
    assert!(sample(&text, "rubix_sync_blocks_read_total{source=\"disk\"}").unwrap() >= 300.0);
    assert!(sample(&text, "rubix_sync_block_bytes_total").unwrap() > 300.0 * 60.0);
    assert!(sample(&text, "rubix_sync_batch_commit_seconds_count").unwrap() >= 1.0);
    assert!(sample(&text, "rubix_sync_last_run_end_timestamp_seconds").unwrap() > 1.7e9);

    // SIGTERM while it sleeps: it ends at once, with the interrupted code.
    let t = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(wait(&mut child, Duration::from_secs(10)), Some(130));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn watch_repeats_incremental_runs_and_never_runs_a_job_twice_at_once() {
    let e = env();
    let node = fixtures().join("node");
    let node_s = node.to_str().unwrap();
    let before = tree_checksum(&node);
    let mut child = spawn_watch(
        &e,
        &[
            "--interval",
            "1s",
            "--jitter",
            "1s",
            "--runs",
            "3",
            "sync",
            node_s,
            "--database",
            &e.db,
            "--offline",
            "--quiet",
        ],
    );
    assert_eq!(wait(&mut child, Duration::from_secs(60)), Some(0));
    let out = run(bin().args(["db", "status", "--format", "json", "--database", &e.db]));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = s["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{s}");
    assert_eq!(runs[2]["written"], 300, "the first run wrote everything");
    assert_eq!(runs[0]["written"], 0, "later runs are incremental");
    assert_eq!(runs[0]["skipped"], 300);

    // Another process holds this job's lock: a sync of the same node is refused, clearly,
    // and a watch run of it is skipped; a sync of another node is not affected.
    let lock_path = rubix_sync::watch::lock_path(&e.state, "sync", &node);
    std::fs::create_dir_all(&e.state).unwrap();
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap();
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    assert_eq!(
        unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let out = run(bin().env("RUBIX_SYNC_STATE_DIR", &e.state).args([
        "sync",
        node_s,
        "--database",
        &e.db,
        "--offline",
        "--quiet",
    ]));
    assert_eq!(out.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another rubix-sync run of this job"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = spawn_watch(
        &e,
        &[
            "--runs",
            "1",
            "sync",
            node_s,
            "--database",
            &e.db,
            "--offline",
            "--quiet",
        ],
    );
    assert_eq!(wait(&mut child, Duration::from_secs(30)), Some(5));
    let other = fixtures().join("bad-node");
    let out = run(bin().env("RUBIX_SYNC_STATE_DIR", &e.state).args([
        "sync",
        other.to_str().unwrap(),
        "--database",
        &e.db,
        "--offline",
        "--quiet",
    ]));
    assert_eq!(out.status.code(), Some(3), "another job runs");
    drop(held);
    let out = run(bin().env("RUBIX_SYNC_STATE_DIR", &e.state).args([
        "sync",
        node_s,
        "--database",
        &e.db,
        "--offline",
        "--quiet",
    ]));
    assert_eq!(out.status.code(), Some(0), "the lock is free again");
    assert_eq!(
        tree_checksum(&node),
        before,
        "the lock lives in our state dir, never the node's"
    );
}

#[test]
fn json_logs_and_a_rotating_log_file() {
    let e = env();
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("run.log");
    let out = run(bin()
        .env("RUST_LOG", "info")
        .env("RUBIX_SYNC_STATE_DIR", &e.state)
        .args([
            "--log-format",
            "json",
            "--log-max-size",
            "1",
            "--log-keep",
            "2",
            "--log-file",
        ])
        .arg(&log)
        .args([
            "sync",
            fixtures().join("node").to_str().unwrap(),
            "--database",
            &e.db,
            "--offline",
            "--quiet",
        ]));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with('{')).collect();
    assert!(lines.len() >= 2, "{stderr}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
    let file = std::fs::read_to_string(&log).unwrap();
    assert!(file.lines().count() >= 2);
    assert!(file
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
}

#[test]
fn the_systemd_units_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = root().join("scripts/systemd");
    let mut units = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap().replace(
            "/usr/local/bin/rubix-sync",
            env!("CARGO_BIN_EXE_rubix-sync"),
        );
        let dest = tmp.path().join(p.file_name().unwrap());
        std::fs::write(&dest, text).unwrap();
        units.push(dest);
    }
    assert!(units.len() >= 3);
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze (systemd) is needed to check the units");
    let msg = String::from_utf8_lossy(&out.stderr).to_string();
    // User=rubix need not exist on a test machine; nothing else may be wrong.
    let problems: Vec<&str> = msg
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("User") && !l.contains("rubix\""))
        .collect();
    assert!(problems.is_empty() && out.status.success(), "{msg}");
}
