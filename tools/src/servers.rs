//! The stress harness's servers under test: a forkring cluster (the
//! release test fixture) and the nginx anchor, each started on 127.0.0.1
//! and killed by pid when dropped.
//!
//! forkring's master logs every worker lifecycle event on stderr
//! (`forkring[PID] info: ready 0.1 pid=1234`); a reader thread keeps that
//! pipe drained, stamps every line with the time it arrived, registers every
//! forked pid for the final cleanup, and turns the events into a worker
//! table the scenarios query. nginx has no such log, so its workers are
//! read from `/proc` (the master's children).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use forkring_testkit::proc;

use crate::nginx;
use crate::probe::{get_once, wait_serving};
use crate::procs;

/// Most log lines kept per server (a count of the rest is kept).
const LOG_KEPT: usize = 200_000;

/// A worker lifecycle event from forkring's log.
#[derive(Clone, Debug)]
pub struct Event {
    /// When the harness read the line.
    pub at: Instant,
    /// `fork`, `online`, `listening`, `ready`, `draining`, `disconnect` or
    /// `exit`.
    pub kind: String,
    /// Worker slot.
    pub slot: usize,
    /// Generation within the slot.
    pub generation: u64,
    /// Worker pid.
    pub pid: i32,
    /// For `exit`: `requested=true|false`.
    pub requested: Option<bool>,
    /// For `exit`: `code=N` or `signal=N`.
    pub how: String,
}

/// Parses the event in a log line such as
/// `forkring[12] info: exit 0.3 pid=1234 signal=9 requested=false`.
pub fn parse_event(line: &str, at: Instant) -> Option<Event> {
    let rest = &line[line.find("info: ")? + 6..];
    let mut words = rest.split_whitespace();
    let kind = words.next()?;
    if !matches!(kind, "fork" | "online" | "listening" | "ready" | "draining" | "disconnect" | "exit") {
        return None;
    }
    let (slot, generation) = words.next()?.split_once('.')?;
    let (slot, generation) = (slot.parse().ok()?, generation.parse().ok()?);
    let pid = words.next()?.strip_prefix("pid=")?.parse().ok()?;
    let mut requested = None;
    let mut how = String::new();
    for w in words {
        if let Some(v) = w.strip_prefix("requested=") {
            requested = Some(v == "true");
        } else if w.starts_with("code=") || w.starts_with("signal=") {
            how = w.to_owned();
        }
    }
    Some(Event { at, kind: kind.to_owned(), slot, generation, pid, requested, how })
}

/// What the reader thread collected.
#[derive(Default)]
struct LogState {
    lines: Vec<(Instant, String)>,
    dropped: usize,
    events: Vec<Event>,
    addr: Option<SocketAddr>,
    backend: Option<String>,
    eof: bool,
}

/// A forkring server process (the test fixture).
pub struct Forkring {
    child: Child,
    /// The master's pid.
    pub pid: i32,
    /// The address from its `listening on` line.
    pub addr: SocketAddr,
    /// The backend its first worker reported (`io_uring (...)`, `epoll`).
    pub backend: String,
    log: Arc<(Mutex<LogState>, Condvar)>,
    reaped: bool,
}

impl Forkring {
    /// Starts `bin` on 127.0.0.1:0 with `args` (which should name
    /// `--workers`), pinned to `cpu` if given, and waits (at most 15 s) for
    /// its address and for every worker to be ready.
    pub fn start(bin: &Path, workers: usize, args: &[&str], cpu: Option<usize>) -> Result<Forkring, String> {
        Forkring::start_with(bin, &[], workers, args, cpu)
    }

    /// [`Forkring::start`] with `lead` before the usual arguments: a
    /// program that logs like the test fixture, e.g. the harness's own
    /// `--flood-server`.
    pub fn start_with(
        bin: &Path,
        lead: &[&str],
        workers: usize,
        args: &[&str],
        cpu: Option<usize>,
    ) -> Result<Forkring, String> {
        Forkring::launch(Command::new(bin), bin, lead, workers, args, cpu)
    }

