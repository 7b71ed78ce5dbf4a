//! Event-loop drivers: the only code that touches connections.
//!
//! Every driver provides the same contract:
//!
//! - it serves the (non-blocking) `listener` until the worker is drained
//!   ([`Link::draining`]) and every connection is closed, or the drain
//!   timeout passes, and then returns `Ok(())` (or, when the listener
//!   became unusable, that error, after the same drain);
//! - each accepted connection gets one [`http::Conn`]; received bytes go to
//!   [`http::Conn::on_read`], and [`http::Conn::output`] goes back out in as
//!   few sends as possible (every pipelined response of one read in one
//!   send);
//! - a connection whose [`http::Conn::deadline`] has passed is closed; the
//!   clock and the `Date` header are refreshed once per loop turn by
//!   [`http::Shared::tick`];
//! - a connection with more than [`http::OUTPUT_HIGH_WATER`] bytes of output
//!   not yet sent is not read from until it drops below;
//! - a connection that [`http::Conn::is_closing`] is closed once its output
//!   is sent, with a lingering close (shutdown of the write side, input
//!   discarded for a short while) so the client reads the final response;
//! - draining stops accepting and calls [`http::Conn::start_drain`] on every
//!   connection: idle ones then expire after a short grace (a request
//!   already on the wire is answered rather than cut off), busy ones finish
//!   their current request, answered with `Connection: close`; the driver
//!   returns when no connection is left;
//! - the driver owns the worker's copy of the listener, and when draining
//!   starts it takes every connection queued on it ([`drain_listener`], past
//!   `max_connections` if need be) and closes it at once. A socket of a
//!   SO_REUSEPORT group that closes resets what is queued on it, and while it
//!   stays open the kernel keeps sending it new connections; closed early, it
//!   leaves the group, and the other members take the new ones. (The master
//!   holds its own copy while the slot exists, so a worker closing its copy
//!   during a reload or shutdown changes nothing.)
//!
//! What both backends do about connections, the listener, accept errors,
//! the drain and deadlines is written once, in [`core`]; the generational
//! connection table in [`slab`]. A backend keeps only how it submits work
//! and learns of readiness. The backend is chosen in exactly one place:
//! [`run`].

use std::io;
use std::os::fd::OwnedFd;

use crate::config::{Backend, Config};
use crate::http::Handler;

mod core;
mod epoll;
mod link;
mod slab;
pub(crate) mod timers;
mod uring;

pub(crate) use link::{drain_from_signal, Inbox, Link};

/// Runs the event loop chosen by `config.backend` on `listener` (the
/// worker's own copy, closed when draining starts) and returns the backend
/// that actually ran. `ready` is called once the loop is set up and about
/// to accept: an error returned before that means the worker cannot start.
pub(crate) fn run<H: Handler>(
    config: &Config,
    listener: OwnedFd,
    handler: &mut H,
    link: &Link,
    ready: impl FnOnce(),
) -> io::Result<Backend> {
    if let Some(path) = &config.access_log {
        // Opened here, as the worker's own user: a file it cannot write is
        // a reason it cannot start, said at once.
        link.set_access_log(crate::http::AccessLog::open(path)?);
    }
    match config.backend {
        Backend::Epoll => {
            log::info!("backend: epoll (configured)");
            epoll::run(config, listener, handler, link, ready).map(|()| Backend::Epoll)
        }
        Backend::Uring => {
            let ring = uring::setup(config).map_err(|e| crate::sys::context(e, "io_uring refused"))?;
            log::info!("backend: io_uring ({})", ring.describe());
            ring.run(config, listener, handler, link, ready).map(|()| Backend::Uring)
        }
        Backend::Auto => match uring::setup(config) {
            Ok(ring) => {
                log::info!("backend: io_uring ({})", ring.describe());
                ring.run(config, listener, handler, link, ready).map(|()| Backend::Uring)
            }
            Err(e) if uring::is_refusal(&e) => {
                log::info!("backend: epoll (io_uring refused: {e})");
                epoll::run(config, listener, handler, link, ready).map(|()| Backend::Epoll)
            }
            Err(e) => Err(e),
        },
    }
}
