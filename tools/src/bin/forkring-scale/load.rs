//! The load: two wrk processes at the balancer for the whole scenario, one
//! with keep-alive connections and one sending `Connection: close` (a new
//! connection per request). wrk reports only when its duration is over, so
//! each scenario gives one longer than it needs, waits for the report, and
//! fails if its own work outlasted the load.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    started: Instant,
    duration: Duration,
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

fn spawn(bin: &Path, addr: SocketAddr, conns: usize, close: bool, dur: Duration) -> Result<Child, String> {
    let mut cmd = Command::new(bin);
    cmd.args(["-t1", &format!("-c{conns}"), &format!("-d{}s", dur.as_secs()), "--timeout", "5s", "--latency"]);
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

fn report(child: Child, dur: Duration) -> Result<WrkResult, String> {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    // Past its duration and a margin wrk is killed (the report is then
    // lost, and the scenario says so). The waiting thread has not reaped
    // it before it exits, so the pid is still wrk's.
    let out = match rx.recv_timeout(dur + Duration::from_secs(10)) {
        Ok(out) => out,
        Err(_) => {
            let _ = proc::signal(pid, libc::SIGKILL);
            rx.recv().map_err(|e| e.to_string())?
        }
    };
    let out = out.map_err(|e| format!("wait for wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    wrk::parse(&text)
        .ok_or_else(|| format!("could not read wrk's report: {text}{}", String::from_utf8_lossy(&out.stderr)))
}

impl Load {
    /// Starts both for `duration` (whole seconds).
    pub fn start(bin: &Path, addr: SocketAddr, duration: Duration) -> Result<Load, String> {
        let keepalive = spawn(bin, addr, KEEPALIVE, false, duration)?;
        let close = spawn(bin, addr, CLOSE, true, duration)?;
        Ok(Load { keepalive, close, started: Instant::now(), duration })
    }

    /// Waits for both reports; an error if the scenario's work (everything
    /// until this call) took longer than the load ran.
    pub fn finish(self) -> Result<Figures, String> {
        let busy = self.started.elapsed();
        let figures =
            Figures { keepalive: report(self.keepalive, self.duration)?, close: report(self.close, self.duration)? };
        if busy + Duration::from_millis(200) > self.duration {
            return Err(format!(
                "the scenario took {:.1} s, longer than its {} s of load: its end ran unloaded",
                busy.as_secs_f64(),
                self.duration.as_secs()
            ));
        }
        Ok(figures)
    }
}
