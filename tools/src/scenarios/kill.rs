//! Scenario 2: kill -9 one worker every second for 10 s under load.
//!
//! The slots take turns. Just before each kill the worker is stopped
//! (SIGSTOP) so that the connections it holds can be read exactly from
//! `/proc` (its socket descriptors, matched against `/proc/net/tcp`), then it
//! is killed (SIGKILL). The bound: the failed requests number at most the
//! connections the killed workers held, and each failure happened on one of
//! them (its client port is among those connections' peer ports). The
//! figures also give the time from the kill until the slot's replacement is
//! ready (its `ready` event; for nginx, the new worker process appearing)
//! and until it serves (holds a client connection).

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use forkring_testkit::proc;

use super::{median_max, ms, nginx_default, sleep_until, Ctx, Outcome, Server, Target};
use forkring_stress::closed_loop::{Load, LoadConfig};
use forkring_stress::procs;

const KILLS: usize = 10;
const KEEPALIVE: usize = 16;
const CLOSE: usize = 4;

/// One kill and what followed.
struct Kill {
    at: Instant,
    pid: i32,
    /// Peer (client) ports of the connections it held.
    held: BTreeSet<u16>,
    ready_after: Option<Duration>,
    serving_after: Option<Duration>,
}

pub fn run(ctx: &Ctx, target: Target) -> Result<Outcome, String> {
    let srv = Server::start(ctx, target, ctx.workers, &[], nginx_default(), None)?;
    let port = srv.addr().port();
    let load = Load::start(srv.addr(), LoadConfig::new(KEEPALIVE, CLOSE, Duration::from_secs(30)));
    let t0 = Instant::now() + Duration::from_millis(500);
    let mut kills: Vec<Kill> = Vec::new();
    let mut missed = 0;
    let mut not_stopped = 0;
    for i in 0..KILLS {
        let next = t0 + Duration::from_secs(i as u64 + 1);
        sleep_until(t0 + Duration::from_secs(i as u64));
        // The victim: the current worker of slot i % workers.
        let victim = match &srv {
            Server::Forkring(f) => {
                let slot = i % ctx.workers;
                let deadline = Instant::now() + Duration::from_secs(2);
                loop {
                    if let Some(&(generation, pid)) = f.workers().get(&slot) {
                        break Some((slot, generation, pid));
                    }
                    if Instant::now() >= deadline {
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Server::Nginx(n) => {
                let w = n.workers();
                (!w.is_empty()).then(|| (i % w.len(), 0, w[i % w.len()]))
            }
        };
        let Some((slot, generation, pid)) = victim else {
            missed += 1;
            continue;
        };
        let before: HashSet<i32> = srv.worker_pids().into_iter().collect();
        let stopped = proc::stop(pid);
        let held = procs::tcp_held(pid, port);
        // The moment of the kill: taken just before it, since a client may
        // see its connection reset before this thread runs again.
        let at = Instant::now();
        let _ = proc::signal(pid, libc::SIGKILL);
        if !stopped {
            not_stopped += 1;
        }
        let mut k = Kill { at, pid, held, ready_after: None, serving_after: None };
        // Wait for the replacement, then for it to hold a connection, until
        // shortly before the next kill.
        let watch_until = next - Duration::from_millis(20);
        let replacement = match &srv {
            Server::Forkring(f) => {
                let timeout = watch_until.saturating_duration_since(Instant::now());
                f.wait_ready_after(slot, generation, timeout).map(|e| (e.pid, e.at))
            }
            Server::Nginx(n) => loop {
                let fresh = n.workers().into_iter().find(|p| !before.contains(p) && *p != pid);
                if let Some(p) = fresh {
                    break Some((p, Instant::now()));
                }
                if Instant::now() >= watch_until {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(1));
            },
        };
        if let Some((new_pid, ready_at)) = replacement {
            k.ready_after = Some(ready_at.saturating_duration_since(at));
            while Instant::now() < watch_until {
                if !procs::tcp_held(new_pid, port).is_empty() {
                    k.serving_after = Some(at.elapsed());
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        kills.push(k);
    }
    sleep_until(t0 + Duration::from_secs(KILLS as u64) + Duration::from_millis(500));
    let stats = load.finish();

    // Tie each failure to a kill: its client port among the connections
    // that kill's worker held, and it came after the kill.
    let held_total: usize = kills.iter().map(|k| k.held.len()).sum();
    let unexplained = stats
        .failures
        .iter()
        .filter(|f| {
            !f.port.is_some_and(|p| {
                kills
                    .iter()
                    .any(|k| k.held.contains(&p) && f.at >= k.at && f.at.duration_since(k.at) < Duration::from_secs(6))
            })
        })
        .count();
    if std::env::var_os("STRESS_DEBUG").is_some() {
        for f in &stats.failures {
            let last = kills.iter().rfind(|k| k.at <= f.at);
            eprintln!(
                "  failure {:?} port {:?} reused {} got {}; last kill {:?} before, pid {:?}, port held: {}",
                f.fail,
                f.port,
                f.reused,
                f.got,
                last.map(|k| f.at.duration_since(k.at)),
                last.map(|k| k.pid),
                f.port.is_some_and(|p| kills.iter().any(|k| k.held.contains(&p)))
            );
        }
    }
    let failures_listed = stats.failures.len() as u64 == stats.failed_total();
    let mut ready: Vec<Duration> = kills.iter().filter_map(|k| k.ready_after).collect();
    let mut serving: Vec<Duration> = kills.iter().filter_map(|k| k.serving_after).collect();
    let fmt = |v: &mut Vec<Duration>, n: usize| match median_max(v) {
        Some((med, max)) if v.len() == n => format!("median {} max {}", ms(med), ms(max)),
        Some((med, max)) => format!("median {} max {} ({} of {n} seen)", ms(med), ms(max), v.len()),
        None => "never seen".to_owned(),
    };
    let n = kills.len();
    // Crashes other than the kills themselves.
    let killed: HashSet<i32> = kills.iter().map(|k| k.pid).collect();
    let other_crashes = match &srv {
        Server::Forkring(f) => f.crashes().iter().filter(|e| !killed.contains(&e.pid)).count(),
        Server::Nginx(_) => 0,
    };
    let still_serving = forkring_stress::probe::get_once(srv.addr(), Duration::from_secs(2)) == Ok(200);
    // In kill order: a slot's respawn delay grows with its crash streak.
    let per_kill: Vec<String> = kills
        .iter()
        .map(|k| k.ready_after.map_or("-".to_owned(), |d| format!("{:.0}", d.as_secs_f64() * 1e3)))
        .collect();
    let mut figures = format!(
        "{n} kills, they held {held_total} conns; served {}, {}, {unexplained} not on a killed worker's conn; \
         kill->ready {} (per kill, ms: {}); kill->serving {}",
        stats.ok,
        stats.failed_summary(),
        fmt(&mut ready, n),
        per_kill.join(" "),
        fmt(&mut serving, n),
    );
    if missed > 0 {
        figures.push_str(&format!("; {missed} kill(s) skipped: no ready worker in the slot"));
    }
    if not_stopped > 0 {
        figures.push_str(&format!("; {not_stopped} victim(s) not seen stopped before the count"));
    }
    if other_crashes > 0 {
        figures.push_str(&format!("; {other_crashes} other worker crash(es)"));
    }
    if !still_serving {
        figures.push_str("; NOT SERVING afterwards");
    }
    let pass = stats.failed_total() <= held_total as u64
        && unexplained == 0
        && failures_listed
        && missed == 0
        && other_crashes == 0
        && still_serving
        && ready.len() == n;
    Ok(Outcome { figures, pass })
}
