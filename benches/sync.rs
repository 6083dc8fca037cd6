//! End-to-end `sync` against PostgreSQL, compared in the same run with the ceiling: a plain
//! binary COPY of the same rows straight into the same indexed TokenInfo (no staging, no merge,
//! no IPFS).
//!
//! ```text
//! cargo bench --bench sync -- --tokens 1000000 [--dir /dev/shm] [--pg postgres://postgres@127.0.0.1:5432]
//! ```
//!
//! Every case gets a fresh database. `sync` runs as the release binary, its peak RSS read with
//! wait4(2) on that child alone, before this process has grown (see the ceiling case).

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
    tokens: u64,
    dir: PathBuf,
    pg: String,
}

fn args() -> Args {
    let mut a = Args {
        tokens: 1_000_000,
        dir: std::env::temp_dir(),
        pg: "postgres://postgres@127.0.0.1:5432".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--tokens" => a.tokens = it.next().and_then(|v| v.parse().ok()).expect("--tokens N"),
            "--dir" => a.dir = it.next().map(PathBuf::from).expect("--dir DIR"),
            "--pg" => a.pg = it.next().expect("--pg URL"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn main() {
    let a = args();
    let node = a.dir.join(format!("rubix-bench-sync-{}", a.tokens));
    let spec = CorpusSpec {
        tokens: a.tokens,
        ..CorpusSpec::default()
    };
    if !node.join("Rubix/rubix.db").exists() {
        let t = Instant::now();
        corpus::generate(&node, &spec).expect("generate corpus");
        eprintln!(
            "generated {} tokens in {:.1}s at {}",
            a.tokens,
            t.elapsed().as_secs_f64(),
            node.display()
        );
    }
    let n = a.tokens as f64;
    let mut rows: Vec<(String, String, f64, String)> = Vec::new();

    let url = fresh_db(&a.pg, "rubix_bench_sync");
    let (s, rss, code) = timed("sync", &node, &url, &["--bulk-load", "never"]);
    assert_eq!(code, 0);
    rows.push((
        "sync, first load, indexes present (--bulk-load never)".into(),
        format!("{s:.1}"),
        n / s,
        format!("{rss:.0}"),
    ));
    drop_db(&a.pg, "rubix_bench_sync");

    let url = fresh_db(&a.pg, "rubix_bench_bulk");
    let (s, rss, code) = timed("sync", &node, &url, &[]);
    assert_eq!(code, 0);
    rows.push((
        "sync, first load, bulk-load mode (auto on empty table)".into(),
        format!("{s:.1}"),
        n / s,
        format!("{rss:.0}"),
    ));
    let (s, rss, code) = timed("sync", &node, &url, &[]);
    assert_eq!(code, 0);
    rows.push((
        "sync, unchanged re-sync (nothing fetched or written)".into(),
        format!("{s:.1}"),
        n / s,
        format!("{rss:.0}"),
    ));
    let (s, rss, code) = timed("sync", &node, &url, &["--full"]);
    assert_eq!(code, 0);
    rows.push((
        "sync --full, unchanged (re-read + verify all, rewrite none)".into(),
        format!("{s:.1}"),
        n / s,
        format!("{rss:.0}"),
    ));
    drop_db(&a.pg, "rubix_bench_bulk");

    // Ceiling last: holding a million rows in this process before forking would inflate the
    // children's ru_maxrss (a child inherits its parent's RSS high-water mark across fork+exec).
    // Ceiling: the same rows, binary COPY straight into the indexed table.
    let url = fresh_db(&a.pg, "rubix_bench_copy");
    {
        let target = rubix_sync::sink::config::pg_target(&url, &|k| std::env::var(k).ok()).unwrap();
        PgSink::connect(target).unwrap().migrate().unwrap();
        let toks: Vec<(String, String, i32, String)> = (0..a.tokens)
            .map(|i| {
                let t = spec.ft_token(i);
                let mut f = t.content.split(' ');
                let name = f.next().unwrap().to_string();
                let num: i32 = f.next().unwrap().parse().unwrap();
                (t.cid.to_string(), name, num, f.next().unwrap().to_string())
            })
            .collect();
        let mut c = Client::connect(&url, NoTls).unwrap();
        let t = Instant::now();
        let mut tx = c.transaction().unwrap();
        let sink = tx
            .copy_in("COPY TokenInfo (token_id, token_name, token_number, creator_did) FROM STDIN BINARY")
            .unwrap();
        let mut w =
            BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::TEXT, Type::INT4, Type::TEXT]);
        for (id, name, num, did) in &toks {
            w.write(&[id, name, num, did]).unwrap();
        }
        w.finish().unwrap();
        tx.commit().unwrap();
        let s = t.elapsed().as_secs_f64();
        rows.push((
            "plain binary COPY into indexed TokenInfo (ceiling)".into(),
            format!("{:.1}", s),
            n / s,
            "—".into(),
        ));
    }
    drop_db(&a.pg, "rubix_bench_copy");
    let ceiling = rows.last().unwrap().2;

    println!("{} tokens, PostgreSQL {}", a.tokens, a.pg);
    println!("| case | seconds | tokens/s | × plain COPY | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|");
    for (name, secs, rate, rss) in rows {
        println!(
            "| {name} | {secs} | {rate:.0} | {:.2} | {rss} |",
            rate / ceiling
        );
    }
}
