//! forkring-stress: the `make stress` harness.
//!
//! It starts forkring clusters (the release test fixture, forkring-fixture) on 127.0.0.1, runs
//! load against them with its own bounded client (and wrk where a latency
//! distribution is wanted), injects one fault per scenario, and prints one
//! line per scenario with its figures and PASS or FAIL against the
//! scenario's bound. nginx runs the scenarios that apply to it, its line
//! printed under forkring's as the anchor. The exit status is 1 when a
//! forkring bound fails (or a scenario cannot run), 0 otherwise.
//!
//! Only loopback addresses are used; every loop is bounded in count and
//! time; every process started is killed by pid at the end, on a panic, and
//! on Ctrl-C.

mod flood_server;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use forkring_stress::{nginx, procs, servers, SERVER_BIN};
use scenarios::{Ctx, Target};

fn usage() -> String {
    format!(
        "\
forkring-stress: fault injection under load, forkring beside nginx (make stress)

Usage: forkring-stress [OPTIONS]

Options:
  --bin PATH      the forkring test fixture [default: `{SERVER_BIN}` next to this
                  program, i.e. target/release/{SERVER_BIN}]
  --only LIST     run only these scenarios, e.g. 1,3,5 [default: all]
  --workers N     workers in the multi-worker scenarios [default: one per CPU]
  --no-nginx      skip the nginx anchor lines
  --json PATH     scenario 14 also writes its figures here as JSON (capacities
                  and one row per server, route and load; make bench reads it)
  -h, --help      print this help

Environment: FORKRING_BACKEND (passed on to forkring), NGINX (nginx binary),
STRESS_SEED (seed of scenario 6's generated cases).

Scenarios: 1 rolling reload, 2 kill -9 worker, 3 graceful stop, 4 master
SIGKILL, 5 slowloris, 6 hostile bytes, 7 idle connections, 8 message flood,
9 binary upgrade, 10 stopped worker, 11 scale down/up, 12 keep-alive drains,
13 seams attacked, 14 past capacity.
Exit status: 0 when every forkring bound holds, 1 when one fails, 2 on a
usage error.
"
    )
}

struct Args {
    bin: Option<PathBuf>,
    only: Option<Vec<u8>>,
    workers: Option<usize>,
    nginx: bool,
    json: Option<PathBuf>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut a = Args { bin: None, only: None, workers: None, nginx: true, json: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next()).ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--no-nginx" => a.nginx = false,
            "--bin" => a.bin = Some(PathBuf::from(value()?)),
            "--json" => a.json = Some(PathBuf::from(value()?)),
            "--workers" => {
                let n: usize = value()?.parse().map_err(|_| "--workers: expected a whole number".to_owned())?;
                if n == 0 {
                    return Err("--workers must be at least 1".into());
                }
                a.workers = Some(n);
            }
            "--only" => {
                let v = value()?;
                let ids: Result<Vec<u8>, _> = v.split(',').map(|s| s.trim().parse::<u8>()).collect();
                a.only = Some(ids.map_err(|_| format!("--only: expected numbers such as 1,3,5, got {v:?}"))?);
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    // Scenario 8's server is this binary too (and so are its re-executed
    // workers): dispatched before anything else starts.
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.first().map(String::as_str) == Some(flood_server::FLAG) {
        return flood_server::main(&raw[1..]);
    }
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("forkring-stress: {e} (see --help)");
            return ExitCode::from(2);
        }
    };
    // Before any thread starts: signals go to one thread that cleans up.
    let interrupted = |sig| {
        let n = procs::kill_registered();
        eprintln!("\nstress: interrupted (signal {sig}); killed {n} process(es) it had started");
    };
    if let Err(e) = procs::handle_interrupts(interrupted) {
        eprintln!("forkring-stress: signal setup: {e}");
        return ExitCode::from(2);
    }
    procs::become_subreaper();
    let nofile = forkring_testkit::proc::raise_nofile(65_536);
    let code = run(args, nofile);
    let left = procs::kill_registered();
    if left > 0 {
        eprintln!("stress: killed {left} leftover process(es) at the end");
    }
    code
}

