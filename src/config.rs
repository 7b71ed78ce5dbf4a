//! Plain configuration data that every layer reads: the server's
//! [`Config`] and its parts. Nothing here does I/O beyond reading one
//! environment variable; nothing here knows about processes, sockets or
//! HTTP parsing.
//!
//! The structs are `#[non_exhaustive]`, so new settings can be added
//! without breaking users: start from `Default::default()` and set the
//! fields you need, e.g.
//!
//! ```
//! let mut t = forkring::Timeouts::default();
//! t.idle = std::time::Duration::from_secs(5);
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Which event loop a worker runs.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    /// io_uring if the kernel allows it (fast setup flags first, then simpler
    /// ones), epoll otherwise.
    #[default]
    Auto,
    /// io_uring only; refusing to start if the kernel refuses it.
    Uring,
    /// epoll only.
    Epoll,
}

impl Backend {
    /// The environment variable that overrides the configured backend.
    pub const ENV: &'static str = "FORKRING_BACKEND";

    /// Reads `FORKRING_BACKEND`, if set.
    pub fn from_env() -> Result<Option<Backend>, ParseBackendError> {
        match std::env::var(Self::ENV) {
            Ok(v) if !v.is_empty() => v.parse().map(Some),
            _ => Ok(None),
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = ParseBackendError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Backend::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(Backend::Uring),
            "epoll" => Ok(Backend::Epoll),
            _ => Err(ParseBackendError(s.to_owned())),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::Uring => "uring",
            Backend::Epoll => "epoll",
        })
    }
}

/// A backend name that is not `auto`, `uring` or `epoll`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseBackendError(pub String);

impl fmt::Display for ParseBackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown backend {:?} (expected auto, uring or epoll)", self.0)
    }
}

impl std::error::Error for ParseBackendError {}

/// Connection timeouts.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Time a client has to send a whole header block, counted from the
    /// connection's accept or from the first byte of the request (slowloris).
    pub header: Duration,
    /// Time an idle keep-alive connection is kept, and the longest pause
    /// between two reads of a body or two sends of a response.
    pub idle: Duration,
    /// Time a worker spends draining before it closes what is left.
    pub drain: Duration,
    /// Time a deferred response may take (see [`crate::Response::defer`]):
    /// `504` when it passes.
    pub deferred: Duration,
}

impl Timeouts {
    /// The defaults: 10 s for a head, 60 s idle, 30 s to drain, 30 s for a
    /// deferred response.
    pub const DEFAULT: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        drain: Duration::from_secs(30),
        deferred: Duration::from_secs(30),
    };

    /// With `header` as the time a client has to send a request head.
    pub const fn with_header(self, header: Duration) -> Timeouts {
        Timeouts { header, ..self }
    }

    /// With `idle` as the keep-alive and between-reads timeout.
    pub const fn with_idle(self, idle: Duration) -> Timeouts {
        Timeouts { idle, ..self }
    }

    /// With `drain` as the time a worker spends draining.
    pub const fn with_drain(self, drain: Duration) -> Timeouts {
        Timeouts { drain, ..self }
    }

    /// With `deferred` as the time a deferred response may take.
    pub const fn with_deferred(self, deferred: Duration) -> Timeouts {
        Timeouts { deferred, ..self }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::DEFAULT
    }
}

