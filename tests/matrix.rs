//! Every kind of answer meets every fate of its connection, on real
//! processes and sockets, on both backends.
//!
//! The answer kinds: a whole response (`GET /`), a whole request body
//! answered whole (`POST /echo`), a deferred answer from the blocking pool
//! (`/sleep`) and from a worker timer (`/delay`), a streamed answer
//! (`/stream`), a deferred then streamed one (`/stream?after=`), a file
//! (`/files/`, 8 MiB: more than the socket buffers hold) and a streamed
//! request body (`POST /upload`). Upgrades are not here: the fixture has no
//! upgrade route, and `tests/upgrade_cap.rs` runs an upgraded connection
//! through its cap and its gauge from an embedded server.
//!
//! The fates: the client leaves before the answer, or in the middle of a
//! body (its request's or the response's); it stops reading an answer
//! larger than the socket buffers; the header, idle, deferred and
//! body-rate timeouts; a drain (SIGTERM) while the answer is in flight; and
//! the worker's caps (connections, deferred answers, the pool's queue, the
//! body budget).
//!
//! [`MATRIX`] has a row for each kind × fate: a cell, or why the pair makes
//! no sense. Each cell checks two things: what the client sees is what
//! HTTP says (status, a whole or a cut body, `Connection: close` where it
//! is due, the close), and afterwards every resource of the worker is back
//! where it started ([`Ctx::settle`]): the gauges of `/metrics` (pool
//! queued and busy, deferred answers in flight, body budget, upgraded and
//! open connections) at zero, the worker's descriptors back to their
//! count, and its resident memory within a bound. A drain's cell checks
//! instead that the worker drained (no drain timeout) and the server
//! exited 0.
//!
//! Each fate is a test of its own, on a server whose flags suit it (short
//! timeouts for the timeout fates, small caps for the caps); its cells run
//! one after the other, each alone on the worker it reads. A cell that
//! fails is named, and the next one gets a new server.

mod common;

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring::internals::DRAIN_IDLE_GRACE_MS;
use forkring_testkit::bytes::{first_difference, pattern};
use forkring_testkit::client::Client;
use forkring_testkit::http::{self as kit, show, CloseOutcome, Framing, Response};
use forkring_testkit::proc;
use forkring_testkit::server::{FIXTURE, HELLO};
use forkring_testkit::target;

/// The header timeout of the header-timeout fate, in milliseconds.
const HEADER_MS: u64 = 300;
/// The idle timeout of the idle-timeout and stop-reading fates.
const IDLE_MS: u64 = 300;
/// The deferred timeout of the deferred-timeout fate.
const DEFERRED_MS: u64 = 300;
/// Every other timeout: far beyond any cell, so only the fate's own fires.
const LONG_MS: u64 = 30_000;
/// The body-rate fate's minimum rate, in bytes a second, and its grace.
const RATE: u64 = 1_000_000;
/// The grace of the body-rate fate, in milliseconds.
const GRACE_MS: u64 = 150;
/// How long a cell keeps an answer in flight where it needs one to be.
const IN_FLIGHT_MS: u64 = 400;
/// Longest a deadline may be overshot (the sweep, a loaded machine).
const LATE: Duration = Duration::from_millis(2500);
/// Longest the resources may take to come back after a cell (a pool job
/// whose client left still runs its course).
const SETTLE: Duration = Duration::from_secs(10);
/// How far the worker's resident memory may grow over its baseline: less
/// than the smallest large body a cell sends or asks for (4 MiB), so that
/// one held on to is seen.
const RSS_SLACK_KIB: u64 = 4 * 1024;
/// The file the cells download: more than the socket buffers take.
const FILE_LEN: usize = 8 << 20;
/// A streamed request body: more than one read on either backend (io_uring
/// reads 8 KiB pieces, epoll 64 KiB), so a reader that pauses after the
/// first piece has more to wait for.
const UPLOAD_LEN: usize = 72 << 10;
/// The body of `/echo` where a cell needs one.
const ECHO_LEN: usize = 256 << 10;
/// The largest body a cell echoes: more than the socket buffers take (the
/// server's send buffer grows to 4 MiB).
const ECHO_BIG: usize = 6 << 20;
/// A client's receive buffer when it stops reading.
const SMALL_RCVBUF: i32 = 16 * 1024;
/// The caps fate's connection cap.
const CAP: usize = 4;
/// The caps fate's deferred cap.
const MAX_DEFERRED: usize = 3;
/// The caps fate's body budget.
const BODY_BUDGET: usize = 100_000;

/// What a server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `GET /`: a whole response, framed at once.
    Whole,
    /// `POST /echo`: a whole request body (charged to the body budget),
    /// answered whole.
    Echo,
    /// `GET /sleep?ms=`: deferred, answered from the blocking pool.
    Sleep,
    /// `GET /delay?ms=`: deferred, answered from a worker timer.
    Delay,
    /// `GET /stream?n=&ms=`: a streamed response.
    Stream,
    /// `GET /stream?...&after=`: deferred, then streamed.
    LateStream,
    /// `GET /files/big.bin`: a file larger than the socket buffers.
    File,
    /// `POST /upload`: a streamed request body.
    Upload,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Whole => "whole `GET /`",
            Kind::Echo => "whole body `POST /echo`",
            Kind::Sleep => "deferred `GET /sleep`",
            Kind::Delay => "deferred timer `GET /delay`",
            Kind::Stream => "streamed `GET /stream`",
            Kind::LateStream => "deferred then streamed `GET /stream?after=`",
            Kind::File => "file `GET /files/big.bin`",
            Kind::Upload => "streamed request body `POST /upload`",
        })
    }
}

/// What happens to a connection while its answer is under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// The client leaves before the answer (a close, then a reset).
    LeavesBefore,
    /// The client leaves in the middle of a body, its request's or the
    /// response's.
    LeavesMid,
    /// The client stops reading an answer larger than the socket buffers.
    StopsReading,
    /// A head does not come within the header timeout.
    HeaderTimeout,
    /// The idle timeout.
    IdleTimeout,
    /// A deferred answer does not come within the deferred timeout: `504`.
    DeferredTimeout,
    /// A request body comes slower than the minimum rate: `408`.
    BodyRate,
    /// The server drains (SIGTERM) while the answer is in flight.
    Drain,
    /// The worker's caps are reached.
    Caps,
}

impl fmt::Display for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fate::LeavesBefore => "the client leaves before the answer",
            Fate::LeavesMid => "the client leaves mid-body",
            Fate::StopsReading => "the client stops reading",
            Fate::HeaderTimeout => "header timeout",
            Fate::IdleTimeout => "idle timeout",
            Fate::DeferredTimeout => "deferred timeout",
            Fate::BodyRate => "body-rate timeout",
            Fate::Drain => "a drain",
            Fate::Caps => "the worker's caps",
        })
    }
}

