//! The user's side of the protocol core: the trait a worker's handler
//! implements, and what each of its methods is asked.

use std::os::fd::OwnedFd;

use super::answer::Response;
use super::body::BodyPlan;
use super::request::Request;

/// The user's request handler. One instance per worker, made in the worker
/// by the factory given to [`crate::Server::serve`], so its state needs no
/// lock.
///
/// A closure `FnMut(&Request<'_>, &mut Response)` is a handler; a type of
/// your own implements the trait to see a body's head before the body
/// ([`Handler::on_head`]) or to receive the master's messages
/// ([`Handler::on_message`]):
///
/// ```
/// use forkring::{BodyPlan, Handler, Request, Response};
///
/// /// One per worker: the counter needs no lock.
/// struct App {
///     served: u64,
///     greeting: Vec<u8>,
/// }
///
/// impl Handler for App {
///     fn handle(&mut self, req: &Request<'_>, res: &mut Response) {
///         self.served += 1;
///         match req.path() {
///             "/" => {
///                 res.header("Content-Type", "text/plain").body(&self.greeting);
///             }
///             _ => {
///                 res.status(404).body("Not Found\n");
///             }
///         }
///     }
///
///     // No uploads here: refused before the body is sent.
///     fn on_head(&mut self, _req: &Request<'_>) -> BodyPlan {
///         let mut res = Response::new();
///         res.status(413).body("no bodies, please\n");
///         BodyPlan::Refuse(res)
///     }
///
///     // The master's `Ctl::broadcast` lands here, on the worker's loop.
///     fn on_message(&mut self, msg: &[u8]) {
///         self.greeting = msg.to_vec();
///     }
/// }
///
/// // Given to the builder as a factory, which each worker calls once:
/// // `Server::builder().serve(|| App { served: 0, greeting: b"hello\n".to_vec() })`.
/// let mut app = App { served: 0, greeting: b"hello\n".to_vec() };
/// app.on_message(b"hi\n");
/// assert_eq!(app.greeting, b"hi\n");
/// ```
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

    /// The master handed this worker a descriptor (see
    /// [`crate::Ctl::send_fd`] and [`crate::Handle::send_fd`]), with the
    /// tag it gave to say what it is; Node's `process.on('message', (m,
    /// handle) => ...)`. Runs on the worker's event loop, between requests;
    /// the worker owns `fd` from here (the default closes it). What the
    /// worker does with it is its own: a listening socket can be served by
    /// a thread of the worker's or jobs of its pool
    /// ([`crate::worker::spawn_blocking`]), never by blocking the loop.
    fn on_descriptor(&mut self, fd: OwnedFd, tag: &[u8]) {
        let _ = (fd, tag);
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
