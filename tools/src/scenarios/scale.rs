//! Scenario 11: scaling down and up under connection-per-request load.
//!
//! wrk, one thread with 32 connections sending `Connection: close` (a new
//! connection for every request, as fast as the thread opens them), runs
//! 22 s against a cluster of 4 workers; from 1 s in, SIGTTOU and SIGTTIN
//! alternate every 500 ms for 20 s, 20 of each (4 workers, 3, 4, 3, ...).
//! Every request must be answered and no connection reset.
//!
//! forkring runs it twice. With `--balance reuseport` (the default) each
//! scale-down takes a socket out of the `SO_REUSEPORT` group, and when it
//! closes the kernel resets every connection still queued or completing
//! its handshake on it: the master must have steered new connections away
//! from it first. With `--balance shared` every worker accepts from one
//! socket that never closes.
//!
//! nginx, the anchor: `listen ... reuseport`, 4 workers, SIGHUP every
//! 500 ms under the same load. Its master keeps every reuseport socket open
//! across a reload and its new workers take them over, so it never closes
//! a socket clients connect to; forkring really changes its number of
//! sockets, and is held to the same bound.
//!
//! Resets are counted by the client: wrk's failed reads and writes (over
//! loopback, a connection reset, or closed by the server without an
//! answer). The kernel's `ListenDrops`, `ListenOverflows`, `EstabResets`
//! and `OutRsts` grow with every program on the host, so their growth
//! during each run is printed as context, never judged.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{nginx_default, sleep_until, Ctx, Outcome, Target};
use forkring_stress::netstat::TcpCounters;
use forkring_stress::servers::{Forkring, Nginx, NginxConfig};
use forkring_stress::wrk::{Wrk, WrkResult};

/// Workers at the start, as in the anchor's measurement.
const WORKERS: usize = 4;
/// wrk's connections.
const CONNS: usize = 32;
/// Signals sent, alternating (forkring: TTOU first) or all HUP (nginx).
const SIGNALS: u32 = 40;
/// Between two signals.
const EVERY: Duration = Duration::from_millis(500);
/// From wrk's start to the first signal.
const FIRST: Duration = Duration::from_secs(1);
/// wrk's run: the signals, and a second and a half after the last one.
const RUN: Duration = Duration::from_secs(22);

pub fn run(ctx: &Ctx, target: Target) -> Result<Outcome, String> {
    let wrk = ctx.wrk.clone().ok_or("wrk not found")?;
    match target {
        Target::Forkring => {
            let reuseport = forkring(ctx, &wrk, "reuseport")?;
            let shared = forkring(ctx, &wrk, "shared")?;
            Ok(Outcome {
                figures: format!("reuseport: {}; shared: {}", reuseport.figures, shared.figures),
                pass: reuseport.pass && shared.pass,
            })
        }
        Target::Nginx => nginx(ctx, &wrk),
    }
}

/// What the client saw during one run, and what the host's counters did.
struct Load {
    wrk: WrkResult,
    host: TcpCounters,
}

impl Load {
    /// Runs wrk against `addr` for [`RUN`] while `signals` sends the
    /// signals; the host's counters are read before and after.
    fn run(wrk: &Path, addr: std::net::SocketAddr, signals: impl FnOnce(Instant)) -> Result<Load, String> {
        let before = TcpCounters::read();
        let started = Instant::now();
        let running = Wrk { close: true, ..Wrk::new(wrk, addr, CONNS, RUN) }.spawn()?;
        signals(started + FIRST);
        let result = running.wait_at_most(Duration::from_secs(10));
        let host = TcpCounters::read().since(&before);
        Ok(Load { wrk: result?, host })
    }

    /// The bound: every request answered, no connection reset.
    fn clean(&self) -> bool {
        self.wrk.requests > 0 && self.wrk.errors == 0 && self.wrk.kinds.resets() == 0
    }

    /// `201350 req (9152/s), 0 failed, 0 resets`, the kinds of failure
    /// when there were some.
    fn text(&self) -> String {
        let w = &self.wrk;
        let mut t = format!("{} req ({:.0}/s), {} failed, {} resets", w.requests, w.rps, w.errors, w.kinds.resets());
        if w.errors > 0 {
            t.push_str(&format!(" ({})", w.kinds.text()));
        }
        t
    }
}

