//! Scenario 9: a binary upgrade under load. Two wrk runs at once, 64
//! keep-alive connections and 64 connection-per-request ones (`Connection:
//! close`); 2 s in, the server's binary is replaced on disk and the master
//! gets SIGUSR2. Every request must be answered.
//!
//! forkring: the demo binary is copied into a scratch directory with build
//! tag `one`, started from there, and replaced (by rename) with a copy
//! tagged `two` before the signal; afterwards `GET /version` must name
//! build `two`. Figures: from SIGUSR2 to the new master's workers serving
//! (its `upgrade: workers ready` line) and to the old master's exit.
//!
//! nginx, the anchor: `kill -USR2` starts the new binary (the same one),
//! then, once the new master has its workers, `QUIT` to the old master
//! (its graceful stop), as nginx's documentation does the upgrade. Figures:
//! from USR2 to the new master's workers running and to the old master's
//! exit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use forkring_testkit::proc;

use super::{ms, nginx_default, Ctx, Outcome, Target};
use crate::procs;
use crate::servers::{Forkring, Nginx, NginxConfig};
use crate::wrk::{self, WrkResult};

/// wrk connections, in each of the two runs.
const CONNS: usize = 64;
/// How long wrk runs.
const RUN: Duration = Duration::from_secs(8);
/// When, into the run, the upgrade starts.
const AT: Duration = Duration::from_secs(2);
/// The marker the demo binary keeps its build tag behind.
const TAG_MARKER: &[u8] = b"@(#)forkring-build-tag=";

pub fn run(ctx: &Ctx, target: Target) -> Result<Outcome, String> {
    let wrk = ctx.wrk.clone().ok_or("wrk not found")?;
    match target {
        Target::Forkring => forkring(ctx, &wrk),
        Target::Nginx => nginx(ctx, &wrk),
    }
}

/// Runs wrk on `/` for [`RUN`] with [`CONNS`] connections, keep-alive or
/// one connection per request.
fn wrk_run(wrk: &Path, addr: SocketAddr, close: bool) -> Result<WrkResult, String> {
    let mut cmd = Command::new(wrk);
    cmd.args(["-t1", &format!("-c{CONNS}"), &format!("-d{}s", RUN.as_secs()), "--latency"]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(format!("http://{addr}/")).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|e| format!("start {}: {e}", wrk.display()))?;
    procs::register(child.id() as i32);
    let out = child.wait_with_output().map_err(|e| format!("wait for wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    wrk::parse(&text).ok_or_else(|| format!("could not read wrk's output:\n{text}"))
}

/// Both wrk runs, in threads.
fn start_load(wrk: &Path, addr: SocketAddr) -> [std::thread::JoinHandle<Result<WrkResult, String>>; 2] {
    [false, true].map(|close| {
        let wrk = wrk.to_path_buf();
        std::thread::spawn(move || wrk_run(&wrk, addr, close))
    })
}

/// The two runs' results as figures, and whether nothing failed.
fn load_figures(load: [std::thread::JoinHandle<Result<WrkResult, String>>; 2]) -> Result<(String, bool), String> {
    let [keep, close] = load.map(|t| t.join().map_err(|_| "a wrk thread panicked".to_owned()).and_then(|r| r));
    let (keep, close) = (keep?, close?);
    let text = format!(
        "keep-alive {} req {} errors, per-request {} req {} errors",
        keep.requests, keep.errors, close.requests, close.errors
    );
    Ok((text, keep.errors == 0 && close.errors == 0 && keep.requests > 0 && close.requests > 0))
}

/// Writes a copy of `bin` tagged `tag` to `dst`, by rename.
fn install_build(bin: &Path, dst: &Path, tag: &str) -> Result<(), String> {
    let mut bytes = std::fs::read(bin).map_err(|e| format!("read {}: {e}", bin.display()))?;
    let at = bytes
        .windows(TAG_MARKER.len())
        .position(|w| w == TAG_MARKER)
        .ok_or("no build-tag marker in the demo binary")?
        + TAG_MARKER.len();
    bytes[at..at + tag.len()].copy_from_slice(tag.as_bytes());
    let tmp = dst.with_extension("new");
    std::fs::write(&tmp, &bytes).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, dst).map_err(|e| e.to_string())
}

/// `GET /version`'s body on a fresh connection.
fn version(addr: SocketAddr) -> String {
    let mut out = String::new();
    if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"GET /version HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n");
        let _ = s.read_to_string(&mut out);
    }
    out.rsplit("\r\n\r\n").next().unwrap_or("").trim().to_owned()
}

