//! Binary upgrade (SIGUSR2 or [`Command::Upgrade`](super::Command)): the
//! running master starts the program's binary from disk as a new master,
//! hands it the listening sockets, and gives way once the new master's
//! workers serve. Not one listening socket is closed on the way, so no
//! connection is refused or reset: whichever process accepts it, every
//! connection lands in a queue somebody reads.
//!
//! The hand-off, step by step:
//!
//! 1. The old master prepares everything before it forks: the binary's path
//!    (recorded when the master started: `/proc/self/exe` names the old,
//!    deleted inode once the file has been replaced), its arguments and
//!    environment as C strings, and a duplicate of each descriptor to pass,
//!    numbered above every place the child will move them to, so that the
//!    moves cannot overwrite one another.
//! 2. The child makes only async-signal-safe calls: it unblocks the signals,
//!    moves the listeners to 3, 4, ... with `dup2` (which clears
//!    close-on-exec on exactly those), the hand-back channel and the
//!    metrics listener after them, closes everything else, writes its own
//!    pid into the `LISTEN_PID=` string reserved for it and executes the
//!    binary. The environment follows systemd's socket-activation protocol
//!    (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), so the new master
//!    takes the sockets as it takes systemd's, plus `FORKRING_UPGRADE_FD`
//!    (the channel), `FORKRING_UPGRADE_PARENT` (the old master's pid, which
//!    the new one checks against its parent), `FORKRING_METRICS_FD` and
//!    `FORKRING_UNIX_FILE` (the socket file's device and inode).
//! 3. If `execve` fails, the child writes `E` and the errno to the channel
//!    and exits 127; the old master logs why and keeps serving. The same
//!    holds when the new master exits (its pidfd says so), or is not ready
//!    in time (it is killed; its workers, whose parent died, drain).
//! 4. The new master starts its workers on the sockets it was given; they
//!    accept beside the old workers. Once every slot serves it writes `R`
//!    to the channel instead of telling systemd `READY=1`: the old master
//!    is still the service's main process.
//! 5. On `R` the old master tells systemd `MAINPID=` the new pid (with
//!    `READY=1`, closing the `RELOADING=1` it sent at the start), says
//!    nothing to systemd after that, closes its metrics listener, drains its
//!    own workers and exits 0. It leaves the Unix socket file, which the new
//!    master adopted when it said `R`.
//!
//! The channel is a `SOCK_SEQPACKET` socketpair, so each message arrives
//! whole; only the child holds the other end, and the old master believes
//! nothing else. One upgrade runs at a time.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::sd_notify::{self, notify};
use super::spawn::{close_all_but, max_fd, pidfd_open, write_stderr_errno};
use super::{Event, Master, Phase, Token};
use crate::listen::UnixSocketFile;
use crate::sys::context;

/// The hand-back channel's descriptor number in the new master.
const FD_VAR: &str = "FORKRING_UPGRADE_FD";
/// The old master's pid, which must be the new master's parent.
const PARENT_VAR: &str = "FORKRING_UPGRADE_PARENT";
/// The metrics listener's descriptor number in the new master.
const METRICS_VAR: &str = "FORKRING_METRICS_FD";
/// `dev:ino` of the Unix socket file the old master made.
const UNIX_VAR: &str = "FORKRING_UNIX_FILE";
/// Variables an upgrade sets, which the new master's own environment must
/// not pass on.
const VARS: [&str; 7] = [FD_VAR, PARENT_VAR, METRICS_VAR, UNIX_VAR, "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];
/// The new master says its workers serve.
const READY: u8 = b'R';
/// The child's `execve` failed; four bytes of errno follow.
const EXEC_FAILED: u8 = b'E';
/// Time the new master gets beyond its workers' ready timeout.
const GRACE: Duration = Duration::from_secs(5);
/// Digits reserved for the child's pid in `LISTEN_PID=`.
const PID_DIGITS: usize = 10;

/// The program's binary as it was started, for an upgrade to start again.
pub(super) fn own_path() -> Option<PathBuf> {
    match std::env::current_exe() {
        Ok(p) if !p.as_os_str().as_bytes().ends_with(b" (deleted)") => Some(p),
        Ok(p) => {
            log::warn!("the program's binary {} was replaced before it started: no binary upgrade", p.display());
            None
        }
        Err(e) => {
            log::warn!("the program's path is unknown ({e}): no binary upgrade");
            None
        }
    }
}

/// An upgrade under way, in the old master.
pub(super) struct Pending {
    /// The new master's pid (this master's child, not reaped, so the pid
    /// cannot be reused).
    pid: i32,
    /// Readable when the new master exits.
    pidfd: OwnedFd,
    /// This master's end of the hand-back channel; `None` after EOF.
    chan: Option<OwnedFd>,
    /// When the upgrade began.
    started: Instant,
    /// When it fails unless the new master said it is ready.
    deadline: Instant,
    /// The errno of the child's failed `execve`, when it said so.
    exec_errno: Option<i32>,
    /// Why it failed, once it did (the pid is still to be reaped).
    failed: Option<String>,
}

impl Pending {
    /// When the loop must look at the upgrade next.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.failed.is_none().then_some(self.deadline)
    }
}

