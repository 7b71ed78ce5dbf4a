//! The open-loop client: requests at a fixed rate, latency counted from
//! each request's due time. `make stress`'s slowloris scenario calls it its
//! normal client; `make bench` runs it as `ratebench` to compare tail
//! latency at equal load rather than at saturation.
//!
//! A saturating client such as wrk measures its own closed loop: a request
//! waits for the one before it on its connection, and a stall of either
//! side's CPU shows as latency. A paced client asks when it needs to,
//! whatever the server is doing. Request `n` is due at `start + n / rate`
//! and goes out, round robin, on the next of the client's live keep-alive
//! connections, behind any answer that connection still owes (pipelined,
//! not held back). Its latency is counted from that due time to its
//! answer's last byte, so a server that stalls is charged for every
//! request it delays, not only the first (no coordinated omission). The
//! service time from the actual write, and how late the write came behind
//! the schedule (the client's own lag, its floor), are counted beside it.
//! Requests due in the first [`Plan::warmup`] are sent but not counted.
//!
//! Two ways to wait for the next due time ([`Wait`]), each kept for the
//! figures a caller relies on:
//!
//! - [`Wait::Poll`]: one thread per sender polls its connections (epoll,
//!   never blocking) and so keeps its CPU busy. On a VM a CPU that sleeps
//!   between requests takes tens of microseconds to wake, which the figure
//!   would charge to the server (in three rounds of the slowloris scenario
//!   at 5,000 requests/s, quiet and attacked, both servers: medians of
//!   128–162 µs sleeping on a `timerfd`, 60–86 µs polling). The stress
//!   harness measures so.
//! - [`Wait::Sleep`]: each sender thread sleeps until its next request is
//!   due, and one reader thread per connection blocks on its answers:
//!   what `make bench`'s fixed-rate figures have always been measured
//!   with, for every server alike.
//!
//! Every answer is checked ([`Check`]); a wrong answer, a request that
//! cannot be written on any connection, and an answer still missing
//! [`Plan::drain`] after the last request was due count as errors.
//! Bounded: the run ends `drain` after the last request was due, whatever
//! comes.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use forkring_testkit::http::{find, parse_head, HEAD_LIMIT};

use crate::epoll::{self, Epoll};
use crate::histogram::Histogram;
use crate::{procs, HELLO};

/// How the client waits for the next due time (see the module's text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Polling, one busy thread per sender.
    Poll,
    /// Sleeping senders and a blocking reader thread per connection.
    Sleep,
}

/// What an answer must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// `200` with the body `Hello, World!`: anything else is an error and
    /// is not timed.
    Hello,
    /// Any answer is timed; one without a 2xx status is also an error.
    Success,
    /// A 2xx answer is timed as a success; a `503` is a refusal, timed
    /// apart ([`Tally::refusal`]) and not an error; anything else is an
    /// error. For a server that sheds load.
    Shed,
}

/// One paced run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The server.
    pub addr: SocketAddr,
    /// The bytes of one request (sent as they are, again and again).
    pub request: Vec<u8>,
    /// Requests per second, in all.
    pub rate: f64,
    /// How long requests are sent, warm-up included.
    pub duration: Duration,
    /// The first part of `duration`, whose requests are sent but not
    /// counted.
    pub warmup: Duration,
    /// Sender threads: thread `t` sends requests `t`, `t + threads`, ...
    pub threads: usize,
    /// Keep-alive connections per sender thread.
    pub conns: usize,
    /// How long answers may lag behind the last due time.
    pub drain: Duration,
    /// How to wait.
    pub wait: Wait,
    /// What an answer must be.
    pub check: Check,
    /// The CPU every thread of the client is pinned to.
    pub cpu: Option<usize>,
}

impl Plan {
    /// `GET /` (as the stress harness sends it) at `rate` for `duration`
    /// over `conns` connections of one polling thread, each answer
    /// checked for `Hello, World!`, a second of drain, no warm-up.
    pub fn hello(addr: SocketAddr, conns: usize, rate: u32, duration: Duration) -> Plan {
        Plan {
            addr,
            request: b"GET / HTTP/1.1\r\nHost: stress\r\n\r\n".to_vec(),
            rate: f64::from(rate.max(1)),
            duration,
            warmup: Duration::ZERO,
            threads: 1,
            conns,
            drain: Duration::from_secs(1),
            wait: Wait::Poll,
            check: Check::Hello,
            cpu: None,
        }
    }
}

