"""The condensed tables the README's "Latest figures" shows: requests/s and
the ratios to nginx per workload, and the fixed-rate latencies.
"""

from report.fmt import WORKLOAD_TITLES, fmt_f, fmt_md, fmt_ratio, workers_label


def markdown(r):
    """The condensed tables the README's "Latest figures" shows."""
    o = []
    forks = [s for s in r.servers if s != "nginx"]
    names = " / ".join(s.replace("forkring-", "") for s in r.servers)
    head = (
        "| workload | workers | "
        + " | ".join(f"{s.replace('forkring-', '')} req/s" for s in r.servers)
        + " | "
        + " | ".join(f"{s.replace('forkring-', '')} / nginx" for s in forks)
        + f" | p99 {names} | CPU µs/req {names} | RSS MiB {names} |"
    )
    o.append(head)
    o.append("|" + "---|" * (head.count("|") - 1))
    for wl in r.workloads:
        for w in r.worker_counts:
            sts = {s: r.stats(w, wl, s) for s in r.servers}
            if not any(sts.values()):
                continue
            nginx = sts.get("nginx")

            def col(k, f, sts=sts):
                return " / ".join(f(sts[s][k]) if sts[s] else "–" for s in r.servers)

            o.append(
                f"| {WORKLOAD_TITLES.get(wl, wl)} | {w} | "
                + " | ".join(f"{sts[s]['rps']:,.0f}" if sts[s] else "–" for s in r.servers)
                + " | "
                + " | ".join(
                    fmt_ratio(sts[s]["rps"], nginx["rps"]) if sts[s] and nginx else "–" for s in forks
                )
                + f" | {col('p99', fmt_md)} | {col('cpu', fmt_f)} | {col('rss', lambda x: fmt_f(x, 1))} |"
            )
    o.append("")
    if r.no_close_note():
        o.append(r.no_close_note())
        o.append("")
    for w in r.rate_workers():
        sts = [(s, r.rate_stats(w, s)) for s in r.servers]
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
        f"Medians of {r.meta.get('reps')} runs of {r.meta.get('duration')}; {r.noise_line()}."
    )
    o.append("")
    return o
