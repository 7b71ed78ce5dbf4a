//! Admission by queueing time on a real cluster, on both backends: a
//! blocking pool saturated by slow jobs sheds new pool work fast (`503`
//! with `Retry-After: 1`) while requests answered on the loop are not
//! touched; the metrics count what was shed; `/ready` turns 503 while the
//! workers shed and back once they have been quiet, without flapping;
//! `--admission off` admits everything up to the caps, as before. With a
//! loop target, a loop held by heavy handlers refuses what comes past the
//! target of each turn before its handler runs, and goes on answering the
//! rest, and answers a turn's cheap requests before its heavy ones;
//! without one, the loop is never shed. With `--pool-limit
//! adaptive`, jobs that run longer than they used to lower the pool's
//! limit, and quick ones raise it again.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::client::Client;
use forkring_testkit::server::HELLO;

/// The metrics address the server logged.
fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server.wait_line(&["metrics on http://"], Duration::from_secs(10));
    let rest = line.split("metrics on http://").nth(1).unwrap();
    rest.trim_end_matches("/metrics").trim().parse().unwrap()
}

/// One request to the metrics listener: status and body.
fn scrape(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: m\r\n\r\n").as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let text = String::from_utf8(all).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("GET {path}: {text:?}"));
    (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_owned())
}

/// The sum of a metric's samples whose line starts with `prefix`.
fn sum(text: &str, prefix: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(prefix)).map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap()).sum()
}

/// Waits (bounded) until `f` holds; panics with `what` otherwise.
fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// One worker started with `args` and a metrics listener, once ready;
/// with the metrics' address.
fn one_worker(args: &[&str]) -> (Server, SocketAddr) {
    let server = Server::start(&[&["--workers", "1", "--metrics", "127.0.0.1:0"], args].concat());
    let maddr = metrics_addr(&server);
    server.wait_line(&["ready 0."], Duration::from_secs(10));
    (server, maddr)
}

/// One worker with a pool of 2 threads behind a queue of 1,000 jobs.
fn deep_pool(args: &[&str]) -> (Server, SocketAddr) {
    one_worker(&[&["--pool", "2", "--pool-queue", "1000"], args].concat())
}

/// Clients that keep the server busy with `path` until stopped; refused
/// ones try again after 5 ms. Counts answers by status.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    ok: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    started: Instant,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        Load::on(addr, clients, "/sleep?ms=50")
    }

    fn on(addr: SocketAddr, clients: usize, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, refused) = (stop.clone(), ok.clone(), refused.clone());
                thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    // Bounded: the test stops it within a minute.
                    let end = Instant::now() + Duration::from_secs(60);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                        let r = c.get(path);
                        match r.status {
                            200 => ok.fetch_add(1, Ordering::Relaxed),
                            503 => {
                                assert_eq!(r.header("retry-after"), Some("1"), "{:?}", r.headers);
                                // Pacing the retries, as a client that
                                // honours a refusal would.
                                thread::sleep(Duration::from_millis(5));
                                refused.fetch_add(1, Ordering::Relaxed)
                            }
                            s => panic!("load: status {s}"),
                        };
                    }
                })
            })
            .collect();
        Load { stop, threads, ok, refused, started: Instant::now() }
    }

    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let ran = self.started.elapsed();
        let ok = self.ok.load(Ordering::Relaxed);
        println!("load: {ok} answered in {ran:?}: {:.1}/s", ok as f64 / ran.as_secs_f64());
        for t in self.threads {
            t.join().unwrap();
        }
        (self.ok.load(Ordering::Relaxed), self.refused.load(Ordering::Relaxed))
    }
}

