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
//! nginx, the anchor (daemonized, as it must be for `USR2`): `kill -USR2`
//! starts the new binary (the same one), then, once the new master has its
//! workers, `QUIT` to the old master (its graceful stop), as nginx's
//! documentation does the upgrade. Figures: from USR2 to the new master's
//! workers running and to the old master's exit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use forkring_testkit::proc;

use super::{ms, Ctx, Outcome, Target};
use forkring_stress::procs;
use forkring_stress::servers::Forkring;
use forkring_stress::wrk::{Wrk, WrkResult};

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
    Wrk { close, ..Wrk::new(wrk, addr, CONNS, RUN) }.run()
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
    let bin = dir.join(forkring_stress::SERVER_BIN);
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
    // The new master logs this line after it told the old one, so it may
    // arrive after the old master's `upgraded`.
    let _ = f.wait_line("upgrade: workers ready", 0, Duration::from_secs(5));
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

/// A daemonized nginx for the upgrade: nginx ignores `USR2` while the
/// process that started it is still its parent (it takes itself for the
/// new binary of an upgrade under way), so the anchor runs it as it runs in
/// production, detached; the harness, the subreaper, adopts it.
struct Daemon {
    /// Its prefix directory (configuration, pid file, logs).
    dir: PathBuf,
}

impl Daemon {
    fn pid_file(&self) -> PathBuf {
        self.dir.join("nginx.pid")
    }

    /// The master's pid, from the pid file (`nginx.pid.oldbin` for the old
    /// master during an upgrade).
    fn pid(&self, oldbin: bool) -> Option<i32> {
        let p = if oldbin { self.dir.join("nginx.pid.oldbin") } else { self.pid_file() };
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    }

    fn start(bin: &Path, workers: usize) -> Result<(Daemon, SocketAddr), String> {
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let dir = std::env::temp_dir().join(format!("forkring-stress-nginx-upgrade-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let d = dir.display();
        // As root, nginx would switch its workers to `nobody`.
        // SAFETY: geteuid cannot fail.
        let user = if unsafe { libc::geteuid() } == 0 { "user root;" } else { "" };
        let mut temp = String::new();
        for m in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            temp.push_str(&format!("    {m}_temp_path {d}/{m};\n"));
        }
        let conf = format!(
            "{user}\nworker_processes {workers};\nworker_rlimit_nofile 8256;\ndaemon on;\nmaster_process on;\n\
             pid {d}/nginx.pid;\nerror_log {d}/nginx-error.log notice;\nevents {{\n    worker_connections 4096;\n}}\n\
             http {{\n    access_log off;\n    server_tokens off;\n    default_type text/plain;\n\
             keepalive_requests 1000000;\n    keepalive_timeout 75s;\n{temp}    server {{\n\
             listen 127.0.0.1:{port} backlog=4096;\n        location = / {{\n\
             return 200 \"Hello, World!\";\n        }}\n    }}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let status = Command::new(bin)
            .arg("-p")
            .arg(format!("{d}/"))
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("nginx-error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        let daemon = Daemon { dir };
        if !status.success() {
            return Err(format!("nginx exited with {status}"));
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = daemon.pid(false) {
                procs::register(pid);
                let kids = proc::children(pid);
                kids.iter().for_each(|&k| procs::register(k));
                if kids.len() >= workers && forkring_stress::probe::get_once(addr, Duration::from_secs(1)) == Ok(200) {
                    return Ok((daemon, addr));
                }
            }
            if Instant::now() >= deadline {
                return Err("nginx did not answer within 10 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        for oldbin in [true, false] {
            if let Some(pid) = self.pid(oldbin) {
                // Registered when seen: the final cleanup kills what is left.
                let _ = proc::signal(pid, libc::SIGQUIT);
                proc::wait_gone(pid, Duration::from_secs(5));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx(ctx: &Ctx, wrk: &Path) -> Result<Outcome, String> {
    let bin = ctx.nginx.as_ref().ok_or("nginx not found")?;
    let (daemon, addr) = Daemon::start(bin, ctx.workers)?;
    let old = daemon.pid(false).ok_or("no nginx pid")?;
    let load = start_load(wrk, addr);
    std::thread::sleep(AT);
    let t0 = Instant::now();
    let _ = proc::signal(old, libc::SIGUSR2);
    // The new master writes its pid file once it runs; it is ready when
    // its workers run.
    let deadline = t0 + Duration::from_secs(20);
    let mut new_master = None;
    while new_master.is_none() && Instant::now() < deadline {
        new_master = daemon.pid(false).filter(|&p| p != old && proc::children(p).len() >= ctx.workers);
        std::thread::sleep(Duration::from_millis(1));
    }
    let ready = new_master.map(|_| t0.elapsed());
    let mut exited = None;
    if let Some(p) = new_master {
        procs::register(p);
        proc::children(p).into_iter().for_each(procs::register);
        let _ = proc::signal(old, libc::SIGQUIT);
        exited = proc::wait_gone(old, Duration::from_secs(30)).then(|| t0.elapsed());
    }
    let (load_text, no_errors) = load_figures(load)?;
    let error_log = std::fs::read_to_string(daemon.dir.join("nginx-error.log")).unwrap_or_default();
    drop(daemon);
    if std::env::var_os("STRESS_DEBUG").is_some() {
        eprintln!("{error_log}");
    }
    let show = |d: Option<Duration>| d.map_or("never".to_owned(), ms);
    let figures = format!(
        "{load_text}; USR2->new workers up {}, ->old master exit {} (QUIT sent when they were up)",
        show(ready),
        show(exited)
    );
    Ok(Outcome { figures, pass: no_errors && ready.is_some() && exited.is_some() })
}
