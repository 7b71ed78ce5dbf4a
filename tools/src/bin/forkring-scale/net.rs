//! The fleet's network: one bridge in the root namespace and, per host, a
//! network namespace joined to it by a veth pair, all addressed from one
//! private /24 that nothing else on the machine uses.
//!
//! Every namespace and link made is written into a process-wide list the
//! moment it exists, so that the end of the run, a panic (the [`Net`]
//! guard's `Drop`) and SIGINT/SIGTERM (the signal thread, through
//! [`cleanup`]) remove exactly those, and only those. Nothing is routed:
//! the bridge carries the /24 between the hosts and the balancer, and the
//! namespaces have no default route.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use forkring_testkit::proc;

/// The private /24 the fleet lives in (its first three octets).
pub const SUBNET: [u8; 3] = [10, 213, 7];
/// The balancer's address, on the bridge.
pub const GATEWAY: u8 = 1;

/// Namespaces and links this run made, removed in reverse order.
static MADE: Mutex<Vec<Made>> = Mutex::new(Vec::new());

#[derive(Clone, Debug)]
enum Made {
    /// A network namespace, by name.
    Netns(String),
    /// A link in the root namespace, by name.
    Link(String),
}

/// An address of the fleet's /24.
pub fn addr(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], host)
}

/// Runs `ip` with `args`; its stderr when it fails.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Why this machine cannot run the fleet, if it cannot: not root, no `ip`,
/// or the kernel (or a container) refuses a network namespace, a bridge or
/// a veth pair. Tries each with a throw-away name and removes it.
pub fn refusal() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (it creates network namespaces, a bridge and veth pairs)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("no `ip` command (Debian package iproute2)".into());
    }
    let tag = std::process::id() % 100_000;
    let ns = format!("frs-probe-{tag}");
    if let Err(e) = ip(&["netns", "add", &ns]) {
        return Some(format!("cannot create a network namespace: {e}"));
    }
    let _ = ip(&["netns", "del", &ns]);
    let br = format!("frsp{tag}b");
    if let Err(e) = ip(&["link", "add", &br, "type", "bridge"]) {
        return Some(format!("cannot create a bridge: {e}"));
    }
    let _ = ip(&["link", "del", &br]);
    let v = format!("frsp{tag}v");
    if let Err(e) = ip(&["link", "add", &v, "type", "veth", "peer", "name", &format!("{v}p")]) {
        return Some(format!("cannot create a veth pair: {e}"));
    }
    let _ = ip(&["link", "del", &v]);
    None
}

/// Where the /24 clashes with an address or route already on the machine.
pub fn clash() -> Option<String> {
    let prefix = format!("{}.{}.{}.", SUBNET[0], SUBNET[1], SUBNET[2]);
    let addrs = ip(&["-4", "-o", "addr", "show"]).unwrap_or_default();
    let routes = ip(&["-4", "route", "show", "table", "all"]).unwrap_or_default();
    addrs
        .lines()
        .chain(routes.lines())
        .find(|l| l.contains(&prefix) || l.starts_with(&format!("{}.{}.0.0/16", SUBNET[0], SUBNET[1])))
        .map(|l| format!("{prefix}0/24 is in use here: {}", l.trim()))
}

/// The bridge: the fleet's switch, with the balancer's address on it.
pub struct Net {
    /// The bridge's name.
    pub bridge: String,
    /// A short tag that makes this run's names unique.
    tag: u32,
}

impl Net {
    /// Makes the bridge, with [`GATEWAY`]'s address, up.
    pub fn new() -> Result<Net, String> {
        let tag = std::process::id() % 100_000;
        let bridge = format!("frs{tag}br");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        remember(Made::Link(bridge.clone()));
        ip(&["addr", "add", &format!("{}/24", addr(GATEWAY)), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        Ok(Net { bridge, tag })
    }

    /// Makes host `n`'s namespace, joined to the bridge with address
    /// `.{10 + n}`; returns the namespace's name.
    pub fn add_host(&self, n: u8) -> Result<String, String> {
        let ns = format!("forkring-scale-{}-h{n}", self.tag);
        ip(&["netns", "add", &ns])?;
        remember(Made::Netns(ns.clone()));
        let outer = format!("frs{}h{n}", self.tag);
        let inner = format!("{outer}p");
        ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner])?;
        remember(Made::Link(outer.clone()));
        ip(&["link", "set", &inner, "netns", &ns])?;
        ip(&["link", "set", &outer, "master", &self.bridge])?;
        ip(&["link", "set", &outer, "up"])?;
        let host = addr(10 + n);
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "link", "set", &inner, "name", "eth0"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{host}/24"), "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        Ok(ns)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        cleanup();
    }
}

fn remember(m: Made) {
    MADE.lock().unwrap_or_else(|e| e.into_inner()).push(m);
}

/// The processes running in namespace `ns` (all of them started by this
/// run: the namespace is its own).
pub fn pids_in(ns: &str) -> Vec<i32> {
    ip(&["netns", "pids", ns]).unwrap_or_default().split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// Kills every process left in this run's namespaces, then removes the
/// namespaces and links it made (deleting a namespace deletes the veth end
/// inside it, and with it the pair). Safe to call more than once and from
/// the signal thread.
pub fn cleanup() -> usize {
    let made: Vec<Made> = std::mem::take(&mut *MADE.lock().unwrap_or_else(|e| e.into_inner()));
    let mut killed = 0;
    for m in &made {
        if let Made::Netns(ns) = m {
            for pid in pids_in(ns) {
                if proc::signal(pid, libc::SIGKILL).is_ok() {
                    killed += 1;
                }
                proc::wait_gone(pid, Duration::from_millis(500));
            }
        }
    }
    for m in made.iter().rev() {
        let r = match m {
            Made::Netns(ns) => ip(&["netns", "del", ns]),
            Made::Link(l) => match ip(&["link", "show", l]) {
                Ok(_) => ip(&["link", "del", l]),
                Err(_) => Ok(String::new()),
            },
        };
        if let Err(e) = r {
            eprintln!("scale: cleanup: {e}");
        }
    }
    killed
}
