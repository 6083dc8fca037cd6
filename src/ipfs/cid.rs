//! CID parsing and block verification.
//!
//! kubo does not hash blocks it reads from its own disk; we always do, because a flipped bit in
//! a token block would otherwise land in the database as a wrong owner or number.

use cid::Cid;
use multihash_codetable::{Code, MultihashDigest};

use super::IpfsError;

/// dag-pb: UnixFS nodes as `ipfs add` writes them.
pub const CODEC_DAG_PB: u64 = 0x70;
/// raw: leaves written with `--raw-leaves` or CIDv1 adds.
pub const CODEC_RAW: u64 = 0x55;
/// The identity "hash": the digest *is* the content, nothing is stored on disk.
pub const MH_IDENTITY: u64 = 0x00;

/// Longest identity digest we accept; kubo caps inlined identity CIDs far lower.
const MAX_IDENTITY_LEN: usize = 128;

/// Parses a CID in any form the `cid` crate reads: CIDv0 (`Qm…`, base58btc) or CIDv1 in any
/// multibase. Surrounding whitespace is ignored (token ids are often copied from logs).
pub fn parse_cid(input: &str) -> Result<Cid, IpfsError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(IpfsError::InvalidCid {
            input: input.to_string(),
            reason: "empty".into(),
        });
    }
    // Fast path for CIDv0 (`Qm…`, 46 base58btc characters = 34 bytes), which every Rubix token
    // id is: the generic multibase decoder is the largest CPU cost per token otherwise.
    if trimmed.len() == 46 && trimmed.starts_with("Qm") {
        let mut raw = [0u8; 34];
        if let Ok(34) = bs58::decode(trimmed).onto(&mut raw[..]) {
            if let Ok(cid) = Cid::try_from(&raw[..]) {
                return Ok(cid);
            }
        }
    }
    Cid::try_from(trimmed).map_err(|e| IpfsError::InvalidCid {
        input: input.to_string(),
        reason: e.to_string(),
    })
}

/// Parses a CID from its binary form, as it appears inside a dag-pb link.
pub fn cid_from_bytes(parent: &Cid, bytes: &[u8]) -> Result<Cid, IpfsError> {
    Cid::try_from(bytes).map_err(|e| IpfsError::Malformed {
        cid: parent.to_string(),
        reason: format!("link holds an invalid CID: {e}"),
    })
}

/// The content of an identity-hash CID, which never touches disk.
pub fn identity_content(cid: &Cid) -> Option<&[u8]> {
    let mh = cid.hash();
    (mh.code() == MH_IDENTITY).then(|| mh.digest())
}

/// Checks that `bytes` hash to the digest in `cid`. Truncated digests (a digest shorter than
/// the function's output) are compared on their prefix, as the multihash spec allows.
pub fn verify_block(cid: &Cid, bytes: &[u8]) -> Result<(), IpfsError> {
    let mh = cid.hash();
    let code = mh.code();
    if code == MH_IDENTITY {
        if mh.digest().len() > MAX_IDENTITY_LEN {
            return Err(IpfsError::Malformed {
                cid: cid.to_string(),
                reason: format!("identity CID longer than {MAX_IDENTITY_LEN} bytes"),
            });
        }
        return if mh.digest() == bytes {
            Ok(())
        } else {
            Err(corrupt(cid, "identity content mismatch"))
        };
    }
    let function = Code::try_from(code).map_err(|_| IpfsError::UnsupportedHash {
        cid: cid.to_string(),
        code,
    })?;
    let computed = function.digest(bytes);
    let want = mh.digest();
    let got = computed.digest();
    if want.is_empty() || want.len() > got.len() || got[..want.len()] != *want {
        return Err(corrupt(
            cid,
            &format!(
                "hash mismatch: {} bytes do not hash to the CID's digest",
                bytes.len()
            ),
        ));
    }
    Ok(())
}

