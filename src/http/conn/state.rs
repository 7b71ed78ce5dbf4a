//! What a connection holds between calls: its input, its output, where it
//! is in the request cycle, its deadline, and the part that only a busy
//! connection needs; with the few transitions every room makes (closing
//! the input, the connection's share of the body budget).
//!
//! Where it stops: the rooms beside it decide when these change; this
//! file only says what each part means.

use std::fmt;
use std::mem;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

use super::decode::Body;
use super::output::{Output, OUTPUT_HIGH_WATER};
use crate::http::access::LoggedRequest;
use crate::http::answer::{FileOut, Live, Pipe, UpgradeFn, UpgradePermit};
use crate::http::body::BodyReader;
use crate::http::scan::HeadScan;
use crate::http::worker_state::WorkerState;

/// Where the connection is in the request cycle.
#[derive(Debug)]
pub(super) enum State {
    /// Between requests, or inside a head that is not complete yet.
    Head,
    /// The head (kept in `held[..head_len]`) is complete; its body is being
    /// received into `held[head_len..]`, or handed to a reader.
    Body(Body),
    /// No further input is processed: the last response carries
    /// `Connection: close` or the peer is gone.
    Closed,
    /// A `101` is framed: input received from now on is kept, untouched,
    /// for the hand-over of the connection ([`Conn::take_upgrade`]).
    Upgrade,
}

/// One connection's protocol state: bytes in through [`Conn::on_read`],
/// response bytes out through [`Conn::output`] or [`Conn::take_output`].
#[derive(Debug)]
pub struct Conn {
    /// Received bytes not yet consumed: the start of an incomplete head,
    /// or requests held back.
    pub(super) pending: Vec<u8>,
    /// How far the incomplete head at the front of `pending` was scanned,
    /// so that each read costs what its own bytes cost.
    pub(super) scan: HeadScan,
    /// Framed responses not yet sent.
    pub(super) out: Output,
    /// Where the connection is in the request cycle.
    pub(super) state: State,
    /// When the connection's current wait ends, in [`WorkerState::now_ms`] time.
    pub(super) deadline: u64,
    /// The driver's token for this connection, carried by its responders.
    pub(super) token: u64,
    /// What only a request with a body, a deferred, streamed or file
    /// response, or an upgrade needs; made the first time one comes and
    /// kept for the connection's life. An idle keep-alive connection that
    /// only ever served whole responses has none, and stays this small.
    pub(super) busy: Option<Box<Busy>>,
    /// The connection's socket (for [`crate::Request::peer_addr`]); -1 if
    /// none.
    pub(super) socket: RawFd,
    /// The deadline is the header timer, which more bytes do not extend.
    pub(super) header_timer: bool,
    /// The peer sent its last byte; requests held back by the high-water
    /// mark are still answered, then the connection closes.
    pub(super) peer_done: bool,
    /// Input was closed where more of it may follow or was already
    /// received and dropped (a refused request, bytes after the last
    /// answered one): closing the socket at once could then send a reset
    /// that destroys the last response, so the driver lingers.
    pub(super) unread: bool,
    /// The request at the front of `pending` waits for the end of the
    /// loop's turn: its handler is known to be heavy and the turn answers
    /// its cheap requests first ([`WorkerState::parks`]).
    pub(super) parked: bool,
    /// The request at the front of `pending` was parked and is resumed: it
    /// is answered now, not parked again.
    pub(super) resumed: bool,
}

