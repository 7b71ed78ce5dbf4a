//! A worker holds only what is its own: it maps its own shared-memory
//! channel and no other slot's, and besides stdin, stdout and stderr it
//! holds its listener, its lifeline and its channel's descriptors, and
//! nothing the master had open (here a file the master inherited from the
//! test). Read from /proc on real processes, with plain fork and with
//! re-exec, at start, after a rolling reload and after a respawn; and with
//! plain fork where memfds are refused (the anonymous mapping), where
//! re-exec is refused.

mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::client::Client;
use forkring_testkit::proc;
use forkring_testkit::server::HELLO;

/// The descriptor number the master inherits the marker file on.
const EXTRA_FD: i32 = 47;
/// How a channel's memfd mapping shows in /proc/<pid>/maps and /fd.
const MEMFD: &str = "/memfd:forkring-ipc";
/// How an anonymous shared mapping shows in /proc/<pid>/maps.
const ANON_SHARED: &str = "/dev/zero (deleted)";

/// The pid in an event line.
fn pid_of(line: &str) -> i32 {
    let p = line.split("pid=").nth(1).expect("pid= in line");
    p.split(' ').next().unwrap().parse().expect("numeric pid")
}

/// The demo server with `args`, inheriting `extra` as [`EXTRA_FD`] (not
/// close-on-exec): a descriptor its master holds that no worker needs.
/// With `no_memfd`, a seccomp filter makes `memfd_create` fail with ENOSYS.
fn start(args: &[&str], extra: &File, no_memfd: bool) -> Result<Server, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_forkring"));
    cmd.args(["--listen", "127.0.0.1:0"]).args(args);
    let fd = extra.as_raw_fd();
    // Classic BPF: load the syscall number (offset 0 of seccomp_data); if
    // it is memfd_create, fail it with ENOSYS; allow everything else.
    let filter = [
        libc::sock_filter { code: 0x20, jt: 0, jf: 0, k: 0 },
        libc::sock_filter { code: 0x15, jt: 0, jf: 1, k: libc::SYS_memfd_create as u32 },
        libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32 },
        libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
    ];
    // SAFETY: dup2 and prctl are async-signal-safe; they run in the child
    // before exec, and the filter program outlives the prctl call.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, EXTRA_FD) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if no_memfd {
                let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1
                    || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog)
                        == -1
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Server::spawn(cmd)
}

/// What is wrong with worker `pid`'s mappings and descriptors, if anything.
/// `memfd`: whether channels are memfds (or anonymous mappings).
fn check_worker(pid: i32, marker: &str, memfd: bool) -> Result<(), String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).map_err(|e| format!("maps of {pid}: {e}"))?;
    let mapping = if memfd { MEMFD } else { ANON_SHARED };
    let channels: Vec<&str> = maps.lines().filter(|l| l.contains(mapping)).collect();
    if channels.len() != 1 {
        return Err(format!("worker {pid} maps {} channels, not 1: {channels:#?}", channels.len()));
    }
    let (mut sockets, mut memfds, mut eventfds, mut loops) = (0, 0, 0, 0);
    let mut unexpected = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(|e| format!("fds of {pid}: {e}"))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let fd: i32 = entry.file_name().to_string_lossy().parse().unwrap_or(-1);
        // A descriptor closed since the listing has no link any more.
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        let target = target.to_string_lossy().into_owned();
        match target.as_str() {
            _ if (0..=2).contains(&fd) => {}
            t if t.starts_with("socket:") => sockets += 1,
            t if t.starts_with(MEMFD) => memfds += 1,
            "anon_inode:[eventfd]" => eventfds += 1,
            // The worker's own event loop.
            "anon_inode:[io_uring]" | "anon_inode:[eventpoll]" => loops += 1,
            _ => unexpected.push(format!("{fd} -> {target}")),
        }
        if target == marker {
            unexpected.push(format!("{fd} -> the master's marker file"));
        }
    }
    // Listener and lifeline; the memfd; the channel's two eventfds and the
    // loop's own wake-up; one io_uring or epoll instance.
    let counts = (sockets, memfds, eventfds, loops);
    if !unexpected.is_empty()
        || sockets != 2
        || memfds != usize::from(memfd)
        || !(2..=3).contains(&eventfds)
        || loops > 1
    {
        return Err(format!(
            "worker {pid}: (sockets, memfds, eventfds, loops) = {counts:?}, unexpected: {unexpected:#?}"
        ));
    }
    Ok(())
}

