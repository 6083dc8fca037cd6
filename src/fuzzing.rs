//! Entry points for fuzzing the parsers that read untrusted input: CIDs (from node
//! databases), dag-pb/UnixFS blocks (from disk and from peers), swarm.key files, token
//! content, and a repo's SHARDING / datastore_spec. Each must return an error, never panic,
//! loop or allocate without bound, whatever the bytes.
//!
//! `fuzz/` runs them under cargo-fuzz (libFuzzer); `tests/fuzz_regressions.rs` replays every
//! input kept in `fuzz/corpus/` and `fuzz/regressions/` on each `cargo test`.

use std::collections::HashMap;
use std::path::Path;

use crate::ipfs::{self, BlockSource, CatLimits, Cid, IpfsError};

/// CIDs as text (any multibase) and as the bytes of a dag-pb link.
pub fn cid(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = ipfs::parse_cid(text) {
            // A parsed CID survives a round trip and can be verified against any bytes.
            assert_eq!(ipfs::parse_cid(&c.to_string()).ok(), Some(c));
            let _ = ipfs::cid::verify_block(&c, data);
            let _ = ipfs::cid::identity_content(&c);
        }
    }
    let parent = Cid::default();
    let _ = ipfs::cid::cid_from_bytes(&parent, data);
}

/// Blocks served without verification, so decoding sees the fuzzer's bytes as they are.
struct Unverified(HashMap<Cid, Vec<u8>>);

impl BlockSource for Unverified {
    fn read_block(&self, cid: &Cid, buf: &mut Vec<u8>) -> Result<(), IpfsError> {
        let b = self.0.get(cid).ok_or(IpfsError::BlockMissing {
            cid: cid.to_string(),
        })?;
        buf.clear();
        buf.extend_from_slice(b);
        Ok(())
    }
}

/// dag-pb + UnixFS decoding, and a whole `cat` walk with the input as the root block and
/// every link pointing back at it (so depth and size bounds are exercised too).
pub fn dagpb(data: &[u8]) {
    let node = ipfs::unixfs::decode_pbnode(data).ok();
    if let Some(d) = node.as_ref().and_then(|n| n.data) {
        let _ = ipfs::unixfs::decode_unixfs(d);
    }
    let digest =
        multihash_codetable::MultihashDigest::digest(&multihash_codetable::Code::Sha2_256, data);
    let Ok(root) = Cid::new_v0(digest) else {
        return;
    };
    let mut blocks = HashMap::new();
    blocks.insert(root, data.to_vec());
    if let Some(node) = &node {
        for l in &node.links {
            if let Ok(c) = Cid::try_from(l.hash) {
                blocks.entry(c).or_insert_with(|| data.to_vec());
            }
        }
    }
    let source = Unverified(blocks);
    let limits = CatLimits {
        max_bytes: 1 << 20,
        ..CatLimits::default()
    };
    let mut buf = Vec::new();
    let _ = ipfs::resolve::read_file(&source, &root, limits, &mut buf);
    assert!(buf.len() as u64 <= limits.max_bytes);
}

/// swarm.key files.
pub fn swarm_key(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(k) = ipfs::swarm::SwarmKey::parse(text, "fuzz") {
            assert_eq!(k.fingerprint().len(), k.fingerprint().trim().len());
        }
    }
}

/// Token content: `NAME NUMBER DID`.
pub fn token(data: &[u8]) {
    if let Ok(t) = crate::token::parse(data) {
        assert!(!t.name.is_empty() && !t.creator_did.is_empty());
    }
}

/// `blocks/SHARDING` and `datastore_spec`.
pub fn repo_spec(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(shard) = ipfs::flatfs::Shard::parse(text) {
            let _ = shard.dir("CIQJRQQVV6E6N7TIZQOAF7EX43O4V44OZ272K2O4Q2TGRACQAPNFAWI");
            let _ = shard.dir("");
        }
        let _ = ipfs::repo::blocks_mount(Path::new("/fuzz"), text);
    }
}

/// A fuzz target: any bytes in, no panic.
pub type Target = fn(&[u8]);

/// The targets by name (for the regression test).
pub const TARGETS: [(&str, Target); 5] = [
    ("cid", cid),
    ("dagpb", dagpb),
    ("swarm_key", swarm_key),
    ("token", token),
    ("repo_spec", repo_spec),
];
