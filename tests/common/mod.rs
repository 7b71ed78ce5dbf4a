//! The demo server as the integration tests start it: a
//! [`forkring_testkit::server::Server`] running the `forkring` binary that
//! Cargo builds beside the tests (only this crate is told where it is).
//!
//! Everything else a test uses to look at a server from outside (the
//! client, processes, bodies, a test binary run again as a cluster's
//! master) is in the test kit, `forkring_testkit`.
//!
//! What a test needs from the machine (root, IPv6 loopback, `curl`,
//! `promtool`, `systemd-socket-activate`) it states with
//! `forkring_testkit::need::require(Need::…)`: a missing need fails the
//! test, never passes it; a test whose need developers' machines commonly
//! lack is also `#[ignore = "needs …"]`, and `make test` runs it under
//! `CI=true`. The whole policy is written in `testkit/src/need.rs`.

use forkring_testkit::server::{self, Program};

/// The demo server's binary.
pub enum Demo {}

impl Program for Demo {
    const PATH: &'static str = env!("CARGO_BIN_EXE_forkring");
}

/// The demo server, started by a test.
pub type Server = server::Server<Demo>;
