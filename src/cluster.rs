//! The master process: a fixed table of worker slots, fork and respawn with
//! backoff, rolling reload, scaling, graceful shutdown, and the lifecycle
//! events of Node's `cluster` module.
//!
//! The master is single-threaded, so `fork()` is always safe: signals arrive
//! through a signalfd, child exits through pidfds, worker messages through
//! one `SOCK_SEQPACKET` channel per worker, and commands from other threads
//! ([`Handle`]) through a channel plus an eventfd; one epoll loop reads them
//! all. Nothing happens in a signal handler.
//!
//! If the embedding program starts threads in the master (say, to consume
//! [`Event`]s), a plain `fork()` copies only the forking thread, and a lock
//! another thread held at that moment (stdout, an allocator arena, a user
//! mutex) stays locked forever in the child. Use
//! [`crate::Server::reexec`] in that case: the worker then starts as a fresh
//! execution of the program's binary.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::http::Handler;
use crate::ipc::{Channel, ChannelOptions, SendError, Snapshot, WorkerEnd};
use crate::server::Config;
use crate::sys::context;

/// How connections are spread over workers.
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
    /// A worker ready for this long resets its slot's crash streak.
    pub stable_after: Duration,
    /// Workers of one slot dying in a row before they become ready stop the
    /// cluster.
    pub max_startup_failures: u32,
    /// Crashes within `crash_window`, over all slots, that stop the cluster.
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
            stable_after: Duration::from_secs(10),
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

/// A worker: its slot (stable across respawns) and generation (one more at
/// every fork into the slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WorkerId {
    /// Slot index, `0..workers`.
    pub slot: usize,
    /// Forks into this slot before this one.
    pub generation: u64,
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.slot, self.generation)
    }
}

/// How a worker process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
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
        addr: SocketAddr,
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
/// an event callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

/// A thread-safe way to send [`Command`]s to the master loop.
#[derive(Clone, Debug)]
pub struct Handle {
    tx: Sender<Command>,
    /// The master's wake-up eventfd; -1 until the master runs (commands
    /// sent before are read when it starts).
    wake: Arc<AtomicI32>,
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
pub struct Ctl<'a> {
    slots: &'a mut Vec<Slot>,
    handle: Handle,
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
        let idx = p.chan_idx;
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

    /// Queues a command (kill, disconnect, reload...).
    pub fn command(&self, cmd: Command) {
        self.handle.send(cmd);
    }

    /// A thread-safe handle for commands.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }
}

/// Per-worker environment: `(name, value)` pairs for a slot.
pub type WorkerEnv = Box<dyn Fn(usize) -> Vec<(String, String)>>;

/// What the master needs besides [`Config`].
pub(crate) struct Hooks {
    pub(crate) callbacks: Vec<EventCallback>,
    pub(crate) timers: Vec<(Duration, TimerCallback)>,
    pub(crate) senders: Vec<Sender<Event>>,
    pub(crate) worker_env: Option<WorkerEnv>,
    pub(crate) cmd_tx: Sender<Command>,
    pub(crate) cmd_rx: Receiver<Command>,
    pub(crate) wake: Arc<AtomicI32>,
}

impl Hooks {
    pub(crate) fn new() -> Hooks {
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        Hooks {
            callbacks: Vec::new(),
            timers: Vec::new(),
            senders: Vec::new(),
            worker_env: None,
            cmd_tx,
            cmd_rx,
            wake: Arc::new(AtomicI32::new(-1)),
        }
    }

    pub(crate) fn handle(&self) -> Handle {
        Handle { tx: self.cmd_tx.clone(), wake: self.wake.clone() }
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("callbacks", &self.callbacks.len())
            .field("senders", &self.senders.len())
            .finish_non_exhaustive()
    }
}

/// Messages on the master channel, worker to master: one byte each.
const MSG_ONLINE: u8 = 1;
const MSG_LISTENING: u8 = 2;
const MSG_READY: u8 = 3;

/// Environment variable that marks a re-executed worker:
/// `slot:generation:listener_fd:channel_fd`.
pub(crate) const WORKER_ENV: &str = "FORKRING_WORKER";

/// The worker this process is, if it is one.
static mut SELF_ID: Option<WorkerId> = None;

/// The worker this process is, or `None` in the master (or outside a
/// cluster).
pub fn worker_id() -> Option<WorkerId> {
    // SAFETY: written once in the worker right after fork, before any other
    // thread of the worker exists; read-only afterwards.
    unsafe { *std::ptr::addr_of!(SELF_ID) }
}

/// Where a worker process is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProcState {
    Forked,
    Online,
    Listening,
    Ready,
}

/// One worker process.
#[derive(Debug)]
struct Proc {
    id: WorkerId,
    pid: i32,
    pidfd: OwnedFd,
    chan: Option<OwnedFd>,
    state: ProcState,
    forked_at: Instant,
    ready_at: Option<Instant>,
    /// The master asked it to stop; its exit is no crash.
    stopping: bool,
    /// Which of its slot's channels it uses.
    chan_idx: usize,
}

/// One slot of the process table.
#[derive(Debug)]
struct Slot {
    /// This slot's own socket (reuseport mode); `None` uses the shared one.
    listener: Option<OwnedFd>,
    /// The worker serving the slot.
    current: Option<Proc>,
    /// Older workers draining after a reload or disconnect.
    retiring: Vec<Proc>,
    next_generation: u64,
    /// Crashes in a row.
    streak: u32,
    /// Crashes in a row before becoming ready.
    startup_failures: u32,
    respawn_at: Option<Instant>,
    /// Disconnected on request: no respawn.
    parked: bool,
    /// Being removed (scale down): its socket closes once its worker exits.
    removing: bool,
    /// Shared-memory channels of the slot's workers: one per live worker
    /// (old and new overlap during a reload), reused after a reap.
    channels: Vec<SlotChannel>,
}

