//! What forkring's integration tests (`tests/`), its stress harness
//! (`tools/`, `make stress`) and its fuzz target (`fuzz/`) share, written
//! once:
//!
//! - [`proc`]: what `/proc` says about a server's processes (descendants,
//!   resident memory, state), signals by pid, reaping, the open-file limit;
//! - [`http`]: one strict HTTP/1.1 response reader over a blocking
//!   `TcpStream`, with bounded waits, and the wait for the server's close;
//! - [`client`]: the raw-socket test client that sends requests and reads
//!   answers with it;
//! - [`server`]: a server process started by a test, read from its log and
//!   killed with its workers on drop;
//! - [`master`]: a test binary run again as the master of a cluster the
//!   test embeds;
//! - [`need`]: what a test needs from the machine (root, IPv6, a program)
//!   and the policy when it is missing;
//! - [`bytes`]: reproducible bodies and where two bodies part;
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
//! Where it stops: the kit never depends on `forkring`. It starts the
//! workspace's test fixture (found beside the test, [`target`]); the
//! servers, load generators and scenarios of the stress harness stay in
//! `tools/`; driving `forkring::http::Conn` stays with the fuzz target and
//! the property tests. The kit only looks at a server from outside: its
//! processes, its sockets, the bytes it writes.

pub mod bytes;
pub mod client;
pub mod corpus;
pub mod http;
pub mod master;
pub mod metrics;
pub mod need;
pub mod oracle;
pub mod proc;
pub mod rng;
pub mod scratch;
pub mod server;
pub mod target;
