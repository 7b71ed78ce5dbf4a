//! Listening on a Unix domain socket (`--listen unix:PATH`), on real
//! processes, on both backends: every worker serves it, the file gets the
//! mode asked for, a stale socket file is replaced, a live one (another
//! server's) is refused and left alone, and the file is gone after the
//! cluster stops.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use forkring_testkit::server::HELLO;

use forkring_testkit::scratch::ScratchDir as Dir;

fn command(path: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(forkring_testkit::target::binary("forkring-fixture"));
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

/// The server under test, killed (by its pid) and reaped if the test
/// fails before it stops it; its log is read on a thread so it never
/// blocks on a full pipe.
struct Running {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let l = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = l.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Running { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log has `n` lines containing `what`.
    fn wait_for(&self, what: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.log().matches(what).count() < n {
            assert!(Instant::now() < deadline, "no {n} x {what:?} within 10 s\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits at most `timeout` for the server to exit; its status. (Drop
    /// kills a server that runs on.)
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server still runs {timeout:?} after SIGTERM\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Runs `cmd`, a server that must refuse to start, and waits at most 10 s
/// for it to exit; its output. One that runs on instead is killed, with
/// its workers, and fails the test.
fn refused_output(mut cmd: Command) -> std::process::Output {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            // Workers first, learned by pid, then the server: none of them
            // keeps the stderr pipe open behind the read below.
            let workers = forkring_testkit::proc::descendants(child.id() as i32);
            let _ = child.kill();
            for pid in workers {
                let _ = forkring_testkit::proc::signal(pid, libc::SIGKILL);
            }
            let out = child.wait_with_output().unwrap();
            panic!("the server still runs 10 s after it should have refused\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: plain kill(2) to the child this test started and has
            // not reaped.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

#[test]
fn a_unix_socket_is_served_with_its_mode_and_removed_on_exit() {
    let dir = Dir::new("unix-serve");
    let path = dir.0.join("app.sock");
    // A stale file from a server that is gone: bound, then closed.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut server = Running::start(&mut command(&path, &["--unix-mode", "660"]));
    server.wait_for(": ready ", 2);
    let text = String::from_utf8_lossy(&get(&path)).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 OK") && text.ends_with("Hello, World!"), "{text}\n{}", server.log());
    let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).ok();
    assert_eq!(mode, Some(0o660), "{}", server.log());
    // Several requests: both workers accept on the one socket.
    for _ in 0..20 {
        assert!(String::from_utf8_lossy(&get(&path)).ends_with(std::str::from_utf8(HELLO).unwrap()));
    }
    // SAFETY: plain kill(2) to the child this test started.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let status = server.wait_exit(Duration::from_secs(10));
    let log = server.log();
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
    let out = refused_output(command(&path, &[]));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("another server listens there"), "{log}");
    assert!(path.exists(), "the other server's socket is left alone");
    // And something that is not a socket is not removed either.
    let file = dir.0.join("plain");
    std::fs::write(&file, b"data").unwrap();
    let out = refused_output(command(&file, &[]));
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
}
