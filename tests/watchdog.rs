//! The hung-worker watchdog on real processes, on both backends: a worker
//! stopped with SIGSTOP and a worker whose handler spins are both killed
//! and replaced within the worker timeout plus one second, the log says
//! which interval triggered it, the metrics count the cause, and the other
//! workers keep serving all along.
//!
//! The spinning handler lives in this test, which runs itself again as the
//! master (`FORKRING_WATCHDOG_ROLE`), with re-executed workers (the test
//! harness runs tests in threads).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring::{Event, Request, Response, Server as Cluster};
use forkring_testkit::client::Client;
use forkring_testkit::master::SelfMaster;
use forkring_testkit::proc;

const ROLE: &str = "FORKRING_WATCHDOG_ROLE";
/// The worker timeout the tests configure.
const TIMEOUT: Duration = Duration::from_secs(1);

#[test]
fn a_stopped_worker_is_replaced_and_counted() {
    let server = Server::start(&["--workers", "2", "--worker-timeout", "1", "--metrics", "127.0.0.1:0"]);
    let line = server.wait_line(&["ready 0.0"], Duration::from_secs(10));
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    let pid: i32 = line.split("pid=").nth(1).unwrap().trim().parse().unwrap();
    let stopped = Instant::now();
    proc::signal(pid, libc::SIGSTOP).unwrap();
    let why = server.wait_line(&["watchdog: worker 0.0", "has not turned"], TIMEOUT + Duration::from_secs(1));
    assert!(why.contains("after it was forked") && why.contains("killing it"), "{why}");
    server.wait_line(&["ready 0.1"], Duration::from_secs(3));
    assert!(stopped.elapsed() <= TIMEOUT + Duration::from_secs(1), "replaced after {:?}", stopped.elapsed());
    let maddr: SocketAddr = server
        .wait_line(&["metrics on http://"], Duration::from_secs(1))
        .split("http://")
        .nth(1)
        .unwrap()
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    let mut s = TcpStream::connect_timeout(&maddr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert!(text.contains("forkring_worker_restarts_total{cause=\"watchdog\"} 1"), "{text}");
    assert!(text.contains("forkring_worker_restarts_total{cause=\"crash\"} 0"), "{text}");
}

fn run_master() {
    let _ = Cluster::builder()
        .listen("127.0.0.1:0")
        .workers(3)
        .reexec(true)
        .worker_timeout(TIMEOUT)
        .on_event(|ev, _| match ev {
            Event::Listening { addr, .. } => println!("ADDR {addr}"),
            Event::Ready { worker, pid } => println!("READY {} {} {pid}", worker.slot, worker.generation),
            Event::Exit { worker, status, .. } => println!("EXIT {} {} {status:?}", worker.slot, worker.generation),
            _ => {}
        })
        .serve(|| {
            |req: &Request<'_>, res: &mut Response| {
                let me = forkring::worker::id().expect("in a worker");
                if req.path() == "/spin" {
                    // A handler stuck for good: the loop never turns again.
                    let mut x = 0u64;
                    loop {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                res.body(format!("{} {}", me.slot, me.generation));
            }
        });
}

/// Connects until it holds a connection to each slot in `slots` (the
/// kernel spreads connections over the workers' sockets).
fn connections_to(addr: SocketAddr, slots: &[usize]) -> HashMap<usize, Client> {
    let mut held = HashMap::new();
    for _ in 0..400 {
        if slots.iter().all(|s| held.contains_key(s)) {
            return held;
        }
        let mut c = Client::connect(addr);
        let r = c.get("/who");
        let slot: usize = String::from_utf8_lossy(&r.body).split(' ').next().unwrap().parse().unwrap();
        held.entry(slot).or_insert(c);
    }
    panic!("no connection to every slot of {slots:?} after 400 tries");
}

#[test]
fn a_stopped_and_a_spinning_worker_are_replaced_while_the_others_serve() {
    if std::env::var(ROLE).is_ok() {
        run_master();
        return;
    }
    let mut master =
        SelfMaster::spawn(ROLE, "master", "a_stopped_and_a_spinning_worker_are_replaced_while_the_others_serve");
    let mut addr = None::<SocketAddr>;
    let mut pids = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while addr.is_none() || pids.len() < 3 {
        let l = master.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("master start");
        if let Some(a) = l.strip_prefix("ADDR ") {
            addr = Some(a.parse().unwrap());
        } else if let Some(r) = l.strip_prefix("READY ") {
            let v: Vec<&str> = r.split(' ').collect();
            pids.insert(v[0].parse::<usize>().unwrap(), v[2].parse::<i32>().unwrap());
        }
    }
    let addr = addr.unwrap();
    let mut held = connections_to(addr, &[0, 1, 2]);
    let mut steady = held.remove(&2).unwrap();
    let mut spinner = held.remove(&1).unwrap();

    // Slot 0 stops; slot 1's handler spins; slot 2 serves throughout.
    let hung_at = Instant::now();
    proc::signal(pids[&0], libc::SIGSTOP).unwrap();
    spinner.send(b"GET /spin HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut replaced = HashMap::new();
    let mut served = 0;
    let mut slowest = Duration::ZERO;
    while replaced.len() < 2 || hung_at.elapsed() < TIMEOUT + Duration::from_millis(1500) {
        let t = Instant::now();
        let r = steady.get("/who");
        assert_eq!(r.status, 200);
        assert_eq!(String::from_utf8_lossy(&r.body), "2 0");
        slowest = slowest.max(t.elapsed());
        served += 1;
        while let Ok(l) = master.lines.try_recv() {
            if let Some(r) = l.strip_prefix("READY ") {
                let v: Vec<&str> = r.split(' ').collect();
                if v[1] == "1" {
                    replaced.insert(v[0].parse::<usize>().unwrap(), hung_at.elapsed());
                }
            }
        }
        assert!(hung_at.elapsed() < Duration::from_secs(10), "not replaced: {replaced:?}");
        thread::sleep(Duration::from_millis(10));
    }
    for slot in [0, 1] {
        let after = replaced[&slot];
        assert!(after <= TIMEOUT + Duration::from_secs(1), "slot {slot} replaced after {after:?}");
    }
    assert!(slowest < Duration::from_millis(500), "slot 2 was slow to answer: {slowest:?} ({served} requests)");
    assert!(!proc::alive(pids[&0]) && !proc::alive(pids[&1]), "the hung workers are gone");
    // The replacements serve.
    let fresh = connections_to(addr, &[0, 1]);
    assert!(fresh.contains_key(&0) && fresh.contains_key(&1));
    assert!(master.stop(), "the master did not stop by itself");
}
