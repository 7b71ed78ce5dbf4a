//! A master started with SIGCHLD ignored (some supervisors and shells pass
//! that on, and it survives exec) would have its workers reaped by the
//! kernel, their exit statuses lost. It resets the disposition: a killed
//! worker is reported as killed, replaced, and the master stays idle.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::Server;
use forkring_testkit::client::Client;
use forkring_testkit::proc;
use forkring_testkit::server::HELLO;

/// The pid in an event line.
fn pid_of(line: &str) -> i32 {
    let p = line.split("pid=").nth(1).expect("pid= in line");
    p.split(' ').next().unwrap().parse().expect("numeric pid")
}

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: [0] state ... [11] utime, [12] stime.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn an_inherited_ignored_sigchld_is_reset() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_forkring"));
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "2"]);
    // SAFETY: signal(2) is async-signal-safe; it runs in the child before
    // exec, and an ignored disposition survives exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::signal(libc::SIGCHLD, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = Server::spawn(cmd).unwrap_or_else(|e| panic!("{e}"));
    let victim = pid_of(&server.wait_line(&["ready 0.0"], Duration::from_secs(10)));
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    proc::signal(victim, libc::SIGKILL).unwrap();
    // The master reaped it itself: it knows the signal.
    server.wait_line(&["exit 0.0", "signal=9", "requested=false"], Duration::from_secs(5));
    server.wait_line(&["ready 0.1"], Duration::from_secs(5));
    for _ in 0..10 {
        let r = Client::connect(server.addr).get("/");
        assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
    }
    // An idle master: a second of wall time costs it little CPU time.
    let before = cpu_ticks(server.pid());
    thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(server.pid()) - before;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    assert!(spent * 5 < hz, "the master used {spent} of {hz} ticks in one idle second\n{}", server.log_text());
}
