//! kubo's flatfs blockstore: one file per block, `blocks/<shard>/<KEY>.data`.
//!
//! The key is the upper-case, unpadded RFC 4648 base32 of the multihash (repo version ≥ 12) or
//! of the whole CID (older repos; identical for CIDv0). The shard directory is a function of the
//! key named in `blocks/SHARDING`, e.g. `/repo/flatfs/shard/v1/next-to-last/2`.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use cid::Cid;
use data_encoding::BASE32_NOPAD;

use super::IpfsError;

/// Largest block file we read. kubo refuses blocks over 2 MiB on the wire and its own adds make
/// at most 1 MiB; a larger file is a corrupt or hostile repository, not data.
pub const MAX_BLOCK_SIZE: u64 = 4 * 1024 * 1024;

const SHARD_PREFIX: &str = "/repo/flatfs/shard/v1/";

/// A flatfs shard function (go-ds-flatfs `shard.go`), applied to a block's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shard {
    Prefix(usize),
    Suffix(usize),
    NextToLast(usize),
}

impl Shard {
    /// Parses the canonical form stored in `blocks/SHARDING` and `datastore_spec`.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let text = text.trim();
        let rest = text
            .strip_prefix(SHARD_PREFIX)
            .ok_or_else(|| format!("shard function {text:?} does not start with {SHARD_PREFIX}"))?;
        let (name, param) = rest
            .split_once('/')
            .ok_or_else(|| format!("shard function {text:?} has no parameter"))?;
        let n: usize = param
            .parse()
            .ok()
            .filter(|n| (1..=16).contains(n))
            .ok_or_else(|| format!("shard function {text:?}: parameter must be 1..=16"))?;
        match name {
            "prefix" => Ok(Shard::Prefix(n)),
            "suffix" => Ok(Shard::Suffix(n)),
            "next-to-last" => Ok(Shard::NextToLast(n)),
            other => Err(format!("unknown shard function {other:?} in {text:?}")),
        }
    }

    /// The directory name for `key`, padding with `_` exactly as go-ds-flatfs does.
    pub fn dir(&self, key: &str) -> String {
        match *self {
            Shard::Prefix(n) => {
                let mut s: String = key.chars().take(n).collect();
                while s.len() < n {
                    s.push('_');
                }
                s
            }
            Shard::Suffix(n) => {
                let padded = format!("{}{}", "_".repeat(n), key);
                padded[padded.len() - n..].to_string()
            }
            Shard::NextToLast(n) => {
                let padded = format!("{}{}", "_".repeat(n + 1), key);
                let offset = padded.len() - n - 1;
                padded[offset..offset + n].to_string()
            }
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (name, n) = match *self {
            Shard::Prefix(n) => ("prefix", n),
            Shard::Suffix(n) => ("suffix", n),
            Shard::NextToLast(n) => ("next-to-last", n),
        };
        write!(f, "{SHARD_PREFIX}{name}/{n}")
    }
}

/// How block keys are derived from CIDs, which changed in repo version 12 (kubo 0.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// base32 of the multihash bytes (repo version ≥ 12).
    Multihash,
    /// base32 of the whole CID bytes (repo versions < 12).
    WholeCid,
}

/// The datastore key of `cid` under `mode`.
pub fn block_key(cid: &Cid, mode: KeyMode) -> String {
    match mode {
        KeyMode::Multihash => BASE32_NOPAD.encode(&cid.hash().to_bytes()),
        KeyMode::WholeCid => BASE32_NOPAD.encode(&cid.to_bytes()),
    }
}

/// A read-only view of a flatfs directory.
#[derive(Debug, Clone)]
pub struct Flatfs {
    dir: PathBuf,
    shard: Shard,
    mode: KeyMode,
}

