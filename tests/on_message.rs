//! A panic in a handler's `on_message` is caught like one in `handle`: the
//! message is lost, the worker and its connections are not, and the next
//! message arrives as usual.
//!
//! The test runs itself again as the master (`FORKRING_ON_MESSAGE_ROLE`).

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use forkring::{Event, Handler, Request, Response, Server};
use forkring_testkit::client::Client;
use forkring_testkit::master::SelfMaster;

const ROLE: &str = "FORKRING_ON_MESSAGE_ROLE";

/// Answers with the last message from the master; panics on `boom`.
#[derive(Default)]
struct Echo {
    /// The last message that did not panic.
    last: Vec<u8>,
}

impl Handler for Echo {
    fn handle(&mut self, _req: &Request<'_>, res: &mut Response) {
        res.body(&self.last);
    }

    fn on_message(&mut self, msg: &[u8]) {
        assert_ne!(msg, b"boom", "a handler that panics on this message");
        self.last = msg.to_vec();
    }
}

fn run_master() {
    // Re-executed workers: the test harness runs this in a thread of its own,
    // and a plain fork from a process with threads is refused.
    let _ = Server::builder()
        .listen("127.0.0.1:0")
        .workers(1)
        .reexec(true)
        .on_event(|ev, ctl| {
            println!("EVENT {ev}");
            match ev {
                Event::Listening { addr, .. } => println!("ADDR {addr}"),
                Event::Ready { worker, .. } => {
                    let _ = ctl.send(worker.slot, b"before");
                    let _ = ctl.send(worker.slot, b"boom");
                    let _ = ctl.send(worker.slot, b"after");
                }
                _ => {}
            }
        })
        .serve(Echo::default);
}

#[test]
fn a_panic_in_on_message_loses_only_that_message() {
    if std::env::var(ROLE).is_ok() {
        run_master();
        return;
    }
    let mut master = SelfMaster::spawn(ROLE, "master", "a_panic_in_on_message_loses_only_that_message");
    let rx = &master.lines;
    let mut lines: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut addr: Option<SocketAddr> = None;
    let mut body = Vec::new();
    while body != b"after" && Instant::now() < deadline {
        while let Ok(l) = rx.try_recv() {
            if let Some(a) = l.strip_prefix("ADDR ") {
                addr = a.parse().ok();
            }
            lines.push(l);
        }
        if let (Some(a), true) = (addr, lines.iter().any(|l| l.starts_with("EVENT ready"))) {
            body = Client::connect(a).get("/").body;
        }
        thread::sleep(Duration::from_millis(20));
    }
    master.stop();
    while let Ok(l) = master.lines.try_recv() {
        lines.push(l);
    }
    assert_eq!(String::from_utf8_lossy(&body), "after", "the message after the panic arrives\n{}", lines.join("\n"));
    let exits: Vec<_> = lines.iter().filter(|l| l.starts_with("EVENT exit") && l.contains("requested=false")).collect();
    assert!(exits.is_empty(), "the worker died: {exits:?}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("EVENT fork")).count(), 1, "{}", lines.join("\n"));
}