/// What an old master handed this process, in a new master.
pub(super) struct Parent {
    /// The old master's pid.
    pid: i32,
    /// The hand-back channel.
    chan: OwnedFd,
    /// The Unix socket files (device and inode), adopted once this master
    /// has said it is ready.
    unix_files: Vec<(u64, u64)>,
}

/// What a new master takes from the environment an old master set: the way
/// back to it and the metrics listener. Call it before opening anything, as
/// for `LISTEN_FDS`. Nothing when this process was not started by an
/// upgrade, or when its parent is not the master that says it started it.
pub(super) fn take() -> (Option<Parent>, Option<OwnedFd>) {
    let var = |k: &str| std::env::var(k).ok();
    let (fd, parent, metrics, unix) = (var(FD_VAR), var(PARENT_VAR), var(METRICS_VAR), var(UNIX_VAR));
    for k in [FD_VAR, PARENT_VAR, METRICS_VAR, UNIX_VAR] {
        std::env::remove_var(k);
    }
    let number = |v: Option<String>| v.and_then(|v| v.parse::<i32>().ok()).filter(|&n| n > 2);
    let (Some(fd), Some(pid)) = (number(fd), number(parent)) else { return (None, None) };
    if nix::unistd::getppid().as_raw() != pid {
        log::warn!("{FD_VAR} names pid {pid}, which is not this process's parent: ignored");
        return (None, None);
    }
    let own = |fd: RawFd| -> Option<OwnedFd> {
        crate::sys::set_cloexec(fd, true).ok()?;
        // SAFETY: the old master (this process's parent, checked above)
        // placed this descriptor here for this process alone; nothing else
        // in it owns the number.
        Some(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let Some(chan) = own(fd) else { return (None, None) };
    let metrics = number(metrics).and_then(own);
    let unix_files = unix
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(|f| {
            let (dev, ino) = f.split_once(':')?;
            Some((dev.parse().ok()?, ino.parse().ok()?))
        })
        .collect();
    log::info!("started by a binary upgrade from pid {pid}");
    (Some(Parent { pid, chan, unix_files }), metrics)
}

/// Opens the binary an upgrade is about to execute and checks it: a
/// regular file owned by root or by this process's user, and writable by
/// neither its group nor others (a master running as root must not run
/// what another user could have written). Returns the open ELF file to
/// execute through its descriptor, or `None` for a script (run by name,
/// as its interpreter opens it by name).
fn checked_binary(path: &Path) -> io::Result<Option<OwnedFd>> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let refuse = |why: String| {
        io::Error::new(io::ErrorKind::PermissionDenied, format!("refusing to execute {}: {why}", path.display()))
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| context(e, format_args!("upgrade: open {}", path.display())))?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(refuse("not a regular file".to_owned()));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return Err(refuse(format!("owned by uid {}, neither root nor this process's user ({me})", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(format!("writable by its group or others (mode {:o})", meta.mode() & 0o7777)));
    }
    let mut magic = [0u8; 4];
    let elf = std::os::unix::fs::FileExt::read_exact_at(&file, &mut magic, 0).is_ok() && magic == *b"\x7fELF";
    Ok(elf.then(|| OwnedFd::from(file)))
}

/// Everything the child needs, prepared before the fork.
struct Launch {
    /// The binary's path, executed by name when it is not an ELF file (an
    /// interpreter opens a script by name anyway).
    path: CString,
    /// The binary as checked ([`checked_binary`]), executed through this
    /// descriptor, so that what runs is the file that was checked even if
    /// the path changes meanwhile; `None` for a script.
    exe: Option<OwnedFd>,
    /// The strings `argv` points into.
    _args: Vec<CString>,
    /// Null-terminated `argv`.
    argv: Vec<*const libc::c_char>,
    /// The NUL-terminated strings `envp` points into (one of them has room
    /// for the child's pid).
    _env: Vec<Vec<u8>>,
    /// Null-terminated `envp`.
    envp: Vec<*const libc::c_char>,
    /// Where in `_env` the child writes its pid: `PID_DIGITS + 1` bytes.
    pid_at: *mut u8,
    /// Descriptors to move: (a duplicate above every target, the target).
    moves: Vec<(OwnedFd, RawFd)>,
    /// What the child keeps: 0, 1, 2 and the targets.
    keep: Vec<RawFd>,
    /// The channel's number in the child.
    chan_at: RawFd,
    /// The empty signal mask.
    unblocked: SigSet,
}

impl Launch {
    /// Prepares the `execve` of `path` with this process's arguments and
    /// environment, passing `listeners` at 3, 4, ... then `chan` and
    /// `metrics`.
    fn prepare(
        path: &Path,
        listeners: &[RawFd],
        chan: RawFd,
        metrics: Option<RawFd>,
        unix_files: &[(u64, u64)],
    ) -> io::Result<Launch> {
        let cstr = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in an exec string"))
        };
        let exe = checked_binary(path)?;
        let path = cstr(path.as_os_str().as_bytes())?;
        let args = std::env::args_os().map(|a| cstr(a.as_bytes())).collect::<io::Result<Vec<_>>>()?;
        let n = listeners.len() as RawFd;
        let chan_at = 3 + n;
        let metrics_at = metrics.map(|_| chan_at + 1);
        let mut env: Vec<Vec<u8>> = Vec::new();
        let entry = |k: &OsStr, v: &OsStr| [k.as_bytes(), b"=", v.as_bytes(), b"\0"].concat();
        for (k, v) in std::env::vars_os() {
            // The new master pings systemd's watchdog itself.
            if VARS.iter().chain(&["WATCHDOG_PID"]).any(|ours| ours.as_bytes() == k.as_bytes()) {
                continue;
            }
            if k.as_bytes().contains(&0) || v.as_bytes().contains(&0) {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in an exec string"));
            }
            env.push(entry(&k, &v));
        }
        let names = vec!["listen"; listeners.len()].join(":");
        let mut ours = vec![
            ("LISTEN_FDS", n.to_string()),
            ("LISTEN_FDNAMES", names),
            (FD_VAR, chan_at.to_string()),
            (PARENT_VAR, std::process::id().to_string()),
        ];
        if let Some(at) = metrics_at {
            ours.push((METRICS_VAR, at.to_string()));
        }
        if !unix_files.is_empty() {
            let ids: Vec<String> = unix_files.iter().map(|(dev, ino)| format!("{dev}:{ino}")).collect();
            ours.push((UNIX_VAR, ids.join(",")));
        }
        for (k, v) in ours {
            env.push(entry(OsStr::new(k), OsStr::new(&v)));
        }
        let mut pid_entry = b"LISTEN_PID=".to_vec();
        let prefix = pid_entry.len();
        pid_entry.resize(prefix + PID_DIGITS + 1, 0);
        env.push(pid_entry);
        let last = env.len() - 1;
        // The heap buffer does not move when `env` does.
        let pid_at = env[last][prefix..].as_mut_ptr();
        let envp = env.iter().map(|s| s.as_ptr().cast()).chain([std::ptr::null()]).collect();
        let argv = args.iter().map(|s| s.as_ptr()).chain([std::ptr::null()]).collect();

        // Duplicates numbered above every target, so that no move
        // overwrites a descriptor still to be moved.
        let sources: Vec<(RawFd, RawFd)> = listeners
            .iter()
            .enumerate()
            .map(|(i, &fd)| (fd, 3 + i as RawFd))
            .chain([(chan, chan_at)])
            .chain(metrics.zip(metrics_at))
            .collect();
        let above = 3 + sources.len() as RawFd;
        let mut moves = Vec::with_capacity(sources.len());
        for (fd, at) in sources {
            let dup = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(above)).map_err(|e| context(e.into(), "fcntl(F_DUPFD)"))?;
            // SAFETY: fcntl just returned this new descriptor.
            moves.push((unsafe { OwnedFd::from_raw_fd(dup) }, at));
        }
        let mut keep: Vec<RawFd> = vec![0, 1, 2];
        keep.extend(moves.iter().map(|&(_, at)| at));
        // Close-on-exec: it goes with the exec it serves.
        keep.extend(exe.as_ref().map(AsRawFd::as_raw_fd));
        Ok(Launch {
            path,
            exe,
            _args: args,
            argv,
            _env: env,
            envp,
            pid_at,
            moves,
            keep,
            chan_at,
            unblocked: SigSet::empty(),
        })
    }

    /// In the child: moves the descriptors, writes its pid and executes the
    /// binary; on failure tells the old master through the channel and
    /// exits 127. Async-signal-safe.
    fn run(&self, max_fd: RawFd) -> ! {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.unblocked), None);
        for (dup, at) in &self.moves {
            // dup2 clears close-on-exec on the target: exactly the
            // descriptors handed over survive the exec.
            if nix::unistd::dup2(dup.as_raw_fd(), *at).is_err() {
                self.fail(
                    io::Error::last_os_error().raw_os_error().unwrap_or(0),
                    b"forkring: upgrade: dup2 failed, errno ",
                );
            }
        }
        close_all_but(&self.keep, max_fd);
        // SAFETY: getpid has no preconditions.
        let mut pid = unsafe { libc::getpid() } as u32;
        let mut digits = [0u8; PID_DIGITS];
        let mut d = PID_DIGITS;
        loop {
            d -= 1;
            digits[d] = b'0' + (pid % 10) as u8;
            pid /= 10;
            if pid == 0 || d == 0 {
                break;
            }
        }
        let len = PID_DIGITS - d;
        // SAFETY: `pid_at` points at `PID_DIGITS + 1` bytes of this child's
        // own copy of the environment buffer (the parent's copy is
        // untouched); `len <= PID_DIGITS`, and a NUL ends the string.
        unsafe {
            std::ptr::copy_nonoverlapping(digits[d..].as_ptr(), self.pid_at, len);
            *self.pid_at.add(len) = 0;
        }
        match &self.exe {
            // SAFETY: `exe` is open (kept by `close_all_but`), the empty
            // path with AT_EMPTY_PATH names it, and both arrays are
            // null-terminated and point into strings this child's copy of
            // the parent keeps; execveat returns only on failure.
            Some(exe) => unsafe {
                libc::syscall(
                    libc::SYS_execveat,
                    exe.as_raw_fd(),
                    c"".as_ptr(),
                    self.argv.as_ptr(),
                    self.envp.as_ptr(),
                    libc::AT_EMPTY_PATH,
                );
            },
            // SAFETY: the path and both arrays are null-terminated and point
            // into strings this child's copy of the parent keeps; execve
            // returns only on failure.
            None => unsafe {
                libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
            },
        }
        self.fail(io::Error::last_os_error().raw_os_error().unwrap_or(0), b"forkring: upgrade: execve failed, errno ")
    }

    /// In the child: reports `errno` to the old master and stderr, exits 127.
    /// Async-signal-safe.
    fn fail(&self, errno: i32, msg: &[u8]) -> ! {
        let mut m = [EXEC_FAILED, 0, 0, 0, 0];
        m[1..].copy_from_slice(&errno.to_le_bytes());
        // SAFETY: sends five bytes of a local buffer on the channel's
        // number in this child (moved there before any failure that reports
        // through it; if it is not there, the send fails harmlessly).
        unsafe { libc::send(self.chan_at, m.as_ptr().cast(), m.len(), libc::MSG_NOSIGNAL) };
        write_stderr_errno(msg, errno);
        // SAFETY: _exit ends the child at once, running nothing of the
        // parent's.
        unsafe { libc::_exit(127) }
    }
}

