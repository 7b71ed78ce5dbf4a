//! Configuration, the builder, and the one place that picks the backend.

use std::fmt;
use std::io;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::cluster::{self, Balance, Ctl, Event, Handle, Hooks, Respawn};
use crate::http::{Handler, Limits};
use crate::ipc::ChannelOptions;

/// Which event loop a worker runs.
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
pub struct ParseBackendError(pub String);

impl fmt::Display for ParseBackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown backend {:?} (expected auto, uring or epoll)", self.0)
    }
}

impl std::error::Error for ParseBackendError {}

/// Connection timeouts.
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
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { header: Duration::from_secs(10), idle: Duration::from_secs(60), drain: Duration::from_secs(30) }
    }
}

/// Everything a worker needs besides its listener and handler.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to bind, e.g. `127.0.0.1:8080` or `[::1]:8080`.
    pub listen: String,
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
}

/// One worker per CPU.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".to_owned(),
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
        }
    }
}

/// Builds and runs a server: a master process that binds the listeners and
/// forks the workers, each serving with the handler made by the factory.
#[derive(Debug)]
pub struct Server {
    config: Config,
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

    /// Address to bind.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.config.listen = addr.into();
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
    /// any lock another thread held stays locked in the child.
    pub fn reexec(mut self, on: bool) -> Self {
        self.config.reexec = on;
        self
    }

    /// Drop privileges to `user` in the workers (the master binds first).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.config.user = Some(user.into());
        self
    }

    /// Pin worker `i` to CPU `i` (modulo the CPU count).
    pub fn pin(mut self, on: bool) -> Self {
        self.config.pin = on;
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

    /// A channel that receives every lifecycle event.
    pub fn events(&mut self) -> Receiver<Event> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.hooks.senders.push(tx);
        rx
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
    /// In a process started as a re-executed worker ([`Server::reexec`]),
    /// this serves as that worker and returns when it has drained.
    pub fn serve<H, F>(self, factory: F) -> io::Result<()>
    where
        H: Handler,
        F: Fn() -> H,
    {
        let Server { mut config, mut hooks } = self;
        if let Some(b) = Backend::from_env().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))? {
            config.backend = b;
        }
        if let Some((id, listener, chan, ring)) = cluster::reexec_worker()? {
            return cluster::serve_worker(&config, &factory, id, listener, chan, Some(ring));
        }
        if config.workers == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "workers must be at least 1"));
        }
        match cluster::run(&config, &mut hooks, &factory)? {
            cluster::Outcome::Clean => Ok(()),
            cluster::Outcome::Forced => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "workers were killed before they finished draining"))
            }
        }
    }
}
