//! Messages and counters between the master and its workers: the README's
//! example. `cargo run --example messages`, then `curl localhost:8080/`.

use forkring::{Event, Handler, Request, Response, Server};
use std::time::Duration;

#[derive(Default)]
struct App {
    config: Vec<u8>,
}

impl Handler for App {
    fn handle(&mut self, _req: &Request<'_>, res: &mut Response) {
        res.body(&self.config);
        // To the master, from anywhere in the worker:
        let _ = forkring::worker::send(b"served one");
    }
    // Runs on the worker's event loop when the master sends something.
    fn on_message(&mut self, msg: &[u8]) {
        self.config = msg.to_vec();
    }
}

fn main() -> std::io::Result<()> {
    Server::builder()
        .on_event(|event, _ctl| {
            if let Event::Message { worker, data } = event {
                println!("{worker} says {}", String::from_utf8_lossy(data));
            }
        })
        // On the master loop: send, broadcast, read counters.
        .every(Duration::from_secs(1), |ctl| {
            let total = ctl.total();
            ctl.broadcast(format!("{} requests so far", total.requests).as_bytes());
        })
        .serve(App::default)
}
