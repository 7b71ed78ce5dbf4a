//! The sans-io core's streamed request bodies and upgrades, driven with
//! byte slices: pieces in order for both framings and every split of the
//! input, refusal before `100 Continue`, pause and resume, a stop, a
//! reader's panic, and the bytes kept for an upgraded connection.

use std::cell::RefCell;
use std::rc::Rc;

use forkring::internals::{Conn, WorkerState};
use forkring::{BodyFlow, BodyPlan, BodyReader, Handler, Limits, Request, Response, Resume, Timeouts};

/// What the readers saw.
#[derive(Default)]
struct Seen {
    /// Every piece, in order.
    pieces: Vec<Vec<u8>>,
    /// The number of ends.
    ends: usize,
    /// Resumes handed out, not yet used.
    resumes: Vec<Resume>,
}

/// Streams `/up` (pausing after each piece on `/up?pause`, stopping on
/// `/up?stop`), refuses `/no`, takes everything else whole; upgrades
/// `/ws`.
struct App {
    seen: Rc<RefCell<Seen>>,
}

struct Up {
    seen: Rc<RefCell<Seen>>,
    pause: bool,
    stop: bool,
}

impl BodyReader for Up {
    fn data(&mut self, piece: &[u8], flow: &mut BodyFlow<'_>) {
        let mut seen = self.seen.borrow_mut();
        seen.pieces.push(piece.to_vec());
        if self.stop {
            flow.stop(413);
        } else if self.pause {
            seen.resumes.push(flow.pause());
        }
    }

    fn end(&mut self, req: &Request<'_>, res: &mut Response) {
        self.seen.borrow_mut().ends += 1;
        let total: usize = self.seen.borrow().pieces.iter().map(Vec::len).sum();
        res.body(format!("{} {total}", req.path()));
    }
}

impl Handler for App {
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) {
        if req.path() == "/ws" {
            res.header("Upgrade", "x");
            res.upgrade(|_| {});
            return;
        }
        res.body(format!("whole {}", req.body().len()));
    }

    fn on_head(&mut self, req: &Request<'_>) -> BodyPlan {
        match req.path() {
            "/up" => BodyPlan::Stream(Box::new(Up {
                seen: self.seen.clone(),
                pause: req.query() == Some("pause"),
                stop: req.query() == Some("stop"),
            })),
            "/no" => {
                let mut res = Response::new();
                res.status(401).body("no");
                BodyPlan::Refuse(res)
            }
            _ => BodyPlan::Whole,
        }
    }
}

fn setup() -> (WorkerState, Conn, App, Rc<RefCell<Seen>>) {
    let mut sh = WorkerState::new(Limits::DEFAULT.with_max_body(16), Timeouts::default());
    sh.tick();
    let conn = Conn::new(&sh);
    let seen = Rc::new(RefCell::new(Seen::default()));
    (sh, conn, App { seen: seen.clone() }, seen)
}

fn output(conn: &mut Conn, sh: &mut WorkerState) -> String {
    let out = String::from_utf8_lossy(conn.output()).into_owned();
    let n = conn.output().len();
    conn.consume_output(n, sh);
    out
}

/// Feeds `input` cut at `cuts`; the output and the pieces joined.
fn run(input: &[u8], cut: usize) -> (String, Vec<u8>, usize) {
    let (mut sh, mut conn, mut app, seen) = setup();
    for part in input.chunks(cut.max(1)) {
        conn.on_read(part, &mut sh, &mut app);
    }
    let out = output(&mut conn, &mut sh);
    let seen = seen.borrow();
    (out, seen.pieces.concat(), seen.ends)
}

#[test]
fn a_streamed_body_arrives_in_order_whatever_the_reads() {
    let body: Vec<u8> = (0..100u8).collect();
    let mut length = b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n".to_vec();
    length.extend_from_slice(&body);
    length.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut chunked = b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    chunked.extend_from_slice(b"3\r\n");
    chunked.extend_from_slice(&body[..3]);
    chunked.extend_from_slice(b"\r\n61;ext=1\r\n");
    chunked.extend_from_slice(&body[3..]);
    chunked.extend_from_slice(b"\r\n0\r\nTrailer: x\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\n\r\n");
    for input in [&length, &chunked] {
        for cut in [1, 2, 7, 64, input.len()] {
            let (out, got, ends) = run(input, cut);
            // max_body (16) does not apply to a streamed body.
            assert_eq!(got, body, "cut {cut}");
            assert_eq!(ends, 1);
            assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
            assert!(out.contains("\r\n\r\n/up 100HTTP/1.1 200 OK\r\n"), "{out}");
            assert!(out.ends_with("whole 0"), "{out}");
        }
    }
}

