//! TLS to PostgreSQL against a real server: a throwaway cluster (initdb) that accepts only
//! TLS connections, with a certificate from a self-signed CA made here with openssl.
//! verify-full passes with the CA and the right host name, and fails without the CA, with
//! another CA, or for a host name the certificate does not name; require encrypts without
//! authenticating the server.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::cluster::{as_pg_user, is_root, pg_bin};
use common::*;

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a certificate it signed for `names` (DNS names and IP addresses).
fn make_ca(dir: &Path, tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join(format!("{tag}-ca.key"));
    let ca = dir.join(format!("{tag}-ca.pem"));
    sh(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        ])
        .arg(format!("/CN=rubix-sync test CA {tag}"))
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca));
    let key = dir.join(format!("{tag}-server.key"));
    let csr = dir.join(format!("{tag}-server.csr"));
    let cert = dir.join(format!("{tag}-server.pem"));
    sh(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    let ext = dir.join(format!("{tag}-ext.cnf"));
    std::fs::write(&ext, "subjectAltName=DNS:localhost\n").unwrap();
    sh(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert));
    (ca, cert, key)
}

/// A PostgreSQL cluster of its own on a free port, TLS only; stopped on drop.
struct TlsServer {
    child: Child,
    port: u16,
}

impl TlsServer {
    fn start(dir: &Path, cert: &Path, key: &Path) -> TlsServer {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let server_cert = dir.join("server.crt");
        let server_key = dir.join("server.key");
        std::fs::copy(cert, &server_cert).unwrap();
        std::fs::copy(key, &server_key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&server_key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if is_root() {
            sh(Command::new("chown").arg("-R").arg("postgres:").arg(dir));
        }
        sh(as_pg_user(&pg_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data));
        // Only TLS connections get in: a successful connection proves TLS was used.
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = as_pg_user(&pg_bin("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "ssl=on", "-c"])
            .arg(format!("port={port}"))
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .arg("-c")
            .arg(format!("ssl_cert_file={}", server_cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", server_key.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the TLS server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        TlsServer { child, port }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        // runuser passes SIGTERM on to postgres (a "smart" shutdown; our clients are gone).
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn migrate(url: &str, home: &Path) -> (bool, String) {
    let out = run(bin()
        .env("HOME", home)
        .env_remove("PGSSLROOTCERT")
        .env_remove("PGSSLMODE")
        .args(["db", "migrate", "--database", url]));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn verify_full_passes_with_the_ca_and_fails_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pg");
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = make_ca(tmp.path(), "good");
    let (other_ca, _, _) = make_ca(tmp.path(), "other");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let server = TlsServer::start(&dir, &cert, &key);
    let url =
        |host: &str, q: &str| format!("postgres://postgres@{host}:{}/postgres?{q}", server.port);

    let (ok, out) = migrate(
        &url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        ),
        &home,
    );
    assert!(ok, "verify-full with the CA: {out}");
    assert!(out.contains("schema at version"), "{out}");

    // Without the CA (no sslrootcert, no ~/.postgresql/root.crt: the system CAs).
    let (ok, out) = migrate(&url("localhost", "sslmode=verify-full"), &home);
    assert!(!ok, "verify-full without the CA must fail: {out}");
    assert!(out.to_lowercase().contains("certificate"), "{out}");

    // Another CA.
    let (ok, out) = migrate(
        &url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", other_ca.display()),
        ),
        &home,
    );
    assert!(!ok, "verify-full with another CA must fail: {out}");

    // The right CA, a host name the certificate does not name: verify-full fails,
    // verify-ca (chain only) passes.
    let q = |mode: &str| format!("sslmode={mode}&sslrootcert={}", ca.display());
    let (ok, out) = migrate(&url("127.0.0.1", &q("verify-full")), &home);
    assert!(!ok, "verify-full checks the host name: {out}");
    let (ok, out) = migrate(&url("127.0.0.1", &q("verify-ca")), &home);
    assert!(ok, "verify-ca: {out}");

    // ~/.postgresql/root.crt is the CA when sslrootcert is not given.
    std::fs::create_dir_all(home.join(".postgresql")).unwrap();
    std::fs::copy(&ca, home.join(".postgresql/root.crt")).unwrap();
    let (ok, out) = migrate(&url("localhost", "sslmode=verify-full"), &home);
    assert!(ok, "verify-full with ~/.postgresql/root.crt: {out}");

    // require: encrypted (the server takes nothing else), server not authenticated.
    let (ok, out) = migrate(&url("127.0.0.1", "sslmode=require"), tmp.path());
    assert!(ok, "require: {out}");
    // disable: the server refuses the plain connection.
    let (ok, out) = migrate(&url("127.0.0.1", "sslmode=disable"), tmp.path());
    assert!(!ok, "plain connections are refused by this server: {out}");
}
