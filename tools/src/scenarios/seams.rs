//! Scenario 13: three attacks on the places where features meet, held
//! together against one cluster while a normal client measures what it
//! meets.
//!
//! The attacks, each kept at full strength for the whole run (a connection
//! the server closes is opened again at once):
//!
//! - **pool flood**: in waves, four `GET /sleep?ms=1000` fill the worker's
//!   four deferred places (`--max-deferred 4 --pool 4`; the flood waits for
//!   `forkring_deferred_in_flight` to read 4), then one
//!   connection pipelines 2,000 more, which must be refused (`503`) without
//!   their work being queued. When a wave's four are answered, the *pool
//!   probe*, `GET /sleep?ms=10`, must be answered `200` within its own
//!   10 ms plus [`POOL_SLACK`]: no refused job was left in the queue ahead
//!   of it.
//! - **trickling bodies**: [`TRICKLE_CONNS`] connections each declare an
//!   8 MiB `POST /upload`, send 1,000 bytes, then one byte a second (under
//!   the minimum body rate of 240 bytes a second, which forkring asks after
//!   a 5 s grace, answering `408`).
//! - **idle health connections**: [`IDLE_CONNS`] connections to the metrics
//!   listener (`/ready`, `/live`, `/metrics`), opened and left idle.
//!
//! The normal client, beside them: `GET /` at [`RATE`] requests a second
//! over 8 keep-alive connections, paced (`forkring_stress::paced`, latency
//! from each request's due time), and every [`PROBE_EVERY`] in turn a small
//! upload (`POST /upload` of 5 bytes with `Expect: 100-continue`: the body
//! is sent on `100 Continue`, the answer must be `200`) and a health probe
//! (`GET /ready` on a new connection, as a balancer asks, `200` within 1 s).
//! It runs [`QUIET`] without the attacks, then [`ATTACKED`] with them.
//! Afterwards the worker's gauges (`/metrics`) must come back to zero:
//! pool queue and busy threads, deferred answers in flight, body bytes held.
//!
//! nginx, the anchor, has no pool, no separate health listener and no
//! minimum body rate; it spools bodies (`proxy_request_buffering`, to disk
//! past 16 KiB), so a slow body costs its own connection only. Its flood is
//! the same 2,000 pipelined requests (answered `404`, there is no such
//! route), its health probe and idle connections go to its one listener's
//! `/ready`, and its uploads go through the spooling proxy to a second
//! server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{ms, quantile_us, us, Ctx, Outcome, Target};
use forkring_stress::paced::{self, Plan};
use forkring_stress::probe;
use forkring_stress::procs;
use forkring_stress::servers::{Forkring, Nginx, NginxConfig};
use forkring_testkit::http;

/// The normal client's rate of `GET /`, requests a second.
const RATE: u32 = 2000;
/// Its keep-alive connections.
const CLIENT_CONNS: usize = 8;
/// Time between two probes (uploads and health probes alternate).
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How long the normal client runs without, then with, the attacks. The
/// attacked run is longer than the 5 s grace of the minimum body rate, so
/// the server closes trickling bodies (and the attack replaces them) while
/// it measures.
const QUIET: Duration = Duration::from_secs(5);
const ATTACKED: Duration = Duration::from_secs(15);
/// The trickling bodies.
const TRICKLE_CONNS: usize = 40;
/// The idle connections to the health listener.
const IDLE_CONNS: usize = 32;
/// Pipelined requests of one flood wave.
const FLOOD: usize = 2000;
/// The pool probe's job, and how long past it its answer may come.
const POOL_JOB_MS: u64 = 10;
const POOL_SLACK: Duration = Duration::from_millis(100);
/// A health probe's whole answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A small upload's whole exchange.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the gauges may take to come back after the attacks end.
const SETTLE: Duration = Duration::from_secs(10);

/// The workers' deferred places and pool threads.
const FORKRING_ARGS: &[&str] = &["--max-deferred", "4", "--pool", "4", "--metrics", "127.0.0.1:0"];

