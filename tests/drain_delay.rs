//! The drain delay (`--drain-delay MS`, `Server::drain_delay`) on a real
//! cluster: at SIGTERM `/ready` turns 503 at once, the port keeps accepting
//! and answering new and kept-alive connections for the delay, then the
//! workers drain and the master exits cleanly. Without a delay the listeners
//! close at once, as before.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::server::HELLO;

/// The delay under test; long enough that a loaded test machine does not
/// blur the phases.
const DELAY: Duration = Duration::from_millis(1500);

/// The metrics address the server logged.
fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server.wait_line(&["metrics on http://"], Duration::from_secs(10));
    let rest = line.split("metrics on http://").nth(1).unwrap();
    rest.trim_end_matches("/metrics").trim().parse().unwrap()
}

/// The status of `GET path` on a new connection, or the error.
fn status(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&all);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no status in {text:?}"))
}

#[test]
fn ready_turns_503_and_the_port_serves_through_the_delay() {
    let delay_ms = DELAY.as_millis().to_string();
    let mut server = Server::start(&["--workers", "2", "--metrics", "127.0.0.1:0", "--drain-delay", &delay_ms]);
    let maddr = metrics_addr(&server);
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    assert_eq!(status(maddr, "/ready"), Ok(200));
    let mut kept = server.connect();
    assert_eq!(kept.get("/").body, HELLO);

    server.signal(libc::SIGTERM);
    let term = Instant::now();
    // /ready says 503 well before the delay is over.
    let mut ready = status(maddr, "/ready");
    while ready != Ok(503) && term.elapsed() < DELAY / 3 {
        thread::sleep(Duration::from_millis(10));
        ready = status(maddr, "/ready");
    }
    assert_eq!(ready, Ok(503), "/ready after SIGTERM\n{}", server.log_text());
    server.wait_line(&["draining in 1500 ms"], Duration::from_secs(5));

    // Through the delay: new connections and the kept-alive one are served.
    let mut served_new = 0;
    while term.elapsed() < DELAY * 4 / 5 {
        assert_eq!(
            status(server.addr, "/"),
            Ok(200),
            "a new connection {:?} after SIGTERM (delay {DELAY:?})\n{}",
            term.elapsed(),
            server.log_text()
        );
        served_new += 1;
        let r = kept.get("/");
        assert_eq!(r.status, 200, "the kept-alive connection {:?} after SIGTERM", term.elapsed());
        thread::sleep(Duration::from_millis(100));
    }
    assert!(served_new >= 5, "only {served_new} requests in the delay");

    // Then the drain: the master exits cleanly, not before the delay, and
    // the port no longer accepts.
    let status_at_exit = server.wait_exit(DELAY + Duration::from_secs(10));
    let took = term.elapsed();
    assert!(status_at_exit.is_some_and(|s| s.success()), "exit {status_at_exit:?}\n{}", server.log_text());
    assert!(took >= DELAY, "exited {took:?} after SIGTERM, before the {DELAY:?} delay");
    assert!(TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)).is_err(), "the port still accepts");
}

#[test]
fn without_a_delay_the_listeners_close_at_once() {
    let mut server = Server::start(&["--workers", "2", "--metrics", "127.0.0.1:0"]);
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    assert_eq!(status(server.addr, "/"), Ok(200));
    server.signal(libc::SIGTERM);
    let term = Instant::now();
    let exit = server.wait_exit(Duration::from_secs(10));
    assert!(exit.is_some_and(|s| s.success()), "exit {exit:?}\n{}", server.log_text());
    assert!(term.elapsed() < DELAY, "an idle cluster took {:?} to stop without a delay", term.elapsed());
    assert!(!server.log_text().contains("drain delay"), "{}", server.log_text());
}
