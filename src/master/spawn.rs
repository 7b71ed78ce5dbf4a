//! Forking a worker into a slot: what the child keeps and what it closes,
//! its death signal, its lifeline, its pidfd, and the hand-over to the
//! worker's entry (plain fork) or the `execve` of the program's binary
//! (re-exec).
//!
//! A worker may be compromised, so it gets only what it needs: its own
//! channel's mapping (every other channel is `MADV_DONTFORK` at the fork)
//! and, besides stdin, stdout and stderr, exactly its listeners (one per
//! address served), its lifeline and its channel's three descriptors; everything else is closed,
//! whoever opened it.
//!
//! Everything the child needs is prepared in the master, before the fork:
//! the descriptors to keep, the user to switch to, and for a re-exec the
//! path, arguments and environment as C strings. Between the fork and the
//! hand-over (or the `execve`) the child makes only async-signal-safe calls
//! (`prctl`, `getppid`, `close_range` or `close`, `fcntl`, `execve`,
//! `_exit`). A plain-fork worker then runs in its copy of the master, which
//! is only safe because the master is single-threaded: a plain fork from a
//! master with other threads is refused, and re-exec is the answer.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Once;
use std::time::Instant;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::Signal;

use super::slot::{Proc, ProcState};
use super::{Event, Master, Token};
use crate::ipc::Counter;
use crate::sys::context;
use crate::worker::{Credentials, Start, WorkerId};

/// Runs a worker in a freshly forked child and returns its exit code.
pub(crate) type Entry<'a> = dyn Fn(Start) -> i32 + 'a;

/// Guards the warning about workers that run as root: once per master.
static ROOT_WARNING: Once = Once::new();

/// A re-executed worker's `execve`, prepared in the master: the child only
/// passes these pointers on.
struct Exec {
    /// The program's binary, resolved in the master.
    path: CString,
    /// The strings `argv` points into.
    _args: Vec<CString>,
    /// The strings `envp` points into.
    _env: Vec<CString>,
    /// Null-terminated `argv` for `execve`.
    argv: Vec<*const libc::c_char>,
    /// Null-terminated `envp` for `execve`.
    envp: Vec<*const libc::c_char>,
}

impl Exec {
    /// The binary of this program with its arguments, and this process's
    /// environment with the worker's variables (`vars`, then the slot's
    /// `env`, each replacing an inherited value of the same name).
    fn prepare(vars: &[(&str, String)], env: &[(String, String)]) -> io::Result<Exec> {
        let cstr = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in an exec string"))
        };
        let exe = std::env::current_exe().map_err(|e| context(e, "re-exec: the program's path"))?;
        // The worker runs the master's own binary, even once a new one has
        // been installed over it (before a binary upgrade): `/proc/self/exe`
        // in the child is that inode, deleted or not.
        let own = std::path::Path::new("/proc/self/exe");
        let path = cstr(if own.exists() { own.as_os_str().as_bytes() } else { exe.as_os_str().as_bytes() })?;
        let mut args = vec![cstr(exe.as_os_str().as_bytes())?];
        for a in std::env::args_os().skip(1) {
            args.push(cstr(a.as_bytes())?);
        }
        let ours = |k: &[u8]| {
            crate::worker::is_exec_env(k)
                || vars.iter().any(|(n, _)| n.as_bytes() == k)
                || env.iter().any(|(n, _)| n.as_bytes() == k)
        };
        let entry = |k: &OsStr, v: &OsStr| cstr(&[k.as_bytes(), b"=", v.as_bytes()].concat());
        let mut envs = Vec::new();
        for (k, v) in std::env::vars_os() {
            if !ours(k.as_bytes()) {
                envs.push(entry(&k, &v)?);
            }
        }
        for (k, v) in
            vars.iter().map(|(k, v)| (*k, v.as_str())).chain(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            envs.push(entry(OsStr::new(k), OsStr::new(v))?);
        }
        let pointers = |v: &[CString]| -> Vec<*const libc::c_char> {
            v.iter().map(|s| s.as_ptr()).chain([std::ptr::null()]).collect()
        };
        Ok(Exec { argv: pointers(&args), envp: pointers(&envs), path, _args: args, _env: envs })
    }

    /// In the child: makes `keep` survive the exec and executes the binary;
    /// on failure says so on stderr and exits 127. Async-signal-safe.
    fn run(&self, keep: &[RawFd]) -> ! {
        for &fd in keep.iter().filter(|&&fd| fd > 2) {
            // A failure shows as a missing descriptor in the new worker,
            // which then refuses to start.
            let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()));
        }
        // SAFETY: the path and both arrays are null-terminated and point
        // into C strings this process keeps (the child never frees them);
        // execve returns only on failure.
        unsafe { libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()) };
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        write_stderr_errno(b"forkring: worker: execve failed, errno ", errno);
        // SAFETY: _exit ends the child at once, running nothing of the
        // parent's.
        unsafe { libc::_exit(127) }
    }
}