fn corrupt(cid: &Cid, reason: &str) -> IpfsError {
    IpfsError::BlockCorrupt {
        cid: cid.to_string(),
        path: None,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The same 66-byte token block kubo wrote in DESIGN.md's example repo shape.
    fn token_block(content: &[u8]) -> Vec<u8> {
        crate::ipfs::unixfs::encode_file_block(content)
    }

    #[test]
    fn parses_v0_and_v1_in_several_bases() {
        let v0 = parse_cid("QmYcxL3Lm4JXTPs9bLq87dw1X6V87x1DTsaYSYy1Mu9h4C").unwrap();
        assert_eq!(v0.version(), cid::Version::V0);
        let v1 = Cid::new_v1(CODEC_DAG_PB, *v0.hash());
        for base in [
            cid::multibase::Base::Base32Lower,
            cid::multibase::Base::Base58Btc,
            cid::multibase::Base::Base64Url,
            cid::multibase::Base::Base16Lower,
            cid::multibase::Base::Base36Lower,
        ] {
            let text = v1.to_string_of_base(base).unwrap();
            assert_eq!(parse_cid(&text).unwrap(), v1, "{text}");
        }
        assert_eq!(
            parse_cid("  QmYcxL3Lm4JXTPs9bLq87dw1X6V87x1DTsaYSYy1Mu9h4C\n").unwrap(),
            v0
        );
    }

    #[test]
    fn cidv0_fast_path_agrees_with_the_generic_parser() {
        for text in [
            "QmYcxL3Lm4JXTPs9bLq87dw1X6V87x1DTsaYSYy1Mu9h4C",
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",
        ] {
            assert_eq!(parse_cid(text).unwrap(), Cid::try_from(text).unwrap());
        }
        // 46 characters starting with Qm but not valid base58 (0, O, I, l) or not a multihash.
        for bad in [
            "Qm0cxL3Lm4JXTPs9bLq87dw1X6V87x1DTsaYSYy1Mu9h4C",
            "QmYcxL3Lm4JXTPs9bLq87dw1X6V87x1DTsaYSYy1Mu9h4l",
            "Qmzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        ] {
            assert!(parse_cid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_garbage_and_truncated_cids() {
        for bad in [
            "",
            "   ",
            "hello",
            "QmYcxL3Lm4JXTPs9bLq87dw1X6V87x1DTsaYSYy1Mu9h4",
            "Qm!!",
            "bafy",
            "zzzz",
        ] {
            let err = parse_cid(bad).unwrap_err();
            assert!(matches!(err, IpfsError::InvalidCid { .. }), "{bad}: {err}");
            assert_eq!(err.class(), crate::ipfs::ErrorClass::InvalidCid);
        }
    }

    #[test]
    fn verifies_sha2_256_and_detects_a_flipped_byte() {
        let block = token_block(b"TRI 1 bafybmiexample");
        let mh = Code::Sha2_256.digest(&block);
        let cid = Cid::new_v0(mh).unwrap();
        verify_block(&cid, &block).unwrap();
        let mut bad = block.clone();
        bad[10] ^= 1;
        let err = verify_block(&cid, &bad).unwrap_err();
        assert_eq!(err.class(), crate::ipfs::ErrorClass::BlockCorrupt);
        assert!(verify_block(&cid, &[]).is_err());
    }

    #[test]
    fn verifies_sha2_512_blake2b_256_and_sha3() {
        let data = b"some block bytes";
        for code in [
            Code::Sha2_512,
            Code::Blake2b256,
            Code::Sha3_256,
            Code::Sha2_256,
        ] {
            let cid = Cid::new_v1(CODEC_RAW, code.digest(data));
            verify_block(&cid, data).unwrap();
            assert!(verify_block(&cid, b"other bytes").is_err(), "{code:?}");
        }
    }

    #[test]
    fn unknown_hash_function_is_reported_not_trusted() {
        // 0x7777: no hash function has this code.
        let mh = multihash::Multihash::<64>::wrap(0x7777, &[0u8; 32]).unwrap();
        let cid = Cid::new_v1(CODEC_RAW, mh);
        assert!(matches!(
            verify_block(&cid, b"x"),
            Err(IpfsError::UnsupportedHash { .. })
        ));
    }

    #[test]
    fn identity_cids_carry_their_content() {
        let mh = multihash::Multihash::<64>::wrap(MH_IDENTITY, b"inline").unwrap();
        let cid = Cid::new_v1(CODEC_RAW, mh);
        assert_eq!(identity_content(&cid), Some(&b"inline"[..]));
        verify_block(&cid, b"inline").unwrap();
        assert!(verify_block(&cid, b"other").is_err());
    }
}
