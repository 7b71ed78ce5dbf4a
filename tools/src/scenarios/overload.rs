//! Scenario 14: past capacity. A pool-bound route (`GET /sleep?ms=10`,
//! one worker, a pool of [`POOL`] threads behind a deep queue of
//! [`QUEUE`] jobs, as a service configured to "never refuse" has) is
//! offered 0.5x, 1x, 1.5x, 2x and 4x its measured capacity by a paced,
//! open-loop client (`forkring_stress::paced`: latency from each request's
//! due time, so a server that makes requests wait is charged for all of
//! them), while a second paced client asks the fast route (`GET /`) at
//! [`FAST_RATE`] a second beside it.
//!
//! The capacity is measured first: the same route offered twice its
//! nominal rate (threads / job time) with admission off and the pool's
//! default queue (its cap refuses what does not fit, so the threads never
//! idle): what it answers a second is what the pool can do.
//!
//! For each load: goodput (successful answers a second, counting only
//! those that came within [`CLIENT_TIMEOUT`] of their due time: a later
//! answer is one its client gave up on), the p50, p99 and
//! p99.9 of the successful answers, the share refused (`503`) and how fast
//! refusals come, errors (anything but 2xx or 503, or no answer), and the
//! fast route's p99. Run twice: with admission (`--admission on`, the
//! default), then without (`--admission off`: admitted up to the queue's
//! cap, the behaviour of a server without admission control), the anchor
//! line that shows what admission changes.
//!
//! The bound (admission on): at 2x and 4x, goodput at least 90% of the
//! capacity and the p99 of successes within 3x of its p99 at 0.5x; the
//! fast route's p99 under 2 ms at every load; no errors.
//!
//! The anchors: forkring with `--admission off`, and, where `node` is
//! installed, Node's `http` doing the same work the way a Node service
//! does it: a pool of [`POOL`] slots (a client library's connection pool
//! to a dependency) whose 10 ms jobs are `setTimeout`s, and a queue of
//! callers waiting for a slot, offered the same loads (the work is the
//! same, so is its capacity). nginx is not run: the same work behind
//! nginx is forkring behind a proxy.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use super::{ms, Ctx, Outcome, Target};
use forkring_stress::histogram::Histogram;
use forkring_stress::paced::{self, Check, Plan, Tally, Wait};
use forkring_stress::procs;
use forkring_stress::servers::Forkring;

/// Threads of the worker's pool.
const POOL: usize = 4;
/// The deep queue behind them (both runs).
const QUEUE: usize = 1000;
/// Each job's time, ms.
const JOB_MS: u64 = 10;
/// The loads, as multiples of the capacity.
const LOADS: [f64; 5] = [0.5, 1.0, 1.5, 2.0, 4.0];
/// Each load's run, and the start of it that is not counted.
const RUN: Duration = Duration::from_secs(6);
const WARMUP: Duration = Duration::from_secs(1);
/// How long answers may come after the last request was due (a queue
/// without admission holds seconds of work).
const DRAIN: Duration = Duration::from_secs(5);
/// Keep-alive connections of the pool-route client: enough that a
/// connection rarely has a request in flight when its next one is due
/// (HTTP/1.1 answers in order: a refusal behind a 10 ms job would wait
/// for it).
const POOL_CONNS: usize = 256;
/// A client's patience: answers later than this are not goodput.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// The fast route's rate and connections.
const FAST_RATE: u32 = 1000;
const FAST_CONNS: usize = 4;

/// One load's figures.
struct Level {
    load: f64,
    secs: f64,
    pool: Tally,
    fast: Tally,
}

impl Level {
    fn goodput(&self) -> f64 {
        self.pool.latency.count_within(CLIENT_TIMEOUT) as f64 / self.secs
    }

    fn refused_share(&self) -> f64 {
        self.pool.refused as f64 / self.pool.due().max(1) as f64
    }

    fn line(&self) -> String {
        let q = |h: &Histogram, q: f64| h.quantile(q).map_or("-".to_owned(), ms);
        format!(
            "{:.1}x: {:.0}/s ok, p50 {} p99 {} p99.9 {}; refused {:.0}% (p50 {} p99 {}); errors {}; fast p99 {}",
            self.load,
            self.goodput(),
            q(&self.pool.latency, 0.5),
            q(&self.pool.latency, 0.99),
            q(&self.pool.latency, 0.999),
            self.refused_share() * 100.0,
            q(&self.pool.refusal, 0.5),
            q(&self.pool.refusal, 0.99),
            self.pool.errors() + self.fast.errors(),
            q(&self.fast.latency, 0.99),
        )
    }
}

/// The pool route's plan at `rate`.
fn pool_plan(addr: SocketAddr, rate: f64, duration: Duration, warmup: Duration) -> Plan {
    let mut p = Plan::hello(addr, POOL_CONNS, 1, duration);
    p.request = format!("GET /sleep?ms={JOB_MS} HTTP/1.1\r\nHost: stress\r\n\r\n").into_bytes();
    p.rate = rate;
    p.warmup = warmup;
    p.drain = DRAIN;
    p.check = Check::Shed;
    p
}

/// Runs the pool route at `rate` with the fast route beside it.
fn level(addr: SocketAddr, load: f64, rate: f64) -> Result<Level, String> {
    let mut fast = Plan::hello(addr, FAST_CONNS, FAST_RATE, RUN);
    fast.warmup = WARMUP;
    // The pool client polls (one busy thread); the fast one sleeps, so the
    // two share the machine's CPUs with the server.
    fast.wait = Wait::Sleep;
    let fast = thread::spawn(move || paced::run(&fast));
    let pool = paced::run(&pool_plan(addr, rate, RUN, WARMUP));
    let fast = fast.join().map_err(|_| "the fast client panicked".to_owned())?;
    Ok(Level { load, secs: (RUN - WARMUP).as_secs_f64(), pool: pool?, fast: fast? })
}

