//! The processes the harness starts, and what `/proc` says about them.
//!
//! Every process the harness starts (a server's master, each worker it
//! learns of) is put in one registry with its start time, so that the end of
//! the run, a panic or Ctrl-C kills exactly those processes by pid, and
//! never a process that later reused a pid. The harness is a child
//! subreaper: a worker orphaned by a killed master becomes its child, so it
//! can neither escape nor linger as somebody else's zombie.
//!
//! Beside the registry: the lifecycle every harness gives a server it
//! starts ([`wait_ready`] after the start, [`stop`] at the end: SIGTERM,
//! then SIGKILL for what is left of its tree), the CPU time and memory of a
//! process tree ([`tree_usage`], what `make bench` charges a server), a free
//! loopback port, and finding programs on `PATH`.
//!
//! Reading `/proc` about one process (state, parent, descendants, memory),
//! signals by pid and reaping are `forkring_testkit::proc`'s; this module
//! keeps the harness's own policy (the registry, the interrupt handler, the
//! subreaper, the stop sequence) and what only the harness asks (sockets
//! held, CPU pinning, children's CPU time).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use forkring_testkit::proc::{self, alive, signal, stat, wait_gone};

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

/// Finds an executable `name` on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// A TCP port on 127.0.0.1 that nothing listens on now (the kernel's
/// choice for a socket bound to port 0, closed again). Another program can
/// take it before the caller's server does: callers that can, retry.
pub fn free_port() -> io::Result<u16> {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port())
}

/// Why a server did not become ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// The process ended first.
    Exited,
    /// The timeout passed first.
    Timeout,
}

/// Waits at most `timeout` for the just-started process `pid` to be ready,
/// as `ready` says (asked every 20 ms); fails as soon as `pid` has ended.
pub fn wait_ready(pid: i32, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<(), NotReady> {
    let deadline = Instant::now() + timeout;
    loop {
        if !alive(pid) {
            return Err(NotReady::Exited);
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(NotReady::Timeout);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How [`stop`] ended a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running.
    NotRunning,
    /// It exited on SIGTERM within the grace time.
    Terminated,
    /// It outlived the grace time and was killed.
    Killed,
}

/// Stops `pid` and everything below it: SIGTERM to `pid`, up to `grace`
/// for it to end, SIGKILL if it has not; then SIGKILL to each process that
/// was below it when the stop began and still runs (a worker its master
/// left behind). A zombie counts as ended; reaping it is its parent's work.
pub fn stop(pid: i32, grace: Duration) -> Stopped {
    if !alive(pid) {
        return Stopped::NotRunning;
    }
    let below = proc::descendants(pid);
    let _ = signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    let mut how = Stopped::Terminated;
    while alive(pid) {
        if Instant::now() >= deadline {
            let _ = signal(pid, libc::SIGKILL);
            how = Stopped::Killed;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in below {
        if alive(p) {
            let _ = signal(p, libc::SIGKILL);
        }
    }
    how
}

/// What a process tree has used: CPU time in clock ticks (user and system,
/// with what each process collected from the children it already reaped)
/// and resident memory in KiB (VmRSS), summed over `pid` and every process
/// below it.
pub fn tree_usage(pid: i32) -> (u64, u64) {
    // One pass over /proc: each process's parent and its CPU ticks.
    let mut kids: HashMap<i32, Vec<i32>> = HashMap::new();
    let mut ticks: HashMap<i32, u64> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            let Some((ppid, t)) = parent_and_ticks(p) else { continue };
            kids.entry(ppid).or_default().push(p);
            ticks.insert(p, t);
        }
    }
    let (mut cpu, mut rss) = (0, 0);
    let mut queue = std::collections::VecDeque::from([pid]);
    while let Some(p) = queue.pop_front() {
        cpu += ticks.get(&p).copied().unwrap_or(0);
        rss += proc::vm_rss_kib(p).unwrap_or(0);
        queue.extend(kids.get(&p).into_iter().flatten().copied());
    }
    (cpu, rss)
}

/// The parent of `pid` and its CPU ticks with its reaped children's
/// (`utime + stime + cutime + cstime` of `/proc/<pid>/stat`).
fn parent_and_ticks(pid: i32) -> Option<(i32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s.get(s.rfind(')')? + 2..)?.split_whitespace().collect();
    // After the command name: [0] state, [1] ppid, ..., [11] utime,
    // [12] stime, [13] cutime, [14] cstime.
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((f.get(1)?.parse().ok()?, n(11)? + n(12)? + n(13)? + n(14)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_child_is_gone_and_its_tree_was_counted() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep");
        let pid = child.id() as i32;
        let me = std::process::id() as i32;
        let (_, rss) = tree_usage(me);
        assert!(rss >= proc::vm_rss_kib(me).unwrap_or(0), "the tree holds at least this process's memory");
        assert!(rss > proc::vm_rss_kib(me).unwrap_or(0), "and the child's");
        wait_ready(pid, Duration::from_secs(1), || true).expect("a running child is ready at once");
        assert_eq!(stop(pid, Duration::from_secs(5)), Stopped::Terminated);
        let _ = child.wait();
        assert_eq!(stop(pid, Duration::from_secs(5)), Stopped::NotRunning);
        assert_eq!(wait_ready(pid, Duration::from_secs(1), || true), Err(NotReady::Exited));
    }

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port().expect("a port");
        assert!(port > 0);
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}
