"""forkring against the floor of its backend (floor-uring, floor-epoll from
bench/peers: the least system-call work that answers the same requests the
same way), per repetition, and the goals set as ratios to it, each said met
or missed.

Where it stops: the workloads the floor serves (keep-alive, pipelined and
connection per request GET /); the floor has no body or file path.
"""

from report.fmt import WORKLOAD_TITLES, fmt_f, fmt_ratio_range, median_of, workers_label

# The goals, per workload: (backends it holds for, what it says, the
# server it compares with: "floor" or a server's name, the highest ratio
# of CPU µs/req, whether the ratio must stay strictly below it).
GOALS = {
    "keepalive": [(("uring", "epoll"), "≤ 1.15× the floor", "floor", 1.15, False)],
    "pipelined": [
        (("uring", "epoll"), "≤ 1.3× the floor", "floor", 1.3, False),
        (("uring", "epoll"), "below may_minihttp", "may_minihttp", 1.0, True),
    ],
    "close": [
        (("uring",), "≤ 1.1× the floor", "floor", 1.1, False),
        (("epoll",), "≤ 0.8× nginx", "nginx", 0.8, False),
    ],
}


def goal_cells(r, w, wl, server, dash="–"):
    """The goals for `server` in workload `wl`: one "what: ratio [range]:
    met" string each, judged on the median of the per-repetition ratios of
    CPU µs/req."""
    backend = server.rsplit("-", 1)[-1]
    out = []
    for backends, what, against, limit, strict in GOALS.get(wl, []):
        if backend not in backends:
            continue
        other = r.floor_of(server) if against == "floor" else against
        xs = r.paired(w, wl, server, other, "cpu") if other else []
        m = median_of(xs)
        if m is None:
            verdict = "not measured"
        elif m < limit or (not strict and m <= limit):
            verdict = "met"
        else:
            verdict = "missed"
        out.append(f"{what}: {fmt_ratio_range(xs, dash)} {verdict}" if xs else f"{what}: {verdict}")
    return out


def table_rows(r, dash="–"):
    """One row per worker count, workload and forkring build with its floor
    measured: (workers, workload, server, cells): forkring's and the floor's
    CPU µs/req and req/s, the per-repetition ratios forkring / floor of
    both and of the p99 under wrk, and the goals."""
    rows = []
    for w in r.worker_counts:
        for wl in r.workloads:
            for f in r.forks:
                fl = r.floor_of(f)
                st, fs = r.stats(w, wl, f), r.stats(w, wl, fl) if fl else None
                if st is None or fs is None:
                    continue
                cells = [
                    fmt_f(st["cpu"]),
                    fmt_f(fs["cpu"]),
                    fmt_ratio_range(r.paired(w, wl, f, fl, "cpu"), dash),
                    f"{st['rps']:,.0f}",
                    f"{fs['rps']:,.0f}",
                    fmt_ratio_range(r.paired(w, wl, f, fl, "rps"), dash),
                    fmt_ratio_range(r.paired(w, wl, f, fl, "p99"), dash),
                    "; ".join(goal_cells(r, w, wl, f, dash)) or "-",
                ]
                rows.append((w, wl, f, cells))
    return rows


def terminal(r):
    rows = table_rows(r, "-")
    if not rows:
        return []
    out = [
        "forkring against the floor of its backend, same run: forkring / floor, median [min-max] of the"
        " per-repetition ratios (CPU: 1 is the floor; req/s: 1 is the floor's throughput); goals on CPU us/req",
        "",
    ]
    head = (
        f"{'workload':<10} {'workers':>7} {'server':<15} {'CPU us/req':>10} {'floor':>7} {'/ floor':>18}"
        f" {'req/s':>10} {'floor':>10} {'/ floor':>18} {'p99 / floor':>18}  goals"
    )
    out.append(head)
    out.append("-" * len(head))
    for w, wl, f, c in rows:
        out.append(
            f"{wl:<10} {w:>7} {f:<15} {c[0]:>10} {c[1]:>7} {c[2]:>18} {c[3]:>10} {c[4]:>10} {c[5]:>18} {c[6]:>18}  {c[7]}"
        )
    out.append("")
    return out


def markdown(r):
    """The section "Against the floor"."""
    rows = table_rows(r)
    if not rows:
        return []
    m = r.meta
    o = ["## Against the floor", ""]
    o.append(
        "`floor-uring` and `floor-epoll` (`bench/peers`) do the system-call work forkring's driver on that"
        " backend does to answer `GET /` and nothing else: the same ring setup flags, provided buffers,"
        " multishot accept and receive and one send per receive on io_uring; edge-triggered epoll, `accept4`,"
        " `recv` and `send` on epoll; requests counted (`\\r\\n\\r\\n`), not parsed, and answered with bytes as"
        " long as forkring's. What forkring spends above the floor is its own work. They took turns with the"
        f" others in the same rotation. Median [min–max] of the per-repetition ratios forkring / floor over"
        f" {m.get('reps', '?')} repetition(s). The goals are judged on CPU µs/req (the figure that ranks servers"
        " when wrk, not the server, is the limit), on the median ratio; the floor serves only these workloads."
    )
    o.append("")
    o.append(
        "| workload | workers | server | CPU µs/req | floor CPU µs/req | CPU / floor | req/s | floor req/s"
        " | req/s / floor | p99 / floor | goals |"
    )
    o.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for w, wl, f, c in rows:
        o.append(f"| {WORKLOAD_TITLES.get(wl, wl)} | {w} | {f} | " + " | ".join(c) + " |")
    o.append("")
    return o


def summary_lines(r):
    """One line per workload and backend with a goal: met or missed, for
    the report's summary (one worker)."""
    out = []
    w = 1 if 1 in r.worker_counts else (r.worker_counts[0] if r.worker_counts else None)
    if w is None:
        return out
    for wl in r.workloads:
        for f in r.forks:
            cells = goal_cells(r, w, wl, f)
            if cells and r.stats(w, wl, f):
                out.append(f"- {WORKLOAD_TITLES.get(wl, wl)}, {f}: " + "; ".join(cells) + " (CPU µs/req ratio)")
    if out:
        out.insert(0, f"Goals, {workers_label(w)} each, ratios from this run:")
        out.insert(1, "")
        out.append("")
    return out
