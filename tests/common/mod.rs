//! Shared harness for the integration tests: a real `forkring` demo server
//! process on a loopback port, and a raw-socket HTTP/1.1 client.
//!
//! The server runs whichever backend `FORKRING_BACKEND` selects (the
//! variable is inherited; `make test` runs the suite once per backend), and
//! the harness checks from the server's log that the backend asked for is
//! the one that runs. Every wait here is bounded: a test fails, it never
//! hangs. The server process (and any worker it forked) is killed by pid and
//! reaped when the [`Server`] is dropped.
//!
//! Responses are read, and closes awaited, by `forkring_testkit::http`; the
//! processes are inspected through `forkring_testkit::proc`. What is here is
//! only what the integration tests alone need: the demo server process and
//! a client that panics with a readable message instead of returning errors.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use forkring_testkit::http::{self as kit_http, Framing};
use forkring_testkit::proc;
use forkring_testkit::rng::Rng;

pub use forkring_testkit::http::{show, CloseOutcome, Response};

/// How long a server may take to say it is listening.
pub const STARTUP: Duration = Duration::from_secs(10);
/// Default bound on any single client-side wait (one response, one close).
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The demo server's `GET /` body.
pub const HELLO: &[u8] = b"Hello, World!";

/// A running `forkring` process, killed and reaped on drop.
pub struct Server {
    /// The server process.
    child: Child,
    /// The address the server reported in its `listening on` log line.
    pub addr: SocketAddr,
    /// Every line the server has written to stderr.
    log: Arc<Mutex<Vec<String>>>,
    /// Its exit status, once seen.
    exited: Option<ExitStatus>,
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
    /// Starts the demo server on `127.0.0.1:0` with extra `args`.
    pub fn start(args: &[&str]) -> Server {
        Server::start_on("127.0.0.1:0", args)
    }

    /// Starts the demo server on `listen` with extra `args`; panics with the
    /// server's log if it does not come up.
    pub fn start_on(listen: &str, args: &[&str]) -> Server {
        Server::try_start_on(listen, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the demo server and waits (at most [`STARTUP`]) until it logs
    /// its address and its backend.
    pub fn try_start_on(listen: &str, args: &[&str]) -> Result<Server, String> {
        let mut cmd = Command::new(forkring_testkit::target::binary("forkring-fixture"));
        cmd.arg("--listen").arg(listen).args(args);
        // One worker unless the test asks for more: per-worker limits and
        // timings are then the server's.
        if !args.contains(&"--workers") {
            cmd.args(["--workers", "1"]);
        }
        Server::spawn(cmd)
    }

    /// Runs `cmd` (which must end up running the demo server) and waits
    /// like [`Server::try_start_on`].
    pub fn spawn(mut cmd: Command) -> Result<Server, String> {
        // A backend set on the command itself overrides the test's own.
        let expected = match cmd.get_envs().find(|(k, _)| *k == "FORKRING_BACKEND") {
            Some((_, v)) => backend_line(v.and_then(|v| v.to_str())),
            None => expected_backend_line(),
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("spawn forkring: {e}"))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let log = Arc::clone(&log);
            // Drains stderr for the life of the process, so the pipe never
            // fills and blocks the server.
            thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                            log.lock().unwrap().push(text.clone());
                            let _ = tx.send(text);
                        }
                    }
                }
            });
        }
        let mut server = Server { child, addr: SocketAddr::from(([0, 0, 0, 0], 0)), log, exited: None };
        let deadline = Instant::now() + STARTUP;
        let mut addr = None;
        let mut backend = None;
        while addr.is_none() || backend.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let a: SocketAddr = rest
                            .trim()
                            .parse()
                            .map_err(|e| format!("unparsable address in {line:?}: {e}\n{}", server.log_text()))?;
                        addr = Some(a);
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
    /// did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
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

/// A raw-socket HTTP/1.1 client on one connection.
pub struct Client {
    /// The connection (tests may write to it or clone it directly).
    pub stream: TcpStream,
    /// Bytes received and not yet consumed by a parsed response.
    buf: Vec<u8>,
}

