//! Embedding forkring: a handler with per-worker state.
//!
//! ```text
//! cargo run --example hello
//! curl localhost:3000/            # Hello, World!
//! curl localhost:3000/count       # requests this worker has served
//! ```

use std::time::Duration;

use forkring::{Limits, Request, Response, Server, Timeouts};

fn main() -> std::io::Result<()> {
    Server::builder()
        .listen("127.0.0.1:3000")
        .limits(Limits::DEFAULT.with_max_body(1 << 20))
        .timeouts(Timeouts::DEFAULT.with_idle(Duration::from_secs(30)))
        // The factory runs in the worker: each worker owns its handler, so
        // the counter needs no lock.
        .serve(|| {
            let mut served = 0u64;
            move |req: &Request<'_>, res: &mut Response| {
                served += 1;
                match (req.method(), req.path()) {
                    ("GET", "/") => {
                        res.header("Content-Type", "text/plain").body("Hello, World!\n");
                    }
                    ("GET", "/count") => {
                        res.header("Content-Type", "text/plain").body(format!("{served}\n"));
                    }
                    _ => {
                        res.status(404).body("Not Found\n");
                    }
                }
            }
        })
}
