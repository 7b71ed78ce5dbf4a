//! When a connection's current wait ends ([`Conn::deadline`], in
//! [`WorkerState::now_ms`] time), and which wait it is. The driver enforces the
//! deadline; this file decides it:
//!
//! - **header**: a head under way, or a new connection before its first
//!   request, must be complete within [`crate::Timeouts::header`]; bytes
//!   that are not yet a request (a head under way, empty lines) never
//!   extend it;
//! - **idle**: between requests, and while a response or a body's pause is
//!   waited on, [`crate::Timeouts::idle`]; progress on a send restarts it;
//! - **deferred**: a deferred response must come within
//!   [`crate::Timeouts::deferred`], or the request is answered `504`;
//! - **body rate**: while a request body is waited on, the client must keep
//!   up [`crate::Limits::min_body_rate`] once its grace is over, or the
//!   request is answered `408` and the connection closes. The rate is the
//!   body's bytes over the time the client has had to send them (a pause
//!   its reader chose does not count): if nothing more came, the body
//!   would fall below it at `from + max(grace, received / rate)`, so that
//!   instant is the deadline, one sum per read, never a timer per byte. It
//!   is the earlier of it and the idle timeout;
//! - **drain**: a draining worker waits on an idle connection at most
//!   [`DRAIN_IDLE_GRACE_MS`], whichever comes first.
//!
//! Lingering after a close is the driver's ([`Conn::may_have_unread_input`]).

use super::state::{BodyClock, Conn, State};
use crate::http::worker_state::{WorkerState, DRAIN_IDLE_GRACE_MS};

impl BodyClock {
    /// When the body falls below the minimum rate if nothing more comes
    /// (`sh.body_rate` is not 0).
    fn expiry(&self, sh: &WorkerState) -> u64 {
        let earned = self.received.saturating_mul(1000) / sh.body_rate;
        self.from_ms.saturating_add(earned.max(sh.body_grace_ms))
    }
}

impl Conn {
    /// When the connection's current wait expires, in [`WorkerState::now_ms`]
    /// time: header timeout while a head is incomplete (and before the
    /// first request), idle timeout otherwise.
    pub fn deadline(&self) -> u64 {
        self.deadline
    }

    /// Re-arms the timer for whatever the connection waits on now.
    pub(super) fn rearm(&mut self, sh: &WorkerState) {
        if self.awaiting() {
            // The deferred response's deadline, set when it was deferred.
            return;
        }
        if self.busy_answering() {
            // Sends restart it (see `restart_on_send`); a quiet stream's
            // writer is waited for (see `wait_on_quiet_stream`).
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
            _ => self.wait_idle(sh),
        }
    }

    /// Starts the header timer unless it runs already; bytes that are not
    /// yet a request (a head under way, empty lines before one) never
    /// extend it.
    pub(super) fn hold_header_timer(&mut self, sh: &WorkerState) {
        if !self.header_timer {
            self.header_timer = true;
            self.deadline = sh.now_ms + sh.header_ms;
        }
    }

    /// A request was taken in: the next one gets its own header timeout,
    /// so that a client streaming pipelined requests makes progress even
    /// if every read ends inside a head.
    pub(super) fn stop_header_timer(&mut self) {
        self.header_timer = false;
    }

    /// Waits as an idle connection does: less while draining, but only
    /// between requests; a body still arriving or a response still being
    /// sent is waited on as long as while serving. A body being received
    /// waits no longer than its rate allows.
    pub(super) fn wait_idle(&mut self, sh: &WorkerState) {
        self.header_timer = false;
        self.deadline = sh.now_ms + if self.is_idle() { sh.idle_wait() } else { sh.idle_ms };
        if let Some(expiry) = self.body_rate_expiry(sh) {
            self.deadline = self.deadline.min(expiry);
        }
    }

    /// A body starts to be waited on: its clock starts now.
    pub(super) fn start_body_clock(&mut self, sh: &WorkerState) {
        self.busy().body_clock = BodyClock { from_ms: sh.now_ms, received: 0, paused_at: 0 };
    }

