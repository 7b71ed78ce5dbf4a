//! Writes the fuzz seeds made from the hostile-request corpus into
//! `fuzz/seeds/http_conn/` (or the directory given), replacing stale ones:
//!
//! ```text
//! cargo run -p forkring-testkit --bin fuzz-seeds [DIR]
//! ```
//!
//! `cargo test -p forkring-testkit` fails while the committed seeds and
//! the corpus differ.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use forkring_testkit::corpus;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).with_file_name("fuzz").join("seeds/http_conn"));
    match corpus::write_fuzz_seeds(&dir) {
        Ok(n) => {
            println!("wrote {n} seeds to {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fuzz-seeds: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
