//! The master treats a worker as possibly compromised: on real processes,
//! this test plays the hostile worker. It reaches into a worker's shared
//! channel (the memfd, reopened through `/proc/<pid>/fd`) and its lifeline
//! (taken with `pidfd_getfd`), writes garbage there (or attaches descriptors
//! to what it sends the master), and kills workers in a
//! loop. Each time: the offending worker is killed and replaced, the master
//! stays responsive and cheap, its log stays short, and the port keeps
//! answering.

mod common;

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::client::Client;
use forkring_testkit::proc;
use forkring_testkit::server::HELLO;

/// Clock ticks per second of `/proc/<pid>/stat` CPU times on Linux.
const TICKS_PER_SEC: u64 = 100;

/// The worker processes of `server`.
fn workers(server: &Server) -> Vec<i32> {
    proc::children(server.pid())
}

/// Waits until `server` has `n` workers and every one of them has said it
/// is ready (a `ready` event with its pid in the log).
fn wait_ready(server: &Server, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let log = server.log_text();
        let pids = workers(server);
        let all_ready = pids.iter().all(|pid| {
            let tag = format!("pid={pid}");
            log.lines().any(|l| l.contains(": ready ") && l.split(' ').any(|w| w == tag))
        });
        if pids.len() == n && all_ready {
            return;
        }
        assert!(Instant::now() < deadline, "{n} ready workers expected within {timeout:?}\n{}", server.log_text());
        thread::sleep(Duration::from_millis(10));
    }
}

/// The master's CPU time in seconds so far.
fn cpu_secs(pid: i32) -> f64 {
    proc::stat(pid).map_or(0.0, |s| s.cpu_ticks as f64 / TICKS_PER_SEC as f64)
}

/// Answers `n` requests on fresh connections (each may land on any worker).
fn serves(server: &Server, n: usize) {
    for i in 0..n {
        let mut c = Client::connect(server.addr);
        let r = c.get("/");
        assert_eq!((r.status, &r.body[..]), (200, HELLO), "request {i}\n{}", server.log_text());
    }
}

/// A rolling reload completes: every slot gets a new ready worker.
fn reload_completes(server: &Server, slots: usize, timeout: Duration) {
    let before = server.log_text().lines().filter(|l| l.contains(": ready ")).count();
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + timeout;
    loop {
        let now = server.log_text().lines().filter(|l| l.contains(": ready ")).count();
        if now >= before + slots {
            return;
        }
        assert!(Instant::now() < deadline, "reload not done within {timeout:?}\n{}", server.log_text());
        thread::sleep(Duration::from_millis(10));
    }
}

/// The path under `/proc/<pid>/fd` of the worker's shared channel (memfd).
fn channel_fd(pid: i32) -> std::path::PathBuf {
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains("memfd:forkring-ipc")) {
            return e.path();
        }
    }
    panic!("worker {pid} has no forkring-ipc memfd");
}

/// Overwrites the whole of the worker's shared channel with `byte`.
fn scribble(pid: i32, byte: u8) {
    let file = OpenOptions::new().read(true).write(true).open(channel_fd(pid)).expect("reopen the memfd");
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: a fresh shared mapping of the whole file; nothing in this
    // process holds a reference into it.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, file.as_raw_fd(), 0)
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
    // SAFETY: `p` maps `len` writable bytes; the worker and the master see
    // the garbage, which is the point.
    unsafe {
        std::ptr::write_bytes(p.cast::<u8>(), byte, len);
        libc::munmap(p, len);
    }
}

/// A duplicate of the worker's end of its lifeline (the one
/// `SOCK_SEQPACKET` socket it holds), taken with `pidfd_getfd`.
fn lifeline_of(pid: i32) -> OwnedFd {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    assert!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    // SAFETY: the syscall just returned this descriptor.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let Ok(n) = e.file_name().to_string_lossy().parse::<RawFd>() else { continue };
        if !std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")) {
            continue;
        }
        // SAFETY: pidfd_getfd takes a pidfd, a descriptor number of that
        // process and flags, and returns a new descriptor.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), n, 0) } as RawFd;
        if fd < 0 {
            continue;
        }
        // SAFETY: the syscall just returned this descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut ty: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `ty` and `len` are live locals of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&mut ty as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 && ty == libc::SOCK_SEQPACKET {
            return fd;
        }
    }
    panic!("worker {pid} has no lifeline socket");
}