/// A channel and the generation of the worker using it.
#[derive(Debug)]
struct SlotChannel {
    ch: Channel,
    user: Option<u64>,
}

/// Phase of the whole cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// Graceful shutdown until the deadline, then SIGKILL.
    Stopping(Instant),
    Quitting,
}

/// What the master loop ended with.
#[derive(Debug)]
pub(crate) enum Outcome {
    Clean,
    Forced,
}

struct Master<'a, F> {
    config: &'a Config,
    hooks: &'a mut Hooks,
    factory: &'a F,
    slots: Vec<Slot>,
    shared_listener: Option<OwnedFd>,
    addr: SocketAddr,
    epoll: OwnedFd,
    sigfd: OwnedFd,
    /// Wakes the loop when a [`Handle`] queued a command.
    wake: OwnedFd,
    phase: Phase,
    reload: VecDeque<usize>,
    /// Slot whose replacement is starting, with when it was forked.
    reloading: Option<usize>,
    crashes: VecDeque<Instant>,
    ready_notified: bool,
    fatal: Option<io::Error>,
    /// When each of `hooks.timers` runs next.
    timer_due: Vec<Instant>,
}

/// Time past the drain timeout after which the master kills a worker.
const KILL_GRACE: Duration = Duration::from_secs(2);

const TOKEN_SIGNAL: u64 = u64::MAX;
const TOKEN_WAKE: u64 = u64::MAX - 1;
/// Token kinds for pidfds and channels: `kind << 62 | slot << 40 | generation`.
const KIND_PIDFD: u64 = 1;
const KIND_CHAN: u64 = 2;
const KIND_RING: u64 = 3;

fn token(kind: u64, id: WorkerId) -> u64 {
    kind << 62 | (id.slot as u64) << 40 | (id.generation & ((1 << 40) - 1))
}

fn untoken(t: u64) -> (u64, usize, u64) {
    (t >> 62, ((t >> 40) & ((1 << 22) - 1)) as usize, t & ((1 << 40) - 1))
}

/// Runs the master until shutdown. `factory` makes each worker's handler.
pub(crate) fn run<H, F>(config: &Config, hooks: &mut Hooks, factory: &F) -> io::Result<Outcome>
where
    H: Handler,
    F: Fn() -> H,
{
    // First, before this process opens any descriptor that could take
    // the numbers systemd passed.
    let inherited = crate::listen::inherited()?;
    // Signals are read from a signalfd, so they must be blocked.
    let mask = signal_mask();
    // SAFETY: `mask` is an initialised sigset_t; a null old-mask is allowed.
    let rc = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut()) };
    if rc == -1 {
        return Err(context(io::Error::last_os_error(), "sigprocmask"));
    }
    let sigfd =
        syscall!(signalfd(-1, &mask, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)).map_err(|e| context(e, "signalfd"))?;
    // SAFETY: `signalfd` just returned this descriptor.
    let sigfd = unsafe { OwnedFd::from_raw_fd(sigfd) };
    let epfd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC)).map_err(|e| context(e, "epoll_create1"))?;
    // SAFETY: `epoll_create1` just returned this descriptor.
    let epoll = unsafe { OwnedFd::from_raw_fd(epfd) };

    let (shared_listener, per_slot, addr) = match inherited {
        Some(fds) if fds.len() == config.workers && fds.len() > 1 => {
            let addr = crate::listen::local_addr(&fds[0])?;
            log::info!("using {} inherited sockets, one per worker", fds.len());
            (None, Some(fds), addr)
        }
        Some(mut fds) => {
            if fds.len() > 1 {
                log::warn!("{} inherited sockets for {} workers: serving the first", fds.len(), config.workers);
            }
            let fd = fds.swap_remove(0);
            let addr = crate::listen::local_addr(&fd)?;
            log::info!("using inherited socket {addr}");
            (Some(fd), None, addr)
        }
        None => {
            let sa = crate::listen::resolve(&config.listen)?;
            match config.balance {
                Balance::Shared => {
                    let fd = crate::listen::bind_addr(sa, false, config.backlog)?;
                    let addr = crate::listen::local_addr(&fd)?;
                    (Some(fd), None, addr)
                }
                Balance::ReusePort => {
                    // A plain bind first: SO_REUSEPORT alone would let this
                    // cluster join another program's group on a port in
                    // use (same user) instead of failing. It also picks the
                    // port once for port 0.
                    let addr = crate::listen::probe_addr(sa)?;
                    let mut fds = Vec::with_capacity(config.workers);
                    for _ in 0..config.workers {
                        fds.push(crate::listen::bind_addr(addr, true, config.backlog)?);
                    }
                    (None, Some(fds), addr)
                }
            }
        }
    };
    log::info!("listening on {addr}");

    let mut master = Master {
        config,
        hooks,
        factory,
        slots: Vec::new(),
        shared_listener,
        addr,
        epoll,
        sigfd,
        wake: crate::sys::eventfd()?,
        phase: Phase::Running,
        reload: VecDeque::new(),
        reloading: None,
        crashes: VecDeque::new(),
        ready_notified: false,
        fatal: None,
        timer_due: Vec::new(),
    };
    let now = Instant::now();
    master.timer_due = master.hooks.timers.iter().map(|(period, _)| now + *period).collect();
    master.watch(master.sigfd.as_raw_fd(), TOKEN_SIGNAL)?;
    master.watch(master.wake.as_raw_fd(), TOKEN_WAKE)?;
    master.hooks.wake.store(master.wake.as_raw_fd(), Ordering::Release);
    let slot_fds: Vec<Option<OwnedFd>> = match per_slot {
        Some(fds) => fds.into_iter().map(Some).collect(),
        None => (0..config.workers).map(|_| None).collect(),
    };
    for listener in slot_fds {
        master.slots.push(Slot::new(listener));
    }
    for i in 0..master.slots.len() {
        master.spawn(i)?;
    }
    let outcome = master.run_loop();
    master.hooks.wake.store(-1, Ordering::Release);
    // SAFETY: unblocks the signals blocked above; a null old-mask is allowed.
    unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &mask, std::ptr::null_mut()) };
    outcome
}

