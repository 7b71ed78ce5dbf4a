//! The operations flags of a forkring server, and the [`Server`] builder
//! they make: where it listens, how many workers and how they share the
//! sockets, the backend, limits and timeouts, the drain, privileges, the
//! watchdog and recycling, metrics and the access log.
//!
//! Where it stops: the routes a server answers and the flags of those
//! routes belong to the binary that serves them ([`crate::App`] for the
//! product's); the log is set up in [`crate::init_logger`].

// The fields' doc comments are the `--help` text (clap): brackets in them,
// such as `[::1]:8080` or `[default: umask]`, are text, not links.
#![allow(rustdoc::broken_intra_doc_links)]

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::duration::{format_duration, parse_duration, Bare};
use forkring::{Admission, Backend, Balance, Limits, Recycle, Respawn, Server, Timeouts};

/// The flags every forkring server binary takes.
#[derive(Args, Clone, Debug)]
pub struct Options {
    /// address to bind, host:port ([::1]:8080 for IPv6),
    /// or unix:PATH for a Unix domain socket; repeat it
    /// to serve several (every worker serves them all)
    #[arg(long, value_name = "ADDR", default_value = forkring::DEFAULT_LISTEN, value_parser = address, action = clap::ArgAction::Append, verbatim_doc_comment)]
    pub listen: Vec<String>,

    /// permissions of the unix:PATH socket file, e.g. 660
    /// [default: umask]
    #[arg(long, value_name = "OCTAL", value_parser = octal, verbatim_doc_comment)]
    pub unix_mode: Option<u32>,

    /// worker processes [default: one per CPU]
    #[arg(long, value_name = "N", value_parser = at_least_one::<usize>)]
    pub workers: Option<usize>,

    /// reuseport: one SO_REUSEPORT socket per worker;
    /// shared: one socket for all. Sockets passed by
    /// systemd (LISTEN_FDS) are used instead of --listen
    /// when present
    #[arg(long, value_name = "MODE", default_value = "reuseport", value_parser = Balance::from_str, verbatim_doc_comment)]
    pub balance: Balance,

    /// event loop: auto, uring or epoll; the
    /// FORKRING_BACKEND environment variable overrides it
    #[arg(long, value_name = "BACKEND", default_value = "auto", value_parser = backend, verbatim_doc_comment)]
    pub backend: Backend,

    /// time a client has to send a whole request head
    /// (30s, 250ms, 1m; a bare number is milliseconds)
    #[arg(long, value_name = "DURATION", default_value_t = Millis(Timeouts::DEFAULT.header), value_parser = millis, verbatim_doc_comment)]
    pub header_timeout: Millis,

    /// time an idle keep-alive connection is kept, and
    /// the longest pause within a body or response
    /// (30s, 250ms; a bare number is milliseconds)
    #[arg(long, value_name = "DURATION", default_value_t = Millis(Timeouts::DEFAULT.idle), value_parser = millis, verbatim_doc_comment)]
    pub idle_timeout: Millis,

    /// largest request body; larger ones get 413
    #[arg(long, value_name = "BYTES", default_value_t = Limits::DEFAULT.max_body, value_parser = number::<usize>)]
    pub max_body: usize,

    /// serve the files under DIR at /files/... (Range,
    /// HEAD, If-Modified-Since; sent without copies)
    #[arg(long = "static", value_name = "DIR", verbatim_doc_comment)]
    pub static_dir: Option<PathBuf>,

    /// most connections one worker holds at once
    #[arg(long, value_name = "N", default_value_t = forkring::Config::default().max_connections, value_parser = at_least_one::<usize>)]
    pub max_connections: usize,

    /// time workers get to finish on shutdown or
    /// reload before they are killed (25s, 1m; a bare
    /// number is milliseconds)
    #[arg(long, value_name = "DURATION", default_value_t = Millis(Timeouts::DEFAULT.drain), value_parser = millis, verbatim_doc_comment)]
    pub drain_timeout: Millis,

    /// on SIGTERM, keep serving this long after /ready
    /// turned 503, then drain (a load balancer's health
    /// check notices first) (5s, 500ms; a bare number is
    /// milliseconds) [default: 0]
    #[arg(long, value_name = "DURATION", value_parser = millis, verbatim_doc_comment)]
    pub drain_delay: Option<Millis>,

    /// drop to this user in the workers (bind as root)
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// pin worker i to CPU i
    #[arg(long)]
    pub pin: bool,

    /// start workers by re-executing this binary
    /// instead of a plain fork
    #[arg(long, verbatim_doc_comment)]
    pub reexec: bool,

    /// do not replace workers that die
    #[arg(long)]
    pub no_respawn: bool,

