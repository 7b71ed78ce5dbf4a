"""make bench's report: reads what bench/run.sh measured and prints the
tables, then writes report.md and report.svg.
"""

import argparse
import os
import sys

from report import chart, document, sse, terminal
from report.data import Run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, help="what bench/run.sh measured")
    ap.add_argument("--out", required=True, help="where report.md and report.svg go")
    a = ap.parse_args()
    r = Run(a.dir)
    if not r.runs and not r.rates and not r.overload:
        sys.exit("report: nothing was measured")
    os.makedirs(a.out, exist_ok=True)
    print(terminal.tables(r))
    for line in sse.terminal(r):
        print(line)
    with open(os.path.join(a.out, "report.svg"), "w") as f:
        f.write(chart.svg(r))
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(document.markdown(r, "report.svg"))
    print()
    print(f"report: {os.path.join(a.out, 'report.md')} and {os.path.join(a.out, 'report.svg')}")