/// Everything a worker needs besides its listener and handler.
///
/// The builder's methods set its fields one by one; a program that reads
/// its settings from elsewhere can fill one and start from it
/// ([`Server::with_config`](crate::Server::with_config)). Like every
/// configuration struct here it is `#[non_exhaustive]`: start from
/// `Config::default()`.
///
/// ```no_run
/// use forkring::{Config, Request, Response, Server};
///
/// fn main() -> std::io::Result<()> {
///     let mut config = Config::default();
///     config.workers = 2;
///     config.limits.max_body = 1 << 20;
///     Server::with_config(config).serve(|| |_: &Request<'_>, res: &mut Response| {
///         res.body("hello\n");
///     })
/// }
/// ```
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct Config {
    /// Addresses to bind, each e.g. `127.0.0.1:8080`, `[::1]:8080`, or
    /// `unix:/run/app.sock` (a Unix domain socket: every worker accepts on
    /// it, as in [`Balance::Shared`]); every worker serves every one.
    /// Empty: [`DEFAULT_LISTEN`].
    pub listen: Vec<String>,
    /// Number of worker processes.
    pub workers: usize,
    /// Event-loop backend.
    pub backend: Backend,
    /// HTTP limits.
    pub limits: Limits,
    /// Connection timeouts.
    pub timeouts: Timeouts,
    /// Most connections one worker holds at once; further accepts wait in the
    /// kernel's backlog.
    pub max_connections: usize,
    /// Listen backlog.
    pub backlog: i32,
    /// How connections are spread over workers.
    pub balance: Balance,
    /// Respawn policy.
    pub respawn: Respawn,
    /// Start each worker as a fresh execution of the program's binary
    /// instead of a plain fork (required when the master has threads).
    pub reexec: bool,
    /// Drop to this user in the workers (bind as root first).
    pub user: Option<String>,
    /// Pin worker `i` to CPU `i`.
    pub pin: bool,
    /// Sizes of the shared-memory rings between the master and each worker.
    pub ipc: ChannelOptions,
    /// Permissions of a Unix socket's file (`listen = "unix:..."`), e.g.
    /// `0o660`; `None` keeps what the umask gives.
    pub unix_mode: Option<u32>,
    /// Threads of each worker's blocking-work pool
    /// ([`crate::worker::spawn_blocking`], [`crate::Response::blocking`]),
    /// started in the worker on first use.
    pub pool: usize,
    /// Jobs each worker's blocking-work pool holds waiting for a thread;
    /// past them a job is refused at once (a [`crate::Response::blocking`]
    /// request gets `503`). `None`: as many as the pool has threads.
    pub pool_queue: Option<usize>,
    /// Address of the master's metrics listener (`GET /metrics`, `/ready`,
    /// `/live`), e.g. `127.0.0.1:9100`; `None`: no listener.
    pub metrics: Option<String>,
    /// On graceful shutdown, how long the cluster keeps serving after
    /// `/ready` turned 503 and before its workers close their listeners and
    /// drain, so that a load balancer's health check sees the 503 and stops
    /// picking this host first; zero: drain at once.
    pub drain_delay: Duration,
    /// A worker whose event loop has not turned for this long is killed
    /// (SIGKILL) and replaced; `None`: no watchdog.
    pub worker_timeout: Option<Duration>,
    /// Each worker appends a line per answered request to this file (the
    /// combined log format plus the request's time in microseconds), one
    /// write per loop turn; reopened on `SIGUSR1`. `None`: no access log.
    pub access_log: Option<std::path::PathBuf>,
    /// When workers are replaced to bound what they accumulate.
    pub recycle: Recycle,
    /// Admission by queueing time: when work waits too long before it
    /// starts, new work is refused at once with `503`.
    pub admission: Admission,
}

