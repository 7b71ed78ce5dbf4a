//! The master's public face: the [`Event`]s it reports, the [`Command`]s
//! it takes (from any thread through a [`Handle`], or from a callback), and
//! the [`Ctl`] handed to event and timer callbacks on its loop.

use std::fmt;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::metrics::{self, Cluster, Metrics};
use super::slot::Slot;
use crate::config::ListenAddr;
use crate::ipc::{SendError, Snapshot};
use crate::worker::WorkerId;

/// How a worker process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl ExitStatus {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Code(0)
    }
}

/// Lifecycle events, delivered on the master loop (callback) and through a
/// channel. For one worker they come in this order: `Fork`, `Online`,
/// `Listening`, `Ready`, then `Disconnect` if it was asked to drain, and
/// `Exit`.
///
/// New kinds of events may come in a minor release (the enum is
/// `#[non_exhaustive]`): match the ones you need and let the rest pass.
///
/// ```no_run
/// use forkring::{Event, Request, Response, Server};
///
/// fn main() -> std::io::Result<()> {
///     Server::builder()
///         .workers(2)
///         .on_event(|event, ctl| match event {
///             Event::Ready { worker, pid } => eprintln!("worker {worker} (pid {pid}) serves"),
///             Event::Exit { worker, status, requested: false, .. } => {
///                 // The master respawns it by itself; say so.
///                 eprintln!("worker {worker} died ({status:?}); {} workers left", ctl.workers().len());
///             }
///             Event::Message { worker, data } => {
///                 eprintln!("{worker}: {}", String::from_utf8_lossy(data));
///             }
///             _ => {}
///         })
///         .serve(|| |_: &Request<'_>, res: &mut Response| {
///             res.body("hello\n");
///         })
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The master forked a worker.
    Fork {
        /// Which worker.
        worker: WorkerId,
        /// Its pid.
        pid: i32,
    },
    /// The worker process runs.
    Online {
        /// Which worker.
        worker: WorkerId,
        /// Its pid.
        pid: i32,
    },
    /// The worker holds its listener.
    Listening {
        /// Which worker.
        worker: WorkerId,
        /// Its pid.
        pid: i32,
        /// The address it serves.
        addr: ListenAddr,
    },
    /// The worker made its handler and serves.
    Ready {
        /// Which worker.
        worker: WorkerId,
        /// Its pid.
        pid: i32,
    },
    /// The worker was asked to drain: it stops accepting, finishes what it
    /// has, and exits.
    Disconnect {
        /// Which worker.
        worker: WorkerId,
        /// Its pid.
        pid: i32,
    },
    /// The worker sent the master a message (through its shared-memory
    /// ring).
    Message {
        /// Which worker.
        worker: WorkerId,
        /// The message.
        data: Vec<u8>,
    },
    /// A binary upgrade began: the master started the program's binary
    /// from disk as a new master, handing it the listening sockets.
    UpgradeStarted {
        /// The new master's pid.
        pid: i32,
    },
    /// The new master's workers serve: this master hands over (systemd
    /// hears `MAINPID=` the new pid), drains its own workers and exits.
    Upgraded {
        /// The new master's pid.
        pid: i32,
    },
    /// The upgrade failed (the binary could not be executed, exited, or was
    /// not ready in time); this master keeps serving.
    UpgradeFailed {
        /// The new master's pid, if one was started.
        pid: Option<i32>,
        /// Why, as logged.
        reason: String,
    },
    /// The worker exited.
    Exit {
        /// Which worker.
        worker: WorkerId,
        /// Its pid.
        pid: i32,
        /// Exit code or signal.
        status: ExitStatus,
        /// Whether the master had asked it to stop (drain, reload, scale
        /// down, shutdown, kill).
        requested: bool,
    },
}

