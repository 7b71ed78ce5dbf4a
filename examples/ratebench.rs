//! A fixed-rate HTTP/1.1 load generator, for `make bench`'s equal-load
//! latency comparison (wrk only measures at saturation). Standard library
//! only.
//!
//! ```text
//! cargo build --release --example ratebench
//! target/release/examples/ratebench --addr 127.0.0.1:8080 --rate 20000 --duration 10
//! ```
//!
//! Request `n` is due at `start + n / rate`, whatever happened to the ones
//! before it: `--threads` sender threads take every `threads`-th request and
//! write it, round robin, to one of their `--conns` keep-alive connections
//! (pipelining behind a slow answer rather than waiting for it). One reader
//! thread per connection matches the answers to their due times in order.
//! Latency is measured from the due time, not from the write, so a stalled
//! server is charged for every request it delays (no coordinated omission);
//! the service time from the actual write and the sender's lag behind the
//! schedule are reported beside it. The first `--warmup` seconds are sent but
//! not counted. The last line, `RESULT key=value ...`, is for scripts.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

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

/// Log-linear histogram of nanoseconds: 64 buckets per power of two above
/// 128 ns (about 1.6% resolution), exact below.
#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    const SUB: u64 = 64;

    fn new() -> Histogram {
        Histogram { counts: vec![0; (Self::SUB as usize) * 60], total: 0, max: 0 }
    }

    fn index(v: u64) -> usize {
        if v < 2 * Self::SUB {
            return v as usize;
        }
        let msb = 63 - u64::from(v.leading_zeros());
        let shift = msb - 6;
        (shift * Self::SUB + (v >> shift)) as usize
    }

    /// The largest value that lands in bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < 2 * Self::SUB {
            return i;
        }
        let shift = i / Self::SUB - 1;
        let sub = i - shift * Self::SUB;
        ((sub + 1) << shift) - 1
    }

    fn record(&mut self, d: Duration) {
        let v = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = Self::index(v).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The value at percentile `p` (0-100), in microseconds; NaN if empty.
    fn percentile_us(&self, p: f64) -> f64 {
        if self.total == 0 {
            return f64::NAN;
        }
        let rank = ((p / 100.0 * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i).min(self.max) as f64 / 1000.0;
            }
        }
        self.max as f64 / 1000.0
    }

    fn max_us(&self) -> f64 {
        if self.total == 0 {
            f64::NAN
        } else {
            self.max as f64 / 1000.0
        }
    }
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

/// What the sender and the reader of one connection share.
struct Conn {
    /// Due time and write time of each request sent and not yet answered.
    inflight: Mutex<VecDeque<(Instant, Instant)>>,
    sent: AtomicU64,
    answered: AtomicU64,
    dead: AtomicBool,
}

/// What one reader found.
struct ReadStats {
    latency: Histogram,
    service: Histogram,
    measured: u64,
    non2xx: u64,
    failed: bool,
}

/// What one sender found.
struct SendStats {
    lag: Histogram,
    sent: u64,
    unsent: u64,
}

/// Where one response ends in `buf`, and its status, if it is complete.
enum Parse {
    Incomplete,
    Done { len: usize, status: u16 },
    Bad(String),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses one HTTP/1.1 response (Content-Length or chunked) at the start of
/// `buf`.
fn parse_response(buf: &[u8]) -> Parse {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > 64 * 1024 { Parse::Bad("response head too long".into()) } else { Parse::Incomplete };
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = match status_line.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()) {
        Some(s) if status_line.starts_with("HTTP/1.") => s,
        _ => return Parse::Bad(format!("bad status line: {status_line:?}")),
    };
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) => length = Some(n),
                Err(_) => return Parse::Bad(format!("bad Content-Length: {value:?}")),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") && value.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    let body_start = head_end + 4;
    if chunked {
        let mut at = body_start;
        loop {
            let Some(eol) = find(&buf[at..], b"\r\n") else { return Parse::Incomplete };
            let size_text = String::from_utf8_lossy(&buf[at..at + eol]);
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(size_text, 16) else {
                return Parse::Bad(format!("bad chunk size: {size_text:?}"));
            };
            at += eol + 2;
            if size == 0 {
                // No trailers expected: the terminating empty line.
                return if buf.len() >= at + 2 { Parse::Done { len: at + 2, status } } else { Parse::Incomplete };
            }
            if buf.len() < at + size + 2 {
                return Parse::Incomplete;
            }
            at += size + 2;
        }
    }
    let len = body_start + if status == 204 || status == 304 || status < 200 { 0 } else { length.unwrap_or(0) };
    if buf.len() >= len {
        Parse::Done { len, status }
    } else {
        Parse::Incomplete
    }
}

