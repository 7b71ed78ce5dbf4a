//! A fixed-rate HTTP/1.1 load generator, for `make bench`'s equal-load
//! latency comparison (wrk only measures at saturation).
//!
//! ```text
//! cargo build --release -p forkring-stress --bin ratebench
//! target/release/ratebench --addr 127.0.0.1:8080 --rate 20000 --duration 10
//! ```
//!
//! It is the harness's paced client (`forkring_stress::paced`) with
//! sleeping senders: request `n` is due at `start + n / rate`, whatever
//! happened to the ones before it; `--threads` sender threads take every
//! `threads`-th request and write it, round robin, to one of their
//! `--conns` keep-alive connections (pipelining behind a slow answer rather
//! than waiting for it), and one reader thread per connection matches the
//! answers to their due times in order. Latency is measured from the due
//! time, not from the write, so a stalled server is charged for every
//! request it delays (no coordinated omission); the service time from the
//! actual write and the sender's lag behind the schedule are reported
//! beside it. The first `--warmup` seconds are sent but not counted. The
//! last line, `RESULT key=value ...`, is for scripts.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use forkring_stress::histogram::Histogram;
use forkring_stress::paced::{self, Check, Plan, Wait};

const USAGE: &str = "\
ratebench: fixed-rate HTTP/1.1 load, latency measured from each request's due time

Usage: ratebench [OPTIONS]

Options:
  --addr HOST:PORT   server [default: 127.0.0.1:8080]
  --rate N           requests per second, in total [default: 20000]
  --duration SECS    how long to send, warm-up included [default: 10]
  --warmup SECS      first seconds sent but not counted [default: 1]
  --threads N        sender threads [default: 2]
  --conns N          keep-alive connections per sender thread [default: 4]
  --path PATH        request target [default: /]
  --body BYTES       send POST with a body of this many bytes instead of GET
  --drain SECS       how long to wait for answers after the last send [default: 2]
  -h, --help         print this help
";

/// The value at percentile `p` (0-100) of `h`, from its bucket's upper
/// edge, in microseconds; NaN if empty.
fn percentile_us(h: &Histogram, p: f64) -> f64 {
    h.quantile_upper(p / 100.0).map_or(f64::NAN, |d| d.as_nanos() as f64 / 1000.0)
}

/// The largest value of `h` in microseconds; NaN if empty.
fn max_us(h: &Histogram) -> f64 {
    h.max().map_or(f64::NAN, |d| d.as_nanos() as f64 / 1000.0)
}

struct Options {
    addr: String,
    rate: f64,
    duration: Duration,
    warmup: Duration,
    threads: usize,
    conns: usize,
    path: String,
    body: Option<usize>,
    drain: Duration,
}

fn parse_args() -> Result<Option<Options>, String> {
    let mut o = Options {
        addr: "127.0.0.1:8080".into(),
        rate: 20000.0,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        threads: 2,
        conns: 4,
        path: "/".into(),
        body: None,
        drain: Duration::from_secs(2),
    };
    let mut args = std::env::args().skip(1);
    let secs = |v: String, name: &str| -> Result<Duration, String> {
        let s: f64 = v.parse().map_err(|_| format!("{name}: not a number of seconds: {v}"))?;
        if !(0.0..=86400.0).contains(&s) {
            return Err(format!("{name}: out of range: {v}"));
        }
        Ok(Duration::from_secs_f64(s))
    };
    let count = |v: String, name: &str| -> Result<usize, String> {
        match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name}: not a positive whole number: {v}")),
        }
    };
    while let Some(a) = args.next() {
        if a == "-h" || a == "--help" {
            return Ok(None);
        }
        let v = args.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--addr" => o.addr = v,
            "--rate" => {
                o.rate = v.parse().map_err(|_| format!("--rate: not a number: {v}"))?;
                if !(o.rate > 0.0 && o.rate.is_finite()) {
                    return Err(format!("--rate: must be above 0: {v}"));
                }
            }
            "--duration" => o.duration = secs(v, "--duration")?,
            "--warmup" => o.warmup = secs(v, "--warmup")?,
            "--drain" => o.drain = secs(v, "--drain")?,
            "--threads" => o.threads = count(v, "--threads")?,
            "--conns" => o.conns = count(v, "--conns")?,
            "--path" => o.path = v,
            "--body" => o.body = Some(v.parse().map_err(|_| format!("--body: not a byte count: {v}"))?),
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if o.warmup >= o.duration {
        return Err("--warmup must be shorter than --duration".into());
    }
    Ok(Some(o))
}

