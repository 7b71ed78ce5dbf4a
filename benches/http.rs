//! Cost of the sans-io HTTP/1.1 core per request: parse the head, call the
//! handler, frame the response, hand the bytes off. No socket is involved,
//! so this is the user-space share of serving a request.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use forkring::internals::ipc::SharedCounters;
use forkring::internals::{Conn, WorkerState};
use forkring::{Limits, Request, Response, Timeouts};

/// What wrk sends, plus the headers a browser-ish client adds.
const GET: &[u8] = b"GET /plaintext HTTP/1.1\r\n\
Host: localhost:8080\r\n\
User-Agent: wrk/4.2.0\r\n\
Accept: text/plain,text/html;q=0.9,*/*;q=0.8\r\n\
Connection: keep-alive\r\n\
\r\n";

fn hello(_: &Request<'_>, res: &mut Response) {
    res.header("Content-Type", "text/plain");
    res.body_mut().extend_from_slice(b"Hello, World!");
}

fn echo(req: &Request<'_>, res: &mut Response) {
    res.header("Content-Type", "application/octet-stream");
    res.body_mut().extend_from_slice(req.body());
}

fn chunked_post() -> Vec<u8> {
    let mut req = b"POST /echo HTTP/1.1\r\n\
Host: localhost:8080\r\n\
User-Agent: bench\r\n\
Content-Type: application/octet-stream\r\n\
Transfer-Encoding: chunked\r\n\
\r\n"
        .to_vec();
    let body: Vec<u8> = (0..1024u32).map(|i| (i * 7 % 251) as u8).collect();
    for chunk in body.chunks(256) {
        req.extend_from_slice(format!("{:x};seq=1\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    req
}

/// A head just under the default 16 KiB limit, of the kind a slowloris
/// client trickles: 79 fields of 202 bytes.
fn big_head() -> Vec<u8> {
    let mut head = b"GET /plaintext HTTP/1.1\r\nHost: localhost:8080\r\n".to_vec();
    for i in 0..79 {
        head.extend_from_slice(format!("X-Pad-{i:02}: {}\r\n", "p".repeat(190)).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    assert!(head.len() > 16_000 && head.len() <= 16 * 1024);
    head
}

/// Feeds `reads` to one long-lived connection per iteration and drains the
/// output, as a driver does per receive.
fn run<H: forkring::Handler>(c: &mut Criterion, name: &str, requests: u64, reads: &[&[u8]], handler: H) {
    run_with(c, name, requests, reads, handler, false)
}

/// One whole loop turn per request, as a worker's: the turn's clock read
/// and `Date` check, the request, the turn's end (the histogram's clock
/// read); with `admission`, the loop's admission by queueing time too
/// (its state fed once a turn, its check once a request).
fn run_turns<H: forkring::Handler>(c: &mut Criterion, name: &str, mut handler: H, admission: bool) {
    let mut sh = WorkerState::new(Limits::default(), Timeouts::default());
    let page: &'static SharedCounters = Box::leak(Box::new(SharedCounters::new().expect("counters page")));
    sh.set_counters(page);
    sh.set_admission(&if admission { forkring::Admission::DEFAULT } else { forkring::Admission::OFF });
    sh.tick();
    let mut conn = Conn::new(&sh);
    let mut group = c.benchmark_group("http");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter(|| {
            sh.tick();
            conn.on_read(black_box(GET), &mut sh, &mut handler);
            let n = conn.output_len();
            black_box(conn.output());
            conn.consume_output(n, &mut sh);
            sh.end_turn();
        })
    });
    group.finish();
}

/// As [`run`]; with `counted`, the connection counts into a counters page
/// as a worker's does (requests, status classes, bytes, the latency
/// histogram), and every iteration is one loop turn: the clock read of
/// the histogram is paid once per request, its worst case.
fn run_with<H: forkring::Handler>(
    c: &mut Criterion,
    name: &str,
    requests: u64,
    reads: &[&[u8]],
    mut handler: H,
    counted: bool,
) {
    let mut sh = WorkerState::new(Limits::default(), Timeouts::default());
    if counted {
        let page: &'static SharedCounters = Box::leak(Box::new(SharedCounters::new().expect("counters page")));
        sh.set_counters(page);
    }
    sh.tick();
    let mut conn = Conn::new(&sh);
    let mut group = c.benchmark_group("http");
    group.throughput(Throughput::Elements(requests));
    group.bench_function(name, |b| {
        b.iter(|| {
            for read in reads {
                conn.on_read(black_box(read), &mut sh, &mut handler);
            }
            let n = conn.output_len();
            black_box(conn.output());
            conn.consume_output(n, &mut sh);
            if counted {
                sh.end_turn();
            }
        })
    });
    group.finish();
    assert!(!conn.is_closing(), "{name}: the connection closed; the benchmark measured an error path");
}

fn bench(c: &mut Criterion) {
    run(c, "get_keepalive", 1, &[GET], hello);
    run_with(c, "get_keepalive_counted", 1, &[GET], hello, true);
    run_turns(c, "get_keepalive_turn", hello, false);
    run_turns(c, "get_keepalive_turn_admitted", hello, true);

    let pipelined = GET.repeat(16);
    run(c, "get_pipelined_16", 16, &[&pipelined], hello);

    let (a, b) = GET.split_at(GET.len() / 2);
    run(c, "get_split_in_two_reads", 1, &[a, b], hello);

    let post = chunked_post();
    run(c, "post_chunked_1k_echo", 1, &[&post], echo);

    // A slow client's cost: each received byte must cost what a byte costs,
    // not a scan of the head so far.
    let head = big_head();
    let trickled: Vec<&[u8]> = head.chunks(1).collect();
    run(c, "head_16k_trickled_1_byte_per_read", 1, &trickled, hello);

    // The same for a long request line (an 8000-byte target).
    let line = format!("GET /{} HTTP/1.1\r\nHost: localhost:8080\r\n\r\n", "t".repeat(7999)).into_bytes();
    let trickled: Vec<&[u8]> = line.chunks(1).collect();
    run(c, "target_8k_trickled_1_byte_per_read", 1, &trickled, hello);
}

criterion_group!(benches, bench);
criterion_main!(benches);
