//! Behaviour both event-loop drivers (io_uring and epoll) must share, on
//! real processes and real sockets. Each test runs on whichever backend
//! `FORKRING_BACKEND` selects; `make test` runs them on both.
//!
//! - A listener that accept reports unusable (here: a socket-activated
//!   listener shut down for reading, so accept fails with EINVAL in every
//!   process that shares it) makes the worker log one `listener unusable`
//!   error line, stop accepting, finish the connections it has, and exit
//!   non-zero, for the master to see and respawn.
//! - While draining, connection deadlines are swept every
//!   `max(5, DRAIN_IDLE_GRACE_MS / 4)` ms, whatever the normal sweep
//!   interval is, so a deadline that passes during a drain is enforced
//!   about as promptly on either backend.

mod common;

use std::io;
use std::net::{Shutdown, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::http::{show, CloseOutcome};
use forkring_testkit::metrics;
use forkring_testkit::server::HELLO;

/// Starts the demo server on `listener`, passed the systemd way: as
/// descriptor 3, with `LISTEN_FDS=1` and `LISTEN_PID` set to the server's
/// own pid (the shell sets it to its pid, then execs the server in place).
/// The test keeps its own copy of the socket.
fn start_socket_activated(listener: &TcpListener, args: &[&str]) -> Server {
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#)
        .arg(forkring_testkit::target::binary("forkring-fixture"))
        .args(args)
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_FDNAMES");
    // SAFETY: the hook runs in the child between fork and exec and calls
    // only dup2 and fcntl, which are async-signal-safe. Descriptor 3 of the
    // child is either free or close-on-exec (at worst the pipe std uses to
    // report a failed exec, which then reports nothing: the harness still
    // sees a server that never starts); the copy made by dup2 is not
    // close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(fd, 3) };
            if rc == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Server::spawn(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// The server's log, one entry per line (without the harness's frame).
fn log_lines(srv: &Server) -> Vec<String> {
    srv.log_text()
        .lines()
        .filter(|l| !l.starts_with("--- forkring log") && !l.starts_with("--- end of log"))
        .map(str::to_owned)
        .collect()
}

/// Waits at most `timeout` for a log line that `want` accepts.
fn wait_for_line(srv: &Server, timeout: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = log_lines(srv).into_iter().find(|l| want(l)) {
            return Some(l);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The pid in a log line's `forkring[PID]` prefix.
fn line_pid(line: &str) -> Option<u32> {
    line.strip_prefix("forkring[")?.split(']').next()?.parse().ok()
}

/// The pid of worker `id` (e.g. `0.0`), from the master's `ready` event.
fn worker_pid(srv: &Server, id: &str) -> u32 {
    let prefix = format!("ready {id} pid=");
    let line = wait_for_line(srv, Duration::from_secs(5), |l| l.contains(&prefix))
        .unwrap_or_else(|| panic!("worker {id} never reported ready\n{}", srv.log_text()));
    let rest = &line[line.find(&prefix).unwrap() + prefix.len()..];
    rest.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no pid in {line:?}"))
}

/// Whether `line` is the one a worker logs as it exits with an error
/// (`worker 0.0: <error>`), which may repeat the cause.
fn is_exit_report(line: &str) -> bool {
    line.split_once(": ").is_some_and(|(_, msg)| msg.starts_with("worker "))
}

/// The `listener unusable` line of the log.
const UNUSABLE: &str = "listener unusable";

#[test]
fn unusable_listener_drains_the_worker_which_exits_non_zero() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    // Debug level shows every failed accept, so that a retry loop shows.
    let srv = start_socket_activated(&listener, &["--workers", "1", "--log", "debug", "--metrics", "127.0.0.1:0"]);
    assert_eq!(srv.addr, addr, "the server must serve the socket it was given\n{}", srv.log_text());
    let worker = worker_pid(&srv, "0.0");

    // A keep-alive connection, served once, then with the head of its next
    // request half sent: a request in flight when the listener breaks.
    let mut c = srv.connect();
    let first = c.get("/");
    assert_eq!((first.status, first.body.as_slice()), (200, HELLO), "the first request");
    assert!(!first.says_close(), "the first response closes the connection: {:?}", first.headers);
    let half = b"GET / HTTP/1.1\r\nHost: test\r\n";
    c.send(half);
    // In flight once the worker has read it: its received bytes count both
    // requests' (the first as `Client::get` sends it).
    let received = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n".len() + half.len();
    metrics::wait_sum(metrics::addr(&srv), "forkring_received_bytes_total", Duration::from_secs(5), |got| {
        got == received as u64
    });

    // SHUT_RD on a listening socket stops it listening: accept fails with
    // EINVAL in every process that holds the socket.
    let broke_at = Instant::now();
    // SAFETY: plain integer arguments on the test's own open socket.
    let rc = unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RD) };
    assert_eq!(rc, 0, "shutdown(listener, SHUT_RD): {}", io::Error::last_os_error());

    let mut problems = Vec::new();
    let mine = format!("forkring[{worker}]");
    let died = format!("(pid {worker}) died: ");
    // The worker says so, or at least reacts, within a bound.
    let noticed = wait_for_line(&srv, Duration::from_secs(3), |l| {
        (l.starts_with(&mine) && l.contains(UNUSABLE) && !is_exit_report(l)) || l.contains(&died)
    });
    match &noticed {
        Some(l) if !l.contains(&died) => {}
        Some(l) => problems.push(format!("the worker died without a `{UNUSABLE}` line first: {l:?}")),
        None => problems.push(format!(
            "no `{UNUSABLE}` line from worker pid {worker} within 3 s of the listener breaking \
             (and the worker is still running)"
        )),
    }

    // The request in flight is answered (with `Connection: close`: the
    // worker is draining), then the connection closes.
    let answer = c.try_send(b"\r\n").and_then(|()| c.try_response_within(false, Duration::from_secs(3)));
    match &answer {
        Ok(r) if r.status == 200 && r.body == HELLO => {
            if !r.says_close() {
                problems.push(format!(
                    "the answer to the request in flight does not close the connection: {:?}",
                    r.headers
                ));
            }
        }
        Ok(r) => problems.push(format!("the request in flight got {} {:?}", r.status, show(&r.body))),
        Err(e) => problems.push(format!("the request in flight got no answer: {e}")),
    }
    if answer.is_ok() {
        match c.wait_close(Duration::from_secs(3)) {
            CloseOutcome::Closed { .. } => {}
            CloseOutcome::Open { .. } => {
                problems.push("the connection stayed open 3 s after its last answer".to_owned())
            }
        }
    }
    drop(c);

    // Then the worker exits non-zero, and the master says so.
    let death = wait_for_line(&srv, Duration::from_secs(5), |l| l.contains(&died));
    match &death {
        Some(l) => {
            let status = &l[l.find(&died).unwrap() + died.len()..];
            if !(status.starts_with("Code(") && status != "Code(0)") {
                problems.push(format!("the worker ended with {status}, not a non-zero exit code"));
            }
        }
        None => problems
            .push(format!("worker pid {worker} still running {:?} after its listener broke", broke_at.elapsed())),
    }

    // One line per worker, not one per retry: watch respawned workers too.
    thread::sleep(Duration::from_millis(1000));
    let lines = log_lines(&srv);
    let unusable: Vec<&String> = lines.iter().filter(|l| l.contains(UNUSABLE) && !is_exit_report(l)).collect();
    let first_worker: Vec<&&String> = unusable.iter().filter(|l| l.starts_with(&mine)).collect();
    if first_worker.len() > 1 {
        problems.push(format!("worker pid {worker} logged `{UNUSABLE}` {} times", first_worker.len()));
    }
    if let Some(l) = first_worker.first() {
        if !l.starts_with(&format!("{mine} error")) {
            problems.push(format!("the `{UNUSABLE}` line is not at error level: {l:?}"));
        }
    }
    // Besides that line, a drain may report once that the listener yields
    // nothing more; more accept errors than that mean accept is retried.
    let accept_errors = lines
        .iter()
        .filter(|l| {
            l.starts_with(&mine) && !is_exit_report(l) && l.contains("accept") && l.contains("Invalid argument")
        })
        .count();
    if accept_errors > 2 {
        problems.push(format!("worker pid {worker} logged {accept_errors} accept errors: it retries accept"));
    }
    let mut pids: Vec<u32> = unusable.iter().filter_map(|l| line_pid(l)).collect();
    pids.sort_unstable();
    let n = pids.len();
    pids.dedup();
    if pids.len() != n {
        problems.push(format!("a worker logged `{UNUSABLE}` more than once: {n} lines from pids {pids:?}"));
    }

    assert!(
        problems.is_empty(),
        "after the listener broke (accept: EINVAL), expected one `{UNUSABLE}` error line per worker, \
         the request in flight answered, and a non-zero exit; instead:\n  - {}\n{}",
        problems.join("\n  - "),
        srv.log_text()
    );
    drop(srv);
    drop(listener);
}

/// Header timeout of the drain-cadence test: its normal sweep interval is
/// the 250 ms ceiling.
const HEADER_TIMEOUT_MS: u64 = 2600;
/// Connections of the drain-cadence test.
const STAGGERED: usize = 20;
/// Gap between their starts: together they span a whole normal sweep
/// interval, so their deadlines fall at every phase of it.
const STAGGER: Duration = Duration::from_millis(13);
/// The intended sweep period while draining: `max(5, DRAIN_IDLE_GRACE_MS / 4)`
/// with the 200 ms grace of `forkring::http::DRAIN_IDLE_GRACE_MS`.
const DRAIN_SWEEP_MS: u64 = 50;
/// Highest 90th percentile of the lag between a deadline and the close,
/// in ms: the drain cadence (50 ms) plus ample room for scheduling, well
/// under what a 250 ms cadence gives (lags spread over 0..250 ms).
const P90_LAG_MS: f64 = 150.0;

#[test]
fn deadlines_during_a_drain_are_swept_at_the_drain_cadence() {
    let header = HEADER_TIMEOUT_MS.to_string();
    let srv = Server::start(&["--workers", "1", "--header-timeout", &header, "--drain-timeout", "30000"]);
    let worker = worker_pid(&srv, "0.0");

    // Connections that each start a request head and never finish it: a
    // drain lets them be (they are not idle), and each closes at its own
    // header deadline, counted from its accept. Each is watched by a
    // thread that reports when the server closes it.
    let (tx, rx) = mpsc::channel();
    let mut starts = Vec::with_capacity(STAGGERED);
    let mut watchers = Vec::with_capacity(STAGGERED);
    for i in 0..STAGGERED {
        let started = Instant::now();
        let mut c = srv.connect();
        c.send(b"GET / HTTP/1.1\r\nHost: test\r\n");
        starts.push(started);
        let tx = tx.clone();
        watchers.push(thread::spawn(move || {
            let outcome = c.wait_close(Duration::from_millis(HEADER_TIMEOUT_MS + 6000));
            let at = Instant::now();
            let _ = c.stream.shutdown(Shutdown::Both);
            let _ = tx.send((i, at, outcome));
        }));
        thread::sleep(STAGGER);
    }
    drop(tx);

    // The drain starts well before the first deadline.
    thread::sleep(Duration::from_millis(300));
    srv.signal(libc::SIGTERM);
    let mine = format!("forkring[{worker}]");
    let draining = wait_for_line(&srv, Duration::from_secs(2), |l| l.starts_with(&mine) && l.contains("draining"));
    let first_deadline = starts[0] + Duration::from_millis(HEADER_TIMEOUT_MS);
    assert!(
        draining.is_some() && Instant::now() + Duration::from_millis(200) < first_deadline,
        "the worker was not draining well before the first header deadline\n{}",
        srv.log_text()
    );

    let mut closed: Vec<Option<(Instant, CloseOutcome)>> = (0..STAGGERED).map(|_| None).collect();
    let bound = Instant::now() + Duration::from_millis(HEADER_TIMEOUT_MS + 8000);
    while closed.iter().any(Option::is_none) {
        let left = bound.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, at, outcome)) => closed[i] = Some((at, outcome)),
            Err(_) => break,
        }
    }
    for w in watchers {
        let _ = w.join();
    }

    let mut lags = Vec::with_capacity(STAGGERED);
    for (i, c) in closed.iter().enumerate() {
        let Some((at, outcome)) = c else {
            panic!("connection {i}: no report of its close\n{}", srv.log_text());
        };
        match outcome {
            CloseOutcome::Closed { extra } => assert!(
                extra.is_empty() || extra.starts_with(b"HTTP/1.1 408 "),
                "connection {i} got {} before its close",
                show(extra)
            ),
            CloseOutcome::Open { extra } => panic!(
                "connection {i} still open {} ms after its header deadline (received {})\n{}",
                HEADER_TIMEOUT_MS + 6000,
                show(extra),
                srv.log_text()
            ),
        }
        let deadline = starts[i] + Duration::from_millis(HEADER_TIMEOUT_MS);
        let lag = if *at >= deadline {
            at.duration_since(deadline).as_secs_f64() * 1e3
        } else {
            -(deadline.duration_since(*at).as_secs_f64() * 1e3)
        };
        lags.push(lag);
    }
    let shown: Vec<String> = lags.iter().map(|l| format!("{l:.0}")).collect();
    let mut sorted = lags.clone();
    sorted.sort_by(f64::total_cmp);
    let p90 = sorted[(STAGGERED * 9).div_ceil(10) - 1];
    eprintln!("drain sweep: lag p90 {p90:.0} ms, lags (ms, in connection order) [{}]", shown.join(", "));
    // A drain must not cut short a request head on the wire, or the lags
    // measure nothing.
    assert!(
        sorted[0] > -20.0,
        "a connection in the middle of a request head was closed {:.0} ms before its header deadline; \
         lags (ms): [{}]\n{}",
        -sorted[0],
        shown.join(", "),
        srv.log_text()
    );
    assert!(
        p90 < P90_LAG_MS,
        "header deadlines passing during a drain were enforced late: lag p90 {p90:.0} ms (at most {P90_LAG_MS} \
         expected with a {DRAIN_SWEEP_MS} ms drain sweep); lags (ms, in connection order): [{}]",
        shown.join(", ")
    );
}
