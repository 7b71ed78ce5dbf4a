//! Sans-io HTTP/1.1: bytes in, requests to a [`Handler`], framed response
//! bytes out.
//!
//! Nothing here moves bytes on a socket (a handler's
//! [`Request::peer_addr`] only asks the kernel for an address, when
//! called). A driver owns one [`Conn`] per connection
//! and one [`Shared`] per worker; it feeds received bytes to
//! [`Conn::on_read`] and sends what [`Conn::output`] holds. Tests and the
//! fuzzer drive the same code with byte slices.
//!
//! Where this module stops: it decides what to answer and when a connection
//! must close; the driver decides how bytes move and when to give up on a
//! peer (timeouts are carried here as deadlines, enforced there).

mod access;
mod body;
mod chunked;
mod conn;
mod date;
mod defer;
mod fields;
mod file;
mod request;
mod response;
mod scan;
mod static_dir;
mod stream;
mod upgrade;

pub use conn::{Conn, Shared, DRAIN_IDLE_GRACE_MS, OUTPUT_HIGH_WATER};

/// A byte class as a table, for checks that run once per byte: ASCII
/// letters and digits, and the bytes of `punct`.
const fn alnum_and(punct: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).is_ascii_alphanumeric();
        i += 1;
    }
    let mut j = 0;
    while j < punct.len() {
        t[punct[j] as usize] = true;
        j += 1;
    }
    t
}

/// Whether `b` may appear in a token (RFC 9110 §5.6.2): field names,
/// methods, chunk extensions.
#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// [`is_tchar`] as a table: it runs once per byte.
static TCHAR: [bool; 256] = alnum_and(b"!#$%&'*+-.^_`|~");

pub use access::{request_reopen as reopen_access_log, AccessLog};
pub use body::{BodyFlow, BodyPlan, BodyReader, Resume};
pub(crate) use defer::Completions;
pub use defer::{Completion, Responder};
pub use request::{Addr, Headers, Request, Version};
pub use response::{InvalidHeader, Response};
pub use static_dir::{content_type, Refusal, StaticDir};
pub use stream::{Stream, StreamError, STREAM_QUEUE};
pub(crate) use upgrade::{UpgradeFn, UpgradePermit};
pub use upgrade::{Upgraded, UpgradedStream};

/// The user's request handler. One instance per worker, made in the worker
/// by the factory given to [`crate::Server::serve`], so its state needs no
/// lock.
pub trait Handler {
    /// Answers one request. The runtime adds `Content-Length`, `Date` and
    /// `Connection`; a HEAD response's body is measured and not sent.
    fn handle(&mut self, req: &Request<'_>, res: &mut Response);

    /// A request's head announces a body (a `Content-Length` above zero,
    /// or chunked): says how to take it, before any of it is read and
    /// before a `100 Continue` is sent. The default collects it whole, up
    /// to [`crate::Limits::max_body`], for [`Handler::handle`]. `req` is
    /// the head; its [`Request::body`] is empty. See [`BodyPlan`].
    fn on_head(&mut self, req: &Request<'_>) -> BodyPlan {
        let _ = req;
        BodyPlan::Whole
    }

    /// A message from the master arrived (see [`crate::Ctl::send`] and
    /// [`crate::Ctl::broadcast`]); runs on the worker's event
    /// loop, between requests. Reply with [`crate::worker::send`].
    fn on_message(&mut self, msg: &[u8]) {
        let _ = msg;
    }
}

impl<F> Handler for F
where
    F: FnMut(&Request<'_>, &mut Response),
{
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) {
        self(req, res)
    }
}
