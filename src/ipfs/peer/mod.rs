//! The peer fallback: blocks missing from the node's own repository, fetched from its private
//! swarm by a libp2p/bitswap node of our own (rust-ipfs), never written into the node's repo.
//!
//! Everything rust-ipfs is behind this module. The rest of the crate sees a [`Fallback`] (a
//! lazily started peer plus our own block cache) and [`WithFallback`], a [`BlockSource`] that
//! reads the node's flatfs first. Nothing is dialed until a block is actually missing, and
//! never with `--offline`.
//!
//! Private swarm (DESIGN.md §3): the pre-shared key comes from the node's `swarm.key` or
//! `--swarm-key`; TCP only (pnet cannot run over QUIC), Noise, yamux; our identity is a fresh
//! Ed25519 key per run (the node's own key is never reused: the node may be online). A peer
//! with another key (or none) never finishes the handshake; nobody says why, so a dial that
//! reaches the TCP port but not a libp2p connection within the dial timeout is reported as a
//! likely key mismatch, with our key's fingerprint.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cid::Cid;
use futures::StreamExt;
use libp2p::swarm::behaviour::toggle::Toggle;
use rust_ipfs::builder::IpfsBuilder;
use rust_ipfs::{Ipfs, Multiaddr, PeerId, Protocol};

use super::cid::verify_block;
use super::flatfs::{Flatfs, KeyMode, Shard};
use super::repo::Repo;
use super::resolve::BlockSource;
use super::swarm::{peer_candidates, PeerCandidate, SwarmKey, SwarmKeyError};
use super::{ErrorClass, IpfsError};
use dht::Dht;
pub use dht::DhtStats;

mod dht;

/// How the fallback behaves; from the command line.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Never dial anything.
    pub offline: bool,
    /// `--peer` multiaddrs (each ending in `/p2p/<peer id>`), asked first.
    pub peers: Vec<String>,
    /// Overrides the repo's `swarm.key`.
    pub swarm_key: Option<PathBuf>,
    /// Allow the public network when there is no key (refused under LIBP2P_FORCE_PNET=1).
    pub no_pnet: bool,
    /// Per peer: TCP connect plus libp2p handshake.
    pub dial_timeout: Duration,
    /// How long a block may take before "no peer had the block".
    pub block_timeout: Duration,
    /// After this much time spent fetching, stop asking (the rest fail fast).
    pub deadline: Option<Duration>,
    /// Our own content-addressed cache of fetched blocks; `None` = no cache.
    pub cache: Option<PathBuf>,
    /// Ask the swarm's DHT for providers of blocks the dialed peers lack (`--no-dht`: dial
    /// only the peers named or configured).
    pub dht: bool,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            offline: false,
            peers: Vec::new(),
            swarm_key: None,
            no_pnet: false,
            dial_timeout: Duration::from_secs(5),
            block_timeout: Duration::from_secs(10),
            deadline: None,
            cache: default_cache_dir(),
            dht: true,
        }
    }
}

/// `~/.cache/rubix-sync/blocks` (the `directories` cache dir), if there is a home.
pub fn default_cache_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "rubix-sync").map(|d| d.cache_dir().join("blocks"))
}

/// Why the peer could not be used at all (every missing block then fails with this).
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    #[error("{repo} has no swarm.key, so the node's private network is unknown; pass --swarm-key PATH (or --no-pnet for the public network)")]
    NoSwarmKey { repo: String },
    #[error("LIBP2P_FORCE_PNET=1 is set: --no-pnet (the public network) is forbidden; a swarm key is required")]
    PnetForced,
    #[error(transparent)]
    Key(#[from] SwarmKeyError),
    #[error("not in the local repository, and no peer to ask: pass --peer MULTIADDR, run the node's daemon, or list peers in the repo's Bootstrap (--offline skips this)")]
    NoPeers,
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    #[error("handshake failed with {addr} — swarm key mismatch? (our {key}); a peer with another key, or none, never completes the handshake")]
    Handshake { addr: String, key: String },
    #[error("starting the libp2p node failed: {0}")]
    Start(String),
}

impl PeerError {
    /// The failure class of a block this error kept from being fetched. When the fallback
    /// could not even be tried (no key, no peer to ask), the block is simply missing.
    fn class(&self) -> ErrorClass {
        match self {
            PeerError::Handshake { .. } => ErrorClass::HandshakeFailed,
            PeerError::Unreachable(_) | PeerError::Start(_) => ErrorClass::PeerUnreachable,
            PeerError::NoSwarmKey { .. }
            | PeerError::PnetForced
            | PeerError::Key(_)
            | PeerError::NoPeers => ErrorClass::BlockMissing,
        }
    }
}