fn run(o: &Options) -> Result<(), String> {
    let addr: SocketAddr = o
        .addr
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", o.addr))?
        .next()
        .ok_or_else(|| format!("{}: no address", o.addr))?;
    let request = match o.body {
        None => format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", o.path, o.addr).into_bytes(),
        Some(n) => {
            let mut r = format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n",
                o.path, o.addr
            )
            .into_bytes();
            r.resize(r.len() + n, b'x');
            r
        }
    };
    let method = if o.body.is_some() { "POST" } else { "GET" };
    let t = paced::run(&Plan {
        addr,
        request,
        rate: o.rate,
        duration: o.duration,
        warmup: o.warmup,
        threads: o.threads,
        conns: o.conns,
        drain: o.drain,
        wait: Wait::Sleep,
        check: Check::Success,
        cpu: None,
    })?;
    let (sent, measured, non2xx, unsent, failed_conns) = (t.sent, t.answered, t.bad, t.unsent, t.failed_conns);
    let (latency, service, lag) = (&t.latency, &t.service, &t.lag);
    let unanswered = sent.saturating_sub(measured);
    let errors = non2xx + unanswered + unsent;
    let window = (o.duration - o.warmup).as_secs_f64();
    let achieved = measured as f64 / window;

    println!(
        "ratebench: {method} http://{}{} at {} req/s for {:.1}s ({:.1}s warm-up not counted), {} threads x {} connections",
        o.addr,
        o.path,
        o.rate,
        o.duration.as_secs_f64(),
        o.warmup.as_secs_f64(),
        o.threads,
        o.conns
    );
    println!(
        "  requests: {sent} sent, {measured} answered, {errors} errors \
         ({non2xx} non-2xx, {unanswered} unanswered, {unsent} not sent; {failed_conns} connections failed)"
    );
    println!("  achieved: {achieved:.0} req/s");
    let line = |name: &str, h: &Histogram| {
        println!(
            "  {name:<34} p50 {:>8.1}  p90 {:>8.1}  p99 {:>8.1}  p99.9 {:>8.1}  max {:>9.1}",
            percentile_us(h, 50.0),
            percentile_us(h, 90.0),
            percentile_us(h, 99.0),
            percentile_us(h, 99.9),
            max_us(h)
        )
    };
    line("latency from due time (us)", latency);
    line("service time from the write (us)", service);
    line("sender lag behind schedule (us)", lag);
    println!(
        "RESULT rate={} achieved={achieved:.1} sent={sent} answered={measured} errors={errors} \
         p50={:.1} p90={:.1} p99={:.1} p999={:.1} max={:.1} svc_p50={:.1} svc_p99={:.1} svc_p999={:.1} \
         lag_p50={:.1} lag_p99={:.1} lag_max={:.1}",
        o.rate,
        percentile_us(latency, 50.0),
        percentile_us(latency, 90.0),
        percentile_us(latency, 99.0),
        percentile_us(latency, 99.9),
        max_us(latency),
        percentile_us(service, 50.0),
        percentile_us(service, 99.0),
        percentile_us(service, 99.9),
        percentile_us(lag, 50.0),
        percentile_us(lag, 99.0),
        max_us(lag)
    );
    Ok(())
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ratebench: {e} (see --help)");
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ratebench: {e}");
            ExitCode::FAILURE
        }
    }
}
