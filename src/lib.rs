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

#[macro_use]
mod sys;

mod config;
mod driver;
mod http;
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
    default_workers, Admission, Backend, Balance, ChannelOptions, Config, Limits, ListenAddr, MinDataRate,
    ParseBackendError, Recycle, Respawn, RingOptions, Timeouts,
};
pub use http::{
    Addr, BodyFlow, BodyPlan, BodyReader, Handler, Headers, InvalidHeader, Refused, Request, Responder, Response,
    Resume, Stream, StreamError, Upgraded, UpgradedStream, Version, STREAM_QUEUE,
};
pub use ipc::{Histogram, SendError, Snapshot};
pub use master::{
    Command, Ctl, Event, EventCallback, ExitStatus, Handle, Metrics, Restarts, SlotMetrics, TimerCallback, WorkerState,
};
pub use server::Server;
pub use worker::WorkerId;

/// Internals for the project's own fuzz targets, benchmarks and tests; not
/// part of the API, and may change at any time.
#[doc(hidden)]
pub mod internals {
    pub use crate::http::{Completion, Conn, WorkerState, DRAIN_IDLE_GRACE_MS, OUTPUT_HIGH_WATER};

    /// The shared-memory rings and counters.
    pub mod ipc {
        pub use crate::ipc::*;
    }
}
