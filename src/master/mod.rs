//! The master process: a fixed table of worker slots, fork and respawn with
//! backoff, rolling reload, scaling, graceful shutdown, and the lifecycle
//! events of Node's `cluster` module.
//!
//! The master is single-threaded, so `fork()` is always safe: signals arrive
//! through a signalfd, child exits through pidfds, worker progress through
//! one lifeline per worker (`crate::lifeline`), worker messages through
//! shared-memory rings, and commands, messages and descriptors from other
//! threads ([`Handle`]) through a channel plus an eventfd; one epoll loop
//! reads them all.
//! Nothing happens in a signal handler.
//!
//! If the embedding program starts threads in the master (say, to consume
//! [`Event`]s), a plain `fork()` copies only the forking thread, and a lock
//! another thread held at that moment (stdout, an allocator arena, a user
//! mutex) stays locked forever in the child. Use
//! [`crate::Server::reexec`] in that case: the worker then starts as a fresh
//! execution of the program's binary.
//!
//! The units, as nginx splits its process cycle: this file holds the state
//! and the loop; [`api`] the public types; [`slot`] the process table;
//! [`spawn`] the fork; [`signals`] the signalfd; [`respawn`] reaping and
//! crash accounting; [`reload`] commands, reload and scaling; [`events`]
//! lifecycle events, worker messages and user timers; [`supervise`] the
//! watchdog, recycling and systemd's watchdog; [`metrics`] and [`scrape`]
//! the metrics and their listener; [`sd_notify`] systemd; [`upgrade`] the
//! binary upgrade; [`subscribe`] the events' channel for other threads.
//! The master knows nothing of HTTP or of the event-loop backends: a worker
//! is started through the entry function it is given.

mod api;
mod events;
mod listeners;
mod metrics;
mod overload;
mod reload;
mod respawn;
mod scrape;
mod sd_notify;
mod signals;
mod slot;
mod spawn;
mod steering;
mod subscribe;
mod supervise;
mod upgrade;

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signalfd::SignalFd;

pub use api::{Command, Ctl, Event, EventCallback, ExitStatus, Handle, TimerCallback, WorkerInfo};
pub(crate) use events::Hooks;
pub use metrics::{Metrics, Restarts, SlotMetrics, WorkerState};
pub use signals::spawn_master_thread;
pub(crate) use spawn::Entry;
pub use subscribe::{Events, EventsIntoIter, EventsIter, EventsTryIter};

use crate::config::Config;
use crate::listen::UnixSocketFile;
use crate::sys::context;
use crate::worker::WorkerId;
use sd_notify::notify;
use slot::{Proc, ProcState, Slot};

/// Phase of the whole cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Serving; crashed workers are replaced.
    Running,
    /// Graceful shutdown until the deadline, then SIGKILL.
    Stopping(Instant),
    /// Immediate stop: every worker was sent SIGKILL.
    Quitting,
}

/// What the master loop ended with.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Every worker finished draining.
    Clean,
    /// Workers were killed before they finished.
    Forced,
}

/// The master's state.
struct Master<'a> {
    /// The configuration every worker is started with.
    config: &'a Config,
    /// Callbacks, event channels, the command queue and per-slot env.
    hooks: &'a mut Hooks,
    /// Runs a worker in a freshly forked child; returns its exit code.
    entry: &'a Entry<'a>,
    /// The process table, by slot index.
    slots: Vec<Slot>,
    /// The addresses the cluster serves, each with its shared socket or
    /// its steering; every worker serves every one.
    listeners: Vec<listeners::Listener>,
    /// The epoll instance of the master loop.
    epoll: Epoll,
    /// Signals, read as data (they are blocked).
    sigfd: SignalFd,
    /// Wakes the loop when a [`Handle`] queued a command (the eventfd is
    /// the hooks', which outlive the loop).
    wake: RawFd,
    /// Running, stopping or quitting.
    phase: Phase,
    /// While a graceful shutdown waits out `config.drain_delay`: when the
    /// workers are told to drain. `/ready` already says 503 (the phase is
    /// `Stopping`), the workers still accept.
    drain_at: Option<Instant>,
    /// Slots still to be replaced by the rolling reload under way.
    reload_queue: VecDeque<usize>,
    /// The slot whose replacement worker is starting during a reload.
    reloading: Option<usize>,
    /// When recent crashes happened (within the crash window).
    crashes: VecDeque<Instant>,
    /// Whether systemd has been told `READY=1`.
    ready_notified: bool,
    /// An error that stops the cluster, set where it is found and acted on
    /// by the loop.
    fatal: Option<io::Error>,
    /// When each of `hooks.timers` (the user's periodic callbacks) runs next.
    user_timer_due: Vec<Instant>,
    /// When the master started.
    started: Instant,
    /// Workers replaced so far, by cause.
    restarts: Restarts,
    /// The metrics listener, when configured.
    scrape: Option<scrape::Scrape>,
    /// Whether the workers shed so much that `/ready` says 503.
    overload: overload::Overload,
    /// When the supervision tick runs next.
    next_tick: Instant,
    /// When worker memory is read next.
    next_rss: Instant,
    /// systemd's watchdog interval (`WATCHDOG_USEC`), if it asks for pings.
    sd_watchdog: Option<Duration>,
    /// When the next `WATCHDOG=1` is due.
    sd_watchdog_next: Instant,
    /// The last `STATUS=` line sent.
    status_sent: String,
    /// systemd was told `RELOADING=1` and awaits `READY=1`.
    reload_notified: bool,
    /// The program's binary as started, which an upgrade starts again.
    exe: Option<std::path::PathBuf>,
    /// The binary upgrade under way (this master is the old one).
    upgrade: Option<upgrade::Pending>,
    /// The master this one replaces, until this one has told it that its
    /// workers serve (this master was started by an upgrade).
    parent: Option<upgrade::Parent>,
    /// This master handed the service over to a new one and is draining.
    handed_over: bool,
    /// The Unix socket files this master removes when it is done.
    unix_files: Vec<UnixSocketFile>,
}

