//! The server of scenario 8 (message flood), run by the harness binary
//! itself: `forkring-stress --flood-server --listen ADDR --workers N`.
//!
//! It is a forkring cluster whose workers answer `GET /` with
//! `Hello, World!` (like the test fixture) and echo every message the master
//! sends them, while the master keeps a window of messages in flight to each
//! worker and checks every echo. Workers start with `reexec(true)`: a
//! re-executed worker runs this same binary with the same arguments, and
//! [`forkring::Server::serve`] turns it into the worker. (The flood server
//! is a fresh program, single-threaded, and could fork plainly; it
//! re-executes its workers so that they never inherit anything of a harness
//! with threads, and so that the scenario also covers rings handed to a new
//! program across exec.)
//!
//! # Messages
//!
//! Master to worker: `seq: u64 LE | sum: u64 LE | payload` where the payload
//! (`--payload` bytes) is a pseudo-random function of (slot, seq) and `sum`
//! its checksum. The worker checks that `seq` is the one after the last
//! (per worker, from 0) and that the payload's checksum is `sum`; it answers
//! at once with [`forkring::worker::send`]: `seq | sum | verdict: u64 LE |
//! payload`, `verdict` 0 when all was right (bits: 1 out of order, 2
//! checksum, 8 length).
//!
//! The master checks each echo: in order per worker, `sum` equal to the
//! checksum of the payload it sent as `seq`, the echoed payload's checksum
//! equal to `sum`, verdict 0. It sends only while fewer than `--window`
//! messages are in flight to a worker (default 256). Echoes take 96 bytes of
//! ring each, so up to a window of 4096 with the default payload the 1 MiB
//! worker->master ring can never be full and a worker never has to drop an
//! echo (should one be refused, the worker's shared counters show it as
//! `w_full` and the master misses it: `sent` > `recv`). A `Full` answer on
//! the master's own sends is backpressure: counted, and the same message is
//! sent again later (nothing is skipped). The window is refilled on every
//! echo and from a 1 ms timer.
//!
//! # Control
//!
//! [`flood_on`] (a real-time signal) turns the flood on, [`flood_off`] off
//! (the master takes SIGUSR1 and SIGUSR2 for itself; a signal handler sets a flag
//! that the 1 ms timer reads). Everything is reported on stderr through
//! the log, in the test fixture's format (`forkring[PID] info: ...`), so the
//! harness reads it like the demo's log:
//!
//! - the lifecycle events (`ready 0.0 pid=...`), `listening on`, `backend:`;
//! - `FLOOD on ...` and `FLOOD off ...` at each switch, the latter with the
//!   phase's length and counts (`phase_us=`, `phase_sent=`, `phase_recv=`);
//! - `FLOOD drained ...` once nothing is in flight after an `off`;
//! - `FLOOD tick ...` every 500 ms;
//! - `FLOOD final ...` after the cluster has shut down.
//!
//! Each line carries the master's totals as `key=value`: `sent`, `recv`,
//! `inflight`, `full` (master sends refused `Full`), `closed`, `ooo` (echoes
//! out of order), `gap` (sequence numbers skipped by them), `corrupt`,
//! `wbad` (echoes whose verdict is not 0), `stray` (from a worker the
//! master no longer floods), and the workers' shared counters as the master
//! reads them: `w_recv` (messages the workers received), `w_sent` (echoes
//! they sent), `w_full` (their sends refused `Full`).

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use forkring::{Event, Handler, Request, Response, Server, WorkerId};
use forkring::{SendError, Snapshot};

/// The subcommand that starts this server (hidden from `--help`).
pub const FLAG: &str = "--flood-server";

/// Bytes before the payload in a message to a worker: seq, sum.
const HEAD: usize = 16;
/// Bytes before the payload in an echo: seq, sum, verdict.
const ECHO_HEAD: usize = 24;

/// The signal that turns the flood on.
pub fn flood_on() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

/// The signal that turns the flood off.
pub fn flood_off() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

/// Set by [`flood_on`], cleared by [`flood_off`].
static WANT_FLOOD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr(sig: libc::c_int) {
    // An atomic store is async-signal-safe.
    WANT_FLOOD.store(sig == flood_on(), Ordering::SeqCst);
}

