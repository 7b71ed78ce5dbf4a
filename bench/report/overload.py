"""Past capacity: `make stress` scenario 14 run by the bench
(`forkring-stress --only 14 --json`), an open-loop paced client offering
multiples of each route's measured capacity to forkring and its anchors:
per route and load, goodput, the latency of successful answers, the share
refused and how fast refusals come, and a fast route's p99 beside the load;
the goals forkring is held to, met or missed, and what the anchors do past
1x.

Where it stops: the figures are the stress harness's (overload.json); this
module reads, judges and lays them out, and measures nothing.
"""

import math

from report.data import NAN
from report.fmt import fmt_md, fmt_us

# The routes, in the order shown.
ROUTES = ["pool", "loop"]
ROUTE_TITLES = {
    "pool": "pool-bound route (`GET /sleep?ms=10`)",
    "loop": "loop-bound route",
}
# The server the goals are for; every other one is an anchor.
SUBJECT = "forkring"
SERVER_ORDER = [SUBJECT, "forkring-admission-off", "nginx", "node"]
# The anchors the goals name, said to be missing where a run lacks them.
NAMED_ANCHORS = ["nginx", "node"]
# The goals, on each route: at GOAL_LOADS, goodput at least GOODPUT_SHARE
# of capacity, the p99 of successes within P99_GROWTH times its p99 at
# BASE_LOAD, and the fast route's p99 under FAST_P99_MS.
GOAL_LOADS = [2.0, 4.0]
BASE_LOAD = 0.5
GOODPUT_SHARE = 0.9
P99_GROWTH = 3.0
FAST_P99_MS = 2.0

MET, MISSED, NO_FIGURE = "met", "missed", "no figure"

NUMERIC = [
    "load", "offered", "goodput", "p50_ms", "p99_ms", "p999_ms", "refused_share", "refusal_p50_ms",
    "refusal_p99_ms", "errors", "fast_p99_ms", "fast_p99_max_ms",
]


def num(v):
    """A figure from the JSON; NaN for null, a missing key or anything else
    that is not a number."""
    if isinstance(v, bool):
        return NAN
    try:
        return float(v)
    except (TypeError, ValueError):
        return NAN


def ok(x):
    return not math.isnan(x)


def server_key(s):
    return (SERVER_ORDER.index(s) if s in SERVER_ORDER else len(SERVER_ORDER), s)


def load_label(x):
    return "n/a" if math.isnan(x) else f"{x:g}×"


def fmt_ms(x):
    """A duration in ms from the JSON, written like the other tables'."""
    return fmt_md(x * 1000) if ok(x) else "–"


def fmt_ms_t(x):
    return fmt_us(x * 1000) if ok(x) else "-"


def whole(x):
    return f"{x:.0f}" if ok(x) else "-"


def fmt_share(x):
    return f"{x * 100:.0f}%" if ok(x) else "–"


def rows(r, route=None, server=None):
    """The rows of the run (of one route and server where given), figures
    as floats (NaN where null), by server and load."""
    o = r.overload or {}
    out = []
    for raw in o.get("rows", []):
        if not isinstance(raw, dict):
            continue
        row = {"server": str(raw.get("server", "?")), "route": str(raw.get("route", "?"))}
        for k in NUMERIC:
            row[k] = num(raw.get(k))
        if route is not None and row["route"] != route:
            continue
        if server is not None and row["server"] != server:
            continue
        out.append(row)
    return sorted(out, key=lambda x: (server_key(x["server"]), x["load"]))


def routes(r):
    """The routes with rows, known ones first."""
    seen = {x["route"] for x in rows(r)}
    return [x for x in ROUTES if x in seen] + sorted(seen - set(ROUTES))


def servers(r, route):
    return sorted({x["server"] for x in rows(r, route)}, key=server_key)


def route_title(route):
    return ROUTE_TITLES.get(route, f"route `{route}`")


def capacity(r, route):
    return num(((r.overload or {}).get("capacity") or {}).get(route))


def at(r, route, server, load):
    """The row of `server` on `route` at `load` (a multiple of capacity), or None."""
    for x in rows(r, route, server):
        if ok(x["load"]) and abs(x["load"] - load) < 1e-6:
            return x
    return None


def value(r, route, server, load, key):
    x = at(r, route, server, load)
    return x[key] if x else NAN


def of_capacity(r, route, goodput):
    cap = capacity(r, route)
    return goodput / cap if ok(goodput) and ok(cap) and cap > 0 else NAN


