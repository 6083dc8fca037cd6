//! Provider lookup in the private swarm's DHT, for blocks that none of the peers we dialed has.
//!
//! kubo runs two DHTs: the WAN one (`/ipfs/kad/1.0.0`, peers on public addresses) and the LAN
//! one (`/ipfs/lan/kad/1.0.0`, peers on private and loopback addresses); which one a Rubix
//! node's peers answer on depends on where they run. rust-ipfs only offers the WAN protocol,
//! so this is a behaviour of our own, plugged into rust-ipfs's swarm as its custom behaviour:
//! two Kademlia clients (never servers: we hold no records), asked together. Every connection
//! is the swarm's, so pnet applies to these queries and to the providers they find.
//!
//! A provider found is dialed at once, while its query still holds the addresses the DHT
//! returned for it; once connected, bitswap sends it the whole want-list. The queries are
//! bounded: [`MAX_ACTIVE`] at a time, the rest queued (and the queue itself bounded).

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc;
use futures::StreamExt;
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::kad::{self, store::MemoryStore, GetProvidersOk, QueryId, QueryResult};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{identity::Keypair, Multiaddr, PeerId, StreamProtocol};

/// kubo's WAN DHT protocol.
pub const WAN_PROTOCOL: &str = "/ipfs/kad/1.0.0";
/// kubo's LAN DHT protocol (peers on private and loopback addresses).
pub const LAN_PROTOCOL: &str = "/ipfs/lan/kad/1.0.0";
/// Provider queries running at once; more wait in the queue.
const MAX_ACTIVE: usize = 16;
/// Queued lookups beyond this are dropped (the block then simply times out).
const MAX_QUEUED: usize = 4096;
/// One query may not outlive this (kad's own default is 60 s).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The two DHTs, as one behaviour (public only because it names the connection handler).
#[derive(libp2p::swarm::NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
pub struct Both {
    wan: kad::Behaviour<MemoryStore>,
    lan: kad::Behaviour<MemoryStore>,
}

/// What the fetching side asks of the behaviour.
pub(super) enum Command {
    /// A peer we are connected to: a starting point for queries in both DHTs.
    AddPeer(PeerId, Multiaddr),
    /// Find (and dial) the providers of this multihash.
    FindProviders(Vec<u8>),
}

/// The handle the fetching side keeps.
#[derive(Clone)]
pub(super) struct DhtHandle {
    tx: mpsc::UnboundedSender<Command>,
    stats: std::sync::Arc<Mutex<DhtStats>>,
}

/// What the DHT did in a run, for logs and tests.
#[derive(Debug, Default, Clone)]
pub struct DhtStats {
    pub lookups: u64,
    pub dropped: u64,
    pub providers_found: u64,
    pub providers_dialed: u64,
}

impl DhtHandle {
    pub(super) fn add_peer(&self, peer: PeerId, addr: Multiaddr) {
        let _ = self.tx.unbounded_send(Command::AddPeer(peer, addr));
    }

    pub(super) fn find_providers(&self, multihash: Vec<u8>) {
        let _ = self.tx.unbounded_send(Command::FindProviders(multihash));
    }

