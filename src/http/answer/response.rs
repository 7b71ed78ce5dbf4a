//! The response a handler fills in (a whole one, or the head of a
//! stream, file or upgrade), and its framing into bytes.

use std::fmt;
use std::fs::File;
use std::io;
use std::sync::Arc;

use super::file::FileBody;
use super::heads::{Connection, Heads, Shape};
use super::live::Live;
use super::pipe::Pipe;
use super::upgrade::{UpgradeFn, Upgraded};
use crate::http::date::DateCache;
use crate::http::mailbox;
use crate::http::syntax::is_tchar;

/// The worker's mailbox as the runtime fills it: deferred answers are
/// responses, stream notices name a pipe.
pub(crate) type Completions = mailbox::Completions<Response, Arc<Pipe>>;
/// One entry of the worker's mailbox.
pub type Completion = mailbox::Completion<Response, Arc<Pipe>>;
/// What one entry of the worker's mailbox delivers.
pub(crate) type Outcome = mailbox::Outcome<Response, Arc<Pipe>>;

/// A piece of blocking work for the worker's pool.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Queues a [`Job`] on the worker's blocking pool, or hands it back when
/// the pool is full. The worker installs its pool's at start; this layer
/// names no code above it, so it is reached through this pointer.
pub(crate) type Spawner = fn(Job) -> Result<(), Job>;

/// A response under construction. The runtime owns `Content-Length`,
/// `Date` and `Connection`; the handler sets the rest.
///
/// A handler is given one to fill (status `200` and no body until it says
/// otherwise); [`Response::new`] makes one for an answer given later (a
/// [`Responder`](crate::Responder), [`Response::blocking`]) or at once
/// ([`BodyPlan::Refuse`](crate::BodyPlan::Refuse)). Besides a whole body, it
/// can become a deferred answer ([`Response::defer`],
/// [`Response::blocking`]), a stream ([`Response::stream`]), a file
/// ([`Response::file`]) or an upgraded connection ([`Response::upgrade`]).
///
/// ```
/// use forkring::Response;
///
/// let mut res = Response::new();
/// res.status(201).header("Content-Type", "application/json").body(r#"{"id":7}"#);
/// assert_eq!(res.status_code(), 201);
///
/// // Header values are checked: no CR, LF or NUL gets into the head.
/// assert!(res.try_header("X-Bad", "a\r\nInjected: yes").is_err());
///
/// // Building a body in place, without a copy.
/// let mut res = Response::new();
/// res.body_mut().extend_from_slice(b"line 1\n");
/// res.body_mut().extend_from_slice(b"line 2\n");
/// ```
#[derive(Debug)]
pub struct Response {
    status: u16,
    /// User header fields, already framed as `Name: value\r\n`.
    headers: Vec<u8>,
    body: Vec<u8>,
    /// The handler asked for the connection to close after this response.
    close: bool,
    /// A header the handler set was rejected; the response becomes a 500.
    invalid: bool,
    /// Whether the handler may defer this response.
    deferral: Deferral,
    /// Where responders send their completions: set once on the worker's
    /// scratch response (so offering costs no reference count per request).
    queue: Option<Arc<Completions>>,
    /// The worker's blocking pool ([`Response::blocking`]): set once on the
    /// worker's scratch response; `None` outside a worker.
    spawner: Option<Spawner>,
    /// The connection's word that says which deferred request it waits on
    /// (see [`Live`]), lent for the handler's call (or made when the
    /// handler defers on a connection that never did), so that taking the
    /// responder sets it at once.
    live: Option<Live>,
    /// What takes the connection after a `101` ([`Response::upgrade`]).
    upgrade: Option<Upgrade>,
    /// What the body is: `body`, a stream, or a file.
    kind: Kind,
}

/// The hand-over of an upgraded connection.
struct Upgrade(UpgradeFn);

impl fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Upgrade(..)")
    }
}

/// What a response's body is.
#[derive(Debug, Default)]
pub(crate) enum Kind {
    /// The bytes in `body`, with a `Content-Length`.
    #[default]
    Bytes,
    /// A stream of unknown length, fed through a [`super::Stream`].
    Stream(Arc<Pipe>),
    /// A file (or, by the request's `Range`, a part of it).
    File(FileBody),
}

/// A handler's right to defer the response it is filling in.
#[derive(Debug, Default)]
enum Deferral {
    /// Not offered (a response built outside a handler, or sent through a
    /// responder).
    #[default]
    None,
    /// Offered: whether there is room (when the worker has too many
    /// deferred requests the request gets a `503` and the responder does
    /// nothing), the connection's token and the request's number.
    Offered(bool, u64, u64),
    /// Taken: the handler holds the responder.
    Taken,
}

