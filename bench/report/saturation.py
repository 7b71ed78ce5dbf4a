"""Under wrk, at saturation: per worker count, workload and server, the
median requests/s with its range, the latency percentiles, CPU per request,
memory, errors and other processes' CPU, with the ratios to nginx.
"""

from report.fmt import WORKLOAD_TITLES, fmt_f, fmt_md, fmt_pct, fmt_rate, fmt_ratio, fmt_us, workers_label


def terminal(r):
    """The terminal tables, one per worker count."""
    out = []
    reps = r.meta.get("reps", "?")
    for w in r.worker_counts:
        out.append(
            f"{workers_label(w)} each: {r.where(w)}; {r.wrk_line(w)}; median of {reps} run(s) [min-max]"
        )
        out.append("")
        head = (
            f"{'workload':<10} {'server':<{r.sw}} {'req/s [min-max]':>26} {'p50':>8} {'p99':>8} {'p99.9':>8}"
            f" {'CPU us/req':>10} {'RSS MiB':>8} {'errors':>6} {'other':>6} | {'xreq/s':>6} {'xp99':>6} {'xCPU':>6} {'xRSS':>6}"
        )
        out.append(head)
        out.append("-" * len(head))
        for wl in r.workloads:
            nginx = r.stats(w, wl, "nginx")
            first = True
            for s in r.servers:
                st = r.stats(w, wl, s)
                if st is None:
                    continue
                rr = f"{fmt_rate(st['rps'])} [{fmt_rate(st['rps_lo'])}-{fmt_rate(st['rps_hi'])}]"
                if s != "nginx" and nginx:
                    ratios = [
                        fmt_ratio(st["rps"], nginx["rps"]),
                        fmt_ratio(st["p99"], nginx["p99"]),
                        fmt_ratio(st["cpu"], nginx["cpu"]),
                        fmt_ratio(st["rss"], nginx["rss"]),
                    ]
                else:
                    ratios = [""] * 4
                out.append(
                    f"{wl if first else '':<10} {r.label(s, wl):<{r.sw}} {rr:>26} {fmt_us(st['p50']):>8} {fmt_us(st['p99']):>8}"
                    f" {fmt_us(st['p999']):>8} {fmt_f(st['cpu']):>10} {fmt_f(st['rss'], 1):>8}"
                    f" {st['errors']:>6.0f} {fmt_pct(st['other']):>6} | {ratios[0]:>6} {ratios[1]:>6} {ratios[2]:>6} {ratios[3]:>6}"
                )
                first = False
        out.append("")
    return out


def markdown(r):
    """The report's sections "Under wrk", one per worker count."""
    reps = r.meta.get("reps", "?")
    o = []
    for w in r.worker_counts:
        o.append(f"## Under wrk, {workers_label(w)} each")
        o.append("")
        o.append(f"{r.where(w)}; `{r.wrk_line(w)}`; median of {reps} run(s), requests/s with [min–max].")
        o.append("Ratios are server / nginx: above 1 is better for requests/s, below 1 for the rest.")
        o.append("")
        o.append(
            "| workload | server | req/s [min–max] | p50 | p99 | p99.9 | CPU µs/req | RSS MiB | errors | other CPU"
            " | ×req/s | ×p50 | ×p99 | ×p99.9 | ×CPU | ×RSS |"
        )
        o.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for wl in r.workloads:
            nginx = r.stats(w, wl, "nginx")
            for s in r.servers:
                st = r.stats(w, wl, s)
                if st is None:
                    continue
                if s != "nginx" and nginx:
                    ratios = [
                        fmt_ratio(st[k], nginx[k]) for k in ("rps", "p50", "p99", "p999", "cpu", "rss")
                    ]
                else:
                    ratios = [""] * 6
                o.append(
                    f"| {WORKLOAD_TITLES.get(wl, wl)} | {r.label(s, wl)} | {st['rps']:,.0f} [{st['rps_lo']:,.0f}–{st['rps_hi']:,.0f}]"
                    f" | {fmt_md(st['p50'])} | {fmt_md(st['p99'])} | {fmt_md(st['p999'])}"
                    f" | {fmt_f(st['cpu'])} | {fmt_f(st['rss'], 1)} | {st['errors']:.0f} | {fmt_pct(st['other'])} | "
                    + " | ".join(ratios)
                    + " |"
                )
        o.append("")
        if r.no_close_note():
            o.append(r.no_close_note(short=True))
            o.append("")
    return o
