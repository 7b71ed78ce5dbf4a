//! What forkring's integration tests (`tests/`), its stress harness
//! (`tools/`, `make stress`) and its fuzz target (`fuzz/`) share, written
//! once:
//!
//! - [`proc`]: what `/proc` says about a server's processes (descendants,
//!   resident memory, state), signals by pid, reaping, the open-file limit;
//! - [`http`]: one strict HTTP/1.1 response reader over a blocking
//!   `TcpStream`, with bounded waits, and the wait for the server's close;
//! - [`oracle`]: the checks every response stream of the HTTP core must
//!   pass, whatever the input (used by the fuzz target and the property
//!   tests);
//! - [`corpus`]: the hostile-request vectors (request smuggling, limits) with
//!   what the server must answer, the generated ones, and the fuzz seeds
//!   made from them;
//! - [`rng`]: the small deterministic generator behind every generated input;
//! - [`target`]: where the workspace's binaries and examples were built, for
//!   the tests that run them.
//!
//! Where it stops: the kit never depends on `forkring` and never starts a
//! server (it only finds the programs that do). Starting the test server
//! and the raw-socket test client stay in `tests/common`; the servers, load
//! generators and scenarios of the stress harness stay in `tools/`; driving
//! `forkring::http::Conn` stays with the fuzz target and the property
//! tests. The kit only looks at a server from outside: its processes, its
//! sockets, the bytes it writes.

pub mod corpus;
pub mod http;
pub mod oracle;
pub mod proc;
pub mod rng;
pub mod target;
