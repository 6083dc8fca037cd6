//! dag-pb and UnixFS decoding: the two tiny protobuf schemas behind every `ipfs add`.
//!
//! ```text
//! PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }
//! PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
//! Data   { DataType Type = 1; optional bytes Data = 2; optional uint64 filesize = 3;
//!          repeated uint64 blocksizes = 4; optional uint64 hashType = 5; optional uint64 fanout = 6;
//!          optional uint32 mode = 7; optional UnixTime mtime = 8; }
//! ```
//!
//! Hand-written rather than generated: a token block is 74 bytes and decoding it must cost
//! nanoseconds, borrow from the block buffer and reject anything out of spec with a reason.

/// Protobuf wire types we meet.
const WIRE_VARINT: u64 = 0;
const WIRE_I64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_I32: u64 = 5;

/// A decoding failure, described for an operator; the caller adds the CID.
pub type DecodeError = String;

/// One dag-pb link, borrowing from the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink<'a> {
    pub hash: &'a [u8],
    pub name: Option<&'a str>,
    pub tsize: Option<u64>,
}

/// A dag-pb node, borrowing from the block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PbNode<'a> {
    pub links: Vec<PbLink<'a>>,
    pub data: Option<&'a [u8]>,
}

/// UnixFS node types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Raw,
    Directory,
    File,
    Metadata,
    Symlink,
    HamtShard,
}

impl DataType {
    fn from_code(code: u64) -> Result<DataType, DecodeError> {
        Ok(match code {
            0 => DataType::Raw,
            1 => DataType::Directory,
            2 => DataType::File,
            3 => DataType::Metadata,
            4 => DataType::Symlink,
            5 => DataType::HamtShard,
            other => return Err(format!("unknown UnixFS type {other}")),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            DataType::Raw => "raw",
            DataType::Directory => "directory",
            DataType::File => "file",
            DataType::Metadata => "metadata",
            DataType::Symlink => "symlink",
            DataType::HamtShard => "HAMT-sharded directory",
        }
    }
}

/// The UnixFS `Data` message of a dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unixfs<'a> {
    pub kind: DataType,
    pub data: Option<&'a [u8]>,
    pub filesize: Option<u64>,
    pub blocksizes: Vec<u64>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| "truncated varint".to_string())?;
            self.pos += 1;
            if i == 9 && byte > 1 {
                return Err("varint overflows 64 bits".into());
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.varint()?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| self.pos.checked_add(l))
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| format!("field length {len} runs past the end of the block"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn skip(&mut self, wire: u64) -> Result<(), DecodeError> {
        let n = match wire {
            WIRE_VARINT => return self.varint().map(drop),
            WIRE_LEN => return self.bytes().map(drop),
            WIRE_I64 => 8,
            WIRE_I32 => 4,
            other => return Err(format!("unsupported protobuf wire type {other}")),
        };
        if self.pos + n > self.buf.len() {
            return Err("truncated fixed-width field".into());
        }
        self.pos += n;
        Ok(())
    }

    fn key(&mut self) -> Result<(u64, u64), DecodeError> {
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err("protobuf field number 0".into());
        }
        Ok((field, key & 7))
    }
}

fn expect_wire(field: &str, got: u64, want: u64) -> Result<(), DecodeError> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{field} has wire type {got}, expected {want}"))
    }
}

/// Decodes a dag-pb block. Like go-codec-dagpb it rejects unknown fields: dag-pb is a strict
/// format, and anything else in the block means it is not what its CID claims.
pub fn decode_pbnode(block: &[u8]) -> Result<PbNode<'_>, DecodeError> {
    let mut r = Reader::new(block);
    let mut node = PbNode::default();
    while !r.done() {
        match r.key()? {
            (1, wire) => {
                expect_wire("PBNode.Data", wire, WIRE_LEN)?;
                if node.data.is_some() {
                    return Err("PBNode.Data appears twice".into());
                }
                node.data = Some(r.bytes()?);
            }
            (2, wire) => {
                expect_wire("PBNode.Links", wire, WIRE_LEN)?;
                if node.data.is_some() {
                    return Err("PBNode.Links after Data (not canonical dag-pb)".into());
                }
                node.links.push(decode_link(r.bytes()?)?);
            }
            (field, _) => return Err(format!("unknown PBNode field {field}")),
        }
    }
    Ok(node)
}