impl fmt::Display for Event {
    /// One line per event, e.g. `ready 0.3 pid=1234` or
    /// `exit 0.3 pid=1234 signal=9 requested=false`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Fork { worker, pid } => write!(f, "fork {worker} pid={pid}"),
            Event::Online { worker, pid } => write!(f, "online {worker} pid={pid}"),
            Event::Listening { worker, pid, addr } => write!(f, "listening {worker} pid={pid} addr={addr}"),
            Event::Ready { worker, pid } => write!(f, "ready {worker} pid={pid}"),
            Event::Disconnect { worker, pid } => write!(f, "disconnect {worker} pid={pid}"),
            Event::Message { worker, data } => write!(f, "message {worker} len={}", data.len()),
            Event::UpgradeStarted { pid } => write!(f, "upgrade started pid={pid}"),
            Event::Upgraded { pid } => write!(f, "upgraded pid={pid}"),
            Event::UpgradeFailed { pid: Some(pid), reason } => write!(f, "upgrade failed pid={pid}: {reason}"),
            Event::UpgradeFailed { pid: None, reason } => write!(f, "upgrade failed: {reason}"),
            Event::Exit { worker, pid, status, requested } => {
                let how = match status {
                    ExitStatus::Code(c) => format!("code={c}"),
                    ExitStatus::Signal(s) => format!("signal={s}"),
                };
                write!(f, "exit {worker} pid={pid} {how} requested={requested}")
            }
        }
    }
}

/// Commands to the master, from any thread through a [`Handle`], or from
/// an event callback ([`Ctl::command`]). The signals an operator sends
/// (`HUP`, `TERM`, `TTIN`...) are the same commands.
///
/// ```
/// use forkring::Command;
///
/// // Drain worker 1 and let the master start its replacement.
/// let cmd = Command::Disconnect { slot: 1 };
/// assert_ne!(cmd, Command::Reload);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Send `signal` to the current worker of `slot`.
    Kill {
        /// Slot index.
        slot: usize,
        /// Signal number.
        signal: i32,
    },
    /// Drain the current worker of `slot` and do not replace it until a
    /// reload or a respawn asks for it.
    Disconnect {
        /// Slot index.
        slot: usize,
    },
    /// Rolling reload (SIGHUP).
    Reload,
    /// One worker more (SIGTTIN).
    ScaleUp,
    /// One worker fewer (SIGTTOU).
    ScaleDown,
    /// Graceful shutdown (SIGTERM).
    Shutdown,
    /// Immediate stop (SIGQUIT).
    Quit,
    /// Every worker reopens its access log (SIGUSR1, logrotate's
    /// convention).
    ReopenLogs,
    /// Binary upgrade (SIGUSR2): start the program's binary from disk as a
    /// new master with the listening sockets, and hand over to it once its
    /// workers serve. One at a time; while one is under way, or the cluster
    /// is shutting down, it is ignored.
    Upgrade,
}

/// A thread-safe way to send [`Command`]s to the master loop: `Clone` and
/// `Send`, usable before the master runs (commands wait for it) and from
/// any thread of the master process (start workers with
/// [`Server::reexec`](crate::Server::reexec) when the master has threads).
///
/// ```no_run
/// use std::time::Duration;
/// use forkring::{Command, Request, Response, Server};
///
/// fn main() -> std::io::Result<()> {
///     let server = Server::builder().reexec(true);
///     let handle = server.handle();
///     // A rolling reload every hour, from a thread of the program's own.
///     std::thread::spawn(move || loop {
///         std::thread::sleep(Duration::from_secs(3600));
///         handle.send(Command::Reload);
///     });
///     server.serve(|| |_: &Request<'_>, res: &mut Response| {
///         res.body("hello\n");
///     })
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Handle {
    /// Commands for the master loop.
    pub(super) tx: Sender<Command>,
    /// The master's wake-up eventfd; -1 until the master runs (commands
    /// sent before are read when it starts).
    pub(super) wake: Arc<AtomicI32>,
}

impl Handle {
    /// Queues a command and wakes the master.
    pub fn send(&self, cmd: Command) {
        if self.tx.send(cmd).is_ok() {
            let fd = self.wake.load(Ordering::Acquire);
            if fd >= 0 {
                crate::sys::eventfd_wake(fd);
            }
        }
    }
}

