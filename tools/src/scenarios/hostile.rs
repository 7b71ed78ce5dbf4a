//! Scenario 6: hostile bytes. The corpus (`forkring_testkit::corpus`: the
//! vectors of `tests/smuggling.rs` and `tests/limits.rs`, and generated
//! ones) is sent
//! over hundreds of connections at once, one case per connection, by 32
//! threads, while a health client sends `GET /` on a keep-alive connection
//! every 5 ms. Each case must get what it expects: its exact status, then
//! the close with nothing after (smuggling and limit vectors); a 4xx/5xx or
//! a plain close (random bytes); a well-formed answer or a close (mutated
//! requests). A case with neither an answer nor a close within 6 s (the
//! server runs with a 2 s header timeout and a 3 s idle timeout) is a hang.
//! The server must keep serving: every health request answered, no worker
//! `exit` it did not ask for, the master still running.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forkring_testkit::corpus::{self, Case, Expect};
use forkring_testkit::http::{self, CloseOutcome, Fail};
use forkring_testkit::rng::Rng;

use super::{Ctx, Outcome, Target};
use forkring_stress::probe::RESPONSE_LIMIT;
use forkring_stress::servers::Forkring;
use forkring_stress::HELLO;

/// How many times the fixed vectors are sent.
const ROUNDS: usize = 4;
/// Generated cases of each kind in one batch.
const GENERATED: usize = 250;
/// The first batch always runs; further ones while the budget lasts.
const MAX_BATCHES: usize = 10;
const BUDGET: Duration = Duration::from_secs(5);
const THREADS: usize = 32;
/// Longest wait for an answer or a close.
const WAIT: Duration = Duration::from_secs(6);

/// What happened to one case.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Answered as expected (status, close).
    Answered,
    /// Closed without an answer, which the case allows.
    Closed,
    /// A refused request that began with `HEAD` was answered with its error
    /// status and a body (the request was not valid, so it was no HEAD
    /// request; noted, not counted against the server).
    HeadBody,
    /// Neither answer nor close in time.
    Hang(String),
    /// Something it must not do.
    Wrong(String),
}

pub fn run(ctx: &Ctx, target: Target) -> Result<Outcome, String> {
    if target != Target::Forkring {
        return Err("forkring only".into());
    }
    let max_body = corpus::MAX_BODY.to_string();
    let args = ["--max-body", &max_body, "--header-timeout", "2000", "--idle-timeout", "3000"];
    let mut srv = Forkring::start(&ctx.bin, ctx.workers, &args, None)?;
    let seed = std::env::var("STRESS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = Rng::new(seed);
    let fixed = corpus::fixed();
    let fixed_n = fixed.len();
    let mut cases: Vec<Case> = Vec::new();
    for _ in 0..ROUNDS {
        cases.extend(fixed.iter().cloned());
    }
    let generated = corpus::generated(&mut rng, GENERATED);
    cases.extend(generated);
    // Interleave the kinds so that every moment sees a mix.
    rng.shuffle(&mut cases);
    // Every case so far must run; more generated batches follow while the
    // time budget lasts.
    let required = cases.len();
    for _ in 1..MAX_BATCHES {
        let mut batch = corpus::generated(&mut rng, GENERATED);
        rng.shuffle(&mut batch);
        cases.extend(batch);
    }
    let cases = Arc::new(cases);

    let stop = Arc::new(AtomicBool::new(false));
    let health = {
        let stop = Arc::clone(&stop);
        let addr = srv.addr;
        std::thread::spawn(move || health_client(addr, &stop))
    };
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let results: Arc<Mutex<Vec<(usize, Verdict)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for _ in 0..THREADS {
        let (cases, next, results) = (Arc::clone(&cases), Arc::clone(&next), Arc::clone(&results));
        let addr = srv.addr;
        threads.push(std::thread::spawn(move || loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            if i >= required && started.elapsed() >= BUDGET {
                break;
            }
            let Some(case) = cases.get(i) else { break };
            let v = one(addr, case);
            results.lock().unwrap_or_else(|e| e.into_inner()).push((i, v));
        }));
    }
    for t in threads {
        t.join().map_err(|_| "a hostile-bytes thread panicked".to_owned())?;
    }
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (health_ok, health_failed) = health.join().map_err(|_| "the health client panicked".to_owned())?;
    let still_serving = forkring_stress::probe::get_once(srv.addr, Duration::from_secs(2)) == Ok(200);
    let master_running = srv.wait_exit(Duration::ZERO).is_none();
    let crashes = srv.crashes();

    let results = results.lock().unwrap_or_else(|e| e.into_inner());
    let count = |f: &dyn Fn(&Verdict) -> bool| results.iter().filter(|(_, v)| f(v)).count();
    let answered = count(&|v| *v == Verdict::Answered);
    let closed = count(&|v| *v == Verdict::Closed);
    let head_bodies = count(&|v| *v == Verdict::HeadBody);
    let hangs: Vec<String> = results
        .iter()
        .filter_map(|(i, v)| match v {
            Verdict::Hang(why) => Some(format!("{}: {why}", cases[*i].name)),
            _ => None,
        })
        .collect();
    let wrong: Vec<String> = results
        .iter()
        .filter_map(|(i, v)| match v {
            Verdict::Wrong(why) => Some(format!("{}: {why} [{}]", cases[*i].name, http::show_cut(&cases[*i].wire, 80))),
            _ => None,
        })
        .collect();
    let head_note = if head_bodies > 0 {
        format!(" ({head_bodies} refusals of malformed HEAD lines carried a body)")
    } else {
        String::new()
    };
    let mut figures = format!(
        "{} cases ({fixed_n} vectors x{ROUNDS}, {} generated, seed {seed}) on {THREADS} threads in {:.1} s: \
         {} answered right{head_note}, {closed} closed, {} wrong, {} hung; health {health_ok} ok / {health_failed} failed",
        results.len(),
        results.len() - fixed_n * ROUNDS,
        took.as_secs_f64(),
        answered + head_bodies,
        wrong.len(),
        hangs.len()
    );
    if crashes.is_empty() {
        figures.push_str(", no crash");
    } else {
        let list: Vec<String> = crashes.iter().map(|e| format!("{}.{} {}", e.slot, e.generation, e.how)).collect();
        figures.push_str(&format!(", CRASHES: {}", list.join(" ")));
    }
    if !still_serving || !master_running {
        figures.push_str(", NOT SERVING afterwards");
    }
    for w in wrong.iter().chain(hangs.iter()).take(3) {
        figures.push_str(&format!("; {w}"));
    }
    let pass = wrong.is_empty()
        && hangs.is_empty()
        && crashes.is_empty()
        && health_failed == 0
        && health_ok > 0
        && still_serving
        && master_running
        && results.len() >= required;
    Ok(Outcome { figures, pass })
}

