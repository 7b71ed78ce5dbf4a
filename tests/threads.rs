//! A master process with other threads: a plain fork from it is refused
//! with an error that names re-exec; with re-exec it serves, even while
//! another thread holds the environment's lock nearly all the time (a
//! child that touched the environment, or allocated under a lock, between
//! fork and exec would hang there for good).
//!
//! Each test runs this binary again as the master (`FORKRING_THREADS_ROLE`);
//! with re-exec, the workers are further executions of it. Every process is
//! killed by pid and reaped when the test ends.

use std::io::BufRead;
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use forkring::{Command as Ctl, Event, Request, Response, Server};
use forkring_testkit::client::Client;
use forkring_testkit::master::SelfMaster;

const ROLE: &str = "FORKRING_THREADS_ROLE";

/// The master's side. `plain`: a master with a second thread and no
/// re-exec. `reexec`: three re-executed workers, an event printer, a
/// command reader on stdin, and a thread that keeps setting a variable.
fn run_master(role: &str) {
    // A re-executed worker runs this function too: it starts no threads.
    let worker = std::env::var_os("FORKRING_WORKER").is_some();
    let reexec = role == "reexec";
    let mut server = Server::builder().listen("127.0.0.1:0").workers(if reexec { 3 } else { 1 }).reexec(reexec);
    if !worker {
        if reexec {
            // The environment's write lock is held most of the time.
            thread::spawn(|| {
                let mut i = 0u64;
                loop {
                    std::env::set_var("FORKRING_TEST_NOISE", i.to_string());
                    i = i.wrapping_add(1);
                }
            });
        } else {
            thread::spawn(|| loop {
                thread::park();
            });
        }
        let events = server.events();
        thread::spawn(move || {
            for ev in events {
                println!("EVENT {ev}");
                if let Event::Listening { addr, .. } = &ev {
                    println!("ADDR {addr}");
                }
            }
        });
        // Commands from the test, one per line on stdin.
        let handle = server.handle();
        thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                match line.trim() {
                    "reload" => handle.command(Ctl::Reload),
                    "stop" => handle.command(Ctl::Shutdown),
                    _ => {}
                }
            }
        });
    }
    let result = server.serve(|| {
        |_: &Request<'_>, res: &mut Response| {
            res.body("threads");
        }
    });
    if !worker {
        match result {
            Ok(()) => println!("SERVE ok"),
            Err(e) => println!("SERVE err {e}"),
        }
    }
}

#[test]
fn plain_fork_from_a_master_with_threads_is_refused() {
    if let Ok(role) = std::env::var(ROLE) {
        run_master(&role);
        return;
    }
    let mut master = SelfMaster::spawn(ROLE, "plain", "plain_fork_from_a_master_with_threads_is_refused");
    let line = master.wait_for("SERVE ", Duration::from_secs(10));
    assert!(line.contains("SERVE err"), "a threaded master must not fork: {line}");
    assert!(line.contains("threads") && line.contains("reexec"), "the error names re-exec: {line}");
    // The refusal may be reported as a `fork failed` event (tests/node_parity.rs
    // checks that one); never as a `fork`.
    let forked = |l: &&String| l.contains("EVENT fork") && !l.contains("EVENT fork failed");
    assert!(!master.seen.iter().any(|l| forked(&l)), "nothing was forked: {:#?}", master.seen);
    master.wait_exit(Duration::from_secs(10)).expect("the master exits");
}

#[test]
fn reexec_serves_while_another_thread_holds_the_environment_lock() {
    if let Ok(role) = std::env::var(ROLE) {
        run_master(&role);
        return;
    }
    let mut master = SelfMaster::spawn(ROLE, "reexec", "reexec_serves_while_another_thread_holds_the_environment_lock");
    let addr: SocketAddr =
        master.wait_for("ADDR ", Duration::from_secs(15)).trim_start_matches("ADDR ").parse().unwrap();
    for generation in 0..3 {
        for slot in 0..3 {
            master.wait_for(&format!("EVENT ready {slot}.{generation}"), Duration::from_secs(15));
        }
        for _ in 0..10 {
            let mut c = Client::connect(addr);
            let r = c.get("/");
            assert_eq!((r.status, r.body.as_slice()), (200, &b"threads"[..]));
        }
        if generation < 2 {
            // Every reload forks three more workers from the threaded master.
            master.command("reload");
        }
    }
    master.command("stop");
    master.wait_for("SERVE ok", Duration::from_secs(15));
    let status = master.wait_exit(Duration::from_secs(10)).expect("the master exits");
    assert!(status.success(), "{status:?}");
}
