//! Event-loop drivers: the only code that touches connections.
//!
//! Every driver provides the same contract:
//!
//! - it serves every one of its (non-blocking) `listeners` (one per
//!   address the cluster serves: TCP over IPv4 or IPv6, a Unix socket)
//!   alike until the worker is drained
//!   ([`Link::draining`]) and every connection is closed, or the drain
//!   timeout passes, and then returns `Ok(())` (or, when the listener
//!   became unusable, that error, after the same drain);
//! - each accepted connection gets one [`http::Conn`](crate::http::Conn);
//!   received bytes go to [`on_read`](crate::http::Conn::on_read), and
//!   [`output`](crate::http::Conn::output) goes back out in as few sends as
//!   possible (every pipelined response of one read in one send);
//! - a connection whose [`deadline`](crate::http::Conn::deadline) has
//!   passed is closed; the clock and the `Date` header are refreshed once
//!   per loop turn by [`tick`](crate::http::WorkerState::tick);
//! - a connection with more than
//!   [`OUTPUT_HIGH_WATER`](crate::http::OUTPUT_HIGH_WATER) bytes of output
//!   not yet sent is not read from until it drops below;
//! - a connection that [`is_closing`](crate::http::Conn::is_closing) is
//!   closed once its output is sent, with a lingering close (shutdown of
//!   the write side, input discarded for a short while) so the client
//!   reads the final response;
//! - draining stops accepting and calls
//!   [`start_drain`](crate::http::Conn::start_drain) on every connection:
//!   idle ones then expire after a short grace (a request already on the
//!   wire is answered rather than cut off), busy ones finish their current
//!   request: answered with `Connection: close`, or, when its head went
//!   out before the drain without it, followed by the same grace as an
//!   idle connection's (which starts again while the last of the response
//!   is still on its way); the driver returns when no connection is left;
//! - the driver owns the worker's copy of each listener, and when draining
//!   starts it takes every connection queued on each
//!   ([`Core::close_listener`](core::Core::close_listener), past
//!   `max_connections` if need be) and closes it at once. A socket of a
//!   SO_REUSEPORT group that closes resets what is queued on it, and while
//!   it stays open the kernel keeps sending it new connections; closed
//!   early, it leaves the group, and the other members take the new ones.
//!   (The master holds its own copy while the slot exists, so a worker
//!   closing its copy during a reload or shutdown changes nothing.)
//!
//! What both backends do about connections, the listener, accept errors,
//! the drain and deadlines is written once, in [`core`]; the generational
//! connection table in [`slab`]. A backend keeps only how it submits work
//! and learns of readiness. The backend is chosen in exactly one place:
//! [`run`].
//!
//! # What a backend provides
//!
//! - an entry that runs the loop to the end of the drain (`epoll::run`,
//!   `uring::Ring::run`), called only from [`run`];
//! - a `Connection` in a [`Slab`](slab::Slab) named `conns`, implementing
//!   [`core::Connection`] (its [`Phase`](core::Phase) and protocol state);
//! - a `Driver` implementing [`core::Backend`]: how it serves a connection
//!   that has output again and how it closes one. With these the core runs
//!   the two steps both loops share: [`core::complete_deferred`] once a
//!   turn, and [`core::sweep`] when [`Core::sweep_due`](core::Core::sweep_due).
//!
//! Each turn a loop also delivers the master's messages
//! ([`Link::deliver`]) and runs the worker timers
//! ([`Core::run_timers`](core::Core::run_timers)).
//!
//! # Vocabulary
//!
//! Both backends and the core use one name per thing:
//!
//! | name | means |
//! |---|---|
//! | connection, `conn`, `conns`, `c` | the driver's record of one accepted socket: a backend's `Connection`, kept in the slab `conns` under a [`Key`](slab::Key) |
//! | `http`, the protocol state | a connection's [`http::Conn`](crate::http::Conn) (the field is always `http`) |
//! | the core, `core` | [`core::Core`], the state and policy the backends share; never the protocol state |
//! | [`Phase`](core::Phase) | where a connection is in its life: `Open`, `Linger { until }`, `Closing` (io_uring only: operations being cancelled) |
//! | `peer_eof` | the peer has shut down its side (or the socket failed) |
//! | `start_drain` | the drain begins: [`Core::start_drain`](core::Core::start_drain), then each backend's, then [`http::Conn::start_drain`](crate::http::Conn::start_drain) on every connection |
//! | `close` | a connection goes: at once on epoll; on io_uring its operations are cancelled and its slot is freed (`free`) once none is left in the kernel |
//! | `linger` | the lingering close ([`core::linger`]) |
//! | `serve` | a connection has output again: epoll moves its bytes at once, io_uring marks it for reconciling before the next submit |
//! | `complete_deferred` | the deferred hand-off: completions other threads posted, delivered to their connections |
//! | `sweep` | the pass over the table that closes what timed out |

use std::io;
use std::os::fd::OwnedFd;

use crate::config::{Backend, Config};
use crate::http::Handler;

mod core;
mod epoll;
mod link;
mod peers;
mod slab;
pub(crate) mod timers;
mod uring;

pub(crate) use link::{drain_from_signal, lifeline_from_signal, Inbox, Link};

/// Runs the event loop chosen by `config.backend` on `listeners` (the
/// worker's own copies, one per address served, closed when draining
/// starts) and returns the backend
/// that actually ran. `ready` is called once the loop is set up and about
/// to accept: an error returned before that means the worker cannot start.
pub(crate) fn run<H: Handler>(
    config: &Config,
    listeners: Vec<OwnedFd>,
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
            epoll::run(config, listeners, handler, link, ready).map(|()| Backend::Epoll)
        }
        Backend::Uring => {
            let ring = uring::setup(config).map_err(|e| crate::sys::context(e, "io_uring refused"))?;
            log::info!("backend: io_uring ({})", ring.describe());
            ring.run(config, listeners, handler, link, ready).map(|()| Backend::Uring)
        }
        Backend::Auto => match uring::setup(config) {
            Ok(ring) => {
                log::info!("backend: io_uring ({})", ring.describe());
                ring.run(config, listeners, handler, link, ready).map(|()| Backend::Uring)
            }
            Err(e) if uring::is_refusal(&e) => {
                log::info!("backend: epoll (io_uring refused: {e})");
                epoll::run(config, listeners, handler, link, ready).map(|()| Backend::Epoll)
            }
            Err(e) => Err(e),
        },
    }
}
