//! The cluster on real processes: start and stop in both balance modes,
//! lifecycle event order, respawn after a crash, the crash budget, graceful
//! shutdown with requests in flight, rolling reload under load, scaling,
//! master death, privilege drop and socket activation.
//!
//! The demo server logs every lifecycle event as a line (`ready 0.1
//! pid=42`), which is what these tests read.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::client::Client;
use forkring_testkit::metrics;
use forkring_testkit::need::{require, Need};
use forkring_testkit::proc;
use forkring_testkit::server::HELLO;

/// The lifecycle events in the log, as `kind worker` (e.g. `ready 0.1`).
fn events(server: &Server) -> Vec<String> {
    const KINDS: [&str; 7] = ["fork ", "online ", "listening ", "ready ", "draining ", "disconnect ", "exit "];
    server
        .log_text()
        .lines()
        .filter_map(|l| {
            let msg = l.split_once(": ").map(|(_, m)| m)?;
            if !KINDS.iter().any(|k| msg.starts_with(k)) || !msg.contains(" pid=") {
                return None;
            }
            let mut it = msg.split(' ');
            Some(format!("{} {}", it.next()?, it.next()?))
        })
        .collect()
}

/// The pid in an event line.
fn pid_of(line: &str) -> i32 {
    let p = line.split("pid=").nth(1).expect("pid= in line");
    p.split(' ').next().unwrap().parse().expect("numeric pid")
}

fn get_ok(addr: SocketAddr) {
    let mut c = Client::connect(addr);
    let r = c.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, HELLO);
}

#[test]
fn a_cluster_starts_serves_and_stops_in_both_balance_modes() {
    for balance in ["reuseport", "shared"] {
        let mut server = Server::start(&["--workers", "2", "--balance", balance]);
        server.wait_line(&["ready 0.0"], Duration::from_secs(10));
        server.wait_line(&["ready 1.0"], Duration::from_secs(10));
        for _ in 0..20 {
            get_ok(server.addr);
        }
        let workers = proc::descendants(server.pid());
        assert_eq!(workers.len(), 2, "{balance}: two worker processes\n{}", server.log_text());
        server.signal(libc::SIGTERM);
        let status = server.wait_exit(Duration::from_secs(10)).expect("master exits after SIGTERM");
        assert!(status.success(), "{balance}: clean drain exits 0, got {status:?}\n{}", server.log_text());
        for pid in workers {
            assert!(!proc::alive(pid), "{balance}: worker {pid} outlived the master");
        }
    }
}

#[test]
fn events_come_in_order_through_start_and_drain() {
    let mut server = Server::start(&["--workers", "1"]);
    server.wait_line(&["ready 0.0"], Duration::from_secs(10));
    server.signal(libc::SIGTERM);
    server.wait_exit(Duration::from_secs(10)).expect("exit");
    server.wait_line(&["exit 0.0", "code=0", "requested=true"], Duration::from_secs(2));
    assert_eq!(
        events(&server),
        ["fork 0.0", "online 0.0", "listening 0.0", "ready 0.0", "draining 0.0", "disconnect 0.0", "exit 0.0"],
        "{}",
        server.log_text()
    );
}

#[test]
fn crashed_worker_is_respawned_in_its_slot_while_others_serve() {
    let server = Server::start(&["--workers", "2"]);
    let ready = server.wait_line(&["ready 0.0"], Duration::from_secs(10));
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    let victim = pid_of(&ready);
    // A client keeps being served by the rest of the cluster meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, failures, served, addr) = (stop.clone(), failures.clone(), served.clone(), server.addr);
        thread::spawn(move || load_loop(addr, &stop, &failures, &served))
    };
    wait_served(&served, 20, &failures);
    let killed_at = Instant::now();
    proc::signal(victim, libc::SIGKILL).expect("kill the worker");
    server.wait_line(&["exit 0.0", "signal=9", "requested=false"], Duration::from_secs(5));
    server.wait_line(&["ready 0.1"], Duration::from_secs(5));
    let back_in = killed_at.elapsed();
    wait_served(&served, served.load(Ordering::SeqCst) + 20, &failures);
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let order: Vec<String> = events(&server)
        .into_iter()
        .filter(|e| e.ends_with(" 0.1") || e == "exit 0.0" || e == "disconnect 0.0")
        .collect();
    assert_eq!(
        order,
        ["disconnect 0.0", "exit 0.0", "fork 0.1", "online 0.1", "listening 0.1", "ready 0.1"],
        "{}",
        server.log_text()
    );
    assert!(back_in < Duration::from_secs(3), "slot 0 took {back_in:?} to be ready again");
    assert!(served.load(Ordering::SeqCst) > 0);
    // Only requests on connections the dead worker held may fail, and the
    // load loop opens one connection per request.
    assert!(failures.load(Ordering::SeqCst) <= 2, "failures: {}", failures.load(Ordering::SeqCst));
    // The replacement serves on the same address.
    for _ in 0..10 {
        get_ok(server.addr);
    }
}

