//! Which database a run writes to, and how to reach it, without ever printing a password.
//!
//! Precedence (first that is set wins): `--database`, `DATABASE_URL`, libpq's `PG*`
//! environment variables, the `database` key of the config file
//! (`<config dir>/rubix-sync/config.toml`), else an SQLite file in our data directory.
//! Missing PostgreSQL fields are filled from `PG*` variables, and a missing password from
//! `PGPASSFILE` / `~/.pgpass` with libpq's matching rules.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use postgres::config::Host;
use postgres::Config;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::SinkError;

/// Where a run's rows go.
pub enum Target {
    Postgres(Box<PgTarget>),
    Sqlite(PathBuf),
}

impl Target {
    pub fn describe(&self) -> String {
        match self {
            Target::Postgres(p) => p.describe(),
            Target::Sqlite(p) => format!("sqlite:{}", p.display()),
        }
    }
}

/// TLS modes, as libpq names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    /// Encrypt; do not verify the server certificate (libpq's `require` without a root cert).
    Require,
    /// Encrypt and verify the chain, not the host name.
    VerifyCa,
    /// Encrypt, verify the chain and the host name.
    VerifyFull,
}

/// A PostgreSQL connection target: libpq-style settings plus our TLS set-up.
#[derive(Clone)]
pub struct PgTarget {
    config: Config,
    ssl_mode: SslMode,
    tls: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl PgTarget {
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn tls(&self) -> Option<MakeRustlsConnect> {
        self.tls.clone()
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// The same server, role and TLS settings, another database.
    pub fn with_dbname(&self, dbname: &str) -> PgTarget {
        let mut t = self.clone();
        t.config.dbname(dbname);
        t
    }

    /// `postgres://user@host:port/db?sslmode=…`, never with the password.
    pub fn describe(&self) -> String {
        let host = self
            .config
            .get_hosts()
            .first()
            .map(|h| match h {
                Host::Tcp(h) => h.clone(),
                Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_default();
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let user = self.config.get_user().unwrap_or("");
        let db = self.config.get_dbname().unwrap_or("");
        let mode = match self.ssl_mode {
            SslMode::Disable => "",
            SslMode::Prefer => "",
            SslMode::Require => "?sslmode=require",
            SslMode::VerifyCa => "?sslmode=verify-ca",
            SslMode::VerifyFull => "?sslmode=verify-full",
        };
        format!("postgres://{user}@{host}:{port}/{db}{mode}")
    }
}

/// Replaces the password in anything URL-shaped (`scheme://user:secret@host`) and in
/// `password=…` pairs, for log lines and error messages built from user input.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(['/', ' ', '?']).unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    let mut result = String::new();
    for (i, word) in out.split(' ').enumerate() {
        if i > 0 {
            result.push(' ');
        }
        if word.to_ascii_lowercase().starts_with("password=") {
            result.push_str("password=***");
        } else {
            result.push_str(word);
        }
    }
    result
}

/// Reads settings through a function, so tests can supply their own environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Where the setting came from, for the log line that says which database a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Flag,
    DatabaseUrl,
    PgEnv,
    ConfigFile,
    Default,
}

/// Picks the target by precedence. `config_file` is the parsed `database` key, if any.
pub fn resolve(
    flag: Option<&str>,
    env: Env<'_>,
    config_file_database: Option<String>,
    default_sqlite: &Path,
) -> Result<(Target, Origin), SinkError> {
    let pg_env_set = [
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGDATABASE",
        "PGUSER",
        "PGSERVICE",
    ]
    .iter()
    .any(|k| env(k).is_some_and(|v| !v.is_empty()));
    let (spec, origin) = if let Some(f) = flag {
        (Some(f.to_string()), Origin::Flag)
    } else if let Some(u) = env("DATABASE_URL").filter(|v| !v.is_empty()) {
        (Some(u), Origin::DatabaseUrl)
    } else if pg_env_set {
        (None, Origin::PgEnv)
    } else if let Some(c) = config_file_database {
        (Some(c), Origin::ConfigFile)
    } else {
        return Ok((
            Target::Sqlite(default_sqlite.to_path_buf()),
            Origin::Default,
        ));
    };
    let target = match spec {
        Some(s) if s.starts_with("sqlite:") => {
            let path = s.trim_start_matches("sqlite:").trim_start_matches("//");
            if path.is_empty() {
                return Err(SinkError::Config(
                    "sqlite: needs a path, e.g. sqlite:/var/lib/rubix/tokens.sqlite".into(),
                ));
            }
            Target::Sqlite(PathBuf::from(path))
        }
        Some(s) => Target::Postgres(Box::new(pg_target(&s, env)?)),
        None => Target::Postgres(Box::new(pg_target("", env)?)),
    };
    Ok((target, origin))
}

/// Splits off the TLS options the `postgres` crate does not know (`verify-ca`, `verify-full`,
/// `sslrootcert`) and returns the rest for it to parse.
fn take_tls_options(spec: &str) -> (String, Option<String>, Option<String>) {
    let mut mode = None;
    let mut root = None;
    if spec.contains("://") {
        let Some((base, query)) = spec.split_once('?') else {
            return (spec.to_string(), None, None);
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("sslmode", v)) => mode = Some(v.to_string()),
                Some(("sslrootcert", v)) => root = Some(v.to_string()),
                _ => kept.push(pair),
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (rebuilt, mode, root)
    } else {
        let mut kept = Vec::new();
        for word in spec.split_whitespace() {
            match word.split_once('=') {
                Some(("sslmode", v)) => mode = Some(v.to_string()),
                Some(("sslrootcert", v)) => root = Some(v.to_string()),
                _ => kept.push(word),
            }
        }
        (kept.join(" "), mode, root)
    }
}

fn parse_ssl_mode(s: &str) -> Result<SslMode, SinkError> {
    Ok(match s {
        "disable" => SslMode::Disable,
        "allow" | "prefer" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        other => return Err(SinkError::Config(format!("unknown sslmode {other:?}"))),
    })
}

fn home(env: Env<'_>) -> Option<PathBuf> {
    env("HOME").map(PathBuf::from)
}

/// Builds a PostgreSQL target from a URL or `key=value` string, filling gaps from `PG*`.
pub fn pg_target(spec: &str, env: Env<'_>) -> Result<PgTarget, SinkError> {
    let (rest, mode, root) = take_tls_options(spec);
    let mut config = if rest.trim().is_empty() {
        Config::new()
    } else {
        Config::from_str(&rest).map_err(|e| {
            SinkError::Config(format!("invalid database setting {}: {e}", redact(spec)))
        })?
    };
    if config.get_hosts().is_empty() {
        let host = env("PGHOST")
            .or_else(|| env("PGHOSTADDR"))
            .unwrap_or_else(|| "localhost".into());
        if host.starts_with('/') {
            config.host_path(&host);
        } else {
            config.host(&host);
        }
    }
    if config.get_ports().is_empty() {
        if let Some(p) = env("PGPORT") {
            let port = p
                .parse()
                .map_err(|_| SinkError::Config(format!("PGPORT {p:?} is not a port")))?;
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        config.user(&user);
    }
    if config.get_dbname().is_none() {
        config.dbname(&env("PGDATABASE").unwrap_or_else(|| "rubix_tokens".into()));
    }
    if config.get_password().is_none() {
        if let Some(pw) = env("PGPASSWORD") {
            config.password(pw);
        } else if let Some(pw) = pgpass_lookup(&config, env) {
            config.password(pw);
        }
    }
    if config.get_application_name().is_none() {
        config.application_name("rubix-sync");
    }
    config.connect_timeout(std::time::Duration::from_secs(10));
    let mode = match mode.or_else(|| env("PGSSLMODE")) {
        Some(m) => parse_ssl_mode(&m)?,
        None => SslMode::Prefer,
    };
    let root = root
        .or_else(|| env("PGSSLROOTCERT"))
        .map(PathBuf::from)
        .or_else(|| {
            home(env)
                .map(|h| h.join(".postgresql/root.crt"))
                .filter(|p| p.exists())
        });
    let tls = match mode {
        SslMode::Disable | SslMode::Prefer => {
            // `prefer` is libpq's default; we connect in plain text there, as a libpq built
            // without TLS would, and say so when TLS is asked for explicitly instead.
            config.ssl_mode(postgres::config::SslMode::Disable);
            None
        }
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            config.ssl_mode(postgres::config::SslMode::Require);
            Some(tls_connector(mode, root.as_deref())?)
        }
    };
    Ok(PgTarget {
        config,
        ssl_mode: mode,
        tls,
    })
}

/// libpq's `.pgpass`: `host:port:database:user:password`, `*` matches anything, `\:` and `\\`
/// escape; first match wins; ignored unless only the owner can read it.
fn pgpass_lookup(config: &Config, env: Env<'_>) -> Option<String> {
    let path = env("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| home(env).map(|h| h.join(".pgpass")))?;
    let meta = std::fs::metadata(&path).ok()?;
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "password file is readable by group or others; ignoring it (chmod 0600)");
            return None;
        }
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match config.get_hosts().first()? {
        Host::Tcp(h) => h.clone(),
        Host::Unix(_) => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let db = config.get_dbname().unwrap_or("");
    let user = config.get_user().unwrap_or("");
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() != 5 {
            continue;
        }
        let m = |pat: &str, v: &str| pat == "*" || pat == v;
        if m(&fields[0], &host) && m(&fields[1], &port) && m(&fields[2], db) && m(&fields[3], user)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().unwrap().push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

fn tls_connector(mode: SslMode, root: Option<&Path>) -> Result<MakeRustlsConnect, SinkError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SinkError::Config(format!("TLS set-up: {e}")))?;
    let config = match mode {
        SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verify::EncryptOnly(provider)))
            .with_no_client_auth(),
        _ => {
            let mut roots = rustls::RootCertStore::empty();
            match root {
                Some(path) => {
                    let certs = CertificateDer::pem_file_iter(path)
                        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                        .map_err(|e| {
                            SinkError::Config(format!(
                                "reading sslrootcert {}: {e}",
                                path.display()
                            ))
                        })?;
                    for c in certs {
                        roots.add(c).map_err(|e| {
                            SinkError::Config(format!("sslrootcert {}: {e}", path.display()))
                        })?;
                    }
                }
                None => {
                    for c in system_roots() {
                        let _ = roots.add(c);
                    }
                }
            }
            if roots.is_empty() {
                return Err(SinkError::Config(
                    "sslmode=verify-* needs a CA: set sslrootcert=PATH (or PGSSLROOTCERT, ~/.postgresql/root.crt)".into(),
                ));
            }
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| SinkError::Config(format!("TLS verifier: {e}")))?;
            let b = builder.dangerous();
            if mode == SslMode::VerifyCa {
                b.with_custom_certificate_verifier(Arc::new(verify::ChainOnly(inner)))
                    .with_no_client_auth()
            } else {
                b.with_custom_certificate_verifier(inner)
                    .with_no_client_auth()
            }
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The system trust store (Debian/Ubuntu and RHEL bundle locations).
fn system_roots() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    for bundle in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ] {
        if let Ok(it) = rustls::pki_types::CertificateDer::pem_file_iter(bundle) {
            return it.flatten().collect();
        }
    }
    Vec::new()
}

