//! The access log on real processes: one line per answered request in the
//! combined log format plus microseconds, from every worker, reopened on
//! SIGUSR1, and a file a worker cannot open stops the cluster at start.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;

use forkring_testkit::scratch::ScratchDir as Dir;

/// Waits (at most 5 s) until `path` holds at least `n` lines; returns them.
fn lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let v: Vec<String> = text.lines().map(str::to_owned).collect();
        if v.len() >= n || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One line's fields: (peer, request line, status, bytes, referer, user
/// agent, microseconds).
fn fields(line: &str) -> (String, String, u16, String, String, String, u64) {
    let (peer, rest) = line.split_once(" - - [").unwrap_or_else(|| panic!("{line}"));
    let (time, rest) = rest.split_once("] \"").unwrap_or_else(|| panic!("{line}"));
    assert_eq!(time.len(), 26, "{line}");
    assert!(time.ends_with(" +0000"), "{line}");
    let (request, rest) = rest.split_once("\" ").unwrap_or_else(|| panic!("{line}"));
    let mut it = rest.splitn(3, ' ');
    let status: u16 = it.next().unwrap().parse().unwrap_or_else(|_| panic!("{line}"));
    let bytes = it.next().unwrap().to_owned();
    let rest = it.next().unwrap();
    let q: Vec<&str> = rest.split('"').collect();
    assert_eq!(q.len(), 5, "{line}");
    let micros: u64 = q[4].trim().parse().unwrap_or_else(|_| panic!("{line}"));
    (peer.to_owned(), request.to_owned(), status, bytes, q[1].to_owned(), q[3].to_owned(), micros)
}

#[test]
fn every_answered_request_is_a_line_and_sigusr1_reopens_the_file() {
    let dir = Dir::new("access-lines");
    let log = dir.0.join("access.log");
    let mut srv = Server::start(&["--workers", "2", "--access-log", log.to_str().unwrap()]);
    let mut c = srv.connect();
    c.send(b"GET /a?b=c HTTP/1.1\r\nHost: t\r\nReferer: http://r/\r\nUser-Agent: test \"agent\"\r\n\r\n");
    assert_eq!(c.response().status, 404);
    c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.head_response().status, 200);
    assert_eq!(c.get("/delay?ms=30").status, 200);
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(c.response().status, 200);
    let mut bad = srv.connect();
    bad.send(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n");
    assert_eq!(bad.response().status, 400);

    let got = lines(&log, 5);
    assert_eq!(got.len(), 5, "{got:#?}");
    let f: Vec<_> = got.iter().map(|l| fields(l)).collect();
    let find = |req: &str| f.iter().find(|x| x.1 == req).unwrap_or_else(|| panic!("no {req:?} in {got:#?}"));
    let a = find("GET /a?b=c HTTP/1.1");
    assert_eq!(a.0, "127.0.0.1");
    assert_eq!((a.2, a.4.as_str(), a.5.as_str()), (404, "http://r/", "test \\x22agent\\x22"), "{got:#?}");
    let head = find("HEAD / HTTP/1.1");
    assert_eq!((head.2, head.3.as_str()), (200, "-"), "a HEAD logs no body bytes");
    let delay = find("GET /delay?ms=30 HTTP/1.1");
    assert_eq!(delay.2, 200);
    assert!(delay.6 >= 30_000, "a deferred request's time includes its wait: {got:#?}");
    let ten = find("GET / HTTP/1.0");
    assert_eq!((ten.2, ten.3.as_str(), ten.4.as_str(), ten.5.as_str()), (200, "13", "-", "-"));
    let refused = find("-");
    assert_eq!(refused.2, 400);
    drop((c, bad));

    // logrotate: the file is moved away, then SIGUSR1.
    let rotated = dir.0.join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rename");
    srv.signal(libc::SIGUSR1);
    srv.wait_line(&["reopening the workers' logs"], Duration::from_secs(5));
    // Every worker reopens before its next write: requests on fresh
    // connections until both workers have written to the new file.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = 0;
    while lines(&log, 0).len() < 8 && Instant::now() < deadline {
        assert_eq!(srv.connect().get("/after").status, 404);
        sent += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    let new = lines(&log, sent);
    assert!(new.len() >= 8, "{} lines in the new file after {sent} requests", new.len());
    assert!(new.iter().all(|l| l.contains("\"GET /after HTTP/1.1\" 404")), "{new:#?}");
    let old = lines(&rotated, 5);
    assert!(old.iter().all(|l| !l.contains("/after")), "a line went to the rotated file: {old:#?}");
    srv.assert_healthy();
}

#[test]
fn an_access_log_the_workers_cannot_open_stops_the_cluster_at_start() {
    let dir = Dir::new("access-denied");
    let log = dir.0.join("no-such-dir").join("access.log");
    let out = Command::new(forkring_testkit::target::binary("forkring-fixture"))
        .args(["--listen", "127.0.0.1:0", "--workers", "2", "--access-log", log.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = out.id() as i32;
    let waiter = std::thread::spawn(move || out.wait_with_output());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !waiter.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !waiter.is_finished() {
        // SAFETY: our own child, not reaped yet (its waiter still runs).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("the cluster did not stop within 20 s");
    }
    let output = waiter.join().expect("waiter").expect("wait");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{err}");
    assert!(err.contains("access log") && err.contains("No such file"), "{err}");
}
