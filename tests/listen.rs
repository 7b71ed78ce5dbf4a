//! Several listen addresses at once, on real processes, on both backends:
//! `--listen 127.0.0.1:0 --listen [::1]:0 --listen unix:PATH` in both
//! balance modes; every worker holds a socket of every address (read from
//! `/proc`), each address answers and tells the handler which one it is
//! (`Request::local`), with plain-fork and re-executed workers; and a
//! rolling reload and a scale-down and up under load over all three lose
//! nothing.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::need::{require, Need};

use forkring_testkit::scratch::ScratchDir as Dir;

/// An address the cluster serves.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Target {
    fn parse(s: &str) -> Target {
        match s.strip_prefix("unix:") {
            Some(p) => Target::Unix(PathBuf::from(p)),
            None => Target::Tcp(s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))),
        }
    }

    /// One request on a fresh connection, `Connection: close`; the whole
    /// response.
    fn request(&self, path: &str) -> std::io::Result<Vec<u8>> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut out = Vec::new();
        match self {
            Target::Tcp(a) => {
                let mut s = TcpStream::connect_timeout(a, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(req.as_bytes())?;
                s.read_to_end(&mut out)?;
            }
            Target::Unix(p) => {
                let mut s = UnixStream::connect(p)?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(req.as_bytes())?;
                s.read_to_end(&mut out)?;
            }
        }
        Ok(out)
    }

    /// The body of a `200` to `GET path`.
    fn get(&self, path: &str) -> String {
        let out = self.request(path).unwrap_or_else(|e| panic!("{self:?}: {e}"));
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(text.starts_with("HTTP/1.1 200"), "{self:?}: {text}");
        text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
    }
}

/// Starts the fixture on three addresses (IPv4, IPv6, a Unix socket in
/// `dir`) with `args`; its server and the three addresses, as logged.
fn start(dir: &Dir, args: &[&str]) -> (Server, Vec<Target>) {
    require(Need::Ipv6Loopback);
    let sock = dir.0.join("f.sock");
    let mut cmd = Command::new(forkring_testkit::target::binary("forkring-fixture"));
    cmd.args(["--listen", "127.0.0.1:0", "--listen", "[::1]:0", "--listen"])
        .arg(format!("unix:{}", sock.display()))
        .args(args);
    let server = Server::spawn(cmd).unwrap_or_else(|e| panic!("{e}"));
    let targets: Vec<Target> = server
        .log_text()
        .lines()
        .filter_map(|l| l.split("listening on ").nth(1))
        .map(|a| Target::parse(a.trim()))
        .collect();
    assert_eq!(targets.len(), 3, "three addresses logged\n{}", server.log_text());
    assert!(matches!(targets[0], Target::Tcp(SocketAddr::V4(_))), "{targets:?}");
    assert!(matches!(targets[1], Target::Tcp(SocketAddr::V6(_))), "{targets:?}");
    assert_eq!(targets[2], Target::Unix(sock));
    (server, targets)
}

/// The pids of the workers whose `ready` lines the log holds.
fn ready_pids(server: &Server) -> Vec<u32> {
    server
        .log_text()
        .lines()
        .filter(|l| l.contains(" ready "))
        .filter_map(|l| l.split("pid=").nth(1))
        .filter_map(|p| p.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The inodes of the listening sockets in `/proc/net/{tcp,tcp6,unix}` on
/// `target` (a port, or a path).
fn listening_inodes(target: &Target) -> HashSet<u64> {
    let mut found = HashSet::new();
    match target {
        Target::Tcp(a) => {
            let file = if a.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" };
            let port = format!(":{:04X}", a.port());
            for line in std::fs::read_to_string(file).unwrap().lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                // local_address, state (0A: LISTEN), inode.
                if f.len() > 9 && f[1].ends_with(&port) && f[3] == "0A" {
                    found.insert(f[9].parse().unwrap());
                }
            }
        }
        Target::Unix(p) => {
            for line in std::fs::read_to_string("/proc/net/unix").unwrap().lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                // Flags 00010000: __SO_ACCEPTCON, a listening socket.
                if f.len() > 7 && f[3] == "00010000" && Path::new(f[7]) == p.as_path() {
                    found.insert(f[6].parse().unwrap());
                }
            }
        }
    }
    found
}

/// The socket inodes process `pid` holds.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let mut found = HashSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let Ok(link) = std::fs::read_link(e.path()) else { continue };
        let link = link.to_string_lossy().into_owned();
        if let Some(n) = link.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
            found.insert(n.parse().unwrap());
        }
    }
    found
}

