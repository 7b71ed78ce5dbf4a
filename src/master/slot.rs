//! The process table: a fixed list of slots, each with the worker that
//! serves it, the older workers still draining, its own listening sockets
//! and its shared-memory channels.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Instant;

use crate::config::ChannelOptions;
use crate::ipc::{Channel, Snapshot};
use crate::worker::WorkerId;

/// Where a worker process is in its life, as its lifeline reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ProcState {
    /// Forked; nothing heard yet.
    Forked,
    /// The process runs.
    Online,
    /// It holds its listener.
    Listening,
    /// It serves.
    Ready,
}

/// One worker process.
#[derive(Debug)]
pub(super) struct Proc {
    /// Its slot and generation.
    pub(super) id: WorkerId,
    /// Its pid (valid for `kill` until it is reaped: `pidfd` pins it).
    pub(super) pid: i32,
    /// Becomes readable when the process exits.
    pub(super) pidfd: OwnedFd,
    /// The master's end of its lifeline; `None` once the worker hung up.
    pub(super) lifeline: Option<OwnedFd>,
    /// `Event::Disconnect` was emitted for it (its lifeline closed).
    pub(super) disconnected: bool,
    /// What its lifeline last reported.
    pub(super) state: ProcState,
    /// When it was forked (for the ready timeout).
    pub(super) forked_at: Instant,
    /// When it said it was ready.
    pub(super) ready_at: Option<Instant>,
    /// The master asked it to stop; its exit is no crash.
    pub(super) stopping: bool,
    /// Index of its shared-memory channel in its slot's `channels`.
    pub(super) channel: usize,
    /// It broke the protocol (a damaged ring, a bad lifeline message) and
    /// was sent SIGKILL: nothing of it is read any more, and nothing more
    /// about it is logged until it is reaped.
    pub(super) evicted: bool,
    /// The heartbeat last read from its counters page.
    pub(super) beat: u64,
    /// When the master last saw the heartbeat move (or the worker become
    /// ready).
    pub(super) beat_at: Instant,
    /// Requests after which it is recycled; `None`: no quota.
    pub(super) quota: Option<u64>,
    /// Its channel's request count when it was forked (its own requests are
    /// counted from there).
    pub(super) requests_base: u64,
    /// Why the master ended it, when it did (a replacement took over, or
    /// the watchdog killed it): its exit counts as that restart cause.
    pub(super) ended_for: Option<Cause>,
}

/// Why a worker was replaced, as counted in the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cause {
    /// It died without being asked to.
    Crash,
    /// A rolling reload replaced it.
    Reload,
    /// Its loop stopped turning and the watchdog killed it.
    Watchdog,
    /// It served its quota of requests.
    Recycle,
    /// It grew past the memory ceiling.
    Memory,
}

/// One slot of the process table.
#[derive(Debug)]
pub(super) struct Slot {
    /// This slot's own socket per listener (by the master's listener
    /// index: reuseport mode); `None` where the listener's shared socket
    /// serves. Emptied when the slot leaves.
    pub(super) listeners: Vec<Option<OwnedFd>>,
    /// The worker serving the slot.
    pub(super) current: Option<Proc>,
    /// Older workers draining after a reload or disconnect.
    pub(super) retiring: Vec<Proc>,
    /// The generation the next worker forked into this slot gets.
    pub(super) next_generation: u64,
    /// Crashes in a row.
    pub(super) streak: u32,
    /// Crashes in a row before becoming ready.
    pub(super) startup_failures: u32,
    /// When a crashed worker is replaced; `None` when no respawn is due.
    pub(super) respawn_at: Option<Instant>,
    /// Disconnected on request: no respawn.
    pub(super) parked: bool,
    /// Being removed (scale down): its socket closes once its worker exits.
    pub(super) removing: bool,
    /// When a slot being removed has its worker drained (new connections
    /// are steered away from its socket until then); `None` once done.
    pub(super) leave_at: Option<Instant>,
    /// Shared-memory channels of the slot's workers: one per live worker
    /// (old and new overlap during a reload), reused after a reap.
    pub(super) channels: Vec<SlotChannel>,
    /// Why the slot is queued for replacement (reload, recycle), if it is.
    pub(super) replace_for: Option<Cause>,
}

/// A channel and the generation of the worker using it.
#[derive(Debug)]
pub(super) struct SlotChannel {
    /// The rings, eventfds and counters.
    pub(super) ch: Channel,
    /// The generation of the worker that uses it; `None` when free.
    pub(super) user: Option<u64>,
}

impl Slot {
    pub(super) fn new(listeners: Vec<Option<OwnedFd>>) -> Slot {
        Slot {
            listeners,
            current: None,
            retiring: Vec::new(),
            next_generation: 0,
            streak: 0,
            startup_failures: 0,
            respawn_at: None,
            parked: false,
            removing: false,
            leave_at: None,
            channels: Vec::new(),
            replace_for: None,
        }
    }

    /// Totals over every channel the slot has used.
    pub(super) fn counters(&self) -> Snapshot {
        self.channels.iter().map(|c| c.ch.counters().snapshot()).sum()
    }

    /// A free channel for a new worker of generation `generation`, reset
    /// (its previous worker was reaped), or a new one.
    pub(super) fn take_channel(&mut self, generation: u64, opts: ChannelOptions) -> io::Result<usize> {
        if let Some(i) = self.channels.iter().position(|c| c.user.is_none()) {
            // SAFETY: a free channel's worker was reaped (`user` is cleared
            // only in `reap`), and the master's own end is idle here.
            unsafe { self.channels[i].ch.reset()? };
            self.channels[i].user = Some(generation);
            return Ok(i);
        }
        self.channels.push(SlotChannel { ch: Channel::new(opts)?, user: Some(generation) });
        Ok(self.channels.len() - 1)
    }

    /// The slot's live workers: the current one first, then the retiring.
    pub(super) fn procs(&self) -> impl Iterator<Item = &Proc> {
        self.current.iter().chain(self.retiring.iter())
    }

    /// As [`Slot::procs`], mutably.
    pub(super) fn procs_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
        self.current.iter_mut().chain(self.retiring.iter_mut())
    }

    /// The live worker of generation `generation`.
    pub(super) fn find_mut(&mut self, generation: u64) -> Option<&mut Proc> {
        self.procs_mut().find(|p| p.id.generation == generation)
    }
}
