//! A `forkring` server process on a loopback port, as the integration
//! tests start it: its address and backend read from its log, the log kept
//! for failure messages, the process (and every worker it forked) killed by
//! pid and reaped on drop.
//!
//! The server runs whichever backend `FORKRING_BACKEND` selects (the
//! variable is inherited; `make test` runs the backend tests once per
//! backend), and [`Server::spawn`] checks from the server's log that the
//! backend asked for is the one that runs. Every wait here is bounded: a
//! test fails, it never hangs.
//!
//! The server is the workspace's test fixture, `forkring-fixture`
//! (found beside the test by [`crate::target::binary`]): the product's
//! routes and flags and those the tests need. Where it stops: what the
//! server must answer is each test's.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::proc;

/// How long a server may take to say it is listening.
pub const STARTUP: Duration = Duration::from_secs(10);

/// The demo server's `GET /` body.
pub const HELLO: &[u8] = b"Hello, World!";

/// The binary the tests start as the server under test.
pub const FIXTURE: &str = "forkring-fixture";

/// A running `forkring` server process, killed and reaped on drop.
pub struct Server {
    /// The server process.
    child: Child,
    /// The address the server reported in its `listening on` log line.
    pub addr: SocketAddr,
    /// Every line the server has written to stderr.
    log: Arc<Mutex<Vec<String>>>,
    /// Its exit status, once seen.
    exited: Option<ExitStatus>,
    /// Set when its stderr has ended (every process holding it is gone),
    /// so every line it wrote is in `log`.
    log_ended: Arc<AtomicBool>,
}

/// The log line the driver prints for the backend `FORKRING_BACKEND` asks
/// for; `None` when any backend will do (`auto` or unset).
pub fn expected_backend_line() -> Option<&'static str> {
    backend_line(std::env::var("FORKRING_BACKEND").ok().as_deref())
}

/// The log line for a `FORKRING_BACKEND` value (see
/// [`expected_backend_line`]).
fn backend_line(value: Option<&str>) -> Option<&'static str> {
    match value {
        Some("uring" | "io_uring" | "io-uring") => Some("backend: io_uring"),
        Some("epoll") => Some("backend: epoll"),
        _ => None,
    }
}

impl Server {
    /// Starts the fixture on `127.0.0.1:0` with extra `args`.
    pub fn start(args: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", args)
    }

