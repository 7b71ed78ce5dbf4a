//! Streamed bodies in the sans-io HTTP core, driven with byte slices:
//! chunk framing, the end and pipelined requests behind it, a stream
//! completed through a deferred responder, a stream dropped unended, an
//! HTTP/1.0 stream, a connection gone under its writer, and backpressure
//! (a full queue, the connection's bounded output, the ready callback).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use forkring::internals::{Conn, WorkerState};
use forkring::{Limits, Request, Response, Stream, StreamError, Timeouts, STREAM_QUEUE};

#[derive(Default)]
struct App {
    streams: Vec<Stream>,
    responders: Vec<forkring::Responder>,
}

impl forkring::Handler for App {
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) {
        match req.path() {
            "/s" => {
                res.header("Content-Type", "text/event-stream");
                self.streams.push(res.stream());
            }
            "/d" => self.responders.push(res.defer()),
            p => {
                res.body(p);
            }
        }
    }
}

fn setup() -> (WorkerState, Conn, App) {
    let mut sh = WorkerState::new(Limits::default(), Timeouts::default());
    sh.tick();
    let mut conn = Conn::new(&sh);
    conn.set_token(1);
    (sh, conn, App::default())
}

/// Hands every queued completion (responders, stream notifications) to
/// `conn`.
fn deliver(conn: &mut Conn, sh: &mut WorkerState, app: &mut App) {
    let mut batch = Vec::new();
    sh.take_completions(&mut batch);
    for c in batch {
        conn.complete(c, sh, app);
    }
}

/// Takes all output as text, marking it sent.
fn drain(conn: &mut Conn, sh: &mut WorkerState) -> String {
    let mut all = Vec::new();
    while conn.has_output() {
        let out = conn.output().to_vec();
        // Each round takes some output: a connection that says it has
        // output and shows none would keep this loop going for ever.
        assert!(!out.is_empty(), "has_output() with no output to take, after {} bytes", all.len());
        conn.consume_output(out.len(), sh);
        all.extend_from_slice(&out);
    }
    String::from_utf8(all).unwrap()
}

