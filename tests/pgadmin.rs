//! scripts/setup_pgadmin.sh, end to end: real pgAdmin 4 from PyPI, started in server mode on
//! loopback, its login page loaded in headless Chromium (screenshot kept as
//! target/test-artifacts/pgadmin-login.png), the generated admin password logging in (a wrong
//! one refused), the rubix_tokens server registered, the systemd unit valid.
//!
//! The slowest test here (pgAdmin's first install takes a minute or two; the venv is kept in
//! target/pgadmin-venv and reused). Run it alone with `cargo test --test pgadmin`.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn login(port: u16, email: &str, password: &str) -> bool {
    let mut child = Command::new("python3")
        .arg(root().join("scripts/pgadmin_login.py"))
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(email)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    child.wait().unwrap().success()
}

#[test]
fn pgadmin_in_server_mode_on_loopback_with_a_generated_admin_and_the_server_registered() {
    let venv = root().join("target/pgadmin-venv");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        "database = \"postgres://rubix:N0tInPgAdmin@127.0.0.1:5432/rubix_tokens\"\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let setup = || {
        let out = Command::new(root().join("scripts/setup_pgadmin.sh"))
            .arg("--venv")
            .arg(&venv)
            .arg("--data")
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .args(["--port", &port.to_string()])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        text
    };
    let first = setup();
    let passfile = data.join("admin-password");
    let password = std::fs::read_to_string(&passfile)
        .unwrap()
        .trim()
        .to_string();
    assert!(password.len() >= 24);
    assert_eq!(
        std::fs::metadata(&passfile).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(!first.contains(&password), "password printed: {first}");
    let again = setup();
    assert!(again.contains("keeping the admin password"), "{again}");
    assert_eq!(std::fs::read_to_string(&passfile).unwrap().trim(), password);

    // The server registered from the rubix-sync config, without its password.
    let dump = tmp.path().join("dump.json");
    let pkg = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import importlib.util as u; print(list(u.find_spec('pgadmin4').submodule_search_locations)[0])",
        ])
        .output()
        .unwrap();
    let pkg = String::from_utf8_lossy(&pkg.stdout).trim().to_string();
    let out = Command::new(venv.join("bin/python"))
        .arg(format!("{pkg}/setup.py"))
        .arg("dump-servers")
        .arg(&dump)
        .args(["--user", "admin@rubix.local"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let servers: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dump).unwrap()).unwrap();
    let s = &servers["Servers"]["1"];
    assert_eq!(s["MaintenanceDB"], "rubix_tokens", "{servers}");
    assert_eq!(s["Username"], "rubix");
    assert_eq!(s["Port"], 5432);
    assert_eq!(
        servers["Servers"].as_object().unwrap().len(),
        1,
        "a second run replaces, never duplicates"
    );
    assert!(!std::fs::read_to_string(&dump)
        .unwrap()
        .contains("N0tInPgAdmin"));

    // Start it as the unit would, on loopback.
    let _server = Server(
        Command::new(venv.join("bin/pgadmin4"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let page = loop {
        if let Some(p) = http_get(port, "/login") {
            if p.starts_with("HTTP/1.1 200") {
                break p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "pgAdmin did not answer on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(page.contains("<title>pgAdmin 4</title>"), "{page}");
    let listening =
        String::from_utf8_lossy(&Command::new("ss").args(["-ltnH"]).output().unwrap().stdout)
            .to_string();
    let ours: Vec<&str> = listening
        .lines()
        .filter(|l| l.contains(&format!(":{port} ")))
        .collect();
    assert!(!ours.is_empty(), "{listening}");
    assert!(
        ours.iter()
            .all(|l| l.contains(&format!("127.0.0.1:{port}"))),
        "loopback only: {ours:?}"
    );

    assert!(
        login(port, "admin@rubix.local", &password),
        "the generated admin logs in"
    );
    assert!(!login(port, "admin@rubix.local", "not-the-password"));

    // What an operator sees: the login page, rendered by a real browser.
    let artifacts = root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("pgadmin-login.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1280,900",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://127.0.0.1:{port}/login"))
        .output()
        .expect("Debian's chromium is needed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 20_000,
        "a rendered page, not a blank one ({} bytes)",
        png.len()
    );

    // The unit it wrote is valid.
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(data.join("rubix-pgadmin.service"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
