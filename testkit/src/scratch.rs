//! A test's own directory under the system's temporary directory, made
//! empty at the start and removed when the test ends (on drop, panics
//! included).

use std::path::PathBuf;

/// `forkring-NAME-PID` under the temporary directory, fresh and empty;
/// removed on drop. The process id keeps concurrent test binaries apart;
/// `name` keeps the tests of one binary apart.
#[derive(Debug)]
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    /// Makes the directory, removing whatever an earlier run left there.
    pub fn new(name: &str) -> ScratchDir {
        let d = std::env::temp_dir().join(format!("forkring-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        ScratchDir(d)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