/// Time past the drain timeout after which the master kills a worker.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// How often the loop looks again while an event channel is backed up.
const BACKED_UP_POLL_MS: i32 = 10;

/// What an epoll event of the master loop refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    /// The signalfd.
    Signal,
    /// The command eventfd.
    Wake,
    /// A worker's pidfd: it exited.
    Pidfd(WorkerId),
    /// A worker's lifeline.
    Lifeline(WorkerId),
    /// The eventfd of a worker's ring to the master.
    Ring(WorkerId),
    /// The metrics listener.
    Metrics,
    /// A connection to the metrics listener, by index.
    Scrape(usize),
    /// The channel from the new master of a binary upgrade.
    Upgrade,
    /// The pidfd of the new master of a binary upgrade.
    UpgradeExit,
}

impl Token {
    const SIGNAL: u64 = u64::MAX;
    const WAKE: u64 = u64::MAX - 1;
    const PIDFD: u64 = 1;
    const LIFELINE: u64 = 2;
    const RING: u64 = 3;
    /// Kind 0 (no worker): the metrics listener.
    const METRICS: u64 = 1;
    /// Kind 0: the upgrade's channel.
    const UPGRADE: u64 = 2;
    /// Kind 0: the upgrade's pidfd.
    const UPGRADE_EXIT: u64 = 3;
    /// Kind 0: scrape connection `i` is `SCRAPE + i`.
    const SCRAPE: u64 = 0x100;

    /// Packs the token into epoll's user data: `kind << 62 | slot << 40 |
    /// generation` (40 bits of generation, 22 of slot).
    fn encode(self) -> u64 {
        let pack = |kind: u64, id: WorkerId| kind << 62 | (id.slot as u64) << 40 | (id.generation & ((1 << 40) - 1));
        match self {
            Token::Signal => Self::SIGNAL,
            Token::Wake => Self::WAKE,
            Token::Pidfd(id) => pack(Self::PIDFD, id),
            Token::Lifeline(id) => pack(Self::LIFELINE, id),
            Token::Ring(id) => pack(Self::RING, id),
            Token::Metrics => Self::METRICS,
            Token::Upgrade => Self::UPGRADE,
            Token::UpgradeExit => Self::UPGRADE_EXIT,
            Token::Scrape(i) => Self::SCRAPE + (i as u64 & 0xff),
        }
    }

    fn decode(v: u64) -> Option<Token> {
        match v {
            Self::SIGNAL => return Some(Token::Signal),
            Self::WAKE => return Some(Token::Wake),
            _ => {}
        }
        let id = WorkerId { slot: ((v >> 40) & ((1 << 22) - 1)) as usize, generation: v & ((1 << 40) - 1) };
        match v >> 62 {
            Self::PIDFD => Some(Token::Pidfd(id)),
            Self::LIFELINE => Some(Token::Lifeline(id)),
            Self::RING => Some(Token::Ring(id)),
            0 if v == Self::METRICS => Some(Token::Metrics),
            0 if v == Self::UPGRADE => Some(Token::Upgrade),
            0 if v == Self::UPGRADE_EXIT => Some(Token::UpgradeExit),
            0 if v & !0xff == Self::SCRAPE && ((v & 0xff) as usize) < scrape::MAX_CONNS => {
                Some(Token::Scrape((v & 0xff) as usize))
            }
            _ => None,
        }
    }
}

