"""report.svg: one chart, throughput and CPU per request per workload and
server (a row of panels per worker count), latency percentiles per server
(at the fixed rate and at saturation, on a log scale), the latency
curve (p50, p99, p99.9 against the offered rate, latency on a log scale),
and past capacity (per route, goodput and the p99 of successes against the
offered load, both as multiples of capacity, the p99 on a log scale).
"""

import math
from html import escape

from report import curve, overload
from report.fmt import WORKLOAD_TITLES, fmt_rate, fmt_short, workers_label


COLORS = {
    "forkring-uring": "#1f5fa8", "forkring-epoll": "#6fa8dc", "forkring-auto": "#3d85c6", "nginx": "#3a9a3a",
    "forkring-base-uring": "#b45f06", "forkring-base-epoll": "#f6b26b", "forkring-base-auto": "#e69138",
    "may_minihttp": "#a61c00", "hyper": "#674ea7", "floor-uring": "#444444", "floor-epoll": "#aaaaaa",
    "forkring": "#1f5fa8", "forkring-admission-off": "#e69138", "node": "#7f6000",
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

    # Throughput and CPU per request: one small panel per workload and
    # worker count. CPU per request ranks the servers where wrk, not the
    # server, is the limit.
    cols = max(1, len(r.workloads))
    cell_w = (W - 2 * pad) / cols
    cell_h = 170

    def bar_row(y, w, key, fmt):
        for ci, wl in enumerate(r.workloads):
            x0 = pad + ci * cell_w
            sts = [(s, r.stats(w, wl, s)) for s in r.servers]
            sts = [(s, st) for s, st in sts if st and not math.isnan(st[key])]
            text(x0 + cell_w / 2, y + 12, WORKLOAD_TITLES.get(wl, wl), 12, anchor="middle")
            top = max([st[key + "_hi"] for _, st in sts if not math.isnan(st[key + "_hi"])] + [1e-9])
            plot_top, plot_bot = y + 34, y + cell_h - 22
            scale = (plot_bot - plot_top) / (top * 1.12)
            line(x0 + 10, plot_bot, x0 + cell_w - 10, plot_bot, "#444")
            n = max(1, len(sts))
            bw = min(46, (cell_w - 40) / n - 8)
            span = n * bw + (n - 1) * 8
            bx = x0 + (cell_w - span) / 2
            for s, st in sts:
                h = st[key] * scale
                rect(bx, plot_bot - h, bw, h, COLORS.get(s, "#888"))
                cx = bx + bw / 2
                hi, lo = st[key + "_hi"], st[key + "_lo"]
                line(cx, plot_bot - hi * scale, cx, plot_bot - lo * scale, "#000")
                for v in (hi, lo):
                    line(cx - 5, plot_bot - v * scale, cx + 5, plot_bot - v * scale, "#000")
                text(cx, plot_bot - hi * scale - 5, fmt(st[key]), 10, anchor="middle")
                if st["errors"]:
                    text(cx, plot_bot + 12, f"{st['errors']:.0f} err", 9, anchor="middle", fill="#b00")
                bx += bw + 8
        return y + cell_h

    for w in r.worker_counts:
        y += 8
        text(pad, y + 10, f"Throughput, requests/s — {workers_label(w)} each ({r.where(w)})", 13, weight="bold")
        y = bar_row(y + 20, w, "rps", fmt_rate)
        y += 8
        text(pad, y + 10, f"CPU per request, µs (lower is better) — {workers_label(w)} each", 13, weight="bold")
        y = bar_row(y + 20, w, "cpu", lambda v: f"{v:.3g}")

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
    y = curve_panels(r, parts, y, W, pad, text, line)
    y = overload_panels(r, parts, y, W, pad, text, line, rect)
    y += 10
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{y:.0f}" viewBox="0 0 {W} {y:.0f}"'
        ' font-family="DejaVu Sans, Helvetica, Arial, sans-serif">'
    )
    return "\n".join([head, f'<rect width="{W}" height="{y:.0f}" fill="#fff"/>'] + parts + ["</svg>"]) + "\n"


def curve_panels(r, parts, y, W, pad, text, line):
    """The latency curve: a panel per percentile, latency (log scale)
    against the offered rate, a line per server; a hollow mark where the
    rate was not held. Returns the new height."""
    ss = curve.servers(r)
    if not ss:
        return y
    keys = [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")]
    pts = {s: r.curve_points(s) for s in ss}
    rates = [p["rate"] for s in ss for p in pts[s]]
    vals = [p[k] for s in ss for p in pts[s] for k, _ in keys if not math.isnan(p[k]) and p[k] > 0]
    if not rates or not vals:
        return y
    y += 12
    text(pad, y + 12, "Latency curve, 1 worker: latency from due time against offered load (ratebench)", 13, weight="bold")
    y += 22
    xmax = max(rates) * 1.05
    lo = 10 ** math.floor(math.log10(min(vals)))
    hi = 10 ** math.ceil(math.log10(max(vals)))
    if hi <= lo:
        hi = lo * 10
    pw = (W - 2 * pad - 20 * (len(keys) - 1)) / len(keys)
    ph = 240
    for ki, (k, title) in enumerate(keys):
        x0 = pad + ki * (pw + 20)
        left, right = x0 + 48, x0 + pw - 6
        plot_top, plot_bot = y + 22, y + ph - 34
        text(x0 + pw / 2, y + 12, title, 12, anchor="middle", weight="bold")

        def xpos(v, left=left, right=right):
            return left + v / xmax * (right - left)

        def ypos(v, plot_top=plot_top, plot_bot=plot_bot):
            v = min(max(v, lo), hi)
            return plot_bot - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (plot_bot - plot_top)

        d = lo
        while d <= hi * 1.0001:
            line(left, ypos(d), right, ypos(d), "#ddd")
            text(left - 4, ypos(d) + 4, fmt_short(d), 10, anchor="end", fill="#555")
            d *= 10
        line(left, plot_bot, right, plot_bot, "#444")
        # At most five ticks, 1, 2 or 5 times a power of ten apart.
        mag = 10 ** math.floor(math.log10(xmax / 5))
        step = next(m * mag for m in (1, 2, 5, 10) if xmax / (m * mag) <= 5)
        tick = step
        while tick < xmax:
            line(xpos(tick), plot_bot, xpos(tick), plot_bot + 4, "#444")
            text(xpos(tick), plot_bot + 15, fmt_rate(tick), 9, anchor="middle", fill="#555")
            tick += step
        text((left + right) / 2, plot_bot + 28, "offered requests/s", 10, anchor="middle", fill="#555")
        for s in ss:
            color = COLORS.get(s, "#888")
            ps = [p for p in pts[s] if not math.isnan(p[k]) and p[k] > 0]
            xy = [(xpos(p["rate"]), ypos(p[k]), curve.held(p)) for p in ps]
            if len(xy) > 1:
                d = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in xy)
                parts.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="1.5"/>')
            for px, py, ok in xy:
                fill = color if ok else "#fff"
                parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{fill}" stroke="{color}"/>')
    return y + ph


