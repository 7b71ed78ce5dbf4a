//! Worker timers: closures that run on the worker's event loop, between
//! requests, with no thread. `forkring::worker::every` refreshes state
//! every second; `forkring::worker::after` answers a deferred request once;
//! the returned `Timer` cancels.
//!
//! ```text
//! cargo run --example timers                  # 127.0.0.1:3003, one worker
//! curl localhost:3003/                        # up 4 s (ticks while the timer runs)
//! curl 'localhost:3003/later?ms=500'          # answered by a one-shot timer after 500 ms
//! curl -X POST localhost:3003/stop            # cancels the ticking timer: / stops counting
//! ```
//!
//! `cargo run --example timers -- 127.0.0.1:0` listens elsewhere.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use forkring::worker::Timer;
use forkring::{Request, Response, Server};

fn main() -> std::io::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3003".to_owned());
    Server::builder().listen(listen).workers(1).serve(|| {
        // The factory runs in the worker, on its loop: timers are set here.
        let up = Rc::new(Cell::new(0u64));
        let ticks = up.clone();
        let ticking = forkring::worker::every(Duration::from_secs(1), move || ticks.set(ticks.get() + 1));
        let mut ticking = Some(ticking);
        move |req: &Request<'_>, res: &mut Response| match (req.method(), req.path()) {
            ("GET", "/") => {
                res.header("Content-Type", "text/plain").body(format!("up {} s\n", up.get()));
            }
            ("GET", "/later") => {
                let ms = query_ms(req).unwrap_or(100).min(10_000);
                let responder = res.defer();
                forkring::worker::after(Duration::from_millis(ms), move || {
                    let mut res = Response::new();
                    res.header("Content-Type", "text/plain").body(format!("answered after {ms} ms\n"));
                    responder.send(res);
                });
            }
            ("POST", "/stop") => {
                let stopped = ticking.take().is_some_and(Timer::cancel);
                res.body(if stopped { "stopped\n" } else { "already stopped\n" });
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