/// Runs the master until shutdown. `entry` runs each worker in its child.
pub(crate) fn run(config: &Config, hooks: &mut Hooks, entry: &Entry<'_>) -> io::Result<Outcome> {
    // First, before this process opens any descriptor that could take
    // the numbers systemd passed.
    let inherited = crate::listen::inherited()?;
    spawn::require_pidfd()?;
    let (parent, handed_metrics) = upgrade::take();
    let exe = upgrade::own_path();
    // An inherited `SIGCHLD = SIG_IGN` (some supervisors and shells pass it
    // on) has the kernel reap the workers itself: `waitpid` then finds no
    // child and their exit statuses are lost. Workers inherit the default.
    // SAFETY: the default disposition installs no handler code.
    unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGCHLD, nix::sys::signal::SigHandler::SigDfl) }
        .map_err(|e| context(e.into(), "signal(SIGCHLD)"))?;
    let (mask, sigfd) = signals::block()?;
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| context(e.into(), "epoll_create1"))?;
    // Sockets from a service manager joined their group in an order this
    // master cannot know; its own, or a previous master's, in slot order.
    let group_known = inherited.is_none() || parent.is_some();
    let bound =
        listeners::bind(config, inherited, parent.is_some(), group_known).map_err(crate::listen::config_error)?;
    let scrape = match (config.metrics.as_deref(), handed_metrics) {
        (Some(_), Some(fd)) => Some(scrape::Scrape::from_fd(fd)?),
        (Some(addr), None) => Some(scrape::Scrape::bind(addr)?),
        (None, _) => None,
    };
    if let Some(s) = &scrape {
        log::info!("metrics on http://{}/metrics", s.local_addr()?);
    }
    let sd_watchdog = sd_notify::watchdog_interval();
    if let Some(d) = sd_watchdog {
        log::info!("systemd watchdog: every {d:?}");
    }

    let wake = hooks.running.wake_fd()?;
    let mut master = Master {
        config,
        hooks,
        entry,
        slots: Vec::new(),
        listeners: bound.listeners,
        epoll,
        sigfd,
        wake,
        phase: Phase::Running,
        drain_at: None,
        reload_queue: VecDeque::new(),
        reloading: None,
        crashes: VecDeque::new(),
        ready_notified: false,
        fatal: None,
        user_timer_due: Vec::new(),
        started: Instant::now(),
        restarts: Restarts::default(),
        scrape,
        overload: overload::Overload::default(),
        next_tick: Instant::now(),
        next_rss: Instant::now(),
        sd_watchdog,
        sd_watchdog_next: Instant::now(),
        status_sent: String::new(),
        reload_notified: false,
        exe,
        upgrade: None,
        parent,
        handed_over: false,
        unix_files: bound.unix_files,
    };
    let now = Instant::now();
    master.user_timer_due = master.hooks.timers.iter().map(|(period, _)| now + *period).collect();
    master.watch(master.sigfd.as_fd().as_raw_fd(), Token::Signal)?;
    master.watch(master.wake, Token::Wake)?;
    if let Some(s) = &master.scrape {
        master.watch(s.fd(), Token::Metrics)?;
    }
    master.hooks.running.tid.store(nix::unistd::gettid().as_raw(), Ordering::Release);
    master.hooks.running.wake.store(master.wake, Ordering::Release);
    for sockets in bound.slots {
        master.slots.push(Slot::new(sockets));
    }
    for i in 0..master.slots.len() {
        master.spawn(i)?;
    }
    let outcome = master.run_loop();
    master.hooks.running.wake.store(-1, Ordering::Release);
    master.hooks.running.tid.store(0, Ordering::Release);
    signals::unblock(&mask);
    // The socket files go with the cluster (once every worker is gone),
    // unless a new master took them over.
    if !master.handed_over {
        for file in master.unix_files.drain(..) {
            file.remove();
        }
    }
    outcome
}