/// What the probes met.
#[derive(Default)]
struct Probes {
    uploads: u64,
    upload_failures: Vec<String>,
    upload_max: Duration,
    health: u64,
    health_failures: Vec<String>,
    health_max: Duration,
}

/// What the attacks did.
#[derive(Default)]
struct Attack {
    /// Flood waves done and requests answered, by status class.
    waves: u64,
    flood_refused: u64,
    flood_other: u64,
    flood_errors: u64,
    /// Pool probes: answered in time, and every one that was not.
    pool_probes: u64,
    pool_failures: Vec<String>,
    pool_max: Duration,
    /// Trickling bodies the server closed (with a 408 seen, or without).
    trickle_408: u64,
    trickle_closed: u64,
    /// Idle health connections the server closed.
    idle_closed: u64,
    /// Fewest trickling and idle connections held open at a sample.
    trickle_min: usize,
    idle_min: usize,
}

pub fn run(ctx: &Ctx, target: Target) -> Result<Outcome, String> {
    let (server_cpu, client_cpu) = ctx.pinning();
    let (fk, ng);
    let (addr, health) = match target {
        Target::Forkring => {
            let f = Forkring::start(&ctx.bin, 1, FORKRING_ARGS, server_cpu)?;
            let line = f
                .wait_line("metrics on http://", 0, Duration::from_secs(5))
                .ok_or_else(|| format!("no metrics listener in the log\n{}", f.log_tail(20)))?;
            let url = line.split("metrics on ").nth(1).unwrap_or_default().trim().to_owned();
            let (health, _) = probe::parse_url(&url)?;
            let addr = f.addr;
            fk = Some(f);
            ng = None;
            (addr, health)
        }
        Target::Nginx => {
            let bin = ctx.nginx.as_ref().ok_or("nginx not found")?;
            let cfg = NginxConfig { ready_route: true, spool_uploads: true, ..super::nginx_default() };
            let n = Nginx::start(bin, &cfg, server_cpu)?;
            let addr = n.addr;
            fk = None;
            ng = Some(n);
            (addr, addr)
        }
    };

    let (quiet, quiet_probes) = measure(addr, health, QUIET, client_cpu)?;

    let stop = Arc::new(AtomicBool::new(false));
    let attack = Arc::new(Mutex::new(Attack { trickle_min: usize::MAX, idle_min: usize::MAX, ..Attack::default() }));
    let established = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::new();
    {
        let (stop, attack, established) = (stop.clone(), attack.clone(), established.clone());
        let pool = target == Target::Forkring;
        attackers.push(thread::spawn(move || {
            pin(server_cpu);
            flood(addr, health, pool, &stop, &attack, &established)
        }));
    }
    {
        let (stop, attack, established) = (stop.clone(), attack.clone(), established.clone());
        attackers.push(thread::spawn(move || {
            pin(server_cpu);
            trickle(addr, &stop, &attack, &established)
        }));
    }
    {
        let (stop, attack, established) = (stop.clone(), attack.clone(), established.clone());
        attackers.push(thread::spawn(move || {
            pin(server_cpu);
            idle(health, &stop, &attack, &established)
        }));
    }
    // Every attack at strength before the client measures.
    let deadline = Instant::now() + Duration::from_secs(10);
    while established.load(Ordering::Acquire) < 3 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let ready = established.load(Ordering::Acquire) >= 3;
    let measured = if ready { Some(measure(addr, health, ATTACKED, client_cpu)) } else { None };
    stop.store(true, Ordering::Release);
    let mut attack_errors = Vec::new();
    for a in attackers {
        match a.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => attack_errors.push(e),
            Err(_) => attack_errors.push("an attack thread panicked".into()),
        }
    }
    if !ready {
        return Err(format!("the attacks did not all start within 10 s: {}", attack_errors.join("; ")));
    }
    let (attacked, probes) = measured.expect("measured when ready")?;
    let a = std::mem::take(&mut *attack.lock().unwrap_or_else(|e| e.into_inner()));
    if let Some(e) = attack_errors.first() {
        return Err(format!("an attack failed: {e}"));
    }

    // Afterwards, every gauge of the worker back at zero.
    let settled = match (&fk, target) {
        (Some(_), Target::Forkring) => Some(settle(health)),
        _ => None,
    };
    let crashes = fk.as_ref().map_or(0, |f| f.crashes().len());
    drop(ng);

    let errors = attacked.errors() + probes.upload_failures.len() as u64 + probes.health_failures.len() as u64;
    let quiet_errors =
        quiet.errors() + quiet_probes.upload_failures.len() as u64 + quiet_probes.health_failures.len() as u64;
    let pool_part = if target == Target::Forkring {
        format!(
            "; pool probes {}/{} in time (max {}){}",
            a.pool_probes - a.pool_failures.len() as u64,
            a.pool_probes,
            ms(a.pool_max),
            a.pool_failures.first().map(|f| format!(" [first late: {f}]")).unwrap_or_default()
        )
    } else {
        String::new()
    };
    let figures = format!(
        "normal client: quiet p99 {} ({} errors), attacked p99 {} p99.9 {} ({} errors of {} GET /, \
         uploads {}/{} ok max {}, /ready {}/{} ok max {}){}{}{pool_part}; attacks: {} flood waves ({} refused, \
         {} other, {} errors), trickling bodies held >= {} of {TRICKLE_CONNS} ({} closed, {} with 408), \
         idle health conns held >= {} of {IDLE_CONNS} ({} closed){}{}",
        us(quantile_us(&quiet.latency, 0.99)),
        quiet_errors,
        us(quantile_us(&attacked.latency, 0.99)),
        us(quantile_us(&attacked.latency, 0.999)),
        attacked.errors(),
        attacked.due(),
        probes.uploads - probes.upload_failures.len() as u64,
        probes.uploads,
        ms(probes.upload_max),
        probes.health - probes.health_failures.len() as u64,
        probes.health,
        ms(probes.health_max),
        probes.upload_failures.first().map(|f| format!(" [first upload failure: {f}]")).unwrap_or_default(),
        probes.health_failures.first().map(|f| format!(" [first /ready failure: {f}]")).unwrap_or_default(),
        a.waves,
        a.flood_refused,
        a.flood_other,
        a.flood_errors,
        a.trickle_min,
        a.trickle_closed,
        a.trickle_408,
        a.idle_min,
        a.idle_closed,
        match &settled {
            Some(Ok(took)) => format!("; gauges back to 0 after {}", ms(*took)),
            Some(Err(e)) => format!("; gauges NOT back: {e}"),
            None => String::new(),
        },
        if crashes > 0 { format!("; {crashes} worker crash(es)") } else { String::new() },
    );
    let pass = errors == 0
        && quiet_errors == 0
        && (target == Target::Nginx || (a.pool_failures.is_empty() && a.pool_probes > 0))
        && a.waves > 0
        && a.flood_other == 0
        && matches!(settled, Some(Ok(_)) | None)
        && crashes == 0;
    Ok(Outcome { figures, pass })
}

