//! forkring: a prefork HTTP/1.1 server runtime.
//!
//! A master process binds the listening sockets and forks workers; each
//! worker runs a hand-written io_uring event loop (epoll where io_uring is
//! refused) that parses HTTP/1.1 with `httparse` and calls the user's
//! [`Handler`]. Master and workers exchange messages through shared-memory
//! rings. No async runtime.
//!
//! ```no_run
//! use forkring::{Request, Response, Server};
//!
//! fn main() -> std::io::Result<()> {
//!     Server::builder()
//!         .listen("127.0.0.1:8080")
//!         .serve(|| {
//!             // One handler per worker: its state needs no lock.
//!             let mut served = 0u64;
//!             move |req: &Request<'_>, res: &mut Response| {
//!                 served += 1;
//!                 res.header("Content-Type", "text/plain");
//!                 res.body_mut().extend_from_slice(req.path().as_bytes());
//!             }
//!         })
//! }
//! ```
//!
//! [`guide`] walks the features in the order a user meets them, from this
//! first handler to a deployment under systemd; the repository's
//! `examples/` has one small program per feature, and its README the
//! operations (signals, metrics, the minimum kernel).
//!
//! What a user names is at the root: the builder ([`Server`]) and its
//! [`Config`] parts, the [`Handler`] with its [`Request`] and [`Response`],
//! the master's [`Event`]s, [`Command`]s, [`Handle`] and [`Ctl`], and the
//! worker's side in [`worker`].
//!
//! Layers, top to bottom (nothing imports a layer above it; `make lint`
//! checks): `server` (the builder) → `master` (slots, fork, signals,
//! respawn, reload, events) → `worker` (a worker's process entry and
//! identity) → `driver` (one core, two backends: io_uring and epoll) →
//! `http` (the sans-io protocol core) → `ipc` (shared-memory rings and
//! counters), `lifeline` and `listen` (sockets); `config` and `sys` are
//! leaves anyone may use.
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_debug_implementations, missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "forkring runs on Linux only: its workers are built on io_uring or epoll, pidfds, \
     eventfds and SO_REUSEPORT, which other systems do not have"
);

/// The README's Rust blocks, compiled (and those that start no server, run)
/// as doc tests, so that what a reader copies from it builds.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[macro_use]
mod sys;

mod config;
mod driver;
#[cfg(any(doc, doctest))]
pub mod guide;
mod http;
// Parts of the rings' API serve only the workspace's tests and benches
// (through `internals`): without that feature they are unused.
#[cfg_attr(not(feature = "internals"), allow(dead_code, unused_imports))]
mod ipc;
mod lifeline;
mod listen;
mod master;
mod server;
pub mod worker;

/// Files under a directory, served by URL path without ever leaving it
/// (see [`files::StaticDir`]); the body itself goes out without copies
/// through [`Response::file`].
pub mod files {
    pub use crate::http::{content_type, Refusal, StaticDir};
}

pub use config::{
    default_workers, Admission, Backend, Balance, ChannelOptions, Config, ConfigError, Limits, ListenAddr, MinDataRate,
    ParseBackendError, Recycle, Respawn, RingOptions, Timeouts, DEFAULT_LISTEN,
};
pub use http::{
    Addr, BodyFlow, BodyPlan, BodyReader, Handler, Headers, InvalidHeader, Refused, Request, Responder, Response,
    Resume, Stream, StreamError, Upgraded, UpgradedStream, Version, STREAM_QUEUE,
};
pub use ipc::{Histogram, SendError, Snapshot};
pub use master::{
    spawn_master_thread, Command, Ctl, Event, EventCallback, Events, EventsIntoIter, EventsIter, EventsTryIter,
    ExitStatus, Handle, Metrics, Restarts, SlotMetrics, TimerCallback, WorkerInfo, WorkerState,
};
pub use server::Server;
pub use worker::WorkerId;

/// Whether this process is the master (Node's `cluster.isPrimary`): false
/// in a worker, forked or re-executed ([`Server::reexec`]), from its first
/// instruction. Code before [`Server::serve`] runs again in every
/// re-executed worker; this tells the two apart.
pub fn is_primary() -> bool {
    !worker::is_worker()
}

/// Internals for the project's own fuzz targets, benchmarks and tests,
/// behind the `internals` feature; not part of the API, and may change at
/// any time.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    pub use crate::http::{Completion, Conn, WorkerState, DRAIN_IDLE_GRACE_MS, OUTPUT_HIGH_WATER};

    /// The shared-memory rings and counters.
    pub mod ipc {
        pub use crate::ipc::*;
    }
}
