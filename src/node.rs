//! A Rubix node on disk: its `Rubix/rubix.db` and the kubo repository that holds its tokens.
//!
//! Layouts seen in the field put `.ipfs` beside `Rubix/` (`node07/Rubix/rubix.db` +
//! `node07/.ipfs`), so the repository is found by walking up from the database's directory.

use std::path::{Path, PathBuf};

/// Where a node keeps its token database, relative to the node directory.
pub const DB_RELATIVE: &str = "Rubix/rubix.db";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node directory (the parent of `Rubix/`).
    pub dir: PathBuf,
    pub db: PathBuf,
    /// The kubo repository, if one was found.
    pub ipfs: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}: no Rubix/rubix.db here; pass the node directory (the one holding Rubix/ and .ipfs) or --db")]
    NoDatabase(PathBuf),
}

impl Node {
    /// The node at `dir`, with explicit overrides for the database and repository paths.
    /// Without an override, `.ipfs` is looked for in the database's directory and each parent
    /// up to (not above) `stop_at`, or the filesystem root when `stop_at` is `None`.
    pub fn locate(
        dir: &Path,
        db: Option<PathBuf>,
        ipfs: Option<PathBuf>,
        stop_at: Option<&Path>,
    ) -> Result<Node, NodeError> {
        let db = db.unwrap_or_else(|| dir.join(DB_RELATIVE));
        if !db.is_file() {
            return Err(NodeError::NoDatabase(dir.to_path_buf()));
        }
        let ipfs = ipfs.or_else(|| find_ipfs(&db, stop_at));
        Ok(Node {
            dir: dir.to_path_buf(),
            db,
            ipfs,
        })
    }

    /// A stable, human-readable identity for the failures and runs tables: the node
    /// directory's canonical path.
    pub fn label(&self) -> String {
        self.dir
            .canonicalize()
            .unwrap_or_else(|_| self.dir.clone())
            .display()
            .to_string()
    }
}

/// Walks up from the database's directory looking for a `.ipfs` directory with a `version` file.
pub fn find_ipfs(db: &Path, stop_at: Option<&Path>) -> Option<PathBuf> {
    let db = db.canonicalize().ok()?;
    let stop = stop_at.and_then(|s| s.canonicalize().ok());
    let mut dir = db.parent();
    while let Some(d) = dir {
        let candidate = d.join(".ipfs");
        if candidate.join("version").is_file() {
            return Some(candidate);
        }
        if stop.as_deref() == Some(d) {
            break;
        }
        dir = d.parent();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn mk_repo(p: &Path) {
        fs::create_dir_all(p).unwrap();
        fs::write(p.join("version"), "14\n").unwrap();
    }

    #[test]
    fn finds_ipfs_beside_rubix_and_in_nested_layouts() {
        let t = tempfile::tempdir().unwrap();
        let flat = t.path().join("node07");
        fs::create_dir_all(flat.join("Rubix")).unwrap();
        fs::write(flat.join(DB_RELATIVE), b"").unwrap();
        mk_repo(&flat.join(".ipfs"));
        let n = Node::locate(&flat, None, None, None).unwrap();
        assert_eq!(
            n.ipfs.unwrap().canonicalize().unwrap(),
            flat.join(".ipfs").canonicalize().unwrap()
        );

        let nested = t.path().join("SafePass/Rubix/Qnode1");
        fs::create_dir_all(nested.join("Rubix")).unwrap();
        fs::write(nested.join(DB_RELATIVE), b"").unwrap();
        mk_repo(&nested.join(".ipfs"));
        let n = Node::locate(&nested, None, None, Some(t.path())).unwrap();
        assert!(n.ipfs.unwrap().ends_with("Qnode1/.ipfs"));
    }

    #[test]
    fn walk_up_stops_at_the_root_and_ignores_non_repos() {
        let t = tempfile::tempdir().unwrap();
        mk_repo(&t.path().join(".ipfs"));
        let node = t.path().join("root/node");
        fs::create_dir_all(node.join("Rubix")).unwrap();
        fs::create_dir_all(node.join(".ipfs")).unwrap(); // no version file: not a repo
        fs::write(node.join(DB_RELATIVE), b"").unwrap();
        assert_eq!(
            find_ipfs(&node.join(DB_RELATIVE), Some(&t.path().join("root"))),
            None
        );
        assert!(find_ipfs(&node.join(DB_RELATIVE), None).is_some());
    }

    #[test]
    fn missing_database_is_a_clear_error() {
        let t = tempfile::tempdir().unwrap();
        let err = Node::locate(t.path(), None, None, None).unwrap_err();
        assert!(err.to_string().contains("Rubix/rubix.db"));
    }
}