mod verify {
    //! Certificate verifiers for libpq's weaker modes.
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, Error, SignatureScheme};

    /// `sslmode=require`: encrypted, server not authenticated (what libpq does).
    #[derive(Debug)]
    pub struct EncryptOnly(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for EncryptOnly {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// `sslmode=verify-ca`: the chain must lead to a trusted CA; the host name is not checked.
    #[derive(Debug)]
    pub struct ChainOnly(pub Arc<rustls::client::WebPkiServerVerifier>);

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end: &CertificateDer<'_>,
            inter: &[CertificateDer<'_>],
            name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            match self.0.verify_server_cert(end, inter, name, ocsp, now) {
                Err(Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
                | Err(Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls12_signature(m, c, d)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls13_signature(m, c, d)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}

/// The config file: `RUBIX_SYNC_CONFIG` if set (a service unit or a set-up script naming its
/// own), else `<config dir>/rubix-sync/config.toml`, e.g. `~/.config/rubix-sync/config.toml`
/// with `database = "postgres://…"`.
pub fn config_file_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RUBIX_SYNC_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    directories::ProjectDirs::from("", "", "rubix-sync").map(|d| d.config_dir().join("config.toml"))
}

/// Reads the `database` key from the config file, warning when others can read it.
pub fn read_config_file(path: &Path) -> Result<Option<String>, SinkError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SinkError::Config(format!("{}: {e}", path.display()))),
    };
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "config file is readable by group or others; it may hold a password (chmod 0600)");
        }
    }
    #[derive(serde::Deserialize)]
    struct File {
        database: Option<String>,
    }
    let parsed: File = toml::from_str(&text)
        .map_err(|e| SinkError::Config(format!("{}: {}", path.display(), e.message())))?;
    Ok(parsed.database)
}