    /// `n` more bytes of the body arrived.
    pub(super) fn body_received(&mut self, n: usize) {
        let clock = &mut self.busy().body_clock;
        clock.received = clock.received.saturating_add(n as u64);
    }

    /// The reader paused the body: the client is not timed until it
    /// resumes ([`Conn::resume_body_clock`]).
    pub(super) fn pause_body_clock(&mut self, sh: &WorkerState) {
        self.busy().body_clock.paused_at = sh.now_ms;
    }

    /// The reader resumed the body: the pause is not the client's time.
    pub(super) fn resume_body_clock(&mut self, sh: &WorkerState) {
        let clock = &mut self.busy().body_clock;
        clock.from_ms = clock.from_ms.saturating_add(sh.now_ms.saturating_sub(clock.paused_at));
    }

    /// When the body being received falls below the minimum rate if
    /// nothing more comes; `None` when none is timed (no minimum, no body
    /// under way, or one its reader paused).
    fn body_rate_expiry(&self, sh: &WorkerState) -> Option<u64> {
        if sh.body_rate == 0 || !matches!(self.state, State::Body(_)) {
            return None;
        }
        let b = self.busy.as_ref()?;
        (!b.body_paused).then(|| b.body_clock.expiry(sh))
    }

    /// The body being received came too slowly: its time is up.
    pub(super) fn body_too_slow(&self, sh: &WorkerState) -> bool {
        self.body_rate_expiry(sh).is_some_and(|expiry| expiry <= sh.now_ms)
    }

    /// Waits on a response body being sent: the idle timeout, restarted by
    /// every send that makes progress.
    pub(super) fn wait_on_send(&mut self, sh: &WorkerState) {
        self.header_timer = false;
        self.deadline = sh.now_ms + sh.idle_ms;
    }

    /// Waits on a deferred response.
    pub(super) fn wait_deferred(&mut self, sh: &WorkerState) {
        self.deadline = sh.now_ms + sh.deferred_ms;
        self.header_timer = false;
    }

    /// A send made progress: restarts the wait, and a connection back to
    /// idle gets the idle timeout. A running header timer keeps running:
    /// the client owes a head whatever the server sends.
    pub(super) fn restart_on_send(&mut self, sh: &WorkerState) {
        if !self.header_timer || self.paused() {
            self.wait_idle(sh);
        }
    }

    /// The deadline passed while a stream is being sent: a stream whose
    /// writer is quiet (nothing left to send) waits on the writer, not on
    /// the client, since server-sent events may be minutes apart. True
    /// when it waits on.
    pub(super) fn wait_on_quiet_stream(&mut self, sh: &WorkerState) -> bool {
        if self.stream().is_some() && self.out.is_empty() {
            self.deadline = sh.now_ms + sh.idle_ms;
            return true;
        }
        false
    }

