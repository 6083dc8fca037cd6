//! `db migrate` and `db status` on real PostgreSQL and on the SQLite sink.

mod common;

use common::*;

fn db(args: &[&str]) -> (i32, String, String) {
    let out = run(bin().arg("db").args(args));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn status_json(database: &str) -> serde_json::Value {
    let (code, out, err) = db(&["status", "--database", database, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn sync_bad_node(database: &str) {
    let out = run(bin().arg("sync").arg(fixtures().join("bad-node")).args([
        "--database",
        database,
        "--quiet",
        "--offline",
    ]));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn migrate_is_idempotent_and_status_shows_counts_runs_and_failures_on_postgres() {
    let t = TestDb::new();
    let s = status_json(&t.url);
    assert_eq!(s["schema"], "rubix-sync.db-status/1");
    assert_eq!(s["schema_version"], serde_json::Value::Null, "{s}");
    assert_eq!(s["tables"], serde_json::json!({}));

    for _ in 0..2 {
        let (code, out, err) = db(&["migrate", "--database", &t.url]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("schema at version 2"), "{out}");
    }
    let applied: i64 = t
        .client()
        .query_one("SELECT count(*) FROM rubix_sync_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(applied, 2, "each migration recorded once");

    sync_bad_node(&t.url);
    let s = status_json(&t.url);
    assert_eq!(s["schema_version"], 2);
    assert_eq!(s["tables"]["TokenInfo"], 4, "{s}");
    assert_eq!(s["tables"]["sync_failures"], 10);
    assert_eq!(s["tables"]["sync_runs"], 1);
    assert_eq!(s["tables"]["TokenRecords"], 0);
    assert_eq!(s["runs"][0]["status"], "completed_with_failures");
    assert_eq!(s["runs"][0]["written"], 4);
    let failures = s["failures"].as_array().unwrap();
    let total: i64 = failures.iter().map(|f| f["tokens"].as_i64().unwrap()).sum();
    assert_eq!(total, 10, "{s}");
    assert!(failures
        .iter()
        .any(|f| f["reason"] == "invalid_cid" && f["origin"] == "sync_failures"));

    // The text form names the sections and never shows a password.
    let (code, out, _) = db(&["status", "--database", &t.url, "--runs", "1"]);
    assert_eq!(code, 0);
    for section in [
        "schema version: 2",
        "tables:",
        "last runs:",
        "failures by reason:",
    ] {
        assert!(out.contains(section), "{out}");
    }
}

#[test]
fn status_on_the_sqlite_sink_and_a_clear_error_when_the_server_is_down() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", tmp.path().join("t.sqlite").display());
    sync_bad_node(&url);
    let s = status_json(&url);
    assert_eq!(s["schema_version"], 1);
    assert_eq!(s["tables"]["TokenInfo"], 4);
    assert_eq!(s["tables"]["sync_failures"], 10);
    assert!(s["tables"].get("TokenRecords").is_none());
    assert_eq!(s["runs"][0]["failed"], 10);

    let (code, _, err) = db(&[
        "status",
        "--database",
        "postgres://rubix:Sup3rSecret@127.0.0.1:1/rubix_tokens",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!err.contains("Sup3rSecret"), "password leaked: {err}");
}

#[test]
fn no_password_anywhere_at_trace_level_and_a_warning_for_a_readable_config() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDb::new();
    let tmp = tempfile::tempdir().unwrap();
    // This server trusts 127.0.0.1, so any password connects: the run succeeds with it.
    let url = t.url.replace("postgres@", "postgres:Tr4ceSecret@");
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, format!("database = \"{url}\"\n")).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = tmp.path().join("run.log");
    let out = run(bin()
        .env("RUST_LOG", "trace")
        .env("RUBIX_SYNC_CONFIG", &config)
        .env_remove("DATABASE_URL")
        .arg("--log-file")
        .arg(&log)
        .args(["sync", "--offline", "--json"])
        .arg(fixtures().join("node")));
    let all = format!(
        "{}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(out.status.success(), "{all}");
    assert!(
        all.len() > 10_000,
        "trace output was produced ({} bytes)",
        all.len()
    );
    assert!(
        !all.contains("Tr4ceSecret"),
        "password leaked at trace level"
    );
    assert!(
        all.contains("config file is readable by group or others"),
        "a warning for a config others can read"
    );
    // 0600: no warning.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(bin()
        .env("RUBIX_SYNC_CONFIG", &config)
        .env_remove("DATABASE_URL")
        .args(["db", "status"]));
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("readable by group"));
}
