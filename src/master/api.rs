//! The master's public face: the [`Event`]s it reports, the [`Command`]s
//! it takes (from any thread through a [`Handle`], or from a callback), the
//! messages and descriptors a [`Handle`] or a [`Ctl`] sends to workers, and
//! the [`Ctl`] handed to event and timer callbacks on its loop.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_channel::Sender;

use super::metrics::{self, Cluster, Metrics, WorkerState};
use super::slot::Slot;
use crate::config::ListenAddr;
use crate::ipc::{SendError, Snapshot};
use crate::lifeline::{self, FdSendError};
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
/// channel. For one worker they come in Node's `cluster` order: `Fork`,
/// `Online`, `Listening`, `Ready`, then `Draining` if it was asked to
/// drain, then `Disconnect` (its channel to the master closed) and `Exit`,
/// always both and in that order, whether it drained or died. `Message`s
/// come between `Fork` and `Disconnect`. A fork that failed is a
/// `ForkFailed` and no other event.
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
    /// has, and exits. Messages to it are refused from here on.
    Draining {
        /// Which worker.
        worker: WorkerId,
        /// Its pid.
        pid: i32,
    },
    /// The worker's channel to the master closed (Node's `disconnect`):
    /// after its drain, or because it died. `Exit` follows.
    Disconnect {
        /// Which worker.
        worker: WorkerId,
        /// Its pid.
        pid: i32,
    },
    /// A worker could not be forked into `slot` (Node's `error` of a
    /// worker that could not be spawned): no process exists, and no other
    /// event follows for it. A respawn or reload that failed is tried again
    /// as its policy says; at start the cluster stops with this error.
    ForkFailed {
        /// The slot it was meant for.
        slot: usize,
        /// Why, as logged.
        reason: String,
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
            Event::Draining { worker, pid } => write!(f, "draining {worker} pid={pid}"),
            Event::Disconnect { worker, pid } => write!(f, "disconnect {worker} pid={pid}"),
            Event::ForkFailed { slot, reason } => write!(f, "fork failed slot={slot}: {reason}"),
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

/// What a [`Handle`] queues for the master loop.
#[derive(Debug)]
pub(super) enum Order {
    /// A command.
    Command(Command),
    /// A message to one slot's worker, and where the outcome goes.
    Send {
        /// Slot index.
        slot: usize,
        /// The message.
        msg: Vec<u8>,
        /// Hears what [`Ctl::send`] returned.
        reply: Sender<Result<(), SendError>>,
    },
    /// A message to every live worker, and where the count goes.
    Broadcast {
        /// The message.
        msg: Vec<u8>,
        /// Hears how many workers it reached.
        reply: Sender<usize>,
    },
    /// A descriptor for one slot's worker, and where the outcome goes.
    SendFd {
        /// Slot index.
        slot: usize,
        /// The caller's descriptor, duplicated.
        fd: OwnedFd,
        /// The tag that goes with it.
        tag: Vec<u8>,
        /// Hears what [`Ctl::send_fd`] returned.
        reply: Sender<Result<(), SendError>>,
    },
}

/// Where a [`Handle`] finds the running master loop.
#[derive(Debug)]
pub(crate) struct LoopRef {
    /// The loop's wake-up eventfd while the loop runs; -1 otherwise.
    pub(super) wake: AtomicI32,
    /// The kernel thread id of the loop's thread; 0 while it does not run.
    pub(super) tid: AtomicI32,
    /// The eventfd itself, made when the loop first starts and kept for as
    /// long as any handle lives: a handle that read its number just
    /// before the loop ended still writes to that eventfd, never to a
    /// descriptor that reused the number.
    pub(super) fd: OnceLock<OwnedFd>,
}

impl LoopRef {
    /// A loop that does not run yet.
    pub(super) fn new() -> LoopRef {
        LoopRef { wake: AtomicI32::new(-1), tid: AtomicI32::new(0), fd: OnceLock::new() }
    }

    /// The loop's wake-up eventfd, made on first use.
    pub(super) fn wake_fd(&self) -> std::io::Result<RawFd> {
        if self.fd.get().is_none() {
            let _ = self.fd.set(crate::sys::eventfd()?);
        }
        Ok(self.fd.get().map_or(-1, |fd| fd.as_raw_fd()))
    }
}

/// A thread-safe way to reach the master loop from any thread of the
/// master process: [`Command`]s, and messages and descriptors for workers
/// (the Node `cluster` program's `worker.send` from a `setTimeout`).
///
/// Messages and descriptors are synchronous: the call waits for the master
/// loop's next turn (microseconds when it is idle; as long as the callback
/// it is running, when it runs one, so a thread that a callback waits for
/// must not call them) and returns exactly
/// what [`Ctl::send`] or [`Ctl::send_fd`] would have, so `Ok` means the
/// message is in the worker's ring (or the descriptor in its lifeline),
/// and a refusal is typed: [`SendError::NoSuchSlot`],
/// [`SendError::Closed`] (no live worker, or it drains),
/// [`SendError::Full`] (backpressure: nothing was queued, try later),
/// [`SendError::TooLarge`], [`SendError::NoMaster`] (the loop does not run
/// yet or any more). Inside a callback on the master loop use the
/// callback's [`Ctl`]: a handle called there would wait for itself, and
/// refuses with [`SendError::OnLoop`].
///
/// ```no_run
/// use std::time::Duration;
/// use forkring::{Request, Response, Server};
///
/// let server = Server::builder().reexec(true);
/// let handle = server.handle();
/// if forkring::is_primary() {
///     // Node's `setTimeout(() => eachWorker(w => w.send(...)), 3000)`.
///     forkring::spawn_master_thread(move || {
///         std::thread::sleep(Duration::from_secs(3));
///         let reached = handle.broadcast(b"hello").unwrap_or(0);
///         println!("{reached} workers told");
///     });
/// }
/// server.serve(|| |_: &Request<'_>, res: &mut Response| { res.body("hi"); }).unwrap();
/// ```
///
/// A master with threads forks its workers safely only with
/// [`crate::Server::reexec`], and takes its signals only where they are
/// blocked in every thread: see [`crate::spawn_master_thread`].
#[derive(Clone, Debug)]
pub struct Handle {
    /// Orders for the master loop.
    pub(super) tx: Sender<Order>,
    /// The running loop, if any.
    pub(super) running: Arc<LoopRef>,
}

impl Handle {
    /// Queues a command and wakes the master. A command queued before the
    /// master runs is carried out when it starts.
    pub fn command(&self, cmd: Command) {
        if self.tx.send(Order::Command(cmd)).is_ok() {
            self.wake();
        }
    }

    /// Sends `msg` to the current worker of `slot` and returns once the
    /// master loop has put it in the worker's ring, or says why not (see
    /// [`Handle`]). The worker receives it in
    /// [`Handler::on_message`](crate::Handler::on_message).
    pub fn send(&self, slot: usize, msg: &[u8]) -> Result<(), SendError> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.order(Order::Send { slot, msg: msg.to_vec(), reply })?;
        rx.recv().unwrap_or(Err(SendError::NoMaster))
    }

    /// Sends `msg` to every live worker that is not draining; returns how
    /// many it reached (the others were full), or
    /// [`SendError::NoMaster`] / [`SendError::OnLoop`].
    pub fn broadcast(&self, msg: &[u8]) -> Result<usize, SendError> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.order(Order::Broadcast { msg: msg.to_vec(), reply })?;
        rx.recv().map_err(|_| SendError::NoMaster)
    }

    /// Hands a duplicate of `fd` to the current worker of `slot` with
    /// `tag` (at most 4096 bytes), as [`Ctl::send_fd`] does; returns once
    /// it is on its way, or says why not (see [`Handle`]). The caller keeps
    /// `fd`. [`SendError::Full`] also when this process has no descriptor
    /// left for the duplicate.
    pub fn send_fd(&self, slot: usize, fd: BorrowedFd<'_>, tag: &[u8]) -> Result<(), SendError> {
        let fd = fd.try_clone_to_owned().map_err(|_| SendError::Full)?;
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.order(Order::SendFd { slot, fd, tag: tag.to_vec(), reply })?;
        rx.recv().unwrap_or(Err(SendError::NoMaster))
    }

    /// Queues `order` for a running loop that is not this thread's.
    fn order(&self, order: Order) -> Result<(), SendError> {
        if self.running.wake.load(Ordering::Acquire) < 0 {
            return Err(SendError::NoMaster);
        }
        if self.running.tid.load(Ordering::Acquire) == nix::unistd::gettid().as_raw() {
            return Err(SendError::OnLoop);
        }
        self.tx.send(order).map_err(|_| SendError::NoMaster)?;
        self.wake();
        Ok(())
    }

    /// Wakes the master loop, if it runs.
    fn wake(&self) {
        let fd = self.running.wake.load(Ordering::Acquire);
        if fd >= 0 {
            crate::sys::eventfd_wake(fd);
        }
    }
}

