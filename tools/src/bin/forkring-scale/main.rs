//! forkring-scale: the `make scale` harness.
//!
//! It builds a small fleet on this one machine: a bridge in the root
//! network namespace and three hosts, each a network namespace joined to the
//! bridge by a veth pair, addressed from a private /24 that only these
//! interfaces carry; a forkring cluster (two workers, `--metrics` on a
//! second port, a drain delay) in each host; HAProxy in front, on the
//! bridge, checking each host's `/ready`; and wrk at HAProxy, with
//! keep-alive and with a connection per request. Each scenario (rolling
//! restart, a host dies, scale out and in, rolling binary upgrade) prints
//! one line with its figures and PASS, FAIL or SKIPPED against its bound;
//! the same scenarios with nginx as the hosts follow, as the anchor.
//!
//! Every namespace, link and process it makes is removed at the end, on a
//! panic and on SIGINT/SIGTERM; processes are killed by pid (those it
//! started, and those in its own namespaces), never by name. It refuses to
//! run, saying why, where it cannot create namespaces.

mod haproxy;
mod host;
mod net;
mod scenarios;
mod wrk_pair;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use forkring_stress::{procs, SERVER_BIN};
use host::{Bins, Host, Kind};
use scenarios::Fleet;

fn usage() -> String {
    format!(
        "\
forkring-scale: a fleet of forkring hosts behind HAProxy, restarted, killed,
scaled and upgraded under load; nginx hosts beside it as the anchor (make scale)

Usage: forkring-scale [OPTIONS]

Options:
  --bin PATH      the forkring demo binary [default: `{SERVER_BIN}` next to this
                  program, i.e. target/release/{SERVER_BIN}]
  --only LIST     run only these scenarios, e.g. 1,3 [default: all]
  --no-nginx      skip the nginx anchor lines
  -h, --help      print this help

Needs root (network namespaces, a bridge, veth pairs), haproxy and wrk.
Environment: FORKRING_BACKEND (passed on to forkring), NGINX (nginx binary).
Scenarios: 1 rolling restart, 2 host dies, 3 scale out/in, 4 rolling upgrade,
5 overloaded host.
Exit status: 0 when every forkring bound holds, 1 when one fails, 2 on a
usage error, 3 when this machine cannot run the fleet.
"
    )
}

struct Args {
    bin: Option<PathBuf>,
    only: Option<Vec<u8>>,
    nginx: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut a = Args { bin: None, only: None, nginx: true };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--no-nginx" => a.nginx = false,
            "--bin" => a.bin = Some(PathBuf::from(it.next().ok_or("--bin needs a value")?)),
            "--only" => {
                let v = it.next().ok_or("--only needs a value")?;
                let ids: Result<Vec<u8>, _> = v.split(',').map(|s| s.trim().parse::<u8>()).collect();
                a.only = Some(ids.map_err(|_| format!("--only: expected numbers such as 1,3, got {v:?}"))?);
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("forkring-scale: {e} (see --help)");
            return ExitCode::from(2);
        }
    };
    if let Some(why) = net::refusal() {
        eprintln!("scale: cannot build the fleet on this machine: {why}; not running");
        return ExitCode::from(3);
    }
    if let Some(why) = net::clash() {
        eprintln!("scale: {why}; not running (nothing else may be a target)");
        return ExitCode::from(3);
    }
    // Before any thread starts: signals go to one thread that kills what
    // the run started and removes its namespaces and links.
    let interrupted = |sig| {
        let n = procs::kill_registered() + net::cleanup();
        eprintln!("\nscale: interrupted (signal {sig}); killed {n} process(es) it had started, removed its namespaces");
    };
    if let Err(e) = procs::handle_interrupts(interrupted) {
        eprintln!("forkring-scale: signal setup: {e}");
        return ExitCode::from(2);
    }
    procs::become_subreaper();
    forkring_testkit::proc::raise_nofile(65_536);
    let code = run(args);
    let left = procs::kill_registered() + net::cleanup();
    if left > 0 {
        eprintln!("scale: killed {left} leftover process(es) at the end");
    }
    code
}

