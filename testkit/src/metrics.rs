//! The master's metrics listener as tests read it: its address from the
//! server's log, a scrape, a metric's value summed over its slots or read
//! for one, and a wait until a metric reads what a test waits for (the
//! condition a test would otherwise guess at with a fixed sleep).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::server::Server;

/// The address of the server's metrics listener (`--metrics`), from the
/// line it logs at start.
pub fn addr(server: &Server) -> SocketAddr {
    let line = server.wait_line(&["metrics on http://"], Duration::from_secs(10));
    let rest = line.split("metrics on http://").nth(1).expect("an address after the prefix");
    rest.trim_end_matches("/metrics").trim().parse().unwrap_or_else(|e| panic!("metrics address in {line:?}: {e}"))
}

/// One `GET /metrics`: the whole response, head and exposition.
pub fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    String::from_utf8_lossy(&all).into_owned()
}

/// `name`'s samples in `text`, one per label set (`name{...} value`).
pub fn samples<'a>(text: &'a str, name: &str) -> impl Iterator<Item = (&'a str, u64)> + 'a {
    let prefix = format!("{name}{{");
    text.lines().filter_map(move |l| {
        let rest = l.strip_prefix(&prefix)?;
        let (labels, value) = rest.rsplit_once("} ")?;
        Some((labels, value.trim().parse().ok()?))
    })
}

/// `name` summed over the slots, in one scrape.
pub fn sum(addr: SocketAddr, name: &str) -> u64 {
    samples(&scrape(addr), name).map(|(_, v)| v).sum()
}

/// `name` for slot `slot`, in one scrape.
pub fn slot(addr: SocketAddr, name: &str, slot: u32) -> Option<u64> {
    let label = format!("slot=\"{slot}\"");
    samples(&scrape(addr), name).find(|(l, _)| *l == label).map(|(_, v)| v)
}

/// Scrapes until `name` summed over the slots satisfies `want`, for at
/// most `timeout`; returns the value, or panics saying what it read last.
pub fn wait_sum(addr: SocketAddr, name: &str, timeout: Duration, want: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let v = sum(addr, name);
        if want(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} reads {v} after {timeout:?}, not what the test waits for");
        thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_per_label_set_and_others_left_out() {
        let text =
            "# HELP x\nforkring_a{slot=\"0\"} 3\nforkring_a{slot=\"1\"} 4\nforkring_ab{slot=\"0\"} 9\nforkring_a 7\n";
        let got: Vec<_> = samples(text, "forkring_a").collect();
        assert_eq!(got, [("slot=\"0\"", 3), ("slot=\"1\"", 4)]);
    }
}
