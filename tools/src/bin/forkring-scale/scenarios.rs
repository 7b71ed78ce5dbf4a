//! The scenarios: each runs under the load of `wrk_pair.rs` against a fleet of
//! three hosts behind HAProxy, and returns its figures and whether its bound
//! held.

use std::time::{Duration, Instant};

use crate::haproxy::{Haproxy, CHECK_TIMEOUT_MS, FALL, INTER_MS, RISE};
use crate::host::{self, Host, Kind, DRAIN_DELAY_MS};
use crate::wrk_pair::Load;
use forkring_stress::wrk::Wrk;

/// The fleet of one run: the hosts (h1..h3 serving, h4 idle until scale
/// out) and the balancer.
pub struct Fleet {
    pub kind: Kind,
    pub hosts: Vec<Host>,
    pub haproxy: Haproxy,
    pub wrk: std::path::PathBuf,
}

/// What a scenario found.
pub struct Outcome {
    pub figures: String,
    pub pass: bool,
    /// Set when the scenario could not apply (the figures say why).
    pub skipped: bool,
}

pub struct Scenario {
    pub id: u8,
    pub name: &'static str,
    pub bound: &'static str,
    pub run: fn(&mut Fleet) -> Result<Outcome, String>,
}

pub fn all() -> Vec<Scenario> {
    vec![
        Scenario { id: 1, name: "rolling restart", bound: "0 failed", run: rolling_restart },
        Scenario {
            id: 2,
            name: "host dies",
            bound: "failed <= connections it held; DOWN within (fall+1) x inter; UP again",
            run: host_dies,
        },
        Scenario { id: 3, name: "scale out/in", bound: "0 failed; the new host serves", run: scale_out_in },
        Scenario { id: 4, name: "rolling upgrade", bound: "0 failed", run: rolling_upgrade },
        Scenario {
            id: 5,
            name: "overloaded host",
            bound: "0 failed; DOWN within 1 s + (fall+1) x inter of its overload; stays DOWN while it lasts; \
                    UP within 5 s + (rise+1) x inter of its end",
            run: overloaded_host,
        },
    ]
}

/// How long a server may take to be marked DOWN once its checks fail:
/// `fall` checks `inter` apart, one more interval for the phase of the
/// first, and a check's own timeout.
fn down_bound() -> Duration {
    Duration::from_millis((FALL + 1) * INTER_MS + CHECK_TIMEOUT_MS)
}

