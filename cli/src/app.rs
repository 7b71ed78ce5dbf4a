//! The routes of `forkring`, the server: `GET /` and `POST /echo`, and
//! with `--static DIR` the files under `DIR` at `/files/`.
//!
//! Where it stops: the operations around it (listening, workers, metrics,
//! access log, signals) are the library's, set by [`crate::Options`];
//! routes that exist for tests and benchmarks are the fixture's, which
//! hands every other request to this handler.

use std::path::Path;

use forkring::files::StaticDir;
use forkring::{Handler, Request, Response};

/// What the product answers, as `--help` lists it.
pub const ROUTES: &str = "\
Routes:
  GET /, HEAD /          200 \"Hello, World!\"
  POST /echo             the request body back, with its Content-Type
  GET, HEAD /files/PATH  the file DIR/PATH (with --static DIR): Range,
                         If-Modified-Since, sent without copies
  anything else          404; another method on a route: 405";

/// The product's handler: one per worker.
#[derive(Debug, Default)]
pub struct App {
    /// The directory served at `/files/` (`--static`).
    files: Option<StaticDir>,
}

impl App {
    /// The routes above, with the files under `static_dir` at `/files/`
    /// when it is given and can be opened (check it before serving: a
    /// worker cannot report the error).
    pub fn new(static_dir: Option<&Path>) -> App {
        // Each worker opens the directory itself.
        App { files: static_dir.and_then(|d| StaticDir::new(d).ok()) }
    }
}

impl Handler for App {
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) {
        match req.path() {
            "/" => match req.method() {
                // HEAD gets the same head; the runtime leaves the body out.
                "GET" | "HEAD" => {
                    res.header("Content-Type", "text/plain").body("Hello, World!");
                }
                _ => method_not_allowed(res, "GET, HEAD"),
            },
            "/echo" => match req.method() {
                "POST" => {
                    let ct = req.header("Content-Type").unwrap_or(b"application/octet-stream");
                    res.header("Content-Type", ct).body(req.body());
                }
                _ => method_not_allowed(res, "POST"),
            },
            path => match (path.strip_prefix("/files/"), &self.files) {
                (Some(rest), Some(dir)) => dir.serve(req, rest, res),
                _ => {
                    res.status(404).header("Content-Type", "text/plain").body("Not Found");
                }
            },
        }
    }
}

/// `405` with the methods the route takes.
pub fn method_not_allowed(res: &mut Response, allow: &str) {
    res.status(405).header("Allow", allow).header("Content-Type", "text/plain").body("Method Not Allowed");
}