/// Every worker holds a listening socket of every address, and each
/// address answers, telling the handler which address it came in on.
fn every_worker_serves_every_address(balance: &str, extra: &[&str]) {
    let dir = Dir::new(&format!("{balance}{}", extra.len()));
    let mut args = vec!["--workers", "2", "--balance", balance];
    args.extend(extra);
    let (mut server, targets) = start(&dir, &args);
    server.wait_line(&["ready 0.0"], Duration::from_secs(10));
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    let pids = ready_pids(&server);
    assert_eq!(pids.len(), 2, "{}", server.log_text());
    for t in &targets {
        let listening = listening_inodes(t);
        // Reuseport: a socket per worker on each TCP address; shared, and
        // a Unix socket: one.
        let want = if balance == "reuseport" && matches!(t, Target::Tcp(_)) { 2 } else { 1 };
        assert_eq!(listening.len(), want, "{t:?}: listening sockets {listening:?}");
        for &pid in &pids {
            let held = socket_inodes(pid);
            assert!(!listening.is_disjoint(&held), "worker pid {pid} holds no listening socket of {t:?}");
        }
        for _ in 0..20 {
            let body = t.get("/ip");
            let local = body.trim().rsplit(" -> ").next().unwrap_or("").to_owned();
            match t {
                Target::Tcp(a) => assert_eq!(local, a.to_string(), "{body}"),
                Target::Unix(p) => assert!(local.contains(&*p.to_string_lossy()), "{body}"),
            }
            assert_eq!(t.get("/"), "Hello, World!");
        }
    }
    server.assert_healthy();
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()), "{}", server.log_text());
    let Target::Unix(sock) = &targets[2] else { unreachable!() };
    assert!(!sock.exists(), "the socket file is removed on exit");
}

#[test]
fn three_addresses_are_served_by_every_worker_with_reuseport() {
    every_worker_serves_every_address("reuseport", &[]);
}

#[test]
fn three_addresses_are_served_by_re_executed_workers() {
    every_worker_serves_every_address("reuseport", &["--reexec"]);
}

#[test]
fn three_addresses_are_served_by_every_worker_with_one_shared_socket() {
    every_worker_serves_every_address("shared", &[]);
}

/// Fresh connections to each of `targets` in turn until `stop`; a refused
/// or reset connection, or anything but a `200`, is a failure.
fn load(targets: Vec<Target>, stop: Arc<AtomicBool>, failures: Arc<AtomicU64>, served: Arc<AtomicU64>) {
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        match targets[i % targets.len()].request("/") {
            Ok(r) if r.starts_with(b"HTTP/1.1 200") => served.fetch_add(1, Ordering::SeqCst),
            _ => failures.fetch_add(1, Ordering::SeqCst),
        };
        i += 1;
    }
}

/// Waits until `served` grows by `n`, for at most 10 s.
fn more(served: &AtomicU64, n: u64, failures: &AtomicU64) {
    let target = served.load(Ordering::SeqCst) + n;
    let deadline = Instant::now() + Duration::from_secs(10);
    while served.load(Ordering::SeqCst) < target {
        assert!(Instant::now() < deadline, "the load stalled ({} failed)", failures.load(Ordering::SeqCst));
        thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until the log has `n` lines with every one of `parts`.
fn wait_lines(server: &Server, parts: &[&str], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log_text();
        if log.lines().filter(|l| parts.iter().all(|p| l.contains(p))).count() >= n {
            return;
        }
        assert!(Instant::now() < deadline, "no {n} log lines with {parts:?} within 10 s\n{log}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Reloads twice, then removes slot 1 and adds it again twice, under load
/// on all three addresses: nothing fails.
fn reload_and_scaling_lose_nothing(balance: &str) {
    let dir = Dir::new(&format!("load-{balance}"));
    let (server, targets) = start(&dir, &["--workers", "2", "--balance", balance]);
    server.wait_line(&["ready 0.0"], Duration::from_secs(10));
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..3)
        .map(|i| {
            // Each thread starts on another address.
            let mut mine = targets.clone();
            mine.rotate_left(i);
            let (stop, failures, served) = (stop.clone(), failures.clone(), served.clone());
            thread::spawn(move || load(mine, stop, failures, served))
        })
        .collect();
    more(&served, 300, &failures);
    for round in 1..=2u64 {
        server.signal(libc::SIGHUP);
        server.wait_line(&[&format!("ready 0.{round}")], Duration::from_secs(10));
        server.wait_line(&[&format!("ready 1.{round}")], Duration::from_secs(10));
        more(&served, 200, &failures);
    }
    for round in 1..=2 {
        server.signal(libc::SIGTTOU);
        wait_lines(&server, &["exit 1.", "requested=true"], round + 2);
        more(&served, 200, &failures);
        server.signal(libc::SIGTTIN);
        wait_lines(&server, &["ready 1."], round + 3);
        more(&served, 200, &failures);
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let served = served.load(Ordering::SeqCst);
    assert_eq!(failures.load(Ordering::SeqCst), 0, "failed requests of {served}\n{}", server.log_text());
    assert!(!server.log_text().contains("requested=false"), "{}", server.log_text());
}

#[test]
fn a_reload_and_scaling_over_three_addresses_lose_nothing_with_reuseport() {
    reload_and_scaling_lose_nothing("reuseport");
}

#[test]
fn a_reload_and_scaling_over_three_addresses_lose_nothing_with_one_shared_socket() {
    reload_and_scaling_lose_nothing("shared");
}