/// Requests on fresh connections until `stop`; counts answers and failures.
fn load_loop(addr: SocketAddr, stop: &AtomicBool, failures: &AtomicU64, served: &AtomicU64) {
    while !stop.load(Ordering::SeqCst) {
        load_one(addr, failures, served);
    }
}

/// One request on a fresh connection; a refused or reset connection, or
/// anything but a 200, counts as a failure.
fn load_one(addr: SocketAddr, failures: &AtomicU64, served: &AtomicU64) {
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(s) => {
            let mut c = Client::from_stream(s);
            let sent = c.try_send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            match sent.and_then(|()| c.try_response(false)) {
                Ok(r) if r.status == 200 => served.fetch_add(1, Ordering::SeqCst),
                _ => failures.fetch_add(1, Ordering::SeqCst),
            };
        }
        Err(_) => {
            failures.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Waits until `served` reaches `target` (the load threads go on), for at
/// most 10 s; the failures so far are in the message when it does not.
fn wait_served(served: &AtomicU64, target: u64, failures: &AtomicU64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while served.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "{} served, {} failed: the load stalled",
            served.load(Ordering::SeqCst),
            failures.load(Ordering::SeqCst)
        );
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn workers_dying_before_ready_stop_the_cluster() {
    // A worker that cannot switch to a missing user dies before it is ready.
    let out = Command::new(forkring_testkit::target::binary("forkring-fixture"))
        .args(["--listen", "127.0.0.1:0", "--workers", "1", "--user", "no-such-user-forkring"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    let output = wait_output(out, Duration::from_secs(20));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "crash loop must exit non-zero\n{err}");
    assert!(err.contains("in a row before it was ready"), "clear error expected\n{err}");
    assert!(err.matches("fork 0.").count() == 5, "five attempts with backoff\n{err}");
    // Backoff: 0 + 100 + 150 + 225 ms at least between the five forks.
    assert!(started.elapsed() >= Duration::from_millis(450), "{:?}", started.elapsed());
}

fn wait_output(child: std::process::Child, timeout: Duration) -> std::process::Output {
    proc::output_within(child, timeout, "the cluster")
}

#[test]
fn graceful_shutdown_answers_requests_in_flight() {
    let mut server = Server::start(&["--workers", "2", "--metrics", "127.0.0.1:0"]);
    server.wait_line(&["ready 0.0"], Duration::from_secs(10));
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    let maddr = metrics::addr(&server);
    // Requests whose bodies are still arriving when SIGTERM comes.
    let mut clients: Vec<Client> = (0..8).map(|_| Client::connect(server.addr)).collect();
    for c in &mut clients {
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello");
    }
    // An idle keep-alive connection, too.
    let mut idle = Client::connect(server.addr);
    assert_eq!(idle.get("/").status, 200);
    // The workers hold the eight halves of bodies (5 bytes each).
    metrics::wait_sum(maddr, "forkring_body_bytes", Duration::from_secs(5), |held| held == 40);
    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    // Both workers drain before the rest of the bodies comes.
    wait_lines(&server, &["draining: ", "connections open"], 2);
    for c in &mut clients {
        c.send(b"world");
        let r = c.response();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"helloworld");
        assert!(r.says_close(), "responses during a drain close the connection");
    }
    idle.expect_close();
    let status = server.wait_exit(Duration::from_secs(10)).expect("master exits");
    assert!(status.success(), "{status:?}\n{}", server.log_text());
    assert!(t0.elapsed() < Duration::from_secs(5), "shutdown took {:?}", t0.elapsed());
}

#[test]
fn rolling_reload_under_load_loses_nothing() {
    let server = Server::start(&["--workers", "2"]);
    server.wait_line(&["ready 0.0"], Duration::from_secs(10));
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for keep_alive in [true, true, false] {
        let (stop, failures, served, addr) = (stop.clone(), failures.clone(), served.clone(), server.addr);
        load.push(thread::spawn(move || {
            if keep_alive {
                keep_alive_loop(addr, &stop, &failures, &served)
            } else {
                load_loop(addr, &stop, &failures, &served)
            }
        }));
    }
    for round in 1..=3u64 {
        wait_served(&served, served.load(Ordering::SeqCst) + 30, &failures);
        server.signal(libc::SIGHUP);
        server.wait_line(&[&format!("ready 0.{round}")], Duration::from_secs(10));
        server.wait_line(&[&format!("ready 1.{round}")], Duration::from_secs(10));
        server.wait_line(&[&format!("exit 1.{}", round - 1), "requested=true"], Duration::from_secs(10));
    }
    wait_served(&served, served.load(Ordering::SeqCst) + 30, &failures);
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.join().unwrap();
    }
    let served = served.load(Ordering::SeqCst);
    assert!(served > 100, "served {served}");
    assert_eq!(failures.load(Ordering::SeqCst), 0, "failed requests during reloads\n{}", server.log_text());
    // Every old worker drained on request.
    let log = server.log_text();
    assert!(!log.contains("requested=false"), "{log}");
}

/// Keep-alive requests, reconnecting whenever the server closes (after a
/// `Connection: close` response); a request without an answer is a failure.
fn keep_alive_loop(addr: SocketAddr, stop: &AtomicBool, failures: &AtomicU64, served: &AtomicU64) {
    let mut conn: Option<Client> = None;
    while !stop.load(Ordering::SeqCst) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(s) => conn.insert(Client::from_stream(s)),
                Err(_) => {
                    failures.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
            },
        };
        let sent = c.try_send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        match sent.and_then(|()| c.try_response(false)) {
            Ok(r) if r.status == 200 => {
                served.fetch_add(1, Ordering::SeqCst);
                if r.says_close() {
                    conn = None;
                }
            }
            _ => {
                failures.fetch_add(1, Ordering::SeqCst);
                conn = None;
            }
        }
    }
}

