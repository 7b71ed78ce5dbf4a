//! Configuration, the builder, and the one place that picks the backend.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::http::{Handler, Limits};

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
        Timeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            drain: Duration::from_secs(30),
        }
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".to_owned(),
            workers: 1,
            backend: Backend::Auto,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            max_connections: 65_536,
            backlog: 4096,
        }
    }
}

/// Builds and runs a server.
#[derive(Debug, Default)]
pub struct Server {
    config: Config,
}

impl Server {
    /// A builder with the defaults of [`Config::default`].
    pub fn builder() -> Server {
        Server::default()
    }

    /// Starts from a complete configuration.
    pub fn with_config(config: Config) -> Server {
        Server { config }
    }

    /// Address to bind.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.config.listen = addr.into();
        self
    }

    /// Number of worker processes.
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

    /// The configuration as built so far.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Binds the listener and serves until a termination signal drains the
    /// worker. `factory` makes the handler inside the worker.
    pub fn serve<H, F>(self, factory: F) -> io::Result<()>
    where
        H: Handler,
        F: FnOnce() -> H,
    {
        let mut config = self.config;
        if let Some(b) = Backend::from_env().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))? {
            config.backend = b;
        }
        if config.workers != 1 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "only one worker is supported in this version",
            ));
        }
        let listener = crate::listen::bind(&config.listen, false, config.backlog)?;
        log::info!("listening on {}", crate::listen::local_addr(&listener)?);
        let ctl = crate::driver::Control::install()?;
        let mut handler = factory();
        crate::driver::run(&config, std::os::fd::AsFd::as_fd(&listener), &mut handler, &ctl)
            .map(|_| ())
    }
}
