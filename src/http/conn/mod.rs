//! The per-connection protocol state machine: bytes in, requests to the
//! handler, framed responses out.
//!
//! This file is the machine (the loop over received bytes, the step from a
//! parsed head to its answer) and the API the drivers call. The rest is in
//! rooms, one job each, which the machine composes; none of them calls
//! back up into it:
//!
//! | room | job |
//! |---|---|
//! | `state` | what a connection holds between calls, and closing its input |
//! | `head` | one head parsed into a value; changes no state |
//! | `decode` | a body's framing (length, chunked) as its bytes arrive |
//! | `intake` | request-body intake: whole or streamed, budget, `100 Continue`, pause and resume |
//! | `respond` | answering: respond, refuse, defer, a deferred completion, upgrade, fail |
//! | `send` | sending stream and file bodies |
//! | `output` | the output buffer, the one emit path, and the drivers' two output protocols |
//! | `deadline` | header, idle, deferred, body-rate and drain deadlines |
//! | `guard` | calling user code so that a panic costs one request |
//!
//! The per-worker state every connection shares is [`super::WorkerState`].

mod deadline;
mod decode;
mod guard;
mod head;
mod intake;
mod output;
mod respond;
mod send;
mod state;

pub use output::OUTPUT_HIGH_WATER;
pub use state::Conn;

use std::mem;
use std::os::fd::RawFd;
use std::sync::Arc;

use guard::run_ready;
use head::Parse;
use intake::Intake;
use output::Output;
use state::State;

use super::answer::{Completion, Outcome, UpgradeFn, UpgradePermit};
use super::handler::Handler;
use super::request::path_of;
use super::scan::HeadScan;
use super::worker_state::WorkerState;

/// What became of the bytes at the front of a buffer in [`State::Head`].
enum Step {
    /// More bytes are needed.
    Partial,
    /// A request was answered, or its body is awaited; this many bytes
    /// were used.
    Done(usize),
    /// Answer with this status and close.
    Fail(u16),
    /// The request waits for the end of the turn ([`Conn::unpark`]); its
    /// bytes and those after it are kept.
    Park,
}

impl Conn {
    /// A freshly accepted connection; its first request must arrive within
    /// the header timeout.
    pub fn new(sh: &WorkerState) -> Conn {
        Conn {
            pending: Vec::new(),
            scan: HeadScan::default(),
            out: Output::default(),
            state: State::Head,
            deadline: sh.now_ms + sh.header_ms,
            token: 0,
            busy: None,
            socket: -1,
            header_timer: true,
            peer_done: false,
            unread: false,
            parked: false,
            resumed: false,
        }
    }

