//! Scenario 1: a rolling reload (SIGHUP to the master) every second for
//! 10 s while keep-alive and connection-per-request clients run; every
//! request must be answered.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::{nginx_default, Ctx, Outcome, Server, Target};
use forkring_stress::closed_loop::{Load, LoadConfig};

/// Reloads, one a second.
const RELOADS: u32 = 10;
/// Keep-alive clients and connection-per-request clients.
const KEEPALIVE: usize = 16;
const CLOSE: usize = 4;

pub fn run(ctx: &Ctx, target: Target) -> Result<Outcome, String> {
    let srv = Server::start(ctx, target, ctx.workers, &[], nginx_default(), None)?;
    let initial: BTreeSet<i32> = srv.worker_pids().into_iter().collect();
    let mut seen = initial.clone();
    let load = Load::start(srv.addr(), LoadConfig::new(KEEPALIVE, CLOSE, Duration::from_secs(30)));
    let t0 = Instant::now() + Duration::from_millis(500);
    let mut sent: Vec<Instant> = Vec::new();
    for i in 0..RELOADS {
        let at = t0 + Duration::from_secs(i as u64);
        // Watch the worker table while waiting (nginx has no log to read).
        while Instant::now() < at {
            seen.extend(srv.worker_pids());
            std::thread::sleep(Duration::from_millis(20).min(at.saturating_duration_since(Instant::now())));
        }
        sent.push(Instant::now());
        srv.signal(libc::SIGHUP);
    }
    // The last reload gets a second to finish, under the same load.
    let end = t0 + Duration::from_secs(RELOADS as u64);
    while Instant::now() < end {
        seen.extend(srv.worker_pids());
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = load.finish();
    if let (Server::Forkring(f), Some(_)) = (&srv, std::env::var_os("STRESS_DEBUG")) {
        for l in f.log_since(t0) {
            eprintln!("{l}");
        }
    }
    let still_serving = forkring_stress::probe::get_once(srv.addr(), Duration::from_secs(2)) == Ok(200);
    let replaced = match &srv {
        Server::Forkring(f) => f.events().iter().filter(|e| e.kind == "ready" && e.generation > 0).count(),
        Server::Nginx(_) => seen.difference(&initial).count(),
    };
    let reloads = match &srv {
        Server::Forkring(f) => {
            // Each reload: from its log line to the last of its slots'
            // replacements being ready.
            let starts = f.line_times("rolling reload of");
            let readies: Vec<Instant> =
                f.events().iter().filter(|e| e.kind == "ready" && e.generation > 0).map(|e| e.at).collect();
            let mut took: Vec<Duration> = starts
                .iter()
                .enumerate()
                .filter_map(|(i, &s)| {
                    let next = starts.get(i + 1).copied();
                    let mine: Vec<Instant> =
                        readies.iter().copied().filter(|&r| r >= s && next.map_or(true, |n| r < n)).collect();
                    (mine.len() >= ctx.workers).then(|| mine[ctx.workers - 1] - s)
                })
                .collect();
            let took_txt = match super::median_max(&mut took) {
                Some((med, max)) => format!(" (each done in median {} max {})", super::ms(med), super::ms(max)),
                None => String::new(),
            };
            // SIGHUPs that no reload followed within 900 ms.
            let ignored: Vec<String> = sent
                .iter()
                .enumerate()
                .filter(|&(_, &t)| !starts.iter().any(|&s| s >= t && s - t < Duration::from_millis(900)))
                .map(|(i, _)| (i + 1).to_string())
                .collect();
            let ignored_txt = if ignored.is_empty() {
                String::new()
            } else {
                format!(" (no reload after SIGHUP {})", ignored.join(", "))
            };
            format!("{}/{RELOADS} reloads{took_txt}{ignored_txt}, ", starts.len())
        }
        Server::Nginx(_) => format!("{RELOADS} SIGHUPs, "),
    };
    let crashes = srv.crashes();
    let mut figures = format!(
        "served {}, {}, {reloads}{replaced} workers replaced, p99 {}",
        stats.ok,
        stats.failed_summary(),
        super::us(super::quantile_us(&stats.latency, 0.99))
    );
    if crashes > 0 {
        figures.push_str(&format!(", {crashes} worker crash(es)"));
    }
    if !still_serving {
        figures.push_str(", NOT SERVING afterwards");
    }
    let pass = stats.failed_total() == 0 && stats.ok > 0 && crashes == 0 && still_serving;
    Ok(Outcome { figures, pass })
}
