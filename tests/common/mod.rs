//! The server as the integration tests start it: the workspace's test
//! fixture (`forkring-fixture`, the product's routes and flags and those
//! the tests need), run by [`forkring_testkit::server::Server`].
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

pub use forkring_testkit::server::Server;