#[test]
fn a_saturated_pool_sheds_pool_work_fast_and_ready_follows_without_flapping() {
    // Two threads and room for a thousand jobs: without admission the
    // queue would grow to the clients' number, each waiting for it.
    let (mut server, maddr) = deep_pool(&[]);
    assert_eq!(scrape(maddr, "/ready").0, 200);
    let load = Load::start(server.addr, 16);
    wait_for("work shed for the pool", Duration::from_secs(15), || {
        sum(&scrape(maddr, "/metrics").1, "forkring_shed_total{slot=\"0\",cause=\"pool\"}") > 0.0
    });
    // New pool work is refused fast (some probes may fall in a moment the
    // pool admits again: at least one of them is refused, and every refusal
    // is fast).
    let mut probe = server.connect();
    let mut refusals = Vec::new();
    for _ in 0..40 {
        let t = Instant::now();
        let r = probe.get("/sleep?ms=1");
        if r.status == 503 {
            assert_eq!(r.header("retry-after"), Some("1"), "{:?}", r.headers);
            refusals.push(t.elapsed());
        }
        if refusals.len() >= 5 {
            break;
        }
    }
    assert!(!refusals.is_empty(), "no probe was refused");
    let slowest = *refusals.iter().max().unwrap();
    println!("refusals: {refusals:?}");
    assert!(slowest < Duration::from_millis(250), "a refusal took {slowest:?}");
    // The loop's own requests are not touched by the pool's overload.
    let mut fast = server.connect();
    let mut worst = Duration::ZERO;
    for _ in 0..50 {
        let t = Instant::now();
        let r = fast.get("/");
        assert_eq!((r.status, &r.body[..]), (200, HELLO));
        worst = worst.max(t.elapsed());
    }
    println!("GET / under the pool's overload: slowest {worst:?}");
    // A standing overload turns /ready 503, and it stays so while it lasts.
    wait_for("/ready says 503", Duration::from_secs(15), || scrape(maddr, "/ready").0 == 503);
    let metrics = scrape(maddr, "/metrics").1;
    assert!(metrics.contains("forkring_overloaded 1"), "{metrics}");
    assert!(metrics.contains("forkring_queue_min_wait_seconds{slot=\"0\",queue=\"pool\"}"), "{metrics}");
    // While the queue is kept short, the limit is the threads and what
    // would start within the target (2 + 2 x 5 / 50: 2), not the cap.
    let limit = sum(&metrics, "forkring_pool_limit{slot=\"0\"}");
    println!("pool limit under overload: {limit}");
    assert!((2.0..1002.0).contains(&limit), "{metrics}");
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(1) {
        assert_eq!(scrape(maddr, "/ready").0, 503, "flapped while overloaded");
        thread::sleep(Duration::from_millis(100));
    }
    let (ok, refused) = load.stop();
    println!("load: {ok} answered, {refused} refused");
    assert!(ok > 0 && refused > 0);
    // Once the load ends: ready again, not before 4 s (5 s without
    // shedding, the last shed a little before the stop), then it stays.
    let stopped = Instant::now();
    wait_for("/ready says 200 again", Duration::from_secs(20), || scrape(maddr, "/ready").0 == 200);
    let after = stopped.elapsed();
    println!("ready again {after:?} after the load stopped");
    assert!(after >= Duration::from_secs(4), "ready again after {after:?}");
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(1) {
        assert_eq!(scrape(maddr, "/ready").0, 200, "flapped once quiet");
        thread::sleep(Duration::from_millis(100));
    }
    // The pool admits again, and the gauges are back.
    assert_eq!(server.connect().get("/sleep?ms=1").status, 200);
    let metrics = scrape(maddr, "/metrics").1;
    assert!(metrics.contains("forkring_shedding{slot=\"0\",queue=\"pool\"} 0"), "{metrics}");
    assert!(metrics.contains("forkring_overloaded 0"), "{metrics}");
    assert_eq!(sum(&metrics, "forkring_pool_queued{"), 0.0);
    assert_eq!(sum(&metrics, "forkring_deferred_in_flight{"), 0.0);
    server.assert_healthy();
}

#[test]
fn with_admission_off_the_pool_queues_up_to_its_cap() {
    let (mut server, maddr) = deep_pool(&["--admission", "off"]);
    let load = Load::start(server.addr, 16);
    // A standing queue: 16 clients of 50 ms jobs on 2 threads.
    wait_for("a standing queue", Duration::from_secs(15), || {
        sum(&scrape(maddr, "/metrics").1, "forkring_pool_queued{") >= 4.0
    });
    let t = Instant::now();
    let r = server.connect().get("/sleep?ms=1");
    let waited = t.elapsed();
    println!("a pool request behind the queue waited {waited:?}");
    assert_eq!(r.status, 200, "admitted, and waited its turn");
    // Over two seconds of it, /ready stays 200.
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(2) {
        assert_eq!(scrape(maddr, "/ready").0, 200);
        thread::sleep(Duration::from_millis(100));
    }
    let (ok, refused) = load.stop();
    assert!(ok > 0);
    assert_eq!(refused, 0, "nothing refused below the cap");
    let metrics = scrape(maddr, "/metrics").1;
    assert_eq!(sum(&metrics, "forkring_shed_total{"), 0.0, "{metrics}");
    server.assert_healthy();
}

