"""forkring against the peers (bench/peers: may_minihttp, hyper) from the same
run, per repetition, and what each server sends: its answer to `GET /` and
whether it closes on `Connection: close`.
"""

from report.data import NO_CLOSE_MARK
from report.fmt import WORKLOAD_TITLES, fmt_f, fmt_ratio_range


def table_rows(r, dash="–"):
    """One row per worker count, workload and forkring backend with a
    peer beside it: (workers, workload, server, cells), the cells
    already formatted: its CPU µs/req and req/s, then for each peer
    forkring / peer for CPU and req/s, per repetition."""
    rows = []
    for w in r.worker_counts:
        for wl in r.workloads:
            for f in r.forks:
                st = r.stats(w, wl, f)
                if st is None or not any(r.stats(w, wl, p) for p in r.peers):
                    continue
                cells = [fmt_f(st["cpu"]), f"{st['rps']:,.0f}"]
                for p in r.peers:
                    cells.append(fmt_ratio_range(r.paired(w, wl, f, p, "cpu"), dash))
                    cells.append(fmt_ratio_range(r.paired(w, wl, f, p, "rps"), dash))
                rows.append((w, wl, f, cells))
    return rows


def terminal(r):
    rows = table_rows(r, "-")
    if not rows:
        return []
    out = [
        f"forkring against the peers ({', '.join(r.peers)}), same run: forkring / peer, median [min-max] of the"
        " per-repetition ratios (CPU: below 1, forkring is cheaper; req/s: above 1, forkring is faster)",
        "",
    ]
    head = f"{'workload':<10} {'workers':>7} {'server':<15} {'CPU us/req':>10} {'req/s':>10}"
    for p in r.peers:
        head += f" | {('CPU / ' + p):>22} {('req/s / ' + p):>22}"
    out.append(head)
    out.append("-" * len(head))
    for w, wl, f, c in rows:
        line = f"{wl:<10} {w:>7} {f:<15} {c[0]:>10} {c[1]:>10}"
        for i in range(len(r.peers)):
            line += f" | {c[2 + 2 * i]:>22} {c[3 + 2 * i]:>22}"
        out.append(line)
    out.append("")
    return out


def markdown(r):
    """forkring against the peers, from one run, and what each server sends."""
    rows = table_rows(r)
    o = []
    if rows:
        m = r.meta
        o.append("## forkring against the peers")
        o.append("")
        o.append(
            f"The peers are the fastest Rust HTTP/1 servers ({versions_line(r)}), built from `bench/peers`"
            " and serving the same requests; they took turns with forkring and nginx in the same rotation, with"
            " as many workers, pinned alike. The ratio columns divide forkring by the peer within each"
            f" repetition: median [min–max] of those ratios, over {m.get('reps', '?')} repetition(s). CPU: below 1,"
            " forkring spends less per request; req/s: above 1, forkring serves more."
        )
        o.append("")
        head = "| workload | workers | server | CPU µs/req | req/s |"
        for p in r.peers:
            head += f" CPU / {p} | req/s / {p} |"
        o.append(head)
        o.append("|" + "---|" * (head.count("|") - 1))
        for w, wl, f, c in rows:
            o.append(f"| {WORKLOAD_TITLES.get(wl, wl)} | {w} | {f} | " + " | ".join(c) + " |")
        o.append("")
        if r.no_close_note():
            o.append(r.no_close_note(short=True))
            o.append("")
    o.extend(responses_md(r))
    return o


def versions_line(r):
    """The peers with their versions and workers, from the run's notes."""
    out = []
    for p in r.peers:
        note = next(
            (r.meta[f"note_{p}_{w}"] for w in r.worker_counts if f"note_{p}_{w}" in r.meta), p
        )
        out.append(note.split(",")[0])
    if "hyper" in r.peers:
        mode = r.meta.get("hyper_mode", "threads")
        per = "process" if mode == "processes" else "thread"
        out[r.peers.index("hyper")] += f" with one current-thread tokio runtime per worker {per}"
    return "; ".join(out)


def responses_md(r):
    """What every server answers to GET /, and whether it closes on Connection: close."""
    if not any(f"response_{s}" in r.meta for s in r.servers):
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
    for s in r.servers:
        if f"response_{s}" in r.meta:
            resp = r.meta[f"response_{s}"].replace("|", "\\|")
            close = r.meta.get(f"on_close_{s}", "?")
            if close != "closes":
                close = f"**{close}** {NO_CLOSE_MARK}"
            o.append(f"| {s} | `{resp}` | {close} |")
    o.append("")
    return o
