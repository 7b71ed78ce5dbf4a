"""The latency curve (one worker): ratebench, the paced client, at shares
of each server's own keep-alive capacity from the same run and at absolute
rates common to every server; p50, p99 and p99.9 from each request's due
time (no coordinated omission) against the offered rate.
"""

import math

from report.fmt import fmt_f, fmt_md, fmt_us

# A point whose achieved rate falls this far below the offered one did not
# hold the rate: the server (or the client) was past its capacity.
HELD = 0.95


def point_label(p):
    return f"{p['share']:.0f}%" if p["kind"] == "share" else "abs"


def held(p):
    return not math.isnan(p["achieved"]) and p["achieved"] >= HELD * p["rate"]


def servers(r):
    return [s for s in r.servers if r.curve_points(s)]


def setting_line(r):
    m = r.meta
    return (
        f"ratebench {m.get('rate_threads')} threads x {m.get('rate_conns')} connections, {m.get('curve_duration')} s a point"
        f" (first 1 s not counted), {m.get('curve_reps')} repetition(s); shares {m.get('curve_shares')} (percent of the"
        f" server's keep-alive median), absolute rates {m.get('curve_rates')}, at most {m.get('curve_max')} req/s"
    )


def terminal(r):
    ss = servers(r)
    if not ss:
        return []
    out = [f"latency curve, 1 worker each: {setting_line(r)}; latency from each request's due time", ""]
    head = (
        f"{'server':<{r.sw}} {'point':>6} {'offered':>8} {'achieved':>9} {'p50':>8} {'p99':>8} {'p99.9':>8}"
        f" {'client lag p99':>14} {'CPU us/req':>10} {'errors':>6}"
    )
    out.append(head)
    out.append("-" * len(head))
    for s in ss:
        for p in r.curve_points(s):
            mark = "" if held(p) else "  (rate not held)"
            out.append(
                f"{s:<{r.sw}} {point_label(p):>6} {p['rate']:>8.0f} {p['achieved']:>9.0f} {fmt_us(p['p50']):>8}"
                f" {fmt_us(p['p99']):>8} {fmt_us(p['p999']):>8} {fmt_us(p['lag_p99']):>14} {fmt_f(p['cpu']):>10}"
                f" {p['errors']:>6.0f}{mark}"
            )
    out.append("")
    return out


def markdown(r):
    """The section "Latency curve"."""
    ss = servers(r)
    if not ss:
        return []
    o = ["## Latency curve, 1 worker each", ""]
    o.append(
        f"{r.where(1)}; {setting_line(r)}. Latency is measured from each request's due time, so a stall is"
        " charged to every request it delays (no coordinated omission). A share is of the server's own"
        " keep-alive median under wrk in this run, so each server is loaded alike relative to what it can do;"
        f" the fixed rates load every server alike. *Not held*: the achieved rate fell below {HELD:.0%} of the"
        " offered one, past the server's (or the client's) capacity; *client lag* is how late the client wrote"
        " behind its schedule, its own floor (where it grows with the rate, the client is the limit). Plotted in"
        " the chart."
    )
    o.append("")
    o.append(
        "| server | point | offered req/s | achieved req/s | p50 | p99 | p99.9 | client lag p99 | CPU µs/req | errors |"
    )
    o.append("|---|---|---|---|---|---|---|---|---|---|")
    for s in ss:
        for p in r.curve_points(s):
            achieved = f"{p['achieved']:,.0f}" + ("" if held(p) else " (not held)")
            o.append(
                f"| {s} | {point_label(p)} | {p['rate']:,.0f} | {achieved} | {fmt_md(p['p50'])} | {fmt_md(p['p99'])}"
                f" | {fmt_md(p['p999'])} | {fmt_md(p['lag_p99'])} | {fmt_f(p['cpu'])} | {p['errors']:.0f} |"
            )
    o.append("")
    return o
