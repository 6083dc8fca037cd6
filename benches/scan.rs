//! `scan` of a generated fleet against PostgreSQL, compared in the same run with the ceiling:
//! a plain binary COPY of the same rows into the same indexed TokenRecords.
//!
//! ```text
//! cargo build --release && cargo bench --bench scan -- --nodes 20 --tokens 50000 [--dir /dev/shm] [--pg postgres://postgres@127.0.0.1:5432]
//! ```
//!
//! Cases: a first scan into an empty database, an unchanged re-scan (every node skipped by its
//! fingerprint), `--force` (every node re-read and compared, no row rewritten), and an
//! incremental scan after 1,000 rows were added to one node. rows/s is always the fleet's rows
//! divided by the seconds the case took (how fast the whole fleet is brought up to date).

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::{drop_db, fresh_db, timed};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::{Client, NoTls};
use rubix_sync::corpus::{self, CorpusSpec};
use rubix_sync::sink::{postgres::PgSink, Sink};

struct Args {
    nodes: u64,
    tokens: u64,
    dir: PathBuf,
    pg: String,
}

fn args() -> Args {
    let mut a = Args {
        nodes: 20,
        tokens: 50_000,
        dir: std::env::temp_dir(),
        pg: "postgres://postgres@127.0.0.1:5432".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--nodes" => a.nodes = it.next().and_then(|v| v.parse().ok()).expect("--nodes N"),
            "--tokens" => a.tokens = it.next().and_then(|v| v.parse().ok()).expect("--tokens N"),
            "--dir" => a.dir = it.next().map(PathBuf::from).expect("--dir DIR"),
            "--pg" => a.pg = it.next().expect("--pg URL"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn spec(i: u64, tokens: u64) -> CorpusSpec {
    CorpusSpec {
        tokens: 0,
        rbt_tokens: tokens,
        seed: 1000 + i,
        ..CorpusSpec::default()
    }
}

fn main() {
    let a = args();
    let root = a
        .dir
        .join(format!("rubix-bench-scan-{}x{}", a.nodes, a.tokens));
    if !root.join("ready").exists() {
        let _ = std::fs::remove_dir_all(&root);
        let t = Instant::now();
        for i in 0..a.nodes {
            corpus::generate(&root.join(format!("node{i:02}")), &spec(i, a.tokens))
                .expect("generate node");
        }
        std::fs::write(root.join("ready"), b"").unwrap();
        eprintln!(
            "generated {} nodes x {} tokens in {:.1}s at {}",
            a.nodes,
            a.tokens,
            t.elapsed().as_secs_f64(),
            root.display()
        );
    }
    let total = (a.nodes * a.tokens) as f64;
    let mut rows: Vec<(String, f64, f64, String)> = Vec::new();
    let url = fresh_db(&a.pg, "rubix_bench_scan");
    for (name, extra) in [
        ("scan, first (empty TokenRecords)", &[][..]),
        ("scan, unchanged re-scan (every node skipped)", &[][..]),
        (
            "scan --force, unchanged (every node re-read, no row rewritten)",
            &["--force"][..],
        ),
    ] {
        let (s, rss, code) = timed("scan", &root, &url, extra);
        assert_eq!(code, 0, "{name}");
        rows.push((name.into(), s, total / s, format!("{rss:.0}")));
    }
    // One node gains 1,000 rows: only that node is read, only those rows are written.
    let grown = root.join("node00");
    let mut more = spec(0, a.tokens + 1000);
    more.seed = spec(0, 0).seed;
    corpus::generate(&grown, &more).expect("grow node00");
    let (s, rss, code) = timed("scan", &root, &url, &[]);
    assert_eq!(code, 0);
    rows.push((
        "scan after 1,000 rows added to one node".into(),
        s,
        total / s,
        format!("{rss:.0}"),
    ));
    // Put node00 back as it was for the next run of this bench.
    let c = rusqlite::Connection::open(grown.join("Rubix/rubix.db")).unwrap();
    let keep: Vec<String> = (0..a.tokens)
        .map(|i| spec(0, 0).rbt_token(i).cid.to_string())
        .collect();
    c.execute_batch("CREATE TEMP TABLE keep(id TEXT PRIMARY KEY)")
        .unwrap();
    for id in &keep {
        c.execute("INSERT INTO keep VALUES (?1)", [id]).unwrap();
    }
    c.execute_batch("DELETE FROM TokensTable WHERE token_id NOT IN (SELECT id FROM keep)")
        .unwrap();
    drop(c);
    drop_db(&a.pg, "rubix_bench_scan");

    // Ceiling: the same rows, binary COPY straight into the indexed TokenRecords.
    let url = fresh_db(&a.pg, "rubix_bench_scan_copy");
    {
        let target = rubix_sync::sink::config::pg_target(&url, &|k| std::env::var(k).ok()).unwrap();
        PgSink::connect(target).unwrap().migrate().unwrap();
        let mut c = Client::connect(&url, NoTls).unwrap();
        let t = Instant::now();
        let mut tx = c.transaction().unwrap();
        let sink = tx
            .copy_in(
                "COPY TokenRecords (source, source_ip, node_name, db_path, ipfs_path, token_id,
                     did, parent_token_id, token_value, token_status, token_state_hash,
                     transaction_id, ipfs_data, ipfs_fetched) FROM STDIN BINARY",
            )
            .unwrap();
        let types = [
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::FLOAT8,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::BOOL,
        ];
        let mut w = BinaryCopyInWriter::new(sink, &types);
        for n in 0..a.nodes {
            let sp = spec(n, a.tokens);
            let node = format!("node{n:02}");
            let db = root
                .join(&node)
                .join("Rubix/rubix.db")
                .display()
                .to_string();
            let ipfs = root.join(&node).join(".ipfs").display().to_string();
            for i in 0..a.tokens {
                let t = sp.rbt_token(i);
                let h = format!("{i:016x}");
                w.write(&[
                    &"bench",
                    &"127.0.0.1",
                    &node,
                    &db,
                    &ipfs,
                    &t.cid.to_string(),
                    &sp.owner_did(i),
                    &"",
                    &1.0f64,
                    &((i % 4) as i64),
                    &h,
                    &h,
                    &t.content,
                    &true,
                ])
                .unwrap();
            }
        }
        w.finish().unwrap();
        tx.commit().unwrap();
        let s = t.elapsed().as_secs_f64();
        rows.push((
            "plain binary COPY into indexed TokenRecords (ceiling)".into(),
            s,
            total / s,
            "—".into(),
        ));
    }
    drop_db(&a.pg, "rubix_bench_scan_copy");
    let ceiling = rows.last().unwrap().2;

    println!(
        "{} nodes x {} tokens = {} rows, PostgreSQL {}",
        a.nodes, a.tokens, total, a.pg
    );
    println!("| case | seconds | rows/s | × plain COPY | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|");
    for (name, secs, rate, rss) in rows {
        println!(
            "| {name} | {secs:.2} | {rate:.0} | {:.2} | {rss} |",
            rate / ceiling
        );
    }
}
