//! Fetching token blocks that are missing on disk from a loopback kubo peer, through the peer
//! fallback (rust-ipfs, pnet, bitswap). Run by `scripts/bench_peer.py`, which sets up the
//! peer and, in the same run, measures a second kubo node fetching the same blocks.
//!
//! ```text
//! cargo bench --bench peer -- --node DIR --peer MULTIADDR [--latency-sample N] [--json]
//! ```
//!
//! DIR is a node whose repo lacks the blocks of its FTTokenTable tokens (and has the peer's
//! swarm.key). Two passes, each with a fresh fallback and no cache, so every block crosses
//! the network:
//! * batched: all tokens, 512 root CIDs per want-list, as `sync` and `scan` fetch;
//! * one at a time: the first N tokens, one want-list per block (latency per block).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rubix_sync::ipfs::peer::{Fallback, PeerOptions, WithFallback};
use rubix_sync::ipfs::{parse_cid, BlockSource, Cid, Repo};

struct Args {
    node: PathBuf,
    peer: String,
    latency_sample: usize,
    json: bool,
}

fn args() -> Args {
    let mut a = Args {
        node: PathBuf::new(),
        peer: String::new(),
        latency_sample: 1000,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--node" => a.node = it.next().map(PathBuf::from).expect("--node DIR"),
            "--peer" => a.peer = it.next().expect("--peer MULTIADDR"),
            "--latency-sample" => {
                a.latency_sample = it.next().and_then(|v| v.parse().ok()).expect("N")
            }
            "--json" => a.json = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!a.peer.is_empty(), "--peer MULTIADDR");
    a
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let a = args();
    let repo = Repo::open(a.node.join(".ipfs")).expect("node repo");
    let db = rusqlite::Connection::open_with_flags(
        a.node.join("Rubix/rubix.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let ids: Vec<Cid> = db
        .prepare("SELECT token_id FROM FTTokenTable ORDER BY rowid")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|s| parse_cid(&s.unwrap()).unwrap())
        .collect();
    let opts = PeerOptions {
        peers: vec![a.peer.clone()],
        cache: None,
        block_timeout: Duration::from_secs(30),
        ..PeerOptions::default()
    };
    let mut buf = Vec::new();
    for c in &ids {
        assert!(repo.read_block(c, &mut buf).is_err(), "{c} is on disk");
    }

    // Batched, as sync/scan fetch: one want-list per 512 missing roots.
    let fallback = Fallback::new(&repo, &opts).unwrap();
    let source = WithFallback {
        local: &repo,
        fallback: Some(&fallback),
    };
    // Connecting is not charged to the fetch: one block first.
    let t = Instant::now();
    source.read_block(&ids[0], &mut buf).expect("first block");
    let connect_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut ok = 0usize;
    for chunk in ids[1..].chunks(512) {
        fallback.prefetch(chunk);
        for c in chunk {
            if source.read_block(c, &mut buf).is_ok() {
                ok += 1;
            }
        }
    }
    let batched_s = t.elapsed().as_secs_f64();
    assert_eq!(ok, ids.len() - 1, "every block arrived");
    drop(fallback);

    // One block per want-list: per-block latency.
    let fallback = Fallback::new(&repo, &opts).unwrap();
    let source = WithFallback {
        local: &repo,
        fallback: Some(&fallback),
    };
    source.read_block(&ids[0], &mut buf).expect("first block");
    let sample = &ids[1..(a.latency_sample + 1).min(ids.len())];
    let mut lat = Vec::with_capacity(sample.len());
    let t = Instant::now();
    for c in sample {
        let s = Instant::now();
        source.read_block(c, &mut buf).expect("block");
        lat.push(s.elapsed());
    }
    let single_s = t.elapsed().as_secs_f64();
    lat.sort();
    let report = serde_json::json!({
        "blocks": ids.len() - 1,
        "connect_s": connect_s,
        "batched_blocks_per_s": (ids.len() - 1) as f64 / batched_s,
        "batched_s": batched_s,
        "single_blocks": sample.len(),
        "single_blocks_per_s": sample.len() as f64 / single_s,
        "single_p50_ms": percentile(&lat, 0.50),
        "single_p99_ms": percentile(&lat, 0.99),
    });
    if a.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
    }
}
