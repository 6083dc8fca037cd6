//! The private swarm a Rubix node lives in: its pre-shared key and the peers worth asking.
//!
//! Pure parsing, no networking: the peer module turns these into libp2p settings.

use std::fmt;
use std::path::Path;

use super::repo::RepoConfig;

/// A private network's 32-byte pre-shared key (`swarm.key`). Never printed: `Debug` and
/// `Display` show only its fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct SwarmKey([u8; 32]);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SwarmKeyError {
    #[error("{path}: cannot read the swarm key: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: not a libp2p swarm key ({reason}); expected `/key/swarm/psk/1.0.0/`, then `/base16/` or `/base64/`, then the 32-byte key")]
    Format { path: String, reason: String },
}

const HEADER: &str = "/key/swarm/psk/1.0.0/";

impl SwarmKey {
    pub fn from_bytes(bytes: [u8; 32]) -> SwarmKey {
        SwarmKey(bytes)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses go-libp2p's key file format (base16 or base64 encoding, as go-libp2p accepts).
    pub fn parse(text: &str, path: &str) -> Result<SwarmKey, SwarmKeyError> {
        let bad = |reason: &str| SwarmKeyError::Format {
            path: path.to_string(),
            reason: reason.to_string(),
        };
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some(HEADER) {
            return Err(bad("wrong or missing header line"));
        }
        let encoding = lines.next().ok_or_else(|| bad("no encoding line"))?;
        let body = lines.next().ok_or_else(|| bad("no key line"))?;
        let decoded = match encoding {
            "/base16/" => data_encoding::HEXLOWER_PERMISSIVE
                .decode(body.as_bytes())
                .map_err(|_| bad("the key is not valid hex"))?,
            "/base64/" => data_encoding::BASE64
                .decode(body.as_bytes())
                .map_err(|_| bad("the key is not valid base64"))?,
            "/bin/" => return Err(bad("binary (/bin/) keys are not supported")),
            _ => return Err(bad("unknown encoding line")),
        };
        let key: [u8; 32] = decoded
            .try_into()
            .map_err(|v: Vec<u8>| bad(&format!("the key is {} bytes, not 32", v.len())))?;
        Ok(SwarmKey(key))
    }

    pub fn read(path: &Path) -> Result<SwarmKey, SwarmKeyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SwarmKeyError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        SwarmKey::parse(&text, &shown)
    }

    /// A short, non-secret name for the key (first 8 bytes of sha2-256 of it, hex), to tell
    /// two keys apart in an error message without revealing either.
    pub fn fingerprint(&self) -> String {
        use multihash_codetable::{Code, MultihashDigest};
        let d = Code::Sha2_256.digest(&self.0);
        data_encoding::HEXLOWER.encode(&d.digest()[..8])
    }
}

impl fmt::Debug for SwarmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SwarmKey(fingerprint {})", self.fingerprint())
    }
}

impl fmt::Display for SwarmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "swarm key {}", self.fingerprint())
    }
}

/// Where a peer candidate came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerOrigin {
    /// `--peer`.
    Flag,
    /// The node's own daemon, from its config's swarm addresses.
    OwnDaemon,
    /// The config's `Bootstrap` list.
    Bootstrap,
}

/// A peer to dial: a multiaddr ending in `/p2p/<peer id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCandidate {
    pub addr: String,
    pub origin: PeerOrigin,
}