impl Flatfs {
    pub fn new(dir: PathBuf, shard: Shard, mode: KeyMode) -> Self {
        Flatfs { dir, shard, mode }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn shard(&self) -> Shard {
        self.shard
    }

    pub fn key_mode(&self) -> KeyMode {
        self.mode
    }

    /// Where `cid`'s block lives (whether or not it exists).
    pub fn block_path(&self, cid: &Cid) -> PathBuf {
        let key = block_key(cid, self.mode);
        let mut path = self.dir.join(self.shard.dir(&key));
        path.push(format!("{key}.data"));
        path
    }

    /// Reads `cid`'s block file into `buf` (cleared first), unverified.
    ///
    /// Missing files are [`IpfsError::BlockMissing`]; a directory or an oversized file in a
    /// block's place is [`IpfsError::BlockCorrupt`], since no valid repository has either.
    pub fn read_raw(&self, cid: &Cid, buf: &mut Vec<u8>) -> Result<(), IpfsError> {
        let path = self.block_path(cid);
        buf.clear();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(IpfsError::BlockMissing { cid: *cid })
            }
            Err(e) => return Err(IpfsError::Io { path, source: e }),
        };
        // Read at most one byte past the limit so an oversized file is detected, never slurped.
        match file.take(MAX_BLOCK_SIZE + 1).read_to_end(buf) {
            Ok(n) if n as u64 > MAX_BLOCK_SIZE => Err(IpfsError::BlockCorrupt {
                cid: *cid,
                path: Some(path),
                reason: format!("block file is larger than {MAX_BLOCK_SIZE} bytes"),
            }),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::IsADirectory => Err(IpfsError::BlockCorrupt {
                cid: *cid,
                path: Some(path),
                reason: "a directory stands where the block file should be".into(),
            }),
            Err(e) => Err(IpfsError::Io { path, source: e }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V0: &str = "QmYcxL3Lm4JXTPs9bLq87dw1X6V87x1DTsaYSYy1Mu9h4C";

    #[test]
    fn key_and_path_match_kubo_for_the_design_example() {
        let cid: Cid = V0.parse().unwrap();
        let key = block_key(&cid, KeyMode::Multihash);
        assert_eq!(
            key,
            "CIQJRQQVV6E6N7TIZQOAF7EX43O4V44OZ272K2O4Q2TGRACQAPNFAWI"
        );
        // CIDv0 bytes are the multihash bytes, so both key modes agree.
        assert_eq!(block_key(&cid, KeyMode::WholeCid), key);
        let fs = Flatfs::new("/r/blocks".into(), Shard::NextToLast(2), KeyMode::Multihash);
        assert_eq!(
            fs.block_path(&cid),
            PathBuf::from(
                "/r/blocks/AW/CIQJRQQVV6E6N7TIZQOAF7EX43O4V44OZ272K2O4Q2TGRACQAPNFAWI.data"
            )
        );
    }

    #[test]
    fn cidv1_keys_differ_between_modes() {
        let v0: Cid = V0.parse().unwrap();
        let v1 = Cid::new_v1(0x70, *v0.hash());
        assert_eq!(
            block_key(&v1, KeyMode::Multihash),
            block_key(&v0, KeyMode::Multihash)
        );
        assert_ne!(
            block_key(&v1, KeyMode::WholeCid),
            block_key(&v1, KeyMode::Multihash)
        );
        assert!(block_key(&v1, KeyMode::WholeCid).starts_with("AFYBE"));
    }

    #[test]
    fn shard_functions_pad_like_go_ds_flatfs() {
        assert_eq!(Shard::NextToLast(2).dir("ABCDEF"), "DE");
        assert_eq!(Shard::NextToLast(2).dir("AB"), "_A");
        assert_eq!(Shard::NextToLast(3).dir("A"), "___");
        assert_eq!(Shard::Prefix(3).dir("ABCDEF"), "ABC");
        assert_eq!(Shard::Prefix(4).dir("AB"), "AB__");
        assert_eq!(Shard::Suffix(2).dir("ABCDEF"), "EF");
        assert_eq!(Shard::Suffix(3).dir("A"), "__A");
    }

    #[test]
    fn shard_parse_roundtrips_and_rejects_garbage() {
        for s in [Shard::NextToLast(2), Shard::Prefix(4), Shard::Suffix(1)] {
            assert_eq!(Shard::parse(&format!("{s}\n")).unwrap(), s);
        }
        for bad in [
            "",
            "next-to-last/2",
            "/repo/flatfs/shard/v1/next-to-last",
            "/repo/flatfs/shard/v1/next-to-last/x",
            "/repo/flatfs/shard/v1/next-to-last/0",
            "/repo/flatfs/shard/v1/middle/2",
            "/repo/flatfs/shard/v2/prefix/2",
        ] {
            assert!(Shard::parse(bad).is_err(), "{bad:?}");
        }
    }
}
