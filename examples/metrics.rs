//! Per-worker counters and the metrics listener. Each worker counts its
//! requests, responses by class, bytes and connections in a shared-memory
//! page, without system calls; the master reads them at any time
//! (`Ctl::counters`, `Ctl::total`) and, with `Server::metrics`, serves them
//! in the Prometheus text format beside `/ready` and `/live`, from its own
//! loop.
//!
//! ```text
//! cargo run --example metrics                 # the app on 127.0.0.1:3007, metrics on 127.0.0.1:3008
//! for i in $(seq 20); do curl -s localhost:3007/ >/dev/null; done
//! curl -s localhost:3008/metrics | grep '^forkring_requests_total'   # per slot
//! curl -i localhost:3008/ready                # 200 while a worker is ready
//! curl localhost:3008/live                    # 200 while the master runs
//! ```
//!
//! Every five seconds the master also prints each worker's requests and the
//! total on stdout. `cargo run --example metrics -- APP_ADDR METRICS_ADDR`
//! listens elsewhere.

use std::time::Duration;

use forkring::{Request, Response, Server};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:3007".to_owned());
    let metrics = args.next().unwrap_or_else(|| "127.0.0.1:3008".to_owned());
    Server::builder()
        .listen(listen)
        .workers(2)
        // GET /metrics, /ready and /live, served by the master. Bind it to
        // a private address: it has no authentication.
        .metrics(metrics)
        // On the master loop: read the counters pages.
        .every(Duration::from_secs(5), |ctl| {
            let mut line = String::new();
            for w in ctl.workers() {
                if let Some(c) = ctl.counters(w.id.slot) {
                    line.push_str(&format!("worker {} (pid {}): {} requests; ", w.id, w.pid, c.requests));
                }
            }
            let total = ctl.total();
            println!(
                "{line}total: {} requests, {} 2xx, {} 4xx",
                total.requests, total.responses[1], total.responses[3]
            );
        })
        .serve(|| {
            |req: &Request<'_>, res: &mut Response| match req.path() {
                "/" => {
                    res.header("Content-Type", "text/plain").body("Hello, World!\n");
                }
                _ => {
                    res.status(404).body("Not Found\n");
                }
            }
        })
}
