//! Everything the master hands to the user's code: lifecycle events (to
//! callbacks and channels), messages from workers (read from their rings,
//! copied, and delivered as [`Event::Message`]), worker progress from the
//! lifelines, and the user's periodic callbacks.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::api::{self, LoopRef, Order};
use super::slot::ProcState;
use super::{Ctl, Event, EventCallback, Handle, Master, TimerCallback};
use crate::lifeline::{self, Msg};
use crate::worker::WorkerId;

/// Most messages read from one worker's ring per loop turn.
const MESSAGES_PER_TURN: usize = 256;
/// Most lifeline messages read from one worker per loop turn (an honest
/// worker sends three in its life).
const LIFELINE_PER_TURN: usize = 4;
/// Most batches of messages read from a worker's ring when its channel
/// closes, before its `Disconnect`.
const LAST_BATCHES: usize = 64;
/// Events queued in one event channel beyond which the master stops
/// reading the rings until the channel's consumer catches up.
pub(super) const EVENT_BACKLOG: usize = 1024;

/// Per-worker environment: `(name, value)` pairs for a slot.
pub type WorkerEnv = Box<dyn Fn(usize) -> Vec<(String, String)>>;

/// What the master needs besides [`Config`](crate::Config).
pub(crate) struct Hooks {
    /// Called on the master loop for every event.
    pub(crate) callbacks: Vec<EventCallback>,
    /// Periodic callbacks and their periods.
    pub(crate) timers: Vec<(Duration, TimerCallback)>,
    /// Channels that receive every event; dropped when their receiver is.
    pub(crate) senders: Vec<Sender<Event>>,
    /// Extra environment for the worker of each slot.
    pub(crate) worker_env: Option<WorkerEnv>,
    /// Orders for the loop (cloned into every [`Handle`]).
    cmd_tx: Sender<Order>,
    /// Where the loop reads orders.
    pub(super) cmd_rx: Receiver<Order>,
    /// The running loop's wake-up eventfd and thread, for handles.
    pub(super) running: Arc<LoopRef>,
    /// The buffers one ring's batch of messages is read into, kept for
    /// their capacity.
    batch: Batch,
}

/// One turn's messages from a ring: their bytes one after another, where
/// each ends, and the `Vec` the current one is handed over in (kept, with
/// its capacity, when no event channel took a copy).
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    data: Vec<u8>,
}

impl Hooks {
    /// Hands `ev` to the event channels, dropping those whose receiver is
    /// gone; a single channel takes it without a copy. Gives it back when
    /// there is no channel (its buffers can serve again).
    fn send(&mut self, ev: Event) -> Option<Event> {
        match self.senders.len() {
            0 => Some(ev),
            1 => {
                if self.senders[0].send(ev).is_err() {
                    self.senders.clear();
                }
                None
            }
            _ => {
                self.senders.retain(|tx| tx.send(ev.clone()).is_ok());
                None
            }
        }
    }

    /// No callbacks, no channels, an empty command queue.
    pub(crate) fn new() -> Hooks {
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        Hooks {
            callbacks: Vec::new(),
            timers: Vec::new(),
            senders: Vec::new(),
            worker_env: None,
            cmd_tx,
            cmd_rx,
            running: Arc::new(LoopRef::new()),
            batch: Batch::default(),
        }
    }

