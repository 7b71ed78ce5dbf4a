//! A guide to forkring, in the order a user meets its features: from a
//! first handler to a service deployed under systemd. Each step names the
//! program of `examples/` that shows it whole (`cargo run --example NAME`
//! in the crate's repository; each file's top comment says what to try
//! with `curl`). This module holds only documentation.
//!
//! # 1. Hello, world
//!
//! A handler is any `FnMut(&Request<'_>, &mut Response)`, or a type
//! implementing [`Handler`]. [`Server::serve`] takes a *factory*: a
//! function each worker process calls once, after it was forked, to make
//! its own handler.
//!
//! ```no_run
//! use forkring::{Request, Response, Server};
//!
//! fn main() -> std::io::Result<()> {
//!     Server::builder()
//!         .listen("127.0.0.1:8080")
//!         .serve(|| |_req: &Request<'_>, res: &mut Response| {
//!             res.header("Content-Type", "text/plain").body("Hello, World!\n");
//!         })
//! }
//! ```
//!
//! The master binds the socket, forks one worker per CPU and restarts any
//! that dies; each worker runs its own io_uring loop (epoll where the
//! kernel refuses io_uring). `Content-Length`, `Date` and `Connection`
//! are the runtime's; `HEAD` gets no body. Stop it with Ctrl-C: the
//! requests in flight finish first. (`examples/hello.rs`)
//!
//! # 2. State per worker
//!
//! Every worker owns its handler, so its state needs no lock and no atomic:
//! make it in the factory. What workers must share goes through the master
//! (step 8) or outside the process (a database).
//!
//! ```no_run
//! use std::collections::HashMap;
//! use forkring::{Request, Response, Server};
//!
//! fn main() -> std::io::Result<()> {
//!     Server::builder().serve(|| {
//!         // One cache per worker, made in the worker.
//!         let mut hits: HashMap<String, u64> = HashMap::new();
//!         move |req: &Request<'_>, res: &mut Response| {
//!             let n = hits.entry(req.path().to_owned()).or_default();
//!             *n += 1;
//!             res.body(format!("{} seen {n} times by this worker\n", req.path()));
//!         }
//!     })
//! }
//! ```
//!
//! Descriptors the program opened before `serve` are closed in the
//! workers: open what a worker needs (a file, a client connection) in the
//! factory.
//!
//! # 3. Blocking work: answer later
//!
//! A handler runs on the worker's loop and must never block it.
//! [`Response::blocking`] runs a closure on the worker's pool of threads
//! and sends the [`Response`] it returns; the loop serves other
//! connections meanwhile, and under a flood the request is answered `503`
//! at once instead of queueing without bound. Underneath,
//! [`Response::defer`] gives a [`Responder`] (`Send`) to complete from any
//! thread or from a timer. (`examples/deferred.rs`)
//!
//! ```no_run
//! use forkring::{Request, Response, Server};
//!
//! fn slow_lookup(key: &str) -> String {
//!     std::thread::sleep(std::time::Duration::from_millis(20)); // a blocking client
//!     key.to_uppercase()
//! }
//!
//! fn main() -> std::io::Result<()> {
//!     Server::builder().pool(32).serve(|| |req: &Request<'_>, res: &mut Response| {
//!         let key = req.path().trim_start_matches('/').to_owned(); // owned: it moves to a thread
//!         res.blocking(move || {
//!             let mut res = Response::new();
//!             res.body(slow_lookup(&key));
//!             res
//!         });
//!     })
//! }
//! ```
//!
//! # 4. Streamed bodies
//!
//! [`Response::stream`] makes the body a [`Stream`]: chunked, of unknown
//! length, written from the loop (a timer) or from any thread. Its queue is
//! bounded: [`Stream::send`] answers [`StreamError::Full`] instead of
//! buffering for a slow client, and [`Stream::on_ready`] says when there is
//! room again. (`examples/sse.rs`, server-sent events)
//!
//! ```no_run
//! use std::time::Duration;
//! use forkring::{Request, Response, Server};
//!
//! fn main() -> std::io::Result<()> {
//!     Server::builder().serve(|| |_req: &Request<'_>, res: &mut Response| {
//!         res.header("Content-Type", "text/event-stream");
//!         let stream = res.stream();
//!         forkring::worker::after(Duration::from_secs(1), move || {
//!             let _ = stream.send(b"data: one second later\n\n");
//!             stream.end();
//!         });
//!     })
//! }
//! ```
//!
//! # 5. Files
//!
//! [`Response::file`] sends an open file from the page cache to the socket
//! without copying it through the worker (`splice` on io_uring, `sendfile`
//! on epoll), and answers `Range`, `If-Modified-Since` and `HEAD` for it.
//! [`files::StaticDir`](crate::files::StaticDir) serves a directory by URL
//! path and never a file outside it. (`examples/static_files.rs`)
//!
//! ```no_run
//! use forkring::files::StaticDir;
//! use forkring::{Request, Response, Server};
//!
//! fn main() -> std::io::Result<()> {
//!     Server::builder().serve(|| {
//!         let dir = StaticDir::new("/srv/www").expect("open /srv/www");
//!         move |req: &Request<'_>, res: &mut Response| dir.serve(req, req.path().trim_start_matches('/'), res)
//!     })
//! }
//! ```
//!
//! # 6. Uploads: request bodies in pieces
//!
//! A body arrives whole by default ([`Request::body`], up to
//! [`Limits::max_body`]). A handler that wants it otherwise answers
//! [`Handler::on_head`], before any of the body is read:
//! [`BodyPlan::Stream`] hands it to a [`BodyReader`] piece by piece, with
//! flow control ([`BodyFlow::pause`]); [`BodyPlan::Refuse`] answers at once
//! (`401`, `413`), so the client never sends the body. The
//! [`BodyReader`] docs have an example. (`examples/upload.rs`)
//!
//! # 7. Upgrades
//!
//! [`Response::upgrade`] answers `101 Switching Protocols` and then hands
//! the socket over ([`Upgraded::into_parts`]), with the bytes already
//! received, to code of your own, usually on a pool thread: a WebSocket
//! library, say. (`examples/websocket.rs`, with `tungstenite`)
//!
//! # 8. The master: events, commands, messages
//!
//! The master delivers each worker's lifecycle as [`Event`]s (`Fork`,
//! `Online`, `Listening`, `Ready`, `Disconnect`, `Exit`, as Node's
//! `cluster` does), to a callback on its loop ([`Server::on_event`]) or to
//! any thread ([`Server::events`], an [`Events`] channel). Callbacks get a
//! [`Ctl`]: send a worker a message, broadcast, read counters, queue a
//! [`Command`] (reload, scale, drain a worker, shut down). Other threads
//! send commands through a [`Handle`]. Messages between the master and a
//! worker are bytes through shared-memory rings: [`Ctl::send`] and
//! [`Ctl::broadcast`] one way, [`worker::send`](crate::worker::send) the
//! other, received by [`Handler::on_message`] and as [`Event::Message`].
//! (`examples/messages.rs`; `examples/cluster.rs` ports a Node `cluster`
//! program line for line)
//!
//! ```no_run
//! use forkring::{Event, Handler, Request, Response, Server};
//!
//! struct App {
//!     motd: String,
//! }
//!
//! impl Handler for App {
//!     fn handle(&mut self, _req: &Request<'_>, res: &mut Response) {
//!         res.body(&self.motd);
//!     }
//!     fn on_message(&mut self, msg: &[u8]) {
//!         self.motd = String::from_utf8_lossy(msg).into_owned();
//!     }
//! }
//!
//! fn main() -> std::io::Result<()> {
//!     Server::builder()
//!         .on_event(|event, ctl| {
//!             if let Event::Ready { worker, .. } = event {
//!                 let _ = ctl.send(worker.slot, b"welcome\n");
//!             }
//!         })
//!         .serve(|| App { motd: String::new() })
//! }
//! ```
//!
//! A program that reads [`Events`] or holds a [`Handle`] on threads of its
//! own must start workers with [`Server::reexec`]: a plain `fork` from a
//! process with threads could copy a lock held by another thread forever
//! locked, so forkring refuses it.
//!
//! # 9. Metrics
//!
//! Each worker counts requests, responses by class, bytes, connections and
//! latencies in shared memory, with no system call; the master reads them
//! at any time ([`Ctl::counters`], [`Ctl::total`], [`Ctl::metrics`]) and
//! serves them in Prometheus' text format with readiness and liveness
//! ([`Server::metrics`]: `/metrics`, `/ready`, `/live`).
//! (`examples/metrics.rs`)
//!
//! # 10. Timers
//!
//! [`worker::every`](crate::worker::every) and
//! [`worker::after`](crate::worker::after) run a closure on the worker's
//! loop, between requests, with no thread: refresh a cache, expire
//! entries, pace a stream. On the master's side, [`Server::every`] calls
//! back with a [`Ctl`]. (`examples/timers.rs`)
//!
//! # 11. Deployment
//!
//! - **Signals**, as nginx and gunicorn take them: `TERM`/`INT` drain and
//!   exit ([`Timeouts::drain`] bounds it), `QUIT` exits at once, `HUP`
//!   reloads worker by worker, `TTIN`/`TTOU` add or remove a worker, `USR1`
//!   reopens the access log, `USR2` upgrades the binary.
//! - **Rolling reload**: each worker in turn is replaced by a new one and
//!   drained once the new one is ready, with no failed request.
//! - **Binary upgrade**: on `USR2` ([`Command::Upgrade`]) the master starts
//!   the new binary, hands it the listening sockets, and leaves once the
//!   new master's workers serve; if the new one fails, the old one keeps
//!   serving.
//! - **systemd**: `Type=notify-reload` (`READY=1`, `RELOADING=1`,
//!   `STOPPING=1`, the watchdog), socket activation (`LISTEN_FDS`), and a
//!   delay before draining so that a load balancer stops sending first
//!   ([`Server::drain_delay`]). The repository's `contrib/forkring.service`
//!   and `contrib/forkring.socket` are a starting point.
//! - **Guards**: a watchdog for a worker whose loop stopped turning
//!   ([`Server::worker_timeout`]), recycling after a number of requests or
//!   a resident size ([`Server::recycle`]), dropping root after binding
//!   ([`Server::user`]).
//!
//! The `forkring` binary (crate `forkring-cli`) is all of this behind
//! command-line flags; the README's *Operations* part covers each in
//! full, with the minimum kernel for every feature.

#[allow(unused_imports)] // the names the guide's links resolve to
use crate::{
    BodyFlow, BodyPlan, BodyReader, Command, Ctl, Event, Events, Handle, Handler, Limits, Request, Responder, Response,
    Server, Stream, StreamError, Timeouts, Upgraded,
};
