//! Reading IPFS content straight out of a kubo repository, in-process.
//!
//! The layer knows nothing about tokens or databases: it turns a CID into the bytes `ipfs cat`
//! would print, verifying every block against its multihash on the way. Everything here is
//! read-only towards the repository: files are opened `O_RDONLY`, nothing is created, and
//! `repo.lock` is never looked at, so a running daemon and a stale lock are both irrelevant.

pub mod cid;
pub mod flatfs;
pub mod peer;
pub mod repo;
pub mod resolve;
pub mod swarm;
pub mod unixfs;

use std::path::PathBuf;

pub use self::cid::parse_cid;
pub use self::repo::Repo;
pub use self::resolve::{BlockSource, CatLimits};
pub use ::cid::Cid;

/// Every way reading IPFS content can fail, each phrased so an operator knows what to do next.
///
/// [`IpfsError::class`] gives the stable, machine-readable reason class used in the database
/// failures table and in exit codes.
#[derive(Debug, thiserror::Error)]
pub enum IpfsError {
    #[error("{path}: not a kubo repository ({reason}); point --ipfs-repo or IPFS_PATH at the node's .ipfs directory")]
    NotARepo { path: PathBuf, reason: String },

    #[error("{path}: unsupported datastore `{kind}` for /blocks; only flatfs repositories can be read directly")]
    UnsupportedDatastore { path: PathBuf, kind: String },

    #[error("{path}: malformed repository: {reason}")]
    MalformedRepo { path: PathBuf, reason: String },

    #[error("invalid CID {input:?}: {reason}")]
    InvalidCid { input: String, reason: String },

    #[error("block {cid} is not in the local repository")]
    BlockMissing { cid: String },

    #[error("block {cid} is corrupt ({reason}){}", path_suffix(.path))]
    BlockCorrupt {
        cid: String,
        path: Option<PathBuf>,
        reason: String,
    },

    #[error("block {cid} uses hash function 0x{code:x}, which rubix-sync cannot verify")]
    UnsupportedHash { cid: String, code: u64 },

    #[error("{cid} is not a file ({kind}); `cat` only reads UnixFS files")]
    NotAFile { cid: String, kind: String },

    #[error("{cid}: malformed dag-pb/UnixFS data: {reason}")]
    Malformed { cid: String, reason: String },

    #[error("{cid}: file is larger than the limit of {limit} bytes")]
    TooLarge { cid: String, limit: u64 },

    /// The block is missing locally and the peer fallback could not supply it.
    #[error("block {cid}: {detail}")]
    Peer {
        cid: String,
        class: ErrorClass,
        detail: String,
    },

    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("writing output: {0}")]
    Output(std::io::Error),
}

fn path_suffix(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" at {}", p.display()),
        None => String::new(),
    }
}

/// A stable reason class for an [`IpfsError`], stored in the database and used for exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The repository itself cannot be used (not a repo, unsupported datastore, malformed).
    Repo,
    InvalidCid,
    BlockMissing,
    BlockCorrupt,
    NotAFile,
    /// dag-pb/UnixFS structure is broken, unverifiable or over a limit.
    Malformed,
    /// Missing locally; no peer of the swarm could be reached.
    PeerUnreachable,
    /// Missing locally; the peers' handshake failed (most likely another swarm key).
    HandshakeFailed,
    /// Missing locally; no peer had it within the block timeout (or the deadline passed).
    PeerTimeout,
    Io,
    Output,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Repo => "repo",
            ErrorClass::InvalidCid => "invalid_cid",
            ErrorClass::BlockMissing => "block_missing",
            ErrorClass::BlockCorrupt => "block_corrupt",
            ErrorClass::NotAFile => "not_a_file",
            ErrorClass::Malformed => "malformed",
            ErrorClass::PeerUnreachable => "peer_unreachable",
            ErrorClass::HandshakeFailed => "handshake_failed",
            ErrorClass::PeerTimeout => "peer_timeout",
            ErrorClass::Io => "io",
            ErrorClass::Output => "output",
        }
    }
}

impl IpfsError {
    pub fn class(&self) -> ErrorClass {
        match self {
            IpfsError::NotARepo { .. }
            | IpfsError::UnsupportedDatastore { .. }
            | IpfsError::MalformedRepo { .. } => ErrorClass::Repo,
            IpfsError::InvalidCid { .. } => ErrorClass::InvalidCid,
            IpfsError::BlockMissing { .. } => ErrorClass::BlockMissing,
            IpfsError::BlockCorrupt { .. } | IpfsError::UnsupportedHash { .. } => {
                ErrorClass::BlockCorrupt
            }
            IpfsError::NotAFile { .. } => ErrorClass::NotAFile,
            IpfsError::Malformed { .. } | IpfsError::TooLarge { .. } => ErrorClass::Malformed,
            IpfsError::Peer { class, .. } => *class,
            IpfsError::Io { .. } => ErrorClass::Io,
            IpfsError::Output(_) => ErrorClass::Output,
        }
    }
}
