//! How a connection ends after its last response: at once when nothing of
//! the client's can be unread, with a lingering close when input may
//! remain (so that the client still reads the last response instead of a
//! reset).

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;

/// Reads until end of stream (or an error); returns what arrived.
fn read_to_end(s: &mut TcpStream) -> (Vec<u8>, io::Result<()>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if Instant::now() > deadline {
            return (got, Err(io::Error::new(io::ErrorKind::TimedOut, "no end of stream within 5 s")));
        }
        match s.read(&mut buf) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (got, Err(e)),
        }
    }
}

fn connect(srv: &Server) -> TcpStream {
    let s = TcpStream::connect(srv.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
    s.set_write_timeout(Some(Duration::from_secs(5))).expect("write timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Sends `GET /` with `Connection: close` and reads the answer to its end:
/// a `200`, then end of stream.
fn get_with_close(srv: &Server) -> (TcpStream, Vec<u8>) {
    let mut s = connect(srv);
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").expect("send");
    let (got, end) = read_to_end(&mut s);
    end.expect("the response, then end of stream");
    assert!(got.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&got));
    (s, got)
}

#[test]
fn a_connection_closing_after_a_complete_request_is_closed_at_once() {
    let mut srv = Server::start(&[]);
    for _ in 0..3 {
        let (mut s, _) = get_with_close(&srv);
        // The server's socket is gone, not lingering: bytes sent now are
        // answered with a reset. (A lingering server would read and drop
        // them, and the next read would see end of stream again.)
        let deadline = Instant::now() + Duration::from_secs(2);
        let reset = loop {
            let wrote = s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
            let mut buf = [0u8; 64];
            s.set_read_timeout(Some(Duration::from_millis(100))).expect("read timeout");
            let read = s.read(&mut buf);
            match (wrote, read) {
                (Err(e), _) | (_, Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => break true,
                (Err(e), _) if e.kind() == io::ErrorKind::BrokenPipe => break true,
                _ if Instant::now() > deadline => break false,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        assert!(reset, "the server's socket still accepted bytes 2 s after its last response");
    }
    srv.assert_healthy();
}

#[test]
fn a_request_pipelined_after_connection_close_does_not_destroy_the_response() {
    let mut srv = Server::start(&[]);
    for round in 0..20 {
        let mut s = connect(&srv);
        // Both requests in one write: the second is received with the first
        // and dropped, so the server must linger rather than reset.
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("send");
        // More bytes after the response went out (it has arrived, looked
        // at, not read): still no reset.
        let mut head = [0u8; 16];
        let n = s.peek(&mut head).unwrap_or_else(|e| panic!("round {round}: no response within 5 s: {e}"));
        assert!(n > 0, "round {round}: the connection ended before the response");
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        let (got, end) = read_to_end(&mut s);
        if let Err(e) = end {
            panic!("round {round}: {e} after {:?}", String::from_utf8_lossy(&got));
        }
        assert!(got.starts_with(b"HTTP/1.1 200 "), "round {round}: {}", String::from_utf8_lossy(&got));
        assert_eq!(got.windows(9).filter(|w| w == b"HTTP/1.1 ").count(), 1, "round {round}: one response only");
    }
    srv.assert_healthy();
}

#[test]
fn a_refused_request_lingers_so_its_answer_arrives() {
    let mut srv = Server::start(&["--max-body", "1024"]);
    for round in 0..10 {
        let mut s = connect(&srv);
        // A body over the limit: refused with 413 at its head, while the
        // client goes on sending the body.
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 65536\r\n\r\n").expect("send");
        let chunk = vec![b'x'; 8192];
        for _ in 0..8 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        let (got, end) = read_to_end(&mut s);
        if let Err(e) = end {
            panic!("round {round}: {e} after {:?}", String::from_utf8_lossy(&got));
        }
        assert!(got.starts_with(b"HTTP/1.1 413 "), "round {round}: {}", String::from_utf8_lossy(&got));
    }
    srv.assert_healthy();
}

/// Segments the client's socket received, and how many of them carried
/// data (`TCP_INFO`).
fn segments_in(s: &TcpStream) -> (u32, u32) {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain data; the kernel writes at most `len`
    // bytes of it.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let r = libc::getsockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, (&raw mut info).cast(), &mut len);
        assert_eq!(r, 0, "TCP_INFO: {}", io::Error::last_os_error());
        (info.tcpi_segs_in, info.tcpi_data_segs_in)
    }
}

#[test]
fn the_fin_of_a_close_at_once_leaves_with_the_last_response() {
    // Before its end of stream the client receives the SYN-ACK, the
    // acknowledgement of its request (a new connection acknowledges at
    // once), and the response with the FIN in the same segment: two
    // segments without data, not three (a FIN of its own). A loaded machine
    // can add another (a window update), so the fewest over several
    // connections counts.
    let srv = Server::start(&[]);
    let mut fewest = u32::MAX;
    for _ in 0..10 {
        let (s, got) = get_with_close(&srv);
        assert!(got.ends_with(b"Hello, World!"), "{}", String::from_utf8_lossy(&got));
        let (all, data) = segments_in(&s);
        fewest = fewest.min(all - data);
        if fewest <= 2 {
            break;
        }
    }
    assert!(fewest <= 2, "{fewest} segments without data reached the client: the FIN did not come with the response");
}