/// What a paced run counted. Only requests due after the warm-up count.
#[derive(Clone, Debug)]
pub struct Tally {
    /// Requests written.
    pub sent: u64,
    /// Requests that could not be written on any live connection (or came
    /// due too late, after the run's end).
    pub unsent: u64,
    /// Answers received.
    pub answered: u64,
    /// Of those, answers the check refused.
    pub bad: u64,
    /// Of those, refusals (`503`) under [`Check::Shed`]: neither errors
    /// nor successes.
    pub refused: u64,
    /// Connections that failed (a read error, an end with answers owed, a
    /// response that cannot be read).
    pub failed_conns: u64,
    /// Latency from each request's due time to its answer.
    pub latency: Histogram,
    /// Service time from each request's write to its answer.
    pub service: Histogram,
    /// How late each request was written behind its due time.
    pub lag: Histogram,
    /// Latency of the refusals, from each one's due time ([`Check::Shed`]).
    pub refusal: Histogram,
}

impl Tally {
    fn new(wait: Wait) -> Tally {
        // Sleeping, the client's own floor is in the tens of microseconds:
        // nanoseconds keep its lag figures apart; polling, microseconds
        // are the stress harness's unit.
        let h = || if wait == Wait::Sleep { Histogram::nanos() } else { Histogram::micros() };
        Tally {
            sent: 0,
            unsent: 0,
            answered: 0,
            bad: 0,
            refused: 0,
            failed_conns: 0,
            latency: h(),
            service: h(),
            lag: h(),
            refusal: h(),
        }
    }

    /// Adds `o`'s counts and times to these (the rounds of a measurement
    /// pooled).
    pub fn merge(&mut self, o: &Tally) {
        self.sent += o.sent;
        self.unsent += o.unsent;
        self.answered += o.answered;
        self.bad += o.bad;
        self.refused += o.refused;
        self.failed_conns += o.failed_conns;
        self.latency.merge(&o.latency);
        self.service.merge(&o.service);
        self.lag.merge(&o.lag);
        self.refusal.merge(&o.refusal);
    }

    /// Requests due: written or not.
    pub fn due(&self) -> u64 {
        self.sent + self.unsent
    }

    /// Answers the check accepted (refusals aside).
    pub fn ok(&self) -> u64 {
        self.answered - self.bad - self.refused
    }

    /// Requests written and never answered.
    pub fn unanswered(&self) -> u64 {
        self.sent.saturating_sub(self.answered)
    }

    /// Every request due that did not get an answer the check accepted.
    pub fn errors(&self) -> u64 {
        self.bad + self.unanswered() + self.unsent
    }

    /// Counts one answer to a request due at `due`, written at `written`,
    /// complete at `now`.
    fn answer(&mut self, check: Check, a: &Answer, buf: &[u8], due: Instant, written: Instant, now: Instant) {
        self.answered += 1;
        if check == Check::Shed && a.status == 503 {
            self.refused += 1;
            self.refusal.record(now.saturating_duration_since(due));
            return;
        }
        let good = match check {
            Check::Hello => a.status == 200 && buf[a.body.clone()] == *HELLO,
            Check::Success | Check::Shed => (200..300).contains(&a.status),
        };
        if !good {
            self.bad += 1;
        }
        if good || check == Check::Success {
            self.latency.record(now.saturating_duration_since(due));
            self.service.record(now.saturating_duration_since(written));
        }
    }
}

/// When each request is due.
#[derive(Clone, Copy)]
struct Schedule {
    start: Instant,
    /// Requests due before this are not counted.
    counted_from: Instant,
    rate: f64,
    /// Requests in all.
    total: u64,
}

impl Schedule {
    fn due(&self, n: u64) -> Instant {
        self.start + Duration::from_secs_f64(n as f64 / self.rate)
    }

    fn counted(&self, due: Instant) -> bool {
        due >= self.counted_from
    }
}

