#!/usr/bin/env bash
# Sets up PostgreSQL for rubix-sync; idempotent (run it again at any time). See --help.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/setup_postgres.sh [options]

Sets up PostgreSQL for rubix-sync, idempotently:
  1. installs PostgreSQL from the OS packages if it is missing (apt; needs root);
  2. starts it if it is not answering;
  3. creates a least-privilege login role (no superuser, no createdb, no createrole) and the
     database, owned by that role; an existing database (e.g. the old scripts' rubix_tokens)
     and our tables in it are handed to the role;
  4. gives the role a generated password: only its SCRAM-SHA-256 verifier, computed here,
     reaches the server, and the password itself is never on a command line or in any log;
  5. writes the connection settings into the rubix-sync config file (mode 0600), keeping an
     existing password for the same role, database, host and port;
  6. runs `rubix-sync db migrate` with that config.

Options:
  --db NAME            database (default: rubix_tokens)
  --role NAME          login role for rubix-sync (default: rubix)
  --host HOST          where rubix-sync connects (default: 127.0.0.1)
  --port PORT          (default: 5432)
  --config PATH        config file to write (default: $RUBIX_SYNC_CONFIG, else
                       ${XDG_CONFIG_HOME:-~/.config}/rubix-sync/config.toml)
  --owner USER         chown the config file to USER (the account that runs rubix-sync)
  --rubix-sync PATH    the rubix-sync binary (default: rubix-sync on PATH, else this
                       checkout's target/release or target/debug build)
  --admin-url URL      a superuser connection (libpq URL, password from ~/.pgpass or
                       PGPASSWORD), for a server not on this machine; default: the local
                       socket as the postgres OS user
  --no-install         fail instead of installing PostgreSQL when it is missing
  -h, --help           this text
EOF
}

DB=rubix_tokens
ROLE=rubix
HOST=127.0.0.1
PORT=5432
CONFIG="${RUBIX_SYNC_CONFIG:-${XDG_CONFIG_HOME:-$HOME/.config}/rubix-sync/config.toml}"
OWNER=""
BIN=""
ADMIN_URL=""
INSTALL=1

log() { printf 'setup_postgres: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
    case $1 in
    --db) need_value "$@"; DB=$2; shift 2 ;;
    --role) need_value "$@"; ROLE=$2; shift 2 ;;
    --host) need_value "$@"; HOST=$2; shift 2 ;;
    --port) need_value "$@"; PORT=$2; shift 2 ;;
    --config) need_value "$@"; CONFIG=$2; shift 2 ;;
    --owner) need_value "$@"; OWNER=$2; shift 2 ;;
    --rubix-sync) need_value "$@"; BIN=$2; shift 2 ;;
    --admin-url) need_value "$@"; ADMIN_URL=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
    esac
done

# Names go into SQL only as quoted identifiers and into the URL unescaped: keep them plain.
for name in "$DB" "$ROLE"; do
    [[ $name =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "$name: use lower-case letters, digits and _"
done
[[ $PORT =~ ^[0-9]+$ ]] || die "--port $PORT: not a number"
[[ $HOST =~ ^[A-Za-z0-9.:_-]+$ ]] || die "--host $HOST: not a host name or address"
command -v python3 >/dev/null || die "python3 is needed to compute the password verifier"

repo_root=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z $BIN ]]; then
    if command -v rubix-sync >/dev/null; then
        BIN=$(command -v rubix-sync)
    elif [[ -x $repo_root/target/release/rubix-sync ]]; then
        BIN=$repo_root/target/release/rubix-sync
    elif [[ -x $repo_root/target/debug/rubix-sync ]]; then
        BIN=$repo_root/target/debug/rubix-sync
    else
        die "no rubix-sync binary: build it (cargo build --release) or pass --rubix-sync PATH"
    fi
fi

# 1. Installed?
if [[ -z $ADMIN_URL ]] && ! command -v pg_ctlcluster >/dev/null && ! command -v pg_ctl >/dev/null; then
    [[ $INSTALL == 1 ]] || die "PostgreSQL is not installed (run without --no-install to install it)"
    [[ $EUID == 0 ]] || die "installing PostgreSQL needs root"
    log "installing PostgreSQL from the OS packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
fi

