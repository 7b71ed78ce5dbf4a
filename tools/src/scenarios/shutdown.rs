//! Scenario 3: graceful shutdown (SIGTERM to the master) under load.
//!
//! At the SIGTERM the clients stop opening connections; each finishes with
//! the connection it has: keep-alive clients keep sending on it until the
//! server answers `Connection: close` or closes it. A request on a
//! connection established before the SIGTERM that gets no full answer is
//! "accepted but unanswered": the kernel completed the handshake, the client
//! sent its request, and the server went away without answering it
//! (whether the connection still sat in the listen backlog or a worker had
//! it). The bound is zero of those. The figures also give the time from the
//! SIGTERM to the master's exit, and its exit status.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use forkring_testkit::http::{self, Fail};
use forkring_testkit::proc;

use super::{ms, Ctx, Outcome, Target};
use forkring_stress::closed_loop::{Load, LoadConfig};
use forkring_stress::probe::RESPONSE_LIMIT;
use forkring_stress::servers::Forkring;

const KEEPALIVE: usize = 16;
const CLOSE: usize = 4;
/// Connections opened, each with its request sent, while the workers are
/// frozen, right before the SIGTERM.
const BURST: usize = 256;
/// forkring's drain timeout in this scenario (its default is 30 s).
const DRAIN_MS: u64 = 10_000;

pub fn run(ctx: &Ctx, target: Target) -> Result<Outcome, String> {
    if target != Target::Forkring {
        return Err("forkring only".into());
    }
    let mut srv = Forkring::start(&ctx.bin, ctx.workers, &["--drain-timeout", &DRAIN_MS.to_string()], None)?;
    let load = Load::start(srv.addr, LoadConfig::new(KEEPALIVE, CLOSE, Duration::from_secs(30)));
    std::thread::sleep(Duration::from_secs(2));
    let workers = srv.live_forked();
    // The hard case: connections whose handshake the kernel completed and
    // whose request was sent, but that no worker has taken yet when the
    // SIGTERM lands (as when every worker is busy in a slow handler). The
    // workers are frozen (SIGSTOP) while BURST such connections are opened
    // and their requests sent, the master gets its SIGTERM (which it passes
    // on to the frozen workers), and the workers are thawed (SIGCONT) 50 ms
    // later, into a drain with the burst waiting.
    for &p in &workers {
        proc::stop(p);
    }
    let mut burst = Vec::with_capacity(BURST);
    for _ in 0..BURST {
        match TcpStream::connect_timeout(&srv.addr, Duration::from_secs(2)) {
            Ok(mut s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let sent = s.write_all(b"GET / HTTP/1.1\r\nHost: burst\r\nConnection: close\r\n\r\n").is_ok();
                burst.push((s, sent));
            }
            Err(_) => break,
        }
    }
    load.mark();
    load.stop_new_connections();
    let t0 = Instant::now();
    srv.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(50));
    for &p in &workers {
        let _ = proc::signal(p, libc::SIGCONT);
    }
    // Each burst request was sent before the SIGTERM: it must be answered.
    let mut burst_unanswered = BURST - burst.len();
    for (s, sent) in burst.iter_mut() {
        let mut buf = Vec::new();
        match http::read_response(s, &mut buf, false, RESPONSE_LIMIT) {
            Ok(r) if *sent && r.status == 200 && r.body == forkring_stress::HELLO => {}
            _ => burst_unanswered += 1,
        }
    }
    drop(burst);
    let status = srv.wait_exit(Duration::from_millis(DRAIN_MS) + Duration::from_secs(5));
    let exit_after = t0.elapsed();
    // The clients end on their own once their connections close; bounded.
    let deadline = Instant::now() + Duration::from_secs(6);
    while !load.all_done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = load.finish();
    let left: Vec<i32> = workers.iter().copied().filter(|&p| proc::alive(p)).collect();

    let mut unanswered = [0u64; 6];
    let mut later = 0u64;
    for f in &stats.failures {
        if f.before_mark && f.fail != Fail::Connect {
            unanswered[Fail::ALL.iter().position(|&k| k == f.fail).expect("a known kind")] += 1;
        } else {
            later += 1;
        }
    }
    let unanswered_total: u64 = unanswered.iter().sum::<u64>() + burst_unanswered as u64;
    let kinds: Vec<String> =
        Fail::ALL.iter().zip(unanswered).filter(|&(_, n)| n > 0).map(|(f, n)| format!("{} {n}", f.name())).collect();
    let kinds = if kinds.is_empty() { String::new() } else { format!(" ({})", kinds.join(", ")) };
    let reused = stats.failures.iter().filter(|f| f.before_mark && f.reused).count();
    let detail = if unanswered_total > 0 {
        format!(", {reused} of them on keep-alive connections already answered before")
    } else {
        String::new()
    };
    let exit = match status {
        Some(s) if s.success() => format!("exit 0 after {}", ms(exit_after)),
        Some(s) => format!("exit {s} after {}", ms(exit_after)),
        None => format!("STILL RUNNING {} after SIGTERM", ms(exit_after)),
    };
    let mut figures = format!(
        "served {} ({} after SIGTERM) + {BURST} queued behind frozen workers at the SIGTERM ({burst_unanswered} unanswered); \
         {unanswered_total} accepted but unanswered{kinds}{detail}; {exit}",
        stats.ok, stats.ok_after_mark
    );
    if later > 0 {
        figures.push_str(&format!("; {later} failed on connections opened after SIGTERM"));
    }
    if !left.is_empty() {
        figures.push_str(&format!("; {} worker(s) still alive", left.len()));
    }
    let pass = unanswered_total == 0
        && status.is_some_and(|s| s.success())
        && left.is_empty()
        && stats.failures.len() as u64 == stats.failed_total();
    Ok(Outcome { figures, pass })
}