fn pin(cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        let _ = procs::pin_to(cpu);
    }
}

/// The normal client for `run`: the paced `GET /` and the probes beside it.
fn measure(
    addr: SocketAddr,
    health: SocketAddr,
    run: Duration,
    cpu: Option<usize>,
) -> Result<(paced::Tally, Probes), String> {
    let plan = Plan { cpu, ..Plan::hello(addr, CLIENT_CONNS, RATE, run) };
    let done = Arc::new(AtomicBool::new(false));
    let prober = {
        let done = done.clone();
        thread::spawn(move || {
            pin(cpu);
            let mut p = Probes::default();
            let mut next = Instant::now();
            let mut upload_turn = true;
            while !done.load(Ordering::Acquire) {
                let t = Instant::now();
                if upload_turn {
                    p.uploads += 1;
                    if let Err(e) = small_upload(addr) {
                        p.upload_failures.push(e);
                    }
                    p.upload_max = p.upload_max.max(t.elapsed());
                } else {
                    p.health += 1;
                    match probe::get(health, "/ready", PROBE_TIMEOUT) {
                        Ok(200) if t.elapsed() <= PROBE_TIMEOUT => {}
                        Ok(200) => p.health_failures.push(format!("200 after {}", ms(t.elapsed()))),
                        Ok(s) => p.health_failures.push(format!("status {s}")),
                        Err(e) => p.health_failures.push(e),
                    }
                    p.health_max = p.health_max.max(t.elapsed());
                }
                upload_turn = !upload_turn;
                next += PROBE_EVERY;
                super::sleep_until(next);
            }
            p
        })
    };
    let tally = paced::run(&plan);
    done.store(true, Ordering::Release);
    let probes = prober.join().map_err(|_| "the probe thread panicked".to_owned())?;
    Ok((tally?, probes))
}