    /// The worker started draining: an idle connection's wait ends after
    /// [`DRAIN_IDLE_GRACE_MS`] at most.
    pub(super) fn shorten_for_drain(&mut self, sh: &WorkerState) {
        if self.is_idle() {
            self.deadline = self.deadline.min(sh.now_ms + DRAIN_IDLE_GRACE_MS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Limits, MinDataRate, Timeouts};
    use crate::http::{Request, Response};
    use std::time::Duration;

    const HEADER: u64 = 5_000;
    const IDLE: u64 = 60_000;
    const DEFERRED: u64 = 30_000;
    const GRACE: u64 = 5_000;

    fn worker() -> WorkerState {
        let t = Timeouts::default()
            .with_header(Duration::from_millis(HEADER))
            .with_idle(Duration::from_millis(IDLE))
            .with_deferred(Duration::from_millis(DEFERRED));
        WorkerState::new(Limits::default(), t)
    }

    fn hello(_: &Request<'_>, res: &mut Response) {
        res.body("hi");
    }

    #[test]
    fn a_head_must_come_within_the_header_timeout_however_it_trickles() {
        let mut sh = worker();
        sh.now_ms = 1_000;
        let mut c = Conn::new(&sh);
        assert_eq!(c.deadline(), 1_000 + HEADER, "a new connection owes its first head");
        sh.now_ms = 2_000;
        c.on_read(b"\r\nGET / HT", &mut sh, &mut hello);
        sh.now_ms = 3_000;
        c.on_read(b"TP/1.1\r\nHost: x\r\n", &mut sh, &mut hello);
        assert_eq!(c.deadline(), 1_000 + HEADER, "bytes of a head do not extend it");
        sh.now_ms = 4_000;
        c.on_read(b"\r\n", &mut sh, &mut hello);
        assert!(c.has_output());
        assert_eq!(c.deadline(), 4_000 + IDLE, "answered: idle from now");
        sh.now_ms = 5_000;
        c.on_read(b"GET", &mut sh, &mut hello);
        assert_eq!(c.deadline(), 5_000 + HEADER, "the next head gets its own");
    }

    #[test]
    fn a_send_restarts_the_idle_wait_but_not_a_running_header_timer() {
        let mut sh = worker();
        let mut c = Conn::new(&sh);
        c.on_read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut sh, &mut hello);
        sh.now_ms = 10_000;
        c.consume_output(1, &mut sh);
        assert_eq!(c.deadline(), 10_000 + IDLE);
        c.on_read(b"GET / HT", &mut sh, &mut hello);
        assert_eq!(c.deadline(), 10_000 + HEADER);
        sh.now_ms = 11_000;
        let n = c.output_len();
        c.consume_output(n, &mut sh);
        assert_eq!(c.deadline(), 10_000 + HEADER, "the client still owes its head");
    }

    #[test]
    fn draining_takes_the_earlier_of_the_idle_wait_and_the_grace() {
        let mut sh = worker();
        let mut c = Conn::new(&sh);
        c.on_read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut sh, &mut hello);
        let n = c.output_len();
        c.consume_output(n, &mut sh);
        assert_eq!(c.deadline(), IDLE);
        sh.now_ms = 100;
        c.start_drain(&sh);
        assert_eq!(c.deadline(), 100 + DRAIN_IDLE_GRACE_MS, "the grace comes first");
        sh.now_ms = IDLE - 50;
        c.start_drain(&sh);
        assert_eq!(c.deadline(), 100 + DRAIN_IDLE_GRACE_MS, "never later than it was");
        let mut busy = Conn::new(&sh);
        busy.on_read(b"GET / HT", &mut sh, &mut hello);
        let before = busy.deadline();
        busy.start_drain(&sh);
        assert_eq!(busy.deadline(), before, "a head under way keeps its own timer");
    }