fn signal_mask() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset uses it.
    unsafe {
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut mask);
        for s in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTTIN, libc::SIGTTOU]
        {
            libc::sigaddset(&mut mask, s);
        }
        mask
    }
}

impl Slot {
    fn new(listener: Option<OwnedFd>) -> Slot {
        Slot {
            listener,
            current: None,
            retiring: Vec::new(),
            next_generation: 0,
            streak: 0,
            startup_failures: 0,
            respawn_at: None,
            parked: false,
            removing: false,
            channels: Vec::new(),
        }
    }

    /// Totals over every channel the slot has used.
    fn counters(&self) -> Snapshot {
        self.channels.iter().map(|c| c.ch.counters().snapshot()).sum()
    }

    /// A free channel for a new worker of generation `generation`, reset
    /// (its previous worker was reaped), or a new one.
    fn take_channel(&mut self, generation: u64, opts: ChannelOptions) -> io::Result<usize> {
        if let Some(i) = self.channels.iter().position(|c| c.user.is_none()) {
            self.channels[i].ch.reset()?;
            self.channels[i].user = Some(generation);
            return Ok(i);
        }
        self.channels.push(SlotChannel { ch: Channel::new(opts)?, user: Some(generation) });
        Ok(self.channels.len() - 1)
    }

    fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.current.iter().chain(self.retiring.iter())
    }
}

