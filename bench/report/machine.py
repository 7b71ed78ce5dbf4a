"""Where and how the run was made: the machine and the tools with their
versions, and the run's parameters.
"""

from report.fmt import workers_label


def machine_md(r):
    """The section "Machine and tools"."""
    m = r.meta
    o = []
    o.append("## Machine and tools")
    o.append("")
    o.append("| | |")
    o.append("|---|---|")
    o.append(f"| CPUs | {m.get('nproc')} × {m.get('model')} |")
    o.append(f"| memory | {m.get('memory')} |")
    o.append(f"| kernel | {m.get('kernel')} |")
    o.append(f"| load average (1, 5, 15 min) | at the start {m.get('load_start')}; at the end {m.get('load_end')} |")
    o.append(f"| forkring | {m.get('forkring')} |")
    if m.get("baseline"):
        o.append(f"| forkring baseline (`BASELINE`) | {m.get('baseline')} |")
    o.append(f"| rustc | {m.get('rustc')} |")
    o.append(f"| nginx | {m.get('nginx')} |")
    o.append(f"| wrk | {m.get('wrk')} |")
    o.append(f"| report | {m.get('python')} |")
    o.append(f"| other work on the machine | {r.noise_line()} |")
    o.append("")
    return o


def parameters_md(r):
    """The section "Parameters"."""
    m = r.meta
    reps = m.get("reps", "?")
    o = []
    o.append("## Parameters")
    o.append("")
    o.append(f"- servers: {', '.join(r.servers)}; every server runs the same number of workers.")
    for w in r.worker_counts:
        o.append(f"- {workers_label(w)} each: {r.where(w)}; `{r.wrk_line(w)} -s bench/wrk.lua`.")
    o.append(
        f"- {reps} repetition(s); within each, the servers take turns, the order rotating every repetition;"
        f" per-server warm-up {m.get('warmup')}."
    )
    o.append(
        f"- workloads: keep-alive `GET /`; `GET /` pipelined {m.get('depth')} deep;"
        f" `POST /echo` with a {m.get('body')}-byte body, echoed back; one connection per request"
        " (`Connection: close`)."
    )
    if r.rates:
        o.append(
            f"- fixed rate: `target/release/ratebench --rate R --duration {m.get('rate_duration')}"
            f" --warmup 1 --threads {m.get('rate_threads')} --conns {m.get('rate_conns')}` (RATE={m.get('rate_setting')})."
        )
    o.append("")
    return o