#[test]
fn ttin_adds_a_worker_and_ttou_removes_one() {
    let server = Server::start(&["--workers", "1"]);
    server.wait_line(&["ready 0.0"], Duration::from_secs(10));
    server.signal(libc::SIGTTIN);
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    assert_eq!(proc::descendants(server.pid()).len(), 2);
    for _ in 0..20 {
        get_ok(server.addr);
    }
    server.signal(libc::SIGTTOU);
    server.wait_line(&["draining 1.0"], Duration::from_secs(5));
    server.wait_line(&["exit 1.0", "requested=true"], Duration::from_secs(5));
    for _ in 0..20 {
        get_ok(server.addr);
    }
    // The last worker stays.
    server.signal(libc::SIGTTOU);
    thread::sleep(Duration::from_millis(300));
    get_ok(server.addr);
    assert!(!server.log_text().contains("exit 0.0"), "{}", server.log_text());
}

#[test]
fn ttou_under_load_resets_no_queued_connection() {
    let server = Server::start(&["--workers", "2", "--balance", "reuseport"]);
    server.wait_line(&["ready 0.0"], Duration::from_secs(10));
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    // Requests whose heads are still arriving: those the kernel hashed to
    // slot 1 keep its worker draining for as long as the test likes, which
    // is when a listener left open would collect connections to reset.
    let mut slow: Vec<Client> = (0..16).map(|_| Client::connect(server.addr)).collect();
    for c in &mut slow {
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    // Fresh connections as fast as four threads make them, through eight
    // removals of slot 1 and as many additions: the kernel must send no
    // new handshake to a departing socket (the master steers them away
    // first), or those in flight when it closes are reset.
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failures, served, addr) = (stop.clone(), failures.clone(), served.clone(), server.addr);
            thread::spawn(move || load_loop(addr, &stop, &failures, &served))
        })
        .collect();
    let more = |n: u64| wait_served(&served, served.load(Ordering::SeqCst) + n, &failures);
    more(500);
    let before = served.load(Ordering::SeqCst);
    let started = Instant::now();
    for round in 1..=8 {
        server.signal(libc::SIGTTOU);
        wait_lines(&server, &["draining 1."], round);
        more(300);
        if round == 1 {
            for c in &mut slow {
                c.send(b"\r\n");
                assert_eq!(c.response().status, 200);
            }
            slow.clear();
        }
        wait_lines(&server, &["exit 1.", "requested=true"], round);
        more(300);
        server.signal(libc::SIGTTIN);
        wait_lines(&server, &["ready 1."], round + 1);
        more(300);
    }
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.join().unwrap();
    }
    let served = served.load(Ordering::SeqCst);
    let rate = (served - before) as f64 / started.elapsed().as_secs_f64();
    eprintln!("{} requests through the removals, {rate:.0} a second", served - before);
    assert!(before > 0 && served > before, "served {before} before the removals, {served} in all");
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "failed requests of {served} around the removals\n{}",
        server.log_text()
    );
    assert!(!server.log_text().contains("exit 0.0"), "{}", server.log_text());
}

