//! The processes the harness starts, and what `/proc` says about them.
//!
//! Every process the harness starts (a server's master, each worker it
//! learns of) is put in one registry with its start time, so that the end of
//! the run, a panic or Ctrl-C kills exactly those processes by pid, and
//! never a process that later reused a pid. The harness is a child
//! subreaper: a worker orphaned by a killed master becomes its child, so it
//! can neither escape nor linger as somebody else's zombie.
//!
//! Reading `/proc` about one process (state, parent, descendants, memory),
//! signals by pid and reaping are `forkring_testkit::proc`'s; this module
//! keeps the harness's own policy (the registry, the interrupt handler, the
//! subreaper) and what only the harness asks (sockets held, CPU pinning).

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

use forkring_testkit::proc::{signal, stat, wait_gone};

/// The inodes of the sockets `pid` holds open.
fn socket_inodes(pid: i32) -> HashSet<u64> {
    let mut set = HashSet::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else { return set };
    for e in dir.flatten() {
        if let Ok(target) = fs::read_link(e.path()) {
            let t = target.to_string_lossy();
            if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                if let Ok(ino) = n.parse() {
                    set.insert(ino);
                }
            }
        }
    }
    set
}

/// The established TCP connections `pid` holds on local port `port`: the
/// peers' (client) ports.
///
/// Each socket descriptor of the process is duplicated into the harness
/// (`pidfd_getfd`, which root may do) and asked for its addresses and TCP
/// state: that costs microseconds, where `/proc/net/tcp` grows with every
/// connection in TIME_WAIT (100,000 lines after a few seconds of
/// connection-per-request load) and takes most of a second to read. Falls
/// back to `/proc/net/tcp` where `pidfd_getfd` is refused.
pub fn tcp_held(pid: i32, port: u16) -> BTreeSet<u16> {
    held_by_getfd(pid, port).unwrap_or_else(|| held_by_proc_net(pid, port))
}

fn held_by_getfd(pid: i32, port: u16) -> Option<BTreeSet<u16>> {
    // SAFETY: pidfd_open takes a pid and flags; returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if pidfd < 0 {
        return Some(BTreeSet::new());
    }
    let mut peers = BTreeSet::new();
    let mut refused = false;
    if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            let Some(num) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            let is_socket = fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:["));
            if !is_socket {
                continue;
            }
            // SAFETY: pidfd_getfd takes a pidfd, a target fd and flags;
            // returns a new fd in this process or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, num, 0) } as i32;
            if fd < 0 {
                if io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
                    refused = true;
                    break;
                }
                continue;
            }
            if let Some(peer) = established_peer(fd, port) {
                peers.insert(peer);
            }
            // SAFETY: closes the duplicate made above; the process keeps
            // its own descriptor.
            unsafe { libc::close(fd) };
        }
    }
    // SAFETY: closes the pidfd opened above.
    unsafe { libc::close(pidfd) };
    (!refused).then_some(peers)
}

/// The peer port of `fd` if it is an established IPv4 TCP connection on
/// local port `port`.
fn established_peer(fd: i32, port: u16) -> Option<u16> {
    // SAFETY: sockaddr_in and tcp_info are plain data; each call writes at
    // most the length it is given into a local.
    unsafe {
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len) != 0
            || addr.sin_family != libc::AF_INET as libc::sa_family_t
            || u16::from_be(addr.sin_port) != port
        {
            return None;
        }
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut ilen = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        if libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&mut info as *mut libc::tcp_info).cast(), &mut ilen)
            != 0
            || info.tcpi_state != 1
        {
            return None;
        }
        let mut peer: libc::sockaddr_in = std::mem::zeroed();
        let mut plen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::getpeername(fd, (&mut peer as *mut libc::sockaddr_in).cast(), &mut plen) != 0 {
            return None;
        }
        Some(u16::from_be(peer.sin_port))
    }
}

fn held_by_proc_net(pid: i32, port: u16) -> BTreeSet<u16> {
    let inodes = socket_inodes(pid);
    let mut peers = BTreeSet::new();
    if inodes.is_empty() {
        return peers;
    }
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else { return peers };
    for line in table.lines().skip(1) {
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[3] != "01" {
            continue;
        }
        let local_port = f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
        if local_port != Some(port) {
            continue;
        }
        let Ok(ino) = f[9].parse::<u64>() else { continue };
        if inodes.contains(&ino) {
            if let Some(peer) = f[2].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()) {
                peers.insert(peer);
            }
        }
    }
    peers
}

/// Processes to kill at the end: (pid, start time).
static REGISTRY: Mutex<Vec<(i32, u64)>> = Mutex::new(Vec::new());

/// Remembers `pid` (if it runs) as one to kill at the end.
pub fn register(pid: i32) {
    let Some(s) = stat(pid) else { return };
    let mut r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    if !r.iter().any(|&(p, st)| p == pid && st == s.start) {
        r.push((pid, s.start));
    }
}

/// SIGKILLs every registered process that still runs (and is still the
/// process registered under that pid), then reaps what it can.
pub fn kill_registered() -> usize {
    let list: Vec<(i32, u64)> = std::mem::take(&mut *REGISTRY.lock().unwrap_or_else(|e| e.into_inner()));
    let mut killed = 0;
    for &(pid, start) in &list {
        if stat(pid).is_some_and(|s| s.start == start && !s.is_gone()) && signal(pid, libc::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    for &(pid, _) in &list {
        wait_gone(pid, Duration::from_millis(500));
    }
    killed
}

/// Makes the harness the reaper of its orphaned descendants.
pub fn become_subreaper() {
    // SAFETY: prctl with an integer argument.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every
/// thread started after it) and starts a thread that, on any of them, runs
/// `clean_up(signal)` (kill what the run started, say so) and exits with
/// 130. Call before starting any other thread. Children start with an empty
/// mask (std resets it).
pub fn handle_interrupts(clean_up: impl Fn(i32) + Send + 'static) -> io::Result<()> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
    }
    // SAFETY: `set` is initialised; a null old-set is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    std::thread::Builder::new().name("signals".into()).spawn(move || loop {
        let mut sig = 0;
        // SAFETY: `set` is initialised and blocked in this thread.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        clean_up(sig);
        std::process::exit(130);
    })?;
    Ok(())
}

/// Pins the calling thread (or, in `pre_exec`, the new process) to `cpu`.
pub fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET stays within it for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Time the hypervisor has taken from `cpu` (all CPUs when `None`) since
/// boot, from `/proc/stat` (the `steal` column, in clock ticks): a latency
/// figure means little if the host kept the server's CPU from running.
pub fn steal(cpu: Option<usize>) -> Option<Duration> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let name = cpu.map_or_else(|| "cpu".to_owned(), |c| format!("cpu{c}"));
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let ticks: u64 = line.split_whitespace().nth(8)?.parse().ok()?;
    // SAFETY: sysconf takes a constant and returns a value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| Duration::from_secs_f64(ticks as f64 / hz as f64))
}
