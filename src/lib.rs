//! forkring: a prefork HTTP/1.1 server runtime.
//!
//! A process binds the listening socket and runs a worker: a hand-written
//! io_uring event loop (epoll where io_uring is refused) that parses HTTP/1.1
//! with `httparse` and calls the user's [`Handler`]. No async runtime.
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
//! Layers, top to bottom: [`server`] (configuration, binding, choosing the
//! backend), the drivers (`driver::uring`, `driver::epoll`: the only code that
//! touches connections), and [`http`] (the sans-io protocol core: bytes in,
//! requests to the handler, framed response bytes out).
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_debug_implementations)]

#[macro_use]
mod sys;

pub mod cluster;
mod driver;
pub mod http;
pub mod ipc;
pub mod listen;
pub mod server;
pub mod worker;

pub use cluster::{Balance, Command, Event, ExitStatus, Handle, Respawn, WorkerId};
pub use http::{Handler, Limits, Request, Response, Version};
pub use server::{Backend, Config, Server, Timeouts};
