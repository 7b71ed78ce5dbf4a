//! Recycling on real processes, on both backends: workers that served
//! their quota of requests (with jitter) are replaced through the reload
//! path while clients keep requesting, and no request fails; a worker past
//! the memory ceiling is replaced too. The metrics count both causes.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::client::Client;

fn metrics(server: &Server) -> String {
    let line = server.wait_line(&["metrics on http://"], Duration::from_secs(10));
    let addr: SocketAddr = line.split("http://").nth(1).unwrap().trim_end_matches("/metrics").parse().unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn restarts(text: &str, cause: &str) -> u64 {
    let key = format!("forkring_worker_restarts_total{{cause=\"{cause}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&key)).unwrap().parse().unwrap()
}

#[test]
fn workers_past_their_quota_are_replaced_without_a_failed_request() {
    let server = Server::start(&[
        "--workers",
        "2",
        "--max-requests",
        "300",
        "--max-requests-jitter",
        "100",
        "--metrics",
        "127.0.0.1:0",
    ]);
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                while !stop.load(Ordering::Relaxed) {
                    // A connection the server closes after a response
                    // (`Connection: close`, a draining worker) is replaced
                    // before the next request: that is no failure.
                    let sent = c.try_send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
                    match sent.and_then(|()| c.try_response(false)) {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if r.says_close() {
                                c = Client::connect(addr);
                            }
                        }
                        Ok(r) => {
                            eprintln!("status {}", r.status);
                            failed.fetch_add(1, Ordering::Relaxed);
                            c = Client::connect(addr);
                        }
                        Err(e) => {
                            eprintln!("request failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                            c = Client::connect(addr);
                        }
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut recycled = 0;
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(250));
        recycled = restarts(&metrics(&server), "recycle");
        if recycled >= 4 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(recycled >= 4, "{recycled} workers recycled after {ok} requests\n{}", server.log_text());
    assert_eq!(failed, 0, "{failed} of {} requests failed while workers were recycled", ok + failed);
    let log = server.log_text();
    assert!(log.contains("(quota "), "{log}");
    let text = metrics(&server);
    assert_eq!(restarts(&text, "crash"), 0, "{text}");
}

#[test]
fn a_worker_past_the_memory_ceiling_is_replaced() {
    // Every worker is past a 1 MiB ceiling.
    let server = Server::start(&["--workers", "1", "--max-worker-rss", "1", "--metrics", "127.0.0.1:0"]);
    server.wait_line(&["ceiling 1 MiB); replacing it"], Duration::from_secs(10));
    server.wait_line(&["ready 0.1"], Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while restarts(&metrics(&server), "memory") == 0 {
        assert!(Instant::now() < deadline, "no memory restart counted");
        thread::sleep(Duration::from_millis(100));
    }
    let mut c = server.connect();
    assert_eq!(c.get("/").status, 200);
}
