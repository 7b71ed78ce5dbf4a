//! Scenario 4: SIGKILL to the master under light keep-alive load. Its
//! workers must notice and exit: none may be alive one second later. The
//! figures also give when the last one went. (The harness is the
//! subreaper of its descendants, so the orphans are reaped here; a zombie
//! counts as gone.)

use std::time::{Duration, Instant};

use forkring_testkit::proc;

use super::{ms, nginx_default, Ctx, Outcome, Server, Target};
use forkring_stress::closed_loop::{Load, LoadConfig};

pub fn run(ctx: &Ctx, target: Target) -> Result<Outcome, String> {
    let mut srv = Server::start(ctx, target, ctx.workers, &[], nginx_default(), None)?;
    let load = Load::start(srv.addr(), LoadConfig::new(8, 0, Duration::from_secs(15)));
    std::thread::sleep(Duration::from_secs(1));
    let workers = match &srv {
        Server::Forkring(f) => f.live_forked(),
        Server::Nginx(n) => n.workers(),
    };
    if workers.is_empty() {
        return Err("no worker found before the kill".into());
    }
    let t0 = Instant::now();
    srv.signal(libc::SIGKILL);
    let reaped = match &mut srv {
        Server::Forkring(f) => f.wait_exit(Duration::from_secs(2)).is_some(),
        Server::Nginx(n) => n.wait_exit(Duration::from_secs(2)),
    };
    let mut alive_at_1s = None;
    let mut last_gone = None;
    let watch = Duration::from_secs(3);
    while t0.elapsed() < watch {
        for &p in &workers {
            proc::reap(p);
        }
        let alive = workers.iter().filter(|&&p| proc::alive(p)).count();
        if alive_at_1s.is_none() && t0.elapsed() >= Duration::from_secs(1) {
            alive_at_1s = Some(alive);
        }
        if alive == 0 {
            last_gone = Some(t0.elapsed());
            alive_at_1s.get_or_insert(0);
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let still = workers.iter().filter(|&&p| proc::alive(p)).count();
    let stats = load.finish();
    let alive_at_1s = alive_at_1s.unwrap_or(still);
    let gone = match last_gone {
        Some(d) => format!("all gone after {}", ms(d)),
        None => format!("{still} still alive after {}", ms(watch)),
    };
    let figures = format!(
        "{} workers, {alive_at_1s} alive 1 s after the master's SIGKILL, {gone}; {} requests served under load before it{}",
        workers.len(),
        stats.ok,
        if reaped { "" } else { "; master not reaped" }
    );
    // The survivors are killed when `srv` drops.
    Ok(Outcome { figures, pass: alive_at_1s == 0 && reaped })
}
