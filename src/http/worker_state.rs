//! Per-worker state every connection of a worker shares: the limits and
//! timeouts, the clock and the cached `Date`, the heads framed last, the
//! scratch response, a pool of spare buffers, the budgets of buffered
//! bodies and of deferred responses, the count of upgraded connections,
//! the counters in shared memory, the mailbox, the access log, and the
//! loop's admission.
//!
//! Where it stops: it holds what connections share and keeps the budgets'
//! books; what a connection does with it is the connection's
//! ([`super::Conn`]); how the loop admits, and its queue of heavy
//! requests, are `loop_admission`'s.

use std::os::fd::RawFd;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::access::{AccessLog, Entry, LineRequest, PeerNames};
#[cfg(test)]
use super::admit::Codel;
use super::answer::{Completion, Completions, Heads, Response, Spawner, UpgradePermit};
use super::date::DateCache;
use super::loop_admission::LoopAdmission;
pub(crate) use super::loop_admission::{Admit, Parked};
use crate::config::{Admission, Limits, Timeouts};
use crate::ipc::{Counter, Counters, SHEDDING_LOOP};

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
pub struct WorkerState {
    /// The limits in force.
    pub(super) limits: Limits,
    /// [`Timeouts::header`] in milliseconds.
    pub(super) header_ms: u64,
    /// [`Timeouts::idle`] in milliseconds.
    pub(super) idle_ms: u64,
    /// [`Timeouts::deferred`] in milliseconds.
    pub(super) deferred_ms: u64,
    /// [`Limits::min_body_rate`]'s bytes a second; 0: no minimum.
    pub(super) body_rate: u64,
    /// [`Limits::min_body_rate`]'s grace in milliseconds.
    pub(super) body_grace_ms: u64,
    /// When the worker started: the origin of [`WorkerState::now_ms`].
    start: Instant,
    /// When the current loop turn began (read once per turn, in
    /// [`WorkerState::tick`]).
    pub(super) turn_at: Instant,
    /// Milliseconds since `start`, as of the turn's start.
    pub(super) now_ms: u64,
    /// Requests answered at once during this turn, whose latency is
    /// counted by [`WorkerState::end_turn`] with one clock read for all.
    answered: u64,
    /// The `Date` header's value, refreshed once a second.
    pub(super) date: DateCache,
    /// The heads of whole responses framed last, copied whole when an
    /// answer repeats itself.
    pub(super) heads: Heads,
    /// The response handed to handlers, reused so that a whole response
    /// allocates nothing; `None` while it is out
    /// ([`WorkerState::take_scratch`]).
    res: Option<Box<Response>>,
    /// Spare buffers.
    pool: Vec<Vec<u8>>,
    /// Every response closes its connection.
    draining: bool,
    /// The worker's counters in shared memory, when it has any.
    pub(super) counters: Option<&'static Counters>,
    /// Bytes of request bodies the worker's connections hold (charged as
    /// they arrive), against [`Limits::max_buffered_bodies`].
    body_bytes: usize,
    /// Where responders send their completions.
    pub(super) completions: Arc<Completions>,
    /// Deferred responses the worker waits on, against
    /// [`Limits::max_deferred`].
    deferred: usize,
    /// Upgraded connections the worker holds, against
    /// [`Limits::max_upgraded`]: counted from the `101` until the user's
    /// side drops the connection, on whatever thread.
    upgraded: Arc<AtomicUsize>,
    /// The access log, when there is one: lines are added as responses
    /// are framed and written once per turn ([`WorkerState::end_turn`]).
    access: Option<Box<AccessLog>>,
    /// The access log's client addresses, from the driver (with the log).
    peers: Option<Box<dyn PeerNames>>,
    /// The loop's admission by queueing time, when it is on.
    admit: Option<Box<LoopAdmission>>,
}

