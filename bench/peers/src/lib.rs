//! What the peers share: the command line, the listening socket and the
//! readiness line bench/run.sh waits for.
//!
//! Each peer takes `--listen ADDR --workers N`; hyper also takes
//! `--mode threads|processes`. Pinning is the caller's (`taskset`), as for
//! forkring and nginx, so no peer pins its own threads.

pub mod floor;

use std::net::{SocketAddr, TcpListener};
use std::process::exit;

use socket2::{Domain, Protocol, Socket, Type};

/// How a peer runs its workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One process, one thread per worker.
    Threads,
    /// One process per worker, forked from a parent that only waits.
    Processes,
}

/// The parsed command line.
#[derive(Debug)]
pub struct Args {
    /// Where to listen.
    pub listen: SocketAddr,
    /// How many workers (threads or processes).
    pub workers: usize,
    /// Threads or processes (hyper only; may_minihttp ignores it).
    pub mode: Mode,
}

/// Parses `--listen ADDR --workers N [--mode threads|processes]`; exits
/// with a usage line on anything else.
pub fn args(name: &str) -> Args {
    let usage = |why: &str| -> ! {
        eprintln!("{name}: {why}");
        eprintln!("usage: {name} --listen 127.0.0.1:8080 [--workers N] [--mode threads|processes]");
        exit(2)
    };
    let mut listen = None;
    let mut workers = 1;
    let mut mode = Mode::Threads;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--listen" => listen = Some(value().parse().unwrap_or_else(|_| usage("--listen: not an address"))),
            "--workers" => {
                workers =
                    value().parse().ok().filter(|&n| n > 0).unwrap_or_else(|| usage("--workers: not a positive number"))
            }
            "--mode" => {
                mode = match value().as_str() {
                    "threads" => Mode::Threads,
                    "processes" => Mode::Processes,
                    _ => usage("--mode: threads or processes"),
                }
            }
            _ => usage(&format!("unknown argument {flag}")),
        }
    }
    let listen = listen.unwrap_or_else(|| usage("--listen is required"));
    Args { listen, workers, mode }
}

/// A non-blocking listening socket with SO_REUSEPORT, so that every worker
/// has its own accept queue, as forkring's default and nginx's
/// `listen ... reuseport` have; backlog 4096, as nginx's in the bench.
pub fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Tells bench/run.sh that one worker accepts: it waits for as many lines
/// as workers.
pub fn ready(name: &str, worker: usize) {
    eprintln!("{name}: worker {worker} ready (pid {})", std::process::id());
}

/// Whether a request's `Connection` header asks to close: a `close` token.
pub fn wants_close<'a>(connection_values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    connection_values
        .into_iter()
        .any(|v| v.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close")))
}