/// Admission by queueing time, CoDel's rule (Nichols and Jacobson) applied
/// to a worker's two queues, as in "fail fast" request queueing: each
/// worker measures how long work waits before it starts, and when the
/// shortest wait over a whole [`Admission::interval`] stays above a
/// target (a standing queue, not a burst), it sheds: new work for that
/// queue is answered `503` with `Retry-After: 1` at once, before any
/// handler work, until a wait under the target is seen again.
///
/// - The blocking pool's queue ([`crate::Response::blocking`],
///   [`crate::worker::spawn_blocking`]): the wait from a job's queueing to
///   a thread starting it, against [`Admission::pool_target`]. While the
///   pool sheds, only work for the pool is refused: a request its handler
///   answers on the loop is never refused because the pool is saturated.
///   At any time the pool queues no more than would start within an
///   interval at the jobs' measured pace: CoDel sees a standing queue an
///   interval after it formed, and a deeper queue would hold, at the
///   onset of an overload, several intervals of work.
/// - The event loop: how late its turns run, measured once a turn (the
///   length of the previous turn, which is how long input that arrived at
///   its start waited to be read, when input was waiting as it ended; 0
///   when the loop found none and slept: a loop that idles between
///   handlers has no queue, however long each runs), always shown in the
///   metrics; shed only
///   with an [`Admission::loop_target`]. With a target each path's handler
///   is timed (two clock reads a request), and a turn answers the requests
///   whose handlers are cheap (under 50 µs) first and its heavy ones
///   last, at most a `loop_target` of them a turn (at least one; the rest
///   wait for the next turn, in order, never reordered on one
///   connection): a cheap request waits for one heavy handler at most,
///   not for every one that arrived with it. While the loop sheds, and for
///   an interval after (the turns stay capped until the overload is
///   over), a heavy request that would start a `loop_target` or more
///   after it was read is answered `503` without calling the handler, at
///   once rather than after the handler ahead of it; cheap requests are
///   never refused: refusing a request that cheap saves nothing, and the
///   fast routes beside a saturated heavy one stay answered.
///
/// The pool's defaults (5 ms over 100 ms) are CoDel's own: a pool thread
/// starts a queued job within tens of microseconds on an idle machine and
/// within a few milliseconds on a busy one, so a shortest wait above 5 ms
/// for 100 ms is a standing queue. The loop sheds by default not at all:
/// a refusal on the loop saves only the handler's work, which for a cheap
/// handler is less than the parsing and the answer that a refusal costs
/// too, so refusing would turn answers into `503`s and save nothing (a
/// client pipelining 20,000 requests makes turns of ~50 ms in a debug
/// build, of a few in a release one: long turns of cheap work). A service
/// whose handlers do heavy work on the loop sets a target: as long as its
/// heaviest handler, at least (a turn that ran it and found more input
/// waiting counts as late), and above the turns of its cheap work; the
/// successes' latency under overload is then about two targets, and a
/// cheap request's about one heavy handler. 50 ms is a start where the
/// handlers' times are not known.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Whether work is refused on a standing queue at all; off, work is
    /// refused only at the caps ([`Config::pool_queue`],
    /// [`Limits::max_deferred`]).
    pub enabled: bool,
    /// The longest a pool job's shortest wait may stay over an interval.
    pub pool_target: Duration,
    /// The longest the loop's turns may keep input waiting over an
    /// interval; `None` (the default): the loop is measured, never shed.
    pub loop_target: Option<Duration>,
    /// The interval over which the shortest wait must stay above a target
    /// before work is shed.
    pub interval: Duration,
    /// The blocking pool's jobs in flight follow how long they run (a
    /// gradient limiter in the spirit of Netflix's `concurrency-limits`):
    /// when jobs take longer than they used to (a slow dependency), fewer
    /// are admitted, instead of piling up on it. Off by default: the pool
    /// admits up to its threads and queue.
    pub adaptive_pool: bool,
}

impl Admission {
    /// On: 5 ms for the pool over 100 ms; the loop measured, not shed.
    pub const DEFAULT: Admission = Admission {
        enabled: true,
        pool_target: Duration::from_millis(5),
        loop_target: None,
        interval: Duration::from_millis(100),
        adaptive_pool: false,
    };

    /// Off: work is refused only at the caps.
    pub const OFF: Admission = Admission { enabled: false, ..Admission::DEFAULT };

    /// With `pool_target` as the blocking pool's target.
    pub const fn with_pool_target(self, pool_target: Duration) -> Admission {
        Admission { pool_target, ..self }
    }

    /// With `loop_target` as the event loop's target (`None`: the loop is
    /// never shed).
    pub const fn with_loop_target(self, loop_target: Option<Duration>) -> Admission {
        Admission { loop_target, ..self }
    }

    /// With the blocking pool's adaptive limit on or off.
    pub const fn with_adaptive_pool(self, adaptive_pool: bool) -> Admission {
        Admission { adaptive_pool, ..self }
    }

    /// With `interval` as CoDel's interval.
    pub const fn with_interval(self, interval: Duration) -> Admission {
        Admission { interval, ..self }
    }
}

impl Default for Admission {
    fn default() -> Self {
        Admission::DEFAULT
    }
}

/// Recycling: replacing a worker that served its quota of requests or
/// grew too large, through the same path as a rolling reload (its
/// replacement is ready before it drains).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recycle {
    /// Requests after which a worker is replaced; `None`: never.
    pub max_requests: Option<u64>,
    /// Up to this many more requests, drawn per worker, so that workers
    /// started together are not replaced together.
    pub max_requests_jitter: u64,
    /// Resident memory in bytes past which a worker is replaced, read from
    /// `/proc/<pid>/statm` every second; `None`: no ceiling.
    pub max_rss: Option<u64>,
}