impl WorkerState {
    /// State for one worker.
    pub fn new(limits: Limits, timeouts: Timeouts) -> WorkerState {
        let mut limits = limits;
        limits.max_headers = limits.max_headers.min(Limits::HEADERS_CAP);
        // Until a driver sets one whose wake-up reaches its loop.
        let completions = Arc::new(Completions::new(|| {}));
        let mut res = Response::new();
        res.set_queue(completions.clone());
        WorkerState {
            limits,
            header_ms: millis(timeouts.header),
            idle_ms: millis(timeouts.idle),
            deferred_ms: millis(timeouts.deferred),
            body_rate: limits.min_body_rate.map_or(0, |r| r.bytes_per_second.max(1)),
            body_grace_ms: limits.min_body_rate.map_or(0, |r| millis(r.grace)),
            start: Instant::now(),
            turn_at: Instant::now(),
            now_ms: 0,
            answered: 0,
            date: DateCache::new(),
            heads: Heads::default(),
            res: Some(Box::new(res)),
            pool: Vec::new(),
            draining: false,
            counters: None,
            body_bytes: 0,
            completions,
            deferred: 0,
            upgraded: Arc::default(),
            access: None,
            peers: None,
            admit: None,
        }
    }

    /// Admits requests by how late the loop's turns run ([`Admission`]),
    /// when `admission` is on.
    pub fn set_admission(&mut self, admission: &Admission) {
        self.admit = admission.enabled.then(|| Box::new(LoopAdmission::new(admission)));
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
        if let Some(a) = &mut self.admit {
            let before = (a.shedding(), a.min_wait_us());
            a.start_turn(now, now.duration_since(self.start).as_micros() as u64);
            if let Some(c) = self.counters {
                if a.shedding() != before.0 {
                    // Its own bit, by locked adds: the pool's threads
                    // change theirs the same way.
                    c.add_shared(
                        Counter::Shedding,
                        if a.shedding() { SHEDDING_LOOP } else { SHEDDING_LOOP.wrapping_neg() },
                    );
                }
                if a.min_wait_us() != before.1 {
                    c.set(Counter::LoopWaitUs, a.min_wait_us());
                }
            }
        }
    }

    /// The loop's CoDel state, to put it where a test needs it.
    #[cfg(test)]
    pub(super) fn loop_codel(&mut self) -> &mut Codel {
        self.admit.as_mut().expect("admission on").codel()
    }

    /// Whether the loop sheds now.
    #[cfg(test)]
    pub(super) fn loop_shedding(&self) -> Option<bool> {
        self.admit.as_ref().map(|a| a.shedding())
    }

    /// Whether the request for `path` about to be handled is refused
    /// because the loop sheds ([`LoopAdmission::admit`]);
    /// [`WorkerState::handled`] takes what this returns.
    #[inline]
    pub(super) fn admit_request(&mut self, path: &str) -> Admit {
        let Some(a) = &mut self.admit else { return Admit::Free };
        let admit = a.admit(path);
        if let (Admit::Refused, Some(c)) = (admit, self.counters) {
            c.inc(Counter::ShedLoop);
        }
        admit
    }

    /// Whether a request just parsed may be parked: the loop has a target.
    /// The one test on the path of every request.
    #[inline]
    pub(super) fn parking(&self) -> bool {
        self.admit.as_ref().is_some_and(|a| a.parking())
    }

    /// Whether the request for `path` on connection `token` waits for the
    /// end of the turn ([`LoopAdmission::park`]).
    pub(super) fn parks(&mut self, path: &str, token: u64) -> bool {
        let turn_at = self.turn_at;
        self.admit.as_mut().is_some_and(|a| a.park(path, token, turn_at))
    }

    /// The next parked connection to resume this turn
    /// ([`super::Conn::unpark`], then [`super::Conn::resume`]); drivers call
    /// it once the turn's input is handled, until it says `None`, and send
    /// what is framed before a request whose handler [`Parked::runs`]
    /// ([`LoopAdmission::next_parked`] says which, and when).
    pub fn next_parked(&mut self) -> Option<Parked> {
        self.admit.as_mut()?.next_parked(self.turn_at)
    }

    /// Whether heavy requests wait in the loop's queue: the loop must not
    /// sleep.
    #[inline]
    pub fn has_parked(&self) -> bool {
        self.admit.as_ref().is_some_and(|a| a.has_parked())
    }

