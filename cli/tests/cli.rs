//! The `forkring` binary as a user runs it: its help names the routes and
//! flags it has, and a cluster started on a free port answers `/`, `/echo`
//! and `/files/`, then stops on SIGTERM with status 0.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use forkring_testkit::http::{read_response, Response};

/// Every flag the server takes, as `--help` must list them.
const FLAGS: &[&str] = &[
    "--listen",
    "--unix-mode",
    "--workers",
    "--balance",
    "--backend",
    "--header-timeout",
    "--idle-timeout",
    "--max-body",
    "--static",
    "--max-connections",
    "--drain-timeout",
    "--drain-delay",
    "--user",
    "--pin",
    "--reexec",
    "--no-respawn",
    "--metrics",
    "--access-log",
    "--worker-timeout",
    "--max-requests",
    "--max-requests-jitter",
    "--max-worker-rss",
    "--admission",
    "--pool-target",
    "--loop-target",
    "--pool-limit",
    "--log",
    "--check-uring",
    "--help",
    "--version",
];

fn forkring() -> Command {
    Command::new(env!("CARGO_BIN_EXE_forkring"))
}

#[test]
fn help_lists_the_routes_and_exactly_the_flags_the_server_has() {
    let out = forkring().arg("--help").output().expect("run forkring --help");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).expect("UTF-8 help");
    for route in ["GET /, HEAD /", "POST /echo", "/files/PATH", "404"] {
        assert!(help.contains(route), "the help names {route:?}\n{help}");
    }
    // Routes of the test fixture are not the product's.
    for route in ["/sleep", "/delay", "/stream", "/upload", "/workers", "/broadcast", "/ip", "/version"] {
        assert!(!help.contains(route), "the help names the fixture's {route}\n{help}");
    }
    for signal in ["TERM", "HUP", "USR2"] {
        assert!(help.contains(signal), "the help names SIG{signal}\n{help}");
    }
    let mut listed: Vec<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')' || c == ';')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .filter(|w| !w.contains('<'))
        .collect();
    listed.sort_unstable();
    listed.dedup();
    let mut want = FLAGS.to_vec();
    want.sort_unstable();
    assert_eq!(listed, want, "\n{help}");
}

#[test]
fn a_bad_flag_is_one_line_and_status_64() {
    let out = forkring().args(["--workers", "0"]).output().expect("run forkring");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("forkring: ") && err.contains("--workers"), "{err}");
}

#[test]
fn a_configuration_that_cannot_serve_exits_78() {
    let dir = std::env::temp_dir().join(format!("forkring-cli-config-{}", std::process::id()));
    let missing = dir.join("missing");
    let missing_log = dir.join("missing/access.log");
    let not_a_socket = dir.join("file");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&not_a_socket, b"x").unwrap();
    let unix = format!("unix:{}", not_a_socket.display());
    for args in [
        vec!["--listen", "127.0.0.1:0", "--static", missing.to_str().unwrap()],
        vec!["--listen", "not an address"],
        vec!["--listen", unix.as_str()],
        // The worker cannot start (it cannot open its access log): the
        // master stops with its status.
        vec!["--listen", "127.0.0.1:0", "--workers", "2", "--access-log", missing_log.to_str().unwrap()],
    ] {
        let out = forkring().args(&args).stdin(Stdio::null()).output().expect("run forkring");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{args:?}\n{err}");
        assert!(err.lines().any(|l| l.starts_with("forkring: ")), "{args:?}: the reason is said\n{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_address_in_use_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = forkring().args(["--listen", &addr]).stdin(Stdio::null()).output().expect("run forkring");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn version_names_the_server() {
    let out = forkring().arg("--version").output().expect("run forkring --version");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("forkring {}\n", env!("CARGO_PKG_VERSION")));
}