    /// serve Prometheus metrics (GET /metrics),
    /// readiness (GET /ready) and liveness (GET /live)
    /// from the master on ADDR, e.g. 127.0.0.1:9100
    #[arg(long, value_name = "ADDR", verbatim_doc_comment)]
    pub metrics: Option<String>,

    /// append a line per answered request to PATH (the
    /// combined log format plus microseconds); SIGUSR1
    /// reopens it
    #[arg(long, value_name = "PATH", verbatim_doc_comment)]
    pub access_log: Option<PathBuf>,

    /// kill and replace a worker whose event loop has not
    /// turned for this long (a stuck handler, a stopped
    /// process) (30s, 2m, 1.5s; a bare number is seconds)
    #[arg(long, value_name = "DURATION", value_parser = seconds, verbatim_doc_comment)]
    pub worker_timeout: Option<Duration>,

    /// replace a worker after it served N requests, as a
    /// rolling reload does (nothing is lost)
    #[arg(long, value_name = "N", value_parser = at_least_one::<u64>, verbatim_doc_comment)]
    pub max_requests: Option<u64>,

    /// up to J more requests per worker, drawn at
    /// random, so workers are not replaced together
    #[arg(long, value_name = "J", default_value_t = 0, value_parser = number::<u64>, verbatim_doc_comment)]
    pub max_requests_jitter: u64,

    /// replace a worker whose resident memory passes MIB MiB
    /// (checked every second)
    #[arg(long, value_name = "MIB", value_parser = at_least_one::<u64>, verbatim_doc_comment)]
    pub max_worker_rss: Option<u64>,

    /// admission by queueing time: on (refuse new work
    /// with 503 and Retry-After: 1 while work waits too
    /// long before it starts; /ready turns 503) or off
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = on_off, verbatim_doc_comment)]
    pub admission: OnOff,

    /// the longest blocking-pool jobs may keep waiting
    /// for a thread before new ones are refused
    /// (5ms, 20ms; a bare number is milliseconds)
    #[arg(long, value_name = "DURATION", default_value_t = Millis(Admission::DEFAULT.pool_target), value_parser = millis, verbatim_doc_comment)]
    pub pool_target: Millis,

    /// the longest the event loop's turns may keep
    /// requests waiting before requests are refused
    /// (before their handler), for handlers that do
    /// heavy work on the loop (50ms; a bare number is
    /// milliseconds) [default: off: the loop is
    /// measured, never shed]
    #[arg(long, value_name = "DURATION", value_parser = millis, verbatim_doc_comment)]
    pub loop_target: Option<Millis>,

    /// the blocking pool's jobs in flight: fixed (its
    /// threads and queue) or adaptive (fewer when jobs
    /// run longer than they used to: a slow dependency)
    #[arg(long, value_name = "fixed|adaptive", default_value = "fixed", value_parser = pool_limit, verbatim_doc_comment)]
    pub pool_limit: Adaptive,

    /// error, warn, info or debug [default: info]
    #[arg(long, value_name = "LEVEL", value_enum, hide_possible_values = true)]
    pub log: Option<Level>,

    /// report whether the kernel allows io_uring here,
    /// then exit (status 0 if it does, 1 if not)
    #[arg(long, verbatim_doc_comment)]
    pub check_uring: bool,
}

/// A level of `--log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Level {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Lifecycle events too: fork, online, listening, ready, draining,
    /// disconnect, exit, fork failed.
    Info,
    /// Everything, each line with the module that wrote it.
    Debug,
}

impl From<Level> for log::LevelFilter {
    fn from(level: Level) -> log::LevelFilter {
        match level {
            Level::Error => log::LevelFilter::Error,
            Level::Warn => log::LevelFilter::Warn,
            Level::Info => log::LevelFilter::Info,
            Level::Debug => log::LevelFilter::Debug,
        }
    }
}

/// `on` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnOff(pub bool);

/// `on` or `off` (also `true`/`false`, `yes`/`no`, `1`/`0`).
fn on_off(v: &str) -> Result<OnOff, String> {
    match v {
        "on" | "true" | "yes" | "1" => Ok(OnOff(true)),
        "off" | "false" | "no" | "0" => Ok(OnOff(false)),
        _ => Err(format!("expected on or off, got {v:?}")),
    }
}

/// `--pool-limit`: whether the pool's limit adapts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Adaptive(pub bool);

/// `fixed` or `adaptive`.
fn pool_limit(v: &str) -> Result<Adaptive, String> {
    match v {
        "fixed" => Ok(Adaptive(false)),
        "adaptive" => Ok(Adaptive(true)),
        _ => Err(format!("expected fixed or adaptive, got {v:?}")),
    }
}

