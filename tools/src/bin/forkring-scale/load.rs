//! The load: two wrk processes at the balancer for the whole scenario, one
//! with keep-alive connections and one sending `Connection: close` (a new
//! connection per request). They run until stopped with SIGINT, on which
//! wrk prints its report.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use forkring_testkit::proc;

use crate::procs;
use crate::wrk::{self, WrkResult};

/// Keep-alive connections.
pub const KEEPALIVE: usize = 16;
/// Connection-per-request connections.
pub const CLOSE: usize = 4;

/// The two wrk processes.
pub struct Load {
    keepalive: Child,
    close: Child,
}

/// What both measured.
#[derive(Debug, Default)]
pub struct Figures {
    pub keepalive: WrkResult,
    pub close: WrkResult,
}

impl Figures {
    pub fn requests(&self) -> u64 {
        self.keepalive.requests + self.close.requests
    }

    pub fn failed(&self) -> u64 {
        self.keepalive.errors + self.close.errors
    }

    /// `N req (keep-alive K, conn/req C), F failed`.
    pub fn summary(&self) -> String {
        format!(
            "{} req (keep-alive {} at {:.0}/s, conn/req {} at {:.0}/s), {} failed",
            self.requests(),
            self.keepalive.requests,
            self.keepalive.rps,
            self.close.requests,
            self.close.rps,
            self.failed()
        )
    }
}

fn spawn(bin: &Path, addr: SocketAddr, conns: usize, close: bool) -> Result<Child, String> {
    let mut cmd = Command::new(bin);
    cmd.args(["-t1", &format!("-c{conns}"), "-d600s", "--timeout", "5s", "--latency"]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    let child = cmd
        .arg(format!("http://{addr}/"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start {}: {e}", bin.display()))?;
    procs::register(child.id() as i32);
    Ok(child)
}

fn report(child: Child) -> Result<WrkResult, String> {
    let pid = child.id() as i32;
    let _ = proc::signal(pid, libc::SIGINT);
    // wrk prints its report and exits at once on SIGINT; past this it is
    // killed (the output is then lost, and the scenario says so).
    let killer = std::thread::spawn(move || {
        if !proc::wait_gone(pid, Duration::from_secs(10)) {
            let _ = proc::signal(pid, libc::SIGKILL);
        }
    });
    let out = child.wait_with_output().map_err(|e| format!("wait for wrk: {e}"))?;
    let _ = killer.join();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    wrk::parse(&text).ok_or_else(|| format!("could not read wrk's report: {text}{}", String::from_utf8_lossy(&out.stderr)))
}

impl Load {
    pub fn start(bin: &Path, addr: SocketAddr) -> Result<Load, String> {
        let keepalive = spawn(bin, addr, KEEPALIVE, false)?;
        let close = spawn(bin, addr, CLOSE, true)?;
        Ok(Load { keepalive, close })
    }

    pub fn finish(self) -> Result<Figures, String> {
        Ok(Figures { keepalive: report(self.keepalive)?, close: report(self.close)? })
    }
}
