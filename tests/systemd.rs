//! systemd integration on real processes, on both backends: the notify
//! messages (`READY=1`, `STATUS=`, `WATCHDOG=1` while healthy, `RELOADING=1`
//! with `MONOTONIC_USEC=` on SIGHUP, then `READY=1`, and `STOPPING=1`) read
//! from a `NOTIFY_SOCKET` the test binds; and socket activation through
//! `systemd-socket-activate`, which passes a listening socket to the demo
//! server for real (ignored unless asked for, and failing where the tool is
//! absent: `forkring_testkit::need`); and the unit file's restart policy
//! (`contrib/forkring.service`) applied to a cluster whose worker cannot
//! start: it exits 78 once, and the policy does not restart it.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::client::Client;
use forkring_testkit::need::{require, Need};

/// Reads datagrams until one contains `want`; returns it.
fn expect(sock: &UnixDatagram, want: &str, within: Duration, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {want:?} within {within:?}; got {seen:?}");
        sock.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if msg.contains(want) {
                return msg;
            }
        }
    }
}

/// Whether another process listens on `addr`'s port (TCP,
/// `/proc/net/tcp` or `tcp6`, a listening socket whose inode is not one of
/// this process's). The tests connect only once the tool does: the port
/// was free a moment before, and a test running beside in this process
/// may take it for the moment of its own `TcpListener::bind` to port 0
/// (which listens); a connection made into that listener's backlog is
/// reset when it drops it, and the tool, which binds the port next, never
/// sees a connection.
fn listening(addr: SocketAddr) -> bool {
    let ours: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok()).collect::<Vec<_>>())
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
        .collect();
    let table = if addr.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" };
    let text = std::fs::read_to_string(table).unwrap_or_else(|e| panic!("{table}: {e}"));
    text.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let port = f.get(1).and_then(|local| local.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
        f.get(3) == Some(&"0A")
            && port == Some(addr.port())
            && f.get(9).is_some_and(|inode| !ours.iter().any(|o| o == inode))
    })
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to write into.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[test]
fn the_master_tells_systemd_its_state() {
    let dir = std::env::temp_dir().join(format!("forkring-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut cmd = Command::new(forkring_testkit::target::binary("forkring-fixture"));
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "2"])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID");
    let server = Server::spawn(cmd).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    expect(&sock, "READY=1", Duration::from_secs(10), &mut seen);
    let serving = "STATUS=serving: 2 of 2 workers ready, 0 draining";
    if !seen.iter().any(|m| m == serving) {
        expect(&sock, serving, Duration::from_secs(5), &mut seen);
    }
    // Pings at half the interval, twice within one interval and a bit.
    expect(&sock, "WATCHDOG=1", Duration::from_millis(600), &mut seen);
    expect(&sock, "WATCHDOG=1", Duration::from_millis(600), &mut seen);

    let before = monotonic_usec();
    server.signal(libc::SIGHUP);
    let reloading = expect(&sock, "RELOADING=1", Duration::from_secs(5), &mut seen);
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"))
        .parse()
        .unwrap();
    assert!(usec >= before && usec <= monotonic_usec(), "MONOTONIC_USEC={usec}, sent after {before}");
    expect(&sock, "STATUS=replacing workers", Duration::from_secs(5), &mut seen);
    expect(&sock, "READY=1", Duration::from_secs(10), &mut seen);
    server.wait_line(&["ready 1.1"], Duration::from_secs(5));

    server.signal(libc::SIGTERM);
    expect(&sock, "STOPPING=1", Duration::from_secs(5), &mut seen);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn workers_do_not_inherit_the_masters_notification_socket() {
    let dir = std::env::temp_dir().join(format!("forkring-notify-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    // Re-executed workers: their environment at exec is what the master
    // gave them, and /proc shows it.
    let mut cmd = Command::new(forkring_testkit::target::binary("forkring-fixture"));
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "2", "--reexec"])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "10000000")
        .env_remove("WATCHDOG_PID");
    let server = Server::spawn(cmd).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    expect(&sock, "READY=1", Duration::from_secs(10), &mut seen);
    let workers = forkring_testkit::proc::descendants(server.pid());
    assert_eq!(workers.len(), 2, "{}", server.log_text());
    for pid in workers {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        for var in environ.split(|&b| b == 0) {
            let var = String::from_utf8_lossy(var);
            assert!(!var.starts_with("NOTIFY_SOCKET=") && !var.starts_with("WATCHDOG_USEC="), "worker {pid} has {var}");
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs systemd-socket-activate"]
fn socket_activation_passes_the_socket_for_real() {
    require(Need::SocketActivate);
    let tool = "/usr/bin/systemd-socket-activate";
    // A free port: systemd-socket-activate binds it itself.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = Command::new(tool);
    cmd.arg("-l").arg(format!("127.0.0.1:{port}"));
    if let Ok(b) = std::env::var("FORKRING_BACKEND") {
        cmd.args(["-E", &format!("FORKRING_BACKEND={b}")]);
    }
    cmd.arg(forkring_testkit::target::binary("forkring-fixture")).args(["--workers", "2"]);
    // The tool starts the service at the first connection, which waits in
    // the socket's backlog meanwhile and is then served: activation on
    // demand, as systemd does it.
    let first = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if let Some(stream) = listening(addr).then(|| std::net::TcpStream::connect(addr).ok()).flatten() {
                let mut c = Client::from_stream(stream);
                return c.get("/");
            }
            assert!(Instant::now() < deadline, "nothing listens on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let mut server = Server::spawn(cmd).unwrap_or_else(|e| panic!("{e}"));
    let r = first.join().unwrap();
    assert_eq!(r.status, 200, "the connection that started the service");
    assert_eq!(server.addr.port(), port);
    server.wait_line(&["using inherited socket 127.0.0.1:"], Duration::from_secs(5));
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    for _ in 0..10 {
        server.assert_healthy();
    }
    // The service manager's process became forkring (exec): stopping it
    // by its pid stops the cluster.
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()), "{}", server.log_text());
}

/// The values of `key=` in the `[Service]` section of a unit file.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    let mut section = "";
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" {
            if let Some(v) = line.strip_prefix(key).and_then(|r| r.strip_prefix('=')) {
                out.push(v.trim());
            }
        }
    }
    out
}

