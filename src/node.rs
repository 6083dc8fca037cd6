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

/// A directory is never searched for nodes below this: a kubo repo holds millions of block
/// files and never a node database.
const SKIP_DIRS: [&str; 1] = [".ipfs"];

/// Something found during discovery that is not a node but should be reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiscoveryProblem {
    pub path: PathBuf,
    pub problem: String,
}

/// Every node under a root, named, plus what could not be looked at.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Sorted by path; names are unique.
    pub nodes: Vec<NamedNode>,
    pub problems: Vec<DiscoveryProblem>,
}

/// A discovered node and its display name (the node directory's name, made unique).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedNode {
    pub name: String,
    pub node: Node,
}

/// Finds every `Rubix/rubix.db` under `root`, at any depth, following directory symlinks
/// (each real directory is visited once, so symlink loops end) but never entering `.ipfs`.
/// Each node's `.ipfs` is found by walking up from its database, not above `root`.
/// `exclude` patterns are matched against each directory's path relative to `root` and
/// against its name; an excluded directory is not entered.
pub fn discover(root: &Path, exclude: &[glob::Pattern]) -> Discovery {
    use std::os::unix::fs::MetadataExt;
    let mut out = Discovery::default();
    let mut seen = std::collections::HashSet::new();
    let mut found: Vec<Node> = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let meta = match std::fs::metadata(&dir) {
            Ok(m) => m,
            Err(e) => {
                out.problems.push(DiscoveryProblem {
                    path: dir,
                    problem: format!("cannot stat: {e}"),
                });
                continue;
            }
        };
        if !seen.insert((meta.dev(), meta.ino())) {
            if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
                out.problems.push(DiscoveryProblem {
                    path: dir,
                    problem: "symlink to a directory already visited (loop or duplicate); not followed again".into(),
                });
            }
            continue;
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                out.problems.push(DiscoveryProblem {
                    path: dir,
                    problem: format!("cannot read directory: {e}"),
                });
                continue;
            }
        };
        let db = dir.join(DB_RELATIVE);
        if std::fs::metadata(&db).is_ok_and(|m| m.is_file()) {
            found.push(Node {
                dir: dir.clone(),
                ipfs: find_ipfs(&db, Some(root)),
                db,
            });
        }
        let mut subdirs = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if SKIP_DIRS.iter().any(|s| name == *s) {
                continue;
            }
            let path = entry.path();
            // Follow symlinks to directories; `seen` stops loops.
            if !std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink())
                    && std::fs::metadata(&path).is_err()
                {
                    out.problems.push(DiscoveryProblem {
                        path,
                        problem: "dangling symlink".into(),
                    });
                }
                continue;
            }
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let excluded = exclude
                .iter()
                .any(|p| p.matches_path(rel) || name.to_str().is_some_and(|n| p.matches(n)));
            if !excluded {
                subdirs.push(path);
            }
        }
        subdirs.sort();
        stack.extend(subdirs.into_iter().rev());
    }
    found.sort_by(|a, b| a.dir.cmp(&b.dir));
    out.nodes = name_nodes(root, found);
    out
}

/// Names nodes after their directory; where two share a name, each of those is named by its
/// path relative to the root instead, so names stay unique and still say where the node is.
fn name_nodes(root: &Path, nodes: Vec<Node>) -> Vec<NamedNode> {
    let base = |n: &Node| {
        n.dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| n.label())
    };
    let mut count = std::collections::HashMap::new();
    for n in &nodes {
        *count.entry(base(n)).or_insert(0) += 1;
    }
    let mut used = std::collections::HashSet::new();
    nodes
        .into_iter()
        .map(|node| {
            let b = base(&node);
            let mut name = if count[&b] > 1 {
                node.dir
                    .strip_prefix(root)
                    .map(|r| r.display().to_string())
                    .unwrap_or_else(|_| node.label())
            } else {
                b
            };
            if name.is_empty() {
                name = node.label();
            }
            let mut unique = name.clone();
            let mut i = 2;
            while !used.insert(unique.clone()) {
                unique = format!("{name}#{i}");
                i += 1;
            }
            NamedNode { name: unique, node }
        })
        .collect()
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

    fn mk_node(p: &Path, with_repo: bool) {
        fs::create_dir_all(p.join("Rubix")).unwrap();
        fs::write(p.join(DB_RELATIVE), b"").unwrap();
        if with_repo {
            mk_repo(&p.join(".ipfs"));
        }
    }

    #[test]
    fn discovery_finds_flat_and_nested_nodes_and_survives_loops() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        mk_node(&root.join("node07"), true);
        mk_node(&root.join("SafePass/Rubix/Qnode1"), true);
        mk_node(&root.join("vm2/node07"), false);
        mk_node(&root.join("skipme/nodeX"), true);
        // A database inside a repo is never looked at.
        mk_node(&root.join("node07/.ipfs/blocks/node99"), false);
        std::os::unix::fs::symlink(root, root.join("vm2/loop")).unwrap();
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).unwrap();
        let d = discover(root, &[glob::Pattern::new("skip*").unwrap()]);
        let names: Vec<_> = d.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["Qnode1", "node07", "vm2/node07"]);
        let q = &d.nodes[0].node;
        assert!(q
            .ipfs
            .as_ref()
            .unwrap()
            .ends_with("SafePass/Rubix/Qnode1/.ipfs"));
        assert_eq!(
            d.nodes[2].node.ipfs, None,
            "walk-up never finds another node's repo"
        );
        let problems: Vec<_> = d.problems.iter().map(|p| p.problem.as_str()).collect();
        assert!(problems.iter().any(|p| p.contains("loop")), "{problems:?}");
        assert!(
            problems.iter().any(|p| p.contains("dangling")),
            "{problems:?}"
        );
    }

    #[test]
    fn colliding_names_are_made_unique() {
        let root = Path::new("/r");
        let n = |d: &str| Node {
            dir: root.join(d),
            db: root.join(d).join(DB_RELATIVE),
            ipfs: None,
        };
        let named = name_nodes(root, vec![n("a/node1"), n("b/node1"), n("c/node2")]);
        let names: Vec<_> = named.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a/node1", "b/node1", "node2"]);
    }
}
