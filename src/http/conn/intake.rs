//! Request-body intake: what happens between a head that announces a body
//! and the answer to its request.
//!
//! The handler is asked first how to take the body
//! ([`crate::Handler::on_head`]), before any of it is read and before a
//! `100 Continue` goes out. A body taken **whole** is collected behind its
//! head (kept in the connection's busy part), against
//! [`crate::Limits::max_body`] and the worker's budget of buffered bodies;
//! then the handler answers the request.
//!
//! The budget ([`crate::Limits::max_buffered_bodies`]) bounds the memory a
//! worker's connections hold in bodies, so it is charged with what is
//! held: each read's bytes as they arrive, a declared `Content-Length`
//! and a chunked body alike, and refused (`503`) at the read that would
//! take it over. A declared length is a promise that costs nothing until
//! its bytes come: charging it up front would let a few clients that
//! declare large bodies and send them slowly refuse every other upload
//! with memory the worker never holds. Only a declared length larger than
//! the whole budget, which could never fit, is refused before its body is
//! read. A client that sends its body too slowly is the deadline room's
//! (`deadline`, the body rate); the body's clock starts here, when it
//! begins to be waited on.
//!
//! A **streamed** body goes to its reader piece by piece, de-chunked, and
//! holds nothing in the budget; the reader may pause it (the connection
//! then reads nothing more until the [`crate::Resume`] comes back through
//! the mailbox, and the client is not timed meanwhile) or stop it with a
//! status, and answers the request at the body's end. A **refused** body
//! is never read: the handler's answer goes out and the connection
//! closes.
//!
//! Where it stops: the framing of the body's bytes is
//! [`super::decode`]'s; the answer is [`super::respond`]'s.

use std::mem;

use super::decode::Body;
use super::guard::guarded;
use super::head::{self, Head};
use super::state::{Conn, Reader, State};
use crate::http::answer::Response;
use crate::http::body::{BodyFlow, BodyPlan};
use crate::http::handler::Handler;
use crate::http::request::Request;
use crate::http::worker_state::WorkerState;

/// The interim response that lets a client waiting on
/// `Expect: 100-continue` send its body.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What became of input handed to the body being received.
pub(super) enum Intake {
    /// The body ended after this many bytes, and its request was answered.
    Ended(usize),
    /// This many bytes were taken and no more can be now: the input is
    /// used up, or the reader paused the body.
    Wait(usize),
    /// The request failed: it was answered with an error, and the input is
    /// closed.
    Failed,
}

impl Conn {
    /// A head announced a body: asks the handler how to take it. `None`:
    /// collect it whole (the default); otherwise the bytes of `buf` used,
    /// or the status to fail with.
    pub(super) fn plan_body<H: Handler>(
        &mut self,
        head: &Head<'_, '_>,
        buf: &[u8],
        sh: &mut WorkerState,
        handler: &mut H,
    ) -> Option<Result<usize, u16>> {
        let request = head.request(&[], self.socket);
        let Some(plan) = guarded(|| handler.on_head(&request)) else {
            log::error!("handler panicked on the head of {} {}; answering 500", request.method, request.target);
            return Some(Err(500));
        };
        match plan {
            BodyPlan::Whole => None,
            BodyPlan::Refuse(res) => {
                self.refuse(&request, res, sh);
                Some(Ok(head.len))
            }
            BodyPlan::Stream(reader) => {
                self.hold_head(&buf[..head.len], sh);
                let b = self.busy();
                b.reader = Some(Reader(reader));
                b.body_seq += 1;
                b.body_paused = false;
                self.state = State::Body(Body::new(head.framing.length));
                self.start_body_clock(sh);
                // The handler took the body: the client may send it, if it
                // has not already.
                if head.expects_continue() && buf.len() == head.len {
                    self.send_continue(sh);
                }
                Some(Ok(head.len))
            }
        }
    }

    /// The body of `head`, to be collected whole, is not all in `buf`:
    /// keeps the head and collects the body behind it, charged as it
    /// arrives. A declared length larger than the whole body budget is
    /// answered `503` before any of the body is read.
    pub(super) fn await_body(&mut self, head: &Head<'_, '_>, buf: &[u8], sh: &mut WorkerState) -> Result<usize, u16> {
        if head.framing.length.is_some_and(|len| len > sh.limits.max_buffered_bodies as u64) {
            return Err(503);
        }
        self.hold_head(&buf[..head.len], sh);
        self.state = State::Body(Body::new(head.framing.length));
        self.start_body_clock(sh);
        if head.expects_continue() {
            self.send_continue(sh);
        }
        Ok(head.len)
    }

