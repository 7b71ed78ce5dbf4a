#!/usr/bin/env python3
"""make bench's report: reads what bench/run.sh measured and prints the
tables, then writes report.md and report.svg. Standard library only, no
network.

    python3 bench/report.py --dir RUN_DIR --out target/bench

RUN_DIR holds results.tsv (one wrk run a line), rates.tsv (one fixed-rate
run a line), meta.tsv (key, tab, value) and ipc.txt (the IPC ring summary,
optional); bench/run.sh describes the columns.
"""

import argparse
import math
import os
import statistics
import sys
from html import escape

RESULT_COLS = [
    "workers", "workload", "server", "rep", "rps", "p50", "p99", "p999", "cpu", "rss", "errors", "requests", "other",
]
RATE_COLS = [
    "workers", "server", "rep", "rate", "achieved", "p50", "p90", "p99", "p999", "max",
    "svc_p50", "svc_p99", "lag_p50", "lag_p99", "errors", "cpu", "rss", "other",
]
WORKLOAD_TITLES = {
    "keepalive": "keep-alive GET /",
    "pipelined": "pipelined GET /",
    "post": "POST /echo",
    "close": "connection per request",
    "static1m": "GET /files/1m.bin (1 MiB file)",
    "static4k": "GET /files/4k.bin (4 KiB file)",
}
SSE_COLS = [
    "server", "streams", "events", "seconds", "rss_idle", "rss", "bytes_per_stream", "cpu_per_event", "errors",
]
# forkring-base-<backend>: the BASELINE binary (bench/run.sh), next to its
# current counterpart.
BASE_PREFIX = "forkring-base-"
# The other Rust servers (bench/peers), measured beside nginx.
PEERS = ["may_minihttp", "hyper"]
SERVER_ORDER = [
    "forkring-uring", "forkring-base-uring", "forkring-epoll", "forkring-base-epoll",
    "forkring-auto", "forkring-base-auto", "nginx",
] + PEERS
COLORS = {
    "forkring-uring": "#1f5fa8", "forkring-epoll": "#6fa8dc", "forkring-auto": "#3d85c6", "nginx": "#3a9a3a",
    "forkring-base-uring": "#b45f06", "forkring-base-epoll": "#f6b26b", "forkring-base-auto": "#e69138",
    "may_minihttp": "#a61c00", "hyper": "#674ea7",
}
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


def fmt_rate(x):
    if math.isnan(x):
        return "n/a"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def fmt_us(x, us="us"):
    if math.isnan(x):
        return "n/a"
    if x >= 1e6:
        return f"{x / 1e6:.2f}s"
    if x >= 1000:
        return f"{x / 1000:.2f}ms"
    return f"{x:.0f}{us}"


def fmt_md(x):
    return fmt_us(x, "µs")


def fmt_short(x):
    """Three significant digits: 172µs, 97.5ms, 1.23s."""
    if math.isnan(x):
        return "n/a"
    for scale, unit in ((1e6, "s"), (1e3, "ms"), (1, "µs")):
        if x >= scale or scale == 1:
            return f"{x / scale:.3g}{unit}"
    return ""


def fmt_ratio(a, b):
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "-"
    return f"{a / b:.2f}"


def fmt_ratio_range(xs, dash="–"):
    """Per-repetition ratios: "1.02" for one, "1.02 [0.98–1.05]" (median, min–max) for more."""
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}{dash}{max(xs):.2f}]"


def fmt_f(x, d=2):
    return "n/a" if math.isnan(x) else f"{x:.{d}f}"


def fmt_pct(x):
    """Other processes' CPU; `!` marks a noisy figure."""
    return "n/a" if math.isnan(x) else f"{x:.0f}%" + ("!" if x >= NOISY_PCT else "")


def workers_label(w):
    return "1 worker" if w == 1 else f"{w} workers"