#[test]
fn expect_continue_is_the_handlers_decision() {
    // Refused: no 100, the refusal, and the connection closes.
    let (mut sh, mut conn, mut app, _) = setup();
    conn.on_read(
        b"POST /no HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        &mut sh,
        &mut app,
    );
    let out = output(&mut conn, &mut sh);
    assert!(out.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{out}");
    assert!(out.contains("Connection: close\r\n"), "{out}");
    assert!(!out.contains("100 Continue"));
    assert!(conn.is_closing());

    // Streamed: 100 Continue, then the answer at the end.
    let (mut sh, mut conn, mut app, _) = setup();
    conn.on_read(
        b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        &mut sh,
        &mut app,
    );
    assert_eq!(output(&mut conn, &mut sh), "HTTP/1.1 100 Continue\r\n\r\n");
    conn.on_read(b"hello", &mut sh, &mut app);
    assert!(output(&mut conn, &mut sh).ends_with("\r\n\r\n/up 5"));
    assert!(!conn.is_closing());

    // Whole, past max_body: 413 as before.
    let (mut sh, mut conn, mut app, _) = setup();
    conn.on_read(
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 17\r\nExpect: 100-continue\r\n\r\n",
        &mut sh,
        &mut app,
    );
    assert!(output(&mut conn, &mut sh).starts_with("HTTP/1.1 413"));
}

#[test]
fn a_paused_body_waits_for_its_resume() {
    let (mut sh, mut conn, mut app, seen) = setup();
    conn.on_read(b"POST /up?pause HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nab", &mut sh, &mut app);
    assert_eq!(seen.borrow().pieces, [b"ab".to_vec()]);
    assert!(!conn.wants_input(&sh), "a paused body stops the reads");
    // Bytes that arrive meanwhile are kept, not delivered.
    conn.on_read(b"cd", &mut sh, &mut app);
    assert_eq!(seen.borrow().pieces.len(), 1);
    let resume = seen.borrow_mut().resumes.pop().unwrap();
    resume.resume();
    let mut batch = Vec::new();
    sh.take_completions(&mut batch);
    assert_eq!(batch.len(), 1);
    for done in batch.drain(..) {
        assert!(conn.complete(done, &mut sh, &mut app));
    }
    assert_eq!(seen.borrow().pieces, [b"ab".to_vec(), b"cd".to_vec()]);
    assert!(!conn.wants_input(&sh));
    // Dropping a resume resumes too.
    drop(seen.borrow_mut().resumes.pop());
    sh.take_completions(&mut batch);
    for done in batch.drain(..) {
        assert!(conn.complete(done, &mut sh, &mut app));
    }
    assert!(conn.wants_input(&sh));
    conn.on_read(b"ef", &mut sh, &mut app);
    assert_eq!(seen.borrow().ends, 1);
    assert!(output(&mut conn, &mut sh).ends_with("/up 6"));
    // A stale resume (the body is over) does nothing.
    drop(seen.borrow_mut().resumes.pop());
    sh.take_completions(&mut batch);
    for done in batch.drain(..) {
        assert!(!conn.complete(done, &mut sh, &mut app));
    }
}

#[test]
fn a_stopped_body_is_answered_and_closed() {
    let (mut sh, mut conn, mut app, seen) = setup();
    conn.on_read(
        b"POST /up?stop HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
        &mut sh,
        &mut app,
    );
    let out = output(&mut conn, &mut sh);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(conn.is_closing());
    assert_eq!(seen.borrow().ends, 0);
    // A framing error inside a streamed body is a 400, as for a whole one.
    let (mut sh, mut conn, mut app, _) = setup();
    conn.on_read(b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\nabcd\r\n", &mut sh, &mut app);
    assert!(output(&mut conn, &mut sh).starts_with("HTTP/1.1 400"));
}

#[test]
fn an_upgrade_keeps_the_bytes_after_the_head() {
    let (mut sh, mut conn, mut app, _) = setup();
    conn.on_read(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nfirst", &mut sh, &mut app);
    assert!(!conn.wants_input(&sh));
    conn.on_read(b" frame", &mut sh, &mut app);
    let out = output(&mut conn, &mut sh);
    assert!(out.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{out}");
    assert!(out.contains("Connection: Upgrade\r\nUpgrade: x\r\n\r\n"), "{out}");
    assert!(!out.contains("Content-Length"));
    assert!(conn.upgrade_ready());
    let (_, read, _) = conn.take_upgrade().expect("the hand-over");
    assert_eq!(read, b"first frame");
    // A request that did not ask for an upgrade cannot be upgraded.
    let (mut sh, mut conn, mut app, _) = setup();
    conn.on_read(b"GET /ws HTTP/1.1\r\nHost: t\r\n\r\n", &mut sh, &mut app);
    assert!(output(&mut conn, &mut sh).starts_with("HTTP/1.1 500"));
    assert!(conn.take_upgrade().is_none());
}
