"""report.md: every section, in order.
"""

from report import baseline, curve, fixed_rate, floor, machine, method, overload, peers, saturation, sse, summary


def markdown(r, svg_name):
    """The whole report, its chart at `svg_name`."""
    m = r.meta
    o = []
    o.append("# forkring benchmark report")
    o.append("")
    o.append(f"Made by `make bench` (`bench/run.sh`) on {m.get('date')}.")
    o.append("")
    o.append("## Summary")
    o.append("")
    o.extend(summary.markdown(r))
    o.extend(floor.summary_lines(r))
    o.extend(overload.summary_lines(r))
    o.extend(baseline.markdown(r))
    o.extend(floor.markdown(r))
    o.extend(peers.markdown(r))
    o.extend(machine.machine_md(r))
    o.extend(machine.parameters_md(r))
    o.extend(saturation.markdown(r))
    o.extend(fixed_rate.markdown(r))
    o.extend(curve.markdown(r))
    o.extend(overload.markdown(r))
    o.extend(sse.markdown(r))
    o.append("## Chart")
    o.append("")
    o.append(f"![throughput and latency per server]({svg_name})")
    o.append("")
    if r.waits:
        o.append("## Waiting (one worker: `/sleep` on a pool of 64 threads, `/delay` on worker timers; Node's `setTimeout`)")
        o.append("")
        o.append(r.waits)
        o.append("")
    if r.uploads:
        o.append("## Streamed upload (`POST /upload`, one worker, over loopback)")
        o.append("")
        o.append(r.uploads)
        o.append("")
    if r.ipc:
        o.append("## IPC rings (`cargo bench --bench ipc -- summary`)")
        o.append("")
        o.append("```")
        o.append(r.ipc)
        o.append("```")
        o.append("")
    if r.notes:
        o.append("## Notes from this run")
        o.append("")
        for n in r.notes:
            o.append(f"- {n}")
        o.append("")
    o.extend(method.measured_md(r))
    o.extend(method.reproduce_md(r))
    return "\n".join(o) + "\n"
