//! `rubix-sync cat` and the ipfs layer against repos written by real kubo (the committed
//! fixtures and the bytes kubo returned for them), plus every kind of damaged input.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use rubix_sync::cli::exit;
use rubix_sync::ipfs::{self, resolve, BlockSource, CatLimits, ErrorClass, IpfsError, Repo};

fn node_repo() -> std::path::PathBuf {
    fixtures().join("node/.ipfs")
}

fn cat_lib(repo: &Repo, cid: &str) -> Result<Vec<u8>, IpfsError> {
    let cid = ipfs::parse_cid(cid)?;
    let mut out = Vec::new();
    resolve::cat(repo, &cid, &mut out, CatLimits::default())?;
    Ok(out)
}

#[test]
fn every_fixture_file_matches_kubo_byte_for_byte() {
    let exp = expected("node");
    let repo = Repo::open(node_repo()).unwrap();
    let mut checked = 0;
    for f in exp["files"].as_array().unwrap() {
        let cid = f["cid"].as_str().unwrap();
        if f["kubo"] == "directory" {
            let err = cat_lib(&repo, cid).unwrap_err();
            assert_eq!(err.class(), ErrorClass::NotAFile, "{cid}: {err}");
            continue;
        }
        let got = cat_lib(&repo, cid).unwrap();
        assert_eq!(
            got.len() as u64,
            f["size"].as_u64().unwrap(),
            "{}",
            f["name"]
        );
        assert_eq!(
            sha256_hex(&got),
            f["sha256"].as_str().unwrap(),
            "{}",
            f["name"]
        );
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn every_fixture_token_matches_kubo() {
    let exp = expected("node");
    let repo = Repo::open(node_repo()).unwrap();
    let all: Vec<_> = exp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .chain(exp["tokens_table"].as_array().unwrap())
        .collect();
    assert_eq!(all.len(), 340);
    for t in all {
        let got = cat_lib(&repo, t["token_id"].as_str().unwrap()).unwrap();
        assert_eq!(got, hex(t["content_hex"].as_str().unwrap()));
    }
}

#[test]
fn cli_cat_streams_several_cids_like_ipfs_cat() {
    let exp = expected("node");
    let files = exp["files"].as_array().unwrap();
    let (a, b) = (&files[2], &files[3]); // 256 KiB and 256 KiB + 1
    let out = run(bin()
        .args(["cat", "--ipfs-repo"])
        .arg(node_repo())
        .args([a["cid"].as_str().unwrap(), b["cid"].as_str().unwrap()]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 262144 + 262145);
    assert_eq!(
        sha256_hex(&out.stdout[..262144]),
        a["sha256"].as_str().unwrap()
    );
    assert_eq!(
        sha256_hex(&out.stdout[262144..]),
        b["sha256"].as_str().unwrap()
    );
}

#[test]
fn cli_finds_the_repo_through_ipfs_path_and_dot_ipfs() {
    let t = &expected("node")["tokens"][0];
    let cid = t["token_id"].as_str().unwrap();
    let want = hex(t["content_hex"].as_str().unwrap());
    let out = run(bin().env("IPFS_PATH", node_repo()).args(["cat", cid]));
    assert_eq!(out.stdout, want);
    let out = run(bin()
        .current_dir(fixtures().join("node"))
        .args(["cat", cid]));
    assert_eq!(out.stdout, want, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn cli_exit_code_and_message_per_error_class() {
    let exp = expected("bad-node");
    let repo = fixtures().join("bad-node/.ipfs");
    let cases = [
        ("invalid_cid", exit::INVALID_CID, "invalid CID"),
        (
            "block_missing",
            exit::BLOCK_MISSING,
            "not in the local repository",
        ),
        ("block_corrupt", exit::BLOCK_CORRUPT, "hash mismatch"),
        ("not_a_file", exit::NOT_A_FILE, "not a file"),
    ];
    for (class, code, msg) in cases {
        let t = exp["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["failure"] == class)
            .unwrap();
        let out = run(bin()
            .args(["cat", "--ipfs-repo"])
            .arg(&repo)
            .arg(t["token_id"].as_str().unwrap()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code as i32), "{class}: {stderr}");
        assert!(stderr.contains(msg), "{class}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    let out = run(bin().args(["cat", "--ipfs-repo", "/nonexistent", "Qm"]));
    assert_eq!(out.status.code(), Some(exit::REPO as i32));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a kubo repository"));
}

/// A copy of the fixture repo we are free to damage.
fn scratch_repo() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join(".ipfs");
    copy_tree(&node_repo(), &repo);
    (tmp, repo)
}

fn first_token() -> ipfs::Cid {
    ipfs::parse_cid(expected("node")["tokens"][0]["token_id"].as_str().unwrap()).unwrap()
}

fn damage(edit: impl FnOnce(&Path)) -> IpfsError {
    let (_tmp, repo_dir) = scratch_repo();
    let repo = Repo::open(&repo_dir).unwrap();
    let cid = first_token();
    edit(&repo.blocks().block_path(&cid));
    let mut buf = Vec::new();
    resolve::read_file(&repo, &cid, CatLimits::default(), &mut buf).unwrap_err()
}

#[test]
fn damaged_block_files_are_corrupt_not_trusted() {
    let truncated = damage(|p| {
        let b = fs::read(p).unwrap();
        fs::write(p, &b[..b.len() - 3]).unwrap();
    });
    let flipped = damage(|p| {
        let mut b = fs::read(p).unwrap();
        b[40] ^= 0x20;
        fs::write(p, b).unwrap();
    });
    let empty = damage(|p| fs::write(p, b"").unwrap());
    let dir = damage(|p| {
        fs::remove_file(p).unwrap();
        fs::create_dir(p).unwrap();
    });
    let symlink = damage(|p| {
        fs::remove_file(p).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", p).unwrap();
    });
    let oversized = damage(|p| fs::write(p, vec![0u8; 5 << 20]).unwrap());
    for (what, err) in [
        ("truncated", &truncated),
        ("flipped byte", &flipped),
        ("0-byte file", &empty),
        ("directory", &dir),
        ("symlink", &symlink),
        ("oversized", &oversized),
    ] {
        assert_eq!(err.class(), ErrorClass::BlockCorrupt, "{what}: {err}");
        assert!(
            err.to_string().contains(".data"),
            "{what}: message names the file: {err}"
        );
    }
    assert!(dir.to_string().contains("directory"));
    let missing = damage(|p| fs::remove_file(p).unwrap());
    assert_eq!(missing.class(), ErrorClass::BlockMissing);
}

#[test]
fn sharding_problems_are_clear_repo_errors() {
    type Edit = Box<dyn Fn(&Path)>;
    let cases: [(&str, Edit); 4] = [
        (
            "missing SHARDING",
            Box::new(|r: &Path| fs::remove_file(r.join("blocks/SHARDING")).unwrap()),
        ),
        (
            "unknown shard fn",
            Box::new(|r: &Path| {
                fs::write(
                    r.join("blocks/SHARDING"),
                    "/repo/flatfs/shard/v1/middle/2\n",
                )
                .unwrap()
            }),
        ),
        (
            "disagrees with spec",
            Box::new(|r: &Path| {
                fs::write(
                    r.join("blocks/SHARDING"),
                    "/repo/flatfs/shard/v1/prefix/2\n",
                )
                .unwrap()
            }),
        ),
        (
            "badger datastore",
            Box::new(|r: &Path| {
                fs::write(
                    r.join("datastore_spec"),
                    r#"{"type":"badgerds","path":"badgerds"}"#,
                )
                .unwrap()
            }),
        ),
    ];
    for (what, edit) in cases {
        let (_tmp, repo) = scratch_repo();
        edit(&repo);
        let err = Repo::open(&repo).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Repo, "{what}: {err}");
        let out = run(bin()
            .args(["cat", "--ipfs-repo"])
            .arg(&repo)
            .arg(first_token().to_string()));
        assert_eq!(out.status.code(), Some(exit::REPO as i32), "{what}");
    }
    let (_tmp, repo) = scratch_repo();
    fs::remove_file(repo.join("version")).unwrap();
    assert!(matches!(Repo::open(&repo), Err(IpfsError::NotARepo { .. })));
}

#[test]
fn other_shard_functions_and_old_repo_versions() {
    // Re-shard a copy of the fixture to prefix/4 and suffix/3 exactly as go-ds-flatfs would
    // lay it out, and to a pre-v12 repo keyed by whole CIDs (same keys for CIDv0).
    use ipfs::flatfs::Shard;
    let exp = expected("node");
    let cids: Vec<ipfs::Cid> = exp["tokens"].as_array().unwrap()[..20]
        .iter()
        .map(|t| ipfs::parse_cid(t["token_id"].as_str().unwrap()).unwrap())
        .collect();
    let src = Repo::open(node_repo()).unwrap();
    for (shard, version) in [
        (Shard::Prefix(4), "14"),
        (Shard::Suffix(3), "14"),
        (Shard::NextToLast(2), "10"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path();
        fs::create_dir_all(repo.join("blocks")).unwrap();
        fs::write(repo.join("version"), format!("{version}\n")).unwrap();
        fs::write(repo.join("blocks/SHARDING"), format!("{shard}\n")).unwrap();
        fs::write(repo.join("datastore_spec"), r#"{"mounts":[{"mountpoint":"/blocks","path":"blocks","type":"flatfs"}],"type":"mount"}"#).unwrap();
        for cid in &cids {
            let key = ipfs::flatfs::block_key(cid, ipfs::flatfs::KeyMode::Multihash);
            let dir = repo.join("blocks").join(shard.dir(&key));
            fs::create_dir_all(&dir).unwrap();
            fs::copy(
                src.blocks().block_path(cid),
                dir.join(format!("{key}.data")),
            )
            .unwrap();
        }
        let r = Repo::open(repo).unwrap();
        let mut buf = Vec::new();
        for cid in &cids {
            r.read_block(cid, &mut buf)
                .unwrap_or_else(|e| panic!("{shard} v{version}: {e}"));
        }
    }
}

#[test]
fn a_dag_pb_node_whose_sizes_lie_is_malformed() {
    use multihash_codetable::{Code, MultihashDigest};
    use rubix_sync::ipfs::unixfs::{encode_pbnode, encode_unixfs, PbLink};
    let (_tmp, repo_dir) = scratch_repo();
    let repo = Repo::open(&repo_dir).unwrap();
    let leaf = first_token();
    let leaf_len = expected("node")["tokens"][0]["content_hex"]
        .as_str()
        .unwrap()
        .len() as u64
        / 2;
    let h = leaf.to_bytes();
    let link = PbLink {
        hash: &h,
        name: Some(""),
        tsize: None,
    };
    for (blocksize, filesize) in [(leaf_len + 1, leaf_len + 1), (leaf_len, leaf_len * 2)] {
        let block = encode_pbnode(
            std::slice::from_ref(&link),
            Some(&encode_unixfs(2, None, Some(filesize), &[blocksize])),
        );
        let cid = ipfs::Cid::new_v0(Code::Sha2_256.digest(&block)).unwrap();
        let path = repo.blocks().block_path(&cid);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &block).unwrap();
        let mut out = Vec::new();
        let err = resolve::cat(&repo, &cid, &mut out, CatLimits::default()).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Malformed, "{err}");
    }
}

#[test]
fn garbage_and_truncated_cids_on_the_command_line() {
    let good = first_token().to_string();
    for bad in ["garbage", &good[..good.len() - 2], "bafy!", ""] {
        let out = run(bin()
            .args(["cat", "--ipfs-repo"])
            .arg(node_repo())
            .args([&good, bad]));
        assert_eq!(out.status.code(), Some(exit::INVALID_CID as i32), "{bad:?}");
        assert!(
            out.stdout.is_empty(),
            "nothing printed before a bad CID is reported"
        );
    }
}

#[test]
fn reading_never_writes_locks_or_removes_anything() {
    let node = fixtures().join("node");
    let before = tree_checksum(&node);
    let exp = expected("node");
    let mut args = vec![
        "cat".to_string(),
        "--ipfs-repo".into(),
        node_repo().display().to_string(),
    ];
    for t in exp["tokens"].as_array().unwrap() {
        args.push(t["token_id"].as_str().unwrap().to_string());
    }
    assert!(run(bin().args(&args)).status.success());
    let repo = Repo::open(node_repo()).unwrap();
    for f in exp["files"].as_array().unwrap() {
        let _ = cat_lib(&repo, f["cid"].as_str().unwrap());
    }
    let _ = cat_lib(&repo, "QmSPZUZs2tZxhu4CYtFKhs8XkSTPUboVvs74edUgXX2j2L");
    assert_eq!(before, tree_checksum(&node), "the node directory changed");
    assert!(!node_repo().join("repo.lock").exists());
}

#[test]
fn a_stale_repo_lock_is_ignored_and_left_alone() {
    let (_tmp, repo) = scratch_repo();
    fs::write(repo.join("repo.lock"), "").unwrap();
    let before = tree_checksum(&repo);
    let t = &expected("node")["tokens"][5];
    let out = run(bin()
        .args(["cat", "--ipfs-repo"])
        .arg(&repo)
        .arg(t["token_id"].as_str().unwrap()));
    assert!(out.status.success());
    assert_eq!(out.stdout, hex(t["content_hex"].as_str().unwrap()));
    assert_eq!(before, tree_checksum(&repo));
}
