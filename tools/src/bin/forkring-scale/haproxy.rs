//! HAProxy in front of the fleet, in the root namespace on the bridge's
//! address, and its stats socket: server state (UP, DOWN, MAINT), retries,
//! and runtime `enable`/`disable server` for scale out and in.
//!
//! The configuration is `docs/deploy.md`'s; each setting is explained there.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use forkring_testkit::proc;

use forkring_stress::procs;

use crate::host::{Kind, PORT};
use crate::net;

/// The port HAProxy listens on, on the bridge's address.
pub const FRONT_PORT: u16 = 8000;
/// Health check interval, in milliseconds.
pub const INTER_MS: u64 = 200;
/// Failed checks before a server is marked DOWN.
pub const FALL: u64 = 2;
/// Passed checks before a server is marked UP again.
pub const RISE: u64 = 2;
/// `timeout check`: a check that gets no answer in this long failed.
pub const CHECK_TIMEOUT_MS: u64 = 500;
/// Servers in the configuration: the three hosts and the one scale out
/// adds (declared `disabled`, enabled at run time).
pub const SERVERS: u8 = 4;

/// A running HAProxy.
pub struct Haproxy {
    child: Child,
    /// The stats socket (admin level).
    sock: PathBuf,
    /// Where clients connect.
    pub front: SocketAddr,
}

/// Finds haproxy on PATH or in /usr/sbin.
pub fn find() -> Option<PathBuf> {
    procs::find_on_path("haproxy").or_else(|| {
        let p = PathBuf::from("/usr/sbin/haproxy");
        p.exists().then_some(p)
    })
}

/// `haproxy -v`'s first line.
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_owned())
        .unwrap_or_default()
}

/// The configuration for hosts of `kind`, the stats socket at `sock`.
pub fn config(kind: Kind, sock: &Path) -> String {
    let mut servers = String::new();
    for n in 1..=SERVERS {
        let disabled = if n > 3 { " disabled" } else { "" };
        servers.push_str(&format!(
            "    server h{n} {}:{PORT} check port {}{disabled}\n",
            net::addr(10 + n),
            kind.check_port()
        ));
    }
    format!(
        "global
    stats socket {sock} mode 600 level admin
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 10s
    timeout check {CHECK_TIMEOUT_MS}ms
    option http-keep-alive
    retries 2
    retry-on conn-failure empty-response
    option redispatch 1

frontend front
    bind {front}:{FRONT_PORT}
    default_backend fleet

backend fleet
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server inter {INTER_MS}ms fastinter {INTER_MS}ms downinter {INTER_MS}ms fall {FALL} rise {RISE}
{servers}",
        sock = sock.display(),
        front = net::addr(net::GATEWAY),
    )
}

impl Haproxy {
    /// Starts HAProxy in the foreground with the configuration for `kind`
    /// and waits until its stats socket answers and h1..h3 are UP.
    pub fn start(bin: &Path, kind: Kind, dir: &Path) -> Result<Haproxy, String> {
        let sock = dir.join(format!("haproxy-{}.sock", kind.name()));
        let cfg = dir.join(format!("haproxy-{}.cfg", kind.name()));
        std::fs::write(&cfg, config(kind, &sock)).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join(format!("haproxy-{}.log", kind.name()))).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin.display()))?;
        let pid = child.id() as i32;
        procs::register(pid);
        let h = Haproxy { child, sock, front: SocketAddr::from((net::addr(net::GATEWAY), FRONT_PORT)) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !proc::alive(pid) {
                let log = std::fs::read_to_string(dir.join(format!("haproxy-{}.log", kind.name()))).unwrap_or_default();
                return Err(format!("haproxy exited at start: {}", log.trim()));
            }
            if let Ok(st) = h.states() {
                if (1..=3).all(|n| st.get(&format!("h{n}")).is_some_and(|s| s.status == "UP")) {
                    return Ok(h);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("haproxy: h1..h3 not UP within 10 s: {:?}", h.states()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One command on the stats socket; its answer.
    pub fn cmd(&self, c: &str) -> Result<String, String> {
        let mut s = UnixStream::connect(&self.sock).map_err(|e| format!("stats socket: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
        s.write_all(format!("{c}\n").as_bytes()).map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// The fleet's servers, by name, from `show stat`.
    pub fn states(&self) -> Result<HashMap<String, ServerStat>, String> {
        let text = self.cmd("show stat")?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().ok_or("empty show stat")?.trim_start_matches("# ").split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (px, sv, st, stot, wretr, wredis) = (
            col("pxname").ok_or("no pxname")?,
            col("svname").ok_or("no svname")?,
            col("status").ok_or("no status")?,
            col("stot").ok_or("no stot")?,
            col("wretr").ok_or("no wretr")?,
            col("wredis").ok_or("no wredis")?,
        );
        let num = |f: &[&str], i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let mut map = HashMap::new();
        for l in lines {
            let f: Vec<&str> = l.split(',').collect();
            if f.get(px) != Some(&"fleet") {
                continue;
            }
            let status = f.get(st).copied().unwrap_or("");
            map.insert(
                f[sv].to_owned(),
                ServerStat {
                    // "UP 1/2" and "DOWN 1/2" are transitions: the state is
                    // the first word.
                    status: status.split_whitespace().next().unwrap_or("").to_owned(),
                    sessions: num(&f, stot),
                    retries: num(&f, wretr),
                    redispatches: num(&f, wredis),
                },
            );
        }
        Ok(map)
    }

    /// Server `name`'s state word (`UP`, `DOWN`, `MAINT`, `NOLB`), or "".
    pub fn status(&self, name: &str) -> String {
        self.states().ok().and_then(|m| m.get(name).map(|s| s.status.clone())).unwrap_or_default()
    }

    /// Polls until server `name` is in `state` or `timeout` passes; how long
    /// that took.
    pub fn wait_status(&self, name: &str, state: &str, timeout: Duration) -> Option<Duration> {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if self.status(name) == state {
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Retries and redispatches over the backend's servers.
    pub fn retries(&self) -> (u64, u64) {
        self.states()
            .map(|m| m.values().fold((0, 0), |(r, d), s| (r + s.retries, d + s.redispatches)))
            .unwrap_or((0, 0))
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One server's line of `show stat`.
#[derive(Clone, Debug, Default)]
pub struct ServerStat {
    /// `UP`, `DOWN`, `MAINT`, `NOLB`, ...
    pub status: String,
    /// Sessions (requests, in HTTP mode with keep-alive) it was given.
    pub sessions: u64,
    /// Retries (`wretr`).
    pub retries: u64,
    /// Redispatches to another server (`wredis`).
    pub redispatches: u64,
}