/// Sends the plan's requests; what they met.
pub fn run(plan: &Plan) -> Result<Tally, String> {
    if !(plan.rate > 0.0 && plan.rate.is_finite()) {
        return Err(format!("rate {} is not a positive number", plan.rate));
    }
    let (threads, conns) = (plan.threads.max(1), plan.conns.max(1));
    // Connected before the clock starts.
    let mut groups = Vec::with_capacity(threads);
    for _ in 0..threads {
        let mut g = Vec::with_capacity(conns);
        for _ in 0..conns {
            let s = TcpStream::connect_timeout(&plan.addr, Duration::from_secs(2))
                .map_err(|e| format!("connect {}: {e}", plan.addr))?;
            let _ = s.set_nodelay(true);
            g.push(s);
        }
        groups.push(g);
    }
    // The threads start within the lead.
    let start = Instant::now() + Duration::from_millis(50);
    let sched = Schedule {
        start,
        counted_from: start + plan.warmup,
        rate: plan.rate,
        total: (plan.duration.as_secs_f64() * plan.rate).ceil() as u64,
    };
    let request: Arc<[u8]> = plan.request.clone().into();
    let mut senders = Vec::with_capacity(threads);
    for (t, streams) in groups.into_iter().enumerate() {
        let plan = plan.clone();
        let request = Arc::clone(&request);
        let (first, step) = (t as u64, threads as u64);
        let h = thread::Builder::new()
            .name(format!("paced-{t}"))
            .spawn(move || {
                if let Some(cpu) = plan.cpu {
                    procs::pin_to(cpu).map_err(|e| format!("pin the paced client to CPU {cpu}: {e}"))?;
                }
                let order = Order { first, step };
                match plan.wait {
                    Wait::Poll => poll(streams, &request, sched, order, &plan),
                    Wait::Sleep => sleep(streams, &request, sched, order, &plan),
                }
            })
            .map_err(|e| format!("start the paced client: {e}"))?;
        senders.push(h);
    }
    let mut tally = Tally::new(plan.wait);
    for h in senders {
        tally.merge(&h.join().map_err(|_| "a paced client thread panicked".to_owned())??);
    }
    Ok(tally)
}

/// Which requests of the schedule a sender thread sends.
#[derive(Clone, Copy)]
struct Order {
    first: u64,
    step: u64,
}

impl Order {
    fn requests(self, total: u64) -> impl Iterator<Item = u64> {
        (self.first..total).step_by(self.step as usize)
    }
}

/// Round robin over the live ones of `n` connections: the next live index
/// from `*next` on, if any.
fn next_live(n: usize, next: &mut usize, live: impl Fn(usize) -> bool) -> Option<usize> {
    for _ in 0..n {
        let i = *next;
        *next = (*next + 1) % n;
        if live(i) {
            return Some(i);
        }
    }
    None
}

// ------------------------------------------------------------------ polling

/// One connection of a polling sender: the (due, written) times of the
/// answers it owes.
struct PollConn {
    stream: TcpStream,
    owed: VecDeque<(Instant, Instant)>,
    buf: Vec<u8>,
    broken: bool,
}

fn poll(streams: Vec<TcpStream>, request: &[u8], sched: Schedule, order: Order, plan: &Plan) -> Result<Tally, String> {
    let ep = Epoll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut cs = Vec::with_capacity(streams.len());
    for (i, stream) in streams.into_iter().enumerate() {
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        ep.add(stream.as_raw_fd(), epoll::IN, i).map_err(|e| format!("epoll_ctl: {e}"))?;
        cs.push(PollConn { stream, owed: VecDeque::new(), buf: Vec::with_capacity(4096), broken: false });
    }
    let mut out = Tally::new(Wait::Poll);
    let end = sched.start + plan.duration + plan.drain;
    let mut todo = order.requests(sched.total).peekable();
    let mut next = 0;
    let mut events = epoll::events(64);
    loop {
        let now = Instant::now();
        if now >= end || (todo.peek().is_none() && cs.iter().all(|c| c.owed.is_empty())) {
            break;
        }
        // Every request due by now goes out, each stamped with its own due
        // time.
        while let Some(&n) = todo.peek() {
            let due = sched.due(n);
            if due > now {
                break;
            }
            todo.next();
            let counted = sched.counted(due);
            let mut sent = false;
            while let Some(i) = next_live(cs.len(), &mut next, |i| !cs[i].broken) {
                let c = &mut cs[i];
                let written = Instant::now();
                if matches!(c.stream.write(request), Ok(k) if k == request.len()) {
                    c.owed.push_back((due, written));
                    if counted {
                        out.sent += 1;
                        out.lag.record(written.saturating_duration_since(due));
                    }
                    sent = true;
                    break;
                }
                // A partial write would leave the connection out of step:
                // it is retired with what it owes.
                retire(c, &ep, &mut out, &sched);
            }
            if !sent && counted {
                out.unsent += 1;
            }
        }
        let n = ep.wait(&mut events, 0).map_err(|e| format!("epoll_wait: {e}"))?;
        for ev in &events[..n] {
            let c = &mut cs[epoll::token(ev)];
            if read_answers(c, plan.check, &sched, &mut out).is_err() {
                retire(c, &ep, &mut out, &sched);
            }
        }
    }
    // What never came due before the end (a thread starved past the drain).
    out.unsent += todo.filter(|&n| sched.counted(sched.due(n))).count() as u64;
    Ok(out)
}

