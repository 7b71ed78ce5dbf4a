//! Master↔worker messages and shared counters, end to end through the demo
//! server: the master broadcasts the cluster's counters every second
//! (`GET /workers` shows what a worker received), and `POST /broadcast`
//! goes worker → master → every worker.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::Server;

/// `GET /workers` on a fresh connection, as text.
fn workers_page(server: &Server) -> String {
    let mut c = server.connect();
    let r = c.get("/workers");
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

/// Polls `GET /workers` until `pred` holds for a page (or panics with the
/// last page after `timeout`).
fn wait_page(server: &Server, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let page = workers_page(server);
        if pred(&page) {
            return page;
        }
        if Instant::now() >= deadline {
            panic!("no matching /workers page within {timeout:?}; last:\n{page}\n{}", server.log_text());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The `total` row of the counters table: (requests, 2xx, 4xx, accepts, ring messages in).
fn totals(page: &str) -> (u64, u64, u64, u64, u64) {
    let row = page.lines().find(|l| l.starts_with("total")).expect("total row");
    let v: Vec<u64> = row.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
    (v[0], v[1], v[2], v[5], v[8])
}

#[test]
fn counters_reach_the_workers_through_the_master() {
    let server = Server::start(&["--workers", "2"]);
    for _ in 0..30 {
        let mut c = server.connect();
        assert_eq!(c.get("/").status, 200);
    }
    let mut c = server.connect();
    assert_eq!(c.get("/missing").status, 404);
    // The next broadcast (at most a second away) carries these requests.
    let page = wait_page(&server, Duration::from_secs(5), |p| p.contains("total") && totals(p).0 >= 31);
    let (requests, ok, not_found, accepts, ring_in) = totals(&page);
    assert!(ok >= 30 && not_found >= 1, "{page}");
    assert!(requests >= ok + not_found, "{page}");
    assert!(accepts >= 31, "{page}");
    assert!(ring_in >= 2, "each worker received broadcasts\n{page}");
}

#[test]
fn a_worker_message_is_broadcast_to_every_worker() {
    let server = Server::start(&["--workers", "2"]);
    wait_page(&server, Duration::from_secs(5), |p| p.contains("total"));
    let mut c = server.connect();
    let r = c.post("/broadcast", "text/plain", b"deploy 42");
    assert_eq!(r.status, 202, "{}", server.log_text());
    // Every worker got it: look until both slots have answered with it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 && Instant::now() < deadline {
        let page = workers_page(&server);
        if page.contains(": deploy 42") {
            let who = page.lines().next().unwrap().trim_start_matches("answered by worker ").to_owned();
            seen.insert(who);
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(seen.len(), 2, "workers that showed the broadcast: {seen:?}\n{}", server.log_text());
    assert!(server.log_text().contains("message "), "the master logs the message event");
}

#[test]
fn counters_survive_a_respawn() {
    let server = Server::start(&["--workers", "1"]);
    for _ in 0..20 {
        let mut c = server.connect();
        assert_eq!(c.get("/").status, 200);
    }
    let before = totals(&wait_page(&server, Duration::from_secs(5), |p| p.contains("total") && totals(p).0 >= 20)).0;
    let log = server.log_text();
    let ready = log.lines().find(|l| l.contains("ready 0.0")).expect("ready line");
    let pid: i32 = ready.split("pid=").nth(1).unwrap().trim().parse().unwrap();
    forkring_testkit::proc::signal(pid, libc::SIGKILL).expect("kill the worker the server logged");
    // A connection made while the worker dies may be one it accepted and
    // takes down with it (a reset): the pages are asked for once its
    // replacement serves.
    server.wait_line(&["ready 0.1"], Duration::from_secs(10));
    let page = wait_page(&server, Duration::from_secs(10), |p| p.contains("\n0.1 "));
    assert!(totals(&page).0 >= before, "totals dropped after the respawn: {before} then\n{page}");
}
