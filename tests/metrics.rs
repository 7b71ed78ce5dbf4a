//! The master's metrics listener on a real cluster, on both backends: the
//! exposition passes `promtool check metrics` and follows the requests
//! served; `/ready` and `/live` answer, `/ready` turns 503 while the
//! cluster drains; a hostile scraper (idle connections past the cap, an
//! endless request head) neither stalls the master nor keeps a scrape from
//! working once its time is up.
//!
//! `promtool` comes with Debian's `prometheus` package: the test that runs
//! it is ignored unless asked for, and fails where `promtool` is missing
//! (`forkring_testkit::need`; CI installs it).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::need::{require, Need};

/// The metrics address the server logged.
fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server.wait_line(&["metrics on http://"], Duration::from_secs(10));
    let rest = line.split("metrics on http://").nth(1).unwrap();
    rest.trim_end_matches("/metrics").trim().parse().unwrap()
}

/// One request to the metrics listener: status, head, body.
fn scrape(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: m\r\n\r\n").as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let text = String::from_utf8(all).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("GET {path}: {text:?}"));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

/// The sum of a metric's samples over its label sets (`name{` or `name `).
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[test]
#[ignore = "needs promtool"]
fn metrics_pass_promtool_and_follow_the_requests() {
    require(Need::Promtool);
    let mut server = Server::start(&["--workers", "2", "--metrics", "127.0.0.1:0"]);
    let maddr = metrics_addr(&server);
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    let mut c = server.connect();
    for _ in 0..50 {
        assert_eq!(c.get("/").status, 200);
    }
    assert_eq!(c.get("/nope").status, 404);
    let (status, head, body) = scrape(maddr, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sum(&body, "forkring_requests_total") >= 51.0, "{body}");
    assert!(sum(&body, "forkring_request_duration_seconds_count") >= 51.0, "{body}");
    assert!(body.contains("forkring_responses_total{slot=\"0\",class=\"4xx\"}"), "{body}");
    assert!(sum(&body, "forkring_open_connections") >= 1.0, "{body}");
    assert!(body.contains("forkring_upgraded_connections{slot=\"0\"} 0"), "{body}");
    assert!(body.contains("forkring_workers{state=\"ready\"} 2"), "{body}");
    assert!(body.contains("forkring_request_duration_seconds_bucket{slot=\"1\",le=\"+Inf\"}"), "{body}");
    assert!(!body.contains("pid"), "series carry slots, never pids\n{body}");
    assert_eq!(scrape(maddr, "/live").0, 200);
    assert_eq!(scrape(maddr, "/ready").0, 200);
    assert_eq!(scrape(maddr, "/other").0, 404);

    // Draining: /ready turns 503 while a slow request keeps the cluster up.
    let mut slow = server.connect();
    slow.send(b"GET /delay?ms=1500 HTTP/1.1\r\nHost: t\r\n\r\n");
    // In flight once a worker waits on it.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let (_, _, body) = scrape(maddr, "/metrics");
        let waiting = sum(&body, "forkring_deferred_in_flight");
        if waiting == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the slow request is not in flight after 1 s ({waiting} deferred)\n{body}");
        thread::sleep(Duration::from_millis(10));
    }
    server.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let (status, _, _) = scrape(maddr, "/ready");
        if status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "/ready still {status} while draining");
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(slow.response().status, 200);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()), "{}", server.log_text());
}

#[test]
fn a_hostile_scraper_cannot_stall_the_master() {
    let mut server = Server::start(&["--workers", "1", "--metrics", "127.0.0.1:0"]);
    let maddr = metrics_addr(&server);
    server.wait_line(&["ready 0.0"], Duration::from_secs(10));
    // Past the connection cap, saying nothing; one more sends an endless head.
    let idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(maddr).unwrap()).collect();
    let mut endless = TcpStream::connect(maddr).unwrap();
    let _ = endless.write_all(&[b'a'; 10_000]);
    // The master still runs its loop: a reload completes, the workers serve.
    server.signal(libc::SIGHUP);
    server.wait_line(&["ready 0.1"], Duration::from_secs(10));
    // The reload counts once the old worker has gone.
    server.wait_line(&["exit 0.0", "requested=true"], Duration::from_secs(10));
    server.assert_healthy();
    // A scrape works (a new connection takes an idle one's place).
    let start = Instant::now();
    let (status, _, body) = loop {
        let mut s = TcpStream::connect(maddr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n");
        let mut all = Vec::new();
        if s.read_to_end(&mut all).is_ok() && !all.is_empty() {
            let text = String::from_utf8(all).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            break (head.split(' ').nth(1).unwrap().to_owned(), head.to_owned(), body.to_owned());
        }
        assert!(start.elapsed() < Duration::from_secs(8), "no scrape answered within 8 s");
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, "200");
    assert!(body.contains("forkring_worker_restarts_total{cause=\"reload\"} 1"), "{body}");
    drop(idle);
    drop(endless);
    server.assert_healthy();
}

/// A health check as a balancer makes it: one `GET /ready` on a fresh
/// connection, given up after 1 s (HAProxy's `timeout check 1s`); the
/// status, or `None` when no whole answer came within the second.
fn probe_ready(addr: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.write_all(b"GET /ready HTTP/1.1\r\nHost: m\r\n\r\n").ok()?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).ok()?;
    let text = String::from_utf8(all).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

#[test]
fn idle_connections_to_the_metrics_port_keep_no_probe_out() {
    let mut server = Server::start(&["--workers", "1", "--metrics", "127.0.0.1:0"]);
    let maddr = metrics_addr(&server);
    server.wait_line(&["ready 0.0"], Duration::from_secs(10));
    // As many idle connections as the listener holds, saying nothing.
    let mut idle: Vec<TcpStream> = (0..32).map(|_| TcpStream::connect(maddr).unwrap()).collect();
    // Every probe is answered: a new connection takes the place of the
    // oldest idle one.
    let answers: Vec<Option<u16>> = (0..10).map(|_| probe_ready(maddr)).collect();
    assert!(answers.iter().all(|&a| a == Some(200)), "{answers:?}\n{}", server.log_text());
    // An idle connection is closed once its head time (1 s) is up: it reads
    // the end of the stream, not an answer.
    let last = idle.last_mut().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    assert!(matches!(last.read(&mut buf), Ok(0) | Err(_)), "an idle connection outlived its head time");
    server.assert_healthy();
}
