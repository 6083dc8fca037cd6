#!/usr/bin/env python3
"""Builds fixtures/ with real kubo: Rubix-like node directories and what kubo returns for them.

    .venv/bin/python scripts/make_fixtures.py [--out fixtures] [--tokens 300]

Writes
  fixtures/node/              a clean node: .ipfs (kubo repo, loopback-only config, test swarm.key)
                              and Rubix/rubix.db (gorm schemas) with FT tokens that all parse,
                              plus files that exercise `cat` (empty, 1 B, 256 KiB, 256 KiB+1, 1 MiB,
                              a directory)
  fixtures/bad-node/          a node with one FTTokenTable row per failure class `sync` records
  fixtures/node-token-ids.txt the clean node's FT token ids, one per line (README's first command)
  fixtures/expected/*.json    for every CID: what kubo's own read path returned (content for
                              tokens, size + sha256 for files) and the expected parse outcome

Deterministic contents (seeded), but kubo identities and swarm keys are fresh on every run, so
regenerate only on purpose and commit the result.
"""

import argparse
import base64
import hashlib
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kubo  # noqa: E402

# gorm's SQLite DDL for the Rubix node's tables (field order as in the Go structs).
FT_DDL = (
    "CREATE TABLE `FTTokenTable` (`token_id` text,`ft_name` text,`owner_did` text,"
    "`creator_did` text,`token_status` integer,`token_value` real,`token_state_hash` text,"
    "`transaction_id` text,PRIMARY KEY (`token_id`))"
)
TOKENS_DDL = (
    "CREATE TABLE `TokensTable` (`token_id` text,`parent_token_id` text,`token_value` real,"
    "`did` text,`token_status` integer,`token_state_hash` text,`transaction_id` text,"
    "`added` numeric,PRIMARY KEY (`token_id`))"
)
B32 = "abcdefghijklmnopqrstuvwxyz234567"
INT_MAX = 2**31 - 1


def did(rng):
    return "bafybmi" + "".join(rng.choice(B32) for _ in range(52))