impl Master<'_> {
    /// The listeners the worker of `slot` accepts on, by listener index:
    /// the slot's own socket, or the listener's shared one.
    fn listeners_of(&self, slot: usize) -> Vec<RawFd> {
        let own = &self.slots[slot].listeners;
        self.listeners
            .iter()
            .enumerate()
            .filter_map(|(k, l)| own.get(k).and_then(Option::as_ref).or(l.shared.as_ref()).map(|fd| fd.as_raw_fd()))
            .collect()
    }

    /// The memfd (if the mapping has one) and the two eventfds of channel
    /// `channel` of `slot`.
    fn channel_fds(&mut self, slot: usize, channel: usize) -> (Option<RawFd>, Vec<RawFd>) {
        let ch = &mut self.slots[slot].channels[channel].ch;
        let shm = ch.fds().map(|f| f.shm.as_raw_fd());
        let end = ch.master();
        let mut wakes = vec![end.fd().as_raw_fd()];
        wakes.extend(end.producer().wake_fd().map(|n| n.fd().as_raw_fd()));
        (shm, wakes)
    }

    /// Lets the mapping of `(slot, channel)` alone into the next fork, or
    /// (`None`) none at all.
    fn inherit_only(&self, own: Option<(usize, usize)>) -> io::Result<()> {
        for (i, s) in self.slots.iter().enumerate() {
            for (j, c) in s.channels.iter().enumerate() {
                c.ch.set_inherited(own == Some((i, j))).map_err(|e| context(e, "MADV_DONTFORK on a channel"))?;
            }
        }
        Ok(())
    }

    /// Forks a worker into `slot` as its current worker; a failure is
    /// also an `Event::ForkFailed`.
    pub(super) fn spawn(&mut self, slot: usize) -> io::Result<()> {
        let r = self.fork_worker(slot);
        if let Err(e) = &r {
            self.emit(Event::ForkFailed { slot, reason: e.to_string() });
        }
        r
    }

    /// [`Master::spawn`] without the event.
    fn fork_worker(&mut self, slot: usize) -> io::Result<()> {
        if !self.config.reexec {
            refuse_if_threaded()?;
        }
        let user = self.config.user.as_deref().map(Credentials::resolve);
        warn_if_root(user.as_ref());
        let generation = self.slots[slot].next_generation;
        self.slots[slot].next_generation += 1;
        self.slots[slot].respawn_at = None;
        let id = WorkerId { slot, generation };
        let (master_end, worker_end) = crate::lifeline::pair()?;
        let listeners = self.listeners_of(slot);
        let channel = self.slots[slot].take_channel(generation, self.config.ipc)?;
        let env: Vec<(String, String)> = self.hooks.worker_env.as_ref().map(|f| f(slot)).unwrap_or_default();
        let prepared = self.prepare_child(id, channel, &listeners, worker_end.as_raw_fd(), &env);
        let (keep, exec) = match prepared {
            Ok(p) => p,
            Err(e) => {
                // No worker will use the channel.
                self.slots[slot].channels[channel].user = None;
                return Err(e);
            }
        };
        let max_fd = max_fd();
        let parent = nix::unistd::getpid();
        // SAFETY: the child makes only async-signal-safe calls until it
        // hands over to the worker's entry (plain fork, where the master is
        // single-threaded: checked above) or replaces itself with `execve`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // The death signal first, then the check for a master that died
            // before it was armed.
            if nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).is_err() || nix::unistd::getppid() != parent {
                // SAFETY: _exit ends the child at once.
                unsafe { libc::_exit(0) };
            }
            close_all_but(&keep, max_fd);
            if let Some(exec) = &exec {
                exec.run(&keep);
            }
            // Plain fork. The channel's mapping is this slot's only one in
            // the child: no other `Channel` of the master may be touched
            // here (the child leaves through `_exit`, dropping nothing).
            let ring = match self.slots[slot].channels[channel].ch.worker() {
                Ok(end) => Box::new(end),
                // SAFETY: _exit ends the child at once (see below).
                Err(_) => unsafe { libc::_exit(1) },
            };
            let code = (self.entry)(Start { id, listeners, lifeline: worker_end, ring, env, user });
            // SAFETY: _exit ends the child without running the parent's
            // atexit handlers or flushing its copied stdio buffers.
            unsafe { libc::_exit(code) };
        }
        if pid == -1 {
            let e = context(io::Error::last_os_error(), "fork");
            let _ = self.inherit_only(None);
            self.slots[slot].channels[channel].user = None;
            return Err(e);
        }
        // Hidden again at once: the master is single-threaded, so no other
        // fork saw the channel meanwhile. Should this fail, the next spawn
        // sets every channel again.
        if let Err(e) = self.inherit_only(None) {
            log::error!("{e}");
        }
        drop(worker_end);
        let pidfd = pidfd_open(pid)?;
        self.watch(pidfd.as_raw_fd(), Token::Pidfd(id))?;
        self.watch(master_end.as_raw_fd(), Token::Lifeline(id))?;
        if let Some(fds) = self.slots[slot].channels[channel].ch.fds() {
            self.watch(fds.master_wake.as_raw_fd(), Token::Ring(id))?;
        }
        let counters = self.slots[slot].channels[channel].ch.counters();
        let proc = Proc {
            id,
            pid,
            pidfd,
            lifeline: Some(master_end),
            disconnected: false,
            state: ProcState::Forked,
            forked_at: Instant::now(),
            ready_at: None,
            stopping: false,
            channel,
            evicted: false,
            beat: counters.heartbeat(),
            beat_at: Instant::now(),
            quota: self
                .config
                .recycle
                .max_requests
                .map(|n| n.saturating_add(jitter(id, self.config.recycle.max_requests_jitter))),
            requests_base: counters.get(Counter::Requests),
            ended_for: None,
        };
        let s = &mut self.slots[slot];
        if let Some(old) = s.current.take() {
            s.retiring.push(old);
        }
        s.current = Some(proc);
        self.emit(Event::Fork { worker: id, pid });
        Ok(())
    }

    /// What the child of worker `id` keeps (sorted) and, with re-exec, the
    /// `execve` it makes; sets which channel the fork lets through.
    fn prepare_child(
        &mut self,
        id: WorkerId,
        channel: usize,
        listeners: &[RawFd],
        lifeline: RawFd,
        env: &[(String, String)],
    ) -> io::Result<(Vec<RawFd>, Option<Exec>)> {
        let (shm, wakes) = self.channel_fds(id.slot, channel);
        let mut keep = vec![0, 1, 2, lifeline];
        keep.extend(listeners);
        keep.extend(shm);
        keep.extend(&wakes);
        keep.retain(|&fd| fd >= 0);
        keep.sort_unstable();
        keep.dedup();
        let exec = if self.config.reexec {
            // A re-executed worker attaches to its channel through the memfd;
            // an anonymous mapping cannot cross exec.
            let Some(f) = self.slots[id.slot].channels[channel].ch.fds() else {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "re-exec needs a memfd for the shared-memory channel, and memfd_create is refused here",
                ));
            };
            let ring = [f.shm, f.worker_wake, f.master_wake].map(|fd| fd.as_raw_fd());
            let vars = crate::worker::exec_env(id, listeners, lifeline, ring);
            Some(Exec::prepare(&vars, env)?)
        } else {
            None
        };
        // A re-executed child needs no mapping at all.
        self.inherit_only((!self.config.reexec).then_some((id.slot, channel)))?;
        Ok((keep, exec))
    }
}

