//! Server-sent events load for `make bench`: opens many streams to
//! `GET /stream` on one server and counts the events that arrive, from one
//! thread with epoll (`forkring_stress::epoll`: no thread per stream on
//! this side either).
//!
//! ```text
//! sseload --addr 127.0.0.1:8080 --streams 10000 --duration 10 [--path /stream?n=1000000&ms=1000]
//! ```
//!
//! It connects every stream, waits until each has its response head,
//! prints `READY streams=N` (the benchmark takes its first measurement of
//! the server then), counts events for `--duration` seconds and prints
//! `RESULT streams=N events=E seconds=S errors=X`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use forkring_stress::epoll::{self, Epoll};

struct Opts {
    addr: SocketAddr,
    streams: usize,
    duration: u64,
    path: String,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        addr: "127.0.0.1:8080".parse().unwrap(),
        streams: 10_000,
        duration: 10,
        path: "/stream?n=1000000&ms=1000".to_owned(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--addr" => o.addr = v()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--streams" => o.streams = v()?.parse().map_err(|e| format!("--streams: {e}"))?,
            "--duration" => o.duration = v()?.parse().map_err(|e| format!("--duration: {e}"))?,
            "--path" => o.path = v()?,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(o)
}

/// One stream: its socket, whether its head has arrived, and the last
/// byte seen (an event ends with `\n\n`, which a read may split).
struct Conn {
    sock: TcpStream,
    head: bool,
    last: u8,
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sseload: {e}");
            std::process::exit(2);
        }
    };
    forkring_testkit::proc::raise_nofile(o.streams as u64 + 64);
    let ep = Epoll::new().expect("epoll_create1");
    let req = format!("GET {} HTTP/1.1\r\nHost: bench\r\n\r\n", o.path);
    let mut conns = Vec::with_capacity(o.streams);
    let mut errors = 0u64;
    for _ in 0..o.streams {
        let sock = match TcpStream::connect_timeout(&o.addr, Duration::from_secs(5)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sseload: connect {}: {e}", o.addr);
                errors += 1;
                continue;
            }
        };
        let _ = (&sock).write_all(req.as_bytes());
        sock.set_nonblocking(true).expect("nonblocking");
        // The token is the stream's index among those that connected.
        ep.add(sock.as_raw_fd(), epoll::IN, conns.len()).expect("epoll_ctl");
        conns.push(Some(Conn { sock, head: false, last: 0 }));
    }
    let mut events = 0u64;
    let mut heads = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let mut evs = epoll::events(1024);
    let mut counting: Option<Instant> = None;
    let ready_by = Instant::now() + Duration::from_secs(30);
    loop {
        if counting.is_none() && (heads + errors as usize >= o.streams || Instant::now() > ready_by) {
            println!("READY streams={heads}");
            let _ = io::stdout().flush();
            counting = Some(Instant::now());
            events = 0;
        }
        if let Some(t0) = counting {
            if t0.elapsed() >= Duration::from_secs(o.duration) {
                break;
            }
        }
        let n = ep.wait(&mut evs, 100).unwrap_or(0);
        for ev in &evs[..n] {
            let i = epoll::token(ev);
            let Some(c) = conns[i].as_mut() else { continue };
            loop {
                match c.sock.read(&mut buf) {
                    Ok(0) => {
                        errors += 1;
                        ep.remove(c.sock.as_raw_fd());
                        conns[i] = None;
                        break;
                    }
                    Ok(n) => {
                        let data = &buf[..n];
                        if !c.head && data.windows(4).any(|w| w == b"\r\n\r\n") {
                            c.head = true;
                            heads += 1;
                        }
                        let mut prev = c.last;
                        for &b in data {
                            if b == b'\n' && prev == b'\n' {
                                events += 1;
                            }
                            prev = b;
                        }
                        c.last = prev;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        errors += 1;
                        ep.remove(c.sock.as_raw_fd());
                        conns[i] = None;
                        break;
                    }
                }
            }
        }
    }
    let secs = counting.map_or(0.0, |t| t.elapsed().as_secs_f64());
    println!("RESULT streams={heads} events={events} seconds={secs:.3} errors={errors}");
    // The sockets close on exit; the server's writers learn at their next
    // event.
}
