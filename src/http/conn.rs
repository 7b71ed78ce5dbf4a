//! The per-connection protocol state machine and the per-worker state it
//! shares with every connection.

use std::mem::{self, MaybeUninit};
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::access::{AccessLog, Entry};
use super::body::{BodyFlow, BodyPlan, BodyReader};
use super::chunked::Decoder;
use super::date::DateCache;
use super::defer::{Completion, Completions, Outcome};
use super::fields::{framing, version_status};
use super::file::{self, FileBody, FileOut, Plan};
use super::request::{Headers, Request, Version};
use super::response::{fmt_u64, reason, Kind, Response};
use super::scan::{quick_check, HeadScan, Scan};
use super::stream::{self as body_stream, frame_chunk, LAST_CHUNK, STREAM_OUTPUT_ROOM};
use super::upgrade::{UpgradeFn, UpgradePermit};
use super::Handler;
use crate::config::{Limits, Timeouts};
use crate::ipc::{Counter, Counters};

/// Output not yet sent beyond which a driver stops reading from the
/// connection: a client that does not read its responses stops being read.
pub const OUTPUT_HIGH_WATER: usize = 256 * 1024;

/// How long a draining worker keeps an idle keep-alive connection open: a
/// request already on the wire gets its answer (with `Connection: close`)
/// instead of a closed connection.
pub const DRAIN_IDLE_GRACE_MS: u64 = 200;

/// Buffers larger than this are freed instead of kept for reuse.
const POOL_MAX_CAPACITY: usize = 64 * 1024;
/// Most spare buffers a worker keeps.
const POOL_MAX_LEN: usize = 1024;

/// Per-worker state shared by all connections: limits, clock, `Date`
/// header, the scratch response and a pool of spare buffers (so that idle
/// connections hold none and busy ones allocate none).
#[derive(Debug)]
pub struct Shared {
    limits: Limits,
    header_ms: u64,
    idle_ms: u64,
    start: Instant,
    /// When the current loop turn began (read once per turn, in
    /// [`Shared::tick`]).
    turn_at: Instant,
    now_ms: u64,
    /// Requests answered at once during this turn, whose latency is
    /// counted by [`Shared::end_turn`] with one clock read for all.
    answered: u64,
    date: DateCache,
    res: Response,
    pool: Vec<Vec<u8>>,
    draining: bool,
    /// The worker's counters in shared memory, when it has any.
    counters: Option<&'static Counters>,
    /// Bytes of request bodies the worker's connections hold or have been
    /// promised (a declared `Content-Length` still arriving), against
    /// [`Limits::max_buffered_bodies`].
    body_bytes: usize,
    /// Where responders send their completions.
    completions: Arc<Completions>,
    /// Deferred responses the worker waits on, against
    /// [`Limits::max_deferred`].
    deferred: usize,
    /// [`Timeouts::deferred`] in milliseconds.
    deferred_ms: u64,
    /// Upgraded connections the worker holds, against
    /// [`Limits::max_upgraded`]: counted from the `101` until the user's
    /// side drops the connection, on whatever thread.
    upgraded: Arc<AtomicUsize>,
    /// The access log, when there is one: lines are added as responses
    /// are framed and written once per turn ([`Shared::end_turn`]).
    access: Option<Box<AccessLog>>,
    /// The access log's client addresses by socket number, each with the
    /// token of the connection it was read for (a socket number is reused,
    /// a token is not): one `getpeername` per connection, not per request.
    peers: Vec<(u64, Box<str>)>,
}

impl Shared {
    /// State for one worker.
    pub fn new(limits: Limits, timeouts: Timeouts) -> Shared {
        let mut limits = limits;
        limits.max_headers = limits.max_headers.min(Limits::HEADERS_CAP);
        // Until a driver sets one whose wake-up reaches its loop.
        let completions = Arc::new(Completions::new(|| {}));
        let mut res = Response::new();
        res.set_queue(completions.clone());
        Shared {
            limits,
            header_ms: millis(timeouts.header),
            idle_ms: millis(timeouts.idle),
            start: Instant::now(),
            turn_at: Instant::now(),
            now_ms: 0,
            answered: 0,
            date: DateCache::new(),
            res,
            pool: Vec::new(),
            draining: false,
            counters: None,
            body_bytes: 0,
            completions,
            deferred: 0,
            deferred_ms: millis(timeouts.deferred),
            upgraded: Arc::default(),
            access: None,
            peers: Vec::new(),
        }
    }

    /// Refreshes the clock and the `Date` header; drivers call it once per
    /// loop turn.
    pub fn tick(&mut self) {
        let now = Instant::now();
        self.turn_at = now;
        self.now_ms = now.duration_since(self.start).as_millis() as u64;
        self.date.refresh();
        if let Some(c) = self.counters {
            c.beat();
        }
    }

    /// Counts the latency of the requests answered during this turn, all
    /// at once (one clock read); drivers call it once per turn, after the
    /// work of the turn and before they wait again.
    #[inline]
    pub fn end_turn(&mut self) {
        if let Some(log) = &mut self.access {
            log.flush();
        }
        if self.answered == 0 {
            return;
        }
        if let Some(c) = self.counters {
            c.observe_latency(self.turn_at.elapsed().as_micros() as u64, self.answered);
        }
        self.answered = 0;
    }

    /// Makes sure the access log's text of the client's address for the
    /// connection (`socket`, `token`) is in `peers`, read once per
    /// connection; returns its index there.
    fn cache_peer(&mut self, socket: RawFd, token: u64) -> Option<usize> {
        let i = usize::try_from(socket).ok()?;
        if self.peers.get(i).is_some_and(|(t, _)| *t == token) {
            return Some(i);
        }
        let text: Box<str> = match crate::sys::peer_name(socket) {
            Some(crate::sys::SockName::Ip(a)) => a.ip().to_string().into(),
            Some(crate::sys::SockName::Unix(_)) => "unix:".into(),
            None => "-".into(),
        };
        if i >= self.peers.len() {
            self.peers.resize(i + 1, (u64::MAX, Box::from("")));
        }
        self.peers[i] = (token, text);
        Some(i)
    }

    /// Logs every answered request to `log` from now on.
    pub fn set_access_log(&mut self, log: AccessLog) {
        self.access = Some(Box::new(log));
    }

    /// Milliseconds since the worker started, as of the last [`Shared::tick`].
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// From now on every response closes its connection.
    pub fn set_draining(&mut self) {
        self.draining = true;
    }

    /// Whether the worker is draining.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Counts requests, responses and protocol errors into `counters` from
    /// now on (the worker's page in shared memory, read by the master).
    pub fn set_counters(&mut self, counters: &'static Counters) {
        self.counters = Some(counters);
    }

    /// Counts an accepted connection.
    pub(crate) fn count_accept(&self) {
        if let Some(c) = self.counters {
            c.connection_opened();
        }
    }

    /// Counts a closed connection.
    pub(crate) fn count_close(&self) {
        if let Some(c) = self.counters {
            c.connection_closed();
        }
    }

    /// Counts bytes received and sent.
    pub(crate) fn count_bytes(&self, received: usize, sent: usize) {
        if let Some(c) = self.counters {
            if received > 0 {
                c.add(Counter::BytesIn, received as u64);
            }
            if sent > 0 {
                c.add(Counter::BytesOut, sent as u64);
            }
        }
    }

    /// Makes responders send their completions to `completions` (whose
    /// wake-up the driver watches).
    pub(crate) fn set_completions(&mut self, completions: Arc<Completions>) {
        self.res.set_queue(completions.clone());
        self.completions = completions;
    }

