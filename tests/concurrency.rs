//! Many clients at once over real sockets: a thousand concurrent
//! connections, the connection cap, abrupt resets mid-request and
//! mid-response, and clients that do not read their responses.

mod common;

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::bytes::{first_difference, pattern};
use forkring_testkit::client::Client;
use forkring_testkit::http::show;
use forkring_testkit::proc::raise_nofile;
use forkring_testkit::server::HELLO;

#[test]
fn a_thousand_concurrent_connections_are_all_answered() {
    const N: usize = 1000;
    let have = raise_nofile(4 * N as u64);
    assert!(have >= (N + 64) as u64, "RLIMIT_NOFILE is {have}; this test needs more than {N} descriptors");
    let mut srv = Server::start(&[]);
    let t0 = Instant::now();
    // All connections open at once before any request is answered.
    let mut clients: Vec<Client> = (0..N).map(|_| srv.connect()).collect();
    for round in 0..2 {
        for (i, c) in clients.iter_mut().enumerate() {
            let body = format!("connection {i} round {round}");
            c.send(
                format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
            );
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let r = c.try_response(false).unwrap_or_else(|e| panic!("connection {i}, round {round}: {e}"));
            assert_eq!(r.status, 200, "connection {i}, round {round}");
            assert_eq!(r.body, format!("connection {i} round {round}").as_bytes(), "connection {i}, round {round}");
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(60), "{N} connections took {:?}", t0.elapsed());
    drop(clients);
    srv.assert_healthy();
}

#[test]
fn many_connections_sending_large_bodies_at_once_each_get_their_own_back() {
    // Far more data arriving at once than the server's receive buffers
    // hold, spread over many connections.
    const N: usize = 400;
    raise_nofile(4 * N as u64);
    let mut srv = Server::start(&[]);
    let mut clients: Vec<Client> = (0..N).map(|_| srv.connect()).collect();
    let body = pattern(64 * 1024, 99);
    for (i, c) in clients.iter_mut().enumerate() {
        let mut wire = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        wire.extend_from_slice(&body);
        // Each body ends with the connection's number, so a mix-up of
        // connections shows.
        let tag = format!("{i:08}");
        let len = wire.len();
        wire[len - 8..].copy_from_slice(tag.as_bytes());
        c.send(&wire);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.try_response(false).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(r.status, 200, "connection {i}");
        assert_eq!(r.body.len(), body.len(), "connection {i}");
        assert_eq!(first_difference(&r.body[..body.len() - 8], &body[..body.len() - 8]), None, "connection {i}");
        assert_eq!(&r.body[body.len() - 8..], format!("{i:08}").as_bytes(), "connection {i} got another's body");
    }
    drop(clients);
    srv.assert_healthy();
}

#[test]
fn connections_beyond_the_cap_wait_in_the_backlog() {
    const CAP: usize = 4;
    let mut srv = Server::start(&["--max-connections", &CAP.to_string()]);
    let mut clients: Vec<Option<Client>> = (0..2 * CAP).map(|_| Some(srv.connect())).collect();
    for c in clients.iter_mut().flatten() {
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    // Poll every client for a second: only CAP of them can be served.
    let answered = poll_answers(&mut clients, Duration::from_secs(1));
    assert_eq!(answered.len(), CAP, "with --max-connections {CAP}, clients {answered:?} were answered");
    // Closing the served ones lets the others in.
    for &i in &answered {
        clients[i] = None;
    }
    let rest = poll_answers(&mut clients, Duration::from_secs(10));
    assert_eq!(rest.len(), CAP, "after closing {CAP} connections, only {rest:?} of the waiting ones were answered");
    // Free the slots again so that the health check gets in.
    drop(clients);
    srv.assert_healthy();
}

/// Reads without blocking from every open client until `limit`; returns
/// the indices of those that got a whole `GET /` response.
fn poll_answers(clients: &mut [Option<Client>], limit: Duration) -> Vec<usize> {
    let want = b"\r\n\r\nHello, World!";
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); clients.len()];
    let mut done = Vec::new();
    let t0 = Instant::now();
    let open = clients.iter().filter(|c| c.is_some()).count();
    while t0.elapsed() < limit && done.len() < open {
        for (i, c) in clients.iter_mut().enumerate() {
            let Some(c) = c else { continue };
            if done.contains(&i) {
                continue;
            }
            c.stream.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 4096];
            match c.stream.read(&mut buf) {
                Ok(n) => got[i].extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("client {i}: {e}"),
            }
            c.stream.set_nonblocking(false).unwrap();
            if got[i].windows(want.len()).any(|w| w == want) {
                done.push(i);
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
    done
}

#[test]
fn connection_slots_are_freed_however_a_connection_ends() {
    // With a small cap, a leaked slot soon leaves no room to accept.
    let mut srv = Server::start(&["--max-connections", "8"]);
    for i in 0..300 {
        let mut c = srv.connect();
        match i % 6 {
            0 => {
                assert_eq!(c.get("/").status, 200, "connection {i}");
            }
            1 => {
                c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                assert_eq!(c.response().status, 200, "connection {i}");
                c.expect_close();
            }
            2 => c.reset(),
            3 => {
                c.send(b"GET / HTTP/1.1\r\nHo");
                c.reset();
            }
            4 => {
                c.send(b"GET / HTTP/1.1\r\n\r\n");
                assert_eq!(c.response().status, 400, "connection {i}");
            }
            _ => {
                c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
                // Closed without reading the response.
            }
        }
    }
    srv.assert_healthy();
}

#[test]
fn resets_mid_request_do_not_disturb_other_clients() {
    let mut srv = Server::start(&[]);
    let mut good = srv.connect();
    let body = pattern(200_000, 3);
    for i in 0..120 {
        let mut c = srv.connect();
        match i % 5 {
            0 => c.send(b"GET / HTTP/1.1\r\nHo"),
            1 => {
                let mut wire = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 400000\r\n\r\n".to_vec();
                wire.extend_from_slice(&body);
                c.send(&wire);
            }
            2 => c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123"),
            3 => {
                // Requests complete, responses never read.
                c.send(&b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(200));
            }
            _ => {}
        }
        c.reset();
        if i % 4 == 0 {
            let r = good.get("/");
            assert_eq!((r.status, r.body.as_slice()), (200, HELLO), "after reset {i}");
        }
    }
    srv.assert_healthy();
}

#[test]
fn resets_mid_response_do_not_disturb_other_clients() {
    let mut srv = Server::start(&[]);
    let mut good = srv.connect();
    let body = pattern(1 << 20, 11);
    let mut wire = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    wire.extend_from_slice(&body);
    for i in 0..12 {
        let mut c = srv.connect();
        c.set_recv_buffer(4096);
        c.send(&wire);
        // Wait until the response has started, then reset with most of it
        // still to send.
        let mut first = [0u8; 64];
        let n = c.stream.read(&mut first).expect("start of the echo response");
        assert!(first[..n].starts_with(b"HTTP/1.1 200"), "echo response starts with {}", show(&first[..n]));
        c.reset();
        let r = good.post("/echo", "text/plain", format!("between resets {i}").as_bytes());
        assert_eq!(r.status, 200);
        assert_eq!(r.body, format!("between resets {i}").as_bytes());
    }
    // A full 1 MiB echo still works afterwards.
    let r = good.post("/echo", "application/octet-stream", &body);
    assert_eq!(first_difference(&r.body, &body), None);
    srv.assert_healthy();
}

#[test]
fn backpressured_connection_resumes_when_the_client_reads() {
    const N: usize = 20_000;
    let srv = Server::start(&[]);
    let c = srv.connect();
    let mut writer = c.stream.try_clone().unwrap();
    // Far more response bytes than the server may buffer for one client.
    let wire = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(N);
    let sender = thread::spawn(move || writer.write_all(&wire));
    // Let the server fill its output and stop reading.
    thread::sleep(Duration::from_millis(500));
    let mut c = c;
    for i in 0..N {
        let r = c.try_response(false).unwrap_or_else(|e| panic!("response {i} of {N}: {e}"));
        assert_eq!((r.status, r.body.as_slice()), (200, HELLO), "response {i}");
    }
    sender.join().unwrap().expect("all requests sent once the client reads");

    // The same with large responses: 8 echoes of 256 KiB.
    let body = pattern(256 * 1024, 5);
    let mut wire = Vec::new();
    for _ in 0..8 {
        wire.extend_from_slice(
            format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
        );
        wire.extend_from_slice(&body);
    }
    let mut writer = c.stream.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&wire));
    thread::sleep(Duration::from_millis(500));
    for i in 0..8 {
        let r = c.response();
        assert_eq!(r.status, 200, "echo {i}");
        assert_eq!(first_difference(&r.body, &body), None, "echo {i}");
    }
    sender.join().unwrap().expect("all echoes sent once the client reads");
}

