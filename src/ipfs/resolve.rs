//! CID → file bytes with kubo's `cat` semantics, over any source of verified blocks.
//!
//! The walk is depth-first in link order, so multi-block files come out in order and large
//! files stream to the writer one leaf at a time. Declared sizes (`blocksizes`, `filesize`)
//! are checked against what the children actually produced: a node that lies about its sizes is
//! malformed, not silently accepted.

use std::cell::RefCell;
use std::io::Write;

use cid::Cid;

use super::cid::{cid_from_bytes, identity_content, CODEC_DAG_PB, CODEC_RAW};
use super::unixfs::{decode_pbnode, decode_unixfs, DataType};
use super::IpfsError;

/// Where verified blocks come from: the local flatfs, later a peer fallback in front of it.
pub trait BlockSource {
    /// Fills `buf` with the block for `cid`, already verified against its multihash.
    fn read_block(&self, cid: &Cid, buf: &mut Vec<u8>) -> Result<(), IpfsError>;
}

impl<T: BlockSource + ?Sized> BlockSource for &T {
    fn read_block(&self, cid: &Cid, buf: &mut Vec<u8>) -> Result<(), IpfsError> {
        (**self).read_block(cid, buf)
    }
}

/// Bounds on what one `cat` may walk, so a hostile DAG cannot exhaust stack, memory or time.
#[derive(Debug, Clone, Copy)]
pub struct CatLimits {
    /// Deepest link chain followed. kubo's balanced layout for a 1 TiB file is depth 4.
    pub max_depth: usize,
    /// Largest file produced, in bytes. Checked against the declared `filesize` before reading.
    pub max_bytes: u64,
}

impl Default for CatLimits {
    fn default() -> Self {
        CatLimits {
            max_depth: 32,
            max_bytes: u64::MAX,
        }
    }
}

/// Writes the content of the UnixFS file `cid` to `out`, as `ipfs cat` would. Returns the
/// number of bytes written.
pub fn cat<S: BlockSource + ?Sized, W: Write + ?Sized>(
    source: &S,
    cid: &Cid,
    out: &mut W,
    limits: CatLimits,
) -> Result<u64, IpfsError> {
    let mut walk = Walk {
        source,
        out,
        limits,
        written: 0,
        root: *cid,
    };
    walk.node(cid, 0)
}

/// Reads a whole (small) file into `buf`, for tokens. `limits.max_bytes` should be small.
pub fn read_file<S: BlockSource + ?Sized>(
    source: &S,
    cid: &Cid,
    limits: CatLimits,
    buf: &mut Vec<u8>,
) -> Result<(), IpfsError> {
    buf.clear();
    cat(source, cid, buf, limits).map(drop)
}

thread_local! {
    /// Block buffers reused across calls, one per DAG level in use: the token hot path then
    /// allocates nothing per token.
    static BLOCK_BUFS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Largest buffer kept for reuse; bigger ones (1 MiB leaves) go back to the allocator.
const KEEP_BUF: usize = 64 * 1024;

fn take_buf() -> Vec<u8> {
    BLOCK_BUFS
        .with(|b| b.borrow_mut().pop())
        .unwrap_or_default()
}

fn give_buf(mut buf: Vec<u8>) {
    if buf.capacity() <= KEEP_BUF {
        buf.clear();
        BLOCK_BUFS.with(|b| {
            let mut pool = b.borrow_mut();
            if pool.len() < 64 {
                pool.push(buf)
            }
        });
    }
}

struct Walk<'a, S: ?Sized, W: ?Sized> {
    source: &'a S,
    out: &'a mut W,
    limits: CatLimits,
    written: u64,
    root: Cid,
}