/// Checks every worker in `lines` (ready lines), retrying for a short while:
/// a connection just closed may still be open in a worker.
fn check_workers(server: &Server, lines: &[String], marker: &str, memfd: bool) {
    for line in lines {
        let pid = pid_of(line);
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match check_worker(pid, marker, memfd) {
                Ok(()) => break,
                Err(e) if Instant::now() >= deadline => panic!("{line}: {e}\n{}", server.log_text()),
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// A request on a connection the server closes.
fn get_closing(server: &Server) {
    let mut c = Client::connect(server.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
}

/// A fresh marker file for the master to hold, in a directory of its own;
/// returns the directory, the file and its path.
fn marker(name: &str) -> (std::path::PathBuf, File, String) {
    let dir = std::env::temp_dir().join(format!("forkring-isolation-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("marker");
    let file = File::create(&path).unwrap();
    (dir, file, path.to_string_lossy().into_owned())
}

/// Three workers: each maps one channel and holds only its own
/// descriptors, at start, after a reload and after a respawn.
fn workers_hold_only_their_own(name: &str, mode: &[&str], memfd: bool) {
    let (dir, marker_file, marker) = marker(name);
    let mut args = vec!["--workers", "3"];
    args.extend(mode);
    let server = start(&args, &marker_file, !memfd).unwrap_or_else(|e| panic!("{e}"));
    // The master does hold the marker: the workers must not.
    let held = std::fs::read_link(format!("/proc/{}/fd/{EXTRA_FD}", server.pid()));
    assert_eq!(held.ok().map(|p| p.to_string_lossy().into_owned()), Some(marker.clone()));

    let ready = |gens: [u64; 3]| -> Vec<String> {
        (0..3).map(|s| server.wait_line(&[&format!("ready {s}.{}", gens[s])], Duration::from_secs(10))).collect()
    };
    let lines = ready([0, 0, 0]);
    check_workers(&server, &lines, &marker, memfd);
    get_closing(&server);

    // A rolling reload: each slot gets a new worker and channel while the
    // old one drains.
    server.signal(libc::SIGHUP);
    let lines = ready([1, 1, 1]);
    for s in 0..3 {
        server.wait_line(&[&format!("exit {s}.0"), "requested=true"], Duration::from_secs(10));
    }
    check_workers(&server, &lines, &marker, memfd);
    get_closing(&server);

    // A respawn: slot 1's worker dies, its replacement reuses the channel.
    proc::signal(pid_of(&lines[1]), libc::SIGKILL).unwrap();
    let lines = ready([1, 2, 1]);
    check_workers(&server, &lines, &marker, memfd);
    get_closing(&server);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plain_fork_workers_hold_only_their_own() {
    workers_hold_only_their_own("plain", &[], true);
}

#[test]
fn reexec_workers_hold_only_their_own() {
    workers_hold_only_their_own("reexec", &["--reexec"], true);
}

#[test]
fn without_memfd_plain_fork_workers_hold_only_their_own() {
    workers_hold_only_their_own("anonymous", &[], false);
}

#[test]
fn without_memfd_reexec_is_refused() {
    let (dir, file, _) = marker("refused");
    let err = match start(&["--workers", "1", "--reexec"], &file, true) {
        Ok(server) => panic!("re-exec started without memfds\n{}", server.log_text()),
        Err(e) => e,
    };
    assert!(err.contains("re-exec needs a memfd"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
