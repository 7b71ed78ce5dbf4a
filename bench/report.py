#!/usr/bin/env python3
"""make bench's report: reads what bench/run.sh measured and prints the
tables, then writes report.md and report.svg. Standard library only, no
network. The report itself is the package beside this file, bench/report/.

    python3 bench/report.py --dir RUN_DIR --out target/bench

RUN_DIR holds results.tsv (one wrk run a line), rates.tsv (one fixed-rate
run a line), meta.tsv (key, tab, value), ipc.txt (the IPC ring summary,
optional) and overload.json (past capacity, as `forkring-stress --json`
writes it, optional); bench/run.sh describes the columns.
"""

import sys

# The package is read from the source tree; leave no bytecode in it.
sys.dont_write_bytecode = True

from report.main import main  # noqa: E402 (after the line above)

if __name__ == "__main__":
    main()