impl<S: BlockSource + ?Sized, W: Write + ?Sized> Walk<'_, S, W> {
    fn emit(&mut self, bytes: &[u8]) -> Result<(), IpfsError> {
        let total = self.written + bytes.len() as u64;
        if total > self.limits.max_bytes {
            return Err(IpfsError::TooLarge {
                cid: self.root.to_string(),
                limit: self.limits.max_bytes,
            });
        }
        self.out.write_all(bytes).map_err(IpfsError::Output)?;
        self.written = total;
        Ok(())
    }

    fn malformed(cid: &Cid, reason: String) -> IpfsError {
        IpfsError::Malformed {
            cid: cid.to_string(),
            reason,
        }
    }

    /// Emits the file rooted at `cid`; returns how many bytes this subtree produced.
    fn node(&mut self, cid: &Cid, depth: usize) -> Result<u64, IpfsError> {
        if depth > self.limits.max_depth {
            return Err(Self::malformed(
                &self.root,
                format!("DAG is deeper than {} levels", self.limits.max_depth),
            ));
        }
        // Identity CIDs carry their block inline; everything else comes from the source.
        if let Some(inline) = identity_content(cid) {
            return self.decode(cid, inline, depth);
        }
        let mut buf = take_buf();
        let result = self
            .source
            .read_block(cid, &mut buf)
            .and_then(|()| self.decode(cid, &buf, depth));
        give_buf(buf);
        result
    }

    fn decode(&mut self, cid: &Cid, block: &[u8], depth: usize) -> Result<u64, IpfsError> {
        let start = self.written;
        match cid.codec() {
            CODEC_RAW => {
                self.emit(block)?;
                return Ok(self.written - start);
            }
            CODEC_DAG_PB => {}
            other => {
                return Err(IpfsError::NotAFile {
                    cid: cid.to_string(),
                    kind: format!("codec 0x{other:x}, not dag-pb or raw"),
                })
            }
        }
        let node = decode_pbnode(block).map_err(|r| Self::malformed(cid, r))?;
        let data = node
            .data
            .ok_or_else(|| Self::malformed(cid, "dag-pb node has no UnixFS Data".into()))?;
        let fs = decode_unixfs(data).map_err(|r| Self::malformed(cid, r))?;
        match fs.kind {
            DataType::File | DataType::Raw => {}
            // kubo's cat prints a symlink's target; a symlink has no children.
            DataType::Symlink if depth == 0 && node.links.is_empty() => {}
            other if depth == 0 => {
                return Err(IpfsError::NotAFile {
                    cid: cid.to_string(),
                    kind: other.name().to_string(),
                })
            }
            other => {
                return Err(Self::malformed(
                    cid,
                    format!("a file's child is a {}", other.name()),
                ))
            }
        }
        if let Some(size) = fs.filesize {
            if depth == 0 && size > self.limits.max_bytes {
                return Err(IpfsError::TooLarge {
                    cid: cid.to_string(),
                    limit: self.limits.max_bytes,
                });
            }
        }
        if !node.links.is_empty() && node.links.len() != fs.blocksizes.len() {
            return Err(Self::malformed(
                cid,
                format!(
                    "{} links but {} blocksizes",
                    node.links.len(),
                    fs.blocksizes.len()
                ),
            ));
        }
        if let Some(d) = fs.data {
            self.emit(d)?;
        }
        for (i, (link, &declared)) in node.links.iter().zip(&fs.blocksizes).enumerate() {
            let child = cid_from_bytes(cid, link.hash)?;
            let produced = self.node(&child, depth + 1)?;
            if produced != declared {
                return Err(Self::malformed(
                    cid,
                    format!("child {i} ({child}) declares {declared} bytes but holds {produced}"),
                ));
            }
        }
        let produced = self.written - start;
        if let Some(size) = fs.filesize {
            if size != produced {
                return Err(Self::malformed(
                    cid,
                    format!("filesize says {size} bytes but the DAG holds {produced}"),
                ));
            }
        }
        Ok(produced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::cid::verify_block;
    use crate::ipfs::unixfs::{encode_file_block, encode_pbnode, encode_unixfs, PbLink};
    use crate::ipfs::ErrorClass;
    use multihash_codetable::{Code, MultihashDigest};
    use std::collections::HashMap;

    /// An in-memory block source: the same verification as the real one, without a disk.
    #[derive(Default)]
    struct Mem(HashMap<Cid, Vec<u8>>);

    impl Mem {
        fn put(&mut self, codec: u64, block: Vec<u8>) -> Cid {
            let mh = Code::Sha2_256.digest(&block);
            let cid = if codec == CODEC_DAG_PB {
                Cid::new_v0(mh).unwrap()
            } else {
                Cid::new_v1(codec, mh)
            };
            self.0.insert(cid, block);
            cid
        }
    }

    impl BlockSource for Mem {
        fn read_block(&self, cid: &Cid, buf: &mut Vec<u8>) -> Result<(), IpfsError> {
            let b = self.0.get(cid).ok_or(IpfsError::BlockMissing {
                cid: cid.to_string(),
            })?;
            verify_block(cid, b)?;
            buf.clear();
            buf.extend_from_slice(b);
            Ok(())
        }
    }

    fn cat_vec(m: &Mem, cid: &Cid, limits: CatLimits) -> Result<Vec<u8>, IpfsError> {
        let mut out = Vec::new();
        cat(m, cid, &mut out, limits)?;
        Ok(out)
    }

    fn file_of(m: &mut Mem, children: &[(Cid, u64)], declared_total: Option<u64>) -> Cid {
        let hashes: Vec<Vec<u8>> = children.iter().map(|(c, _)| c.to_bytes()).collect();
        let links: Vec<PbLink> = hashes
            .iter()
            .map(|h| PbLink {
                hash: h,
                name: Some(""),
                tsize: None,
            })
            .collect();
        let sizes: Vec<u64> = children.iter().map(|(_, s)| *s).collect();
        let total = declared_total.unwrap_or(sizes.iter().sum());
        let data = encode_unixfs(2, None, Some(total), &sizes);
        m.put(CODEC_DAG_PB, encode_pbnode(&links, Some(&data)))
    }

    #[test]
    fn single_block_file() {
        let mut m = Mem::default();
        let cid = m.put(CODEC_DAG_PB, encode_file_block(b"TRI 7 did"));
        assert_eq!(
            cat_vec(&m, &cid, CatLimits::default()).unwrap(),
            b"TRI 7 did"
        );
    }

    #[test]
    fn multi_block_file_in_order_with_dag_pb_and_raw_leaves() {
        let mut m = Mem::default();
        let a = m.put(CODEC_DAG_PB, encode_file_block(b"hello "));
        let b = m.put(CODEC_RAW, b"wide ".to_vec());
        let c = m.put(CODEC_DAG_PB, encode_file_block(b"world"));
        let inner = file_of(&mut m, &[(b, 5), (c, 5)], None);
        let root = file_of(&mut m, &[(a, 6), (inner, 10)], None);
        assert_eq!(
            cat_vec(&m, &root, CatLimits::default()).unwrap(),
            b"hello wide world"
        );
    }

    #[test]
    fn directory_is_not_a_file() {
        let mut m = Mem::default();
        let f = m.put(CODEC_DAG_PB, encode_file_block(b"x"));
        let h = f.to_bytes();
        let dir = encode_pbnode(
            &[PbLink {
                hash: &h,
                name: Some("x"),
                tsize: Some(9),
            }],
            Some(&encode_unixfs(1, None, None, &[])),
        );
        let d = m.put(CODEC_DAG_PB, dir);
        let err = cat_vec(&m, &d, CatLimits::default()).unwrap_err();
        assert_eq!(err.class(), ErrorClass::NotAFile, "{err}");
    }

    #[test]
    fn lying_sizes_are_malformed() {
        let mut m = Mem::default();
        let a = m.put(CODEC_DAG_PB, encode_file_block(b"abc"));
        let lie_child = file_of(&mut m, &[(a, 4)], Some(4));
        let err = cat_vec(&m, &lie_child, CatLimits::default()).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Malformed, "{err}");
        let lie_total = file_of(&mut m, &[(a, 3)], Some(99));
        let err = cat_vec(&m, &lie_total, CatLimits::default()).unwrap_err();
        assert!(err.to_string().contains("filesize"), "{err}");
        // More links than blocksizes.
        let h = a.to_bytes();
        let l = PbLink {
            hash: &h,
            name: None,
            tsize: None,
        };
        let n = m.put(
            CODEC_DAG_PB,
            encode_pbnode(&[l.clone(), l], Some(&encode_unixfs(2, None, None, &[3]))),
        );
        assert_eq!(
            cat_vec(&m, &n, CatLimits::default()).unwrap_err().class(),
            ErrorClass::Malformed
        );
    }

    #[test]
    fn depth_and_size_are_bounded() {
        let mut m = Mem::default();
        let mut cid = m.put(CODEC_DAG_PB, encode_file_block(b"z"));
        for _ in 0..10 {
            cid = file_of(&mut m, &[(cid, 1)], None);
        }
        let shallow = CatLimits {
            max_depth: 5,
            ..CatLimits::default()
        };
        assert!(cat_vec(&m, &cid, shallow)
            .unwrap_err()
            .to_string()
            .contains("deeper"));
        assert_eq!(cat_vec(&m, &cid, CatLimits::default()).unwrap(), b"z");

        let big = file_of(&mut m, &[(cid, 1)], Some(1));
        let tiny = CatLimits {
            max_bytes: 0,
            ..CatLimits::default()
        };
        assert!(matches!(
            cat_vec(&m, &big, tiny),
            Err(IpfsError::TooLarge { .. })
        ));
    }

    #[test]
    fn missing_child_and_unknown_codec() {
        let mut m = Mem::default();
        let ghost = Cid::new_v0(Code::Sha2_256.digest(b"never stored")).unwrap();
        let root = file_of(&mut m, &[(ghost, 1)], None);
        assert_eq!(
            cat_vec(&m, &root, CatLimits::default())
                .unwrap_err()
                .class(),
            ErrorClass::BlockMissing
        );
        let cbor = m.put(0x71, vec![0xa0]);
        assert_eq!(
            cat_vec(&m, &cbor, CatLimits::default())
                .unwrap_err()
                .class(),
            ErrorClass::NotAFile
        );
    }

    #[test]
    fn identity_cid_needs_no_block() {
        let m = Mem::default();
        let block = encode_file_block(b"inline!");
        let mh = multihash::Multihash::<64>::wrap(0, &block).unwrap();
        let cid = Cid::new_v1(CODEC_DAG_PB, mh);
        assert_eq!(cat_vec(&m, &cid, CatLimits::default()).unwrap(), b"inline!");
    }
}
