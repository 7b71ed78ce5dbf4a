//! Where cargo put the workspace's programs, seen from a test: a test
//! executable runs from `target/<profile>/deps/`, so the binaries built
//! beside it are in `target/<profile>/` and the examples in
//! `target/<profile>/examples/`.
//!
//! Cargo names a binary to a test (`CARGO_BIN_EXE_<name>`) only within its
//! own package; these find the other packages' binaries and the examples.
//! Cargo does not build them for a test of another package: `cargo build
//! --workspace --all-targets` does (`make test` runs it first).

use std::path::PathBuf;

/// `target/<profile>/`, the directory above the running test executable's.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable's directory");
    // `deps/` for a test; the profile directory itself for a binary.
    let dir = if deps.file_name().is_some_and(|n| n == "deps") { deps.parent() } else { Some(deps) };
    dir.expect("target/<profile>").to_path_buf()
}

/// The workspace binary `name`, e.g. `forkring-fixture`; panics, naming
/// the command that builds it, when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace's binaries first with `cargo build --workspace` \
         (`make test` does)",
        path.display()
    );
    path
}

/// The example `name` of the root package, e.g. `cluster`; panics, naming
/// the command that builds it, when it is missing.
pub fn example(name: &str) -> PathBuf {
    let path = profile_dir().join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the examples first with `cargo build --examples` \
         (`cargo test` and `make test` do)",
        path.display()
    );
    path
}
