//! hyper 1.x (HTTP/1 only) on tokio serving forkring's demo responses:
//! `GET /` answers `Hello, World!` as text/plain, `POST /echo` sends the body
//! back with the request's Content-Type.
//!
//! Every worker is one current-thread runtime with its own SO_REUSEPORT
//! listening socket, as forkring's workers have: `--mode threads` runs them
//! as threads of one process, `--mode processes` forks one process per
//! worker from a parent that only waits (its children die with it). Tuned
//! as hyper's plaintext benchmarks are: `pipeline_flush`, TCP_NODELAY, no
//! header-read timeout (so no timer per request); header names are sent
//! title-cased, as forkring and nginx send them.

use std::convert::Infallible;
use std::net::TcpListener;

use bytes::Bytes;
use forkring_bench_peers::{args, ready, reuseport_listener, Mode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::http::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

const NAME: &str = "hyper";

async fn demo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // hyper itself closes after a request that asks for it, and says so
    // in its response.
    let text = HeaderValue::from_static("text/plain");
    let res = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/") => {
            let mut res = Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
            res.headers_mut().insert(CONTENT_TYPE, text);
            res
        }
        (&Method::POST, "/echo") => {
            let ct = req
                .headers()
                .get(CONTENT_TYPE)
                .cloned()
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            match req.into_body().collect().await {
                Ok(body) => {
                    let mut res = Response::new(Full::new(body.to_bytes()));
                    res.headers_mut().insert(CONTENT_TYPE, ct);
                    res
                }
                Err(_) => {
                    let mut res = Response::new(Full::new(Bytes::from_static(b"Bad Request")));
                    *res.status_mut() = StatusCode::BAD_REQUEST;
                    res
                }
            }
        }
        _ => {
            let mut res = Response::new(Full::new(Bytes::from_static(b"Not Found")));
            *res.status_mut() = StatusCode::NOT_FOUND;
            res.headers_mut().insert(CONTENT_TYPE, text);
            res
        }
    };
    Ok(res)
}

/// One worker: a current-thread runtime accepting on its own socket until
/// the process ends.
fn worker(id: usize, listener: TcpListener) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap_or_else(|e| fail(&format!("runtime: {e}")));
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap_or_else(|e| fail(&format!("listener: {e}")));
        let mut h1 = http1::Builder::new();
        h1.pipeline_flush(true).title_case_headers(true).header_read_timeout(None);
        ready(NAME, id);
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                // Out of descriptors and the like: keep serving the others.
                Err(_) => continue,
            };
            let _ = stream.set_nodelay(true);
            let conn = h1.serve_connection(TokioIo::new(stream), service_fn(demo));
            tokio::task::spawn(async move {
                let _ = conn.await;
            });
        }
    });
}

fn fail(why: &str) -> ! {
    eprintln!("{NAME}: {why}");
    std::process::exit(1)
}

fn main() {
    let a = args(NAME);
    let bind = || reuseport_listener(a.listen).unwrap_or_else(|e| fail(&format!("listen {}: {e}", a.listen)));
    match a.mode {
        Mode::Threads => {
            // Every socket bound before any worker runs, so that the port
            // is taken before the first ready line.
            let mut listeners: Vec<TcpListener> = (0..a.workers).map(|_| bind()).collect();
            let last = listeners.pop().expect("at least one worker");
            let threads: Vec<_> =
                listeners.into_iter().enumerate().map(|(id, l)| std::thread::spawn(move || worker(id, l))).collect();
            worker(a.workers - 1, last);
            for t in threads {
                let _ = t.join();
            }
        }
        Mode::Processes => {
            let parent = std::process::id();
            for id in 0..a.workers {
                let listener = bind();
                // SAFETY: no thread has been started yet, so the child
                // inherits a consistent single-threaded process.
                let pid = unsafe { libc::fork() };
                if pid < 0 {
                    fail(&format!("fork: {}", std::io::Error::last_os_error()));
                }
                if pid == 0 {
                    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal
                    // number and touches no memory of ours.
                    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                    // The parent may have died before the prctl.
                    // SAFETY: getppid has no preconditions.
                    if unsafe { libc::getppid() } as u32 != parent {
                        std::process::exit(1);
                    }
                    worker(id, listener);
                    std::process::exit(0);
                }
                drop(listener);
            }
            // The parent only waits; when any worker dies, it exits, and
            // PR_SET_PDEATHSIG takes the others with it.
            let mut status = 0;
            // SAFETY: `status` is a valid place for waitpid to write to.
            unsafe { libc::waitpid(-1, &mut status, 0) };
            fail("a worker process exited");
        }
    }
}