    /// The handler of the request for `path` that [`WorkerState::admit_request`]
    /// admitted has returned.
    #[inline]
    pub(super) fn handled(&mut self, path: &str, admit: Admit) {
        if let Some(a) = &mut self.admit {
            a.handled(path, admit);
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
        if self.answered == 0 && self.admit.is_none() {
            return;
        }
        // One clock read for the turn's latencies and its length.
        let end = Instant::now();
        let turn_us = end.saturating_duration_since(self.turn_at).as_micros() as u64;
        if let Some(a) = &mut self.admit {
            a.end_turn(end, turn_us);
        }
        if self.answered == 0 {
            return;
        }
        if let Some(c) = self.counters {
            c.observe_latency(turn_us, self.answered);
        }
        self.answered = 0;
    }

    /// The driver's word, after [`WorkerState::end_turn`] and before it
    /// waits, on whether input is already waiting (completions the kernel
    /// holds for it): the loop's admission then knows whether its next
    /// turn's input waited for this one ([`LoopAdmission`]).
    #[inline]
    pub fn input_pending(&mut self, pending: bool) {
        if let Some(a) = &mut self.admit {
            a.input_pending(pending);
        }
    }

    /// Logs every answered request to `log` from now on.
    pub(crate) fn set_access_log(&mut self, log: AccessLog, peers: Box<dyn PeerNames>) {
        self.access = Some(Box::new(log));
        self.peers = Some(peers);
    }

    /// Milliseconds since the worker started, as of the last [`WorkerState::tick`].
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
    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // for tests, through `internals`
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Counts requests, responses and protocol errors into `counters` from
    /// now on (the worker's page in shared memory, read by the master).
    pub fn set_counters(&mut self, counters: &'static Counters) {
        self.counters = Some(counters);
        self.publish_body_bytes();
        self.publish_deferred();
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
        if let Some(res) = &mut self.res {
            res.set_queue(completions.clone());
        }
        self.completions = completions;
    }

    /// Makes [`Response::blocking`] queue its work with `spawner` (the
    /// worker's blocking pool).
    pub(crate) fn set_spawner(&mut self, spawner: Spawner) {
        if let Some(res) = &mut self.res {
            res.set_spawner(spawner);
        }
    }

    /// Takes the scratch response, to hand to a handler or to frame an
    /// error; give it back with [`WorkerState::return_scratch`]. Taken
    /// while it is out (an error framed during an answer), a new one.
    #[inline]
    pub(super) fn take_scratch(&mut self) -> Box<Response> {
        match self.res.take() {
            Some(res) => res,
            None => Box::new(self.fresh_response()),
        }
    }

    /// Gives the scratch response back.
    #[inline]
    pub(super) fn return_scratch(&mut self, res: Box<Response>) {
        self.res = Some(res);
    }

    /// A response that can be deferred like the scratch one, but not
    /// queue blocking work (only an error is framed with it).
    #[cold]
    fn fresh_response(&self) -> Response {
        let mut res = Response::new();
        res.set_queue(self.completions.clone());
        res
    }

    /// Takes the completed deferred responses queued so far into `batch`
    /// (which must be empty; it keeps its capacity between turns).
    pub fn take_completions(&self, batch: &mut Vec<Completion>) {
        debug_assert!(batch.is_empty());
        self.completions.take(batch);
    }

    /// Gives back a buffer that [`super::Conn::take_output`] handed out.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > POOL_MAX_CAPACITY || self.pool.len() >= POOL_MAX_LEN {
            return;
        }
        buf.clear();
        self.pool.push(buf);
    }

    /// A spare buffer (empty), or a new one.
    pub(super) fn buffer(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_default()
    }

    /// How long an idle connection may wait.
    pub(super) fn idle_wait(&self) -> u64 {
        if self.draining {
            self.idle_ms.min(DRAIN_IDLE_GRACE_MS)
        } else {
            self.idle_ms
        }
    }

    /// A request was answered at once: its latency is counted at the end
    /// of the turn.
    #[inline]
    pub(super) fn answered_now(&mut self) {
        if self.counters.is_some() {
            self.answered += 1;
        }
    }

    /// Takes `n` more bytes of the body budget; false (nothing taken) when
    /// it is spent.
    pub(super) fn take_body_budget(&mut self, n: usize) -> bool {
        match self.body_bytes.checked_add(n) {
            Some(total) if total <= self.limits.max_buffered_bodies => {
                self.body_bytes = total;
                self.publish_body_bytes();
                true
            }
            _ => false,
        }
    }

    /// Gives `n` bytes of the body budget back.
    pub(super) fn return_body_budget(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.body_bytes -= n;
        self.publish_body_bytes();
    }

    /// Bytes of the body budget in use.
    #[cfg(test)]
    pub(super) fn body_bytes(&self) -> usize {
        self.body_bytes
    }

    /// Shows the body budget in use to the master ([`Counter::BodyBytes`]).
    fn publish_body_bytes(&self) {
        if let Some(c) = self.counters {
            c.set(Counter::BodyBytes, self.body_bytes as u64);
        }
    }

    /// Whether one more deferred response fits under
    /// [`Limits::max_deferred`].
    pub(super) fn deferred_room(&self) -> bool {
        self.deferred < self.limits.max_deferred
    }

    /// Deferred responses waited on now.
    pub(super) fn deferred(&self) -> usize {
        self.deferred
    }

    /// One more deferred response is waited on.
    pub(super) fn deferred_started(&mut self) {
        self.deferred += 1;
        self.publish_deferred();
    }

    /// A deferred response is no longer waited on (answered, timed out, or
    /// its connection closed).
    pub(super) fn deferred_ended(&mut self) {
        self.deferred -= 1;
        self.publish_deferred();
    }

    /// Shows the deferred responses waited on to the master
    /// ([`Counter::DeferredInFlight`]).
    fn publish_deferred(&self) {
        if let Some(c) = self.counters {
            c.set(Counter::DeferredInFlight, self.deferred as u64);
        }
    }

    /// A place for one more upgraded connection under
    /// [`Limits::max_upgraded`], held by the connection until the user's
    /// side drops it; `None` when every place is taken.
    pub(super) fn upgrade_place(&self) -> Option<UpgradePermit> {
        UpgradePermit::take(&self.upgraded, self.limits.max_upgraded, self.counters)
    }

    /// Whether there is an access log.
    #[inline]
    pub(super) fn logging(&self) -> bool {
        self.access.is_some()
    }

    /// Adds the access log's line for a request answered on the
    /// connection (`socket`, `token`) (`req` is `None` for one refused
    /// before its head could be read) and taken in at `since`. Only called
    /// when there is an access log.
    #[cold]
    pub(super) fn log_access(
        &mut self,
        socket: RawFd,
        token: u64,
        req: Option<LineRequest<'_>>,
        status: u16,
        bytes: Option<usize>,
        since: Instant,
    ) {
        let micros = since.elapsed().as_micros() as u64;
        let peer = self.peers.as_mut().map_or("-", |p| p.name(socket, token));
        if let Some(log) = &mut self.access {
            log.record(&Entry::new(peer, req, status, bytes, micros));
        }
    }
}

