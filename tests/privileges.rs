//! Workers are locked down before they read client input: a worker told to
//! run as another user has exactly that user's uids, gids and groups, is not
//! dumpable, cannot gain privileges by exec, and still dies with its master;
//! a master that would run its workers as root says so once.
//!
//! Switching users needs root: that test is ignored unless asked for, and
//! fails where root is missing (`forkring_testkit::need`).

mod common;

use std::os::unix::fs::MetadataExt;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forkring_testkit::client::Client;
use forkring_testkit::need::{require, Need};
use forkring_testkit::proc;

/// The pid in an event line.
fn pid_of(line: &str) -> i32 {
    let p = line.split("pid=").nth(1).expect("pid= in line");
    p.split(' ').next().unwrap().parse().expect("numeric pid")
}

/// The numbers on the line of /proc/<pid>/status that starts with `key`.
fn status_numbers(status: &str, key: &str) -> Vec<u32> {
    let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in\n{status}"));
    line.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect()
}

#[test]
#[ignore = "needs root"]
fn workers_switch_users_for_good_and_still_die_with_the_master() {
    require(Need::Root);
    let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("user nobody");
    let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    let mut server = Server::start(&["--workers", "2", "--user", "nobody"]);
    let workers: Vec<i32> =
        (0..2).map(|s| pid_of(&server.wait_line(&[&format!("ready {s}.0")], Duration::from_secs(10)))).collect();
    for &pid in &workers {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).unwrap();
        assert_eq!(status_numbers(&status, "Uid:"), [uid; 4], "real, effective, saved, fs uid\n{status}");
        assert_eq!(status_numbers(&status, "Gid:"), [gid; 4], "real, effective, saved, fs gid\n{status}");
        assert_eq!(status_numbers(&status, "NoNewPrivs:"), [1], "{status}");
        // Not dumpable: its /proc files belong to root, not to nobody.
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), 0, "worker {pid} is dumpable");
    }
    Client::connect(server.addr).get("/");
    assert!(!server.log_text().contains("workers run as root"), "{}", server.log_text());

    // The death signal was armed again after the switch.
    server.signal(libc::SIGKILL);
    server.wait_exit(Duration::from_secs(5)).expect("master dies");
    let deadline = Instant::now() + Duration::from_secs(2);
    while workers.iter().any(|&p| proc::alive(p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let left: Vec<_> = workers.iter().filter(|&&p| proc::alive(p)).collect();
    assert!(left.is_empty(), "workers {left:?} still alive 2 s after the master died");
}

#[test]
fn root_workers_are_warned_about_once_and_gain_no_privileges() {
    let server = Server::start(&["--workers", "2"]);
    let workers: Vec<i32> =
        (0..2).map(|s| pid_of(&server.wait_line(&[&format!("ready {s}.0")], Duration::from_secs(10)))).collect();
    for pid in workers {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert_eq!(status_numbers(&status, "NoNewPrivs:"), [1], "{status}");
    }
    // A reload forks two more workers; the warning stays single.
    server.signal(libc::SIGHUP);
    server.wait_line(&["ready 1.1"], Duration::from_secs(10));
    let warnings = server.log_text().matches("workers run as root").count();
    assert_eq!(warnings, usize::from(Need::Root.is_met()), "{}", server.log_text());
}
