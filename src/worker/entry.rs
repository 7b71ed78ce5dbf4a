//! A worker process from its first instruction after `fork` (or after a
//! re-exec) to its exit: identity, environment, privileges, CPU pinning,
//! its channel, the handler, and the event loop.
//!
//! What runs between `fork` and this module (the death signal, closing
//! every descriptor the worker must not hold, the `execve` of a re-executed
//! worker) is the master's `spawn`: it is prepared in the master and done
//! in the child with async-signal-safe calls only.

use std::ffi::CString;
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
/// `slot:generation:listeners:lifeline:shm:worker_wake:master_wake`, where
/// `listeners` is a comma-separated list of descriptors.
const WORKER_ENV: &str = "FORKRING_WORKER";
/// Environment variable with the worker's slot.
const ID_ENV: &str = "FORKRING_WORKER_ID";
/// Environment variable with the worker's generation.
const GENERATION_ENV: &str = "FORKRING_WORKER_GENERATION";

/// What the master hands a worker it forked (plain fork: the child runs
/// the worker in the copy of the master's memory).
#[derive(Debug)]
pub(crate) struct Start {
    /// Which worker this is.
    pub(crate) id: WorkerId,
    /// The slot's listening sockets, one per address served (the child's
    /// inherited copies).
    pub(crate) listeners: Vec<RawFd>,
    /// The worker's end of its lifeline.
    pub(crate) lifeline: OwnedFd,
    /// The worker's end of its channel, claimed in the child.
    pub(crate) ring: Box<WorkerEnd>,
    /// Extra environment variables for this slot.
    pub(crate) env: Vec<(String, String)>,
    /// The user to switch to, looked up by the master; the error if the
    /// look-up failed (the worker reports it and exits, as a worker that
    /// cannot start).
    pub(crate) user: Option<io::Result<Credentials>>,
}

