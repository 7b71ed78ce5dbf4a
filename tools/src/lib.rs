//! What forkring's harnesses share, written once: `forkring-stress` (`make
//! stress`), `forkring-scale` (`make scale`), the load generators of `make
//! bench` (`ratebench`, `sseload`) and `forkring-harness`, the process
//! handling and nginx configuration `bench/run.sh` calls.
//!
//! - [`procs`]: the processes a harness starts (a registry killed by pid at
//!   the end, the wait until one is ready, the stop), what `/proc` says
//!   about their CPU time, memory and sockets, free ports, programs on `PATH`;
//! - [`probe`]: one `GET` on a new connection, to learn that a server serves;
//! - [`servers`]: the stress harness's servers under test, a forkring
//!   cluster read from its log and the nginx anchor;
//! - [`nginx`]: finding nginx and the one builder of its configuration;
//! - [`wrk`]: running wrk and reading its report;
//! - [`netstat`]: the kernel's counters of dropped and reset TCP
//!   connections, host-wide;
//! - [`closed_loop`]: the harness's own checking client, one request in
//!   flight per connection;
//! - [`paced`]: the open-loop client, requests at a fixed rate with latency
//!   from each one's due time;
//! - [`histogram`]: the latency histogram both clients record into;
//! - [`epoll`]: the epoll instance of the single-threaded clients;
//! - [`logger`]: the log output of the servers the harness runs itself.
//!
//! Where it stops: the library starts and measures servers from outside;
//! what a harness concludes (the scenarios and their bounds, the fleet, the
//! benchmark's report) stays in its binary. What tests, tools and the fuzz
//! target share (`/proc` reading, the strict response reader, the corpus)
//! is `forkring-testkit`'s.

#![warn(missing_docs)]

pub mod closed_loop;
pub mod epoll;
pub mod histogram;
pub mod logger;
pub mod netstat;
pub mod nginx;
pub mod paced;
pub mod probe;
pub mod procs;
pub mod servers;
pub mod wrk;

use std::path::PathBuf;

/// The body the demo server and the nginx anchor answer `GET /` with.
pub const HELLO: &[u8] = b"Hello, World!";

/// The file name of the server the harnesses run, in cargo's release
/// directory beside the harness's own binaries.
pub const SERVER_BIN: &str = "forkring";

/// The server binary beside the running program (`target/release/` when
/// the harness runs from there).
pub fn server_bin_beside_me() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().map(|d| d.join(SERVER_BIN)).unwrap_or_else(|| PathBuf::from(SERVER_BIN))
}