/// Sends one case on a new connection and judges what comes back.
fn one(addr: SocketAddr, case: &Case) -> Verdict {
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => return Verdict::Wrong(format!("connect: {e}")),
    };
    let _ = s.set_read_timeout(Some(WAIT));
    let _ = s.set_write_timeout(Some(WAIT));
    // The server may answer and close before it has read everything; large
    // bodies go from their own thread so the answer is read meanwhile.
    let writer = if case.wire.len() > 64 * 1024 {
        let mut w = match s.try_clone() {
            Ok(w) => w,
            Err(e) => return Verdict::Wrong(format!("clone: {e}")),
        };
        let wire = case.wire.clone();
        Some(std::thread::spawn(move || {
            let _ = w.write_all(&wire);
        }))
    } else {
        let _ = s.write_all(&case.wire);
        None
    };
    let v = judge(&mut s, case);
    drop(s);
    if let Some(w) = writer {
        let _ = w.join();
    }
    v
}

fn judge(s: &mut TcpStream, case: &Case) -> Verdict {
    let start = Instant::now();
    let mut buf = Vec::new();
    // A HEAD answer has no body (a mutation may leave the method intact;
    // CR and LF before the request line are skipped, as servers may).
    let start_of_line = case.wire.iter().position(|b| !matches!(b, b'\r' | b'\n')).unwrap_or(case.wire.len());
    let head = case.wire[start_of_line..].starts_with(b"HEAD ");
    let first = http::read_response(s, &mut buf, head, RESPONSE_LIMIT);
    if case.expect == Expect::OkThenReject {
        match first {
            Ok(r) if r.status == 200 && r.body == HELLO => {}
            Ok(r) => return Verdict::Wrong(format!("first answer {} instead of 200", r.status)),
            Err(e) => return Verdict::Wrong(format!("no answer to the valid request: {:?}", e.fail)),
        }
        return rest_rejected(s, &mut buf, start);
    }
    match (case.expect, first) {
        (Expect::Status(want), Ok(r)) => {
            if r.status != want {
                return Verdict::Wrong(format!("status {} instead of {want}", r.status));
            }
            if !r.says_close() {
                return Verdict::Wrong(format!("{want} without Connection: close"));
            }
            closes_clean(s, &mut buf, start, head_body(head, &r))
        }
        (Expect::Status(want), Err(e)) => match e.fail {
            Fail::Timeout => Verdict::Hang(format!("no answer within {WAIT:?}")),
            f => Verdict::Wrong(format!("expected {want}, got {f:?} after {} bytes {}", e.got, e.detail)),
        },
        (Expect::RejectOrClose, Ok(r)) => {
            if r.status < 400 {
                return Verdict::Wrong(format!("status {} to random bytes", r.status));
            }
            if !r.says_close() {
                return Verdict::Wrong(format!("{} without Connection: close", r.status));
            }
            closes_clean(s, &mut buf, start, head_body(head, &r))
        }
        (Expect::RejectOrClose | Expect::Anything, Err(e)) => match e.fail {
            Fail::Eof | Fail::Reset if e.got == 0 => Verdict::Closed,
            Fail::Timeout if e.got == 0 => Verdict::Hang(format!("neither answer nor close within {WAIT:?}")),
            f => Verdict::Wrong(format!("{f:?} after {} bytes of an answer {}", e.got, e.detail)),
        },
        (Expect::Anything, Ok(r)) => {
            // 404 and 405 are the handler's answers to a valid request,
            // which a mutation can produce; the runtime's own refusals
            // close the connection.
            if r.status >= 400 && !matches!(r.status, 404 | 405) {
                if !r.says_close() {
                    return Verdict::Wrong(format!("{} without Connection: close", r.status));
                }
                return closes_clean(s, &mut buf, start, head_body(head, &r));
            }
            Verdict::Answered
        }
        (Expect::OkThenReject, _) => unreachable!("handled above"),
    }
}