/// Refuses a plain fork from a process with more than one thread: the child
/// would get only the forking thread, and a lock another thread held at the
/// fork (the allocator's, the environment's, stdout's, the user's) would
/// stay locked in it forever.
fn refuse_if_threaded() -> io::Result<()> {
    // Without /proc the count is unknown; the documented rule still holds.
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
    if threads > 1 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "the master process runs {threads} threads, and a worker forked from it could deadlock \
                 on a lock another thread holds; start workers with reexec instead \
                 (Server::reexec(true), --reexec)"
            ),
        ));
    }
    Ok(())
}

/// Warns, once per master, when workers would run as root: the master runs
/// as root and no user, or root, is configured for them.
fn warn_if_root(user: Option<&io::Result<Credentials>>) {
    let root = match user {
        None => nix::unistd::geteuid().is_root(),
        Some(Ok(c)) => c.is_root(),
        // The worker reports the failed look-up itself.
        Some(Err(_)) => false,
    };
    if root {
        ROOT_WARNING.call_once(|| {
            log::warn!("workers run as root: a compromised worker would hold every privilege; set a user for them (Server::user, --user)");
        });
    }
}

/// The highest descriptor number this process can have, plus one, for the
/// fallback that closes descriptors one by one.
pub(super) fn max_fd() -> RawFd {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    if n > 0 {
        n.min(RawFd::MAX as libc::c_long) as RawFd
    } else {
        1 << 20
    }
}