/// How long the dialed peers get to send a block before the DHT is asked who else has it
/// (kubo's bitswap waits the same before its own provider search).
const PROVIDER_SEARCH_DELAY: Duration = Duration::from_secs(1);

/// A running libp2p node connected to at least one peer of the swarm.
struct Peer {
    rt: tokio::runtime::Runtime,
    ipfs: Ipfs,
    providers: Vec<PeerId>,
    block_timeout: Duration,
    dht: dht::DhtHandle,
}

fn is_forced_pnet() -> bool {
    std::env::var("LIBP2P_FORCE_PNET").is_ok_and(|v| v == "1")
}

/// The key to use, or `None` for the public network (only with --no-pnet).
fn resolve_key(repo_root: &Path, opts: &PeerOptions) -> Result<Option<SwarmKey>, PeerError> {
    let path = opts
        .swarm_key
        .clone()
        .unwrap_or_else(|| repo_root.join("swarm.key"));
    if opts.swarm_key.is_some() || path.exists() {
        return Ok(Some(SwarmKey::read(&path)?));
    }
    if !opts.no_pnet {
        return Err(PeerError::NoSwarmKey {
            repo: repo_root.display().to_string(),
        });
    }
    if is_forced_pnet() {
        return Err(PeerError::PnetForced);
    }
    Ok(None)
}

/// The TCP socket address of a `/ip4|ip6/…/tcp/…` multiaddr, for the reachability probe.
fn tcp_socket(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut ip = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Dns(h) | Protocol::Dns4(h) | Protocol::Dns6(h) => {
                ip = (h.as_ref(), 0u16)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .map(|s| s.ip())
            }
            Protocol::Tcp(port) => return ip.map(|ip| SocketAddr::new(ip, port)),
            _ => {}
        }
    }
    None
}