impl<H, F> Master<'_, F>
where
    H: Handler,
    F: Fn() -> H,
{
    fn watch(&self, fd: RawFd, tok: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: tok };
        syscall!(epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev))
            .map(|_| ())
            .map_err(|e| context(e, "epoll_ctl"))
    }

    fn unwatch(&self, fd: RawFd) {
        let _ = syscall!(epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()));
    }

    fn emit(&mut self, ev: Event) {
        log::debug!("event {ev}");
        let mut callbacks = std::mem::take(&mut self.hooks.callbacks);
        let mut ctl = Ctl { slots: &mut self.slots, handle: self.hooks.handle() };
        for cb in callbacks.iter_mut() {
            cb(&ev, &mut ctl);
        }
        self.hooks.callbacks = callbacks;
        self.hooks.senders.retain(|tx| tx.send(ev.clone()).is_ok());
    }

    /// Runs the periodic callbacks that are due.
    fn run_timers(&mut self, now: Instant) {
        let mut timers = std::mem::take(&mut self.hooks.timers);
        for (i, (period, cb)) in timers.iter_mut().enumerate() {
            if self.timer_due[i] <= now {
                self.timer_due[i] = now + *period;
                let mut ctl = Ctl { slots: &mut self.slots, handle: self.hooks.handle() };
                cb(&mut ctl);
            }
        }
        self.hooks.timers = timers;
    }

    /// Hands the messages a worker sent to the event callbacks and channel.
    fn read_ring(&mut self, slot: usize, generation: u64) {
        let Some(p) = self.find_mut(slot, generation) else { return };
        let (id, idx) = (p.id, p.chan_idx);
        let end = self.slots[slot].channels[idx].ch.master();
        end.after_wake();
        let mut msgs = Vec::new();
        // One ring's worth at most per turn, so a flooding worker cannot
        // hold up the supervisor.
        if let Err(e) = end.recv_batch(|m| msgs.push(m.to_vec())) {
            log::error!("worker {id}: ring from the worker is unreadable ({e:?}); ignoring it until respawn");
        }
        for data in msgs {
            self.emit(Event::Message { worker: id, data });
        }
    }

    /// Tells every worker's ring that the master is about to sleep; false
    /// when a message is already waiting (then the master must not block).
    fn rings_may_sleep(&mut self) -> bool {
        let mut may = true;
        for s in &mut self.slots {
            let procs: Vec<usize> = s.procs().map(|p| p.chan_idx).collect();
            for idx in procs {
                if !s.channels[idx].ch.master().prepare_sleep() {
                    may = false;
                }
            }
        }
        may
    }

    fn listener_of(&self, slot: usize) -> RawFd {
        match &self.slots[slot].listener {
            Some(fd) => fd.as_raw_fd(),
            None => self.shared_listener.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
        }
    }

    /// Forks a worker into `slot` as its current worker.
    fn spawn(&mut self, slot: usize) -> io::Result<()> {
        let generation = self.slots[slot].next_generation;
        self.slots[slot].next_generation += 1;
        self.slots[slot].respawn_at = None;
        let id = WorkerId { slot, generation };
        let (master_end, worker_end) = socketpair()?;
        let listener = self.listener_of(slot);
        let chan_idx = self.slots[slot].take_channel(generation, self.config.ipc)?;
        // Every descriptor the child must not keep.
        let mut close_in_child: Vec<RawFd> =
            vec![self.epoll.as_raw_fd(), self.sigfd.as_raw_fd(), self.wake.as_raw_fd(), master_end.as_raw_fd()];
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(fd) = &s.listener {
                if i != slot {
                    close_in_child.push(fd.as_raw_fd());
                }
            }
            for p in s.procs() {
                close_in_child.push(p.pidfd.as_raw_fd());
                if let Some(c) = &p.chan {
                    close_in_child.push(c.as_raw_fd());
                }
            }
            for (j, c) in s.channels.iter().enumerate() {
                if (i, j) != (slot, chan_idx) {
                    if let Some(fds) = c.ch.fds() {
                        close_in_child.extend([fds.shm, fds.worker_wake, fds.master_wake].map(|fd| fd.as_raw_fd()));
                    }
                }
            }
        }
        let env: Vec<(String, String)> = self.hooks.worker_env.as_ref().map(|f| f(slot)).unwrap_or_default();
        let parent = std::process::id() as i32;
        // SAFETY: the master is single-threaded (documented requirement), so
        // the child may run arbitrary code after fork.
        let pid = unsafe { libc::fork() };
        if pid == -1 {
            return Err(context(io::Error::last_os_error(), "fork"));
        }
        if pid == 0 {
            for fd in close_in_child {
                crate::sys::close(fd);
            }
            let ch = &self.slots[slot].channels[chan_idx].ch;
            let ring = match (self.config.reexec, ch.fds()) {
                // A re-executed worker attaches from the descriptors.
                (true, Some(fds)) => {
                    WorkerRing::Fds([fds.shm, fds.worker_wake, fds.master_wake].map(|fd| fd.as_raw_fd()))
                }
                _ => match ch.worker() {
                    Ok(end) => WorkerRing::End(Box::new(end)),
                    // SAFETY: _exit ends the child at once (see below).
                    Err(_) => unsafe { libc::_exit(1) },
                },
            };
            let code = worker_main(self.config, self.factory, id, parent, listener, worker_end, ring, env);
            // SAFETY: _exit ends the child without running the parent's
            // atexit handlers or flushing its copied stdio buffers.
            unsafe { libc::_exit(code) };
        }
        drop(worker_end);
        let pidfd = pidfd_open(pid)?;
        self.watch(pidfd.as_raw_fd(), token(KIND_PIDFD, id))?;
        self.watch(master_end.as_raw_fd(), token(KIND_CHAN, id))?;
        if let Some(fds) = self.slots[slot].channels[chan_idx].ch.fds() {
            self.watch(fds.master_wake.as_raw_fd(), token(KIND_RING, id))?;
        }
        let proc = Proc {
            id,
            pid,
            pidfd,
            chan: Some(master_end),
            state: ProcState::Forked,
            forked_at: Instant::now(),
            ready_at: None,
            stopping: false,
            chan_idx,
        };
        let s = &mut self.slots[slot];
        if let Some(old) = s.current.take() {
            s.retiring.push(old);
        }
        s.current = Some(proc);
        self.emit(Event::Fork { worker: id, pid });
        Ok(())
    }

    fn run_loop(&mut self) -> io::Result<Outcome> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            let timeout = if self.rings_may_sleep() { self.next_timeout() } else { 0 };
            let n =
                match syscall!(epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, timeout)) {
                    Ok(n) => n as usize,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                    Err(e) => return Err(context(e, "epoll_wait")),
                };
            for ev in &events[..n] {
                let tok = ev.u64;
                match tok {
                    TOKEN_SIGNAL => self.read_signals()?,
                    TOKEN_WAKE => {
                        let _ = crate::sys::eventfd_drain(self.wake.as_raw_fd());
                    }
                    _ => {
                        let (kind, slot, generation) = untoken(tok);
                        match kind {
                            KIND_PIDFD => self.reap(slot, generation),
                            KIND_CHAN => self.read_channel(slot, generation),
                            KIND_RING => {
                                if let Some(idx) = self.find_mut(slot, generation).map(|p| p.chan_idx) {
                                    let fd = self.slots[slot].channels[idx].ch.master().fd().as_raw_fd();
                                    let _ = crate::sys::eventfd_drain(fd);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            // Messages are read from every ring each turn, not only from the
            // one whose eventfd fired: a worker writes the eventfd only when
            // the master said it would sleep.
            let ids: Vec<(usize, u64)> =
                self.slots.iter().enumerate().flat_map(|(i, s)| s.procs().map(move |p| (i, p.id.generation))).collect();
            for (slot, generation) in ids {
                self.read_ring(slot, generation);
            }
            self.run_timers(Instant::now());
            while let Ok(cmd) = self.hooks.cmd_rx.try_recv() {
                self.command(cmd);
            }
            self.timers();
            if let Some(e) = self.fatal.take() {
                self.kill_all(libc::SIGKILL);
                self.wait_all();
                return Err(e);
            }
            match self.phase {
                Phase::Running => {}
                Phase::Stopping(deadline) => {
                    if self.live_procs() == 0 {
                        notify("STATUS=stopped");
                        return Ok(Outcome::Clean);
                    }
                    if Instant::now() >= deadline {
                        log::warn!("drain timeout: killing {} worker(s)", self.live_procs());
                        self.kill_all(libc::SIGKILL);
                        self.wait_all();
                        return Ok(Outcome::Forced);
                    }
                }
                Phase::Quitting => {
                    self.wait_all();
                    return Ok(Outcome::Forced);
                }
            }
        }
    }

    fn live_procs(&self) -> usize {
        self.slots.iter().map(|s| s.procs().count()).sum()
    }

    /// Milliseconds until the next timer, or -1.
    fn next_timeout(&self) -> i32 {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        if let Phase::Stopping(d) = self.phase {
            consider(d);
        }
        for &t in &self.timer_due {
            consider(t);
        }
        for s in &self.slots {
            if let Some(t) = s.respawn_at {
                consider(t);
            }
            for p in s.procs() {
                if p.state != ProcState::Ready {
                    consider(p.forked_at + self.config.respawn.ready_timeout);
                } else if let Some(r) = p.ready_at {
                    if s.streak > 0 {
                        consider(r + self.config.respawn.stable_after);
                    }
                }
            }
        }
        match next {
            None => -1,
            Some(t) => t.saturating_duration_since(now).as_millis().min(60_000) as i32 + 1,
        }
    }

    fn read_signals(&mut self) -> io::Result<()> {
        loop {
            // SAFETY: signalfd_siginfo is plain data; all-zero is valid.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reads at most `size` bytes into `info`.
            let n =
                unsafe { libc::read(self.sigfd.as_raw_fd(), (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
            if n != size as isize {
                return Ok(());
            }
            let cmd = match info.ssi_signo as i32 {
                libc::SIGTERM | libc::SIGINT => Command::Shutdown,
                libc::SIGQUIT => Command::Quit,
                libc::SIGHUP => Command::Reload,
                libc::SIGTTIN => Command::ScaleUp,
                libc::SIGTTOU => Command::ScaleDown,
                _ => continue, // SIGCHLD: exits arrive through pidfds.
            };
            self.command(cmd);
        }
    }

    fn command(&mut self, cmd: Command) {
        log::debug!("command {cmd:?}");
        match cmd {
            Command::Shutdown => {
                if self.phase == Phase::Running {
                    log::info!("graceful shutdown");
                    notify("STOPPING=1");
                    // Workers give up on their connections at the drain
                    // timeout themselves; the master kills only what is
                    // stuck past that.
                    self.phase = Phase::Stopping(Instant::now() + self.config.timeouts.drain + KILL_GRACE);
                    self.reload.clear();
                    for i in 0..self.slots.len() {
                        self.slots[i].respawn_at = None;
                        self.drain_all_of(i);
                    }
                }
            }
            Command::Quit => {
                log::info!("immediate stop");
                notify("STOPPING=1");
                self.phase = Phase::Quitting;
                self.kill_all(libc::SIGKILL);
            }
            Command::Reload => {
                if self.phase == Phase::Running && self.reload.is_empty() && self.reloading.is_none() {
                    log::info!("rolling reload of {} slot(s)", self.slots.len());
                    notify("RELOADING=1");
                    self.reload.extend(0..self.slots.len());
                    self.next_reload();
                }
            }
            Command::ScaleUp => {
                if self.phase == Phase::Running {
                    if let Err(e) = self.add_slot() {
                        log::error!("scale up: {e}");
                    }
                }
            }
            Command::ScaleDown => {
                if self.phase == Phase::Running {
                    self.remove_slot();
                }
            }
            Command::Kill { slot, signal } => {
                if let Some(p) = self.slots.get(slot).and_then(|s| s.current.as_ref()) {
                    // SAFETY: plain kill(2) to a child this master forked and
                    // has not reaped (its pidfd is still open), so the pid
                    // cannot have been reused.
                    unsafe { libc::kill(p.pid, signal) };
                }
            }
            Command::Disconnect { slot } => {
                if slot < self.slots.len() {
                    self.slots[slot].parked = true;
                    self.slots[slot].respawn_at = None;
                    if let Some(p) = self.slots[slot].current.take() {
                        self.slots[slot].retiring.push(p);
                    }
                    self.drain_all_of(slot);
                }
            }
        }
    }

    /// Asks every worker of `slot` to drain.
    fn drain_all_of(&mut self, slot: usize) {
        let mut disconnected = Vec::new();
        let s = &mut self.slots[slot];
        for p in s.current.iter_mut().chain(s.retiring.iter_mut()) {
            if !p.stopping {
                p.stopping = true;
                // Messages to a draining worker are refused (`Closed`).
                s.channels[p.chan_idx].ch.close();
                // SAFETY: kill(2) to an unreaped child (see Command::Kill).
                unsafe { libc::kill(p.pid, libc::SIGTERM) };
                disconnected.push((p.id, p.pid));
            }
        }
        for (worker, pid) in disconnected {
            self.emit(Event::Disconnect { worker, pid });
        }
    }

    fn kill_all(&mut self, sig: i32) {
        for s in &mut self.slots {
            for p in s.current.iter_mut().chain(s.retiring.iter_mut()) {
                p.stopping = true;
                // SAFETY: kill(2) to an unreaped child (see Command::Kill).
                unsafe { libc::kill(p.pid, sig) };
            }
            s.respawn_at = None;
        }
    }

    /// Reaps every remaining worker (after SIGKILL), emitting their exits.
    fn wait_all(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.live_procs() > 0 && Instant::now() < deadline {
            let ids: Vec<(usize, u64)> =
                self.slots.iter().enumerate().flat_map(|(i, s)| s.procs().map(move |p| (i, p.id.generation))).collect();
            for (slot, generation) in ids {
                self.reap(slot, generation);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn read_channel(&mut self, slot: usize, generation: u64) {
        loop {
            let Some(p) = self.find_mut(slot, generation) else { return };
            let Some(chan) = &p.chan else { return };
            let mut buf = [0u8; 16];
            // SAFETY: reads at most 16 bytes into a local buffer.
            let n = unsafe { libc::recv(chan.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n <= 0 {
                if n == 0 {
                    // Hang-up: the worker is exiting; its pidfd reports it.
                    let fd = chan.as_raw_fd();
                    self.unwatch(fd);
                    if let Some(p) = self.find_mut(slot, generation) {
                        p.chan = None;
                    }
                }
                return;
            }
            let (id, pid) = (p.id, p.pid);
            match buf[0] {
                MSG_ONLINE => {
                    p.state = ProcState::Online;
                    self.emit(Event::Online { worker: id, pid });
                }
                MSG_LISTENING => {
                    p.state = ProcState::Listening;
                    let addr = self.addr;
                    self.emit(Event::Listening { worker: id, pid, addr });
                }
                MSG_READY => {
                    p.state = ProcState::Ready;
                    p.ready_at = Some(Instant::now());
                    self.slots[slot].startup_failures = 0;
                    self.emit(Event::Ready { worker: id, pid });
                    self.on_ready(slot, generation);
                }
                other => log::warn!("worker {id}: unknown message {other}"),
            }
        }
    }

    fn find_mut(&mut self, slot: usize, generation: u64) -> Option<&mut Proc> {
        let s = self.slots.get_mut(slot)?;
        s.current.iter_mut().chain(s.retiring.iter_mut()).find(|p| p.id.generation == generation)
    }

    fn on_ready(&mut self, slot: usize, generation: u64) {
        if self.reloading == Some(slot)
            && self.slots[slot].current.as_ref().map(|p| p.id.generation) == Some(generation)
        {
            // The replacement serves: drain its predecessors.
            self.reloading = None;
            let old: Vec<(WorkerId, i32)> = self.slots[slot]
                .retiring
                .iter_mut()
                .filter(|p| !p.stopping)
                .map(|p| {
                    p.stopping = true;
                    // SAFETY: kill(2) to an unreaped child (see Command::Kill).
                    unsafe { libc::kill(p.pid, libc::SIGTERM) };
                    (p.id, p.pid)
                })
                .collect();
            for (worker, pid) in old {
                self.emit(Event::Disconnect { worker, pid });
            }
            self.next_reload();
        }
        if !self.ready_notified
            && self.slots.iter().all(|s| s.parked || s.current.as_ref().is_some_and(|p| p.state == ProcState::Ready))
        {
            self.ready_notified = true;
            notify("READY=1");
        } else if self.ready_notified && self.reload.is_empty() && self.reloading.is_none() {
            notify("READY=1");
        }
    }

    fn next_reload(&mut self) {
        while let Some(slot) = self.reload.pop_front() {
            if slot >= self.slots.len() || self.slots[slot].removing || self.slots[slot].parked {
                continue;
            }
            self.slots[slot].parked = false;
            match self.spawn(slot) {
                Ok(()) => {
                    self.reloading = Some(slot);
                    return;
                }
                Err(e) => log::error!("reload of slot {slot}: {e}"),
            }
        }
    }

    fn reap(&mut self, slot: usize, generation: u64) {
        let Some(p) = self.find_mut(slot, generation) else { return };
        let pid = p.pid;
        let mut status = 0;
        // SAFETY: waitpid on our own unreaped child, WNOHANG.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r != pid {
            return;
        }
        let s = &mut self.slots[slot];
        let was_current = s.current.as_ref().is_some_and(|p| p.id.generation == generation);
        let proc = if was_current {
            s.current.take()
        } else {
            let i = s.retiring.iter().position(|p| p.id.generation == generation);
            i.map(|i| s.retiring.remove(i))
        };
        let Some(proc) = proc else { return };
        // Its connections died with it; the channel is free for a later
        // worker, which resets it first.
        let c = &mut self.slots[slot].channels[proc.chan_idx];
        c.ch.close();
        c.ch.counters().reset_gauges();
        c.user = None;
        if let Some(fds) = c.ch.fds() {
            let fd = fds.master_wake.as_raw_fd();
            self.unwatch(fd);
        }
        self.unwatch(proc.pidfd.as_raw_fd());
        if let Some(c) = &proc.chan {
            self.unwatch(c.as_raw_fd());
        }
        let exit = if libc::WIFEXITED(status) {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        } else {
            ExitStatus::Signal(libc::WTERMSIG(status))
        };
        if !proc.stopping {
            log::warn!("worker {} (pid {pid}) died: {exit:?}", proc.id);
        }
        self.emit(Event::Exit { worker: proc.id, pid, status: exit, requested: proc.stopping });
        if self.reloading == Some(slot) && !proc.stopping && was_current {
            // The replacement died before it was ready: keep the old worker.
            log::error!("reload: the new worker of slot {slot} died before it was ready; keeping the old one");
            self.reloading = None;
            let s = &mut self.slots[slot];
            if let Some(i) = s.retiring.iter().position(|p| !p.stopping) {
                s.current = Some(s.retiring.remove(i));
            }
            self.next_reload();
        }
        if self.slots[slot].removing {
            self.pop_removed();
            return;
        }
        if was_current && !proc.stopping && self.phase == Phase::Running {
            self.crashed(slot, &proc);
        }
    }

    fn crashed(&mut self, slot: usize, proc: &Proc) {
        let now = Instant::now();
        let policy = self.config.respawn;
        self.crashes.push_back(now);
        while self.crashes.front().is_some_and(|t| now.duration_since(*t) > policy.crash_window) {
            self.crashes.pop_front();
        }
        let s = &mut self.slots[slot];
        if proc.state != ProcState::Ready {
            s.startup_failures += 1;
        }
        s.streak += 1;
        if s.startup_failures >= policy.max_startup_failures {
            self.fatal = Some(io::Error::other(format!(
                "worker of slot {slot} died {} times in a row before it was ready; stopping",
                s.startup_failures
            )));
            return;
        }
        if self.crashes.len() as u32 >= policy.max_crashes {
            self.fatal = Some(io::Error::other(format!(
                "{} worker crashes within {:?}; stopping",
                self.crashes.len(),
                policy.crash_window
            )));
            return;
        }
        if !policy.enabled || s.parked {
            return;
        }
        let delay = policy.delay(s.streak);
        log::info!("respawning slot {slot} in {delay:?} (crash {} in a row)", s.streak);
        s.respawn_at = Some(now + delay);
    }

    fn timers(&mut self) {
        let now = Instant::now();
        for slot in 0..self.slots.len() {
            if self.slots[slot].respawn_at.is_some_and(|t| t <= now) && self.phase == Phase::Running {
                if let Err(e) = self.spawn(slot) {
                    log::error!("respawn of slot {slot}: {e}");
                    self.slots[slot].respawn_at = Some(now + self.config.respawn.initial);
                }
            }
            let policy = self.config.respawn;
            let s = &mut self.slots[slot];
            if let Some(p) = &s.current {
                if p.state == ProcState::Ready
                    && s.streak > 0
                    && p.ready_at.is_some_and(|r| now.duration_since(r) >= policy.stable_after)
                {
                    s.streak = 0;
                }
            }
            for p in s.current.iter_mut().chain(s.retiring.iter_mut()) {
                if p.state != ProcState::Ready && !p.stopping && now.duration_since(p.forked_at) >= policy.ready_timeout
                {
                    log::error!("worker {} not ready after {:?}; killing it", p.id, policy.ready_timeout);
                    // SAFETY: kill(2) to an unreaped child (see Command::Kill).
                    unsafe { libc::kill(p.pid, libc::SIGKILL) };
                }
            }
        }
    }

    fn add_slot(&mut self) -> io::Result<()> {
        let listener = if self.shared_listener.is_some() {
            None
        } else {
            Some(crate::listen::bind_addr(self.addr, true, self.config.backlog)?)
        };
        self.slots.push(Slot::new(listener));
        let slot = self.slots.len() - 1;
        log::info!("scale up: slot {slot}");
        self.spawn(slot)
    }

    fn remove_slot(&mut self) {
        let live = self.slots.iter().filter(|s| !s.removing).count();
        if live <= 1 {
            log::warn!("scale down: keeping the last worker");
            return;
        }
        let Some(slot) = self.slots.iter().rposition(|s| !s.removing) else { return };
        log::info!("scale down: slot {slot}");
        self.slots[slot].removing = true;
        self.slots[slot].respawn_at = None;
        // The master's copy of the socket goes now, so the socket leaves the
        // reuseport group when the draining worker, having accepted what is
        // queued, closes its copy.
        self.slots[slot].listener = None;
        if let Some(p) = self.slots[slot].current.take() {
            self.slots[slot].retiring.push(p);
        }
        self.drain_all_of(slot);
        self.pop_removed();
    }

    /// Drops removed slots from the end of the table once their workers
    /// are gone.
    fn pop_removed(&mut self) {
        while self.slots.last().is_some_and(|s| s.removing && s.procs().count() == 0) {
            self.slots.pop();
        }
    }
}

fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    syscall!(socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()))
        .map_err(|e| context(e, "socketpair"))?;
    // SAFETY: `socketpair` just returned both descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd == -1 {
        return Err(context(io::Error::last_os_error(), "pidfd_open"));
    }
    // SAFETY: the syscall just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends a state line to systemd when `NOTIFY_SOCKET` is set.
fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let path = path.to_string_lossy().into_owned();
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let r = if let Some(abstract_name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = r {
        log::debug!("sd_notify {state}: {e}");
    }
}

fn send_msg(chan: RawFd, msg: u8) {
    // SAFETY: sends one byte from a live local.
    unsafe { libc::send(chan, (&msg as *const u8).cast(), 1, libc::MSG_NOSIGNAL) };
}

/// The worker side, right after fork (or after re-exec). Returns the exit
/// code.
/// How a forked worker gets its ring: claimed in the child, or (re-exec)
/// as descriptors handed across exec.
enum WorkerRing {
    End(Box<WorkerEnd>),
    Fds([RawFd; 3]),
}

#[allow(clippy::too_many_arguments)]
fn worker_main<H, F>(
    config: &Config,
    factory: &F,
    id: WorkerId,
    parent: i32,
    listener: RawFd,
    chan: OwnedFd,
    ring: WorkerRing,
    env: Vec<(String, String)>,
) -> i32
where
    H: Handler,
    F: Fn() -> H,
{
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != parent {
        // The master died before the death signal was armed.
        return 0;
    }
    // SAFETY: SELF_ID is written here, before the worker has any thread.
    unsafe { *std::ptr::addr_of_mut!(SELF_ID) = Some(id) };
    std::env::set_var("FORKRING_WORKER_ID", id.slot.to_string());
    std::env::set_var("FORKRING_WORKER_GENERATION", id.generation.to_string());
    for (k, v) in &env {
        std::env::set_var(k, v);
    }
    let end = match ring {
        WorkerRing::Fds(fds) => return reexec(id, listener, chan, fds),
        WorkerRing::End(end) => end,
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serve_worker(config, factory, id, listener, chan, Some(*end))
    })) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            log::error!("worker {id}: {e}");
            1
        }
        Err(_) => 101,
    }
}

/// Runs the worker: privileges, pinning, messages, handler, event loop.
pub(crate) fn serve_worker<H, F>(
    config: &Config,
    factory: &F,
    id: WorkerId,
    listener: RawFd,
    chan: OwnedFd,
    ring: Option<WorkerEnd>,
) -> io::Result<()>
where
    H: Handler,
    F: Fn() -> H,
{
    send_msg(chan.as_raw_fd(), MSG_ONLINE);
    let mut ctl = crate::driver::Control::install()?;
    // The master blocked these for its signalfd, and they stay blocked
    // until the drain handler is in place: a SIGTERM that comes earlier
    // (the slot removed while its worker starts) is then a drain, which
    // serves what is queued on the listener, and not a death that resets it.
    let mask = signal_mask();
    // SAFETY: `mask` is initialised; a null old-mask is allowed.
    unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &mask, std::ptr::null_mut()) };
    if let Some(end) = ring {
        ctl.set_inbox(crate::worker::install(end));
    }
    ctl.watch_lifeline(chan.as_raw_fd())?;
    if config.pin {
        pin_to_cpu(id.slot)?;
    }
    if let Some(user) = &config.user {
        drop_privileges(user)?;
    }
    // SAFETY: this descriptor is the worker's own copy of the slot's
    // socket: inherited across fork (the copy of the master's owner in this
    // process is never dropped, the child leaves through `_exit`) or passed
    // across exec for this worker alone. The driver closes it when draining.
    let listener = unsafe { OwnedFd::from_raw_fd(listener) };
    send_msg(chan.as_raw_fd(), MSG_LISTENING);
    let mut handler = factory();
    send_msg(chan.as_raw_fd(), MSG_READY);
    crate::driver::run(config, listener, &mut handler, &ctl)?;
    drop(chan);
    Ok(())
}

fn reexec(id: WorkerId, listener: RawFd, chan: OwnedFd, ring: [RawFd; 3]) -> i32 {
    use std::os::unix::process::CommandExt;
    // These descriptors must survive exec.
    for fd in [listener, chan.as_raw_fd(), ring[0], ring[1], ring[2]] {
        if let Ok(flags) = syscall!(fcntl(fd, libc::F_GETFD)) {
            let _ = syscall!(fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC));
        }
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(
            WORKER_ENV,
            format!(
                "{}:{}:{}:{}:{}:{}:{}",
                id.slot,
                id.generation,
                listener,
                chan.as_raw_fd(),
                ring[0],
                ring[1],
                ring[2]
            ),
        )
        .exec();
    log::error!("worker {id}: exec: {err}");
    127
}

/// In a re-executed worker: the identity and descriptors the master passed.
pub(crate) fn reexec_worker() -> io::Result<Option<(WorkerId, RawFd, OwnedFd, WorkerEnd)>> {
    let Ok(v) = std::env::var(WORKER_ENV) else { return Ok(None) };
    std::env::remove_var(WORKER_ENV);
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("{WORKER_ENV}={v:?}: malformed"));
    let nums: Vec<i64> = v.split(':').map(|p| p.parse::<i64>()).collect::<Result<_, _>>().map_err(|_| bad())?;
    let &[slot, generation, listener, chan, shm, worker_wake, master_wake] = nums.as_slice() else {
        return Err(bad());
    };
    let fds = [listener, chan, shm, worker_wake, master_wake].map(|fd| fd as RawFd);
    for fd in fds {
        let flags =
            syscall!(fcntl(fd, libc::F_GETFD)).map_err(|e| context(e, format_args!("{WORKER_ENV}: fd {fd}")))?;
        syscall!(fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC))?;
    }
    // SAFETY: the master passed these descriptors across exec for this
    // worker alone (checked open just above); each is owned once.
    let [chan, shm, worker_wake, master_wake] =
        unsafe { [fds[1], fds[2], fds[3], fds[4]].map(|fd| OwnedFd::from_raw_fd(fd)) };
    let end = WorkerEnd::from_fds(shm, worker_wake, master_wake)?;
    let id = WorkerId { slot: slot as usize, generation: generation as u64 };
    // SAFETY: written before the worker starts any thread.
    unsafe { *std::ptr::addr_of_mut!(SELF_ID) = Some(id) };
    Ok(Some((id, fds[0], chan, end)))
}

