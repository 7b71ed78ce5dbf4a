//! Node `cluster` parity on real processes: the seed program's flow (events
//! in Node's order, a broadcast from a timer thread of the master after
//! 3 s, the workers' replies), a listening socket opened after the start
//! and handed to a worker, which serves on it, and the event of a worker
//! that could not be forked.
//!
//! Each test runs this binary again as the master (`FORKRING_NODE_ROLE`);
//! its workers are further executions of it ([`Server::reexec`]: the test
//! harness has threads). What the master and its workers print on stdout
//! is what the tests read.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::thread;
use std::time::{Duration, Instant};

use forkring::{Command, Event, Handle, Handler, Request, Response, SendError, Server, WorkerId};
use forkring_testkit::master::SelfMaster;

const ROLE: &str = "FORKRING_NODE_ROLE";

/// The seed's `setTimeout(..., 3000)`.
const DELAY: Duration = Duration::from_secs(3);
/// Descriptors handed in a row to check that none stays behind.
const HANDED_MANY: usize = 50;
/// How long a test waits for any one line.
const WAIT: Duration = Duration::from_secs(20);

/// The workers' handler: answers the master's messages (`process.send`),
/// and serves any listening socket it is handed from a thread of its own.
struct Worker {
    id: WorkerId,
    /// Descriptors tagged `drop` received so far.
    dropped: usize,
}

impl Handler for Worker {
    fn handle(&mut self, _req: &Request<'_>, res: &mut Response) {
        res.body("hello");
    }

    fn on_message(&mut self, msg: &[u8]) {
        println!("WORKER {} received {}", self.id, String::from_utf8_lossy(msg));
        let _ = forkring::worker::send(format!("reply from {}", self.id).as_bytes());
    }

    fn on_descriptor(&mut self, fd: OwnedFd, tag: &[u8]) {
        if tag == b"drop" {
            // Closed here: counted only.
            self.dropped += 1;
            if self.dropped == HANDED_MANY {
                println!("WORKER {} dropped {}", self.id, self.dropped);
            }
            return;
        }
        let tag = String::from_utf8_lossy(tag).into_owned();
        println!("WORKER {} got descriptor {tag}", self.id);
        let listener = TcpListener::from(fd);
        let (id, pid) = (self.id, std::process::id());
        // The loop must not block: a thread of the worker's serves it.
        thread::spawn(move || {
            for mut conn in listener.incoming().map_while(Result::ok) {
                let _ = writeln!(conn, "{tag} served by worker {id} pid {pid}");
            }
        });
    }
}

fn worker() -> Worker {
    Worker { id: forkring::worker::id().expect("in a worker"), dropped: 0 }
}

/// Shuts the cluster down when the test writes `stop` to the master's
/// stdin. (Not SIGTERM: the test harness's own threads of this process do
/// not block it, and its default action would end the master at once.)
fn obey_stdin(handle: Handle) {
    thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if line.trim() == "stop" {
                handle.command(Command::Shutdown);
            }
        }
    });
}

/// Asks the master to stop and waits for it to exit cleanly.
fn stop(master: &mut SelfMaster) {
    master.command("stop");
    let status = master.wait_exit(WAIT).expect("the master exits after a shutdown");
    assert!(status.success(), "{status:?}\n{}", master.seen.join("\n"));
}

/// The seed's master: two workers, every event printed, a timer thread
/// that broadcasts after [`DELAY`].
fn seed_master() {
    let started = Instant::now();
    let mut builder = Server::builder().listen("127.0.0.1:0").workers(2).reexec(true);
    let mut ready = 0;
    builder = builder.on_event(move |ev, ctl| {
        match ev {
            Event::Message { worker, data } => println!("EVENT message {worker} {}", String::from_utf8_lossy(data)),
            ev => println!("EVENT {ev}"),
        }
        if let Event::Ready { .. } = ev {
            ready += 1;
            if ready == 2 {
                let workers: Vec<String> = ctl.workers().iter().map(|w| format!("{}={}", w.id, w.pid)).collect();
                println!("WORKERS {}", workers.join(" "));
                // A handle on the loop's own thread would wait for itself.
                println!("ONLOOP {:?}", ctl.handle().send(0, b"x"));
            }
        }
    });
    if forkring::is_primary() {
        obey_stdin(builder.handle());
        let handle = builder.handle();
        forkring::spawn_master_thread(move || {
            thread::sleep(DELAY);
            let reached = handle.broadcast(b"hello from the master");
            println!("BROADCAST {reached:?} after {} ms", started.elapsed().as_millis());
            println!("NOSLOT {:?}", handle.send(7, b"x"));
        });
    }
    let r = builder.serve(worker);
    if forkring::is_primary() {
        println!("SERVE {r:?}");
    }
}