impl Recycle {
    /// With a quota of `n` requests per worker, plus up to `jitter` more.
    pub const fn with_max_requests(self, n: u64, jitter: u64) -> Recycle {
        Recycle { max_requests: Some(n), max_requests_jitter: jitter, ..self }
    }

    /// With a ceiling of `bytes` of resident memory per worker.
    pub const fn with_max_rss(self, bytes: u64) -> Recycle {
        Recycle { max_rss: Some(bytes), ..self }
    }

    /// Whether anything recycles workers.
    pub fn enabled(&self) -> bool {
        self.max_requests.is_some() || self.max_rss.is_some()
    }
}

/// The address served when [`Config::listen`] names none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// One worker per CPU.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Vec::new(),
            workers: default_workers(),
            backend: Backend::Auto,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            max_connections: 65_536,
            backlog: 4096,
            balance: Balance::default(),
            respawn: Respawn::default(),
            reexec: false,
            user: None,
            pin: false,
            ipc: ChannelOptions::default(),
            pool: 64,
            pool_queue: None,
            unix_mode: None,
            metrics: None,
            drain_delay: Duration::ZERO,
            worker_timeout: None,
            access_log: None,
            recycle: Recycle::default(),
            admission: Admission::default(),
        }
    }
}

/// How connections are spread over workers.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Balance {
    /// One `SO_REUSEPORT` socket per slot, opened by the master and kept
    /// while the slot exists: the kernel hashes connections over them, and a
    /// respawned worker finds its predecessor's backlog waiting.
    #[default]
    ReusePort,
    /// One socket accepted by every worker.
    Shared,
}

impl std::str::FromStr for Balance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reuseport" => Ok(Balance::ReusePort),
            "shared" => Ok(Balance::Shared),
            _ => Err(format!("unknown balance mode {s:?} (expected reuseport or shared)")),
        }
    }
}

/// Respawn policy: exponential backoff and a crash budget.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Respawn {
    /// Whether dead workers are replaced at all.
    pub enabled: bool,
    /// Delay before the second respawn in a row (the first is immediate).
    pub initial: Duration,
    /// Growth of the delay per further crash in a row.
    pub factor: f64,
    /// Ceiling of the delay.
    pub max: Duration,
    /// A worker ready for this long resets its slot's crash streak: it was
    /// serving, so its death is no crash loop and it is replaced at once.
    /// Workers dying sooner after they are ready are replaced with a
    /// growing delay.
    pub stable_after: Duration,
    /// Workers of one slot dying in a row before they become ready stop the
    /// cluster. A worker that was ready and then died is always replaced.
    pub max_startup_failures: u32,
    /// Workers dying before they become ready, over all slots, within
    /// `crash_window`, that stop the cluster.
    pub max_crashes: u32,
    /// Window for `max_crashes`.
    pub crash_window: Duration,
    /// A new worker not ready after this long is killed (and counts as a
    /// startup failure).
    pub ready_timeout: Duration,
}

impl Default for Respawn {
    fn default() -> Self {
        Respawn {
            enabled: true,
            initial: Duration::from_millis(100),
            factor: 1.5,
            max: Duration::from_secs(15),
            stable_after: Duration::from_secs(1),
            max_startup_failures: 5,
            max_crashes: 30,
            crash_window: Duration::from_secs(60),
            ready_timeout: Duration::from_secs(30),
        }
    }
}

impl Respawn {
    /// Delay before respawning after `streak` crashes in a row (1 = first).
    pub fn delay(&self, streak: u32) -> Duration {
        if streak <= 1 {
            return Duration::ZERO;
        }
        let d = self.initial.as_secs_f64() * self.factor.powi(streak as i32 - 2);
        Duration::from_secs_f64(d.min(self.max.as_secs_f64()))
    }
}