/// Sends [`SIGNALS`] signals through `send` (given the signal's index), one
/// every [`EVERY`] from `t0`, with `watch` called every 20 ms meanwhile and
/// until `t0 - FIRST + RUN`.
fn pace(t0: Instant, mut send: impl FnMut(u32), mut watch: impl FnMut()) {
    let mut wait = |until: Instant| {
        while Instant::now() < until {
            watch();
            sleep_until((Instant::now() + Duration::from_millis(20)).min(until));
        }
    };
    for i in 0..SIGNALS {
        wait(t0 + EVERY * i);
        send(i);
    }
    wait(t0 - FIRST + RUN);
}

fn forkring(ctx: &Ctx, wrk: &Path, balance: &str) -> Result<Outcome, String> {
    let f = Forkring::start(&ctx.bin, WORKERS, &["--balance", balance], None)?;
    let mut t0 = Instant::now();
    let load = Load::run(wrk, f.addr, |at| {
        t0 = at;
        let send = |i: u32| {
            let _ = f.signal(if i % 2 == 0 { libc::SIGTTOU } else { libc::SIGTTIN });
        };
        pace(at, send, || {});
    })?;
    // Each scale-down ends with its worker's requested exit, each scale-up
    // with a new worker ready; the last ones finish after the load.
    let downs = (SIGNALS as usize).div_ceil(2);
    let ups = SIGNALS as usize / 2;
    let _ = f.wait_line("requested=true", downs - 1, Duration::from_secs(10));
    let _ = f.wait_line("info: ready ", WORKERS + ups - 1, Duration::from_secs(10));
    if std::env::var_os("STRESS_DEBUG").is_some() {
        for l in f.log_since(t0) {
            eprintln!("{l}");
        }
    }
    let events = f.events();
    let removed = events.iter().filter(|e| e.kind == "exit" && e.requested == Some(true)).count();
    let added = events.iter().filter(|e| e.kind == "ready").count().saturating_sub(WORKERS);
    let live = f.workers().len();
    let crashes = f.crashes().len();
    let still_serving = forkring_stress::probe::get_once(f.addr, Duration::from_secs(2)) == Ok(200);
    let mut figures = format!("{}, {removed}/{downs} removed, {added}/{ups} added", load.text());
    if balance == "reuseport" && f.lines_with("reuseport: steering").is_empty() {
        figures.push_str(", NOT STEERED");
    }
    if live != WORKERS {
        figures.push_str(&format!(", {live} workers at the end"));
    }
    if crashes > 0 {
        figures.push_str(&format!(", {crashes} worker crash(es)"));
    }
    if !still_serving {
        figures.push_str(", NOT SERVING afterwards");
    }
    figures.push_str(&format!(" [host: {}]", load.host));
    let pass = load.clean() && removed == downs && added == ups && live == WORKERS && crashes == 0 && still_serving;
    Ok(Outcome { figures, pass })
}

fn nginx(ctx: &Ctx, wrk: &Path) -> Result<Outcome, String> {
    let bin = ctx.nginx.as_ref().ok_or("nginx not found")?;
    let n = Nginx::start(bin, &NginxConfig { workers: WORKERS, reuseport: true, ..nginx_default() }, None)?;
    let initial: BTreeSet<i32> = n.workers().into_iter().collect();
    let mut seen = initial.clone();
    let hup = |_| {
        let _ = n.signal(libc::SIGHUP);
    };
    let load = Load::run(wrk, n.addr, |at| pace(at, hup, || seen.extend(n.workers())))?;
    let replaced = seen.difference(&initial).count();
    let still_serving = forkring_stress::probe::get_once(n.addr, Duration::from_secs(2)) == Ok(200);
    let mut figures = format!("reuseport, {SIGNALS} HUPs, {replaced} workers replaced: {}", load.text());
    if !still_serving {
        figures.push_str(", NOT SERVING afterwards");
    }
    figures.push_str(&format!(" [host: {}]", load.host));
    Ok(Outcome { figures, pass: load.clean() && still_serving })
}
