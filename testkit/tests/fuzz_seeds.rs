//! The committed fuzz seeds are the ones the corpus makes: a case added,
//! changed or renamed without rewriting the seeds fails here.

use std::path::PathBuf;

use forkring_testkit::corpus;

#[test]
fn committed_fuzz_seeds_match_the_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/http_conn");
    let drift = corpus::fuzz_seed_drift(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    assert!(
        drift.is_empty(),
        "fuzz seeds out of date (rewrite them: cargo run -p forkring-testkit --bin fuzz-seeds):\n{}",
        drift.join("\n")
    );
}

#[test]
fn drift_is_noticed() {
    let dir = std::env::temp_dir().join(format!("forkring-seeds-{}", std::process::id()));
    let n = corpus::write_fuzz_seeds(&dir).expect("write seeds");
    assert_eq!(n, corpus::fuzz_seeds().len());
    assert!(corpus::fuzz_seed_drift(&dir).unwrap().is_empty());
    let (first, _) = &corpus::fuzz_seeds()[0];
    std::fs::write(dir.join(first), b"changed").unwrap();
    std::fs::write(dir.join(format!("{}gone", corpus::SEED_PREFIX)), b"x").unwrap();
    std::fs::write(dir.join("hand-written"), b"x").unwrap();
    let drift = corpus::fuzz_seed_drift(&dir).unwrap();
    assert_eq!(drift.len(), 2, "{drift:?}");
    corpus::write_fuzz_seeds(&dir).unwrap();
    assert!(corpus::fuzz_seed_drift(&dir).unwrap().is_empty());
    assert!(dir.join("hand-written").exists(), "hand-written seeds are left alone");
    std::fs::remove_dir_all(&dir).unwrap();
}