/// Reads answers on `stream` until `stop`, matching each to its due time.
fn reader(mut stream: TcpStream, conn: Arc<Conn>, measure_from: Instant, stop: Arc<AtomicBool>) -> ReadStats {
    let mut st =
        ReadStats { latency: Histogram::new(), service: Histogram::new(), measured: 0, non2xx: 0, failed: false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Take every complete response out of the buffer first.
        loop {
            match parse_response(&buf) {
                Parse::Incomplete => break,
                Parse::Bad(why) => {
                    eprintln!("ratebench: {why}");
                    st.failed = true;
                    conn.dead.store(true, Ordering::SeqCst);
                    return st;
                }
                Parse::Done { len, status } => {
                    let now = Instant::now();
                    buf.drain(..len);
                    let Some((due, written)) = conn.inflight.lock().unwrap().pop_front() else {
                        eprintln!("ratebench: an answer to no request");
                        st.failed = true;
                        conn.dead.store(true, Ordering::SeqCst);
                        return st;
                    };
                    conn.answered.fetch_add(1, Ordering::SeqCst);
                    if due >= measure_from {
                        st.latency.record(now - due);
                        st.service.record(now - written);
                        st.measured += 1;
                        if !(200..300).contains(&status) {
                            st.non2xx += 1;
                        }
                    }
                }
            }
        }
        if stop.load(Ordering::SeqCst) {
            return st;
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                if !conn.inflight.lock().unwrap().is_empty() || !stop.load(Ordering::SeqCst) {
                    st.failed = true;
                }
                conn.dead.store(true, Ordering::SeqCst);
                return st;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                st.failed = true;
                conn.dead.store(true, Ordering::SeqCst);
                return st;
            }
        }
    }
}

/// The schedule: request `n` is due at `start + n / rate`; it is counted
/// if due at `measure_from` or later; none is due at `end` or later.
#[derive(Clone, Copy)]
struct Schedule {
    start: Instant,
    end: Instant,
    measure_from: Instant,
    rate: f64,
}

/// Sends this thread's share of the schedule, requests `first`,
/// `first + step`, ..., round robin over its connections.
fn sender(
    mut streams: Vec<TcpStream>,
    conns: Vec<Arc<Conn>>,
    request: Arc<Vec<u8>>,
    sched: Schedule,
    first: u64,
    step: u64,
) -> SendStats {
    let Schedule { start, end, measure_from, rate } = sched;
    let mut st = SendStats { lag: Histogram::new(), sent: 0, unsent: 0 };
    let mut n: u64 = first;
    let mut next_conn = 0usize;
    loop {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        if due >= end {
            return st;
        }
        n += step;
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        // Round robin over the connections still alive.
        let mut sent = false;
        for _ in 0..conns.len() {
            let i = next_conn;
            next_conn = (next_conn + 1) % conns.len();
            if conns[i].dead.load(Ordering::SeqCst) {
                continue;
            }
            let written = Instant::now();
            conns[i].inflight.lock().unwrap().push_back((due, written));
            if streams[i].write_all(&request).is_err() {
                conns[i].dead.store(true, Ordering::SeqCst);
                conns[i].inflight.lock().unwrap().pop_back();
                continue;
            }
            conns[i].sent.fetch_add(1, Ordering::SeqCst);
            if due >= measure_from {
                st.lag.record(written.saturating_duration_since(due));
                st.sent += 1;
            }
            sent = true;
            break;
        }
        if !sent && due >= measure_from {
            st.unsent += 1;
        }
    }
}

