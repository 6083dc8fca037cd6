#!/usr/bin/env bash
# Sets up pgAdmin 4 (server mode) for the rubix_tokens database; idempotent. See --help.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/setup_pgadmin.sh [options]

Sets up pgAdmin 4 in server mode, idempotently:
  1. pgAdmin 4 from PyPI in a venv of its own;
  2. its data (accounts, sessions, logs) in a 0700 directory; listening on 127.0.0.1 only
     unless --expose; pgAdmin's upgrade check (a call to pgadmin.org) switched off;
  3. an admin account with a generated password, stored in DATA/admin-password (0600) and
     given to pgAdmin through its environment, never on a command line or in a log;
  4. the rubix_tokens server pre-registered (servers.json), from the rubix-sync config file's
     database URL (host, port, database, role; never its password);
  5. a systemd unit (DATA/rubix-pgadmin.service; installed and started with --systemd).
Then open http://127.0.0.1:PORT/ (an SSH tunnel from your desktop when it runs on a VM).

Options:
  --venv DIR           pgAdmin's venv (default: /opt/rubix-pgadmin/venv as root, else
                       ~/.local/share/rubix-pgadmin/venv)
  --data DIR           pgAdmin's data (default: /var/lib/rubix-pgadmin as root, else
                       ~/.local/share/rubix-pgadmin/data)
  --port PORT          (default: 5050)
  --expose             listen on every interface instead of 127.0.0.1 (put TLS in front!)
  --email EMAIL        the admin login (default: admin@rubix.local)
  --config PATH        the rubix-sync config to take the server from (default:
                       $RUBIX_SYNC_CONFIG, else ~/.config/rubix-sync/config.toml)
  --user USER          the account the service runs as (default: the current one)
  --pgadmin-version V  (default: 9.18)
  --systemd            install /etc/systemd/system/rubix-pgadmin.service and start it
  --start              run pgAdmin in the foreground once set up (no systemd)
  -h, --help           this text
EOF
}

if [[ $EUID == 0 ]]; then
    VENV=/opt/rubix-pgadmin/venv
    DATA=/var/lib/rubix-pgadmin
else
    VENV=$HOME/.local/share/rubix-pgadmin/venv
    DATA=$HOME/.local/share/rubix-pgadmin/data
fi
PORT=5050
LISTEN=127.0.0.1
EMAIL=admin@rubix.local
CONFIG="${RUBIX_SYNC_CONFIG:-${XDG_CONFIG_HOME:-$HOME/.config}/rubix-sync/config.toml}"
RUN_USER=$(id -un)
VERSION=9.18
SYSTEMD=0
START=0

log() { printf 'setup_pgadmin: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
    case $1 in
    --venv) need_value "$@"; VENV=$2; shift 2 ;;
    --data) need_value "$@"; DATA=$2; shift 2 ;;
    --port) need_value "$@"; PORT=$2; shift 2 ;;
    --expose) LISTEN=0.0.0.0; shift ;;
    --email) need_value "$@"; EMAIL=$2; shift 2 ;;
    --config) need_value "$@"; CONFIG=$2; shift 2 ;;
    --user) need_value "$@"; RUN_USER=$2; shift 2 ;;
    --pgadmin-version) need_value "$@"; VERSION=$2; shift 2 ;;
    --systemd) SYSTEMD=1; shift ;;
    --start) START=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
    esac
done

[[ $PORT =~ ^[0-9]+$ ]] || die "--port $PORT: not a number"
[[ $EMAIL =~ ^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+$ ]] || die "--email $EMAIL: not an e-mail address"
[[ $VERSION =~ ^[0-9.]+$ ]] || die "--pgadmin-version $VERSION: not a version"
VENV=$(realpath -m "$VENV")
DATA=$(realpath -m "$DATA")

# 1. pgAdmin in its own venv.
if [[ -x $VENV/bin/pgadmin4 ]] && "$VENV/bin/python" -c "
import importlib.metadata, sys
sys.exit(importlib.metadata.version('pgadmin4') != '$VERSION')" 2>/dev/null; then
    log "pgAdmin $VERSION already in $VENV"
else
    log "installing pgAdmin $VERSION from PyPI into $VENV (a minute or two)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "pgadmin4==$VERSION" >&2