    pub(super) fn stats(&self) -> DhtStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The custom behaviour rust-ipfs runs for us.
pub struct Dht {
    both: Both,
    commands: Mutex<mpsc::UnboundedReceiver<Command>>,
    queue: VecDeque<Vec<u8>>,
    /// Keys queued or running, so one key is looked up once at a time.
    wanted: HashSet<Vec<u8>>,
    /// Running queries: query → its key (each key runs one query per DHT).
    active: HashMap<QueryId, Vec<u8>>,
    dialed: HashSet<PeerId>,
    stats: std::sync::Arc<Mutex<DhtStats>>,
    out: VecDeque<ToSwarm<Infallible, THandlerInEvent<Both>>>,
}

fn kad_client(id: PeerId, protocol: &'static str) -> kad::Behaviour<MemoryStore> {
    let mut config = kad::Config::new(StreamProtocol::new(protocol));
    config.set_query_timeout(QUERY_TIMEOUT);
    // No background bootstrap walks: the only queries are the provider lookups fetch asks
    // for, so what gets dialed is what a missing block needs.
    config.set_periodic_bootstrap_interval(None);
    let mut k = kad::Behaviour::with_config(id, MemoryStore::new(id), config);
    k.set_mode(Some(kad::Mode::Client));
    k
}

/// The handle, and what the behaviour needs of it (the behaviour is built later, inside
/// rust-ipfs's builder, once the swarm's key pair exists).
pub(super) fn channel() -> (DhtHandle, DhtParts) {
    let (tx, rx) = mpsc::unbounded();
    let stats = std::sync::Arc::new(Mutex::new(DhtStats::default()));
    (
        DhtHandle {
            tx,
            stats: stats.clone(),
        },
        DhtParts { rx, stats },
    )
}

pub(super) struct DhtParts {
    rx: mpsc::UnboundedReceiver<Command>,
    stats: std::sync::Arc<Mutex<DhtStats>>,
}

impl Dht {
    pub(super) fn new(keys: &Keypair, parts: DhtParts) -> Dht {
        let id = keys.public().to_peer_id();
        let DhtParts { rx, stats } = parts;
        Dht {
            both: Both {
                wan: kad_client(id, WAN_PROTOCOL),
                lan: kad_client(id, LAN_PROTOCOL),
            },
            commands: Mutex::new(rx),
            queue: VecDeque::new(),
            wanted: HashSet::new(),
            active: HashMap::new(),
            dialed: HashSet::new(),
            stats,
            out: VecDeque::new(),
        }
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, DhtStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::AddPeer(peer, addr) => {
                self.both.wan.add_address(&peer, addr.clone());
                self.both.lan.add_address(&peer, addr);
            }
            Command::FindProviders(key) => {
                if self.wanted.contains(&key) {
                    return;
                }
                if self.queue.len() >= MAX_QUEUED {
                    self.stats().dropped += 1;
                    return;
                }
                self.wanted.insert(key.clone());
                self.queue.push_back(key);
            }
        }
    }

    /// Starts queued lookups while fewer than MAX_ACTIVE keys are running.
    fn start_queries(&mut self) {
        while self.active.len() < 2 * MAX_ACTIVE {
            let Some(key) = self.queue.pop_front() else {
                break;
            };
            let k = kad::RecordKey::new(&key);
            self.active
                .insert(self.both.wan.get_providers(k.clone()), key.clone());
            self.active.insert(self.both.lan.get_providers(k), key);
            self.stats().lookups += 1;
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = event
        else {
            return;
        };
        let QueryResult::GetProviders(result) = result else {
            return;
        };
        if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = result {
            self.stats().providers_found += providers.len() as u64;
            for p in providers {
                // Dial now: the running query holds the addresses the DHT gave for it.
                if self.dialed.insert(p) {
                    tracing::info!(provider = %p, "DHT: dialing a provider");
                    self.stats().providers_dialed += 1;
                    self.out.push_back(ToSwarm::Dial {
                        opts: DialOpts::peer_id(p)
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .build(),
                    });
                }
            }
        }
        if step.last {
            if let Some(key) = self.active.remove(&id) {
                if !self.active.values().any(|k| *k == key) {
                    self.wanted.remove(&key);
                }
            }
        }
    }
}

impl NetworkBehaviour for Dht {
    type ConnectionHandler = THandler<Both>;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.both
            .handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.both
            .handle_established_inbound_connection(id, peer, local, remote)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.both
            .handle_pending_outbound_connection(id, peer, addresses, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.both
            .handle_established_outbound_connection(id, peer, addr, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.both.on_swarm_event(event)
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.both.on_connection_handler_event(peer, id, event)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        loop {
            let next = self
                .commands
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .poll_next_unpin(cx);
            match next {
                Poll::Ready(Some(c)) => self.command(c),
                _ => break,
            }
        }
        self.start_queries();
        loop {
            if let Some(e) = self.out.pop_front() {
                return Poll::Ready(e);
            }
            match self.both.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(e)) => {
                    match e {
                        BothEvent::Wan(e) | BothEvent::Lan(e) => self.on_kad(e),
                    }
                    self.start_queries();
                }
                Poll::Ready(other) => {
                    return Poll::Ready(other.map_out(|_| unreachable!("handled above")))
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
