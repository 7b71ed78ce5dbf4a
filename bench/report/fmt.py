"""How a figure is written: rates, durations, ratios, percentages, and the
names of the workloads and worker counts, alike in every table.
"""

import math
import statistics

from report.data import NOISY_PCT


WORKLOAD_TITLES = {
    "keepalive": "keep-alive GET /",
    "pipelined": "pipelined GET /",
    "post": "POST /echo",
    "close": "connection per request",
    "static1m": "GET /files/1m.bin (1 MiB file)",
    "static4k": "GET /files/4k.bin (4 KiB file)",
}


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


def median_of(xs):
    """The median of the figures in `xs` that are numbers, or None."""
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else None
