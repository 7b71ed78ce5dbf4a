//! What a test needs from the machine beyond a Linux kernel and the Rust
//! toolchain, and the one policy for it: **a missing need fails a test,
//! never passes it.**
//!
//! - A test that needs root, an IPv6 loopback address or a program outside
//!   the toolchain begins with [`require`]`(Need::…)`. Where the machine
//!   lacks it, `require` panics, naming the need and how to get it. No test
//!   looks for a need and returns early: that is a pass that checked
//!   nothing.
//! - A need that a developer's machine commonly lacks
//!   ([`Need::ignored_by_default`]: root, `promtool`,
//!   `systemd-socket-activate`) also marks its test
//!   `#[ignore = "<Need::reason>"]`, so that `cargo test` lists the test as
//!   ignored, with the need as the reason. `make test` runs the ignored
//!   tests too when `CI=true`: CI runs as root and installs both programs
//!   (`.ci/run`), so there a missing need is a failure. Anyone can do the
//!   same with `make test CI=true`, or `cargo test -- --ignored`.
//! - The other needs (IPv6 loopback, `curl`) are on every machine the suite
//!   supports: their tests run everywhere.
//!
//! `tests/suite.rs` checks the pairing: every `#[ignore]` in `tests/` is the
//! reason of a need its test requires, and every test that requires such a
//! need is ignored for it.
//!
//! Where it stops: only the machine is judged here (who runs, what is
//! installed, what the network stack offers); what the kernel does for the
//! server (io_uring, its features) is the server's to probe and report.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

/// Something a test needs from the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Running as root: switching a worker to another user.
    Root,
    /// An IPv6 loopback address (`::1`) to listen on.
    Ipv6Loopback,
    /// `curl`, a second HTTP client for the server to agree with.
    Curl,
    /// `promtool`, which checks the Prometheus exposition.
    Promtool,
    /// `/usr/bin/systemd-socket-activate`, which passes a listening socket
    /// the way systemd does.
    SocketActivate,
}

impl Need {
    /// Every need, for the checks of the policy.
    pub const ALL: [Need; 5] = [Need::Root, Need::Ipv6Loopback, Need::Curl, Need::Promtool, Need::SocketActivate];

    /// Whether this machine has it.
    pub fn is_met(self) -> bool {
        match self {
            // SAFETY: geteuid has no preconditions and cannot fail.
            Need::Root => unsafe { libc::geteuid() == 0 },
            Need::Ipv6Loopback => TcpListener::bind("[::1]:0").is_ok(),
            Need::Curl => runs("curl"),
            Need::Promtool => runs("promtool"),
            Need::SocketActivate => Path::new("/usr/bin/systemd-socket-activate").exists(),
        }
    }

    /// Whether a test that requires it is `#[ignore]`d (with
    /// [`Need::reason`]) unless asked for: developers' machines commonly
    /// lack it, CI has it.
    pub fn ignored_by_default(self) -> bool {
        matches!(self, Need::Root | Need::Promtool | Need::SocketActivate)
    }

    /// What the test needs, as its `#[ignore = "..."]` says it.
    pub fn reason(self) -> &'static str {
        match self {
            Need::Root => "needs root",
            Need::Ipv6Loopback => "needs an IPv6 loopback address",
            Need::Curl => "needs curl",
            Need::Promtool => "needs promtool",
            Need::SocketActivate => "needs systemd-socket-activate",
        }
    }

    /// How to get it.
    pub fn how(self) -> &'static str {
        match self {
            Need::Root => "run the tests as root (CI does)",
            Need::Ipv6Loopback => "enable IPv6 on the loopback interface (sysctl net.ipv6.conf.lo.disable_ipv6=0)",
            Need::Curl => "install it (Debian: apt-get install curl)",
            Need::Promtool => "install it (Debian: apt-get install prometheus)",
            Need::SocketActivate => "install it (Debian: apt-get install systemd)",
        }
    }
}

/// Whether `program --version` runs and succeeds.
fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Returns when this machine meets `need`; panics otherwise, saying what is
/// missing and how to get it. A test calls it first, before it starts
/// anything.
pub fn require(need: Need) {
    if !need.is_met() {
        panic!(
            "this test {}, which this machine lacks: {}. A missing need fails a test, never passes it \
             (forkring_testkit::need).",
            need.reason(),
            need.how()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_need_says_what_it_is_and_how_to_get_it() {
        for need in Need::ALL {
            assert!(need.reason().starts_with("needs "), "{need:?}");
            assert!(!need.how().is_empty(), "{need:?}");
        }
    }

    #[test]
    fn a_program_that_is_not_there_does_not_run() {
        assert!(!runs("forkring-testkit-no-such-program"));
    }
}