/// A master that hands listening sockets, opened once its worker serves,
/// to that worker: one from a callback ([`forkring::Ctl::send_fd`]), one
/// from another thread ([`forkring::Handle::send_fd`]).
fn handing_master() {
    let mut builder = Server::builder().listen("127.0.0.1:0").workers(1).reexec(true);
    builder = builder.on_event(|ev, ctl| {
        println!("EVENT {ev}");
        if let Event::Ready { worker, .. } = ev {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            let r = ctl.send_fd(worker.slot, l.as_fd(), b"from-ctl");
            println!("HANDED from-ctl {} {r:?}", l.local_addr().unwrap());
        }
        if let Event::Draining { worker, .. } = ev {
            // A draining worker takes nothing more.
            println!("DRAINING-SENDFD {:?}", ctl.send_fd(worker.slot, std::io::stdout().as_fd(), b"late"));
        }
    });
    let handle = builder.handle();
    if forkring::is_primary() {
        obey_stdin(builder.handle());
        let events = builder.events();
        let handle = builder.handle();
        thread::spawn(move || {
            for ev in events {
                if let Event::Ready { worker, .. } = ev {
                    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
                    let r = handle.send_fd(worker.slot, l.as_fd(), b"from-handle");
                    println!("HANDED from-handle {} {r:?}", l.local_addr().unwrap());
                    // The master's copy closes here; the worker's serves.
                    drop(l);
                    println!("NOSLOT-SENDFD {:?}", handle.send_fd(9, std::io::stdout().as_fd(), b"x"));
                    // Many more: the master keeps none of its duplicates.
                    let before = open_fds();
                    for _ in 0..HANDED_MANY {
                        if let Err(e) = handle.send_fd(worker.slot, std::io::stdout().as_fd(), b"drop") {
                            println!("DROP-SENDFD {e}");
                        }
                    }
                    println!("MASTER-FDS {before} {}", open_fds());
                }
            }
        });
    }
    let r = builder.serve(worker);
    if forkring::is_primary() {
        println!("SERVE {r:?}");
        println!("AFTER {:?}", handle.send(0, b"x"));
    }
}

/// How many descriptors this process holds.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// A master that cannot fork: a plain fork from a process with threads
/// (the test harness's) is refused.
fn unforkable_master() {
    let r = Server::builder().listen("127.0.0.1:0").workers(1).on_event(|ev, _| println!("EVENT {ev}")).serve(|| {
        |_: &Request<'_>, res: &mut Response| {
            res.body("never");
        }
    });
    println!("SERVE {}", if r.is_ok() { "ok" } else { "err" });
}

/// The first line with `marker`, from `marker` on (a line may begin with
/// what a worker's test harness wrote without a newline).
fn line_from(master: &mut SelfMaster, marker: &str) -> String {
    let l = master.wait_for(marker, WAIT);
    l[l.find(marker).unwrap_or(0)..].to_owned()
}

/// Every line the master printed so far, after waiting for one with
/// `what`.
fn lines_after(master: &mut SelfMaster, what: &str) -> Vec<String> {
    master.wait_for(what, WAIT);
    while let Ok(l) = master.lines.try_recv() {
        master.seen.push(l);
    }
    master.seen.clone()
}

/// The `EVENT` lines of `lines` by worker, as their kinds. (A line may
/// begin with what a worker's test harness wrote without a newline.)
fn events_by_worker(lines: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut by = BTreeMap::<String, Vec<String>>::new();
    for l in lines {
        let Some(ev) = l.find("EVENT ").map(|i| &l[i + "EVENT ".len()..]) else { continue };
        let mut w = ev.split(' ');
        let (Some(kind), Some(worker)) = (w.next(), w.next()) else { continue };
        by.entry(worker.to_owned()).or_default().push(kind.to_owned());
    }
    by
}