impl Peer {
    fn start(
        repo_root: &Path,
        candidates: &[PeerCandidate],
        opts: &PeerOptions,
    ) -> Result<Peer, PeerError> {
        let key = resolve_key(repo_root, opts)?;
        if candidates.is_empty() {
            return Err(PeerError::NoPeers);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rubix-sync-peer")
            .enable_all()
            .build()
            .map_err(|e| PeerError::Start(e.to_string()))?;
        let (dht, dht_parts) = dht::channel();
        let ipfs = rt.block_on(async {
            // Our own DHT client (kubo's WAN and LAN protocols) as the custom behaviour:
            // fetch asks it for the providers of blocks the dialed peers lack.
            let use_dht = opts.dht;
            let mut b = IpfsBuilder::<Toggle<Dht>>::new()
                .enable_tcp()
                .with_bitswap()
                .with_identify(Default::default())
                .with_custom_behaviour(move |keys| {
                    Ok(Toggle::from(use_dht.then(|| Dht::new(keys, dht_parts))))
                });
            if let Some(k) = &key {
                b = b.enable_pnet(libp2p_pnet::PreSharedKey::new(*k.bytes()));
            }
            b.start().await.map_err(|e| PeerError::Start(e.to_string()))
        })?;
        let key_name = key.as_ref().map_or_else(
            || "public network, no key".to_string(),
            |k| format!("key fingerprint {}", k.fingerprint()),
        );
        let mut providers = Vec::new();
        let mut unreachable = Vec::new();
        let mut handshake = None;
        for c in candidates {
            let addr: Multiaddr = match c.addr.parse() {
                Ok(a) => a,
                Err(e) => {
                    unreachable.push(format!("{}: not a multiaddr ({e})", c.addr));
                    continue;
                }
            };
            let Some(Protocol::P2p(peer_id)) = addr.iter().last() else {
                unreachable.push(format!("{}: no /p2p/<peer id> at the end", c.addr));
                continue;
            };
            // A plain TCP connect tells "nothing listens there" from "the handshake fails".
            if let Some(sock) = tcp_socket(&addr) {
                if let Err(e) = TcpStream::connect_timeout(&sock, opts.dial_timeout) {
                    unreachable.push(format!("{}: {e}", c.addr));
                    continue;
                }
            }
            let dialed = rt.block_on(async {
                tokio::time::timeout(opts.dial_timeout, ipfs.connect(addr.clone())).await
            });
            let connected = matches!(dialed, Ok(Ok(_)))
                && rt
                    .block_on(async {
                        tokio::time::timeout(opts.dial_timeout, async {
                            loop {
                                if ipfs.is_connected(peer_id).await.unwrap_or(false) {
                                    return true;
                                }
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        })
                        .await
                    })
                    .unwrap_or(false);
            if connected {
                tracing::info!(peer = %c.addr, origin = ?c.origin, "connected to peer");
                // A starting point for DHT queries (the address without its /p2p part).
                let transport: Multiaddr = addr
                    .iter()
                    .filter(|p| !matches!(p, Protocol::P2p(_)))
                    .collect();
                dht.add_peer(peer_id, transport);
                providers.push(peer_id);
            } else {
                let why = match &dialed {
                    Ok(Err(e)) => format!("{e}"),
                    Ok(Ok(_)) => "connected, then dropped".into(),
                    Err(_) => format!("no handshake within {:.0?}", opts.dial_timeout),
                };
                tracing::info!(peer = %c.addr, "libp2p dial failed: {why}");
                handshake.get_or_insert_with(|| c.addr.clone());
            }
        }
        if providers.is_empty() {
            rt.block_on(ipfs.exit_daemon());
            return Err(match handshake {
                Some(addr) => PeerError::Handshake {
                    addr,
                    key: key_name,
                },
                None => PeerError::Unreachable(unreachable.join("; ")),
            });
        }
        Ok(Peer {
            rt,
            ipfs,
            providers,
            block_timeout: opts.block_timeout,
            dht,
        })
    }

    /// Asks the connected peers for `cids` in one want-list; what arrives is verified. Blocks
    /// still missing after [`PROVIDER_SEARCH_DELAY`] are looked up in the DHT, and the
    /// providers found are dialed (bitswap then sends them the want-list too).
    fn fetch(&self, cids: &[Cid], timeout: Duration) -> HashMap<Cid, Result<Vec<u8>, IpfsError>> {
        let timeout = timeout.min(self.block_timeout);
        let mut got: HashMap<Cid, Result<Vec<u8>, IpfsError>> = HashMap::new();
        self.rt.block_on(async {
            let mut stream = self
                .ipfs
                .repo()
                .get_blocks(cids.iter())
                .providers(self.providers.iter())
                .timeout(timeout);
            let search = tokio::time::sleep(PROVIDER_SEARCH_DELAY.min(timeout / 2));
            tokio::pin!(search);
            let mut searched = false;
            loop {
                let item = tokio::select! {
                    item = stream.next() => item,
                    () = &mut search, if !searched => {
                        searched = true;
                        for cid in cids.iter().filter(|c| !got.contains_key(c)) {
                            self.dht.find_providers(cid.hash().to_bytes());
                        }
                        continue;
                    }
                };
                let Some(item) = item else { break };
                let Ok(block) = item else { continue };
                let (cid, data) = block.into_inner();
                let checked = verify_block(&cid, &data)
                    .map(|()| {
                        crate::metrics::block_fetched(data.len());
                        data.to_vec()
                    })
                    .map_err(|e| IpfsError::BlockCorrupt {
                        cid: cid.to_string(),
                        path: None,
                        reason: format!("a peer sent bytes that do not match the CID ({e})"),
                    });
                got.insert(cid, checked);
            }
            // Fetched blocks live in rust-ipfs's in-memory store: drop them, memory stays flat.
            for cid in got.keys() {
                let _ = self.ipfs.remove_block(cid, false).await;
            }
        });
        for cid in cids {
            got.entry(*cid).or_insert_with(|| {
                Err(IpfsError::Peer {
                    cid: cid.to_string(),
                    class: ErrorClass::PeerTimeout,
                    detail: format!(
                        "not in the local repository, and no peer had the block within {:.0?}",
                        timeout
                    ),
                })
            });
        }
        got
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let s = self.dht.stats();
        tracing::info!(
            lookups = s.lookups,
            dropped = s.dropped,
            providers_found = s.providers_found,
            providers_dialed = s.providers_dialed,
            "DHT provider lookups"
        );
        let ipfs = self.ipfs.clone();
        self.rt.block_on(ipfs.exit_daemon());
    }
}

/// Fetched blocks kept on disk in the flatfs layout, in our own cache directory (never the
/// node's repo): a block fetched once is not fetched again. Files are written to a temporary
/// name and renamed, so a reader never sees half a block; every read is verified.
struct BlockCache {
    flatfs: Flatfs,
}

impl BlockCache {
    fn open(dir: &Path) -> std::io::Result<BlockCache> {
        std::fs::create_dir_all(dir)?;
        let sharding = dir.join("SHARDING");
        let shard = Shard::NextToLast(2);
        if !sharding.exists() {
            std::fs::write(&sharding, format!("{shard}\n"))?;
        }
        Ok(BlockCache {
            flatfs: Flatfs::open(dir.to_path_buf(), shard, KeyMode::Multihash)?,
        })
    }

    fn get(&self, cid: &Cid, buf: &mut Vec<u8>) -> bool {
        self.flatfs.read_raw(cid, buf).is_ok() && verify_block(cid, buf).is_ok()
    }

    fn put(&self, cid: &Cid, data: &[u8]) {
        let path = self.flatfs.block_path(cid);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let r = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, data))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(cache = %path.display(), "could not cache a fetched block: {e}");
        }
    }
}