/// Closes every descriptor but those in `keep` (sorted, no duplicates):
/// `close_range` over the gaps, or `close` one by one below `max_fd` where
/// the kernel lacks it. Async-signal-safe.
pub(super) fn close_all_but(keep: &[RawFd], max_fd: RawFd) {
    let mut first: u32 = 0;
    for &fd in keep {
        let fd = fd as u32;
        if fd > first {
            close_range(first, fd - 1, max_fd);
        }
        first = fd.saturating_add(1);
    }
    close_range(first, u32::MAX, max_fd);
}

/// Closes descriptors `first..=last`. Async-signal-safe.
fn close_range(first: u32, last: u32, max_fd: RawFd) {
    // SAFETY: close_range takes two numbers and flags and touches no memory;
    // the descriptors it closes are this child's copies, which nothing in
    // it uses again.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if r == -1 {
        // ENOSYS before Linux 5.9 (or a seccomp filter): one by one.
        let end = last.min(max_fd.max(0) as u32);
        for fd in first..=end {
            crate::sys::close(fd as RawFd);
        }
    }
}

/// Writes `msg` and `errno` in decimal, and a newline, to stderr, without
/// allocating. Async-signal-safe.
pub(super) fn write_stderr_errno(msg: &[u8], errno: i32) {
    let mut buf = [0u8; 128];
    let n = msg.len().min(buf.len() - 12);
    buf[..n].copy_from_slice(&msg[..n]);
    let mut digits = [0u8; 10];
    let (mut v, mut d) = (errno.unsigned_abs(), digits.len());
    loop {
        d -= 1;
        digits[d] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let tail = &digits[d..];
    buf[n..n + tail.len()].copy_from_slice(tail);
    buf[n + tail.len()] = b'\n';
    // SAFETY: writes initialised bytes of a local buffer; a failed write
    // to stderr has nowhere to be reported.
    unsafe { libc::write(2, buf.as_ptr().cast(), n + tail.len() + 1) };
}

/// Fails at start, with a sentence naming the kernel needed, where
/// `pidfd_open` (Linux 5.3) is missing or refused: the master learns of
/// every worker's exit through it, so nothing could be supervised.
pub(super) fn require_pidfd() -> io::Result<()> {
    pidfd_open(std::process::id() as i32).map(drop).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{e}: forkring's master needs pidfd_open, in Linux 5.3 or newer (this kernel is {}) and allowed by \
                 any seccomp filter",
                crate::sys::kernel_release()
            ),
        )
    })
}

/// A descriptor that becomes readable when process `pid` exits, and that
/// keeps `pid` from being reused until it is closed.
pub(super) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
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

/// A draw from `0..=max` for worker `id`'s request quota, so that workers
/// started together are not recycled together.
fn jitter(id: WorkerId, max: u64) -> u64 {
    use std::hash::BuildHasher;
    if max == 0 {
        return 0;
    }
    // The std hasher's keys are random per process: enough to spread.
    let h = std::collections::hash_map::RandomState::new().hash_one((id.slot, id.generation, std::process::id()));
    h % max.saturating_add(1).max(1)
}
