//! kubo's flatfs blockstore: one file per block, `blocks/<shard>/<KEY>.data`.
//!
//! The key is the upper-case, unpadded RFC 4648 base32 of the multihash (repo version ≥ 12) or
//! of the whole CID (older repos; identical for CIDv0). The shard directory is a function of the
//! key named in `blocks/SHARDING`, e.g. `/repo/flatfs/shard/v1/next-to-last/2`.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
///
/// Blocks are opened with `openat(2)` relative to a descriptor of the blocks directory, so each
/// lookup walks two path components instead of the whole absolute path, and with `O_NOATIME`
/// where permitted, so reading a node's blocks does not even update their access times.
#[derive(Debug, Clone)]
pub struct Flatfs {
    dir: PathBuf,
    shard: Shard,
    mode: KeyMode,
    dirfd: Arc<OwnedFd>,
    noatime: Arc<AtomicBool>,
}

/// Longest relative block path: shard (≤16) + `/` + base32 key of a ≤ 128-byte CID + `.data`.
const MAX_REL_PATH: usize = 16 + 1 + 205 + 5 + 1;

/// First read size; token blocks are ~74 bytes and kubo's largest ~1 MiB.
const FIRST_READ: usize = 4096;

impl Flatfs {
    /// Opens the blocks directory (read-only, as a path descriptor).
    pub fn open(dir: PathBuf, shard: Shard, mode: KeyMode) -> io::Result<Self> {
        let c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "NUL byte in path"))?;
        // SAFETY: `c` is a valid NUL-terminated path; the returned fd is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Flatfs {
            dir,
            shard,
            mode,
            // SAFETY: `fd` was just returned by open(2) and is not owned elsewhere.
            dirfd: Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }),
            noatime: Arc::new(AtomicBool::new(true)),
        })
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

    /// `SHARD/KEY.data\0` in a stack buffer: no allocation per block.
    fn rel_path(&self, cid: &Cid, out: &mut [u8; MAX_REL_PATH]) -> Option<usize> {
        let mut raw = [0u8; 160];
        let bytes: &[u8] = match self.mode {
            KeyMode::Multihash => {
                let n = cid.hash().write(&mut raw[..]).ok()?;
                &raw[..n]
            }
            KeyMode::WholeCid => {
                let n = cid.write_bytes(&mut raw[..]).ok()?;
                &raw[..n]
            }
        };
        let klen = BASE32_NOPAD.encode_len(bytes.len());
        let mut key = [0u8; 256];
        if klen > 205 {
            return None;
        }
        BASE32_NOPAD.encode_mut(bytes, &mut key[..klen]);
        let key = std::str::from_utf8(&key[..klen]).ok()?;
        let dir = self.shard.dir(key);
        let mut n = 0;
        for part in [dir.as_bytes(), b"/", key.as_bytes(), b".data\0"] {
            out[n..n + part.len()].copy_from_slice(part);
            n += part.len();
        }
        Some(n)
    }

    fn open_block(&self, rel: &[u8]) -> io::Result<File> {
        let base = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
        loop {
            let noatime = self.noatime.load(Ordering::Relaxed);
            let flags = if noatime {
                base | libc::O_NOATIME
            } else {
                base
            };
            // SAFETY: `rel` is NUL-terminated (built by rel_path) and dirfd is open.
            let fd = unsafe { libc::openat(self.dirfd.as_raw_fd(), rel.as_ptr().cast(), flags) };
            if fd >= 0 {
                // SAFETY: a fresh descriptor, owned by the File from here on.
                return Ok(unsafe { File::from_raw_fd(fd) });
            }
            let err = io::Error::last_os_error();
            // O_NOATIME needs ownership of the file (or CAP_FOWNER): fall back once, for good.
            if noatime && err.raw_os_error() == Some(libc::EPERM) {
                self.noatime.store(false, Ordering::Relaxed);
                continue;
            }
            return Err(err);
        }
    }

    /// Reads `cid`'s block file into `buf` (cleared first), unverified.
    ///
    /// The common case is three syscalls: openat, one read, close. A read shorter than asked
    /// is taken as end of file; callers verify the hash and call [`Flatfs::read_raw_slow`]
    /// before declaring a block corrupt, so a spurious short read can never cause a false
    /// "corrupt" verdict.
    ///
    /// Missing files are [`IpfsError::BlockMissing`]; a directory or an oversized file in a
    /// block's place is [`IpfsError::BlockCorrupt`], since no valid repository has either.
    pub fn read_raw(&self, cid: &Cid, buf: &mut Vec<u8>) -> Result<(), IpfsError> {
        buf.clear();
        let mut rel = [0u8; MAX_REL_PATH];
        let Some(len) = self.rel_path(cid, &mut rel) else {
            return self.read_raw_slow(cid, buf);
        };
        let file = match self.open_block(&rel[..len]) {
            Ok(f) => f,
            Err(e) => return Err(self.open_error(cid, e)),
        };
        buf.reserve(FIRST_READ);
        let spare = buf.spare_capacity_mut();
        // SAFETY: read(2) writes at most `spare.len()` bytes into the vector's spare capacity
        // and returns how many; exactly those become initialised via set_len below.
        let n = unsafe { libc::read(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
        if n < 0 {
            return Err(self.read_error(cid, io::Error::last_os_error()));
        }
        let asked = spare.len();
        // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(n as usize) };
        if (n as usize) < asked {
            Ok(())
        } else {
            self.read_rest(cid, file, buf)
        }
    }

    /// Reads the whole file with no shortcuts (used to double-check before reporting corruption).
    pub fn read_raw_slow(&self, cid: &Cid, buf: &mut Vec<u8>) -> Result<(), IpfsError> {
        buf.clear();
        let path = self.block_path(cid);
        let file = File::open(&path).map_err(|e| self.open_error(cid, e))?;
        self.read_rest(cid, file, buf)
    }

    fn read_rest(&self, cid: &Cid, file: File, buf: &mut Vec<u8>) -> Result<(), IpfsError> {
        // Read at most one byte past the limit so an oversized file is detected, never slurped.
        let limit = MAX_BLOCK_SIZE + 1 - buf.len() as u64;
        match file.take(limit).read_to_end(buf) {
            Ok(_) if buf.len() as u64 > MAX_BLOCK_SIZE => Err(IpfsError::BlockCorrupt {
                cid: cid.to_string(),
                path: Some(self.block_path(cid)),
                reason: format!("block file is larger than {MAX_BLOCK_SIZE} bytes"),
            }),
            Ok(_) => Ok(()),
            Err(e) => Err(self.read_error(cid, e)),
        }
    }

    fn open_error(&self, cid: &Cid, e: io::Error) -> IpfsError {
        match e.kind() {
            ErrorKind::NotFound => IpfsError::BlockMissing {
                cid: cid.to_string(),
            },
            _ if e.raw_os_error() == Some(libc::ELOOP) => IpfsError::BlockCorrupt {
                cid: cid.to_string(),
                path: Some(self.block_path(cid)),
                reason: "a symbolic link stands where the block file should be".into(),
            },
            _ => IpfsError::Io {
                path: self.block_path(cid),
                source: e,
            },
        }
    }

    fn read_error(&self, cid: &Cid, e: io::Error) -> IpfsError {
        if e.kind() == ErrorKind::IsADirectory {
            IpfsError::BlockCorrupt {
                cid: cid.to_string(),
                path: Some(self.block_path(cid)),
                reason: "a directory stands where the block file should be".into(),
            }
        } else {
            IpfsError::Io {
                path: self.block_path(cid),
                source: e,
            }
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
        let tmp = tempfile::tempdir().unwrap();
        let fs = Flatfs::open(tmp.path().into(), Shard::NextToLast(2), KeyMode::Multihash).unwrap();
        assert_eq!(
            fs.block_path(&cid),
            tmp.path()
                .join("AW/CIQJRQQVV6E6N7TIZQOAF7EX43O4V44OZ272K2O4Q2TGRACQAPNFAWI.data")
        );
        let mut rel = [0u8; MAX_REL_PATH];
        let n = fs.rel_path(&cid, &mut rel).unwrap();
        assert_eq!(
            &rel[..n],
            &b"AW/CIQJRQQVV6E6N7TIZQOAF7EX43O4V44OZ272K2O4Q2TGRACQAPNFAWI.data\0"[..]
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