impl Fate {
    /// The server's flags for this fate's cells: its own timeout short or
    /// its caps small, everything else out of the way.
    fn flags(self) -> Vec<String> {
        let (header, idle, deferred) = match self {
            Fate::HeaderTimeout => (HEADER_MS, LONG_MS, LONG_MS),
            Fate::IdleTimeout | Fate::StopsReading => (LONG_MS, IDLE_MS, LONG_MS),
            Fate::DeferredTimeout => (LONG_MS, LONG_MS, DEFERRED_MS),
            _ => (LONG_MS, LONG_MS, LONG_MS),
        };
        let mut f = vec![
            format!("--header-timeout={header}"),
            format!("--idle-timeout={idle}"),
            format!("--deferred-timeout={deferred}"),
        ];
        match self {
            Fate::BodyRate => f.extend([format!("--min-body-rate={RATE}"), format!("--body-grace={GRACE_MS}")]),
            _ => f.push("--min-body-rate=0".into()),
        }
        match self {
            Fate::Caps => f.extend([
                format!("--max-connections={CAP}"),
                format!("--max-deferred={MAX_DEFERRED}"),
                "--pool=1".into(),
                format!("--max-buffered-bodies={BODY_BUDGET}"),
            ]),
            _ => f.push("--pool=2".into()),
        }
        if self == Fate::Drain {
            f.push("--drain-timeout=5000".into());
        }
        f
    }
}

/// A cell of the matrix: what to run, or why the pair makes no sense.
enum Plan {
    /// The cell.
    Run(fn(&mut Ctx, Kind)),
    /// No cell, for this reason.
    Skip(&'static str),
}

use Kind::*;
use Plan::{Run, Skip};

/// Every answer kind × every fate.
#[rustfmt::skip]
const MATRIX: &[(Kind, Fate, Plan)] = &[
    (Whole,      Fate::LeavesBefore, Run(leaves_before)),
    (Echo,       Fate::LeavesBefore, Run(leaves_before)),
    (Sleep,      Fate::LeavesBefore, Run(leaves_before)),
    (Delay,      Fate::LeavesBefore, Run(leaves_before)),
    (Stream,     Fate::LeavesBefore, Run(leaves_before)),
    (LateStream, Fate::LeavesBefore, Run(leaves_before)),
    (File,       Fate::LeavesBefore, Run(leaves_before)),
    (Upload,     Fate::LeavesBefore, Run(leaves_before)),

    (Whole,      Fate::LeavesMid, Skip("a 13-byte body has no middle; `/echo` leaves a large whole answer mid-body")),
    (Echo,       Fate::LeavesMid, Run(leaves_mid)),
    (Sleep,      Fate::LeavesMid, Skip("a few bytes, sent in one piece: no middle")),
    (Delay,      Fate::LeavesMid, Skip("a few bytes, sent in one piece: no middle")),
    (Stream,     Fate::LeavesMid, Run(leaves_mid)),
    (LateStream, Fate::LeavesMid, Run(leaves_mid)),
    (File,       Fate::LeavesMid, Run(leaves_mid)),
    (Upload,     Fate::LeavesMid, Run(leaves_mid)),

    (Whole,      Fate::StopsReading, Run(stops_reading)),
    (Echo,       Fate::StopsReading, Run(stops_reading)),
    (Sleep,      Fate::StopsReading, Skip("a few bytes: any socket buffer takes them; unread answers piling up are the whole answer's cell")),
    (Delay,      Fate::StopsReading, Skip("a few bytes: any socket buffer takes them; unread answers piling up are the whole answer's cell")),
    (Stream,     Fate::StopsReading, Run(stops_reading)),
    (LateStream, Fate::StopsReading, Run(stops_reading)),
    (File,       Fate::StopsReading, Run(stops_reading)),
    (Upload,     Fate::StopsReading, Skip("its answer is a few bytes; a body nobody reads is its reader's pause, the server's choice")),

    (Whole,      Fate::HeaderTimeout, Run(header_timeout)),
    (Echo,       Fate::HeaderTimeout, Run(header_timeout)),
    (Sleep,      Fate::HeaderTimeout, Run(header_timeout)),
    (Delay,      Fate::HeaderTimeout, Run(header_timeout)),
    (Stream,     Fate::HeaderTimeout, Run(header_timeout)),
    (LateStream, Fate::HeaderTimeout, Run(header_timeout)),
    (File,       Fate::HeaderTimeout, Run(header_timeout)),
    (Upload,     Fate::HeaderTimeout, Run(header_timeout)),

    (Whole,      Fate::IdleTimeout, Run(idle_timeout)),
    (Echo,       Fate::IdleTimeout, Run(idle_timeout)),
    (Sleep,      Fate::IdleTimeout, Run(idle_timeout)),
    (Delay,      Fate::IdleTimeout, Run(idle_timeout)),
    (Stream,     Fate::IdleTimeout, Run(idle_timeout)),
    (LateStream, Fate::IdleTimeout, Run(idle_timeout)),
    (File,       Fate::IdleTimeout, Run(idle_timeout)),
    (Upload,     Fate::IdleTimeout, Run(idle_timeout)),

    (Whole,      Fate::DeferredTimeout, Skip("answered at once: nothing deferred to time out")),
    (Echo,       Fate::DeferredTimeout, Skip("answered at once: nothing deferred to time out")),
    (Sleep,      Fate::DeferredTimeout, Run(deferred_timeout)),
    (Delay,      Fate::DeferredTimeout, Run(deferred_timeout)),
    (Stream,     Fate::DeferredTimeout, Skip("answered at once: nothing deferred to time out")),
    (LateStream, Fate::DeferredTimeout, Run(deferred_timeout)),
    (File,       Fate::DeferredTimeout, Skip("answered at once: nothing deferred to time out")),
    (Upload,     Fate::DeferredTimeout, Skip("answered at its body's end: nothing deferred to time out")),

    (Whole,      Fate::BodyRate, Skip("no request body")),
    (Echo,       Fate::BodyRate, Run(body_rate)),
    (Sleep,      Fate::BodyRate, Skip("no request body")),
    (Delay,      Fate::BodyRate, Skip("no request body")),
    (Stream,     Fate::BodyRate, Skip("no request body")),
    (LateStream, Fate::BodyRate, Skip("no request body")),
    (File,       Fate::BodyRate, Skip("no request body")),
    (Upload,     Fate::BodyRate, Run(body_rate)),

    (Whole,      Fate::Drain, Run(drain)),
    (Echo,       Fate::Drain, Run(drain)),
    (Sleep,      Fate::Drain, Run(drain)),
    (Delay,      Fate::Drain, Run(drain)),
    (Stream,     Fate::Drain, Run(drain)),
    (LateStream, Fate::Drain, Run(drain)),
    (File,       Fate::Drain, Run(drain)),
    (Upload,     Fate::Drain, Run(drain)),

    (Whole,      Fate::Caps, Run(caps)),
    (Echo,       Fate::Caps, Run(caps)),
    (Sleep,      Fate::Caps, Run(caps)),
    (Delay,      Fate::Caps, Run(caps)),
    (Stream,     Fate::Caps, Run(caps)),
    (LateStream, Fate::Caps, Run(caps)),
    (File,       Fate::Caps, Run(caps)),
    (Upload,     Fate::Caps, Run(caps)),
];

#[test]
fn the_client_leaves_before_the_answer() {
    run(Fate::LeavesBefore);
}

#[test]
fn the_client_leaves_mid_body() {
    run(Fate::LeavesMid);
}

#[test]
fn the_client_stops_reading() {
    run(Fate::StopsReading);
}

#[test]
fn the_header_timeout() {
    run(Fate::HeaderTimeout);
}

#[test]
fn the_idle_timeout() {
    run(Fate::IdleTimeout);
}

#[test]
fn the_deferred_timeout() {
    run(Fate::DeferredTimeout);
}

#[test]
fn the_body_rate_timeout() {
    run(Fate::BodyRate);
}

#[test]
fn a_drain() {
    run(Fate::Drain);
}

#[test]
fn the_workers_caps() {
    run(Fate::Caps);
}

#[test]
fn every_kind_meets_every_fate_in_the_table() {
    let kinds = [Whole, Echo, Sleep, Delay, Stream, LateStream, File, Upload];
    let fates = [
        Fate::LeavesBefore,
        Fate::LeavesMid,
        Fate::StopsReading,
        Fate::HeaderTimeout,
        Fate::IdleTimeout,
        Fate::DeferredTimeout,
        Fate::BodyRate,
        Fate::Drain,
        Fate::Caps,
    ];
    for k in kinds {
        for f in fates {
            let rows = MATRIX.iter().filter(|r| r.0 == k && r.1 == f).count();
            assert_eq!(rows, 1, "{k} × {f}: {rows} rows in the matrix");
        }
    }
    assert_eq!(MATRIX.len(), kinds.len() * fates.len());
}

/// Runs every cell of `fate`, one after the other, each on a worker that
/// is back at its baseline; fails naming every cell that failed.
fn run(fate: Fate) {
    let t0 = Instant::now();
    let mut ctx = Ctx::new(fate);
    let mut failed = Vec::new();
    let (mut ran, mut skipped) = (0, 0);
    for (kind, _, plan) in MATRIX.iter().filter(|r| r.1 == fate) {
        let name = format!("{kind} × {fate}");
        let cell = match plan {
            Run(cell) => cell,
            Skip(why) => {
                eprintln!("cell {name}: skipped ({why})");
                skipped += 1;
                continue;
            }
        };
        ran += 1;
        eprintln!("cell {name}: running");
        let t = Instant::now();
        match panic::catch_unwind(AssertUnwindSafe(|| cell(&mut ctx, *kind))) {
            Ok(()) => eprintln!("cell {name}: ok in {:?}", t.elapsed()),
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failed.push(format!("cell {name}: {why}\n{}", ctx.server.log_text()));
                ctx.restart();
            }
        }
    }
    eprintln!(
        "{fate}: {ran} cells in {:?}, {skipped} skipped; the worker's RSS at most {} KiB over its baseline",
        t0.elapsed(),
        ctx.rss_over.get()
    );
    assert!(failed.is_empty(), "{} of {ran} cells failed:\n\n{}", failed.len(), failed.join("\n\n"));
}