    /// A handle that queues commands for this master.
    pub(crate) fn handle(&self) -> Handle {
        Handle { tx: self.cmd_tx.clone(), running: self.running.clone() }
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

impl Master<'_> {
    /// Hands `ev` to every callback, then to every channel.
    pub(super) fn emit(&mut self, ev: Event) {
        log::debug!("event {ev}");
        let mut callbacks = std::mem::take(&mut self.hooks.callbacks);
        let (cluster, watching) = (self.cluster(), self.supervising());
        let mut ctl = Ctl { slots: &mut self.slots, handle: self.hooks.handle(), cluster, watching };
        for cb in callbacks.iter_mut() {
            cb(&ev, &mut ctl);
        }
        self.hooks.callbacks = callbacks;
        self.hooks.send(ev);
    }

    /// Carries out what handles queued: commands, and messages and
    /// descriptors for workers (whose callers wait for the outcome).
    pub(super) fn run_orders(&mut self) {
        while let Ok(order) = self.hooks.cmd_rx.try_recv() {
            match order {
                Order::Command(cmd) => self.command(cmd),
                Order::Send { slot, msg, reply } => {
                    let _ = reply.send(api::send_to(&mut self.slots, slot, &msg));
                }
                Order::Broadcast { msg, reply } => {
                    let _ = reply.send(api::broadcast_to(&mut self.slots, &msg));
                }
                Order::SendFd { slot, fd, tag, reply } => {
                    let _ = reply.send(api::send_fd_to(&mut self.slots, slot, fd.as_fd(), &tag));
                }
            }
        }
    }

    /// Runs the user's periodic callbacks that are due.
    pub(super) fn run_user_timers(&mut self, now: Instant) {
        let mut timers = std::mem::take(&mut self.hooks.timers);
        for (i, (period, cb)) in timers.iter_mut().enumerate() {
            if self.user_timer_due[i] <= now {
                self.user_timer_due[i] = now + *period;
                let (cluster, watching) = (self.cluster(), self.supervising());
                let mut ctl = Ctl { slots: &mut self.slots, handle: self.hooks.handle(), cluster, watching };
                cb(&mut ctl);
            }
        }
        self.hooks.timers = timers;
    }

    /// Hands the messages worker `id` sent to the event callbacks and
    /// channels: at most [`MESSAGES_PER_TURN`], each copied out of shared
    /// memory first. What is left waits in the ring (the worker's sends
    /// answer `Full` once it is full: backpressure, never a silent drop).
    /// The batch is read into buffers kept from turn to turn, and its
    /// events go out with one [`Ctl`] (commands are queued, so nothing a
    /// callback does changes what the next one sees): a flood costs the
    /// master a copy per message, not allocations and handle clones.
    /// Returns whether it read a whole batch (more may be waiting).
    pub(super) fn read_ring(&mut self, id: WorkerId) -> bool {
        let Some(p) = self.find_mut(id) else { return false };
        if p.evicted {
            return false;
        }
        let idx = p.channel;
        let mut batch = std::mem::take(&mut self.hooks.batch);
        batch.bytes.clear();
        batch.ends.clear();
        let end = self.slots[id.slot].channels[idx].ch.master();
        end.after_wake();
        let r = end.recv_into(MESSAGES_PER_TURN, &mut batch.bytes, &mut batch.ends);
        if !batch.ends.is_empty() {
            let mut callbacks = std::mem::take(&mut self.hooks.callbacks);
            let (cluster, watching) = (self.cluster(), self.supervising());
            let mut ctl = Ctl { slots: &mut self.slots, handle: self.hooks.handle(), cluster, watching };
            let mut start = 0;
            for &stop in &batch.ends {
                let mut data = std::mem::take(&mut batch.data);
                data.clear();
                data.extend_from_slice(&batch.bytes[start..stop]);
                start = stop;
                let ev = Event::Message { worker: id, data };
                log::debug!("event {ev}");
                for cb in callbacks.iter_mut() {
                    cb(&ev, &mut ctl);
                }
                if let Some(Event::Message { data, .. }) = self.hooks.send(ev) {
                    batch.data = data;
                }
            }
            self.hooks.callbacks = callbacks;
        }
        let full = batch.ends.len() == MESSAGES_PER_TURN;
        self.hooks.batch = batch;
        if let Err(e) = r {
            self.evict(id, format_args!("its ring to the master is damaged ({e})"));
        }
        full
    }

    /// Whether the event channels are backed up (a consumer thread that
    /// does not keep up): the loop then leaves the rings alone for a while,
    /// so the backlog stays in the workers' rings, bounded, and their sends
    /// see `Full`.
    pub(super) fn events_backed_up(&self) -> bool {
        self.hooks.senders.iter().any(|tx| tx.len() >= EVENT_BACKLOG)
    }

    /// Resets the eventfd of worker `id`'s ring to the master after it
    /// fired; the messages are read every turn.
    pub(super) fn ack_ring(&mut self, id: WorkerId) {
        if let Some(idx) = self.find_mut(id).map(|p| p.channel) {
            let fd = self.slots[id.slot].channels[idx].ch.master().fd().as_raw_fd();
            let _ = crate::sys::eventfd_drain(fd);
        }
    }

    /// Tells every worker's ring that the master is about to sleep; false
    /// when a message is already waiting (then the master must not block).
    /// A worker whose ring is damaged is evicted here rather than let its
    /// ring keep the master awake.
    pub(super) fn rings_may_sleep(&mut self) -> bool {
        let mut may = true;
        let mut broken = Vec::new();
        for s in &mut self.slots {
            let procs: Vec<(WorkerId, usize)> = s.procs().filter(|p| !p.evicted).map(|p| (p.id, p.channel)).collect();
            for (id, idx) in procs {
                let end = s.channels[idx].ch.master();
                if end.is_corrupt() {
                    broken.push(id);
                } else if !end.prepare_sleep() {
                    may = false;
                }
            }
        }
        for id in broken {
            self.evict(id, format_args!("its shared channel is damaged"));
        }
        may
    }

    /// Worker `id`'s lifeline closed: drops the master's end and emits
    /// `Disconnect`, once (from the hang-up, or from the reap when the exit
    /// was seen first).
    /// What the worker sent before is delivered first, so that no
    /// `Message` of it follows its `Disconnect` (a bounded number of
    /// batches: a worker that is still alive could keep writing).
    pub(super) fn disconnected(&mut self, id: WorkerId) {
        let Some(p) = self.find_mut(id) else { return };
        if let Some(fd) = p.lifeline.take() {
            let raw = fd.as_raw_fd();
            self.unwatch(raw);
        }
        if self.find_mut(id).is_some_and(|p| p.disconnected) {
            return;
        }
        for _ in 0..LAST_BATCHES {
            if !self.read_ring(id) {
                break;
            }
        }
        let Some(p) = self.find_mut(id) else { return };
        if std::mem::replace(&mut p.disconnected, true) {
            return;
        }
        let pid = p.pid;
        self.emit(Event::Disconnect { worker: id, pid });
    }

    /// Kills worker `id`, which broke the protocol, once: logs why, stops
    /// reading anything of it, refuses messages to it, and lets the reap
    /// that follows respawn the slot like any crash.
    pub(super) fn evict(&mut self, id: WorkerId, why: std::fmt::Arguments<'_>) {
        let Some(p) = self.find_mut(id) else { return };
        if p.evicted {
            return;
        }
        p.evicted = true;
        log::error!("worker {id} (pid {}): {why}; killing it", p.pid);
        Self::signal(p, libc::SIGKILL);
        let idx = p.channel;
        self.slots[id.slot].channels[idx].ch.close();
    }

    /// Reads at most [`LIFELINE_PER_TURN`] messages from worker `id`'s
    /// lifeline. The worker reports `Online`, `Listening`, `Ready`, in that
    /// order, once each; anything else (an unknown byte, a repeat, a step
    /// skipped) evicts it. What is left is read on later turns, so a
    /// flooding worker cannot hold the loop.
    pub(super) fn read_lifeline(&mut self, id: WorkerId) {
        for _ in 0..LIFELINE_PER_TURN {
            let Some(p) = self.find_mut(id) else { return };
            if p.evicted {
                return;
            }
            let Some(fd) = &p.lifeline else { return };
            let byte = match lifeline::recv(fd.as_fd()) {
                lifeline::Read::Byte(b) => b,
                lifeline::Read::Empty => return,
                lifeline::Read::HangUp => {
                    // The worker is exiting (its pidfd reports it): its
                    // channel to the master closed, Node's `disconnect`.
                    let fd = fd.as_raw_fd();
                    self.unwatch(fd);
                    self.disconnected(id);
                    return;
                }
                lifeline::Read::Rights => {
                    self.evict(id, format_args!("it sent descriptors on its lifeline"));
                    return;
                }
            };
            let pid = p.pid;
            match (p.state, Msg::decode(byte)) {
                (ProcState::Forked, Some(Msg::Online)) => {
                    p.state = ProcState::Online;
                    self.emit(Event::Online { worker: id, pid });
                }
                (ProcState::Online, Some(Msg::Listening)) => {
                    p.state = ProcState::Listening;
                    // The first address served (each worker serves them all).
                    let addr = self.listeners.first().map(|l| l.addr.clone());
                    if let Some(addr) = addr {
                        self.emit(Event::Listening { worker: id, pid, addr });
                    }
                }
                (ProcState::Listening, Some(Msg::Ready)) => {
                    p.state = ProcState::Ready;
                    p.ready_at = Some(Instant::now());
                    // The watchdog counts from here.
                    p.beat_at = Instant::now();
                    let channel = p.channel;
                    let beat = self.slots[id.slot].channels[channel].ch.counters().heartbeat();
                    if let Some(p) = self.find_mut(id) {
                        p.beat = beat;
                    }
                    self.slots[id.slot].startup_failures = 0;
                    self.emit(Event::Ready { worker: id, pid });
                    self.on_ready(id);
                }
                (state, msg) => {
                    let got = match msg {
                        Some(m) => format!("{m:?}"),
                        None => format!("unknown byte {byte}"),
                    };
                    self.evict(id, format_args!("lifeline protocol broken: {got} while {state:?}"));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::SendError;
    use crate::Command;

    #[test]
    fn a_handle_before_the_master_runs_queues_commands_and_refuses_messages() {
        let hooks = Hooks::new();
        let handle = hooks.handle();
        assert_eq!(handle.send(0, b"x"), Err(SendError::NoMaster));
        assert_eq!(handle.broadcast(b"x"), Err(SendError::NoMaster));
        let (a, _b) = crate::lifeline::pair().unwrap();
        assert_eq!(handle.send_fd(0, a.as_fd(), b"x"), Err(SendError::NoMaster));
        // A command waits for the master to start.
        handle.command(Command::Reload);
        assert!(matches!(hooks.cmd_rx.try_recv(), Ok(Order::Command(Command::Reload))));
        assert!(hooks.cmd_rx.try_recv().is_err());
    }
}