/// Callback invoked on the master loop for every event.
pub type EventCallback = Box<dyn FnMut(&Event, &mut Ctl<'_>)>;

/// Callback invoked on the master loop at a fixed period.
pub type TimerCallback = Box<dyn FnMut(&mut Ctl<'_>)>;

/// The master loop's controls, handed to event and timer callbacks: send
/// messages to workers, read their counters, queue commands.
///
/// ```no_run
/// use std::time::Duration;
/// use forkring::{Request, Response, Server};
///
/// fn main() -> std::io::Result<()> {
///     Server::builder()
///         // Every ten seconds, on the master loop: read the counters every
///         // worker keeps in shared memory, and tell the workers.
///         .every(Duration::from_secs(10), |ctl| {
///             let total = ctl.total();
///             let busiest = ctl
///                 .workers()
///                 .iter()
///                 .filter_map(|w| Some((w.slot, ctl.counters(w.slot)?.requests)))
///                 .max_by_key(|&(_, requests)| requests);
///             eprintln!("{} requests; busiest worker: {busiest:?}", total.requests);
///             ctl.broadcast(format!("total={}", total.requests).as_bytes());
///         })
///         .serve(|| |_: &Request<'_>, res: &mut Response| {
///             res.body("hello\n");
///         })
/// }
/// ```
pub struct Ctl<'a> {
    /// The master's process table.
    pub(super) slots: &'a mut Vec<Slot>,
    /// Queues commands for after the callback.
    pub(super) handle: Handle,
    /// What the metrics need besides the slots.
    pub(super) cluster: Cluster,
    /// Whether the master watches heartbeats (for
    /// [`SlotMetrics::last_turn`](super::SlotMetrics::last_turn)).
    pub(super) watching: bool,
}

impl fmt::Debug for Ctl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctl").field("workers", &self.workers()).finish()
    }
}

impl Ctl<'_> {
    /// Sends `msg` to the current worker of `slot`. `Full` when its ring is
    /// full (backpressure: nothing is queued or dropped silently), `Closed`
    /// when the slot has no live worker or it is draining, `TooLarge` past
    /// the ring's largest message.
    pub fn send(&mut self, slot: usize, msg: &[u8]) -> Result<(), SendError> {
        let Some(s) = self.slots.get_mut(slot) else { return Err(SendError::Closed) };
        let Some(p) = s.current.as_ref().filter(|p| !p.stopping) else { return Err(SendError::Closed) };
        let idx = p.channel;
        s.channels[idx].ch.master().send(msg)
    }

    /// Sends `msg` to every live worker; returns how many it reached (the
    /// others were full, draining or gone).
    pub fn broadcast(&mut self, msg: &[u8]) -> usize {
        (0..self.slots.len()).filter(|&i| self.send(i, msg).is_ok()).count()
    }

    /// The current workers, by slot.
    pub fn workers(&self) -> Vec<WorkerId> {
        self.slots.iter().filter_map(|s| s.current.as_ref().map(|p| p.id)).collect()
    }

    /// The counters of `slot`, totals since the cluster started (all its
    /// workers, past and present).
    pub fn counters(&self, slot: usize) -> Option<Snapshot> {
        self.slots.get(slot).map(Slot::counters)
    }

    /// The counters of every slot, summed.
    pub fn total(&self) -> Snapshot {
        self.slots.iter().map(Slot::counters).sum()
    }

    /// The cluster's metrics: per-slot counters and latency histograms,
    /// worker states, restarts by cause, uptime; what the metrics listener
    /// serves ([`crate::Server::metrics`]).
    pub fn metrics(&self) -> Metrics {
        metrics::collect(self.slots, &self.cluster, self.watching)
    }

    /// [`Ctl::metrics`] in the Prometheus text exposition format 0.0.4, to
    /// serve on a route of one's own (`Content-Type: text/plain;
    /// version=0.0.4`).
    pub fn metrics_text(&self) -> String {
        self.metrics().to_prometheus()
    }

    /// Queues a command (kill, disconnect, reload...).
    pub fn command(&self, cmd: Command) {
        self.handle.send(cmd);
    }

    /// A thread-safe handle for commands.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }
}