def verdict(flags):
    """True/False/None (no figure) per part: missed if one missed, else no
    figure if one is missing, else met."""
    if any(f is False for f in flags):
        return MISSED
    if any(f is None for f in flags):
        return NO_FIGURE
    return MET


def goals(r):
    """forkring's goals per route: (route, text, status)."""
    out = []
    loads = " and ".join(load_label(x) for x in GOAL_LOADS)
    for route in routes(r):
        title = route_title(route)
        if not rows(r, route, SUBJECT):
            out.append((route, f"{title}: {SUBJECT} was not measured", NO_FIGURE))
            continue
        cap = capacity(r, route)
        # Goodput.
        shares = [of_capacity(r, route, value(r, route, SUBJECT, x, "goodput")) for x in GOAL_LOADS]
        flags = [None if not ok(s) else s >= GOODPUT_SHARE for s in shares]
        cap_s = f"{cap:,.0f} req/s" if ok(cap) else "capacity not measured"
        out.append((
            route,
            f"{title}: goodput at {loads} ≥ {GOODPUT_SHARE:.0%} of capacity ({cap_s}):"
            f" {' and '.join(fmt_share(s) for s in shares)}",
            verdict(flags),
        ))
        # The p99 of successes against its own at the base load.
        base = value(r, route, SUBJECT, BASE_LOAD, "p99_ms")
        p99s = [value(r, route, SUBJECT, x, "p99_ms") for x in GOAL_LOADS]
        flags = [None if not (ok(p) and ok(base) and base > 0) else p <= P99_GROWTH * base for p in p99s]
        parts = [
            fmt_ms(p) + (f" ({p / base:.1f}×)" if ok(p) and ok(base) and base > 0 else "") for p in p99s
        ]
        out.append((
            route,
            f"{title}: success p99 at {loads} ≤ {P99_GROWTH:g}× its p99 at {load_label(BASE_LOAD)}"
            f" ({fmt_ms(base)}): {' and '.join(parts)}",
            verdict(flags),
        ))
        fast = [value(r, route, SUBJECT, x, "fast_p99_ms") for x in GOAL_LOADS]
        flags = [None if not ok(f) else f < FAST_P99_MS for f in fast]
        out.append((
            route,
            f"{title}: the fast route's p99 at {loads} < {FAST_P99_MS:g} ms:"
            f" {' and '.join(fmt_ms(f) for f in fast)}",
            verdict(flags),
        ))
    return out


def anchor_judgement(r, route, server):
    """What `server` does past 1x on `route`: (grew, fell, text); grew and
    fell are None where a figure is missing. Judged by forkring's own
    goals: p99 beyond P99_GROWTH times its p99 at BASE_LOAD, goodput below
    GOODPUT_SHARE of capacity, at any of GOAL_LOADS."""
    base = value(r, route, server, BASE_LOAD, "p99_ms")
    p99s = [value(r, route, server, x, "p99_ms") for x in GOAL_LOADS]
    shares = [of_capacity(r, route, value(r, route, server, x, "goodput")) for x in GOAL_LOADS]
    growth = [p / base for p in p99s if ok(p) and ok(base) and base > 0]
    known_shares = [s for s in shares if ok(s)]
    grew = any(g > P99_GROWTH for g in growth) if growth else None
    fell = any(s < GOODPUT_SHARE for s in known_shares) if known_shares else None
    past = [x for x in rows(r, route, server) if ok(x["load"]) and x["load"] >= 1.0]
    p99_s = ", ".join(f"{load_label(x['load'])} {fmt_ms(x['p99_ms'])}" for x in past)
    good_s = ", ".join(f"{load_label(x['load'])} {fmt_share(of_capacity(r, route, x['goodput']))}" for x in past)
    what = []
    what.append({True: "latency grew", False: "latency held", None: "latency: no figure"}[grew])
    what.append({True: "goodput fell", False: "goodput held", None: "goodput: no figure"}[fell])
    text = (
        f"p99 of successes {load_label(BASE_LOAD)} {fmt_ms(base)}, then {p99_s or 'no figure'};"
        f" goodput (of capacity) {good_s or 'no figure'}: {', '.join(what)}"
    )
    return grew, fell, text