    #[test]
    fn a_draining_worker_waits_the_idle_timeout_on_a_response_being_sent() {
        let mut sh = worker();
        let mut c = Conn::new(&sh);
        let mut big = |_: &Request<'_>, res: &mut Response| {
            res.body_mut().resize(1 << 20, b'x');
        };
        c.on_read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut sh, &mut big);
        sh.set_draining();
        sh.now_ms = 1_000;
        c.start_drain(&sh);
        c.consume_output(1000, &mut sh);
        assert_eq!(c.deadline(), 1_000 + IDLE, "a slow reader is no idle connection");
        sh.now_ms = 2_000;
        let n = c.output_len();
        c.consume_output(n, &mut sh);
        assert_eq!(c.deadline(), 2_000 + DRAIN_IDLE_GRACE_MS, "all sent: idle, the grace");
    }

    #[test]
    fn a_deferred_response_has_its_own_deadline_then_a_504() {
        let mut sh = worker();
        sh.now_ms = 7;
        let mut c = Conn::new(&sh);
        let mut kept = None;
        let mut defer = |_: &Request<'_>, res: &mut Response| kept = Some(res.defer());
        c.on_read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut sh, &mut defer);
        assert!(kept.is_some() && !c.has_output());
        assert_eq!(c.deadline(), 7 + DEFERRED);
        sh.now_ms = 7 + DEFERRED;
        assert!(!c.on_deadline(&mut sh), "answered, not closed at once");
        assert!(c.output().starts_with(b"HTTP/1.1 504 "));
        assert!(c.is_closing());
    }

    /// A body of `len` declared bytes whose head and `sent` bytes arrive
    /// at `now`, on a worker that asks 240 bytes a second after 5 s.
    fn body_under_way(sh: &mut WorkerState, now: u64, len: usize, sent: usize) -> Conn {
        sh.now_ms = now;
        let mut c = Conn::new(sh);
        let mut req = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n").into_bytes();
        req.resize(req.len() + sent, b'x');
        c.on_read(&req, sh, &mut hello);
        c
    }

    #[test]
    fn a_body_below_the_minimum_rate_after_its_grace_is_answered_408() {
        assert_eq!(Limits::default().min_body_rate, Some(MinDataRate::new(240, Duration::from_secs(5))));
        let mut sh = worker();
        // 1,000 bytes would last 4.2 s at 240 bytes a second: the grace
        // (5 s) is the longer.
        let mut c = body_under_way(&mut sh, 1_000, 8 << 20, 1_000);
        assert_eq!(c.deadline(), 1_000 + GRACE);
        sh.now_ms = 1_000 + GRACE - 1;
        assert!(!c.body_too_slow(&sh));
        sh.now_ms = 1_000 + GRACE;
        assert!(!c.on_deadline(&mut sh), "answered, then closed");
        assert!(c.output().starts_with(b"HTTP/1.1 408 ") && c.is_closing());
        assert!(sh.take_body_budget(Limits::default().max_buffered_bodies), "its bytes were given back");
    }

    #[test]
    fn a_body_that_keeps_the_rate_is_given_time_for_every_byte() {
        let mut sh = worker();
        // 2,400 bytes at once are 10 s at the minimum rate.
        let mut c = body_under_way(&mut sh, 0, 8 << 20, 2_400);
        assert_eq!(c.deadline(), 10_000);
        sh.now_ms = 9_000;
        c.on_read(&[b'x'; 240], &mut sh, &mut hello);
        assert_eq!(c.deadline(), 11_000, "the average over the whole body");
        // Sends restart the idle wait, never past the rate's deadline.
        sh.now_ms = 9_500;
        c.consume_output(0, &mut sh);
        assert_eq!(c.deadline(), 11_000);
        sh.now_ms = 11_000;
        assert!(!c.on_deadline(&mut sh));
        assert!(c.output().starts_with(b"HTTP/1.1 408 "));
    }

    #[test]
    fn the_idle_timeout_still_ends_a_pause_and_no_minimum_means_none() {
        let t = Timeouts::default().with_idle(Duration::from_millis(3_000));
        let mut sh = WorkerState::new(Limits::default(), t);
        let mut c = body_under_way(&mut sh, 0, 100, 10);
        assert_eq!(c.deadline(), 3_000, "the idle timeout comes first");
        sh.now_ms = 3_000;
        assert!(c.on_deadline(&mut sh) && !c.has_output(), "closed as before, without a 408");
        let mut sh = WorkerState::new(Limits::DEFAULT.with_min_body_rate(None), Timeouts::default());
        let c = body_under_way(&mut sh, 0, 100, 1);
        assert_eq!(c.deadline(), Timeouts::default().idle.as_millis() as u64, "no minimum: only the idle timeout");
    }

    #[test]
    fn a_quiet_stream_waits_on_its_writer() {
        let mut sh = worker();
        let mut c = Conn::new(&sh);
        let mut writer = None;
        let mut stream = |_: &Request<'_>, res: &mut Response| writer = Some(res.stream());
        c.on_read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut sh, &mut stream);
        assert!(c.is_streaming());
        assert!(c.on_deadline(&mut sh), "its head is not sent: the client is slow");
        let n = c.output_len();
        c.consume_output(n, &mut sh);
        sh.now_ms = 1_000;
        assert!(!c.on_deadline(&mut sh), "nothing to send: the writer is waited on");
        assert_eq!(c.deadline(), 1_000 + IDLE);
        drop(writer);
    }
}