    /// Processes received bytes: every complete request is answered by
    /// `handler`, in order, and its response appended to the output.
    pub fn on_read<H: Handler>(&mut self, data: &[u8], sh: &mut WorkerState, handler: &mut H) {
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
    pub fn resume<H: Handler>(&mut self, sh: &mut WorkerState, handler: &mut H) {
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

    /// Sets the driver's token for this connection (its responders carry
    /// it back); drivers call it right after [`Conn::new`].
    pub fn set_token(&mut self, token: u64) {
        self.token = token;
    }

    /// Sets the connection's socket, which a handler's
    /// [`crate::Request::peer_addr`] asks for the addresses.
    pub fn set_socket(&mut self, socket: RawFd) {
        self.socket = socket;
    }

    /// Whether the driver should read more input: not while a deferred
    /// request is awaited and a head's worth of later input waits already.
    /// Nor while a streamed body is paused by its reader (flow control:
    /// the client's send blocks once the kernel's buffers are full), nor
    /// once a `101` is framed (the rest is the new protocol's).
    pub fn wants_input(&self, sh: &WorkerState) -> bool {
        if self.body_paused() || matches!(self.state, State::Upgrade) {
            return false;
        }
        !(self.busy_answering() || self.parked) || self.pending.len() < sh.limits.max_head
    }

    /// The turn has answered its cheap requests: the request this
    /// connection parked ([`WorkerState::parks`]) is answered now. Drivers
    /// call it with the tokens [`WorkerState::next_parked`] gives, then
    /// [`Conn::resume`].
    pub fn unpark(&mut self) {
        self.resumed = mem::take(&mut self.parked);
    }

    /// The `101` of an upgrade is framed and no output is left here: the
    /// driver hands the connection over ([`Conn::take_upgrade`]) once its
    /// own sends are done and nothing is in flight on the socket.
    pub fn upgrade_ready(&self) -> bool {
        matches!(self.state, State::Upgrade) && !self.has_output()
    }

    /// Takes what the handler gave to take an upgraded connection, the
    /// bytes received after the request head, and the connection's place
    /// under [`crate::Limits::max_upgraded`] (for the [`crate::Upgraded`]);
    /// the connection then processes nothing more. `None` unless
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
    /// driver took from [`WorkerState::take_completions`] for this connection),
    /// then the requests that waited behind it. Returns false when the
    /// completion is stale (the request was answered at its deadline).
    ///
    /// A resume of a paused body ([`crate::Resume`]) lets the body go on;
    /// a stream's notice takes from the stream this connection sends.
    pub fn complete<H: Handler>(&mut self, completion: Completion, sh: &mut WorkerState, handler: &mut H) -> bool {
        match completion.outcome {
            Outcome::Resume => {
                if !self.unpause(completion.seq, sh) {
                    return false;
                }
                self.run_pending(sh, handler);
            }
            Outcome::Stream(pipe) => {
                // Only the stream this connection serves now is taken from.
                if !self.stream().is_some_and(|s| Arc::ptr_eq(&s.pipe, &pipe)) {
                    return false;
                }
                self.refill(sh);
                if !self.busy_answering() && !matches!(self.state, State::Closed) {
                    self.run_pending(sh, handler);
                }
            }
            outcome => {
                if !self.answer_deferred(completion.seq, outcome, sh) {
                    return false;
                }
                if !matches!(self.state, State::Closed) {
                    self.stop_header_timer();
                    self.run_pending(sh, handler);
                }
            }
        }
        self.settle(sh);
        true
    }

    /// The connection's deadline passed. Returns true when it must close
    /// now; false when it answered a deferred request `504` or a body that
    /// came too slowly `408` instead (and closes once that is sent), or
    /// waits on a quiet stream's writer.
    pub fn on_deadline(&mut self, sh: &mut WorkerState) -> bool {
        if self.body_too_slow(sh) {
            log::debug!("a request body came slower than the minimum rate; answering 408");
            self.fail(408, sh);
            return false;
        }
        if !self.awaiting() {
            return !self.wait_on_quiet_stream(sh);
        }
        self.busy().stop_awaiting();
        sh.deferred_ended();
        log::debug!("a deferred response took too long; answering 504");
        self.fail(504, sh);
        false
    }

    /// The peer will send nothing more. A request cut short gets no answer;
    /// output already framed is still sent, then the connection closes.
    pub fn on_eof(&mut self, sh: &mut WorkerState) {
        self.peer_done = true;
        self.settle(sh);
    }

    /// The worker started draining: every response framed from now on
    /// carries `Connection: close`, and the connection closes after it.
    /// An idle connection closes after [`super::DRAIN_IDLE_GRACE_MS`] (at
    /// its deadline), and so does one whose response, its head sent before
    /// the drain without `close`, ends during it: that head promised the
    /// client a next request, which may be on the wire already, so a
    /// request that comes within the grace is answered (with `close`)
    /// instead of being cut off (a client learns that a connection closes
    /// only from a response; RFC 9112 §9.6).
    pub fn start_drain(&mut self, sh: &WorkerState) {
        if let Some(st) = self.stream() {
            st.pipe.set_draining();
        }
        self.shorten_for_drain(sh);
    }

    /// The drain's grace of an idle connection ran out while bytes of its
    /// last response were still on their way to the client (in the
    /// driver's send, or unacknowledged at the socket): the client cannot
    /// have sent its next request yet, so the grace starts again.
    pub fn await_delivery(&mut self, sh: &WorkerState) {
        self.wait_idle(sh);
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

    /// Returns every buffer to the pool; call when the connection closes.
    pub fn release(mut self, sh: &mut WorkerState) {
        self.refund(sh);
        if let Some(mut b) = self.busy.take() {
            if b.stop_awaiting().is_some() {
                sh.deferred_ended();
            }
            if let Some(st) = b.stream.take() {
                if let Some(f) = st.pipe.close() {
                    run_ready(f);
                }
            }
            sh.recycle(b.held);
        }
        sh.recycle(self.pending);
        self.out.release(sh);
    }

    // The output, in the two protocols `output` describes.

    /// Output waiting to be sent.
    pub fn output(&self) -> &[u8] {
        self.out.pending()
    }

    /// Whether any output waits.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Bytes of output not yet sent.
    pub fn output_len(&self) -> usize {
        self.out.len()
    }

    /// Marks `n` bytes of [`Conn::output`] as sent.
    pub fn consume_output(&mut self, n: usize, sh: &mut WorkerState) {
        self.out.consume(n, sh);
        self.restart_on_send(sh);
        self.refill(sh);
    }

    /// Moves the pending output out, for a driver that must keep the bytes
    /// still while the kernel sends them. Give the buffer back with
    /// [`WorkerState::recycle`] and report completion with [`Conn::on_sent`].
    pub fn take_output(&mut self) -> Vec<u8> {
        self.out.take()
    }

    /// A send taken with [`Conn::take_output`] progressed.
    pub fn on_sent(&mut self, sh: &WorkerState) {
        self.restart_on_send(sh);
    }

    // The machine.

    /// Processes `pending`, unless paused. An incomplete head at its front
    /// is only scanned on from where the last read left it.
    fn run_pending<H: Handler>(&mut self, sh: &mut WorkerState, handler: &mut H) {
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
    fn settle(&mut self, sh: &mut WorkerState) {
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

    /// Runs the state machine over `buf`; returns how many bytes it used.
    /// Bytes not used are the start of an incomplete head.
    fn process<H: Handler>(&mut self, buf: &[u8], sh: &mut WorkerState, handler: &mut H) -> usize {
        let mut pos = 0;
        loop {
            match self.state {
                State::Closed => {
                    self.unread |= pos < buf.len();
                    return buf.len();
                }
                State::Upgrade => return pos,
                State::Head => {
                    if pos == buf.len() || self.paused() {
                        return pos;
                    }
                    match self.take_head(&buf[pos..], sh, handler) {
                        Step::Partial => return pos,
                        Step::Done(n) => pos += n,
                        Step::Park => return pos,
                        Step::Fail(status) => {
                            self.fail(status, sh);
                            return buf.len();
                        }
                    }
                }
                State::Body(_) => match self.take_body(&buf[pos..], sh, handler) {
                    Intake::Ended(n) => pos += n,
                    Intake::Wait(n) => return pos + n,
                    Intake::Failed => return buf.len(),
                },
            }
        }
    }

    /// Parses a head at the front of `buf` and answers it, or sets up the
    /// wait for its body.
    fn take_head<H: Handler>(&mut self, buf: &[u8], sh: &mut WorkerState, handler: &mut H) -> Step {
        let mut room = head::slots();
        let head = match head::parse(buf, &mut self.scan, &sh.limits, &mut room) {
            Parse::Partial => return Step::Partial,
            Parse::Fail(status) => return Step::Fail(status),
            Parse::Skip(n) => {
                // Empty lines are not a request: the header timer runs on.
                self.hold_header_timer(sh);
                return Step::Done(n);
            }
            Parse::Head(head) => head,
        };
        if sh.parking() && !mem::take(&mut self.resumed) && sh.parks(path_of(head.target), self.token) {
            self.parked = true;
            return Step::Park;
        }
        if head.has_body() {
            match self.plan_body(&head, buf, sh, handler) {
                None => {}
                Some(Ok(n)) => return Step::Done(n),
                Some(Err(status)) => return Step::Fail(status),
            }
        }
        if let Some(len) = head.framing.length {
            if len > sh.limits.max_body as u64 {
                return Step::Fail(413);
            }
            let len = len as usize;
            if buf.len() - head.len >= len {
                let request = head.request(&buf[head.len..head.len + len], self.socket);
                self.respond(&request, sh, |q, r| handler.handle(q, r));
                return Step::Done(head.len + len);
            }
        } else if !head.framing.chunked {
            let request = head.request(&[], self.socket);
            self.respond(&request, sh, |q, r| handler.handle(q, r));
            return Step::Done(head.len);
        }
        match self.await_body(&head, buf, sh) {
            Ok(n) => Step::Done(n),
            Err(status) => Step::Fail(status),
        }
    }
}

#[cfg(test)]
mod tests;