#[test]
fn a_stream_sends_chunks_then_its_end_then_the_next_answer() {
    let (mut sh, mut conn, mut app) = setup();
    conn.on_read(b"GET /s HTTP/1.1\r\nHost: t\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\n\r\n", &mut sh, &mut app);
    let head = drain(&mut conn, &mut sh);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    assert!(!head.contains("Content-Length"), "{head}");
    assert!(head.ends_with("\r\n\r\n"));
    assert!(conn.is_streaming());
    let s = app.streams.pop().unwrap();
    s.send(b"data: 1\n\n").unwrap();
    s.send(b"x").unwrap();
    deliver(&mut conn, &mut sh, &mut app);
    assert_eq!(drain(&mut conn, &mut sh), "a\r\ndata: 1\n\nx\r\n");
    s.end();
    deliver(&mut conn, &mut sh, &mut app);
    let rest = drain(&mut conn, &mut sh);
    assert!(rest.starts_with("0\r\n\r\nHTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(rest.ends_with("/after"), "{rest}");
    assert!(!conn.is_streaming() && !conn.is_closing());
    conn.release(&mut sh);
}

#[test]
fn a_deferred_answer_streams_through_its_responder() {
    let (mut sh, mut conn, mut app) = setup();
    conn.on_read(b"GET /d HTTP/1.1\r\nHost: t\r\n\r\n", &mut sh, &mut app);
    assert!(!conn.has_output());
    let responder = app.responders.pop().unwrap();
    // From another thread, as a pool job would.
    let s = std::thread::spawn(move || {
        let s = responder.stream(Response::new());
        s.send(b"hello").unwrap();
        s
    })
    .join()
    .unwrap();
    deliver(&mut conn, &mut sh, &mut app);
    let out = drain(&mut conn, &mut sh);
    assert!(out.contains("Transfer-Encoding: chunked"), "{out}");
    assert!(out.ends_with("\r\n\r\n5\r\nhello\r\n"), "{out}");
    s.end();
    deliver(&mut conn, &mut sh, &mut app);
    assert_eq!(drain(&mut conn, &mut sh), "0\r\n\r\n");
    conn.release(&mut sh);
}

#[test]
fn a_stream_dropped_unended_closes_without_the_last_chunk() {
    let (mut sh, mut conn, mut app) = setup();
    conn.on_read(b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n", &mut sh, &mut app);
    drain(&mut conn, &mut sh);
    let s = app.streams.pop().unwrap();
    s.send(b"partial").unwrap();
    drop(s);
    deliver(&mut conn, &mut sh, &mut app);
    assert_eq!(drain(&mut conn, &mut sh), "7\r\npartial\r\n");
    assert!(conn.is_closing(), "a cut stream closes the connection");
    conn.release(&mut sh);
}

#[test]
fn http10_streams_end_with_the_close_and_head_gets_no_body() {
    let (mut sh, mut conn, mut app) = setup();
    conn.on_read(b"GET /s HTTP/1.0\r\n\r\n", &mut sh, &mut app);
    let head = drain(&mut conn, &mut sh);
    assert!(head.contains("Connection: close") && !head.contains("chunked"), "{head}");
    let s = app.streams.pop().unwrap();
    s.send(b"raw").unwrap();
    s.end();
    deliver(&mut conn, &mut sh, &mut app);
    assert_eq!(drain(&mut conn, &mut sh), "raw");
    assert!(conn.is_closing());
    conn.release(&mut sh);

    let (mut sh, mut conn, mut app) = setup();
    conn.on_read(b"HEAD /s HTTP/1.1\r\nHost: t\r\n\r\n", &mut sh, &mut app);
    assert!(drain(&mut conn, &mut sh).ends_with("\r\n\r\n"));
    assert!(!conn.is_streaming());
    assert_eq!(app.streams.pop().unwrap().send(b"x"), Err(StreamError::Closed));
    conn.release(&mut sh);
}

#[test]
fn a_gone_connection_fails_writes() {
    let (mut sh, mut conn, mut app) = setup();
    conn.on_read(b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n", &mut sh, &mut app);
    let s = app.streams.pop().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    // Fill the queue so that the callback waits for room (a queue that
    // never fills fails here instead of growing for ever).
    let mut sends = 0;
    while s.send(&[b'x'; 4096]).is_ok() {
        sends += 1;
        assert!(sends <= STREAM_QUEUE / 4096 + 1, "the stream's queue took {sends} sends of 4 KiB and is not full");
    }
    let r = ran.clone();
    assert!(s.on_ready(move || {
        r.fetch_add(1, Ordering::SeqCst);
    }));
    conn.release(&mut sh);
    assert_eq!(ran.load(Ordering::SeqCst), 1, "the waiting writer was told");
    assert_eq!(s.send(b"x"), Err(StreamError::Closed));
    assert!(s.is_closed());
    assert!(!s.on_ready(|| {}));
    // A notification for the gone connection finds nothing.
    let (mut sh2, mut other, mut app2) = setup();
    deliver(&mut other, &mut sh2, &mut app2);
    assert!(!other.has_output());
}

#[test]
fn backpressure_bounds_the_queue_and_the_output() {
    let (mut sh, mut conn, mut app) = setup();
    conn.on_read(b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n", &mut sh, &mut app);
    drain(&mut conn, &mut sh);
    let s = app.streams.pop().unwrap();
    let piece = [b'y'; 1000];
    let mut queued = 0;
    loop {
        match s.send(&piece) {
            Ok(()) => queued += piece.len(),
            Err(StreamError::Full) => break,
            Err(e) => panic!("{e}"),
        }
        // A queue that never fills fails here instead of growing for ever.
        assert!(queued <= STREAM_QUEUE, "the stream's queue took {queued} bytes and is not full");
    }
    assert!(queued <= STREAM_QUEUE && queued > STREAM_QUEUE - piece.len(), "{queued}");
    assert_eq!(s.queued(), queued);
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    s.on_ready(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    // The connection takes what its output room allows, however much the
    // writer queued; nothing is sent meanwhile.
    deliver(&mut conn, &mut sh, &mut app);
    let framed = conn.output_len();
    assert!(framed <= 64 * 1024 + 16, "{framed}");
    // Sending makes room: the connection takes the rest, and the writer's
    // callback runs once the queue is at half.
    let body = drain(&mut conn, &mut sh);
    assert_eq!(body.bytes().filter(|&b| b == b'y').count(), queued);
    assert_eq!(s.queued(), 0);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    s.end();
    deliver(&mut conn, &mut sh, &mut app);
    assert_eq!(drain(&mut conn, &mut sh), "0\r\n\r\n");
    conn.release(&mut sh);
}
