//! Binary upgrade on real processes, on both backends: SIGUSR2 makes the
//! master start the binary from disk (two builds that differ in their
//! version string: copies of the demo binary with different build tags
//! stamped into them), hand it the listening sockets, and drain and exit
//! once the new master's workers serve, while keep-alive and
//! connection-per-request clients lose no request. A binary that cannot
//! run leaves the old master serving and says why; two SIGUSR2s make one
//! upgrade; a Unix socket file survives the hand-over; systemd hears
//! `MAINPID=` the new pid, and no `STOPPING=1`.
//!
//! The new master outlives the master the test started: the test process
//! makes itself a child subreaper, so that the new master becomes its child
//! when the old one exits, and kills and reaps it by pid at the end.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::client::Client;
use forkring_testkit::proc;

/// The marker the demo binary keeps its build tag behind.
const TAG_MARKER: &[u8] = b"@(#)forkring-build-tag=";

/// A scratch directory for one test's binaries.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("forkring-upgrade-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Installs at `dst` a copy of the demo binary whose build tag is `tag`,
/// by rename, as an installer replaces a running binary.
fn install_build(dst: &Path, tag: &str) {
    let mut bytes = std::fs::read(forkring_testkit::target::binary("forkring-fixture")).unwrap();
    let at =
        bytes.windows(TAG_MARKER.len()).position(|w| w == TAG_MARKER).expect("the build-tag marker") + TAG_MARKER.len();
    assert!(
        bytes[at..].windows(TAG_MARKER.len()).all(|w| w != TAG_MARKER),
        "the build-tag marker appears twice in the binary"
    );
    bytes[at..at + 40].fill(0);
    bytes[at..at + tag.len()].copy_from_slice(tag.as_bytes());
    install(dst, &bytes, 0o755);
}

/// Writes `bytes` to `dst` with `mode`, by rename.
fn install(dst: &Path, bytes: &[u8], mode: u32) {
    let tmp = dst.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, dst).unwrap();
}

/// The new master of an upgrade: killed with its workers and reaped on drop.
struct Adopted(i32);

impl Drop for Adopted {
    fn drop(&mut self) {
        let kids = proc::descendants(self.0);
        // Our child (we are its subreaper) until reaped: the pid is its own.
        let _ = proc::signal(self.0, libc::SIGKILL);
        for k in &kids {
            let _ = proc::signal(*k, libc::SIGKILL);
        }
        proc::wait_gone(self.0, Duration::from_secs(5));
        for k in kids {
            proc::wait_gone(k, Duration::from_secs(5));
        }
    }
}

/// Makes this process the reaper of orphaned descendants (the new master
/// once the old one exits).
fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0);
}