fi
# pgadmin4 is a namespace package (no __init__.py): its directory is its search location.
PKG=$("$VENV/bin/python" -c 'import importlib.util
print(list(importlib.util.find_spec("pgadmin4").submodule_search_locations)[0])' 2>/dev/null || true)
[[ -n $PKG && -f $PKG/config.py ]] || die "cannot find pgAdmin's package in $VENV"

# 2. Data and configuration.
(umask 077 && mkdir -p "$DATA")
chmod 700 "$DATA"
cat >"$PKG/config_local.py" <<EOF
# Written by rubix-sync's scripts/setup_pgadmin.sh; run it again rather than editing.
SERVER_MODE = True
DEFAULT_SERVER = '$LISTEN'
DEFAULT_SERVER_PORT = $PORT
DATA_DIR = '$DATA'
LOG_FILE = '$DATA/pgadmin4.log'
SQLITE_PATH = '$DATA/pgadmin4.db'
SESSION_DB_PATH = '$DATA/sessions'
STORAGE_DIR = '$DATA/storage'
AZURE_CREDENTIAL_CACHE_DIR = '$DATA/azurecredentialcache'
KERBEROS_CCACHE_DIR = '$DATA/krbccache'
# Nothing is fetched from the Internet.
UPGRADE_CHECK_ENABLED = False
# Logins like admin@rubix.local: a private domain is fine for a local admin account.
ALLOW_SPECIAL_EMAIL_DOMAINS = ['local', 'internal', 'lan', 'home.arpa']
GLOBALLY_DELIVERABLE = False
EOF
if [[ $LISTEN != 127.0.0.1 ]]; then
    log "warning: --expose: pgAdmin listens on every interface; put TLS and a firewall in front"
fi

# 3. The admin account.
PASSFILE=$DATA/admin-password
if [[ -s $PASSFILE ]]; then
    log "keeping the admin password in $PASSFILE"
else
    (umask 077 && python3 -c 'import secrets, string
a = string.ascii_letters + string.digits
print("".join(secrets.choice(a) for _ in range(24)))' >"$PASSFILE")
    log "generated an admin password into $PASSFILE (mode 0600)"
fi
chmod 600 "$PASSFILE"
if [[ ! -s $DATA/pgadmin4.db ]]; then
    log "creating pgAdmin's configuration database with the admin account $EMAIL"
    PGADMIN_SETUP_EMAIL=$EMAIL PGADMIN_SETUP_PASSWORD=$(<"$PASSFILE") \
        "$VENV/bin/python" "$PKG/setup.py" setup-db >"$DATA/setup.log" 2>&1 \
        || die "pgAdmin's setup-db failed; see $DATA/setup.log"
fi

# 4. The rubix_tokens server, from the rubix-sync config (no password: pgAdmin asks for it,
#    or reads ~/.pgpass).
if [[ -f $CONFIG ]]; then
    re='^[[:space:]]*database[[:space:]]*=[[:space:]]*"postgres(ql)?://([^:@/"]+)(:[^@"]*)?@([^:/"]+)(:([0-9]+))?/([^?"]+)'
    url_line=$(grep -E '^[[:space:]]*database[[:space:]]*=' "$CONFIG" | head -n 1 || true)
    if [[ $url_line =~ $re ]]; then
        role=${BASH_REMATCH[2]} host=${BASH_REMATCH[4]} port=${BASH_REMATCH[6]:-5432} db=${BASH_REMATCH[7]}
        cat >"$DATA/servers.json" <<EOF
{
  "Servers": {
    "1": {
      "Name": "$db ($host)",
      "Group": "rubix-sync",
      "Host": "$host",
      "Port": $port,
      "MaintenanceDB": "$db",
      "Username": "$role",
      "SSLMode": "prefer"
    }
  }
}
EOF
        "$VENV/bin/python" "$PKG/setup.py" load-servers "$DATA/servers.json" --user "$EMAIL" \
            --replace >>"$DATA/setup.log" 2>&1 || die "loading servers.json failed; see $DATA/setup.log"
        log "registered server $db on $host:$port as $role"
    else
        log "warning: no postgres:// database line in $CONFIG; no server registered"
    fi
else
    log "warning: $CONFIG not found (run scripts/setup_postgres.sh first); no server registered"
fi

# 5. systemd.
UNIT=$DATA/rubix-pgadmin.service
cat >"$UNIT" <<EOF
[Unit]
Description=pgAdmin 4 for rubix-sync (server mode, $LISTEN:$PORT)
After=network.target postgresql.service

[Service]
Type=simple
User=$RUN_USER
ExecStart=$VENV/bin/pgadmin4
Restart=on-failure
RestartSec=10
NoNewPrivileges=true
PrivateTmp=true

[Install]
WantedBy=multi-user.target
EOF
if [[ $EUID == 0 && $RUN_USER != root ]]; then
    chown -R "$RUN_USER" "$DATA"
fi
if [[ $SYSTEMD == 1 ]]; then
    [[ $EUID == 0 ]] || die "--systemd needs root"
    install -m 0644 "$UNIT" /etc/systemd/system/rubix-pgadmin.service
    systemctl daemon-reload
    systemctl enable --now rubix-pgadmin.service
    log "rubix-pgadmin.service enabled and started"
else
    log "systemd unit written to $UNIT (install it with --systemd)"
fi
log "pgAdmin: http://$LISTEN:$PORT/  login $EMAIL, password in $PASSFILE"
if [[ $START == 1 ]]; then
    exec "$VENV/bin/pgadmin4"
fi
