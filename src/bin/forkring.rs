//! The forkring demo server.
//!
//! `GET /` answers `Hello, World!`, `POST /echo` sends the request body back,
//! anything else is a 404. It uses only the public API, and is what
//! `make run` and `make bench` start.

use std::cell::Cell;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forkring::files::StaticDir;
use forkring::worker::Timer;
use forkring::{
    Backend, Balance, BodyFlow, BodyPlan, BodyReader, Ctl, Event, Handler, Limits, Recycle, Request, Respawn, Response,
    Server, Snapshot, Stream, StreamError, Timeouts,
};

const USAGE: &str = "\
forkring: a prefork HTTP/1.1 server (demo)

Serves GET / -> 200 \"Hello, World!\", POST /echo -> the request body back,
GET /version -> the version (and build tag), anything else -> 404.

Usage: forkring [OPTIONS]

Options:
  --listen ADDR           address to bind, host:port, or unix:PATH for a Unix
                          domain socket [default: 127.0.0.1:8080]
  --unix-mode OCTAL       permissions of the unix:PATH socket file, e.g. 660
  --workers N             worker processes [default: one per CPU]
  --balance MODE          reuseport: one SO_REUSEPORT socket per worker;
                          shared: one socket for all [default: reuseport].
                          Sockets passed by systemd (LISTEN_FDS) are used
                          instead of --listen when present
  --backend BACKEND       event loop: auto, uring or epoll [default: auto];
                          the FORKRING_BACKEND environment variable overrides it
  --header-timeout MS     time a client has to send a whole request head,
                          in milliseconds [default: 10000]
  --idle-timeout MS       time an idle keep-alive connection is kept, and the
                          longest pause within a body or response, in
                          milliseconds [default: 60000]
  --max-body BYTES        largest request body; larger ones get 413
                          [default: 8388608]
  --max-upload BYTES      largest body POST /upload streams; larger ones
                          get 413 (before the body is sent, when declared)
                          [default: 1073741824]
  --static DIR            serve the files under DIR at /files/... (Range,
                          HEAD, If-Modified-Since; sent without copies)
  --pool N                threads of each worker's blocking-work pool
                          (GET /sleep) [default: 64]
  --deferred-timeout MS   time a deferred response may take before the
                          request is answered 504 [default: 30000]
  --max-deferred N        deferred responses one worker waits on at once;
                          beyond, 503 [default: 16384]
  --max-connections N     most connections one worker holds at once
                          [default: 65536]
  --drain-timeout MS      time workers get to finish on shutdown or reload
                          before they are killed [default: 30000]
  --drain-delay MS        on SIGTERM, keep serving this long after /ready
                          turned 503, then drain (a load balancer's health
                          check notices first) [default: 0]
  --user NAME             drop to this user in the workers (bind as root)
  --pin                   pin worker i to CPU i
  --reexec                start workers by re-executing this binary instead
                          of a plain fork
  --no-respawn            do not replace workers that die
  --metrics ADDR          serve Prometheus metrics (GET /metrics), readiness
                          (GET /ready) and liveness (GET /live) from the
                          master on ADDR, e.g. 127.0.0.1:9100
  --access-log PATH       append a line per answered request to PATH (the
                          combined log format plus microseconds); SIGUSR1
                          reopens it
  --worker-timeout SECS   kill and replace a worker whose event loop has not
                          turned for SECS seconds (a stuck handler, a stopped
                          process)
  --max-requests N        replace a worker after it served N requests, as a
                          rolling reload does (nothing is lost)
  --max-requests-jitter J up to J more requests per worker, drawn at random,
                          so workers are not replaced together [default: 0]
  --max-worker-rss MIB    replace a worker whose resident memory passes MIB
                          MiB (checked every second)
  --log LEVEL             error, warn, info or debug [default: info]
  --check-uring           report whether the kernel allows io_uring here, then
                          exit (status 0 if it does, 1 if not)
  -h, --help              print this help
  -V, --version           print the version

Signals to the master:
  TERM, INT   graceful shutdown: stop accepting, finish requests, exit
  QUIT        immediate stop
  HUP         rolling reload: replace workers one at a time, losing nothing
              (under systemd, with RELOADING=1 and READY=1)
  TTIN, TTOU  one worker more, one worker fewer
  USR2        binary upgrade: start the binary from disk (the path this
              process was started from) with the listening sockets; once
              its workers serve, this master drains its own and exits
              (under systemd, with MAINPID=; needs NotifyAccess=all)

