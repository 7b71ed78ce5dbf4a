//! The `cluster` example reproduces the log of the Node.js program it ports,
//! in the same order: the master starts and forks every worker, each comes
//! online and listens, the message a timer thread of the master broadcasts
//! reaches every worker after the delay and the workers' replies reach the
//! master, a worker answers HTTP
//! with its id and pid, a killed worker is replaced, and SIGTERM stops the
//! cluster cleanly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use forkring_testkit::proc;

/// The delay the test gives the master before its messages.
const DELAY: Duration = Duration::from_millis(500);

/// The running example: its stdout lines, each with when it was read.
struct Cluster {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    started: Instant,
}

impl Cluster {
    fn start() -> Cluster {
        // Before the spawn: the example's delay starts in the child, which
        // may run before this thread is scheduled again after the spawn.
        let started = Instant::now();
        let mut child = Command::new(forkring_testkit::target::example("cluster"))
            .args(["127.0.0.1:0", &DELAY.as_millis().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the cluster example");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        Cluster { child, lines, started }
    }

    /// Every line so far.
    fn text(&self) -> String {
        self.lines.lock().unwrap().iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    /// The index and time of the first line equal to `want`, waiting for it
    /// at most 10 s.
    fn wait(&self, want: &str) -> (usize, Instant) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((i, (t, _))) = self.lines.lock().unwrap().iter().enumerate().find(|(_, (_, l))| l == want) {
                return (i, *t);
            }
            assert!(Instant::now() < deadline, "no line {want:?} within 10 s\n{}", self.text());
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The line starting with `prefix` (waiting for it), and what follows
    /// the prefix.
    fn wait_prefix(&self, prefix: &str) -> (usize, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .enumerate()
                .find_map(|(i, (_, l))| l.strip_prefix(prefix).map(|rest| (i, rest.to_owned())));
            if let Some(found) = found {
                return found;
            }
            assert!(Instant::now() < deadline, "no line starting {prefix:?} within 10 s\n{}", self.text());
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        let kids = proc::descendants(pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
        for k in kids {
            let _ = proc::signal(k, libc::SIGKILL);
        }
    }
}

/// `GET /` on a fresh connection: the body.
fn get(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("the whole response");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.to_ascii_lowercase().contains("content-type: text/html"), "{out}");
    out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
}

#[test]
fn the_cluster_example_logs_what_the_node_program_logs_in_its_order() {
    let n = forkring::default_workers();
    let mut c = Cluster::start();
    let master = c.child.id();

    // The master starts, then forks every worker before any comes online.
    let (start, _) = c.wait(&format!("[master] master started, pid:{master}"));
    assert_eq!(start, 0, "{}", c.text());
    let forks: Vec<usize> = (0..n).map(|s| c.wait(&format!("[master] fork: worker{s}.0")).0).collect();
    let (first_online, _) = c.wait_prefix("[master] online: ");
    assert!(forks.iter().all(|&f| f < first_online), "every fork before the first online\n{}", c.text());

    // Each worker comes online, then listens, and says it started.
    let mut pids = Vec::new();
    let mut port = 0u16;
    for s in 0..n {
        let (online, _) = c.wait(&format!("[master] online: worker{s}.0"));
        let (listening, rest) = c.wait_prefix(&format!("[master] listening: worker{s}.0,pid:"));
        assert!(online < listening, "worker {s}: online before listening\n{}", c.text());
        let (pid, addr) = rest.split_once(", address:").expect("pid and address");
        let pid: i32 = pid.parse().expect("a pid");
        port = addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("a port");
        c.wait(&format!("[worker] worker{s}.0 started, pid:{pid}"));
        pids.push(pid);
    }

    // After the delay, the master's message reaches every worker, and each
    // worker's reply reaches the master.
    for s in 0..n {
        let msg = "[master] send msg to every worker";
        let (received, at) = c.wait(&format!("[worker] worker{s}.0 received msg:{msg}"));
        let after = at.duration_since(c.started);
        assert!(after >= DELAY, "message to worker {s} {after:?} after the start, before the delay\n{}", c.text());
        let (replied, _) = c.wait(&format!("[master] received msg:[worker] send msg {s}.0 to master.from worker{s}.0"));
        assert!(received < replied, "worker {s}: received before the master hears back\n{}", c.text());
    }

    // A worker answers HTTP with its id and pid, and logs the answer.
    let body = get(port);
    let answered = (0..n).any(|s| body == format!("worker received request, id:{s}.0,pid:{}", pids[s]));
    assert!(answered, "{body:?} names no worker of {pids:?}");
    c.wait(&body);

    // A killed worker: its channel closes (`disconnect`), `exit ... died`,
    // and the master forks its successor.
    proc::signal(pids[0], libc::SIGKILL).expect("kill worker 0.0");
    let (gone, _) = c.wait("[master] disconnect: worker0.0");
    let (died, _) = c.wait("[master] exit worker0.0 died, try to fork a new worker.");
    let (refork, _) = c.wait("[master] fork: worker0.1");
    let (relisten, _) = c.wait_prefix("[master] listening: worker0.1,pid:");
    assert!(gone < died && died < refork && refork < relisten, "{}", c.text());

    // SIGTERM: every worker drains, its channel closes (`disconnect`),
    // then it exits; the master exits 0.
    proc::signal(master as i32, libc::SIGTERM).expect("SIGTERM to the master");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = c.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the cluster still runs 20 s after SIGTERM\n{}", c.text());
        thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}\n{}", c.text());
    for id in std::iter::once("0.1".to_owned()).chain((1..n).map(|s| format!("{s}.0"))) {
        let (disconnect, _) = c.wait(&format!("[master] disconnect: worker{id}"));
        let (exit, _) = c.wait(&format!("[master] exit worker{id}"));
        assert!(disconnect < exit, "worker {id}: disconnect before exit\n{}", c.text());
    }
}