/// Protocol limits. Exceeding one is answered with its status and the
/// connection closes.
///
/// The struct is `#[non_exhaustive]` (a new limit is not a breaking
/// change), so it is not written as a literal: start from
/// [`Limits::DEFAULT`] and change what you need, with the `with_*`
/// methods (usable in a `const`) or by assigning fields.
///
/// ```
/// use forkring::Limits;
///
/// const UPLOADS: Limits = Limits::DEFAULT.with_max_body(64 << 20).with_max_headers(50);
/// assert_eq!(UPLOADS.max_body, 64 << 20);
///
/// let mut strict = Limits::default();
/// strict.max_target = 1024;
/// assert_eq!(strict.max_head, Limits::DEFAULT.max_head);
/// // Given to the builder: `Server::builder().limits(UPLOADS)`.
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest header block (request line, headers and the blank line), in
    /// bytes: 431 beyond it.
    pub max_head: usize,
    /// Most header fields: 431 beyond it. At most [`Limits::HEADERS_CAP`].
    pub max_headers: usize,
    /// Longest request-target: 414 beyond it.
    pub max_target: usize,
    /// Largest request body, declared or chunked: 413 beyond it, sent as
    /// soon as a declared length exceeds it, before the body is read.
    pub max_body: usize,
    /// Most bytes of request bodies one worker buffers at once, over all its
    /// connections: `503` beyond it, so that many uploads together cannot
    /// take a worker's memory. A body is charged as its bytes arrive (a
    /// declared `Content-Length` is a promise, not memory), and refused when
    /// its next bytes would go over; a declared length larger than the whole
    /// budget, which could never fit, is refused before the body is read.
    pub max_buffered_bodies: usize,
    /// Most deferred responses one worker waits on at once: `503` beyond
    /// ([`crate::Response::try_defer`] tells the handler so, before it
    /// starts any work for the request).
    pub max_deferred: usize,
    /// Most upgraded connections ([`crate::Response::upgrade`]) one worker
    /// holds at once: an upgrade beyond is answered `503` with
    /// `Connection: close`. A connection counts from its `101` until the
    /// [`crate::Upgraded`] (or the [`crate::UpgradedStream`] made of it)
    /// is dropped. An upgraded connection has left the event loop, and
    /// [`Config::max_connections`] with it: this cap bounds the sockets
    /// (and, served on the worker's pool, the threads) they hold. Raise it
    /// for a service whose upgraded connections are its main traffic.
    pub max_upgraded: usize,
    /// The slowest a client may send a request body, once its grace is
    /// over: `408` and the connection closes. Measured per connection,
    /// while the server waits for the body's bytes (a streamed body whose
    /// reader paused it is not timed while paused); `None`: no minimum.
    pub min_body_rate: Option<MinDataRate>,
}

/// A minimum data rate with a grace period, as
/// [`Limits::min_body_rate`] applies it: the bytes received since the body
/// began, divided by the time it has been waited on, must stay at or above
/// `bytes_per_second` once `grace` has passed.
///
/// The rate is an average over the whole body, so bytes sent early count
/// for later pauses; each pause is still bounded by [`Timeouts::idle`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinDataRate {
    /// Bytes a second, at least 1.
    pub bytes_per_second: u64,
    /// Time from the start of a body during which no rate is asked.
    pub grace: Duration,
}

impl MinDataRate {
    /// The default: 240 bytes a second after 5 s (Kestrel's figures: a
    /// client on a very slow link passes, one that holds a body open with a
    /// trickle does not).
    pub const DEFAULT: MinDataRate = MinDataRate { bytes_per_second: 240, grace: Duration::from_secs(5) };

    /// At least `bytes_per_second` (raised to 1 if 0) once `grace` has
    /// passed.
    pub const fn new(bytes_per_second: u64, grace: Duration) -> MinDataRate {
        let bytes_per_second = if bytes_per_second == 0 { 1 } else { bytes_per_second };
        MinDataRate { bytes_per_second, grace }
    }
}

impl Default for MinDataRate {
    fn default() -> Self {
        MinDataRate::DEFAULT
    }
}

impl Limits {
    /// The hard ceiling on [`Limits::max_headers`] (header slots live on the
    /// stack while a request is parsed).
    pub const HEADERS_CAP: usize = 256;

    /// The defaults: 16 KiB of head, 100 fields, 8 KiB of target, 8 MiB of
    /// body, 256 MiB of bodies buffered, 16,384 deferred responses and
    /// 1,024 upgraded connections per worker, and bodies sent at 240 bytes
    /// a second at least after 5 s ([`MinDataRate::DEFAULT`]).
    pub const DEFAULT: Limits = Limits {
        max_head: 16 * 1024,
        max_headers: 100,
        max_target: 8 * 1024,
        max_body: 8 * 1024 * 1024,
        max_buffered_bodies: 256 * 1024 * 1024,
        max_deferred: 16 * 1024,
        max_upgraded: 1024,
        min_body_rate: Some(MinDataRate::DEFAULT),
    };