/// `POST /upload` of 5 bytes with `Expect: 100-continue`: the body goes
/// out on `100 Continue`, and the answer must be `200`.
fn small_upload(addr: SocketAddr) -> Result<(), String> {
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, UPLOAD_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(UPLOAD_TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(UPLOAD_TIMEOUT)).map_err(|e| e.to_string())?;
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: stress\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .map_err(|e| format!("send head: {e}"))?;
    // The interim answer, a byte at a time so that nothing after it is
    // taken: a final answer in its place is the server's refusal.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while http::find(&head, b"\r\n\r\n").is_none() {
        match s.read(&mut b) {
            Ok(0) => return Err(format!("closed before 100 Continue: {}", http::show(&head))),
            Ok(_) => head.push(b[0]),
            Err(e) => return Err(format!("waiting for 100 Continue: {e}")),
        }
        if head.len() > http::HEAD_LIMIT {
            return Err("interim head too long".into());
        }
    }
    let interim = http::parse_head(&head[..head.len() - 4])?;
    let mut buf = Vec::new();
    if interim.status == 100 {
        s.write_all(b"hello").map_err(|e| format!("send body: {e}"))?;
    } else {
        buf = head;
    }
    let r = http::read_response(&mut s, &mut buf, false, UPLOAD_TIMEOUT)
        .map_err(|e| format!("{} {}", e.fail.name(), e.detail))?;
    match r.status {
        200 if started.elapsed() <= UPLOAD_TIMEOUT => Ok(()),
        200 => Err(format!("200 after {}", ms(started.elapsed()))),
        s => Err(format!("status {s}")),
    }
}

fn lock(a: &Mutex<Attack>) -> std::sync::MutexGuard<'_, Attack> {
    a.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pool flood, wave after wave until `stop`; with `pool`, the four
/// admitted jobs and the pool probe after each wave.
fn flood(
    addr: SocketAddr,
    health: SocketAddr,
    pool: bool,
    stop: &AtomicBool,
    attack: &Mutex<Attack>,
    established: &AtomicU64,
) -> Result<(), String> {
    let req = b"GET /sleep?ms=1000 HTTP/1.1\r\nHost: stress\r\n\r\n";
    let connect = || -> Result<TcpStream, String> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("flood connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        Ok(s)
    };
    let mut first = true;
    while !stop.load(Ordering::Acquire) {
        let mut admitted = Vec::new();
        if pool {
            for _ in 0..4 {
                let mut s = connect()?;
                s.write_all(req).map_err(|e| format!("flood send: {e}"))?;
                admitted.push(s);
            }
            // The four hold every deferred place before the flood comes.
            if let Err(e) = wait_gauge(health, "forkring_deferred_in_flight", 4.0) {
                lock(attack).flood_errors += 1;
                return Err(format!("the flood's four jobs were not admitted: {e}"));
            }
        }
        let mut s = connect()?;
        let wave: Vec<u8> = req.repeat(FLOOD);
        // Written by a second thread: 2,000 answers must be read while the
        // requests go out, or both sides' buffers fill.
        let mut w = s.try_clone().map_err(|e| e.to_string())?;
        let writer = thread::spawn(move || w.write_all(&wave));
        let mut buf = Vec::new();
        let (mut refused, mut other, mut errors) = (0, 0, 0);
        for _ in 0..FLOOD {
            match http::read_response(&mut s, &mut buf, false, Duration::from_secs(10)) {
                Ok(r) if r.status == 503 || (!pool && r.status == 404) => refused += 1,
                Ok(_) => other += 1,
                Err(_) => {
                    errors += 1;
                    break;
                }
            }
        }
        let _ = writer.join();
        if first {
            established.fetch_add(1, Ordering::AcqRel);
            first = false;
        }
        // The admitted four, answered after their second.
        for mut a in admitted {
            let mut b = Vec::new();
            match http::read_response(&mut a, &mut b, false, Duration::from_secs(10)) {
                Ok(r) if r.status == 200 => {}
                Ok(_) => other += 1,
                Err(_) => errors += 1,
            }
        }
        let probe = if pool { Some(pool_probe(addr)) } else { None };
        let mut at = lock(attack);
        at.waves += 1;
        at.flood_refused += refused;
        at.flood_other += other;
        at.flood_errors += errors;
        if let Some(p) = probe {
            at.pool_probes += 1;
            match p {
                Ok(took) => at.pool_max = at.pool_max.max(took),
                Err(e) => at.pool_failures.push(e),
            }
        }
    }
    Ok(())
}