# 2. Running?
if ! pg_isready -q -h "$HOST" -p "$PORT"; then
    [[ -z $ADMIN_URL ]] || die "nothing answers on $HOST:$PORT"
    log "starting PostgreSQL"
    if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
        systemctl start postgresql
    else
        for dir in /etc/postgresql/*/main; do
            [[ -d $dir ]] || continue
            version=$(basename "$(dirname "$dir")")
            pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        done
    fi
    for _ in $(seq 30); do
        pg_isready -q -h "$HOST" -p "$PORT" && break
        sleep 1
    done
    pg_isready -q -h "$HOST" -p "$PORT" || die "PostgreSQL does not answer on $HOST:$PORT"
fi

# Runs SQL from stdin as a superuser, in database $1.
admin_psql() {
    local dbname=$1
    shift
    if [[ -n $ADMIN_URL ]]; then
        psql -X -q -v ON_ERROR_STOP=1 -d "$ADMIN_URL" -c "\\connect $dbname" -f - "$@"
    elif [[ $EUID == 0 ]]; then
        (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" -d "$dbname" "$@")
    else
        (cd / && sudo -u postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" -d "$dbname" "$@")
    fi
}

# 3. The password: the one already in the config for this role/database/host/port, else new.
PASSWORD=""
if [[ -f $CONFIG ]]; then
    re="^[[:space:]]*database[[:space:]]*=[[:space:]]*\"postgres://${ROLE}:([A-Za-z0-9]+)@${HOST}:${PORT}/${DB}\"[[:space:]]*$"
    while IFS= read -r line; do
        if [[ $line =~ $re ]]; then
            PASSWORD=${BASH_REMATCH[1]}
        fi
    done <"$CONFIG"
fi
if [[ -n $PASSWORD ]]; then
    log "keeping the password already in $CONFIG"
else
    PASSWORD=$(python3 -c 'import secrets, string
a = string.ascii_letters + string.digits
print("".join(secrets.choice(a) for _ in range(32)))')
    log "generated a new password for role $ROLE"
fi

# The SCRAM-SHA-256 verifier PostgreSQL stores (RFC 5802/7677); the password goes in on stdin.
# shellcheck disable=SC2016 # the single-quoted text is Python, not shell
VERIFIER=$(printf '%s' "$PASSWORD" | python3 -c 'import base64, hashlib, hmac, os, sys
pw = sys.stdin.read().encode()
salt, it = os.urandom(16), 4096
salted = hashlib.pbkdf2_hmac("sha256", pw, salt, it)
client = hmac.new(salted, b"Client Key", "sha256").digest()
server = hmac.new(salted, b"Server Key", "sha256").digest()
b = lambda x: base64.b64encode(x).decode()
print(f"SCRAM-SHA-256${it}:{b(salt)}${b(hashlib.sha256(client).digest())}:{b(server)}")')

# 4. Role and database (SQL on stdin; names as psql variables, quoted by psql).
admin_psql postgres -v role="$ROLE" -v db="$DB" <<SQL
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
\set verifier '$VERIFIER'
ALTER ROLE :"role" PASSWORD :'verifier';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
ALTER DATABASE :"db" OWNER TO :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"role";
SQL
# Tables a previous system or a superuser created in it are handed to the role, so migrations
# (indexes, bulk loads) can manage them.
admin_psql "$DB" -v role="$ROLE" <<'SQL'
SELECT format('ALTER TABLE %I.%I OWNER TO %I', schemaname, tablename, :'role')
FROM pg_tables
WHERE schemaname = 'public'
  AND tablename IN ('tokeninfo', 'sync_failures', 'sync_runs', 'tokenrecords',
                    'processeddatabases', 'rubix_sync_migrations')
  AND tableowner <> :'role' \gexec
SELECT format('ALTER SEQUENCE %I.%I OWNER TO %I', schemaname, sequencename, :'role')
FROM pg_sequences
WHERE schemaname = 'public' AND sequenceowner <> :'role'
  AND sequencename IN ('sync_runs_id_seq', 'tokenrecords_id_seq') \gexec
SQL
log "role $ROLE (least privilege) owns database $DB"

# 5. The config file, 0600 from the first byte; other keys in it are kept.
mkdir -p "$(dirname "$CONFIG")"
tmp=$(umask 077 && mktemp "$CONFIG.XXXXXX")
trap 'rm -f "$tmp"' EXIT
if [[ -f $CONFIG ]]; then
    grep -v '^[[:space:]]*database[[:space:]]*=' "$CONFIG" >"$tmp" || true
fi
printf 'database = "postgres://%s:%s@%s:%s/%s"\n' "$ROLE" "$PASSWORD" "$HOST" "$PORT" "$DB" >>"$tmp"
chmod 600 "$tmp"
if [[ -n $OWNER ]]; then
    chown "$OWNER" "$tmp"
fi
mv "$tmp" "$CONFIG"
trap - EXIT
log "wrote $CONFIG (mode 0600)"

# 6. Schema, through the config just written (nothing else may choose the database).
env -u DATABASE_URL -u PGHOST -u PGHOSTADDR -u PGPORT -u PGDATABASE -u PGUSER -u PGSERVICE \
    -u PGPASSWORD RUBIX_SYNC_CONFIG="$CONFIG" "$BIN" db migrate
log "done: rubix-sync now uses postgres://$ROLE@$HOST:$PORT/$DB (password in $CONFIG)"