#[test]
fn a_burst_onto_an_idle_pool_queues_at_most_an_interval_of_work_and_refuses_the_rest_at_once() {
    // 2 threads of 50 ms jobs, a queue of 1000: the burst limit is what
    // starts within an interval (100 ms) at the measured pace, 2 + 2 x
    // 100 / 50 = 6 (5 when the jobs measure a little over 50 ms).
    let (mut server, maddr) = deep_pool(&[]);
    // One job sets the pace.
    assert_eq!(server.connect().get("/sleep?ms=50").status, 200);
    wait_for("the pool's limit follows the pace", Duration::from_secs(10), || {
        sum(&scrape(maddr, "/metrics").1, "forkring_pool_limit{") < 1000.0
    });
    let limit = sum(&scrape(maddr, "/metrics").1, "forkring_pool_limit{");
    println!("pool limit after one 50 ms job: {limit}");
    assert!((3.0..=6.0).contains(&limit), "limit {limit}");
    // A burst of 40 at once, one a connection: without the limit all 40
    // would queue (a second of work, the last waiting all of it: CoDel
    // sees a standing queue only an interval after the queue formed).
    const BURST: usize = 40;
    let mut conns: Vec<TcpStream> = (0..BURST).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.write_all(b"GET /sleep?ms=50 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    }
    let (mut ok, mut refused) = (0, 0);
    for c in &mut conns {
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        match answer.split(' ').nth(1) {
            Some("200") => ok += 1,
            Some("503") => {
                assert!(answer.contains("\r\nRetry-After: 1\r\n"), "{answer}");
                refused += 1;
            }
            _ => panic!("{answer:?}"),
        }
    }
    println!("burst of {BURST}: {ok} answered, {refused} refused");
    // Jobs that finish while the burst is still being read make room for
    // a few more on a slow machine; far fewer than all of them.
    assert!((3..=20).contains(&ok), "{ok} admitted of {BURST}");
    server.assert_healthy();
}

/// Clients keeping a loop busy with 5 ms handlers: 16 of them make 80 ms
/// of work for each round of requests, in one turn or a few.
const SPIN: &str = "/spin?us=5000";

#[test]
fn with_a_loop_target_a_loop_held_by_heavy_handlers_refuses_before_the_handler() {
    let (mut server, maddr) = one_worker(&["--loop-target", "20", "--log", "debug"]);
    let load = Load::on(server.addr, 16, SPIN);
    wait_for("requests shed by the loop", Duration::from_secs(15), || {
        sum(&scrape(maddr, "/metrics").1, "forkring_shed_total{slot=\"0\",cause=\"loop\"}") > 0.0
    });
    let metrics = scrape(maddr, "/metrics").1;
    let wait = sum(&metrics, "forkring_queue_min_wait_seconds{slot=\"0\",queue=\"loop\"}");
    println!("the loop's shortest lateness over the last interval: {wait} s");
    // Every refusal carries Retry-After (the clients check), and the loop
    // goes on answering.
    wait_for("a client refused", Duration::from_secs(10), || load.refused.load(Ordering::Relaxed) > 0);
    let mut probe = server.connect();
    let (ok, refusals) = load.stop();
    println!("loop load: {ok} answered, {refusals} refused");
    assert!(ok > 0 && refusals > 0);
    // Once the load is gone, the loop's turns are short: no refusal.
    wait_for("the loop admits again", Duration::from_secs(10), || server.connect().get("/").status == 200);
    for _ in 0..20 {
        assert_eq!(probe.get("/").status, 200);
    }
    server.assert_healthy();
}

#[test]
fn a_loop_that_sleeps_between_heavy_handlers_is_never_shed() {
    // Each handler runs 10 ms, twice the target, but one client asks one
    // request at a time: after each turn the loop finds nothing and
    // sleeps, so no input ever waited for a turn and no queue stands.
    let (mut server, maddr) = one_worker(&["--loop-target", "5"]);
    let mut client = server.connect();
    // 60 of them: 600 ms of handlers, six admission intervals.
    for i in 0..60 {
        let r = client.get("/spin?us=10000");
        assert_eq!(r.status, 200, "request {i} refused: {:?}", r.headers);
    }
    let metrics = scrape(maddr, "/metrics").1;
    assert_eq!(sum(&metrics, "forkring_shed_total{"), 0.0, "{metrics}");
    assert!(metrics.contains("forkring_shedding{slot=\"0\",queue=\"loop\"} 0"), "{metrics}");
    server.assert_healthy();
}

/// Whether an answer waits unread on `client`'s connection, without
/// blocking.
fn answer_waiting(client: &Client) -> bool {
    client.stream.set_nonblocking(true).unwrap();
    let waiting = client.stream.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0);
    client.stream.set_nonblocking(false).unwrap();
    waiting
}

