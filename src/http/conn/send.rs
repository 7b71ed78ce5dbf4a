//! Sending response bodies that are not bytes in hand: a stream, taken
//! from its pipe into the output as the output drains ([`Conn::refill`]),
//! and a file, which the driver sends after the output without copying
//! ([`Conn::file_chunk`]), with a GET's `Range` and `If-Modified-Since`
//! answered first. While either is under way the connection answers no
//! later request.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use super::guard::run_ready;
use super::output::{Body, Frame};
use super::state::{Conn, Streaming};
use crate::http::answer::{
    fmt_u64, frame_chunk, plan_file, FileBody, FileOut, Kind, Pipe, Plan, Response, LAST_CHUNK, STREAM_OUTPUT_ROOM,
};
use crate::http::date::format_imf;
use crate::http::worker_state::WorkerState;

/// How to frame an answer whose body is a stream or a file: what the
/// request said.
pub(super) struct Answer<'r> {
    /// The head's framing.
    pub(super) frame: Frame,
    /// The request was HTTP/1.0 (no chunked framing).
    pub(super) http10: bool,
    /// A GET or HEAD's fields that decide how a file is answered (the
    /// handler's own response only).
    pub(super) conditional: Option<Conditional<'r>>,
}

/// The fields of a request that decide how a file is answered.
pub(super) struct Conditional<'r> {
    /// `Range`.
    pub(super) range: Option<&'r [u8]>,
    /// `If-Range`.
    pub(super) if_range: Option<&'r [u8]>,
    /// `If-Unmodified-Since`.
    pub(super) if_unmodified_since: Option<&'r [u8]>,
    /// `If-Modified-Since`.
    pub(super) if_modified_since: Option<&'r [u8]>,
}

impl Conn {
    /// Frames a response whose body is a stream or a file, and starts
    /// sending that body.
    #[cold]
    pub(super) fn start_body(&mut self, res: &mut Response, a: &Answer<'_>, sh: &mut WorkerState) {
        match res.take_kind() {
            Kind::Bytes => {
                self.out.emit(res, a.frame, Body::Whole, sh);
                if a.frame.close {
                    self.close_input(sh);
                }
            }
            Kind::Stream(pipe) => self.start_stream(res, pipe, a, sh),
            Kind::File(body) => self.start_file(res, body, a, sh),
        }
    }

    /// Sends the head of a streamed response and starts taking from its
    /// pipe: chunked for HTTP/1.1, ended by the close for HTTP/1.0.
    fn start_stream(&mut self, res: &mut Response, pipe: Arc<Pipe>, a: &Answer<'_>, sh: &mut WorkerState) {
        let chunked = !a.http10;
        let close = a.frame.close || !chunked;
        let frame = Frame { close, keep_alive_10: a.frame.keep_alive_10 && !close, ..a.frame };
        let bodyless = self.out.emit(res, frame, Body::Later { length: None, chunked }, sh);
        if bodyless || a.frame.head_only {
            // No body goes out: the writer learns at its first write.
            if let Some(f) = pipe.close() {
                run_ready(f);
            }
            if close {
                self.close_input(sh);
            }
            return;
        }
        if sh.draining() {
            // A stream that starts during a drain (a deferred one, or one
            // asked for on a connection still open) is told at once, as
            // the streams under way were when the drain began.
            pipe.set_draining();
        }
        self.busy().stream = Some(Box::new(Streaming { pipe, chunked, close }));
        self.wait_on_send(sh);
        self.refill(sh);
    }

