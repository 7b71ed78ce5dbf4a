//! forkring-harness: the harness library's process handling and nginx
//! configuration, one subcommand each, for `bench/run.sh`. The script
//! starts each server itself (so that the server stays its child, which it
//! reaps with `wait`), and asks this program for everything else: when the
//! server is ready, how to stop it and what is left of its tree, its CPU
//! time and memory, a free port, the nginx configuration.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use forkring_stress::nginx::{self, Echo};
use forkring_stress::probe;
use forkring_stress::procs::{self, NotReady, Stopped};
use forkring_testkit::proc;

const USAGE: &str = "\
forkring-harness: process handling and nginx configuration for bench/run.sh

Usage:
  forkring-harness wait-ready PID --url URL [--log FILE] [--log-count TEXT N]
                   [--children N] [--timeout SECS] [--name NAME]
      Waits until process PID answers GET on URL with 200 and, where asked,
      FILE has N lines containing TEXT or PID has N processes below it.
      Fails (printing FILE) when PID ends first or after SECS [10].
  forkring-harness stop PID [--timeout SECS]
      SIGTERM to PID, SIGKILL after SECS [5], then SIGKILL to each process
      that was below it and still runs.
  forkring-harness alive PID            exit status 0 while PID runs
  forkring-harness descendants PID      the processes below PID, one a line
  forkring-harness tree-usage PID       `TICKS RSS_KIB` of PID and every
                                        process below it (CPU clock ticks,
                                        with reaped children's; VmRSS)
  forkring-harness free-port            a free TCP port on 127.0.0.1
  forkring-harness nginx-conf --nginx BIN --dir DIR --port PORT --workers N
                   --static DIR [--echo-module PATH]
      Writes DIR/nginx.conf: the configuration make bench runs nginx with
      (GET /, POST /echo through the echo module or 501 without it, the
      files under /files/ from the static directory, reuseport).
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    match run(cmd, rest) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(Failure::Usage(e)) => {
            eprintln!("forkring-harness: {e} (see --help)");
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("forkring-harness: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why a subcommand did not do its work.
enum Failure {
    /// The command line is wrong.
    Usage(String),
    /// The work failed.
    Failed(String),
}

/// Runs subcommand `cmd`; whether its answer is yes (the exit status).
fn run(cmd: &str, rest: &[String]) -> Result<bool, Failure> {
    match cmd {
        "-h" | "--help" => print!("{USAGE}"),
        "wait-ready" => wait_ready(rest)?,
        "stop" => stop(rest)?,
        "alive" => return Ok(proc::alive(pid(rest)?)),
        "descendants" => {
            for d in proc::descendants(pid(rest)?) {
                println!("{d}");
            }
        }
        "tree-usage" => {
            let (ticks, rss) = procs::tree_usage(pid(rest)?);
            println!("{ticks} {rss}");
        }
        "free-port" => println!("{}", procs::free_port().map_err(|e| Failure::Failed(format!("free port: {e}")))?),
        "nginx-conf" => nginx_conf(rest)?,
        _ => return Err(Failure::Usage(format!("unknown subcommand {cmd:?}"))),
    }
    Ok(true)
}

/// The command line after the subcommand: its positional arguments and
/// its `--name value` options.
struct Args {
    positional: Vec<String>,
    options: Vec<(String, Vec<String>)>,
}

impl Args {
    /// Splits `rest`; `arity` says how many values each option takes.
    fn parse(rest: &[String], arity: &[(&str, usize)]) -> Result<Args, Failure> {
        let mut a = Args { positional: Vec::new(), options: Vec::new() };
        let mut it = rest.iter();
        while let Some(arg) = it.next() {
            if !arg.starts_with("--") {
                a.positional.push(arg.clone());
                continue;
            }
            let n = arity
                .iter()
                .find(|(name, _)| name == arg)
                .map(|&(_, n)| n)
                .ok_or_else(|| Failure::Usage(format!("unknown option {arg}")))?;
            let values: Vec<String> = it.by_ref().take(n).cloned().collect();
            if values.len() < n {
                return Err(Failure::Usage(format!("{arg} needs {n} value(s)")));
            }
            a.options.push((arg.clone(), values));
        }
        Ok(a)
    }

    fn get(&self, name: &str) -> Option<&[String]> {
        self.options.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.get(name).map(|v| v[0].as_str())
    }

    fn need(&self, name: &str) -> Result<&str, Failure> {
        self.one(name).ok_or_else(|| Failure::Usage(format!("{name} is required")))
    }
}

fn number<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, Failure> {
    v.parse().map_err(|_| Failure::Usage(format!("{name}: not a number: {v:?}")))
}

/// The one pid argument of `rest`.
fn pid(rest: &[String]) -> Result<i32, Failure> {
    match rest {
        [p] => match p.parse::<i32>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(Failure::Usage(format!("not a pid: {p:?}"))),
        },
        _ => Err(Failure::Usage("expected one pid".into())),
    }
}

fn seconds(name: &str, v: Option<&str>, default: u64) -> Result<Duration, Failure> {
    let s: f64 = v.map_or(Ok(default as f64), |v| number(name, v))?;
    if !(0.0..=86400.0).contains(&s) {
        return Err(Failure::Usage(format!("{name}: out of range: {s}")));
    }
    Ok(Duration::from_secs_f64(s))
}

fn wait_ready(rest: &[String]) -> Result<(), Failure> {
    let a = Args::parse(
        rest,
        &[("--url", 1), ("--log", 1), ("--log-count", 2), ("--children", 1), ("--timeout", 1), ("--name", 1)],
    )?;
    let pid = pid(&a.positional)?;
    let url = a.need("--url")?;
    let (addr, path) = probe::parse_url(url).map_err(Failure::Usage)?;
    let log = a.one("--log").map(PathBuf::from);
    let lines = match a.get("--log-count") {
        Some([text, n]) => Some((text.clone(), number::<usize>("--log-count", n)?)),
        _ => None,
    };
    if lines.is_some() && log.is_none() {
        return Err(Failure::Usage("--log-count needs --log".into()));
    }
    let children: Option<usize> = a.one("--children").map(|n| number("--children", n)).transpose()?;
    let timeout = seconds("--timeout", a.one("--timeout"), 10)?;
    let name = a.one("--name").map_or_else(|| format!("process {pid}"), str::to_owned);
    let ready = || {
        probe::get(addr, &path, Duration::from_secs(2)) == Ok(200)
            && lines.as_ref().map_or(true, |(text, n)| count_lines(log.as_deref(), text) >= *n)
            && children.map_or(true, |n| proc::descendants(pid).len() >= n)
    };
    let why = match procs::wait_ready(pid, timeout, ready) {
        Ok(()) => return Ok(()),
        Err(NotReady::Exited) => format!("{name} exited at start"),
        Err(NotReady::Timeout) => {
            format!("{name} does not answer GET {path} on {addr} with all its workers up within {timeout:?}")
        }
    };
    if let Some(log) = &log {
        eprint!("{}", std::fs::read_to_string(log).unwrap_or_default());
        return Err(Failure::Failed(format!("{why} (its log, {}, is above)", log.display())));
    }
    Err(Failure::Failed(why))
}

/// Lines of `log` that contain `text`.
fn count_lines(log: Option<&Path>, text: &str) -> usize {
    let Some(log) = log else { return 0 };
    std::fs::read_to_string(log).map_or(0, |t| t.lines().filter(|l| l.contains(text)).count())
}

fn stop(rest: &[String]) -> Result<(), Failure> {
    let a = Args::parse(rest, &[("--timeout", 1)])?;
    let pid = pid(&a.positional)?;
    let grace = seconds("--timeout", a.one("--timeout"), 5)?;
    if procs::stop(pid, grace) == Stopped::Killed {
        eprintln!("forkring-harness: process {pid} did not stop on SIGTERM within {grace:?}; killed it");
    }
    Ok(())
}

fn nginx_conf(rest: &[String]) -> Result<(), Failure> {
    let a = Args::parse(
        rest,
        &[("--nginx", 1), ("--dir", 1), ("--port", 1), ("--workers", 1), ("--static", 1), ("--echo-module", 1)],
    )?;
    if let Some(p) = a.positional.first() {
        return Err(Failure::Usage(format!("unexpected argument {p:?}")));
    }
    let bin = PathBuf::from(a.need("--nginx")?);
    let dir = PathBuf::from(a.need("--dir")?);
    let port: u16 = number("--port", a.need("--port")?)?;
    let workers: usize = number("--workers", a.need("--workers")?)?;
    let mut c = nginx::Conf::new(&dir, format!("127.0.0.1:{port}"), workers);
    c.error_level = "warn";
    // Far above the 64 connections wrk opens, and within the default
    // limit of 1024 open files, so that nginx runs without a warning
    // unprivileged.
    c.connections = 1000;
    c.reuseport = true;
    c.echo = Some(match a.one("--echo-module") {
        Some(m) if !m.is_empty() => Echo::Module(PathBuf::from(m)),
        _ => Echo::Missing,
    });
    c.files = Some(PathBuf::from(a.need("--static")?));
    let out = dir.join("nginx.conf");
    std::fs::write(&out, c.render(&bin)).map_err(|e| Failure::Failed(format!("write {}: {e}", out.display())))
}