/// Sends datagrams on `fd` for `how_long`, as fast as the socket takes
/// them; returns how many went.
fn flood(fd: &OwnedFd, msg: &[u8], how_long: Duration) -> u64 {
    let end = Instant::now() + how_long;
    let mut sent = 0;
    while Instant::now() < end {
        // SAFETY: sends `msg.len()` bytes from a live slice.
        let n = unsafe {
            libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        if n > 0 {
            sent += 1;
        } else {
            thread::sleep(Duration::from_micros(50));
        }
    }
    sent
}

/// What every scenario checks once the hostile worker did its worst: it is
/// gone and replaced, the master logged about it once and stayed cheap, and
/// the cluster serves and reloads.
fn check_recovered(server: &Server, victim: i32, cpu_before: f64, window: Duration) {
    let evicted = server.wait_line(&[&format!("(pid {victim})"), "killing it"], Duration::from_secs(3));
    assert!(proc::wait_gone(victim, Duration::from_secs(3)), "worker {victim} still runs after: {evicted}");
    wait_ready(server, 2, Duration::from_secs(5));
    assert!(!workers(server).contains(&victim), "worker {victim} was not replaced");
    let log = server.log_text();
    let about_victim = log.lines().filter(|l| l.contains(&format!("pid {victim})"))).count();
    assert!(about_victim <= 3, "{about_victim} log lines about worker {victim}\n{log}");
    assert!(log.lines().count() < 200, "the log grew to {} lines\n{log}", log.lines().count());
    let cpu = cpu_secs(server.pid()) - cpu_before;
    println!(
        "worker {victim} replaced; master CPU {cpu:.2} s in {:.1} s; {about_victim} log lines about it, {} in all",
        window.as_secs_f64(),
        log.lines().count()
    );
    assert!(
        cpu < 0.5 * window.as_secs_f64().max(1.0),
        "the master used {cpu:.2} s of CPU in {window:?} of hostility\n{log}"
    );
    serves(server, 20);
    reload_completes(server, 2, Duration::from_secs(5));
    serves(server, 20);
}

#[test]
fn garbage_over_a_workers_shared_channel_gets_it_replaced() {
    for byte in [0xff, 0x5a] {
        let server = Server::start(&["--workers", "2"]);
        wait_ready(&server, 2, Duration::from_secs(5));
        let victim = workers(&server)[0];
        let cpu = cpu_secs(server.pid());
        let started = Instant::now();
        scribble(victim, byte);
        // The demo's master reads every worker's counters every second, and
        // every ring every turn: all of it garbage now.
        thread::sleep(Duration::from_millis(1500));
        check_recovered(&server, victim, cpu, started.elapsed());
    }
}

#[test]
fn a_lifeline_flood_of_garbage_gets_the_worker_replaced() {
    let server = Server::start(&["--workers", "2"]);
    wait_ready(&server, 2, Duration::from_secs(5));
    let victim = workers(&server)[0];
    let fd = lifeline_of(victim);
    let cpu = cpu_secs(server.pid());
    let started = Instant::now();
    // The master must stay responsive while the flood goes on: a reload
    // asked for in the middle of it completes.
    let flooder = thread::spawn(move || flood(&fd, &[0xee], Duration::from_secs(2)));
    thread::sleep(Duration::from_millis(300));
    reload_completes(&server, 2, Duration::from_secs(5));
    let sent = flooder.join().unwrap();
    assert!(sent > 0);
    check_recovered(&server, victim, cpu, started.elapsed());
}

#[test]
fn lifeline_messages_out_of_order_get_the_worker_replaced() {
    for msg in [3u8, 1, 2] {
        let server = Server::start(&["--workers", "2"]);
        wait_ready(&server, 2, Duration::from_secs(5));
        let victim = workers(&server)[1];
        let fd = lifeline_of(victim);
        let cpu = cpu_secs(server.pid());
        let started = Instant::now();
        // A worker that is ready says `Ready` (3), `Online` (1) or
        // `Listening` (2) again: the protocol allows each once, in order.
        assert_eq!(flood(&fd, &[msg], Duration::from_millis(1)).min(1), 1);
        drop(fd);
        let line = server.wait_line(&["lifeline protocol broken"], Duration::from_secs(3));
        assert!(line.contains(&format!("(pid {victim})")), "{line}");
        check_recovered(&server, victim, cpu, started.elapsed());
    }
}

#[test]
fn a_worker_that_sends_the_master_descriptors_gets_replaced_and_the_master_holds_none() {
    use std::io::IoSlice;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixStream;

    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

    let server = Server::start(&["--workers", "2"]);
    wait_ready(&server, 2, Duration::from_secs(5));
    let victim = workers(&server)[0];
    let fd = lifeline_of(victim);
    let cpu = cpu_secs(server.pid());
    let started = Instant::now();
    // A byte the master would take (`Online` again), with descriptors
    // attached: a socket whose inode is then looked for among the master's.
    let (a, _b) = UnixStream::pair().unwrap();
    let inode = a.as_fd().try_clone_to_owned().map(std::fs::File::from).unwrap().metadata().unwrap().ino();
    let fds = [a.as_raw_fd(), a.as_raw_fd()];
    let iov = [IoSlice::new(&[1u8])];
    sendmsg::<()>(fd.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None).unwrap();
    let line = server.wait_line(&["sent descriptors on its lifeline"], Duration::from_secs(3));
    assert!(line.contains(&format!("(pid {victim})")), "{line}");
    let held: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .collect();
    assert!(!held.contains(&format!("socket:[{inode}]")), "the master holds the worker's socket: {held:?}");
    drop(fd);
    check_recovered(&server, victim, cpu, started.elapsed());
}

#[test]
fn workers_killed_in_a_loop_never_stop_the_cluster() {
    // A worker that was ready and then died is always replaced: killing
    // every new worker soon after it is ready, more often than the old
    // crash budget (30 in 60 s) allowed, must not stop the cluster.
    const KILLS: usize = 36;
    let mut server = Server::start(&["--workers", "8"]);
    wait_ready(&server, 8, Duration::from_secs(10));
    let mut killed = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while killed.len() < KILLS {
        assert!(server.is_running(), "the cluster stopped after {} kills\n{}", killed.len(), server.log_text());
        assert!(Instant::now() < deadline, "only {} kills in 60 s\n{}", killed.len(), server.log_text());
        // Every worker that said it is ready, 0.3 s ago or more.
        let log = server.log_text();
        for pid in log.lines().filter(|l| l.contains(": ready ")).filter_map(|l| {
            l.split("pid=").nth(1).and_then(|p| p.split(' ').next()).and_then(|p| p.parse::<i32>().ok())
        }) {
            if !killed.contains(&pid) && proc::alive(pid) {
                thread::sleep(Duration::from_millis(300));
                let _ = proc::signal(pid, libc::SIGKILL);
                killed.insert(pid);
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(200));
    assert!(server.is_running(), "the cluster stopped\n{}", server.log_text());
    wait_ready(&server, 8, Duration::from_secs(30));
    serves(&server, 20);
}