/// Takes `c` out of use; what it owes stays unanswered.
fn retire(c: &mut PollConn, ep: &Epoll, out: &mut Tally, sched: &Schedule) {
    if !c.broken {
        c.broken = true;
        ep.remove(c.stream.as_raw_fd());
        if c.owed.iter().any(|&(due, _)| sched.counted(due)) {
            out.failed_conns += 1;
        }
    }
    c.owed.clear();
}

/// Reads what `c` has and counts every whole answer in it. An error means
/// the connection is of no further use.
fn read_answers(c: &mut PollConn, check: Check, sched: &Schedule, out: &mut Tally) -> Result<(), ()> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match c.stream.read(&mut chunk) {
            Ok(0) => return Err(()),
            Ok(k) => c.buf.extend_from_slice(&chunk[..k]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    let now = Instant::now();
    while let Some(a) = answer(&c.buf).map_err(|_| ())? {
        let Some((due, written)) = c.owed.pop_front() else { return Err(()) };
        if sched.counted(due) {
            out.answer(check, &a, &c.buf, due, written, now);
        }
        c.buf.drain(..a.len);
    }
    Ok(())
}

// ----------------------------------------------------------------- sleeping

/// What a sleeping sender and the reader of one of its connections share.
struct SleepConn {
    /// Due time and write time of each request sent and not yet answered.
    inflight: Mutex<VecDeque<(Instant, Instant)>>,
    sent: AtomicU64,
    answered: AtomicU64,
    dead: AtomicBool,
}

fn sleep(
    mut streams: Vec<TcpStream>,
    request: &[u8],
    sched: Schedule,
    order: Order,
    plan: &Plan,
) -> Result<Tally, String> {
    let conns: Vec<Arc<SleepConn>> = streams
        .iter()
        .map(|_| {
            Arc::new(SleepConn {
                inflight: Mutex::new(VecDeque::new()),
                sent: AtomicU64::new(0),
                answered: AtomicU64::new(0),
                dead: AtomicBool::new(false),
            })
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::with_capacity(streams.len());
    for (s, c) in streams.iter().zip(&conns) {
        let s = s.try_clone().map_err(|e| format!("clone socket: {e}"))?;
        let (c, stop, check, cpu) = (Arc::clone(c), Arc::clone(&stop), plan.check, plan.cpu);
        let h = thread::Builder::new()
            .name("paced-reader".into())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    let _ = procs::pin_to(cpu);
                }
                reader(s, &c, check, &sched, &stop)
            })
            .map_err(|e| format!("start a reader: {e}"))?;
        readers.push(h);
    }

    let mut out = Tally::new(Wait::Sleep);
    let mut next = 0;
    for n in order.requests(sched.total) {
        let due = sched.due(n);
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        let counted = sched.counted(due);
        let mut sent = false;
        while let Some(i) = next_live(conns.len(), &mut next, |i| !conns[i].dead.load(Ordering::SeqCst)) {
            let written = Instant::now();
            conns[i].inflight.lock().unwrap_or_else(|e| e.into_inner()).push_back((due, written));
            if streams[i].write_all(request).is_err() {
                conns[i].dead.store(true, Ordering::SeqCst);
                conns[i].inflight.lock().unwrap_or_else(|e| e.into_inner()).pop_back();
                continue;
            }
            conns[i].sent.fetch_add(1, Ordering::SeqCst);
            if counted {
                out.lag.record(written.saturating_duration_since(due));
                out.sent += 1;
            }
            sent = true;
            break;
        }
        if !sent && counted {
            out.unsent += 1;
        }
    }
    // Give the last answers time to arrive, then stop the readers.
    let deadline = Instant::now() + plan.drain;
    while Instant::now() < deadline
        && conns.iter().any(|c| {
            !c.dead.load(Ordering::SeqCst) && c.answered.load(Ordering::SeqCst) < c.sent.load(Ordering::SeqCst)
        })
    {
        thread::sleep(Duration::from_millis(5));
    }
    // A reader blocks in its read until an answer comes; the end of
    // reading wakes it. (With a read timeout of 20 ms to look at `stop`,
    // 256 readers woke 12,800 times a second for nothing, in bursts, on
    // the CPU the senders share: in past-capacity runs on a 2-CPU VM, at 2x
    // and 4x, the paced client beside them wrote 0.29-0.71 ms late at p99
    // (three runs), and 0.19-0.40 ms without (seven).)
    stop.store(true, Ordering::SeqCst);
    for s in &streams {
        let _ = s.shutdown(std::net::Shutdown::Read);
    }
    for h in readers {
        out.merge(&h.join().map_err(|_| "a reader thread panicked".to_owned())?);
    }
    Ok(out)
}