/// Blocks missing from a node's repository: our cache, then the swarm (started on first use).
pub struct Fallback {
    repo_root: PathBuf,
    candidates: Vec<PeerCandidate>,
    opts: PeerOptions,
    cache: Option<BlockCache>,
    peer: OnceLock<Result<Peer, PeerError>>,
    /// Blocks fetched ahead (a want-list batch) and not yet read, when there is no disk cache.
    prefetched: Mutex<HashMap<Cid, Vec<u8>>>,
    /// Blocks a want-list already asked the swarm for in this run, in vain, and why: asked
    /// again one by one, each would wait out the block timeout once more (a peer that went
    /// away would make a run of thousands of missing tokens take hours).
    missed: Mutex<HashMap<Cid, (ErrorClass, String)>>,
    started: OnceLock<Instant>,
}

impl Fallback {
    /// The fallback for `repo`, or `None` with `--offline`.
    pub fn new(repo: &Repo, opts: &PeerOptions) -> Option<Fallback> {
        if opts.offline {
            return None;
        }
        let cache = opts
            .cache
            .as_deref()
            .and_then(|d| match BlockCache::open(d) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(cache = %d.display(), "block cache unavailable: {e}");
                    None
                }
            });
        Some(Fallback {
            repo_root: repo.root().to_path_buf(),
            candidates: peer_candidates(&opts.peers, repo.config()),
            opts: opts.clone(),
            cache,
            peer: OnceLock::new(),
            prefetched: Mutex::new(HashMap::new()),
            missed: Mutex::new(HashMap::new()),
            started: OnceLock::new(),
        })
    }

    fn peer(&self) -> Result<&Peer, IpfsError> {
        let started = *self.started.get_or_init(Instant::now);
        if let Some(d) = self.opts.deadline {
            if started.elapsed() > d {
                return Err(IpfsError::Peer {
                    cid: String::new(),
                    class: ErrorClass::PeerTimeout,
                    detail: format!("the fetch deadline of {d:.0?} has passed"),
                });
            }
        }
        self.peer
            .get_or_init(|| Peer::start(&self.repo_root, &self.candidates, &self.opts))
            .as_ref()
            .map_err(|e| IpfsError::Peer {
                cid: String::new(),
                class: e.class(),
                detail: e.to_string(),
            })
    }

    fn remaining(&self) -> Duration {
        match (self.opts.deadline, self.started.get()) {
            (Some(d), Some(s)) => d.saturating_sub(s.elapsed()),
            _ => self.opts.block_timeout,
        }
    }

    /// Fetches `cids` (already known missing locally) in one want-list, ahead of reading them:
    /// what arrives is cached (on disk, or in memory until read); what does not is remembered
    /// for this run, so reading it fails at once with the same reason.
    pub fn prefetch(&self, cids: &[Cid]) {
        let mut buf = Vec::new();
        let wanted: Vec<Cid> = cids
            .iter()
            .filter(|c| !self.cache.as_ref().is_some_and(|k| k.get(c, &mut buf)))
            .copied()
            .collect();
        if wanted.is_empty() {
            return;
        }
        let Ok(peer) = self.peer() else { return };
        for (cid, r) in peer.fetch(&wanted, self.remaining()) {
            match r {
                Ok(data) => self.keep(&cid, data),
                Err(e) => {
                    let detail = match &e {
                        IpfsError::Peer { detail, .. } => detail.clone(),
                        other => other.to_string(),
                    };
                    self.missed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(cid, (e.class(), detail));
                }
            }
        }
    }

    fn keep(&self, cid: &Cid, data: Vec<u8>) {
        match &self.cache {
            Some(c) => c.put(cid, &data),
            None => {
                self.prefetched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(*cid, data);
            }
        }
    }

    /// One block: prefetched, cached, or fetched now (unless a want-list already missed it).
    fn read(&self, cid: &Cid, buf: &mut Vec<u8>) -> Result<(), IpfsError> {
        if let Some(e) = self
            .missed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cid)
        {
            return Err(IpfsError::Peer {
                cid: cid.to_string(),
                class: e.0,
                detail: e.1.clone(),
            });
        }
        if let Some(data) = self
            .prefetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(cid)
        {
            *buf = data;
            crate::metrics::block_read(crate::metrics::BlockSource::Fetched, buf.len());
            return Ok(());
        }
        if self.cache.as_ref().is_some_and(|c| c.get(cid, buf)) {
            crate::metrics::block_read(crate::metrics::BlockSource::Cache, buf.len());
            return Ok(());
        }
        let with_cid = |e: IpfsError| match e {
            IpfsError::Peer { class, detail, .. } => IpfsError::Peer {
                cid: cid.to_string(),
                class,
                detail,
            },
            other => other,
        };
        let peer = self.peer().map_err(with_cid)?;
        let mut got = peer.fetch(&[*cid], self.remaining());
        let data = got
            .remove(cid)
            .unwrap_or_else(|| {
                Err(IpfsError::BlockMissing {
                    cid: cid.to_string(),
                })
            })
            .map_err(with_cid)?;
        if let Some(c) = &self.cache {
            c.put(cid, &data);
        }
        *buf = data;
        crate::metrics::block_read(crate::metrics::BlockSource::Fetched, buf.len());
        Ok(())
    }
}