    /// Lets a client that waits for it send its body: the one place a
    /// `100 Continue` is written.
    fn send_continue(&mut self, sh: &mut WorkerState) {
        self.out.buf(sh).extend_from_slice(CONTINUE);
    }

    /// Takes the body's bytes at the front of `input`: collects them, or
    /// hands them to the reader; at the body's end, answers its request.
    pub(super) fn take_body<H: Handler>(&mut self, input: &[u8], sh: &mut WorkerState, handler: &mut H) -> Intake {
        if self.busy.as_ref().is_some_and(|b| b.reader.is_some()) {
            return self.stream_body(input, sh);
        }
        let State::Body(body) = &mut self.state else { unreachable!("a body is taken only in State::Body") };
        let b = self.busy.get_or_insert_with(Box::default);
        let before = b.held.len();
        let result = body.collect(input, &mut b.held, sh.limits.max_body.saturating_add(b.head_len));
        let grown = b.held.len() - before;
        if !self.charge(sh, grown) {
            self.fail(503, sh);
            return Intake::Failed;
        }
        match result {
            Ok(Some(n)) => {
                self.state = State::Head;
                self.answer_held(sh, |q, r| handler.handle(q, r));
                Intake::Ended(n)
            }
            Ok(None) => {
                self.body_received(input.len());
                Intake::Wait(input.len())
            }
            Err(status) => {
                self.fail(status, sh);
                Intake::Failed
            }
        }
    }

    /// Hands the reader the next piece of a streamed body, unless it
    /// paused the body.
    fn stream_body(&mut self, input: &[u8], sh: &mut WorkerState) -> Intake {
        if self.body_paused() {
            return Intake::Wait(0);
        }
        match self.stream_piece(input, sh) {
            Ok((used, true)) => {
                self.state = State::Head;
                self.end_stream(sh);
                Intake::Ended(used)
            }
            // Not ended: all of `input` was body.
            Ok((used, false)) => {
                self.body_received(used);
                Intake::Wait(used)
            }
            Err(status) => {
                self.fail(status, sh);
                Intake::Failed
            }
        }
    }

    /// Hands the reader one piece of `input` (as much of it as the body
    /// takes); returns how many bytes were used and whether the body ended,
    /// or the status to fail with.
    fn stream_piece(&mut self, input: &[u8], sh: &mut WorkerState) -> Result<(usize, bool), u16> {
        let State::Body(body) = &mut self.state else { unreachable!("a body is streamed only in State::Body") };
        let chunked = body.is_chunked();
        let mut decoded = if chunked { sh.buffer() } else { Vec::new() };
        let (used, ended) = match body.piece(input, &mut decoded) {
            Ok(progress) => progress,
            Err(status) => {
                sh.recycle(decoded);
                return Err(status);
            }
        };
        let piece = if chunked { &decoded[..] } else { &input[..used] };
        let Some(b) = self.busy.as_mut() else { unreachable!("checked by the caller") };
        let Some(Reader(reader)) = b.reader.as_mut() else { unreachable!("checked by the caller") };
        let mut flow = BodyFlow::new(Some(&sh.completions), self.token, b.body_seq);
        let outcome = if piece.is_empty() { Some(()) } else { guarded(|| reader.data(piece, &mut flow)) };
        let (paused, stopped) = (flow.paused(), flow.stopped());
        sh.recycle(decoded);
        if outcome.is_none() {
            log::error!("a body reader panicked; answering 500");
            return Err(500);
        }
        if let Some(status) = stopped {
            return Err(status);
        }
        if paused && !ended {
            self.busy().body_paused = true;
            self.pause_body_clock(sh);
        }
        Ok((used, ended))
    }

    /// The streamed body ended: its reader answers the request.
    fn end_stream(&mut self, sh: &mut WorkerState) {
        let b = self.busy();
        b.body_paused = false;
        let Some(Reader(mut reader)) = b.reader.take() else { return };
        self.answer_held(sh, |q, r| reader.end(q, r));
    }

    /// The paused body `seq` may go on (its reader's resume came back
    /// through the mailbox); false when the resume is stale.
    pub(super) fn unpause(&mut self, seq: u64, sh: &WorkerState) -> bool {
        if matches!(self.state, State::Closed) {
            return false;
        }
        match self.busy.as_mut().filter(|b| b.body_seq == seq && b.body_paused) {
            Some(b) => {
                b.body_paused = false;
                self.resume_body_clock(sh);
                true
            }
            None => false,
        }
    }

    /// Keeps `head` at the front of `held`, for its body to follow.
    fn hold_head(&mut self, head: &[u8], sh: &mut WorkerState) {
        let b = self.busy();
        if b.held.capacity() == 0 {
            b.held = sh.buffer();
        }
        b.held.clear();
        b.held.extend_from_slice(head);
        b.head_len = head.len();
    }

