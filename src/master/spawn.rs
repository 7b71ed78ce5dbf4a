//! Forking a worker into a slot: what the child keeps and what it closes,
//! its lifeline, its pidfd, and the hand-over to the worker's entry.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use super::slot::{Proc, ProcState};
use super::{Event, Master, Token};
use crate::sys::context;
use crate::worker::{Start, StartRing, WorkerId};

/// Runs a worker in a freshly forked child and returns its exit code.
pub(crate) type Entry<'a> = dyn Fn(Start) -> i32 + 'a;

impl Master<'_> {
    /// The listener the worker of `slot` accepts on.
    fn listener_of(&self, slot: usize) -> RawFd {
        match &self.slots[slot].listener {
            Some(fd) => fd.as_raw_fd(),
            None => self.shared_listener.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
        }
    }

    /// Every descriptor of the master that the worker of `(slot, channel)`
    /// must not keep.
    fn close_in_child(&self, slot: usize, channel: usize, lifeline: RawFd) -> Vec<RawFd> {
        let mut fds = vec![
            self.epoll.0.as_raw_fd(),
            std::os::fd::AsFd::as_fd(&self.sigfd).as_raw_fd(),
            self.wake.as_raw_fd(),
            lifeline,
        ];
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(fd) = &s.listener {
                if i != slot {
                    fds.push(fd.as_raw_fd());
                }
            }
            for p in s.procs() {
                fds.push(p.pidfd.as_raw_fd());
                if let Some(c) = &p.lifeline {
                    fds.push(c.as_raw_fd());
                }
            }
            for (j, c) in s.channels.iter().enumerate() {
                if (i, j) != (slot, channel) {
                    if let Some(ch) = c.ch.fds() {
                        fds.extend([ch.shm, ch.worker_wake, ch.master_wake].map(|fd| fd.as_raw_fd()));
                    }
                }
            }
        }
        fds
    }

    /// Forks a worker into `slot` as its current worker.
    pub(super) fn spawn(&mut self, slot: usize) -> io::Result<()> {
        let generation = self.slots[slot].next_generation;
        self.slots[slot].next_generation += 1;
        self.slots[slot].respawn_at = None;
        let id = WorkerId { slot, generation };
        let (master_end, worker_end) = crate::lifeline::pair()?;
        let listener = self.listener_of(slot);
        let channel = self.slots[slot].take_channel(generation, self.config.ipc)?;
        let close_in_child = self.close_in_child(slot, channel, master_end.as_raw_fd());
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
            let ch = &self.slots[slot].channels[channel].ch;
            let ring = match (self.config.reexec, ch.fds()) {
                // A re-executed worker attaches from the descriptors.
                (true, Some(fds)) => {
                    StartRing::Fds([fds.shm, fds.worker_wake, fds.master_wake].map(|fd| fd.as_raw_fd()))
                }
                _ => match ch.worker() {
                    Ok(end) => StartRing::End(Box::new(end)),
                    // SAFETY: _exit ends the child at once (see below).
                    Err(_) => unsafe { libc::_exit(1) },
                },
            };
            let code = (self.entry)(Start { id, parent, listener, lifeline: worker_end, ring, env });
            // SAFETY: _exit ends the child without running the parent's
            // atexit handlers or flushing its copied stdio buffers.
            unsafe { libc::_exit(code) };
        }
        drop(worker_end);
        let pidfd = pidfd_open(pid)?;
        self.watch(pidfd.as_raw_fd(), Token::Pidfd(id))?;
        self.watch(master_end.as_raw_fd(), Token::Lifeline(id))?;
        if let Some(fds) = self.slots[slot].channels[channel].ch.fds() {
            self.watch(fds.master_wake.as_raw_fd(), Token::Ring(id))?;
        }
        let proc = Proc {
            id,
            pid,
            pidfd,
            lifeline: Some(master_end),
            state: ProcState::Forked,
            forked_at: Instant::now(),
            ready_at: None,
            stopping: false,
            channel,
            evicted: false,
        };
        let s = &mut self.slots[slot];
        if let Some(old) = s.current.take() {
            s.retiring.push(old);
        }
        s.current = Some(proc);
        self.emit(Event::Fork { worker: id, pid });
        Ok(())
    }
}

/// A descriptor that becomes readable when process `pid` exits, and that
/// keeps `pid` from being reused until it is closed.
fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, touches no memory of ours,
    // and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd == -1 {
        return Err(context(io::Error::last_os_error(), "pidfd_open"));
    }
    // SAFETY: the syscall just returned this descriptor and nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
