//! File bodies on real sockets, on both backends, through the demo's
//! `--static DIR` at `/files/`: an 8 MiB file byte-exact, `Range` (`206`,
//! suffix and open ranges, several ranges answered whole, `416`), `HEAD`,
//! `Last-Modified` and `If-Modified-Since` (`304`, with a date in each of
//! HTTP's three forms), pipelined order around
//! a file, a slow reader with bounded worker memory, and every path
//! traversal attempt refused.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::Server;
use forkring_testkit::bytes::{first_difference, pattern};
use forkring_testkit::client::Client;
use forkring_testkit::corpus::traversal_paths;
use forkring_testkit::need::{require, Need};
use forkring_testkit::server::HELLO;

/// A directory tree for one test: `root/` is served; `secret` beside it
/// must never be.
struct Tree {
    base: PathBuf,
    root: PathBuf,
    big: Vec<u8>,
}

const SECRET: &[u8] = b"the secret outside the served directory\n";

impl Tree {
    fn new(name: &str) -> Tree {
        let base = std::env::temp_dir().join(format!("forkring-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let big = pattern(8 << 20, 42);
        std::fs::write(root.join("big.bin"), &big).unwrap();
        std::fs::write(root.join("small.txt"), b"0123456789abcdefghij").unwrap();
        std::fs::write(root.join("sub/inner.txt"), b"inner\n").unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
        std::fs::write(base.join("secret"), SECRET).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("out-link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("abs-link")).unwrap();
        std::os::unix::fs::symlink("..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("sub/inner.txt", root.join("in-link")).unwrap();
        Tree { base, root, big }
    }

    fn server(&self) -> Server {
        Server::start(&["--static", self.root.to_str().unwrap()])
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

#[test]
fn a_large_file_arrives_byte_exact() {
    require(Need::Curl);
    let tree = Tree::new("big");
    let mut server = tree.server();
    let mut c = server.connect();
    for _ in 0..2 {
        let r = c.get("/files/big.bin");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
        assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
        assert!(r.header("Last-Modified").is_some());
        assert_eq!(first_difference(&r.body, &tree.big), None, "body differs");
    }
    // curl agrees.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", &format!("http://{}/files/big.bin", server.addr)])
        .output()
        .expect("run curl");
    assert!(out.status.success());
    assert_eq!(first_difference(&out.stdout, &tree.big), None, "curl's copy differs");
    // An empty file.
    let r = c.get("/files/empty");
    assert_eq!((r.status, r.body.len()), (200, 0));
    server.assert_healthy();
}

#[test]
fn ranges_get_206_the_whole_file_or_416() {
    require(Need::Curl);
    let tree = Tree::new("ranges");
    let mut server = tree.server();
    let mut c = server.connect();
    let range = |c: &mut Client, path: &str, range: &str| {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nRange: {range}\r\n\r\n").as_bytes());
        c.response()
    };
    let r = range(&mut c, "/files/small.txt", "bytes=2-5");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range"), Some("bytes 2-5/20"));
    assert_eq!(r.body, b"2345");
    let r = range(&mut c, "/files/small.txt", "bytes=-3");
    assert_eq!((r.status, &r.body[..]), (206, &b"hij"[..]));
    let r = range(&mut c, "/files/small.txt", "bytes=15-");
    assert_eq!((r.status, &r.body[..]), (206, &b"fghij"[..]));
    // Several ranges: the whole file.
    let r = range(&mut c, "/files/small.txt", "bytes=0-1,4-5");
    assert_eq!((r.status, &r.body[..]), (200, &b"0123456789abcdefghij"[..]));
    // Nothing satisfiable: 416 with the length, and the connection goes on.
    let r = range(&mut c, "/files/small.txt", "bytes=20-");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Content-Range"), Some("bytes */20"));
    // A range of the large file, byte-exact.
    let r = range(&mut c, "/files/big.bin", "bytes=1000000-3999999");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range"), Some(format!("bytes 1000000-3999999/{}", 8 << 20).as_str()));
    assert_eq!(first_difference(&r.body, &tree.big[1_000_000..4_000_000]), None);
    // curl's -r.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-r", "5-9", &format!("http://{}/files/small.txt", server.addr)])
        .output()
        .expect("run curl");
    assert_eq!(out.stdout, b"56789");
    server.assert_healthy();
}

#[test]
fn head_sends_no_body_and_an_unmodified_file_is_304() {
    let tree = Tree::new("head");
    let mut server = tree.server();
    let mut c = server.connect();
    c.send(b"HEAD /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.head_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some((8u64 << 20).to_string().as_str()));
    assert!(r.body.is_empty());
    let modified = r.header("Last-Modified").expect("Last-Modified").to_owned();
    // The same date: 304, no body, and the connection goes on.
    c.send(format!("GET /files/big.bin HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: {modified}\r\n\r\n").as_bytes());
    let r = c.response();
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("Last-Modified"), Some(modified.as_str()));
    // An older date: the whole file.
    c.send(b"GET /files/small.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body.len()), (200, 20));
    // HEAD with a range.
    c.send(b"HEAD /files/small.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-4\r\n\r\n");
    let r = c.head_response();
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Length"), Some("5"));
    // Other methods are refused.
    let r = c.post("/files/small.txt", "text/plain", b"x");
    assert_eq!(r.status, 405);
    server.assert_healthy();
}

/// `imf` (`Sun, 06 Nov 1994 08:49:37 GMT`) in the two obsolete forms a
/// recipient must accept too (RFC 9110 §5.6.7): RFC 850
/// (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
/// (`Sun Nov  6 08:49:37 1994`).
fn obsolete_forms(imf: &str) -> [String; 2] {
    let long = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let (wd, day, month, year, time) = (&imf[0..3], &imf[5..7], &imf[8..11], &imf[12..16], &imf[17..25]);
    let weekday = long.iter().find(|d| d.starts_with(wd)).expect("a weekday");
    let padded = format!("{:>2}", day.trim_start_matches('0'));
    [format!("{weekday}, {day}-{month}-{} {time} GMT", &year[2..]), format!("{wd} {month} {padded} {time} {year}")]
}

#[test]
fn conditional_requests_take_every_http_date_form() {
    let tree = Tree::new("dates");
    let mut server = tree.server();
    let mut c = server.connect();
    let r = c.get("/files/small.txt");
    let modified = r.header("Last-Modified").expect("Last-Modified").to_owned();
    let [rfc850, asctime] = obsolete_forms(&modified);
    for date in [&modified, &rfc850, &asctime] {
        c.send(format!("GET /files/small.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: {date}\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!((r.status, r.body.len()), (304, 0), "If-Modified-Since: {date}");
        c.send(
            format!("GET /files/small.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-3\r\nIf-Range: {date}\r\n\r\n")
                .as_bytes(),
        );
        let r = c.response();
        assert_eq!((r.status, &r.body[..]), (206, &b"0123"[..]), "If-Range: {date}");
    }
    // Older dates in each form: the whole file.
    for date in ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"] {
        c.send(format!("GET /files/small.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: {date}\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!((r.status, r.body.len()), (200, 20), "If-Modified-Since: {date}");
    }
    // If-Unmodified-Since in each form: the whole file while it holds,
    // 412 when the file is newer than the date.
    for date in [&modified, &rfc850, &asctime] {
        c.send(format!("GET /files/small.txt HTTP/1.1\r\nHost: t\r\nIf-Unmodified-Since: {date}\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!((r.status, r.body.len()), (200, 20), "If-Unmodified-Since: {date}");
    }
    for date in ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"] {
        c.send(format!("GET /files/small.txt HTTP/1.1\r\nHost: t\r\nIf-Unmodified-Since: {date}\r\n\r\n").as_bytes());
        assert_eq!(c.response().status, 412, "If-Unmodified-Since: {date}");
    }
    // A malformed date is ignored: the whole file, and the connection goes on.
    c.send(b"GET /files/small.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Sun Nov 6 08:49:37 1994\r\n\r\n");
    assert_eq!(c.response().status, 200);
    server.assert_healthy();
}

#[test]
fn pipelined_requests_around_files_keep_their_order() {
    let tree = Tree::new("pipe");
    let mut server = tree.server();
    let mut c = server.connect();
    c.send(
        b"GET /files/small.txt HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /files/sub/inner.txt HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(c.response().body, b"0123456789abcdefghij");
    assert_eq!(c.response().body, HELLO);
    assert_eq!(first_difference(&c.response().body, &tree.big), None);
    assert_eq!(c.response().body, b"inner\n");
    // HTTP/1.0 without keep-alive: the file, then the close.
    let mut c = server.connect();
    c.send(b"GET /files/small.txt HTTP/1.0\r\n\r\n");
    assert_eq!(c.response().body, b"0123456789abcdefghij");
    c.expect_close();
    server.assert_healthy();
}

#[test]
fn a_slow_reader_of_a_file_costs_the_worker_nothing() {
    let tree = Tree::new("slow");
    let mut server = tree.server();
    let mut warm = server.connect();
    assert_eq!(warm.get("/files/big.bin").status, 200);
    let before = server.rss_kib();
    let mut readers: Vec<_> = (0..8)
        .map(|_| {
            let mut c = server.connect();
            c.send(b"GET /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
            c
        })
        .collect();
    let mut peak = before;
    for _ in 0..10 {
        thread::sleep(Duration::from_millis(100));
        peak = peak.max(server.rss_kib());
    }
    let grown = peak.saturating_sub(before);
    eprintln!("server RSS {before} KiB before, {peak} KiB with 8 clients not reading an 8 MiB file (+{grown} KiB)");
    assert!(grown < 4 * 1024, "the server grew by {grown} KiB");
    for c in &mut readers {
        assert_eq!(first_difference(&c.response().body, &tree.big), None);
    }
    server.assert_healthy();
}

#[test]
fn every_traversal_attempt_is_refused() {
    let tree = Tree::new("traversal");
    let mut server = tree.server();
    for path in traversal_paths() {
        let mut c = server.connect();
        c.send(format!("GET /files/{path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = c.try_response(false);
        match r {
            Ok(r) => {
                assert!(r.status == 403 || r.status == 404 || r.status == 400, "/files/{path}: {}", r.status);
                assert!(!r.body.windows(SECRET.len()).any(|w| w == SECRET), "/files/{path} leaked the secret");
                assert!(!r.body.starts_with(b"root:"), "/files/{path} leaked /etc/passwd");
            }
            // The HTTP core may refuse the target before the route sees it.
            Err(e) => panic!("/files/{path}: {e}"),
        }
    }
    // What is inside is served, a link that stays inside included.
    let mut c = server.connect();
    assert_eq!(c.get("/files/sub/inner.txt").body, b"inner\n");
    assert_eq!(c.get("/files/in-link").body, b"inner\n");
    assert_eq!(c.get("/files/sub%2Finner.txt").status, 403, "an encoded slash is not a separator");
    assert_eq!(c.get("/files/sub/").status, 404, "directories are not listed");
    server.assert_healthy();
}
