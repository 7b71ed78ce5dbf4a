//! A WebSocket echo server: the handler answers the upgrade with `101`
//! and hands the connection to a pool thread, where the `tungstenite`
//! crate speaks the protocol (RFC 6455) over the blocking socket.
//!
//! ```text
//! cargo run --example websocket              # 127.0.0.1:3001
//! cargo run --example websocket -- [::1]:0   # another address
//! websocat ws://127.0.0.1:3001/ws            # type lines, get them back
//! ```
//!
//! It prints `ready ADDR` on stdout once a worker serves.

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;

use forkring::{Event, Request, Response, Server, Upgraded};
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

fn main() -> std::io::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3001".to_owned());
    let unix = listen.starts_with("unix:");
    Server::builder()
        .listen(listen)
        .workers(1)
        .on_event(|event, _ctl| {
            if let Event::Listening { addr, .. } = event {
                println!("ready {addr}");
                let _ = std::io::stdout().flush();
            }
        })
        .serve(move || {
            move |req: &Request<'_>, res: &mut Response| match req.path() {
                "/ws" => websocket(req, res, unix),
                _ => {
                    res.header("Content-Type", "text/plain").body("a WebSocket echo lives at /ws\n");
                }
            }
        })
}

/// Answers the opening handshake, and gives the connection to a pool
/// thread once the `101` is sent.
fn websocket(req: &Request<'_>, res: &mut Response, unix: bool) {
    let upgrade = req.header("Upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
    let (true, Some(key)) = (upgrade, req.header("Sec-WebSocket-Key")) else {
        res.status(426).header("Upgrade", "websocket").body("this is a WebSocket endpoint\n");
        return;
    };
    res.header("Upgrade", "websocket").header("Sec-WebSocket-Accept", derive_accept_key(key));
    // Runs on the worker's loop once the 101 is out: the echo itself
    // blocks, so it goes to the worker's pool. When every thread is busy
    // and the pool's queue is full, the connection is closed (dropped with
    // the job) rather than left waiting for a thread.
    res.upgrade(move |conn| {
        if let Err(e) = forkring::worker::spawn_blocking(move || echo(conn, unix)) {
            eprintln!("websocket: {e}; closing the connection");
        }
    });
}

/// Echoes text and binary messages until the client closes.
fn echo(conn: Upgraded, unix: bool) {
    // The socket is blocking; the bytes the runtime already read (a frame
    // sent right behind the handshake) come first. The connection counts
    // against the worker's cap of upgraded ones until the stream is dropped.
    let result = match unix {
        false => {
            let (stream, read) = conn.into_parts::<TcpStream>();
            serve(WebSocket::from_partially_read(stream, read, Role::Server, None))
        }
        true => {
            let (stream, read) = conn.into_parts::<UnixStream>();
            serve(WebSocket::from_partially_read(stream, read, Role::Server, None))
        }
    };
    if let Err(e) = result {
        eprintln!("websocket: {e}");
    }
}

/// Echoes until the close; the error, boxed (tungstenite's is large).
fn serve<S: std::io::Read + std::io::Write>(mut ws: WebSocket<S>) -> Result<(), Box<tungstenite::Error>> {
    loop {
        match ws.read() {
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => ws.send(msg).map_err(Box::new)?,
            // Pings are answered by tungstenite itself; a close is
            // acknowledged by it, and the next read says it is over.
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return Ok(()),
            Err(e) => return Err(Box::new(e)),
        }
    }
}