    /// Takes the completed deferred responses queued so far into `batch`
    /// (which must be empty; it keeps its capacity between turns).
    pub fn take_completions(&self, batch: &mut Vec<Completion>) {
        debug_assert!(batch.is_empty());
        self.completions.take(batch);
    }

    /// Gives back a buffer that [`Conn::take_output`] handed out.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > POOL_MAX_CAPACITY || self.pool.len() >= POOL_MAX_LEN {
            return;
        }
        buf.clear();
        self.pool.push(buf);
    }

    /// How long an idle connection may wait.
    fn idle_wait(&self) -> u64 {
        if self.draining {
            self.idle_ms.min(DRAIN_IDLE_GRACE_MS)
        } else {
            self.idle_ms
        }
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_default()
    }
}

/// Runs a stream's ready callback on the loop; a panic in it is logged.
fn run_ready(f: Box<dyn FnOnce() + Send>) {
    if panic::catch_unwind(AssertUnwindSafe(f)).is_err() {
        log::error!("a stream's ready callback panicked");
    }
}

/// A timeout in milliseconds, capped so that `now + timeout` cannot
/// overflow: `Duration::MAX` means "never".
fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX / 4)) as u64
}

/// Where the connection is in the request cycle.
#[derive(Debug)]
enum State {
    /// Between requests, or inside a head that is not complete yet.
    Head,
    /// The head (kept in `held[..head_len]`) is complete; its body is being
    /// received into `held[head_len..]`.
    Body(Body),
    /// No further input is processed: the last response carries
    /// `Connection: close` or the peer is gone.
    Closed,
    /// A `101` is framed: input received from now on is kept, untouched,
    /// for the hand-over of the connection ([`Conn::take_upgrade`]).
    Upgrade,
}

/// The reader of a streamed body.
struct Reader(Box<dyn BodyReader>);

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reader(..)")
    }
}

/// What takes an upgraded connection, and the connection's place under
/// [`Limits::max_upgraded`] (given back if it closes before the hand-over).
struct Takeover(UpgradeFn, UpgradePermit);

impl std::fmt::Debug for Takeover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Takeover(..)")
    }
}

#[derive(Debug)]
enum Body {
    /// Bytes of a `Content-Length` body still to come.
    Length(u64),
    /// A chunked body.
    Chunked(Decoder),
}

/// One connection's protocol state: bytes in through [`Conn::on_read`],
/// response bytes out through [`Conn::output`] or [`Conn::take_output`].
#[derive(Debug)]
pub struct Conn {
    /// Received bytes not yet consumed: the start of an incomplete head.
    pending: Vec<u8>,
    /// How far the incomplete head at the front of `pending` was scanned,
    /// so that each read costs what its own bytes cost.
    scan: HeadScan,
    /// Framed responses not yet sent, from `out_pos` on.
    out: Vec<u8>,
    /// Bytes at the front of `out` already sent.
    out_pos: usize,
    state: State,
    /// When the connection's current wait ends, in [`Shared::now_ms`] time.
    deadline: u64,
    /// The driver's token for this connection, carried by its responders.
    token: u64,
    /// What only a request with a body, a deferred, streamed or file
    /// response, or an upgrade needs; made the first time one comes and
    /// kept for the connection's life. An idle keep-alive connection that
    /// only ever served whole responses has none, and stays this small.
    busy: Option<Box<Busy>>,
    /// The connection's socket (for [`Request::peer_addr`]); -1 if none.
    socket: RawFd,
    /// The deadline is the header timer, which more bytes do not extend.
    header_timer: bool,
    /// The peer sent its last byte; requests held back by the high-water
    /// mark are still answered, then the connection closes.
    peer_done: bool,
    /// Input was closed where more of it may follow or was already
    /// received and dropped (a refused request, bytes after the last
    /// answered one): closing the socket at once could then send a reset
    /// that destroys the last response, so the driver lingers.
    unread: bool,
}

/// The part of a [`Conn`] that requests with bodies and responses other
/// than whole bytes use.
#[derive(Debug, Default)]
struct Busy {
    /// The head of the request whose body is arriving, then the body.
    held: Vec<u8>,
    /// Length of the head at the front of `held`.
    head_len: usize,
    /// This connection's share of [`Shared`]'s body budget.
    body_charged: usize,
    /// Requests deferred on this connection so far (the last one's number).
    deferred_seq: u64,
    /// The deferred request the connection waits on: no later request is
    /// answered before it.
    awaiting: Option<Box<Awaiting>>,
    /// The reader of the body being streamed (in [`State::Body`]); `None`
    /// when the body is collected whole.
    reader: Option<Reader>,
    /// Bodies streamed on this connection so far (the current one's
    /// number, which its [`super::Resume`] carries).
    body_seq: u64,
    /// The reader paused the body: nothing more is delivered or read until
    /// it resumes.
    body_paused: bool,
    /// What takes the connection once its `101` is sent.
    takeover: Option<Takeover>,
    /// The streamed body being sent: no later request is answered before
    /// it ends.
    stream: Option<Box<Streaming>>,
    /// The file body being sent, after `out`: no later request is answered
    /// before it is out.
    file: Option<Box<FileOut>>,
}

/// A streamed body in progress.
#[derive(Debug)]
struct Streaming {
    /// What the writer and the loop share.
    shared: Arc<body_stream::Shared>,
    /// Framed as chunks (HTTP/1.1); else the bytes as they are, ended by
    /// the close (HTTP/1.0).
    chunked: bool,
    /// The connection closes after it.
    close: bool,
}

/// How to frame one answer: what the request said.
struct Answer<'r> {
    /// HEAD: the body is measured, not sent.
    head_only: bool,
    /// The connection closes after it.
    close: bool,
    /// An HTTP/1.0 client that asked for keep-alive.
    keep_alive_10: bool,
    /// The request was HTTP/1.0 (no chunked framing).
    http10: bool,
    /// A GET or HEAD whose `Range`, `If-Range` and `If-Modified-Since`
    /// apply to a file body (the handler's own response only).
    conditional: Option<Conditional<'r>>,
}

/// The fields of a request that decide how a file is answered.
struct Conditional<'r> {
    range: Option<&'r [u8]>,
    if_range: Option<&'r [u8]>,
    if_modified_since: Option<&'r [u8]>,
}

/// A deferred request being waited on, with what its framing needs.
#[derive(Debug)]
struct Awaiting {
    /// Its number on the connection.
    seq: u64,
    /// HEAD: the body is measured, not sent.
    head_only: bool,
    /// The connection closes after it.
    close: bool,
    /// An HTTP/1.0 client that asked for keep-alive.
    keep_alive_10: bool,
    /// The start of the turn that took the request in.
    since: Instant,
    /// What the access log says of the request, kept until it is answered
    /// (only when there is an access log).
    logged: Option<Box<LoggedRequest>>,
    /// The request was HTTP/1.0.
    http10: bool,
}

/// What an access log line says of its request, borrowed from the request
/// or from a deferred request's [`LoggedRequest`].
struct LineRequest<'a> {
    method: &'a str,
    target: &'a str,
    version: &'static str,
    referer: Option<&'a [u8]>,
    user_agent: Option<&'a [u8]>,
}

impl<'a> LineRequest<'a> {
    fn of(r: &'a Request<'_>) -> LineRequest<'a> {
        LineRequest {
            method: r.method,
            target: r.target,
            version: version_text(r.version),
            referer: r.header("referer"),
            user_agent: r.header("user-agent"),
        }
    }
}

/// A deferred request's fields for its access log line.
#[derive(Debug)]
struct LoggedRequest {
    method: String,
    target: String,
    version: &'static str,
    referer: Option<Vec<u8>>,
    user_agent: Option<Vec<u8>>,
}

