//! scripts/setup_postgres.sh against this machine's PostgreSQL: a least-privilege role and
//! database, a generated password that only reaches the server as a SCRAM verifier and is in
//! no output, a 0600 config file rubix-sync then uses, idempotent re-runs; shellcheck-clean.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(mut c) =
            postgres::Client::connect(&format!("{}/postgres", pg_base()), postgres::NoTls)
        {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {0} WITH (FORCE); DROP ROLE IF EXISTS {0}",
                self.0
            ));
        }
    }
}

fn setup(name: &str, config: &std::path::Path) -> (i32, String) {
    let out = Command::new(root().join("scripts/setup_postgres.sh"))
        .args(["--db", name, "--role", name, "--no-install", "--config"])
        .arg(config)
        .arg("--rubix-sync")
        .arg(env!("CARGO_BIN_EXE_rubix-sync"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The password from the config file's `database = "postgres://role:PASSWORD@…"` line.
fn password_in(config: &std::path::Path, name: &str) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let line = text.lines().find(|l| l.starts_with("database")).unwrap();
    let start = line.find(&format!("//{name}:")).unwrap() + name.len() + 3;
    let end = line.find('@').unwrap();
    line[start..end].to_string()
}

/// Checks a SCRAM-SHA-256 verifier against a password (RFC 5802: StoredKey = H(HMAC(salted,
/// "Client Key"))), in Python, the password on stdin.
fn verifier_matches(verifier: &str, password: &str) -> bool {
    use std::io::Write;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(
            "import base64, hashlib, hmac, sys\n\
             v, pw = sys.argv[1], sys.stdin.read().encode()\n\
             it_salt, keys = v.split('$', 1)[1].split('$')\n\
             it, salt = it_salt.split(':')\n\
             stored, server = keys.split(':')\n\
             salted = hashlib.pbkdf2_hmac('sha256', pw, base64.b64decode(salt), int(it))\n\
             ck = hmac.new(salted, b'Client Key', 'sha256').digest()\n\
             sk = hmac.new(salted, b'Server Key', 'sha256').digest()\n\
             ok = base64.b64encode(hashlib.sha256(ck).digest()).decode() == stored and \
                  base64.b64encode(sk).decode() == server\n\
             sys.exit(0 if ok else 1)",
        )
        .arg(verifier)
        .stdin(std::process::Stdio::piped())
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
fn setup_postgres_creates_a_least_privilege_role_and_a_0600_config_idempotently() {
    let name = format!("rubix_setup_{}", std::process::id());
    let _cleanup = Cleanup(name.clone());
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("conf/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        "# kept\ndatabase = \"postgres://someone@elsewhere/db\"\n",
    )
    .unwrap();

    let (code, output) = setup(&name, &config);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("schema at version 2"), "{output}");
    let password = password_in(&config, &name);
    assert!(password.len() >= 32, "a long generated password");
    assert!(!output.contains(&password), "password printed: {output}");
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.starts_with("# kept\n"), "other lines kept: {text}");
    assert_eq!(
        text.matches("database").count(),
        1,
        "one database line: {text}"
    );

    let mut admin =
        postgres::Client::connect(&format!("{}/postgres", pg_base()), postgres::NoTls).unwrap();
    let role = admin
        .query_one(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolpassword
             FROM pg_authid WHERE rolname = $1",
            &[&name],
        )
        .unwrap();
    assert!(!role.get::<_, bool>(0) && !role.get::<_, bool>(1) && !role.get::<_, bool>(2));
    assert!(role.get::<_, bool>(3));
    let verifier: String = role.get(4);
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
    assert!(!verifier.contains(&password));
    assert!(
        verifier_matches(&verifier, &password),
        "the stored verifier is the password's"
    );
    assert!(!verifier_matches(&verifier, "not-the-password"));
    let owner: String = admin
        .query_one(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, name);

    // rubix-sync uses the config file (RUBIX_SYNC_CONFIG) and lands rows as that role.
    let out = run(bin()
        .env("RUBIX_SYNC_CONFIG", &config)
        .env_remove("DATABASE_URL")
        .args(["sync", "--quiet", "--offline"])
        .arg(fixtures().join("node")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut db =
        postgres::Client::connect(&format!("{}/{name}", pg_base()), postgres::NoTls).unwrap();
    let row = db
        .query_one(
            "SELECT count(*), (SELECT tableowner FROM pg_tables WHERE tablename = 'tokeninfo')::text
             FROM TokenInfo",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 300);
    assert_eq!(row.get::<_, String>(1), name);
    drop(db);

    // Again: same password, still valid, nothing else changed.
    let (code, output) = setup(&name, &config);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("keeping the password"), "{output}");
    assert_eq!(password_in(&config, &name), password);
    let verifier: String = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert!(verifier_matches(&verifier, &password));
}

#[test]
fn setup_postgres_help_and_bad_arguments() {
    let script = root().join("scripts/setup_postgres.sh");
    let out = Command::new(&script).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("least-privilege"));
    let out = Command::new(&script)
        .args(["--db", "Robert'); DROP"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lower-case letters"));
}

#[test]
fn shell_scripts_are_shellcheck_clean() {
    let scripts: Vec<_> = std::fs::read_dir(root().join("scripts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    assert!(!scripts.is_empty());
    let out = Command::new("shellcheck")
        .args(&scripts)
        .output()
        .expect("shellcheck is needed (apt-get install shellcheck; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