/// The server's options (the same in the master and the re-executed
/// workers, which get the same arguments).
#[derive(Clone, Debug)]
struct Opts {
    listen: String,
    workers: usize,
    log: log::LevelFilter,
    window: u64,
    payload: usize,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o =
        Opts { listen: "127.0.0.1:0".into(), workers: 2, log: log::LevelFilter::Info, window: 256, payload: 64 };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|_| format!("{a}: expected a whole number, got {v:?}"));
        match a.as_str() {
            "--listen" => o.listen = value()?,
            "--workers" => o.workers = num(value()?)?.max(1) as usize,
            "--window" => o.window = num(value()?)?.clamp(1, 1 << 20),
            // Within the default ring's largest message (64 KiB).
            "--payload" => o.payload = num(value()?)?.min(60 << 10) as usize,
            "--log" => {
                o.log = match value()?.as_str() {
                    "error" => log::LevelFilter::Error,
                    "warn" => log::LevelFilter::Warn,
                    "info" => log::LevelFilter::Info,
                    "debug" => log::LevelFilter::Debug,
                    v => return Err(format!("--log: unknown level {v:?}")),
                }
            }
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    Ok(o)
}

/// The payload of message `seq` to `slot`: splitmix64 words.
pub fn fill(slot: usize, seq: u64, out: &mut [u8]) {
    let mut s = seq.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ ((slot as u64) << 48) ^ 0x5EED;
    for chunk in out.chunks_mut(8) {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

/// A 64-bit checksum of `b` (FNV-1a over 8-byte words, then a final mix).
pub fn checksum(b: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325 ^ b.len() as u64;
    for chunk in b.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x0000_0100_0000_01B3).rotate_left(29);
    }
    h ^= h >> 33;
    h.wrapping_mul(0xFF51_AFD7_ED55_8CCD)
}