/// Reads answers on `stream` until `stop`, matching each to its due time.
fn reader(mut stream: TcpStream, conn: &SleepConn, check: Check, sched: &Schedule, stop: &AtomicBool) -> Tally {
    let mut st = Tally::new(Wait::Sleep);
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let fail = |st: &mut Tally, why: &str| {
        eprintln!("paced client: {why}");
        st.failed_conns += 1;
        conn.dead.store(true, Ordering::SeqCst);
    };
    loop {
        // Every complete answer out of the buffer first.
        loop {
            match answer(&buf) {
                Ok(None) => break,
                Err(why) => {
                    fail(&mut st, &why);
                    return st;
                }
                Ok(Some(a)) => {
                    let now = Instant::now();
                    let Some((due, written)) = conn.inflight.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
                    else {
                        fail(&mut st, "an answer to no request");
                        return st;
                    };
                    conn.answered.fetch_add(1, Ordering::SeqCst);
                    if sched.counted(due) {
                        st.answer(check, &a, &buf, due, written, now);
                    }
                    buf.drain(..a.len);
                }
            }
        }
        if stop.load(Ordering::SeqCst) {
            return st;
        }
        match stream.read(&mut chunk) {
            // The sender ended the reading (or the server closed after
            // the end): what is still owed stays unanswered.
            Ok(0) if stop.load(Ordering::SeqCst) => return st,
            Ok(0) => {
                st.failed_conns += 1;
                conn.dead.store(true, Ordering::SeqCst);
                return st;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                st.failed_conns += 1;
                conn.dead.store(true, Ordering::SeqCst);
                return st;
            }
        }
    }
}

// ------------------------------------------------------------------ answers

/// One whole answer at the start of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    /// Its bytes, head and body.
    len: usize,
    /// Its status.
    status: u16,
    /// Where its body lies (still chunked, if it was sent so).
    body: std::ops::Range<usize>,
}

