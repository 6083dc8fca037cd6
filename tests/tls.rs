//! TLS to PostgreSQL against a real server: a throwaway cluster (initdb) that accepts only
//! TLS connections, with a certificate from a self-signed CA made here with openssl.
//! verify-full passes with the CA and the right host name, and fails without the CA, with
//! another CA, or for a host name the certificate does not name; require encrypts without
//! authenticating the server.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cluster::Cluster;
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

/// A cluster of the test's own that takes only TLS connections on 127.0.0.1 (a successful
/// connection proves TLS was used), with `cert`/`key` as its certificate.
fn tls_server(cert: &Path, key: &Path) -> Cluster {
    Cluster::start_with(
        "ssl = on\nssl_cert_file = '../server.crt'\nssl_key_file = '../server.key'\n",
        Some("local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n"),
        |dir| {
            // Beside the data directory (initdb wants it empty); the settings name them
            // relative to it.
            std::fs::copy(cert, dir.join("server.crt")).unwrap();
            std::fs::copy(key, dir.join("server.key")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        },
    )
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
    let (ca, cert, key) = make_ca(tmp.path(), "good");
    let (other_ca, _, _) = make_ca(tmp.path(), "other");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let server = tls_server(&cert, &key);
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