/// `GET /sleep?ms=10` on a new connection once the pool is free: `200`
/// within the job's time and [`POOL_SLACK`]; how long it took.
fn pool_probe(addr: SocketAddr) -> Result<Duration, String> {
    let t = Instant::now();
    let status = probe::get(addr, &format!("/sleep?ms={POOL_JOB_MS}"), Duration::from_secs(5))?;
    let took = t.elapsed();
    let bound = Duration::from_millis(POOL_JOB_MS) + POOL_SLACK;
    match status {
        200 if took <= bound => Ok(took),
        200 => Err(format!("200 after {}", ms(took))),
        s => Err(format!("status {s} after {}", ms(took))),
    }
}

/// One attacking connection: when it opened, when it last sent.
struct Held {
    s: TcpStream,
    sent: Instant,
}

/// What a non-blocking read says about a held connection.
enum Peer {
    Open,
    Closed { answered_408: bool },
}

fn peer(s: &mut TcpStream) -> Peer {
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Ok(0) => Peer::Closed { answered_408: false },
        Ok(n) => Peer::Closed { answered_408: buf[..n].starts_with(b"HTTP/1.1 408") },
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Peer::Open,
        Err(_) => Peer::Closed { answered_408: false },
    }
}

fn open_held(addr: SocketAddr, first: &[u8]) -> Option<Held> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    if !first.is_empty() {
        s.write_all(first).ok()?;
    }
    s.set_nonblocking(true).ok()?;
    Some(Held { s, sent: Instant::now() })
}

