//! The builder: the public entry that assembles a [`Config`] and the
//! master's hooks, and runs the master (or, in a re-executed worker
//! process, that worker).

use std::io;

use crate::config::{Admission, Backend, Balance, ChannelOptions, Config, Limits, Recycle, Respawn, Timeouts};
use crate::http::Handler;
use crate::master::{self, Ctl, Event, Events, Handle, Hooks};

/// Builds and runs a server: a master process that binds the listeners and
/// forks the workers, each serving with the handler made by the factory.
///
/// Every setting has a default ([`Config::default`]); the builder's
/// methods change one each, and [`Server::serve`] runs the cluster until
/// it is shut down (`SIGTERM`, `SIGINT`, [`Command::Shutdown`](crate::Command::Shutdown)).
///
/// ```no_run
/// use std::time::Duration;
/// use forkring::{Limits, Request, Response, Server, Timeouts};
///
/// fn main() -> std::io::Result<()> {
///     Server::builder()
///         .listen("0.0.0.0:8080") // or "[::]:8080", or "unix:/run/app.sock"
///         .workers(4)             // default: one per CPU
///         .limits(Limits::DEFAULT.with_max_body(1 << 20))
///         .timeouts(Timeouts::DEFAULT.with_idle(Duration::from_secs(30)))
///         .metrics("127.0.0.1:9100") // /metrics, /ready, /live
///         .serve(|| |_: &Request<'_>, res: &mut Response| {
///             res.body("hello\n");
///         })
/// }
/// ```
#[derive(Debug)]
pub struct Server {
    /// The configuration as built so far.
    config: Config,
    /// Callbacks, event channels and the command queue for the master.
    hooks: Hooks,
}

impl Default for Server {
    fn default() -> Self {
        Server::with_config(Config::default())
    }
}

impl Server {
    /// A builder with the defaults of [`Config::default`].
    pub fn builder() -> Server {
        Server::default()
    }

    /// Starts from a complete configuration.
    pub fn with_config(config: Config) -> Server {
        Server { config, hooks: Hooks::new() }
    }

