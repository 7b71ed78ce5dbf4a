//! A worker that cannot start for a reason that will not change stops the
//! cluster at once with that reason, instead of being respawned forever;
//! where the same reason leaves a way out (`auto` falls back to epoll), the
//! cluster serves.
//!
//! The kernel's refusal of io_uring is made real with a seccomp filter,
//! installed in the server's process before exec (and inherited by its
//! workers), that fails `io_uring_setup` with `EPERM`, as container
//! runtimes' default profiles and `kernel.io_uring_disabled` do.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::client::Client;
use forkring_testkit::proc;
use forkring_testkit::server::HELLO;

/// `io_uring_setup`'s number: the same on every architecture (new system
/// calls share one table since Linux 5.1).
const SYS_IO_URING_SETUP: u32 = 425;

/// Makes `io_uring_setup` fail with `EPERM` in the process about to exec
/// and everything it starts.
fn deny_io_uring(cmd: &mut Command) {
    fail_io_uring_setup(cmd, libc::EPERM);
}

/// Makes `io_uring_setup` fail with `errno` in the process about to exec
/// and everything it starts. Runs between fork and exec: only system calls.
fn fail_io_uring_setup(cmd: &mut Command, errno: i32) {
    // SAFETY: the hook makes two prctl calls on data on its own stack, both
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // Offsets in `struct seccomp_data`: the syscall number first.
            let filter = [
                libc::sock_filter { code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, jt: 0, jf: 0, k: 0 },
                libc::sock_filter {
                    code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 1,
                    k: SYS_IO_URING_SETUP,
                },
                libc::sock_filter {
                    code: (libc::BPF_RET | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 0,
                    k: libc::SECCOMP_RET_ERRNO | errno as u32,
                },
                libc::sock_filter {
                    code: (libc::BPF_RET | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 0,
                    k: libc::SECCOMP_RET_ALLOW,
                },
            ];
            let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut libc::sock_filter };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn uring_refused_with_backend_uring_stops_the_cluster_at_once() {
    let mut cmd = Command::new(forkring_testkit::target::binary("forkring-fixture"));
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "2"])
        .env("FORKRING_BACKEND", "uring")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    deny_io_uring(&mut cmd);
    let started = Instant::now();
    let child = cmd.spawn().expect("spawn forkring");
    let out = proc::output_within(child, Duration::from_secs(10), "a cluster whose workers found io_uring refused");
    let took = started.elapsed();
    let log = String::from_utf8_lossy(&out.stderr);
    // EX_CONFIG, which systemd's RestartPreventExitStatus=78 does not
    // restart.
    assert_eq!(out.status.code(), Some(78), "the master exits 78\n{log}");
    assert!(log.contains("io_uring refused"), "the reason is in the log\n{log}");
    assert!(log.contains("cannot start"), "the master says the worker cannot start\n{log}");
    assert!(!log.contains(": ready "), "no worker may say it is ready\n{log}");
    // One try per slot, not a respawn loop with growing back-off.
    let forks = log.lines().filter(|l| l.contains(": fork ")).count();
    assert!(forks <= 2, "{forks} forks: the slots were respawned\n{log}");
    assert!(took < Duration::from_secs(5), "took {took:?}\n{log}");
}

#[test]
fn memory_short_at_setup_is_a_crash_to_retry_not_a_configuration_error() {
    // ENOMEM, as when the rings of workers killed a moment ago are not yet
    // freed: the slot is respawned with back-off, and only the crash
    // budget stops the cluster, with the status of what a restart may fix.
    let mut cmd = Command::new(forkring_testkit::target::binary("forkring-fixture"));
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "1"])
        .env("FORKRING_BACKEND", "uring")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    fail_io_uring_setup(&mut cmd, libc::ENOMEM);
    let child = cmd.spawn().expect("spawn forkring");
    // The crash budget stops the cluster after five tries.
    let out = proc::output_within(child, Duration::from_secs(20), "a cluster whose workers find memory short");
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the master exits 1, not 78\n{log}");
    assert!(!log.contains("cannot start"), "a shortage is not a worker that cannot start\n{log}");
    assert!(log.contains("io_uring refused"), "the reason is in the log\n{log}");
    assert_eq!(log.matches(": fork 0.").count(), 5, "five tries with back-off\n{log}");
}

#[test]
fn uring_refused_with_backend_auto_serves_on_epoll() {
    let mut cmd = Command::new(forkring_testkit::target::binary("forkring-fixture"));
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "1"]).env("FORKRING_BACKEND", "auto");
    deny_io_uring(&mut cmd);
    let server = Server::spawn(cmd).unwrap_or_else(|e| panic!("{e}"));
    let log = server.log_text();
    assert!(log.contains("backend: epoll (io_uring refused"), "{log}");
    // What was refused, the kernel it needs and the kernel running.
    assert!(
        log.contains("io_uring_setup: ")
            && log.contains("(needs Linux 6.0 or newer for the io_uring backend; this kernel is "),
        "{log}"
    );
    let mut c = Client::connect(server.addr);
    let r = c.get("/");
    assert_eq!((r.status, &r.body[..]), (200, HELLO));
}
