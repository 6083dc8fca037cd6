//! A PostgreSQL cluster of a test's own (initdb in a temp dir, a free port, trust on
//! 127.0.0.1), for faults that must not touch the machine's shared server: restarts, stops.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub fn pg_bin(name: &str) -> PathBuf {
    let out = Command::new("pg_config").arg("--bindir").output().ok();
    let dir = out
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    dir.join(name)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command run as the postgres OS user when we are root (PostgreSQL refuses root).
pub fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::start_with("", None, |_| {})
    }

    /// A cluster with `settings` added to its configuration and, if given, its own
    /// `pg_hba.conf`; `prepare` puts files (certificates, …) in its directory first, and they
    /// end up owned by the server's user.
    pub fn start_with(settings: &str, hba: Option<&str>, prepare: impl FnOnce(&Path)) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pg");
        std::fs::create_dir_all(&dir).unwrap();
        prepare(&dir);
        if is_root() {
            sh(Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(tmp.path()));
        }
        sh(as_pg_user(&pg_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(dir.join("data")));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            dir.join("data/postgresql.auto.conf"),
            format!(
                "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\n{settings}",
                dir.display()
            ),
        )
        .unwrap();
        if let Some(hba) = hba {
            std::fs::write(dir.join("data/pg_hba.conf"), hba).unwrap();
        }
        let c = Cluster {
            dir,
            port,
            _tmp: tmp,
        };
        c.pg_ctl(&["start", "-w", "-t", "60", "-l"], true);
        c
    }

    fn pg_ctl(&self, args: &[&str], with_log: bool) {
        let mut cmd = as_pg_user(&pg_bin("pg_ctl"));
        cmd.args(args);
        if with_log {
            cmd.arg(self.dir.join("log"));
        }
        cmd.arg("-D").arg(self.dir.join("data"));
        sh(&mut cmd);
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn client(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(db), postgres::NoTls).unwrap()
    }

    /// `pg_ctl restart -m fast`: every connection is cut; back when it returns.
    pub fn restart(&self) {
        let t = Instant::now();
        self.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60", "-l"], true);
        assert!(t.elapsed() < Duration::from_secs(60));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_pg_user(&pg_bin("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .output();
    }
}