    /// [`Forkring::start`] (not pinned) on the backend `backend` (`uring`,
    /// `epoll`), whatever `FORKRING_BACKEND` the harness runs with: the
    /// variable, which overrides `--backend`, is set for the server, and a
    /// binary upgrade's new master inherits it.
    pub fn start_on(bin: &Path, backend: &str, workers: usize, args: &[&str]) -> Result<Forkring, String> {
        let mut cmd = Command::new(bin);
        cmd.env("FORKRING_BACKEND", backend);
        Forkring::launch(cmd, bin, &[], workers, args, None)
    }

    /// Runs `cmd` (the program `bin`) with `lead`, the usual arguments and
    /// `args`, and waits as [`Forkring::start`] says.
    fn launch(
        mut cmd: Command,
        bin: &Path,
        lead: &[&str],
        workers: usize,
        args: &[&str],
        cpu: Option<usize>,
    ) -> Result<Forkring, String> {
        cmd.args(lead);
        cmd.args(["--listen", "127.0.0.1:0", "--workers", &workers.to_string(), "--log", "info"]).args(args);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        if let Some(cpu) = cpu {
            // SAFETY: the closure runs between fork and exec and only makes
            // the sched_setaffinity system call.
            unsafe { cmd.pre_exec(move || procs::pin_to(cpu)) };
        }
        let mut child = cmd.spawn().map_err(|e| format!("start {}: {e}", bin.display()))?;
        let pid = child.id() as i32;
        procs::register(pid);
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new((Mutex::new(LogState::default()), Condvar::new()));
        {
            let log = Arc::clone(&log);
            std::thread::Builder::new()
                .name(format!("log-{pid}"))
                .spawn(move || {
                    let mut reader = BufReader::new(stderr);
                    let mut raw = Vec::new();
                    loop {
                        raw.clear();
                        match reader.read_until(b'\n', &mut raw) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                        let at = Instant::now();
                        let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
                        let (lock, cv) = &*log;
                        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(ev) = parse_event(&line, at) {
                            if ev.kind == "fork" {
                                procs::register(ev.pid);
                            }
                            st.events.push(ev);
                        }
                        if let Some(a) = line.split("listening on ").nth(1) {
                            st.addr = a.trim().parse().ok();
                        }
                        if st.backend.is_none() {
                            if let Some(i) = line.find("backend: ") {
                                st.backend = Some(line[i + 9..].to_owned());
                            }
                        }
                        if st.lines.len() < LOG_KEPT {
                            st.lines.push((at, line));
                        } else {
                            st.dropped += 1;
                        }
                        cv.notify_all();
                    }
                    let (lock, cv) = &*log;
                    lock.lock().unwrap_or_else(|e| e.into_inner()).eof = true;
                    cv.notify_all();
                })
                .map_err(|e| format!("spawn log reader: {e}"))?;
        }
        let mut srv = Forkring {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            backend: String::new(),
            log,
            reaped: false,
        };
        let ok = srv.wait_until(Duration::from_secs(15), |st| {
            st.addr.is_some() && st.backend.is_some() && ready_table(&st.events).len() >= workers
        });
        if !ok {
            return Err(format!("forkring did not become ready within 15 s\n{}", srv.log_tail(40)));
        }
        let (addr, backend) = {
            let st = srv.state();
            (st.addr.expect("checked above"), st.backend.clone().unwrap_or_default())
        };
        srv.addr = addr;
        srv.backend = backend;
        wait_serving(srv.addr, Duration::from_secs(5))
            .map_err(|e| format!("forkring at {} does not answer GET /: {e}\n{}", srv.addr, srv.log_tail(40)))?;
        Ok(srv)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.log.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits at most `timeout` for `pred` to hold on the log state.
    fn wait_until(&self, timeout: Duration, pred: impl Fn(&LogState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.log;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if pred(&st) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || st.eof {
                return pred(&st);
            }
            st = cv.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Every lifecycle event so far.
    pub fn events(&self) -> Vec<Event> {
        self.state().events.clone()
    }

    /// The current worker of each slot: the newest one that said `ready`
    /// and has not exited, as `slot -> (generation, pid)`.
    pub fn workers(&self) -> BTreeMap<usize, (u64, i32)> {
        ready_table(&self.state().events)
    }

    /// Waits at most `timeout` for a worker of `slot` newer than
    /// `generation` to be ready; its event.
    pub fn wait_ready_after(&self, slot: usize, generation: u64, timeout: Duration) -> Option<Event> {
        let find = |st: &LogState| {
            st.events.iter().find(|e| e.kind == "ready" && e.slot == slot && e.generation > generation).cloned()
        };
        self.wait_until(timeout, |st| find(st).is_some());
        find(&self.state())
    }

    /// When each log line containing `needle` arrived.
    pub fn line_times(&self, needle: &str) -> Vec<Instant> {
        self.state().lines.iter().filter(|(_, l)| l.contains(needle)).map(|(at, _)| *at).collect()
    }

    /// The log lines containing `needle`, in order.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.state().lines.iter().filter(|(_, l)| l.contains(needle)).map(|(_, l)| l.clone()).collect()
    }

    /// Waits at most `timeout` for more than `seen` log lines containing
    /// `needle`; the first one after those `seen`.
    pub fn wait_line(&self, needle: &str, seen: usize, timeout: Duration) -> Option<String> {
        let count = |st: &LogState| st.lines.iter().filter(|(_, l)| l.contains(needle)).count();
        self.wait_until(timeout, |st| count(st) > seen);
        self.lines_with(needle).into_iter().nth(seen)
    }

    /// Every log line with the time it arrived, relative to `since`.
    pub fn log_since(&self, since: Instant) -> Vec<String> {
        self.state()
            .lines
            .iter()
            .map(|(at, l)| format!("{:>9.3} ms  {l}", at.saturating_duration_since(since).as_secs_f64() * 1e3))
            .collect()
    }

    /// `exit` events the master had not asked for: crashes.
    pub fn crashes(&self) -> Vec<Event> {
        self.state().events.iter().filter(|e| e.kind == "exit" && e.requested == Some(false)).cloned().collect()
    }

    /// The last `n` log lines, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let st = self.state();
        let start = st.lines.len().saturating_sub(n);
        let mut s = String::from("--- forkring log (tail) ---\n");
        for (_, l) in &st.lines[start..] {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("--- end ---");
        s
    }

    /// Sends `sig` to the master.
    pub fn signal(&self, sig: i32) -> bool {
        !self.reaped && proc::signal(self.pid, sig).is_ok()
    }

    /// Waits at most `timeout` for the master to exit; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.reaped = true;
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Pids forked by this master that still run (workers, also orphaned
    /// ones).
    pub fn live_forked(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .state()
            .events
            .iter()
            .filter(|e| e.kind == "fork")
            .map(|e| e.pid)
            .filter(|&p| proc::alive(p))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Resident memory of the master and its workers, in bytes.
    pub fn rss(&self) -> u64 {
        let mut total = proc::vm_rss_kib(self.pid).unwrap_or(0) * 1024;
        for p in proc::children(self.pid) {
            total += proc::vm_rss_kib(p).unwrap_or(0) * 1024;
        }
        total
    }
}

impl Drop for Forkring {
    fn drop(&mut self) {
        // Workers first (children of the master, or orphans now), then the
        // master; by pid, and only processes this server started.
        let mut pids = self.live_forked();
        if !self.reaped {
            pids.extend(proc::descendants(self.pid));
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
        pids.sort_unstable();
        pids.dedup();
        for p in &pids {
            let _ = proc::signal(*p, libc::SIGKILL);
        }
        for p in pids {
            proc::wait_gone(p, Duration::from_secs(2));
        }
    }
}

/// `slot -> (generation, pid)` of the newest ready worker of each slot that
/// has not exited.
fn ready_table(events: &[Event]) -> BTreeMap<usize, (u64, i32)> {
    let mut table: BTreeMap<usize, (u64, i32)> = BTreeMap::new();
    for e in events {
        match e.kind.as_str() {
            "ready" if table.get(&e.slot).map_or(true, |&(g, _)| e.generation >= g) => {
                table.insert(e.slot, (e.generation, e.pid));
            }
            "exit" if table.get(&e.slot).is_some_and(|&(_, p)| p == e.pid) => {
                table.remove(&e.slot);
            }
            _ => {}
        }
    }
    table
}

/// Settings of one nginx run.
#[derive(Clone, Debug)]
pub struct NginxConfig {
    /// `worker_processes`.
    pub workers: usize,
    /// `worker_connections` (the open-file limit is raised to match).
    pub connections: usize,
    /// `client_header_timeout`, in milliseconds.
    pub header_timeout_ms: u64,
    /// `listen ... reuseport`: a socket per worker, as forkring's default.
    pub reuseport: bool,
    /// Files served under `/files/` from this directory, as the test
    /// fixture's `--static`.
    pub files: Option<PathBuf>,
    /// `GET /ready` answered `200` (nginx has no separate health listener).
    pub ready_route: bool,
    /// `POST /upload` with nginx's body spooling ([`nginx::Conf::spool_uploads`]).
    pub spool_uploads: bool,
}

/// An nginx master process with its temporary prefix directory.
pub struct Nginx {
    child: Child,
    /// The master's pid.
    pub pid: i32,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: PathBuf,
    reaped: bool,
    /// Every worker pid seen (for the cleanup).
    seen: Mutex<Vec<i32>>,
}

impl Nginx {
    /// Starts nginx from a temporary prefix on a free loopback port, pinned
    /// to `cpu` if given, and waits until its workers run and it answers.
    pub fn start(bin: &Path, cfg: &NginxConfig, cpu: Option<usize>) -> Result<Nginx, String> {
        let mut last = String::new();
        // The port is found free, then given to nginx: another program can
        // take it in between, so try a few.
        for _ in 0..3 {
            match Nginx::try_start(bin, cfg, cpu) {
                Ok(n) => return Ok(n),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn try_start(bin: &Path, cfg: &NginxConfig, cpu: Option<usize>) -> Result<Nginx, String> {
        let port = procs::free_port().map_err(|e| e.to_string())?;
        let dir = std::env::temp_dir().join(format!("forkring-stress-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(bin, &dir, port, cfg))
            .map_err(|e| format!("write {}: {e}", conf.display()))?;
        let err_log = dir.join("nginx-error.log");
        let mut cmd = Command::new(bin);
        cmd.arg("-p").arg(format!("{}/", dir.display())).arg("-c").arg(&conf).arg("-e").arg(&err_log);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join("nginx-stderr.log")).map_err(|e| e.to_string())?));
        if let Some(cpu) = cpu {
            // SAFETY: the closure runs between fork and exec and only makes
            // the sched_setaffinity system call.
            unsafe { cmd.pre_exec(move || procs::pin_to(cpu)) };
        }
        let child = cmd.spawn().map_err(|e| format!("start {}: {e}", bin.display()))?;
        let pid = child.id() as i32;
        procs::register(pid);
        let mut n = Nginx {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            reaped: false,
            seen: Mutex::new(Vec::new()),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = n.child.try_wait() {
                n.reaped = true;
                return Err(format!("nginx exited at start ({status}): {}", n.error_log_tail(10)));
            }
            if n.workers().len() >= cfg.workers && get_once(n.addr, Duration::from_secs(1)) == Ok(200) {
                return Ok(n);
            }
            if Instant::now() >= deadline {
                return Err(format!("nginx did not answer within 10 s: {}", n.error_log_tail(10)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The master's live worker processes (registered for the cleanup).
    pub fn workers(&self) -> Vec<i32> {
        let kids = proc::children(self.pid);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for &k in &kids {
            if !seen.contains(&k) {
                seen.push(k);
                procs::register(k);
            }
        }
        kids
    }

    /// Sends `sig` to the master.
    pub fn signal(&self, sig: i32) -> bool {
        !self.reaped && proc::signal(self.pid, sig).is_ok()
    }

    /// Waits at most `timeout` for the master to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.reaped = true;
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Every worker pid seen so far that still runs.
    pub fn live_seen(&self) -> Vec<i32> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().filter(|&p| proc::alive(p)).collect()
    }

    /// Resident memory of the master and its workers, in bytes.
    pub fn rss(&self) -> u64 {
        let mut total = proc::vm_rss_kib(self.pid).unwrap_or(0) * 1024;
        for p in self.workers() {
            total += proc::vm_rss_kib(p).unwrap_or(0) * 1024;
        }
        total
    }

    /// The last lines of nginx's error log.
    pub fn error_log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("nginx-error.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let mut pids = self.live_seen();
        if !self.reaped {
            pids.extend(proc::descendants(self.pid));
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
        pids.sort_unstable();
        pids.dedup();
        for p in &pids {
            let _ = proc::signal(*p, libc::SIGKILL);
        }
        for p in pids {
            proc::wait_gone(p, Duration::from_secs(2));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The configuration: `GET /` answered `Hello, World!`, with the worker
/// count, connection limit, header timeout and listener of the scenario,
/// and every path inside `dir`.
fn nginx_conf(bin: &Path, dir: &Path, port: u16, cfg: &NginxConfig) -> String {
    let mut c = nginx::Conf::new(dir, format!("127.0.0.1:{port}"), cfg.workers);
    c.connections = cfg.connections;
    c.rlimit_nofile = Some(cfg.connections * 2 + 64);
    c.header_timeout = Some(Duration::from_millis(cfg.header_timeout_ms));
    c.reuseport = cfg.reuseport;
    c.files = cfg.files.clone();
    c.ready_route = cfg.ready_route;
    c.spool_uploads = cfg.spool_uploads;
    c.render(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events() {
        let now = Instant::now();
        let e = parse_event("forkring[77] info: ready 1.3 pid=1234", now).unwrap();
        assert_eq!((e.kind.as_str(), e.slot, e.generation, e.pid), ("ready", 1, 3, 1234));
        let e = parse_event("forkring[77] info: exit 0.2 pid=99 signal=9 requested=false", now).unwrap();
        assert_eq!((e.kind.as_str(), e.requested, e.how.as_str()), ("exit", Some(false), "signal=9"));
        assert!(parse_event("forkring[77] info: listening on 127.0.0.1:4000", now).is_none());
        assert!(parse_event("forkring[78] info: backend: epoll (configured)", now).is_none());
    }

    #[test]
    fn the_nginx_listener_is_reuseport_when_asked() {
        let cfg = NginxConfig {
            workers: 4,
            connections: 4096,
            header_timeout_ms: 10_000,
            reuseport: true,
            files: None,
            ready_route: false,
            spool_uploads: false,
        };
        let bin = Path::new("/nonexistent/nginx");
        let text = nginx_conf(bin, Path::new("/tmp/run"), 8080, &cfg);
        assert!(text.contains("worker_processes 4;"), "{text}");
        assert!(text.contains("listen 127.0.0.1:8080 backlog=4096 reuseport;"), "{text}");
        let text = nginx_conf(bin, Path::new("/tmp/run"), 8080, &NginxConfig { reuseport: false, ..cfg });
        assert!(text.contains("listen 127.0.0.1:8080 backlog=4096;"), "{text}");
    }

    #[test]
    fn ready_table_follows_respawns() {
        let now = Instant::now();
        let ev: Vec<Event> = [
            "x info: ready 0.0 pid=10",
            "x info: ready 1.0 pid=11",
            "x info: exit 0.0 pid=10 signal=9 requested=false",
            "x info: ready 0.1 pid=12",
            "x info: exit 1.0 pid=11 code=0 requested=true",
        ]
        .iter()
        .map(|l| parse_event(l, now).unwrap())
        .collect();
        let t = ready_table(&ev);
        assert_eq!(t.get(&0), Some(&(1, 12)));
        assert_eq!(t.get(&1), None);
    }
}
