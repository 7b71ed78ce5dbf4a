"""Server-sent events: streams held by one worker, the server's memory per
stream and CPU per event.
"""

from report.data import NAN
from report.fmt import fmt_f


def terminal(r):
    """One line per server."""
    out = []
    for row in r.sse:
        out.append(
            f"sse  {row['server']:<15} {row['streams']:>7,.0f} streams  {row['bytes_per_stream']:>7,.0f} bytes/stream"
            f"  {fmt_f(row['cpu_per_event'])} us/event  {row['errors']:.0f} errors"
        )
    return out


def markdown(r):
    """The report's section, when the run measured events."""
    o = []
    if r.sse:
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
        for row in r.sse:
            eps = row["events"] / row["seconds"] if row["seconds"] else NAN
            o.append(
                f"| {row['server']} | {row['streams']:,.0f} | {eps:,.0f} | {row['rss_idle'] / 1024:.1f} → {row['rss'] / 1024:.1f}"
                f" | {row['bytes_per_stream']:,.0f} | {fmt_f(row['cpu_per_event'])} | {row['errors']:.0f} |"
            )
        o.append("")
    return o