#[test]
fn the_seed_flow_events_in_nodes_order_and_a_broadcast_from_a_timer_thread() {
    if std::env::var(ROLE).is_ok() {
        seed_master();
        return;
    }
    let test = "the_seed_flow_events_in_nodes_order_and_a_broadcast_from_a_timer_thread";
    let mut master = SelfMaster::spawn(ROLE, "seed", test);
    let workers = line_from(&mut master, "WORKERS ");
    assert!(master.wait_for("ONLOOP ", WAIT).ends_with(&format!("{:?}", Err::<(), _>(SendError::OnLoop))));
    // Ctl::workers lists both, with the pids their fork events gave.
    for w in workers["WORKERS ".len()..].split(' ') {
        let (id, pid) = w.split_once('=').expect("id=pid");
        master.wait_for(&format!("EVENT fork {id} pid={pid}"), WAIT);
    }
    // The broadcast from the timer thread, after the delay, reaches both
    // workers, and each one's reply reaches the master.
    let broadcast = line_from(&mut master, "BROADCAST ");
    assert!(broadcast.starts_with("BROADCAST Ok(2) after "), "{broadcast}");
    let ms: u128 = broadcast.rsplit(' ').nth(1).unwrap().parse().unwrap();
    assert!(ms >= DELAY.as_millis(), "{broadcast}");
    for id in ["0.0", "1.0"] {
        master.wait_for(&format!("WORKER {id} received hello from the master"), WAIT);
        master.wait_for(&format!("EVENT message {id} reply from {id}"), WAIT);
    }
    assert!(master.wait_for("NOSLOT ", WAIT).ends_with(&format!("{:?}", Err::<(), _>(SendError::NoSuchSlot))));
    // Shutdown: each worker drains, its channel closes, it exits.
    stop(&mut master);
    let lines = lines_after(&mut master, "SERVE ");
    let by = events_by_worker(&lines);
    for id in ["0.0", "1.0"] {
        let kinds = by.get(id).unwrap_or_else(|| panic!("no events of {id}\n{}", lines.join("\n")));
        assert_eq!(
            kinds,
            &["fork", "online", "listening", "ready", "message", "draining", "disconnect", "exit"],
            "worker {id}\n{}",
            lines.join("\n")
        );
    }
    assert!(lines.iter().any(|l| l.ends_with("SERVE Ok(())")), "{}", lines.join("\n"));
}

#[test]
fn a_listening_socket_opened_after_start_is_handed_to_a_worker_that_serves_it() {
    if std::env::var(ROLE).is_ok() {
        handing_master();
        return;
    }
    let test = "a_listening_socket_opened_after_start_is_handed_to_a_worker_that_serves_it";
    let mut master = SelfMaster::spawn(ROLE, "handing", test);
    let ready = master.wait_for("EVENT ready 0.0 pid=", WAIT);
    let pid = ready.rsplit("pid=").next().unwrap().to_owned();
    for tag in ["from-ctl", "from-handle"] {
        let handed = line_from(&mut master, &format!("HANDED {tag} "));
        assert!(handed.ends_with(" Ok(())"), "{handed}");
        let addr = handed.split(' ').nth(2).unwrap();
        master.wait_for(&format!("WORKER 0.0 got descriptor {tag}"), WAIT);
        // The worker accepts on the socket the master opened and answers.
        let mut conn = TcpStream::connect(addr).expect("connect to the handed socket");
        conn.set_read_timeout(Some(WAIT)).unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).expect("the worker's answer");
        assert_eq!(answer, format!("{tag} served by worker 0.0 pid {pid}\n"));
    }
    assert!(line_from(&mut master, "NOSLOT-SENDFD ").ends_with("Err(NoSuchSlot)"));
    master.wait_for(&format!("WORKER 0.0 dropped {HANDED_MANY}"), WAIT);
    let fds = line_from(&mut master, "MASTER-FDS ");
    let counts: Vec<&str> = fds.split(' ').skip(1).collect();
    assert_eq!(counts[0], counts[1], "{fds}");
    // The cluster goes on as before: it drains and stops cleanly.
    stop(&mut master);
    let lines = lines_after(&mut master, "AFTER ");
    assert!(lines.iter().any(|l| l.ends_with("SERVE Ok(())")), "{}", lines.join("\n"));
    assert!(lines.iter().any(|l| l.ends_with("DRAINING-SENDFD Err(Closed)")), "{}", lines.join("\n"));
    // Once the master is gone, a handle says so.
    assert!(lines.iter().any(|l| l.ends_with("AFTER Err(NoMaster)")), "{}", lines.join("\n"));
    assert!(!lines.iter().any(|l| l.contains("DROP-SENDFD")), "{}", lines.join("\n"));
    assert!(!lines.iter().any(|l| l.contains("requested=false")), "{}", lines.join("\n"));
}

#[test]
fn a_worker_that_cannot_be_forked_is_an_event() {
    if std::env::var(ROLE).is_ok() {
        unforkable_master();
        return;
    }
    let mut master = SelfMaster::spawn(ROLE, "unforkable", "a_worker_that_cannot_be_forked_is_an_event");
    let failed = line_from(&mut master, "EVENT fork failed slot=0: ");
    assert!(failed.contains("threads"), "{failed}");
    let lines = lines_after(&mut master, "SERVE ");
    assert!(lines.iter().any(|l| l.ends_with("SERVE err")), "{}", lines.join("\n"));
    assert!(!lines.iter().any(|l| l.contains("EVENT fork 0.")), "{}", lines.join("\n"));
}
