//! The machine's tests: bytes in, the order of answers, the high-water
//! mark, the loop's admission and its turn order (parking), a peer's end.

use std::time::Duration;

use super::*;
use crate::config::{Limits, Timeouts};
use crate::http::{Request, Response};

fn path(req: &Request<'_>, res: &mut Response) {
    res.body(req.path());
}

fn worker() -> WorkerState {
    WorkerState::new(Limits::default(), Timeouts::default())
}

/// Works on the CPU for `d`, as a heavy handler does.
fn spin(d: Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_whatever_the_reads() {
    let reqs =
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
    for cut in 1..reqs.len() {
        let mut sh = worker();
        let mut c = Conn::new(&sh);
        c.on_read(&reqs[..cut], &mut sh, &mut path);
        c.on_read(&reqs[cut..], &mut sh, &mut path);
        let text = String::from_utf8_lossy(c.output()).into_owned();
        let bodies: Vec<&str> = text.split("\r\n\r\n").skip(1).map(|b| &b[..2]).collect();
        assert_eq!(bodies, ["/a", "/b", "/c"], "cut at {cut}");
        assert!(!c.has_pending_input() && !c.is_closing());
    }
}

#[test]
fn a_full_output_holds_later_requests_back_until_it_drains() {
    let mut sh = worker();
    let mut c = Conn::new(&sh);
    let mut big = |req: &Request<'_>, res: &mut Response| {
        res.body_mut().resize(if req.path() == "/big" { OUTPUT_HIGH_WATER } else { 1 }, b'x');
    };
    c.on_read(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut sh, &mut big);
    assert!(c.has_pending_input(), "the second request waits");
    let n = c.output_len();
    c.consume_output(n, &mut sh);
    c.resume(&mut sh, &mut big);
    assert!(!c.has_pending_input());
    assert!(c.output().ends_with(b"\r\n\r\nx"));
}