/// Connections accepted by each slot, from the master's metrics.
fn accepts_by_slot(addr: SocketAddr) -> std::collections::BTreeMap<u32, u64> {
    let text = metrics::scrape(addr);
    metrics::samples(&text, "forkring_accepts_total")
        .map(|(labels, v)| (labels.trim_start_matches("slot=\"").trim_end_matches('"').parse().expect("a slot"), v))
        .collect()
}

/// `n` requests, each on its own connection (a new handshake each, hashed
/// or steered by the kernel to one slot's socket).
fn connections(addr: SocketAddr, n: u64) {
    let failures = AtomicU64::new(0);
    let served = AtomicU64::new(0);
    for _ in 0..n {
        load_one(addr, &failures, &served);
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0, "failed requests of {n}");
}

#[test]
fn steered_connections_spread_evenly_and_a_new_slot_takes_its_share_at_once() {
    let server = Server::start(&["--workers", "4", "--balance", "reuseport", "--metrics", "127.0.0.1:0"]);
    let maddr = metrics::addr(&server);
    for w in 0..4 {
        server.wait_line(&[&format!("ready {w}.0")], Duration::from_secs(10));
    }
    // The program is on the group (or the kernel migrates requests itself:
    // then its own hash spreads them, which must be as even).
    server.wait_line(&["reuseport: "], Duration::from_secs(5));
    // 1,000 a slot: a fair choice puts each slot within a few percent of
    // it (a standard deviation of 27); 1.35x between the most and the
    // fewest is more than ten of them.
    let even = |counts: &[u64], what: &str| {
        let (max, min) = (*counts.iter().max().unwrap(), *counts.iter().min().unwrap());
        eprintln!("{what}: accepts per slot {counts:?}");
        assert!(
            min > 0 && max as f64 <= 1.35 * min as f64,
            "{what}: accepts per slot {counts:?}\n{}",
            server.log_text()
        );
    };
    let start = accepts_by_slot(maddr);
    connections(server.addr, 4000);
    let first = accepts_by_slot(maddr);
    let delta = |a: &std::collections::BTreeMap<u32, u64>, b: &std::collections::BTreeMap<u32, u64>, slots: u32| {
        (0..slots).map(|s| b.get(&s).copied().unwrap_or(0) - a.get(&s).copied().unwrap_or(0)).collect::<Vec<u64>>()
    };
    even(&delta(&start, &first, 4), "four slots");
    // A fifth slot joins the program's choice as soon as it is ready.
    server.signal(libc::SIGTTIN);
    server.wait_line(&["ready 4.0"], Duration::from_secs(10));
    connections(server.addr, 5000);
    let second = accepts_by_slot(maddr);
    even(&delta(&first, &second, 5), "five slots after a TTIN");
}