impl Client {
    /// Connects (bounded by [`IO_TIMEOUT`]) with `TCP_NODELAY` and read and
    /// write timeouts set.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Client::from_stream(stream)
    }

    /// Wraps a connected stream, setting `TCP_NODELAY` and timeouts.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Client { stream, buf: Vec::new() }
    }

    /// Sends all of `bytes`; panics on error.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("send {} bytes: {e}", bytes.len()));
    }

    /// Sends all of `bytes`.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends `bytes` one at a time, pausing `pause` between them.
    pub fn send_bytewise(&mut self, bytes: &[u8], pause: Duration) {
        for b in bytes {
            self.send(std::slice::from_ref(b));
            thread::sleep(pause);
        }
    }

    /// Reads one response (`head_request` when it answers a HEAD: no body)
    /// within [`IO_TIMEOUT`]. Errors: `UnexpectedEof` if the connection ends
    /// first, `TimedOut` after the timeout, `InvalidData` if the bytes are
    /// not HTTP or the body is not framed by exactly one `Content-Length`
    /// (the server never chunks a response nor ends one by closing).
    pub fn try_response(&mut self, head_request: bool) -> io::Result<Response> {
        self.try_response_within(head_request, IO_TIMEOUT)
    }

    /// [`Client::try_response`] within `timeout` instead of [`IO_TIMEOUT`].
    pub fn try_response_within(&mut self, head_request: bool, timeout: Duration) -> io::Result<Response> {
        self.stream.set_read_timeout(Some(timeout))?;
        let res = kit_http::read_response(&mut self.stream, &mut self.buf, head_request, timeout)?;
        match res.framing {
            Framing::None | Framing::Length(_) => Ok(res),
            Framing::Chunked => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the server sent a chunked response; this client expects Content-Length",
            )),
            Framing::ToClose => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("response has no Content-Length field (body {})", show(&res.body)),
            )),
        }
    }

    /// Reads one response framed any way HTTP/1.1 allows (`Content-Length`,
    /// chunked, or to the close: a streamed body) within `timeout`; panics
    /// on any error.
    pub fn response_any(&mut self, head_request: bool, timeout: Duration) -> Response {
        self.stream.set_read_timeout(Some(timeout.min(IO_TIMEOUT))).unwrap();
        kit_http::read_response(&mut self.stream, &mut self.buf, head_request, timeout)
            .unwrap_or_else(|e| panic!("reading a response: {e}"))
    }

    /// Reads one response to a non-HEAD request; panics on any error.
    pub fn response(&mut self) -> Response {
        self.try_response(false).unwrap_or_else(|e| panic!("reading a response: {e}"))
    }

    /// Reads one response to a HEAD request; panics on any error.
    pub fn head_response(&mut self) -> Response {
        self.try_response(true).unwrap_or_else(|e| panic!("reading a HEAD response: {e}"))
    }

    /// Sends `GET path` and reads the response.
    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.response()
    }

    /// Sends `POST path` with a `Content-Length` body and reads the
    /// response.
    pub fn post(&mut self, path: &str, content_type: &str, body: &[u8]) -> Response {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.send(&req);
        self.response()
    }

    /// Waits at most `timeout` for the server to close the connection
    /// (end of stream or reset), collecting any bytes that arrive first.
    pub fn wait_close(&mut self, timeout: Duration) -> CloseOutcome {
        let pending = std::mem::take(&mut self.buf);
        kit_http::wait_close(&mut self.stream, pending, timeout).unwrap_or_else(|e| panic!("waiting for close: {e}"))
    }

    /// Asserts that the server closes the connection within [`IO_TIMEOUT`]
    /// without sending anything more.
    pub fn expect_close(&mut self) {
        match self.wait_close(IO_TIMEOUT) {
            CloseOutcome::Closed { extra } if extra.is_empty() => {}
            CloseOutcome::Closed { extra } => {
                panic!("bytes after the last response: {:?}", String::from_utf8_lossy(&extra))
            }
            CloseOutcome::Open { extra } => {
                panic!("connection still open after {IO_TIMEOUT:?} (received {:?})", String::from_utf8_lossy(&extra))
            }
        }
    }

    /// Closes abruptly: `SO_LINGER` 0, then close, so the kernel sends a
    /// reset instead of a FIN.
    pub fn reset(self) {
        set_linger_zero(&self.stream);
        drop(self.stream);
    }

    /// Shrinks this socket's receive buffer (the kernel may round it).
    pub fn set_recv_buffer(&self, bytes: i32) {
        set_int_opt(&self.stream, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes);
    }
}

/// Sets `SO_LINGER` to {on, 0 s}: the next close sends a reset.
pub fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket this test owns, with a pointer to a
    // local `linger` and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

fn set_int_opt(stream: &TcpStream, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: setsockopt on a socket this test owns, with a pointer to a
    // local int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt({level}, {name}): {}", io::Error::last_os_error());
}

/// Deterministic pseudo-random bytes (xorshift), so a failing body can be
/// reproduced.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    Rng::new(seed).bytes(len)
}

/// Index of the first byte where `a` and `b` differ, for readable failures
/// on large bodies.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y).or(if a.len() == b.len() { None } else { Some(a.len().min(b.len())) })
}

/// This test binary run again as the master of a cluster embedded in the
/// test (the role is the environment variable `role`; only test `test`
/// runs): what it prints on stdout arrives line by line on `lines`. It is
/// stopped by its pid when dropped.
pub struct SelfMaster {
    /// The master process.
    pub child: Child,
    /// Its stdout, a line at a time.
    pub lines: mpsc::Receiver<String>,
}

impl SelfMaster {
    /// Starts `test` of this binary again with `role` set.
    pub fn spawn(role: &str, test: &str) -> SelfMaster {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture"])
            .env(role, "master")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the master");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel::<String>();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        SelfMaster { child, lines }
    }

    /// The master's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Asks the master to stop (SIGTERM) and waits up to 10 s for it,
    /// killing it after that; returns whether it stopped by itself.
    pub fn stop(&mut self) -> bool {
        let _ = proc::signal(self.pid(), libc::SIGTERM);
        let stopped = proc::wait_gone(self.pid(), Duration::from_secs(10));
        if !stopped {
            let _ = proc::signal(self.pid(), libc::SIGKILL);
        }
        let _ = self.child.wait();
        stopped
    }
}

impl Drop for SelfMaster {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = proc::signal(self.pid(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}
