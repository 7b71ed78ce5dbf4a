//! One host of the fleet: a server (a forkring cluster or nginx, the
//! anchor) started with `ip netns exec` in the host's namespace, listening
//! on the host's address.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use forkring_stress::{nginx, probe, procs};
use forkring_testkit::proc;

use crate::net;

/// The port every host serves on.
pub const PORT: u16 = 8080;
/// The port of forkring's metrics listener (`/ready`, `/live`).
pub const METRICS_PORT: u16 = 9100;
/// forkring's drain delay: longer than the balancer needs to see `/ready`
/// fail (`fall` checks `inter` apart, see `haproxy.rs`), with room to spare.
pub const DRAIN_DELAY_MS: u64 = 1000;

/// Which server the hosts run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Forkring,
    Nginx,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Forkring => "forkring",
            Kind::Nginx => "nginx",
        }
    }

    /// The port the balancer checks: forkring's metrics listener, nginx's
    /// own port (a `location = /ready`).
    pub fn check_port(self) -> u16 {
        match self {
            Kind::Forkring => METRICS_PORT,
            Kind::Nginx => PORT,
        }
    }
}

/// The binaries the hosts run.
#[derive(Clone, Debug)]
pub struct Bins {
    pub forkring: PathBuf,
    pub nginx: Option<PathBuf>,
}

/// A host: its namespace, its address, and its server's master, if running.
pub struct Host {
    /// 1-based number; the balancer calls it `h{n}`.
    pub n: u8,
    /// The network namespace.
    pub ns: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The server's master process, while one runs.
    pub master: Option<i32>,
    /// Where its logs, configuration and pid file go.
    pub dir: PathBuf,
    kind: Kind,
    bins: Bins,
}

impl Host {
    pub fn new(n: u8, ns: String, kind: Kind, bins: &Bins, run_dir: &Path) -> Host {
        let dir = run_dir.join(format!("h{n}"));
        let _ = std::fs::create_dir_all(&dir);
        Host { n, ns, ip: net::addr(10 + n), master: None, dir, kind, bins: bins.clone() }
    }

    pub fn bins(&self) -> &Bins {
        &self.bins
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, PORT))
    }

    pub fn check_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.kind.check_port()))
    }

    /// Starts the server and waits until `/ready` and `/` answer 200.
    pub fn start(&mut self) -> Result<(), String> {
        let ip = self.ip.to_string();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]);
        match self.kind {
            Kind::Forkring => {
                cmd.arg(&self.bins.forkring).args([
                    "--listen",
                    &format!("{ip}:{PORT}"),
                    "--workers",
                    "2",
                    "--metrics",
                    &format!("{ip}:{METRICS_PORT}"),
                    "--drain-delay",
                    &DRAIN_DELAY_MS.to_string(),
                    "--drain-timeout",
                    "5000",
                ]);
            }
            Kind::Nginx => {
                let bin = self.bins.nginx.clone().ok_or("no nginx")?;
                let conf = self.dir.join("nginx.conf");
                std::fs::write(&conf, nginx_conf(&self.dir, &ip).render(&bin)).map_err(|e| e.to_string())?;
                // nginx takes SIGUSR2 (binary upgrade) only in a master
                // whose parent is no longer the one it started with: it
                // runs as a daemon, started by a shell that then leaves, and
                // the master (orphaned to this harness, the subreaper) is
                // read from its pid file.
                let _ = std::fs::remove_file(self.nginx_pid_file());
                cmd.args(["sh", "-c", "\"$0\" \"$@\"; true"]).arg(bin);
                cmd.arg("-p").arg(format!("{}/", self.dir.display())).arg("-c").arg(&conf);
                cmd.arg("-e").arg(self.dir.join("error.log"));
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(log));
        // `ip netns exec` enters the namespace and execs the server: the
        // child's pid is the master's.
        let mut child = cmd.spawn().map_err(|e| format!("start h{}: {e}", self.n))?;
        let pid = match self.kind {
            Kind::Forkring => child.id() as i32,
            Kind::Nginx => {
                let _ = child.wait();
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let read = std::fs::read_to_string(self.nginx_pid_file()).ok();
                    if let Some(p) = read.and_then(|t| t.trim().parse::<i32>().ok()) {
                        break p;
                    }
                    if Instant::now() >= deadline {
                        return Err(format!("h{}: nginx wrote no pid file: {}", self.n, self.log_tail(8)));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        procs::register(pid);
        self.master = Some(pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !proc::alive(pid) {
                self.master = None;
                proc::wait_gone(pid, Duration::from_millis(100));
                return Err(format!("h{} exited at start: {}", self.n, self.log_tail(8)));
            }
            if get(self.check_addr(), "/ready") == Ok(200) && get(self.addr(), "/") == Ok(200) {
                self.register_all();
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("h{} not ready within 10 s: {}", self.n, self.log_tail(8)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Registers every process of the namespace for the final cleanup.
    pub fn register_all(&self) {
        for p in net::pids_in(&self.ns) {
            procs::register(p);
        }
    }

    /// Sends `sig` to the master.
    pub fn signal(&self, sig: i32) -> bool {
        self.master.is_some_and(|p| proc::signal(p, sig).is_ok())
    }

    /// Waits at most `timeout` for the master to exit (and reaps it).
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let Some(pid) = self.master else { return true };
        let gone = proc::wait_gone(pid, timeout);
        if gone {
            self.master = None;
        }
        gone
    }

    /// Every process in the namespace stopped (SIGSTOP), then the sockets
    /// they hold on the serving port counted, then all killed (SIGKILL):
    /// the whole host dies at once. Returns the connections it held.
    pub fn kill_tree(&mut self) -> usize {
        let pids = net::pids_in(&self.ns);
        for &p in &pids {
            proc::stop(p);
        }
        let mut held = std::collections::BTreeSet::new();
        for &p in &pids {
            held.extend(procs::tcp_held(p, PORT));
        }
        for &p in &pids {
            let _ = proc::signal(p, libc::SIGKILL);
        }
        for &p in &pids {
            proc::wait_gone(p, Duration::from_secs(2));
        }
        self.master = None;
        held.len()
    }

    /// Stops whatever still runs in the namespace (the end of a scenario).
    pub fn kill_all(&mut self) {
        let _ = self.kill_tree();
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        let mut text = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        text.push_str(&std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default());
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join(" | ")
    }

    /// nginx's pid file (the binary upgrade renames it `.oldbin`).
    pub fn nginx_pid_file(&self) -> PathBuf {
        self.dir.join("nginx.pid")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// One `GET path` on a new connection, a second for each step: the status.
pub fn get(addr: SocketAddr, path: &str) -> Result<u16, String> {
    probe::get(addr, path, Duration::from_secs(1))
}

/// nginx as a host: two workers, `Hello, World!` on `/`, 200 on `/ready`
/// (it has no readiness of its own: the balancer sees it go when its
/// listener closes); a daemon, for its binary upgrade (see [`Host::start`]).
fn nginx_conf(dir: &Path, ip: &str) -> nginx::Conf {
    let mut c = nginx::Conf::new(dir, format!("{ip}:{PORT}"), 2);
    c.error_log = dir.join("error.log");
    c.daemon = true;
    c.ready_route = true;
    c
}
