//! The access log: one line per answered request in the combined log
//! format plus the request's time in microseconds, e.g.
//!
//! ```text
//! 127.0.0.1 - - [01/Dec/2026:16:49:55 +0000] "GET /a?b HTTP/1.1" 200 13 "-" "curl/8.5.0" 87
//! ```
//!
//! Each worker appends its lines to a buffer and writes the buffer with one
//! `write` per loop turn to a file opened with `O_APPEND`, so lines of
//! different workers never interleave inside a line. The time is UTC. The
//! byte count is the response body's length (`-` when there is none, and
//! for a `HEAD`); the request's time runs from the start of the loop turn
//! that read it to when its response was framed.
//!
//! A reopen (the master forwards `SIGUSR1`, logrotate's convention) is
//! asked for from the signal handler through an atomic and carried out at
//! the next write.
//!
//! What a line says of its request is read here too ([`LineRequest`]), and
//! kept for a deferred request until it is answered ([`LoggedRequest`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::date::format_clf;

/// Where the access log's client addresses come from: the driver, which
/// owns the sockets (and so the `getpeername`), gives one to the
/// per-worker state with the log.
pub(crate) trait PeerNames: Send + std::fmt::Debug {
    /// The client's address for the connection (`socket`, `token`) as the
    /// log writes it: an IP address, `unix:`, or `-` when unknown.
    fn name(&mut self, socket: std::os::fd::RawFd, token: u64) -> &str;
}
use super::request::{Request, Version};

/// Set by the worker's `SIGUSR1` handler: reopen the file at the next write.
static REOPEN: AtomicBool = AtomicBool::new(false);

/// Asks every access log of this process to reopen its file before its next
/// write. Async-signal-safe (one atomic store).
pub fn request_reopen() {
    REOPEN.store(true, Ordering::Relaxed);
}

/// Lines buffered beyond this are written at once, mid-turn.
const FLUSH_AT: usize = 64 * 1024;
/// Longest request-target, `Referer` or `User-Agent` logged; longer ones are
/// cut (and end in `...`).
const FIELD_MAX: usize = 2048;

/// One worker's access log.
#[derive(Debug)]
pub struct AccessLog {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// The second `time` is formatted for.
    secs: u64,
    time: [u8; 26],
    /// A write failed and was logged; the next failure is not logged again
    /// until a write succeeds.
    failing: bool,
}

/// What one line says about its request and response.
pub(crate) struct Entry<'a> {
    /// The client's address as text; `-` when unknown.
    pub peer: &'a str,
    /// The request line's parts; `None` for a request refused before its
    /// head could be read (logged as `"-"`).
    pub request: Option<(&'a str, &'a str, &'a str)>,
    pub status: u16,
    /// Body bytes of the response; `None` logs `-`.
    pub bytes: Option<usize>,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub micros: u64,
}

impl<'a> Entry<'a> {
    /// The line for a response with `status` and `bytes` of body to the
    /// request `req` (`None`: one refused before its head could be read)
    /// from `peer`, which took `micros`.
    pub(crate) fn new(
        peer: &'a str,
        req: Option<LineRequest<'a>>,
        status: u16,
        bytes: Option<usize>,
        micros: u64,
    ) -> Entry<'a> {
        Entry {
            peer,
            request: req.as_ref().map(|r| (r.method, r.target, r.version)),
            status,
            bytes,
            referer: req.as_ref().and_then(|r| r.referer),
            user_agent: req.as_ref().and_then(|r| r.user_agent),
            micros,
        }
    }
}

/// What an access log line says of its request, borrowed from the request
/// or from a deferred request's [`LoggedRequest`].
pub(crate) struct LineRequest<'a> {
    method: &'a str,
    target: &'a str,
    version: &'static str,
    referer: Option<&'a [u8]>,
    user_agent: Option<&'a [u8]>,
}

impl<'a> LineRequest<'a> {
    /// What the line says of `r`.
    pub(crate) fn of(r: &'a Request<'_>) -> LineRequest<'a> {
        LineRequest {
            method: r.method,
            target: r.target,
            version: version_text(r.version),
            referer: r.header("referer"),
            user_agent: r.header("user-agent"),
        }
    }
}

