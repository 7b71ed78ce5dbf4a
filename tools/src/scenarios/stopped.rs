//! Scenario 10: a stopped worker. With `--worker-timeout 1`, the current
//! worker of slot 0 is stopped with SIGSTOP under load (16 keep-alive and
//! 4 connection-per-request clients); the watchdog must kill and replace it
//! within the timeout plus 1 s, and the only failed requests must be on
//! connections it held (read from `/proc` while it is stopped, as in
//! scenario 2). forkring only: nginx has no watchdog.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use forkring_testkit::proc;

use super::{ms, Ctx, Outcome, Target};
use forkring_stress::closed_loop::{Load, LoadConfig};
use forkring_stress::procs;
use forkring_stress::servers::Forkring;

/// The watchdog's timeout.
const TIMEOUT: Duration = Duration::from_secs(1);
const KEEPALIVE: usize = 16;
const CLOSE: usize = 4;

pub fn run(ctx: &Ctx, target: Target) -> Result<Outcome, String> {
    if target != Target::Forkring {
        return Err("forkring only".to_owned());
    }
    let workers = ctx.workers.max(2);
    let timeout = format!("{}", TIMEOUT.as_secs_f64());
    let f = Forkring::start(&ctx.bin, workers, &["--worker-timeout", &timeout], None)?;
    let port = f.addr.port();
    let load = Load::start(f.addr, LoadConfig::new(KEEPALIVE, CLOSE, Duration::from_secs(30)));
    std::thread::sleep(Duration::from_secs(1));
    let &(generation, pid) = f.workers().get(&0).ok_or("no worker in slot 0")?;
    let stopped = proc::stop(pid);
    let held: BTreeSet<u16> = procs::tcp_held(pid, port);
    let at = Instant::now();
    let replacement = f.wait_ready_after(0, generation, TIMEOUT + Duration::from_secs(5));
    let ready_after = replacement.as_ref().map(|e| e.at.saturating_duration_since(at));
    let killed_after = f.line_times("watchdog: worker 0.").first().map(|&t| t.saturating_duration_since(at));
    // The load goes on a second with the replacement.
    std::thread::sleep(Duration::from_secs(1));
    let stats = load.finish();
    let unexplained = stats.failures.iter().filter(|fl| !fl.port.is_some_and(|p| held.contains(&p))).count();
    let gone = proc::wait_gone(pid, Duration::from_secs(2));
    let still_serving = forkring_stress::probe::get_once(f.addr, Duration::from_secs(2)) == Ok(200);
    let other_crashes = f.crashes().iter().filter(|e| e.pid != pid).count();
    let show = |d: Option<Duration>| d.map_or("never".to_owned(), ms);
    let mut figures = format!(
        "stopped worker held {} conns; served {}, {}, {unexplained} not on its conns; stop->kill {}, stop->replacement ready {} (bound {})",
        held.len(),
        stats.ok,
        stats.failed_summary(),
        show(killed_after),
        show(ready_after),
        ms(TIMEOUT + Duration::from_secs(1)),
    );
    if !stopped {
        figures.push_str("; victim not seen stopped");
    }
    if other_crashes > 0 {
        figures.push_str(&format!("; {other_crashes} other worker crash(es)"));
    }
    if !still_serving {
        figures.push_str("; NOT SERVING afterwards");
    }
    let pass = stopped
        && gone
        && ready_after.is_some_and(|d| d <= TIMEOUT + Duration::from_secs(1))
        && stats.failed_total() <= held.len() as u64
        && stats.failures.len() as u64 == stats.failed_total()
        && unexplained == 0
        && other_crashes == 0
        && still_serving;
    Ok(Outcome { figures, pass })
}