def anchor_goal(r):
    """The done-when line about the anchors: (text, status)."""
    judged, held, unknown = [], [], []
    for route in routes(r):
        for s in servers(r, route):
            if s == SUBJECT:
                continue
            grew, fell, _ = anchor_judgement(r, route, s)
            name = f"{s} ({route})"
            if grew or fell:
                judged.append(name)
            elif grew is None and fell is None:
                unknown.append(name)
            else:
                held.append(name)
    absent = [a for a in NAMED_ANCHORS if not any(x["server"] == a for x in rows(r))]
    parts = []
    if judged:
        parts.append("grew or fell: " + ", ".join(judged))
    if held:
        parts.append("held: " + ", ".join(held))
    if unknown:
        parts.append("no figure: " + ", ".join(unknown))
    if absent:
        parts.append("not in this run: " + ", ".join(absent))
    status = MISSED if held else (MET if judged else NO_FIGURE)
    return "past 1×, the anchors' p99 grows or their goodput falls: " + "; ".join(parts or ["no anchor"]), status


def exit_line(r):
    """What the stress binary's exit status said, when it was not 0."""
    rc = r.meta.get("overload_exit", "")
    if rc in ("", "0"):
        return ""
    return (
        f"`forkring-stress --only 14` exited with status {rc}: a forkring bound of the scenario failed"
        " (its lines are in the bench's output) or it could not run"
    )


def source_line(r):
    m = r.meta
    src = m.get("overload_source", "`forkring-stress --only 14 --json`")
    backend = m.get("overload_backend")
    return src + (f", forkring on {backend}" if backend else "")


def row_cells(r, route, x):
    share = of_capacity(r, route, x["goodput"])
    good = f"{x['goodput']:,.0f}" if ok(x["goodput"]) else "–"
    return [
        load_label(x["load"]),
        f"{x['offered']:,.0f}" if ok(x["offered"]) else "–",
        good + (f" ({share:.0%})" if ok(share) else ""),
        fmt_ms(x["p50_ms"]),
        fmt_ms(x["p99_ms"]),
        fmt_ms(x["p999_ms"]),
        fmt_share(x["refused_share"]),
        fmt_ms(x["refusal_p50_ms"]),
        fmt_ms(x["refusal_p99_ms"]),
        f"{x['errors']:.0f}" if ok(x["errors"]) else "–",
        fmt_ms(x["fast_p99_ms"]) + (f" ({fmt_ms(x['fast_p99_max_ms'])})" if ok(x["fast_p99_max_ms"]) else ""),
    ]


def summary_lines(r):
    """The goal lines, for the report's summary."""
    if not r.overload:
        return []
    return ["Past capacity (`forkring-stress --only 14`), forkring's goals:", ""] + goal_lines(r) + [""]


def goal_lines(r):
    """One line per goal, the anchors' line and the stress binary's exit."""
    out = [f"- {text}: **{status}**" for _, text, status in goals(r)]
    text, status = anchor_goal(r)
    out.append(f"- {text}: **{status}**")
    if exit_line(r):
        out.append(f"- {exit_line(r)}")
    return out


def markdown(r):
    """The section "Past capacity"."""
    if not r.overload:
        if r.overload_error or r.meta.get("overload_exit"):
            why = r.overload_error or "the stress binary wrote no figures (see the notes)"
            return ["## Past capacity", "", f"Not measured: {why}.", ""]
        return []
    o = ["## Past capacity", ""]
    o.append(
        f"From {source_line(r)}: `make stress` scenario 14, run by the bench. An open-loop paced client"
        " (latency from each request's due time, so no coordinated omission) offers each route"
        f" {', '.join(load_label(x) for x in sorted({x['load'] for x in rows(r) if ok(x['load'])}))} its measured"
        " capacity, while a second client asks the fast route (`GET /`) beside it. *Goodput*: successful"
        " answers a second that came within the client's timeout (its share of capacity in brackets);"
        " p50/p99/p99.9 are of successful answers; *refused*: the share answered `503`, and how fast those"
        " refusals came; *errors*: anything else, or no answer; *fast p99*: the fast route's p99 during the"
        " load (its max in brackets). `forkring-admission-off` is forkring with admission control off;"
        " nginx and Node do the same work. Charted in the report's SVG. On the loop-bound route the fast"
        " route shares the loaded loop: its p99 there is shown, not held to a goal."
    )
    o.append("")
    for route in routes(r):
        cap = capacity(r, route)
        o.append(
            f"### {route_title(route)[0].upper()}{route_title(route)[1:]}, capacity "
            + (f"{cap:,.0f} req/s" if ok(cap) else "not measured")
        )
        o.append("")
        o.append(
            "| server | load | offered req/s | goodput req/s (of capacity) | p50 | p99 | p99.9 | refused"
            " | refusal p50 | refusal p99 | errors | fast p99 (max) |"
        )
        o.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for s in servers(r, route):
            for x in rows(r, route, s):
                o.append(f"| {s} | " + " | ".join(row_cells(r, route, x)) + " |")
        o.append("")
    o += ["Goals, judged on forkring's rows:", ""] + goal_lines(r) + [""]
    anchors = [(route, s) for route in routes(r) for s in servers(r, route) if s != SUBJECT]
    if anchors:
        o.append(
            f"The anchors past 1× (latency *grew*: p99 beyond {P99_GROWTH:g}× its own at {load_label(BASE_LOAD)};"
            f" goodput *fell*: below {GOODPUT_SHARE:.0%} of capacity; at {' or '.join(load_label(x) for x in GOAL_LOADS)}):"
        )
        o.append("")
        for route, s in anchors:
            o.append(f"- {s}, {route_title(route)}: {anchor_judgement(r, route, s)[2]}")
        o.append("")
    return o