/// The trickling bodies, until `stop`.
fn trickle(addr: SocketAddr, stop: &AtomicBool, attack: &Mutex<Attack>, established: &AtomicU64) -> Result<(), String> {
    let mut first = b"POST /upload HTTP/1.1\r\nHost: stress\r\nContent-Length: 8388608\r\n\r\n".to_vec();
    first.extend(std::iter::repeat(b'x').take(1000));
    let mut held: Vec<Option<Held>> = (0..TRICKLE_CONNS).map(|_| None).collect();
    let mut announced = false;
    while !stop.load(Ordering::Acquire) {
        let (mut closed, mut with_408) = (0, 0);
        for h in held.iter_mut() {
            if let Some(c) = h {
                match peer(&mut c.s) {
                    Peer::Open => {
                        if c.sent.elapsed() >= Duration::from_secs(1) {
                            if c.s.write(b"x").is_err() {
                                closed += 1;
                                *h = None;
                                continue;
                            }
                            c.sent = Instant::now();
                        }
                    }
                    Peer::Closed { answered_408 } => {
                        closed += 1;
                        with_408 += u64::from(answered_408);
                        *h = None;
                    }
                }
            }
            if h.is_none() {
                *h = open_held(addr, &first);
            }
        }
        let open = held.iter().filter(|h| h.is_some()).count();
        if !announced && open == TRICKLE_CONNS {
            established.fetch_add(1, Ordering::AcqRel);
            announced = true;
        }
        let mut at = lock(attack);
        at.trickle_closed += closed;
        at.trickle_408 += with_408;
        if announced {
            at.trickle_min = at.trickle_min.min(open);
        }
        drop(at);
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The idle connections to the health listener, until `stop`.
fn idle(health: SocketAddr, stop: &AtomicBool, attack: &Mutex<Attack>, established: &AtomicU64) -> Result<(), String> {
    let mut held: Vec<Option<Held>> = (0..IDLE_CONNS).map(|_| None).collect();
    let mut announced = false;
    while !stop.load(Ordering::Acquire) {
        let mut closed = 0;
        for h in held.iter_mut() {
            if let Some(c) = h {
                if let Peer::Closed { .. } = peer(&mut c.s) {
                    closed += 1;
                    *h = None;
                }
            }
            if h.is_none() {
                *h = open_held(health, b"");
            }
        }
        let open = held.iter().filter(|h| h.is_some()).count();
        if !announced && open == IDLE_CONNS {
            established.fetch_add(1, Ordering::AcqRel);
            announced = true;
        }
        let mut at = lock(attack);
        at.idle_closed += closed;
        if announced {
            at.idle_min = at.idle_min.min(open);
        }
        drop(at);
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Waits (at most [`SETTLE`]) until the worker's pool, deferred and body
/// gauges read zero on `/metrics`; how long that took.
fn settle(health: SocketAddr) -> Result<Duration, String> {
    let t = Instant::now();
    let gauges = ["forkring_pool_queued", "forkring_pool_busy", "forkring_deferred_in_flight", "forkring_body_bytes"];
    let mut last = String::new();
    while t.elapsed() < SETTLE {
        match scrape(health) {
            Ok(text) => {
                let nonzero: Vec<String> = gauges
                    .iter()
                    .filter_map(|g| {
                        let sum = gauge_sum(&text, g)?;
                        (sum != 0.0).then(|| format!("{g} {sum}"))
                    })
                    .collect();
                let missing: Vec<&str> = gauges.iter().copied().filter(|g| gauge_sum(&text, g).is_none()).collect();
                if !missing.is_empty() {
                    return Err(format!("no {} in /metrics", missing.join(", ")));
                }
                if nonzero.is_empty() {
                    return Ok(t.elapsed());
                }
                last = nonzero.join(", ");
            }
            Err(e) => last = e,
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!("after {}: {last}", ms(SETTLE)))
}

/// Waits (at most 2 s) until `gauge` sums to `want` on `/metrics`.
fn wait_gauge(health: SocketAddr, gauge: &str, want: f64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = String::from("no scrape");
    while Instant::now() < deadline {
        match scrape(health) {
            Ok(text) => match gauge_sum(&text, gauge) {
                Some(v) if v == want => return Ok(()),
                Some(v) => last = format!("{gauge} {v}"),
                None => return Err(format!("no {gauge} in /metrics")),
            },
            Err(e) => last = e,
        }
        thread::sleep(Duration::from_millis(1));
    }
    Err(last)
}

/// The text of `GET /metrics`.
fn scrape(health: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&health, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: stress\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let r = http::read_response(&mut s, &mut buf, false, Duration::from_secs(5))
        .map_err(|e| format!("{} {}", e.fail.name(), e.detail))?;
    if r.status != 200 {
        return Err(format!("/metrics: status {}", r.status));
    }
    Ok(String::from_utf8_lossy(&r.body).into_owned())
}

/// The sum of a metric's samples over its labels; `None` when absent.
fn gauge_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let v: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        *found.get_or_insert(0.0) += v;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::gauge_sum;

    #[test]
    fn a_gauge_is_summed_over_its_labels_and_absent_when_not_exposed() {
        let text =
            "# TYPE forkring_pool_busy gauge\nforkring_pool_busy{slot=\"0\"} 2\nforkring_pool_busy{slot=\"1\"} 1\n\
                    forkring_pool_busy_total 9\nforkring_body_bytes 0\n";
        assert_eq!(gauge_sum(text, "forkring_pool_busy"), Some(3.0));
        assert_eq!(gauge_sum(text, "forkring_body_bytes"), Some(0.0));
        assert_eq!(gauge_sum(text, "forkring_pool_queued"), None);
    }
}
