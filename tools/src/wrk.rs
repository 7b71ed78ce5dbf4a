//! Running `wrk` and reading its report: used where a latency distribution
//! from a well-known, event-driven client is worth more than the harness's
//! own counting (the slowloris scenario's "normal client").

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
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
}

/// Runs `wrk -t1 -c<conns> -d<secs>s --latency http://addr/`, pinned to
/// `cpu` if given. wrk stops by itself after the duration; the harness also
/// registers it for the final cleanup.
pub fn run(wrk: &Path, addr: SocketAddr, conns: usize, dur: Duration, cpu: Option<usize>) -> Result<WrkResult, String> {
    let mut cmd = Command::new(wrk);
    cmd.args(["-t1", &format!("-c{conns}"), &format!("-d{}s", dur.as_secs().max(1)), "--latency"])
        .arg(format!("http://{addr}/"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cpu) = cpu {
        // SAFETY: the closure runs between fork and exec and only makes the
        // sched_setaffinity system call.
        unsafe { cmd.pre_exec(move || procs::pin_to(cpu)) };
    }
    let child = cmd.spawn().map_err(|e| format!("start {}: {e}", wrk.display()))?;
    procs::register(child.id() as i32);
    let out = child.wait_with_output().map_err(|e| format!("wait for wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("wrk failed ({}): {}{}", out.status, text, String::from_utf8_lossy(&out.stderr)));
    }
    parse(&text).ok_or_else(|| format!("could not read wrk's output:\n{text}"))
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
                    if let [_, n] = w {
                        r.errors += n.trim_end_matches(',').parse::<u64>().unwrap_or(0);
                    }
                }
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>().unwrap_or(0),
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
        assert!((r.rps - 84887.89).abs() < 0.01);
        assert_eq!(duration_us("1.50ms"), Some(1500.0));
    }
}
