//! The Node.js `cluster` program of the article this project grew from,
//! line for line: the master logs `fork`, `online`, `listening`,
//! `disconnect` and `exit` as the article does, a worker that dies is
//! replaced, three seconds after the start the master sends a message to
//! every worker and each answers, and every worker answers HTTP with its id
//! and pid. Node's worker ids count forks from 1; forkring's are
//! `slot.generation` (`0.0`, and `0.1` for the worker that replaces it).
//!
//! ```text
//! cargo run --example cluster                 # one worker per CPU on 127.0.0.1:5000
//! curl localhost:5000/                        # worker received request, id:0.0,pid:4242
//! kill -9 4242                                # exit worker0.0 died, ...; fork: worker0.1
//! ```
//!
//! `cargo run --example cluster -- ADDR DELAY_MS` listens on ADDR and sends
//! the messages DELAY_MS after the start (3000 by default).

use std::time::Duration;

use forkring::{Event, Handler, Request, Response, Server, WorkerId};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:5000".to_owned());
    let delay = Duration::from_millis(args.next().and_then(|ms| ms.parse().ok()).unwrap_or(3000));

    // `if (cluster.isMaster)`: what runs before `serve` runs in the master
    // only; the handler factory (`Node::start`) runs in each worker.
    println!("[master] master started, pid:{}", std::process::id());
    let mut sent = false;
    Server::builder()
        .listen(listen)
        // `for (var i = 0; i < numCPUs; i++) cluster.fork();`
        .workers(forkring::default_workers())
        .on_event(|event, _ctl| match event {
            Event::Fork { worker, .. } => println!("[master] fork: worker{worker}"),
            Event::Online { worker, .. } => println!("[master] online: worker{worker}"),
            Event::Listening { worker, pid, addr } => {
                println!("[master] listening: worker{worker},pid:{pid}, address:{addr}")
            }
            Event::Disconnect { worker, .. } => println!("[master] disconnect: worker{worker}"),
            // `cluster.fork()` in the exit handler: the runtime replaces a
            // worker that died at once (the fork event follows); a worker
            // asked to stop (shutdown, reload) is not a death.
            Event::Exit { worker, requested: false, .. } => {
                println!("[master] exit worker{worker} died, try to fork a new worker.")
            }
            Event::Exit { worker, .. } => println!("[master] exit worker{worker}"),
            // `cluster.workers[id].on('message', ...)`
            Event::Message { worker, data } => {
                println!("[master] received msg:{}from worker{worker}", String::from_utf8_lossy(data))
            }
            _ => {}
        })
        // `setTimeout(..., 3000)`: once, to every worker.
        .every(delay, move |ctl| {
            if std::mem::replace(&mut sent, true) {
                return;
            }
            for (i, worker) in ctl.workers().into_iter().enumerate() {
                let msg = format!("[master] send msg {} to worker{worker}", i + 1);
                let _ = ctl.send(worker.slot, msg.as_bytes());
            }
        })
        .serve(Node::start)
}

/// `else if (cluster.isWorker)`: one per worker process.
struct Node {
    /// `cluster.worker.id`.
    id: WorkerId,
}

impl Node {
    fn start() -> Node {
        let id = forkring::worker::id().expect("the factory runs in a worker");
        println!("[worker] worker{id} started, pid:{}", std::process::id());
        Node { id }
    }
}

impl Handler for Node {
    // `process.on('message', ...)`
    fn on_message(&mut self, msg: &[u8]) {
        println!("[worker] worker{} received msg:{}", self.id, String::from_utf8_lossy(msg));
        let _ = forkring::worker::send(format!("[worker] send msg {} to master.", self.id).as_bytes());
    }

    // `http.createServer(function (req, res) { ... }).listen(5000)`
    fn handle(&mut self, _req: &Request<'_>, res: &mut Response) {
        let response = format!("worker received request, id:{},pid:{}", self.id, std::process::id());
        println!("{response}");
        res.header("content-type", "text/html").body(response);
    }
}