#[test]
fn a_cheap_request_is_answered_and_sent_before_the_heavy_ones_that_came_with_it() {
    // /spin is heavy, / cheap: the loop learns both from one request each.
    // Its target, 75 ms, is longer than one heavy handler (50 ms) and
    // shorter than two: a turn that ran two is followed by one that runs
    // none, and no queue stands, so nothing is refused.
    let mut server = Server::start(&["--workers", "1", "--loop-target", "75"]);
    server.wait_line(&["ready 0."], Duration::from_secs(10));
    let (mut heavy, mut second, mut cheap) = (server.connect(), server.connect(), server.connect());
    assert_eq!(heavy.get("/spin?us=1000").status, 200);
    assert_eq!(cheap.get("/").status, 200);
    for round in 0..3 {
        // A heavy request, a cheap one and another heavy one, sent in
        // that order: whatever turns they come in (the last one comes
        // with the cheap one or after it), the cheap one is answered, and
        // its answer sent, before the loop runs the second heavy handler.
        heavy.send(b"GET /spin?us=50000 HTTP/1.1\r\nHost: x\r\n\r\n");
        cheap.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        second.send(b"GET /spin?us=50000 HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = cheap.response();
        assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
        assert!(!answer_waiting(&second), "round {round}: the cheap answer waited for the second heavy handler");
        assert_eq!(heavy.response().status, 200, "round {round}");
        assert_eq!(second.response().status, 200, "round {round}");
    }
    server.assert_healthy();
}

#[test]
fn without_a_loop_target_the_loop_is_measured_and_never_shed() {
    let (mut server, maddr) = one_worker(&[]);
    let load = Load::on(server.addr, 16, SPIN);
    // Turns of tens of milliseconds, measured.
    wait_for("the loop's lateness measured", Duration::from_secs(15), || {
        sum(&scrape(maddr, "/metrics").1, "forkring_queue_min_wait_seconds{slot=\"0\",queue=\"loop\"}") >= 0.005
    });
    let (ok, refused) = load.stop();
    assert!(ok > 0);
    assert_eq!(refused, 0);
    assert_eq!(sum(&scrape(maddr, "/metrics").1, "forkring_shed_total{"), 0.0);
    server.assert_healthy();
}

#[test]
fn an_adaptive_pool_limit_falls_when_jobs_slow_down_and_recovers() {
    let (mut server, maddr) = one_worker(&["--pool", "8", "--pool-limit", "adaptive"]);
    let limit = || sum(&scrape(maddr, "/metrics").1, "forkring_pool_limit{slot=\"0\"}");
    // Quick jobs: the limit is the cap (8 threads + 8 queued).
    let quick = Load::on(server.addr, 8, "/sleep?ms=5");
    wait_for("the pool started at its cap", Duration::from_secs(10), || limit() == 16.0);
    quick.stop();
    // The dependency slows down ten times: fewer jobs are admitted.
    let slow = Load::on(server.addr, 8, "/sleep?ms=50");
    wait_for("the limit fell", Duration::from_secs(15), || limit() < 12.0);
    println!("limit with slow jobs: {}", limit());
    slow.stop();
    // Quick again: back to the cap.
    let quick = Load::on(server.addr, 8, "/sleep?ms=5");
    wait_for("the limit recovered", Duration::from_secs(20), || limit() == 16.0);
    quick.stop();
    server.assert_healthy();
}
