//! Everything the master hands to the user's code: lifecycle events (to
//! callbacks and channels), messages from workers (read from their rings,
//! copied, and delivered as [`Event::Message`]), worker progress from the
//! lifelines, and the user's periodic callbacks.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::AtomicI32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::slot::ProcState;
use super::{Command, Ctl, Event, EventCallback, Handle, Master, TimerCallback};
use crate::lifeline::{self, Msg};
use crate::worker::WorkerId;

/// Per-worker environment: `(name, value)` pairs for a slot.
pub type WorkerEnv = Box<dyn Fn(usize) -> Vec<(String, String)>>;

/// What the master needs besides [`Config`].
pub(crate) struct Hooks {
    /// Called on the master loop for every event.
    pub(crate) callbacks: Vec<EventCallback>,
    /// Periodic callbacks and their periods.
    pub(crate) timers: Vec<(Duration, TimerCallback)>,
    /// Channels that receive every event; dropped when their receiver is.
    pub(crate) senders: Vec<Sender<Event>>,
    /// Extra environment for the worker of each slot.
    pub(crate) worker_env: Option<WorkerEnv>,
    /// Commands for the loop (cloned into every [`Handle`]).
    pub(crate) cmd_tx: Sender<Command>,
    /// Where the loop reads commands.
    pub(crate) cmd_rx: Receiver<Command>,
    /// The loop's wake-up eventfd, -1 while the loop does not run.
    pub(crate) wake: Arc<AtomicI32>,
}

impl Hooks {
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
            wake: Arc::new(AtomicI32::new(-1)),
        }
    }

    /// A handle that queues commands for this master.
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

impl Master<'_> {
    /// Hands `ev` to every callback, then to every channel.
    pub(super) fn emit(&mut self, ev: Event) {
        log::debug!("event {ev}");
        let mut callbacks = std::mem::take(&mut self.hooks.callbacks);
        let mut ctl = Ctl { slots: &mut self.slots, handle: self.hooks.handle() };
        for cb in callbacks.iter_mut() {
            cb(&ev, &mut ctl);
        }
        self.hooks.callbacks = callbacks;
        self.hooks.senders.retain(|tx| tx.send(ev.clone()).is_ok());
    }

    /// Runs the user's periodic callbacks that are due.
    pub(super) fn run_user_timers(&mut self, now: Instant) {
        let mut timers = std::mem::take(&mut self.hooks.timers);
        for (i, (period, cb)) in timers.iter_mut().enumerate() {
            if self.user_timer_due[i] <= now {
                self.user_timer_due[i] = now + *period;
                let mut ctl = Ctl { slots: &mut self.slots, handle: self.hooks.handle() };
                cb(&mut ctl);
            }
        }
        self.hooks.timers = timers;
    }

    /// Hands the messages worker `id` sent to the event callbacks and
    /// channels.
    pub(super) fn read_ring(&mut self, id: WorkerId) {
        let Some(p) = self.find_mut(id) else { return };
        let idx = p.channel;
        let end = self.slots[id.slot].channels[idx].ch.master();
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
    pub(super) fn rings_may_sleep(&mut self) -> bool {
        let mut may = true;
        for s in &mut self.slots {
            let procs: Vec<usize> = s.procs().map(|p| p.channel).collect();
            for idx in procs {
                if !s.channels[idx].ch.master().prepare_sleep() {
                    may = false;
                }
            }
        }
        may
    }

    /// Reads worker `id`'s lifeline until it is empty.
    pub(super) fn read_lifeline(&mut self, id: WorkerId) {
        loop {
            let Some(p) = self.find_mut(id) else { return };
            let Some(fd) = &p.lifeline else { return };
            let byte = match lifeline::recv(fd.as_fd()) {
                lifeline::Read::Byte(b) => b,
                lifeline::Read::Empty => return,
                lifeline::Read::HangUp => {
                    // The worker is exiting; its pidfd reports it.
                    let fd = fd.as_raw_fd();
                    self.unwatch(fd);
                    if let Some(p) = self.find_mut(id) {
                        p.lifeline = None;
                    }
                    return;
                }
            };
            let pid = p.pid;
            match Msg::decode(byte) {
                Some(Msg::Online) => {
                    p.state = ProcState::Online;
                    self.emit(Event::Online { worker: id, pid });
                }
                Some(Msg::Listening) => {
                    p.state = ProcState::Listening;
                    let addr = self.addr;
                    self.emit(Event::Listening { worker: id, pid, addr });
                }
                Some(Msg::Ready) => {
                    p.state = ProcState::Ready;
                    p.ready_at = Some(Instant::now());
                    self.slots[id.slot].startup_failures = 0;
                    self.emit(Event::Ready { worker: id, pid });
                    self.on_ready(id);
                }
                None => log::warn!("worker {id}: unknown message {byte}"),
            }
        }
    }
}