/// A duration of a flag whose bare numbers are milliseconds ([`millis`]);
/// prints with its unit (`10s`, `250ms`), so that `--help` shows the
/// library's defaults as a user would write them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Millis(pub Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_duration(self.0, f)
    }
}

impl Options {
    /// The timeouts the flags set; the others keep the library's defaults.
    pub fn timeouts(&self) -> Timeouts {
        let mut t = Timeouts::default();
        t.header = self.header_timeout.0;
        t.idle = self.idle_timeout.0;
        t.drain = self.drain_timeout.0;
        t
    }

    /// The limits the flags set; the others keep the library's defaults.
    pub fn limits(&self) -> Limits {
        Limits::default().with_max_body(self.max_body)
    }

    /// Admission by queueing time as the flags set it.
    pub fn admission(&self) -> Admission {
        let mut a =
            Admission::DEFAULT.with_pool_target(self.pool_target.0).with_loop_target(self.loop_target.map(|t| t.0));
        a.enabled = self.admission.0;
        a.with_adaptive_pool(self.pool_limit.0)
    }

    /// Requests and memory after which a worker is replaced.
    pub fn recycle(&self) -> Recycle {
        let mut r = Recycle::default();
        r.max_requests = self.max_requests;
        r.max_requests_jitter = self.max_requests_jitter;
        r.max_rss = self.max_worker_rss.map(|mib| mib.saturating_mul(1 << 20));
        r
    }

    /// The builder with every setting the flags name; the caller adds the
    /// event callback and the handler.
    pub fn server(&self) -> Server {
        let mut respawn = Respawn::default();
        respawn.enabled = !self.no_respawn;
        let mut server = Server::builder();
        for addr in &self.listen {
            server = server.listen(addr.as_str());
        }
        let mut server = server
            .workers(self.workers.unwrap_or_else(forkring::default_workers))
            .backend(self.backend)
            .timeouts(self.timeouts())
            .limits(self.limits())
            .max_connections(self.max_connections)
            .balance(self.balance)
            .pin(self.pin)
            .reexec(self.reexec)
            .respawn(respawn)
            .recycle(self.recycle())
            .admission(self.admission())
            .drain_delay(self.drain_delay.map_or(Duration::ZERO, |d| d.0));
        if let Some(user) = &self.user {
            server = server.user(user.as_str());
        }
        if let Some(mode) = self.unix_mode {
            server = server.unix_mode(mode);
        }
        if let Some(path) = &self.access_log {
            server = server.access_log(path.as_path());
        }
        if let Some(addr) = &self.metrics {
            server = server.metrics(addr.as_str());
        }
        if let Some(t) = self.worker_timeout {
            server = server.worker_timeout(t);
        }
        server
    }
}

/// A whole number.
pub fn number<T: FromStr>(v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("expected a whole number, got {v:?}"))
}

/// A whole number of at least 1.
pub fn at_least_one<T: FromStr + PartialOrd + From<u8>>(v: &str) -> Result<T, String> {
    let n: T = number(v)?;
    if n < T::from(1) {
        return Err("must be at least 1".to_owned());
    }
    Ok(n)
}

/// A duration of at least 1 ms, with its unit (`30s`, `250ms`, `2m`,
/// `1h30m`, `1.5s`) or a bare number of milliseconds (as these flags
/// always took).
pub fn millis(v: &str) -> Result<Millis, String> {
    let d = parse_duration(v, Bare::Millis)?;
    if d < Duration::from_millis(1) {
        return Err("must be at least 1ms".to_owned());
    }
    Ok(Millis(d))
}

/// A duration from 100 ms to a day, with its unit or a bare number of
/// seconds, fractions allowed (as `--worker-timeout` always took).
pub fn seconds(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v, Bare::Secs)?;
    if !(Duration::from_millis(100)..=Duration::from_secs(86_400)).contains(&d) {
        return Err("must be between 100ms and 24h".to_owned());
    }
    Ok(d)
}

/// A listening address: anything but empty (the library parses the rest).
fn address(v: &str) -> Result<String, String> {
    if v.is_empty() {
        return Err("needs an address such as 127.0.0.1:8080".to_owned());
    }
    Ok(v.to_owned())
}

/// A file mode in octal.
fn octal(v: &str) -> Result<u32, String> {
    u32::from_str_radix(v, 8).map_err(|_| format!("{v:?} is not an octal mode"))
}

/// `auto`, `uring` or `epoll`.
fn backend(v: &str) -> Result<Backend, String> {
    Backend::from_str(v).map_err(|e| e.to_string())
}