/// A timeout in milliseconds, capped so that `now + timeout` cannot
/// overflow: `Duration::MAX` means "never".
fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX / 4)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_budget_is_taken_whole_or_not_at_all() {
        let mut sh = WorkerState::new(Limits::DEFAULT.with_max_buffered_bodies(100), Timeouts::default());
        assert!(sh.take_body_budget(60));
        assert!(!sh.take_body_budget(41), "over the budget: nothing taken");
        assert!(sh.take_body_budget(40));
        assert!(!sh.take_body_budget(usize::MAX), "no overflow");
        sh.return_body_budget(100);
        assert!(sh.take_body_budget(100));
    }

    #[test]
    fn deferred_responses_are_capped() {
        let mut sh = WorkerState::new(Limits::DEFAULT.with_max_deferred(2), Timeouts::default());
        sh.deferred_started();
        assert!(sh.deferred_room());
        sh.deferred_started();
        assert!(!sh.deferred_room());
        sh.deferred_ended();
        assert!(sh.deferred_room());
        assert_eq!(sh.deferred(), 1);
    }

    #[test]
    fn a_draining_worker_waits_less_on_idle_connections() {
        let t = Timeouts::default().with_idle(Duration::from_secs(30));
        let mut sh = WorkerState::new(Limits::default(), t);
        assert_eq!(sh.idle_wait(), 30_000);
        sh.set_draining();
        assert_eq!(sh.idle_wait(), DRAIN_IDLE_GRACE_MS);
        let never = WorkerState::new(Limits::default(), Timeouts::default().with_idle(Duration::MAX));
        assert_eq!(never.idle_ms, u64::MAX / 4, "never, without overflow");
    }

    #[test]
    fn spare_buffers_are_kept_within_bounds() {
        let mut sh = WorkerState::new(Limits::default(), Timeouts::default());
        sh.recycle(Vec::with_capacity(POOL_MAX_CAPACITY + 1));
        sh.recycle(Vec::new());
        assert_eq!(sh.pool.len(), 0, "too large, or nothing to keep");
        let mut b = Vec::with_capacity(100);
        b.push(1);
        sh.recycle(b);
        let b = sh.buffer();
        assert!(b.is_empty() && b.capacity() >= 100, "reused, emptied");
    }
}
