//! Answering a request: calling the handler and framing what it gives back
//! ([`Conn::respond`]), a body the handler refused ([`Conn::refuse`]), the
//! wait for a deferred answer and its completion ([`Conn::answer_deferred`],
//! with its `500` when the responder was dropped), the hand-over of an
//! upgrade, and an error ([`Conn::fail`]).
//!
//! Each response is counted, logged and framed through the one emit path
//! ([`super::output::Output::emit`]); a stream or file body then starts in
//! [`super::send`].

use super::guard::guarded;
use super::output::{Body, Frame};
use super::send::{Answer, Conditional};
use super::state::{Awaiting, Conn, State, Takeover};
use crate::http::access::{LineRequest, LoggedRequest};
use crate::http::answer::{reason, Live, Outcome, Response, UpgradeFn};
use crate::http::request::{Request, Version};
use crate::http::scan::HeadScan;
use crate::http::worker_state::{Admit, WorkerState};
use crate::ipc::Counter;

/// How an error response is framed: it closes the connection.
const CLOSING: Frame = Frame { head_only: false, close: true, keep_alive_10: false };

impl Conn {
    /// Calls `answer` (the handler) and frames its response.
    pub(super) fn respond(
        &mut self,
        req: &Request<'_>,
        sh: &mut WorkerState,
        answer: impl FnOnce(&Request<'_>, &mut Response),
    ) {
        self.stop_header_timer();
        // The worker's scratch response, boxed: taking it moves a pointer.
        let mut res = sh.take_scratch();
        self.answer_in(req, &mut res, sh, answer);
        sh.return_scratch(res);
    }

    /// [`Conn::respond`] with the scratch response `res`.
    #[inline]
    fn answer_in(
        &mut self,
        req: &Request<'_>,
        res: &mut Response,
        sh: &mut WorkerState,
        answer: impl FnOnce(&Request<'_>, &mut Response),
    ) {
        res.reset();
        let room = sh.deferred_room();
        let seq = self.busy.as_ref().map_or(0, |b| b.deferred_seq) + 1;
        res.offer_deferral(room, self.token, seq);
        if let Some(b) = self.busy.as_mut() {
            res.lend_live(b.live.take());
        }
        // A loop that sheds refuses before any handler work is done.
        let path = req.path();
        let answered = match sh.admit_request(path) {
            Admit::Refused => {
                res.unavailable();
                true
            }
            admit => {
                let answered = guarded(|| answer(req, res)).is_some();
                sh.handled(path, admit);
                answered
            }
        };
        let deferred = answered && res.take_deferred();
        if let Some(live) = res.take_live() {
            self.keep_live(live, seq, deferred && room);
        }
        if deferred {
            if room {
                self.defer(req, res, sh);
                return;
            }
            log::warn!("{} deferred responses outstanding; answering 503", sh.deferred());
            res.set_error(503);
        }
        if !answered {
            log::error!("handler panicked on {} {}; answering 500", req.method, req.target);
            res.set_error(500);
            res.close();
        }
        if let Some(take) = res.take_upgrade() {
            if self.upgrade(req, res, take, sh) {
                return;
            }
        }
        let close = !req.keep_alive || res.wants_close() || sh.draining();
        let frame =
            Frame { head_only: req.method == "HEAD", close, keep_alive_10: !close && req.version == Version::Http10 };
        if !res.is_bytes() {
            self.respond_with_body(req, res, frame, sh);
            return;
        }
        if let Some(c) = sh.counters {
            c.inc(Counter::Requests);
        }
        sh.answered_now();
        if sh.logging() {
            let bytes = (!frame.head_only).then(|| res.body_len());
            sh.log_access(self.socket, self.token, Some(LineRequest::of(req)), res.status_code(), bytes, sh.turn_at);
        }
        self.out.emit(res, frame, Body::Whole, sh);
        // Framed: an idle worker holds no huge body until its next request.
        res.shed();
        if close {
            self.close_after_request(sh);
        }
    }

    /// The handler's response has a stream or a file for its body: frames
    /// it (a GET or HEAD's `Range` and conditional fields apply to a file)
    /// and starts sending the body.
    #[cold]
    fn respond_with_body(&mut self, req: &Request<'_>, res: &mut Response, frame: Frame, sh: &mut WorkerState) {
        if let Some(c) = sh.counters {
            c.inc(Counter::Requests);
        }
        let get = frame.head_only || req.method == "GET";
        let answer = Answer {
            frame,
            http10: req.version == Version::Http10,
            conditional: get.then(|| Conditional {
                range: req.headers.get("range"),
                if_range: req.headers.get("if-range"),
                if_unmodified_since: req.headers.get("if-unmodified-since"),
                if_modified_since: req.headers.get("if-modified-since"),
            }),
        };
        self.start_body(res, &answer, sh);
        sh.answered_now();
        if sh.logging() {
            // A stream's or a file's length is not known here.
            sh.log_access(self.socket, self.token, Some(LineRequest::of(req)), res.status_code(), None, sh.turn_at);
        }
    }

    /// Answers a request whose body the handler refused, with `res`, and
    /// closes: the body is never read.
    pub(super) fn refuse(&mut self, req: &Request<'_>, mut res: Response, sh: &mut WorkerState) {
        if let Some(c) = sh.counters {
            c.inc(Counter::Requests);
        }
        let head_only = req.method == "HEAD";
        if sh.logging() {
            let bytes = (!head_only).then(|| res.body_len());
            sh.log_access(self.socket, self.token, Some(LineRequest::of(req)), res.status_code(), bytes, sh.turn_at);
        }
        self.out.emit(&mut res, Frame { head_only, ..CLOSING }, Body::Whole, sh);
        self.close_input(sh);
    }

    /// Takes the connection's word back from the handler's call. A
    /// responder the handler took for request `seq` that is not waited on
    /// after all (the handler panicked, which closes the connection) is
    /// told so. (Only a claim writes the word during the call: a request
    /// that took no responder leaves the shared line alone.)
    fn keep_live(&mut self, live: Live, seq: u64, waits: bool) {
        if !waits && live.is(seq) {
            live.clear();
        }
        self.busy().live = Some(live);
    }

    /// Waits for the responder the handler took for `req`.
    fn defer(&mut self, req: &Request<'_>, res: &mut Response, sh: &mut WorkerState) {
        let b = self.busy();
        b.deferred_seq += 1;
        let seq = b.deferred_seq;
        sh.deferred_started();
        if let Some(c) = sh.counters {
            c.inc(Counter::Requests);
        }
        let close = !req.keep_alive || res.wants_close() || sh.draining();
        self.busy().awaiting = Some(Box::new(Awaiting {
            seq,
            head_only: req.method == "HEAD",
            close,
            keep_alive_10: !close && req.version == Version::Http10,
            since: sh.turn_at,
            logged: sh.logging().then(|| Box::new(LoggedRequest::of(req))),
            http10: req.version == Version::Http10,
        }));
        self.wait_deferred(sh);
        // What the handler put in it is dropped.
        res.reset();
    }

    /// Answers the deferred request `seq` with `outcome` (a response, or
    /// its responder's drop). False when the completion is stale: the
    /// request was answered at its deadline, or is not this connection's.
    pub(super) fn answer_deferred(&mut self, seq: u64, outcome: Outcome, sh: &mut WorkerState) -> bool {
        let Some(b) = self.busy.as_mut().filter(|b| b.awaiting.as_ref().is_some_and(|a| a.seq == seq)) else {
            return false;
        };
        let Some(a) = b.stop_awaiting() else { unreachable!("checked just above") };
        sh.deferred_ended();
        let mut res = match outcome {
            Outcome::Done(res) => res,
            Outcome::Dropped => {
                log::error!("a deferred response's responder was dropped unsent; answering 500");
                let mut res = Response::new();
                res.set_error(500);
                res
            }
            Outcome::Resume | Outcome::Stream(_) => unreachable!("not an answer: the state machine takes these"),
        };
        let close = a.close || res.wants_close() || sh.draining();
        let frame = Frame { head_only: a.head_only, close, keep_alive_10: a.keep_alive_10 && !close };
        if let Some(c) = sh.counters {
            // The cached time of this turn: no clock read.
            c.observe_latency(sh.turn_at.saturating_duration_since(a.since).as_micros() as u64, 1);
        }
        let bytes = (!a.head_only && res.is_bytes()).then(|| res.body_len());
        if res.is_bytes() {
            self.out.emit(&mut res, frame, Body::Whole, sh);
            if close {
                self.close_after_request(sh);
            }
        } else {
            self.start_body(&mut res, &Answer { frame, http10: a.http10, conditional: None }, sh);
        }
        if let Some(l) = &a.logged {
            sh.log_access(self.socket, self.token, Some(l.line()), res.status_code(), bytes, a.since);
        }
        true
    }

    /// The handler answered `101` to take the connection: frames it and
    /// waits for the hand-over. False (the response is framed as any other)
    /// when it changed the status since, or when the request cannot be
    /// upgraded (then the answer is `500`, or `503` while draining or with
    /// [`crate::Limits::max_upgraded`] connections upgraded already).
    #[cold]
    fn upgrade(&mut self, req: &Request<'_>, res: &mut Response, take: UpgradeFn, sh: &mut WorkerState) -> bool {
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
        if sh.draining() {
            res.set_error(503);
            return false;
        }
        let Some(permit) = sh.upgrade_place() else {
            log::warn!("{} upgraded connections held; answering 503", sh.limits.max_upgraded);
            res.set_error(503);
            res.close();
            return false;
        };
        if let Some(c) = sh.counters {
            c.inc(Counter::Requests);
        }
        self.out.emit(res, Frame { close: false, ..CLOSING }, Body::Switch, sh);
        self.busy().takeover = Some(Takeover(take, permit));
        self.state = State::Upgrade;
        self.scan = HeadScan::default();
        true
    }

    /// Answers with an error status and closes.
    pub(super) fn fail(&mut self, status: u16, sh: &mut WorkerState) {
        log::debug!("request rejected: {status} {}", reason(status));
        if let Some(c) = sh.counters {
            c.inc(Counter::ParseErrors);
        }
        let mut res = sh.take_scratch();
        res.set_error(status);
        if sh.logging() {
            sh.log_access(self.socket, self.token, None, status, Some(res.body_len()), sh.turn_at);
        }
        self.out.emit(&mut res, CLOSING, Body::Whole, sh);
        sh.return_scratch(res);
        self.close_input(sh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Limits, Timeouts};
    use crate::http::Completion;
    use std::cell::RefCell;

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    fn worker() -> WorkerState {
        WorkerState::new(Limits::DEFAULT.with_max_deferred(1), Timeouts::default())
    }

    fn status(out: &[u8]) -> &str {
        std::str::from_utf8(&out[9..12]).unwrap()
    }

    fn take(sh: &WorkerState) -> Completion {
        let mut batch = Vec::new();
        sh.take_completions(&mut batch);
        assert_eq!(batch.len(), 1);
        batch.pop().unwrap()
    }

    #[test]
    fn a_huge_whole_answer_is_not_pinned_after_it_is_framed() {
        let mut sh = worker();
        let mut c = Conn::new(&sh);
        c.on_read(GET, &mut sh, &mut |_: &Request<'_>, res: &mut Response| {
            res.body_mut().resize(4 << 20, b'x');
        });
        assert_eq!(c.output_len() - c.output().windows(4).position(|w| w == b"\r\n\r\n").unwrap() - 4, 4 << 20);
        assert!(sh.take_scratch().body_mut().capacity() <= 1 << 20, "the scratch response holds the body");
    }

    #[test]
    fn a_panicking_handler_costs_one_request_answered_500() {
        let mut sh = worker();
        let mut c = Conn::new(&sh);
        c.on_read(GET, &mut sh, &mut |_: &Request<'_>, _: &mut Response| panic!("a handler's bug"));
        assert_eq!(status(c.output()), "500");
        assert!(c.is_closing());
    }

    #[test]
    fn pipelined_requests_wait_for_a_deferred_one_and_keep_their_order() {
        let mut sh = worker();
        let mut c = Conn::new(&sh);
        let kept = RefCell::new(Vec::new());
        let mut h = |req: &Request<'_>, res: &mut Response| {
            if req.path() == "/later" {
                kept.borrow_mut().push(res.defer());
            } else {
                res.body("now");
            }
        };
        c.on_read(b"GET /later HTTP/1.1\r\nHost: x\r\n\r\nGET /now HTTP/1.1\r\nHost: x\r\n\r\n", &mut sh, &mut h);
        assert!(!c.has_output() && c.has_pending_input(), "the second waits");
        let mut res = Response::new();
        res.body("later");
        kept.borrow_mut().pop().unwrap().send(res);
        assert!(c.complete(take(&sh), &mut sh, &mut h));
        let text = String::from_utf8_lossy(c.output()).into_owned();
        assert!(text.find("later").unwrap() < text.find("now").unwrap(), "{text}");
    }

    #[test]
    fn a_dropped_responder_answers_500_and_a_stale_one_nothing() {
        let mut sh = worker();
        let mut c = Conn::new(&sh);
        let kept = RefCell::new(Vec::new());
        let mut h = |_: &Request<'_>, res: &mut Response| kept.borrow_mut().push(res.defer());
        c.on_read(GET, &mut sh, &mut h);
        drop(kept.borrow_mut().pop());
        let dropped = take(&sh);
        assert!(c.complete(dropped, &mut sh, &mut h));
        assert_eq!(status(c.output()), "500");
        c.on_read(GET, &mut sh, &mut h);
        let late = kept.borrow_mut().pop().unwrap();
        assert!(!c.on_deadline(&mut sh), "answered 504 instead");
        late.send(Response::new());
        let mut batch = Vec::new();
        sh.take_completions(&mut batch);
        assert!(batch.is_empty(), "a responder whose request timed out posts nothing");
        // One that read the word an instant before the deadline still
        // posts: the connection drops it.
        let raced = Completion { token: 0, seq: 2, outcome: Outcome::Done(Response::new()) };
        assert!(!c.complete(raced, &mut sh, &mut h), "stale: answered at its deadline");
    }

    /// Whether the connection's word says it waits on a deferred request.
    fn word_waits(c: &Conn) -> bool {
        c.busy.as_ref().and_then(|b| b.live.as_ref()).is_some_and(|l| !l.is(0))
    }

    #[test]
    fn a_responder_is_live_while_its_request_waits() {
        let mut sh = worker();
        let kept = RefCell::new(Vec::new());
        let mut h = |_: &Request<'_>, res: &mut Response| kept.borrow_mut().push(res.defer());
        // Taken, then completed.
        let mut c = Conn::new(&sh);
        c.on_read(GET, &mut sh, &mut h);
        let r = kept.borrow_mut().pop().unwrap();
        assert!(r.is_live() && word_waits(&c), "the deferral was taken");
        r.send(Response::new());
        assert!(c.complete(take(&sh), &mut sh, &mut h));
        assert!(!word_waits(&c), "completed");
        // Taken again on the same connection, then timed out.
        c.on_read(GET, &mut sh, &mut h);
        let r = kept.borrow_mut().pop().unwrap();
        assert!(r.is_live());
        assert!(!c.on_deadline(&mut sh));
        assert!(!r.is_live(), "answered 504");
        c.release(&mut sh);
        // Taken, then the connection released (the client left).
        let mut c = Conn::new(&sh);
        c.on_read(GET, &mut sh, &mut h);
        let r = kept.borrow_mut().pop().unwrap();
        assert!(r.is_live());
        let mut other = Conn::new(&sh);
        other.on_read(GET, &mut sh, &mut h);
        let refused = kept.borrow_mut().pop().unwrap();
        assert!(!refused.is_live(), "refused past the cap, from the start");
        assert_eq!(status(other.output()), "503");
        c.release(&mut sh);
        assert!(!r.is_live(), "its connection is gone");
        drop((r, refused));
        let mut batch = Vec::new();
        sh.take_completions(&mut batch);
        assert!(batch.is_empty(), "neither posts anything");
        // A panicking handler's responder is not waited on either.
        let mut c = Conn::new(&sh);
        c.on_read(GET, &mut sh, &mut |_: &Request<'_>, res: &mut Response| {
            kept.borrow_mut().push(res.defer());
            panic!("a handler's bug");
        });
        assert_eq!(status(c.output()), "500");
        assert!(!kept.borrow_mut().pop().unwrap().is_live());
        assert!(sh.deferred_room());
    }

    #[test]
    fn try_defer_past_the_cap_leaves_the_answer_to_the_handler() {
        let mut sh = worker();
        let mut kept = Vec::new();
        let mut h = |_: &Request<'_>, res: &mut Response| match res.try_defer() {
            Ok(r) => kept.push(r),
            Err(e) => {
                assert_eq!(e, crate::http::Refused::TooManyDeferred);
                assert_eq!(res.try_defer().unwrap_err(), crate::http::Refused::TooManyDeferred, "still refused");
                res.status(503).header("Retry-After", "2").body(e.to_string());
            }
        };
        let mut first = Conn::new(&sh);
        first.on_read(GET, &mut sh, &mut h);
        assert!(!first.has_output(), "deferred");
        let mut second = Conn::new(&sh);
        second.on_read(GET, &mut sh, &mut h);
        let text = String::from_utf8_lossy(second.output()).into_owned();
        assert!(text.starts_with("HTTP/1.1 503 ") && text.contains("\r\nRetry-After: 2\r\n"), "{text}");
        assert!(text.ends_with("too many deferred requests") && !second.is_closing(), "{text}");
        assert_eq!(kept.len(), 1);
        let mut plain = Response::new();
        assert_eq!(plain.try_defer().unwrap_err(), crate::http::Refused::NotInHandler);
        let mut twice = |_: &Request<'_>, res: &mut Response| {
            let r = res.try_defer();
            assert_eq!(res.try_defer().unwrap_err(), crate::http::Refused::AlreadyDeferred);
            drop(r);
        };
        first.release(&mut sh);
        let mut c = Conn::new(&sh);
        c.on_read(GET, &mut sh, &mut twice);
    }

    /// Jobs queued by [`keep_job`].
    static JOBS: std::sync::Mutex<Vec<crate::http::Job>> = std::sync::Mutex::new(Vec::new());

    fn keep_job(job: crate::http::Job) -> Result<(), crate::http::Job> {
        JOBS.lock().unwrap().push(job);
        Ok(())
    }

    fn full(job: crate::http::Job) -> Result<(), crate::http::Job> {
        Err(job)
    }

    #[test]
    fn blocking_work_answers_503_when_refused_and_is_skipped_once_its_client_left() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let mut h = move |_: &Request<'_>, res: &mut Response| {
            let r = r.clone();
            res.blocking(move || {
                r.fetch_add(1, Ordering::Relaxed);
                let mut res = Response::new();
                res.body("done");
                res
            });
        };
        let refused = |c: &Conn| {
            let text = String::from_utf8_lossy(c.output()).into_owned();
            text.starts_with("HTTP/1.1 503 ") && text.contains("\r\nRetry-After: 1\r\n") && !c.is_closing()
        };
        // No pool (outside a worker), then a full one: 503 at once.
        let mut sh = worker();
        let mut c = Conn::new(&sh);
        c.on_read(GET, &mut sh, &mut h);
        assert!(refused(&c), "{:?}", String::from_utf8_lossy(c.output()));
        sh.set_spawner(full);
        let mut c = Conn::new(&sh);
        c.on_read(GET, &mut sh, &mut h);
        assert!(refused(&c), "{:?}", String::from_utf8_lossy(c.output()));
        assert!(sh.deferred_room(), "nothing deferred");
        let mut batch = Vec::new();
        sh.take_completions(&mut batch);
        assert!(batch.is_empty());
        // Queued: the first request's client stays, the second's leaves
        // before a thread takes its job.
        sh.set_spawner(keep_job);
        let mut stays = Conn::new(&sh);
        stays.on_read(GET, &mut sh, &mut h);
        sh.limits.max_deferred = 2;
        let mut leaves = Conn::new(&sh);
        leaves.on_read(GET, &mut sh, &mut h);
        assert!(!stays.has_output() && !leaves.has_output(), "both deferred");
        leaves.release(&mut sh);
        let jobs: Vec<_> = std::mem::take(&mut *JOBS.lock().unwrap());
        assert_eq!(jobs.len(), 2);
        for job in jobs {
            job();
        }
        assert_eq!(ran.load(Ordering::Relaxed), 1, "the work of the client that left never ran");
        assert!(stays.complete(take(&sh), &mut sh, &mut h));
        assert!(stays.output().starts_with(b"HTTP/1.1 200 ") && stays.output().ends_with(b"done"));
        assert_eq!(ran.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn beyond_the_deferred_cap_a_request_is_answered_503_at_once() {
        let mut sh = worker();
        let mut kept = Vec::new();
        let mut h = |_: &Request<'_>, res: &mut Response| kept.push(res.defer());
        let mut first = Conn::new(&sh);
        first.on_read(GET, &mut sh, &mut h);
        let mut second = Conn::new(&sh);
        second.on_read(GET, &mut sh, &mut h);
        assert!(!first.has_output());
        assert_eq!(status(second.output()), "503");
        first.release(&mut sh);
        assert!(sh.deferred_room(), "a closed connection gives its place back");
    }

    #[test]
    fn a_refused_body_is_answered_and_never_read() {
        struct Refuse;
        impl crate::http::Handler for Refuse {
            fn handle(&mut self, _: &Request<'_>, _: &mut Response) {
                unreachable!("the body is refused");
            }
            fn on_head(&mut self, _: &Request<'_>) -> crate::http::BodyPlan {
                let mut res = Response::new();
                res.status(413);
                crate::http::BodyPlan::Refuse(res)
            }
        }
        let mut sh = worker();
        let mut c = Conn::new(&sh);
        c.on_read(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nbody", &mut sh, &mut Refuse);
        assert_eq!(status(c.output()), "413");
        assert!(c.is_closing() && c.may_have_unread_input());
        assert!(String::from_utf8_lossy(c.output()).contains("Connection: close"));
    }

    #[test]
    fn an_upgrade_needs_a_request_that_asked_for_it() {
        let mut sh = worker();
        let mut up = |_: &Request<'_>, res: &mut Response| {
            res.header("Upgrade", "x").upgrade(|_| {});
        };
        let mut c = Conn::new(&sh);
        c.on_read(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nEARLY", &mut sh, &mut up);
        assert_eq!(status(c.output()), "101");
        let n = c.output_len();
        c.consume_output(n, &mut sh);
        let (_, early, _) = c.take_upgrade().expect("ready once the 101 is out");
        assert_eq!(early, b"EARLY");
        let mut c = Conn::new(&sh);
        c.on_read(GET, &mut sh, &mut up);
        assert_eq!(status(c.output()), "500", "no Upgrade field");
    }
}
