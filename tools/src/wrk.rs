//! Running `wrk` and reading its report: wherever a latency distribution
//! from a well-known, event-driven client is worth more than the harness's
//! own counting (the slowloris and idle scenarios' keep-alive load, the
//! binary upgrade under load, scaling under connection-per-request load,
//! the fleet's load at the balancer).
//!
//! Where it stops: one wrk process, started with the options of [`Wrk`],
//! waited for, its report read. Which runs a scenario makes, and what it
//! concludes, is the scenario's.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::procs;

/// What one wrk run measured.
#[derive(Clone, Debug, Default)]
pub struct WrkResult {
    /// Requests completed.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Latency percentiles in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
    /// Socket errors (connect, read, write, timeout) plus non-2xx answers.
    pub errors: u64,
    /// The same errors by kind.
    pub kinds: ErrorKinds,
}

/// wrk's failed requests by kind: its `Socket errors:` line and its
/// `Non-2xx or 3xx responses:` line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorKinds {
    /// `connect()` failed.
    pub connect: u64,
    /// A read failed (`ECONNRESET`, say) or met the end of the stream
    /// before the whole response.
    pub read: u64,
    /// A write failed (`ECONNRESET`, `EPIPE`).
    pub write: u64,
    /// No response within wrk's timeout.
    pub timeout: u64,
    /// Answered with a status other than 2xx or 3xx.
    pub status: u64,
}

impl ErrorKinds {
    /// Requests whose connection the server reset or closed unanswered:
    /// the failed reads and writes. Over loopback nothing else drops a
    /// connection once it is established.
    pub fn resets(&self) -> u64 {
        self.read + self.write
    }

    /// `connect 0, read 2, write 0, timeout 0, non-2xx 0`.
    pub fn text(&self) -> String {
        format!(
            "connect {}, read {}, write {}, timeout {}, non-2xx {}",
            self.connect, self.read, self.write, self.timeout, self.status
        )
    }
}

/// One wrk run to make: `wrk -t1 -c<conns> -d<secs>s [--timeout <t>s]
/// --latency [-H 'Connection: close'] [-s <script>] http://<addr><path>`.
#[derive(Clone, Debug)]
pub struct Wrk {
    /// The wrk binary.
    pub bin: PathBuf,
    /// Where to send the requests.
    pub addr: SocketAddr,
    /// The request target, `/` unless set.
    pub path: String,
    /// A Lua script that shapes the request (wrk's `-s`: a method, a
    /// body, fields), when not a plain `GET`.
    pub script: Option<PathBuf>,
    /// Connections.
    pub conns: usize,
    /// How long it runs (whole seconds, at least one).
    pub duration: Duration,
    /// wrk's own request timeout (`--timeout`), when not its default.
    pub timeout: Option<Duration>,
    /// A new connection per request (`Connection: close`).
    pub close: bool,
    /// The CPU to pin it to.
    pub cpu: Option<usize>,
}

impl Wrk {
    /// Keep-alive `GET /` on `conns` connections for `duration`, wrk's
    /// default timeout, no script, not pinned.
    pub fn new(bin: &Path, addr: SocketAddr, conns: usize, duration: Duration) -> Wrk {
        Wrk {
            bin: bin.to_path_buf(),
            addr,
            path: "/".to_owned(),
            script: None,
            conns,
            duration,
            timeout: None,
            close: false,
            cpu: None,
        }
    }

    /// Starts it. wrk stops by itself after its duration; the harness
    /// also registers it for the final cleanup.
    pub fn spawn(&self) -> Result<Running, String> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-t1", &format!("-c{}", self.conns), &format!("-d{}s", self.duration.as_secs().max(1))]);
        if let Some(t) = self.timeout {
            cmd.args(["--timeout", &format!("{}s", t.as_secs())]);
        }
        cmd.arg("--latency");
        if self.close {
            cmd.args(["-H", "Connection: close"]);
        }
        if let Some(script) = &self.script {
            cmd.arg("-s").arg(script);
        }
        cmd.arg(format!("http://{}{}", self.addr, self.path))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(cpu) = self.cpu {
            // SAFETY: the closure runs between fork and exec and only makes
            // the sched_setaffinity system call.
            unsafe { cmd.pre_exec(move || procs::pin_to(cpu)) };
        }
        let child = cmd.spawn().map_err(|e| format!("start {}: {e}", self.bin.display()))?;
        procs::register(child.id() as i32);
        Ok(Running { child, duration: self.duration })
    }

    /// Runs it to the end; its report.
    pub fn run(&self) -> Result<WrkResult, String> {
        self.spawn()?.wait()
    }
}

/// A wrk process running.
pub struct Running {
    child: Child,
    duration: Duration,
}

impl Running {
    /// Waits for the report.
    pub fn wait(self) -> Result<WrkResult, String> {
        report(self.child.wait_with_output())
    }

