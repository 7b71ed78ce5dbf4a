//! Answering later from the worker's blocking pool: the handler takes a
//! `Responder` with `res.defer()`, gives it to a pool thread with
//! `forkring::worker::spawn_blocking`, and returns at once; the loop goes
//! on serving every other connection while the thread blocks.
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
        // use (never in the master).
        .pool(8)
        .serve(|| {
            |req: &Request<'_>, res: &mut Response| match req.path() {
                "/report" => {
                    let ms = query_ms(req).unwrap_or(100).min(10_000);
                    let responder = res.defer();
                    forkring::worker::spawn_blocking(move || {
                        // A blocking call: a database client, a slow disk.
                        std::thread::sleep(Duration::from_millis(ms));
                        let mut res = Response::new();
                        res.header("Content-Type", "text/plain").body(format!("report ready after {ms} ms\n"));
                        responder.send(res);
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