/// The body length a refusal of a request starting with `HEAD` may carry
/// (read as a HEAD answer, its body arrives as extra bytes).
fn head_body(head: bool, r: &http::Response) -> usize {
    if head {
        r.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0)
    } else {
        0
    }
}

/// After a final answer: the close, with nothing (no smuggled answer) in
/// between, except exactly `head_body` bytes (see [`Verdict::HeadBody`]).
/// The wait ends `2 * WAIT` after `start`.
fn closes_clean(s: &mut TcpStream, buf: &mut Vec<u8>, start: Instant, head_body: usize) -> Verdict {
    let left = (WAIT * 2).saturating_sub(start.elapsed());
    let wrong = |extra: &[u8]| Verdict::Wrong(format!("bytes after the final answer: {}", http::show_cut(extra, 60)));
    match http::wait_close(s, std::mem::take(buf), left) {
        // A reset after the answer is a close.
        Ok(CloseOutcome::Closed { extra }) if extra.is_empty() => Verdict::Answered,
        Ok(CloseOutcome::Closed { extra }) if extra.len() == head_body => Verdict::HeadBody,
        Ok(CloseOutcome::Closed { extra }) => wrong(&extra),
        Ok(CloseOutcome::Open { extra }) if extra.len() > head_body => wrong(&extra),
        Ok(CloseOutcome::Open { .. }) => Verdict::Hang(format!("still open {left:?} after the final answer")),
        Err(e) => Verdict::Wrong(format!("waiting for the close: {e}")),
    }
}

/// After the valid request's answer: a 4xx/5xx and the close, or the close.
fn rest_rejected(s: &mut TcpStream, buf: &mut Vec<u8>, start: Instant) -> Verdict {
    match http::read_response(s, buf, false, RESPONSE_LIMIT) {
        Ok(r) if r.status >= 400 && r.says_close() => closes_clean(s, buf, start, 0),
        Ok(r) => Verdict::Wrong(format!("garbage after a valid request answered {}", r.status)),
        Err(e) if e.got == 0 && matches!(e.fail, Fail::Eof | Fail::Reset) => Verdict::Answered,
        Err(e) if e.fail == Fail::Timeout => Verdict::Hang("garbage after a valid request: no answer, no close".into()),
        Err(e) => Verdict::Wrong(format!("garbage after a valid request: {:?} {}", e.fail, e.detail)),
    }
}

/// `GET /` on one keep-alive connection every 5 ms until `stop`; (answered,
/// failed). Reconnects after a failure.
fn health_client(addr: SocketAddr, stop: &AtomicBool) -> (u64, u64) {
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut conn: Option<(TcpStream, Vec<u8>)> = None;
    let hard_end = Instant::now() + Duration::from_secs(300);
    while !stop.load(Ordering::SeqCst) && Instant::now() < hard_end {
        if conn.is_none() {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                    conn = Some((s, Vec::new()));
                }
                Err(_) => {
                    failed += 1;
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            }
        }
        let (s, buf) = conn.as_mut().expect("connected above");
        let answered = s.write_all(b"GET / HTTP/1.1\r\nHost: health\r\n\r\n").is_ok()
            && matches!(http::read_response(s, buf, false, RESPONSE_LIMIT), Ok(r) if r.status == 200 && r.body == HELLO);
        if answered {
            ok += 1;
        } else {
            failed += 1;
            conn = None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (ok, failed)
}
