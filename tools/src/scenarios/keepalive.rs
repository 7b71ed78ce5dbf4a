//! Scenario 12: keep-alive clients of every kind of answer through every
//! drain a cluster makes.
//!
//! Five wrk runs at once, 32 keep-alive connections each, one per kind of
//! answer: whole (`GET /`), file (`GET /files/f`, 1 MiB, `--static`),
//! stream (`GET /stream?n=3&ms=5`), deferred (`GET /sleep?ms=1`, answered
//! by a pool thread) and upload (`POST /upload`, 64 KiB streamed to a
//! reader). Against two workers, while they run: four rolling reloads
//! (SIGHUP) 1.5 s apart, a binary upgrade (SIGUSR2, the same binary), then,
//! on the new master, a scale-down and a scale-up (SIGTTOU, SIGTTIN) and
//! one more reload. A keep-alive client sends its next request the moment
//! an answer ends: a draining worker that closes the connection then
//! (rather than answering that request with `Connection: close`) shows as
//! a failed read in wrk. Every request must be answered, on both backends
//! (the server's `FORKRING_BACKEND` is set for each run).
//!
//! nginx, the anchor: the kinds it serves without modules (whole, file, and
//! an upload to `/`, whose body it reads and drops), the same load, and a
//! SIGHUP (its reload) at each of the same moments. At its graceful stop
//! nginx closes a keep-alive connection right after the answer in flight,
//! under the client's next request; its failed reads are printed, never
//! judged.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use forkring_testkit::proc;

use super::{ms, nginx_default, sleep_until, Ctx, Outcome, Target};
use forkring_stress::procs;
use forkring_stress::servers::{Forkring, Nginx, NginxConfig};
use forkring_stress::wrk::{Running, Wrk, WrkResult};

/// Workers, as in the measurement that found the loss.
const WORKERS: usize = 2;
/// wrk's connections, per kind.
const CONNS: usize = 32;
/// How long wrk runs: the faults, and time after the last one.
const RUN: Duration = Duration::from_secs(18);
/// From wrk's start to the first fault.
const FIRST: Duration = Duration::from_secs(1);
/// Between two faults.
const EVERY: Duration = Duration::from_millis(1500);
/// Rolling reloads before the upgrade (one more comes after it).
const RELOADS: u32 = 4;
/// wrk's own timeout: long, so that an answer slowed by a busy machine is
/// not counted as lost (a lost one never comes).
const WRK_TIMEOUT: Duration = Duration::from_secs(10);
/// The file's size.
const FILE: usize = 1 << 20;
/// The upload's size.
const UPLOAD: usize = 64 * 1024;

/// One kind of answer and the request that asks for it.
struct Kind {
    /// Name in the figures.
    name: &'static str,
    /// The forkring fixture's request target.
    path: &'static str,
    /// nginx's request target for the same kind, if it serves one.
    nginx: Option<&'static str>,
    /// A `POST` with an [`UPLOAD`]-byte body (through the Lua script).
    post: bool,
}

const KINDS: [Kind; 5] = [
    Kind { name: "whole", path: "/", nginx: Some("/"), post: false },
    Kind { name: "file", path: "/files/f", nginx: Some("/files/f"), post: false },
    Kind { name: "stream", path: "/stream?n=3&ms=5", nginx: None, post: false },
    Kind { name: "deferred", path: "/sleep?ms=1", nginx: None, post: false },
    Kind { name: "upload", path: "/upload", nginx: Some("/"), post: true },
];

pub fn run(ctx: &Ctx, target: Target) -> Result<Outcome, String> {
    let wrk = ctx.wrk.clone().ok_or("wrk not found")?;
    let dir = Scratch::new()?;
    match target {
        Target::Forkring => {
            let mut figures = Vec::new();
            let mut pass = true;
            for backend in ["uring", "epoll"] {
                let o = forkring(ctx, &wrk, &dir, backend)?;
                figures.push(o.figures);
                pass &= o.pass;
            }
            Ok(Outcome { figures: figures.join("; "), pass })
        }
        Target::Nginx => nginx(ctx, &wrk, &dir),
    }
}