/// The first whole answer in `buf`, if one is there. Its body is framed by
/// `Content-Length` or chunked (without trailer fields), or is absent (1xx,
/// 204, 304); an answer that runs to the close cannot be one of several on
/// a connection, and is an error.
fn answer(buf: &[u8]) -> Result<Option<Answer>, String> {
    let Some(head_end) = find(buf, b"\r\n\r\n").map(|i| i + 4) else {
        return if buf.len() > HEAD_LIMIT { Err("response head too long".into()) } else { Ok(None) };
    };
    let resp = parse_head(&buf[..head_end - 4])?;
    let status = resp.status;
    if status / 100 == 1 || status == 204 || status == 304 {
        return Ok(Some(Answer { len: head_end, status, body: head_end..head_end }));
    }
    if resp.header("Transfer-Encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        let mut at = head_end;
        loop {
            let Some(eol) = find(&buf[at..], b"\r\n") else { return Ok(None) };
            let line = String::from_utf8_lossy(&buf[at..at + eol]);
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size: {size_text:?}"))?;
            at += eol + 2;
            if size == 0 {
                return Ok((buf.len() >= at + 2).then(|| Answer { len: at + 2, status, body: head_end..at + 2 }));
            }
            if buf.len() < at + size + 2 {
                return Ok(None);
            }
            at += size + 2;
        }
    }
    let len: usize = match resp.header("Content-Length") {
        Some(v) => v.parse().map_err(|_| format!("bad Content-Length: {v:?}"))?,
        None => return Err(format!("a {status} answer framed by the close")),
    };
    Ok((buf.len() >= head_end + len).then(|| Answer { len: head_end + len, status, body: head_end..head_end + len }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server on 127.0.0.1 answering every `GET /` on every connection
    /// with `answer`, one thread per connection, until the client leaves.
    fn serve(answer: &'static [u8], conns: usize) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for _ in 0..conns {
                let Ok((mut s, _)) = l.accept() else { return };
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                std::thread::spawn(move || {
                    let mut pending = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while let Ok(k @ 1..) = s.read(&mut chunk) {
                        pending.extend_from_slice(&chunk[..k]);
                        while let Some(i) = find(&pending, b"\r\n\r\n") {
                            pending.drain(..i + 4);
                            if s.write_all(answer).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    fn plan(addr: SocketAddr, conns: usize, rate: u32, ms: u64) -> Plan {
        Plan::hello(addr, conns, rate, Duration::from_millis(ms))
    }

    #[test]
    fn every_due_request_is_answered_and_timed() {
        let addr = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!", 3);
        let r = run(&plan(addr, 3, 1000, 300)).unwrap();
        assert_eq!((r.due(), r.ok(), r.errors()), (300, 300, 0));
        assert!(r.latency.quantile(1.0).unwrap() > Duration::ZERO);
    }

    #[test]
    fn wrong_answers_and_missing_ones_are_errors() {
        let addr = serve(b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\nHello, World!", 2);
        let r = run(&plan(addr, 2, 1000, 100)).unwrap();
        assert_eq!((r.due(), r.ok(), r.errors()), (100, 0, 100));
        // A server that never answers: every request is still due, and
        // failed once the drain second is over.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let t0 = Instant::now();
        let r = run(&plan(silent.local_addr().unwrap(), 2, 1000, 100)).unwrap();
        assert_eq!((r.due(), r.ok(), r.errors()), (100, 0, 100));
        assert!(t0.elapsed() < Duration::from_secs(3), "bounded by the drain second");
    }

    #[test]
    fn sleeping_senders_count_only_after_the_warm_up() {
        let addr = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!", 4);
        let mut p = plan(addr, 2, 1000, 400);
        p.wait = Wait::Sleep;
        p.threads = 2;
        p.warmup = Duration::from_millis(100);
        p.check = Check::Success;
        let r = run(&p).unwrap();
        assert_eq!((r.due(), r.answered, r.errors(), r.failed_conns), (300, 300, 0, 0));
        assert_eq!((r.latency.len(), r.service.len(), r.lag.len()), (300, 300, 300));
    }

    #[test]
    fn sleeping_readers_blocked_on_a_silent_server_end_with_the_drain() {
        // Nothing is ever answered: each reader blocks in its read until
        // the sender ends the reading after the drain second.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut p = plan(silent.local_addr().unwrap(), 3, 1000, 100);
        p.wait = Wait::Sleep;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(run(&p));
        });
        let r = rx.recv_timeout(Duration::from_secs(10)).expect("the run ends after its drain").unwrap();
        assert_eq!((r.due(), r.ok(), r.errors(), r.failed_conns), (100, 0, 100, 0));
    }

    #[test]
    fn answers_are_split_at_their_length() {
        let one = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!";
        let mut two = one.to_vec();
        two.extend_from_slice(one);
        let end = |b: &[u8]| answer(b).map(|a| a.map(|a| a.len)).map_err(|_| ());
        assert_eq!(end(&two), Ok(Some(one.len())));
        assert_eq!(end(&one[..one.len() - 1]), Ok(None));
        assert_eq!(end(b"HTTP/1.1 200 OK\r\n"), Ok(None));
        assert_eq!(end(b"HTTP/1.1 200 OK\r\n\r\n"), Err(()), "no Content-Length");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n";
        assert_eq!(end(chunked), Ok(Some(chunked.len())));
        assert_eq!(end(&chunked[..chunked.len() - 1]), Ok(None));
        assert_eq!(end(b"HTTP/1.1 204 No Content\r\n\r\nX"), Ok(Some(27)));
    }
}