fn decode_link(bytes: &[u8]) -> Result<PbLink<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
    let mut hash = None;
    let mut name = None;
    let mut tsize = None;
    while !r.done() {
        match r.key()? {
            (1, wire) => {
                expect_wire("PBLink.Hash", wire, WIRE_LEN)?;
                hash = Some(r.bytes()?);
            }
            (2, wire) => {
                expect_wire("PBLink.Name", wire, WIRE_LEN)?;
                let raw = r.bytes()?;
                name = Some(std::str::from_utf8(raw).map_err(|_| "PBLink.Name is not UTF-8")?);
            }
            (3, wire) => {
                expect_wire("PBLink.Tsize", wire, WIRE_VARINT)?;
                tsize = Some(r.varint()?);
            }
            (field, _) => return Err(format!("unknown PBLink field {field}")),
        }
    }
    Ok(PbLink {
        hash: hash.ok_or("PBLink without Hash")?,
        name,
        tsize,
    })
}

/// Decodes the UnixFS `Data` message. Unknown fields are skipped (UnixFS grew fields over time).
pub fn decode_unixfs(bytes: &[u8]) -> Result<Unixfs<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
    let mut kind = None;
    let mut data = None;
    let mut filesize = None;
    let mut blocksizes = Vec::new();
    while !r.done() {
        match r.key()? {
            (1, wire) => {
                expect_wire("UnixFS.Type", wire, WIRE_VARINT)?;
                kind = Some(DataType::from_code(r.varint()?)?);
            }
            (2, wire) => {
                expect_wire("UnixFS.Data", wire, WIRE_LEN)?;
                data = Some(r.bytes()?);
            }
            (3, wire) => {
                expect_wire("UnixFS.filesize", wire, WIRE_VARINT)?;
                filesize = Some(r.varint()?);
            }
            (4, WIRE_VARINT) => blocksizes.push(r.varint()?),
            (4, WIRE_LEN) => {
                // Packed encoding of the repeated field.
                let mut packed = Reader::new(r.bytes()?);
                while !packed.done() {
                    blocksizes.push(packed.varint()?);
                }
            }
            (4, wire) => return Err(format!("UnixFS.blocksizes has wire type {wire}")),
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok(Unixfs {
        kind: kind.ok_or("UnixFS Data without Type")?,
        data,
        filesize,
        blocksizes,
    })
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encodes a single-block UnixFS file exactly as kubo's `ipfs add` does for content up to one
/// chunk (CIDv0, no raw leaves): `PBNode{Data: UnixFS{Type: File, Data: content, filesize}}`.
/// Used by the corpus generator and tests; its output is checked against kubo's own blocks.
pub fn encode_file_block(content: &[u8]) -> Vec<u8> {
    let mut unixfs = Vec::with_capacity(content.len() + 16);
    unixfs.extend_from_slice(&[0x08, 0x02]);
    if !content.is_empty() {
        unixfs.push(0x12);
        put_varint(&mut unixfs, content.len() as u64);
        unixfs.extend_from_slice(content);
    }
    unixfs.push(0x18);
    put_varint(&mut unixfs, content.len() as u64);
    let mut block = Vec::with_capacity(unixfs.len() + 8);
    block.push(0x0a);
    put_varint(&mut block, unixfs.len() as u64);
    block.extend_from_slice(&unixfs);
    block
}

/// Encodes a dag-pb node with links (for tests of multi-block files and directories).
pub fn encode_pbnode(links: &[PbLink<'_>], data: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for link in links {
        let mut l = Vec::new();
        l.push(0x0a);
        put_varint(&mut l, link.hash.len() as u64);
        l.extend_from_slice(link.hash);
        if let Some(name) = link.name {
            l.push(0x12);
            put_varint(&mut l, name.len() as u64);
            l.extend_from_slice(name.as_bytes());
        }
        if let Some(t) = link.tsize {
            l.push(0x18);
            put_varint(&mut l, t);
        }
        out.push(0x12);
        put_varint(&mut out, l.len() as u64);
        out.extend_from_slice(&l);
    }
    if let Some(d) = data {
        out.push(0x0a);
        put_varint(&mut out, d.len() as u64);
        out.extend_from_slice(d);
    }
    out
}

/// Encodes a UnixFS `Data` message (for tests).
pub fn encode_unixfs(
    kind: u64,
    data: Option<&[u8]>,
    filesize: Option<u64>,
    blocksizes: &[u64],
) -> Vec<u8> {
    let mut out = vec![0x08];
    put_varint(&mut out, kind);
    if let Some(d) = data {
        out.push(0x12);
        put_varint(&mut out, d.len() as u64);
        out.extend_from_slice(d);
    }
    if let Some(f) = filesize {
        out.push(0x18);
        put_varint(&mut out, f);
    }
    for b in blocksizes {
        out.push(0x20);
        put_varint(&mut out, *b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap()
    }

    #[test]
    fn token_block_layout_matches_design_notes() {
        let content = vec![b'x'; 66];
        let block = encode_file_block(&content);
        assert_eq!(block.len(), 74);
        assert_eq!(&block[..6], &hex("0a4808021242")[..]);
        assert_eq!(&block[72..], &hex("1842")[..]);
        let node = decode_pbnode(&block).unwrap();
        assert!(node.links.is_empty());
        let fs = decode_unixfs(node.data.unwrap()).unwrap();
        assert_eq!(fs.kind, DataType::File);
        assert_eq!(fs.data, Some(&content[..]));
        assert_eq!(fs.filesize, Some(66));
    }

    #[test]
    fn empty_file_has_no_data_field() {
        // kubo's empty file: QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH = 0a 04 08 02 18 00
        assert_eq!(encode_file_block(b""), hex("0a0408021800"));
    }

    #[test]
    fn links_roundtrip_and_precede_data() {
        let h1 = [0x12, 0x20, 1, 2, 3];
        let links = [
            PbLink {
                hash: &h1,
                name: Some(""),
                tsize: Some(10),
            },
            PbLink {
                hash: &h1,
                name: None,
                tsize: None,
            },
        ];
        let unixfs = encode_unixfs(2, None, Some(20), &[10, 10]);
        let block = encode_pbnode(&links, Some(&unixfs));
        let node = decode_pbnode(&block).unwrap();
        assert_eq!(node.links, links.to_vec());
        let fs = decode_unixfs(node.data.unwrap()).unwrap();
        assert_eq!(fs.blocksizes, vec![10, 10]);
    }

    #[test]
    fn packed_blocksizes_are_read() {
        // Type=File, blocksizes packed [3, 300]
        let bytes = hex("0802220303ac02");
        let fs = decode_unixfs(&bytes).unwrap();
        assert_eq!(fs.blocksizes, vec![3, 300]);
    }

    #[test]
    fn rejects_malformed_protobuf() {
        let cases: &[(&str, &[u8])] = &[
            ("truncated length", &[0x0a, 0x48, 0x08]),
            ("truncated varint", &[0x0a, 0xff]),
            ("unknown field", &[0x1a, 0x00]),
            ("field zero", &[0x02, 0x00]),
            ("wrong wire type for Data", &[0x08, 0x01]),
            ("links after data", &[0x0a, 0x00, 0x12, 0x02, 0x0a, 0x00]),
            ("link without hash", &[0x12, 0x02, 0x18, 0x01]),
            (
                "overlong varint",
                &[
                    0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
                ],
            ),
        ];
        for (what, bytes) in cases {
            assert!(decode_pbnode(bytes).is_err(), "{what}");
        }
        assert!(decode_unixfs(&[]).is_err(), "no type");
        assert!(decode_unixfs(&[0x08, 0x09]).is_err(), "unknown type");
        assert!(
            decode_unixfs(&[0x08, 0x02, 0x12, 0x05, 0x01]).is_err(),
            "data past end"
        );
    }

    #[test]
    fn unknown_unixfs_fields_are_skipped() {
        // Type=File, mode (7) = 0o644, mtime (8) = {1: 5}, fixed64 field 9.
        let mut bytes = hex("0802");
        bytes.extend_from_slice(&hex("38a403"));
        bytes.extend_from_slice(&hex("42020805"));
        bytes.extend_from_slice(&hex("490102030405060708"));
        let fs = decode_unixfs(&bytes).unwrap();
        assert_eq!(fs.kind, DataType::File);
    }
}