/// The run's directory: the served file and wrk's upload script.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Result<Scratch, String> {
        let dir = std::env::temp_dir().join(format!("forkring-stress-keepalive-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("files")).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("files/f"), vec![b'f'; FILE]).map_err(|e| e.to_string())?;
        let script = format!(
            "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", {UPLOAD})\n\
             wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n"
        );
        std::fs::write(dir.join("post.lua"), script).map_err(|e| e.to_string())?;
        Ok(Scratch { dir })
    }

    fn files(&self) -> PathBuf {
        self.dir.join("files")
    }

    fn script(&self) -> PathBuf {
        self.dir.join("post.lua")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The wrk runs, one per kind the server serves, started together.
fn start_load(
    wrk: &Path,
    addr: std::net::SocketAddr,
    dir: &Scratch,
    path: impl Fn(&Kind) -> Option<&'static str>,
) -> Result<Vec<(&'static str, Running)>, String> {
    let mut runs = Vec::new();
    for k in &KINDS {
        let Some(p) = path(k) else { continue };
        let w = Wrk {
            path: p.to_owned(),
            script: k.post.then(|| dir.script()),
            timeout: Some(WRK_TIMEOUT),
            ..Wrk::new(wrk, addr, CONNS, RUN)
        };
        runs.push((k.name, w.spawn()?));
    }
    Ok(runs)
}

/// Each kind's report, and whether every request of every kind was
/// answered.
fn finish_load(runs: Vec<(&'static str, Running)>) -> Result<(String, bool), String> {
    let mut text = Vec::new();
    let mut clean = true;
    for (name, r) in runs {
        let r: WrkResult = r.wait_at_most(Duration::from_secs(15)).map_err(|e| format!("{name}: {e}"))?;
        let mut t = format!("{name} {} req {} failed", r.requests, r.errors);
        if r.errors > 0 {
            t.push_str(&format!(" ({})", r.kinds.text()));
        }
        clean &= r.errors == 0 && r.requests > 0;
        text.push(t);
    }
    Ok((text.join(", "), clean))
}

/// Waits until `until`, noting when the (old) master `f` exits.
fn watch_exit(f: &mut Forkring, until: Instant, exit: &mut Option<(std::process::ExitStatus, Instant)>) {
    loop {
        if exit.is_none() {
            *exit = f.wait_exit(Duration::ZERO).map(|s| (s, Instant::now()));
        }
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(5)));
    }
}

/// The `n`-th fault's moment, counted from `t0`, wrk's start.
fn moment(t0: Instant, n: u32) -> Instant {
    t0 + FIRST + EVERY * n
}

fn forkring(ctx: &Ctx, wrk: &Path, dir: &Scratch, backend: &str) -> Result<Outcome, String> {
    let files = dir.files();
    let mut f = Forkring::start_on(&ctx.bin, backend, WORKERS, &["--static", files.to_str().unwrap_or_default()])?;
    let addr = f.addr;
    let t0 = Instant::now();
    let load = start_load(wrk, addr, dir, |k| Some(k.path))?;
    for i in 0..RELOADS {
        sleep_until(moment(t0, i));
        f.signal(libc::SIGHUP);
    }
    // The binary upgrade: the old master hands its sockets to a new one
    // and drains its workers.
    sleep_until(moment(t0, RELOADS));
    let u0 = Instant::now();
    f.signal(libc::SIGUSR2);
    let upgraded = f.wait_line("upgraded pid=", 0, Duration::from_secs(20));
    let new_master: Option<i32> =
        upgraded.as_deref().and_then(|l| l.rsplit("upgraded pid=").next()).and_then(|p| p.trim().parse().ok());
    if let Some(p) = new_master {
        procs::register(p);
    }
    let _ = f.wait_line("upgrade: workers ready", 0, Duration::from_secs(5));
    let ready = f.line_times("upgrade: workers ready").first().map(|&t| t.saturating_duration_since(u0));
    // Then, while the old master drains its workers, the new one scales
    // down and up, and reloads.
    let mut old_exit = None;
    let mut last = Instant::now();
    if let Some(p) = new_master {
        let next = moment(t0, RELOADS + 2).max(Instant::now());
        for (i, sig) in [libc::SIGTTOU, libc::SIGTTIN, libc::SIGHUP].into_iter().enumerate() {
            watch_exit(&mut f, next + EVERY * i as u32, &mut old_exit);
            last = Instant::now();
            let _ = proc::signal(p, sig);
        }
    }
    if old_exit.is_none() {
        old_exit = f.wait_exit(Duration::from_secs(30)).map(|s| (s, Instant::now()));
    }
    let exited = old_exit.map(|(_, at)| at.saturating_duration_since(u0));
    let old_exit = old_exit.map(|(s, _)| s);
    let _ = f.wait_line("scale down: slot", 0, Duration::from_secs(5));
    let _ = f.wait_line("scale up: slot", 0, Duration::from_secs(5));
    let _ = f.wait_line("rolling reload of", RELOADS as usize, Duration::from_secs(5));
    let (load_text, clean) = finish_load(load)?;
    let drains = drains(&f, t0 + RUN);
    let still_serving = forkring_stress::probe::get_once(addr, Duration::from_secs(2)) == Ok(200);
    if std::env::var_os("STRESS_DEBUG").is_some() {
        for l in f.log_since(t0) {
            eprintln!("{l}");
        }
    }
    let reloads = f.lines_with("rolling reload of").len();
    let down = !f.lines_with("scale down: slot").is_empty();
    let up = !f.lines_with("scale up: slot").is_empty();
    let crashes = f.crashes().len();
    if let Some(p) = new_master {
        let _ = proc::signal(p, libc::SIGTERM);
        proc::wait_gone(p, Duration::from_secs(10));
    }
    // The faults all fell while wrk ran, with time after the last.
    let in_time = last + EVERY <= t0 + RUN;
    let ran = f.backend.split_whitespace().next().unwrap_or("?").to_owned();
    let mut figures = format!(
        "{ran}: {load_text}; {reloads}/{} reloads, upgrade {} (USR2->new workers ready {}, ->old master exit {}), \
         scale down {}, up {}; {}",
        RELOADS + 1,
        if old_exit.is_some_and(|s| s.success()) { "done" } else { "NOT DONE" },
        ready.map_or("never".to_owned(), ms),
        exited.map_or("never".to_owned(), ms),
        if down { "done" } else { "NOT DONE" },
        if up { "done" } else { "NOT DONE" },
        drains.text(),
    );
    if crashes > 0 {
        figures.push_str(&format!(", {crashes} worker crash(es)"));
    }
    if !in_time {
        figures.push_str(", the last fault came too late in the run");
    }
    if !still_serving {
        figures.push_str(", NOT SERVING afterwards");
    }
    let pass = clean
        && reloads == RELOADS as usize + 1
        && new_master.is_some()
        && old_exit.is_some_and(|s| s.success())
        && down
        && up
        && crashes == 0
        && in_time
        && drains.late == 0
        && still_serving;
    Ok(Outcome { figures, pass })
}