/// How long a server may take to be marked UP once it answers.
fn up_bound() -> Duration {
    Duration::from_millis((RISE + 1) * INTER_MS + 300)
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Takes host `i` out gracefully and waits until its master exited: forkring
/// by SIGTERM (`/ready` turns 503, the drain delay lets HAProxy see it),
/// nginx by `-s quit` (SIGQUIT: its listener closes at once). Returns when
/// HAProxy marked it DOWN, after the signal, if it did within 5 s.
fn drain(f: &mut Fleet, i: usize) -> Result<Option<Duration>, String> {
    let name = format!("h{}", f.hosts[i].n);
    let t = Instant::now();
    let sig = if f.kind == Kind::Forkring { libc::SIGTERM } else { libc::SIGQUIT };
    if !f.hosts[i].signal(sig) {
        return Err(format!("{name}: no master to signal"));
    }
    let down = f.haproxy.wait_status(&name, "DOWN", Duration::from_secs(5)).map(|_| t.elapsed());
    if !f.hosts[i].wait_exit(Duration::from_secs(15)) {
        return Err(format!("{name}: did not exit within 15 s: {}", f.hosts[i].log_tail(6)));
    }
    Ok(down)
}

/// Starts host `i` again and waits until HAProxy marks it UP; how long that
/// took after the host answered.
fn start(f: &mut Fleet, i: usize) -> Result<Duration, String> {
    f.hosts[i].start()?;
    let name = format!("h{}", f.hosts[i].n);
    f.haproxy
        .wait_status(&name, "UP", Duration::from_secs(5))
        .ok_or_else(|| format!("{name}: not UP in HAProxy 5 s after it answered"))
}

fn rolling_restart(f: &mut Fleet) -> Result<Outcome, String> {
    let load = Load::start(&f.wrk, f.haproxy.front, Duration::from_secs(12))?;
    std::thread::sleep(Duration::from_secs(1));
    let (r0, d0) = f.haproxy.retries();
    let mut downs = Vec::new();
    let mut ups = Vec::new();
    for i in 0..3 {
        downs.push(drain(f, i)?);
        ups.push(start(f, i)?);
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (r1, d1) = f.haproxy.retries();
    let load = load.finish()?;
    let down_txt: Vec<String> = downs.iter().map(|d| d.map_or("never".to_owned(), |d| format!("{}", ms(d)))).collect();
    let delay = match f.kind {
        Kind::Forkring => format!(" (drain delay {DRAIN_DELAY_MS} ms)"),
        Kind::Nginx => String::new(),
    };
    Ok(Outcome {
        figures: format!(
            "{}; HAProxy retries {} redispatches {}; DOWN {} ms after the signal{delay}; UP {} ms after the restart",
            load.summary(),
            r1 - r0,
            d1 - d0,
            down_txt.join("/"),
            ups.iter().map(|d| ms(*d).to_string()).collect::<Vec<_>>().join("/")
        ),
        pass: load.failed() == 0,
        skipped: false,
    })
}

fn host_dies(f: &mut Fleet) -> Result<Outcome, String> {
    let load = Load::start(&f.wrk, f.haproxy.front, Duration::from_secs(6))?;
    std::thread::sleep(Duration::from_secs(1));
    let (r0, d0) = f.haproxy.retries();
    let held = f.hosts[1].kill_tree();
    let down = f.haproxy.wait_status("h2", "DOWN", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    let up = start(f, 1)?;
    let before = f.haproxy.states()?.get("h2").map_or(0, |s| s.sessions);
    std::thread::sleep(Duration::from_millis(700));
    let after = f.haproxy.states()?.get("h2").map_or(0, |s| s.sessions);
    let (r1, d1) = f.haproxy.retries();
    let load = load.finish()?;
    let down_ok = down.is_some_and(|d| d <= down_bound());
    Ok(Outcome {
        figures: format!(
            "{}; it held {held} connection(s); HAProxy retries {} redispatches {}; DOWN {} after the kill \
             (bound {} ms); UP {} ms after the restart, then served {} req",
            load.summary(),
            r1 - r0,
            d1 - d0,
            down.map_or("never".to_owned(), |d| format!("{} ms", ms(d))),
            ms(down_bound()),
            ms(up),
            after - before
        ),
        pass: load.failed() <= held as u64 && down_ok && up <= up_bound() && after > before,
        skipped: false,
    })
}

fn scale_out_in(f: &mut Fleet) -> Result<Outcome, String> {
    let load = Load::start(&f.wrk, f.haproxy.front, Duration::from_secs(8))?;
    std::thread::sleep(Duration::from_secs(1));
    let (r0, d0) = f.haproxy.retries();
    // Out: h4 starts, answers, and is enabled in the balancer.
    f.hosts[3].start()?;
    f.haproxy.cmd("enable server fleet/h4")?;
    let up = f
        .haproxy
        .wait_status("h4", "UP", Duration::from_secs(5))
        .ok_or("h4: not UP in HAProxy 5 s after it was enabled")?;
    std::thread::sleep(Duration::from_millis(1500));
    let served = f.haproxy.states()?.get("h4").map_or(0, |s| s.sessions);
    // In: h4 drains and leaves; then it is put in maintenance.
    let down = drain(f, 3)?;
    f.haproxy.cmd("disable server fleet/h4")?;
    std::thread::sleep(Duration::from_millis(500));
    let (r1, d1) = f.haproxy.retries();
    let load = load.finish()?;
    Ok(Outcome {
        figures: format!(
            "{}; HAProxy retries {} redispatches {}; h4 UP {} ms after it was enabled, served {served} req; \
             DOWN {} after the signal",
            load.summary(),
            r1 - r0,
            d1 - d0,
            ms(up),
            down.map_or("never".to_owned(), |d| format!("{} ms", ms(d))),
        ),
        pass: load.failed() == 0 && served > 0,
        skipped: false,
    })
}

/// Why this host's server has no binary upgrade, if it has none.
fn upgrade_missing(f: &Fleet) -> Option<String> {
    if f.kind == Kind::Nginx {
        return None;
    }
    let bin = &f.hosts[0].bins().forkring;
    let help = std::process::Command::new(bin).arg("--help").output().ok()?;
    let text = String::from_utf8_lossy(&help.stdout).into_owned() + &String::from_utf8_lossy(&help.stderr);
    (!text.contains("USR2"))
        .then(|| format!("{} has no binary upgrade (its --help does not mention USR2)", bin.display()))
}

/// The new master in host `i`'s namespace after SIGUSR2 to `old`. nginx
/// writes it to its pid file (the old one is renamed `.oldbin`); for
/// forkring it is a process of the namespace besides `old`, started by
/// `old` or by none of the namespace's processes, that has workers of its
/// own (the old master's workers have none).
fn new_master(h: &Host, kind: Kind, old: i32) -> Option<i32> {
    if kind == Kind::Nginx {
        let oldbin = h.nginx_pid_file().with_extension("pid.oldbin");
        let new: i32 = std::fs::read_to_string(h.nginx_pid_file()).ok()?.trim().parse().ok()?;
        return (oldbin.exists() && new != old && forkring_testkit::proc::alive(new)).then_some(new);
    }
    let pids = crate::net::pids_in(&h.ns);
    let ppid = |p: i32| forkring_testkit::proc::stat(p).map_or(0, |s| s.ppid);
    pids.iter().copied().filter(|&p| p != old).find(|&p| {
        let pp = ppid(p);
        (pp == old || !pids.contains(&pp)) && pids.iter().any(|&c| ppid(c) == p)
    })
}

/// One host's binary upgrade: SIGUSR2 to the master; for nginx then WINCH
/// (its workers stop gracefully) and QUIT to the old master, for forkring
/// the old master leaves by itself once the new one's workers serve.
/// Returns how long until the old master was gone and the new one ready.
fn upgrade_host(f: &mut Fleet, i: usize) -> Result<Duration, String> {
    let kind = f.kind;
    let h = &mut f.hosts[i];
    let old = h.master.ok_or("no master")?;
    let t = Instant::now();
    h.signal(libc::SIGUSR2);
    let deadline = t + Duration::from_secs(20);
    let mut new = None;
    while new.is_none() && Instant::now() < deadline {
        new = new_master(h, kind, old);
        std::thread::sleep(Duration::from_millis(10));
    }
    let new = new.ok_or_else(|| format!("h{}: no new master 20 s after SIGUSR2: {}", h.n, h.log_tail(6)))?;
    forkring_stress::procs::register(new);
    if kind == Kind::Nginx {
        std::thread::sleep(Duration::from_millis(200));
        h.signal(libc::SIGWINCH);
        std::thread::sleep(Duration::from_millis(300));
        h.signal(libc::SIGQUIT);
    }
    if !h.wait_exit(Duration::from_secs(20)) {
        return Err(format!("h{}: the old master {old} did not exit within 20 s", h.n));
    }
    h.master = Some(new);
    h.register_all();
    while host::get(h.check_addr(), "/ready") != Ok(200) {
        if Instant::now() >= deadline {
            return Err(format!("h{}: the new master {new} is not ready: {}", h.n, h.log_tail(6)));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(t.elapsed())
}

fn rolling_upgrade(f: &mut Fleet) -> Result<Outcome, String> {
    if let Some(why) = upgrade_missing(f) {
        return Ok(Outcome { figures: why, pass: true, skipped: true });
    }
    let load = Load::start(&f.wrk, f.haproxy.front, Duration::from_secs(16))?;
    std::thread::sleep(Duration::from_secs(1));
    let (r0, d0) = f.haproxy.retries();
    let mut took = Vec::new();
    let mut err = None;
    for i in 0..3 {
        match upgrade_host(f, i) {
            Ok(d) => took.push(d),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (r1, d1) = f.haproxy.retries();
    let load = load.finish();
    if let Some(e) = err {
        // No upgrade within the timeout: this binary does not do it (yet).
        if f.kind == Kind::Forkring && e.contains("no new master") {
            return Ok(Outcome { figures: format!("no upgrade happened: {e}"), pass: true, skipped: true });
        }
        return Err(e);
    }
    let load = load?;
    Ok(Outcome {
        figures: format!(
            "{}; HAProxy retries {} redispatches {}; old master gone {} ms after SIGUSR2",
            load.summary(),
            r1 - r0,
            d1 - d0,
            took.iter().map(|d| ms(*d).to_string()).collect::<Vec<_>>().join("/")
        ),
        pass: load.failed() == 0,
        skipped: false,
    })
}

/// How long the overload of scenario 5 lasts.
const OVERLOAD: Duration = Duration::from_secs(5);

/// h2's blocking pool flooded from outside the balancer (`GET /sleep?ms=50`
/// on 512 connections, far past its two workers' 64 threads each): its
/// workers shed pool work (`503`), its `/ready` turns 503 once they have
/// shed for a second, and HAProxy takes it out; when the flood ends,
/// `/ready` turns 200 after 5 s without shedding and HAProxy puts it back.
/// The fleet's own load (`GET /`, which no pool serves) goes on meanwhile.
/// nginx has no admission: its line says so.
fn overloaded_host(f: &mut Fleet) -> Result<Outcome, String> {
    if f.kind != Kind::Forkring {
        return Ok(Outcome { figures: "no admission control to test".to_owned(), pass: true, skipped: true });
    }
    let load = Load::start(&f.wrk, f.haproxy.front, Duration::from_secs(16))?;
    std::thread::sleep(Duration::from_secs(1));
    let mut flood = Wrk::new(&f.wrk, f.hosts[1].addr(), 512, OVERLOAD);
    flood.path = "/sleep?ms=50".to_owned();
    let started = Instant::now();
    let flood = flood.spawn()?;
    let down = f.haproxy.wait_status("h2", "DOWN", OVERLOAD).map(|_| started.elapsed());
    // No flapping: DOWN from then until the flood ends.
    let mut flapped = 0;
    while down.is_some() && started.elapsed() < OVERLOAD {
        if f.haproxy.status("h2") != "DOWN" {
            flapped += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let flood = flood.wait()?;
    let ended = Instant::now();
    let up = f.haproxy.wait_status("h2", "UP", Duration::from_secs(10)).map(|_| ended.elapsed());
    let load = load.finish()?;
    let down_limit = Duration::from_secs(1) + down_bound() + Duration::from_millis(500);
    let up_limit = Duration::from_secs(5) + up_bound() + Duration::from_millis(500);
    let pass = load.failed() == 0
        && down.is_some_and(|d| d <= down_limit)
        && flapped == 0
        && up.is_some_and(|u| u <= up_limit);
    Ok(Outcome {
        figures: format!(
            "{}; the flood: {} req, {} refused (503); h2 DOWN {} after the flood began (bound {} ms), \
             {flapped} flap(s), UP {} after it ended (bound {} ms)",
            load.summary(),
            flood.requests,
            flood.kinds.status,
            down.map_or("never".to_owned(), |d| format!("{} ms", ms(d))),
            ms(down_limit),
            up.map_or("never".to_owned(), |d| format!("{} ms", ms(d))),
            ms(up_limit)
        ),
        pass,
        skipped: false,
    })
}