/// Where the zero-setup SQLite sink lives: our data directory, never a node directory.
pub fn default_sqlite_path() -> PathBuf {
    directories::ProjectDirs::from("", "", "rubix-sync")
        .map(|d| d.data_dir().join("rubix_tokens.sqlite"))
        .unwrap_or_else(|| std::env::temp_dir().join("rubix-sync/rubix_tokens.sqlite"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn precedence_flag_url_pgenv_file_default() {
        let def = Path::new("/d/tokens.sqlite");
        let env = env_of(&[("DATABASE_URL", "postgres://u@h1/db1"), ("PGHOST", "h2")]);
        let (t, o) = resolve(
            Some("sqlite:/x.sqlite"),
            &env,
            Some("postgres://f/db".into()),
            def,
        )
        .unwrap();
        assert_eq!(
            (t.describe(), o),
            ("sqlite:/x.sqlite".to_string(), Origin::Flag)
        );
        let (t, o) = resolve(None, &env, None, def).unwrap();
        assert_eq!(o, Origin::DatabaseUrl);
        assert!(
            t.describe().starts_with("postgres://u@h1:5432/db1"),
            "{}",
            t.describe()
        );
        let env = env_of(&[
            ("PGHOST", "h2"),
            ("PGUSER", "ru"),
            ("PGDATABASE", "d2"),
            ("PGPORT", "5433"),
        ]);
        let (t, o) = resolve(None, &env, Some("sqlite:/f".into()), def).unwrap();
        assert_eq!(
            (t.describe(), o),
            ("postgres://ru@h2:5433/d2".to_string(), Origin::PgEnv)
        );
        let (t, o) = resolve(None, &env_of(&[]), Some("postgres://cf@h3/d3".into()), def).unwrap();
        assert_eq!(
            (t.describe(), o),
            ("postgres://cf@h3:5432/d3".to_string(), Origin::ConfigFile)
        );
        let (t, o) = resolve(None, &env_of(&[]), None, def).unwrap();
        assert_eq!(
            (t.describe(), o),
            ("sqlite:/d/tokens.sqlite".to_string(), Origin::Default)
        );
    }

    #[test]
    fn passwords_never_appear_in_descriptions_or_redactions() {
        let env = env_of(&[]);
        let t = pg_target(
            "postgres://alice:s3cr3t@db.example:6543/rubix?sslmode=disable",
            &env,
        )
        .unwrap();
        assert_eq!(t.describe(), "postgres://alice@db.example:6543/rubix");
        assert_eq!(t.config().get_password(), Some(&b"s3cr3t"[..]));
        let kv = pg_target("host=h user=bob password=hunter2 dbname=x", &env).unwrap();
        assert!(!kv.describe().contains("hunter2"));
        assert_eq!(
            redact("connect postgres://a:pw@h/db failed"),
            "connect postgres://a:***@h/db failed"
        );
        assert_eq!(redact("host=h password=pw"), "host=h password=***");
        assert_eq!(redact("postgres://a@h/db"), "postgres://a@h/db");
        let err = pg_target("postgres://a:topsecret@h/db?bogus=1", &env)
            .err()
            .unwrap();
        assert!(!err.to_string().contains("topsecret"), "{err}");
    }

    #[test]
    fn pgpass_is_used_only_when_private() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("pgpass");
        std::fs::write(
            &f,
            "# comment\nother:*:*:*:nope\nh:5432:rubix:u:pa\\:ss\n*:*:*:*:fallback\n",
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = f.display().to_string();
        let env = env_of(&[("PGPASSFILE", path.as_str())]);
        let t1 = pg_target("postgres://u@h/rubix", &env).unwrap();
        assert_eq!(t1.config().get_password(), Some(&b"pa:ss"[..]));
        let t2 = pg_target("postgres://x@h/other", &env).unwrap();
        assert_eq!(t2.config().get_password(), Some(&b"fallback"[..]));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let t3 = pg_target("postgres://u@h/rubix", &env).unwrap();
        assert_eq!(t3.config().get_password(), None);
    }

    #[test]
    fn tls_modes_parse_and_need_a_ca_to_verify() {
        let env = env_of(&[("HOME", "/nonexistent")]);
        let t = pg_target("postgres://u@h/db?sslmode=require", &env).unwrap();
        assert_eq!(t.ssl_mode(), SslMode::Require);
        assert!(t.tls().is_some());
        let t = pg_target("host=h sslmode=disable", &env).unwrap();
        assert!(t.tls().is_none());
        let err = pg_target(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent.pem",
            &env,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("sslrootcert"), "{err}");
        assert!(pg_target("postgres://u@h/db?sslmode=sometimes", &env).is_err());
    }
}
