//! Scenario 7: 10,000 keep-alive connections, each idle after one answered
//! request, on one worker. Server memory per connection = (resident memory
//! of master + worker with them - before them) / 10,000; the goal is 512
//! bytes. Only user-space memory (RSS) is counted: the kernel's socket
//! memory is the same for every server and not in it.
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

use crate::load::{HELLO, RESPONSE_LIMIT};
use crate::servers::NginxConfig;

const CONNS: usize = 10_000;
const THREADS: usize = 8;
const GOAL: f64 = 512.0;
/// Requests served before the first measurement.
const WARM_REQUESTS: usize = 20_000;

pub fn run(ctx: &Ctx, target: Target) -> Result<Outcome, String> {
    let nofile = proc::raise_nofile(3 * CONNS as u64);
    if nofile < (CONNS + 512) as u64 {
        return Err(format!("the open-file limit is {nofile}; {CONNS} connections need more"));
    }
    let nginx = NginxConfig { workers: 1, connections: CONNS + 1024, header_timeout_ms: 10_000 };
    let srv = Server::start(ctx, target, 1, &[], nginx, None)?;
    let addr = srv.addr();
    let cold = srv.rss();
    // Warm-up: WARM_REQUESTS requests on 8 connections, so that what the
    // server keeps whatever the number of connections (a receive-buffer
    // pool, the allocator's arenas, the Date cache) is resident before the
    // first measurement and the difference is what the idle connections
    // cost. forkring's io_uring driver, for one, lends the kernel 4096
    // receive buffers of 8 KiB that are used in turn: a cold server touches
    // a new page of that fixed pool with each of its first 4096 requests.
    {
        let mut warm = open(addr, 8)?;
        for i in 0..WARM_REQUESTS {
            let (s, buf) = &mut warm[i % 8];
            request(s, buf)?;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
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
    let held: usize = srv.worker_pids().iter().map(|&p| crate::procs::tcp_held(p, addr.port()).len()).sum();
    // They are still alive and served.
    let mut still = 0;
    for (s, buf) in conns.iter_mut().step_by(CONNS / 100) {
        if request(s, buf).is_ok() {
            still += 1;
        }
    }
    drop(conns);
    let per_conn = with.saturating_sub(before) as f64 / CONNS as f64;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let figures = format!(
        "{per_conn:.0} bytes/conn (RSS {:.1} MiB at start, {:.1} MiB after {WARM_REQUESTS} requests, {:.1} MiB with \
         {CONNS} idle conns, {held} held by the worker; {still}/100 sampled still answered)",
        mib(cold),
        mib(before),
        mib(with),
    );
    Ok(Outcome { figures, pass: per_conn <= GOAL && held >= CONNS && still == 100 })
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
