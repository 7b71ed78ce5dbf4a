//! A test binary run again as the master of a cluster the test embeds.
//!
//! A test that builds its own cluster with the library cannot run it in the
//! test harness's process: the harness has threads (a plain fork from there
//! is refused), and the master must be killable on its own. So the test
//! runs its own binary again, with only itself selected and an environment
//! variable naming the role; in that process the test sees the variable
//! and runs the master instead of the checks:
//!
//! ```no_run
//! # use forkring_testkit::master::SelfMaster;
//! # use std::time::Duration;
//! const ROLE: &str = "MY_TEST_ROLE";
//!
//! // A `#[test]`:
//! fn the_cluster_says_hello() {
//!     if std::env::var(ROLE).is_ok() {
//!         // run_master(): build the cluster, print what the test reads.
//!         return;
//!     }
//!     let mut master = SelfMaster::spawn(ROLE, "master", "the_cluster_says_hello");
//!     let addr = master.wait_for("ADDR ", Duration::from_secs(15));
//!     // ... connect, check, then:
//!     assert!(master.stop());
//! }
//! ```
//!
//! What the master prints on stdout arrives line by line; its stdin is a
//! pipe the test may write commands to, or close. The master and every
//! process it forked are killed by pid and reaped when the [`SelfMaster`]
//! is dropped. Every wait is bounded.
//!
//! Where it stops: what the master runs, prints and obeys is the test's own
//! code; this module only starts it, reads it and stops it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::proc;

/// This test binary, running one of its tests as a cluster's master.
pub struct SelfMaster {
    /// The master process.
    pub child: Child,
    /// Its stdout, a line at a time, as the lines arrive.
    pub lines: mpsc::Receiver<String>,
    /// The lines [`SelfMaster::wait_for`] has read so far, in order.
    pub seen: Vec<String>,
    /// Its stdin, until [`SelfMaster::close_stdin`].
    stdin: Option<ChildStdin>,
}

impl SelfMaster {
    /// Runs test `test` of this binary again, alone, with the environment
    /// variable `role_var` set to `role`. (Not `--test-threads 1`: with it
    /// the harness writes the test's name before the test runs, on the line
    /// where the master's first line of output then begins.)
    pub fn spawn(role_var: &str, role: &str, test: &str) -> SelfMaster {
        let mut child = Command::new(std::env::current_exe().expect("the test binary's path"))
            .args(["--exact", test, "--nocapture"])
            .env(role_var, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the master");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel::<String>();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        SelfMaster { child, lines, seen: Vec::new(), stdin }
    }

    /// The master's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The first line, among those seen and those to come, that contains
    /// `what`; panics with every line seen after `timeout`.
    pub fn wait_for(&mut self, what: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.contains(what)) {
                return l.clone();
            }
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no line with {what:?} within {timeout:?}; got {:#?}", self.seen),
            }
        }
    }

    /// Writes `line` to the master's stdin.
    pub fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the master's stdin is still open");
        writeln!(stdin, "{line}").expect("write to the master's stdin");
        stdin.flush().expect("flush the master's stdin");
    }

    /// Closes the master's stdin: it reads end of file.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits at most `timeout` for the master to exit; its status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks the master to stop (SIGTERM) and waits up to 10 s for it,
    /// killing it after that; returns whether it stopped by itself.
    pub fn stop(&mut self) -> bool {
        let _ = proc::signal(self.pid(), libc::SIGTERM);
        let stopped = proc::wait_gone(self.pid(), Duration::from_secs(10));
        if !stopped {
            let _ = proc::signal(self.pid(), libc::SIGKILL);
        }
        let _ = self.child.wait();
        stopped
    }
}

impl Drop for SelfMaster {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Workers first learned by pid, then the master: SIGKILL cannot
            // be caught, so the reap below is bounded.
            let workers = proc::descendants(self.pid());
            let _ = proc::signal(self.pid(), libc::SIGKILL);
            for pid in workers {
                // A pid just read as a descendant of the master.
                let _ = proc::signal(pid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}
