//! may_minihttp (coroutines on `may`, TechEmpower's top Rust plaintext
//! entry) serving forkring's demo responses: `GET /` answers
//! `Hello, World!` as text/plain, `POST /echo` sends the body back.
//!
//! Workers are may's scheduler threads (`--workers`), not pinned by may
//! itself: the bench pins the process as it pins forkring. One coroutine
//! accepts on one listening socket, as may_minihttp does; it has no
//! SO_REUSEPORT. Pool and stack sizes are those of its TechEmpower entry.
//!
//! What may_minihttp lets a handler not choose: the status line says
//! `200 Ok`, every response has `Server: M`, and it never closes a
//! connection itself. The handler answers `Connection: close` with the same
//! header, as forkring does, so a client that honours it (wrk) closes.

use std::io::{self, Read};

use forkring_bench_peers::{args, ready, wants_close};
use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};

const NAME: &str = "may_minihttp";

/// One per connection; holds nothing.
struct Demo;

impl HttpService for Demo {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()> {
        let close =
            wants_close(req.headers().iter().filter(|h| h.name.eq_ignore_ascii_case("connection")).map(|h| h.value));
        match (req.method(), req.path()) {
            ("GET", "/") => rsp.header("Content-Type: text/plain").body("Hello, World!"),
            ("POST", "/echo") => {
                // The header takes only a static string: the bench's
                // clients send this type, forkring's default too.
                rsp.header("Content-Type: application/octet-stream");
                let mut body = Vec::new();
                req.body().read_to_end(&mut body)?;
                rsp.body_vec(body);
            }
            _ => {
                rsp.status_code(404, "Not Found");
                rsp.header("Content-Type: text/plain").body("Not Found");
            }
        }
        if close {
            rsp.header("Connection: close");
        }
        Ok(())
    }
}

struct Factory;

impl HttpServiceFactory for Factory {
    type Service = Demo;

    fn new_service(&self, _id: usize) -> Demo {
        Demo
    }
}

fn main() {
    let a = args(NAME);
    let config = may::config();
    config.set_workers(a.workers).set_pool_capacity(500).set_stack_size(0x1000);
    config.set_worker_pin(false);
    let server = match Factory.start(a.listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{NAME}: listen {}: {e}", a.listen);
            std::process::exit(1);
        }
    };
    // The scheduler's threads serve every connection; one line per worker
    // so that bench/run.sh waits for all peers alike.
    for w in 0..a.workers {
        ready(NAME, w);
    }
    if server.join().is_err() {
        std::process::exit(1);
    }
}
