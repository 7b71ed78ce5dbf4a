//! The user's side of the protocol core: the trait a worker's handler
//! implements, and what each of its methods is asked.

use std::os::fd::OwnedFd;

use super::answer::Response;
use super::body::BodyPlan;
use super::request::Request;

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