fn word(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Runs the flood server (master, or a re-executed worker); `args` follow
/// [`FLAG`].
pub fn main(args: &[String]) -> ExitCode {
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("forkring-stress {FLAG}: {e}");
            return ExitCode::from(2);
        }
    };
    forkring_stress::logger::init(opts.log);
    // SAFETY: the handler only stores to an atomic; sigaction reads a
    // zeroed, then filled, local struct.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in [flood_on(), flood_off()] {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    let state = Rc::new(RefCell::new(Flood::new(opts.window, opts.payload)));
    let on_event = Rc::clone(&state);
    let tick_1ms = Rc::clone(&state);
    let tick_500ms = Rc::clone(&state);
    let payload = opts.payload;
    let result = Server::builder()
        .listen(opts.listen.clone())
        .workers(opts.workers)
        .reexec(true)
        .on_event(move |ev, ctl| {
            let mut f = on_event.borrow_mut();
            match ev {
                Event::Message { worker, data } => f.on_echo(ctl, *worker, data),
                other => {
                    log::info!("{other}");
                    f.on_lifecycle(other);
                }
            }
        })
        .every(Duration::from_millis(1), move |ctl| tick_1ms.borrow_mut().tick(ctl))
        .every(Duration::from_millis(500), move |_| {
            let f = tick_500ms.borrow();
            log::info!("FLOOD tick {}", f.report());
        })
        .serve(move || Echo::new(payload));
    if forkring::worker::id().is_some() {
        // A re-executed worker that has drained.
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                log::error!("worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    log::info!("FLOOD final {}", state.borrow().report());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("flood server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The worker's handler: `GET /` and the echo of every message.
struct Echo {
    payload: usize,
    expect: u64,
    reply: Vec<u8>,
}

impl Echo {
    fn new(payload: usize) -> Echo {
        Echo { payload, expect: 0, reply: Vec::with_capacity(ECHO_HEAD + payload) }
    }
}

impl Handler for Echo {
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) {
        if req.path() == "/" && matches!(req.method(), "GET" | "HEAD") {
            res.header("Content-Type", "text/plain").body("Hello, World!");
        } else {
            res.status(404).body("Not Found");
        }
    }

    fn on_message(&mut self, msg: &[u8]) {
        let mut verdict = 0u64;
        self.reply.clear();
        if msg.len() != HEAD + self.payload {
            verdict |= 8;
            self.reply.extend_from_slice(&self.expect.to_le_bytes());
            self.reply.extend_from_slice(&0u64.to_le_bytes());
            self.reply.extend_from_slice(&verdict.to_le_bytes());
            self.reply.resize(ECHO_HEAD + self.payload, 0);
            self.expect += 1;
        } else {
            let (seq, sum, body) = (word(msg, 0), word(msg, 8), &msg[HEAD..]);
            if seq != self.expect {
                verdict |= 1;
            }
            self.expect = seq.wrapping_add(1);
            // A torn or stale frame fails one of these: the checksum, or the
            // order (a stale frame carries an older `seq`). The master checks
            // that `sum` is the one it sent for `seq`.
            if checksum(body) != sum {
                verdict |= 2;
            }
            self.reply.extend_from_slice(&msg[..HEAD]);
            self.reply.extend_from_slice(&verdict.to_le_bytes());
            self.reply.extend_from_slice(body);
        }
        // A `Full` here would lose the echo (the worker counts it in its
        // shared counters, `w_full`); the master's window keeps the ring
        // from ever filling.
        let _ = forkring::worker::send(&self.reply);
    }
}

/// The master's view of one worker.
struct Lane {
    id: Option<WorkerId>,
    next_send: u64,
    next_recv: u64,
    /// Checksum of message `seq` at `seq % window`.
    sums: Vec<u64>,
}

/// The master's totals.
#[derive(Clone, Copy, Default)]
struct Tally {
    sent: u64,
    recv: u64,
    full: u64,
    closed: u64,
    ooo: u64,
    gap: u64,
    corrupt: u64,
    wbad: u64,
    stray: u64,
}

/// The master's state, shared by its callbacks.
struct Flood {
    window: u64,
    payload: usize,
    lanes: Vec<Lane>,
    t: Tally,
    on: bool,
    /// Set at each `off` until nothing is in flight.
    draining: bool,
    phase: Option<(Instant, Tally)>,
    workers: Snapshot,
    msg: Vec<u8>,
}

impl Flood {
    fn new(window: u64, payload: usize) -> Flood {
        Flood {
            window,
            payload,
            lanes: Vec::new(),
            t: Tally::default(),
            on: false,
            draining: false,
            phase: None,
            workers: Snapshot::default(),
            msg: vec![0; HEAD + payload],
        }
    }

    fn lane(&mut self, slot: usize) -> &mut Lane {
        while self.lanes.len() <= slot {
            self.lanes.push(Lane { id: None, next_send: 0, next_recv: 0, sums: vec![0; self.window as usize] });
        }
        &mut self.lanes[slot]
    }

    fn inflight(&self) -> u64 {
        self.lanes.iter().filter(|l| l.id.is_some()).map(|l| l.next_send - l.next_recv).sum()
    }

    fn on_lifecycle(&mut self, ev: &Event) {
        match *ev {
            // A new worker counts from 0; the master floods only ready ones.
            Event::Ready { worker, .. } => {
                let l = self.lane(worker.slot);
                l.id = Some(worker);
                l.next_send = 0;
                l.next_recv = 0;
            }
            Event::Draining { worker, .. } | Event::Disconnect { worker, .. } | Event::Exit { worker, .. } => {
                let l = self.lane(worker.slot);
                if l.id == Some(worker) {
                    l.id = None;
                }
            }
            _ => {}
        }
    }

    /// Sends to `slot` until its window is full or the ring says no.
    fn refill(&mut self, ctl: &mut forkring::Ctl<'_>, slot: usize) {
        let window = self.window;
        loop {
            let l = &mut self.lanes[slot];
            if l.id.is_none() || l.next_send - l.next_recv >= window {
                return;
            }
            let seq = l.next_send;
            fill(slot, seq, &mut self.msg[HEAD..]);
            let sum = checksum(&self.msg[HEAD..]);
            self.msg[..8].copy_from_slice(&seq.to_le_bytes());
            self.msg[8..16].copy_from_slice(&sum.to_le_bytes());
            match ctl.send(slot, &self.msg) {
                Ok(()) => {
                    let l = &mut self.lanes[slot];
                    l.sums[(seq % window) as usize] = sum;
                    l.next_send += 1;
                    self.t.sent += 1;
                }
                // Backpressure: the same `seq` goes again at the next refill.
                Err(SendError::Full) => {
                    self.t.full += 1;
                    return;
                }
                Err(_) => {
                    self.t.closed += 1;
                    return;
                }
            }
        }
    }

    fn on_echo(&mut self, ctl: &mut forkring::Ctl<'_>, worker: WorkerId, data: &[u8]) {
        let slot = worker.slot;
        if self.lane(slot).id != Some(worker) {
            self.t.stray += 1;
            return;
        }
        if data.len() != ECHO_HEAD + self.payload {
            self.t.corrupt += 1;
            return;
        }
        let (seq, sum, verdict) = (word(data, 0), word(data, 8), word(data, 16));
        let window = self.window;
        let l = &mut self.lanes[slot];
        if seq >= l.next_send {
            // Never sent (or from an older life of the lane).
            self.t.corrupt += 1;
            return;
        }
        if seq != l.next_recv {
            self.t.ooo += 1;
            self.t.gap += seq.saturating_sub(l.next_recv);
        }
        let known = seq >= l.next_recv && seq - l.next_recv < window;
        if !known || l.sums[(seq % window) as usize] != sum || checksum(&data[ECHO_HEAD..]) != sum {
            self.t.corrupt += 1;
        }
        if verdict != 0 {
            self.t.wbad += 1;
        }
        if seq >= l.next_recv {
            l.next_recv = seq + 1;
        }
        self.t.recv += 1;
        if self.on {
            self.refill(ctl, slot);
        }
    }

    /// The 1 ms timer: switch on or off, refill, read the counters.
    fn tick(&mut self, ctl: &mut forkring::Ctl<'_>) {
        let want = WANT_FLOOD.load(Ordering::SeqCst);
        self.workers = ctl.total();
        if want && !self.on {
            self.on = true;
            self.draining = false;
            self.phase = Some((Instant::now(), self.t));
            log::info!("FLOOD on {}", self.report());
        } else if !want && self.on {
            self.on = false;
            self.draining = true;
            let (phase_us, sent, recv) = match self.phase.take() {
                Some((at, t0)) => (at.elapsed().as_micros(), self.t.sent - t0.sent, self.t.recv - t0.recv),
                None => (0, 0, 0),
            };
            log::info!("FLOOD off phase_us={phase_us} phase_sent={sent} phase_recv={recv} {}", self.report());
        }
        if self.on {
            for slot in 0..self.lanes.len() {
                self.refill(ctl, slot);
            }
        } else if self.draining && self.inflight() == 0 {
            self.draining = false;
            log::info!("FLOOD drained {}", self.report());
        }
    }

    fn report(&self) -> String {
        let t = &self.t;
        let w = &self.workers;
        format!(
            "sent={} recv={} inflight={} full={} closed={} ooo={} gap={} corrupt={} wbad={} stray={} \
             w_recv={} w_sent={} w_full={}",
            t.sent,
            t.recv,
            self.inflight(),
            t.full,
            t.closed,
            t.ooo,
            t.gap,
            t.corrupt,
            t.wbad,
            t.stray,
            w.ring_received,
            w.ring_sent,
            w.ring_full
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_differ_and_checksums_catch_a_flipped_bit() {
        let (mut a, mut b) = (vec![0u8; 64], vec![0u8; 64]);
        fill(0, 1, &mut a);
        fill(0, 2, &mut b);
        assert_ne!(a, b);
        fill(1, 1, &mut b);
        assert_ne!(a, b);
        let sum = checksum(&a);
        for i in 0..a.len() * 8 {
            let mut c = a.clone();
            c[i / 8] ^= 1 << (i % 8);
            assert_ne!(checksum(&c), sum, "bit {i}");
        }
        let mut odd = vec![0u8; 13];
        fill(3, 7, &mut odd);
        assert_ne!(checksum(&odd), checksum(&odd[..12]));
    }
}