/// The node's repository first, then the fallback (if any) for blocks missing there.
pub struct WithFallback<'a> {
    pub local: &'a Repo,
    pub fallback: Option<&'a Fallback>,
}

impl BlockSource for WithFallback<'_> {
    fn read_block(&self, cid: &Cid, buf: &mut Vec<u8>) -> Result<(), IpfsError> {
        match self.local.read_block(cid, buf) {
            Ok(()) => {
                crate::metrics::block_read(crate::metrics::BlockSource::Disk, buf.len());
                Ok(())
            }
            Err(IpfsError::BlockMissing { .. }) if self.fallback.is_some() => {
                self.fallback.expect("checked").read(cid, buf)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_socket_of_multiaddrs() {
        let a: Multiaddr =
            "/ip4/127.0.0.1/tcp/4001/p2p/QmXKDFDjgZZyhFuvARVPvbqGuxDGPcQgY6usubzHtPoF4X"
                .parse()
                .unwrap();
        assert_eq!(tcp_socket(&a), Some("127.0.0.1:4001".parse().unwrap()));
        let q: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
        assert_eq!(tcp_socket(&q), None);
    }

    #[test]
    fn no_key_needs_no_pnet_and_force_pnet_forbids_it() {
        let t = tempfile::tempdir().unwrap();
        let opts = PeerOptions::default();
        assert!(matches!(
            resolve_key(t.path(), &opts),
            Err(PeerError::NoSwarmKey { .. })
        ));
        let public = PeerOptions {
            no_pnet: true,
            ..PeerOptions::default()
        };
        // The environment is the process's: only check the branch that does not depend on it.
        if !is_forced_pnet() {
            assert!(matches!(resolve_key(t.path(), &public), Ok(None)));
        }
        std::fs::write(
            t.path().join("swarm.key"),
            "/key/swarm/psk/1.0.0/\n/base16/\n0011223344556677889900aabbccddeeff0011223344556677889900aabbccdd\n",
        )
        .unwrap();
        assert!(matches!(resolve_key(t.path(), &opts), Ok(Some(_))));
    }

    #[test]
    fn the_cache_round_trips_and_rejects_a_damaged_block() {
        let t = tempfile::tempdir().unwrap();
        let c = BlockCache::open(t.path()).unwrap();
        let block = crate::ipfs::unixfs::encode_file_block(b"RBT 1 did");
        let cid = Cid::new_v0(multihash_codetable::MultihashDigest::digest(
            &multihash_codetable::Code::Sha2_256,
            &block,
        ))
        .unwrap();
        let mut buf = Vec::new();
        assert!(!c.get(&cid, &mut buf));
        c.put(&cid, &block);
        assert!(c.get(&cid, &mut buf));
        assert_eq!(buf, block);
        std::fs::write(c.flatfs.block_path(&cid), b"damaged").unwrap();
        assert!(
            !c.get(&cid, &mut buf),
            "a damaged cache entry is never trusted"
        );
    }
}
