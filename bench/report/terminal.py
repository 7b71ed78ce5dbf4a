"""The tables bench/run.sh prints at the end of a run.
"""

from report import baseline, curve, fixed_rate, floor, overload, peers, saturation
from report.data import NOISY_PCT


def tables(r):
    """Every table, with the notes under them."""
    out = []
    out.extend(saturation.terminal(r))
    out.extend(fixed_rate.terminal(r))
    out.extend(baseline.terminal(r))
    out.extend(peers.terminal(r))
    out.extend(floor.terminal(r))
    out.extend(curve.terminal(r))
    out.extend(overload.terminal(r))
    out.append(
        "x columns: server / nginx (req/s: higher is better; latency, CPU, RSS: lower is better)."
        " Pipelined latency is n/a: wrk times a batch, not a request."
    )
    if r.no_close_note():
        out.append(r.no_close_note().replace("`", "").replace("*", ""))
    out.append(
        f"other: CPU other processes took during the run (median), in percent of one CPU; ! marks {NOISY_PCT}% or"
        " more, where the figures are noisy."
    )
    out.append(r.noise_line())
    for n in r.notes:
        out.append(f"note: {n}")
    return "\n".join(out)

