//! Commands (from signals, a [`super::Handle`] or a callback): graceful
//! shutdown, immediate stop, rolling reload, scaling, kill and disconnect.
//!
//! A rolling reload replaces one slot at a time: the replacement is forked
//! while the old worker still serves, and the old one is asked to drain
//! only once the replacement says it is ready; a replacement that dies
//! before that leaves the old worker in place.

use std::io;
use std::time::{Duration, Instant};

use super::sd_notify::{self, notify};
use super::slot::{Cause, ProcState, Slot};
use super::{Command, Event, Master, Phase, KILL_GRACE};
use crate::config::ListenAddr;
use crate::worker::WorkerId;

impl Master<'_> {
    pub(super) fn command(&mut self, cmd: Command) {
        log::debug!("command {cmd:?}");
        match cmd {
            Command::Shutdown => {
                if self.phase == Phase::Running {
                    log::info!("graceful shutdown");
                    notify("STOPPING=1");
                    // `/ready` turns 503 now (the phase); the workers keep
                    // serving for the drain delay, so that a load balancer
                    // polling `/ready` stops sending new connections before
                    // the listeners close.
                    self.abandon_upgrade(nix::sys::signal::Signal::SIGTERM);
                    self.stop_gracefully(self.config.drain_delay);
                }
            }
            Command::Quit => {
                log::info!("immediate stop");
                notify("STOPPING=1");
                self.abandon_upgrade(nix::sys::signal::Signal::SIGKILL);
                self.phase = Phase::Quitting;
                self.kill_all(libc::SIGKILL);
            }
            Command::Reload => {
                if self.phase == Phase::Running {
                    log::info!("rolling reload of {} slot(s)", self.slots.len());
                    sd_notify::reloading();
                    self.reload_notified = true;
                    // Slots already queued (a recycle) stay in place; a slot
                    // whose replacement is starting gets a fresh worker
                    // already.
                    for slot in 0..self.slots.len() {
                        self.slots[slot].replace_for = Some(Cause::Reload);
                        if self.reloading != Some(slot) && !self.reload_queue.contains(&slot) {
                            self.reload_queue.push_back(slot);
                        }
                    }
                    if self.reloading.is_none() {
                        self.next_reload();
                    }
                    self.finish_reload();
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
                    Self::signal(p, signal);
                }
            }
            Command::ReopenLogs => {
                log::info!("reopening the workers' logs");
                // A worker that has not installed its handler yet still has
                // the signal blocked (the master's mask, inherited), so it
                // is delivered once the handler is in place.
                for s in &self.slots {
                    for p in s.current.iter().chain(s.retiring.iter()) {
                        Self::signal(p, libc::SIGUSR1);
                    }
                }
            }
            Command::Upgrade => self.start_upgrade(),
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

    /// Drains every worker (after `delay`, during which `/ready` already
    /// answers 503) and ends the loop once they are gone.
    pub(super) fn stop_gracefully(&mut self, delay: Duration) {
        // Workers give up on their connections at the drain timeout
        // themselves; the master kills only what is stuck past that.
        self.phase = Phase::Stopping(Instant::now() + delay + self.config.timeouts.drain + KILL_GRACE);
        self.reload_queue.clear();
        for slot in &mut self.slots {
            slot.respawn_at = None;
        }
        if delay.is_zero() {
            self.drain_everything();
        } else {
            log::info!("draining in {} ms (drain delay)", delay.as_millis());
            self.drain_at = Some(Instant::now() + delay);
        }
    }

    /// Tells every worker of every slot to drain (the graceful shutdown,
    /// once its delay is over).
    pub(super) fn drain_everything(&mut self) {
        for i in 0..self.slots.len() {
            self.drain_all_of(i);
        }
    }

    /// Asks every worker of `slot` to drain.
    fn drain_all_of(&mut self, slot: usize) {
        let mut draining = Vec::new();
        let s = &mut self.slots[slot];
        let channels = &s.channels;
        for p in s.current.iter_mut().chain(s.retiring.iter_mut()) {
            if !p.stopping {
                p.stopping = true;
                // Messages to a draining worker are refused (`Closed`).
                channels[p.channel].ch.close();
                Self::signal(p, libc::SIGTERM);
                draining.push((p.id, p.pid));
            }
        }
        for (worker, pid) in draining {
            self.emit(Event::Draining { worker, pid });
        }
    }

    /// Worker `id` said it serves: a reload goes on to the next slot, and
    /// systemd hears `READY=1` once every slot serves.
    pub(super) fn on_ready(&mut self, id: WorkerId) {
        let slot = id.slot;
        if self.reloading == Some(slot) && self.slots[slot].current.as_ref().map(|p| p.id) == Some(id) {
            // The replacement serves: drain its predecessors.
            self.reloading = None;
            let cause = self.slots[slot].replace_for.take().unwrap_or(Cause::Reload);
            let old: Vec<(WorkerId, i32)> = self.slots[slot]
                .retiring
                .iter_mut()
                .filter(|p| !p.stopping)
                .map(|p| {
                    p.stopping = true;
                    p.ended_for = Some(cause);
                    Self::signal(p, libc::SIGTERM);
                    (p.id, p.pid)
                })
                .collect();
            for (worker, pid) in old {
                self.emit(Event::Draining { worker, pid });
            }
            self.next_reload();
        }
        if !self.ready_notified
            && self.slots.iter().all(|s| s.parked || s.current.as_ref().is_some_and(|p| p.state == ProcState::Ready))
        {
            self.ready_notified = true;
            // A master started by a binary upgrade tells the old master,
            // which is still the service's main process to systemd.
            if !self.tell_old_master() {
                notify("READY=1");
            }
        } else {
            self.finish_reload();
        }
    }

    /// Tells systemd `READY=1` once the reload it was told of is over.
    pub(super) fn finish_reload(&mut self) {
        if self.reload_notified && self.ready_notified && self.reload_queue.is_empty() && self.reloading.is_none() {
            self.reload_notified = false;
            notify("READY=1");
        }
    }

    /// Starts the replacement of the next slot in the reload queue.
    pub(super) fn next_reload(&mut self) {
        while let Some(slot) = self.reload_queue.pop_front() {
            if slot >= self.slots.len() {
                continue;
            }
            if self.slots[slot].removing || self.slots[slot].parked {
                self.slots[slot].replace_for = None;
                continue;
            }
            self.slots[slot].parked = false;
            match self.spawn(slot) {
                Ok(()) => {
                    self.reloading = Some(slot);
                    return;
                }
                Err(e) => {
                    self.slots[slot].replace_for = None;
                    log::error!("reload of slot {slot}: {e}");
                }
            }
        }
        self.finish_reload();
    }

    /// Adds a slot (with its own socket per reuseport address) and forks
    /// its worker.
    fn add_slot(&mut self) -> io::Result<()> {
        let mut sockets = Vec::with_capacity(self.listeners.len());
        for l in &self.listeners {
            sockets.push(match (&l.shared, &l.addr) {
                (Some(_), _) => None,
                (None, ListenAddr::Tcp(addr)) => Some(crate::listen::bind_addr(*addr, true, self.config.backlog)?),
                (None, other) => {
                    return Err(io::Error::new(io::ErrorKind::Unsupported, format!("one socket per slot on {other}")))
                }
            });
        }
        self.slots.push(Slot::new(sockets));
        let slot = self.slots.len() - 1;
        log::info!("scale up: slot {slot}");
        self.steer_joined(slot);
        self.spawn(slot)
    }

    /// Drains the last slot's worker and removes the slot once it is gone.
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
        let now = Instant::now();
        self.slots[slot].leave_at = Some(self.steer_away(slot, now));
        self.leave_timers(now);
    }

    /// Drains the workers of the slots being removed whose time has come
    /// (see [`Master::steer_away`]).
    pub(super) fn leave_timers(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            if self.slots[slot].leave_at.is_some_and(|t| t <= now) {
                self.slots[slot].leave_at = None;
                self.leave(slot);
            }
        }
        self.pop_removed();
    }

    /// Drains the workers of slot `slot`, being removed.
    fn leave(&mut self, slot: usize) {
        // The master's copies of the sockets go now, so each socket leaves
        // its reuseport group when the draining worker, having accepted
        // what is queued, closes its copy.
        self.slots[slot].listeners.clear();
        if let Some(p) = self.slots[slot].current.take() {
            self.slots[slot].retiring.push(p);
        }
        self.drain_all_of(slot);
    }

    /// Drops removed slots from the end of the table once their workers
    /// are gone (and with them the last copy of the slot's socket).
    pub(super) fn pop_removed(&mut self) {
        while self.slots.last().is_some_and(|s| s.removing && s.leave_at.is_none() && s.procs().count() == 0) {
            self.slots.pop();
            self.steer_left(self.slots.len());
        }
    }
}