def terminal(r):
    """The tables and goal lines printed at the end of a run."""
    if not r.overload:
        if r.overload_error:
            return [f"past capacity: not measured: {r.overload_error}", ""]
        return []
    out = [f"past capacity ({plain(source_line(r))}), open-loop paced client; latency of successes", ""]
    for route in routes(r):
        cap = capacity(r, route)
        out.append(
            f"{route_title(route).replace('`', '')}: capacity " + (f"{cap:,.0f} req/s" if ok(cap) else "not measured")
        )
        head = (
            f"{'server':<23} {'load':>5} {'offered':>8} {'goodput':>8} {'of cap':>6} {'p50':>8} {'p99':>8} {'p99.9':>8}"
            f" {'refused':>7} {'ref p50':>8} {'ref p99':>8} {'errors':>6} {'fast p99':>8} {'max':>8}"
        )
        out.append(head)
        out.append("-" * len(head))
        for s in servers(r, route):
            first = True
            for x in rows(r, route, s):
                share = of_capacity(r, route, x["goodput"])
                out.append(
                    f"{s if first else '':<23} {load_label(x['load']).replace('×', 'x'):>5}"
                    f" {whole(x['offered']):>8} {whole(x['goodput']):>8}"
                    f" {fmt_share(share).replace('–', '-'):>6} {fmt_ms_t(x['p50_ms']):>8} {fmt_ms_t(x['p99_ms']):>8}"
                    f" {fmt_ms_t(x['p999_ms']):>8} {fmt_share(x['refused_share']).replace('–', '-'):>7}"
                    f" {fmt_ms_t(x['refusal_p50_ms']):>8} {fmt_ms_t(x['refusal_p99_ms']):>8}"
                    f" {whole(x['errors']):>6} {fmt_ms_t(x['fast_p99_ms']):>8}"
                    f" {fmt_ms_t(x['fast_p99_max_ms']):>8}"
                )
                first = False
        out.append("")
    for _, text, status in goals(r):
        out.append(f"goal: {plain(text)}: {status.upper()}")
    text, status = anchor_goal(r)
    out.append(f"goal: {plain(text)}: {status.upper()}")
    for route in routes(r):
        for s in servers(r, route):
            if s != SUBJECT:
                out.append(f"  anchor {s}, {route}: {plain(anchor_judgement(r, route, s)[2])}")
    if exit_line(r):
        out.append(plain(exit_line(r)))
    out.append("")
    return out


def plain(s):
    """Markdown's marks and the µ and × signs off, for the terminal."""
    return s.replace("`", "").replace("×", "x").replace("µs", "us").replace("≥", ">=").replace("≤", "<=")


def chart_series(r, route, key):
    """{server: [(load, y)]} for the chart: goodput as a multiple of capacity
    (key "goodput") or a latency in µs (key "p99_ms")."""
    out = {}
    for s in servers(r, route):
        pts = []
        for x in rows(r, route, s):
            if not ok(x["load"]):
                continue
            y = of_capacity(r, route, x["goodput"]) if key == "goodput" else x[key] * 1000
            if ok(y) and (key == "goodput" or y > 0):
                pts.append((x["load"], y))
        if pts:
            out[s] = pts
    return out