/// Starts `bin` (a stamped copy of the demo) with `args`.
fn start(bin: &Path, args: &[&str], env: &[(&str, &Path)]) -> Server {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Server::spawn(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// A test's set-up: this process the reaper of orphans (the new master),
/// a scratch directory `name`, and build `one` installed in it as
/// `forkring`. Returns the directory and the binary's path.
fn build_one(name: &str) -> (PathBuf, PathBuf) {
    become_subreaper();
    let dir = scratch(name);
    let bin = dir.join("forkring");
    install_build(&bin, "one");
    (dir, bin)
}

/// [`build_one`], serving with two workers on a loopback port once both
/// are ready.
fn serving_build_one(name: &str) -> (PathBuf, PathBuf, Server) {
    let (dir, bin) = build_one(name);
    let server = start(&bin, &["--listen", "127.0.0.1:0", "--workers", "2"], &[]);
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    (dir, bin, server)
}

/// Waits for the hand-over and returns the new master's pid.
fn upgraded(server: &Server) -> i32 {
    let line = server.wait_line(&["upgraded pid="], Duration::from_secs(30));
    line.rsplit("upgraded pid=").next().unwrap().trim().parse().unwrap()
}

/// `GET /version` on a fresh connection.
fn version(addr: SocketAddr) -> String {
    let mut c = Client::connect(addr);
    let r = c.get("/version");
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

/// What the load clients saw.
#[derive(Default)]
struct Seen {
    ok: u64,
    failed: Vec<String>,
    /// Versions in the order they were first answered.
    versions: Vec<String>,
}

/// Runs `GET /version` clients until `stop`: `keepalive` on persistent
/// connections (a new one when the server says `Connection: close`), and
/// `close` with a connection per request.
fn load(
    addr: SocketAddr,
    keepalive: usize,
    close: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Seen>>, Vec<thread::JoinHandle<()>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut threads = Vec::new();
    for i in 0..keepalive + close {
        let keep = i < keepalive;
        let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
        threads.push(thread::spawn(move || {
            let request: &[u8] = if keep {
                b"GET /version HTTP/1.1\r\nHost: t\r\n\r\n"
            } else {
                b"GET /version HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            };
            let mut conn: Option<Client> = None;
            while !stop.load(Ordering::Relaxed) {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                        Ok(s) => conn.insert(Client::from_stream(s)),
                        Err(e) => {
                            seen.lock().unwrap().failed.push(format!("connect: {e}"));
                            continue;
                        }
                    },
                };
                let result = c.try_send(request).and_then(|()| c.try_response_within(false, Duration::from_secs(5)));
                let mut s = seen.lock().unwrap();
                match result {
                    Ok(r) if r.status == 200 => {
                        s.ok += 1;
                        let v = String::from_utf8_lossy(&r.body).trim().to_owned();
                        if !s.versions.contains(&v) {
                            s.versions.push(v);
                        }
                        if !keep || r.header("Connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                            conn = None;
                        }
                    }
                    Ok(r) => {
                        s.failed.push(format!("status {}", r.status));
                        conn = None;
                    }
                    Err(e) => {
                        s.failed.push(format!("{} client: {e}", if keep { "keep-alive" } else { "close" }));
                        conn = None;
                    }
                }
            }
        }));
    }
    (seen, threads)
}

/// Waits (at most 10 s) until what the load has seen satisfies `cond`.
fn wait_seen(seen: &Mutex<Seen>, what: &str, cond: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        {
            let s = seen.lock().unwrap();
            if cond(&s) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 10 s ({} answered, versions {:?}, failed {:?})",
                s.ok,
                s.versions,
                s.failed
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_upgrade_switches_builds_without_losing_a_request() {
    let (dir, bin, mut server) = serving_build_one("load");
    server.wait_line(&["ready 0.0"], Duration::from_secs(10));
    assert_eq!(version(server.addr), "forkring 0.1.0 (build one)\n");

    let stop = Arc::new(AtomicBool::new(false));
    let (seen, threads) = load(server.addr, 6, 3, Arc::clone(&stop));
    wait_seen(&seen, "the load answered by build one", |s| !s.versions.is_empty());
    install_build(&bin, "two");
    server.signal(libc::SIGUSR2);
    let new = Adopted(upgraded(&server));
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "the old master's exit: {status:?}\n{}", server.log_text());
    // The new build alone serves now, still under the same load.
    let at_exit = seen.lock().unwrap().ok;
    wait_seen(&seen, "build two answering the load, 20 answers after the old master's exit", |s| {
        s.versions.len() > 1 && s.ok >= at_exit + 20 && s.ok > 50
    });
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    assert!(
        seen.failed.is_empty(),
        "{} failed of {}: {:?}\n{}",
        seen.failed.len(),
        seen.ok + seen.failed.len() as u64,
        seen.failed,
        server.log_text()
    );
    assert_eq!(seen.versions, ["forkring 0.1.0 (build one)", "forkring 0.1.0 (build two)"], "{}", server.log_text());
    assert!(seen.ok > 50, "only {} requests answered", seen.ok);
    assert_eq!(version(server.addr), "forkring 0.1.0 (build two)\n");
    assert!(proc::alive(new.0));
    let log = server.log_text();
    assert!(
        log.contains(&format!("forkring[{}] info: started by a binary upgrade from pid {}", new.0, server.pid())),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    drop(new);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_upgrade_keeps_the_old_master_serving_and_says_why() {
    let (dir, bin, mut server) = serving_build_one("fail");

    // A binary that exits at once.
    install(&bin, b"#!/bin/sh\necho 'not today' >&2\nexit 1\n", 0o755);
    server.signal(libc::SIGUSR2);
    let line = server.wait_line(&["upgrade failed pid="], Duration::from_secs(10));
    assert!(line.contains("exited with code 1 before it was ready"), "{line}");
    server.wait_line(&["not today"], Duration::from_secs(5));
    server.wait_line(&["upgrade failed (new master pid", "the old master keeps serving"], Duration::from_secs(5));
    server.assert_healthy();
    assert_eq!(version(server.addr), "forkring 0.1.0 (build one)\n");

    // A file that cannot be executed.
    install(&bin, b"not a program\n", 0o644);
    server.signal(libc::SIGUSR2);
    let line = server.wait_line(&["could not be executed"], Duration::from_secs(10));
    assert!(line.contains("ermission denied"), "{line}");
    server.assert_healthy();
    assert_eq!(version(server.addr), "forkring 0.1.0 (build one)\n");
    let log = server.log_text();
    assert_eq!(log.matches("upgrade failed pid=").count(), 2, "{log}");

    // The failures leave nothing behind: a good binary takes over.
    install_build(&bin, "two");
    server.signal(libc::SIGUSR2);
    let new = Adopted(upgraded(&server));
    assert!(server.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", server.log_text());
    assert_eq!(version(server.addr), "forkring 0.1.0 (build two)\n");
    drop(new);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_upgrade_refuses_a_binary_others_could_have_written() {
    let (dir, bin, mut server) = serving_build_one("writable");
    install_build(&bin, "two");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o777)).unwrap();
    server.signal(libc::SIGUSR2);
    let line = server.wait_line(&["upgrade failed:", "refusing to execute"], Duration::from_secs(10));
    assert!(line.contains("writable by its group or others (mode 777)"), "{line}");
    server.assert_healthy();
    assert_eq!(version(server.addr), "forkring 0.1.0 (build one)\n");
    // The same file, made private, is executed.
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    server.signal(libc::SIGUSR2);
    let new = Adopted(upgraded(&server));
    assert!(server.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", server.log_text());
    assert_eq!(version(server.addr), "forkring 0.1.0 (build two)\n");
    drop(new);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_quick_sigusr2_make_one_upgrade() {
    let (dir, bin, mut server) = serving_build_one("twice");
    install_build(&bin, "two");
    // A request in flight keeps an old worker, and so the old master,
    // busy for 2 s: the upgrade itself may take only milliseconds.
    let mut slow = server.connect();
    slow.send(b"GET /delay?ms=2000 HTTP/1.1\r\nHost: t\r\n\r\n");
    thread::sleep(Duration::from_millis(100));
    // Two at once (the kernel may merge them into one), then one more
    // while the upgrade is under way or the old master drains.
    server.signal(libc::SIGUSR2);
    server.signal(libc::SIGUSR2);
    server.wait_line(&["upgrade started pid="], Duration::from_secs(10));
    server.signal(libc::SIGUSR2);
    let new = Adopted(upgraded(&server));
    assert_eq!(slow.response().status, 200, "the request in flight during the upgrade");
    assert!(server.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", server.log_text());
    // Anything late from the second signal has had time to show.
    thread::sleep(Duration::from_millis(300));
    let log = server.log_text();
    assert_eq!(log.matches("upgrade: starting").count(), 1, "{log}");
    assert_eq!(log.matches("started by a binary upgrade").count(), 1, "{log}");
    assert!(
        log.contains("upgrade: one is under way") || log.contains("upgrade: the cluster is shutting down"),
        "{log}"
    );
    assert_eq!(version(server.addr), "forkring 0.1.0 (build two)\n");
    drop(new);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_unix_socket_file_goes_to_the_new_master() {
    let (dir, bin) = build_one("unix");
    let sock = dir.join("web.sock");
    let log_path = dir.join("log");
    let mut child = Command::new(&bin)
        .args(["--listen", &format!("unix:{}", sock.display()), "--workers", "2"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    // Killed with its workers if the test fails before it exits.
    let old = Adopted(child.id() as i32);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let wait_for = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = log();
            if let Some(l) = text.lines().find(|l| l.contains(what)) {
                return l.to_owned();
            }
            assert!(Instant::now() < deadline, "no {what:?} in the log\n{text}");
            thread::sleep(Duration::from_millis(10));
        }
    };
    let ask = |path: &Path| -> String {
        let mut s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /version HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.rsplit("\r\n\r\n").next().unwrap().to_owned()
    };
    wait_for("ready 1.0");
    wait_for("ready 0.0");
    assert_eq!(ask(&sock), "forkring 0.1.0 (build one)\n");
    install_build(&bin, "two");
    proc::signal(child.id() as i32, libc::SIGUSR2).unwrap();
    let line = wait_for("upgraded pid=");
    let new = Adopted(line.rsplit("upgraded pid=").next().unwrap().trim().parse().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the old master still runs 20 s after the upgrade\n{}", log());
        thread::sleep(Duration::from_millis(10));
    };
    // Reaped: its pid is no longer ours to signal.
    std::mem::forget(old);
    assert!(status.success(), "{status:?}\n{}", log());
    assert!(sock.exists(), "the old master removed the socket file it handed over\n{}", log());
    assert_eq!(ask(&sock), "forkring 0.1.0 (build two)\n");
    // The new master removes it when it stops.
    proc::signal(new.0, libc::SIGTERM).unwrap();
    assert!(proc::wait_gone(new.0, Duration::from_secs(10)), "{}", log());
    assert!(!sock.exists(), "the new master left the socket file\n{}", log());
    // Reaped by `wait_gone`: its pid is no longer ours to signal.
    std::mem::forget(new);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn systemd_hears_the_new_main_pid() {
    let (dir, bin) = build_one("notify");
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut server = start(&bin, &["--listen", "127.0.0.1:0", "--workers", "2"], &[("NOTIFY_SOCKET", &path)]);
    let mut seen: Vec<String> = Vec::new();
    let read_until = |want: &dyn Fn(&str) -> bool, within: Duration, seen: &mut Vec<String>| {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = sock.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push(m.clone());
                if want(&m) {
                    return true;
                }
            }
        }
        false
    };
    assert!(read_until(&|m| m == "READY=1", Duration::from_secs(10), &mut seen), "{seen:?}");
    install_build(&bin, "two");
    server.signal(libc::SIGUSR2);
    assert!(
        read_until(&|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC="), Duration::from_secs(5), &mut seen),
        "{seen:?}"
    );
    let new = Adopted(upgraded(&server));
    let handover = format!("MAINPID={}\nREADY=1", new.0);
    assert!(read_until(&|m| m.starts_with(&handover), Duration::from_secs(5), &mut seen), "{seen:?}");
    assert!(server.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", server.log_text());
    read_until(&|_| false, Duration::from_millis(500), &mut seen);
    // One READY=1 at the start and one with MAINPID=: the new master does
    // not announce itself, and the old one never says it stops.
    assert_eq!(seen.iter().filter(|m| m.contains("READY=1")).count(), 2, "{seen:?}");
    assert!(!seen.iter().any(|m| m.contains("STOPPING=1")), "{seen:?}");
    // After the hand-over the new master speaks: a reload is announced.
    proc::signal(new.0, libc::SIGHUP).unwrap();
    assert!(read_until(&|m| m.starts_with("RELOADING=1"), Duration::from_secs(5), &mut seen), "{seen:?}");
    drop(new);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn re_executed_workers_keep_their_masters_build_until_the_upgrade() {
    let (dir, bin) = build_one("reexec");
    let mut server = start(&bin, &["--listen", "127.0.0.1:0", "--workers", "1", "--reexec"], &[]);
    let line = server.wait_line(&["ready 0.0 pid="], Duration::from_secs(10));
    let worker: i32 = line.rsplit("pid=").next().unwrap().trim().parse().unwrap();
    // A new build on disk, and a worker respawned before any upgrade: it
    // runs the binary its master runs, not the new file.
    install_build(&bin, "two");
    // A descendant of the server, read from its log just now.
    proc::signal(worker, libc::SIGKILL).unwrap();
    server.wait_line(&["ready 0.1"], Duration::from_secs(10));
    assert_eq!(version(server.addr), "forkring 0.1.0 (build one)\n", "{}", server.log_text());
    server.signal(libc::SIGUSR2);
    let new = Adopted(upgraded(&server));
    assert!(server.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", server.log_text());
    assert_eq!(version(server.addr), "forkring 0.1.0 (build two)\n");
    drop(new);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_upgrade_hands_over_every_listen_address() {
    forkring_testkit::need::require(forkring_testkit::need::Need::Ipv6Loopback);
    let (dir, bin) = build_one("three");
    let sock = dir.join("web.sock");
    let unix = format!("unix:{}", sock.display());
    let args = ["--listen", "127.0.0.1:0", "--listen", "[::1]:0", "--listen", &unix, "--workers", "2"];
    let mut server = start(&bin, &args, &[]);
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    server.wait_line(&["ready 0.0"], Duration::from_secs(10));
    let tcp: Vec<SocketAddr> = server
        .log_text()
        .lines()
        .filter_map(|l| l.split("listening on ").nth(1))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    assert_eq!(tcp.len(), 2, "{}", server.log_text());
    let ask_unix = || -> String {
        let mut s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /version HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.rsplit("\r\n\r\n").next().unwrap().to_owned()
    };
    for &a in &tcp {
        assert_eq!(version(a), "forkring 0.1.0 (build one)\n");
    }
    assert_eq!(ask_unix(), "forkring 0.1.0 (build one)\n");
    install_build(&bin, "two");
    server.signal(libc::SIGUSR2);
    let new = Adopted(upgraded(&server));
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "the old master's exit: {status:?}\n{}", server.log_text());
    // The new master took a socket per worker of each TCP address, and the
    // one Unix socket.
    let log = server.log_text();
    for a in &tcp {
        assert!(log.contains(&format!("using 2 inherited sockets on {a}, one per worker")), "{a}\n{log}");
    }
    assert!(log.contains(&format!("using inherited socket {unix}")), "{log}");
    for &a in &tcp {
        assert_eq!(version(a), "forkring 0.1.0 (build two)\n");
    }
    assert!(sock.exists(), "the old master removed the socket file it handed over\n{log}");
    assert_eq!(ask_unix(), "forkring 0.1.0 (build two)\n");
    proc::signal(new.0, libc::SIGTERM).unwrap();
    assert!(proc::wait_gone(new.0, Duration::from_secs(10)), "{}", server.log_text());
    assert!(!sock.exists(), "the new master left the socket file\n{}", server.log_text());
    // Reaped by `wait_gone`: its pid is no longer ours to signal.
    std::mem::forget(new);
    let _ = std::fs::remove_dir_all(&dir);
}