impl Master<'_> {
    /// Starts a binary upgrade, unless one is under way or the cluster is
    /// not serving.
    pub(super) fn start_upgrade(&mut self) {
        if self.phase != Phase::Running || self.handed_over {
            log::warn!("upgrade: the cluster is shutting down; ignored");
            return;
        }
        if let Some(u) = &self.upgrade {
            log::warn!("upgrade: one is under way (new master pid {}); ignored", u.pid);
            return;
        }
        let Some(path) = self.exe.clone() else {
            self.upgrade_failed(None, "the program's path is unknown".to_owned());
            return;
        };
        log::info!("upgrade: starting {}", path.display());
        match self.launch(&path) {
            Ok(pending) => {
                let pid = pending.pid;
                log::info!("upgrade: new master pid {pid}; waiting for its workers");
                self.upgrade = Some(pending);
                if !self.reload_notified {
                    sd_notify::reloading();
                }
                self.emit(Event::UpgradeStarted { pid });
            }
            Err(e) => self.upgrade_failed(None, e.to_string()),
        }
    }

    /// Forks and executes the new master; returns the upgrade under way.
    fn launch(&mut self, path: &Path) -> io::Result<Pending> {
        // Listener by listener: its shared socket, or every slot's own in
        // slot order (the new master groups them by address again).
        let mut listeners: Vec<RawFd> = Vec::new();
        for (k, l) in self.listeners.iter().enumerate() {
            match &l.shared {
                Some(fd) => listeners.push(fd.as_raw_fd()),
                None => listeners.extend(
                    self.slots
                        .iter()
                        .filter_map(|s| s.listeners.get(k).and_then(Option::as_ref))
                        .map(|fd| fd.as_raw_fd()),
                ),
            }
        }
        if listeners.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no listening socket to hand over"));
        }
        let (ours, theirs) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .map_err(|e| context(e.into(), "socketpair"))?;
        let unix_files: Vec<(u64, u64)> = self.unix_files.iter().map(UnixSocketFile::id).collect();
        let metrics = self.scrape.as_ref().map(|s| s.fd());
        let launch = Launch::prepare(path, &listeners, theirs.as_raw_fd(), metrics, &unix_files)?;
        let max_fd = max_fd();
        // SAFETY: the child makes only async-signal-safe calls (`Launch::run`)
        // and leaves through `execve` or `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            launch.run(max_fd);
        }
        if pid == -1 {
            return Err(context(io::Error::last_os_error(), "fork"));
        }
        drop(launch);
        drop(theirs);
        let pidfd = pidfd_open(pid)?;
        self.watch(pidfd.as_raw_fd(), Token::UpgradeExit)?;
        self.watch(ours.as_raw_fd(), Token::Upgrade)?;
        let now = Instant::now();
        Ok(Pending {
            pid,
            pidfd,
            chan: Some(ours),
            started: now,
            deadline: now + self.config.respawn.ready_timeout + GRACE,
            exec_errno: None,
            failed: None,
        })
    }

    /// Reads the hand-back channel: the new master is ready, or its
    /// `execve` failed.
    pub(super) fn upgrade_message(&mut self) {
        let Some(u) = &mut self.upgrade else { return };
        let Some(chan) = &u.chan else { return };
        let mut buf = [0u8; 16];
        let mut ready = false;
        let mut eof = false;
        loop {
            match socket::recv(chan.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => match buf[0] {
                    READY if n == 1 => ready = true,
                    EXEC_FAILED if n == 5 => {
                        u.exec_errno = Some(i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]));
                    }
                    _ => log::warn!("upgrade: unexpected message from pid {}: ignored", u.pid),
                },
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        let closed = if eof { u.chan.take() } else { None };
        let ready = ready && u.failed.is_none() && u.exec_errno.is_none();
        if let Some(c) = closed {
            self.unwatch(c.as_raw_fd());
        }
        if ready {
            self.hand_over();
        }
    }

    /// The new master serves: tell systemd its pid, drain ours, exit.
    fn hand_over(&mut self) {
        let Some(u) = self.upgrade.take() else { return };
        let took = u.started.elapsed();
        self.unwatch(u.pidfd.as_raw_fd());
        if let Some(c) = &u.chan {
            self.unwatch(c.as_raw_fd());
        }
        log::info!(
            "upgrade: new master pid {} serves ({} ms after the upgrade began); draining this master's workers",
            u.pid,
            took.as_millis()
        );
        notify(&format!("MAINPID={}\nREADY=1\nSTATUS=upgraded: new master pid {}", u.pid, u.pid));
        // From now on the new master speaks to systemd.
        sd_notify::silence();
        self.reload_notified = false;
        self.handed_over = true;
        // Scrapes go to the new master, which holds the same listener.
        if let Some(s) = self.scrape.take() {
            self.unwatch(s.fd());
        }
        self.emit(Event::Upgraded { pid: u.pid });
        // The new master is not reaped here: it outlives this process and
        // is adopted by the service manager or init.
        drop(u);
        self.stop_gracefully(std::time::Duration::ZERO);
    }

    /// The new master exited: before it was ready, that is a failed upgrade.
    pub(super) fn upgrade_exited(&mut self) {
        let Some(u) = &mut self.upgrade else { return };
        let status = match waitpid(Pid::from_raw(u.pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => format!("exited with code {code}"),
            Ok(WaitStatus::Signaled(_, sig, _)) => format!("was killed by {sig}"),
            Ok(_) => return,
            Err(e) => format!("could not be waited for ({e})"),
        };
        // A last look for the errno the child may have left.
        self.upgrade_message();
        let Some(u) = self.upgrade.take() else { return };
        self.unwatch(u.pidfd.as_raw_fd());
        if let Some(c) = &u.chan {
            self.unwatch(c.as_raw_fd());
        }
        let reason = match (&u.failed, u.exec_errno) {
            (Some(why), _) => why.clone(),
            (None, Some(errno)) => {
                format!("{} could not be executed: {}", self.exe_text(), io::Error::from_raw_os_error(errno))
            }
            (None, None) => format!("the new master {status} before it was ready"),
        };
        self.upgrade_failed(Some(u.pid), reason);
    }

    /// Kills a new master that was not ready in time; the failure is
    /// reported when it has been reaped.
    pub(super) fn upgrade_timers(&mut self, now: Instant) {
        let Some(u) = &mut self.upgrade else { return };
        if u.failed.is_some() || now < u.deadline {
            return;
        }
        let why = format!("the new master was not ready within {} s; killed it", (u.deadline - u.started).as_secs());
        log::warn!("upgrade: pid {}: {why}", u.pid);
        u.failed = Some(why);
        // Our unreaped child: its pid cannot have been reused. Its workers,
        // whose master is gone, drain and exit.
        let _ = nix::sys::signal::kill(Pid::from_raw(u.pid), nix::sys::signal::Signal::SIGKILL);
    }

    /// Shutdown while an upgrade is under way: the new master is stopped
    /// too (`sig`: SIGTERM drains it, SIGKILL stops it at once).
    pub(super) fn abandon_upgrade(&mut self, sig: nix::sys::signal::Signal) {
        let Some(u) = &mut self.upgrade else { return };
        if u.failed.is_none() {
            log::warn!("upgrade: abandoned (shutting down); sending {sig} to the new master pid {}", u.pid);
            u.failed = Some("abandoned: the cluster shut down".to_owned());
            let _ = nix::sys::signal::kill(Pid::from_raw(u.pid), sig);
        }
    }

    /// Logs and reports a failed upgrade; this master keeps serving.
    fn upgrade_failed(&mut self, pid: Option<i32>, reason: String) {
        match pid {
            Some(pid) => log::error!("upgrade failed (new master pid {pid}): {reason}; the old master keeps serving"),
            None => log::error!("upgrade failed: {reason}; the old master keeps serving"),
        }
        if self.phase == Phase::Running && !self.reload_notified {
            notify("READY=1");
        }
        self.emit(Event::UpgradeFailed { pid, reason });
    }

    fn exe_text(&self) -> String {
        self.exe.as_ref().map_or_else(|| "the binary".to_owned(), |p| p.display().to_string())
    }

    /// In a new master started by an upgrade, once every slot serves: tells
    /// the old master (instead of systemd) and adopts the Unix socket file.
    /// False when this master was not started by an upgrade, or the old one
    /// cannot be told.
    pub(super) fn tell_old_master(&mut self) -> bool {
        let Some(parent) = self.parent.take() else { return false };
        match socket::send(parent.chan.as_raw_fd(), &[READY], MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => {
                log::info!("upgrade: workers ready; the old master (pid {}) hands over", parent.pid);
                // Each Unix socket file the old master made, by the file now
                // at each of this master's Unix addresses.
                for l in &self.listeners {
                    let crate::config::ListenAddr::Unix(path) = &l.addr else { continue };
                    let Ok(meta) = std::fs::symlink_metadata(path) else { continue };
                    let id = (std::os::unix::fs::MetadataExt::dev(&meta), std::os::unix::fs::MetadataExt::ino(&meta));
                    if parent.unix_files.contains(&id) {
                        self.unix_files.push(UnixSocketFile::adopt(path.clone(), id));
                    }
                }
                true
            }
            Err(e) => {
                log::warn!("upgrade: could not tell the old master (pid {}): {e}", parent.pid);
                false
            }
        }
    }
}