/// What became of a handler's claim to defer ([`Response::claim_deferral`]).
#[derive(Debug)]
pub(super) enum Claim {
    /// Granted: where the completion goes, the connection's token, the
    /// request's number and the connection's word, already set to it.
    Granted(Arc<Completions>, u64, u64, Live),
    /// Too many deferred requests: the offer stays, without room.
    NoRoom,
    /// Nothing was offered (outside a handler).
    NotOffered,
    /// The responder was taken before.
    Taken,
}

/// Why [`Response::try_header`] refused a header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidHeader {
    /// The name is empty or not an HTTP token.
    Name,
    /// The value holds CR, LF, NUL or another control byte.
    Value,
    /// `Content-Length`, `Transfer-Encoding` and `Date` belong to the runtime.
    Reserved,
}

impl fmt::Display for InvalidHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidHeader::Name => "invalid header name",
            InvalidHeader::Value => "invalid header value",
            InvalidHeader::Reserved => "header is set by the runtime",
        })
    }
}

impl std::error::Error for InvalidHeader {}

impl Default for Response {
    fn default() -> Self {
        Response::new()
    }
}

impl Response {
    /// An empty `200 OK`.
    pub fn new() -> Response {
        Response {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
            close: false,
            invalid: false,
            deferral: Deferral::None,
            queue: None,
            spawner: None,
            live: None,
            upgrade: None,
            kind: Kind::Bytes,
        }
    }

    /// Sets the status code. A final status (200–599) is accepted; anything
    /// else becomes 500, since a 1xx would leave the client waiting for the
    /// real response and codes from 600 on are invalid (RFC 9110 §15).
    pub fn status(&mut self, code: u16) -> &mut Self {
        self.status = code;
        self
    }

    /// The status code set so far.
    pub fn status_code(&self) -> u16 {
        self.status
    }

    /// Adds a header field. An invalid one is logged and turns the response
    /// into a `500`; use [`Response::try_header`] to handle the error.
    pub fn header(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        if let Err(e) = self.try_header(name, value) {
            log::error!("handler set header {name:?}: {e}; answering 500");
            self.invalid = true;
        }
        self
    }

