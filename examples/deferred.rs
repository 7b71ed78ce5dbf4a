//! Answering later from the worker's blocking pool: `res.blocking(f)` runs
//! `f` on a pool thread and sends the response it returns; the handler
//! returns at once and the loop goes on serving every other connection
//! while the thread blocks. It also answers `503` with `Retry-After` at once
//! when the pool's queue or the deferred requests are full, and skips `f`
//! when the client has gone before a thread picks it up. (The long way,
//! for work that ends elsewhere: `res.try_defer()` for a `Responder`,
//! `forkring::worker::spawn_blocking`, `Responder::is_live`.)
//!
//! ```text
//! cargo run --example deferred                # 127.0.0.1:3002, one worker
//! curl 'localhost:3002/report?ms=500'         # report ready after 500 ms
//! curl localhost:3002/                        # fast, even while reports wait
//! time (for i in 1 2 3 4; do curl -s 'localhost:3002/report?ms=500' & done; wait)
//!                                             # four reports in about 0.5 s, not 2 s
//! ```
//!
//! `cargo run --example deferred -- 127.0.0.1:0` listens elsewhere.

use std::time::Duration;

use forkring::{Request, Response, Server};

fn main() -> std::io::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3002".to_owned());
    Server::builder()
        .listen(listen)
        .workers(1)
        // Threads of each worker's pool, started in the worker on first
        // use (never in the master), and the jobs it queues beyond them.
        .pool(8)
        .pool_queue(64)
        .serve(|| {
            |req: &Request<'_>, res: &mut Response| match req.path() {
                "/report" => {
                    let ms = query_ms(req).unwrap_or(100).min(10_000);
                    res.blocking(move || {
                        // A blocking call: a database client, a slow disk.
                        std::thread::sleep(Duration::from_millis(ms));
                        let mut res = Response::new();
                        res.header("Content-Type", "text/plain").body(format!("report ready after {ms} ms\n"));
                        res
                    });
                }
                "/" => {
                    res.header("Content-Type", "text/plain").body("fast\n");
                }
                _ => {
                    res.status(404).body("Not Found\n");
                }
            }
        })
}

/// The `N` of `?ms=N`.
fn query_ms(req: &Request<'_>) -> Option<u64> {
    req.query()?.split('&').find_map(|kv| kv.strip_prefix("ms="))?.parse().ok()
}
