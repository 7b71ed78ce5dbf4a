//! Reaping workers, crash accounting and respawn: the back-off between
//! respawns of one slot, the crash budget of the cluster, and the ready
//! timeout of a new worker.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::slot::{Proc, ProcState};
use super::{Event, ExitStatus, Master, Phase};
use crate::worker::{WorkerId, EXIT_CANNOT_START};

impl Master<'_> {
    /// Reaps worker `id` if it has exited: frees its channel, reports its
    /// exit, and respawns its slot when it crashed.
    pub(super) fn reap(&mut self, id: WorkerId) {
        let Some(p) = self.find_mut(id) else { return };
        let pid = p.pid;
        let exit = match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => ExitStatus::Code(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => ExitStatus::Signal(sig as i32),
            // Still running (or stopped): its pidfd fires again when it exits.
            Ok(_) => return,
            // ECHILD: the child is gone and cannot be waited for.
            Err(e) => {
                log::warn!("waitpid({pid}): {e}");
                ExitStatus::Code(-1)
            }
        };
        // Node's order: the channel closes (`Disconnect`), then `Exit`,
        // even when the exit is seen before the hang-up.
        self.disconnected(id);
        let slot = id.slot;
        let s = &mut self.slots[slot];
        let was_current = s.current.as_ref().is_some_and(|p| p.id == id);
        let proc = if was_current {
            s.current.take()
        } else {
            let i = s.retiring.iter().position(|p| p.id == id);
            i.map(|i| s.retiring.remove(i))
        };
        let Some(proc) = proc else { return };
        // Its connections died with it; the channel is free for a later
        // worker, which resets it first.
        let c = &mut self.slots[slot].channels[proc.channel];
        c.ch.close();
        c.ch.counters().reset_gauges();
        c.user = None;
        if let Some(fds) = c.ch.fds() {
            let fd = fds.master_wake.as_raw_fd();
            self.unwatch(fd);
        }
        self.unwatch(proc.pidfd.as_raw_fd());
        if let Some(c) = &proc.lifeline {
            self.unwatch(c.as_raw_fd());
        }
        if !proc.stopping {
            log::warn!("worker {} (pid {pid}) died: {exit:?}", proc.id);
        }
        // A worker the master ended (replaced, or killed by the watchdog)
        // counts as that cause; one that died unasked and is replaced, as
        // a crash.
        match proc.ended_for {
            Some(cause) => self.restarts.count(cause),
            None if !proc.stopping && was_current && self.phase == Phase::Running => {
                self.restarts.count(super::slot::Cause::Crash)
            }
            None => {}
        }
        self.emit(Event::Exit { worker: proc.id, pid, status: exit, requested: proc.stopping });
        if self.reloading == Some(slot) && !proc.stopping && was_current {
            // The replacement died before it was ready: keep the old worker.
            log::error!("reload: the new worker of slot {slot} died before it was ready; keeping the old one");
            self.reloading = None;
            let s = &mut self.slots[slot];
            s.replace_for = None;
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
            if proc.state != ProcState::Ready && exit == ExitStatus::Code(EXIT_CANNOT_START) && !proc.evicted {
                // The worker said it cannot start for a reason that will
                // not change (its log says which): stop now, not after a
                // string of respawns.
                self.fatal = Some(crate::config::ConfigError::io(format!(
                    "the worker of slot {slot} cannot start with this configuration (see its log above); stopping"
                )));
                return;
            }
            self.crashed(slot, &proc);
        }
    }

    /// Schedules the replacement of `slot`'s current worker, which crashed.
    ///
    /// A worker that had become ready is always replaced (after the slot's
    /// back-off): a crash while serving can come from a remote client, and
    /// must never become an outage of the whole cluster. Only workers that
    /// die before they are ready count against the budgets that stop the
    /// cluster: `max_startup_failures` in a row for one slot, `max_crashes`
    /// within `crash_window` over all slots.
    fn crashed(&mut self, slot: usize, proc: &Proc) {
        let now = Instant::now();
        let policy = self.config.respawn;
        let s = &mut self.slots[slot];
        // A worker that served for a while ends any streak before it (the
        // timer that does so may not have run yet).
        if proc.ready_at.is_some_and(|r| now.duration_since(r) >= policy.stable_after) {
            s.streak = 0;
        }
        s.streak += 1;
        if proc.state != ProcState::Ready {
            s.startup_failures += 1;
            self.crashes.push_back(now);
        }
        while self.crashes.front().is_some_and(|t| now.duration_since(*t) > policy.crash_window) {
            self.crashes.pop_front();
        }
        let s = &mut self.slots[slot];
        if s.startup_failures >= policy.max_startup_failures {
            self.fatal = Some(io::Error::other(format!(
                "worker of slot {slot} died {} times in a row before it was ready; stopping",
                s.startup_failures
            )));
            return;
        }
        if self.crashes.len() as u32 >= policy.max_crashes {
            self.fatal = Some(io::Error::other(format!(
                "{} workers died before they were ready within {:?}; stopping",
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

    /// Runs what is due: respawns, the end of crash streaks, ready timeouts.
    pub(super) fn respawn_timers(&mut self) {
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
            for p in s.procs_mut() {
                if p.state != ProcState::Ready && !p.stopping && now.duration_since(p.forked_at) >= policy.ready_timeout
                {
                    log::error!("worker {} not ready after {:?}; killing it", p.id, policy.ready_timeout);
                    Self::signal(p, libc::SIGKILL);
                }
            }
        }
    }

    /// Sends `sig` to every worker and cancels pending respawns.
    pub(super) fn kill_all(&mut self, sig: i32) {
        for s in &mut self.slots {
            for p in s.procs_mut() {
                p.stopping = true;
                Self::signal(p, sig);
            }
            s.respawn_at = None;
        }
    }

    /// Reaps every remaining worker (after SIGKILL), emitting their exits.
    pub(super) fn wait_all(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.live_procs() > 0 && Instant::now() < deadline {
            for id in self.live_ids() {
                self.reap(id);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
