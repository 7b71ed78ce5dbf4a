//! What connections cost in memory on a fresh worker: where the kernel
//! consumes provided receive buffers incrementally, the worker's receive
//! memory follows the bytes received, not the number of requests.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::client::Client;
use forkring_testkit::proc::{self, raise_nofile};

/// Connections opened, each sending one request and staying open.
const CONNS: usize = 2000;

#[test]
fn a_request_on_each_of_many_connections_costs_its_bytes_not_a_buffer() {
    let have = raise_nofile(2 * CONNS as u64 + 256);
    assert!(have >= CONNS as u64 + 128, "RLIMIT_NOFILE is {have}; this test needs more than {CONNS} descriptors");
    let mut srv = Server::start(&["--workers", "1"]);
    let log = srv.wait_line(&["backend:"], Duration::from_secs(10));
    let uring = log.contains("backend: io_uring");
    let incremental = log.lines().any(|l| l.contains("consumed incrementally"));
    let worker = *proc::children(srv.pid()).first().expect("the worker");
    // One request first, so that what one-time set-up a first request
    // brings is not counted per connection.
    assert_eq!(srv.connect().get("/").status, 200);
    let before = proc::vm_rss_kib(worker).expect("the worker's VmRSS");

    let t0 = Instant::now();
    let mut clients: Vec<Client> = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        let mut c = srv.connect();
        c.send(b"GET / HTTP/1.1\r\nHost: memory\r\nUser-Agent: a-client-of-typical-length/1.0\r\nAccept: */*\r\n\r\n");
        clients.push(c);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.try_response(false).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(r.status, 200, "connection {i}");
    }
    assert!(t0.elapsed() < Duration::from_secs(60), "{CONNS} requests took {:?}", t0.elapsed());
    let after = proc::vm_rss_kib(worker).expect("the worker's VmRSS");
    let per_conn = (after.saturating_sub(before) * 1024) as f64 / CONNS as f64;
    eprintln!(
        "worker RSS {before} KiB -> {after} KiB with {CONNS} open connections after one request each: \
         {per_conn:.0} bytes per connection ({})",
        match (uring, incremental) {
            (false, _) => "epoll: every read lands in the loop's one buffer",
            (true, true) => "io_uring, receive buffers consumed incrementally",
            (true, false) => "io_uring, receive buffers consumed whole",
        }
    );
    if incremental || !uring {
        // Consumed whole, every request took a fresh 8 KiB buffer, and the
        // page it touched stayed resident: over 4 KiB per connection. The
        // request above is 90 bytes; what remains is the connection's own
        // state. Under epoll every read lands in the loop's one buffer.
        assert!(per_conn < 1024.0, "{per_conn:.0} bytes per connection\n{}", srv.log_text());
    } else {
        eprintln!("NOTICE: this kernel consumes provided buffers whole (before Linux 6.12); no bound checked");
    }
    drop(clients);
    srv.assert_healthy();
}
