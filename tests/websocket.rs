//! The WebSocket example (`examples/websocket.rs`) against a real client
//! (tungstenite's), on both backends, over TCP and over a Unix socket: the
//! handler answers `101`, the connection is handed over to a pool thread,
//! and messages come back as sent.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use forkring_testkit::proc;
use tungstenite::Message;

/// The example's binary, which `cargo test` (and `make test`) builds
/// beside the tests.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps");
    let path = dir.join("examples").join("websocket");
    assert!(path.exists(), "{} is missing: run `cargo build --examples`", path.display());
    path
}

/// The example server, stopped by its pid on drop.
struct Example {
    child: Child,
}

impl Example {
    /// Starts it on `listen`; returns it and the address it printed.
    fn start(listen: &str) -> (Example, String) {
        let mut child = Command::new(example())
            .arg(listen)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the example");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let ex = Example { child };
        let line = rx.recv_timeout(Duration::from_secs(10)).expect("the example says it is ready");
        let addr = line.strip_prefix("ready ").expect("a `ready ADDR` line").to_owned();
        (ex, addr)
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        let _ = proc::signal(pid, libc::SIGTERM);
        if !proc::wait_gone(pid, Duration::from_secs(10)) {
            let _ = proc::signal(pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Text, binary (large enough to take many reads) and a close.
fn echo<S: std::io::Read + std::io::Write>(mut ws: tungstenite::WebSocket<S>) {
    for i in 0..20 {
        let text = format!("hello {i}");
        ws.send(Message::text(text.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text(text));
    }
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(big));
    ws.close(None).unwrap();
    // The server acknowledges the close; then the stream ends.
    for _ in 0..10 {
        match ws.read() {
            Ok(Message::Close(_)) | Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => return,
            Err(e) => panic!("after close: {e}"),
        }
    }
    panic!("the close was not acknowledged");
}

#[test]
fn the_websocket_example_echoes_over_tcp() {
    let (_ex, addr) = Example::start("127.0.0.1:0");
    let stream = TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let (ws, res) = tungstenite::client(format!("ws://{addr}/ws"), stream).expect("the handshake");
    assert_eq!(res.status(), 101);
    echo(ws);
    // The worker goes on serving HTTP beside it.
    let stream = TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{addr}/ws"), stream).expect("a second handshake");
    echo(ws);
}

#[test]
fn the_websocket_example_echoes_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("forkring-ws-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ws.sock");
    let (ex, _) = Example::start(&format!("unix:{}", path.display()));
    let stream = UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let (ws, res) = tungstenite::client("ws://localhost/ws", stream).expect("the handshake");
    assert_eq!(res.status(), 101);
    echo(ws);
    drop(ex);
    let _ = std::fs::remove_dir_all(&dir);
}