/// Waits until the log has `n` lines containing every one of `parts`.
fn wait_lines(server: &Server, parts: &[&str], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log_text();
        if log.lines().filter(|l| parts.iter().all(|p| l.contains(p))).count() >= n {
            return;
        }
        assert!(Instant::now() < deadline, "no {n} log lines with {parts:?} within 10 s\n{log}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn workers_exit_when_the_master_is_killed() {
    let mut server = Server::start(&["--workers", "2"]);
    server.wait_line(&["ready 0.0"], Duration::from_secs(10));
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    let workers = proc::descendants(server.pid());
    assert_eq!(workers.len(), 2);
    server.signal(libc::SIGKILL);
    server.wait_exit(Duration::from_secs(5)).expect("master dies");
    let deadline = Instant::now() + Duration::from_secs(1);
    while workers.iter().any(|&p| proc::alive(p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let left: Vec<_> = workers.iter().filter(|&&p| proc::alive(p)).collect();
    assert!(left.is_empty(), "workers {left:?} still alive 1 s after the master died");
}

#[test]
#[ignore = "needs root"]
fn workers_drop_privileges() {
    require(Need::Root);
    let server = Server::start(&["--workers", "1", "--user", "nobody"]);
    let ready = server.wait_line(&["ready 0.0"], Duration::from_secs(10));
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid_of(&ready))).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let gid_line = status.lines().find(|l| l.starts_with("Gid:")).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("user nobody");
    let uids: Vec<u32> = uid_line.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect();
    let gids: Vec<u32> = gid_line.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect();
    assert!(uids.iter().all(|&u| u == nobody.uid.as_raw()), "{uid_line}");
    assert!(gids.iter().all(|&g| g == nobody.gid.as_raw()), "{gid_line}");
    let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
    assert_eq!(groups.split_whitespace().skip(1).collect::<Vec<_>>(), [nobody.gid.as_raw().to_string()], "{groups}");
    // The master keeps root, the worker serves.
    let master = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    assert!(master.lines().any(|l| l.starts_with("Uid:\t0\t")), "master stays root");
    get_ok(server.addr);
}

#[test]
fn a_socket_passed_by_systemd_is_served() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    // LISTEN_PID must be the pid of the process that reads it: the shell
    // sets it to its own pid, then execs the server.
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
        .arg(forkring_testkit::target::binary("forkring-fixture"))
        .args(["--listen", "127.0.0.1:1", "--workers", "2"]);
    // SAFETY: dup2 is async-signal-safe; it runs in the child before exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec set.
            let r = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(fd, 3) };
            if r == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut server = Server::spawn(cmd).unwrap_or_else(|e| panic!("{e}"));
    drop(listener);
    assert_eq!(server.addr, addr, "serves the inherited socket, not --listen");
    server.wait_line(&["using inherited socket"], Duration::from_secs(5));
    server.wait_line(&["ready 1.0"], Duration::from_secs(10));
    for _ in 0..10 {
        get_ok(addr);
    }
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).expect("exit").success());
}

#[test]
fn a_worker_that_served_is_replaced_at_once_and_quick_deaths_back_off() {
    // The default `stable_after` is 1 s: a worker ready for longer was
    // serving, and its death is no crash loop.
    let server = Server::start(&["--workers", "1"]);
    let mut pid = pid_of(&server.wait_line(&["ready 0.0"], Duration::from_secs(10)));
    for gen in 1..=3 {
        thread::sleep(Duration::from_millis(1200));
        proc::signal(pid, libc::SIGKILL).expect("kill the worker");
        let line = server.wait_line(&[&format!("ready 0.{gen}")], Duration::from_secs(5));
        pid = pid_of(&line);
    }
    let log = server.log_text();
    let respawns: Vec<&str> = log.lines().filter(|l| l.contains("respawning slot 0")).collect();
    assert_eq!(respawns.len(), 3, "{log}");
    assert!(respawns.iter().all(|l| l.contains("crash 1 in a row")), "each death after serving starts afresh\n{log}");
    // Deaths soon after ready still count as a streak, with growing delays.
    for gen in 4..=5 {
        thread::sleep(Duration::from_millis(100));
        proc::signal(pid, libc::SIGKILL).expect("kill the worker");
        let line = server.wait_line(&[&format!("ready 0.{gen}")], Duration::from_secs(5));
        pid = pid_of(&line);
    }
    let log = server.log_text();
    assert!(log.contains("crash 2 in a row"), "{log}");
    get_ok(server.addr);
}
