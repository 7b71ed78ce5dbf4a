"""What bench/run.sh measured, read back: the per-run figures (results.tsv,
rates.tsv, curve.tsv, sse.tsv; bench/run.sh describes the columns), the run's settings
and notes (meta.tsv), the past-capacity figures (overload.json, as
`forkring-stress --json` writes them), the tables it wrote as text (uploads.txt, waits.txt,
ipc.txt), and the medians, ranges and ratios every part of the report
draws from them.

Where it stops: figures only; how they are laid out is the other modules'.
"""

import json
import math
import os
import statistics


RESULT_COLS = [
    "workers", "workload", "server", "rep", "rps", "p50", "p99", "p999", "cpu", "rss", "errors", "requests", "other",
]
RATE_COLS = [
    "workers", "server", "rep", "rate", "achieved", "p50", "p90", "p99", "p999", "max",
    "svc_p50", "svc_p99", "lag_p50", "lag_p99", "errors", "cpu", "rss", "other",
]
# A point of the latency curve: a fixed-rate run, and the share of the
# server's keep-alive capacity its rate is (NaN for an absolute rate).
CURVE_COLS = RATE_COLS + ["share"]
SSE_COLS = [
    "server", "streams", "events", "seconds", "rss_idle", "rss", "bytes_per_stream", "cpu_per_event", "errors",
]
# forkring-base-<backend>: the BASELINE binary (bench/run.sh), next to its
# current counterpart.
BASE_PREFIX = "forkring-base-"
# The other Rust servers (bench/peers), measured beside nginx.
PEERS = ["may_minihttp", "hyper"]
# The floor of each backend (bench/peers): the least system-call work that
# answers GET / as forkring's driver on that backend does.
FLOOR_PREFIX = "floor-"
FLOORS = ["floor-uring", "floor-epoll"]
SERVER_ORDER = [
    "forkring-uring", "forkring-base-uring", "forkring-epoll", "forkring-base-epoll",
    "forkring-auto", "forkring-base-auto", "nginx",
] + PEERS + FLOORS
# Marks a server that does not close a connection whose request says
# `Connection: close`, in the rows of the close workload.
NO_CLOSE_MARK = "†"
NAN = float("nan")
# Other processes' CPU, in percent of one CPU, above which a run counts as noisy.
NOISY_PCT = 20


def num(s):
    try:
        return float(s)
    except ValueError:
        return NAN


def read_rows(path, cols):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != len(cols):
                continue
            row = dict(zip(cols, parts))
            for k in cols:
                if k not in ("workload", "server"):
                    row[k] = num(row[k])
            rows.append(row)
    return rows


def read_overload(path):
    """overload.json: ({"capacity": {...}, "rows": [...]}, "") when it is
    there and readable, (None, why) when it is there but not, (None, "")
    when it is not there."""
    if not os.path.exists(path):
        return None, ""
    try:
        with open(path) as f:
            o = json.load(f)
    except (OSError, ValueError) as e:
        return None, f"{os.path.basename(path)} could not be read: {e}"
    if not isinstance(o, dict) or not isinstance(o.get("rows"), list):
        return None, f"{os.path.basename(path)} has no list of rows"
    return o, ""


def read_meta(path):
    meta, notes = {}, []
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("\t")
            if k == "note":
                notes.append(v)
            else:
                meta[k] = v
    return meta, notes


