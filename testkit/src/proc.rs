//! Processes as `/proc` shows them, and the few system calls a harness
//! makes on them: signals by pid, non-blocking reaps, the open-file limit.
//!
//! Pids are `i32` (`pid_t`), as the kernel has them; `Child::id()` converts
//! with `as i32`.
//!
//! Where it stops: nothing here starts a process or remembers one. Which
//! processes a harness may kill, and when, is its own policy (the test
//! `Server` kills what it spawned on drop; the stress harness keeps a
//! registry with start times).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::time::{Duration, Instant};

/// A process as `/proc/<pid>/stat` shows it.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    /// State letter: R, S, D, Z, X, T...
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Start time in clock ticks since boot: with the pid, it names one
    /// process for good.
    pub start: u64,
    /// CPU time used so far, user and system, in clock ticks
    /// (`sysconf(_SC_CLK_TCK)`, 100 per second on Linux).
    pub cpu_ticks: u64,
}

impl Stat {
    /// Whether the process has ended (zombie or dead) and serves nothing.
    pub fn is_gone(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Reads `/proc/<pid>/stat`; `None` once the process is gone.
pub fn stat(pid: i32) -> Option<Stat> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything; the fields
    // after its closing parenthesis are plain.
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: [0] state, [1] ppid, ..., [11] utime, [12] stime,
    // ..., [19] starttime.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        start: ticks(19)?,
        cpu_ticks: ticks(11)? + ticks(12)?,
    })
}

/// True while `pid` runs (exists and is neither a zombie nor dead).
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| !s.is_gone())
}

/// Every process's parent, from one pass over `/proc`.
fn parents() -> HashMap<i32, i32> {
    let mut map = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else { return map };
    for e in dir.flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) {
            if let Some(s) = stat(pid) {
                map.insert(pid, s.ppid);
            }
        }
    }
    map
}

/// The live children of `pid`, in pid order.
pub fn children(pid: i32) -> Vec<i32> {
    let mut kids: Vec<i32> = parents().into_iter().filter(|&(_, p)| p == pid).map(|(c, _)| c).collect();
    kids.retain(|&c| alive(c));
    kids.sort_unstable();
    kids
}

/// Every process below `pid` (zombies included), children before their
/// own children.
pub fn descendants(pid: i32) -> Vec<i32> {
    let map = parents();
    let mut out = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        let mut kids: Vec<i32> = map.iter().filter(|&(c, &pp)| pp == p && !out.contains(c)).map(|(&c, _)| c).collect();
        kids.sort_unstable();
        out.extend_from_slice(&kids);
        queue.extend(kids);
    }
    out
}

/// Resident memory of `pid` (`VmRSS`) in KiB.
pub fn vm_rss_kib(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Sends `sig` to `pid`. Fails once the process is gone (`ESRCH`).
///
/// The caller answers for the pid: one of its own children not yet reaped,
/// or one it read (with its start time, where reuse matters) moments ago.
pub fn signal(pid: i32, sig: i32) -> io::Result<()> {
    debug_assert!(pid > 0, "kill({pid}) would signal a process group");
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Stops `pid` (SIGSTOP) and waits, at most 100 ms, until it is stopped:
/// `kill` returns before a running process has actually stopped.
pub fn stop(pid: i32) -> bool {
    if signal(pid, libc::SIGSTOP).is_err() {
        return false;
    }
    let deadline = Instant::now() + Duration::from_millis(100);
    loop {
        if stat(pid).is_some_and(|s| s.state == 'T') {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::yield_now();
    }
}

/// Reaps `pid` if it is a child of this process that has exited. Never
/// waits.
pub fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid on one pid with WNOHANG writes only into the local
    // `status`; a pid that is not our child fails with ECHILD, which is fine.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

/// Waits until `pid` no longer runs, at most `timeout`; true if it stopped.
/// A zombie counts as stopped, but is reaped first if it is (or becomes,
/// once its parent is gone) a child of this process, so that no zombie is
/// left to a parent that never reaps.
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let me = std::process::id() as i32;
    loop {
        reap(pid);
        match stat(pid) {
            None => return true,
            Some(s) if s.is_gone() => {
                // Ours to reap (or about to be): try again; someone else's:
                // stopped all the same.
                if (s.ppid != me && alive(s.ppid)) || Instant::now() >= deadline {
                    return true;
                }
            }
            Some(_) if Instant::now() >= deadline => return false,
            Some(_) => {}
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Raises this process's open-file limit to at least `want` where it can:
/// the soft limit up to the hard one, and the hard one too where that is
/// allowed (root). Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    let get = || {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one rlimit into the local it is given.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        (rc == 0).then_some(lim)
    };
    let set = |lim: libc::rlimit| {
        // SAFETY: setrlimit reads one rlimit from the local it is given.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 }
    };
    let Some(lim) = get() else { return 0 };
    if lim.rlim_cur >= want {
        return lim.rlim_cur;
    }
    if lim.rlim_max < want && set(libc::rlimit { rlim_cur: want, rlim_max: want }) {
        return want;
    }
    set(libc::rlimit { rlim_cur: want.min(lim.rlim_max), rlim_max: lim.rlim_max });
    get().map_or(lim.rlim_cur, |l| l.rlim_cur)
}

/// Waits at most `timeout` for `child` (a cluster's master whose stderr is
/// piped) to exit, and returns its output. Past the timeout it kills the
/// master and its workers (learned by pid before the master dies: they
/// hold the stderr pipe that reading the output waits to see closed) and
/// panics with `what` and the log.
pub fn output_within(mut child: std::process::Child, timeout: Duration, what: &str) -> std::process::Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let workers = descendants(child.id() as i32);
            let _ = child.kill();
            for pid in workers {
                let _ = signal(pid, libc::SIGKILL);
            }
            let out = child.wait_with_output().expect("output");
            panic!("{what}: still running after {timeout:?}\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_seen() {
        let me = std::process::id() as i32;
        assert!(alive(me));
        let s = stat(me).expect("own stat");
        assert!(!s.is_gone());
        assert!(vm_rss_kib(me).is_some_and(|k| k > 0));
        assert!(descendants(s.ppid).contains(&me));
    }

    #[test]
    fn a_child_is_a_descendant_until_reaped() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep");
        let pid = child.id() as i32;
        let me = std::process::id() as i32;
        assert!(children(me).contains(&pid));
        assert!(descendants(me).contains(&pid));
        signal(pid, libc::SIGKILL).expect("kill the child");
        assert!(wait_gone(pid, Duration::from_secs(5)), "child gone after SIGKILL");
        assert!(!alive(pid));
        assert!(child.try_wait().is_err() || stat(pid).is_none(), "reaped by wait_gone");
    }

    #[test]
    fn nofile_never_drops() {
        let before = raise_nofile(0);
        assert!(raise_nofile(before) >= before);
    }
}
