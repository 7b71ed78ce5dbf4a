//! Upgraded connections count against a cap of their own
//! (`Limits::max_upgraded`), per worker: past it an upgrade is answered
//! `503` with `Connection: close` instead of handed over, and a place comes
//! back when the user's side drops the connection (or when one closes
//! before its hand-over). Driven with byte slices, then end to end on real
//! processes (the backend `FORKRING_BACKEND` selects): with a cap of 2, two
//! upgraded connections are served, the third is refused, and once one
//! client leaves a new upgrade succeeds; the worker's gauge follows.
//!
//! The end-to-end test runs itself again as the master
//! (`FORKRING_UPGRADE_CAP_ROLE`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use forkring::internals::ipc::{Counter, Counters};
use forkring::internals::{Conn, WorkerState};
use forkring::{Event, Handler, Limits, Request, Response, Server, Timeouts, Upgraded};
use forkring_testkit::client::Client;
use forkring_testkit::master::SelfMaster;
use forkring_testkit::server::STARTUP;

const ROLE: &str = "FORKRING_UPGRADE_CAP_ROLE";

/// The cap both tests use.
const CAP: usize = 2;

/// The request that asks for an upgrade.
const UPGRADE: &[u8] = b"GET /up HTTP/1.1\r\nHost: t\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n";

/// Upgrades `/up`, handing the connection to a pool thread that echoes
/// until the client closes; answers anything else `ok`.
struct Echo;

impl Handler for Echo {
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) {
        if req.path() != "/up" {
            res.body("ok");
            return;
        }
        res.header("Upgrade", "echo");
        res.upgrade(|conn| {
            // A full pool drops the job, and the connection with it.
            let _ = forkring::worker::spawn_blocking(move || echo(conn));
        });
    }
}

/// Sends back what arrives, until the end of the input.
fn echo(conn: Upgraded) {
    let (mut stream, read) = conn.into_parts::<TcpStream>();
    if stream.write_all(&read).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) if stream.write_all(&buf[..n]).is_err() => return,
            Ok(_) => {}
        }
    }
}

fn output(conn: &mut Conn, sh: &mut WorkerState) -> String {
    let out = String::from_utf8_lossy(conn.output()).into_owned();
    let n = conn.output().len();
    conn.consume_output(n, sh);
    out
}

/// A connection of `sh` that asked for an upgrade; its first answer.
fn ask(sh: &mut WorkerState) -> (Conn, String) {
    let mut conn = Conn::new(sh);
    conn.on_read(UPGRADE, sh, &mut Echo);
    let out = output(&mut conn, sh);
    (conn, out)
}

#[test]
fn the_cap_is_counted_from_the_101_to_the_drop_of_the_connection() {
    let counters: &'static Counters = Box::leak(Box::default());
    let mut sh = WorkerState::new(Limits::DEFAULT.with_max_upgraded(CAP), Timeouts::default());
    sh.set_counters(counters);
    sh.tick();
    let (mut a, out) = ask(&mut sh);
    assert!(out.starts_with("HTTP/1.1 101 "), "{out}");
    let (b, out) = ask(&mut sh);
    assert!(out.starts_with("HTTP/1.1 101 "), "{out}");
    assert_eq!(counters.get(Counter::UpgradedConnections), 2);

    let (refused, out) = ask(&mut sh);
    assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
    assert!(out.contains("\r\nConnection: close\r\n"), "{out}");
    assert!(refused.is_closing());
    assert!(!refused.upgrade_ready());
    refused.release(&mut sh);

    // `b` closes before its hand-over: its place comes back.
    b.release(&mut sh);
    assert_eq!(counters.get(Counter::UpgradedConnections), 1);
    let (c, out) = ask(&mut sh);
    assert!(out.starts_with("HTTP/1.1 101 "), "{out}");

    // `a` is handed over; its place goes with it, until the user drops it.
    let (_, _, permit) = a.take_upgrade().expect("the hand-over");
    a.release(&mut sh);
    assert_eq!(counters.get(Counter::UpgradedConnections), 2);
    let (refused, out) = ask(&mut sh);
    assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
    refused.release(&mut sh);
    std::thread::spawn(move || drop(permit)).join().unwrap();
    let (d, out) = ask(&mut sh);
    assert!(out.starts_with("HTTP/1.1 101 "), "{out}");
    c.release(&mut sh);
    d.release(&mut sh);
    assert_eq!(counters.get(Counter::UpgradedConnections), 0);
}