fn run(o: &Options) -> Result<(), String> {
    let addr: SocketAddr = o
        .addr
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", o.addr))?
        .next()
        .ok_or_else(|| format!("{}: no address", o.addr))?;
    let request = Arc::new(match o.body {
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
    });
    let method = if o.body.is_some() { "POST" } else { "GET" };

    // Connect everything before the clock starts.
    let mut groups = Vec::new();
    for _ in 0..o.threads {
        let mut streams = Vec::new();
        let mut conns = Vec::new();
        for _ in 0..o.conns {
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .map_err(|e| format!("connect {addr}: {e}"))?;
            let _ = s.set_nodelay(true);
            streams.push(s);
            conns.push(Arc::new(Conn {
                inflight: Mutex::new(VecDeque::new()),
                sent: AtomicU64::new(0),
                answered: AtomicU64::new(0),
                dead: AtomicBool::new(false),
            }));
        }
        groups.push((streams, conns));
    }

    let start = Instant::now() + Duration::from_millis(50);
    let end = start + o.duration;
    let measure_from = start + o.warmup;
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    let mut all_conns = Vec::new();
    for (t, (streams, conns)) in groups.into_iter().enumerate() {
        for (s, c) in streams.iter().zip(&conns) {
            let s = s.try_clone().map_err(|e| format!("clone socket: {e}"))?;
            let (c, stop) = (c.clone(), stop.clone());
            readers.push(thread::spawn(move || reader(s, c, measure_from, stop)));
        }
        all_conns.extend(conns.iter().cloned());
        let request = request.clone();
        let sched = Schedule { start, end, measure_from, rate: o.rate };
        let (first, step) = (t as u64, o.threads as u64);
        senders.push(thread::spawn(move || sender(streams, conns, request, sched, first, step)));
    }

    let mut lag = Histogram::new();
    let (mut sent, mut unsent) = (0u64, 0u64);
    for h in senders {
        let s = h.join().map_err(|_| "a sender thread panicked".to_string())?;
        lag.merge(&s.lag);
        sent += s.sent;
        unsent += s.unsent;
    }
    // Give the last answers time to arrive, then stop the readers.
    let deadline = Instant::now() + o.drain;
    while Instant::now() < deadline
        && all_conns.iter().any(|c| {
            !c.dead.load(Ordering::SeqCst) && c.answered.load(Ordering::SeqCst) < c.sent.load(Ordering::SeqCst)
        })
    {
        thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    let mut latency = Histogram::new();
    let mut service = Histogram::new();
    let (mut measured, mut non2xx, mut failed_conns) = (0u64, 0u64, 0u64);
    for h in readers {
        let r = h.join().map_err(|_| "a reader thread panicked".to_string())?;
        latency.merge(&r.latency);
        service.merge(&r.service);
        measured += r.measured;
        non2xx += r.non2xx;
        failed_conns += u64::from(r.failed);
    }
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
            h.percentile_us(50.0),
            h.percentile_us(90.0),
            h.percentile_us(99.0),
            h.percentile_us(99.9),
            h.max_us()
        )
    };
    line("latency from due time (us)", &latency);
    line("service time from the write (us)", &service);
    line("sender lag behind schedule (us)", &lag);
    println!(
        "RESULT rate={} achieved={achieved:.1} sent={sent} answered={measured} errors={errors} \
         p50={:.1} p90={:.1} p99={:.1} p999={:.1} max={:.1} svc_p50={:.1} svc_p99={:.1} svc_p999={:.1} \
         lag_p50={:.1} lag_p99={:.1} lag_max={:.1}",
        o.rate,
        latency.percentile_us(50.0),
        latency.percentile_us(90.0),
        latency.percentile_us(99.0),
        latency.percentile_us(99.9),
        latency.max_us(),
        service.percentile_us(50.0),
        service.percentile_us(99.0),
        service.percentile_us(99.9),
        lag.percentile_us(50.0),
        lag.percentile_us(99.0),
        lag.max_us()
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