def med(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else NAN


def rng(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return (min(xs), max(xs)) if xs else (NAN, NAN)


def server_key(s):
    return (SERVER_ORDER.index(s) if s in SERVER_ORDER else len(SERVER_ORDER), s)


class Run:
    """One run's figures, from the directory bench/run.sh wrote them to."""

    def __init__(self, run_dir):
        self.meta, self.notes = read_meta(os.path.join(run_dir, "meta.tsv"))
        self.runs = read_rows(os.path.join(run_dir, "results.tsv"), RESULT_COLS)
        self.rates = read_rows(os.path.join(run_dir, "rates.tsv"), RATE_COLS)
        self.curve = read_rows(os.path.join(run_dir, "curve.tsv"), CURVE_COLS)
        self.sse = read_rows(os.path.join(run_dir, "sse.tsv"), SSE_COLS)
        # The past-capacity run, and why it is missing where it is.
        self.overload, self.overload_error = read_overload(os.path.join(run_dir, "overload.json"))
        ipc = os.path.join(run_dir, "ipc.txt")
        self.ipc = open(ipc).read().strip("\n") if os.path.exists(ipc) else ""
        uploads = os.path.join(run_dir, "uploads.txt")
        self.uploads = open(uploads).read().strip("\n") if os.path.exists(uploads) else ""
        waits = os.path.join(run_dir, "waits.txt")
        self.waits = open(waits).read().strip("\n") if os.path.exists(waits) else ""
        self.workloads = self.meta.get("workloads", "").split()
        self.worker_counts = [int(w) for w in self.meta.get("worker_counts", "").split()]
        self.servers = sorted(
            {r["server"] for r in self.runs} | {r["server"] for r in self.rates} | {r["server"] for r in self.curve},
            key=server_key,
        )
        # (backend, current, baseline) for each baseline server measured.
        self.pairs = [
            (s[len(BASE_PREFIX):], "forkring-" + s[len(BASE_PREFIX):], s)
            for s in self.servers
            if s.startswith(BASE_PREFIX)
        ]
        # The forkring builds (current, not baseline) and the peers measured.
        self.forks = [s for s in self.servers if s.startswith("forkring-") and not s.startswith(BASE_PREFIX)]
        self.peers = [s for s in self.servers if s in PEERS]
        self.floors = [s for s in self.servers if s.startswith(FLOOR_PREFIX)]
        # The width of the server column in the terminal tables.
        self.sw = max([15] + [len(s) + 2 for s in self.servers])

    def stats(self, workers, workload, server):
        rs = [r for r in self.runs if r["workers"] == workers and r["workload"] == workload and r["server"] == server]
        if not rs:
            return None
        lo, hi = rng([r["rps"] for r in rs])
        cpu_lo, cpu_hi = rng([r["cpu"] for r in rs])
        return {
            "cpu_lo": cpu_lo,
            "cpu_hi": cpu_hi,
            "n": len(rs),
            "rps": med([r["rps"] for r in rs]),
            "rps_lo": lo,
            "rps_hi": hi,
            "p50": med([r["p50"] for r in rs]),
            "p99": med([r["p99"] for r in rs]),
            "p999": med([r["p999"] for r in rs]),
            "cpu": med([r["cpu"] for r in rs]),
            "rss": med([r["rss"] for r in rs]) / 1024.0,
            "errors": sum(r["errors"] for r in rs),
            "other": med([r["other"] for r in rs]),
        }

    def paired(self, workers, workload, a, b, key):
        """a / b per repetition, from the runs of one repetition (which took turns)."""
        by_rep = {}
        for r in self.runs:
            if r["workers"] == workers and r["workload"] == workload and r["server"] in (a, b):
                by_rep.setdefault(r["rep"], {})[r["server"]] = r[key]
        out = []
        for v in by_rep.values():
            if a in v and b in v and not math.isnan(v[a]) and not math.isnan(v[b]) and v[b] != 0:
                out.append(v[a] / v[b])
        return out

    def floor_of(self, server):
        """The floor of a forkring build's backend, if it was measured."""
        backend = server.rsplit("-", 1)[-1]
        f = FLOOR_PREFIX + backend
        return f if f in self.floors else None

    def curve_points(self, server):
        """The latency curve of `server`: one dict per point (a share of its
        capacity, or an absolute rate), medians over the repetitions, by
        offered rate."""
        by_point = {}
        for r in self.curve:
            if r["server"] == server:
                key = ("abs", r["rate"]) if math.isnan(r["share"]) else ("share", r["share"])
                by_point.setdefault(key, []).append(r)
        out = []
        for (kind, v), rs in by_point.items():
            p = {"kind": kind, "share": v if kind == "share" else NAN, "n": len(rs)}
            for k in ("rate", "achieved", "p50", "p90", "p99", "p999", "max", "lag_p99", "cpu"):
                p[k] = med([r[k] for r in rs])
            p["errors"] = sum(r["errors"] for r in rs)
            out.append(p)
        return sorted(out, key=lambda p: p["rate"])

    def ignores_close(self, server):
        """True when bench/run.sh saw `server` keep a connection open after
        answering a request with `Connection: close`."""
        v = self.meta.get(f"on_close_{server}")
        return v is not None and v != "closes"

    def label(self, server, workload):
        """The server's name, marked in the close workload if it does not close."""
        if workload == "close" and self.ignores_close(server):
            return f"{server} {NO_CLOSE_MARK}"
        return server

    def no_close_note(self, short=False):
        """The footnote to NO_CLOSE_MARK, or "" where no server needs it."""
        bad = [s for s in self.servers if self.ignores_close(s)]
        if not bad or "close" not in self.workloads:
            return ""
        if short:
            return f"{NO_CLOSE_MARK} does not close on `Connection: close` (see *What each server sends*)."
        return (
            f"{NO_CLOSE_MARK} {', '.join(bad)}: the server does not close a connection whose request says"
            " `Connection: close`; it answers with `Connection: close` and wrk closes the connection instead,"
            " so there the client closes first, not the server (see *What each server sends*)."
        )

    def rate_stats(self, workers, server):
        rs = [r for r in self.rates if r["workers"] == workers and r["server"] == server]
        if not rs:
            return None
        out = {"n": len(rs), "errors": sum(r["errors"] for r in rs), "rate": rs[0]["rate"]}
        for k in ("achieved", "p50", "p90", "p99", "p999", "max", "svc_p50", "svc_p99", "lag_p50", "lag_p99", "cpu", "other"):
            out[k] = med([r[k] for r in rs])
        out["rss"] = med([r["rss"] for r in rs]) / 1024.0
        out["p99_lo"], out["p99_hi"] = rng([r["p99"] for r in rs])
        return out

    def noise_line(self):
        xs = [r["other"] for r in self.runs + self.rates if not math.isnan(r["other"])]
        if not xs:
            return "other processes' CPU: not measured"
        busy = sum(1 for x in xs if x >= NOISY_PCT)
        line = (
            f"other processes' CPU during the runs: median {statistics.median(xs):.0f}%, max {max(xs):.0f}% of one"
            f" CPU; {busy} of {len(xs)} runs above {NOISY_PCT}%"
            f" (load average at the start {self.meta.get('load_start')}, at the end {self.meta.get('load_end')}"
        )
        waited = int(num(self.meta.get("quiet_waited", "0")) or 0)
        if waited:
            line += f"; the runs waited {waited} s in all for other processes to calm down"
        line += ")"
        if self.noisy():
            line += "; the machine was shared and busy with other work, so these figures are noisy"
        return line

    def noise_short(self):
        xs = [r["other"] for r in self.runs + self.rates if not math.isnan(r["other"])]
        if not xs:
            return ""
        busy = sum(1 for x in xs if x >= NOISY_PCT)
        line = (
            f"other processes' CPU during the runs: median {statistics.median(xs):.0f}%, max {max(xs):.0f}% of one CPU,"
            f" {busy} of {len(xs)} runs above {NOISY_PCT}%"
        )
        return line + (": shared, noisy machine" if self.noisy() else "")

    def noisy(self):
        """True when other processes took a fifth of a CPU or more in a tenth of the runs or more."""
        xs = [r["other"] for r in self.runs + self.rates if not math.isnan(r["other"])]
        return bool(xs) and sum(1 for x in xs if x >= NOISY_PCT) * 10 >= len(xs)

    def rate_workers(self):
        return sorted({int(r["workers"]) for r in self.rates})

    def where(self, w):
        return self.meta.get(f"where_{w}", "")

    def wrk_line(self, w):
        m = self.meta
        return f"wrk -t{m.get(f'wrk_threads_{w}', '?')} -c{m.get('conns')} -d{m.get('duration')}"