    /// With `max_head` as the largest header block.
    pub const fn with_max_head(self, max_head: usize) -> Limits {
        Limits { max_head, ..self }
    }

    /// With `max_headers` as the most header fields.
    pub const fn with_max_headers(self, max_headers: usize) -> Limits {
        Limits { max_headers, ..self }
    }

    /// With `max_target` as the longest request-target.
    pub const fn with_max_target(self, max_target: usize) -> Limits {
        Limits { max_target, ..self }
    }

    /// With `max_body` as the largest request body.
    pub const fn with_max_body(self, max_body: usize) -> Limits {
        Limits { max_body, ..self }
    }

    /// With `max_deferred` as the most deferred responses a worker waits on.
    pub const fn with_max_deferred(self, max_deferred: usize) -> Limits {
        Limits { max_deferred, ..self }
    }

    /// With `max_upgraded` as the most upgraded connections a worker holds.
    pub const fn with_max_upgraded(self, max_upgraded: usize) -> Limits {
        Limits { max_upgraded, ..self }
    }

    /// With `max_buffered_bodies` as the most body bytes a worker buffers.
    pub const fn with_max_buffered_bodies(self, max_buffered_bodies: usize) -> Limits {
        Limits { max_buffered_bodies, ..self }
    }

    /// With `min_body_rate` as the slowest a request body may arrive after
    /// its grace; `None`: no minimum.
    pub const fn with_min_body_rate(self, min_body_rate: Option<MinDataRate>) -> Limits {
        Limits { min_body_rate, ..self }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// The rings' options, per direction.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelOptions {
    /// Master to worker.
    pub to_worker: RingOptions,
    /// Worker to master.
    pub to_master: RingOptions,
}

impl ChannelOptions {
    /// Options with these rings.
    pub fn new(to_worker: RingOptions, to_master: RingOptions) -> ChannelOptions {
        ChannelOptions { to_worker, to_master }
    }
}

// Plain data here; its methods, the ring's rules for these numbers, are
// written beside the ring's frames (`ipc/ring/format.rs`).
/// Capacity and message limit of a ring.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingOptions {
    /// Bytes of message data; a power of two from 64 to 2³⁰. Default 1 MiB.
    pub capacity: usize,
    /// Largest message in bytes; at most `capacity / 2 - 16` (so an empty
    /// ring always accepts it, wherever its tail stands). Default 64 KiB.
    pub max_message: usize,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions { capacity: 1 << 20, max_message: 64 << 10 }
    }
}

/// An address the cluster listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenAddr {
    /// A TCP address (IPv4 or IPv6).
    Tcp(SocketAddr),
    /// A Unix domain socket, by its path (`--listen unix:/run/app.sock`).
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    /// `127.0.0.1:8080`, `[::1]:8080`, or `unix:/run/app.sock`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => a.fmt(f),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// An error that trying again cannot fix: the configuration must change
/// first (an address that is not one, a file in a socket's way, a worker
/// that cannot start with these settings). [`crate::Server::serve`]
/// returns it inside an [`std::io::Error`]; [`ConfigError::is`] tells it
/// apart, so that a program can exit with status 78 (`EX_CONFIG` of
/// sysexits.h), which a systemd unit with `RestartPreventExitStatus=78`
/// does not restart.
///
/// ```
/// let e = std::io::Error::other("bind 127.0.0.1:80: Address already in use");
/// assert!(!forkring::ConfigError::is(&e));
/// ```
#[derive(Debug)]
pub struct ConfigError {
    /// What is wrong, in one line.
    message: String,
}

impl ConfigError {
    /// The exit status for a configuration error: `EX_CONFIG` of
    /// sysexits.h.
    pub const EXIT_STATUS: u8 = 78;

    /// An `io::Error` (of kind `InvalidInput`) carrying a `ConfigError`
    /// that says `message`.
    pub fn io(message: impl Into<String>) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, ConfigError { message: message.into() })
    }

    /// Whether `e` carries a `ConfigError`.
    pub fn is(e: &std::io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<ConfigError>())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}