#[test]
fn client_that_never_reads_is_not_buffered_without_bound() {
    const CAP: usize = 64 << 20;
    let mut srv = Server::start(&[]);
    {
        let mut warm = srv.connect();
        for _ in 0..50 {
            assert_eq!(warm.get("/").status, 200);
        }
    }
    let base = srv.rss_kib();
    assert!(base > 0, "cannot read the server's VmRSS");

    let hog = srv.connect();
    hog.set_recv_buffer(16 * 1024);
    let mut stream = hog.stream.try_clone().unwrap();
    stream.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_writer = Arc::clone(&stop);
    // Small requests with larger responses, written until the server stops
    // taking them (no progress for a second), the cap, or 20 s.
    let writer = thread::spawn(move || {
        let batch = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(1000);
        let t0 = Instant::now();
        let mut sent = 0usize;
        let mut pos = 0usize;
        let mut last_progress = Instant::now();
        loop {
            if sent >= CAP || t0.elapsed() > Duration::from_secs(20) || stop_writer.load(Ordering::Relaxed) {
                return (sent, "cap or time limit");
            }
            match stream.write(&batch[pos..]) {
                Ok(n) => {
                    sent += n;
                    pos = (pos + n) % batch.len();
                    last_progress = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if last_progress.elapsed() > Duration::from_secs(1) {
                        return (sent, "server stopped reading");
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return (sent, "server closed the connection"),
            }
        }
    });

    // Meanwhile others are served promptly and memory stays bounded.
    let mut good = srv.connect();
    let mut peak = base;
    let mut worst = Duration::ZERO;
    while !writer.is_finished() {
        let t = Instant::now();
        let r = good.get("/");
        assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
        worst = worst.max(t.elapsed());
        peak = peak.max(srv.rss_kib());
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, why) = writer.join().unwrap();
    peak = peak.max(srv.rss_kib());
    let growth_kib = peak.saturating_sub(base);
    eprintln!(
        "never-reading client: sent {sent} bytes, stopped because {why}; server RSS {base} KiB -> peak {peak} KiB"
    );
    assert_ne!(
        why, "cap or time limit",
        "the server kept reading from a client that reads nothing ({sent} bytes sent)"
    );
    assert!(growth_kib < 64 * 1024, "server RSS grew by {growth_kib} KiB for one client that never reads");
    assert!(worst < Duration::from_millis(1000), "a normal request took {worst:?} while a client did not read");
    drop(hog);
    srv.assert_healthy();
}