    /// Adds a header field, or says why it cannot. `Connection: close` asks
    /// for the connection to close after this response.
    pub fn try_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<&mut Self, InvalidHeader> {
        let value = value.as_ref();
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(InvalidHeader::Name);
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(InvalidHeader::Value);
        }
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("date")
        {
            return Err(InvalidHeader::Reserved);
        }
        if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case(b"close") {
                self.close = true;
            }
            return Ok(self);
        }
        self.runtime_header(name, value);
        Ok(self)
    }

    /// Replaces the body.
    pub fn body(&mut self, bytes: impl AsRef<[u8]>) -> &mut Self {
        self.body.clear();
        self.body.extend_from_slice(bytes.as_ref());
        self
    }

    /// Bytes of the body set so far.
    pub(crate) fn body_len(&self) -> usize {
        self.body.len()
    }

    /// The body, to write into directly.
    pub fn body_mut(&mut self) -> &mut Vec<u8> {
        &mut self.body
    }

    /// Makes the body the file `file` (a regular file, open for reading):
    /// sent without copying it through user space. Whatever was in the
    /// body is dropped. When the status is `200` and the response is the
    /// handler's own (not a deferred one), the runtime answers the
    /// request's `Range` (one range: `206` with `Content-Range`; none
    /// satisfiable: `416` with `Content-Range: bytes */len`; several:
    /// the whole file) and `If-Modified-Since` (`304`), and adds
    /// `Last-Modified` and `Accept-Ranges: bytes`. Fails when `file` is
    /// not a regular file or its length cannot be read.
    pub fn file(&mut self, file: File) -> io::Result<&mut Self> {
        let body = FileBody::new(file)?;
        self.set_kind(Kind::File(body));
        Ok(self)
    }

    fn set_kind(&mut self, kind: Kind) {
        self.body.clear();
        if let Kind::Stream(old) = std::mem::replace(&mut self.kind, kind) {
            // A stream replaced before it started: its writer learns.
            if let Some(f) = old.close() {
                f();
            }
        }
    }

    /// Makes the body the stream whose pipe is `pipe`.
    pub(crate) fn set_stream(&mut self, pipe: Arc<Pipe>) {
        self.set_kind(Kind::Stream(pipe));
    }

    /// Takes what the body is, leaving `Bytes`.
    pub(crate) fn take_kind(&mut self) -> Kind {
        std::mem::take(&mut self.kind)
    }

    /// Whether the body is the bytes in `body` (the usual case).
    #[inline]
    pub(crate) fn is_bytes(&self) -> bool {
        matches!(self.kind, Kind::Bytes)
    }

    /// Closes the connection after this response.
    pub fn close(&mut self) -> &mut Self {
        self.close = true;
        self
    }

    pub(crate) fn wants_close(&self) -> bool {
        self.close
    }

    /// Takes the connection after this response, which becomes
    /// `101 Switching Protocols` (with `Connection: Upgrade`; set the
    /// `Upgrade` field and what the protocol needs with
    /// [`Response::header`]). Once the `101` is sent and nothing of the
    /// runtime's is in flight on the socket, `take` runs on the worker's
    /// loop with the [`Upgraded`] connection: hand it to a pool thread
    /// ([`crate::worker::spawn_blocking`]) rather than use it there.
    ///
    /// Only a request that asked for it (an `Upgrade` field, HTTP/1.1, no
    /// body), answered from [`crate::Handler::handle`] itself, can be
    /// upgraded; otherwise the answer is `500` and `take` is dropped.
    pub fn upgrade(&mut self, take: impl FnOnce(Upgraded) + Send + 'static) -> &mut Self {
        self.status = 101;
        self.upgrade = Some(Upgrade(Box::new(take)));
        self
    }

    /// The hand-over the handler set with [`Response::upgrade`].
    pub(crate) fn take_upgrade(&mut self) -> Option<UpgradeFn> {
        self.upgrade.take().map(|u| u.0)
    }

    /// Appends the `101` head of an upgrade to `out`.
    pub(crate) fn write_upgrade(&mut self, out: &mut Vec<u8>, date: &[u8]) {
        out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nDate: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\nConnection: Upgrade\r\n");
        out.extend_from_slice(&self.headers);
        out.extend_from_slice(b"\r\n");
    }

    /// Offers the handler the right to defer (see [`Response::defer`]).
    pub(crate) fn offer_deferral(&mut self, room: bool, token: u64, seq: u64) {
        self.deferral = Deferral::Offered(room, token, seq);
    }

    /// Claims the offer to defer, for a responder. When granted, the
    /// offer is taken and the connection's word says the request waits;
    /// otherwise nothing changes.
    pub(super) fn claim_deferral(&mut self) -> Claim {
        match self.deferral {
            Deferral::Offered(true, token, seq) => {
                let Some(queue) = self.queue.clone() else { return Claim::NotOffered };
                let live = self.live.get_or_insert_with(Live::new);
                live.set(seq);
                let live = live.clone();
                self.deferral = Deferral::Taken;
                Claim::Granted(queue, token, seq, live)
            }
            Deferral::Offered(false, ..) => Claim::NoRoom,
            Deferral::None => Claim::NotOffered,
            Deferral::Taken => Claim::Taken,
        }
    }

    /// Takes the offer without a responder: the request is answered `503`
    /// (no room).
    pub(super) fn refuse_deferral(&mut self) {
        if matches!(self.deferral, Deferral::Offered(false, ..)) {
            self.deferral = Deferral::Taken;
        }
    }

    /// Undoes a granted claim: the request no longer waits (a responder
    /// made for it posts nothing) and is answered by this response.
    pub(super) fn withdraw_deferral(&mut self) {
        if let Some(live) = &self.live {
            live.clear();
        }
        self.deferral = Deferral::None;
    }

    /// Where a stream made now sends its notices, and for which
    /// connection: `None` outside a handler.
    pub(super) fn offered_queue(&self) -> (Option<Arc<Completions>>, u64) {
        match self.deferral {
            Deferral::Offered(_, token, _) => (self.queue.clone(), token),
            _ => (None, 0),
        }
    }

    /// Sets where responders made from this response send completions.
    pub(crate) fn set_queue(&mut self, queue: Arc<Completions>) {
        self.queue = Some(queue);
    }

    /// Sets the worker's blocking pool, for [`Response::blocking`].
    pub(crate) fn set_spawner(&mut self, spawner: Spawner) {
        self.spawner = Some(spawner);
    }

    /// The worker's blocking pool, if this response has one.
    pub(super) fn spawner(&self) -> Option<Spawner> {
        self.spawner
    }

    /// Lends the connection's word (if it has one) for the handler's call.
    #[inline]
    pub(crate) fn lend_live(&mut self, live: Option<Live>) {
        self.live = live;
    }

    /// Takes the connection's word back after the handler's call (made
    /// during it, when the handler deferred on a connection that never
    /// had).
    #[inline]
    pub(crate) fn take_live(&mut self) -> Option<Live> {
        self.live.take()
    }

    /// Whether the handler deferred, and withdraws the offer either way.
    pub(crate) fn take_deferred(&mut self) -> bool {
        matches!(std::mem::take(&mut self.deferral), Deferral::Taken)
    }

    /// Clears everything, keeping the buffers' capacity.
    pub(crate) fn reset(&mut self) {
        self.status = 200;
        self.headers.clear();
        self.body.clear();
        self.close = false;
        self.invalid = false;
        self.deferral = Deferral::None;
        self.upgrade = None;
        if !self.is_bytes() {
            self.set_kind(Kind::Bytes);
        }
        self.shed();
    }

    /// Frees a huge body or head a handler built in this (reused)
    /// response: a handler that once built a huge response should not pin
    /// it, not even until the next request.
    #[inline]
    pub(crate) fn shed(&mut self) {
        if self.body.capacity() > 1 << 20 {
            self.body = Vec::new();
        }
        if self.headers.capacity() > 64 << 10 {
            self.headers = Vec::new();
        }
    }

    /// Turns this response into a plain-text error with `status`.
    pub(crate) fn set_error(&mut self, status: u16) {
        self.reset();
        self.status = status;
        self.headers.extend_from_slice(b"Content-Type: text/plain\r\n");
        self.body.extend_from_slice(reason(status).as_bytes());
        self.body.push(b'\n');
    }

    /// Turns an invalid response (a bad field, a status outside 200–599)
    /// into a `500` before it is framed.
    #[inline]
    fn error_if_invalid(&mut self) {
        if self.invalid || !(200..=599).contains(&self.status) {
            self.set_error(500);
        }
    }

    /// Appends the framed response to `out`. `head_only` leaves out the body
    /// (HEAD); `close` adds `Connection: close`, `keep_alive_10` adds
    /// `Connection: keep-alive` (an HTTP/1.0 client that asked for it).
    /// A head framed before with the same status, fields and length is
    /// copied from `heads`.
    pub(crate) fn write_to(
        &mut self,
        out: &mut Vec<u8>,
        date: &DateCache,
        heads: &mut Heads,
        head_only: bool,
        close: bool,
        keep_alive_10: bool,
    ) {
        self.error_if_invalid();
        let length = self.body.len() as u64;
        let connection = match (close, keep_alive_10) {
            (true, _) => Connection::Close,
            (false, true) => Connection::KeepAlive,
            (false, false) => Connection::Open,
        };
        let shape = Shape { status: self.status, length, connection, fields: &self.headers };
        heads.frame(out, &shape, date, |out, date| {
            self.put_head(out, date, Some(length), false, close, keep_alive_10);
        });
        if !head_only && !bodyless(self.status) {
            out.extend_from_slice(&self.body);
        }
    }

    /// Appends the status line and header fields to `out`: the body's
    /// length when it is known (`length`), else `Transfer-Encoding:
    /// chunked` when `chunked`, else nothing (a body that ends with the
    /// connection). Returns whether the status carries no body at all. An
    /// invalid response becomes a `500` here (its body then is that
    /// error's: callers that frame a body check first).
    #[inline]
    pub(crate) fn write_head(
        &mut self,
        out: &mut Vec<u8>,
        date: &[u8],
        length: Option<u64>,
        chunked: bool,
        close: bool,
        keep_alive_10: bool,
    ) -> bool {
        self.error_if_invalid();
        self.put_head(out, date, length, chunked, close, keep_alive_10);
        bodyless(self.status)
    }

    /// [`Response::write_head`] of a valid response. The date follows the
    /// status line: [`Heads`] rewrites it there.
    fn put_head(
        &self,
        out: &mut Vec<u8>,
        date: &[u8],
        length: Option<u64>,
        chunked: bool,
        close: bool,
        keep_alive_10: bool,
    ) {
        let status = self.status;
        out.extend_from_slice(b"HTTP/1.1 ");
        let mut code = [0u8; 3];
        code[0] = b'0' + (status / 100) as u8;
        code[1] = b'0' + (status / 10 % 10) as u8;
        code[2] = b'0' + (status % 10) as u8;
        out.extend_from_slice(&code);
        out.push(b' ');
        out.extend_from_slice(reason(status).as_bytes());
        out.extend_from_slice(b"\r\nDate: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
        if !bodyless(status) {
            if let Some(len) = length {
                out.extend_from_slice(b"Content-Length: ");
                let mut buf = [0u8; 20];
                out.extend_from_slice(fmt_u64(len, &mut buf));
                out.extend_from_slice(b"\r\n");
            } else if chunked {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            }
        }
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if keep_alive_10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(&self.headers);
        out.extend_from_slice(b"\r\n");
    }

    /// Adds a header field the runtime itself sets (already valid).
    pub(crate) fn runtime_header(&mut self, name: &str, value: &[u8]) {
        self.headers.reserve(name.len() + value.len() + 4);
        self.headers.extend_from_slice(name.as_bytes());
        self.headers.extend_from_slice(b": ");
        self.headers.extend_from_slice(value);
        self.headers.extend_from_slice(b"\r\n");
    }
}

/// Whether `status` carries no body and no `Content-Length` (1xx, 204,
/// 304).
#[inline]
fn bodyless(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

pub(crate) fn fmt_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The reason phrase for a status code (empty for unknown codes, which
/// RFC 9112 allows).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}