/// A deferred request's fields for its access log line, kept until it is
/// answered.
#[derive(Debug)]
pub(crate) struct LoggedRequest {
    method: String,
    target: String,
    version: &'static str,
    referer: Option<Vec<u8>>,
    user_agent: Option<Vec<u8>>,
}

impl LoggedRequest {
    /// A copy of what the line says of `r`.
    pub(crate) fn of(r: &Request<'_>) -> LoggedRequest {
        LoggedRequest {
            method: r.method.to_owned(),
            target: r.target.to_owned(),
            version: version_text(r.version),
            referer: r.header("referer").map(<[u8]>::to_vec),
            user_agent: r.header("user-agent").map(<[u8]>::to_vec),
        }
    }

    /// The line's request part.
    pub(crate) fn line(&self) -> LineRequest<'_> {
        LineRequest {
            method: &self.method,
            target: &self.target,
            version: self.version,
            referer: self.referer.as_deref(),
            user_agent: self.user_agent.as_deref(),
        }
    }
}

/// The protocol's name in a request line.
fn version_text(v: Version) -> &'static str {
    match v {
        Version::Http10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

impl AccessLog {
    /// Opens (creating, mode 0640) `path` for appending.
    pub fn open(path: &Path) -> io::Result<AccessLog> {
        let file = open(path)?;
        Ok(AccessLog {
            path: path.to_path_buf(),
            file,
            buf: Vec::with_capacity(16 * 1024),
            secs: u64::MAX,
            time: [0; 26],
            failing: false,
        })
    }

    /// Appends one line.
    pub(crate) fn record(&mut self, e: &Entry<'_>) {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs != self.secs {
            self.secs = secs;
            format_clf(secs, &mut self.time);
        }
        let b = &mut self.buf;
        b.extend_from_slice(e.peer.as_bytes());
        b.extend_from_slice(b" - - [");
        b.extend_from_slice(&self.time);
        b.extend_from_slice(b"] \"");
        match e.request {
            Some((method, target, version)) => {
                escape(b, method.as_bytes());
                b.push(b' ');
                escape(b, target.as_bytes());
                b.push(b' ');
                b.extend_from_slice(version.as_bytes());
            }
            None => b.push(b'-'),
        }
        b.extend_from_slice(b"\" ");
        push_num(b, u64::from(e.status));
        b.push(b' ');
        match e.bytes {
            Some(n) if n > 0 => push_num(b, n as u64),
            _ => b.push(b'-'),
        }
        for field in [e.referer, e.user_agent] {
            b.extend_from_slice(b" \"");
            match field {
                Some(v) if !v.is_empty() => escape(b, v),
                _ => b.push(b'-'),
            }
            b.push(b'"');
        }
        b.push(b' ');
        push_num(b, e.micros);
        b.push(b'\n');
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Writes the buffered lines with one `write` (more only if the kernel
    /// takes part of them), reopening the file first if asked to.
    pub fn flush(&mut self) {
        if REOPEN.swap(false, Ordering::Relaxed) {
            match open(&self.path) {
                Ok(f) => self.file = f,
                Err(e) => log::error!("access log {}: reopen: {e}; writing to the old file", self.path.display()),
            }
        }
        if self.buf.is_empty() {
            return;
        }
        match self.file.write_all(&self.buf) {
            Ok(()) => self.failing = false,
            Err(e) => {
                if !self.failing {
                    log::error!("access log {}: {e}; lines are dropped until a write succeeds", self.path.display());
                }
                self.failing = true;
            }
        }
        self.buf.clear();
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Opens the log for appending. A symbolic link in the log's own place is
/// refused (`O_NOFOLLOW`): the log is opened by the worker, often after a
/// reopen signal, and a link swapped in by whoever can write the directory
/// must not redirect its lines into another file.
fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("access log {}: {e}", path.display())))
}

fn push_num(b: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    b.extend_from_slice(&tmp[i..]);
}

/// Appends `v` with `"`, `\`, control bytes and bytes above 0x7E escaped
/// as `\xHH` (nginx's escaping), so that a client cannot forge a line or
/// a field; cut at [`FIELD_MAX`] bytes.
fn escape(b: &mut Vec<u8>, v: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let cut = v.len() > FIELD_MAX;
    for &c in &v[..v.len().min(FIELD_MAX)] {
        if c == b'"' || c == b'\\' || !(0x20..0x7f).contains(&c) {
            b.extend_from_slice(&[b'\\', b'x', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
        } else {
            b.push(c);
        }
    }
    if cut {
        b.extend_from_slice(b"...");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(e: &Entry<'_>) -> String {
        let dir = std::env::temp_dir().join(format!(
            "forkring-access-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut log = AccessLog::open(&dir).unwrap();
        log.record(e);
        let s = String::from_utf8(log.buf.clone()).unwrap();
        log.buf.clear();
        drop(log);
        let _ = std::fs::remove_file(&dir);
        s
    }

    #[test]
    fn combined_format_with_the_time_taken() {
        let s = line(&Entry {
            peer: "127.0.0.1",
            request: Some(("GET", "/a?b=c", "HTTP/1.1")),
            status: 200,
            bytes: Some(13),
            referer: None,
            user_agent: Some(b"curl/8.5.0"),
            micros: 87,
        });
        let (head, tail) = s.split_once(" [").unwrap();
        assert_eq!(head, "127.0.0.1 - -");
        assert_eq!(tail.len(), 26 + "] \"GET /a?b=c HTTP/1.1\" 200 13 \"-\" \"curl/8.5.0\" 87\n".len());
        assert!(tail.ends_with("] \"GET /a?b=c HTTP/1.1\" 200 13 \"-\" \"curl/8.5.0\" 87\n"), "{s}");
    }

    #[test]
    fn a_client_cannot_forge_a_line_or_a_field() {
        let s = line(&Entry {
            peer: "::1",
            request: None,
            status: 400,
            bytes: None,
            referer: Some(b"a\" \"b"),
            user_agent: Some(b"x\ny\\z\xff"),
            micros: 0,
        });
        assert!(s.ends_with("\"-\" 400 - \"a\\x22 \\x22b\" \"x\\x0Ay\\x5Cz\\xFF\" 0\n"), "{s}");
        assert_eq!(s.matches('\n').count(), 1);
        let long = vec![b'a'; FIELD_MAX + 10];
        let s = line(&Entry {
            peer: "-",
            request: None,
            status: 200,
            bytes: Some(0),
            referer: Some(&long),
            user_agent: None,
            micros: 1,
        });
        assert!(s.contains(&format!("\"{}...\"", "a".repeat(FIELD_MAX))), "{s}");
    }

    #[test]
    fn a_deferred_request_logs_what_the_request_said() {
        let fields = [
            httparse::Header { name: "User-Agent", value: b"ua/1" },
            httparse::Header { name: "Referer", value: b"http://r/" },
        ];
        let req = Request {
            method: "POST",
            target: "/t?q",
            version: Version::Http10,
            headers: crate::http::Headers { fields: &fields },
            body: b"",
            keep_alive: false,
            socket: -1,
        };
        let kept = LoggedRequest::of(&req);
        for r in [LineRequest::of(&req), kept.line()] {
            let s = line(&Entry::new("-", Some(r), 201, Some(3), 5));
            assert!(s.ends_with("] \"POST /t?q HTTP/1.0\" 201 3 \"http://r/\" \"ua/1\" 5\n"), "{s}");
        }
        let s = line(&Entry::new("10.0.0.1", None, 400, None, 0));
        assert!(s.starts_with("10.0.0.1 - - [") && s.ends_with("] \"-\" 400 - \"-\" \"-\" 0\n"), "{s}");
    }

    #[test]
    fn a_link_in_the_logs_place_is_refused() {
        let dir = std::env::temp_dir().join(format!("forkring-access-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("elsewhere");
        std::fs::write(&target, b"").unwrap();
        let link = dir.join("access.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let Err(err) = AccessLog::open(&link) else { panic!("a link is not opened") };
        assert!(err.to_string().contains(&format!("os error {}", libc::ELOOP)), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"");
        std::fs::remove_file(&link).unwrap();
        assert!(AccessLog::open(&link).is_ok(), "a plain path is opened");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
