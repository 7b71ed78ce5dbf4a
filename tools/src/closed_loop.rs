//! The harness's own closed-loop load client: a bounded number of threads,
//! each one client with one connection at a time, sending `GET /` and
//! checking every answer (status 200, body `Hello, World!`); each client
//! sends its next request when the last is answered. (The open-loop client,
//! which sends on a schedule whatever the answers do, is `paced`.)
//!
//! Two modes: keep-alive (one connection reused until the server says
//! `Connection: close` or something fails) and connection-per-request
//! (`Connection: close`, a new connection for every request). Every failed
//! request is counted by kind (connect error, reset, EOF before a full
//! response, timeout, wrong status, malformed) and remembered with the
//! client's local port, so a scenario can tie each failure to the server
//! process that held that connection. Every wait is bounded by socket
//! timeouts, and every loop by the stop flag plus a hard deadline.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use forkring_testkit::http::{self, Fail};

use crate::histogram::Histogram;
use crate::probe::RESPONSE_LIMIT;
use crate::HELLO;

const REQ_KEEPALIVE: &[u8] = b"GET / HTTP/1.1\r\nHost: stress\r\n\r\n";
const REQ_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: stress\r\nConnection: close\r\n\r\n";

/// Failures remembered one by one, per thread (counts are kept beyond).
const FAILURES_KEPT: usize = 20_000;

/// One failed request.
#[derive(Clone, Debug)]
pub struct Failure {
    /// When it was seen.
    pub at: Instant,
    /// How it failed.
    pub fail: Fail,
    /// The client's local port (the server sees it as the peer port);
    /// none for a failed connect.
    pub port: Option<u16>,
    /// The connection had carried an answered request before.
    pub reused: bool,
    /// The connection was established before the load's mark (see
    /// [`Load::mark`]).
    pub before_mark: bool,
    /// Bytes of the response that did arrive.
    pub got: usize,
    /// On a reused connection: how long it had been idle (since its last
    /// answer) when this request was sent. A server that closes idle
    /// connections races with a client sending on one.
    pub idle: Option<Duration>,
}

/// What a load run counted.
#[derive(Clone)]
pub struct Stats {
    /// Requests answered correctly.
    pub ok: u64,
    /// Of those, answered after the mark.
    pub ok_after_mark: u64,
    /// Failed requests by kind, in [`Fail::ALL`] order.
    pub failed: [u64; 6],
    /// The first failures, one by one.
    pub failures: Vec<Failure>,
    /// Latency of the correct answers, in microseconds.
    pub latency: Histogram,
    /// Connections opened.
    pub connections: u64,
    /// Responses that said `Connection: close` on a keep-alive connection.
    pub closed_by_server: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            ok: 0,
            ok_after_mark: 0,
            failed: [0; 6],
            failures: Vec::new(),
            latency: Histogram::micros(),
            connections: 0,
            closed_by_server: 0,
        }
    }
}

impl Stats {
    /// Failed requests of every kind.
    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }

    /// Adds `o`'s counts (another thread's, or another phase's).
    pub fn merge(&mut self, o: Stats) {
        self.ok += o.ok;
        self.ok_after_mark += o.ok_after_mark;
        for (a, b) in self.failed.iter_mut().zip(o.failed) {
            *a += b;
        }
        let room = (FAILURES_KEPT * 4).saturating_sub(self.failures.len());
        self.failures.extend(o.failures.into_iter().take(room));
        self.latency.merge(&o.latency);
        self.connections += o.connections;
        self.closed_by_server += o.closed_by_server;
    }

    /// `failed N (connect a, reset b, eof c, ...)`, kinds with zero left out.
    pub fn failed_summary(&self) -> String {
        let parts: Vec<String> = Fail::ALL
            .iter()
            .zip(self.failed)
            .filter(|&(_, n)| n > 0)
            .map(|(f, n)| format!("{} {n}", f.name()))
            .collect();
        if parts.is_empty() {
            return format!("failed {}", self.failed_total());
        }
        let reused = self.failures.iter().filter(|f| f.reused).count();
        let partial = self.failures.iter().filter(|f| f.got > 0).count();
        let idle = match self.failures.iter().filter_map(|f| f.idle).max() {
            Some(d) => format!(" idle up to {:.1} ms before", d.as_secs_f64() * 1e3),
            None => String::new(),
        };
        format!(
            "failed {} ({}; {reused} on reused keep-alive conns{idle}, {partial} after part of a response)",
            self.failed_total(),
            parts.join(", ")
        )
    }
}

/// What load to run.
#[derive(Clone, Copy, Debug)]
pub struct LoadConfig {
    /// Clients on keep-alive connections.
    pub keepalive: usize,
    /// Clients opening one connection per request.
    pub close: usize,
    /// Longest wait for a connect or a full response.
    pub timeout: Duration,
    /// Hard limit on the run, whatever the stop flag says.
    pub max_run: Duration,
}

impl LoadConfig {
    /// `keepalive` + `close` clients, 5 s request timeout, at most `max_run`.
    pub fn new(keepalive: usize, close: usize, max_run: Duration) -> Self {
        LoadConfig { keepalive, close, timeout: Duration::from_secs(5), max_run }
    }
}