/// A running server, killed (SIGKILL) and reaped if a test fails midway.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// Every log line so far.
    log: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `forkring` on a free loopback port with `args` and waits
    /// until it logs its address and a worker is ready.
    fn start(args: &[&str]) -> Server {
        let mut child = forkring()
            .args(["--listen", "127.0.0.1:0", "--workers", "1"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn forkring");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), log: rx };
        let mut addr = None;
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while addr.is_none() || !seen.contains(" info: ready 0.") {
            let left = deadline.saturating_duration_since(Instant::now());
            match server.log.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.split("listening on ").nth(1) {
                        addr = Some(a.trim().parse().expect("a socket address"));
                    }
                    seen.push_str(&line);
                    seen.push('\n');
                }
                Err(_) => panic!("forkring did not serve within 10 s\n{seen}"),
            }
        }
        assert!(seen
            .lines()
            .next()
            .is_some_and(|l| l.ends_with(&format!("info: forkring {}", env!("CARGO_PKG_VERSION")))));
        server.addr = addr.unwrap();
        server
    }

    /// One request on a fresh connection.
    fn ask(&self, request: &[u8]) -> Response {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request).expect("send");
        read_response(&mut s, &mut Vec::new(), false, Duration::from_secs(10)).expect("a response")
    }

    /// SIGTERM to the master, then its exit status (within 10 s).
    fn stop(mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "forkring still runs 10 s after SIGTERM");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn the_server_answers_hello_echo_and_files_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("forkring-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.txt"), b"a file\n").unwrap();
    let server = Server::start(&["--static", dir.to_str().unwrap()]);

    let r = server.ask(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, &r.body[..]), (200, &b"Hello, World!"[..]));
    let r =
        server.ask(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/x-test\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!((r.status, &r.body[..], r.header("Content-Type")), (200, &b"hello"[..], Some("text/x-test")));
    let r = server.ask(b"GET /files/a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, &r.body[..]), (200, &b"a file\n"[..]));
    let r = server.ask(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, r.header("Allow")), (405, Some("POST")));
    // The fixture's routes are not served here.
    let r = server.ask(b"GET /sleep?ms=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 404);

    let status = server.stop();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A port free on both 127.0.0.1 and ::1 just now (the kernel picks it for
/// IPv4; tried on IPv6 too, a few times).
fn port_free_on_both() -> u16 {
    for _ in 0..20 {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("::1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1");
}

/// `forkring --listen 127.0.0.1:P --listen [::1]:P --listen unix:PATH`
/// serves on all three, and stops on SIGTERM with status 0, removing the
/// socket file.
#[test]
fn repeated_listen_serves_ipv4_ipv6_and_a_unix_socket() {
    assert!(std::net::TcpListener::bind("[::1]:0").is_ok(), "needs an IPv6 loopback address");
    let dir = std::env::temp_dir().join(format!("forkring-cli-listen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("f.sock");
    let port = port_free_on_both();
    let (v4, v6) = (format!("127.0.0.1:{port}"), format!("[::1]:{port}"));
    let unix = format!("unix:{}", sock.display());
    let mut child = forkring()
        .args(["--listen", &v4, "--listen", &v6, "--listen", &unix, "--workers", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn forkring");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut server = Server { child, addr: v4.parse().unwrap(), log: rx };
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(seen.contains(" info: ready 0.") && seen.contains(" info: ready 1.")) {
        match server.log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => panic!("forkring did not serve within 10 s\n{seen}"),
        }
    }
    for a in [&v4, &v6, &unix] {
        assert!(seen.contains(&format!("listening on {a}\n")), "{a}\n{seen}");
    }
    let request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    for addr in [v4.parse::<SocketAddr>().unwrap(), v6.parse().unwrap()] {
        server.addr = addr;
        for _ in 0..10 {
            let r = server.ask(request);
            assert_eq!((r.status, &r.body[..]), (200, &b"Hello, World!"[..]), "{addr}");
        }
    }
    for _ in 0..10 {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect to the unix socket");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut out).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("Hello, World!"), "{unix}: {text}");
    }
    let status = server.stop();
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "the socket file is removed on exit");
    let _ = std::fs::remove_dir_all(&dir);
}