fn forkring(ctx: &Ctx, wrk: &Path) -> Result<Outcome, String> {
    let dir: PathBuf = std::env::temp_dir().join(format!("forkring-stress-upgrade-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let bin = dir.join("forkring");
    install_build(&ctx.bin, &bin, "one")?;
    let mut f = Forkring::start(&bin, ctx.workers, &[], None)?;
    let addr = f.addr;
    let load = start_load(wrk, addr);
    std::thread::sleep(AT);
    install_build(&ctx.bin, &bin, "two")?;
    let t0 = Instant::now();
    f.signal(libc::SIGUSR2);
    let upgraded = f.wait_line("upgraded pid=", 0, Duration::from_secs(30));
    let new_pid: Option<i32> =
        upgraded.as_deref().and_then(|l| l.rsplit("upgraded pid=").next()).and_then(|p| p.trim().parse().ok());
    if let Some(p) = new_pid {
        procs::register(p);
    }
    let ready = f.line_times("upgrade: workers ready").first().map(|&t| t.saturating_duration_since(t0));
    let exit = f.wait_exit(Duration::from_secs(30));
    let exited = exit.map(|_| t0.elapsed());
    let (load_text, no_errors) = load_figures(load)?;
    let serving = version(addr);
    if let Some(p) = new_pid {
        let _ = proc::signal(p, libc::SIGTERM);
        proc::wait_gone(p, Duration::from_secs(10));
    }
    if std::env::var_os("STRESS_DEBUG").is_some() {
        eprintln!("{}", f.log_tail(60));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let show = |d: Option<Duration>| d.map_or("never".to_owned(), ms);
    let clean_exit = exit.is_some_and(|s| s.success());
    let new_build = serving.ends_with("(build two)");
    let mut figures =
        format!("{load_text}; USR2->new workers ready {}, ->old master exit {}", show(ready), show(exited));
    if !clean_exit {
        figures.push_str(&format!("; old master exit {exit:?}"));
    }
    if !new_build {
        figures.push_str(&format!("; serving {serving:?}, not build two"));
    }
    Ok(Outcome { figures, pass: no_errors && new_pid.is_some() && ready.is_some() && clean_exit && new_build })
}

fn nginx(ctx: &Ctx, wrk: &Path) -> Result<Outcome, String> {
    let bin = ctx.nginx.as_ref().ok_or("nginx not found")?;
    let mut n = Nginx::start(bin, &NginxConfig { workers: ctx.workers, ..nginx_default() }, None)?;
    let addr = n.addr;
    let old_workers = n.workers();
    let load = start_load(wrk, addr);
    std::thread::sleep(AT);
    let t0 = Instant::now();
    n.signal(libc::SIGUSR2);
    // The new master is the old one's child that has workers of its own.
    let deadline = t0 + Duration::from_secs(20);
    let mut new_master = None;
    while new_master.is_none() && Instant::now() < deadline {
        new_master = proc::children(n.pid)
            .into_iter()
            .filter(|p| !old_workers.contains(p))
            .find(|&p| proc::children(p).len() >= ctx.workers);
        std::thread::sleep(Duration::from_millis(1));
    }
    let ready = new_master.map(|_| t0.elapsed());
    if let Some(p) = new_master {
        procs::register(p);
        for w in proc::children(p) {
            procs::register(w);
        }
        n.signal(libc::SIGQUIT);
    }
    let exited = n.wait_exit(Duration::from_secs(30)).then(|| t0.elapsed());
    let (load_text, no_errors) = load_figures(load)?;
    if let Some(p) = new_master {
        let _ = proc::signal(p, libc::SIGQUIT);
        proc::wait_gone(p, Duration::from_secs(10));
    }
    let show = |d: Option<Duration>| d.map_or("never".to_owned(), ms);
    let figures = format!("{load_text}; USR2->new workers up {}, QUIT->old master exit {}", show(ready), show(exited));
    Ok(Outcome { figures, pass: no_errors && ready.is_some() && exited.is_some() })
}