/// What the client threads are told, all at once.
struct Flags {
    stop: AtomicBool,
    no_new_connections: AtomicBool,
    /// Nanoseconds after `epoch` of the mark; 0 while unset.
    mark_ns: AtomicU64,
    epoch: Instant,
}

/// A running load.
pub struct Load {
    flags: Arc<Flags>,
    threads: Vec<JoinHandle<Stats>>,
}

impl Load {
    /// Starts the clients against `addr`.
    pub fn start(addr: SocketAddr, cfg: LoadConfig) -> Load {
        let flags = Arc::new(Flags {
            stop: AtomicBool::new(false),
            no_new_connections: AtomicBool::new(false),
            mark_ns: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let mut threads = Vec::new();
        for i in 0..cfg.keepalive + cfg.close {
            let keepalive = i < cfg.keepalive;
            let flags = Arc::clone(&flags);
            let t = std::thread::Builder::new()
                .name(format!("load-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || client(addr, keepalive, cfg, &flags))
                .expect("spawn a load thread");
            threads.push(t);
        }
        Load { flags, threads }
    }

    /// Marks now: failures record whether their connection was established
    /// before it, and answers after it are counted apart.
    pub fn mark(&self) {
        let ns = self.flags.epoch.elapsed().as_nanos().max(1) as u64;
        self.flags.mark_ns.store(ns, Ordering::SeqCst);
    }

    /// Clients finish with the connection they have and open no other.
    pub fn stop_new_connections(&self) {
        self.flags.no_new_connections.store(true, Ordering::SeqCst);
    }

    /// Whether every client has ended by itself.
    pub fn all_done(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Stops the clients and adds up what they counted.
    pub fn finish(self) -> Stats {
        self.flags.stop.store(true, Ordering::SeqCst);
        let mut total = Stats::default();
        for t in self.threads {
            match t.join() {
                Ok(s) => total.merge(s),
                Err(_) => panic!("a load thread panicked"),
            }
        }
        total
    }
}

/// One connection and what is known about it.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    port: Option<u16>,
    answered: u64,
    before_mark: bool,
    /// When its last answer arrived.
    last_answer: Option<Instant>,
}

fn client(addr: SocketAddr, keepalive: bool, cfg: LoadConfig, sh: &Flags) -> Stats {
    let mut st = Stats::default();
    let hard_stop = Instant::now() + cfg.max_run;
    let mut conn: Option<Conn> = None;
    let marked = |sh: &Flags| sh.mark_ns.load(Ordering::SeqCst);
    while !sh.stop.load(Ordering::Relaxed) && Instant::now() < hard_stop {
        if conn.is_none() {
            if sh.no_new_connections.load(Ordering::SeqCst) {
                break;
            }
            // Strict: a connection counts as established before the mark
            // if connect() started before it.
            let before_mark = marked(sh) == 0;
            match TcpStream::connect_timeout(&addr, cfg.timeout) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(cfg.timeout));
                    let _ = s.set_write_timeout(Some(cfg.timeout));
                    st.connections += 1;
                    let port = s.local_addr().ok().map(|a| a.port());
                    conn = Some(Conn { stream: s, buf: Vec::new(), port, answered: 0, before_mark, last_answer: None });
                }
                Err(_) => {
                    // Never established: not before the mark in any sense.
                    fail(&mut st, Fail::Connect, None, None, false, 0);
                    // A refused connect returns at once; do not spin.
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("a connection");
        let started = Instant::now();
        let idle = c.last_answer.map(|t| started.duration_since(t));
        let req = if keepalive { REQ_KEEPALIVE } else { REQ_CLOSE };
        if let Err(e) = c.stream.write_all(req) {
            fail(&mut st, http::classify(&e), c.port, idle, c.before_mark, 0);
            conn = None;
            continue;
        }
        match http::read_response(&mut c.stream, &mut c.buf, false, RESPONSE_LIMIT) {
            Ok(r) if r.status == 200 && r.body == HELLO => {
                st.ok += 1;
                if marked(sh) != 0 {
                    st.ok_after_mark += 1;
                }
                st.latency.record(started.elapsed());
                c.answered += 1;
                c.last_answer = Some(Instant::now());
                if !keepalive {
                    conn = None;
                } else if r.says_close() {
                    st.closed_by_server += 1;
                    conn = None;
                }
            }
            Ok(_) => {
                fail(&mut st, Fail::Status, c.port, idle, c.before_mark, 1);
                conn = None;
            }
            Err(e) => {
                fail(&mut st, e.fail, c.port, idle, c.before_mark, e.got);
                conn = None;
            }
        }
    }
    st
}

fn fail(st: &mut Stats, f: Fail, port: Option<u16>, idle: Option<Duration>, before_mark: bool, got: usize) {
    let reused = idle.is_some();
    st.failed[Fail::ALL.iter().position(|&k| k == f).expect("a known kind")] += 1;
    if st.failures.len() < FAILURES_KEPT {
        st.failures.push(Failure { at: Instant::now(), fail: f, port, reused, before_mark, got, idle });
    }
}