impl Master<'_> {
    fn watch(&self, fd: RawFd, token: Token) -> io::Result<()> {
        // SAFETY: `fd` is open (the caller owns it) and is removed from the
        // set before it is closed (`unwatch`), or closing removes it.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        self.epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token.encode()))
            .map_err(|e| context(e.into(), "epoll_ctl"))
    }

    fn unwatch(&self, fd: RawFd) {
        // SAFETY: `fd` is still open: callers unwatch before they drop it.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let _ = self.epoll.delete(fd);
    }

    fn run_loop(&mut self) -> io::Result<Outcome> {
        let mut events = [EpollEvent::empty(); 64];
        loop {
            // While an event channel is backed up the rings are left alone
            // (their backlog stays bounded in shared memory) and the loop
            // looks again every few milliseconds.
            let backed_up = self.events_backed_up();
            let timeout = match (backed_up, self.next_timeout()) {
                (true, -1) => BACKED_UP_POLL_MS,
                (true, t) => t.min(BACKED_UP_POLL_MS),
                (false, t) if self.rings_may_sleep() => t,
                (false, _) => 0,
            };
            let timeout = EpollTimeout::try_from(timeout).unwrap_or(EpollTimeout::NONE);
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => return Err(context(e.into(), "epoll_wait")),
            };
            for ev in &events[..n] {
                match Token::decode(ev.data()) {
                    Some(Token::Signal) => self.read_signals(),
                    Some(Token::Wake) => {
                        let _ = crate::sys::eventfd_drain(self.wake);
                    }
                    Some(Token::Pidfd(id)) => self.reap(id),
                    Some(Token::Lifeline(id)) => self.read_lifeline(id),
                    Some(Token::Ring(id)) => self.ack_ring(id),
                    Some(Token::Metrics) => self.scrape_accept(),
                    Some(Token::Scrape(i)) => self.scrape_io(i),
                    Some(Token::Upgrade) => self.upgrade_message(),
                    Some(Token::UpgradeExit) => self.upgrade_exited(),
                    None => {}
                }
            }
            // Messages are read from every ring each turn, not only from the
            // one whose eventfd fired: a worker writes the eventfd only when
            // the master said it would sleep.
            if !backed_up {
                let mut full = false;
                for id in self.live_ids() {
                    full |= self.read_ring(id);
                }
                // A ring with more waiting than a turn reads is a flood: the
                // master yields its CPU before the next turn, so that a
                // worker sharing it (serving requests) is not held behind
                // the master for a whole time slice (stress scenario 8).
                // With nothing else runnable there it returns at once.
                if full {
                    let _ = nix::sched::sched_yield();
                }
            }
            self.run_user_timers(Instant::now());
            self.run_orders();
            self.respawn_timers();
            self.leave_timers(Instant::now());
            self.upgrade_timers(Instant::now());
            self.supervise(Instant::now());
            if let Some(e) = self.fatal.take() {
                self.kill_all(libc::SIGKILL);
                self.wait_all();
                return Err(e);
            }
            match self.phase {
                Phase::Running => {}
                Phase::Stopping(deadline) => {
                    if self.drain_at.is_some_and(|t| Instant::now() >= t) {
                        self.drain_at = None;
                        self.drain_everything();
                    }
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

    /// Every live worker, current and retiring.
    fn live_ids(&self) -> Vec<WorkerId> {
        self.slots.iter().flat_map(|s| s.procs().map(|p| p.id)).collect()
    }

    fn live_procs(&self) -> usize {
        self.slots.iter().map(|s| s.procs().count()).sum()
    }

    fn find_mut(&mut self, id: WorkerId) -> Option<&mut Proc> {
        self.slots.get_mut(id.slot)?.find_mut(id.generation)
    }

    /// Milliseconds until the next timer, or -1.
    fn next_timeout(&self) -> i32 {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        if let Phase::Stopping(d) = self.phase {
            consider(d);
        }
        if let Some(t) = self.drain_at {
            consider(t);
        }
        for &t in &self.user_timer_due {
            consider(t);
        }
        if let Some(t) = self.supervise_due() {
            consider(t);
        }
        if let Some(t) = self.upgrade.as_ref().and_then(upgrade::Pending::deadline) {
            consider(t);
        }
        for s in &self.slots {
            if let Some(t) = s.respawn_at.or(s.leave_at) {
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

    /// Sends `sig` to a live worker: a child this master forked and has not
    /// reaped, so its pid cannot have been reused. An unknown signal number
    /// is logged and ignored.
    fn signal(p: &Proc, sig: i32) {
        match nix::sys::signal::Signal::try_from(sig) {
            Ok(s) => {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid), s);
            }
            Err(_) => log::warn!("worker {}: not a signal: {sig}", p.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let id = WorkerId { slot: 77, generation: 123_456 };
        for t in [
            Token::Signal,
            Token::Wake,
            Token::Pidfd(id),
            Token::Lifeline(id),
            Token::Ring(id),
            Token::Metrics,
            Token::Scrape(0),
            Token::Scrape(scrape::MAX_CONNS - 1),
            Token::Upgrade,
            Token::UpgradeExit,
        ] {
            assert_eq!(Token::decode(t.encode()), Some(t));
        }
    }
}
