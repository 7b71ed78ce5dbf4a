//! Scenario 7: 10,000 keep-alive connections, each idle after one answered
//! request, on one worker, measured twice: on a fresh server (what a
//! service that has just started pays for them) and on one warmed by 20,000
//! requests (what they cost beyond the pools a server keeps anyway). Memory
//! per connection = (resident memory of master + worker with them - before
//! them) / 10,000; the bound is 512 bytes for both, the goal 256 on a fresh
//! server. The servers' whole RSS (master included) is reported with the
//! connections open and after a keep-alive load of [`LOAD`] on 64
//! connections. Only user-space memory (RSS) is counted: the kernel's
//! socket memory is the same for every server and not in it.
//!
//! The connections are opened by 8 threads, each doing its requests one
//! after another, so that at most 8 requests are in flight: the figure is
//! what an idle connection keeps, not what a burst of concurrent requests
//! leaves in buffer pools.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{Ctx, Outcome, Server, Target};
use forkring_testkit::{http, proc};

use forkring_stress::probe::RESPONSE_LIMIT;
use forkring_stress::servers::NginxConfig;
use forkring_stress::HELLO;

const CONNS: usize = 10_000;
const THREADS: usize = 8;
/// Bound on the bytes per idle connection, fresh and warm.
const BOUND: f64 = 512.0;
/// Requests served before the warm measurement.
const WARM_REQUESTS: usize = 20_000;
/// The keep-alive load after which the whole RSS is measured again.
const LOAD: Duration = Duration::from_secs(60);
/// Its connections.
const LOAD_CONNS: usize = 64;

/// One measurement of the idle connections.
struct Idle {
    /// RSS before they were opened.
    before: u64,
    /// RSS with them open.
    with: u64,
    /// Connections the worker holds.
    held: usize,
    /// Of 100 sampled, how many still answered.
    still: usize,
}

impl Idle {
    fn per_conn(&self) -> f64 {
        self.with.saturating_sub(self.before) as f64 / CONNS as f64
    }
}

pub fn run(ctx: &Ctx, target: Target) -> Result<Outcome, String> {
    let nofile = proc::raise_nofile(3 * CONNS as u64);
    if nofile < (CONNS + 512) as u64 {
        return Err(format!("the open-file limit is {nofile}; {CONNS} connections need more"));
    }
    let nginx = || NginxConfig { connections: CONNS + 1024, ..super::nginx_default() };
    let (server_cpu, client_cpu) = ctx.pinning();

    // A fresh server: nothing served before the connections.
    let fresh = {
        let srv = Server::start(ctx, target, 1, &[], nginx(), server_cpu)?;
        measure(&srv)?
    };

    // A warmed one: WARM_REQUESTS requests on 8 connections first, so that
    // what the server keeps whatever the number of connections (buffer
    // pools, the allocator's arenas, the Date cache) is resident before the
    // measurement and the difference is what the idle connections cost.
    let srv = Server::start(ctx, target, 1, &[], nginx(), server_cpu)?;
    let addr = srv.addr();
    let cold = srv.rss();
    {
        let mut warm = open(addr, 8)?;
        for i in 0..WARM_REQUESTS {
            let (s, buf) = &mut warm[i % 8];
            request(s, buf)?;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let warm = measure(&srv)?;
    // Then a keep-alive load: what the server holds after serving for a while.
    let load = match &ctx.wrk {
        Some(w) => {
            forkring_stress::wrk::Wrk { cpu: client_cpu, ..forkring_stress::wrk::Wrk::new(w, addr, LOAD_CONNS, LOAD) }
                .run()
                .map(|r| (r.requests, r.errors))?
        }
        None => {
            let l = forkring_stress::closed_loop::Load::start(
                addr,
                forkring_stress::closed_loop::LoadConfig::new(LOAD_CONNS, 0, LOAD + Duration::from_secs(5)),
            );
            std::thread::sleep(LOAD);
            let st = l.finish();
            (st.ok, st.failed_total())
        }
    };
    std::thread::sleep(Duration::from_millis(500));
    let after_load = srv.rss();

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let figures = format!(
        "fresh: {:.0} bytes/conn (RSS {:.1} MiB -> {:.1} MiB with {CONNS} idle conns, {} held, {}/100 sampled still \
         answered); after {WARM_REQUESTS} requests: {:.0} bytes/conn (RSS {:.1} MiB at start, {:.1} MiB warm, \
         {:.1} MiB with {CONNS} idle conns, {} held, {}/100 answered); RSS {:.1} MiB after a {}s keep-alive load on \
         {LOAD_CONNS} conns ({} requests, {} errors)",
        fresh.per_conn(),
        mib(fresh.before),
        mib(fresh.with),
        fresh.held,
        fresh.still,
        warm.per_conn(),
        mib(cold),
        mib(warm.before),
        mib(warm.with),
        warm.held,
        warm.still,
        mib(after_load),
        LOAD.as_secs(),
        load.0,
        load.1,
    );
    let ok = |m: &Idle| m.per_conn() <= BOUND && m.held >= CONNS && m.still == 100;
    Ok(Outcome { figures, pass: ok(&fresh) && ok(&warm) && load.1 == 0 })
}

/// Opens CONNS connections on `srv`, one answered request each, and
/// measures what they cost; closes them before returning.
fn measure(srv: &Server) -> Result<Idle, String> {
    let addr = srv.addr();
    let before = srv.rss();
    let mut handles = Vec::new();
    let shares: Vec<usize> = (0..THREADS).map(|t| CONNS * (t + 1) / THREADS - CONNS * t / THREADS).collect();
    for n in shares {
        handles.push(std::thread::spawn(move || open(addr, n)));
    }
    let mut conns = Vec::with_capacity(CONNS);
    let mut errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(c)) => conns.extend(c),
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("an opening thread panicked".into()),
        }
    }
    if !errors.is_empty() {
        return Err(format!("opened {} of {CONNS} connections: {}", conns.len(), errors[0]));
    }
    // Let the server settle (deferred frees, lingering work), then measure.
    std::thread::sleep(Duration::from_secs(1));
    let with = srv.rss();
    let held: usize = srv.worker_pids().iter().map(|&p| forkring_stress::procs::tcp_held(p, addr.port()).len()).sum();
    // They are still alive and served.
    let mut still = 0;
    for (s, buf) in conns.iter_mut().step_by(CONNS / 100) {
        if request(s, buf).is_ok() {
            still += 1;
        }
    }
    drop(conns);
    // The server notices the closes before the next phase.
    std::thread::sleep(Duration::from_millis(500));
    Ok(Idle { before, with, held, still })
}

/// Opens `n` connections, one answered request on each.
fn open(addr: SocketAddr, n: usize) -> Result<Vec<(TcpStream, Vec<u8>)>, String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        request(&mut s, &mut buf)?;
        out.push((s, buf));
    }
    Ok(out)
}

fn request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    match http::read_response(s, buf, false, RESPONSE_LIMIT) {
        Ok(r) if r.status == 200 && r.body == HELLO && !r.says_close() => Ok(()),
        Ok(r) => Err(format!("status {} (close: {})", r.status, r.says_close())),
        Err(e) => Err(format!("{:?} {}", e.fail, e.detail)),
    }
}