fn run(args: Args) -> ExitCode {
    let started = Instant::now();
    let forkring = args.bin.unwrap_or_else(forkring_stress::server_bin_beside_me);
    if !forkring.is_file() {
        eprintln!("forkring-scale: no forkring binary at {} (cargo build --release, or --bin)", forkring.display());
        return ExitCode::from(2);
    }
    let Some(haproxy_bin) = haproxy::find() else {
        eprintln!("scale: haproxy not found (apt-get install haproxy; `make scale` installs it); not running");
        return ExitCode::from(3);
    };
    let Some(wrk) = procs::find_on_path("wrk") else {
        eprintln!("scale: wrk not found (apt-get install wrk; `make scale` installs it); not running");
        return ExitCode::from(3);
    };
    let nginx = if args.nginx { forkring_stress::nginx::find() } else { None };
    let bins = Bins { forkring: forkring.clone(), nginx: nginx.clone() };
    let run_dir = std::env::temp_dir().join(format!("forkring-scale-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&run_dir);
    let result = run_fleet(&args.only, &bins, &haproxy_bin, &wrk, &run_dir);
    let _ = std::fs::remove_dir_all(&run_dir);
    let (passed, failed, skipped) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("scale: {e}");
            return ExitCode::from(1);
        }
    };
    let secs = started.elapsed().as_secs();
    println!(
        "scale: forkring {passed} passed, {}{}; took {}m{:02}s",
        if failed.is_empty() { "none failed".to_owned() } else { format!("FAILED: {}", failed.join(", ")) },
        if skipped.is_empty() { String::new() } else { format!("; skipped: {}", skipped.join(", ")) },
        secs / 60,
        secs % 60
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

type Tally = (usize, Vec<String>, Vec<String>);

fn run_fleet(
    only: &Option<Vec<u8>>,
    bins: &Bins,
    haproxy_bin: &std::path::Path,
    wrk: &std::path::Path,
    run_dir: &std::path::Path,
) -> Result<Tally, String> {
    let net = net::Net::new()?;
    let mut namespaces = Vec::new();
    for n in 1..=haproxy::SERVERS {
        namespaces.push(net.add_host(n)?);
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "scale: Linux {}, {} CPU(s), load average {}; hosts {}.{}.{}.11-14 in namespaces {}..h4 on bridge {}; {}; \
         forkring {} (2 workers each, --drain-delay {} ms); {}; wrk {}+{} connections (keep-alive, conn/req)",
        kernel.trim(),
        procs::cpus(),
        load.split_whitespace().next().unwrap_or("?"),
        net::SUBNET[0],
        net::SUBNET[1],
        net::SUBNET[2],
        namespaces[0].trim_end_matches("h1"),
        net.bridge,
        haproxy::version(haproxy_bin),
        bins.forkring.display(),
        host::DRAIN_DELAY_MS,
        bins.nginx.as_ref().map_or("nginx not found: no anchor lines".to_owned(), |n| n.display().to_string()),
        wrk_pair::KEEPALIVE,
        wrk_pair::CLOSE,
    );
    let mut passed = 0;
    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    for sc in scenarios::all() {
        if only.as_ref().is_some_and(|o| !o.contains(&sc.id)) {
            continue;
        }
        let mut kinds = vec![Kind::Forkring];
        if bins.nginx.is_some() {
            kinds.push(Kind::Nginx);
        }
        for kind in kinds {
            let t = Instant::now();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut fleet = build(kind, bins, &namespaces, haproxy_bin, wrk, run_dir)?;
                (sc.run)(&mut fleet)
            }))
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(format!("panicked: {msg}"))
            });
            let took = t.elapsed().as_secs_f64();
            let forkring = kind == Kind::Forkring;
            let verdict = match &result {
                Ok(o) if o.skipped => "SKIPPED".to_owned(),
                Ok(o) if forkring => (if o.pass { "PASS" } else { "FAIL" }).to_owned(),
                Ok(o) => format!("(anchor: bound {})", if o.pass { "met" } else { "missed" }),
                Err(_) if forkring => "FAIL (could not run)".to_owned(),
                Err(_) => "(anchor: could not run)".to_owned(),
            };
            let figures = match &result {
                Ok(o) => o.figures.clone(),
                Err(e) => e.lines().collect::<Vec<_>>().join(" | "),
            };
            let bound = if forkring { format!(" [bound: {}]", sc.bound) } else { String::new() };
            println!("[{}] {:<16} {:<9} {figures}  {verdict}{bound} ({took:.0} s)", sc.id, sc.name, kind.name());
            if forkring {
                match &result {
                    Ok(o) if o.skipped => skipped.push(format!("{} ({})", sc.id, sc.name)),
                    Ok(o) if o.pass => passed += 1,
                    _ => failed.push(format!("{} ({})", sc.id, sc.name)),
                }
            }
        }
    }
    drop(net);
    Ok((passed, failed, skipped))
}

/// Starts the servers of h1..h3 (h4's namespace waits for scale out) and
/// HAProxy in front of them.
fn build(
    kind: Kind,
    bins: &Bins,
    namespaces: &[String],
    haproxy_bin: &std::path::Path,
    wrk: &std::path::Path,
    run_dir: &std::path::Path,
) -> Result<Fleet, String> {
    let mut hosts = Vec::new();
    for (i, ns) in namespaces.iter().enumerate() {
        let mut h = Host::new(i as u8 + 1, ns.clone(), kind, bins, &run_dir.join(kind.name()));
        if i < 3 {
            h.start()?;
        }
        hosts.push(h);
    }
    let haproxy = haproxy::Haproxy::start(haproxy_bin, kind, run_dir)?;
    Ok(Fleet { kind, hosts, haproxy, wrk: wrk.to_path_buf() })
}
