#!/usr/bin/env python3
"""Real kubo, driven from the Rust integration tests (loopback only, never a public peer).

    kubo_tool.py init REPO                   make a loopback-only kubo repo (no blocks)
    kubo_tool.py build-live REPO SEED        fresh repo with files around chunk boundaries, small
                                             tokens and a directory; prints a JSON manifest of
                                             what kubo's own read path returns for each CID
    kubo_tool.py cat REPO CID...             kubo's read path; prints {cid: hex or null}
    kubo_tool.py hold REPO                   start kubo's node on REPO (takes repo.lock like a
                                             daemon), print "ready", run until stdin closes
    kubo_tool.py serve REPO PORT             point REPO's swarm at 127.0.0.1:PORT, start kubo's
                                             node there, print {"peer_id", "addr"} as JSON, run
                                             until stdin closes (a peer for the fetch tests; the
                                             environment's LIBP2P_FORCE_PNET reaches kubo)
    kubo_tool.py add REPO FILE...            kubo `add` of each file; prints {file: cid}

    serve options (before PORT's JSON line is printed):
      --routing TYPE     kubo's Routing.Type (dhtserver, dhtclient, dht; default: none)
      --connect ADDR     connect to this peer once running (repeatable)
      --add FILE         `add` FILE while online, so kubo announces it in the DHT
                         (repeatable); the JSON line then has {"cids": {FILE: CID}}
"""

import hashlib
import json
import os
import random
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kubo  # noqa: E402

CHUNK = 262144


def build_live(repo, seed):
    rng = random.Random(int(seed))
    kubo.make_repo(repo, swarm_key_hex=rng.randbytes(32).hex())
    manifest = {"files": [], "tokens": [], "directories": []}
    with tempfile.TemporaryDirectory() as scratch:
        sizes = [0, 1, 2, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 1, 3 * CHUNK - 7,
                 4 * CHUNK + 4096]
        for i, size in enumerate(sizes):
            p = os.path.join(scratch, f"f{i}")
            with open(p, "wb") as f:
                f.write(rng.randbytes(size))
            cid = kubo.add(repo, p)
            got = kubo.cat(repo, cid)
            manifest["files"].append({"cid": cid, "size": len(got),
                                      "sha256": hashlib.sha256(got).hexdigest()})
        for i in range(200):
            content = f"T{i % 7} {rng.randrange(0, 2**31)} bafybmi{rng.randbytes(26).hex()[:52]}"
            p = os.path.join(scratch, f"t{i}")
            with open(p, "w") as f:
                f.write(content)
            cid = kubo.add(repo, p)
            got = kubo.cat(repo, cid)
            manifest["tokens"].append({"cid": cid, "hex": got.hex()})
        d = os.path.join(scratch, "dir")
        os.makedirs(os.path.join(d, "sub"))
        for n in ("a", "sub/b"):
            with open(os.path.join(d, n), "wb") as f:
                f.write(rng.randbytes(1000))
        manifest["directories"].append(kubo.add(repo, d))
    return manifest


def main():
    cmd, repo, *rest = sys.argv[1:]
    work = tempfile.mkdtemp(prefix="kubo-tool-")
    os.chdir(work)  # kubo writes ./kubo.log here, never into the caller's tree
    if cmd == "init":
        kubo.make_repo(repo)
    elif cmd == "build-live":
        print(json.dumps(build_live(os.path.abspath(repo), rest[0])))
    elif cmd == "cat":
        out = {}
        for cid in rest:
            got = kubo.cat(repo, cid)
            out[cid] = None if got is None else got.hex()
        print(json.dumps(out))
    elif cmd == "hold":
        if kubo.run_node(repo) < 0:
            sys.exit("kubo RunNode failed")
        print("ready", flush=True)
        sys.stdin.read()
        kubo.cleanup_node(repo)
    elif cmd == "serve":
        port, opts = rest[0], rest[1:]
        routing, connect, add = None, [], []
        while opts:
            flag, value, opts = opts[0], opts[1], opts[2:]
            if flag == "--routing":
                routing = value
            elif flag == "--connect":
                connect.append(value)
            elif flag == "--add":
                add.append(value)
            else:
                sys.exit(f"unknown serve option {flag}")
        cfg_path = os.path.join(repo, "config")
        with open(cfg_path) as f:
            cfg = json.load(f)
        addr = f"/ip4/127.0.0.1/tcp/{int(port)}"
        cfg["Addresses"]["Swarm"] = [addr]
        if routing is not None:
            cfg["Routing"]["Type"] = routing
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2)
        if kubo.run_node(repo) < 0:
            sys.exit("kubo RunNode failed")
        for peer in connect:
            if kubo.connect(repo, peer) != 0:
                sys.exit(f"kubo could not connect to {peer}")
        cids = {p: kubo.add(repo, p) for p in add}
        print(json.dumps({"peer_id": cfg["Identity"]["PeerID"], "addr": addr, "cids": cids}), flush=True)
        sys.stdin.read()
        kubo.cleanup_node(repo)
    elif cmd == "add":
        print(json.dumps({p: kubo.add(repo, p) for p in rest}))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
