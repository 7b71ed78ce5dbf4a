"""How the figures are measured, and how to make them again.
"""


def measured_md(r):
    """The section "How the figures are measured"."""
    o = []
    o.append("## How the figures are measured")
    o.append("")
    o.append(
        "- requests/s: wrk's `Requests/sec`. Latency: wrk's percentiles (`bench/wrk.lua` prints p50, p99 and"
        " p99.9 from wrk's histogram). Pipelined, wrk times a whole batch as one sample, so no latency is"
        " given for that workload."
    )
    o.append(
        "- CPU µs/req: user + system time of the server's processes (master and workers, from"
        " `/proc/<pid>/stat`, counted in clock ticks of 10 ms) over the run, divided by the requests"
        " completed."
    )
    o.append("- RSS: VmRSS summed over the master and the workers at the end of each run.")
    o.append(
        "- other CPU: the machine's busy time (`/proc/stat`) over the run less the server's and the load"
        " generator's, in percent of one CPU (median over the runs): what other processes and kernel"
        " threads took. Near 0 on a quiet machine; where it is high, the figures are noisy."
    )
    o.append("- errors: wrk's socket errors (connect, read, write, timeout) plus non-2xx answers, summed over the runs.")
    o.append(
        "- nginx serves the same bytes: `return 200 \"Hello, World!\"` and, for `POST /echo`, the echo module"
        " (`echo_read_request_body; echo_request_body;`, which answers chunked where forkring sends a"
        " Content-Length); `access_log off`, `keepalive_requests 1000000`, `listen ... reuseport` like"
        " forkring's default; see `tools/src/nginx.rs`."
    )
    o.append(
        "- With more than one worker nothing is pinned and the load generator shares the CPUs with the"
        " server, so those figures measure the pair, not the server alone."
    )
    if r.peers:
        o.append(
            "- The peers (`bench/peers`, a cargo project of its own, release build) answer `GET /` and"
            " `POST /echo` as forkring's demo server does, with the differences the frameworks impose (see"
            " *What each server sends*). may_minihttp runs as many scheduler threads as workers (may's own"
            " pinning off; TechEmpower's pool and stack sizes) and accepts on one socket; hyper runs one"
            " current-thread tokio runtime per worker, each with its own `SO_REUSEPORT` socket, as threads"
            " of one process or as processes (`HYPER_MODE`), with `pipeline_flush`, TCP_NODELAY and no"
            " header-read timeout."
        )
    if r.floors:
        o.append(
            "- The floor servers (`floor-uring`, `floor-epoll`, `bench/peers`) run one process per worker, each"
            " with its own `SO_REUSEPORT` socket and TCP_NODELAY. They count complete heads (`\\r\\n\\r\\n`)"
            " and answer from a static buffer (a fixed `Date` of the same length); a `Connection: close` is"
            " honoured as wrk spells it. floor-uring sets up its ring as forkring's driver does (flags, queue"
            " sizes, 256 × 8 KiB provided buffers consumed incrementally) and closes through the ring with the"
            " receive cancelled in the same submission; floor-epoll is edge-triggered with one 64 KiB read"
            " buffer. Neither has timers, limits, logs or a master."
        )
    if r.curve:
        o.append(
            "- Latency curve: `ratebench` at each point for every server, the servers' order rotating from point"
            " to point; a share's rate is that share of the server's keep-alive median under wrk in this run."
        )
    if r.overload:
        o.append(
            "- Past capacity: `forkring-stress --only 14 --json` (`make stress` scenario 14, the same"
            " measurement) after the other steps, on a quiet machine; its figures are taken as it wrote them"
            " (`overload.json`). A forkring bound it finds failed does not stop the bench: the goals above say"
            " which."
        )
    o.append("")
    return o


def reproduce_md(r):
    """The section "How to reproduce"."""
    m = r.meta
    reps = m.get("reps", "?")
    o = []
    o.append("## How to reproduce")
    o.append("")
    o.append("```sh")
    o.append("make bench                          # everything, about 20 minutes on a quiet machine")
    o.append(
        f"DURATION={m.get('duration')} REPS={reps} WORKERS=\"{' '.join(map(str, r.worker_counts))}\""
        f" WORKLOADS=\"{m.get('workloads')}\" RATE={m.get('rate_setting')}"
        + (" BASELINE=/path/to/old/forkring" if r.pairs else "")
        + (f" HYPER_MODE={m.get('hyper_mode')}" if "hyper" in r.peers else "")
        + ("" if r.peers else " PEERS=0")
        + " make bench   # this run's settings"
    )
    o.append("DURATION=1s REPS=1 WORKERS=1 WORKLOADS=keepalive RATE=0 IPC=0 make bench   # a quick look")
    o.append("PEERS=0 make bench                  # without may_minihttp, hyper and the floor")
    o.append("CURVE=0 make bench                  # without the latency curve")
    o.append("OVERLOAD=0 make bench               # without the past-capacity run")
    o.append("OVERLOAD_JSON=overload.json make bench   # its figures from an earlier run instead")
    o.append("```")
    o.append("")
    o.append(
        "The per-run figures are in `results.tsv` (wrk), `rates.tsv` (fixed rate), `curve.tsv` (the latency"
        " curve) and `overload.json` (past capacity) beside this file, with"
        " `meta.tsv` (columns as described in `bench/run.sh`); `python3 bench/report.py --dir DIR --out DIR`"
        " makes this report again from them."
    )
    return o