fn run_master() {
    // Re-executed workers: the test harness runs this in a thread of its own,
    // and a plain fork from a process with threads is refused.
    let _ = Server::builder()
        .listen("127.0.0.1:0")
        .workers(1)
        .reexec(true)
        .limits(Limits::DEFAULT.with_max_upgraded(CAP))
        .on_event(|ev, _| {
            if let Event::Listening { addr, .. } = ev {
                println!("ADDR {addr}");
            }
        })
        .every(Duration::from_millis(20), |ctl| {
            if let Some(s) = ctl.counters(0) {
                println!("UPGRADED {}", s.upgraded_connections);
            }
        })
        .serve(|| Echo);
}

/// Waits for the worker's gauge to read `n`.
fn wait_gauge(lines: &Receiver<String>, n: u64) {
    let want = format!("UPGRADED {n}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(l) if l == want => return,
            Ok(l) if l.starts_with("UPGRADED ") => last = l,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("the gauge never read {n} (last: {last:?})");
}

/// Asks for an upgrade on a new connection; returns it and the answer.
fn upgrade(addr: SocketAddr) -> (Client, u16, Option<String>) {
    let mut c = Client::connect(addr);
    c.send(UPGRADE);
    let r = c.response();
    let connection = r.header("Connection").map(str::to_owned);
    (c, r.status, connection)
}

/// Bytes sent on an upgraded connection come back.
fn echoes(c: &mut Client, what: &[u8]) {
    c.send(what);
    let mut back = vec![0u8; what.len()];
    c.stream.read_exact(&mut back).unwrap_or_else(|e| panic!("the echo: {e}"));
    assert_eq!(back, what);
}

#[test]
fn a_worker_serves_up_to_its_cap_of_upgraded_connections_and_refuses_the_next() {
    if std::env::var(ROLE).is_ok() {
        run_master();
        return;
    }
    let master =
        SelfMaster::spawn(ROLE, "master", "a_worker_serves_up_to_its_cap_of_upgraded_connections_and_refuses_the_next");
    // One deadline for the whole wait: the master prints its gauge every
    // 20 ms, so a bound on each line alone never ends the wait.
    let deadline = Instant::now() + STARTUP;
    let addr: SocketAddr = loop {
        assert!(Instant::now() < deadline, "the master did not say where it listens within {STARTUP:?}");
        let line = master
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("the master did not say where it listens within {STARTUP:?}: {e}"));
        if let Some(a) = line.strip_prefix("ADDR ") {
            break a.parse().unwrap();
        }
    };
    wait_gauge(&master.lines, 0);

    let (mut one, status, _) = upgrade(addr);
    assert_eq!(status, 101);
    echoes(&mut one, b"one");
    let (mut two, status, _) = upgrade(addr);
    assert_eq!(status, 101);
    echoes(&mut two, b"two");
    wait_gauge(&master.lines, 2);

    let (mut third, status, connection) = upgrade(addr);
    assert_eq!(status, 503);
    assert_eq!(connection.as_deref(), Some("close"));
    third.expect_close();
    // HTTP goes on beside the upgraded connections.
    assert_eq!(Client::connect(addr).get("/").body, b"ok");

    // One client leaves: its pool thread sees the end, drops the stream,
    // and the place comes back.
    drop(one);
    wait_gauge(&master.lines, 1);
    let (mut four, status, _) = upgrade(addr);
    assert_eq!(status, 101);
    echoes(&mut four, b"four");
    echoes(&mut two, b"two again");
    wait_gauge(&master.lines, 2);
    let (mut fifth, status, _) = upgrade(addr);
    assert_eq!(status, 503);
    fifth.expect_close();

    drop((two, four));
    wait_gauge(&master.lines, 0);
}
