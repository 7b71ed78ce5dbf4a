//! A worker that floods the master with messages while the program's event
//! consumer is slow: the master's memory stays bounded (it reads a bounded
//! batch per turn and leaves the rings alone while an event channel is
//! backed up), the worker sees `Full` (backpressure, never a silent drop),
//! and every message the master did take reaches the consumer.
//!
//! The test runs itself again as the master (`FORKRING_FLOOD_ROLE=master`),
//! with re-executed workers (the master has a consumer thread).

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use forkring::{Event, Request, Response, SendError, Server};
use forkring_testkit::client::Client;
use forkring_testkit::master::SelfMaster;
use forkring_testkit::proc;

const ROLE: &str = "FORKRING_FLOOD_ROLE";
/// Bytes per message: large, so that an unbounded backlog shows at once.
const MESSAGE: usize = 16 * 1024;

/// Sends as fast as the ring takes messages; counts what was refused.
fn flood_from_the_worker(full: &'static AtomicU64, sent: &'static AtomicU64) {
    let msg = vec![0x5a; MESSAGE];
    loop {
        match forkring::worker::send(&msg) {
            Ok(()) => {
                sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(SendError::Full) => {
                full.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_micros(20));
            }
            Err(_) => return,
        }
    }
}

fn run_master() {
    static FULL: AtomicU64 = AtomicU64::new(0);
    static SENT: AtomicU64 = AtomicU64::new(0);
    let mut server = Server::builder().listen("127.0.0.1:0").workers(1).reexec(true);
    let events = server.events();
    // The program's consumer: slow, 200 µs per message.
    thread::spawn(move || {
        let mut got = 0u64;
        for ev in events {
            if let Event::Message { data, .. } = ev {
                assert_eq!(data.len(), MESSAGE);
                got += 1;
                if got % 1000 == 0 {
                    println!("GOT {got}");
                }
                thread::sleep(Duration::from_micros(200));
            } else if let Event::Listening { addr, .. } = ev {
                println!("ADDR {addr}");
            } else if let Event::Ready { .. } = ev {
                println!("READY");
            }
        }
    });
    let _ = server.serve(|| {
        thread::spawn(|| flood_from_the_worker(&FULL, &SENT));
        |req: &Request<'_>, res: &mut Response| {
            if req.path() == "/stats" {
                res.body(format!("{} {}", SENT.load(Ordering::Relaxed), FULL.load(Ordering::Relaxed)));
            }
        }
    });
}

#[test]
fn a_message_flood_keeps_the_master_bounded_and_reaches_the_worker_as_full() {
    if std::env::var(ROLE).is_ok() {
        run_master();
        return;
    }
    let mut master =
        SelfMaster::spawn(ROLE, "master", "a_message_flood_keeps_the_master_bounded_and_reaches_the_worker_as_full");
    let pid = master.pid();
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut addr = None;
    while addr.is_none() || !lines.iter().any(|l: &String| l == "READY") {
        match master.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => {
                if let Some(a) = l.strip_prefix("ADDR ") {
                    addr = a.trim().parse::<std::net::SocketAddr>().ok();
                }
                lines.push(l);
            }
            Err(_) => panic!("the master did not start\n{}", lines.join("\n")),
        }
    }
    // Let the flood run; the master's memory must stay bounded.
    let rss_start = proc::vm_rss_kib(pid).unwrap_or(0);
    let mut rss_max = rss_start;
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        rss_max = rss_max.max(proc::vm_rss_kib(pid).unwrap_or(0));
        thread::sleep(Duration::from_millis(50));
        while let Ok(l) = master.lines.try_recv() {
            lines.push(l);
        }
    }
    let mut c = Client::connect(addr.unwrap());
    let stats = String::from_utf8(c.get("/stats").body).unwrap();
    let exited = master.stop();
    let mut it = stats.split(' ').map(|v| v.parse::<u64>().unwrap());
    let (sent, full) = (it.next().unwrap(), it.next().unwrap());
    let got = lines.iter().filter(|l| l.starts_with("GOT ")).count() as u64 * 1000;
    println!("master VmRSS {rss_start} -> {rss_max} KiB; sent {sent}, refused as Full {full}, consumed {got}");
    // 16 KiB a message: an unbounded backlog would be gigabytes by now.
    assert!(
        rss_max < rss_start + 128 * 1024,
        "the master grew from {rss_start} KiB to {rss_max} KiB (sent {sent}, full {full}, consumed {got})"
    );
    assert!(full > 0, "the worker never saw Full (sent {sent})");
    assert!(sent >= got, "consumed {got} of {sent} sent");
    assert!(got >= 1000, "the consumer got {got} messages");
    assert!(exited, "the master did not stop on SIGTERM\n{}", lines.join("\n"));
}
