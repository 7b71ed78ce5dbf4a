//! A worker process from its first instruction after `fork` (or after a
//! re-exec) to its exit: identity, the death signal, environment,
//! privileges, CPU pinning, its channel, the handler, and the event loop.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::{Gid, Pid, Uid, User};

use super::WorkerId;
use crate::config::Config;
use crate::driver::Link;
use crate::http::Handler;
use crate::ipc::WorkerEnd;
use crate::lifeline::{self, Msg};
use crate::sys::context;

/// Environment variable that marks a re-executed worker:
/// `slot:generation:listener:lifeline:shm:worker_wake:master_wake`.
const WORKER_ENV: &str = "FORKRING_WORKER";

/// What the master hands a worker it forked.
#[derive(Debug)]
pub(crate) struct Start {
    /// Which worker this is.
    pub(crate) id: WorkerId,
    /// The master's pid, to catch a master that died before the death
    /// signal was armed.
    pub(crate) parent: i32,
    /// The slot's listening socket (the child's inherited copy).
    pub(crate) listener: RawFd,
    /// The worker's end of its lifeline.
    pub(crate) lifeline: OwnedFd,
    /// The worker's shared-memory channel.
    pub(crate) ring: StartRing,
    /// Extra environment variables for this slot.
    pub(crate) env: Vec<(String, String)>,
}

/// How a forked worker gets its channel: claimed in the child, or (re-exec)
/// as descriptors handed across exec.
#[derive(Debug)]
pub(crate) enum StartRing {
    /// Claimed from the inherited mapping.
    End(Box<WorkerEnd>),
    /// The memfd and the two eventfds, for a re-executed worker.
    Fds([RawFd; 3]),
}

/// The worker side, right after fork: returns the exit code.
pub(crate) fn run_forked<H, F>(config: &Config, factory: &F, start: Start) -> i32
where
    H: Handler,
    F: Fn() -> H,
{
    let Start { id, parent, listener, lifeline, ring, env } = start;
    if nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).is_err() || nix::unistd::getppid().as_raw() != parent {
        // The master died before the death signal was armed.
        return 0;
    }
    super::set_id(id);
    std::env::set_var("FORKRING_WORKER_ID", id.slot.to_string());
    std::env::set_var("FORKRING_WORKER_GENERATION", id.generation.to_string());
    for (k, v) in &env {
        std::env::set_var(k, v);
    }
    let end = match ring {
        StartRing::Fds(fds) => return reexec(id, listener, lifeline, fds),
        StartRing::End(end) => end,
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serve(config, factory, id, listener, lifeline, Some(*end))
    })) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            log::error!("worker {id}: {e}");
            if CannotStart::is(&e) {
                super::EXIT_CANNOT_START
            } else {
                1
            }
        }
        Err(_) => 101,
    }
}

/// Runs the worker: privileges, pinning, messages, handler, event loop.
pub(crate) fn serve<H, F>(
    config: &Config,
    factory: &F,
    id: WorkerId,
    listener: RawFd,
    lifeline: OwnedFd,
    ring: Option<WorkerEnd>,
) -> io::Result<()>
where
    H: Handler,
    F: Fn() -> H,
{
    lifeline::send(lifeline.as_fd(), Msg::Online);
    let mut link = Link::new()?;
    super::signals::install()?;
    // The master blocked its signals for its signalfd, and they stay
    // blocked until the drain handler is in place: a SIGTERM that comes
    // earlier (the slot removed while its worker starts) is then a drain,
    // which serves what is queued on the listener, and not a death that
    // resets it.
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| context(e.into(), "sigprocmask"))?;
    if let Some(end) = ring {
        link.set_inbox(super::install(end));
    }
    super::signals::watch_lifeline(lifeline.as_raw_fd())?;
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
    lifeline::send(lifeline.as_fd(), Msg::Listening);
    let mut handler = factory();
    // Ready only once the loop is set up: a worker whose loop cannot run
    // (io_uring refused with `--backend uring`) never says it is.
    let mut ready = false;
    let result = crate::driver::run(config, listener, &mut handler, &link, || {
        lifeline::send(lifeline.as_fd(), Msg::Ready);
        ready = true;
    });
    match result {
        Ok(_) => {
            drop(lifeline);
            Ok(())
        }
        Err(e) if !ready => Err(io::Error::new(e.kind(), CannotStart(e))),
        Err(e) => Err(e),
    }
}