/// How the workers' drains went: each from its `draining:` line to its
/// `drained` line.
struct Drains {
    /// Drains begun.
    begun: usize,
    /// The longest of those that ended while the load ran.
    longest: Option<Duration>,
    /// Drains not ended while the load ran: a connection held them,
    /// which the drain's timeout would have cut.
    late: usize,
}

impl Drains {
    fn text(&self) -> String {
        let mut t = format!("{} drains, longest {}", self.begun, self.longest.map_or("-".to_owned(), ms));
        if self.late > 0 {
            t.push_str(&format!(", {} NOT DONE while the load ran", self.late));
        }
        t
    }
}

/// The drains of `f`'s workers (and of the new master's, which logs to the
/// same stream), judged against the load's end `end`.
fn drains(f: &Forkring, end: Instant) -> Drains {
    let pid = |l: &str| l.split_once('[').and_then(|(_, r)| r.split_once(']')).map(|(p, _)| p.to_owned());
    let ended: Vec<(Option<String>, Instant)> =
        f.lines_with("info: drained").iter().map(|l| pid(l)).zip(f.line_times("info: drained")).collect();
    let mut d = Drains { begun: 0, longest: None, late: 0 };
    for (who, began) in f.lines_with("info: draining:").iter().map(|l| pid(l)).zip(f.line_times("info: draining:")) {
        d.begun += 1;
        match ended.iter().find(|(p, at)| *p == who && *at >= began && *at < end) {
            Some((_, at)) => d.longest = d.longest.max(Some(*at - began)),
            None => d.late += 1,
        }
    }
    d
}

fn nginx(ctx: &Ctx, wrk: &Path, dir: &Scratch) -> Result<Outcome, String> {
    let bin = ctx.nginx.as_ref().ok_or("nginx not found")?;
    let cfg = NginxConfig { workers: WORKERS, files: Some(dir.files()), ..nginx_default() };
    let n = Nginx::start(bin, &cfg, None)?;
    let t0 = Instant::now();
    let load = start_load(wrk, n.addr, dir, |k| k.nginx)?;
    // A reload at each of forkring's fault moments (nginx has no scaling,
    // and its upgrade needs a daemon: scenario 9 runs it).
    let hups = RELOADS + 4;
    for i in 0..hups {
        sleep_until(moment(t0, i));
        n.signal(libc::SIGHUP);
    }
    let (load_text, clean) = finish_load(load)?;
    let still_serving = forkring_stress::probe::get_once(n.addr, Duration::from_secs(2)) == Ok(200);
    let mut figures = format!("{load_text}; {hups} SIGHUPs (stream and deferred: no such answer)");
    if !still_serving {
        figures.push_str(", NOT SERVING afterwards");
    }
    Ok(Outcome { figures, pass: clean && still_serving })
}