impl LoggedRequest {
    fn line(&self) -> LineRequest<'_> {
        LineRequest {
            method: &self.method,
            target: &self.target,
            version: self.version,
            referer: self.referer.as_deref(),
            user_agent: self.user_agent.as_deref(),
        }
    }
}

/// Outcome of trying to parse a head at the front of a buffer.
enum Head {
    /// More bytes are needed.
    Partial,
    /// A request was answered or its body is awaited; this many bytes were
    /// consumed.
    Done(usize),
    /// Answer with this status and close.
    Fail(u16),
}

impl Conn {
    /// A freshly accepted connection; its first request must arrive within
    /// the header timeout.
    pub fn new(sh: &Shared) -> Conn {
        Conn {
            pending: Vec::new(),
            scan: HeadScan::default(),
            out: Vec::new(),
            out_pos: 0,
            state: State::Head,
            deadline: sh.now_ms + sh.header_ms,
            token: 0,
            busy: None,
            socket: -1,
            header_timer: true,
            peer_done: false,
            unread: false,
        }
    }

    /// Processes received bytes: every complete request is answered by
    /// `handler`, in order, and its response appended to the output.
    pub fn on_read<H: Handler>(&mut self, data: &[u8], sh: &mut Shared, handler: &mut H) {
        if matches!(self.state, State::Closed) {
            self.unread |= !data.is_empty();
            return;
        }
        if self.pending.is_empty() && !self.paused() {
            // Fast path: parse straight from the receive buffer.
            let used = self.process(data, sh, handler);
            if used < data.len() && !matches!(self.state, State::Closed) {
                if self.pending.capacity() == 0 {
                    self.pending = sh.buffer();
                }
                self.pending.extend_from_slice(&data[used..]);
            }
        } else {
            if self.pending.capacity() == 0 {
                self.pending = sh.buffer();
            }
            self.pending.extend_from_slice(data);
            self.run_pending(sh, handler);
        }
        self.settle(sh);
    }

    /// Answers requests held back while the output was above
    /// [`OUTPUT_HIGH_WATER`]; drivers call it when the output has dropped
    /// below and [`Conn::has_pending_input`] says there is something.
    pub fn resume<H: Handler>(&mut self, sh: &mut Shared, handler: &mut H) {
        if matches!(self.state, State::Closed) || self.pending.is_empty() || self.paused() {
            return;
        }
        self.run_pending(sh, handler);
        self.settle(sh);
    }

