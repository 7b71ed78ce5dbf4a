//! Listening on a Unix domain socket (`--listen unix:PATH`), on real
//! processes, on both backends: every worker serves it, the file gets the
//! mode asked for, a stale socket file is replaced, a live one (another
//! server's) is refused and left alone, and the file is gone after the
//! cluster stops.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::HELLO;

/// A fresh directory for this test's socket files, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("forkring-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn command(path: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_forkring"));
    cmd.arg("--listen").arg(format!("unix:{}", path.display())).args(["--workers", "2"]).args(extra);
    cmd
}

/// One `GET /` over the Unix socket; the response bytes.
fn get(path: &Path) -> Vec<u8> {
    let mut s = UnixStream::connect(path).expect("connect to the unix socket");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn serves_a_unix_socket_with_its_mode_and_removes_it_on_exit() {
    let dir = Dir::new("unix-serve");
    let path = dir.0.join("app.sock");
    // A stale file from a server that is gone: bound, then closed.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut child =
        command(&path, &["--unix-mode", "660"]).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answer = Vec::new();
    while Instant::now() < deadline {
        if let Ok(s) = UnixStream::connect(&path) {
            drop(s);
            answer = get(&path);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).ok();
    // Several requests: both workers accept on the one socket.
    for _ in 0..20 {
        assert!(String::from_utf8_lossy(&get(&path)).ends_with(std::str::from_utf8(HELLO).unwrap()));
    }
    // SAFETY: plain kill(2) to the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK") && text.ends_with("Hello, World!"), "{text}\n{log}");
    assert_eq!(mode, Some(0o660), "{log}");
    assert!(log.contains("replacing the stale socket file"), "{log}");
    assert!(log.contains(&format!("listening on unix:{}", path.display())), "{log}");
    assert!(status.success(), "{status:?}\n{log}");
    assert!(!path.exists(), "the socket file is removed on exit\n{log}");
}

#[test]
fn a_live_socket_is_refused_and_left_alone() {
    let dir = Dir::new("unix-live");
    let path = dir.0.join("app.sock");
    let _other = UnixListener::bind(&path).unwrap();
    let out = command(&path, &[]).stdin(Stdio::null()).stderr(Stdio::piped()).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("another server listens there"), "{log}");
    assert!(path.exists(), "the other server's socket is left alone");
    // And something that is not a socket is not removed either.
    let file = dir.0.join("plain");
    std::fs::write(&file, b"data").unwrap();
    let out = command(&file, &[]).stdin(Stdio::null()).stderr(Stdio::piped()).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
}