/// The part of a [`Conn`] that requests with bodies and responses other
/// than whole bytes use.
#[derive(Debug, Default)]
pub(super) struct Busy {
    /// The head of the request whose body is arriving, then the body.
    pub(super) held: Vec<u8>,
    /// Length of the head at the front of `held`.
    pub(super) head_len: usize,
    /// This connection's share of [`WorkerState`]'s body budget.
    pub(super) body_charged: usize,
    /// Requests deferred on this connection so far (the last one's number).
    pub(super) deferred_seq: u64,
    /// The deferred request the connection waits on: no later request is
    /// answered before it.
    pub(super) awaiting: Option<Box<Awaiting>>,
    /// The word the connection shares with its responders, saying which
    /// deferred request it waits on (made the first time it defers).
    pub(super) live: Option<Live>,
    /// The reader of the body being streamed (in [`State::Body`]); `None`
    /// when the body is collected whole.
    pub(super) reader: Option<Reader>,
    /// Bodies streamed on this connection so far (the current one's
    /// number, which its [`crate::Resume`] carries).
    pub(super) body_seq: u64,
    /// The reader paused the body: nothing more is delivered or read until
    /// it resumes.
    pub(super) body_paused: bool,
    /// How fast the body being received arrives (in [`State::Body`]).
    pub(super) body_clock: BodyClock,
    /// What takes the connection once its `101` is sent.
    pub(super) takeover: Option<Takeover>,
    /// The streamed body being sent: no later request is answered before
    /// it ends.
    pub(super) stream: Option<Box<Streaming>>,
    /// The file body being sent, after the output: no later request is
    /// answered before it is out.
    pub(super) file: Option<Box<FileOut>>,
}

/// How fast a request body arrives, for [`crate::Limits::min_body_rate`]:
/// the time the client has had to send it, and what it sent. The
/// deadline room reads it (`deadline`).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct BodyClock {
    /// When the body began to be waited on, in [`WorkerState::now_ms`] time,
    /// moved later by each pause its reader made: `now - from_ms` is the
    /// time the client has had.
    pub(super) from_ms: u64,
    /// Bytes of the body received so far, as sent (chunk framing too).
    pub(super) received: u64,
    /// When the reader paused the body (while [`Busy::body_paused`]).
    pub(super) paused_at: u64,
}

impl Busy {
    /// Stops waiting on the deferred request: its responder no longer
    /// counts it live.
    pub(super) fn stop_awaiting(&mut self) -> Option<Box<Awaiting>> {
        if let Some(live) = &self.live {
            live.clear();
        }
        self.awaiting.take()
    }
}

/// The reader of a streamed request body.
pub(super) struct Reader(pub(super) Box<dyn BodyReader>);

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reader(..)")
    }
}

/// What takes an upgraded connection, and the connection's place under
/// [`crate::Limits::max_upgraded`] (given back if it closes before the
/// hand-over).
pub(super) struct Takeover(pub(super) UpgradeFn, pub(super) UpgradePermit);

impl fmt::Debug for Takeover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Takeover(..)")
    }
}

/// A streamed response body in progress.
#[derive(Debug)]
pub(super) struct Streaming {
    /// What the writer and the loop share.
    pub(super) pipe: Arc<Pipe>,
    /// Framed as chunks (HTTP/1.1); else the bytes as they are, ended by
    /// the close (HTTP/1.0).
    pub(super) chunked: bool,
    /// The connection closes after it.
    pub(super) close: bool,
}

/// A deferred request being waited on, with what its framing needs.
#[derive(Debug)]
pub(super) struct Awaiting {
    /// Its number on the connection.
    pub(super) seq: u64,
    /// HEAD: the body is measured, not sent.
    pub(super) head_only: bool,
    /// The connection closes after it.
    pub(super) close: bool,
    /// An HTTP/1.0 client that asked for keep-alive.
    pub(super) keep_alive_10: bool,
    /// The start of the turn that took the request in.
    pub(super) since: Instant,
    /// What the access log says of the request, kept until it is answered
    /// (only when there is an access log).
    pub(super) logged: Option<Box<LoggedRequest>>,
    /// The request was HTTP/1.0.
    pub(super) http10: bool,
}

impl Conn {
    /// The busy part, made the first time it is needed.
    pub(super) fn busy(&mut self) -> &mut Busy {
        self.busy.get_or_insert_with(Box::default)
    }

