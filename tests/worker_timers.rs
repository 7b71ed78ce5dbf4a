//! Worker timers on a real worker, on both backends: a periodic timer runs
//! on the loop while it serves, a one-shot timer runs once, a cancelled one
//! never, and an idle worker with a timer sleeps between runs rather than
//! spinning.
//!
//! The test runs itself again as the master (`FORKRING_TIMERS_ROLE`), with
//! re-executed workers (the test harness runs tests in threads).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

use forkring::{Event, Request, Response, Server};
use forkring_testkit::client::Client;
use forkring_testkit::master::SelfMaster;
use forkring_testkit::proc;

const ROLE: &str = "FORKRING_TIMERS_ROLE";

fn run_master() {
    let _ = Server::builder()
        .listen("127.0.0.1:0")
        .workers(1)
        .reexec(true)
        .on_event(|ev, _| match ev {
            Event::Listening { addr, .. } => println!("ADDR {addr}"),
            Event::Ready { pid, .. } => println!("READY {pid}"),
            _ => {}
        })
        .serve(|| {
            let ticks = Rc::new(Cell::new(0u64));
            let once = Rc::new(Cell::new(0u64));
            let never = Rc::new(Cell::new(0u64));
            let t = ticks.clone();
            forkring::worker::every(Duration::from_millis(20), move || t.set(t.get() + 1));
            let o = once.clone();
            forkring::worker::after(Duration::from_millis(50), move || o.set(o.get() + 1));
            let n = never.clone();
            let cancelled = forkring::worker::after(Duration::from_millis(30), move || n.set(n.get() + 1));
            assert!(cancelled.cancel());
            move |_: &Request<'_>, res: &mut Response| {
                res.body(format!("{} {} {}", ticks.get(), once.get(), never.get()));
            }
        });
}

#[test]
fn worker_timers_run_on_the_loop() {
    if std::env::var(ROLE).is_ok() {
        run_master();
        return;
    }
    let mut master = SelfMaster::spawn(ROLE, "master", "worker_timers_run_on_the_loop");
    let (mut addr, mut worker) = (None::<SocketAddr>, None::<i32>);
    let deadline = Instant::now() + Duration::from_secs(15);
    while addr.is_none() || worker.is_none() {
        match master.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => {
                if let Some(a) = l.strip_prefix("ADDR ") {
                    addr = a.parse().ok();
                }
                if let Some(p) = l.strip_prefix("READY ") {
                    worker = p.parse().ok();
                }
            }
            Err(_) => panic!("the master did not start"),
        }
    }
    let (addr, worker) = (addr.unwrap(), worker.unwrap());
    let get = || {
        let body = Client::connect(addr).get("/").body;
        let v: Vec<u64> = String::from_utf8(body).unwrap().split(' ').map(|x| x.parse().unwrap()).collect();
        (v[0], v[1], v[2])
    };
    // The periodic timer keeps running while the worker serves.
    let mut seen = get();
    let until = Instant::now() + Duration::from_secs(5);
    while (seen.0 < 10 || seen.1 == 0) && Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
        seen = get();
    }
    let cpu_before = proc::stat(worker).map(|s| s.cpu_ticks).unwrap_or(0);
    thread::sleep(Duration::from_secs(1));
    let cpu = proc::stat(worker).map(|s| s.cpu_ticks).unwrap_or(0) - cpu_before;
    let later = get();
    master.stop();
    assert!(seen.0 >= 10, "the 20 ms timer ran {} times in 5 s", seen.0);
    assert_eq!((seen.1, seen.2), (1, 0), "the one-shot timer runs once, the cancelled one never");
    assert!(later.0 > seen.0, "the timer stopped: {seen:?} then {later:?}");
    assert_eq!(later.1, 1, "the one-shot timer ran again");
    // 50 runs of an empty timer in that second: a sleeping loop costs next
    // to nothing, a spinning one a whole CPU (100 ticks).
    assert!(cpu < 20, "the idle worker used {cpu} ticks of CPU in 1 s");
}