class Report:
    def __init__(self, run_dir):
        self.meta, self.notes = read_meta(os.path.join(run_dir, "meta.tsv"))
        self.runs = read_rows(os.path.join(run_dir, "results.tsv"), RESULT_COLS)
        self.rates = read_rows(os.path.join(run_dir, "rates.tsv"), RATE_COLS)
        self.sse = read_rows(os.path.join(run_dir, "sse.tsv"), SSE_COLS)
        ipc = os.path.join(run_dir, "ipc.txt")
        self.ipc = open(ipc).read().strip("\n") if os.path.exists(ipc) else ""
        uploads = os.path.join(run_dir, "uploads.txt")
        self.uploads = open(uploads).read().strip("\n") if os.path.exists(uploads) else ""
        waits = os.path.join(run_dir, "waits.txt")
        self.waits = open(waits).read().strip("\n") if os.path.exists(waits) else ""
        self.workloads = self.meta.get("workloads", "").split()
        self.worker_counts = [int(w) for w in self.meta.get("worker_counts", "").split()]
        self.servers = sorted({r["server"] for r in self.runs} | {r["server"] for r in self.rates}, key=server_key)
        # (backend, current, baseline) for each baseline server measured.
        self.pairs = [
            (s[len(BASE_PREFIX):], "forkring-" + s[len(BASE_PREFIX):], s)
            for s in self.servers
            if s.startswith(BASE_PREFIX)
        ]
        # The forkring builds (current, not baseline) and the peers measured.
        self.forks = [s for s in self.servers if s.startswith("forkring-") and not s.startswith(BASE_PREFIX)]
        self.peers = [s for s in self.servers if s in PEERS]
        # The width of the server column in the terminal tables.
        self.sw = max([15] + [len(s) + 2 for s in self.servers])

    # ------------------------------------------------------------- figures --

    def stats(self, workers, workload, server):
        rs = [r for r in self.runs if r["workers"] == workers and r["workload"] == workload and r["server"] == server]
        if not rs:
            return None
        lo, hi = rng([r["rps"] for r in rs])
        return {
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

    def peer_rows(self, dash="–"):
        """One row per worker count, workload and forkring backend with a
        peer beside it: (workers, workload, server, cells), the cells
        already formatted: its CPU µs/req and req/s, then for each peer
        forkring / peer for CPU and req/s, per repetition."""
        rows = []
        for w in self.worker_counts:
            for wl in self.workloads:
                for f in self.forks:
                    st = self.stats(w, wl, f)
                    if st is None or not any(self.stats(w, wl, p) for p in self.peers):
                        continue
                    cells = [fmt_f(st["cpu"]), f"{st['rps']:,.0f}"]
                    for p in self.peers:
                        cells.append(fmt_ratio_range(self.paired(w, wl, f, p, "cpu"), dash))
                        cells.append(fmt_ratio_range(self.paired(w, wl, f, p, "rps"), dash))
                    rows.append((w, wl, f, cells))
        return rows

    def baseline_rows(self, dash="–"):
        """One row per worker count, workload and backend with a baseline:
        (workers, workload, backend, cells), the cells already formatted."""
        rows = []
        for w in self.worker_counts:
            for wl in self.workloads:
                nginx = self.stats(w, wl, "nginx")
                for b, cur, base in self.pairs:
                    c, o = self.stats(w, wl, cur), self.stats(w, wl, base)
                    if c is None or o is None:
                        continue
                    cells = [
                        fmt_ratio(c["cpu"], nginx["cpu"]) if nginx else "-",
                        fmt_ratio(o["cpu"], nginx["cpu"]) if nginx else "-",
                        fmt_ratio(c["rps"], nginx["rps"]) if nginx else "-",
                        fmt_ratio(o["rps"], nginx["rps"]) if nginx else "-",
                        fmt_ratio_range(self.paired(w, wl, cur, base, "cpu"), dash),
                        fmt_ratio_range(self.paired(w, wl, cur, base, "rps"), dash),
                    ]
                    rows.append((w, wl, b, cells))
        return rows

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

    # ------------------------------------------------------------ terminal --

    def terminal(self):
        out = []
        reps = self.meta.get("reps", "?")
        for w in self.worker_counts:
            out.append(
                f"{workers_label(w)} each: {self.where(w)}; {self.wrk_line(w)}; median of {reps} run(s) [min-max]"
            )
            out.append("")
            head = (
                f"{'workload':<10} {'server':<{self.sw}} {'req/s [min-max]':>26} {'p50':>8} {'p99':>8} {'p99.9':>8}"
                f" {'CPU us/req':>10} {'RSS MiB':>8} {'errors':>6} {'other':>6} | {'xreq/s':>6} {'xp99':>6} {'xCPU':>6} {'xRSS':>6}"
            )
            out.append(head)
            out.append("-" * len(head))
            for wl in self.workloads:
                nginx = self.stats(w, wl, "nginx")
                first = True
                for s in self.servers:
                    st = self.stats(w, wl, s)
                    if st is None:
                        continue
                    rr = f"{fmt_rate(st['rps'])} [{fmt_rate(st['rps_lo'])}-{fmt_rate(st['rps_hi'])}]"
                    if s != "nginx" and nginx:
                        ratios = [
                            fmt_ratio(st["rps"], nginx["rps"]),
                            fmt_ratio(st["p99"], nginx["p99"]),
                            fmt_ratio(st["cpu"], nginx["cpu"]),
                            fmt_ratio(st["rss"], nginx["rss"]),
                        ]
                    else:
                        ratios = [""] * 4
                    out.append(
                        f"{wl if first else '':<10} {self.label(s, wl):<{self.sw}} {rr:>26} {fmt_us(st['p50']):>8} {fmt_us(st['p99']):>8}"
                        f" {fmt_us(st['p999']):>8} {fmt_f(st['cpu']):>10} {fmt_f(st['rss'], 1):>8}"
                        f" {st['errors']:>6.0f} {fmt_pct(st['other']):>6} | {ratios[0]:>6} {ratios[1]:>6} {ratios[2]:>6} {ratios[3]:>6}"
                    )
                    first = False
            out.append("")
        for w in self.rate_workers():
            nginx = self.rate_stats(w, "nginx")
            any_st = next(st for st in (self.rate_stats(w, s) for s in self.servers) if st)
            out.append(
                f"fixed rate {any_st['rate']:.0f} req/s, {workers_label(w)} each: {self.where(w)};"
                f" ratebench {self.meta.get('rate_threads')} threads x {self.meta.get('rate_conns')} connections,"
                f" {self.meta.get('rate_duration')} s (first 1 s not counted); median of {reps} run(s)"
            )
            out.append("latency from each request's due time (no coordinated omission)")
            out.append("")
            head = (
                f"{'server':<{self.sw}} {'achieved':>9} {'p50':>8} {'p90':>8} {'p99':>8} {'p99.9':>8} {'max':>8}"
                f" {'service p50/p99':>17} {'client lag p99':>14} {'CPU us/req':>10} {'errors':>6} {'other':>6}"
                f" | {'xp50':>5} {'xp99':>5} {'xp99.9':>6}"
            )
            out.append(head)
            out.append("-" * len(head))
            for s in self.servers:
                st = self.rate_stats(w, s)
                if st is None:
                    continue
                if s != "nginx" and nginx:
                    ratios = [fmt_ratio(st[k], nginx[k]) for k in ("p50", "p99", "p999")]
                else:
                    ratios = [""] * 3
                svc = f"{fmt_us(st['svc_p50'])}/{fmt_us(st['svc_p99'])}"
                out.append(
                    f"{s:<{self.sw}} {fmt_rate(st['achieved']):>9} {fmt_us(st['p50']):>8} {fmt_us(st['p90']):>8}"
                    f" {fmt_us(st['p99']):>8} {fmt_us(st['p999']):>8} {fmt_us(st['max']):>8} {svc:>17}"
                    f" {fmt_us(st['lag_p99']):>14} {fmt_f(st['cpu']):>10} {st['errors']:>6.0f} {fmt_pct(st['other']):>6}"
                    f" | {ratios[0]:>5} {ratios[1]:>5} {ratios[2]:>6}"
                )
            out.append("")
        out.extend(self.baseline_terminal())
        out.extend(self.peers_terminal())
        out.append(
            "x columns: server / nginx (req/s: higher is better; latency, CPU, RSS: lower is better)."
            " Pipelined latency is n/a: wrk times a batch, not a request."
        )
        if self.no_close_note():
            out.append(self.no_close_note().replace("`", "").replace("*", ""))
        out.append(
            f"other: CPU other processes took during the run (median), in percent of one CPU; ! marks {NOISY_PCT}% or"
            " more, where the figures are noisy."
        )
        out.append(self.noise_line())
        for n in self.notes:
            out.append(f"note: {n}")
        return "\n".join(out)

    def peers_terminal(self):
        rows = self.peer_rows("-")
        if not rows:
            return []
        out = [
            f"forkring against the peers ({', '.join(self.peers)}), same run: forkring / peer, median [min-max] of the"
            " per-repetition ratios (CPU: below 1, forkring is cheaper; req/s: above 1, forkring is faster)",
            "",
        ]
        head = f"{'workload':<10} {'workers':>7} {'server':<15} {'CPU us/req':>10} {'req/s':>10}"
        for p in self.peers:
            head += f" | {('CPU / ' + p):>22} {('req/s / ' + p):>22}"
        out.append(head)
        out.append("-" * len(head))
        for w, wl, f, c in rows:
            line = f"{wl:<10} {w:>7} {f:<15} {c[0]:>10} {c[1]:>10}"
            for i in range(len(self.peers)):
                line += f" | {c[2 + 2 * i]:>22} {c[3 + 2 * i]:>22}"
            out.append(line)
        out.append("")
        return out

    def peers_md(self):
        """forkring against the peers, from one run, and what each server sends."""
        rows = self.peer_rows()
        o = []
        if rows:
            m = self.meta
            o.append("## forkring against the peers")
            o.append("")
            o.append(
                f"The peers are the fastest Rust HTTP/1 servers ({self.peers_line()}), built from `bench/peers`"
                " and serving the same requests; they took turns with forkring and nginx in the same rotation, with"
                " as many workers, pinned alike. The ratio columns divide forkring by the peer within each"
                f" repetition: median [min–max] of those ratios, over {m.get('reps', '?')} repetition(s). CPU: below 1,"
                " forkring spends less per request; req/s: above 1, forkring serves more."
            )
            o.append("")
            head = "| workload | workers | server | CPU µs/req | req/s |"
            for p in self.peers:
                head += f" CPU / {p} | req/s / {p} |"
            o.append(head)
            o.append("|" + "---|" * (head.count("|") - 1))
            for w, wl, f, c in rows:
                o.append(f"| {WORKLOAD_TITLES.get(wl, wl)} | {w} | {f} | " + " | ".join(c) + " |")
            o.append("")
            if self.no_close_note():
                o.append(self.no_close_note(short=True))
                o.append("")
        o.extend(self.responses_md())
        return o

    def peers_line(self):
        """The peers with their versions and workers, from the run's notes."""
        out = []
        for p in self.peers:
            note = next(
                (self.meta[f"note_{p}_{w}"] for w in self.worker_counts if f"note_{p}_{w}" in self.meta), p
            )
            out.append(note.split(",")[0])
        if "hyper" in self.peers:
            mode = self.meta.get("hyper_mode", "threads")
            per = "process" if mode == "processes" else "thread"
            out[self.peers.index("hyper")] += f" with one current-thread tokio runtime per worker {per}"
        return "; ".join(out)

    def responses_md(self):
        """What every server answers to GET /, and whether it closes on Connection: close."""
        if not any(f"response_{s}" in self.meta for s in self.servers):
            return []
        o = ["## What each server sends", ""]
        o.append(
            "The answer to a keep-alive `GET /` as bench/run.sh read it at the start (status line, every header in"
            " order with the Date's value left out, then the body), and what the server did after answering a"
            " `GET /` with `Connection: close`: *closes* the connection, or *stays open* (still open 2 s later)."
        )
        o.append("")
        o.append("| server | `GET /` | after `Connection: close` |")
        o.append("|---|---|---|")
        for s in self.servers:
            if f"response_{s}" in self.meta:
                resp = self.meta[f"response_{s}"].replace("|", "\\|")
                close = self.meta.get(f"on_close_{s}", "?")
                if close != "closes":
                    close = f"**{close}** {NO_CLOSE_MARK}"
                o.append(f"| {s} | `{resp}` | {close} |")
        o.append("")
        return o

    def baseline_terminal(self):
        rows = self.baseline_rows("-")
        if not rows:
            return []
        out = [
            f"current (forkring-<backend>, {self.meta.get('forkring')}) against the baseline"
            f" (forkring-base-<backend>, {self.meta.get('baseline')}), same run; median of"
            f" {self.meta.get('reps', '?')} run(s); current/baseline: median [min-max] of the per-repetition ratios",
            "",
        ]
        head = (
            f"{'workload':<10} {'workers':>7} {'backend':<7} | {'CPU us/req / nginx':>19} | {'req/s / nginx':>17}"
            f" | {'current/baseline: CPU':>22} {'req/s':>18}"
        )
        out.append(head)
        out.append(f"{'':<10} {'':>7} {'':<7} | {'current':>9} {'baseline':>9} | {'current':>8} {'baseline':>8} |")
        out.append("-" * len(head))
        for w, wl, b, c in rows:
            out.append(
                f"{wl:<10} {w:>7} {b:<7} | {c[0]:>9} {c[1]:>9} | {c[2]:>8} {c[3]:>8} | {c[4]:>22} {c[5]:>18}"
            )
        out.append("")
        return out

    def baseline_md(self):
        """Current against the baseline, both against nginx, from one run."""
        rows = self.baseline_rows()
        if not rows:
            return []
        m = self.meta
        o = ["## Current build against the baseline", ""]
        o.append(
            f"`forkring-<backend>` is the current build ({m.get('forkring')}); `forkring-base-<backend>` is the"
            f" `BASELINE` binary ({m.get('baseline')}), started with the same flags. Both took turns with nginx in"
            f" the same rotation of this run, so the ratios below share its conditions. Median of"
            f" {m.get('reps', '?')} run(s). CPU µs/req: lower is better; requests/s: higher is better. The last"
            " two columns divide current by baseline within each repetition: median [min–max] of those ratios."
        )
        o.append("")
        o.append(
            "| workload | workers | backend | CPU µs/req current / nginx | CPU µs/req baseline / nginx"
            " | req/s current / nginx | req/s baseline / nginx | CPU current / baseline | req/s current / baseline |"
        )
        o.append("|---|---|---|---|---|---|---|---|---|")
        for w, wl, b, c in rows:
            o.append(f"| {WORKLOAD_TITLES.get(wl, wl)} | {w} | {b} | " + " | ".join(c) + " |")
        o.append("")
        return o

    # ------------------------------------------------------------ markdown --

    def summary_md(self):
        """The condensed tables the README's "Latest figures" shows."""
        o = []
        forks = [s for s in self.servers if s != "nginx"]
        names = " / ".join(s.replace("forkring-", "") for s in self.servers)
        head = (
            "| workload | workers | "
            + " | ".join(f"{s.replace('forkring-', '')} req/s" for s in self.servers)
            + " | "
            + " | ".join(f"{s.replace('forkring-', '')} / nginx" for s in forks)
            + f" | p99 {names} | CPU µs/req {names} | RSS MiB {names} |"
        )
        o.append(head)
        o.append("|" + "---|" * (head.count("|") - 1))
        for wl in self.workloads:
            for w in self.worker_counts:
                sts = {s: self.stats(w, wl, s) for s in self.servers}
                if not any(sts.values()):
                    continue
                nginx = sts.get("nginx")

                def col(k, f, sts=sts):
                    return " / ".join(f(sts[s][k]) if sts[s] else "–" for s in self.servers)

                o.append(
                    f"| {WORKLOAD_TITLES.get(wl, wl)} | {w} | "
                    + " | ".join(f"{sts[s]['rps']:,.0f}" if sts[s] else "–" for s in self.servers)
                    + " | "
                    + " | ".join(
                        fmt_ratio(sts[s]["rps"], nginx["rps"]) if sts[s] and nginx else "–" for s in forks
                    )
                    + f" | {col('p99', fmt_md)} | {col('cpu', fmt_f)} | {col('rss', lambda x: fmt_f(x, 1))} |"
                )
        o.append("")
        if self.no_close_note():
            o.append(self.no_close_note())
            o.append("")
        for w in self.rate_workers():
            sts = [(s, self.rate_stats(w, s)) for s in self.servers]
            sts = [(s, st) for s, st in sts if st]
            rate = sts[0][1]["rate"]
            o.append(
                f"Fixed rate, {rate:,.0f} requests/s, {workers_label(w)} each (latency from each request's due time):"
            )
            o.append("")
            o.append("| server | p50 | p90 | p99 | p99.9 | max | CPU µs/req | errors |")
            o.append("|---|---|---|---|---|---|---|---|")
            for s, st in sts:
                o.append(
                    f"| {s} | {fmt_md(st['p50'])} | {fmt_md(st['p90'])} | {fmt_md(st['p99'])} | {fmt_md(st['p999'])}"
                    f" | {fmt_md(st['max'])} | {fmt_f(st['cpu'])} | {st['errors']:.0f} |"
                )
            o.append("")
        o.append(
            f"Medians of {self.meta.get('reps')} runs of {self.meta.get('duration')}; {self.noise_line()}."
        )
        o.append("")
        return o

    def markdown(self, svg_name):
        m = self.meta
        reps = m.get("reps", "?")
        o = []
        o.append("# forkring benchmark report")
        o.append("")
        o.append(f"Made by `make bench` (`bench/run.sh`) on {m.get('date')}.")
        o.append("")
        o.append("## Summary")
        o.append("")
        o.extend(self.summary_md())
        o.extend(self.baseline_md())
        o.extend(self.peers_md())
        o.append("## Machine and tools")
        o.append("")
        o.append("| | |")
        o.append("|---|---|")
        o.append(f"| CPUs | {m.get('nproc')} × {m.get('model')} |")
        o.append(f"| memory | {m.get('memory')} |")
        o.append(f"| kernel | {m.get('kernel')} |")
        o.append(f"| load average (1, 5, 15 min) | at the start {m.get('load_start')}; at the end {m.get('load_end')} |")
        o.append(f"| forkring | {m.get('forkring')} |")
        if m.get("baseline"):
            o.append(f"| forkring baseline (`BASELINE`) | {m.get('baseline')} |")
        o.append(f"| rustc | {m.get('rustc')} |")
        o.append(f"| nginx | {m.get('nginx')} |")
        o.append(f"| wrk | {m.get('wrk')} |")
        o.append(f"| report | {m.get('python')} |")
        o.append(f"| other work on the machine | {self.noise_line()} |")
        o.append("")
        o.append("## Parameters")
        o.append("")
        o.append(f"- servers: {', '.join(self.servers)}; every server runs the same number of workers.")
        for w in self.worker_counts:
            o.append(f"- {workers_label(w)} each: {self.where(w)}; `{self.wrk_line(w)} -s bench/wrk.lua`.")
        o.append(
            f"- {reps} repetition(s); within each, the servers take turns, the order rotating every repetition;"
            f" per-server warm-up {m.get('warmup')}."
        )
        o.append(
            f"- workloads: keep-alive `GET /`; `GET /` pipelined {m.get('depth')} deep;"
            f" `POST /echo` with a {m.get('body')}-byte body, echoed back; one connection per request"
            " (`Connection: close`)."
        )
        if self.rates:
            o.append(
                f"- fixed rate: `target/release/examples/ratebench --rate R --duration {m.get('rate_duration')}"
                f" --warmup 1 --threads {m.get('rate_threads')} --conns {m.get('rate_conns')}` (RATE={m.get('rate_setting')})."
            )
        o.append("")
        for w in self.worker_counts:
            o.append(f"## Under wrk, {workers_label(w)} each")
            o.append("")
            o.append(f"{self.where(w)}; `{self.wrk_line(w)}`; median of {reps} run(s), requests/s with [min–max].")
            o.append("Ratios are server / nginx: above 1 is better for requests/s, below 1 for the rest.")
            o.append("")
            o.append(
                "| workload | server | req/s [min–max] | p50 | p99 | p99.9 | CPU µs/req | RSS MiB | errors | other CPU"
                " | ×req/s | ×p50 | ×p99 | ×p99.9 | ×CPU | ×RSS |"
            )
            o.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
            for wl in self.workloads:
                nginx = self.stats(w, wl, "nginx")
                for s in self.servers:
                    st = self.stats(w, wl, s)
                    if st is None:
                        continue
                    if s != "nginx" and nginx:
                        ratios = [
                            fmt_ratio(st[k], nginx[k]) for k in ("rps", "p50", "p99", "p999", "cpu", "rss")
                        ]
                    else:
                        ratios = [""] * 6
                    o.append(
                        f"| {WORKLOAD_TITLES.get(wl, wl)} | {self.label(s, wl)} | {st['rps']:,.0f} [{st['rps_lo']:,.0f}–{st['rps_hi']:,.0f}]"
                        f" | {fmt_md(st['p50'])} | {fmt_md(st['p99'])} | {fmt_md(st['p999'])}"
                        f" | {fmt_f(st['cpu'])} | {fmt_f(st['rss'], 1)} | {st['errors']:.0f} | {fmt_pct(st['other'])} | "
                        + " | ".join(ratios)
                        + " |"
                    )
            o.append("")
            if self.no_close_note():
                o.append(self.no_close_note(short=True))
                o.append("")
        for w in self.rate_workers():
            nginx = self.rate_stats(w, "nginx")
            sts = [(s, self.rate_stats(w, s)) for s in self.servers]
            sts = [(s, st) for s, st in sts if st]
            rate = sts[0][1]["rate"]
            o.append(f"## Fixed rate, {rate:,.0f} requests/s, {workers_label(w)} each")
            o.append("")
            o.append(
                f"{self.where(w)}. Every server gets the same schedule from `ratebench`; latency is measured from"
                " each request's due time, so a stall is charged to every request it delays (no coordinated"
                " omission). *Service* is the time from the actual write; *client lag* is how late the sender"
                " wrote behind the schedule, the client's own floor, the same for every server."
                f" Median of {reps} run(s); p99 with [min–max]."
            )
            sat = []
            for s, st in sts:
                ka = self.stats(w, "keepalive", s)
                if ka and ka["rps"] > 0:
                    sat.append(f"{s} {100 * rate / ka['rps']:.0f}%")
            if sat:
                o.append("")
                o.append(f"The rate as a share of each server's keep-alive throughput under wrk: {', '.join(sat)}.")
            o.append("")
            o.append(
                "| server | achieved req/s | p50 | p90 | p99 [min–max] | p99.9 | max | service p50 / p99"
                " | client lag p50 / p99 | CPU µs/req | errors | other CPU | ×p50 | ×p99 | ×p99.9 |"
            )
            o.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
            for s, st in sts:
                if s != "nginx" and nginx:
                    ratios = [fmt_ratio(st[k], nginx[k]) for k in ("p50", "p99", "p999")]
                else:
                    ratios = [""] * 3
                o.append(
                    f"| {s} | {st['achieved']:,.0f} | {fmt_md(st['p50'])} | {fmt_md(st['p90'])}"
                    f" | {fmt_md(st['p99'])} [{fmt_md(st['p99_lo'])}–{fmt_md(st['p99_hi'])}]"
                    f" | {fmt_md(st['p999'])} | {fmt_md(st['max'])} | {fmt_md(st['svc_p50'])} / {fmt_md(st['svc_p99'])}"
                    f" | {fmt_md(st['lag_p50'])} / {fmt_md(st['lag_p99'])} | {fmt_f(st['cpu'])} | {st['errors']:.0f}"
                    f" | {fmt_pct(st['other'])} | "
                    + " | ".join(ratios)
                    + " |"
                )
            o.append("")
        if self.sse:
            o.append("## Server-sent events, 1 worker each")
            o.append("")
            o.append(
                "Streams of `GET /stream?n=1000000&ms=1000` (one event a second each) held by one worker;"
                " memory per stream is the growth of the server's RSS from idle to every stream open,"
                " CPU per event the server's CPU time over the counting window divided by the events the"
                " client received in it. nginx has no way to produce events by itself; the anchor is Node's"
                " `http` server (`bench/node-wait.js`, one process, a `setInterval` per stream)."
            )
            o.append("")
            o.append("| server | streams | events/s | RSS idle → streaming MiB | bytes per stream | CPU µs/event | errors |")
            o.append("|---|---|---|---|---|---|---|")
            for r in self.sse:
                eps = r["events"] / r["seconds"] if r["seconds"] else NAN
                o.append(
                    f"| {r['server']} | {r['streams']:,.0f} | {eps:,.0f} | {r['rss_idle'] / 1024:.1f} → {r['rss'] / 1024:.1f}"
                    f" | {r['bytes_per_stream']:,.0f} | {fmt_f(r['cpu_per_event'])} | {r['errors']:.0f} |"
                )
            o.append("")
        o.append("## Chart")
        o.append("")
        o.append(f"![throughput and latency per server]({svg_name})")
        o.append("")
        if self.waits:
            o.append("## Waiting (one worker: `/sleep` on a pool of 64 threads, `/delay` on worker timers; Node's `setTimeout`)")
            o.append("")
            o.append(self.waits)
            o.append("")
        if self.uploads:
            o.append("## Streamed upload (`POST /upload`, one worker, over loopback)")
            o.append("")
            o.append(self.uploads)
            o.append("")
        if self.ipc:
            o.append("## IPC rings (`cargo bench --bench ipc -- summary`)")
            o.append("")
            o.append("```")
            o.append(self.ipc)
            o.append("```")
            o.append("")
        if self.notes:
            o.append("## Notes from this run")
            o.append("")
            for n in self.notes:
                o.append(f"- {n}")
            o.append("")
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
            " forkring's default; see `bench/nginx.conf.in`."
        )
        o.append(
            "- With more than one worker nothing is pinned and the load generator shares the CPUs with the"
            " server, so those figures measure the pair, not the server alone."
        )
        if self.peers:
            o.append(
                "- The peers (`bench/peers`, a cargo project of its own, release build) answer `GET /` and"
                " `POST /echo` as forkring's demo server does, with the differences the frameworks impose (see"
                " *What each server sends*). may_minihttp runs as many scheduler threads as workers (may's own"
                " pinning off; TechEmpower's pool and stack sizes) and accepts on one socket; hyper runs one"
                " current-thread tokio runtime per worker, each with its own `SO_REUSEPORT` socket, as threads"
                " of one process or as processes (`HYPER_MODE`), with `pipeline_flush`, TCP_NODELAY and no"
                " header-read timeout."
            )
        o.append("")
        o.append("## How to reproduce")
        o.append("")
        o.append("```sh")
        o.append("make bench                          # everything, about 11 minutes on a quiet machine")
        o.append(
            f"DURATION={m.get('duration')} REPS={reps} WORKERS=\"{' '.join(map(str, self.worker_counts))}\""
            f" WORKLOADS=\"{m.get('workloads')}\" RATE={m.get('rate_setting')}"
            + (" BASELINE=/path/to/old/forkring" if self.pairs else "")
            + (f" HYPER_MODE={m.get('hyper_mode')}" if "hyper" in self.peers else "")
            + ("" if self.peers else " PEERS=0")
            + " make bench   # this run's settings"
        )
        o.append("DURATION=1s REPS=1 WORKERS=1 WORKLOADS=keepalive RATE=0 IPC=0 make bench   # a quick look")
        o.append("PEERS=0 make bench                  # without may_minihttp and hyper")
        o.append("```")
        o.append("")
        o.append(
            "The per-run figures are in `results.tsv` (wrk) and `rates.tsv` (fixed rate) beside this file, with"
            " `meta.tsv` (columns as described in `bench/run.sh`); `python3 bench/report.py --dir DIR --out DIR`"
            " makes this report again from them."
        )
        return "\n".join(o) + "\n"

    # ----------------------------------------------------------------- svg --

    def svg(self):
        W = 1000
        pad = 20
        parts = []
        y = 0

        def text(x, y, s, size=12, anchor="start", weight="normal", fill="#222"):
            parts.append(
                f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"'
                f' font-weight="{weight}" fill="{fill}">{escape(s)}</text>'
            )

        def rect(x, y, w, h, fill, extra=""):
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" fill="{fill}"{extra}/>')

        def line(x1, y1, x2, y2, stroke="#999", width=1, extra=""):
            parts.append(
                f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" stroke-width="{width}"{extra}/>'
            )

        m = self.meta
        y += 28
        title = "forkring vs nginx" + (" and " + ", ".join(self.peers) if self.peers else "")
        text(pad, y, f"{title}: make bench", 18, weight="bold")
        y += 18
        text(
            pad,
            y,
            f"{m.get('date')} · {m.get('nproc')} × {m.get('model')} · {m.get('kernel')}"
            f" · median of {m.get('reps')} runs, whiskers min–max",
            11,
            fill="#555",
        )
        y += 15
        text(pad, y, self.noise_short(), 11, fill="#b00" if self.noisy() else "#555")
        y += 22
        # Legend.
        x = pad
        for s in self.servers:
            rect(x, y - 10, 12, 12, COLORS.get(s, "#888"))
            text(x + 16, y, s, 12)
            x += 30 + 7.5 * len(s)
        y += 16

        # Throughput: one small panel per workload and worker count.
        cols = max(1, len(self.workloads))
        cell_w = (W - 2 * pad) / cols
        cell_h = 170
        for w in self.worker_counts:
            y += 8
            text(pad, y + 10, f"Throughput, requests/s — {workers_label(w)} each ({self.where(w)})", 13, weight="bold")
            y += 20
            for ci, wl in enumerate(self.workloads):
                x0 = pad + ci * cell_w
                sts = [(s, self.stats(w, wl, s)) for s in self.servers]
                sts = [(s, st) for s, st in sts if st]
                text(x0 + cell_w / 2, y + 12, WORKLOAD_TITLES.get(wl, wl), 12, anchor="middle")
                top = max([st["rps_hi"] for _, st in sts] + [1])
                plot_top, plot_bot = y + 34, y + cell_h - 22
                scale = (plot_bot - plot_top) / (top * 1.12)
                line(x0 + 10, plot_bot, x0 + cell_w - 10, plot_bot, "#444")
                n = max(1, len(sts))
                bw = min(46, (cell_w - 40) / n - 8)
                span = n * bw + (n - 1) * 8
                bx = x0 + (cell_w - span) / 2
                for s, st in sts:
                    h = st["rps"] * scale
                    rect(bx, plot_bot - h, bw, h, COLORS.get(s, "#888"))
                    cx = bx + bw / 2
                    line(cx, plot_bot - st["rps_hi"] * scale, cx, plot_bot - st["rps_lo"] * scale, "#000")
                    for v in (st["rps_hi"], st["rps_lo"]):
                        line(cx - 5, plot_bot - v * scale, cx + 5, plot_bot - v * scale, "#000")
                    text(cx, plot_bot - st["rps_hi"] * scale - 5, fmt_rate(st["rps"]), 10, anchor="middle")
                    if st["errors"]:
                        text(cx, plot_bot + 12, f"{st['errors']:.0f} err", 9, anchor="middle", fill="#b00")
                    bx += bw + 8
            y += cell_h

        # Latency: percentiles per server, log scale.
        panels = []
        for w in self.rate_workers():
            sts = [(s, self.rate_stats(w, s)) for s in self.servers]
            sts = [(s, st) for s, st in sts if st]
            if sts:
                rate = sts[0][1]["rate"]
                panels.append(
                    (
                        f"Latency at a fixed {rate:,.0f} req/s, {workers_label(w)} (from due time)",
                        ["p50", "p90", "p99", "p999", "max"],
                        sts,
                    )
                )
        if 1 in self.worker_counts and "keepalive" in self.workloads:
            sts = [(s, self.stats(1, "keepalive", s)) for s in self.servers]
            sts = [(s, st) for s, st in sts if st]
            if sts:
                panels.append(("Latency at saturation, keep-alive, 1 worker (wrk)", ["p50", "p99", "p999"], sts))
        if panels:
            y += 12
            pw = (W - 2 * pad - 20 * (len(panels) - 1)) / len(panels)
            ph = 230
            for pi, (title, keys, sts) in enumerate(panels):
                x0 = pad + pi * (pw + 20)
                text(x0, y + 12, title, 13, weight="bold")
                vals = [st[k] for _, st in sts for k in keys if not math.isnan(st[k]) and st[k] > 0]
                if not vals:
                    continue
                # A decade below the shortest bar, so that it shows.
                lo = 10 ** math.floor(math.log10(min(vals) / 2))
                # Room above the tallest bar for its label.
                hi = 10 ** math.ceil(math.log10(max(vals) * 5))
                if hi <= lo:
                    hi = lo * 10
                plot_top, plot_bot = y + 30, y + ph - 24
                left = x0 + 48

                def ypos(v):
                    return plot_bot - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (
                        plot_bot - plot_top
                    )

                d = lo
                while d <= hi * 1.0001:
                    yy = ypos(d)
                    line(left, yy, x0 + pw, yy, "#ddd")
                    text(left - 4, yy + 4, fmt_short(d), 10, anchor="end", fill="#555")
                    d *= 10
                line(left, plot_bot, x0 + pw, plot_bot, "#444")
                gw = (x0 + pw - left) / len(keys)
                n = len(sts)
                bw = min(28, (gw - 12) / n - 3)
                for ki, k in enumerate(keys):
                    gx = left + ki * gw
                    text(gx + gw / 2, plot_bot + 14, {"p999": "p99.9"}.get(k, k), 11, anchor="middle")
                    span = n * bw + (n - 1) * 3
                    bx = gx + (gw - span) / 2
                    for s, st in sts:
                        v = st[k]
                        if not math.isnan(v) and v > 0:
                            top = ypos(max(v, lo))
                            rect(bx, top, bw, plot_bot - top, COLORS.get(s, "#888"))
                            tx, ty = bx + bw / 2 + 3, top - 3
                            parts.append(
                                f'<text x="{tx:.1f}" y="{ty:.1f}" font-size="9" text-anchor="start"'
                                f' transform="rotate(-90 {tx:.1f} {ty:.1f})" fill="#222">{escape(fmt_short(v))}</text>'
                            )
                        bx += bw + 3
            y += ph
        y += 10
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{y:.0f}" viewBox="0 0 {W} {y:.0f}"'
            ' font-family="DejaVu Sans, Helvetica, Arial, sans-serif">'
        )
        return "\n".join([head, f'<rect width="{W}" height="{y:.0f}" fill="#fff"/>'] + parts + ["</svg>"]) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, help="what bench/run.sh measured")
    ap.add_argument("--out", required=True, help="where report.md and report.svg go")
    a = ap.parse_args()
    r = Report(a.dir)
    if not r.runs and not r.rates:
        sys.exit("report: nothing was measured")
    os.makedirs(a.out, exist_ok=True)
    print(r.terminal())
    for row in r.sse:
        print(
            f"sse  {row['server']:<15} {row['streams']:>7,.0f} streams  {row['bytes_per_stream']:>7,.0f} bytes/stream"
            f"  {fmt_f(row['cpu_per_event'])} us/event  {row['errors']:.0f} errors"
        )
    with open(os.path.join(a.out, "report.svg"), "w") as f:
        f.write(r.svg())
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(r.markdown("report.svg"))
    print()
    print(f"report: {os.path.join(a.out, 'report.md')} and {os.path.join(a.out, 'report.svg')}")


if __name__ == "__main__":
    main()