def overload_panels(r, parts, y, W, pad, text, line, rect):
    """Past capacity, a row per route: goodput (a multiple of capacity,
    linear) and the p99 of successes (log scale) against the offered load
    (a multiple of capacity), a line per server. Returns the new height."""
    if not r.overload:
        return y
    for route in overload.routes(r):
        good = overload.chart_series(r, route, "goodput")
        p99 = overload.chart_series(r, route, "p99_ms")
        if not good and not p99:
            continue
        title = overload.route_title(route).replace("`", "")
        loads = sorted({x for ser in (good, p99) for pts in ser.values() for x, _ in pts})
        xmax = max(loads) * 1.05
        y += 12
        text(pad, y + 12, f"Past capacity, {title}: goodput and success p99 against offered load", 13, weight="bold")
        y += 34
        x = pad
        for s in sorted(set(good) | set(p99), key=overload.server_key):
            rect(x, y - 10, 12, 12, COLORS.get(s, "#888"))
            text(x + 16, y, s, 12)
            x += 30 + 7.5 * len(s)
        y += 14
        pw = (W - 2 * pad - 20) / 2
        ph = 230
        for pi, (series, panel, log) in enumerate(
            ((good, "goodput (× capacity)", False), (p99, "success p99 (log scale)", True))
        ):
            x0 = pad + pi * (pw + 20)
            left, right = x0 + 48, x0 + pw - 6
            plot_top, plot_bot = y + 22, y + ph - 34
            text(x0 + pw / 2, y + 12, panel, 12, anchor="middle", weight="bold")
            vals = [v for pts in series.values() for _, v in pts]
            if not vals:
                continue
            if log:
                # A point at the bottom of a decade stays off the axis.
                lo = 10 ** math.floor(math.log10(min(vals) / 2))
                hi = 10 ** math.ceil(math.log10(max(vals)))
                if hi <= lo:
                    hi = lo * 10
            else:
                lo, hi = 0.0, max(1.2, max(vals) * 1.1)

            def xpos(v, left=left, right=right):
                return left + v / xmax * (right - left)

            def ypos(v, lo=lo, hi=hi, log=log, plot_top=plot_top, plot_bot=plot_bot):
                v = min(max(v, lo), hi)
                if log:
                    f = (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
                else:
                    f = (v - lo) / (hi - lo)
                return plot_bot - f * (plot_bot - plot_top)

            if log:
                d = lo
                while d <= hi * 1.0001:
                    line(left, ypos(d), right, ypos(d), "#ddd")
                    text(left - 4, ypos(d) + 4, fmt_short(d), 10, anchor="end", fill="#555")
                    d *= 10
            else:
                for d in (0.0, 0.25, 0.5, 0.75, 1.0):
                    line(left, ypos(d), right, ypos(d), "#ddd")
                    text(left - 4, ypos(d) + 4, f"{d:g}×", 10, anchor="end", fill="#555")
                # What forkring is held to at 2x and 4x.
                goal = overload.GOODPUT_SHARE
                line(left, ypos(goal), right, ypos(goal), "#b00", 1, ' stroke-dasharray="4 3"')
                text(right - 2, ypos(goal) - 3, f"goal {goal:.0%}", 9, anchor="end", fill="#b00")
            line(left, plot_bot, right, plot_bot, "#444")
            for ld in loads:
                line(xpos(ld), plot_bot, xpos(ld), plot_bot + 4, "#444")
                text(xpos(ld), plot_bot + 15, f"{ld:g}×", 9, anchor="middle", fill="#555")
            text((left + right) / 2, plot_bot + 28, "offered load (× capacity)", 10, anchor="middle", fill="#555")
            for s, pts in sorted(series.items(), key=lambda kv: overload.server_key(kv[0])):
                color = COLORS.get(s, "#888")
                xy = [(xpos(ld), ypos(v)) for ld, v in pts]
                if len(xy) > 1:
                    d = " ".join(f"{px:.1f},{py:.1f}" for px, py in xy)
                    parts.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="1.5"/>')
                for px, py in xy:
                    parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}" stroke="{color}"/>')
        y += ph
    return y