    /// Answers the request whose head (and body, when collected) is in
    /// `held` with `answer`.
    fn answer_held(&mut self, sh: &mut WorkerState, answer: impl FnOnce(&Request<'_>, &mut Response)) {
        let b = self.busy();
        let held = mem::take(&mut b.held);
        let head_len = mem::take(&mut b.head_len);
        let mut room = head::slots();
        match head::reparse(&held[..head_len], &sh.limits, &mut room) {
            Some(head) => {
                let request = head.request(&held[head_len..], self.socket);
                self.respond(&request, sh, answer);
            }
            None => {
                debug_assert!(false, "held head no longer parses");
                self.fail(500, sh);
            }
        }
        self.refund(sh);
        sh.recycle(held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Limits, Timeouts};
    use crate::http::{BodyReader, Resume};

    /// Keeps every piece and, when asked, pauses after each.
    #[derive(Default)]
    struct Pieces {
        got: Vec<Vec<u8>>,
        pause: bool,
        resume: Option<Resume>,
    }

    impl BodyReader for std::rc::Rc<std::cell::RefCell<Pieces>> {
        fn data(&mut self, piece: &[u8], flow: &mut BodyFlow<'_>) {
            let mut p = self.borrow_mut();
            p.got.push(piece.to_vec());
            if p.pause {
                p.resume = Some(flow.pause());
            }
        }
        fn end(&mut self, _: &Request<'_>, res: &mut Response) {
            let total: usize = self.borrow().got.iter().map(Vec::len).sum();
            res.body(total.to_string());
        }
    }

    struct Streamed(std::rc::Rc<std::cell::RefCell<Pieces>>);

    impl Handler for Streamed {
        fn handle(&mut self, _: &Request<'_>, res: &mut Response) {
            res.body("whole");
        }
        fn on_head(&mut self, _: &Request<'_>) -> BodyPlan {
            BodyPlan::Stream(Box::new(self.0.clone()))
        }
    }

    fn echo(req: &Request<'_>, res: &mut Response) {
        res.body(req.body());
    }

    fn body_of(out: &[u8]) -> &[u8] {
        let at = out.windows(4).rposition(|w| w == b"\r\n\r\n").unwrap();
        &out[at + 4..]
    }

    #[test]
    fn a_chunked_body_is_collected_across_reads_and_charged_as_it_arrives() {
        let mut sh = WorkerState::new(Limits::DEFAULT.with_max_buffered_bodies(1 << 20), Timeouts::default());
        let mut c = Conn::new(&sh);
        let req =
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n";
        for piece in req.chunks(5) {
            c.on_read(piece, &mut sh, &mut echo);
        }
        assert_eq!(body_of(c.output()), b"wikipedia");
        assert!(sh.take_body_budget(1 << 20), "every byte charged was given back");
    }

    #[test]
    fn a_declared_body_larger_than_the_whole_budget_is_refused_before_it_is_read() {
        let mut sh = WorkerState::new(Limits::DEFAULT.with_max_buffered_bodies(10), Timeouts::default());
        let mut c = Conn::new(&sh);
        c.on_read(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nabc", &mut sh, &mut echo);
        assert!(c.output().starts_with(b"HTTP/1.1 503 "));
        let mut c = Conn::new(&sh);
        let chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nghijkl\r\n";
        c.on_read(chunked, &mut sh, &mut echo);
        assert!(c.output().starts_with(b"HTTP/1.1 503 "), "charged as it arrives");
        assert!(sh.take_body_budget(10), "and given back");
    }

    #[test]
    fn a_declared_body_is_charged_as_its_bytes_arrive_and_refused_at_the_read_that_goes_over() {
        let mut sh = WorkerState::new(Limits::DEFAULT.with_max_buffered_bodies(1000), Timeouts::default());
        let head = |len: usize| format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n");
        let mut a = Conn::new(&sh);
        a.on_read(format!("{}{}", head(800), "a".repeat(100)).as_bytes(), &mut sh, &mut echo);
        assert_eq!(sh.body_bytes(), 100, "what arrived, not what was declared");
        // Another body of 800 fits beside A's 100 bytes: its client is let
        // send it.
        let mut b = Conn::new(&sh);
        let expect = format!("{}Expect: 100-continue\r\n\r\n", &head(800)[..head(800).len() - 2]);
        b.on_read(expect.as_bytes(), &mut sh, &mut echo);
        assert_eq!(b.output(), CONTINUE);
        b.on_read("b".repeat(500).as_bytes(), &mut sh, &mut echo);
        assert_eq!(sh.body_bytes(), 600);
        // A's next 500 bytes would hold 1,100: refused at that read, and
        // A's share comes back.
        a.on_read("a".repeat(500).as_bytes(), &mut sh, &mut echo);
        assert!(a.output().starts_with(b"HTTP/1.1 503 ") && a.is_closing());
        assert_eq!(sh.body_bytes(), 500, "only B's bytes are held");
        b.on_read("b".repeat(300).as_bytes(), &mut sh, &mut echo);
        assert_eq!(body_of(b.output()), "b".repeat(800).as_bytes());
        assert_eq!(sh.body_bytes(), 0, "answered: every byte given back");
        a.release(&mut sh);
        b.release(&mut sh);
        assert_eq!(sh.body_bytes(), 0);
    }

    #[test]
    fn continue_is_sent_once_and_only_to_a_client_that_waits() {
        let mut sh = WorkerState::new(Limits::default(), Timeouts::default());
        let mut c = Conn::new(&sh);
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n";
        c.on_read(head, &mut sh, &mut echo);
        assert_eq!(c.output(), CONTINUE);
        c.on_read(b"hi", &mut sh, &mut echo);
        assert_eq!(c.output().windows(CONTINUE.len()).filter(|w| *w == CONTINUE).count(), 1);
        assert_eq!(body_of(c.output()), b"hi");
        let p = std::rc::Rc::default();
        let mut c = Conn::new(&sh);
        let mut both = head.to_vec();
        both.extend_from_slice(b"hi");
        c.on_read(&both, &mut sh, &mut Streamed(std::rc::Rc::clone(&p)));
        assert!(!c.output().starts_with(CONTINUE), "the body came with the head");
        assert_eq!(body_of(c.output()), b"2");
    }

    #[test]
    fn a_streamed_body_pauses_and_goes_on_when_resumed() {
        let mut sh = WorkerState::new(Limits::default(), Timeouts::default());
        let p = std::rc::Rc::new(std::cell::RefCell::new(Pieces { pause: true, ..Pieces::default() }));
        let mut h = Streamed(p.clone());
        let mut c = Conn::new(&sh);
        c.set_token(5);
        c.on_read(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nab", &mut sh, &mut h);
        c.on_read(b"cdef", &mut sh, &mut h);
        assert_eq!(p.borrow().got, [b"ab".to_vec()], "paused: nothing more delivered");
        assert!(!c.wants_input(&sh) && c.has_pending_input());
        p.borrow_mut().pause = false;
        let resume = p.borrow_mut().resume.take().unwrap();
        resume.resume();
        let mut batch = Vec::new();
        sh.take_completions(&mut batch);
        let completion = batch.pop().unwrap();
        assert_eq!(completion.token(), 5);
        assert!(c.complete(completion, &mut sh, &mut h));
        assert_eq!(p.borrow().got, [b"ab".to_vec(), b"cdef".to_vec()]);
        assert_eq!(body_of(c.output()), b"6", "the reader answered at the end");
    }

    #[test]
    fn a_body_its_reader_paused_is_not_timed_while_paused() {
        const IDLE: u64 = 60_000;
        let rate = crate::MinDataRate::new(240, std::time::Duration::from_secs(5));
        let t = Timeouts::default().with_idle(std::time::Duration::from_millis(IDLE));
        let mut sh = WorkerState::new(Limits::DEFAULT.with_min_body_rate(Some(rate)), t);
        let p = std::rc::Rc::new(std::cell::RefCell::new(Pieces { pause: true, ..Pieces::default() }));
        let mut h = Streamed(p.clone());
        let mut c = Conn::new(&sh);
        c.on_read(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nab", &mut sh, &mut h);
        assert_eq!(c.deadline(), IDLE, "paused by the server: only the idle timeout runs");
        sh.now_ms = 30_000;
        assert!(!c.body_too_slow(&sh), "the server's own pause is not the client's slowness");
        c.on_read(b"cdef", &mut sh, &mut h);
        assert!(!c.has_output());
        p.borrow_mut().pause = false;
        p.borrow_mut().resume.take().unwrap().resume();
        let mut batch = Vec::new();
        sh.take_completions(&mut batch);
        assert!(c.complete(batch.pop().unwrap(), &mut sh, &mut h));
        // 6 bytes, and the client has been timed for no time at all: the
        // grace starts over from the resume.
        assert_eq!(c.deadline(), 30_000 + 5_000);
        sh.now_ms = 35_000;
        assert!(!c.on_deadline(&mut sh), "answered, then closed");
        assert!(c.output().starts_with(b"HTTP/1.1 408 ") && c.is_closing());
    }
}
