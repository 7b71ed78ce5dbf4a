//! The Node.js `cluster` program of the article this project grew from,
//! line for line: the master logs `fork`, `online`, `listening`,
//! `disconnect` and `exit` in Node's order, a worker that dies is
//! replaced, three seconds after the start a timer thread of the master
//! broadcasts a message to every worker and each answers, and every worker
//! answers HTTP with its id and pid. Node's worker ids count forks from 1;
//! forkring's are `slot.generation` (`0.0`, and `0.1` for the worker that
//! replaces it).
//!
//! ```text
//! cargo run --example cluster                 # one worker per CPU on 127.0.0.1:5000
//! curl localhost:5000/                        # worker received request, id:0.0,pid:4242
//! kill -9 4242                                # disconnect: worker0.0; exit worker0.0 died, ...; fork: worker0.1
//! ```
//!
//! `cargo run --example cluster -- ADDR DELAY_MS` listens on ADDR and sends
//! the messages DELAY_MS after the start (3000 by default).
//!
//! As in Node, each worker is a fresh execution of the program
//! ([`Server::reexec`]): what runs before `serve` runs again in every
//! worker, so the master's part is guarded by `forkring::is_primary()`
//! (Node's `cluster.isPrimary`). Re-exec is also what makes the master's
//! timer thread safe: a plain fork from a process with threads is refused.

use std::time::Duration;

use forkring::{Event, Handler, Request, Response, Server, WorkerId};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:5000".to_owned());
    let delay = Duration::from_millis(args.next().and_then(|ms| ms.parse().ok()).unwrap_or(3000));

    let server = Server::builder()
        .listen(listen)
        .reexec(true)
        // `for (var i = 0; i < numCPUs; i++) cluster.fork();`
        .workers(forkring::default_workers())
        // `cluster.on('fork' | 'online' | 'listening' | 'disconnect' |
        // 'exit', ...)`, and each worker's `on('message', ...)`.
        .on_event(|event, _ctl| match event {
            Event::Fork { worker, .. } => println!("[master] fork: worker{worker}"),
            Event::Online { worker, .. } => println!("[master] online: worker{worker}"),
            Event::Listening { worker, pid, addr } => {
                println!("[master] listening: worker{worker},pid:{pid}, address:{addr}")
            }
            // The worker's channel closed: after its drain, or its death.
            Event::Disconnect { worker, .. } => println!("[master] disconnect: worker{worker}"),
            // `cluster.fork()` in the exit handler: the runtime replaces a
            // worker that died at once (the fork event follows); a worker
            // asked to stop (shutdown, reload) is not a death.
            Event::Exit { worker, requested: false, .. } => {
                println!("[master] exit worker{worker} died, try to fork a new worker.")
            }
            Event::Exit { worker, .. } => println!("[master] exit worker{worker}"),
            // A worker's `error`: it could not be forked.
            Event::ForkFailed { slot, reason } => println!("[master] error: no worker for slot {slot}: {reason}"),
            Event::Message { worker, data } => {
                println!("[master] received msg:{}from worker{worker}", String::from_utf8_lossy(data))
            }
            _ => {}
        });

    // `if (cluster.isMaster)`: the master's own part.
    if forkring::is_primary() {
        println!("[master] master started, pid:{}", std::process::id());
        // `setTimeout(function () { eachWorker(...) }, 3000)`, from a
        // thread of the master, through a handle. (A thread the master's
        // signals are blocked in: a Ctrl-C meanwhile is the loop's drain.)
        let handle = server.handle();
        forkring::spawn_master_thread(move || {
            std::thread::sleep(delay);
            if let Err(e) = handle.broadcast(b"[master] send msg to every worker") {
                eprintln!("[master] broadcast: {e}");
            }
        });
    }
    // In a worker, `serve` runs the worker: `else if (cluster.isWorker)`.
    server.serve(Node::start)
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
    // `process.on('message', ...)`, and `process.send(...)` to answer.
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