/// The node's own swarm addresses as dialable loopback addresses: a daemon listening on
/// `0.0.0.0`/`::` also answers on loopback, and only loopback is dialed for it (its other
/// addresses are the same daemon).
fn own_daemon_addrs(cfg: &RepoConfig) -> Vec<String> {
    let Some(id) = cfg.peer_id.as_deref().filter(|s| !s.is_empty()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for a in &cfg.swarm_addrs {
        let parts: Vec<&str> = a.split('/').collect();
        // ["", "ip4", HOST, "tcp", PORT, ...]
        if parts.len() < 5 || parts[3] != "tcp" || parts[4] == "0" {
            continue;
        }
        let host = match (parts[1], parts[2]) {
            ("ip4", "0.0.0.0") => "/ip4/127.0.0.1".to_string(),
            ("ip4", h) if h.starts_with("127.") => format!("/ip4/{h}"),
            ("ip6", "::") | ("ip6", "::1") => "/ip6/::1".to_string(),
            _ => continue,
        };
        let addr = format!("{host}/tcp/{}/p2p/{id}", parts[4]);
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

/// Every peer worth asking, in order: `--peer` addresses, the node's own daemon, the
/// config's Bootstrap list. Duplicates are dropped; Bootstrap entries without `/p2p/` and
/// QUIC ones (pnet runs over TCP only) are skipped.
pub fn peer_candidates(explicit: &[String], cfg: &RepoConfig) -> Vec<PeerCandidate> {
    let mut out: Vec<PeerCandidate> = Vec::new();
    let mut push = |addr: String, origin| {
        if !out.iter().any(|c| c.addr == addr) {
            out.push(PeerCandidate { addr, origin });
        }
    };
    for a in explicit {
        push(a.clone(), PeerOrigin::Flag);
    }
    for a in own_daemon_addrs(cfg) {
        push(a, PeerOrigin::OwnDaemon);
    }
    for a in &cfg.bootstrap {
        if a.contains("/p2p/") && a.contains("/tcp/") && !a.contains("/quic") {
            push(a.clone(), PeerOrigin::Bootstrap);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0011223344556677889900aabbccddeeff0011223344556677889900aabbccdd";

    #[test]
    fn parses_base16_and_base64_and_never_prints_the_key() {
        let k = SwarmKey::parse(&format!("{HEADER}\n/base16/\n{HEX}\n"), "k").unwrap();
        let b64 = data_encoding::BASE64.encode(k.bytes());
        let k2 = SwarmKey::parse(&format!("{HEADER}\r\n/base64/\r\n{b64}"), "k").unwrap();
        assert_eq!(k, k2);
        for shown in [format!("{k:?}"), k.to_string()] {
            assert!(!shown.contains(HEX) && !shown.contains(&b64), "{shown}");
            assert!(shown.contains(&k.fingerprint()));
        }
    }

    #[test]
    fn malformed_keys_say_what_is_wrong() {
        let cases = [
            ("nonsense", "header"),
            (HEADER, "encoding"),
            (&format!("{HEADER}\n/base16/"), "key line"),
            (&format!("{HEADER}\n/base32/\nAAAA"), "unknown encoding"),
            (&format!("{HEADER}\n/base16/\nzz"), "not valid hex"),
            (&format!("{HEADER}\n/base16/\n0011"), "2 bytes, not 32"),
        ];
        for (text, want) in cases {
            let e = SwarmKey::parse(text, "swarm.key").unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("swarm.key"), "{text:?}: {e}");
        }
    }

    #[test]
    fn candidates_in_order_with_the_own_daemon_on_loopback() {
        let cfg = RepoConfig {
            peer_id: Some("QmSelf".into()),
            swarm_addrs: vec![
                "/ip4/0.0.0.0/tcp/4001".into(),
                "/ip4/127.0.0.1/tcp/4001".into(),
                "/ip4/0.0.0.0/udp/4001/quic-v1".into(),
                "/ip4/10.0.0.5/tcp/4002".into(),
                "/ip6/::/tcp/4003".into(),
                "/ip4/127.0.0.1/tcp/0".into(),
            ],
            bootstrap: vec![
                "/ip4/127.0.0.1/tcp/5001/p2p/QmBoot".into(),
                "/ip4/127.0.0.1/udp/5001/quic-v1/p2p/QmQuic".into(),
                "/ip4/127.0.0.1/tcp/5002".into(),
            ],
        };
        let got: Vec<(String, PeerOrigin)> =
            peer_candidates(&["/ip4/127.0.0.1/tcp/9/p2p/QmFlag".into()], &cfg)
                .into_iter()
                .map(|c| (c.addr, c.origin))
                .collect();
        assert_eq!(
            got,
            [
                (
                    "/ip4/127.0.0.1/tcp/9/p2p/QmFlag".to_string(),
                    PeerOrigin::Flag
                ),
                (
                    "/ip4/127.0.0.1/tcp/4001/p2p/QmSelf".to_string(),
                    PeerOrigin::OwnDaemon
                ),
                (
                    "/ip6/::1/tcp/4003/p2p/QmSelf".to_string(),
                    PeerOrigin::OwnDaemon
                ),
                (
                    "/ip4/127.0.0.1/tcp/5001/p2p/QmBoot".to_string(),
                    PeerOrigin::Bootstrap
                ),
            ]
        );
    }
}