    /// Sends the head of a file response (after `Range` and the
    /// conditional fields) and queues its bytes after it.
    fn start_file(&mut self, res: &mut Response, body: FileBody, a: &Answer<'_>, sh: &mut WorkerState) {
        let plan = match &a.conditional {
            Some(c) if res.status_code() == 200 => {
                plan_file(c.range, c.if_range, c.if_unmodified_since, c.if_modified_since, body.total, body.mtime)
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
            Plan::Unsatisfiable | Plan::PreconditionFailed => {
                if plan == Plan::Unsatisfiable {
                    res.set_error(416);
                    let mut v = b"bytes */".to_vec();
                    v.extend_from_slice(fmt_u64(body.total, &mut num));
                    res.runtime_header("Content-Range", &v);
                } else {
                    res.set_error(412);
                }
                self.out.emit(res, a.frame, Body::Whole, sh);
                if a.frame.close {
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
            format_imf(mtime, &mut date);
            res.runtime_header("Last-Modified", &date);
        }
        let bodyless = self.out.emit(res, a.frame, Body::Later { length: Some(len), chunked: false }, sh);
        if !bodyless && !a.frame.head_only && len > 0 {
            self.busy().file =
                Some(Box::new(FileOut { file: body.file, offset: start, remaining: len, close: a.frame.close }));
            self.wait_on_send(sh);
        } else if a.frame.close {
            self.close_input(sh);
        }
    }

    /// Takes what a streamed body's writer queued into the output, as much
    /// as the output's room allows, and ends the stream when its writer
    /// has; a driver that sends with [`Conn::take_output`] calls it when
    /// its send is done. Requests held back by the stream are then
    /// answered through [`Conn::resume`].
    pub fn refill(&mut self, sh: &mut WorkerState) {
        let Some(st) = self.stream() else { return };
        let pipe = st.pipe.clone();
        let chunked = st.chunked;
        let room = STREAM_OUTPUT_ROOM.saturating_sub(self.out.len());
        let mut data = sh.buffer();
        let taken = pipe.take(room, &mut data);
        if !data.is_empty() {
            let out = self.out.buf(sh);
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
                    self.out.buf(sh).extend_from_slice(LAST_CHUNK);
                }
                if st.close {
                    self.close_input(sh);
                } else {
                    // Its head promised the client a next request, which
                    // may be on its way already, even when the worker has
                    // begun draining since: the connection waits as an
                    // idle one does (see `Conn::start_drain`).
                    self.wait_idle(sh);
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
        if !self.out.is_empty() {
            return None;
        }
        self.busy.as_ref()?.file.as_ref().map(|f| (f.file.as_fd(), f.offset, f.remaining))
    }

    /// Whether a file body waits to be sent (after [`Conn::output`]).
    pub fn has_file(&self) -> bool {
        self.busy.as_ref().is_some_and(|b| b.file.is_some())
    }

    /// Marks `n` bytes of the file part as sent.
    pub fn file_sent(&mut self, n: u64, sh: &mut WorkerState) {
        let Some(b) = self.busy.as_mut() else { return };
        let Some(f) = &mut b.file else { return };
        let n = n.min(f.remaining);
        f.offset += n;
        f.remaining -= n;
        if f.remaining == 0 {
            let close = f.close;
            b.file = None;
            // Without `close` in its head, a next request may be on its
            // way: the wait below is an idle connection's, cut to the
            // drain's grace while draining (see `Conn::start_drain`).
            if close {
                self.close_input(sh);
            }
        }
        self.restart_on_send(sh);
    }

    /// The file body cannot be sent (it shrank, or reading it failed): the
    /// response cannot be completed, so the connection closes.
    pub fn file_failed(&mut self, sh: &mut WorkerState) {
        if self.busy.as_mut().and_then(|b| b.file.take()).is_some() {
            self.close_input(sh);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Limits, Timeouts};
    use crate::http::worker_state::DRAIN_IDLE_GRACE_MS;
    use crate::http::Request;
    use std::io::Write;

    fn file_of(bytes: &[u8]) -> std::fs::File {
        let path = std::env::temp_dir().join(format!(
            "forkring-send-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    fn serve(req: &[u8]) -> (String, Option<(u64, u64)>, bool) {
        let mut sh = WorkerState::new(Limits::default(), Timeouts::default());
        let mut c = Conn::new(&sh);
        c.on_read(req, &mut sh, &mut |_: &Request<'_>, res: &mut Response| {
            res.file(file_of(b"0123456789")).unwrap();
        });
        let head = String::from_utf8_lossy(c.output()).into_owned();
        let n = c.output_len();
        c.consume_output(n, &mut sh);
        let part = c.file_chunk().map(|(_, offset, left)| (offset, left));
        if let Some((_, left)) = part {
            c.file_sent(left, &mut sh);
        }
        (head, part, c.is_closing())
    }

    #[test]
    fn a_file_goes_after_its_head_whole_or_by_range() {
        let (head, part, closing) = serve(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 ") && head.contains("Content-Length: 10\r\n"), "{head}");
        assert_eq!((part, closing), (Some((0, 10)), false));
        let (head, part, _) = serve(b"GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=2-4\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 206 ") && head.contains("Content-Range: bytes 2-4/10\r\n"), "{head}");
        assert_eq!(part, Some((2, 3)));
        let (head, part, _) = serve(b"GET / HTTP/1.1\r\nHost: x\r\nRange: bytes=20-\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 416 ") && head.contains("Content-Range: bytes */10\r\n"), "{head}");
        assert_eq!(part, None);
        let (head, part, _) = serve(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(head.contains("Content-Length: 10\r\n"), "{head}");
        assert_eq!(part, None, "HEAD: no body");
        let (_, _, closing) = serve(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(closing, "closes once the file is out");
    }

    #[test]
    fn a_stream_is_framed_as_chunks_and_ended_by_its_writer() {
        let mut sh = WorkerState::new(Limits::default(), Timeouts::default());
        let mut c = Conn::new(&sh);
        let mut writer = None;
        c.on_read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut sh, &mut |_: &Request<'_>, res: &mut Response| {
            writer = Some(res.stream());
        });
        let w = writer.take().unwrap();
        w.send(b"hello").unwrap();
        c.refill(&mut sh);
        assert!(String::from_utf8_lossy(c.output()).ends_with("Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"));
        w.end();
        c.refill(&mut sh);
        assert!(c.output().ends_with(b"0\r\n\r\n") && !c.is_streaming() && !c.is_closing());
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    fn hello(_: &Request<'_>, res: &mut Response) {
        res.body("hi");
    }

    /// What a connection whose response ended during a drain does with
    /// the request after it: answers it with `Connection: close`, then
    /// closes with nothing of the client's unread.
    fn answers_the_next_request_with_close(c: &mut Conn, sh: &mut WorkerState) {
        let n = c.output_len();
        c.consume_output(n, sh);
        assert!(!c.is_closing() && c.is_idle(), "its head promised a next request");
        assert!(c.deadline() <= sh.now_ms + DRAIN_IDLE_GRACE_MS, "waited on as an idle one");
        c.on_read(GET, sh, &mut hello);
        let out = String::from_utf8_lossy(c.output()).into_owned();
        assert!(out.starts_with("HTTP/1.1 200 ") && out.contains("\r\nConnection: close\r\n"), "{out}");
        assert!(c.is_closing() && !c.may_have_unread_input());
    }

    #[test]
    fn a_file_whose_head_went_out_before_a_drain_keeps_the_next_request() {
        let mut sh = WorkerState::new(Limits::default(), Timeouts::default());
        let mut c = Conn::new(&sh);
        c.on_read(GET, &mut sh, &mut |_: &Request<'_>, res: &mut Response| {
            res.file(file_of(b"0123456789")).unwrap();
        });
        let n = c.output_len();
        c.consume_output(n, &mut sh);
        sh.set_draining();
        c.start_drain(&sh);
        c.file_sent(10, &mut sh);
        answers_the_next_request_with_close(&mut c, &mut sh);
    }

    #[test]
    fn a_request_that_waited_behind_a_file_is_answered_when_a_drain_comes() {
        let mut sh = WorkerState::new(Limits::default(), Timeouts::default());
        let mut c = Conn::new(&sh);
        let mut h = |req: &Request<'_>, res: &mut Response| {
            if req.path() == "/f" {
                res.file(file_of(b"0123456789")).unwrap();
            } else {
                res.body("next");
            }
        };
        c.on_read(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut sh, &mut h);
        assert!(c.has_pending_input(), "the second waits for the file");
        sh.set_draining();
        c.start_drain(&sh);
        let n = c.output_len();
        c.consume_output(n, &mut sh);
        c.file_sent(10, &mut sh);
        c.resume(&mut sh, &mut h);
        let out = String::from_utf8_lossy(c.output()).into_owned();
        assert!(out.contains("\r\nConnection: close\r\n") && out.ends_with("next"), "{out}");
        assert!(c.is_closing() && !c.may_have_unread_input());
    }

    #[test]
    fn a_body_being_sent_during_a_drain_is_waited_on_as_while_serving() {
        let mut sh = WorkerState::new(Limits::default(), Timeouts::default());
        let mut c = Conn::new(&sh);
        c.on_read(GET, &mut sh, &mut |_: &Request<'_>, res: &mut Response| {
            res.file(file_of(b"0123456789")).unwrap();
        });
        let n = c.output_len();
        c.consume_output(n, &mut sh);
        sh.set_draining();
        c.start_drain(&sh);
        sh.now_ms = 1_000;
        c.file_sent(4, &mut sh);
        assert_eq!(c.deadline(), 1_000 + sh.idle_ms, "the drain's grace is not for a body under way");
        c.file_sent(6, &mut sh);
        assert_eq!(c.deadline(), 1_000 + DRAIN_IDLE_GRACE_MS, "once it is out, the connection is idle");
    }

    #[test]
    fn a_stream_whose_head_went_out_before_a_drain_keeps_the_next_request() {
        let mut sh = WorkerState::new(Limits::default(), Timeouts::default());
        let mut c = Conn::new(&sh);
        let mut writer = None;
        c.on_read(GET, &mut sh, &mut |_: &Request<'_>, res: &mut Response| {
            writer = Some(res.stream());
        });
        let w = writer.take().unwrap();
        sh.set_draining();
        c.start_drain(&sh);
        assert!(w.is_draining(), "the writer is told, to end early");
        w.end();
        c.refill(&mut sh);
        assert!(c.output().ends_with(b"0\r\n\r\n") && !c.is_streaming());
        answers_the_next_request_with_close(&mut c, &mut sh);
    }

    #[test]
    fn a_stream_that_starts_during_a_drain_is_told_at_once() {
        let mut sh = WorkerState::new(Limits::default(), Timeouts::default());
        sh.set_draining();
        let mut c = Conn::new(&sh);
        let mut writer = None;
        c.on_read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut sh, &mut |_: &Request<'_>, res: &mut Response| {
            writer = Some(res.stream());
        });
        assert!(writer.unwrap().is_draining());
    }

    #[test]
    fn a_stream_dropped_before_its_end_closes_the_connection() {
        let mut sh = WorkerState::new(Limits::default(), Timeouts::default());
        let mut c = Conn::new(&sh);
        let mut writer = None;
        c.on_read(b"GET / HTTP/1.0\r\n\r\n", &mut sh, &mut |_: &Request<'_>, res: &mut Response| {
            writer = Some(res.stream());
        });
        let w = writer.take().unwrap();
        w.send(b"raw").unwrap();
        drop(w);
        c.refill(&mut sh);
        assert!(c.output().ends_with(b"\r\n\r\nraw"), "HTTP/1.0: not chunked");
        assert!(c.is_closing(), "the client must not take it for complete");
    }
}