/// Whether systemd restarts a service that exited with `code`, by its
/// `Restart=on-failure` and `RestartPreventExitStatus=` (systemd.service(5):
/// a non-zero exit status is a failure; a status listed in
/// `RestartPreventExitStatus=` is never restarted).
fn systemd_restarts(unit: &str, code: i32) -> bool {
    assert_eq!(unit_values(unit, "Restart"), ["on-failure"], "the unit restarts on failure");
    let prevent: Vec<i32> = unit_values(unit, "RestartPreventExitStatus")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(|s| s.parse().expect("a numeric exit status"))
        .collect();
    code != 0 && !prevent.contains(&code)
}

/// The cluster under the unit's restart policy, run by the test as systemd
/// would (the test environment need not have systemd as its init to run
/// the unit): a worker that cannot start (its `--access-log` cannot be
/// opened) stops the master with status 78, and the policy stops there
/// instead of looping.
#[test]
fn a_configuration_error_stops_the_unit_instead_of_looping() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/forkring.service")).unwrap();
    let prevent = unit_values(&unit, "RestartPreventExitStatus");
    assert!(prevent.iter().any(|v| v.split_whitespace().any(|s| s == "78")), "RestartPreventExitStatus lists 78");
    // A crash is still restarted.
    assert!(systemd_restarts(&unit, 1) && systemd_restarts(&unit, 101));
    let dir = std::env::temp_dir().join(format!("forkring-unit-78-{}", std::process::id()));
    let log_path = dir.join("missing/access.log");
    let mut starts = 0;
    let mut statuses = Vec::new();
    loop {
        starts += 1;
        let mut cmd = Command::new(forkring_testkit::target::binary("forkring-fixture"));
        cmd.args(["--listen", "127.0.0.1:0", "--workers", "2", "--access-log", log_path.to_str().unwrap()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().expect("spawn the fixture");
        let out = forkring_testkit::proc::output_within(
            child,
            Duration::from_secs(10),
            "a worker that cannot open its access log",
        );
        let log = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code().expect("an exit status, not a signal");
        statuses.push(code);
        assert!(log.contains("access.log"), "the reason is in the log\n{log}");
        let forks = log.lines().filter(|l| l.contains(": fork ")).count();
        assert!(forks <= 2, "{forks} forks: the master respawned the slots\n{log}");
        if !systemd_restarts(&unit, code) || starts == 3 {
            break;
        }
    }
    assert_eq!(statuses, [78], "one start, stopped by status 78");
}

#[test]
#[ignore = "needs systemd-socket-activate"]
fn socket_activation_passes_several_sockets_and_all_are_served() {
    require(Need::SocketActivate);
    require(Need::Ipv6Loopback);
    let dir = std::env::temp_dir().join(format!("forkring-activate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("f.sock");
    let v4 = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let v6 = TcpListener::bind("[::1]:0").unwrap().local_addr().unwrap();
    let mut cmd = Command::new("/usr/bin/systemd-socket-activate");
    cmd.args(["-l", &v4.to_string(), "-l", &v6.to_string(), "-l", sock.to_str().unwrap()]);
    if let Ok(b) = std::env::var("FORKRING_BACKEND") {
        cmd.args(["-E", &format!("FORKRING_BACKEND={b}")]);
    }
    cmd.arg(forkring_testkit::target::binary("forkring-fixture")).args(["--workers", "2"]);
    // The tool starts the service at the first connection.
    let first = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(stream) = listening(v4).then(|| std::net::TcpStream::connect(v4).ok()).flatten() {
                return Client::from_stream(stream).get("/");
            }
            assert!(Instant::now() < deadline, "nothing listens on {v4}");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let mut server = Server::spawn(cmd).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.join().unwrap().status, 200);
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    for a in [v4.to_string(), v6.to_string(), format!("unix:{}", sock.display())] {
        server.wait_line(&[&format!("using inherited socket {a}")], Duration::from_secs(5));
    }
    for a in [v4, v6] {
        assert_eq!(Client::connect(a).get("/").status, 200, "{a}");
    }
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(&mut s, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()), "{}", server.log_text());
    let _ = std::fs::remove_dir_all(&dir);
}
