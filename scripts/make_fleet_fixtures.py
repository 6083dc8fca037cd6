#!/usr/bin/env python3
"""Builds fixtures/fleet/ with real kubo: a tree of Rubix nodes for `rubix-sync scan`.

    .venv/bin/python scripts/make_fleet_fixtures.py [--out fixtures]

Writes
  fixtures/fleet/node01/                   current gorm TokensTable; .ipfs beside Rubix/; one
                                           token whose content is not UTF-8, one whose block was
                                           never stored, one row whose token_id is not a CID
  fixtures/fleet/node02/                   an older TokensTable (no token_state_hash,
                                           transaction_id, added); shares tokens with node01
  fixtures/fleet/SafePass/Rubix/Qnode1/    nested layout (.ipfs in Qnode1/); shares tokens with
                                           both
  fixtures/fleet/node04/                   Rubix/rubix.db but no .ipfs anywhere
  fixtures/fleet/node05/                   a rubix.db without TokensTable (FTTokenTable only)
  fixtures/fleet/broken/Rubix/rubix.db     not an SQLite database at all
  fixtures/expected/fleet.json             per node: every TokensTable row and what kubo's own
                                           read path returned for its token_id

Deterministic contents (seeded); kubo identities and swarm keys are fresh on every run, so
regenerate only on purpose and commit the result.
"""

import argparse
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kubo  # noqa: E402
from make_fixtures import FT_DDL, TOKENS_DDL, add_bytes, did  # noqa: E402

# TokensTable as older Rubix versions created it.
OLD_TOKENS_DDL = (
    "CREATE TABLE `TokensTable` (`token_id` text,`parent_token_id` text,`token_value` real,"
    "`did` text,`token_status` integer,PRIMARY KEY (`token_id`))"
)


def make_node(out, rel, scratch, rng, ddl, with_repo=True):
    node = os.path.join(out, rel)
    repo = None
    if with_repo:
        repo = kubo.make_repo(os.path.join(node, ".ipfs"), swarm_key_hex=rng.randbytes(32).hex())
    path = os.path.join(node, "Rubix", "rubix.db")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    db = sqlite3.connect(path)
    db.execute(FT_DDL)
    if ddl:
        db.execute(ddl)
    return node, repo, db


def store(repo, scratch, name, content):
    """Adds `content` to `repo` (or only hashes it when there is no repo); returns the CID."""
    if repo is None:
        # No repo for this node: the CID is what kubo would give, computed in a throw-away repo.
        tmp = os.path.join(scratch, "hash-only-repo")
        if not os.path.exists(tmp):
            kubo.make_repo(tmp)
        return add_bytes(tmp, scratch, name, content, only_hash=True)
    return add_bytes(repo, scratch, name, content)


def entry(repo, row, expect=None):
    """The row as the node holds it plus what kubo returns for its token_id."""
    e = dict(row)
    if expect:
        e["expect"] = expect
    elif repo is None:
        e["expect"] = "no_repo"
    else:
        got = kubo.cat(repo, row["token_id"])
        assert got is not None, row
        e["expect"] = "ok"
        e["content_hex"] = got.hex()
    return e


