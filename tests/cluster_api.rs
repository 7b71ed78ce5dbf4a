//! The cluster's embedding API on real processes: events through a channel
//! consumed by another thread of the master, commands through a `Handle`,
//! per-worker environment, and workers started by re-executing the binary
//! (which a master with threads needs).
//!
//! The test runs itself again as the master (`FORKRING_API_ROLE=master`);
//! with `reexec`, the workers are further executions of this test binary.

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use forkring::worker::id as worker_id;
use forkring::{Command as Ctl, Event, Request, Response, Server};
use forkring_testkit::client::Client;
use forkring_testkit::master::SelfMaster;

const ROLE: &str = "FORKRING_API_ROLE";

/// The master's side: a cluster of two re-executed workers whose events a
/// separate thread prints and reacts to.
fn run_master() {
    let mut server = Server::builder()
        .listen("127.0.0.1:0")
        .workers(2)
        .reexec(true)
        .worker_env(|slot| vec![("APP_SLOT_NAME".to_owned(), format!("slot-{slot}"))]);
    let events = server.events();
    let handle = server.handle();
    let printer = thread::spawn(move || {
        let mut ready = 0;
        let mut disconnected = false;
        for ev in events {
            println!("EVENT {ev}");
            if let Event::Listening { addr, .. } = &ev {
                println!("ADDR {addr}");
            }
            if let Event::Ready { .. } = ev {
                ready += 1;
            }
            // The parent asks for the disconnect by closing our stdin.
            if ready == 2 && !disconnected {
                disconnected = true;
                let handle = handle.clone();
                thread::spawn(move || {
                    let mut line = String::new();
                    let _ = std::io::stdin().read_line(&mut line);
                    handle.command(Ctl::Disconnect { slot: 1 });
                    thread::sleep(Duration::from_millis(500));
                    handle.command(Ctl::Shutdown);
                });
            }
        }
    });
    let result = server.serve(|| {
        let name = std::env::var("APP_SLOT_NAME").unwrap_or_default();
        let id = worker_id().map(|w| w.to_string()).unwrap_or_default();
        move |_: &Request<'_>, res: &mut Response| {
            res.body(format!("{name} {id}"));
        }
    });
    // The channel closes when `serve` returns; the last events are printed
    // once the thread has read them.
    printer.join().unwrap();
    // A re-executed worker runs this same function and returns here too.
    if worker_id().is_none() {
        println!("SERVE {}", if result.is_ok() { "ok" } else { "err" });
    }
}

#[test]
fn events_commands_and_worker_env_work_with_reexecuted_workers() {
    if std::env::var(ROLE).is_ok() {
        run_master();
        return;
    }
    let mut master = SelfMaster::spawn(ROLE, "master", "events_commands_and_worker_env_work_with_reexecuted_workers");
    let wait = Duration::from_secs(15);
    let addr: SocketAddr = master.wait_for("ADDR ", wait).trim_start_matches("ADDR ").parse().unwrap();
    master.wait_for("EVENT ready 0.0", wait);
    master.wait_for("EVENT ready 1.0", wait);

    // Both workers answer, each with its own environment and identity.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let mut c = Client::connect(addr);
        let r = c.get("/");
        assert_eq!(r.status, 200);
        seen.insert(String::from_utf8(r.body).unwrap());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["slot-0 0.0", "slot-1 1.0"]);

    // Re-executed workers are separate programs: not plain forks.
    let worker_pid = |master: &mut SelfMaster, w: &str| -> i32 {
        let l = master.wait_for(&format!("EVENT ready {w}"), wait);
        l.split("pid=").nth(1).unwrap().parse().unwrap()
    };
    let pid = worker_pid(&mut master, "0.0");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, std::env::current_exe().unwrap());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("events_commands_and_worker_env_work_with_reexecuted_workers"));

    // Disconnect slot 1 through the handle, then shut down.
    master.close_stdin();
    master.wait_for("EVENT disconnect 1.0", wait);
    master.wait_for("EVENT exit 1.0", wait);
    let exit = master.wait_for("EVENT exit 0.0", wait);
    assert!(exit.contains("code=0") && exit.contains("requested=true"), "{exit}");
    master.wait_for("SERVE ok", wait);
    let status = master.wait_exit(Duration::from_secs(10)).unwrap_or_else(|| panic!("master did not exit"));
    assert!(status.success());
    // Slot 1 stayed down after its disconnect: no second generation.
    assert!(!master.seen.iter().any(|l| l.contains("EVENT fork 1.1")), "{:#?}", master.seen);
}