    /// No request is answered now: a deferred, streamed or file response
    /// is under way, a streamed body is paused, or the output is too large
    /// (one read of pipelined requests must not turn into unbounded
    /// output).
    pub(super) fn paused(&self) -> bool {
        self.parked || self.busy_answering() || self.body_paused() || self.out.len() >= OUTPUT_HIGH_WATER
    }

    /// The reader of a streamed body paused it.
    pub(super) fn body_paused(&self) -> bool {
        self.busy.as_ref().is_some_and(|b| b.body_paused)
    }

    /// The streamed body being sent.
    pub(super) fn stream(&self) -> Option<&Streaming> {
        self.busy.as_ref()?.stream.as_deref()
    }

    /// Whether a deferred request is awaited.
    pub(super) fn awaiting(&self) -> bool {
        self.busy.as_ref().is_some_and(|b| b.awaiting.is_some())
    }

    /// A deferred, streamed or file response is under way: later requests
    /// wait.
    #[inline]
    pub(super) fn busy_answering(&self) -> bool {
        self.busy.as_ref().is_some_and(|b| b.awaiting.is_some() || b.stream.is_some() || b.file.is_some())
    }

    /// Between requests with nothing buffered and nothing to send: a
    /// draining worker may close it at once.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head) && self.pending.is_empty() && self.out.is_empty() && !self.busy_answering()
    }

    /// Takes `n` more bytes of the worker's body budget for this
    /// connection; false (nothing taken) when the budget is spent.
    pub(super) fn charge(&mut self, sh: &mut WorkerState, n: usize) -> bool {
        if !sh.take_body_budget(n) {
            return false;
        }
        self.busy().body_charged += n;
        true
    }

    /// Gives this connection's share of the body budget back.
    pub(super) fn refund(&mut self, sh: &mut WorkerState) {
        if let Some(b) = self.busy.as_mut() {
            sh.return_body_budget(b.body_charged);
            b.body_charged = 0;
        }
    }

    /// Closes the input right after a complete request was answered:
    /// nothing of the client's is left unread unless later bytes are
    /// already buffered (or arrive).
    pub(super) fn close_after_request(&mut self, sh: &mut WorkerState) {
        let unread = self.unread || !self.pending.is_empty();
        self.close_input(sh);
        self.unread = unread;
    }

    /// Closes the input where more of it may follow (see [`Conn::unread`]).
    pub(super) fn close_input(&mut self, sh: &mut WorkerState) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Limits, Timeouts};

    #[test]
    fn input_closed_after_a_request_is_unread_only_if_bytes_follow() {
        let mut sh = WorkerState::new(Limits::default(), Timeouts::default());
        let mut c = Conn::new(&sh);
        c.close_after_request(&mut sh);
        assert!(c.is_closing() && !c.may_have_unread_input());
        let mut c = Conn::new(&sh);
        c.pending.extend_from_slice(b"GET");
        c.close_after_request(&mut sh);
        assert!(c.may_have_unread_input(), "a later request was already read");
        let mut c = Conn::new(&sh);
        c.close_input(&mut sh);
        assert!(c.may_have_unread_input(), "closed where more may follow");
        c.peer_done = true;
        c.close_input(&mut sh);
        assert!(!c.may_have_unread_input(), "the peer sent its last byte");
    }

    #[test]
    fn a_connections_share_of_the_body_budget_comes_back_whole() {
        let mut sh = WorkerState::new(Limits::DEFAULT.with_max_buffered_bodies(10), Timeouts::default());
        let mut c = Conn::new(&sh);
        assert!(c.charge(&mut sh, 6) && c.charge(&mut sh, 4));
        assert!(!c.charge(&mut sh, 1), "spent");
        c.close_input(&mut sh);
        assert!(sh.take_body_budget(10), "closing gives it back");
    }
}
