//! `Request::peer_addr` and `Request::local_addr` on real sockets, over
//! IPv4 and IPv6 loopback, on both backends, through the demo's `GET /ip`.

mod common;

use common::Server;
use forkring_testkit::client::Client;
use forkring_testkit::need::{require, Need};

fn check(server: &Server) {
    let mut c = Client::connect(server.addr);
    let mine = c.stream.local_addr().unwrap();
    let r = c.get("/ip");
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8(r.body).unwrap(), format!("{mine} -> {}\n", server.addr));
}

#[test]
fn peer_and_local_addresses_match_the_sockets_over_ipv4() {
    let server = Server::start(&["--workers", "1"]);
    check(&server);
}

#[test]
fn peer_and_local_addresses_match_the_sockets_over_ipv6() {
    require(Need::Ipv6Loopback);
    let server = Server::start_on("[::1]:0", &["--workers", "1"]);
    check(&server);
}

#[test]
fn peer_and_local_addresses_match_the_sockets_over_a_unix_socket() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    let dir = std::env::temp_dir().join(format!("forkring-addr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.sock");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_forkring"))
        .arg("--listen")
        .arg(format!("unix:{}", path.display()))
        .args(["--workers", "1", "--log", "warn"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ask = |s: &mut UnixStream| -> Vec<u8> {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /ip HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out
    };
    // Until the worker serves (bounded), then an unnamed client...
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        match UnixStream::connect(&path) {
            Ok(mut s) => break ask(&mut s),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("connect {}: {e}", path.display()),
        }
    };
    let text = String::from_utf8_lossy(&out).into_owned();
    let expected = format!("unix:(unnamed) -> unix:{}\n", path.display());
    // ... and a client bound to a path of its own.
    let mine = dir.join("client.sock");
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    use std::os::fd::AsRawFd;
    nix::sys::socket::bind(sock.as_raw_fd(), &nix::sys::socket::UnixAddr::new(&mine).unwrap()).unwrap();
    nix::sys::socket::connect(sock.as_raw_fd(), &nix::sys::socket::UnixAddr::new(&path).unwrap()).unwrap();
    let mut named = UnixStream::from(sock);
    let named_out = String::from_utf8_lossy(&ask(&mut named)).into_owned();

    let pid = child.id() as i32;
    let _ = forkring_testkit::proc::signal(pid, libc::SIGTERM);
    if !forkring_testkit::proc::wait_gone(pid, Duration::from_secs(10)) {
        let _ = forkring_testkit::proc::signal(pid, libc::SIGKILL);
    }
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with(&expected), "{text:?} does not end with {expected:?}");
    let expected = format!("unix:{} -> unix:{}\n", mine.display(), path.display());
    assert!(named_out.ends_with(&expected), "{named_out:?} does not end with {expected:?}");
}