    /// Received bytes not processed yet: an incomplete head, or requests
    /// held back because the output is above [`OUTPUT_HIGH_WATER`].
    pub fn has_pending_input(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The output is too large to answer more requests: one read of
    /// pipelined requests must not turn into unbounded output.
    fn paused(&self) -> bool {
        self.busy_answering() || self.body_paused() || self.output_len() >= OUTPUT_HIGH_WATER
    }

    /// The busy part, made the first time it is needed.
    fn busy(&mut self) -> &mut Busy {
        self.busy.get_or_insert_with(Box::default)
    }

    /// The reader of a streamed body paused it.
    fn body_paused(&self) -> bool {
        self.busy.as_ref().is_some_and(|b| b.body_paused)
    }

    /// The streamed body being sent.
    fn stream(&self) -> Option<&Streaming> {
        self.busy.as_ref()?.stream.as_deref()
    }

    /// Whether a deferred request is awaited.
    fn awaiting(&self) -> bool {
        self.busy.as_ref().is_some_and(|b| b.awaiting.is_some())
    }

    /// A deferred, streamed or file response is under way: later requests
    /// wait.
    #[inline]
    fn busy_answering(&self) -> bool {
        self.busy.as_ref().is_some_and(|b| b.awaiting.is_some() || b.stream.is_some() || b.file.is_some())
    }

    /// Sets the driver's token for this connection (its responders carry
    /// it back); drivers call it right after [`Conn::new`].
    pub fn set_token(&mut self, token: u64) {
        self.token = token;
    }

    /// Sets the connection's socket, which a handler's
    /// [`Request::peer_addr`] asks for the addresses.
    pub fn set_socket(&mut self, socket: RawFd) {
        self.socket = socket;
    }

    /// Whether the driver should read more input: not while a deferred
    /// request is awaited and a head's worth of later input waits already.
    /// Nor while a streamed body is paused by its reader (flow control:
    /// the client's send blocks once the kernel's buffers are full), nor
    /// once a `101` is framed (the rest is the new protocol's).
    pub fn wants_input(&self, sh: &Shared) -> bool {
        if self.body_paused() || matches!(self.state, State::Upgrade) {
            return false;
        }
        !self.busy_answering() || self.pending.len() < sh.limits.max_head
    }

    /// The `101` of an upgrade is framed and no output is left here: the
    /// driver hands the connection over ([`Conn::take_upgrade`]) once its
    /// own sends are done and nothing is in flight on the socket.
    pub fn upgrade_ready(&self) -> bool {
        matches!(self.state, State::Upgrade) && !self.has_output()
    }

    /// Takes what the handler gave to take an upgraded connection, the
    /// bytes received after the request head, and the connection's place
    /// under [`Limits::max_upgraded`] (for the [`super::Upgraded`]); the
    /// connection then processes nothing more. `None` unless
    /// [`Conn::upgrade_ready`].
    pub fn take_upgrade(&mut self) -> Option<(UpgradeFn, Vec<u8>, UpgradePermit)> {
        if !self.upgrade_ready() {
            return None;
        }
        let take = self.busy.as_mut()?.takeover.take()?;
        self.state = State::Closed;
        Some((take.0, mem::take(&mut self.pending), take.1))
    }

    /// Answers the deferred request `seq` with `outcome` (a completion the
    /// driver took from [`Shared::take_completions`] for this connection),
    /// then the requests that waited behind it. Returns false when the
    /// completion is stale (the request was answered at its deadline).
    ///
    /// A resume of a paused body ([`super::Resume`]) lets the body go on.
    pub fn complete<H: Handler>(&mut self, completion: Completion, sh: &mut Shared, handler: &mut H) -> bool {
        if let Outcome::Resume = completion.outcome {
            let Some(b) = self.busy.as_mut().filter(|b| b.body_seq == completion.seq && b.body_paused) else {
                return false;
            };
            if matches!(self.state, State::Closed) {
                return false;
            }
            b.body_paused = false;
            self.run_pending(sh, handler);
            self.settle(sh);
            return true;
        }
        if let Outcome::Stream(shared) = &completion.outcome {
            // A stream's writer did something: only the stream this
            // connection serves now is taken from.
            if !self.stream().is_some_and(|s| Arc::ptr_eq(&s.shared, shared)) {
                return false;
            }
            self.refill(sh);
            if !self.busy_answering() && !matches!(self.state, State::Closed) {
                self.run_pending(sh, handler);
            }
            self.settle(sh);
            return true;
        }
        let Some(a) = self.busy.as_mut().and_then(|b| b.awaiting.take_if(|a| a.seq == completion.seq)) else {
            return false;
        };
        sh.deferred -= 1;
        let mut res = match completion.outcome {
            Outcome::Done(res) => res,
            Outcome::Resume => unreachable!("resumes are handled above"),
            Outcome::Stream(_) => unreachable!("handled above"),
            Outcome::Dropped => {
                log::error!("a deferred response's responder was dropped unsent; answering 500");
                let mut res = Response::new();
                res.set_error(500);
                res
            }
        };
        let close = a.close || res.wants_close() || sh.draining;
        let answer = Answer {
            head_only: a.head_only,
            close,
            keep_alive_10: a.keep_alive_10 && !close,
            http10: a.http10,
            conditional: None,
        };
        if let Some(c) = sh.counters {
            // The cached time of this turn: no clock read.
            c.observe_latency(sh.turn_at.saturating_duration_since(a.since).as_micros() as u64, 1);
        }
        let bytes = (!a.head_only && res.is_bytes()).then(|| res.body_len());
        if res.is_bytes() {
            if let Some(c) = sh.counters {
                c.response(res.status_code());
            }
            let mut out = self.take_out_buf(sh);
            res.write_to(&mut out, sh.date.get(), a.head_only, close, answer.keep_alive_10);
            self.out = out;
            if close {
                self.close_after_request(sh);
            }
        } else {
            self.frame_body(&mut res, &answer, sh);
        }
        if let Some(l) = &a.logged {
            self.log_access(sh, Some(l.line()), res.status_code(), bytes, a.since);
        }
        if !matches!(self.state, State::Closed) {
            self.header_timer = false;
            self.run_pending(sh, handler);
        }
        self.settle(sh);
        true
    }

    /// The connection's deadline passed. Returns true when it must close
    /// now; false when it answered a deferred request `504` instead (and
    /// closes once that is sent).
    pub fn on_deadline(&mut self, sh: &mut Shared) -> bool {
        if !self.awaiting() {
            // A stream whose writer is quiet (nothing left to send) waits
            // on the writer, not on the client: server-sent events may be
            // minutes apart.
            if self.stream().is_some() && !self.has_output() {
                self.deadline = sh.now_ms + sh.idle_ms;
                return false;
            }
            return true;
        }
        self.busy().awaiting = None;
        sh.deferred -= 1;
        log::debug!("a deferred response took too long; answering 504");
        self.fail(504, sh);
        false
    }

    /// Processes `pending`, unless paused. An incomplete head at its front
    /// is only scanned on from where the last read left it.
    fn run_pending<H: Handler>(&mut self, sh: &mut Shared, handler: &mut H) {
        if self.paused() {
            return;
        }
        let buf = mem::take(&mut self.pending);
        let used = self.process(&buf, sh, handler);
        self.pending = buf;
        if used > 0 {
            self.pending.drain(..used);
        }
        if self.pending.is_empty() {
            sh.recycle(mem::take(&mut self.pending));
        }
    }

    /// Frees what a closed connection no longer needs and re-arms the timer.
    fn settle(&mut self, sh: &mut Shared) {
        // After the peer's end, only complete requests held back by the
        // high-water mark are worth keeping; once they are answered (or if
        // there are none) the connection is done.
        if self.peer_done && !self.paused() && !matches!(self.state, State::Upgrade) {
            self.close_input(sh);
        }
        if matches!(self.state, State::Closed) && !self.pending.is_empty() {
            sh.recycle(mem::take(&mut self.pending));
        }
        self.rearm(sh);
    }

    /// The peer will send nothing more. A request cut short gets no answer;
    /// output already framed is still sent, then the connection closes.
    pub fn on_eof(&mut self, sh: &mut Shared) {
        self.peer_done = true;
        self.settle(sh);
    }

    /// Output waiting to be sent.
    pub fn output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// Whether any output waits.
    pub fn has_output(&self) -> bool {
        self.out.len() > self.out_pos
    }

    /// Marks `n` bytes of [`Conn::output`] as sent.
    pub fn consume_output(&mut self, n: usize, sh: &mut Shared) {
        self.out_pos += n;
        debug_assert!(self.out_pos <= self.out.len());
        if self.out_pos >= self.out.len() {
            self.out_pos = 0;
            sh.recycle(mem::take(&mut self.out));
        }
        self.sent(sh);
        self.refill(sh);
    }

    /// Takes what a streamed body's writer queued into the output, as much
    /// as the output's room allows, and ends the stream when its writer
    /// has; a driver that sends with [`Conn::take_output`] calls it when
    /// its send is done. Requests held back by the stream are then
    /// answered through [`Conn::resume`].
    pub fn refill(&mut self, sh: &mut Shared) {
        let Some(st) = self.stream() else { return };
        let shared = st.shared.clone();
        let chunked = st.chunked;
        let room = STREAM_OUTPUT_ROOM.saturating_sub(self.output_len());
        let mut data = sh.buffer();
        let taken = shared.take(room, &mut data);
        if !data.is_empty() {
            let out = self.out_buf(sh);
            if chunked {
                frame_chunk(out, &data);
            } else {
                out.extend_from_slice(&data);
            }
        }
        sh.recycle(data);
        if taken.empty && (taken.ended || taken.aborted) {
            let st = self.busy().stream.take().expect("checked above");
            if taken.ended {
                if st.chunked {
                    self.out_buf(sh).extend_from_slice(LAST_CHUNK);
                }
                if st.close || sh.draining {
                    self.close_input(sh);
                } else {
                    self.header_timer = false;
                    self.deadline = sh.now_ms + sh.idle_wait();
                }
            } else {
                // Cut short: the client must not take it for complete.
                log::debug!("a stream was dropped before its end; closing the connection");
                self.close_input(sh);
            }
        }
        if let Some(f) = taken.ready {
            run_ready(f);
        }
    }

    /// Whether a streamed body is being sent.
    pub fn is_streaming(&self) -> bool {
        self.stream().is_some()
    }

    /// The file part of the output, once every byte before it is sent:
    /// its descriptor, the offset of its next byte and the bytes left.
    pub fn file_chunk(&self) -> Option<(BorrowedFd<'_>, u64, u64)> {
        if self.has_output() {
            return None;
        }
        self.busy.as_ref()?.file.as_ref().map(|f| (f.file.as_fd(), f.offset, f.remaining))
    }

    /// Whether a file body waits to be sent (after [`Conn::output`]).
    pub fn has_file(&self) -> bool {
        self.busy.as_ref().is_some_and(|b| b.file.is_some())
    }

    /// Marks `n` bytes of the file part as sent.
    pub fn file_sent(&mut self, n: u64, sh: &mut Shared) {
        let Some(b) = self.busy.as_mut() else { return };
        let Some(f) = &mut b.file else { return };
        let n = n.min(f.remaining);
        f.offset += n;
        f.remaining -= n;
        if f.remaining == 0 {
            let close = f.close;
            b.file = None;
            if close || sh.draining {
                self.close_input(sh);
            }
        }
        self.sent(sh);
    }

    /// The file body cannot be sent (it shrank, or reading it failed): the
    /// response cannot be completed, so the connection closes.
    pub fn file_failed(&mut self, sh: &mut Shared) {
        if self.busy.as_mut().and_then(|b| b.file.take()).is_some() {
            self.close_input(sh);
        }
    }

    /// Moves the pending output out, for a driver that must keep the bytes
    /// still while the kernel sends them. Give the buffer back with
    /// [`Shared::recycle`] and report completion with [`Conn::on_sent`].
    pub fn take_output(&mut self) -> Vec<u8> {
        let mut out = mem::take(&mut self.out);
        if self.out_pos > 0 {
            out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        out
    }

    /// A send taken with [`Conn::take_output`] progressed.
    pub fn on_sent(&mut self, sh: &Shared) {
        self.sent(sh);
    }

    fn sent(&mut self, sh: &Shared) {
        // Progress on a send restarts the wait; a connection back to idle
        // gets the idle timeout. A running header timer keeps running: the
        // client owes a head whatever the server sends.
        if !self.header_timer || self.paused() {
            self.header_timer = false;
            self.deadline = sh.now_ms + sh.idle_wait();
        }
    }

    /// The worker started draining: an idle connection closes after
    /// [`DRAIN_IDLE_GRACE_MS`] (at its deadline), a busy one after its
    /// current response, which carries `Connection: close`.
    pub fn start_drain(&mut self, sh: &Shared) {
        if let Some(st) = self.stream() {
            st.shared.set_draining();
        }
        if self.is_idle() {
            self.deadline = self.deadline.min(sh.now_ms + DRAIN_IDLE_GRACE_MS);
        }
    }

    /// Bytes of output not yet sent.
    pub fn output_len(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// No further input will be processed: once the output is sent, the
    /// connection closes.
    pub fn is_closing(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The connection is closing, and input from the client may still be
    /// unread: a refused request's remaining bytes, or requests sent after
    /// the last one answered. Closing the socket at once would then send a
    /// reset, which can destroy the last response in the client's receive
    /// buffer; a connection that closes after a complete request with
    /// nothing after it can close at once.
    pub fn may_have_unread_input(&self) -> bool {
        self.unread
    }

    /// Between requests with nothing buffered and nothing to send: a
    /// draining worker may close it at once.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head) && self.pending.is_empty() && !self.has_output() && !self.busy_answering()
    }

    /// When the connection's current wait expires, in [`Shared::now_ms`]
    /// time: header timeout while a head is incomplete (and before the
    /// first request), idle timeout otherwise.
    pub fn deadline(&self) -> u64 {
        self.deadline
    }

    /// Returns every buffer to the pool; call when the connection closes.
    pub fn release(mut self, sh: &mut Shared) {
        self.refund(sh);
        if let Some(mut b) = self.busy.take() {
            if b.awaiting.take().is_some() {
                sh.deferred -= 1;
            }
            if let Some(st) = b.stream.take() {
                if let Some(f) = st.shared.close() {
                    run_ready(f);
                }
            }
            sh.recycle(b.held);
        }
        sh.recycle(self.pending);
        sh.recycle(self.out);
    }

    /// Takes `n` more bytes of the worker's body budget for this
    /// connection; false (nothing taken) when the budget is spent.
    fn charge(&mut self, sh: &mut Shared, n: usize) -> bool {
        match sh.body_bytes.checked_add(n) {
            Some(total) if total <= sh.limits.max_buffered_bodies => {
                sh.body_bytes = total;
                self.busy().body_charged += n;
                true
            }
            _ => false,
        }
    }

    /// Gives this connection's share of the body budget back.
    fn refund(&mut self, sh: &mut Shared) {
        if let Some(b) = self.busy.as_mut() {
            sh.body_bytes -= b.body_charged;
            b.body_charged = 0;
        }
    }

    fn rearm(&mut self, sh: &Shared) {
        if self.awaiting() {
            // The deferred response's deadline, set when it was deferred.
            return;
        }
        if self.busy_answering() {
            // Sends restart it (see `sent`); a quiet stream's writer is
            // waited for (see `on_deadline`).
            self.header_timer = false;
            if self.deadline == 0 || self.deadline < sh.now_ms {
                self.deadline = sh.now_ms + sh.idle_ms;
            }
            return;
        }
        match self.state {
            // Requests held back by a large output wait on the send, not
            // on the client. Otherwise a head under way, or a header timer
            // still running (no request answered since it started, even if
            // empty lines came and went), waits on the header timer.
            State::Head if (self.header_timer || !self.pending.is_empty()) && !self.paused() => {
                self.hold_header_timer(sh);
            }
            _ => {
                self.header_timer = false;
                self.deadline = sh.now_ms + sh.idle_wait();
            }
        }
    }

    /// Starts the header timer unless it runs already; bytes that are not
    /// yet a request (a head under way, empty lines before one) never
    /// extend it.
    fn hold_header_timer(&mut self, sh: &Shared) {
        if !self.header_timer {
            self.header_timer = true;
            self.deadline = sh.now_ms + sh.header_ms;
        }
    }

    /// Runs the state machine over `buf`; returns how many bytes it used.
    /// Bytes not used are the start of an incomplete head.
    fn process<H: Handler>(&mut self, buf: &[u8], sh: &mut Shared, handler: &mut H) -> usize {
        let mut pos = 0;
        loop {
            match &mut self.state {
                State::Closed => {
                    self.unread |= pos < buf.len();
                    return buf.len();
                }
                State::Upgrade => return pos,
                State::Body(_) if self.busy.as_ref().is_some_and(|b| b.reader.is_some()) => {
                    if self.body_paused() {
                        return pos;
                    }
                    match self.stream_piece(&buf[pos..], sh) {
                        Ok((used, ended)) => {
                            pos += used;
                            if ended {
                                self.state = State::Head;
                                self.end_stream(sh);
                            } else if pos == buf.len() || self.body_paused() {
                                return pos;
                            }
                        }
                        Err(status) => {
                            self.fail(status, sh);
                            return buf.len();
                        }
                    }
                }
                State::Head => {
                    if pos == buf.len() || self.paused() {
                        return pos;
                    }
                    match self.head(&buf[pos..], sh, handler) {
                        Head::Partial => return pos,
                        Head::Done(n) => pos += n,
                        Head::Fail(status) => {
                            self.fail(status, sh);
                            return buf.len();
                        }
                    }
                }
                State::Body(body) => {
                    let input = &buf[pos..];
                    let max_body = sh.limits.max_body;
                    let b = self.busy.get_or_insert_with(Box::default);
                    let done = match body {
                        Body::Length(left) => {
                            let n = input.len().min(*left as usize);
                            b.held.extend_from_slice(&input[..n]);
                            *left -= n as u64;
                            pos += n;
                            *left == 0
                        }
                        Body::Chunked(dec) => {
                            let before = b.held.len();
                            let r = dec.decode(input, &mut b.held, max_body.saturating_add(b.head_len));
                            // A chunked body is charged as it arrives.
                            let grown = b.held.len() - before;
                            if !self.charge(sh, grown) {
                                self.fail(503, sh);
                                return buf.len();
                            }
                            match r {
                                Ok(Some(n)) => {
                                    pos += n;
                                    true
                                }
                                Ok(None) => {
                                    pos = buf.len();
                                    false
                                }
                                Err(status) => {
                                    self.fail(status, sh);
                                    return buf.len();
                                }
                            }
                        }
                    };
                    if !done {
                        return buf.len();
                    }
                    self.state = State::Head;
                    self.dispatch_held(sh, handler);
                }
            }
        }
    }

    /// Parses a head at the front of `buf` and answers it, or sets up the
    /// wait for its body.
    fn head<H: Handler>(&mut self, buf: &[u8], sh: &mut Shared, handler: &mut H) -> Head {
        // RFC 9112 §2.2: ignore empty lines before a request line. Like every
        // line of a head they end in CRLF: a bare LF is refused here, a bare
        // CR by the parser.
        let mut skip = 0;
        loop {
            match &buf[skip..] {
                [b'\r', b'\n', ..] => skip += 2,
                [b'\n', ..] => return Head::Fail(400),
                _ => break,
            }
        }
        if skip > 0 {
            // They are not a request: the header timer runs on.
            self.hold_header_timer(sh);
            return Head::Done(skip);
        }
        if buf == b"\r" {
            // Maybe the start of an empty line.
            return Head::Partial;
        }
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; Limits::HEADERS_CAP];
        let mut req = httparse::Request::new(&mut []);
        // A head seen for the first time goes to the parser at once: most
        // arrive whole, and then the scan is not needed. The rest of an
        // incomplete one is scanned first, and parsed once it ends.
        let scanned = !self.scan.is_fresh();
        let parsed = if scanned {
            match self.scan.scan(buf, &sh.limits) {
                Scan::Partial => return Head::Partial,
                Scan::Fail(status) => return Head::Fail(status),
                Scan::End(n) => req.parse_with_uninit_headers(&buf[..n], &mut slots[..sh.limits.max_headers]),
            }
        } else {
            req.parse_with_uninit_headers(buf, &mut slots[..sh.limits.max_headers])
        };
        let head_len = match parsed {
            Ok(httparse::Status::Complete(n)) => n,
            other => return self.head_unparsed(buf, other, scanned, &sh.limits),
        };
        let target = req.path.unwrap_or("");
        if !scanned && !quick_check(&buf[..head_len], target, req.headers, &sh.limits) {
            return self.head_refused(buf, &sh.limits);
        }
        let version = if req.version == Some(0) { Version::Http10 } else { Version::Http11 };
        let framing = match framing(req.headers, version) {
            Ok(f) => f,
            Err(status) => return Head::Fail(status),
        };
        let method = req.method.unwrap_or("");
        let socket = self.socket;
        // The request as handlers see it, with `body`.
        let make_request = |body| Request {
            method,
            target,
            version,
            headers: Headers { fields: req.headers },
            body,
            keep_alive: framing.keep_alive,
            socket,
        };
        if framing.chunked || framing.length.is_some_and(|len| len > 0) {
            let request = make_request(&[]);
            let plan = match panic::catch_unwind(AssertUnwindSafe(|| handler.on_head(&request))) {
                Ok(plan) => plan,
                Err(_) => {
                    log::error!("handler panicked on the head of {} {}; answering 500", request.method, target);
                    return Head::Fail(500);
                }
            };
            match plan {
                BodyPlan::Whole => {}
                BodyPlan::Refuse(res) => {
                    self.refuse(&request, res, sh);
                    return Head::Done(head_len);
                }
                BodyPlan::Stream(reader) => {
                    self.hold_head(&buf[..head_len], sh);
                    let b = self.busy();
                    b.reader = Some(Reader(reader));
                    b.body_seq += 1;
                    b.body_paused = false;
                    self.state = State::Body(match framing.length {
                        Some(len) => Body::Length(len),
                        None => Body::Chunked(Decoder::new()),
                    });
                    // The handler took the body: the client may send it.
                    if framing.expect_continue && version == Version::Http11 && buf.len() == head_len {
                        self.out_buf(sh).extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    return Head::Done(head_len);
                }
            }
        }
        if let Some(len) = framing.length {
            if len > sh.limits.max_body as u64 {
                return Head::Fail(413);
            }
            let len = len as usize;
            if buf.len() - head_len >= len {
                let request = make_request(&buf[head_len..head_len + len]);
                self.respond(&request, sh, |q, r| handler.handle(q, r));
                return Head::Done(head_len + len);
            }
        } else if !framing.chunked {
            let request = make_request(&[]);
            self.respond(&request, sh, |q, r| handler.handle(q, r));
            return Head::Done(head_len);
        }
        // The body is not all here: keep the head and collect the body
        // behind it. A declared length is charged against the worker's
        // body budget at once: beyond it the answer is 503 before any of
        // the body is read.
        if let Some(len) = framing.length {
            if !self.charge(sh, len as usize) {
                return Head::Fail(503);
            }
        }
        self.hold_head(&buf[..head_len], sh);
        self.state = State::Body(match framing.length {
            Some(len) => Body::Length(len),
            None => Body::Chunked(Decoder::new()),
        });
        if framing.expect_continue && version == Version::Http11 {
            self.out_buf(sh).extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        Head::Done(head_len)
    }

    /// The parser did not complete the head at the front of `buf`: it wants
    /// more bytes, or refuses it. `scanned` says whether the scan saw its
    /// end already.
    #[cold]
    fn head_unparsed(&mut self, buf: &[u8], parsed: httparse::Result<usize>, scanned: bool, limits: &Limits) -> Head {
        let e = match parsed {
            Ok(httparse::Status::Complete(_)) => unreachable!("a complete head is not unparsed"),
            Ok(httparse::Status::Partial) if !scanned => {
                // Remember how far it was scanned; a rule it breaks already
                // is answered now.
                return match self.scan.scan(buf, limits) {
                    Scan::Partial => Head::Partial,
                    Scan::Fail(status) => Head::Fail(status),
                    Scan::End(_) => {
                        debug_assert!(false, "the parser and the scan disagree on where a head ends");
                        Head::Fail(400)
                    }
                };
            }
            Ok(httparse::Status::Partial) => {
                debug_assert!(false, "a head the scan saw end does not parse whole");
                return Head::Fail(400);
            }
            Err(e) => e,
        };
        // A rule the scan judges may break before the parser's error: its
        // answer comes first, so that the answer does not depend on how the
        // head was cut into reads.
        if !scanned {
            match self.scan.scan(buf, limits) {
                Scan::Fail(status) => return Head::Fail(status),
                Scan::End(_) => {}
                Scan::Partial => {
                    if e == httparse::Error::Version && version_status(buf).is_none() {
                        return Head::Partial;
                    }
                    self.scan = HeadScan::default();
                }
            }
        }
        Head::Fail(match e {
            httparse::Error::TooManyHeaders => 431,
            httparse::Error::Version => version_status(buf).unwrap_or(400),
            _ => 400,
        })
    }

    /// A head the parser completed in one go failed [`quick_check`]: which
    /// rule it breaks, and so the answer, is the scan's to say.
    #[cold]
    fn head_refused(&mut self, buf: &[u8], limits: &Limits) -> Head {
        match self.scan.scan(buf, limits) {
            Scan::Fail(status) => Head::Fail(status),
            _ => {
                debug_assert!(false, "the quick check and the scan disagree");
                self.scan = HeadScan::default();
                Head::Fail(400)
            }
        }
    }

    /// Keeps `head` at the front of `held`, for its body to follow.
    fn hold_head(&mut self, head: &[u8], sh: &mut Shared) {
        let b = self.busy();
        if b.held.capacity() == 0 {
            b.held = sh.buffer();
        }
        b.held.clear();
        b.held.extend_from_slice(head);
        b.head_len = head.len();
    }

    /// Answers the request whose head and body are in `held`.
    fn dispatch_held<H: Handler>(&mut self, sh: &mut Shared, handler: &mut H) {
        self.answer_held(sh, |q, r| handler.handle(q, r));
    }

    /// Answers the request whose head (and body, when collected) is in
    /// `held` with `answer`.
    fn answer_held(&mut self, sh: &mut Shared, answer: impl FnOnce(&Request<'_>, &mut Response)) {
        let b = self.busy();
        let held = mem::take(&mut b.held);
        let head_len = mem::take(&mut b.head_len);
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; Limits::HEADERS_CAP];
        let mut req = httparse::Request::new(&mut []);
        // The head parsed and validated before; parsing it again is cheaper
        // than keeping borrowed fields alive across reads.
        if let Ok(httparse::Status::Complete(_)) =
            req.parse_with_uninit_headers(&held[..head_len], &mut slots[..sh.limits.max_headers])
        {
            let version = if req.version == Some(0) { Version::Http10 } else { Version::Http11 };
            let keep_alive = framing(req.headers, version).is_ok_and(|f| f.keep_alive);
            let request = Request {
                method: req.method.unwrap_or(""),
                target: req.path.unwrap_or(""),
                version,
                headers: Headers { fields: req.headers },
                body: &held[head_len..],
                keep_alive,
                socket: self.socket,
            };
            self.respond(&request, sh, answer);
        } else {
            debug_assert!(false, "held head no longer parses");
            self.fail(500, sh);
        }
        self.refund(sh);
        sh.recycle(held);
    }

    /// Hands the reader one piece of `input` (as much of it as the body
    /// takes); returns how many bytes were used and whether the body ended,
    /// or the status to fail with.
    fn stream_piece(&mut self, input: &[u8], sh: &mut Shared) -> Result<(usize, bool), u16> {
        let mut decoded = Vec::new();
        let (used, ended, chunked) = match &mut self.state {
            State::Body(Body::Length(left)) => {
                let n = (input.len() as u64).min(*left) as usize;
                *left -= n as u64;
                (n, *left == 0, false)
            }
            State::Body(Body::Chunked(dec)) => {
                decoded = sh.buffer();
                match dec.decode(input, &mut decoded, usize::MAX) {
                    Ok(Some(n)) => (n, true, true),
                    Ok(None) => (input.len(), false, true),
                    Err(status) => {
                        sh.recycle(decoded);
                        return Err(status);
                    }
                }
            }
            _ => unreachable!("a body is streamed only in State::Body"),
        };
        let piece = if chunked { &decoded[..] } else { &input[..used] };
        let Some(b) = self.busy.as_mut() else { unreachable!("checked by the caller") };
        let Some(Reader(reader)) = b.reader.as_mut() else { unreachable!("checked by the caller") };
        let mut flow = BodyFlow::new(Some(&sh.completions), self.token, b.body_seq);
        let outcome = if piece.is_empty() {
            Ok(())
        } else {
            panic::catch_unwind(AssertUnwindSafe(|| reader.data(piece, &mut flow)))
        };
        let (paused, stopped) = (flow.paused(), flow.stopped());
        sh.recycle(decoded);
        if outcome.is_err() {
            log::error!("a body reader panicked; answering 500");
            return Err(500);
        }
        if let Some(status) = stopped {
            return Err(status);
        }
        self.busy().body_paused = paused && !ended;
        Ok((used, ended))
    }

    /// The streamed body ended: its reader answers the request.
    fn end_stream(&mut self, sh: &mut Shared) {
        let b = self.busy();
        b.body_paused = false;
        let Some(Reader(mut reader)) = b.reader.take() else { return };
        self.answer_held(sh, |q, r| reader.end(q, r));
    }

    /// Answers a request whose body the handler refused, with `res`, and
    /// closes: the body is never read.
    fn refuse(&mut self, req: &Request<'_>, mut res: Response, sh: &mut Shared) {
        if let Some(c) = sh.counters {
            c.inc(Counter::Requests);
            c.response(res.status_code());
        }
        if sh.access.is_some() {
            let bytes = (req.method != "HEAD").then(|| res.body_len());
            self.log_access(sh, Some(LineRequest::of(req)), res.status_code(), bytes, sh.turn_at);
        }
        let mut out = self.take_out_buf(sh);
        res.write_to(&mut out, sh.date.get(), req.method == "HEAD", true, false);
        self.out = out;
        self.close_input(sh);
    }

    /// Calls `answer` (the handler) and frames its response.
    fn respond(&mut self, req: &Request<'_>, sh: &mut Shared, answer: impl FnOnce(&Request<'_>, &mut Response)) {
        // Each request gets its own header timeout: a client streaming
        // pipelined requests makes progress even if every read ends inside
        // a head.
        self.header_timer = false;
        let mut res = mem::take(&mut sh.res);
        res.reset();
        let room = sh.deferred < sh.limits.max_deferred;
        let seq = self.busy.as_ref().map_or(0, |b| b.deferred_seq) + 1;
        res.offer_deferral(room, self.token, seq);
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| answer(req, &mut res)));
        if outcome.is_ok() && res.take_deferred() {
            if room {
                self.defer(req, &mut res, sh);
                return;
            }
            log::warn!("{} deferred responses outstanding; answering 503", sh.deferred);
            res.set_error(503);
        }
        if outcome.is_err() {
            log::error!("handler panicked on {} {}; answering 500", req.method, req.target);
            res.set_error(500);
            res.close();
        }
        if let Some(take) = res.take_upgrade() {
            if self.upgrade(req, &mut res, take, sh) {
                return;
            }
        }
        let close = !req.keep_alive || res.wants_close() || sh.draining;
        let head_only = req.method == "HEAD";
        let keep_alive_10 = !close && req.version == Version::Http10;
        if !res.is_bytes() {
            if let Some(c) = sh.counters {
                c.inc(Counter::Requests);
            }
            let get = head_only || req.method == "GET";
            let answer = Answer {
                head_only,
                close,
                keep_alive_10,
                http10: req.version == Version::Http10,
                conditional: get.then(|| Conditional {
                    range: req.headers.get("range"),
                    if_range: req.headers.get("if-range"),
                    if_modified_since: req.headers.get("if-modified-since"),
                }),
            };
            self.frame_body(&mut res, &answer, sh);
            if sh.counters.is_some() {
                sh.answered += 1;
            }
            if sh.access.is_some() {
                // A stream's or a file's length is not known here.
                self.log_access(sh, Some(LineRequest::of(req)), res.status_code(), None, sh.turn_at);
            }
            sh.res = res;
            return;
        }
        if let Some(c) = sh.counters {
            c.inc(Counter::Requests);
            c.response(res.status_code());
            sh.answered += 1;
        }
        if sh.access.is_some() {
            let bytes = (!head_only).then(|| res.body_len());
            self.log_access(sh, Some(LineRequest::of(req)), res.status_code(), bytes, sh.turn_at);
        }
        let mut out = self.take_out_buf(sh);
        res.write_to(&mut out, sh.date.get(), head_only, close, keep_alive_10);
        self.out = out;
        sh.res = res;
        if close {
            self.close_after_request(sh);
        }
    }

    /// The handler answered `101` to take the connection: frames it and
    /// waits for the hand-over. False (the response is framed as any other)
    /// when it changed the status since, or when the request cannot be
    /// upgraded (then the answer is `500`, or `503` while draining or with
    /// [`Limits::max_upgraded`] connections upgraded already).
    #[cold]
    fn upgrade(&mut self, req: &Request<'_>, res: &mut Response, take: UpgradeFn, sh: &mut Shared) -> bool {
        if res.status_code() != 101 {
            return false;
        }
        if req.version != Version::Http11 || req.method == "HEAD" || req.header("upgrade").is_none() {
            log::error!(
                "{} {}: only a request with an Upgrade field can be upgraded; answering 500",
                req.method,
                req.target
            );
            res.set_error(500);
            res.close();
            return false;
        }
        if sh.draining {
            res.set_error(503);
            return false;
        }
        let Some(permit) = UpgradePermit::take(&sh.upgraded, sh.limits.max_upgraded, sh.counters) else {
            log::warn!("{} upgraded connections held; answering 503", sh.limits.max_upgraded);
            res.set_error(503);
            res.close();
            return false;
        };
        if let Some(c) = sh.counters {
            c.inc(Counter::Requests);
            c.response(101);
        }
        let mut out = self.take_out_buf(sh);
        res.write_upgrade(&mut out, sh.date.get());
        self.out = out;
        sh.res = mem::take(res);
        self.busy().takeover = Some(Takeover(take, permit));
        self.state = State::Upgrade;
        self.scan = HeadScan::default();
        true
    }

    /// Frames a response whose body is a stream or a file, and starts
    /// sending that body.
    #[cold]
    fn frame_body(&mut self, res: &mut Response, a: &Answer<'_>, sh: &mut Shared) {
        match res.take_kind() {
            Kind::Bytes => {
                if let Some(c) = sh.counters {
                    c.response(res.status_code());
                }
                let mut out = self.take_out_buf(sh);
                res.write_to(&mut out, sh.date.get(), a.head_only, a.close, a.keep_alive_10);
                self.out = out;
                if a.close {
                    self.close_input(sh);
                }
            }
            Kind::Stream(shared) => self.start_stream(res, shared, a, sh),
            Kind::File(body) => self.start_file(res, body, a, sh),
        }
    }

    /// Sends the head of a streamed response and starts taking from its
    /// queue: chunked for HTTP/1.1, ended by the close for HTTP/1.0.
    fn start_stream(&mut self, res: &mut Response, shared: Arc<body_stream::Shared>, a: &Answer<'_>, sh: &mut Shared) {
        let chunked = !a.http10;
        let close = a.close || !chunked;
        if let Some(c) = sh.counters {
            c.response(res.status_code());
        }
        let mut out = self.take_out_buf(sh);
        let bodyless = res.write_head(&mut out, sh.date.get(), None, chunked, close, a.keep_alive_10 && !close);
        self.out = out;
        if bodyless || a.head_only {
            // No body goes out: the writer learns at its first write.
            if let Some(f) = shared.close() {
                run_ready(f);
            }
            if close {
                self.close_input(sh);
            }
            return;
        }
        self.busy().stream = Some(Box::new(Streaming { shared, chunked, close }));
        self.header_timer = false;
        self.deadline = sh.now_ms + sh.idle_ms;
        self.refill(sh);
    }

    /// Sends the head of a file response (after `Range` and
    /// `If-Modified-Since`) and queues its bytes after it.
    fn start_file(&mut self, res: &mut Response, body: FileBody, a: &Answer<'_>, sh: &mut Shared) {
        let plan = match &a.conditional {
            Some(c) if res.status_code() == 200 => {
                file::plan(c.range, c.if_range, c.if_modified_since, body.total, body.mtime)
            }
            _ => Plan::Whole,
        };
        let mut num = [0u8; 20];
        let (start, len) = match plan {
            Plan::Whole => (0, body.total),
            Plan::Part { start, len } => {
                res.status(206);
                let mut v = b"bytes ".to_vec();
                v.extend_from_slice(fmt_u64(start, &mut num));
                v.push(b'-');
                v.extend_from_slice(fmt_u64(start + len - 1, &mut num));
                v.push(b'/');
                v.extend_from_slice(fmt_u64(body.total, &mut num));
                res.runtime_header("Content-Range", &v);
                (start, len)
            }
            Plan::NotModified => {
                res.status(304);
                (0, 0)
            }
            Plan::Unsatisfiable => {
                res.set_error(416);
                let mut v = b"bytes */".to_vec();
                v.extend_from_slice(fmt_u64(body.total, &mut num));
                res.runtime_header("Content-Range", &v);
                if let Some(c) = sh.counters {
                    c.response(416);
                }
                let mut out = self.take_out_buf(sh);
                res.write_to(&mut out, sh.date.get(), a.head_only, a.close, a.keep_alive_10);
                self.out = out;
                if a.close {
                    self.close_input(sh);
                }
                return;
            }
        };
        if plan != Plan::NotModified {
            res.runtime_header("Accept-Ranges", b"bytes");
        }
        if let Some(mtime) = body.mtime {
            let mut date = [0u8; 29];
            super::date::format_imf(mtime, &mut date);
            res.runtime_header("Last-Modified", &date);
        }
        if let Some(c) = sh.counters {
            c.response(res.status_code());
        }
        let mut out = self.take_out_buf(sh);
        let bodyless = res.write_head(&mut out, sh.date.get(), Some(len), false, a.close, a.keep_alive_10);
        self.out = out;
        if !bodyless && !a.head_only && len > 0 {
            self.busy().file =
                Some(Box::new(FileOut { file: body.file, offset: start, remaining: len, close: a.close }));
            self.header_timer = false;
            self.deadline = sh.now_ms + sh.idle_ms;
        } else if a.close {
            self.close_input(sh);
        }
    }

    /// Waits for the responder the handler took for `req`.
    fn defer(&mut self, req: &Request<'_>, res: &mut Response, sh: &mut Shared) {
        let b = self.busy();
        b.deferred_seq += 1;
        let seq = b.deferred_seq;
        sh.deferred += 1;
        if let Some(c) = sh.counters {
            c.inc(Counter::Requests);
        }
        let close = !req.keep_alive || res.wants_close() || sh.draining;
        self.busy().awaiting = Some(Box::new(Awaiting {
            seq,
            head_only: req.method == "HEAD",
            close,
            keep_alive_10: !close && req.version == Version::Http10,
            since: sh.turn_at,
            logged: sh.access.is_some().then(|| {
                Box::new(LoggedRequest {
                    method: req.method.to_owned(),
                    target: req.target.to_owned(),
                    version: version_text(req.version),
                    referer: req.header("referer").map(<[u8]>::to_vec),
                    user_agent: req.header("user-agent").map(<[u8]>::to_vec),
                })
            }),
            http10: req.version == Version::Http10,
        }));
        self.deadline = sh.now_ms + sh.deferred_ms;
        self.header_timer = false;
        // What the handler put in it is dropped; the scratch goes back.
        res.reset();
        sh.res = mem::take(res);
    }

    /// Answers with an error status and closes.
    fn fail(&mut self, status: u16, sh: &mut Shared) {
        log::debug!("request rejected: {status} {}", reason(status));
        if let Some(c) = sh.counters {
            c.inc(Counter::ParseErrors);
            c.response(status);
        }
        let mut res = mem::take(&mut sh.res);
        res.set_error(status);
        if sh.access.is_some() {
            self.log_access(sh, None, status, Some(res.body_len()), sh.turn_at);
        }
        let mut out = self.take_out_buf(sh);
        res.write_to(&mut out, sh.date.get(), false, true, false);
        self.out = out;
        sh.res = res;
        self.close_input(sh);
    }

    /// Adds the access log's line for an answered request (`None`: one
    /// refused before its head could be read). Only called when there is
    /// an access log.
    #[cold]
    fn log_access(
        &self,
        sh: &mut Shared,
        req: Option<LineRequest<'_>>,
        status: u16,
        bytes: Option<usize>,
        since: Instant,
    ) {
        let micros = since.elapsed().as_micros() as u64;
        let at = sh.cache_peer(self.socket, self.token);
        let peer = at.map_or("-", |i| &*sh.peers[i].1);
        if let Some(log) = &mut sh.access {
            log.record(&Entry {
                peer,
                request: req.as_ref().map(|r| (r.method, r.target, r.version)),
                status,
                bytes,
                referer: req.as_ref().and_then(|r| r.referer),
                user_agent: req.as_ref().and_then(|r| r.user_agent),
                micros,
            });
        }
    }

    /// Closes the input right after a complete request was answered:
    /// nothing of the client's is left unread unless later bytes are
    /// already buffered (or arrive).
    fn close_after_request(&mut self, sh: &mut Shared) {
        let unread = self.unread || !self.pending.is_empty();
        self.close_input(sh);
        self.unread = unread;
    }

    /// Closes the input where more of it may follow (see [`Conn::unread`]).
    fn close_input(&mut self, sh: &mut Shared) {
        self.unread = !self.peer_done;
        self.refund(sh);
        self.state = State::Closed;
        self.scan = HeadScan::default();
        if let Some(b) = self.busy.as_mut() {
            b.reader = None;
            b.body_paused = false;
            b.takeover = None;
            sh.recycle(mem::take(&mut b.held));
            b.head_len = 0;
        }
    }

    fn out_buf(&mut self, sh: &mut Shared) -> &mut Vec<u8> {
        if self.out.capacity() == 0 {
            self.out = sh.buffer();
        }
        &mut self.out
    }

    fn take_out_buf(&mut self, sh: &mut Shared) -> Vec<u8> {
        if self.out.capacity() == 0 {
            sh.buffer()
        } else {
            mem::take(&mut self.out)
        }
    }
}

/// The protocol's name in a request line.
fn version_text(v: Version) -> &'static str {
    match v {
        Version::Http10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}