#[test]
fn a_loop_that_sheds_answers_503_before_the_handler_and_stops_when_its_turns_are_short() {
    let mut sh = worker();
    // Every turn is "late" against a zero target: the loop sheds once a
    // (microsecond) interval of them has passed.
    let zero = crate::Admission::DEFAULT.with_loop_target(Some(Duration::ZERO)).with_interval(Duration::ZERO);
    sh.set_admission(&zero);
    let mut ticks = 0;
    while sh.loop_shedding() != Some(true) {
        ticks += 1;
        assert!(ticks < 1_000_000, "never shed");
        sh.tick();
    }
    let mut called = 0;
    let mut c = Conn::new(&sh);
    c.on_read(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", &mut sh, &mut |_: &Request<'_>, _: &mut Response| called += 1);
    assert_eq!(called, 0, "refused before the handler");
    let text = String::from_utf8_lossy(c.output()).into_owned();
    assert!(text.starts_with("HTTP/1.1 503 ") && text.contains("\r\nRetry-After: 1\r\n"), "{text}");
    assert!(!c.is_closing(), "the connection stays open");
    // With a 50 ms target, turns as short as these end the shedding.
    sh.set_admission(&crate::Admission::DEFAULT.with_loop_target(Some(Duration::from_millis(50))));
    sh.tick();
    let mut c = Conn::new(&sh);
    c.on_read(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n", &mut sh, &mut path);
    assert!(c.output().ends_with(b"/b"));
    // Off, nothing is refused whatever the turns.
    sh.set_admission(&crate::Admission::OFF);
    assert!(sh.loop_shedding().is_none());
    assert!(matches!(sh.admit_request("/"), crate::http::worker_state::Admit::Free));
}

#[test]
fn a_turn_short_enough_to_end_the_shedding_keeps_the_cap_for_the_next_turns() {
    const TARGET: Duration = Duration::from_millis(100);
    let two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
    // The first handler of a turn works past the target.
    let heavy = |req: &Request<'_>, res: &mut Response| {
        spin(TARGET);
        res.body(req.path().as_bytes());
    };
    let admission = crate::Admission::DEFAULT.with_loop_target(Some(TARGET)).with_interval(Duration::from_secs(60));
    // Never shed: a long turn is a burst, and both are answered.
    let mut sh = worker();
    sh.set_admission(&admission);
    sh.tick();
    let mut c = Conn::new(&sh);
    c.on_read(two, &mut sh, &mut |req: &Request<'_>, res: &mut Response| heavy(req, res));
    let text = String::from_utf8_lossy(c.output()).into_owned();
    assert!(!text.contains(" 503 ") && text.ends_with("/b"), "{text}");
    // Shed a moment ago: a standing queue over a whole interval (on
    // CoDel's clock, fed directly), then a short turn that ends it.
    let mut sh = worker();
    sh.set_admission(&admission);
    let codel = sh.loop_codel();
    codel.sample(0, 200_000);
    assert!(codel.sample(60_000_000, 200_000), "shedding");
    sh.tick();
    assert_eq!(sh.loop_shedding(), Some(false), "a short turn ends it");
    let mut c = Conn::new(&sh);
    c.on_read(two, &mut sh, &mut |req: &Request<'_>, res: &mut Response| heavy(req, res));
    let text = String::from_utf8_lossy(c.output()).into_owned();
    let first = text.find("\r\n\r\n/a").expect("the first answered");
    assert!(text[first..].contains("HTTP/1.1 503 "), "the second, past the target, refused: {text}");
}

#[test]
fn a_loop_that_sheds_still_answers_paths_whose_handlers_are_cheap() {
    const TARGET: Duration = Duration::from_millis(50);
    let mut sh = worker();
    sh.set_admission(&crate::Admission::DEFAULT.with_loop_target(Some(TARGET)).with_interval(Duration::from_secs(60)));
    // Each handler of /heavy works past the target; /fast's return at once.
    let mut handler = |req: &Request<'_>, res: &mut Response| {
        if req.path() == "/heavy" {
            spin(TARGET);
        }
        res.body(req.path().as_bytes());
    };
    // Both paths seen once, then a standing queue (on CoDel's clock).
    let mut c = Conn::new(&sh);
    c.on_read(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n", &mut sh, &mut handler);
    let codel = sh.loop_codel();
    codel.sample(0, 200_000);
    assert!(codel.sample(60_000_000, 200_000), "shedding");
    // Shed a moment ago: the turns stay capped.
    sh.tick();
    let three = b"GET /heavy HTTP/1.1\r\nHost: x\r\n\r\nGET /heavy HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut c = Conn::new(&sh);
    c.on_read(three, &mut sh, &mut handler);
    // The second /heavy, known heavy by then, waits for the end of the
    // turn, and /fast behind it on the same connection.
    end_of_turn(&mut sh, &mut [&mut c], &mut handler);
    let text = String::from_utf8_lossy(c.output()).into_owned();
    let answers: Vec<&str> = text.split("HTTP/1.1 ").skip(1).map(|a| &a[..3]).collect();
    assert_eq!(answers, ["200", "503", "200"], "past the target only the cheap path is answered: {text}");
    assert!(text.ends_with("/fast"), "{text}");
}

/// What a driver does at the end of a turn: resumes the connections
/// parked, as many as the turn takes.
fn end_of_turn<H: Handler>(sh: &mut WorkerState, conns: &mut [&mut Conn], handler: &mut H) {
    while let Some(parked) = sh.next_parked() {
        let token = parked.token;
        let c = conns.iter_mut().find(|c| c.token == token).expect("a parked connection");
        c.unpark();
        c.resume(sh, handler);
    }
}

#[test]
fn a_turn_answers_its_cheap_requests_before_the_heavy_ones_and_one_connection_in_order() {
    let mut sh = worker();
    let order = std::cell::RefCell::new(Vec::new());
    let mut handler = |req: &Request<'_>, res: &mut Response| {
        if req.path() == "/heavy" {
            spin(Duration::from_micros(200));
        }
        order.borrow_mut().push(req.target().to_owned());
        res.body(req.path().as_bytes());
    };
    let (mut a, mut b, mut d) = (Conn::new(&sh), Conn::new(&sh), Conn::new(&sh));
    for (i, c) in [&mut a, &mut b, &mut d].into_iter().enumerate() {
        c.set_token(i as u64 + 1);
    }
    let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
    // Without a loop target nothing is parked.
    sh.tick();
    a.on_read(&get("/heavy?0"), &mut sh, &mut handler);
    assert!(!sh.has_parked() && a.output().ends_with(b"/heavy"));
    // With one of 10 s, a first turn: /heavy is not known yet, and is
    // answered in place.
    sh.set_admission(&crate::Admission::DEFAULT.with_loop_target(Some(Duration::from_secs(10))));
    sh.tick();
    a.on_read(&get("/heavy?1"), &mut sh, &mut handler);
    assert!(!sh.has_parked());
    // The next: a heavy request, then a pipelined pair behind another
    // heavy one, then a cheap one on a third connection.
    sh.tick();
    a.on_read(&get("/heavy?2"), &mut sh, &mut handler);
    b.on_read(&[get("/heavy?3"), get("/fast?4")].concat(), &mut sh, &mut handler);
    d.on_read(&get("/fast?5"), &mut sh, &mut handler);
    assert!(sh.has_parked() && !b.has_output() && d.output().ends_with(b"/fast"));
    // More input for a parked connection waits behind its request.
    a.on_read(&get("/fast?6"), &mut sh, &mut handler);
    end_of_turn(&mut sh, &mut [&mut a, &mut b, &mut d], &mut handler);
    assert_eq!(*order.borrow(), ["/heavy?0", "/heavy?1", "/fast?5", "/heavy?2", "/fast?6", "/heavy?3", "/fast?4"]);
    assert!(!sh.has_parked() && !a.has_pending_input() && !b.has_pending_input());
    for c in [a, b, d] {
        c.release(&mut sh);
    }
}

#[test]
fn a_turn_takes_a_targets_worth_of_heavy_requests_and_the_next_turn_the_rest() {
    const TARGET: Duration = Duration::from_millis(20);
    let mut sh = worker();
    sh.set_admission(&crate::Admission::DEFAULT.with_loop_target(Some(TARGET)).with_interval(Duration::from_secs(60)));
    let calls = std::cell::Cell::new(0);
    // Each /heavy works past the target.
    let mut handler = |req: &Request<'_>, res: &mut Response| {
        spin(TARGET);
        calls.set(calls.get() + 1);
        res.body(req.path().as_bytes());
    };
    let get = b"GET /heavy HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut c: Vec<Conn> = (0..3).map(|_| Conn::new(&sh)).collect();
    for (i, c) in c.iter_mut().enumerate() {
        c.set_token(i as u64);
    }
    sh.tick();
    c[0].on_read(get, &mut sh, &mut handler);
    // Known heavy now: three in one turn are parked, and the turn
    // answers one (its target is spent after it); the others wait,
    // and the loop does not sleep.
    sh.tick();
    for c in &mut c {
        c.on_read(get, &mut sh, &mut handler);
    }
    assert_eq!(calls.get(), 1);
    let mut all: Vec<&mut Conn> = c.iter_mut().collect();
    end_of_turn(&mut sh, &mut all, &mut handler);
    assert_eq!(calls.get(), 2, "one a turn");
    assert!(sh.has_parked());
    sh.tick();
    end_of_turn(&mut sh, &mut all, &mut handler);
    assert_eq!(calls.get(), 3);
    // Shedding now (on CoDel's clock): the one left waited a target
    // already, and is refused at once, in the turn that was spent.
    // (Later on its clock than the turns so far, an interval apart.)
    let codel = sh.loop_codel();
    codel.sample(1_000_000_000, 200_000);
    assert!(codel.sample(1_060_000_000, 200_000), "shedding");
    sh.tick();
    spin(TARGET);
    end_of_turn(&mut sh, &mut all, &mut handler);
    assert_eq!(calls.get(), 3);
    assert!(!sh.has_parked());
    let text = String::from_utf8_lossy(all[2].output()).into_owned();
    assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
    // Still shedding, three in one turn: the two behind the first would
    // start a target after they were read, so they are refused first,
    // at once, and then the first runs.
    sh.tick();
    for c in all.iter_mut() {
        c.on_read(get, &mut sh, &mut handler);
    }
    let mut runs = Vec::new();
    while let Some(parked) = sh.next_parked() {
        runs.push((parked.token, parked.runs));
        let c = all.iter_mut().find(|c| c.token == parked.token).expect("a parked connection");
        c.unpark();
        c.resume(&mut sh, &mut handler);
    }
    assert_eq!(runs, [(1, false), (2, false), (0, true)]);
    assert_eq!(calls.get(), 4);
    for c in c {
        c.release(&mut sh);
    }
}

#[test]
fn a_request_cut_short_by_the_peers_end_gets_no_answer() {
    let mut sh = worker();
    let mut c = Conn::new(&sh);
    c.on_read(b"GET / HTTP/1.1\r\nHo", &mut sh, &mut path);
    c.on_eof(&mut sh);
    assert!(c.is_closing() && !c.has_output() && !c.may_have_unread_input());
    c.release(&mut sh);
}

#[test]
fn a_parked_request_is_answered_after_the_peers_end_and_in_a_drain_and_a_closed_connection_is_skipped() {
    let mut sh = worker();
    sh.set_admission(&crate::Admission::DEFAULT.with_loop_target(Some(Duration::from_secs(10))));
    let mut handler = |req: &Request<'_>, res: &mut Response| {
        if req.path() == "/heavy" {
            spin(Duration::from_micros(200));
        }
        res.body(req.path().as_bytes());
    };
    let get = b"GET /heavy HTTP/1.1\r\nHost: x\r\n\r\n";
    let (mut a, mut b, mut gone) = (Conn::new(&sh), Conn::new(&sh), Conn::new(&sh));
    for (i, c) in [&mut a, &mut b, &mut gone].into_iter().enumerate() {
        c.set_token(i as u64 + 1);
    }
    // /heavy is learned in place, then parked on all three.
    sh.tick();
    a.on_read(get, &mut sh, &mut handler);
    let first = a.output_len();
    a.consume_output(first, &mut sh);
    sh.tick();
    for c in [&mut a, &mut b, &mut gone] {
        c.on_read(get, &mut sh, &mut handler);
        assert!(!c.has_output());
    }
    // While they wait: a's client sends its last byte, the worker starts
    // draining, and the third connection is closed (its client left).
    a.on_eof(&mut sh);
    assert!(!a.is_closing(), "a complete request parked is still answered after the peer's end");
    sh.set_draining();
    gone.release(&mut sh);
    let mut live = [&mut a, &mut b];
    let mut skipped = 0;
    while let Some(parked) = sh.next_parked() {
        match live.iter_mut().find(|c| c.token == parked.token) {
            Some(c) => {
                c.unpark();
                c.resume(&mut sh, &mut handler);
            }
            None => skipped += 1,
        }
    }
    assert_eq!(skipped, 1);
    assert!(!sh.has_parked(), "the queue is empty once the turn has resumed them");
    for c in [&a, &b] {
        let text = String::from_utf8_lossy(c.output()).into_owned();
        assert!(text.starts_with("HTTP/1.1 200 ") && text.ends_with("/heavy"), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"), "the drain closes it: {text}");
        assert!(c.is_closing() && !c.has_pending_input());
    }
    a.release(&mut sh);
    b.release(&mut sh);
}
