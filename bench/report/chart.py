"""report.svg: one chart, throughput per workload and server (a panel per
worker count) and latency percentiles per server (at the fixed rate and at
saturation, on a log scale).
"""

import math
from html import escape

from report.fmt import WORKLOAD_TITLES, fmt_rate, fmt_short, workers_label


COLORS = {
    "forkring-uring": "#1f5fa8", "forkring-epoll": "#6fa8dc", "forkring-auto": "#3d85c6", "nginx": "#3a9a3a",
    "forkring-base-uring": "#b45f06", "forkring-base-epoll": "#f6b26b", "forkring-base-auto": "#e69138",
    "may_minihttp": "#a61c00", "hyper": "#674ea7",
}


def svg(r):
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

    m = r.meta
    y += 28
    title = "forkring vs nginx" + (" and " + ", ".join(r.peers) if r.peers else "")
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
    text(pad, y, r.noise_short(), 11, fill="#b00" if r.noisy() else "#555")
    y += 22
    # Legend.
    x = pad
    for s in r.servers:
        rect(x, y - 10, 12, 12, COLORS.get(s, "#888"))
        text(x + 16, y, s, 12)
        x += 30 + 7.5 * len(s)
    y += 16

    # Throughput: one small panel per workload and worker count.
    cols = max(1, len(r.workloads))
    cell_w = (W - 2 * pad) / cols
    cell_h = 170
    for w in r.worker_counts:
        y += 8
        text(pad, y + 10, f"Throughput, requests/s — {workers_label(w)} each ({r.where(w)})", 13, weight="bold")
        y += 20
        for ci, wl in enumerate(r.workloads):
            x0 = pad + ci * cell_w
            sts = [(s, r.stats(w, wl, s)) for s in r.servers]
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
    for w in r.rate_workers():
        sts = [(s, r.rate_stats(w, s)) for s in r.servers]
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
    if 1 in r.worker_counts and "keepalive" in r.workloads:
        sts = [(s, r.stats(1, "keepalive", s)) for s in r.servers]
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
