//! Opening a kubo repository read-only.
//!
//! We read `version`, `datastore_spec`, `blocks/SHARDING` and (best-effort) `config`, and
//! nothing else. `repo.lock` is deliberately ignored: we never write, so a live daemon's lock
//! is no reason to stop, and a stale one is no reason to delete anything.

use std::fs;
use std::path::{Path, PathBuf};

use cid::Cid;
use serde_json::Value;

use super::flatfs::{Flatfs, KeyMode, Shard};
use super::resolve::BlockSource;
use super::IpfsError;

/// Repo versions whose on-disk block layout we know. 12 switched keys to multihashes;
/// 13–16 changed only config and datastore metadata, which we do not depend on.
pub const MAX_KNOWN_VERSION: u32 = 16;

/// The parts of a kubo `config` rubix-sync uses (peer fallback), read best-effort.
#[derive(Debug, Clone, Default)]
pub struct RepoConfig {
    pub peer_id: Option<String>,
    pub swarm_addrs: Vec<String>,
    pub bootstrap: Vec<String>,
}

/// An opened kubo repository.
#[derive(Debug, Clone)]
pub struct Repo {
    root: PathBuf,
    version: u32,
    blocks: Flatfs,
    config: RepoConfig,
}

impl Repo {
    /// Opens the repository at `root` without creating, locking or changing anything.
    pub fn open(root: impl AsRef<Path>) -> Result<Repo, IpfsError> {
        let root = root.as_ref().to_path_buf();
        let not_repo = |reason: String| IpfsError::NotARepo {
            path: root.clone(),
            reason,
        };
        let meta = fs::metadata(&root).map_err(|e| not_repo(e.to_string()))?;
        if !meta.is_dir() {
            return Err(not_repo("not a directory".into()));
        }
        let version_text = fs::read_to_string(root.join("version"))
            .map_err(|e| not_repo(format!("cannot read `version`: {e}")))?;
        let version: u32 = version_text.trim().parse().map_err(|_| {
            not_repo(format!(
                "`version` holds {:?}, not a number",
                version_text.trim()
            ))
        })?;
        if version > MAX_KNOWN_VERSION {
            tracing::warn!(
                repo = %root.display(),
                version,
                "repository version is newer than {MAX_KNOWN_VERSION}; assuming the flatfs layout is unchanged"
            );
        }

        let spec_path = root.join("datastore_spec");
        let spec_text = fs::read_to_string(&spec_path).map_err(|e| IpfsError::MalformedRepo {
            path: spec_path.clone(),
            reason: format!("cannot read datastore_spec: {e}"),
        })?;
        let (blocks_rel, spec_shard) = blocks_mount(&root, &spec_text)?;
        let blocks_dir = root.join(blocks_rel);

        let sharding_path = blocks_dir.join("SHARDING");
        let sharding_text =
            fs::read_to_string(&sharding_path).map_err(|e| IpfsError::MalformedRepo {
                path: sharding_path.clone(),
                reason: format!("cannot read the flatfs shard function: {e}"),
            })?;
        let shard = Shard::parse(&sharding_text).map_err(|reason| IpfsError::MalformedRepo {
            path: sharding_path.clone(),
            reason,
        })?;
        if let Some(spec_shard) = spec_shard {
            if spec_shard != shard {
                return Err(IpfsError::MalformedRepo {
                    path: sharding_path,
                    reason: format!(
                        "SHARDING says {shard} but datastore_spec says {spec_shard}; the repo is inconsistent"
                    ),
                });
            }
        }

        let mode = if version >= 12 {
            KeyMode::Multihash
        } else {
            KeyMode::WholeCid
        };
        let config = read_config(&root.join("config"));
        let blocks = Flatfs::open(blocks_dir.clone(), shard, mode).map_err(|e| IpfsError::Io {
            path: blocks_dir,
            source: e,
        })?;
        Ok(Repo {
            root,
            version,
            blocks,
            config,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn blocks(&self) -> &Flatfs {
        &self.blocks
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }
}

impl BlockSource for Repo {
    fn read_block(&self, cid: &Cid, buf: &mut Vec<u8>) -> Result<(), IpfsError> {
        self.blocks.read_raw(cid, buf)?;
        if super::cid::verify_block(cid, buf).is_ok() {
            return Ok(());
        }
        // Re-read without the single-read shortcut before calling the block corrupt.
        self.blocks.read_raw_slow(cid, buf)?;
        super::cid::verify_block(cid, buf).map_err(|e| match e {
            IpfsError::BlockCorrupt {
                cid: text, reason, ..
            } => IpfsError::BlockCorrupt {
                path: Some(self.blocks.block_path(cid)),
                cid: text,
                reason,
            },
            other => other,
        })
    }
}

/// Finds the `/blocks` mount in a datastore spec: its directory and, if stated, shard function.
pub fn blocks_mount(root: &Path, spec_text: &str) -> Result<(String, Option<Shard>), IpfsError> {
    let spec_path = root.join("datastore_spec");
    let malformed = |reason: String| IpfsError::MalformedRepo {
        path: spec_path.clone(),
        reason,
    };
    let spec: Value =
        serde_json::from_str(spec_text).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let kind = spec.get("type").and_then(Value::as_str).unwrap_or("");
    let blocks = match kind {
        "mount" => spec
            .get("mounts")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("`mount` spec without `mounts`".into()))?
            .iter()
            .find(|m| m.get("mountpoint").and_then(Value::as_str) == Some("/blocks"))
            .ok_or_else(|| malformed("no /blocks mount".into()))?,
        // A single datastore for everything, blocks included.
        _ => &spec,
    };
    let blocks = unwrap_measure(blocks);
    match blocks.get("type").and_then(Value::as_str) {
        Some("flatfs") => {
            let path = blocks
                .get("path")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed("flatfs mount without `path`".into()))?;
            let shard = match blocks.get("shardFunc").and_then(Value::as_str) {
                Some(s) => Some(Shard::parse(s).map_err(malformed)?),
                None => None,
            };
            Ok((path.to_string(), shard))
        }
        Some(other) => Err(IpfsError::UnsupportedDatastore {
            path: root.to_path_buf(),
            kind: other.to_string(),
        }),
        None => Err(malformed("/blocks mount has no `type`".into())),
    }
}

/// kubo's config form wraps datastores in `{"type":"measure","child":…}`; the disk spec does
/// not, but accept both.
fn unwrap_measure(mut v: &Value) -> &Value {
    while v.get("type").and_then(Value::as_str) == Some("measure") {
        match v.get("child") {
            Some(child) => v = child,
            None => break,
        }
    }
    v
}

fn read_config(path: &Path) -> RepoConfig {
    let Ok(text) = fs::read_to_string(path) else {
        return RepoConfig::default();
    };
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        tracing::warn!(config = %path.display(), "repository config is not valid JSON; ignoring it");
        return RepoConfig::default();
    };
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    RepoConfig {
        peer_id: v
            .pointer("/Identity/PeerID")
            .and_then(Value::as_str)
            .map(str::to_string),
        swarm_addrs: strings(v.pointer("/Addresses/Swarm")),
        bootstrap: strings(v.get("Bootstrap")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBO_SPEC: &str = r#"{"mounts":[{"mountpoint":"/blocks","path":"blocks","shardFunc":"/repo/flatfs/shard/v1/next-to-last/2","type":"flatfs"},{"mountpoint":"/","path":"datastore","type":"levelds"}],"type":"mount"}"#;

    #[test]
    fn kubo_default_spec_is_flatfs_next_to_last_2() {
        let (path, shard) = blocks_mount(Path::new("/r"), KUBO_SPEC).unwrap();
        assert_eq!(path, "blocks");
        assert_eq!(shard, Some(Shard::NextToLast(2)));
    }

    #[test]
    fn measure_wrappers_are_unwrapped() {
        let spec = r#"{"type":"mount","mounts":[{"mountpoint":"/blocks","type":"measure","prefix":"flatfs.datastore","child":{"type":"flatfs","path":"blk","shardFunc":"/repo/flatfs/shard/v1/prefix/3","sync":true}}]}"#;
        let (path, shard) = blocks_mount(Path::new("/r"), spec).unwrap();
        assert_eq!((path.as_str(), shard), ("blk", Some(Shard::Prefix(3))));
    }

    #[test]
    fn badger_and_pebble_are_unsupported_not_crashes() {
        for kind in ["badgerds", "pebbleds"] {
            let spec = format!(r#"{{"type":"{kind}","path":"badgerds"}}"#);
            let err = blocks_mount(Path::new("/r"), &spec).unwrap_err();
            assert!(
                matches!(err, IpfsError::UnsupportedDatastore { .. }),
                "{err}"
            );
            assert!(err.to_string().contains(kind));
        }
        let spec =
            r#"{"type":"mount","mounts":[{"mountpoint":"/blocks","type":"badgerds","path":"b"}]}"#;
        assert!(matches!(
            blocks_mount(Path::new("/r"), spec),
            Err(IpfsError::UnsupportedDatastore { .. })
        ));
    }

    #[test]
    fn malformed_specs_are_clear_errors() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"type":"mount"}"#,
            r#"{"type":"mount","mounts":[]}"#,
        ] {
            assert!(
                matches!(
                    blocks_mount(Path::new("/r"), bad),
                    Err(IpfsError::MalformedRepo { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