/// Every load against a fresh server started with `args`.
fn levels(ctx: &Ctx, args: &[&str], capacity: f64) -> Result<Vec<Level>, String> {
    let (server_cpu, _) = ctx.pinning();
    let pool = POOL.to_string();
    let queue = QUEUE.to_string();
    let mut all = vec!["--pool", &pool, "--pool-queue", &queue];
    all.extend_from_slice(args);
    let server = Forkring::start(&ctx.bin, 1, &all, server_cpu)?;
    let mut out = Vec::new();
    for load in LOADS {
        out.push(level(server.addr, load, capacity * load)?);
        // The pool's queue and admission state settle between loads.
        thread::sleep(Duration::from_millis(500));
    }
    Ok(out)
}

/// The Node anchor: `/sleep?ms=N` through a pool of slots (its argument) with a
/// waiting queue, `/` answers `Hello, World!`; prints its port.
const NODE_SERVER: &str = r#"
const http = require('http');
const slots = Number(process.argv[1]) || 4;
let busy = 0;
const waiting = [];
function take(job) { if (busy < slots) { busy++; job(); } else { waiting.push(job); } }
function give() { busy--; const next = waiting.shift(); if (next) { busy++; next(); } }
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/sleep') {
    const ms = Number(url.searchParams.get('ms')) || 0;
    take(() => setTimeout(() => {
      const body = 'waited ' + ms + ' ms\n';
      res.writeHead(200, {'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body)});
      res.end(body);
      give();
    }, ms));
    return;
  }
  // A length, not chunks: the paced client reads bodies by length.
  res.writeHead(200, {'Content-Type': 'text/plain', 'Content-Length': 13});
  res.end('Hello, World!');
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
"#;

/// A Node server this scenario started: killed when dropped.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    fn start(bin: &std::path::Path) -> Result<Node, String> {
        let mut child = Command::new(bin)
            .arg("-e")
            .arg(NODE_SERVER)
            .arg(POOL.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("node: {e}"))?;
        procs::register(child.id() as i32);
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or("node: no stdout")?;
        // Bounded: node prints its port once listening, or exits (end of
        // its output).
        let _ = BufReader::new(stdout).read_line(&mut line);
        let mut node = Node { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)) };
        let port: u16 = line.trim().parse().map_err(|_| format!("node printed no port: {line:?}"))?;
        node.addr.set_port(port);
        forkring_stress::probe::wait_serving(node.addr, Duration::from_secs(10))?;
        Ok(node)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every load against Node, when it is installed.
fn node_levels(capacity: f64) -> Option<Result<Vec<Level>, String>> {
    let bin = procs::find_on_path("node")?;
    Some(Node::start(&bin).and_then(|node| {
        let mut out = Vec::new();
        for load in LOADS {
            out.push(level(node.addr, load, capacity * load)?);
            thread::sleep(Duration::from_millis(500));
        }
        Ok(out)
    }))
}

/// What the pool answers a second when its threads never idle.
fn capacity(ctx: &Ctx) -> Result<f64, String> {
    let (server_cpu, _) = ctx.pinning();
    let pool = POOL.to_string();
    let server = Forkring::start(&ctx.bin, 1, &["--pool", &pool, "--admission", "off"], server_cpu)?;
    let nominal = POOL as f64 * 1000.0 / JOB_MS as f64;
    let t = paced::run(&pool_plan(server.addr, 2.0 * nominal, Duration::from_secs(4), Duration::from_secs(1)))?;
    let capacity = t.ok() as f64 / 3.0;
    if capacity <= 0.0 {
        return Err("the capacity run answered nothing".to_owned());
    }
    Ok(capacity)
}

pub fn run(ctx: &Ctx, target: Target) -> Result<Outcome, String> {
    if target != Target::Forkring {
        return Err("forkring only".to_owned());
    }
    let capacity = capacity(ctx)?;
    let on = levels(ctx, &["--admission", "on"], capacity)?;
    let off = levels(ctx, &["--admission", "off"], capacity)?;
    let base_p99 = on[0].pool.latency.quantile(0.99).unwrap_or(Duration::ZERO);
    let mut pass = true;
    for l in &on {
        let p99 = l.pool.latency.quantile(0.99).unwrap_or(Duration::MAX);
        let fast_p99 = l.fast.latency.quantile(0.99).unwrap_or(Duration::MAX);
        pass &= l.pool.errors() + l.fast.errors() == 0 && fast_p99 < Duration::from_millis(2);
        if l.load >= 2.0 {
            pass &= l.goodput() >= 0.9 * capacity && p99 <= base_p99 * 3;
        }
    }
    let lines = |v: &[Level]| v.iter().map(Level::line).collect::<Vec<_>>().join("\n      ");
    let node = match node_levels(capacity) {
        None => "node not installed: no Node line".to_owned(),
        Some(Ok(v)) => lines(&v),
        Some(Err(e)) => format!("could not run: {e}"),
    };
    Ok(Outcome {
        figures: format!(
            "capacity {capacity:.0}/s ({POOL} threads x {JOB_MS} ms jobs, queue {QUEUE}); fast route {FAST_RATE}/s beside it\n    \
             admission on:\n      {}\n    admission off (anchor):\n      {}\n    \
             Node http, {POOL} slots of setTimeout({JOB_MS}) and a waiting queue (anchor):\n      {node}",
            lines(&on),
            lines(&off)
        ),
        pass,
    })
}
