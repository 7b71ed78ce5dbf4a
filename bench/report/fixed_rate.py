"""At a fixed rate (ratebench, the paced client with sleeping senders):
per worker count and server, the latency from each request's due time, the
service time, the client's own lag, CPU per request and errors, with the
ratios to nginx.
"""

from report.fmt import fmt_f, fmt_md, fmt_pct, fmt_rate, fmt_ratio, fmt_us, workers_label


def terminal(r):
    """The terminal tables, one per worker count with a fixed-rate run."""
    out = []
    reps = r.meta.get("reps", "?")
    for w in r.rate_workers():
        nginx = r.rate_stats(w, "nginx")
        any_st = next(st for st in (r.rate_stats(w, s) for s in r.servers) if st)
        out.append(
            f"fixed rate {any_st['rate']:.0f} req/s, {workers_label(w)} each: {r.where(w)};"
            f" ratebench {r.meta.get('rate_threads')} threads x {r.meta.get('rate_conns')} connections,"
            f" {r.meta.get('rate_duration')} s (first 1 s not counted); median of {reps} run(s)"
        )
        out.append("latency from each request's due time (no coordinated omission)")
        out.append("")
        head = (
            f"{'server':<{r.sw}} {'achieved':>9} {'p50':>8} {'p90':>8} {'p99':>8} {'p99.9':>8} {'max':>8}"
            f" {'service p50/p99':>17} {'client lag p99':>14} {'CPU us/req':>10} {'errors':>6} {'other':>6}"
            f" | {'xp50':>5} {'xp99':>5} {'xp99.9':>6}"
        )
        out.append(head)
        out.append("-" * len(head))
        for s in r.servers:
            st = r.rate_stats(w, s)
            if st is None:
                continue
            if s != "nginx" and nginx:
                ratios = [fmt_ratio(st[k], nginx[k]) for k in ("p50", "p99", "p999")]
            else:
                ratios = [""] * 3
            svc = f"{fmt_us(st['svc_p50'])}/{fmt_us(st['svc_p99'])}"
            out.append(
                f"{s:<{r.sw}} {fmt_rate(st['achieved']):>9} {fmt_us(st['p50']):>8} {fmt_us(st['p90']):>8}"
                f" {fmt_us(st['p99']):>8} {fmt_us(st['p999']):>8} {fmt_us(st['max']):>8} {svc:>17}"
                f" {fmt_us(st['lag_p99']):>14} {fmt_f(st['cpu']):>10} {st['errors']:>6.0f} {fmt_pct(st['other']):>6}"
                f" | {ratios[0]:>5} {ratios[1]:>5} {ratios[2]:>6}"
            )
        out.append("")
    return out


def markdown(r):
    """The report's sections "Fixed rate", one per worker count."""
    reps = r.meta.get("reps", "?")
    o = []
    for w in r.rate_workers():
        nginx = r.rate_stats(w, "nginx")
        sts = [(s, r.rate_stats(w, s)) for s in r.servers]
        sts = [(s, st) for s, st in sts if st]
        rate = sts[0][1]["rate"]
        o.append(f"## Fixed rate, {rate:,.0f} requests/s, {workers_label(w)} each")
        o.append("")
        o.append(
            f"{r.where(w)}. Every server gets the same schedule from `ratebench`; latency is measured from"
            " each request's due time, so a stall is charged to every request it delays (no coordinated"
            " omission). *Service* is the time from the actual write; *client lag* is how late the sender"
            " wrote behind the schedule, the client's own floor, the same for every server."
            f" Median of {reps} run(s); p99 with [min–max]."
        )
        sat = []
        for s, st in sts:
            ka = r.stats(w, "keepalive", s)
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
    return o