    /// Waits for the report at most `margin` past wrk's duration; past
    /// that, wrk is killed and its report is lost.
    pub fn wait_at_most(self, margin: Duration) -> Result<WrkResult, String> {
        let pid = self.child.id() as i32;
        let child = self.child;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        // The waiting thread has not reaped wrk before it exits, so the
        // pid is still wrk's.
        let out = match rx.recv_timeout(self.duration + margin) {
            Ok(out) => out,
            Err(_) => {
                let _ = forkring_testkit::proc::signal(pid, libc::SIGKILL);
                rx.recv().map_err(|e| e.to_string())?
            }
        };
        report(out)
    }
}

/// The report in wrk's output, or why there is none.
fn report(out: std::io::Result<std::process::Output>) -> Result<WrkResult, String> {
    let out = out.map_err(|e| format!("wait for wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("wrk failed ({}): {}{}", out.status, text, String::from_utf8_lossy(&out.stderr)));
    }
    parse(&text).ok_or_else(|| format!("could not read wrk's output:\n{text}{}", String::from_utf8_lossy(&out.stderr)))
}

/// Reads wrk's `--latency` report.
pub fn parse(text: &str) -> Option<WrkResult> {
    let mut r = WrkResult::default();
    let mut have = (false, false, false);
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [n, "requests", "in", ..] => {
                r.requests = n.parse().ok()?;
                have.0 = true;
            }
            ["Requests/sec:", v] => {
                r.rps = v.parse().ok()?;
                have.1 = true;
            }
            ["50%", v] => r.p50_us = duration_us(v)?,
            ["99%", v] => {
                r.p99_us = duration_us(v)?;
                have.2 = true;
            }
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                for w in rest.chunks(2) {
                    if let [kind, n] = w {
                        let n = n.trim_end_matches(',').parse::<u64>().unwrap_or(0);
                        match *kind {
                            "connect" => r.kinds.connect += n,
                            "read" => r.kinds.read += n,
                            "write" => r.kinds.write += n,
                            "timeout" => r.kinds.timeout += n,
                            _ => {}
                        }
                        r.errors += n;
                    }
                }
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                let n = n.parse::<u64>().unwrap_or(0);
                r.kinds.status += n;
                r.errors += n;
            }
            _ => {}
        }
    }
    (have.0 && have.1 && have.2).then_some(r)
}

/// wrk's durations (`930.00us`, `1.23ms`, `1.02s`, `2.00m`) in microseconds.
fn duration_us(v: &str) -> Option<f64> {
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let n: f64 = v[..split].parse().ok()?;
    let f = match &v[split..] {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 6e7,
        "h" => 3.6e9,
        _ => return None,
    };
    Some(n * f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_report() {
        let text = "Running 2s test @ http://127.0.0.1:4000/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    88.74us   40.08us   2.31ms   93.50%
    Req/Sec    85.38k     3.44k   89.91k    80.00%
  Latency Distribution
     50%   80.00us
     75%   92.00us
     90%  109.00us
     99%  219.00us
  169896 requests in 2.00s, 20.09MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  84887.89
Transfer/sec:     10.04MB
";
        let r = parse(text).unwrap();
        assert_eq!(r.requests, 169_896);
        assert_eq!(r.p99_us, 219.0);
        assert_eq!(r.p50_us, 80.0);
        assert_eq!(r.errors, 7);
        assert_eq!(r.kinds, ErrorKinds { connect: 0, read: 2, write: 0, timeout: 1, status: 4 });
        assert_eq!(r.kinds.resets(), 2);
        assert!((r.rps - 84887.89).abs() < 0.01);
        assert_eq!(duration_us("1.50ms"), Some(1500.0));
    }

    #[test]
    fn reads_each_kind_of_error_and_a_report_without_any() {
        let head = "Running 22s test @ http://127.0.0.1:4000/
  1 threads and 32 connections
  Latency Distribution
     50%    1.10ms
     99%    9.87ms
  201350 requests in 22.00s, 25.73MB read
";
        let tail = "Requests/sec:   9152.18\nTransfer/sec:      1.17MB\n";
        let clean = parse(&format!("{head}{tail}")).unwrap();
        assert_eq!((clean.requests, clean.errors, clean.kinds), (201_350, 0, ErrorKinds::default()));
        let text = format!("{head}  Socket errors: connect 5, read 17, write 3, timeout 2\n{tail}");
        let r = parse(&text).unwrap();
        assert_eq!(r.kinds, ErrorKinds { connect: 5, read: 17, write: 3, timeout: 2, status: 0 });
        assert_eq!((r.errors, r.kinds.resets()), (27, 20));
        assert_eq!(r.kinds.text(), "connect 5, read 17, write 3, timeout 2, non-2xx 0");
    }
}
