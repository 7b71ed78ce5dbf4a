//! Server-sent events: `res.stream()` makes the body a stream of unknown
//! length (chunked) and returns its writer. The writer never blocks the
//! loop: each stream has a bounded queue, and past it `send` answers
//! `StreamError::Full`, so a slow client makes the writer wait instead of
//! the worker buffer.
//!
//! - `/clock`: one event a second from a worker timer; a beat the client
//!   is too slow for is skipped; the timer stops when the client leaves.
//! - `/count?n=N`: N events as fast as the client reads them; when the
//!   queue is full the writer waits for room with `Stream::on_ready`.
//!
//! ```text
//! cargo run --example sse                              # 127.0.0.1:3004
//! curl -N localhost:3004/clock                         # data: 0, data: 1, ... a second apart
//! curl -sN 'localhost:3004/count?n=1000000' | tail -3  # ends with data: 999999
//! curl -sN --limit-rate 100k 'localhost:3004/count?n=1000000' >/dev/null  # a slow reader: the writer waits
//! ```

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forkring::worker::Timer;
use forkring::{Request, Response, Server, Stream, StreamError};

fn main() -> std::io::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3004".to_owned());
    Server::builder().listen(listen).workers(1).serve(|| {
        |req: &Request<'_>, res: &mut Response| {
            let n = req.query().and_then(|q| q.strip_prefix("n=")?.parse::<u64>().ok());
            match (req.path(), n) {
                ("/clock", _) => clock(res.header("Content-Type", "text/event-stream").stream()),
                ("/count", Some(n)) => {
                    let count =
                        Count { stream: Some(res.header("Content-Type", "text/event-stream").stream()), next: 0, n };
                    fill(Arc::new(Mutex::new(count)));
                }
                _ => {
                    res.status(404).body("try /clock or /count?n=N\n");
                }
            }
        }
    })
}

/// One event a second until the client leaves (or the worker drains).
fn clock(stream: Stream) {
    let beat = Cell::new(0u64);
    let timer: Rc<Cell<Option<Timer>>> = Rc::new(Cell::new(None));
    let me = timer.clone();
    timer.set(Some(forkring::worker::every(Duration::from_secs(1), move || {
        match stream.send(format!("data: {}\n\n", beat.get()).as_bytes()) {
            Ok(()) | Err(StreamError::Full) => beat.set(beat.get() + 1), // Full: a slow client skips a beat
            Err(_) => {
                // The client has gone: stop ticking.
                if let Some(t) = me.take() {
                    t.cancel();
                }
            }
        }
    })));
}

/// What the writer of `/count` keeps between writes.
struct Count {
    /// The writer; taken when the stream ends.
    stream: Option<Stream>,
    /// The next event's number, and how many in all.
    next: u64,
    n: u64,
}

/// Writes events until the queue is full, then again once it has room.
fn fill(count: Arc<Mutex<Count>>) {
    let mut c = count.lock().unwrap();
    while c.next < c.n {
        let Some(stream) = &c.stream else { return };
        match stream.send(format!("data: {}\n\n", c.next).as_bytes()) {
            Ok(()) => c.next += 1,
            Err(StreamError::Full) => {
                // Runs on the loop once the queue has drained to half.
                let again = count.clone();
                stream.on_ready(move || fill(again));
                return;
            }
            Err(_) => return, // the client has gone
        }
    }
    if let Some(stream) = c.stream.take() {
        stream.end();
    }
}