/// The worker's gauges, from `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Gauges {
    /// `forkring_open_connections`.
    open: u64,
    /// `forkring_upgraded_connections`.
    upgraded: u64,
    /// `forkring_body_bytes`.
    body_bytes: u64,
    /// `forkring_pool_queued`.
    pool_queued: u64,
    /// `forkring_pool_busy`.
    pool_busy: u64,
    /// `forkring_deferred_in_flight`.
    deferred: u64,
}

/// What a worker holds when it serves nothing: its descriptors and its
/// resident memory.
#[derive(Clone, Copy, Debug)]
struct Base {
    /// Open descriptors.
    fds: usize,
    /// Resident memory, KiB.
    rss_kib: u64,
}

/// A temporary directory served at `/files/`, with the file the cells
/// download.
struct Files {
    /// The directory.
    root: PathBuf,
    /// `big.bin`'s bytes.
    big: Vec<u8>,
}

impl Files {
    fn new(fate: Fate) -> Files {
        let root = std::env::temp_dir().join(format!("forkring-matrix-{}-{fate:?}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let big = pattern(FILE_LEN, 7);
        fs::write(root.join("big.bin"), &big).unwrap();
        Files { root, big }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// One fate's server, its worker and the worker's baseline.
struct Ctx {
    /// The fate whose flags the server runs with.
    fate: Fate,
    /// The static directory.
    files: Files,
    /// The server.
    server: Server,
    /// Its metrics listener.
    metrics: SocketAddr,
    /// Its one worker's pid.
    worker: i32,
    /// The worker at rest.
    base: Base,
    /// The most the worker's resident memory was over its baseline after a
    /// cell, KiB (for the report).
    rss_over: std::cell::Cell<u64>,
}

impl Ctx {
    fn new(fate: Fate) -> Ctx {
        let files = Files::new(fate);
        let (server, metrics, worker) = start(fate, &files);
        let mut ctx = Ctx {
            fate,
            files,
            server,
            metrics,
            worker,
            base: Base { fds: 0, rss_kib: 0 },
            rss_over: std::cell::Cell::new(0),
        };
        ctx.warm_up();
        ctx
    }

    /// A new server in place of the old one (after a drain, or a failed
    /// cell).
    fn restart(&mut self) {
        let (server, metrics, worker) = start(self.fate, &self.files);
        self.server = server;
        self.metrics = metrics;
        self.worker = worker;
        self.warm_up();
    }

    /// A whole answer of every kind, so that what a worker allocates once
    /// (buffers, the pool's threads) is in the baseline; then the
    /// baseline. A drain's cells read none: the worker's exit gives
    /// everything back.
    fn warm_up(&mut self) {
        if self.fate == Fate::Drain {
            return;
        }
        let kinds = [Whole, Echo, Sleep, Delay, Stream, LateStream, File, Upload];
        for kind in kinds {
            let (req, expect) = match kind {
                // The largest body a cell echoes (the caps fate's budget
                // takes a small one only).
                Echo if self.fate != Fate::Caps => {
                    let body = self.files.big[..ECHO_BIG].to_vec();
                    (post("/echo", &body), Expect::Same(body))
                }
                Echo => (post("/echo", &pattern(32 << 10, 1)), Expect::Same(pattern(32 << 10, 1))),
                _ => request(kind, 1),
            };
            let mut c = self.connect();
            c.send(&req);
            let r = c
                .try_response_any(false, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("warm-up, {kind}: {e}\n{}", self.server.log_text()));
            expect.check(&r, self, &format!("warm-up, {kind}"));
        }
        self.wait("the warm-up's connection closes", |g| g == &Gauges::default());
        // A socket the loop is closing may still be counted: the lower of
        // two readings a request apart.
        let first = fds(self.worker).len();
        let mut c = self.connect();
        assert_eq!(c.get("/").status, 200);
        drop(c);
        self.wait("the second connection closes", |g| g == &Gauges::default());
        self.base =
            Base { fds: first.min(fds(self.worker).len()), rss_kib: proc::vm_rss_kib(self.worker).unwrap_or(0) };
    }

    /// A new client connection.
    fn connect(&self) -> Client {
        self.server.connect()
    }

    /// The worker's gauges now.
    fn gauges(&self) -> Gauges {
        let text = scrape(self.metrics);
        let g = |name: &str| {
            let prefix = format!("{name}{{slot=\"0\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} for slot 0 in\n{text}"))
        };
        Gauges {
            open: g("forkring_open_connections"),
            upgraded: g("forkring_upgraded_connections"),
            body_bytes: g("forkring_body_bytes"),
            pool_queued: g("forkring_pool_queued"),
            pool_busy: g("forkring_pool_busy"),
            deferred: g("forkring_deferred_in_flight"),
        }
    }

    /// Waits (at most [`SETTLE`]) until the gauges satisfy `cond`; returns
    /// them.
    fn wait(&self, what: &str, cond: impl Fn(&Gauges) -> bool) -> Gauges {
        let t0 = Instant::now();
        loop {
            let g = self.gauges();
            if cond(&g) {
                return g;
            }
            assert!(t0.elapsed() < SETTLE, "{what}: not within {SETTLE:?} ({g:?})");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Asserts that every resource of the worker is back where it started
    /// (waiting for it, at most [`SETTLE`]): the same worker still runs,
    /// the gauges are at zero, its descriptors back to their count, its
    /// resident memory within [`RSS_SLACK_KIB`] of the baseline.
    fn settle(&self, what: &str) {
        let t0 = Instant::now();
        loop {
            assert!(proc::alive(self.worker), "{what}: the worker {} is gone", self.worker);
            let g = self.gauges();
            let open = fds(self.worker);
            if g == Gauges::default() && open.len() <= self.base.fds {
                break;
            }
            assert!(
                t0.elapsed() < SETTLE,
                "{what}: resources not back after {SETTLE:?}: {g:?}, {} descriptors (baseline {}):\n{}",
                open.len(),
                self.base.fds,
                open.join("\n")
            );
            thread::sleep(Duration::from_millis(5));
        }
        let rss = proc::vm_rss_kib(self.worker).unwrap_or(0);
        self.rss_over.set(self.rss_over.get().max(rss.saturating_sub(self.base.rss_kib)));
        assert!(
            rss <= self.base.rss_kib + RSS_SLACK_KIB,
            "{what}: the worker's RSS is {rss} KiB, {} KiB over its baseline of {} KiB",
            rss - self.base.rss_kib,
            self.base.rss_kib
        );
        let log = self.server.log_text();
        assert!(!log.contains("panicked") && !log.contains(" died:"), "{what}: the server logged a panic or a death");
    }

    /// Sends SIGTERM and waits until the worker says it drains.
    fn drain(&self) {
        self.server.signal(libc::SIGTERM);
        self.server.wait_line(&[&format!("forkring[{}]", self.worker), "draining:"], Duration::from_secs(5));
    }

    /// After a drain's cell: the worker drained as soon as its answer was
    /// out (no drain timeout), the server exited 0; then a new server.
    fn drained(&mut self, what: &str) {
        let status = self.server.wait_exit(Duration::from_secs(4));
        assert!(
            status.is_some_and(|s| s.success()),
            "{what}: the server did not exit 0 within 4 s of the answer ({status:?})"
        );
        let me = format!("forkring[{}]", self.worker);
        let log = self.server.log_text();
        assert!(log.lines().any(|l| l.contains(&me) && l.ends_with("drained")), "{what}: the worker did not drain");
        assert!(!log.contains("drain timeout"), "{what}: the drain timed out");
        self.restart();
    }
}

/// Starts `fate`'s server on `files`; the server, its metrics address and
/// its worker's pid.
///
/// glibc's allocator runs with its mmap threshold fixed at 128 KiB (its
/// default before it adapts): a large body's memory then goes back to the
/// system when it is freed, so the worker's resident memory shows what the
/// worker holds. Left to adapt, the threshold follows the largest body
/// freed, and the allocator keeps up to twice that of freed memory.
fn start(fate: Fate, files: &Files) -> (Server, SocketAddr, i32) {
    let mut cmd = Command::new(target::binary(FIXTURE));
    cmd.args(["--listen=127.0.0.1:0", "--workers=1", "--metrics=127.0.0.1:0"])
        .arg(format!("--static={}", files.root.display()))
        .args(fate.flags())
        .env("MALLOC_MMAP_THRESHOLD_", "131072");
    let server = Server::spawn(cmd).unwrap_or_else(|e| panic!("{e}"));
    let line = server.wait_line(&["metrics on http://"], Duration::from_secs(10));
    let metrics = line.split("metrics on http://").nth(1).unwrap().trim_end_matches("/metrics").trim().parse().unwrap();
    let line = server.wait_line(&["ready 0.", "pid="], Duration::from_secs(10));
    let pid = line.split("pid=").nth(1).and_then(|p| p.split_whitespace().next()).unwrap();
    (server, metrics, pid.parse().unwrap())
}

/// The body of `GET /metrics`.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    io::Write::write_all(&mut s, b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    let text = String::from_utf8(all).unwrap();
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or(text)
}

/// The open descriptors of `pid`, each with what it is.
fn fds(pid: i32) -> Vec<String> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    dir.flatten()
        .map(|e| {
            let target = fs::read_link(e.path()).map(|t| t.display().to_string()).unwrap_or_default();
            format!("{} -> {target}", e.file_name().to_string_lossy())
        })
        .collect()
}

/// How a client leaves.
#[derive(Clone, Copy, Debug)]
enum Leave {
    /// `close()`: a FIN (a reset if it has unread bytes).
    Close,
    /// A reset (`SO_LINGER` 0).
    Reset,
}

/// Both ways of leaving.
const LEAVES: [Leave; 2] = [Leave::Close, Leave::Reset];

fn leave(c: Client, how: Leave) {
    match how {
        Leave::Close => drop(c),
        Leave::Reset => c.reset(),
    }
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: m\r\n\r\n").into_bytes()
}

fn post(target: &str, body: &[u8]) -> Vec<u8> {
    let mut wire = post_head(target, body.len(), false);
    wire.extend_from_slice(body);
    wire
}

fn post_head(target: &str, len: usize, expect: bool) -> Vec<u8> {
    let expect = if expect { "Expect: 100-continue\r\n" } else { "" };
    format!("POST {target} HTTP/1.1\r\nHost: m\r\nContent-Length: {len}\r\n{expect}\r\n").into_bytes()
}

/// What a whole answer must be.
enum Expect {
    /// `200 Hello, World!`.
    Hello,
    /// `200` with these bytes.
    Same(Vec<u8>),
    /// `200 waited N ms`.
    Waited(u64),
    /// `200`, chunked, with this many events.
    Events(u64),
    /// `200` with the file.
    File,
    /// `200` with the length and CRC-32 of these bytes.
    Upload(Vec<u8>),
}

impl Expect {
    fn check(&self, r: &Response, ctx: &Ctx, what: &str) {
        assert_eq!(r.status, 200, "{what}: {} {}", r.status, show(&r.body));
        match self {
            Expect::Hello => assert_eq!(r.body, HELLO, "{what}"),
            Expect::Same(b) => assert_eq!(first_difference(&r.body, b), None, "{what}: the echo differs"),
            Expect::Waited(ms) => assert_eq!(r.body, format!("waited {ms} ms\n").as_bytes(), "{what}"),
            Expect::Events(n) => {
                assert_eq!(r.framing, Framing::Chunked, "{what}");
                assert_eq!(events(&r.body), *n, "{what}: {}", show(&r.body));
            }
            Expect::File => assert_eq!(first_difference(&r.body, &ctx.files.big), None, "{what}: the file differs"),
            Expect::Upload(b) => {
                let want = format!("{{\"length\": {}, \"crc32\": \"{:08x}\"}}\n", b.len(), crc32(b));
                assert_eq!(r.body, want.as_bytes(), "{what}");
            }
        }
    }
}

/// Events in a server-sent events body.
fn events(body: &[u8]) -> u64 {
    body.split(|&b| b == b'\n').filter(|l| l.starts_with(b"data: ")).count() as u64
}

/// A request of `kind` whose answer takes about `slow` ms (as fast as it
/// can with 0), and what its whole answer must be.
fn request(kind: Kind, slow: u64) -> (Vec<u8>, Expect) {
    match kind {
        Whole => (get("/"), Expect::Hello),
        Echo => (post("/echo", &pattern(ECHO_LEN, 1)), Expect::Same(pattern(ECHO_LEN, 1))),
        Sleep => (get(&format!("/sleep?ms={slow}")), Expect::Waited(slow)),
        Delay => (get(&format!("/delay?ms={slow}")), Expect::Waited(slow)),
        // Two events `slow` apart.
        Stream => (get(&format!("/stream?n=2&ms={slow}")), Expect::Events(2)),
        LateStream => (get(&format!("/stream?n=2&ms=1&after={}", slow.max(1))), Expect::Events(2)),
        File => (get("/files/big.bin"), Expect::File),
        // The reader waits `slow` after the first piece.
        Upload => {
            let body = pattern(UPLOAD_LEN, 2);
            (post(&format!("/upload?pause={slow}&pauses=1"), &body), Expect::Upload(body))
        }
    }
}

/// CRC-32 (IEEE), a bit at a time.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Waits (at most 10 s) until the bytes the client has received, not yet
/// read, satisfy `enough`; reads none of them.
fn peek_until(c: &Client, what: &str, enough: impl Fn(&[u8]) -> bool) {
    let mut buf = vec![0u8; 256 << 10];
    let t0 = Instant::now();
    loop {
        match c.stream.peek(&mut buf) {
            Ok(0) => panic!("{what}: the connection closed"),
            Ok(n) if enough(&buf[..n]) => return,
            Ok(_) => {}
            Err(e) if kit::is_timeout(&e) => {}
            Err(e) => panic!("{what}: {e}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{what}: not within 10 s");
        thread::sleep(Duration::from_millis(2));
    }
}

/// Reads (at most 10 s) until `buf` holds at least `n` bytes.
fn read_at_least(c: &mut Client, buf: &mut Vec<u8>, n: usize, what: &str) {
    let mut chunk = vec![0u8; 64 << 10];
    let t0 = Instant::now();
    while buf.len() < n {
        match c.stream.read(&mut chunk) {
            Ok(0) => panic!("{what}: the connection closed after {} bytes", buf.len()),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) if kit::is_timeout(&e) => {}
            Err(e) => panic!("{what}: {e} after {} bytes", buf.len()),
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{what}: {} of {n} bytes within 10 s", buf.len());
    }
}

/// Asserts that the server closes `c` within `limit`, sending nothing
/// more, or (`or_408`) a `408` at most.
fn expect_closed(c: &mut Client, limit: Duration, or_408: bool, what: &str) {
    match c.wait_close(limit) {
        CloseOutcome::Closed { extra } => assert!(
            extra.is_empty() || (or_408 && extra.starts_with(b"HTTP/1.1 408 ")),
            "{what}: {} before the close",
            show(&extra)
        ),
        CloseOutcome::Open { extra } => panic!("{what}: still open after {limit:?} (received {})", show(&extra)),
    }
}

/// Asserts that nothing arrives on `c` within `limit`.
fn expect_nothing(c: &Client, limit: Duration, what: &str) {
    c.stream.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 1];
    match c.stream.peek(&mut b) {
        Err(e) if kit::is_timeout(&e) => {}
        other => panic!("{what}: {other:?}"),
    }
}

// The cells.

/// The client sends its request and leaves while the answer is under way,
/// with a close and then with a reset. It sees nothing; the worker gives
/// everything back (a pool job still runs its course, then the thread is
/// free).
fn leaves_before(ctx: &mut Ctx, kind: Kind) {
    for how in LEAVES {
        let mut c = ctx.connect();
        match kind {
            // Many answers written to a client that has gone.
            Whole => c.send(&get("/").repeat(64)),
            Sleep | Delay | LateStream => {
                c.send(&request(kind, IN_FLIGHT_MS).0);
                let busy = u64::from(kind == Sleep);
                ctx.wait("the answer is deferred", |g| g.deferred == 1 && g.pool_busy == busy);
            }
            Stream => c.send(&get("/stream?n=100000&ms=5")),
            // The reader pauses after the first piece: the answer is not
            // written before the client leaves.
            Upload => c.send(&request(Upload, IN_FLIGHT_MS).0),
            Echo | File => c.send(&request(kind, 0).0),
        }
        leave(c, how);
        ctx.settle(&format!("a client that left ({how:?})"));
    }
}

/// The client leaves in the middle of a body: of the response (a large
/// echo, a stream, a file) after the first bytes of it came whole, or of
/// its request's (an echo's body charged to the budget, an upload's).
fn leaves_mid(ctx: &mut Ctx, kind: Kind) {
    for how in LEAVES {
        let mut c = ctx.connect();
        match kind {
            Echo => {
                // Mid request body: the bytes held come back to the budget.
                c.send(&post_head("/echo", 1 << 20, false));
                c.send(&pattern(ECHO_LEN, 3));
                ctx.wait("the body is charged", |g| g.body_bytes > 0);
                leave(c, how);
                ctx.settle(&format!("left mid request body ({how:?})"));
                // Mid response body.
                let mut c = ctx.connect();
                c.set_recv_buffer(SMALL_RCVBUF);
                let body = pattern(4 << 20, 4);
                c.send(&post("/echo", &body));
                let mut got = Vec::new();
                read_at_least(&mut c, &mut got, 64 << 10, "the echo's first bytes");
                let head_end = kit::find(&got, b"\r\n\r\n").expect("a head") + 4;
                let head = kit::parse_head(&got[..head_end - 4]).unwrap();
                assert_eq!((head.status, head.header("Content-Length")), (200, Some("4194304")));
                assert_eq!(first_difference(&got[head_end..], &body[..got.len() - head_end]), None);
                leave(c, how);
            }
            Stream | LateStream => {
                let after = if kind == LateStream { "&after=50" } else { "" };
                c.send(&get(&format!("/stream?n=100000&ms=1&bytes=100{after}")));
                let mut got = Vec::new();
                let t0 = Instant::now();
                while kit::find(&got, b"data: 2 ").is_none() {
                    // Each read makes progress, but the stream goes on for
                    // minutes: the wait for its third event has its own bound.
                    assert!(t0.elapsed() < Duration::from_secs(10), "no third event within 10 s: {}", show(&got));
                    let n = got.len() + 1;
                    read_at_least(&mut c, &mut got, n, "the stream's first events");
                }
                let head = kit::parse_head(&got[..kit::find(&got, b"\r\n\r\n").unwrap()]).unwrap();
                assert_eq!((head.status, head.header("Transfer-Encoding")), (200, Some("chunked")));
                leave(c, how);
            }
            File => {
                c.send(&get("/files/big.bin"));
                let mut got = Vec::new();
                read_at_least(&mut c, &mut got, 1 << 20, "the file's first MiB");
                let head_end = kit::find(&got, b"\r\n\r\n").expect("a head") + 4;
                assert!(got.starts_with(b"HTTP/1.1 200 "), "{}", show(&got));
                assert_eq!(first_difference(&got[head_end..], &ctx.files.big[..got.len() - head_end]), None);
                leave(c, how);
            }
            Upload => {
                // The reader has taken the head, and pieces of the body.
                c.send(&post_head("/upload", 1 << 20, true));
                assert_eq!(c.response().status, 100);
                c.send(&pattern(256 << 10, 5));
                leave(c, how);
            }
            Whole | Sleep | Delay => unreachable!("skipped"),
        }
        ctx.settle(&format!("left mid-body ({how:?})"));
    }
}

/// The client stops reading an answer larger than what the socket buffers
/// hold: the server gives up once no byte has gone out for its idle
/// timeout, and closes. The client then finds a cut answer in its buffer
/// (whole responses then a partial one, or a head and part of a body),
/// then the end of the connection.
fn stops_reading(ctx: &mut Ctx, kind: Kind) {
    let mut c = ctx.connect();
    c.set_recv_buffer(SMALL_RCVBUF);
    let t0 = Instant::now();
    let mut writer = None;
    let pipelined = 100_000;
    match kind {
        Whole => {
            // The requests go out from a thread of their own: once the
            // server's output is full it stops reading them, and the send
            // blocks until the server closes.
            let mut w = c.stream.try_clone().unwrap();
            writer = Some(thread::spawn(move || {
                let _ = io::Write::write_all(&mut w, &get("/").repeat(pipelined));
            }));
        }
        Echo => c.send(&post("/echo", &ctx.files.big[..ECHO_BIG])),
        Stream => c.send(&get("/stream?n=1000000&ms=0&bytes=16384")),
        LateStream => c.send(&get("/stream?n=1000000&ms=0&bytes=16384&after=1")),
        File => c.send(&get("/files/big.bin")),
        Sleep | Delay | Upload => unreachable!("skipped"),
    }
    ctx.wait("the connection is taken in", |g| g.open == 1);
    ctx.wait("the server closes the connection nobody reads", |g| g.open == 0);
    let closed_after = t0.elapsed();
    assert!(closed_after >= Duration::from_millis(IDLE_MS * 8 / 10), "closed after {closed_after:?}");
    if let Some(w) = writer {
        w.join().unwrap();
    }
    // What is left in the client's buffers, then the close.
    let got = match c.wait_close(Duration::from_secs(10)) {
        CloseOutcome::Closed { extra } => extra,
        CloseOutcome::Open { extra } => panic!("the client's end is still open ({} bytes)", extra.len()),
    };
    let head_end = kit::find(&got, b"\r\n\r\n").expect("at least a head") + 4;
    let head = kit::parse_head(&got[..head_end - 4]).unwrap();
    assert_eq!(head.status, 200, "{}", show(&got));
    match kind {
        Whole => {
            let one = head_end + HELLO.len();
            let whole = got.len() / one;
            assert!(whole > 0 && whole < pipelined, "{whole} whole answers of {pipelined}");
            assert!(got[..whole * one].chunks(one).all(|r| r.ends_with(HELLO) && r.starts_with(b"HTTP/1.1 200 ")));
        }
        Echo | File => {
            let len: usize = head.header("Content-Length").unwrap().parse().unwrap();
            assert!(got.len() - head_end < len, "the whole body came ({len} bytes)");
        }
        _ => assert!(!got.ends_with(b"0\r\n\r\n"), "the stream ended"),
    }
    drop(c);
    ctx.settle("a client that stopped reading");
}

/// The answer comes whole, though it takes longer than the header timeout;
/// a head pipelined behind it, never finished, gets its own header timer
/// once the answer is out: the connection closes (silently, or with a
/// `408`).
fn header_timeout(ctx: &mut Ctx, kind: Kind) {
    let (mut wire, expect) = request(kind, 2 * HEADER_MS);
    wire.extend_from_slice(b"GET / HTTP/1.1\r\nHo");
    let mut c = ctx.connect();
    c.send(&wire);
    let r = c.response_any(false, Duration::from_secs(10));
    expect.check(&r, ctx, "the answer before the unfinished head");
    assert!(!r.says_close(), "{:?}", r.headers);
    expect_closed(&mut c, Duration::from_millis(HEADER_MS) + LATE, true, "the unfinished head");
    drop(c);
    ctx.settle("a header timeout");
}

/// An answer that takes longer than the idle timeout comes whole (the
/// connection waits on the answer, not on the client), however it is
/// made; then the idle connection closes after the idle timeout, silently.
/// A request body that stops coming is closed at the idle timeout
/// (silently, or with a `408`); so is one whose reader pauses it longer
/// than that (`BodyFlow::pause`: a pause in the body may last the idle
/// timeout at most).
fn idle_timeout(ctx: &mut Ctx, kind: Kind) {
    let idle = Duration::from_millis(IDLE_MS);
    let mut c = ctx.connect();
    match kind {
        Echo | Upload => {
            let path = if kind == Echo { "/echo" } else { "/upload" };
            c.send(&post_head(path, 100_000, false));
            c.send(&pattern(1000, 8));
            let t0 = Instant::now();
            expect_closed(&mut c, idle + LATE, true, "a body that stopped");
            assert!(t0.elapsed() >= idle.mul_f64(0.8), "closed after {:?}", t0.elapsed());
            drop(c);
            ctx.settle("a body that stopped");
            if kind == Upload {
                let (wire, _) = request(Upload, 2 * IDLE_MS);
                let mut c = ctx.connect();
                let t0 = Instant::now();
                c.send(&wire);
                expect_closed(&mut c, idle + LATE, false, "a body its reader paused past the idle timeout");
                assert!(t0.elapsed() >= idle.mul_f64(0.8), "closed after {:?}", t0.elapsed());
                drop(c);
                ctx.settle("a body its reader paused past the idle timeout");
            }
            return;
        }
        File => {
            // A reader slower than the idle timeout in all, but never idle
            // that long: a MiB at a time, a third of the timeout apart (the
            // client's pace, not a wait for the server).
            c.send(&get("/files/big.bin"));
            let mut got = Vec::new();
            let mut want = 1 << 20;
            let t0 = Instant::now();
            loop {
                read_at_least(&mut c, &mut got, want, "the file, slowly");
                // The whole answer is its head and the file: the target
                // stops there, never short of it (a target of the file's
                // length alone left the head's worth unread for ever).
                let whole = kit::find(&got, b"\r\n\r\n").map_or(usize::MAX, |end| end + 4 + FILE_LEN);
                if got.len() >= whole {
                    break;
                }
                assert!(t0.elapsed() < Duration::from_secs(60), "the file, slowly: {} bytes in 60 s", got.len());
                want = (want + (1 << 20)).min(whole);
                thread::sleep(idle / 3);
            }
            let mut buf = got;
            let r = kit::read_response(&mut c.stream, &mut buf, false, Duration::from_secs(10)).unwrap();
            Expect::File.check(&r, ctx, "the file read slowly");
        }
        _ => {
            let (wire, expect) = request(kind, IDLE_MS * 3 / 2);
            c.send(&wire);
            let r = c.response_any(false, Duration::from_secs(10));
            expect.check(&r, ctx, "an answer slower than the idle timeout");
        }
    }
    // The idle timeout runs from the server's last send, a little before
    // the client has read it (a file's last bytes, long before: they wait
    // in the socket buffers for the client's reads).
    let t0 = Instant::now();
    expect_closed(&mut c, idle + LATE, false, "the idle connection");
    if kind != File {
        assert!(t0.elapsed() >= idle / 2, "the idle connection closed after {:?}", t0.elapsed());
    }
    drop(c);
    ctx.settle("an idle timeout");
}

/// A deferred answer later than the deferred timeout: `504` with
/// `Connection: close`, at the timeout; a request pipelined behind it gets
/// nothing, and the connection closes. The work still under way (a pool
/// thread's) ends in its own time, and gives its thread back.
fn deferred_timeout(ctx: &mut Ctx, kind: Kind) {
    let (mut wire, _) = request(kind, 3 * DEFERRED_MS);
    wire.extend_from_slice(&get("/"));
    let mut c = ctx.connect();
    let t0 = Instant::now();
    c.send(&wire);
    let r = c.response_any(false, Duration::from_millis(DEFERRED_MS) + LATE);
    assert_eq!(r.status, 504, "{}", show(&r.body));
    assert!(r.says_close(), "{:?}", r.headers);
    assert!(t0.elapsed() >= Duration::from_millis(DEFERRED_MS * 8 / 10), "504 after {:?}", t0.elapsed());
    expect_closed(&mut c, Duration::from_secs(5), false, "after the 504");
    drop(c);
    ctx.settle("a deferred timeout");
}

/// A request body that trickles below the minimum rate is answered `408`
/// with `Connection: close` once its grace is over, and closed; the bytes
/// it held come back. An upload whose reader pauses longer than the grace
/// is not the client's slowness: it is answered `200`.
fn body_rate(ctx: &mut Ctx, kind: Kind) {
    let path = if kind == Echo { "/echo" } else { "/upload" };
    let mut c = ctx.connect();
    c.send(&post_head(path, 100_000, false));
    c.send(&pattern(100, 9));
    let t0 = Instant::now();
    let r = c.response_any(false, Duration::from_millis(GRACE_MS) + LATE);
    assert_eq!(r.status, 408, "{}", show(&r.body));
    assert!(r.says_close(), "{:?}", r.headers);
    assert!(t0.elapsed() >= Duration::from_millis(GRACE_MS * 8 / 10), "408 after {:?}", t0.elapsed());
    expect_closed(&mut c, Duration::from_secs(5), false, "after the 408");
    drop(c);
    ctx.settle("a trickling body");
    if kind == Upload {
        let (wire, expect) = request(Upload, 3 * GRACE_MS);
        let mut c = ctx.connect();
        c.send(&wire);
        let r = c.response_any(false, Duration::from_secs(10));
        expect.check(&r, ctx, "an upload its reader paused past the grace");
        drop(c);
        ctx.settle("an upload its reader paused");
    }
}

/// SIGTERM while the answer is under way: it comes whole, an answer
/// framed during the drain says `Connection: close` (a stream's head, out
/// before, cannot; its writer ends it early, whole), and the connection
/// closes after it; an idle keep-alive connection is closed. The worker
/// drains as soon as its answers are out, and the server exits 0.
fn drain(ctx: &mut Ctx, kind: Kind) {
    let mut c = ctx.connect();
    let what = format!("{kind} during a drain");
    match kind {
        Whole => {
            assert_eq!(c.get("/").status, 200);
            ctx.drain();
            expect_closed(&mut c, LATE, false, "an idle connection during a drain");
        }
        Echo | Upload => {
            let (path, expect) = match kind {
                Echo => ("/echo", Expect::Same(pattern(ECHO_LEN, 1))),
                _ => ("/upload", Expect::Upload(pattern(ECHO_LEN, 1))),
            };
            let body = pattern(ECHO_LEN, 1);
            c.send(&post_head(path, body.len(), true));
            assert_eq!(c.response().status, 100);
            c.send(&body[..ECHO_LEN / 2]);
            if kind == Echo {
                ctx.wait("half the body is held", |g| g.body_bytes > 0);
            }
            ctx.drain();
            c.send(&body[ECHO_LEN / 2..]);
            let r = c.response();
            expect.check(&r, ctx, &what);
            assert!(r.says_close(), "{what}: {:?}", r.headers);
            expect_closed(&mut c, LATE, false, &what);
        }
        Sleep | Delay | LateStream => {
            let wire = match kind {
                // A stream that would run long.
                LateStream => get(&format!("/stream?n=100000&ms=1&after={IN_FLIGHT_MS}")),
                _ => request(kind, IN_FLIGHT_MS).0,
            };
            c.send(&wire);
            ctx.wait("the answer is deferred", |g| g.deferred == 1);
            ctx.drain();
            let r = c.response_any(false, Duration::from_secs(10));
            assert_eq!(r.status, 200, "{what}: {}", show(&r.body));
            assert!(r.says_close(), "{what}: {:?}", r.headers);
            if kind == LateStream {
                // A stream that starts during a drain is told so at once:
                // its writer ends it, whole, before its first event.
                assert_eq!((r.framing, events(&r.body)), (Framing::Chunked, 0), "{what}");
            } else {
                assert_eq!(r.body, format!("waited {IN_FLIGHT_MS} ms\n").as_bytes(), "{what}");
            }
            expect_closed(&mut c, LATE, false, &what);
        }
        Stream => {
            c.send(&get("/stream?n=100000&ms=20"));
            peek_until(&c, "the first event", |b| kit::find(b, b"data: 0").is_some());
            ctx.drain();
            let r = c.response_any(false, Duration::from_secs(10));
            assert_eq!((r.status, r.framing), (200, Framing::Chunked), "{what}");
            let n = events(&r.body);
            assert!(n > 0 && n < 100_000, "{what}: {n} events");
            expect_closed(&mut c, LATE, false, &what);
        }
        File => {
            c.set_recv_buffer(SMALL_RCVBUF);
            c.send(&get("/files/big.bin"));
            peek_until(&c, "the file's head", |b| kit::find(b, b"\r\n\r\n").is_some());
            ctx.drain();
            // A reader that pauses longer than the drain's grace for idle
            // connections, once (the client's pace, not a wait for the
            // server): it is no idle connection, and gets the whole file.
            let mut got = Vec::new();
            read_at_least(&mut c, &mut got, 1 << 20, "the file's first MiB");
            thread::sleep(Duration::from_millis(DRAIN_IDLE_GRACE_MS * 3 / 2));
            let r = kit::read_response(&mut c.stream, &mut got, false, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            Expect::File.check(&r, ctx, &what);
            expect_closed(&mut c, LATE, false, &what);
        }
    }
    // A connection whose answer ended during the drain lingers for a
    // request the client may have sent meanwhile, until the client closes.
    drop(c);
    ctx.drained(&what);
}

/// The worker's caps: connections past `--max-connections` wait in the
/// backlog and are served once a place frees; deferred answers past
/// `--max-deferred`, and pool jobs past the pool's queue, are refused
/// `503` at once, queueing no work; a body past the body budget is
/// refused `503` with `Connection: close`.
fn caps(ctx: &mut Ctx, kind: Kind) {
    match kind {
        Whole | Stream | File | Upload => connection_cap(ctx, kind),
        Echo => {
            // One body holds most of the budget.
            let mut a = ctx.connect();
            let body = pattern(80_000, 10);
            a.send(&post_head("/echo", body.len(), true));
            assert_eq!(a.response().status, 100);
            a.send(&body[..60_000]);
            ctx.wait("the first body is held", |g| g.body_bytes == 60_000);
            // A second one that would take it over is refused, and closed.
            let mut b = ctx.connect();
            b.send(&post_head("/echo", 50_000, true));
            assert_eq!(b.response().status, 100);
            let _ = b.try_send(&pattern(50_000, 11));
            let r = b.response();
            assert_eq!(r.status, 503, "{}", show(&r.body));
            assert!(r.says_close(), "{:?}", r.headers);
            expect_closed(&mut b, LATE, false, "a body past the budget");
            ctx.wait("the refused body's bytes come back", |g| g.body_bytes == 60_000);
            // The first one completes.
            a.send(&body[60_000..]);
            Expect::Same(body).check(&a.response(), ctx, "the body within the budget");
            drop((a, b));
            ctx.settle("the body budget");
        }
        Sleep => {
            // One thread and a queue of one: two jobs are taken, a third is
            // refused at once, and queues nothing.
            let mut held: Vec<Client> = Vec::new();
            for want in [(0, 1), (1, 1)] {
                let mut c = ctx.connect();
                c.send(&get(&format!("/sleep?ms={IN_FLIGHT_MS}")));
                ctx.wait("a job is taken", |g| (g.pool_queued, g.pool_busy) == want);
                held.push(c);
            }
            let r = ctx.connect().get(&format!("/sleep?ms={IN_FLIGHT_MS}"));
            assert_eq!((r.status, r.header("Retry-After")), (503, Some("1")), "past the pool's queue");
            let g = ctx.gauges();
            assert_eq!((g.pool_queued, g.pool_busy, g.deferred), (1, 1, 2), "{g:?}");
            for c in &mut held {
                Expect::Waited(IN_FLIGHT_MS).check(&c.response(), ctx, "a job taken");
            }
            drop(held);
            ctx.settle("the pool's queue");
            // Every deferred place taken by timers: a job is refused before
            // it is queued.
            let held = deferred_cap(ctx, &get(&format!("/delay?ms={IN_FLIGHT_MS}")));
            let r = ctx.connect().get("/sleep?ms=1");
            assert_eq!((r.status, r.header("Retry-After")), (503, Some("1")), "past the deferred cap");
            let g = ctx.gauges();
            assert_eq!((g.pool_queued, g.pool_busy), (0, 0), "a refused job was queued: {g:?}");
            for mut c in held {
                Expect::Waited(IN_FLIGHT_MS).check(&c.response(), ctx, "a timer's answer");
            }
            ctx.settle("the deferred cap, for a pool job");
        }
        Delay | LateStream => {
            let (wire, expect) = request(kind, IN_FLIGHT_MS);
            let held = deferred_cap(ctx, &wire);
            let mut refused = ctx.connect();
            refused.send(&wire);
            let r = refused.response_any(false, Duration::from_secs(10));
            assert_eq!((r.status, r.header("Retry-After")), (503, Some("1")), "past the deferred cap");
            drop(refused);
            for mut c in held {
                let r = c.response_any(false, Duration::from_secs(10));
                expect.check(&r, ctx, "an answer within the cap");
            }
            ctx.settle("the deferred cap");
        }
    }
}

/// Takes every deferred place with `wire`, one connection each.
fn deferred_cap(ctx: &Ctx, wire: &[u8]) -> Vec<Client> {
    let held: Vec<Client> = (0..MAX_DEFERRED)
        .map(|_| {
            let mut c = ctx.connect();
            c.send(wire);
            c
        })
        .collect();
    ctx.wait("every deferred place is taken", |g| g.deferred == MAX_DEFERRED as u64);
    held
}

/// `--max-connections` connections each hold an answer of `kind` under
/// way (a whole answer's: its keep-alive connection); one more waits in the
/// backlog, unanswered, until one of them leaves, then gets its answer
/// whole.
fn connection_cap(ctx: &mut Ctx, kind: Kind) {
    let mut held: Vec<Client> = (0..CAP)
        .map(|_| {
            let mut c = ctx.connect();
            match kind {
                Whole => assert_eq!(c.get("/").status, 200),
                Stream => {
                    c.send(&get("/stream?n=100000&ms=20"));
                    peek_until(&c, "a stream's head", |b| kit::find(b, b"\r\n\r\n").is_some());
                }
                File => {
                    c.set_recv_buffer(SMALL_RCVBUF);
                    c.send(&get("/files/big.bin"));
                    peek_until(&c, "a file's head", |b| kit::find(b, b"\r\n\r\n").is_some());
                }
                Upload => {
                    c.send(&post_head("/upload", 1 << 20, true));
                    assert_eq!(c.response().status, 100);
                    c.send(&pattern(1000, 12));
                }
                _ => unreachable!(),
            }
            c
        })
        .collect();
    ctx.wait("the cap's connections are open", |g| g.open == CAP as u64);
    let (wire, expect) = request(kind, 0);
    let mut waiting = ctx.connect();
    waiting.send(&wire);
    expect_nothing(&waiting, Duration::from_millis(300), "a connection past the cap");
    leave(held.pop().unwrap(), Leave::Close);
    let r = waiting.response_any(false, Duration::from_secs(10));
    expect.check(&r, ctx, "the connection past the cap, once a place freed");
    drop(held);
    drop(waiting);
    ctx.settle("the connection cap");
}