/// One worker as [`Ctl::workers`] lists it (Node's `cluster.workers`
/// entries: `worker.id`, `worker.process.pid`, its state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// Its slot and generation.
    pub id: WorkerId,
    /// Its process id.
    pub pid: i32,
    /// Starting, ready or draining.
    pub state: WorkerState,
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
///                 .filter_map(|w| Some((w.id.slot, ctl.counters(w.id.slot)?.requests)))
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
    /// `NoSuchSlot` past the last slot.
    pub fn send(&mut self, slot: usize, msg: &[u8]) -> Result<(), SendError> {
        send_to(self.slots, slot, msg)
    }

    /// Sends `msg` to every live worker; returns how many it reached (the
    /// others were full, draining or gone).
    pub fn broadcast(&mut self, msg: &[u8]) -> usize {
        broadcast_to(self.slots, msg)
    }

    /// Hands `fd` (a listening socket, a file, a pipe...) to the current
    /// worker of `slot`, with `tag` (at most 4096 bytes) to say what it is:
    /// Node's `worker.send(message, sendHandle)`. The worker receives its
    /// own descriptor in
    /// [`Handler::on_descriptor`](crate::Handler::on_descriptor), on its
    /// event loop; the caller keeps `fd`. It travels over the worker's
    /// lifeline (`SCM_RIGHTS`), not its ring, so it is not ordered with
    /// [`Ctl::send`]'s messages. `Full` when the lifeline's buffer is full,
    /// `TooLarge` for a longer tag, `Closed` when the slot has no live
    /// worker or it is draining, `NoSuchSlot` past the last slot. Workers
    /// never send descriptors to the master: one that tries is killed.
    pub fn send_fd(&mut self, slot: usize, fd: BorrowedFd<'_>, tag: &[u8]) -> Result<(), SendError> {
        send_fd_to(self.slots, slot, fd, tag)
    }

    /// The current worker of every slot that has one, by slot: its id,
    /// pid and state (workers that a reload replaced and that still drain
    /// are not listed).
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.slots
            .iter()
            .filter_map(|s| s.current.as_ref())
            .map(|p| WorkerInfo { id: p.id, pid: p.pid, state: WorkerState::of(p) })
            .collect()
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
        self.handle.command(cmd);
    }

    /// A thread-safe handle for other threads: commands, messages,
    /// descriptors.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }
}