fn run(args: Args, nofile: u64) -> ExitCode {
    let started = Instant::now();
    let bin = args.bin.unwrap_or_else(forkring_stress::server_bin_beside_me);
    if !bin.is_file() {
        eprintln!(
            "forkring-stress: no forkring binary at {} (build it with `cargo build --release`, or pass --bin)",
            bin.display()
        );
        return ExitCode::from(2);
    }
    let cpus = procs::cpus();
    let nginx = if args.nginx { nginx::find() } else { None };
    let wrk = procs::find_on_path("wrk");
    let ctx = Ctx {
        bin: bin.clone(),
        nginx: nginx.clone(),
        wrk: wrk.clone(),
        workers: args.workers.unwrap_or(cpus),
        cpus,
        json: args.json.clone(),
    };

    // A first start: the binary works, and which backend it runs.
    let backend = match servers::Forkring::start(&bin, 1, &[], None) {
        Ok(f) => f.backend.clone(),
        Err(e) => {
            eprintln!("forkring-stress: forkring does not start:\n{e}");
            return ExitCode::from(1);
        }
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "stress: {cpus} CPU(s), Linux {}, load average {}, open-file limit {nofile}; forkring {} ({} workers; \
         backend {backend}); {}; {}",
        kernel.trim(),
        loadavg(),
        bin.display(),
        ctx.workers,
        match &nginx {
            Some(n) => nginx::version(n),
            None if args.nginx => "nginx not found: no anchor lines".to_owned(),
            None => "nginx skipped".to_owned(),
        },
        match &wrk {
            Some(_) => "wrk found",
            None => "wrk not found: scenario 5 measures with its own client",
        }
    );

    let mut failed: Vec<u8> = Vec::new();
    let mut passed = 0;
    let mut not_run: Vec<String> = Vec::new();
    for sc in scenarios::all() {
        if args.only.as_ref().is_some_and(|o| !o.contains(&sc.id)) {
            continue;
        }
        if let (Some(why), None) = (sc.opt_in, &args.only) {
            println!("[{}] {:<17} forkring  OPT-IN (--only {}): {why}", sc.id, sc.name, sc.id);
            continue;
        }
        let Some(run) = sc.run else {
            println!("[{}] {:<17} forkring  NOT RUN: {}", sc.id, sc.name, sc.missing);
            not_run.push(format!("{} ({})", sc.id, sc.name));
            continue;
        };
        let mut targets = vec![Target::Forkring];
        if sc.nginx && ctx.nginx.is_some() {
            targets.push(Target::Nginx);
        }
        for target in targets {
            let t = Instant::now();
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&ctx, target))).unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Err(format!("panicked: {msg}"))
                });
            let took = t.elapsed().as_secs_f64();
            let verdict = match (&result, target) {
                (Ok(o), Target::Forkring) if o.pass => "PASS".to_owned(),
                (Ok(_), Target::Forkring) => "FAIL".to_owned(),
                (Ok(o), Target::Nginx) => format!("(anchor: bound {})", if o.pass { "met" } else { "missed" }),
                (Err(_), Target::Forkring) => "FAIL (could not run)".to_owned(),
                (Err(_), Target::Nginx) => "(anchor: could not run)".to_owned(),
            };
            let figures = match &result {
                Ok(o) => o.figures.clone(),
                Err(e) => e.lines().next().unwrap_or("").to_owned(),
            };
            let bound = if target == Target::Forkring { format!(" [bound: {}]", sc.bound) } else { String::new() };
            println!("[{}] {:<17} {:<9} {figures}  {verdict}{bound} ({took:.0} s)", sc.id, sc.name, target.name());
            if let Err(e) = &result {
                // The full error (a server log tail, say) after the line.
                for l in e.lines().skip(1).take(40) {
                    println!("      {l}");
                }
            }
            if target == Target::Forkring {
                match &result {
                    Ok(o) if o.pass => passed += 1,
                    _ => failed.push(sc.id),
                }
            }
        }
    }
    let secs = started.elapsed().as_secs();
    let failed_txt = if failed.is_empty() {
        "none failed".to_owned()
    } else {
        format!("{} FAILED ({})", failed.len(), failed.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "))
    };
    let not_run_txt = if not_run.is_empty() { String::new() } else { format!("; not run: {}", not_run.join(", ")) };
    println!(
        "stress: forkring {passed} passed, {failed_txt}{not_run_txt}; took {}m{:02}s; load average {}",
        secs / 60,
        secs % 60,
        loadavg()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The 1-minute load average: latency figures mean little on a busy machine.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