def insert(db, row, full):
    cols = ["token_id", "parent_token_id", "token_value", "did", "token_status"]
    if full:
        cols += ["token_state_hash", "transaction_id", "added"]
    db.execute(
        f"INSERT INTO TokensTable ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
        [row.get(c) for c in cols],
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "fixtures"))
    ap.add_argument("--seed", type=int, default=20261204)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    fleet = os.path.join(out, "fleet")
    rng = random.Random(args.seed)
    shutil.rmtree(fleet, ignore_errors=True)
    os.makedirs(os.path.join(out, "expected"), exist_ok=True)
    owners = [did(rng) for _ in range(5)]
    creator = did(rng)
    # Tokens held by more than one node (same content, so the same CID in every repo).
    shared_all = [f"RBT {1000 + i} {creator}".encode() for i in range(3)]
    shared_12 = [f"RBT {2000 + i} {creator}".encode() for i in range(4)]
    expected = {}

    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)  # kubo writes ./kubo.log

        def rows_for(repo, db, prefix, contents, full, n_status=4):
            rows = []
            for i, content in enumerate(contents):
                cid = store(repo, scratch, f"{prefix}{i}", content)
                row = {"token_id": cid, "parent_token_id": "", "token_value": 1.0 if i % 5 else 0.5,
                       "did": owners[i % len(owners)], "token_status": i % n_status}
                if full:
                    row.update({"token_state_hash": rng.randbytes(16).hex(),
                                "transaction_id": rng.randbytes(16).hex(), "added": i % 2})
                insert(db, row, full)
                rows.append(entry(repo, row))
            return rows

        # node01: current schema, with bad rows.
        _, repo, db = make_node(fleet, "node01", scratch, rng, TOKENS_DDL)
        own = [f"RBT {i} {creator}".encode() for i in range(15)]
        rows = rows_for(repo, db, "n1-", own + shared_12 + shared_all, True)
        binary = store(repo, scratch, "n1-binary", b"RBT\xff\xfe 7 " + creator.encode() + b"\x00")
        row = {"token_id": binary, "parent_token_id": rows[0]["token_id"], "token_value": 1.0,
               "did": owners[0], "token_status": 1, "token_state_hash": "", "transaction_id": "",
               "added": 1}
        insert(db, row, True)
        rows.append(entry(repo, row))
        missing = add_bytes(repo, scratch, "n1-never-stored", b"RBT 99 " + creator.encode(), only_hash=True)
        row = {"token_id": missing, "parent_token_id": "", "token_value": 1.0, "did": owners[1],
               "token_status": 2, "token_state_hash": "", "transaction_id": "", "added": 0}
        insert(db, row, True)
        rows.append(entry(repo, row, "block_missing"))
        row = {"token_id": "not-a-cid", "parent_token_id": None, "token_value": None, "did": owners[2],
               "token_status": 0, "token_state_hash": None, "transaction_id": None, "added": None}
        insert(db, row, True)
        rows.append(entry(repo, row, "invalid_cid"))
        db.commit()
        db.close()
        expected["node01"] = {"path": "node01", "ipfs": "node01/.ipfs", "schema": "current", "rows": rows}

        # node02: older schema, shares shared_12 and shared_all with node01.
        _, repo, db = make_node(fleet, "node02", scratch, rng, OLD_TOKENS_DDL)
        own = [f"RBT {100 + i} {creator}".encode() for i in range(8)]
        rows = rows_for(repo, db, "n2-", own + shared_12 + shared_all, False)
        db.commit()
        db.close()
        expected["node02"] = {"path": "node02", "ipfs": "node02/.ipfs", "schema": "old", "rows": rows}

        # Qnode1: nested layout, shares shared_all.
        _, repo, db = make_node(fleet, "SafePass/Rubix/Qnode1", scratch, rng, TOKENS_DDL)
        own = [f"RBT {200 + i} {creator}".encode() for i in range(6)]
        rows = rows_for(repo, db, "q1-", own + shared_all, True)
        db.commit()
        db.close()
        expected["Qnode1"] = {"path": "SafePass/Rubix/Qnode1", "ipfs": "SafePass/Rubix/Qnode1/.ipfs",
                              "schema": "current", "rows": rows}

        # node04: no .ipfs at all.
        _, repo, db = make_node(fleet, "node04", scratch, rng, TOKENS_DDL, with_repo=False)
        own = [f"RBT {300 + i} {creator}".encode() for i in range(4)]
        rows = rows_for(None, db, "n4-", own, True)
        db.commit()
        db.close()
        expected["node04"] = {"path": "node04", "ipfs": None, "schema": "current", "rows": rows}

        # node05: no TokensTable.
        _, repo, db = make_node(fleet, "node05", scratch, rng, None)
        cid = store(repo, scratch, "n5-ft", f"TRI 1 {creator}".encode())
        db.execute("INSERT INTO FTTokenTable (token_id, ft_name, creator_did) VALUES (?,?,?)",
                   (cid, "TRI", creator))
        db.commit()
        db.close()
        expected["node05"] = {"path": "node05", "ipfs": "node05/.ipfs", "schema": "none", "rows": []}

    broken = os.path.join(fleet, "broken", "Rubix", "rubix.db")
    os.makedirs(os.path.dirname(broken))
    with open(broken, "wb") as f:
        f.write(b"this is a log file someone named rubix.db, not an SQLite database\n")

    with open(os.path.join(out, "expected", "fleet.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"fleet fixtures written to {fleet}: " +
          ", ".join(f"{k} {len(v['rows'])} rows" for k, v in expected.items()))


if __name__ == "__main__":
    main()