    /// Adds an address to bind: `host:port` (`127.0.0.1:8080`,
    /// `[::1]:8080`) or `unix:PATH`. Call it once per address; every
    /// worker serves every one (TCP over IPv4 and IPv6 and a Unix socket
    /// together, say). Without any: [`crate::DEFAULT_LISTEN`].
    ///
    /// ```no_run
    /// forkring::Server::builder()
    ///     .listen("127.0.0.1:8080")
    ///     .listen("[::1]:8080")
    ///     .listen("unix:/run/app.sock")
    ///     .serve(|| |_req: &forkring::Request<'_>, res: &mut forkring::Response| {
    ///         res.body_mut().extend_from_slice(b"hi");
    ///     })
    ///     .unwrap();
    /// ```
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.config.listen.push(addr.into());
        self
    }

    /// Number of worker processes (default: one per CPU).
    pub fn workers(mut self, n: usize) -> Self {
        self.config.workers = n;
        self
    }

    /// Event-loop backend; `FORKRING_BACKEND` in the environment overrides it.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.config.backend = backend;
        self
    }

    /// HTTP limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Connection timeouts.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.config.timeouts = timeouts;
        self
    }

    /// Most connections one worker holds at once.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n;
        self
    }

    /// How connections are spread over workers.
    pub fn balance(mut self, balance: Balance) -> Self {
        self.config.balance = balance;
        self
    }

    /// Respawn policy (backoff, crash budget).
    pub fn respawn(mut self, respawn: Respawn) -> Self {
        self.config.respawn = respawn;
        self
    }

    /// Start workers by re-executing the program's binary (with the same
    /// arguments) instead of a plain fork. Use it when the master process
    /// has other threads: a plain fork copies only the forking thread, and
    /// any lock another thread held stays locked in the child. Without it,
    /// [`Server::serve`] refuses to fork from a process with other threads.
    /// Needs `memfd_create` (the channel crosses exec as a memfd).
    pub fn reexec(mut self, on: bool) -> Self {
        self.config.reexec = on;
        self
    }

    /// Drop privileges to `user` in the workers (the master binds first):
    /// its uid, gid and groups, looked up by the master. Every worker also
    /// sets `PR_SET_NO_NEW_PRIVS`; one that dropped privileges is no longer
    /// dumpable. Without a user, a master running as root warns once.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.config.user = Some(user.into());
        self
    }

    /// Pin worker `i` to CPU `i` (modulo the CPU count).
    pub fn pin(mut self, on: bool) -> Self {
        self.config.pin = on;
        self
    }

    /// Permissions of the socket file when listening on `unix:PATH`, e.g.
    /// `0o660` (default: what the umask gives).
    pub fn unix_mode(mut self, mode: u32) -> Self {
        self.config.unix_mode = Some(mode);
        self
    }

    /// Threads of each worker's blocking-work pool
    /// ([`crate::worker::spawn_blocking`]; default 64), started in the
    /// worker on first use.
    pub fn pool(mut self, threads: usize) -> Self {
        self.config.pool = threads.max(1);
        self
    }

    /// Jobs each worker's blocking-work pool holds waiting for a thread
    /// (at least one; default: as many as [`Server::pool`] threads). Past
    /// them a job is refused at once: [`crate::worker::spawn_blocking`]
    /// returns [`crate::worker::PoolFull`] and [`crate::Response::blocking`]
    /// answers `503`, so that a burst costs refusals, not a queue that
    /// every later request waits behind.
    pub fn pool_queue(mut self, jobs: usize) -> Self {
        self.config.pool_queue = Some(jobs.max(1));
        self
    }

    /// Serves Prometheus metrics (`GET /metrics`), readiness (`GET /ready`:
    /// 200 while a worker is ready and the cluster is not draining, 503
    /// otherwise) and liveness (`GET /live`) on `addr`, from the master's
    /// own loop. The same data is at [`Ctl::metrics`].
    pub fn metrics(mut self, addr: impl Into<String>) -> Self {
        self.config.metrics = Some(addr.into());
        self
    }

    /// On graceful shutdown (SIGTERM, [`Command::Shutdown`](crate::Command::Shutdown)), keeps serving
    /// for `delay` after `/ready` turned 503, then drains: a load balancer
    /// that checks `/ready` every *i* and marks a host down after *f*
    /// failures stops picking it within about *i* x *f*, so a delay a little
    /// longer than that means no new connection arrives at a closing
    /// listener. The drain timeout counts from the end of the delay.
    /// Default: zero (drain at once).
    pub fn drain_delay(mut self, delay: std::time::Duration) -> Self {
        self.config.drain_delay = delay;
        self
    }

    /// Kills (SIGKILL) and replaces a worker whose event loop has not
    /// turned for `timeout` (a handler stuck in a loop, a stopped process).
    /// An idle loop wakes at least every quarter of it to say it lives.
    pub fn worker_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.config.worker_timeout = Some(timeout.max(std::time::Duration::from_millis(100)));
        self
    }

    /// Each worker appends one line per answered request to `path`: the
    /// combined log format plus the request's time in microseconds, in UTC,
    /// written with one `write` per loop turn to a file opened `O_APPEND`
    /// (so workers' lines never mix). The workers open it as their own user
    /// (see [`Server::user`]); one that cannot stops the cluster at start,
    /// saying why. `SIGUSR1` to the master makes every worker reopen it
    /// (logrotate's convention).
    pub fn access_log(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.config.access_log = Some(path.into());
        self
    }

    /// Replaces workers that served their quota of requests or grew past a
    /// memory ceiling, without losing a request (as a rolling reload).
    pub fn recycle(mut self, recycle: Recycle) -> Self {
        self.config.recycle = recycle;
        self
    }

    /// Admission by queueing time (on by default, [`Admission::DEFAULT`]):
    /// when work waits too long before it starts, in the blocking pool (or
    /// for the event loop, given a loop target), new work is answered `503`
    /// with `Retry-After: 1` at once, and the metrics listener's `/ready` turns `503` while the
    /// workers shed. [`Admission::OFF`] admits everything up to the caps.
    pub fn admission(mut self, admission: Admission) -> Self {
        self.config.admission = admission;
        self
    }

    /// Extra environment variables for the worker of each slot.
    pub fn worker_env(mut self, env: impl Fn(usize) -> Vec<(String, String)> + 'static) -> Self {
        self.hooks.worker_env = Some(Box::new(env));
        self
    }

    /// Calls `callback` on the master loop for every event (lifecycle and
    /// worker messages). Its [`Ctl`] sends messages to workers, reads their
    /// counters and queues commands (kill, disconnect, reload...).
    pub fn on_event(mut self, callback: impl FnMut(&Event, &mut Ctl<'_>) + 'static) -> Self {
        self.hooks.callbacks.push(Box::new(callback));
        self
    }

    /// Calls `callback` on the master loop every `period`, e.g. to
    /// broadcast a value to the workers or collect their counters.
    pub fn every(mut self, period: std::time::Duration, callback: impl FnMut(&mut Ctl<'_>) + 'static) -> Self {
        self.hooks.timers.push((period.max(std::time::Duration::from_millis(1)), Box::new(callback)));
        self
    }

    /// Sizes of the shared-memory rings between the master and each worker
    /// (default 1 MiB each way, messages up to 64 KiB).
    pub fn ipc(mut self, options: ChannelOptions) -> Self {
        self.config.ipc = options;
        self
    }

    /// A channel that receives every lifecycle event and worker message
    /// from now on, readable from any thread (see [`Events`]).
    pub fn events(&mut self) -> Events {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.hooks.senders.push(tx);
        Events::new(rx)
    }

    /// A thread-safe handle that sends commands to the master.
    pub fn handle(&self) -> Handle {
        self.hooks.handle()
    }

    /// The configuration as built so far.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs the cluster until it is shut down: returns `Ok(())` after a
    /// clean graceful shutdown, an error when binding fails, when the crash
    /// budget is spent, or when the drain timeout forced workers to die.
    /// `factory` makes the handler inside each worker (again at every
    /// respawn).
    ///
    /// A worker holds only stdin, stdout, stderr and its own listener,
    /// lifeline and channel: every other descriptor the program had open
    /// before `serve` is closed in it. Open what a worker needs (files,
    /// connections) in `factory`, which runs in the worker.
    ///
    /// In a process started as a re-executed worker ([`Server::reexec`]),
    /// this serves as that worker and returns when it has drained.
    ///
    /// A binary upgrade (SIGUSR2, or [`Command::Upgrade`](crate::Command)
    /// through a [`Handle`]) starts the program again from the path it was
    /// started from, with the same arguments and environment, and hands it
    /// the listening sockets: the program must reach `serve` again with the
    /// same settings, where the new master takes the sockets. Once its
    /// workers serve, this call returns `Ok(())` after this master's own
    /// workers have drained, while the new master goes on serving.
    pub fn serve<H, F>(self, factory: F) -> io::Result<()>
    where
        H: Handler,
        F: Fn() -> H,
    {
        let Server { mut config, mut hooks } = self;
        if let Some(b) = Backend::from_env().map_err(|e| crate::config::ConfigError::io(e.to_string()))? {
            config.backend = b;
        }
        if let Some((id, listeners, lifeline, ring)) = crate::worker::reexec_worker()? {
            let result = crate::worker::serve(&config, &factory, id, listeners, lifeline, Some(ring));
            if let Err(e) = &result {
                if crate::worker::CannotStart::is(e) {
                    // As a forked worker would: tell the master this will
                    // not change by trying again.
                    log::error!("worker {id}: {e}");
                    std::process::exit(crate::worker::EXIT_CANNOT_START);
                }
            }
            return result;
        }
        if config.workers == 0 {
            return Err(crate::config::ConfigError::io("workers must be at least 1"));
        }
        let entry = |start| crate::worker::run_forked(&config, &factory, start);
        match master::run(&config, &mut hooks, &entry)? {
            master::Outcome::Clean => Ok(()),
            master::Outcome::Forced => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "workers were killed before they finished draining"))
            }
        }
    }
}
