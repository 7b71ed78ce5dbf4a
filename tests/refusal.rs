//! Refusal reaches the handler, on real sockets, on both backends, through
//! the demo's `/sleep` (`Response::blocking`): past the deferred cap, or
//! past the pool's queue, a request is answered `503` at once without its
//! work being queued, so the work admitted before it, and the work
//! admitted after it, run in their own time; queued work whose client has
//! left is skipped; and the pool's gauges in `/metrics` come back to zero.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::client::Client;

/// Requests one connection pipelines past the cap.
const FLOOD: usize = 2_000;

/// The metrics address the server logged.
fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server.wait_line(&["metrics on http://"], Duration::from_secs(10));
    let rest = line.split("metrics on http://").nth(1).unwrap();
    rest.trim_end_matches("/metrics").trim().parse().unwrap()
}

/// The body of `GET /metrics`.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8(all).unwrap();
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or(text)
}

/// The value of `name` for slot 0, if the exposition has it.
fn gauge(text: &str, name: &str) -> Option<u64> {
    let prefix = format!("{name}{{slot=\"0\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok())
}

#[test]
fn requests_refused_past_the_cap_queue_no_work() {
    let mut server =
        Server::start(&["--workers", "1", "--max-deferred", "4", "--pool", "4", "--metrics", "127.0.0.1:0"]);
    let maddr = metrics_addr(&server);
    server.wait_line(&["ready 0.0"], Duration::from_secs(10));

    // Four requests take the four places under the cap (and the pool's
    // four threads) for 3 s.
    let started = Instant::now();
    let mut admitted: Vec<Client> = (0..4)
        .map(|_| {
            let mut c = server.connect();
            c.send(b"GET /sleep?ms=3000 HTTP/1.1\r\nHost: t\r\n\r\n");
            c
        })
        .collect();
    // They are in once a timer's request (which queues no work) is refused.
    let mut probe = server.connect();
    while probe.get("/delay?ms=1").status != 503 {
        assert!(started.elapsed() < Duration::from_secs(2), "the four were not admitted");
        thread::sleep(Duration::from_millis(10));
    }

    // The gauges see them: four threads busy, nothing queued.
    loop {
        let text = scrape(maddr);
        let (queued, busy) = (gauge(&text, "forkring_pool_queued"), gauge(&text, "forkring_pool_busy"));
        if (queued, busy) == (Some(0), Some(4)) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "pool queued {queued:?}, busy {busy:?}\n{text}");
        thread::sleep(Duration::from_millis(10));
    }

    // One connection pipelines the flood; every request is refused at once.
    let mut flood = server.connect();
    let mut writer = flood.stream.try_clone().unwrap();
    let sending = thread::spawn(move || {
        let one = b"GET /sleep?ms=3000 HTTP/1.1\r\nHost: t\r\n\r\n";
        let all: Vec<u8> = one.iter().copied().cycle().take(one.len() * FLOOD).collect();
        writer.write_all(&all).unwrap();
    });
    for i in 0..FLOOD {
        let r = flood.response();
        assert_eq!(r.status, 503, "flood request {i}");
        assert_eq!(r.header("Retry-After"), Some("1"), "flood request {i}");
    }
    sending.join().unwrap();
    let refused_in = started.elapsed();
    assert!(refused_in < Duration::from_secs(3), "the flood was answered while the four still ran: {refused_in:?}");

    // The four admitted requests end in their own time.
    for c in &mut admitted {
        let r = c.response();
        assert_eq!((r.status, &r.body[..]), (200, &b"waited 3000 ms\n"[..]));
    }
    // The next piece of work runs at once: nothing was queued behind them.
    let mut next = server.connect();
    next.send(b"GET /sleep?ms=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    let asked = Instant::now();
    let r = next
        .try_response_within(false, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("GET /sleep?ms=1 after the flood: {e}\n{}", server.log_text()));
    assert_eq!(r.status, 200);
    eprintln!("flood of {FLOOD} refused within {refused_in:?}; next job answered in {:?}", asked.elapsed());

    // The pool is idle again: nothing queued, no thread busy.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(maddr);
        let (queued, busy) = (gauge(&text, "forkring_pool_queued"), gauge(&text, "forkring_pool_busy"));
        if queued == Some(0) && busy == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "pool queued {queued:?}, busy {busy:?}\n{text}");
        thread::sleep(Duration::from_millis(20));
    }
    server.assert_healthy();
}

#[test]
fn past_the_pools_queue_work_is_refused_at_once() {
    // Two threads, and a queue of two (the default: as many as threads);
    // the deferred cap is far away.
    let mut server = Server::start(&["--workers", "1", "--pool", "2", "--metrics", "127.0.0.1:0"]);
    let maddr = metrics_addr(&server);
    server.wait_line(&["ready 0.0"], Duration::from_secs(10));
    let mut clients: Vec<Client> = (0..12)
        .map(|_| {
            let mut c = server.connect();
            c.send(b"GET /sleep?ms=2000 HTTP/1.1\r\nHost: t\r\n\r\n");
            c
        })
        .collect();
    // Two run, two wait for a thread, and the other eight are refused
    // without waiting for either.
    let statuses: Vec<u16> = clients.iter_mut().map(|c| c.response().status).collect();
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 503).count();
    assert_eq!((admitted, refused), (4, 8), "{statuses:?}");
    // Nothing is left behind.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(maddr);
        let (queued, busy) = (gauge(&text, "forkring_pool_queued"), gauge(&text, "forkring_pool_busy"));
        if queued == Some(0) && busy == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "pool queued {queued:?}, busy {busy:?}\n{text}");
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.connect().get("/sleep?ms=1").status, 200);
    server.assert_healthy();
}

#[test]
fn queued_work_of_a_client_that_left_is_skipped() {
    // One thread and one place in its queue.
    let mut server = Server::start(&["--workers", "1", "--pool", "1", "--metrics", "127.0.0.1:0"]);
    let maddr = metrics_addr(&server);
    server.wait_line(&["ready 0.0"], Duration::from_secs(10));
    let mut running = server.connect();
    running.send(b"GET /sleep?ms=1000 HTTP/1.1\r\nHost: t\r\n\r\n");
    // A long job (10 s) waits for the thread; its client leaves.
    let mut leaving = server.connect();
    leaving.send(b"GET /sleep?ms=10000 HTTP/1.1\r\nHost: t\r\n\r\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(maddr);
        if gauge(&text, "forkring_pool_queued") == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "the second job was not queued\n{text}");
        thread::sleep(Duration::from_millis(10));
    }
    leaving.reset();
    loop {
        let text = scrape(maddr);
        if gauge(&text, "forkring_open_connections") == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "the connection that left is still open\n{text}");
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(running.response().status, 200);
    // The thread skips the job nobody waits for: the next one runs at once.
    let mut next = server.connect();
    next.send(b"GET /sleep?ms=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = next
        .try_response_within(false, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("GET /sleep?ms=1 behind a skipped job: {e}\n{}", server.log_text()));
    assert_eq!(r.status, 200);
    server.assert_healthy();
}