/// [`Ctl::send`] over the process table.
pub(super) fn send_to(slots: &mut [Slot], slot: usize, msg: &[u8]) -> Result<(), SendError> {
    let Some(s) = slots.get_mut(slot) else { return Err(SendError::NoSuchSlot) };
    let Some(p) = s.current.as_ref().filter(|p| !p.stopping && !p.evicted) else { return Err(SendError::Closed) };
    let idx = p.channel;
    s.channels[idx].ch.master().send(msg)
}

/// [`Ctl::broadcast`] over the process table.
pub(super) fn broadcast_to(slots: &mut [Slot], msg: &[u8]) -> usize {
    (0..slots.len()).filter(|&i| send_to(slots, i, msg).is_ok()).count()
}

/// [`Ctl::send_fd`] over the process table.
pub(super) fn send_fd_to(slots: &mut [Slot], slot: usize, fd: BorrowedFd<'_>, tag: &[u8]) -> Result<(), SendError> {
    let Some(s) = slots.get(slot) else { return Err(SendError::NoSuchSlot) };
    let Some(p) = s.current.as_ref().filter(|p| !p.stopping && !p.evicted) else { return Err(SendError::Closed) };
    let Some(lifeline) = &p.lifeline else { return Err(SendError::Closed) };
    lifeline::send_fd(lifeline.as_fd(), fd, tag).map_err(|e| match e {
        FdSendError::Full => SendError::Full,
        FdSendError::TooLarge => SendError::TooLarge,
        FdSendError::Closed => SendError::Closed,
    })
}