Every lifecycle event (fork, online, listening, ready, disconnect, exit) is
logged at info level.
";

/// What the command line asked for.
struct Options {
    listen: String,
    workers: usize,
    backend: Backend,
    timeouts: Timeouts,
    limits: Limits,
    max_connections: usize,
    log: log::LevelFilter,
    balance: Balance,
    user: Option<String>,
    pin: bool,
    reexec: bool,
    respawn: bool,
    /// Threads of each worker's blocking-work pool.
    pool: usize,
    /// Permissions of a unix:PATH socket file.
    unix_mode: Option<u32>,
    /// Largest body `POST /upload` takes.
    max_upload: u64,
    /// Address of the metrics listener.
    metrics: Option<String>,
    /// The access log's path.
    access_log: Option<String>,
    /// The hung-worker watchdog's timeout.
    worker_timeout: Option<Duration>,
    /// Time between `/ready` turning 503 and the drain, on SIGTERM.
    drain_delay: Duration,
    /// Request quota and memory ceiling per worker.
    recycle: Recycle,
    /// The directory served at `/files/`.
    static_dir: Option<PathBuf>,
}

/// What to do after parsing.
enum Action {
    Serve(Box<Options>),
    Help,
    Version,
    CheckUring,
}

fn main() -> ExitCode {
    let action = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("forkring: {msg} (see --help)");
            return ExitCode::from(2);
        }
    };
    let opts = match action {
        Action::Help => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Action::Version => {
            println!("{}", version());
            return ExitCode::SUCCESS;
        }
        Action::CheckUring => return check_uring(),
        Action::Serve(opts) => opts,
    };
    // The library reads FORKRING_BACKEND itself; checking it here turns a
    // typo into a usage error instead of a failed start.
    if let Err(e) = Backend::from_env() {
        eprintln!("forkring: {}: {e}", Backend::ENV);
        return ExitCode::from(2);
    }
    init_logger(opts.log);
    log::info!("{}", version());

    let mut respawn = Respawn::default();
    respawn.enabled = opts.respawn;
    let mut server = Server::builder()
        .listen(opts.listen)
        .workers(opts.workers)
        .backend(opts.backend)
        .timeouts(opts.timeouts)
        .limits(opts.limits)
        .max_connections(opts.max_connections)
        .balance(opts.balance)
        .pin(opts.pin)
        .reexec(opts.reexec)
        .pool(opts.pool)
        .respawn(respawn)
        .recycle(opts.recycle)
        .on_event(|event, ctl| {
            log::info!("{event}");
            match event {
                // A worker's note goes to every worker (worker -> master -> all).
                Event::Message { worker, data } => {
                    let mut msg = format!("N{worker}: ").into_bytes();
                    msg.extend_from_slice(data);
                    ctl.broadcast(&msg);
                }
                // A new worker gets the table at once instead of within a second.
                Event::Ready { worker, .. } => {
                    let table = cluster_table(ctl);
                    let _ = ctl.send(worker.slot, &table);
                }
                _ => {}
            }
        })
        // Every second the master tells every worker what the cluster did.
        .every(Duration::from_secs(1), |ctl| {
            let table = cluster_table(ctl);
            ctl.broadcast(&table);
        });
    if let Some(user) = opts.user {
        server = server.user(user);
    }
    if let Some(mode) = opts.unix_mode {
        server = server.unix_mode(mode);
    }
    if let Some(path) = opts.access_log {
        server = server.access_log(path);
    }
    if let Some(addr) = opts.metrics {
        server = server.metrics(addr);
    }
    if let Some(t) = opts.worker_timeout {
        server = server.worker_timeout(t);
    }
    server = server.drain_delay(opts.drain_delay);
    if let Some(dir) = &opts.static_dir {
        // Checked here, so that a typo fails the start instead of every request.
        if let Err(e) = StaticDir::new(dir) {
            eprintln!("forkring: --static {}: {}", dir.display(), strip_os_error(&e.to_string()));
            return ExitCode::FAILURE;
        }
    }
    let static_dir = opts.static_dir.clone();
    let max_upload = opts.max_upload;
    let factory = move || Demo {
        // Each worker opens the directory itself.
        files: static_dir.as_ref().and_then(|d| StaticDir::new(d).ok()),
        max_upload,
        ..Demo::default()
    };
    match server.serve(factory) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("forkring: {}", strip_os_error(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// The cluster's counters as a text table, prefixed `T` (the message kind).
fn cluster_table(ctl: &Ctl<'_>) -> Vec<u8> {
    let mut t = String::from("T");
    t.push_str(
        "worker   requests      2xx      4xx      5xx  open  accepts   bytes_in  bytes_out  msgs_in msgs_out  full\n",
    );
    let row = |t: &mut String, name: &str, c: &Snapshot| {
        t.push_str(&format!(
            "{name:<6} {:>10} {:>8} {:>8} {:>8} {:>5} {:>8} {:>10} {:>10} {:>8} {:>8} {:>5}\n",
            c.requests,
            c.responses[1],
            c.responses[3],
            c.responses[4],
            c.open_connections,
            c.accepts,
            c.bytes_in,
            c.bytes_out,
            c.ring_received,
            c.ring_sent,
            c.ring_full
        ))
    };
    for w in ctl.workers() {
        if let Some(c) = ctl.counters(w.slot) {
            row(&mut t, &w.to_string(), &c);
        }
    }
    row(&mut t, "total", &ctl.total());
    t.into_bytes()
}

/// The demo's handler: one per worker, holding what the master last told
/// it.
#[derive(Default)]
struct Demo {
    /// The cluster table the master broadcasts every second.
    table: Vec<u8>,
    /// The last note a worker sent through `POST /broadcast`.
    note: Vec<u8>,
    /// Largest body `POST /upload` takes.
    max_upload: u64,
    /// The directory served at `/files/` (`--static`).
    files: Option<StaticDir>,
}

/// `--max-upload`'s default: 1 GiB.
const DEFAULT_MAX_UPLOAD: u64 = 1 << 30;

impl Handler for Demo {
    fn handle(&mut self, req: &Request<'_>, res: &mut Response) {
        match req.path() {
            "/workers" => match req.method() {
                "GET" | "HEAD" => {
                    let me = forkring::worker::id().map(|w| w.to_string()).unwrap_or_default();
                    let body = res.header("Content-Type", "text/plain").body_mut();
                    body.extend_from_slice(format!("answered by worker {me}\n\n").as_bytes());
                    if self.table.is_empty() {
                        body.extend_from_slice(b"(no report from the master yet)\n");
                    }
                    body.extend_from_slice(&self.table);
                    if !self.note.is_empty() {
                        body.extend_from_slice(b"\nlast broadcast: ");
                        body.extend_from_slice(&self.note);
                        body.push(b'\n');
                    }
                }
                _ => method_not_allowed(res, "GET, HEAD"),
            },
            "/broadcast" => match req.method() {
                // The body goes to the master, which sends it to every worker.
                "POST" => match forkring::worker::send(req.body()) {
                    Ok(()) => {
                        res.status(202).header("Content-Type", "text/plain").body("sent\n");
                    }
                    Err(e) => {
                        res.status(503).header("Content-Type", "text/plain").body(format!("not sent: {e}\n"));
                    }
                },
                _ => method_not_allowed(res, "POST"),
            },
            "/upload" => match req.method() {
                // Only a body-less POST gets here; the others are streamed.
                "POST" => upload_answer(res, 0, Crc32::new().value()),
                _ => method_not_allowed(res, "POST"),
            },
            "/stream" => match stream_params(req) {
                Some((n, ms, pad)) => sse(res, n, ms, pad),
                None => {
                    res.status(400)
                        .header("Content-Type", "text/plain")
                        .body("expected ?n=N&ms=M (N <= 1000000, M <= 60000, optional bytes=B <= 1048576)\n");
                }
            },
            path => match (path.strip_prefix("/files/"), &self.files) {
                (Some(rest), Some(dir)) => dir.serve(req, rest, res),
                _ => demo(req, res),
            },
        }
    }

    /// `POST /upload` streams its body; every other body comes whole.
    fn on_head(&mut self, req: &Request<'_>) -> BodyPlan {
        if req.path() != "/upload" || req.method() != "POST" {
            return BodyPlan::Whole;
        }
        let declared = req.header("Content-Length").and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_upload) {
            // Before the body is sent: a client that sent
            // `Expect: 100-continue` gets this instead of `100 Continue`.
            let mut res = Response::new();
            res.status(413)
                .header("Content-Type", "text/plain")
                .body(format!("uploads are limited to {} bytes\n", self.max_upload));
            return BodyPlan::Refuse(res);
        }
        let pause = query_u64(req, "pause").filter(|&ms| ms <= 10_000).unwrap_or(0);
        BodyPlan::Stream(Box::new(Upload { length: 0, crc: Crc32::new(), max: self.max_upload, pause }))
    }

    fn on_message(&mut self, msg: &[u8]) {
        match msg.split_first() {
            Some((b'T', table)) => self.table = table.to_vec(),
            Some((b'N', note)) => self.note = note.to_vec(),
            _ => log::warn!("unknown message from the master ({} bytes)", msg.len()),
        }
    }
}

/// The build tag's marker, followed in [`BUILD_TAG`] by the tag itself,
/// NUL-padded.
const TAG_MARKER: &[u8] = b"@(#)forkring-build-tag=";
/// Room for the tag after the marker.
const TAG_ROOM: usize = 40;

/// The marker and the build's tag (`FORKRING_BUILD_TAG` at compile time,
/// empty without it). The bytes sit once in the binary, where a release
/// process may also stamp a tag into a built copy; they are read with a
/// volatile load, so the compiler cannot fold the compile-time value in.
static BUILD_TAG: [u8; TAG_MARKER.len() + TAG_ROOM] = {
    let mut out = [0u8; TAG_MARKER.len() + TAG_ROOM];
    let tag = match option_env!("FORKRING_BUILD_TAG") {
        Some(t) => t.as_bytes(),
        None => b"",
    };
    let mut i = 0;
    while i < TAG_MARKER.len() {
        out[i] = TAG_MARKER[i];
        i += 1;
    }
    let mut j = 0;
    while j < tag.len() && j < TAG_ROOM - 1 {
        out[TAG_MARKER.len() + j] = tag[j];
        j += 1;
    }
    out
};

/// `forkring 0.1.0`, with ` (build TAG)` when the binary carries a tag.
fn version() -> String {
    // SAFETY: a plain read of an initialised static array.
    let bytes = unsafe { std::ptr::read_volatile(&BUILD_TAG) };
    let tag = &bytes[TAG_MARKER.len()..];
    let tag = &tag[..tag.iter().position(|&b| b == 0).unwrap_or(tag.len())];
    match std::str::from_utf8(tag) {
        Ok(t) if !t.is_empty() => format!("forkring {} (build {t})", env!("CARGO_PKG_VERSION")),
        _ => format!("forkring {}", env!("CARGO_PKG_VERSION")),
    }
}

/// `GET /`, `GET /version`, `POST /echo`, `GET /ip`, `GET /sleep`,
/// `GET /delay`, 404.
fn demo(req: &Request<'_>, res: &mut Response) {
    match req.path() {
        // The client's address, and the one it connected to.
        "/ip" => match (req.peer(), req.local()) {
            (Some(peer), Some(local)) => {
                res.header("Content-Type", "text/plain").body(format!("{peer} -> {local}\n"));
            }
            _ => {
                res.status(500).header("Content-Type", "text/plain").body("no address\n");
            }
        },
        // Answered later, by a pool thread that blocks for `ms`: a route
        // that calls a blocking client (503 at once when the pool or the
        // deferred requests are full).
        "/sleep" => match wait_ms(req) {
            Some(ms) => res.blocking(move || {
                std::thread::sleep(Duration::from_millis(ms));
                slept(ms)
            }),
            None => bad_wait(res),
        },
        // Answered later, by a timer on the worker's loop, with no thread:
        // the wait of a service that calls another over the network.
        "/delay" => match wait_ms(req) {
            Some(ms) => match res.try_defer() {
                Ok(responder) => {
                    forkring::worker::after(Duration::from_millis(ms), move || responder.send(slept(ms)));
                }
                Err(_) => {
                    res.status(503)
                        .header("Retry-After", "1")
                        .header("Content-Type", "text/plain")
                        .body("Service Unavailable\n");
                }
            },
            None => bad_wait(res),
        },
        "/version" => match req.method() {
            "GET" | "HEAD" => {
                res.header("Content-Type", "text/plain").body(format!("{}\n", version()));
            }
            _ => method_not_allowed(res, "GET, HEAD"),
        },
        "/" => match req.method() {
            // HEAD gets the same head; the runtime leaves the body out.
            "GET" | "HEAD" => {
                res.header("Content-Type", "text/plain").body("Hello, World!");
            }
            _ => method_not_allowed(res, "GET, HEAD"),
        },
        "/echo" => match req.method() {
            "POST" => {
                let ct = req.header("Content-Type").unwrap_or(b"application/octet-stream");
                res.header("Content-Type", ct).body(req.body());
            }
            _ => method_not_allowed(res, "POST"),
        },
        _ => {
            res.status(404).header("Content-Type", "text/plain").body("Not Found");
        }
    }
}

/// `n`, `ms` and `bytes` of `/stream?n=N&ms=M&bytes=B`.
fn stream_params(req: &Request<'_>) -> Option<(u64, u64, usize)> {
    let (mut n, mut ms, mut pad) = (None, None, 0usize);
    for kv in req.query().unwrap_or("").split('&') {
        match kv.split_once('=') {
            Some(("n", v)) => n = Some(v.parse::<u64>().ok().filter(|&n| n <= 1_000_000)?),
            Some(("ms", v)) => ms = Some(v.parse::<u64>().ok().filter(|&ms| ms <= 60_000)?),
            Some(("bytes", v)) => pad = v.parse::<usize>().ok().filter(|&b| b <= 1 << 20)?,
            _ => {}
        }
    }
    Some((n?, ms?, pad))
}

/// One server-sent event: `data: i` (padded with `pad` bytes of `x`).
fn event(i: u64, pad: usize) -> Vec<u8> {
    let mut e = format!("data: {i}").into_bytes();
    if pad > 0 {
        e.push(b' ');
        e.resize(e.len() + pad, b'x');
    }
    e.extend_from_slice(b"\n\n");
    e
}

/// What an event stream's writer keeps between events.
struct Events {
    /// The writer; taken when the stream ends.
    stream: Option<Stream>,
    /// The next event's number.
    next: u64,
    /// Events in all.
    n: u64,
    /// Padding per event.
    pad: usize,
}

impl Events {
    /// Writes the next events while the queue takes them (all of them
    /// when `burst`, else one). Returns whether the stream is over.
    fn write(&mut self, burst: bool) -> Result<bool, StreamError> {
        let Some(stream) = &self.stream else { return Ok(true) };
        // A draining worker ends its streams early: the client reconnects
        // to another worker.
        while self.next < self.n && !stream.is_draining() {
            stream.send(&event(self.next, self.pad))?;
            self.next += 1;
            if !burst {
                break;
            }
        }
        if self.next >= self.n || stream.is_draining() {
            if let Some(s) = self.stream.take() {
                s.end();
            }
            return Ok(true);
        }
        Ok(false)
    }
}

/// `GET /stream?n=N&ms=M`: N events M ms apart as `text/event-stream`,
/// written by a worker timer. With `ms=0` the events are written as fast
/// as the client reads them: the writer waits for room with
/// `Stream::on_ready`, so a slow client holds only the stream's queue.
fn sse(res: &mut Response, n: u64, ms: u64, pad: usize) {
    res.header("Content-Type", "text/event-stream").header("Cache-Control", "no-cache");
    let stream = res.stream();
    let events = Events { stream: Some(stream), next: 0, n, pad };
    if ms == 0 {
        fill(Arc::new(Mutex::new(events)));
        return;
    }
    let events = Rc::new(std::cell::RefCell::new(events));
    let timer: Rc<Cell<Option<Timer>>> = Rc::new(Cell::new(None));
    let t = timer.clone();
    let tick = move || {
        // Full: the client reads slowly; the event waits for the next tick.
        let over = !matches!(events.borrow_mut().write(false), Ok(false) | Err(StreamError::Full));
        if over {
            if let Some(t) = t.take() {
                t.cancel();
            }
        }
    };
    timer.set(Some(forkring::worker::every(Duration::from_millis(ms), tick)));
}

/// Writes events until the queue is full, then again once it has room.
fn fill(events: Arc<Mutex<Events>>) {
    let mut e = events.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(StreamError::Full) = e.write(true) {
        let again = events.clone();
        if let Some(s) = &e.stream {
            s.on_ready(move || fill(again));
        }
    }
}

/// The `ms` of `?ms=N`, at most 10,000.
fn wait_ms(req: &Request<'_>) -> Option<u64> {
    query_u64(req, "ms").filter(|&ms| ms <= 10_000)
}

/// The number `N` of `?name=N`.
fn query_u64(req: &Request<'_>, name: &str) -> Option<u64> {
    let q = req.query().unwrap_or("");
    let v = q.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?;
    v.parse::<u64>().ok()
}

/// `POST /upload`: the body's length and CRC-32, computed as it arrives;
/// nothing of it is kept. With `?pause=MS` it takes one piece every `MS`
/// milliseconds (a slow consumer: the client's send then blocks).
struct Upload {
    /// Bytes so far.
    length: u64,
    /// Their CRC-32.
    crc: Crc32,
    /// `--max-upload`.
    max: u64,
    /// Milliseconds to wait after each piece.
    pause: u64,
}

impl BodyReader for Upload {
    fn data(&mut self, piece: &[u8], flow: &mut BodyFlow<'_>) {
        self.length += piece.len() as u64;
        if self.length > self.max {
            // A chunked body that outgrows the limit.
            flow.stop(413);
            return;
        }
        self.crc.update(piece);
        if self.pause > 0 {
            let resume = flow.pause();
            forkring::worker::after(Duration::from_millis(self.pause), move || resume.resume());
        }
    }

    fn end(&mut self, _req: &Request<'_>, res: &mut Response) {
        upload_answer(res, self.length, self.crc.value());
    }
}

fn upload_answer(res: &mut Response, length: u64, crc: u32) {
    res.header("Content-Type", "application/json")
        .body(format!("{{\"length\": {length}, \"crc32\": \"{crc:08x}\"}}\n"));
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), a byte at a
/// time from a table built at compile time.
struct Crc32(u32);

/// `CRC_TABLE[b]`: the CRC of the single byte `b`.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Crc32 {
    fn new() -> Crc32 {
        Crc32(!0)
    }

    fn update(&mut self, bytes: &[u8]) {
        let mut c = self.0;
        for &b in bytes {
            c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }

    fn value(&self) -> u32 {
        !self.0
    }
}

fn bad_wait(res: &mut Response) {
    res.status(400).header("Content-Type", "text/plain").body("expected ?ms=N with N <= 10000\n");
}

/// The answer of `/sleep` and `/delay`.
fn slept(ms: u64) -> Response {
    let mut res = Response::new();
    res.header("Content-Type", "text/plain").body(format!("waited {ms} ms\n"));
    res
}

fn method_not_allowed(res: &mut Response, allow: &str) {
    res.status(405).header("Allow", allow).header("Content-Type", "text/plain").body("Method Not Allowed");
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Action, String> {
    let mut opts = Options {
        listen: "127.0.0.1:8080".to_owned(),
        workers: forkring::default_workers(),
        backend: Backend::Auto,
        timeouts: Timeouts::default(),
        limits: Limits::default(),
        max_connections: forkring::Config::default().max_connections,
        log: log::LevelFilter::Info,
        balance: Balance::ReusePort,
        user: None,
        pin: false,
        reexec: false,
        respawn: true,
        pool: forkring::Config::default().pool,
        unix_mode: None,
        max_upload: DEFAULT_MAX_UPLOAD,
        metrics: None,
        access_log: None,
        worker_timeout: None,
        drain_delay: Duration::ZERO,
        recycle: Recycle::default(),
        static_dir: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let no_value = |flag: &str| match &inline {
            Some(_) => Err(format!("{flag} takes no value")),
            None => Ok(()),
        };
        match flag.as_str() {
            "-h" | "--help" => {
                no_value(&flag)?;
                return Ok(Action::Help);
            }
            "-V" | "--version" => {
                no_value(&flag)?;
                return Ok(Action::Version);
            }
            "--check-uring" => {
                no_value(&flag)?;
                return Ok(Action::CheckUring);
            }
            "--pin" | "--reexec" | "--no-respawn" => {
                no_value(&flag)?;
                match flag.as_str() {
                    "--pin" => opts.pin = true,
                    "--reexec" => opts.reexec = true,
                    _ => opts.respawn = false,
                }
                continue;
            }
            _ => {}
        }
        let mut value = || inline.clone().or_else(|| args.next()).ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                if v.is_empty() {
                    return Err("--listen needs an address such as 127.0.0.1:8080".to_owned());
                }
                opts.listen = v;
            }
            "--workers" => {
                let n: usize = number(&flag, &value()?)?;
                if n == 0 {
                    return Err("--workers must be at least 1".to_owned());
                }
                opts.workers = n;
            }
            "--backend" => {
                let v = value()?;
                opts.backend = Backend::from_str(&v).map_err(|e| format!("--backend: {e}"))?;
            }
            "--balance" => opts.balance = value()?.parse().map_err(|e| format!("--balance: {e}"))?,
            "--drain-timeout" => opts.timeouts.drain = millis(&flag, &value()?)?,
            "--drain-delay" => opts.drain_delay = millis(&flag, &value()?)?,
            "--user" => opts.user = Some(value()?),
            "--header-timeout" => opts.timeouts.header = millis(&flag, &value()?)?,
            "--idle-timeout" => opts.timeouts.idle = millis(&flag, &value()?)?,
            "--max-body" => opts.limits.max_body = number(&flag, &value()?)?,
            "--max-upload" => opts.max_upload = number(&flag, &value()?)?,
            "--pool" => {
                opts.pool = number(&flag, &value()?)?;
                if opts.pool == 0 {
                    return Err("--pool must be at least 1".to_owned());
                }
            }
            "--unix-mode" => {
                let v = value()?;
                opts.unix_mode =
                    Some(u32::from_str_radix(&v, 8).map_err(|_| format!("--unix-mode: {v:?} is not an octal mode"))?);
            }
            "--deferred-timeout" => opts.timeouts.deferred = millis(&flag, &value()?)?,
            "--metrics" => opts.metrics = Some(value()?),
            "--access-log" => opts.access_log = Some(value()?),
            "--worker-timeout" => {
                let v = value()?;
                let secs: f64 = v.parse().map_err(|_| format!("--worker-timeout: expected seconds, got {v:?}"))?;
                if !(0.1..=86_400.0).contains(&secs) {
                    return Err("--worker-timeout must be between 0.1 and 86400 seconds".to_owned());
                }
                opts.worker_timeout = Some(Duration::from_secs_f64(secs));
            }
            "--max-requests" => {
                let n: u64 = number(&flag, &value()?)?;
                if n == 0 {
                    return Err("--max-requests must be at least 1".to_owned());
                }
                opts.recycle.max_requests = Some(n);
            }
            "--max-requests-jitter" => opts.recycle.max_requests_jitter = number(&flag, &value()?)?,
            "--max-worker-rss" => {
                let mib: u64 = number(&flag, &value()?)?;
                if mib == 0 {
                    return Err("--max-worker-rss must be at least 1 MiB".to_owned());
                }
                opts.recycle.max_rss = Some(mib.saturating_mul(1 << 20));
            }
            "--static" => opts.static_dir = Some(PathBuf::from(value()?)),
            "--max-deferred" => opts.limits.max_deferred = number(&flag, &value()?)?,
            "--max-connections" => {
                let n: usize = number(&flag, &value()?)?;
                if n == 0 {
                    return Err("--max-connections must be at least 1".to_owned());
                }
                opts.max_connections = n;
            }
            "--log" => {
                let v = value()?;
                opts.log = match v.as_str() {
                    "error" => log::LevelFilter::Error,
                    "warn" => log::LevelFilter::Warn,
                    "info" => log::LevelFilter::Info,
                    "debug" => log::LevelFilter::Debug,
                    _ => return Err(format!("--log: unknown level {v:?} (expected error, warn, info or debug)")),
                };
            }
            f if f.starts_with('-') => return Err(format!("unknown option {f}")),
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    Ok(Action::Serve(Box::new(opts)))
}

fn number<T: FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{flag}: expected a whole number, got {v:?}"))
}

fn millis(flag: &str, v: &str) -> Result<Duration, String> {
    let ms: u64 = number(flag, v)?;
    if ms == 0 {
        return Err(format!("{flag} must be at least 1 ms"));
    }
    Ok(Duration::from_millis(ms))
}

/// `"bind 127.0.0.1:8080: Address already in use (os error 98)"` without the
/// trailing `(os error 98)`: the text already says it.
fn strip_os_error(msg: &str) -> &str {
    match msg.rfind(" (os error ") {
        Some(i) if msg.ends_with(')') => &msg[..i],
        _ => msg,
    }
}

/// Sets up a small ring to see whether io_uring is allowed (seccomp,
/// `kernel.io_uring_disabled` and some sandboxes refuse it).
fn check_uring() -> ExitCode {
    match io_uring::IoUring::new(8) {
        Ok(_) => {
            println!("io_uring: available");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("io_uring: refused ({})", strip_os_error(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, one line per record, with the process id so that lines
/// from several processes can be told apart.
struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;

fn init_logger(level: log::LevelFilter) {
    // Only fails if a logger is already set, which nothing else here does.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warn",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        let line = if log::max_level() >= log::LevelFilter::Debug {
            format!("forkring[{}] {level} {}: {}\n", std::process::id(), record.target(), record.args())
        } else {
            format!("forkring[{}] {level}: {}\n", std::process::id(), record.args())
        };
        // One write per line, so lines from different processes do not mix;
        // a failed write to stderr has nowhere to be reported.
        let _ = io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Action, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn crc32_matches_the_check_values() {
        let crc = |b: &[u8]| {
            let mut c = Crc32::new();
            c.update(b);
            c.value()
        };
        assert_eq!(crc(b""), 0);
        assert_eq!(crc(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
        // Pieces give what the whole gives.
        let mut c = Crc32::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.value(), 0xCBF4_3926);
    }

    #[test]
    fn defaults() {
        let Ok(Action::Serve(o)) = parse(&[]) else { panic!("expected Serve") };
        assert_eq!(o.listen, "127.0.0.1:8080");
        assert_eq!(o.max_upload, 1 << 30);
        assert_eq!(o.workers, forkring::default_workers());
        assert_eq!(o.backend, Backend::Auto);
        assert_eq!(o.timeouts, Timeouts::default());
        assert_eq!(o.limits, Limits::default());
        assert_eq!(o.log, log::LevelFilter::Info);
    }

    #[test]
    fn every_flag() {
        let args: Vec<&str> = "--listen [::1]:9000 --workers=1 --backend epoll --header-timeout 250 \
                               --idle-timeout=1500 --max-body 1024 --max-connections 10 --log debug"
            .split_whitespace()
            .collect();
        let Ok(Action::Serve(o)) = parse(&args) else { panic!("expected Serve") };
        assert_eq!(o.listen, "[::1]:9000");
        assert_eq!(o.backend, Backend::Epoll);
        assert_eq!(o.timeouts.header, Duration::from_millis(250));
        assert_eq!(o.timeouts.idle, Duration::from_millis(1500));
        assert_eq!(o.limits.max_body, 1024);
        assert_eq!(o.max_connections, 10);
        assert_eq!(o.log, log::LevelFilter::Debug);
    }

    #[test]
    fn bad_flags() {
        for args in [
            &["--workers", "0"][..],
            &["--balance", "random"],
            &["--workers", "x"],
            &["--backend", "kqueue"],
            &["--header-timeout", "0"],
            &["--idle-timeout", "-1"],
            &["--max-body"],
            &["--max-connections", "0"],
            &["--log", "loud"],
            &["--nope"],
            &["stray"],
            &["--help=yes"],
        ] {
            assert!(parse(args).is_err(), "{args:?} should be refused");
        }
    }

    #[test]
    fn os_error_suffix() {
        assert_eq!(
            strip_os_error("bind 127.0.0.1:8080: Address already in use (os error 98)"),
            "bind 127.0.0.1:8080: Address already in use"
        );
        assert_eq!(strip_os_error("no suffix"), "no suffix");
    }
}
