//! Helpers shared by the benchmarks that run the release binary against PostgreSQL.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use postgres::{Client, NoTls};

pub fn fresh_db(base: &str, name: &str) -> String {
    let mut admin = Client::connect(&format!("{base}/postgres"), NoTls).expect("PostgreSQL");
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    format!("{base}/{name}")
}

pub fn drop_db(base: &str, name: &str) {
    if let Ok(mut admin) = Client::connect(&format!("{base}/postgres"), NoTls) {
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    }
}

/// Runs the release binary's `command` on `path` into `url`; returns (seconds, peak RSS MiB,
/// exit code).
// The child is reaped by wait4(2) below, which std's `wait` cannot do with rusage.
#[allow(clippy::zombie_processes)]
pub fn timed(command: &str, path: &Path, url: &str, extra: &[&str]) -> (f64, f64, i32) {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/rubix-sync");
    let t = Instant::now();
    let child = Command::new(bin)
        .arg(command)
        .arg(path)
        .args(["--database", url, "--quiet"])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("target/release/rubix-sync (cargo build --release first)");
    let mut status = 0;
    // SAFETY: wait4(2) on our own child; rusage is a plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    (
        t.elapsed().as_secs_f64(),
        usage.ru_maxrss as f64 / 1024.0,
        libc::WEXITSTATUS(status),
    )
}
