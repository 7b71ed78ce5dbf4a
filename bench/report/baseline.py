"""The current build against the BASELINE binary (forkring-base-<backend>),
both against nginx, from the same run.
"""

from report.fmt import WORKLOAD_TITLES, fmt_ratio, fmt_ratio_range


def table_rows(r, dash="–"):
    """One row per worker count, workload and backend with a baseline:
    (workers, workload, backend, cells), the cells already formatted."""
    rows = []
    for w in r.worker_counts:
        for wl in r.workloads:
            nginx = r.stats(w, wl, "nginx")
            for b, cur, base in r.pairs:
                c, o = r.stats(w, wl, cur), r.stats(w, wl, base)
                if c is None or o is None:
                    continue
                cells = [
                    fmt_ratio(c["cpu"], nginx["cpu"]) if nginx else "-",
                    fmt_ratio(o["cpu"], nginx["cpu"]) if nginx else "-",
                    fmt_ratio(c["rps"], nginx["rps"]) if nginx else "-",
                    fmt_ratio(o["rps"], nginx["rps"]) if nginx else "-",
                    fmt_ratio_range(r.paired(w, wl, cur, base, "cpu"), dash),
                    fmt_ratio_range(r.paired(w, wl, cur, base, "rps"), dash),
                ]
                rows.append((w, wl, b, cells))
    return rows


def terminal(r):
    rows = table_rows(r, "-")
    if not rows:
        return []
    out = [
        f"current (forkring-<backend>, {r.meta.get('forkring')}) against the baseline"
        f" (forkring-base-<backend>, {r.meta.get('baseline')}), same run; median of"
        f" {r.meta.get('reps', '?')} run(s); current/baseline: median [min-max] of the per-repetition ratios",
        "",
    ]
    head = (
        f"{'workload':<10} {'workers':>7} {'backend':<7} | {'CPU us/req / nginx':>19} | {'req/s / nginx':>17}"
        f" | {'current/baseline: CPU':>22} {'req/s':>18}"
    )
    out.append(head)
    out.append(f"{'':<10} {'':>7} {'':<7} | {'current':>9} {'baseline':>9} | {'current':>8} {'baseline':>8} |")
    out.append("-" * len(head))
    for w, wl, b, c in rows:
        out.append(
            f"{wl:<10} {w:>7} {b:<7} | {c[0]:>9} {c[1]:>9} | {c[2]:>8} {c[3]:>8} | {c[4]:>22} {c[5]:>18}"
        )
    out.append("")
    return out


def markdown(r):
    """Current against the baseline, both against nginx, from one run."""
    rows = table_rows(r)
    if not rows:
        return []
    m = r.meta
    o = ["## Current build against the baseline", ""]
    o.append(
        f"`forkring-<backend>` is the current build ({m.get('forkring')}); `forkring-base-<backend>` is the"
        f" `BASELINE` binary ({m.get('baseline')}), started with the same flags. Both took turns with nginx in"
        f" the same rotation of this run, so the ratios below share its conditions. Median of"
        f" {m.get('reps', '?')} run(s). CPU µs/req: lower is better; requests/s: higher is better. The last"
        " two columns divide current by baseline within each repetition: median [min–max] of those ratios."
    )
    o.append("")
    o.append(
        "| workload | workers | backend | CPU µs/req current / nginx | CPU µs/req baseline / nginx"
        " | req/s current / nginx | req/s baseline / nginx | CPU current / baseline | req/s current / baseline |"
    )
    o.append("|---|---|---|---|---|---|---|---|---|")
    for w, wl, b, c in rows:
        o.append(f"| {WORKLOAD_TITLES.get(wl, wl)} | {w} | {b} | " + " | ".join(c) + " |")
    o.append("")
    return o