/// Why a worker could not start its event loop: an error that trying again
/// will not change.
#[derive(Debug)]
pub(crate) struct CannotStart(io::Error);

impl CannotStart {
    /// Whether `e` is a [`CannotStart`].
    pub(crate) fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<CannotStart>())
    }
}

impl std::fmt::Display for CannotStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot start: {}", self.0)
    }
}

impl std::error::Error for CannotStart {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Replaces the forked child with a fresh execution of the program, handing
/// it the worker's descriptors; returns only on failure (the exit code).
fn reexec(id: WorkerId, listener: RawFd, lifeline: OwnedFd, ring: [RawFd; 3]) -> i32 {
    use std::os::unix::process::CommandExt;
    // These descriptors must survive exec.
    for fd in [listener, lifeline.as_raw_fd(), ring[0], ring[1], ring[2]] {
        let _ = crate::sys::set_cloexec(fd, false);
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
                lifeline.as_raw_fd(),
                ring[0],
                ring[1],
                ring[2]
            ),
        )
        .exec();
    log::error!("worker {id}: exec: {err}");
    127
}

/// What a re-executed worker was handed.
pub(crate) type Reexec = (WorkerId, RawFd, OwnedFd, WorkerEnd);

/// In a re-executed worker: the identity and descriptors the master passed.
pub(crate) fn reexec_worker() -> io::Result<Option<Reexec>> {
    let Ok(v) = std::env::var(WORKER_ENV) else { return Ok(None) };
    std::env::remove_var(WORKER_ENV);
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("{WORKER_ENV}={v:?}: malformed"));
    let nums: Vec<i64> = v.split(':').map(|p| p.parse::<i64>()).collect::<Result<_, _>>().map_err(|_| bad())?;
    let &[slot, generation, listener, lifeline, shm, worker_wake, master_wake] = nums.as_slice() else {
        return Err(bad());
    };
    let fds = [listener, lifeline, shm, worker_wake, master_wake].map(|fd| fd as RawFd);
    for fd in fds {
        crate::sys::set_cloexec(fd, true).map_err(|e| context(e, format_args!("{WORKER_ENV}: fd {fd}")))?;
    }
    // SAFETY: the master passed these descriptors across exec for this
    // worker alone (checked open just above); each is owned once.
    let [lifeline, shm, worker_wake, master_wake] =
        unsafe { [fds[1], fds[2], fds[3], fds[4]].map(|fd| OwnedFd::from_raw_fd(fd)) };
    let end = WorkerEnd::from_fds(shm, worker_wake, master_wake)?;
    let id = WorkerId { slot: slot as usize, generation: generation as u64 };
    super::set_id(id);
    Ok(Some((id, fds[0], lifeline, end)))
}

/// Pins this process to CPU `slot` (modulo the CPU count).
fn pin_to_cpu(slot: usize) -> io::Result<()> {
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut set = CpuSet::new();
    set.set(slot % ncpu.min(CpuSet::count())).map_err(|e| context(e.into(), "CPU_SET"))?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| context(e.into(), "sched_setaffinity"))
}

/// Switches to `user`'s uid and gid, with that gid as the only group.
fn drop_privileges(user: &str) -> io::Result<()> {
    let u = User::from_name(user)
        .map_err(|e| io::Error::other(format!("look up user {user}: {e}")))?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no such user: {user}")))?;
    let (uid, gid): (Uid, Gid) = (u.uid, u.gid);
    nix::unistd::setgroups(&[gid]).map_err(|e| context(e.into(), "setgroups"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| context(e.into(), "setresgid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| context(e.into(), "setresuid"))?;
    Ok(())
}