/// The variables every worker finds in its environment, and for a worker
/// that re-executes the binary, the one that tells it which descriptors it
/// was handed (`ring`: the memfd and the two eventfds of its channel).
/// Built by the master before it forks.
pub(crate) fn exec_env(
    id: WorkerId,
    listeners: &[RawFd],
    lifeline: RawFd,
    ring: [RawFd; 3],
) -> [(&'static str, String); 3] {
    let [shm, worker_wake, master_wake] = ring;
    let [slot, generation] = identity_env(id);
    let listeners = listeners.iter().map(|fd| fd.to_string()).collect::<Vec<_>>().join(",");
    [
        (WORKER_ENV, format!("{}:{}:{listeners}:{lifeline}:{shm}:{worker_wake}:{master_wake}", id.slot, id.generation)),
        slot,
        generation,
    ]
}

/// `FORKRING_WORKER_ID` and `FORKRING_WORKER_GENERATION` for `id`.
fn identity_env(id: WorkerId) -> [(&'static str, String); 2] {
    [(ID_ENV, id.slot.to_string()), (GENERATION_ENV, id.generation.to_string())]
}

/// What the master keeps to itself: systemd's notification socket and
/// watchdog are the master's (a worker that wrote `READY=1` or `MAINPID=`
/// there, under `NotifyAccess=all`, would speak for the service).
const MASTER_ONLY_ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC"];

/// Whether `key` of the master's environment stays out of a re-executed
/// worker's: the master sets it itself, or keeps it to itself.
pub(crate) fn is_exec_env(key: &[u8]) -> bool {
    [WORKER_ENV, ID_ENV, GENERATION_ENV].iter().chain(&MASTER_ONLY_ENV).any(|k| k.as_bytes() == key)
}

/// The worker side, right after fork: returns the exit code.
pub(crate) fn run_forked<H, F>(config: &Config, factory: &F, start: Start) -> i32
where
    H: Handler,
    F: Fn() -> H,
{
    let Start { id, listeners, lifeline, ring, env, user } = start;
    super::set_id(id);
    // The master is single-threaded, and so is this copy of it: changing
    // the environment cannot race with a reader.
    for k in MASTER_ONLY_ENV {
        std::env::remove_var(k);
    }
    for (k, v) in identity_env(id) {
        std::env::set_var(k, v);
    }
    for (k, v) in &env {
        std::env::set_var(k, v);
    }
    let user = match user.transpose() {
        Ok(user) => user,
        Err(e) => {
            // A look-up that failed (a user directory that is not up yet,
            // say) counts as a crash, not as a worker that cannot start.
            log::error!("worker {id}: {e}");
            return 1;
        }
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serve_as(config, factory, id, listeners, lifeline, Some(*ring), user.as_ref())
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

/// Runs a worker that re-executed the binary: a fresh process, which may
/// look its user up itself.
pub(crate) fn serve<H, F>(
    config: &Config,
    factory: &F,
    id: WorkerId,
    listeners: Vec<RawFd>,
    lifeline: OwnedFd,
    ring: Option<WorkerEnd>,
) -> io::Result<()>
where
    H: Handler,
    F: Fn() -> H,
{
    let user = config.user.as_deref().map(Credentials::resolve).transpose()?;
    serve_as(config, factory, id, listeners, lifeline, ring, user.as_ref())
}

/// Runs the worker: privileges, pinning, messages, handler, event loop.
fn serve_as<H, F>(
    config: &Config,
    factory: &F,
    id: WorkerId,
    listeners: Vec<RawFd>,
    lifeline: OwnedFd,
    ring: Option<WorkerEnd>,
    user: Option<&Credentials>,
) -> io::Result<()>
where
    H: Handler,
    F: Fn() -> H,
{
    super::pool::configure(config.pool, config.pool_queue, &config.admission);
    lifeline::send(lifeline.as_fd(), Msg::Online);
    let mut link = Link::new()?;
    // `Response::blocking` reaches the pool through the loop.
    link.set_spawner(super::pool::submit);
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
    // Descriptors from the master arrive on the lifeline: the loop reads
    // them when its SIGIO says there is something to read.
    link.set_lifeline(lifeline.as_raw_fd());
    super::signals::watch_lifeline(lifeline.as_raw_fd())?;
    if config.pin {
        pin_to_cpu(id.slot)?;
    }
    harden(user)?;
    // SAFETY: these descriptors are the worker's own copies of the slot's
    // sockets: inherited across fork (the copy of the master's owner in this
    // process is never dropped, the child leaves through `_exit`) or passed
    // across exec for this worker alone. The driver closes them when
    // draining.
    let listeners: Vec<OwnedFd> = listeners.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect();
    lifeline::send(lifeline.as_fd(), Msg::Listening);
    let mut handler = factory();
    // Ready only once the loop is set up: a worker whose loop cannot run
    // (io_uring refused with `--backend uring`) never says it is.
    let mut ready = false;
    let result = crate::driver::run(config, listeners, &mut handler, &link, || {
        lifeline::send(lifeline.as_fd(), Msg::Ready);
        ready = true;
    });
    match result {
        Ok(_) => {
            drop(lifeline);
            Ok(())
        }
        // A shortage (memory, descriptors) may be over by the next try:
        // a crash, respawned with back-off and counted against the budget.
        Err(e) if !ready && !is_shortage(&e) => Err(io::Error::new(e.kind(), CannotStart(e))),
        Err(e) => Err(e),
    }
}

/// Whether `e` says the machine ran short of something (memory, locked
/// memory, descriptors) rather than refused: memory can be short for a
/// moment (the kernel frees a dead worker's rings after it is gone, and
/// the rest of the machine's load comes and goes), so a replacement
/// started a little later may find it there.
/// The kind survives the context added on the way up; the number is
/// looked for too, where the error was not wrapped.
fn is_shortage(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::OutOfMemory
        || matches!(e.raw_os_error(), Some(libc::ENOMEM | libc::EAGAIN | libc::EMFILE | libc::ENFILE | libc::ENOBUFS))
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

/// Whether this process was started as a re-executed worker and has not
/// yet taken its identity from the environment.
pub(crate) fn is_reexec_worker() -> bool {
    std::env::var_os(WORKER_ENV).is_some()
}

/// What a re-executed worker was handed.
pub(crate) type Reexec = (WorkerId, Vec<RawFd>, OwnedFd, WorkerEnd);

/// In a re-executed worker: the identity and descriptors the master passed.
pub(crate) fn reexec_worker() -> io::Result<Option<Reexec>> {
    let Ok(v) = std::env::var(WORKER_ENV) else { return Ok(None) };
    std::env::remove_var(WORKER_ENV);
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("{WORKER_ENV}={v:?}: malformed"));
    let parts: Vec<&str> = v.split(':').collect();
    let &[slot, generation, listeners, lifeline, shm, worker_wake, master_wake] = parts.as_slice() else {
        return Err(bad());
    };
    let num = |p: &str| p.parse::<i64>().map_err(|_| bad());
    let (slot, generation) = (num(slot)?, num(generation)?);
    let listeners: Vec<RawFd> =
        listeners.split(',').map(|p| p.parse::<RawFd>().map_err(|_| bad())).collect::<Result<_, _>>()?;
    let fds = [num(lifeline)?, num(shm)?, num(worker_wake)?, num(master_wake)?].map(|fd| fd as RawFd);
    for &fd in listeners.iter().chain(&fds) {
        crate::sys::set_cloexec(fd, true).map_err(|e| context(e, format_args!("{WORKER_ENV}: fd {fd}")))?;
    }
    // SAFETY: the master passed these descriptors across exec for this
    // worker alone (checked open just above); each is owned once.
    let [lifeline, shm, worker_wake, master_wake] = unsafe { fds.map(|fd| OwnedFd::from_raw_fd(fd)) };
    let end = WorkerEnd::from_fds(shm, worker_wake, master_wake)?;
    let id = WorkerId { slot: slot as usize, generation: generation as u64 };
    super::set_id(id);
    Ok(Some((id, listeners, lifeline, end)))
}

/// Pins this process to CPU `slot` (modulo the CPU count).
fn pin_to_cpu(slot: usize) -> io::Result<()> {
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut set = CpuSet::new();
    set.set(slot % ncpu.min(CpuSet::count())).map_err(|e| context(e.into(), "CPU_SET"))?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| context(e.into(), "sched_setaffinity"))
}

/// The user a worker switches to. The master looks it up before it forks:
/// a name look-up reads files, may load NSS modules and takes locks, none
/// of which a freshly forked copy of a process should do.
#[derive(Clone, Debug)]
pub(crate) struct Credentials {
    /// The user's name, for messages.
    name: String,
    /// Its uid.
    uid: Uid,
    /// Its primary gid.
    gid: Gid,
    /// Every group it belongs to (the primary one included), sorted.
    groups: Vec<Gid>,
}

impl Credentials {
    /// Looks up `name` and its groups (`getgrouplist`, as `initgroups`).
    pub(crate) fn resolve(name: &str) -> io::Result<Credentials> {
        let u = User::from_name(name)
            .map_err(|e| io::Error::other(format!("look up user {name}: {e}")))?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no such user: {name}")))?;
        let cname =
            CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name with NUL"))?;
        let mut groups = nix::unistd::getgrouplist(&cname, u.gid)
            .map_err(|e| context(e.into(), format_args!("groups of user {name}")))?;
        groups.sort_by_key(|g| g.as_raw());
        groups.dedup();
        Ok(Credentials { name: name.to_owned(), uid: u.uid, gid: u.gid, groups })
    }

    /// Whether the user is root (a worker that keeps every privilege).
    pub(crate) fn is_root(&self) -> bool {
        self.uid.is_root()
    }
}

/// Locks the worker down before it reads any client input: switches to
/// `user` if there is one, and forbids gaining privileges by exec.
fn harden(user: Option<&Credentials>) -> io::Result<()> {
    if let Some(user) = user {
        drop_privileges(user)?;
        // The switch set the dumpable flag from `fs.suid_dumpable`; whatever
        // that is, another process of `user` must not ptrace this one or
        // read its memory, which began as a copy of the master's.
        nix::sys::prctl::set_dumpable(false).map_err(|e| context(e.into(), "prctl(PR_SET_DUMPABLE)"))?;
    }
    // A compromised worker gains nothing by executing a set-user-ID binary
    // or one with file capabilities.
    nix::sys::prctl::set_no_new_privs().map_err(|e| context(e.into(), "prctl(PR_SET_NO_NEW_PRIVS)"))
}

/// Switches to `user`'s uid, gid and groups, and checks that it cannot go
/// back.
fn drop_privileges(user: &Credentials) -> io::Result<()> {
    let master = nix::unistd::getppid();
    nix::unistd::setgroups(&user.groups).map_err(|e| context(e.into(), "setgroups"))?;
    nix::unistd::setresgid(user.gid, user.gid, user.gid).map_err(|e| context(e.into(), "setresgid"))?;
    nix::unistd::setresuid(user.uid, user.uid, user.uid).map_err(|e| context(e.into(), "setresuid"))?;
    // Changing credentials cleared the death signal armed right after fork:
    // arm it again. A master that died in between re-parented this process,
    // which the second look at the parent tells.
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(|e| context(e.into(), "prctl(PR_SET_PDEATHSIG)"))?;
    if nix::unistd::getppid() != master {
        return Err(io::Error::other("the master exited while the worker switched users"));
    }
    verify_dropped(user)
}

/// Checks that every uid and gid of the process is `user`'s, its groups
/// are exactly `user`'s, and (unless `user` is root) root is out of reach.
fn verify_dropped(user: &Credentials) -> io::Result<()> {
    let failed =
        |what: String| io::Error::new(io::ErrorKind::PermissionDenied, format!("switch to {}: {what}", user.name));
    let u = nix::unistd::getresuid().map_err(|e| context(e.into(), "getresuid"))?;
    let g = nix::unistd::getresgid().map_err(|e| context(e.into(), "getresgid"))?;
    if [u.real, u.effective, u.saved] != [user.uid; 3] {
        return Err(failed(format!("uids are {}/{}/{}", u.real, u.effective, u.saved)));
    }
    if [g.real, g.effective, g.saved] != [user.gid; 3] {
        return Err(failed(format!("gids are {}/{}/{}", g.real, g.effective, g.saved)));
    }
    let mut groups = nix::unistd::getgroups().map_err(|e| context(e.into(), "getgroups"))?;
    groups.sort_by_key(|g| g.as_raw());
    groups.dedup();
    if groups != user.groups {
        return Err(failed(format!("groups are {groups:?}")));
    }
    if !user.uid.is_root() && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(failed("it could become root again".to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shortage_is_told_apart_from_a_refusal_through_added_context() {
        let enomem = io::Error::from_raw_os_error(libc::ENOMEM);
        assert!(is_shortage(&enomem));
        assert!(is_shortage(&crate::sys::context(enomem, "io_uring refused")));
        assert!(is_shortage(&io::Error::from_raw_os_error(libc::EMFILE)));
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        assert!(!is_shortage(&crate::sys::context(eperm, "io_uring refused")));
        assert!(!is_shortage(&io::Error::from_raw_os_error(libc::EINVAL)));
    }
}
