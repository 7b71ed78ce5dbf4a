"""make bench's report, one module per part of it. Standard library only,
no network.

- data: what bench/run.sh measured, read back, and the figures drawn from it
- fmt: how a figure is written
- terminal: the tables printed at the end of a run
- document: report.md, section by section:
  summary, floor (against the floor of each backend, and the goals),
  baseline (against BASELINE), peers (against may_minihttp and hyper, and
  what each server sends), machine (machine, tools, parameters),
  saturation (under wrk), fixed_rate (ratebench), curve (the latency
  curve, ratebench at several rates), overload (past capacity: the
  stress harness's scenario 14, its goals), sse (server-sent
  events), method (how the figures are measured and made again)
- chart: report.svg
- main: the command line (bench/report.py)
"""
