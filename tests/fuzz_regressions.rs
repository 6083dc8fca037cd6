//! Every input the fuzzers kept (fuzz/corpus/TARGET/) and every crasher ever found
//! (fuzz/regressions/TARGET-*), replayed through the same entry points on each `cargo test`:
//! a parser change that panics on any of them fails here, without libFuzzer.

mod common;

use common::*;

#[test]
fn every_kept_fuzz_input_is_handled_without_a_panic() {
    let fuzz = root().join("fuzz");
    let mut total = 0;
    for (name, target) in rubix_sync::fuzzing::TARGETS {
        let mut inputs: Vec<_> = std::fs::read_dir(fuzz.join("corpus").join(name))
            .unwrap_or_else(|e| panic!("fuzz/corpus/{name}: {e}"))
            .map(|e| e.unwrap().path())
            .collect();
        if let Ok(dir) = std::fs::read_dir(fuzz.join("regressions")) {
            inputs.extend(dir.map(|e| e.unwrap().path()).filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{name}-"))
            }));
        }
        assert!(!inputs.is_empty(), "fuzz/corpus/{name} is empty");
        for input in &inputs {
            let data = std::fs::read(input).unwrap();
            let result = std::panic::catch_unwind(|| target(&data));
            assert!(result.is_ok(), "{name}: {} panics", input.display());
        }
        total += inputs.len();
    }
    assert!(total >= 20, "only {total} inputs");
}