    /// Starts the fixture on `listen` with extra `args`; panics with the
    /// server's log if it does not come up.
    pub fn start_on(listen: &str, args: &[&str]) -> Self {
        Self::try_start_on(listen, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the fixture (`--listen`, and `--workers 1` unless `args` say
    /// otherwise) and waits (at most [`STARTUP`]) until it logs its address
    /// and its backend.
    pub fn try_start_on(listen: &str, args: &[&str]) -> Result<Self, String> {
        let mut cmd = Command::new(crate::target::binary(FIXTURE));
        cmd.arg("--listen").arg(listen).args(args);
        // One worker unless the test asks for more: per-worker limits and
        // timings are then the server's.
        if !args.contains(&"--workers") {
            cmd.args(["--workers", "1"]);
        }
        Self::spawn(cmd)
    }

    /// Runs `cmd` (which must end up running a forkring server) and waits
    /// like [`Server::try_start_on`].
    pub fn spawn(mut cmd: Command) -> Result<Self, String> {
        // A backend set on the command itself overrides the test's own.
        let expected = match cmd.get_envs().find(|(k, _)| *k == "FORKRING_BACKEND") {
            Some((_, v)) => backend_line(v.and_then(|v| v.to_str())),
            None => expected_backend_line(),
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("spawn forkring: {e}"))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let log_ended = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let log = Arc::clone(&log);
            let log_ended = Arc::clone(&log_ended);
            // Drains stderr for the life of the process, so the pipe never
            // fills and blocks the server.
            thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => {
                            log_ended.store(true, Ordering::SeqCst);
                            break;
                        }
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                            log.lock().unwrap().push(text.clone());
                            let _ = tx.send(text);
                        }
                    }
                }
            });
        }
        let mut server = Server { child, addr: SocketAddr::from(([0, 0, 0, 0], 0)), log, exited: None, log_ended };
        let deadline = Instant::now() + STARTUP;
        let mut addr = None;
        let mut backend = None;
        while addr.is_none() || backend.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    // The first TCP address, where there are several; a Unix
                    // socket's (`unix:PATH`) is the test's to know.
                    if let Some(rest) = line.split("listening on ").nth(1).filter(|r| !r.trim().starts_with("unix:")) {
                        let a: SocketAddr = rest
                            .trim()
                            .parse()
                            .map_err(|e| format!("unparsable address in {line:?}: {e}\n{}", server.log_text()))?;
                        addr.get_or_insert(a);
                    }
                    if let Some(i) = line.find("backend: ") {
                        backend = Some(line[i..].to_owned());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "forkring did not report its address and backend within {STARTUP:?}\n{}",
                        server.log_text()
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stderr closed: the process is exiting.
                    let status = server.wait_exit(Duration::from_secs(5));
                    return Err(format!("forkring exited during startup ({status:?})\n{}", server.log_text()));
                }
            }
        }
        let backend = backend.unwrap();
        if let Some(want) = expected {
            if !backend.starts_with(want) {
                return Err(format!(
                    "FORKRING_BACKEND asks for {want:?} but the server runs {backend:?}\n{}",
                    server.log_text()
                ));
            }
        }
        server.addr = addr.unwrap();
        Ok(server)
    }

    /// The server's process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything the server has logged so far.
    pub fn log_text(&self) -> String {
        let lines = self.log.lock().unwrap();
        let mut s = String::from("--- forkring log ---\n");
        for l in lines.iter() {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("--- end of log ---");
        s
    }

    /// Waits until the log has a line containing every one of `parts`, and
    /// returns it; panics with the log after `timeout`.
    pub fn wait_line(&self, parts: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log_text();
            if let Some(l) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return l.to_owned();
            }
            assert!(Instant::now() < deadline, "no log line with {parts:?} within {timeout:?}\n{log}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// A new client connection.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exited = Some(status);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Waits at most `timeout` for the process to exit; its status if it
    /// did. Once it has, waits (within the same `timeout`) for the end of
    /// its stderr, so that the log holds every line it and its workers
    /// wrote: a line written just before the exit may still be on its way
    /// through the pipe to the reader.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                while !self.log_ended.load(Ordering::SeqCst) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(1));
                }
                return self.exited;
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the server process.
    pub fn signal(&self, sig: libc::c_int) {
        // The pid is that of a child this harness spawned and has not reaped
        // yet, so it cannot have been reused.
        proc::signal(self.pid(), sig).unwrap_or_else(|e| panic!("kill({}, {sig}): {e}", self.pid()));
    }

    /// Resident memory of the server and every process it forked, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid();
        std::iter::once(pid).chain(proc::descendants(pid)).map(|p| proc::vm_rss_kib(p).unwrap_or(0)).sum()
    }

    /// Asserts that the process still runs, has not logged a panic, and
    /// answers `GET /` on a fresh connection.
    pub fn assert_healthy(&mut self) {
        assert!(self.is_running(), "server exited ({:?})\n{}", self.exited, self.log_text());
        let log = self.log_text();
        assert!(!log.contains("panicked"), "server logged a panic\n{log}");
        let mut c = self.connect();
        let r = c.get("/");
        assert_eq!(r.status, 200, "GET / on a fresh connection");
        assert_eq!(r.body, HELLO);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            // Workers first learned by pid, then the server itself: SIGKILL
            // cannot be caught, so the reap below is bounded.
            let kids = proc::descendants(self.pid());
            let _ = self.child.kill();
            for k in kids {
                // A pid just read as a descendant of the server.
                let _ = proc::signal(k, libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("server {} ({}):\n{}", self.child.id(), self.addr, self.log_text());
        }
    }
}