def parse_like_sync(content: bytes):
    """The old system's parsing semantics, made exact: whitespace-split, three fields."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return {"failure": "not_utf8"}
    parts = text.split()
    if not parts:
        return {"failure": "empty"}
    if len(parts) != 3:
        return {"failure": "field_count"}
    try:
        number = int(parts[1], 10)
    except ValueError:
        return {"failure": "not_integer"}
    if not -(2**31) <= number <= INT_MAX:
        return {"failure": "out_of_range"}
    return {"token_name": parts[0], "token_number": number, "creator_did": parts[2]}


def new_db(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        os.remove(path)
    db = sqlite3.connect(path)
    db.execute(FT_DDL)
    db.execute(TOKENS_DDL)
    return db


def add_bytes(repo, scratch, name, data, only_hash=False):
    path = os.path.join(scratch, name)
    with open(path, "wb") as f:
        f.write(data)
    return kubo.add(repo, path, only_hash=only_hash)


def token_entry(repo, cid, rng, extra=None):
    got = kubo.cat(repo, cid)
    entry = {"token_id": cid}
    if got is None:
        entry["kubo"] = "error"
    else:
        entry["kubo"] = "ok"
        entry["content_hex"] = got.hex()
        entry.update(parse_like_sync(got))
    entry.update(extra or {})
    return entry


def build_clean_node(out, scratch, rng, n_tokens):
    node = os.path.join(out, "node")
    repo = kubo.make_repo(os.path.join(node, ".ipfs"), swarm_key_hex=rng.randbytes(32).hex())
    db = new_db(os.path.join(node, "Rubix", "rubix.db"))
    names = ["TRI", "RBTX", "GOLD"]
    creators = [did(rng) for _ in range(4)]
    owners = [did(rng) for _ in range(6)]
    tokens = []
    for i in range(n_tokens):
        name = names[i % len(names)]
        number = i // len(names)
        creator = creators[i % len(creators)]
        content = f"{name} {number} {creator}".encode()
        cid = add_bytes(repo, scratch, f"tok{i}", content)
        db.execute(
            "INSERT INTO FTTokenTable VALUES (?,?,?,?,?,?,?,?)",
            (cid, name, rng.choice(owners), creator, rng.choice([0, 1, 2]), 1.0,
             rng.randbytes(16).hex(), rng.randbytes(16).hex()),
        )
        tokens.append(token_entry(repo, cid, rng))
    # TokensTable (RBT-style whole tokens) for the scan command.
    rbt = []
    for i in range(40):
        content = f"RBT {i} {creators[i % len(creators)]}".encode()
        cid = add_bytes(repo, scratch, f"rbt{i}", content)
        db.execute(
            "INSERT INTO TokensTable VALUES (?,?,?,?,?,?,?,?)",
            (cid, "" if i % 3 else tokens[i]["token_id"], 1.0, rng.choice(owners), i % 4,
             rng.randbytes(16).hex(), rng.randbytes(16).hex(), i % 2),
        )
        rbt.append(token_entry(repo, cid, rng))
    db.commit()
    db.close()

    files = []
    for name, size in [("empty", 0), ("one-byte", 1), ("chunk", 262144), ("chunk-plus-one", 262145),
                       ("mib", 1 << 20)]:
        data = rng.randbytes(size)
        cid = add_bytes(repo, scratch, name, data)
        got = kubo.cat(repo, cid)
        assert got == data, f"kubo returned different bytes for {name}"
        files.append({"name": name, "cid": cid, "size": len(got),
                      "sha256": hashlib.sha256(got).hexdigest(), "kubo": "ok"})
    d = os.path.join(scratch, "a-directory")
    os.makedirs(d)
    for n in ("x.txt", "y.txt"):
        with open(os.path.join(d, n), "wb") as f:
            f.write(rng.randbytes(100))
    dir_cid = kubo.add(repo, d)
    files.append({"name": "a-directory", "cid": dir_cid, "kubo": "directory", "expect": "not_a_file"})
    return {"tokens": tokens, "tokens_table": rbt, "files": files}


def build_bad_node(out, scratch, rng):
    node = os.path.join(out, "bad-node")
    repo = kubo.make_repo(os.path.join(node, ".ipfs"), swarm_key_hex=rng.randbytes(32).hex())
    db = new_db(os.path.join(node, "Rubix", "rubix.db"))
    creator = did(rng)
    tokens = []

    def row(cid, name="TRI"):
        db.execute("INSERT INTO FTTokenTable VALUES (?,?,?,?,?,?,?,?)",
                   (cid, name, did(rng), creator, 0, 1.0, "", ""))

    good = [b"TRI 1 " + creator.encode(), b"  TRI 2 " + creator.encode() + b" \n",
            b"TRI -3 " + creator.encode(), b"TRI\t4\t" + creator.encode()]
    bad = {
        "field_count": b"TRI 5",
        "not_integer": b"TRI five " + creator.encode(),
        "out_of_range": b"TRI 2147483648 " + creator.encode(),
        "not_utf8": b"TRI\xff 6 " + creator.encode(),
        "empty": b"   \n",
    }
    for i, content in enumerate(good):
        cid = add_bytes(repo, scratch, f"good{i}", content)
        row(cid)
        tokens.append(token_entry(repo, cid, rng))
    for reason, content in bad.items():
        cid = add_bytes(repo, scratch, f"bad-{reason}", content)
        row(cid)
        entry = token_entry(repo, cid, rng)
        assert entry.get("failure") == reason, (reason, entry)
        tokens.append(entry)
    # An empty file: kubo returns zero bytes, which is the "empty" class too.
    cid = add_bytes(repo, scratch, "zero", b"")
    row(cid)
    tokens.append(token_entry(repo, cid, rng))

    row("not-a-cid")
    tokens.append({"token_id": "not-a-cid", "kubo": "error", "failure": "invalid_cid"})

    missing = add_bytes(repo, scratch, "never-stored", b"TRI 9 " + creator.encode(), only_hash=True)
    row(missing)
    tokens.append({"token_id": missing, "kubo": "not-run (would wait for peers)", "failure": "block_missing"})

    corrupt = add_bytes(repo, scratch, "to-corrupt", b"TRI 10 " + creator.encode())
    row(corrupt)
    tokens.append(token_entry(repo, corrupt, rng, {"failure": "block_corrupt",
                                                   "note": "one byte flipped after kubo wrote it"}))
    d = os.path.join(scratch, "dir-token")
    os.makedirs(d)
    with open(os.path.join(d, "inner"), "wb") as f:
        f.write(b"TRI 11 " + creator.encode())
    dir_cid = kubo.add(repo, d)
    row(dir_cid)
    tokens.append({"token_id": dir_cid, "kubo": "directory", "failure": "not_a_file"})
    db.commit()
    db.close()
    return {"tokens": tokens, "corrupt": corrupt}


def flip_byte(path):
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        data[len(data) // 2] ^= 0x01
        f.seek(0)
        f.write(data)


def block_path(repo_dir, cid):
    """flatfs path of a CIDv0 block (base32 of the multihash, next-to-last/2)."""
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    n = 0
    for ch in cid:
        n = n * 58 + alphabet.index(ch)
    raw = n.to_bytes(34, "big")
    key = base64.b32encode(raw).decode().rstrip("=")
    return os.path.join(repo_dir, "blocks", key[-3:-1], key + ".data")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "fixtures"))
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--seed", type=int, default=20261203)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    rng = random.Random(args.seed)
    for sub in ("node", "bad-node", "expected"):
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    os.makedirs(os.path.join(out, "expected"))
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)  # kubo writes ./kubo.log
        for sub in ("clean", "bad"):
            os.makedirs(os.path.join(scratch, sub))
        clean = build_clean_node(out, os.path.join(scratch, "clean"), rng, args.tokens)
        bad = build_bad_node(out, os.path.join(scratch, "bad"), rng)
    flip_byte(block_path(os.path.join(out, "bad-node", ".ipfs"), bad.pop("corrupt")))
    for name, data in (("node", clean), ("bad-node", bad)):
        with open(os.path.join(out, "expected", f"{name}.json"), "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
    with open(os.path.join(out, "node-token-ids.txt"), "w") as f:
        f.write("".join(t["token_id"] + "\n" for t in clean["tokens"]))
    print(f"fixtures written to {out}: {len(clean['tokens'])} clean tokens, "
          f"{len(bad['tokens'])} bad-node tokens, {len(clean['files'])} files")


if __name__ == "__main__":
    main()
