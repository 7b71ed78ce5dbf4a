//! The fleet's load: two wrk processes at the balancer for the whole scenario, one
//! with keep-alive connections and one sending `Connection: close` (a new
//! connection per request). wrk reports only when its duration is over, so
//! each scenario gives one longer than it needs, waits for the report, and
//! fails if its own work outlasted the load.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use forkring_stress::wrk::{Running, Wrk, WrkResult};

/// Keep-alive connections.
pub const KEEPALIVE: usize = 16;
/// Connection-per-request connections.
pub const CLOSE: usize = 4;

/// The two wrk processes.
pub struct Load {
    keepalive: Running,
    close: Running,
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

/// wrk at `addr` for `dur`, with a 5 s request timeout.
fn spawn(bin: &Path, addr: SocketAddr, conns: usize, close: bool, dur: Duration) -> Result<Running, String> {
    Wrk { timeout: Some(Duration::from_secs(5)), close, ..Wrk::new(bin, addr, conns, dur) }.spawn()
}

/// How long past its duration a wrk run may take to report.
const REPORT_MARGIN: Duration = Duration::from_secs(10);

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
        let figures = Figures {
            keepalive: self.keepalive.wait_at_most(REPORT_MARGIN)?,
            close: self.close.wait_at_most(REPORT_MARGIN)?,
        };
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