fn pin_to_cpu(slot: usize) -> io::Result<()> {
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: cpu_set_t is plain data; CPU_SET indexes within its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(slot % ncpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == -1 {
            return Err(context(io::Error::last_os_error(), "sched_setaffinity"));
        }
    }
    Ok(())
}

/// Switches to `user`'s uid, gid and only that gid as group list.
fn drop_privileges(user: &str) -> io::Result<()> {
    let u = nix::unistd::User::from_name(user)
        .map_err(|e| io::Error::other(format!("look up user {user}: {e}")))?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no such user: {user}")))?;
    let gid = u.gid.as_raw();
    syscall!(setgroups(1, &gid)).map_err(|e| context(e, "setgroups"))?;
    syscall!(setgid(gid)).map_err(|e| context(e, "setgid"))?;
    syscall!(setuid(u.uid.as_raw())).map_err(|e| context(e, "setuid"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = Respawn::default();
        assert_eq!(p.delay(1), Duration::ZERO);
        assert_eq!(p.delay(2), Duration::from_millis(100));
        assert_eq!(p.delay(3), Duration::from_millis(150));
        assert_eq!(p.delay(4), Duration::from_millis(225));
        assert_eq!(p.delay(40), Duration::from_secs(15));
    }

    #[test]
    fn tokens_round_trip() {
        let id = WorkerId { slot: 77, generation: 123_456 };
        assert_eq!(untoken(token(KIND_CHAN, id)), (KIND_CHAN, 77, 123_456));
        assert_eq!(untoken(token(KIND_PIDFD, id)), (KIND_PIDFD, 77, 123_456));
    }
}
